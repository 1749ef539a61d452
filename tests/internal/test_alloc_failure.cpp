// Allocation failure at every point of every operation, on every store of BUDGET_TEST_STORES.
//
// This program replaces the global operator new so that the k-th allocation of the calling
// thread fails (std::bad_alloc), for k = 1, 2, ... until the operation runs through. After each
// failed call the manager must be in one of two states, never in between:
//   - all or nothing: what the public API shows (limit status of every scope, the ledger) is
//     either as before the call or as after a successful one, verify() is clean, and the same
//     call repeated (same request id) succeeds and leaves exactly what one successful call
//     leaves;
//   - or, where the store cannot undo a half-applied change (the memory store has no
//     rollback), it stops: every later call throws InternalError, nothing is misreported.
// The manager, the store and their threads are built before the failures are armed; only the
// allocations of the test's thread inside the call under test fail.
//
// Every failure point still gets a fresh manager on a fresh store (so each sees exactly the
// state and in-process caches of the reference run), but what a point leaves behind is
// removed when it is done: its SQLite file (created on tmpfs, /dev/shm, when there is one: a
// fresh file's schema costs fsyncs, ~9 ms a point on disk) and its Redis keys (verify() SCANs
// the database's whole keyspace: ~1,500 namespaces left behind made the Redis sweep quadratic;
// for the same reason it uses a database of its own, away from the suites run beside it).
// None of this changes what is swept: the failures are counted inside the call only.
#include <doctest/doctest.h>

#include <budget/budget.hpp>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <new>
#include <stdexcept>
#include <sstream>
#include <string>
#include <vector>

#include <unistd.h>

#include "../unit/store_fixture.hpp"

#if BUDGET_TEST_HIREDIS
#include <hiredis/hiredis.h>
#endif

namespace {
thread_local long t_countdown = 0;  // 0: disarmed; else the allocation that fails (1: the next)
thread_local long t_seen = 0;       // allocations since arming

void* allocate(std::size_t n) {
  if (t_countdown > 0) {
    ++t_seen;
    if (--t_countdown == 0) throw std::bad_alloc();
  }
  if (void* p = std::malloc(n ? n : 1)) return p;
  throw std::bad_alloc();
}
void* allocate_aligned(std::size_t n, std::align_val_t al) {
  if (t_countdown > 0) {
    ++t_seen;
    if (--t_countdown == 0) throw std::bad_alloc();
  }
  const auto a = static_cast<std::size_t>(al);
  if (void* p = std::aligned_alloc(a, (n + a - 1) / a * a)) return p;
  throw std::bad_alloc();
}
}  // namespace

void* operator new(std::size_t n) { return allocate(n); }
void* operator new[](std::size_t n) { return allocate(n); }
void* operator new(std::size_t n, std::align_val_t al) { return allocate_aligned(n, al); }
void* operator new[](std::size_t n, std::align_val_t al) { return allocate_aligned(n, al); }
void operator delete(void* p) noexcept { std::free(p); }
void operator delete[](void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t) noexcept { std::free(p); }
void operator delete(void* p, std::align_val_t) noexcept { std::free(p); }
void operator delete[](void* p, std::align_val_t) noexcept { std::free(p); }
void operator delete(void* p, std::size_t, std::align_val_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t, std::align_val_t) noexcept { std::free(p); }

using namespace budget;
using testutil::Env;

