// The store conformance suite: the same behaviour from every store (memory, SQLite, Redis).
#include "store_fixture.hpp"

#include <sys/wait.h>
#include <unistd.h>

#include <set>
#include <sstream>
#include <thread>

using namespace budget;
using testutil::Env;
using testutil::usd;

namespace {

void standard_limits(BudgetManager& m) {
  m.set_limit(Limit::cost("tenant:acme", Window::day(), usd("10")));
  m.set_limit(Limit::cost("user:*", Window::day(), usd("2")));
  m.set_limit(Limit::cost("user:vip", Window::day(), usd("5")));
}

Subject alice() { return Subject{"tenant:acme", "user:alice"}; }

size_t event_count(BudgetManager& m) { return m.events().size(); }

void require_verified(BudgetManager& m) {
  auto rep = m.verify();
  for (const auto& p : rep.problems) MESSAGE(p);
  REQUIRE(rep.ok);
}

}  // namespace

TEST_CASE("reserve holds on every scope, commit charges exactly and releases the rest") {
  FOR_EACH_STORE(kind) {
    Env env(kind);
    standard_limits(*env.m);
    auto d = env->reserve(alice(), usd("1.50"), {.request_id = "r1"});
    REQUIRE(d.allowed);
    CHECK(d.reservation.held() == usd("1.50"));
    CHECK(d.reservation.request_id() == "r1");
    auto u = env->status(Scope::parse("user:alice"));
    REQUIRE(u.size() == 1);
    CHECK(u[0].limit == usd("2").nanos());
    CHECK(u[0].held == usd("1.50").nanos());
    CHECK(u[0].spent == 0);
    CHECK(u[0].remaining == usd("0.50").nanos());
    auto t = env->status(Scope::parse("tenant:acme"));
    CHECK(t[0].held == usd("1.50").nanos());

    auto rc = env->commit(d.reservation, usd("1.20"));
    CHECK(rc.charged == usd("1.20"));
    CHECK(rc.released == usd("0.30"));
    CHECK_FALSE(rc.over_hold);
    CHECK_FALSE(rc.over_limit);
    u = env->status(Scope::parse("user:alice"));
    CHECK(u[0].held == 0);
    CHECK(u[0].spent == usd("1.20").nanos());
    t = env->status(Scope::parse("tenant:acme"));
    CHECK(t[0].spent == usd("1.20").nanos());

    auto ev = env->events();
    REQUIRE(ev.size() == 2);
    CHECK(ev[0].type == EventType::Reserve);
    CHECK(ev[1].type == EventType::Commit);
    CHECK(ev[1].amount() == usd("1.20"));
    CHECK(ev[1].subject == std::vector<std::string>{"global", "tenant:acme", "user:alice"});
    require_verified(*env.m);
  }
}

TEST_CASE("a denial names the first exhausted scope and holds nothing anywhere") {
  FOR_EACH_STORE(kind) {
    Env env(kind);
    standard_limits(*env.m);
    REQUIRE(env->reserve(alice(), usd("1.50")).allowed);
    auto d = env->reserve(alice(), usd("0.60"));
    REQUIRE_FALSE(d.allowed);
    CHECK(d.denial.reason == DenyReason::LimitExceeded);
    CHECK(d.denial.scope == "user:alice");
    CHECK(d.denial.window == "day");
    CHECK(d.denial.metric == Metric::Cost);
    CHECK(d.denial.limit == usd("2").nanos());
    CHECK(d.denial.spent == 0);
    CHECK(d.denial.held == usd("1.50").nanos());
    CHECK(d.denial.remaining == usd("0.50").nanos());
    CHECK(d.denial.requested == usd("0.60").nanos());
    REQUIRE(d.denial.resets_at.has_value());
    CHECK(*d.denial.resets_at == from_millis(1'773'187'200'000));  // next UTC midnight
    CHECK_FALSE(d.denial.hard);  // in-flight holds are the cause: retry later (429)
    // Exactly the room that the holds take: spend alone leaves room (spent + need == limit),
    // so not hard. It was reported hard (402, do not retry) though it fits once the hold ends.
    auto exact = env->reserve(alice(), usd("2"));
    REQUIRE_FALSE(exact.allowed);
    CHECK(exact.denial.requested == exact.denial.limit - exact.denial.spent);
    CHECK_FALSE(exact.denial.hard);
    // All-or-nothing: the tenant holds only the first reservation.
    CHECK(env->status(Scope::parse("tenant:acme"))[0].held == usd("1.50").nanos());
    // A hard cap: spend alone leaves no room.
    env->record(alice(), usd("1.90"));
    auto d2 = env->reserve(alice(), usd("0.20"));
    REQUIRE_FALSE(d2.allowed);
    CHECK(d2.denial.hard);
    auto d3 = env->reserve(alice(), usd("0.10"));  // 1.90 + 0.10 = the limit: waits for the hold
    REQUIRE_FALSE(d3.allowed);
    CHECK_FALSE(d3.denial.hard);
    require_verified(*env.m);
  }
}

TEST_CASE("the hierarchy: a user's spend counts against its tenant and global") {
  FOR_EACH_STORE(kind) {
    Env env(kind);
    env->set_limit(Limit::cost("tenant:acme", Window::day(), usd("3")));
    env->set_limit(Limit::cost("global", Window::day(), usd("100")));
    REQUIRE(env->reserve(Subject{"tenant:acme", "user:a"}, usd("2")).allowed);
    auto d = env->reserve(Subject{"tenant:acme", "user:b"}, usd("2"));
    REQUIRE_FALSE(d.allowed);
    CHECK(d.denial.scope == "tenant:acme");
    CHECK(env->status(Scope::global())[0].held == usd("2").nanos());
    // Another tenant is unaffected.
    CHECK(env->reserve(Subject{"tenant:other", "user:b"}, usd("2")).allowed);
  }
}

TEST_CASE("kind-wide defaults apply to every id unless overridden for the same window") {
  FOR_EACH_STORE(kind) {
    Env env(kind);
    standard_limits(*env.m);
    env->set_limit(Limit::cost("user:*", Window::month(), usd("20")));
    auto vip = env->status(Scope::parse("user:vip"));
    REQUIRE(vip.size() == 2);
    CHECK(testutil::find_status(vip, "day")->limit == usd("5").nanos());
    CHECK(testutil::find_status(vip, "month")->limit == usd("20").nanos());
    CHECK(env->reserve(Subject{"user:vip"}, usd("4")).allowed);
    CHECK_FALSE(env->reserve(Subject{"user:bob"}, usd("4")).allowed);
    CHECK(env->remove_limit("user:vip", Metric::Cost, Window::day()));
    CHECK_FALSE(env->remove_limit("user:vip", Metric::Cost, Window::day()));
    CHECK(testutil::find_status(env->status(Scope::parse("user:vip")), "day")->limit == usd("2").nanos());
  }
}

TEST_CASE("idempotency: the same request id returns the first result and changes nothing") {
  FOR_EACH_STORE(kind) {
    Env env(kind);
    standard_limits(*env.m);
    auto d1 = env->reserve(alice(), usd("1"), {.request_id = "req-1"});
    auto d2 = env->reserve(alice(), usd("1"), {.request_id = "req-1"});
    REQUIRE(d1.allowed);
    REQUIRE(d2.allowed);
    CHECK(d2.replayed);
    CHECK(env->status(Scope::parse("user:alice"))[0].held == usd("1").nanos());
    CHECK_THROWS_AS(env->reserve(alice(), usd("1.5"), {.request_id = "req-1"}), ConflictError);

    auto c1 = env->commit("req-1", usd("0.80"));
    size_t n = event_count(*env.m);
    auto c2 = env->commit("req-1", usd("0.80"));
    CHECK(c2.replayed);
    CHECK(c2.charged == c1.charged);
    CHECK(event_count(*env.m) == n);
    CHECK_THROWS_AS(env->commit("req-1", usd("0.90")), ConflictError);
    CHECK_THROWS_AS(env->release("req-1"), ConflictError);
    CHECK(env->status(Scope::parse("user:alice"))[0].spent == usd("0.80").nanos());

    auto d3 = env->reserve(alice(), usd("0.5"), {.request_id = "req-2"});
    REQUIRE(d3.allowed);
    env->release(d3.reservation);
    CHECK(env->release("req-2").replayed);
    CHECK_THROWS_AS(env->commit("req-2", usd("0.1")), ConflictError);
    CHECK_THROWS_AS(env->commit("nope", usd("0.1")), NotFoundError);
    CHECK_THROWS_AS(env->release("nope"), NotFoundError);

    auto r1 = env->record(alice(), usd("0.1"), {.request_id = "rec-1"});
    auto r2 = env->record(alice(), usd("0.1"), {.request_id = "rec-1"});
    CHECK(r2.replayed);
    CHECK_THROWS_AS(env->record(alice(), usd("0.2"), {.request_id = "rec-1"}), ConflictError);
    CHECK(env->status(Scope::parse("user:alice"))[0].spent == usd("0.90").nanos());
    // A denied request id replays its denial.
    auto dd = env->reserve(alice(), usd("5"), {.request_id = "big"});
    CHECK_FALSE(dd.allowed);
    auto dd2 = env->reserve(alice(), usd("5"), {.request_id = "big"});
    CHECK_FALSE(dd2.allowed);
    CHECK(dd2.replayed);
    CHECK(dd2.denial.scope == dd.denial.scope);
    // A reserve replayed after its stream grew the hold still answers the first decision.
    auto g1 = env->reserve(alice(), usd("0.20"), {.request_id = "grow-1"});
    REQUIRE(g1.allowed);
    CHECK(env->consume(g1.reservation, usd("0.50")).ok());
    CHECK(g1.reservation.held() > usd("0.20"));  // the reservation object follows its stream
    auto g2 = env->reserve(alice(), usd("0.20"), {.request_id = "grow-1"});
    CHECK(g2.replayed);
    CHECK(g2.reservation.held() == usd("0.20"));
    CHECK(g2.reservation.expires_at() == g1.reservation.expires_at());
    require_verified(*env.m);
  }
}

