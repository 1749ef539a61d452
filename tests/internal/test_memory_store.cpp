// The memory store's own structures, driven through the internal Store interface: the
// per-stripe deadline heap (expiry order, many holds, mixed TTLs, holds settled before their
// deadline), the record index (many records, found again by id), and the engine's intrusive
// table of stream states and the request-id hash.
#include <doctest/doctest.h>

#include <algorithm>
#include <chrono>
#include <map>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <budget/budget.hpp>
#include <nlohmann/json.hpp>

#include "engine.hpp"
#include "hash.hpp"
#include "spinlock.hpp"
#include "stores/memory.hpp"
#include "stores/txn.hpp"

using namespace budget;
using namespace budget::detail;

namespace {

std::shared_ptr<const Plan> plan_for_scope(const std::string& scope) {
  auto p = std::make_shared<Plan>();
  p->limits_version = 1;  // a fresh memory store with no limits
  p->windows.push_back(WindowRef{scope, "total", 0, kForever, 0, {}, 0});
  p->windows.back().seal();
  Check c;
  c.window = 0;
  c.metric = Metric::Cost;
  c.limit = INT64_MAX / 4;
  c.grantable = true;
  c.limit_key = scope + "|cost|total";
  p->checks.push_back(c);
  return p;
}

ReserveOut reserve(Store& s, const std::shared_ptr<const Plan>& plan, const std::string& id, int64_t now,
                   int64_t expires_at, int64_t amount = 1000) {
  ReserveOp op;
  op.request_id = id;
  op.subject = {"global", plan->windows[0].scope};
  op.plan = plan;
  op.amount = {amount, 0, 1};
  op.now = now;
  op.expires_at = expires_at;
  op.fingerprint = "fp";
  return s.reserve(op);
}

SettleOut settle(Store& s, const std::string& id, int64_t now, bool commit, int64_t charge = 500) {
  SettleOp op;
  op.kind = commit ? SettleOp::Commit : SettleOp::Release;
  op.request_id = id;
  op.charge = {charge, 0, 1};
  op.now = now;
  op.fingerprint = "c";
  return s.settle(op);
}

}  // namespace