namespace {

Money usd(const char* s) { return Money::parse(s); }

Options options() {
  Options o;
  o.limits = {Limit::cost("tenant:*", Window::day(), usd("10")), Limit::cost("user:*", Window::total(), usd("5")),
              Limit::tokens("user:*", Window::minute(), 100000)};
  o.default_buffer_bp = 10000;  // hold exactly the estimate
  return o;
}

const Subject kWho{"tenant:a", "user:u"};

// Inside a call under test (REQUIRE would catch the injected failure).
void expect(bool ok, const char* what) {
  if (!ok) throw std::logic_error(std::string("unexpected result: ") + what);
}

RequestOptions id(const char* request_id) {
  RequestOptions r;
  r.request_id = request_id;
  return r;
}
// With metadata that needs escaping, and a reason (after the sorted entries).
RequestOptions with_meta(const char* request_id) {
  RequestOptions r = id(request_id);
  r.metadata = {{"team", "caf\xc3\xa9 \"x\""}, {"ticket", "T-1\n2"}};
  r.reason = "goodwill";
  return r;
}

// What the public API shows: every limit of the subject's scopes, and the ledger.
std::string snapshot(BudgetManager& m) {
  std::ostringstream out;
  for (const char* scope : {"global", "tenant:a", "user:u"})
    for (const auto& s : m.status(Scope::parse(scope)))
      out << s.key << " limit=" << s.limit << " spent=" << s.spent << " held=" << s.held << "\n";
  for (const auto& e : m.events())
    out << e.seq << ' ' << to_string(e.type) << ' ' << e.request_id << " spent=" << e.spent.cost
        << " held=" << e.held.cost << " granted=" << e.granted.cost << " metadata=" << e.metadata << "\n";
  return out.str();
}

struct Case {
  const char* name;
  // Brings a fresh manager to the state before the call; may keep a reservation in `r`.
  void (*setup)(BudgetManager& m, Reservation& r);
  void (*call)(BudgetManager& m, Reservation& r);
  // Between setup and call (not on the memory store, which is not shared and keeps nothing):
  //   Restart: the manager is built again on the same store: the call reads the hold back;
  //   OtherWrites: another manager (another process) reserves, with a request id that needs
  //   escaping: the call first catches up with what it wrote.
  enum { Nothing, Restart, OtherWrites } between = Nothing;
};

void reserve_held(BudgetManager& m, Reservation& r) {
  auto d = m.reserve(kWho, Estimate::money(usd("1")), id("held-1"));
  REQUIRE(d.allowed);
  r = d.reservation;
}

// Every case on every store, those whose event carries metadata (a consume's
// {"consumed":...}, the caller's metadata, a reason) too. These were once swept on the memory
// store only: the SQLite store built their canonical body with nlohmann::ordered_json, whose
// values crash while destroyed after an allocation failed inside them (nlohmann/json#4653,
// open in the 3.11.2 that Debian 12 ships). It is written directly now (direct_event_body:
// metadata already in nlohmann's dump form, as our writers write it, is spliced as is).
const Case kCases[] = {
    {"reserve", [](BudgetManager&, Reservation&) {},
     [](BudgetManager& m, Reservation&) { expect(m.reserve(kWho, Estimate::money(usd("1")), id("r-1")).allowed, "allowed"); }},
    {"reserve denied", [](BudgetManager&, Reservation&) {},
     [](BudgetManager& m, Reservation&) { expect(!m.reserve(kWho, Estimate::money(usd("6")), id("r-2")).allowed, "denied"); }},
    {"consume (the hold grows)", reserve_held,
     [](BudgetManager& m, Reservation& r) { expect(m.consume(r, usd("1.5")).verdict == Verdict::Continue, "continue"); }},
    {"commit", reserve_held,
     [](BudgetManager& m, Reservation& r) { m.commit(r, Charge::money(usd("0.75"))); }},
    {"commit by id", reserve_held,
     [](BudgetManager& m, Reservation&) { m.commit(std::string_view("held-1"), Charge::money(usd("0.75"))); }},
    {"release", reserve_held, [](BudgetManager& m, Reservation& r) { m.release(r); }},
    {"record", [](BudgetManager&, Reservation&) {},
     [](BudgetManager& m, Reservation&) { m.record(kWho, Charge::money(usd("0.5")), id("rec-1")); }},
    {"grant", [](BudgetManager&, Reservation&) {},
     [](BudgetManager& m, Reservation&) { m.grant(Scope::parse("user:u"), usd("2"), id("grant-1")); }},
    {"adjust", [](BudgetManager&, Reservation&) {},
     [](BudgetManager& m, Reservation&) { m.adjust(kWho, usd("0.25"), id("adj-1")); }},
    {"reserve with metadata", [](BudgetManager&, Reservation&) {},
     [](BudgetManager& m, Reservation&) { expect(m.reserve(kWho, Estimate::money(usd("1")), with_meta("r-m")).allowed, "allowed"); }},
    {"record with metadata", [](BudgetManager&, Reservation&) {},
     [](BudgetManager& m, Reservation&) { m.record(kWho, Charge::money(usd("0.5")), with_meta("rec-m")); }},
    {"grant with a reason", [](BudgetManager&, Reservation&) {},
     [](BudgetManager& m, Reservation&) { m.grant(Scope::parse("user:u"), usd("2"), with_meta("grant-m")); }},
    {"adjust with a reason", [](BudgetManager&, Reservation&) {},
     [](BudgetManager& m, Reservation&) { m.adjust(kWho, usd("0.25"), with_meta("adj-m")); }},
    {"consume after a restart", reserve_held,
     [](BudgetManager& m, Reservation& r) { expect(m.consume(r, usd("1.5")).verdict == Verdict::Continue, "continue"); },
     Case::Restart},
    {"commit after a restart", reserve_held,
     [](BudgetManager& m, Reservation& r) { m.commit(r, Charge::money(usd("0.75"))); }, Case::Restart},
    {"release after a restart", reserve_held, [](BudgetManager& m, Reservation& r) { m.release(r); },
     Case::Restart},
    {"commit after another process reserved", reserve_held,
     [](BudgetManager& m, Reservation& r) { m.commit(r, Charge::money(usd("0.75"))); }, Case::OtherWrites},
    {"record after another process reserved", [](BudgetManager&, Reservation&) {},
     [](BudgetManager& m, Reservation&) { m.record(kWho, Charge::money(usd("0.5")), id("rec-o")); }, Case::OtherWrites},
};

// A fresh manager (on a fresh store) in the state before the call.
void prepare(Env& env, const Case& c, Reservation& r) {
  c.setup(*env.m, r);
  if (c.between == Case::Restart) {
    env.m.reset();
    env.m = env.another(options());
  } else if (c.between == Case::OtherWrites) {
    auto other = env.another(options());
    RequestOptions o = with_meta("other \"q\" \\ caf\xc3\xa9");
    o.provider = "prov\"ider";
    expect(other->reserve(Subject{"tenant:a", "user:u\"\xc3\xbc"}, Estimate::money(usd("1")), o).allowed, "allowed");
  }
}

// Sends SQLite files to tmpfs when there is one (the process's TMPDIR, read by
// testutil::temp_dir through std::filesystem::temp_directory_path).
void prefer_tmpfs() {
  std::error_code ec;
  if (std::filesystem::is_directory("/dev/shm", ec) && ::access("/dev/shm", W_OK) == 0) ::setenv("TMPDIR", "/dev/shm", 1);
}

#if BUDGET_TEST_HIREDIS
// The test's own connection to the server of a redis:// URL (hiredis allocates with malloc,
// never through the operator new that fails); null when it cannot connect or authenticate.
redisContext* admin_connect(const std::string& url) {  // redis://[user:pass@]host:port[/db][?...]
  const size_t q = std::min(url.find('?'), url.size()), slash = std::min(url.find('/', 8), q);
  const size_t at = url.rfind('@', slash), host_at = at == std::string::npos ? 8 : at + 1;
  const std::string hp = url.substr(host_at, slash - host_at);
  const auto colon = hp.rfind(':');
  redisContext* c = redisConnect(hp.substr(0, colon).c_str(), std::stoi(hp.substr(colon + 1)));
  if (c == nullptr || c->err != 0) {
    if (c) redisFree(c);
    return nullptr;
  }
  if (at != std::string::npos) {
    const std::string cred = url.substr(8, at - 8);
    const auto sep = cred.find(':');
    auto* r = static_cast<redisReply*>(
        sep == std::string::npos ? redisCommand(c, "AUTH %s", cred.c_str())
        : sep == 0               ? redisCommand(c, "AUTH %s", cred.substr(1).c_str())
                                 : redisCommand(c, "AUTH %s %s", cred.substr(0, sep).c_str(), cred.substr(sep + 1).c_str()));
    const bool ok = r != nullptr && r->type != REDIS_REPLY_ERROR;
    freeReplyObject(r);
    if (!ok) {
      redisFree(c);
      return nullptr;
    }
  }
  if (slash + 1 < q) freeReplyObject(redisCommand(c, "SELECT %s", url.substr(slash + 1, q - slash - 1).c_str()));
  return c;
}

// BUDGET_TEST_REDIS_URL on a database of its own (the next index), when the server has it:
// verify() SCANs its database's whole keyspace, and the suites that ctest runs beside this one
// leave thousands of keys in theirs (12,700 in database 0 at the end of a release run).
void own_redis_database() {
  const char* env = std::getenv("BUDGET_TEST_REDIS_URL");
  if (env == nullptr) return;
  std::string url = env;
  const size_t q = std::min(url.find('?'), url.size()), slash = url.find('/', 8);
  int db = 0;
  if (slash != std::string::npos && slash < q && slash + 1 < q) db = std::stoi(url.substr(slash + 1, q - slash - 1));
  std::string own = (slash != std::string::npos && slash < q ? url.substr(0, slash) : url.substr(0, q)) + "/" +
                    std::to_string((db + 1) % 16) + url.substr(q);
  redisContext* c = admin_connect(own);
  if (c == nullptr) return;
  auto* r = static_cast<redisReply*>(redisCommand(c, "SELECT %d", (db + 1) % 16));  // refused in cluster mode
  if (r != nullptr && r->type != REDIS_REPLY_ERROR) ::setenv("BUDGET_TEST_REDIS_URL", own.c_str(), 1);
  freeReplyObject(r);
  redisFree(c);
}

// Deletes the keys of one namespace ({prefix}:...). Best effort, called from a destructor: the
// keys left behind only cost time, so a server it cannot use is reported once.
void delete_redis_namespace(const std::string& url) {
  static redisContext* c = nullptr;
  static bool gave_up = false;
  if (gave_up) return;
  auto give_up = [](const char* why) {
    MESSAGE("not deleting the test's Redis keys (" << why << "): the sweep runs slower");
    gave_up = true;
  };
  if (c == nullptr && (c = admin_connect(url)) == nullptr) return give_up("cannot connect");
  const std::string match = "{" + url.substr(url.find("?prefix=") + 8) + "}:*";
  std::string cursor = "0";
  do {
    auto* r = static_cast<redisReply*>(redisCommand(c, "SCAN %s MATCH %s COUNT 1000", cursor.c_str(), match.c_str()));
    if (r == nullptr || r->type != REDIS_REPLY_ARRAY || r->elements != 2) {
      freeReplyObject(r);
      return give_up("SCAN failed");
    }
    cursor.assign(r->element[0]->str, r->element[0]->len);
    std::vector<const char*> argv{"UNLINK"};  // one UNLINK per page (the keys share a slot)
    std::vector<size_t> lens{6};
    for (size_t i = 0; i < r->element[1]->elements; ++i) {
      argv.push_back(r->element[1]->element[i]->str);
      lens.push_back(r->element[1]->element[i]->len);
    }
    if (argv.size() > 1) freeReplyObject(redisCommandArgv(c, static_cast<int>(argv.size()), argv.data(), lens.data()));
    freeReplyObject(r);
  } while (cursor != "0");
}
#endif

// Removes the store of one failure point once its managers are gone (declared before the Env).
struct Discard {
  std::string kind, url;
  ~Discard() {
    testutil::remove_store_files(url);  // (the Env did already; an SQLite URL only)
#if BUDGET_TEST_HIREDIS
    if (kind == "redis") delete_redis_namespace(url);
#endif
  }
};

// True when the manager refuses every call (a store that stopped after a half-applied change).
bool stopped(BudgetManager& m) {
  try {
    (void)m.status(Scope::parse("user:u"));
    return false;
  } catch (const InternalError&) {
    try {
      (void)m.reserve(kWho, Estimate::money(usd("0.01")));
    } catch (const InternalError&) {
      return true;
    }
    FAIL("the store refused a status read but then allowed a reserve");
    return true;
  }
}

}  // namespace