TEST_CASE("commit above the hold or the limit is recorded and flagged") {
  FOR_EACH_STORE(kind) {
    Env env(kind);
    standard_limits(*env.m);
    auto d = env->reserve(alice(), usd("1"));
    auto rc = env->commit(d.reservation, usd("2.50"));
    CHECK(rc.over_hold);
    CHECK(rc.over_limit);
    CHECK(rc.over_limit_scopes == std::vector<std::string>{"user:alice"});
    CHECK(rc.charged == usd("2.50"));
    CHECK(env->status(Scope::parse("user:alice"))[0].spent == usd("2.50").nanos());
    CHECK(env->status(Scope::parse("user:alice"))[0].remaining == 0);
    require_verified(*env.m);
  }
}

TEST_CASE("streaming: consume inside the hold, grow it in steps, Stop when no scope can grow") {
  FOR_EACH_STORE(kind) {
    Env env(kind);
    standard_limits(*env.m);
    auto d = env->reserve(alice(), usd("0.50"));
    REQUIRE(d.allowed);
    auto r = d.reservation;
    for (int i = 0; i < 5; ++i) CHECK(env->consume(r, usd("0.10")).ok());
    CHECK(env->status(Scope::parse("user:alice"))[0].held == usd("0.50").nanos());  // no growth yet
    auto c = env->consume(r, usd("0.10"));  // 0.60 > 0.50: grows by max(0.10, 50% of 0.50)
    CHECK(c.ok());
    CHECK(c.held == usd("0.75"));
    CHECK(env->status(Scope::parse("user:alice"))[0].held == usd("0.75").nanos());
    int steps = 0;
    ConsumeResult last;
    while ((last = env->consume(r, usd("0.10"))).ok()) ++steps;
    CHECK(last.verdict == Verdict::Stop);
    CHECK(last.denial.reason == DenyReason::LimitExceeded);
    CHECK(last.denial.scope == "user:alice");
    CHECK(last.consumed <= usd("2.10"));
    CHECK(env->status(Scope::parse("user:alice"))[0].held <= usd("2").nanos());
    CHECK(env->consume(r, usd("0.01")).verdict == Verdict::Stop);  // sticky
    auto rc = env->commit(r, last.consumed);
    CHECK(rc.charged == last.consumed);
    auto ev = env->events({.type = EventType::Consume});
    CHECK_FALSE(ev.empty());
    require_verified(*env.m);
  }
}

TEST_CASE("consume by request id works from another manager on the same store") {
  for (const auto& kind : testutil::store_kinds()) {
    if (kind == "memory") continue;
    CAPTURE(kind);
    Env env(kind);
    standard_limits(*env.m);
    auto d = env->reserve(alice(), usd("0.50"), {.request_id = "s-1"});
    auto other = env.another();
    CHECK(other->consume("s-1", usd("0.70")).ok());
    CHECK(env->status(Scope::parse("user:alice"))[0].held >= usd("0.70").nanos());
    CHECK(other->commit("s-1", usd("0.70")).charged == usd("0.70"));
    require_verified(*env.m);
  }
}

TEST_CASE("a settled hold stops its stream: consume after commit or release answers Stop") {
  FOR_EACH_STORE(kind) {
    Env env(kind);
    standard_limits(*env.m);
    auto d = env->reserve(alice(), usd("0.50"));
    REQUIRE(d.allowed);
    auto r = d.reservation;
    CHECK(env->consume(r, usd("0.10")).ok());
    CHECK(env->commit(r, usd("0.10")).charged == usd("0.10"));
    auto c = env->consume(r, usd("0.10"));  // the Reservation still carries its stream state
    CHECK(c.verdict == Verdict::Stop);
    CHECK(c.denial.reason == DenyReason::NotHeld);  // no limit refused it
    CHECK(c.denial.scope.empty());
    CHECK(c.denial.message.find("committed") != std::string::npos);
    CHECK(env->consume(r.request_id(), usd("0.10")).verdict == Verdict::Stop);
    // By request id (the C API's way; the state is rebuilt from the store): the Stop says why,
    // as through the Reservation. It was a denial with reason None and no message.
    auto by_id = env->consume(r.request_id(), usd("0.10"));
    CHECK(by_id.verdict == Verdict::Stop);
    CHECK(by_id.denial.reason == DenyReason::NotHeld);
    CHECK(by_id.denial.message.find("committed") != std::string::npos);
    auto other = env->consume(std::string(r.request_id()), usd("0.10"));  // asked again: the same
    CHECK(other.denial.message == by_id.denial.message);
    auto refused = env->reserve(alice(), usd("50"), {.request_id = "refused-1"});
    REQUIRE_FALSE(refused.allowed);
    // An id that never held anything (a record, grant or adjustment): a different operation.
    env->record(Subject{"user:other"}, usd("0.01"), {.request_id = "rec-1"});
    env->grant(Scope::parse("user:other"), usd("1"), {.request_id = "grant-1"});
    env->adjust(Subject{"user:other"}, usd("0.01"), {.request_id = "adj-1"});
    const auto before = env->events().size();
    for (const char* id : {"rec-1", "grant-1", "adj-1"}) {
      CAPTURE(id);
      CHECK_THROWS_AS(env->consume(id, usd("0.10")), ConflictError);
    }
    CHECK(env->events().size() == before);
    auto on_denied = env->consume("refused-1", usd("0.10"));
    CHECK(on_denied.verdict == Verdict::Stop);
    CHECK(on_denied.denial.reason == DenyReason::NotHeld);
    CHECK(on_denied.denial.message.find("denied") != std::string::npos);
    auto d2 = env->reserve(alice(), usd("0.50"));
    REQUIRE(d2.allowed);
    auto r2 = d2.reservation;
    env->release(r2);
    auto c2 = env->consume(r2, usd("0.10"));
    CHECK(c2.verdict == Verdict::Stop);
    CHECK(c2.denial.reason == DenyReason::NotHeld);
    CHECK(c2.denial.message.find("released") != std::string::npos);
    CHECK(env->consume(r, usd("0.10")).denial.message == c.denial.message);  // asked again: the same
    auto st = env->status(Scope::parse("user:alice"))[0];
    CHECK(st.spent == usd("0.10").nanos());
    CHECK(st.held == 0);
    require_verified(*env.m);
  }
}

TEST_CASE("on the system clock a stream's TTL check stops it once the hold expired, never before") {
  // A real clock and a short TTL, on every store (the other cases run on a manual clock).
  FOR_EACH_STORE(kind) {
    Options o;
    o.store = testutil::fresh_url(kind);
    o.limits = {Limit::cost("user:*", Window::day(), usd("10"))};
    struct Cleanup {
      std::string url;
      ~Cleanup() { testutil::remove_store_files(url); }
    } cleanup{o.store};
    BudgetManager m(o);
    auto d = m.reserve(Subject{"user:clock"}, usd("1"), {.ttl = std::chrono::milliseconds(300)});
    REQUIRE(d.allowed);
    auto r = d.reservation;
    const auto expires = r.expires_at();
    while (m.now() < expires) {
      auto c = m.consume(r, usd("0.001"));
      if (m.now() < expires - std::chrono::milliseconds(50)) REQUIRE(c.verdict == Verdict::Continue);
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(30));  // a few ticks of the coarse clock
    auto stop = m.consume(r, usd("0.001"));
    CHECK(stop.verdict == Verdict::Stop);
    CHECK(stop.denial.reason == DenyReason::NotHeld);
    CHECK(stop.denial.message.find("expired") != std::string::npos);
  }
}

TEST_CASE("a hold settled by another process stops its stream with reason NotHeld, not a stale limit") {
  for (const auto& kind : testutil::store_kinds()) {
    if (kind == "memory") continue;  // another manager on the same store
    CAPTURE(kind);
    Options o;
    o.persist_every = usd("0.05");
    Env env(kind, o);
    const Subject s{"user:pz"};
    env->set_limit(Limit::cost("user:pz", Window::day(), usd("1")));
    auto d = env->reserve(s, usd("0.50"), {.request_id = "pz-1"});
    REQUIRE(d.allowed);
    REQUIRE(env->reserve(s, usd("0.30")).allowed);  // 0.20 left for growth
    auto r = d.reservation;
    // The first growth step (0.25) is refused by user:pz; the second (0.20) fits.
    auto grown = env->consume(r, usd("0.60"));
    REQUIRE(grown.ok());
    CHECK(grown.held == usd("0.70"));
    env.another()->commit("pz-1", usd("0.60"));
    // Inside the hold, but persisting the consumption finds the hold committed.
    auto stop = env->consume(r, usd("0.06"));
    CHECK(stop.verdict == Verdict::Stop);
    CHECK(stop.denial.reason == DenyReason::NotHeld);
    CHECK(stop.denial.scope.empty());  // it was the refused step's user:pz
    CHECK(stop.denial.message.find("committed") != std::string::npos);
    require_verified(*env.m);
  }
}