TEST_CASE("memory store: holds expire in deadline order, with mixed TTLs, many holds and early settles") {
  auto store = make_memory_store();
  std::mt19937_64 rng(42);
  const int64_t t0 = 1'000'000;
  std::vector<std::shared_ptr<const Plan>> plans;
  for (int i = 0; i < 7; ++i) plans.push_back(plan_for_scope("user:u" + std::to_string(i)));
  std::map<std::string, int64_t> live;  // id -> deadline of holds that should still be held
  std::set<std::string> settled;
  const int n = 5000;
  for (int i = 0; i < n; ++i) {
    std::string id = "r" + std::to_string(i);
    int64_t ttl = 1 + static_cast<int64_t>(rng() % 10'000);  // mixed TTLs, many equal deadlines
    auto out = reserve(*store, plans[static_cast<size_t>(i) % plans.size()], id, t0, t0 + ttl);
    REQUIRE(out.status == ReserveOut::Allowed);
    live[id] = t0 + ttl;
  }
  CHECK(memory_store_self_check(*store));
  // Settle a third of them before their deadline, by commit or release.
  for (int i = 0; i < n; i += 3) {
    std::string id = "r" + std::to_string(i);
    settle(*store, id, t0, i % 2 == 0);
    live.erase(id);
    settled.insert(id);
  }
  CHECK(memory_store_self_check(*store));
  auto min_live = [&] {
    int64_t m = kForever;
    for (auto& [id, d] : live) m = std::min(m, d);
    return m;
  };
  // Sweep forward in uneven steps: exactly the holds whose deadline passed are expired, the
  // earliest first, in (deadline, request id) order across batches and stripes.
  int64_t now = t0;
  int64_t seen_seq = 0;
  while (!live.empty()) {
    now += 1 + static_cast<int64_t>(rng() % 700);
    size_t due = 0;
    for (auto& [id, d] : live) due += d <= now;
    size_t expired = 0, k;
    while ((k = store->expire(now, 97)) > 0) expired += k;  // small batches
    CHECK(expired == due);
    std::vector<std::pair<int64_t, std::string>> order;
    LedgerQuery q;
    q.after_seq = seen_seq;
    store->scan_events(q, [&](const LedgerEvent& e) {
      seen_seq = e.seq;
      if (e.type == EventType::Expire) order.emplace_back(live.at(e.request_id), e.request_id);
      return true;
    });
    CHECK(order.size() == due);
    CHECK(std::is_sorted(order.begin(), order.end()));
    for (auto it = live.begin(); it != live.end();) {
      auto rec = store->get_request(it->first);
      REQUIRE(rec);
      if (it->second <= now) {
        CHECK(rec->state == ReqState::Expired);
        it = live.erase(it);
      } else {
        CHECK(rec->state == ReqState::Held);
        ++it;
      }
    }
    CHECK(store->next_deadline() <= min_live());  // a hint: never later than the earliest hold
    if (live.empty()) CHECK(store->next_deadline() == kForever);
    CHECK(memory_store_self_check(*store));
  }
  for (const auto& id : settled) {
    auto rec = store->get_request(id);
    REQUIRE(rec);
    CHECK((rec->state == ReqState::Committed || rec->state == ReqState::Released));
  }
  // Every record is found again by its id, and the counters add up.
  for (int i = 0; i < n; ++i) CHECK(store->get_request("r" + std::to_string(i)));
  CHECK_FALSE(store->get_request("r" + std::to_string(n)));
}

TEST_CASE("memory store: a replayed reserve and a late commit keep the deadline heap consistent") {
  auto store = make_memory_store();
  auto plan = plan_for_scope("user:x");
  REQUIRE(reserve(*store, plan, "a", 0, 100).status == ReserveOut::Allowed);
  REQUIRE(reserve(*store, plan, "b", 0, 50).status == ReserveOut::Allowed);
  CHECK(reserve(*store, plan, "a", 0, 100).replayed);  // no second heap entry
  CHECK(memory_store_self_check(*store));
  CHECK(store->next_deadline() == 50);
  CHECK(store->expire(60, 10) == 1);  // b
  CHECK(store->next_deadline() == 100);
  auto late = settle(*store, "b", 70, true, 400);  // after expiry: an adjustment
  CHECK(late.record.after_expiry);
  CHECK(memory_store_self_check(*store));
  settle(*store, "a", 80, false);
  CHECK(memory_store_self_check(*store));
  CHECK(store->expire(1000, 10) == 0);
  CHECK(store->next_deadline() == kForever);
}

TEST_CASE("engine hold table: insert, find, erase by state or id, clear") {
  HoldTable t;
  std::vector<std::shared_ptr<HoldState>> states;
  for (int i = 0; i < 3000; ++i) {
    auto hs = std::make_shared<HoldState>();
    hs->request_id = "id" + std::to_string(i);
    hs->id_hash = fast_hash(hs->request_id);
    hs->expires_at = i;
    CHECK(t.insert(hs) == hs);
    states.push_back(hs);
  }
  CHECK(t.size() == 3000);
  auto dup = std::make_shared<HoldState>();
  dup->request_id = "id7";
  dup->id_hash = fast_hash(dup->request_id);
  CHECK(t.insert(dup) == states[7]);  // the listed one wins
  for (int i = 0; i < 3000; ++i) CHECK(t.find(states[static_cast<size_t>(i)]->request_id, states[static_cast<size_t>(i)]->id_hash) == states[static_cast<size_t>(i)]);
  CHECK_FALSE(t.erase(*dup));  // not listed
  for (int i = 0; i < 3000; i += 2) CHECK(t.erase(*states[static_cast<size_t>(i)]));
  t.erase("id1", fast_hash("id1"));
  CHECK(t.size() == 1499);
  CHECK_FALSE(t.find("id1", fast_hash("id1")));
  CHECK(states[0].use_count() == 1);  // the table let go of it
  t.clear_if([](const HoldState& hs) { return hs.expires_at < 1000; });
  CHECK(t.size() == 1000);  // odd ids 1001..2999
  for (int i = 1001; i < 3000; i += 2) CHECK(t.find("id" + std::to_string(i), fast_hash("id" + std::to_string(i))));
}

TEST_CASE("fast_hash: deterministic, length-sensitive, spreads short ids") {
  CHECK(fast_hash("abc") == fast_hash(std::string("abc")));
  CHECK(fast_hash("") != fast_hash(std::string(1, '\0')));
  CHECK(fast_hash("abcdefgh") != fast_hash(std::string_view("abcdefgh\0", 9)));
  std::set<size_t> low, high;
  for (int i = 0; i < 4096; ++i) {
    size_t h = fast_hash("req" + std::to_string(i));
    low.insert(h & 1023);
    high.insert((h >> 48) & 1023);
  }
  CHECK(low.size() > 900);  // 4096 balls in 1024 bins: ~1005 expected
  CHECK(high.size() > 900);
}

TEST_CASE("generated request ids: 15 characters, valid, unique, ordered by time") {
  std::set<std::string> seen;
  std::string prev;
  for (int64_t ms = 1'700'000'000'000; ms < 1'700'000'000'000 + 2000; ms += 7) {
    auto id = generate_request_id(ms);
    CHECK(id.size() == 15);
    CHECK_NOTHROW(validate_id(id, "request id"));
    CHECK(seen.insert(id).second);
    CHECK(prev < id);  // a later millisecond sorts after
    prev = id;
  }
  for (int i = 0; i < 10000; ++i) CHECK(seen.insert(generate_request_id(1'800'000'000'000)).second);
}

TEST_CASE("memory store: records and events show the subject, shared per plan or not") {
  auto store = make_memory_store();
  auto with_windows = plan_for_scope("user:s");
  auto no_windows = std::make_shared<Plan>();  // a subject without limits: nothing to lock
  no_windows->limits_version = 1;
  REQUIRE(reserve(*store, with_windows, "w1", 0, 1000).status == ReserveOut::Allowed);
  REQUIRE(reserve(*store, with_windows, "w2", 0, 1000).status == ReserveOut::Allowed);
  ReserveOp op;
  op.request_id = "n1";
  op.subject = {"global", "team:x"};
  op.plan = no_windows;
  op.amount = {5, 0, 1};
  op.now = 0;
  op.expires_at = 1000;
  op.fingerprint = "fp";
  REQUIRE(store->reserve(op).status == ReserveOut::Allowed);
  // A different subject on the same plan object is kept as given (not the plan's first one).
  ReserveOp other = op;
  other.request_id = "w3";
  other.plan = with_windows;
  other.subject = {"global", "user:s", "feature:y"};
  REQUIRE(store->reserve(other).status == ReserveOut::Allowed);
  settle(*store, "w1", 10, true);
  settle(*store, "n1", 10, false);
  const std::vector<std::string> ws{"global", "user:s"}, ns{"global", "team:x"},
      w3{"global", "user:s", "feature:y"};
  CHECK(store->get_request("w1")->subject == ws);
  CHECK(store->get_request("w2")->subject == ws);
  CHECK(store->get_request("n1")->subject == ns);
  CHECK(store->get_request("w3")->subject == w3);
  std::map<std::string, std::vector<std::string>> seen;
  store->scan_events({}, [&](const LedgerEvent& e) {
    auto& s = seen[e.request_id + "/" + to_string(e.type)];
    s = e.subject;
    return true;
  });
  CHECK(seen["w1/reserve"] == ws);
  CHECK(seen["w1/commit"] == ws);
  CHECK(seen["n1/release"] == ns);
  CHECK(seen["w3/reserve"] == w3);
  CHECK(memory_store_self_check(*store));
}

TEST_CASE("stripe lock: mutual exclusion, and sleeping waiters are woken by the unlock") {
  // Some holders sleep inside the lock, so the others get past their spin and sleep on the
  // lock word: the count stays exact (mutual exclusion) and the run ends (no lost wake-up: a
  // waiter never woken would hang here until the test's timeout; checked by breaking unlock).
  SpinLock lock;
  long counter = 0;  // plain: only the lock protects it (TSan checks that too)
  const int threads = 8, rounds = 2000;
  std::vector<std::thread> ts;
  for (int t = 0; t < threads; ++t)
    ts.emplace_back([&, t] {
      for (int i = 0; i < rounds; ++i) {
        std::lock_guard lk(lock);
        long v = counter;
        if (i % 250 == t) std::this_thread::sleep_for(std::chrono::microseconds(200));
        counter = v + 1;
      }
    });
  for (auto& th : ts) th.join();
  CHECK(counter == long{threads} * rounds);
  CHECK(lock.try_lock());
  lock.unlock();
}

// The direct JSON writers of the operation path (json_text.hpp) write nlohmann's bytes.
TEST_CASE("plans and metadata are written as nlohmann writes them, and plans read back") {
  for (const std::string& scope : {std::string("user:alice"), std::string("user:a\"b\\c"), std::string("user:\xc3\xa9t\xc3\xa9"),
                                  std::string("user:tab\tnl\n\x01")}) {
    auto p = std::make_shared<Plan>(*plan_for_scope(scope));
    p->windows.push_back(WindowRef{"tenant:t", "rolling:1h", -3600000, 0, -7200000, {}, 0});
    p->windows.back().seal();
    Check c = p->checks[0];
    c.window = 1;
    c.metric = Metric::Tokens;
    c.grantable = false;
    c.resets_at = 1773144060000;
    c.alerts = {50, 80, 100};
    p->checks.push_back(c);
    p->limits_version = 42;
    const std::string text = encode_plan(*p);
    CHECK(text == encode_plan_json(*p));
    auto back = decode_plan(text);
    CHECK(back->windows == p->windows);
    CHECK(back->checks == p->checks);
    CHECK(back->limits_version == 42);
  }
  Options o;
  o.store = "memory";
  BudgetManager m(o);
  RequestOptions r;
  r.metadata = {{"b", "x\ny \"q\" \\"}, {"a", "\xc3\xa9"}, {"reason", "why"}, {"ctl", "\x01\x1f\x7f"}};
  r.reason = "why";  // the same reason both ways: one key, in the key order
  nlohmann::ordered_json j = nlohmann::ordered_json::object();
  for (const auto& [k, v] : r.metadata) j[k] = v;
  j["reason"] = r.reason;
  m.grant(Scope::parse("user:u"), Money::parse("1"), r);
  auto events = m.events();
  REQUIRE(events.size() == 1);
  CHECK(events[0].metadata == j.dump());
  r.metadata.erase("reason");
  r.request_id = "second";
  m.grant(Scope::parse("user:u"), Money::parse("1"), r);
  nlohmann::ordered_json j2 = nlohmann::ordered_json::object();
  for (const auto& [k, v] : r.metadata) j2[k] = v;
  j2["reason"] = r.reason;
  CHECK(m.events().back().metadata == j2.dump());
  // C1 controls are written as is (as nlohmann writes them); text that is not UTF-8 is refused
  // (nlohmann's dump refuses it too), and nothing is recorded.
  r.metadata = {{"c1", "\xc2\x85\xc2\x9f"}};
  r.request_id = "third";
  m.grant(Scope::parse("user:u"), Money::parse("1"), r);
  nlohmann::ordered_json j3 = nlohmann::ordered_json::object();
  j3["c1"] = "\xc2\x85\xc2\x9f";
  j3["reason"] = r.reason;
  CHECK(m.events().back().metadata == j3.dump());
  for (const std::string bad : {"\xff", "\xc0\xaf", "\xed\xa0\x80", "\xc3"}) {
    CAPTURE(bad);
    RequestOptions b;
    b.request_id = "bad";
    b.metadata = {{"k", bad}};
    CHECK_THROWS_AS(m.grant(Scope::parse("user:u"), Money::parse("1"), b), InvalidArgumentError);
    b.metadata = {{bad, "v"}};
    CHECK_THROWS_AS(m.grant(Scope::parse("user:u"), Money::parse("1"), b), InvalidArgumentError);
    b.metadata.clear();
    b.reason = bad;
    CHECK_THROWS_AS(m.grant(Scope::parse("user:u"), Money::parse("1"), b), InvalidArgumentError);
  }
  CHECK(m.events().size() == 3);
}