TEST_CASE("an allocation that fails at any point of an operation leaves all of it or none of it") {
  prefer_tmpfs();
#if BUDGET_TEST_HIREDIS
  own_redis_database();
#endif
  for (const auto& kind : testutil::store_kinds()) {
    for (const Case& c : kCases) {
      if (c.between != Case::Nothing && kind == "memory") continue;
      CAPTURE(kind);
      CAPTURE(std::string(c.name));
      // The reference: the state before and after one successful call.
      std::string before, after;
      {
        Discard discard;
        Env env(kind, options());
        discard.kind = kind;
        discard.url = env.url;
        Reservation r;
        prepare(env, c, r);
        before = snapshot(*env.m);
        c.call(*env.m, r);
        after = snapshot(*env.m);
      }
      REQUIRE(before != after);
      long failures = 0, undone = 0, applied = 0, stops = 0;
      for (long k = 1;; ++k) {
        REQUIRE_MESSAGE(k < 100000, "the call never ran through");
        Discard discard;
        Env env(kind, options());
        discard.kind = kind;
        discard.url = env.url;
        Reservation r;
        prepare(env, c, r);
        bool threw = false;
        t_seen = 0;
        t_countdown = k;
        try {
          c.call(*env.m, r);
        } catch (const std::bad_alloc&) {
          threw = true;
        } catch (const InternalError&) {  // a wrapped bad_alloc
          threw = true;
        }
        t_countdown = 0;
        if (!threw) {
          CHECK(t_seen < k);  // it ran through because no k-th allocation came
          CHECK(snapshot(*env.m) == after);
          break;
        }
        CAPTURE(k);
        ++failures;
        if (stopped(*env.m)) {
          ++stops;
          continue;
        }
        const std::string now = snapshot(*env.m);
        if (now == before) ++undone;
        else if (now == after) ++applied;
        else FAIL_CHECK("half applied:\nbefore:\n" << before << "now:\n" << now << "after:\n" << after);
        auto v = env.m->verify();
        CHECK_MESSAGE(v.ok, (v.problems.empty() ? std::string() : v.problems.front()));
        // The same call again: as one successful call.
        c.call(*env.m, r);
        CHECK(snapshot(*env.m) == after);
        CHECK(env.m->verify().ok);
      }
      MESSAGE(kind << " / " << std::string(c.name) << ": " << failures << " failure points: " << undone << " undone, "
                   << applied << " applied, " << stops << " stopped the store");
      // (0: the call allocates nothing on this store, e.g. a commit on the memory store)
    }
  }
}