TEST_CASE("expiry settles a hold at the spend consumed so far, a later commit adjusts it") {
  FOR_EACH_STORE(kind) {
    Options o;
    o.persist_every = usd("0.10");
    Env env(kind, o);
    standard_limits(*env.m);
    auto d = env->reserve(alice(), usd("1"), {.request_id = "e-1", .ttl = Duration(60'000)});
    auto r = d.reservation;
    CHECK(env->consume(r, usd("0.30")).ok());  // persisted (>= persist_every)
    env.clock->advance(Duration(59'000));
    CHECK(env->expire_holds() == 0);
    env.clock->advance(Duration(2'000));
    CHECK(env->expire_holds() == 1);
    auto u = env->status(Scope::parse("user:alice"))[0];
    CHECK(u.held == 0);
    CHECK(u.spent == usd("0.30").nanos());
    CHECK(env->events({.type = EventType::Expire}).size() == 1);
    auto stopped = env->consume(r, usd("0.01"));
    CHECK(stopped.verdict == Verdict::Stop);
    CHECK(stopped.denial.reason == DenyReason::NotHeld);
    auto rc = env->commit("e-1", usd("0.45"));
    CHECK(rc.after_expiry);
    CHECK(rc.charged == usd("0.45"));
    CHECK(env->status(Scope::parse("user:alice"))[0].spent == usd("0.45").nanos());
    CHECK_THROWS_AS(env->release("e-1"), ConflictError);  // committed by then
    require_verified(*env.m);
  }
}

TEST_CASE("expiry charges what was consumed up to the hold: a stream refused at its limit and abandoned") {
  FOR_EACH_STORE(kind) {
    Env env(kind);
    env->set_limit(Limit::cost("user:*", Window::day(), usd("1")));
    auto s = Subject{"user:s"};
    auto d = env->reserve(s, usd("0.50"), {.request_id = "ab-1", .ttl = Duration(60'000)});
    REQUIRE(d.allowed);
    auto r = d.reservation;
    CHECK(env->consume(r, usd("0.90")).ok());  // the hold grows to 0.90 (of the $1 limit)
    REQUIRE(env->consume(r, usd("0.30")).verdict == Verdict::Stop);  // 1.20 does not fit
    CHECK(r.held() == usd("0.90"));
    env.clock->advance(Duration(61'000));  // the app never commits: the hold expires
    CHECK(env->expire_holds() == 1);
    // Expiry is no commit: it never charges past the hold on a limited metric, so no limit
    // is exceeded without a flagged commit (the refused 0.30 stays out, as the Stop said).
    auto st = env->status(Scope::parse("user:s"))[0];
    CHECK(st.spent == usd("0.90").nanos());
    CHECK(st.held == 0);
    // The app's own commit after that, with the full 1.20, is charged and flagged.
    auto rc = env->commit("ab-1", usd("1.20"));
    CHECK(rc.after_expiry);
    CHECK(rc.over_limit);
    CHECK(env->status(Scope::parse("user:s"))[0].spent == usd("1.20").nanos());
    require_verified(*env.m);
  }
}

TEST_CASE("an expired reservation counts as a request, once: a late commit does not count it again") {
  FOR_EACH_STORE(kind) {
    Env env(kind);
    auto s = Subject{"key:rq"};
    env->set_limit(Limit::requests("key:rq", Window::hour(), 2));
    env->reserve(s, usd("0.10"), {.request_id = "rq-1", .ttl = Duration(1'000)});
    auto r2 = env->reserve(s, usd("0.10"), {.request_id = "rq-2", .ttl = Duration(1'000)}).reservation;
    env->release(r2);  // a released hold was never sent: it counts nothing
    env.clock->advance(Duration(2'000));
    CHECK(env->expire_holds() == 1);  // rq-1 was admitted and never settled: sent, most likely
    auto st = env->status(Scope::parse("key:rq"))[0];
    CHECK(st.spent == 1);
    CHECK(st.held == 0);
    CHECK(env->reserve(s, usd("0.10"), {.request_id = "rq-3"}).allowed);
    CHECK_FALSE(env->check(s, usd("0.10")).allowed);  // 2 of 2: rq-1 (expired) and rq-3
    auto rc = env->commit("rq-1", usd("0.05"));
    CHECK(rc.after_expiry);
    CHECK(env->status(Scope::parse("key:rq"))[0].spent == 1);  // still one request for rq-1
    bool seen = false;
    for (const auto& row : env->aggregate())
      if (row.scope == "key:rq") {
        seen = true;
        CHECK(row.requests == 1);  // rq-1 alone is charged; rq-3 is still held
      }
    CHECK(seen);
    require_verified(*env.m);
  }
}

TEST_CASE("an empty alert or denial callback is refused, and later operations still work") {
  Env env("memory");
  env->set_limit(Limit::cost("user:cb", Window::day(), usd("1"), {50}));
  // An empty std::function was registered as is: every later operation that crossed a
  // threshold or was denied then threw bad_function_call, after its change was applied.
  CHECK_THROWS_AS(env->on_alert(nullptr), InvalidArgumentError);
  CHECK_THROWS_AS(env->on_denial(nullptr), InvalidArgumentError);
  CHECK_NOTHROW(env->record(Subject{"user:cb"}, usd("0.60")));  // crosses 50%
  CHECK_FALSE(env->reserve(Subject{"user:cb"}, usd("1")).allowed);  // denied
  CHECK(env->status(Scope::parse("user:cb"))[0].spent == usd("0.60").nanos());
}

TEST_CASE("spend charged by expiry fires threshold alerts, once") {
  FOR_EACH_STORE(kind) {
    Options o;
    o.persist_every = usd("0.10");
    Env env(kind, o);
    env->set_limit(Limit::cost("user:exp", Window::day(), usd("10"), {50, 80}));
    env->set_limit(Limit::cost("tenant:t", Window::day(), usd("100"), {5}));
    std::vector<std::string> fired;
    env->on_alert([&](const Alert& a) { fired.push_back(a.scope + "@" + std::to_string(a.threshold_pct)); });
    auto s = Subject{"tenant:t", "user:exp"};
    auto r1 = env->reserve(s, usd("3"), {.request_id = "ex-1", .ttl = Duration(1'000)}).reservation;
    auto r2 = env->reserve(s, usd("3"), {.request_id = "ex-2", .ttl = Duration(1'000)}).reservation;
    CHECK(env->consume(r1, usd("2.60")).ok());  // persisted: expiry will charge it
    CHECK(env->consume(r2, usd("2.60")).ok());
    CHECK(fired.empty());  // holds and consumption are not spend
    env.clock->advance(Duration(2'000));
    CHECK(env->expire_holds() == 2);
    // Each expiry alone stays under 50% of the user's $10; together they cross it. The
    // tenant's 5% of $100 is crossed too.
    std::sort(fired.begin(), fired.end());
    CHECK(fired == std::vector<std::string>{"tenant:t@5", "user:exp@50"});
    CHECK(env->status(Scope::parse("user:exp"))[0].spent == usd("5.20").nanos());
    env->record(s, usd("0.10"));  // no threshold crossed again in this window
    CHECK(fired.size() == 2);
    env->record(s, usd("3"));  // 83%: 80 fires
    CHECK(fired.back() == "user:exp@80");
    // The next day, a later sweep: its expiries are read back too, not those of the first.
    env.clock->advance(Duration(86'400'000));
    auto r3 = env->reserve(s, usd("6"), {.request_id = "ex-3", .ttl = Duration(1'000)}).reservation;
    CHECK(env->consume(r3, usd("5.50")).ok());
    env.clock->advance(Duration(2'000));
    CHECK(env->expire_holds() == 1);
    REQUIRE(fired.size() == 5);  // a new day: both thresholds are crossed again
    std::sort(fired.begin() + 3, fired.end());
    CHECK(std::vector<std::string>(fired.begin() + 3, fired.end()) ==
          std::vector<std::string>{"tenant:t@5", "user:exp@50"});
    require_verified(*env.m);
  }
}

TEST_CASE("an expiry settled by another operation's sweep reports the alert it crossed, not that operation") {
  FOR_EACH_STORE(kind) {
    Options o;
    o.persist_every = usd("0.10");
    Env env(kind, o);
    env->set_limit(Limit::cost("tenant:t", Window::day(), usd("10"), {50}));
    std::vector<Alert> fired;
    // A second manager ("another process", on a shared store) records after the hold's TTL:
    // the sweep that expires it runs inside that record (the engine's or the Redis script's).
    auto other = kind == "memory" ? nullptr : env.another();
    BudgetManager& second = other ? *other : *env.m;
    env->on_alert([&](const Alert& a) { fired.push_back(a); });
    if (other) other->on_alert([&](const Alert& a) { fired.push_back(a); });
    auto r = env->reserve(Subject{"tenant:t", "user:a"}, usd("6"), {.request_id = "sw-1", .ttl = Duration(60'000)});
    REQUIRE(r.allowed);
    CHECK(env->consume(r.reservation, usd("5.50")).ok());  // persisted: the expiry charges it
    env.clock->advance(Duration(120'000));
    second.record(Subject{"tenant:t", "user:b"}, usd("0.20"), {.request_id = "sw-2"});
    // The expiry took the tenant from $0 to $5.50 (50% crossed); the record from $5.50 to
    // $5.70 crossed nothing. Before the fix the crossing was reported with the record's id
    // and amount (memory, SQLite) or lost (Redis, whose script swept).
    REQUIRE(fired.size() == 1);
    CHECK(fired[0].request_id == "sw-1");
    CHECK(fired[0].spent == usd("5.50").nanos());
    CHECK(env->status(Scope::parse("tenant:t"))[0].spent == usd("5.70").nanos());
    require_verified(*env.m);
  }
}

TEST_CASE("an expiry swept by an operation that then fails with Conflict still reports its alert") {
  FOR_EACH_STORE(kind) {
    Options o;
    o.persist_every = usd("0.10");
    Env env(kind, o);
    env->set_limit(Limit::cost("tenant:t", Window::day(), usd("10"), {50, 80}));
    std::vector<Alert> fired;
    // On Redis a second manager ("another process"): its engine does not know the hold's
    // deadline, so the sweep that expires it is the Redis script's. Memory and SQLite: the
    // manager that holds, whose engine sweeps before the operation.
    auto other = kind == "redis" ? env.another() : nullptr;
    BudgetManager& second = other ? *other : *env.m;
    env->on_alert([&](const Alert& a) { fired.push_back(a); });
    if (other) other->on_alert([&](const Alert& a) { fired.push_back(a); });
    // A hold of `held` that consumed `used` (persisted), then the clock past its TTL.
    auto hold_then_outlive = [&](const char* id, const char* held, const char* used, int64_t ttl_ms) {
      auto r = env->reserve(Subject{"tenant:t", "user:a"}, usd(held), {.request_id = id, .ttl = Duration(ttl_ms)});
      REQUIRE(r.allowed);
      CHECK(env->consume(r.reservation, usd(used)).ok());
      env.clock->advance(Duration(ttl_ms + 50));
    };
    second.record(Subject{"tenant:t", "user:b"}, usd("0.20"), {.request_id = "cf-0"});  // a sweep: none due
    hold_then_outlive("cf-1", "6", "5.50", 550);
    // Within a second of the last sweep: the hold expires in the sweep of this operation,
    // which then fails: "cf-1" is a hold. Before the fix the Redis store threw at once and the
    // alert of the expiry's spend was lost.
    CHECK_THROWS_AS(second.record(Subject{"tenant:t", "user:b"}, usd("0.20"), {.request_id = "cf-1"}), ConflictError);
    REQUIRE(fired.size() == 1);
    CHECK(fired[0].request_id == "cf-1");
    CHECK(fired[0].spent == usd("5.70").nanos());
    // The same through a reserve that reuses a record's id, still within that second.
    hold_then_outlive("cf-2", "3", "2.50", 300);
    CHECK_THROWS_AS(second.reserve(Subject{"tenant:t", "user:b"}, usd("0.20"), {.request_id = "cf-0"}), ConflictError);
    REQUIRE(fired.size() == 2);
    CHECK(fired[1].request_id == "cf-2");
    CHECK(fired[1].threshold_pct == 80);
    CHECK(env->status(Scope::parse("tenant:t"))[0].spent == usd("8.20").nanos());
    CHECK(env->status(Scope::parse("tenant:t"))[0].held == 0);
    require_verified(*env.m);
  }
}

TEST_CASE("a top-up re-arms the alerts of a prepaid balance") {
  FOR_EACH_STORE(kind) {
    Env env(kind);
    env->set_limit(Limit::cost("tenant:pre", Window::total(), usd("1"), {100}));
    std::vector<int64_t> fired;  // the cap each 100% alert reports
    env->on_alert([&](const Alert& a) { fired.push_back(a.limit); });
    auto s = Subject{"tenant:pre"};
    env->record(s, usd("1"));
    CHECK(fired == std::vector<int64_t>{usd("1").nanos()});
    env->grant(Scope::parse("tenant:pre"), usd("1"), {.reason = "top-up"});
    env->record(s, usd("0.50"));
    CHECK(fired.size() == 1);
    env->record(s, usd("0.50"));  // the new balance of $2 is used up: a new crossing
    CHECK(fired == std::vector<int64_t>{usd("1").nanos(), usd("2").nanos()});
    env->adjust(s, usd("-0.30"));
    env->record(s, usd("0.30"));  // back at 100% of the same $2: once per window and cap
    CHECK(fired.size() == 2);
  }
}

TEST_CASE("a commit that arrives after the TTL but before any sweep is an ordinary commit") {
  FOR_EACH_STORE(kind) {
    Env env(kind);
    standard_limits(*env.m);
    auto d = env->reserve(alice(), usd("1"), {.ttl = Duration(1'000)});
    REQUIRE(d.allowed);
    env.clock->advance(Duration(5'000));
    // The stream must stop (its hold may be settled by expiry any moment), but no limit refused.
    auto stop = env->consume(d.reservation, usd("0.10"));
    CHECK(stop.verdict == Verdict::Stop);
    CHECK(stop.denial.reason == DenyReason::NotHeld);
    CHECK(stop.denial.message.find("expired") != std::string::npos);
    auto rc = env->commit(d.reservation, usd("0.70"));
    CHECK_FALSE(rc.after_expiry);
    CHECK(rc.charged == usd("0.70"));
    CHECK(env->events({.type = EventType::Expire}).empty());
    auto u = env->status(Scope::parse("user:alice"))[0];
    CHECK(u.spent == usd("0.70").nanos());
    CHECK(u.held == 0);
    require_verified(*env.m);
  }
}

TEST_CASE("holds expire lazily: a later operation settles them without expire_holds()") {
  FOR_EACH_STORE(kind) {
    Env env(kind);
    standard_limits(*env.m);
    REQUIRE(env->reserve(alice(), usd("2"), {.ttl = Duration(5'000)}).allowed);
    CHECK_FALSE(env->reserve(alice(), usd("1")).allowed);
    env.clock->advance(Duration(6'000));
    CHECK(env->reserve(alice(), usd("1")).allowed);
  }
}

TEST_CASE("holds due together expire in (deadline, request id) order: their events and alerts") {
  FOR_EACH_STORE(kind) {
    Options o;
    o.persist_every = usd("0.10");
    Env env(kind, o);
    env->set_limit(Limit::cost("user:*", Window::day(), usd("1"), {50}));
    std::vector<std::string> alerted;
    env->on_alert([&](const Alert& a) { alerted.push_back(a.request_id); });
    // One user each (different subjects, so different stripes / keys); ids not in TTL order.
    const std::vector<std::pair<std::string, int64_t>> holds = {
        {"q-7", 3'000}, {"b-2", 1'000}, {"k-5", 2'000}, {"a-9", 2'000},
        {"z-1", 1'000}, {"m-4", 3'000}, {"c-3", 2'000}, {"x-8", 1'000}};
    for (size_t i = 0; i < holds.size(); ++i) {
      auto d = env->reserve(Subject{"user:u" + std::to_string(i)}, usd("0.80"),
                            {.request_id = holds[i].first, .ttl = Duration(holds[i].second)});
      REQUIRE(d.allowed);
      CHECK(env->consume(d.reservation, usd("0.60")).ok());  // persisted: its expiry crosses 50%
    }
    CHECK(alerted.empty());
    env.clock->advance(Duration(5'000));
    REQUIRE(env->reserve(Subject{"user:other"}, usd("0.10")).allowed);  // sweeps them all
    const std::vector<std::string> want = {"b-2", "x-8", "z-1", "a-9", "c-3", "k-5", "m-4", "q-7"};
    std::vector<std::string> expired;
    for (const auto& e : env->events({.type = EventType::Expire})) expired.push_back(e.request_id);
    CHECK(expired == want);
    CHECK(alerted == want);
    require_verified(*env.m);
  }
}

TEST_CASE("calendar windows roll over at their boundaries") {
  FOR_EACH_STORE(kind) {
    Env env(kind);
    auto s = Subject{"user:w"};
    env->set_limit(Limit::cost("user:w", Window::minute(), usd("1")));
    env->record(s, usd("1"));
    CHECK_FALSE(env->check(s, usd("0.01")).allowed);
    env.clock->advance(Duration(60'000));
    CHECK(env->check(s, usd("0.01")).allowed);

    CHECK(env->remove_limit("user:w", Metric::Cost, Window::minute()));
    env->set_limit(Limit::cost("user:w", Window::week(), usd("2")));
    env->record(s, usd("1"));
    env->record(s, usd("1"));
    auto d = env->check(s, usd("0.01"));
    REQUIRE_FALSE(d.allowed);
    CHECK(d.denial.window == "week");
    // t0 is Tuesday 2026-03-10; the ISO week resets Monday 2026-03-16 00:00 UTC.
    CHECK(*d.denial.resets_at == from_millis(1'773'619'200'000));
    env.clock->set(from_millis(1'773'619'200'000 - 1));
    CHECK_FALSE(env->check(s, usd("0.01")).allowed);
    env.clock->set(from_millis(1'773'619'200'000));
    CHECK(env->check(s, usd("0.01")).allowed);
  }
}

TEST_CASE("month, hour, total, rolling and custom windows") {
  FOR_EACH_STORE(kind) {
    Env env(kind);
    auto s = Subject{"key:k1"};
    env->set_limit(Limit::cost("key:k1", Window::month(), usd("3")));
    env->record(s, usd("3"));
    auto d = env->check(s, usd("1"));
    REQUIRE_FALSE(d.allowed);
    CHECK(*d.denial.resets_at == from_millis(1'775'001'600'000));  // 2026-04-01
    env.clock->set(from_millis(1'775'001'600'000));
    CHECK(env->check(s, usd("1")).allowed);

    auto h = Subject{"key:h"};
    env->set_limit(Limit::requests("key:h", Window::hour(), 2));
    CHECK(env->reserve(h, usd("0")).allowed);
    CHECK(env->reserve(h, usd("0")).allowed);
    auto dh = env->reserve(h, usd("0"));
    REQUIRE_FALSE(dh.allowed);
    CHECK(dh.denial.metric == Metric::Requests);
    CHECK_FALSE(dh.denial.hard);

    auto t = Subject{"tenant:prepaid"};
    env->set_limit(Limit::cost("tenant:prepaid", Window::total(), usd("5")));
    env->record(t, usd("5"));
    auto dt = env->check(t, usd("0.01"));
    REQUIRE_FALSE(dt.allowed);
    CHECK_FALSE(dt.denial.resets_at.has_value());
    CHECK(dt.denial.hard);
    env.clock->advance(Duration(400LL * 86'400'000));
    CHECK_FALSE(env->check(t, usd("0.01")).allowed);  // never resets

    auto r = Subject{"user:roll"};
    env->set_limit(Limit::cost("user:roll", Window::rolling(Duration(3'600'000)), usd("1")));
    env->record(r, usd("0.60"));
    env.clock->advance(Duration(30 * 60'000));
    env->record(r, usd("0.40"));
    CHECK_FALSE(env->check(r, usd("0.01")).allowed);
    env.clock->advance(Duration(31 * 60'000));  // the first record left the hour
    CHECK(env->check(r, usd("0.50")).allowed);
    CHECK_FALSE(env->check(r, usd("0.70")).allowed);

    auto now = env->now();
    auto c = Subject{"feature:promo"};
    env->set_limit(Limit::cost("feature:promo", Window::custom(now + Duration(1000), now + Duration(10'000)), usd("1")));
    env->record(c, usd("2"));  // before the window: does not count in it
    env.clock->advance(Duration(2000));
    CHECK(env->check(c, usd("1")).allowed);
    env->record(c, usd("1"));
    CHECK_FALSE(env->check(c, usd("0.01")).allowed);
    env.clock->advance(Duration(10'000));  // after the window: the limit no longer applies
    CHECK(env->check(c, usd("100")).allowed);
    require_verified(*env.m);
  }
}

TEST_CASE("checks count spend in later buckets too (a grown old hold, a clock running ahead)") {
  FOR_EACH_STORE(kind) {
    Env env(kind);
    auto s = Subject{"user:skew"};
    env->set_limit(Limit::cost("user:skew", Window::rolling(Duration(60'000)), usd("1")));
    auto d = env->reserve(s, usd("0.40"));
    REQUIRE(d.allowed);
    auto r = d.reservation;
    env.clock->advance(Duration(30'000));
    REQUIRE(env->reserve(s, usd("0.50")).allowed);  // a newer bucket of the same window
    // The old hold grows: its check must see the newer bucket (0.40 + 0.50 + 0.20 > 1).
    CHECK(env->consume(r, usd("0.60")).verdict == Verdict::Stop);
    // Spend recorded "in the future" (another host's clock ahead) counts now.
    env.clock->advance(Duration(20'000));
    env->record(s, usd("0.05"));
    env.clock->set(testutil::t0() + Duration(1'000));
    auto st = env->status(Scope::parse("user:skew"))[0];
    CHECK(st.held + st.spent == usd("0.95").nanos());
  }
}

TEST_CASE("over_limit at commit judges a rolling window as it stands at commit time") {
  FOR_EACH_STORE(kind) {
    Env env(kind);
    auto s = Subject{"user:slide"};
    env->set_limit(Limit::cost("user:slide", Window::rolling(Duration(60'000)), usd("1")));
    env->record(s, usd("0.40"));
    env.clock->advance(Duration(30'000));
    auto d = env->reserve(s, usd("0.50"));
    REQUIRE(d.allowed);
    env.clock->advance(Duration(45'000));  // the 0.40 left the window
    auto rc = env->commit(d.reservation, usd("0.50"));
    CHECK_FALSE(rc.over_limit);
    CHECK(env->status(Scope::parse("user:slide"))[0].spent == usd("0.50").nanos());
  }
}

TEST_CASE("calendar windows in a fixed UTC offset") {
  FOR_EACH_STORE(kind) {
    Options o;
    o.utc_offset_minutes = -5 * 60;  // UTC-5
    Env env(kind, o);
    auto s = Subject{"user:ny"};
    env->set_limit(Limit::cost("user:ny", Window::day(), usd("1")));
    env->record(s, usd("1"));
    auto d = env->check(s, usd("0.5"));
    REQUIRE_FALSE(d.allowed);
    // 12:00Z = 07:00 local; the local day ends at 05:00Z the next day.
    CHECK(*d.denial.resets_at == from_millis(1'773'144'000'000 + 17 * 3'600'000LL));
  }
}

TEST_CASE("calendar windows in an IANA time zone follow daylight saving") {
  FOR_EACH_STORE(kind) {
    Options o;
    o.time_zone = "Europe/Paris";
    Env env(kind, o);
    auto s = Subject{"user:paris"};
    env->set_limit(Limit::cost("user:paris", Window::day(), usd("1")));
    env->set_limit(Limit::cost("user:paris", Window::month(), usd("100")));
    // 2026-03-29 is 23 hours long in Paris: from 2026-03-28T23:00Z to 2026-03-29T22:00Z.
    env.clock->set(from_millis(1'774'738'800'000 + 3'600'000));  // 01:00 local (UTC+1)
    env->record(s, usd("1"));
    auto d = env->check(s, usd("0.01"));
    REQUIRE_FALSE(d.allowed);
    CHECK(d.denial.window == "day");
    CHECK(*d.denial.resets_at == from_millis(1'774'821'600'000));  // 00:00 local on the 30th (UTC+2)
    env.clock->set(from_millis(1'774'821'600'000 - 1));
    CHECK_FALSE(env->check(s, usd("0.01")).allowed);
    env.clock->set(from_millis(1'774'821'600'000));
    CHECK(env->check(s, usd("0.01")).allowed);
    const auto statuses = env->status(Scope::parse("user:paris"));
    auto month = testutil::find_status(statuses, "month");
    REQUIRE(month != nullptr);
    CHECK(*month->resets_at == from_millis(1'774'994'400'000));  // 2026-04-01T00:00+02:00
  }
  CHECK_THROWS_AS(BudgetManager(Options{.store = "memory", .time_zone = "Mars/Olympus"}), InvalidArgumentError);
}

TEST_CASE("grants raise total limits, adjustments correct spend") {
  FOR_EACH_STORE(kind) {
    Env env(kind);
    auto t = Subject{"tenant:acme"};
    env->set_limit(Limit::cost("tenant:acme", Window::total(), usd("10")));
    env->record(t, usd("9"));
    CHECK_FALSE(env->check(t, usd("2")).allowed);
    env->grant(Scope::parse("tenant:acme"), usd("5"), {.request_id = "g-1", .reason = "top-up"});
    env->grant(Scope::parse("tenant:acme"), usd("5"), {.request_id = "g-1", .reason = "top-up"});  // idempotent
    auto st = env->status(Scope::parse("tenant:acme"))[0];
    CHECK(st.limit == usd("15").nanos());
    CHECK(st.granted == usd("5").nanos());
    CHECK(env->check(t, usd("2")).allowed);
    env->adjust(t, usd("-4"), {.reason = "refund"});
    CHECK(env->status(Scope::parse("tenant:acme"))[0].spent == usd("5").nanos());
    auto g = env->events({.type = EventType::Grant});
    REQUIRE(g.size() == 1);
    CHECK(g[0].metadata.find("top-up") != std::string::npos);
    CHECK(env->events({.type = EventType::Adjust}).size() == 1);
    CHECK_THROWS_AS(env->grant(Scope::parse("tenant:acme"), usd("-1")), InvalidArgumentError);
    // The reason is the metadata key "reason": the same value both ways is one reason; two
    // different values are refused (one was silently lost), and nothing changes.
    env->grant(Scope::parse("tenant:acme"), usd("1"),
               {.request_id = "g-2", .metadata = {{"reason", "promo"}, {"who", "ops"}}, .reason = "promo"});
    const auto n = env->events().size();
    CHECK_THROWS_AS(env->grant(Scope::parse("tenant:acme"), usd("1"),
                               {.request_id = "g-3", .metadata = {{"reason", "promo"}}, .reason = "refund"}),
                    InvalidArgumentError);
    CHECK_THROWS_AS(env->adjust(t, usd("1"), {.request_id = "a-3", .metadata = {{"reason", "x"}}, .reason = "y"}),
                    InvalidArgumentError);
    CHECK(env->events().size() == n);
    CHECK(env->status(Scope::parse("tenant:acme"))[0].granted == usd("6").nanos());
    require_verified(*env.m);
  }
}

TEST_CASE("metadata reads back as written, in its order, and the ledger verifies") {
  // The reason goes after the caller's keys, out of key order: SQLite read it back with its
  // keys sorted, and verify() reported the hash chain broken.
  FOR_EACH_STORE(kind) {
    Env env(kind);
    env->set_limit(Limit::cost("user:*", Window::total(), usd("5")));
    env->grant(Scope::parse("user:u"), usd("2"), {.request_id = "g-1", .metadata = {{"team", "x"}}, .reason = "goodwill"});
    env->record(Subject{"user:u"}, usd("1"),
                {.request_id = "rec-1", .metadata = {{"z", "caf\xc3\xa9"}, {"a", "\"q\"\n"}}, .reason = "late"});
    auto g = env->events({.type = EventType::Grant});
    REQUIRE(g.size() == 1);
    CHECK(g[0].metadata == R"({"team":"x","reason":"goodwill"})");
    auto r = env->events({.type = EventType::Record});
    REQUIRE(r.size() == 1);
    CHECK(r[0].metadata == "{\"a\":\"\\\"q\\\"\\n\",\"z\":\"caf\xc3\xa9\",\"reason\":\"late\"}");
    require_verified(*env.m);
    if (kind == "memory") continue;  // not shared
    auto again = env.another();  // read by another manager (from the store, not a cache)
    CHECK(again->events({.type = EventType::Grant})[0].metadata == g[0].metadata);
    CHECK(again->verify().ok);
  }
}

TEST_CASE("status and denials saturate when a limit plus its grants exceeds int64") {
  FOR_EACH_STORE(kind) {
    if (kind == "redis") continue;  // amounts there are bounded by 2^53 (tested in test_redis)
    Env env(kind);
    auto t = Subject{"tenant:big"};
    // The largest limit accepted (int64 / 4) plus a grant near int64: their sum is beyond it.
    env->set_limit(Limit::cost("tenant:big", Window::total(), Money::from_nanos(INT64_MAX / 4)));
    env->grant(Scope::parse("tenant:big"), Money::from_nanos(INT64_MAX - 10));
    env->record(t, Money::from_nanos(5));
    auto st = env->status(Scope::parse("tenant:big"))[0];
    CHECK(st.limit == INT64_MAX);
    CHECK(st.granted == INT64_MAX - 10);
    CHECK(st.spent == 5);
    CHECK(st.remaining == INT64_MAX);
    auto d = env->reserve(t, Money::from_nanos(INT64_MAX / 2));
    CHECK(d.allowed);  // room: limit + grants - spent >= the request, computed without overflow
    CHECK(env->status(Scope::parse("tenant:big"))[0].remaining == INT64_MAX / 4 + (INT64_MAX - 10 - 5 - INT64_MAX / 2));
    env->release(d.reservation);
    require_verified(*env.m);
  }
}

TEST_CASE("tokens limits count input + output and streams grow token holds") {
  FOR_EACH_STORE(kind) {
    Env env(kind);
    auto s = Subject{"user:tk"};
    env->set_limit(Limit::tokens("user:tk", Window::minute(), 1000));
    auto d = env->reserve(s, Estimate::money(usd("0.01"), 600));
    REQUIRE(d.allowed);
    CHECK(d.reservation.held_tokens() == 600);
    CHECK_FALSE(env->reserve(s, Estimate::money(usd("0.01"), 500)).allowed);
    auto r = d.reservation;
    CHECK(env->consume(r, usd("0"), 700).ok());  // grows to >= 700 tokens
    CHECK(env->consume(r, usd("0"), 400).verdict == Verdict::Stop);
    Usage u;
    u.input_tokens = 300;
    u.output_tokens = 500;
    auto rc = env->commit(r, Charge::money(usd("0.02"), u.total_tokens()));
    CHECK(rc.tokens == 800);
    CHECK(testutil::find_status(env->status(Scope::parse("user:tk")), "minute", Metric::Tokens)->spent == 800);
  }
}

TEST_CASE("threshold alerts fire once per window per threshold") {
  FOR_EACH_STORE(kind) {
    Env env(kind);
    env->set_limit(Limit::cost("user:al", Window::day(), usd("10"), {50, 80, 100}));
    std::vector<uint32_t> fired;
    env->on_alert([&](const Alert& a) {
      CHECK(a.scope == "user:al");
      fired.push_back(a.threshold_pct);
    });
    auto s = Subject{"user:al"};
    env->record(s, usd("4"));
    CHECK(fired.empty());
    env->record(s, usd("1"));  // 50%
    CHECK(fired == std::vector<uint32_t>{50});
    env->record(s, usd("4"));  // 90%
    CHECK(fired == std::vector<uint32_t>{50, 80});
    env->adjust(s, usd("-2"));
    env->record(s, usd("2"));  // back to 90%: 80 already fired in this window
    CHECK(fired == std::vector<uint32_t>{50, 80});
    env->record(s, usd("3"));  // 120%
    CHECK(fired == std::vector<uint32_t>{50, 80, 100});
    env.clock->advance(Duration(86'400'000));
    env->record(s, usd("6"));  // the next day: 50 fires again
    CHECK(fired == std::vector<uint32_t>{50, 80, 100, 50});
  }
}

TEST_CASE("alert dedupe outlives its pruning: windows past their end are forgotten, the current one is not") {
  FOR_EACH_STORE(kind) {
    Env env(kind);
    env->set_limit(Limit::cost("user:pr", Window::minute(), usd("1"), {50}));
    int fired = 0;
    env->on_alert([&](const Alert&) { ++fired; });
    auto s = Subject{"user:pr"};
    // 1100 minutes, each crossing 50% twice (down by an adjustment in between): more crossings
    // than the dedupe set holds before it prunes (1024), and each must fire exactly once.
    const int minutes = 1100;
    for (int i = 0; i < minutes; ++i) {
      env->record(s, usd("0.6"));
      env->adjust(s, usd("-0.3"));
      env->record(s, usd("0.3"));  // crosses 50% again in the same minute: already fired
      env.clock->advance(Duration(60'000));
    }
    CHECK(fired == minutes);
  }
}

TEST_CASE("denials are observable") {
  FOR_EACH_STORE(kind) {
    Env env(kind);
    env->set_limit(Limit::cost("user:x", Window::day(), usd("1")));
    int denials = 0;
    env->on_denial([&](const Denial& d, const Subject& s) {
      ++denials;
      CHECK(d.scope == "user:x");
      CHECK(s.contains(Scope::parse("user:x")));
    });
    CHECK_FALSE(env->reserve(Subject{"user:x"}, usd("2")).allowed);
    CHECK(denials == 1);
    CHECK(env->events({.type = EventType::Deny}).size() == 1);
    // A stream refused by the limit is a denial too, reported once (not again while stopped,
    // nor for a stream whose hold was settled).
    auto d = env->reserve(Subject{"user:x"}, usd("0.5"));
    REQUIRE(d.allowed);
    CHECK(env->consume(d.reservation, usd("2")).verdict == Verdict::Stop);
    CHECK(denials == 2);
    CHECK(env->consume(d.reservation, usd("0.1")).verdict == Verdict::Stop);
    CHECK(denials == 2);
    env->release(d.reservation);
    auto d2 = env->reserve(Subject{"user:x"}, usd("0.5"));
    REQUIRE(d2.allowed);
    env->commit(d2.reservation, usd("0.5"));
    CHECK(env->consume(d2.reservation, usd("0.1")).verdict == Verdict::Stop);
    CHECK(denials == 2);
  }
}

TEST_CASE("check() holds nothing and writes nothing") {
  FOR_EACH_STORE(kind) {
    Env env(kind);
    standard_limits(*env.m);
    CHECK(env->check(alice(), usd("1.5")).allowed);
    CHECK_FALSE(env->check(alice(), usd("2.5")).allowed);
    CHECK(env->events().empty());
    CHECK(env->status(Scope::parse("user:alice"))[0].held == 0);
  }
}

// A pricer that knows one OpenAI model at $1 / $4 per million input / output tokens (plus
// `extra` prices, e.g. per service tier).
std::shared_ptr<PricingEngine> one_model_pricer(const char* model, const char* extra = "") {
  auto pe = std::make_shared<PricingEngine>();
  ModelPrice mp;
  mp.provider = "openai";
  mp.input = "0.000001";
  mp.output = "0.000004";
  mp.extra = extra;
  pe->set_price(model, mp);
  return pe;
}

TEST_CASE("a call is priced at the service tier its usage names, and the ledger keeps the tier") {
  FOR_EACH_STORE(kind) {
    Options o;
    o.pricer = one_model_pricer("tiered-model", "in/priority=0.000002 out/priority=0.000008");
    Env env(kind, o);
    standard_limits(*env.m);
    Usage u;
    u.input_tokens = 1'000;
    u.output_tokens = 500;
    u.service_tier = ServiceTier::Priority;
    auto d = env->reserve(alice(), Estimate::priced("tiered-model", u), {.request_id = "tier-1"});
    REQUIRE(d.allowed);
    CHECK(d.reservation.held() == usd("0.006"));  // 1000 x 2e-6 + 500 x 8e-6 (standard: 0.003)
    auto rc = env->commit(d.reservation, Charge::priced("tiered-model", u));
    CHECK(rc.charged == usd("0.006"));
    Usage std_usage = u;
    std_usage.service_tier = ServiceTier::Standard;
    CHECK(env->record(alice(), Charge::priced("tiered-model", std_usage)).charged == usd("0.003"));
    LedgerQuery q;
    q.type = EventType::Commit;
    auto ev = env->events(q);
    REQUIRE(ev.size() == 1);
    REQUIRE(ev[0].usage.has_value());
    CHECK(ev[0].usage->service_tier == ServiceTier::Priority);
    q.type = EventType::Record;
    ev = env->events(q);
    REQUIRE(ev.size() == 1);
    REQUIRE(ev[0].usage.has_value());
    CHECK(ev[0].usage->service_tier == ServiceTier::Standard);
    std::ostringstream jsonl;
    env->export_jsonl(jsonl);
    const std::string text = jsonl.str();
    CHECK(text.find("\"service_tier\":\"priority\"") != std::string::npos);
    CHECK(text.find("\"service_tier\":\"standard\"") == std::string::npos);  // standard is not written
    require_verified(*env.m);
  }
}

TEST_CASE("audio tokens are priced at the audio prices, the ledger keeps them, and the retry key covers them") {
  FOR_EACH_STORE(kind) {
    Options o;
    o.pricer = one_model_pricer("audio-model", "ain=0.00004 aout=0.00008");
    Env env(kind, o);
    standard_limits(*env.m);
    Usage u;
    u.input_tokens = 1'000;
    u.audio_input_tokens = 600;
    u.output_tokens = 500;
    u.audio_output_tokens = 300;
    u.service_tier = ServiceTier::Flex;  // the tier rides beside the audio parts
    // 400 x 1e-6 + 600 x 4e-5 + 200 x 4e-6 + 300 x 8e-5 (as text: 0.003)
    auto rc = env->record(alice(), Charge::priced("audio-model", u), {.request_id = "audio-1"});
    CHECK(rc.charged == usd("0.0492"));
    Usage text = u;
    text.audio_input_tokens = text.audio_output_tokens = 0;
    text.service_tier = ServiceTier::Standard;
    CHECK(env->record(alice(), Charge::priced("audio-model", text), {.request_id = "text-1"}).charged == usd("0.003"));
    // A retry replays; the same call with other audio parts is another call.
    CHECK(env->record(alice(), Charge::priced("audio-model", u), {.request_id = "audio-1"}).replayed);
    CHECK(env->record(alice(), Charge::priced("audio-model", text), {.request_id = "text-1"}).replayed);
    Usage other = text;
    other.audio_input_tokens = 1;
    CHECK_THROWS_AS(env->record(alice(), Charge::priced("audio-model", other), {.request_id = "text-1"}), ConflictError);
    LedgerQuery q;
    q.request_id = "audio-1";
    auto ev = env->events(q);
    REQUIRE(ev.size() == 1);
    REQUIRE(ev[0].usage.has_value());
    CHECK(*ev[0].usage == u);
    q.request_id = "text-1";
    ev = env->events(q);
    REQUIRE(ev.size() == 1);
    CHECK(*ev[0].usage == text);
    std::ostringstream jsonl;
    env->export_jsonl(jsonl);
    const std::string out = jsonl.str();
    CHECK(out.find("\"audio_input_tokens\":600,\"audio_output_tokens\":300,\"service_tier\":\"flex\"") != std::string::npos);
    // Written only when not zero: the text call's event has the bytes older builds wrote.
    const auto text_line = out.substr(out.find("\"request_id\":\"text-1\""));
    CHECK(text_line.substr(0, text_line.find('\n')).find("audio_input") == std::string::npos);
    require_verified(*env.m);
  }
}

TEST_CASE("a priced reserve, commit or record retried after the prices changed replays, other usage conflicts") {
  // The idempotency key of a priced charge is what the caller asked (model and usage), not the
  // price it came to: a retry with the same arguments after a markup took effect (or a table
  // reload) was a ConflictError "with a different amount", though nothing differed.
  FOR_EACH_STORE(kind) {
    auto pe = one_model_pricer("retry-model");
    Options o;
    o.pricer = pe;
    Env env(kind, o);
    standard_limits(*env.m);
    Usage u;
    u.input_tokens = 1'000;
    u.output_tokens = 500;
    auto d = env->reserve(alice(), usd("0.01"), {.request_id = "pc-1"});
    REQUIRE(d.allowed);
    auto h1 = env->reserve(alice(), Estimate::priced("retry-model", u), {.request_id = "ph-1"});
    REQUIRE(h1.allowed);
    CHECK(h1.reservation.held() == usd("0.003"));
    auto c1 = env->commit("pc-1", Charge::priced("retry-model", u));
    CHECK(c1.charged == usd("0.003"));
    auto r1 = env->record(alice(), Charge::priced("retry-model", u), {.request_id = "pr-1"});
    CHECK(r1.charged == usd("0.003"));
    MarkupRule plus;
    plus.percent = "50";
    plus.effective_from = env.clock->now() + Duration(1'000);
    pe->add_markup(plus);
    env.clock->advance(Duration(2'000));
    const size_t n = env->events().size();
    auto c2 = env->commit("pc-1", Charge::priced("retry-model", u));
    CHECK(c2.replayed);
    CHECK(c2.charged == c1.charged);
    auto r2 = env->record(alice(), Charge::priced("retry-model", u), {.request_id = "pr-1"});
    CHECK(r2.replayed);
    CHECK(r2.charged == r1.charged);
    auto h2 = env->reserve(alice(), Estimate::priced("retry-model", u), {.request_id = "ph-1"});
    CHECK(h2.replayed);
    CHECK(h2.reservation.held() == usd("0.003"));  // the first decision, not today's price
    CHECK(env->events().size() == n);
    Usage more = u;
    more.output_tokens = 501;
    CHECK_THROWS_AS(env->commit("pc-1", Charge::priced("retry-model", more)), ConflictError);
    CHECK_THROWS_AS(env->record(alice(), Charge::priced("retry-model", more), {.request_id = "pr-1"}), ConflictError);
    CHECK_THROWS_AS(env->commit("pc-1", Charge::money(usd("0.003"))), ConflictError);
    CHECK_THROWS_AS(env->reserve(alice(), Estimate::priced("retry-model", more), {.request_id = "ph-1"}), ConflictError);
    CHECK_THROWS_AS(env->reserve(alice(), usd("0.003"), {.request_id = "ph-1"}), ConflictError);
    auto st = env->status(Scope::parse("user:alice"))[0];
    CHECK(st.spent == usd("0.006").nanos());
    CHECK(st.held == usd("0.003").nanos());  // ph-1's hold, once
    require_verified(*env.m);
  }
}

TEST_CASE("the ledger exports CSV and JSON lines, aggregates, and verifies") {
  FOR_EACH_STORE(kind) {
    Env env(kind);
    standard_limits(*env.m);
    auto d = env->reserve(alice(), usd("1"), {.metadata = {{"route", "/v1/chat"}}});
    env->commit(d.reservation, Charge::money(usd("0.25")));
    env.clock->advance(Duration(86'400'000));
    env->record(Subject{"tenant:acme", "user:bob"}, usd("0.50"));
    std::ostringstream csv, jsonl;
    env->export_csv(csv);
    env->export_jsonl(jsonl);
    const std::string csv_text = csv.str(), jsonl_text = jsonl.str();
    CHECK(csv_text.rfind("seq,time,type,request_id", 0) == 0);
    CHECK(std::count(csv_text.begin(), csv_text.end(), '\n') == 4);
    CHECK(std::count(jsonl_text.begin(), jsonl_text.end(), '\n') == 3);
    CHECK(jsonl_text.find("\"route\":\"/v1/chat\"") != std::string::npos);
    auto rows = env->aggregate({}, GroupBy{.scope = true, .model = false, .day = true});
    std::map<std::string, int64_t> by;
    for (const auto& r : rows) by[r.scope + "@" + r.day] = r.spent.nanos();
    CHECK(by["tenant:acme@2026-03-10"] == usd("0.25").nanos());
    CHECK(by["tenant:acme@2026-03-11"] == usd("0.50").nanos());
    CHECK(by["user:bob@2026-03-11"] == usd("0.50").nanos());
    CHECK(by["global@2026-03-11"] == usd("0.50").nanos());
    LedgerQuery q;
    q.from = testutil::t0() + Duration(3'600'000);
    CHECK(env->events(q).size() == 1);
    q = {};
    q.scope = "user:bob";
    CHECK(env->events(q).size() == 1);
    auto ev = env->events();
    for (size_t i = 1; i < ev.size(); ++i) CHECK(ev[i].prev_hash == ev[i - 1].hash);
    // CSV injection: a text field a spreadsheet would run as a formula is shown as text.
    Charge formula = Charge::money(usd("0.01"));
    formula.model = "=HYPERLINK(\"x\",\"y\")";
    env->record(Subject{"user:eve"}, formula, {.request_id = "@SUM(1+1)"});
    std::ostringstream csv2;
    LedgerQuery eve;
    eve.scope = "user:eve";
    env->export_csv(csv2, eve);
    CHECK(csv2.str().find(",\"'@SUM(1+1)\",") != std::string::npos);
    CHECK(csv2.str().find(",\"'=HYPERLINK(\"\"x\"\",\"\"y\"\")\",") != std::string::npos);
    CHECK(env->events(eve).at(0).request_id == "@SUM(1+1)");  // the ledger keeps the exact text
    require_verified(*env.m);
  }
}

TEST_CASE("bad input is a typed error and changes nothing") {
  FOR_EACH_STORE(kind) {
    Env env(kind);
    standard_limits(*env.m);
    auto before = env->events().size();
    CHECK_THROWS_AS(env->reserve(alice(), Money::from_nanos(-1)), InvalidArgumentError);
    CHECK_THROWS_AS(env->reserve(Subject{"user:"}, usd("1")), InvalidArgumentError);
    CHECK_THROWS_AS(env->reserve(Subject{"nocolon"}, usd("1")), InvalidArgumentError);
    CHECK_THROWS_AS(env->reserve(Subject{"user:*"}, usd("1")), InvalidArgumentError);
    CHECK_THROWS_AS(env->reserve(Subject{"user:a\nb"}, usd("1")), InvalidArgumentError);
    CHECK_THROWS_AS(env->reserve(Subject{"us er:a"}, usd("1")), InvalidArgumentError);
    CHECK_THROWS_AS(env->reserve(Subject{std::string("user:") + std::string(300, 'x')}, usd("1")), InvalidArgumentError);
    CHECK_THROWS_AS(env->reserve(Subject{"user:\xff\xfe"}, usd("1")), InvalidArgumentError);
    CHECK_THROWS_AS(env->reserve(alice(), usd("1"), {.request_id = "bad\x01id"}), InvalidArgumentError);
    CHECK_THROWS_AS(env->reserve(alice(), usd("1"), {.buffer_bp = 5000}), InvalidArgumentError);
    CHECK_THROWS_AS(env->reserve(alice(), usd("1"), {.ttl = Duration(0)}), InvalidArgumentError);
    CHECK_THROWS_AS(env->reserve(alice(), Money::from_nanos(INT64_MAX), {.buffer_bp = 12000}), OverflowError);
    CHECK_THROWS_AS(env->record(alice(), Money::from_nanos(-5)), InvalidArgumentError);
    CHECK_THROWS_AS(env->set_limit(Limit::cost("user:x", Window::day(), Money::from_nanos(-1))), InvalidArgumentError);
    CHECK_THROWS_AS(env->set_limit(Limit::cost("bad scope", Window::day(), usd("1"))), InvalidArgumentError);
    CHECK_THROWS_AS(Window::parse("fortnight"), InvalidArgumentError);
    CHECK_THROWS_AS(Window::parse("rolling:0s"), InvalidArgumentError);
    CHECK_THROWS_AS(Money::parse("NaN"), InvalidArgumentError);
    Usage bad;
    bad.input_tokens = 5;
    bad.cache_read_tokens = 10;
    CHECK_THROWS_AS(env->record(alice(), Charge::priced("gpt-4o", bad)), InvalidArgumentError);
    auto d = env->reserve(alice(), usd("1"));
    CHECK_THROWS_AS(env->consume(d.reservation, Money::from_nanos(-1)), InvalidArgumentError);
    CHECK_THROWS_AS(env->consume("no-such-request", usd("1")), NotFoundError);
    CHECK(env->events().size() == before + 1);  // only the valid reserve
    CHECK(env->status(Scope::parse("user:alice"))[0].spent == 0);
  }
}

TEST_CASE("a rolling window is at most 100 years, a longer one is refused, not overflowed") {
  // "rolling:9223372036854775807ms" used to be accepted, and the bucket arithmetic of every
  // later reserve on its scope overflowed int64 (UBSan abort; garbage windows in release); a
  // duration whose product overflowed was an OverflowError, not a malformed window.
  CHECK_THROWS_AS(Window::parse("rolling:9223372036854775807ms"), InvalidArgumentError);
  CHECK_THROWS_AS(Window::parse("rolling:1000000000000w"), InvalidArgumentError);
  CHECK_THROWS_AS(Window::parse("rolling:36700d"), InvalidArgumentError);
  CHECK_THROWS_AS(Window::rolling(Duration(INT64_MAX)), InvalidArgumentError);
  CHECK(Window::parse("rolling:36500d").length == Duration(36500LL * 86'400'000));
  FOR_EACH_STORE(kind) {
    Env env(kind);
    Limit l = Limit::cost("user:*", Window::day(), usd("1"));
    l.window.kind = Window::Kind::Rolling;  // built by hand, past Window::rolling()'s check
    l.window.length = Duration(INT64_MAX);
    CHECK_THROWS_AS(env->set_limit(l), InvalidArgumentError);
    CHECK(env->limits().empty());
    env->set_limit(Limit::cost("user:*", Window::parse("rolling:36500d"), usd("1")));
    CHECK(env->reserve(alice(), usd("0.5")).allowed);
    CHECK_FALSE(env->reserve(alice(), usd("0.6")).allowed);
    require_verified(*env.m);
  }
}

TEST_CASE("a second manager on the same store sees limit changes") {
  for (const auto& kind : testutil::store_kinds()) {
    if (kind == "memory") continue;
    CAPTURE(kind);
    Env env(kind);
    env->set_limit(Limit::cost("user:z", Window::day(), usd("1")));
    auto other = env.another();
    CHECK_FALSE(other->check(Subject{"user:z"}, usd("2")).allowed);
    env->set_limit(Limit::cost("user:z", Window::day(), usd("3")));
    CHECK(other->check(Subject{"user:z"}, usd("2")).allowed);  // stale plan detected and refreshed
    CHECK(other->limits().size() == 1);
  }
}

TEST_CASE("a manager made before fork() refuses to work in the child, one made in the child works") {
  // A pre-forking server that built its manager before forking would share the parent's
  // SQLite connection or Redis sockets: the child must get a clear error instead, and leave
  // the parent's manager and the store intact (even when it destroys its copy).
  for (const auto& kind : testutil::store_kinds()) {
    if (kind == "memory") continue;  // a forked child's memory store is its own copy
    CAPTURE(kind);
    Env env(kind);
    env->set_limit(Limit::cost("user:f", Window::day(), usd("10")));
    REQUIRE(env->reserve(Subject{"user:f"}, usd("1")).allowed);
    pid_t pid = fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
      int code = 0;
      try {
        env->reserve(Subject{"user:f"}, usd("1"));
        code = 1;  // must not work
      } catch (const InvalidArgumentError& e) {
        if (std::string(e.what()).find("fork()") == std::string::npos) code = 2;
      } catch (...) {
        code = 3;
      }
      try {
        env.m.reset();  // the child's copy goes: it must not touch the parent's connection
        auto mine = env.another();
        if (!mine->reserve(Subject{"user:f"}, usd("1")).allowed) code = 4;
      } catch (...) {
        code = 5;
      }
      _exit(code);
    }
    int status = 0;
    REQUIRE(waitpid(pid, &status, 0) == pid);
    REQUIRE(WIFEXITED(status));
    CHECK(WEXITSTATUS(status) == 0);
    // The parent goes on: its manager works and sees the child's hold.
    auto d = env->reserve(Subject{"user:f"}, usd("1"));
    CHECK(d.allowed);
    env->commit(d.reservation, usd("0.5"));
    auto statuses = env->status(Scope::parse("user:f"));
    auto day = testutil::find_status(statuses, "day");
    REQUIRE(day != nullptr);
    CHECK(day->held == usd("2").nanos());
    CHECK(day->spent == usd("0.5").nanos());
    CHECK(env->verify().ok);
  }
}

TEST_CASE("Prometheus metrics text") {
  Env env("memory");
  env->set_limit(Limit::cost("user:m", Window::day(), usd("1")));
  env->record(Subject{"user:m"}, usd("0.5"));
  CHECK_FALSE(env->reserve(Subject{"user:m"}, usd("1")).allowed);
  auto text = env->metrics_text();
  CHECK(text.find("budget_reservations_total{result=\"denied\"} 1") != std::string::npos);
  CHECK(text.find("gen_ai_client_cost_nanos_total 500000000") != std::string::npos);
}
