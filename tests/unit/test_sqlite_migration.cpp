// The SQLite store's schema: files written by schema versions 1 and 3 are migrated at open to
// the current version (4: the ledger carries after-images, the state tables are its checkpoint);
// counters, holds, ledger and limits carry over and the hash chain still verifies; a new file
// gets the current version and small pages. Also: recovery from the ledger tail after a crash
// (with and without a checkpoint crossed) and two connections on one file across checkpoints.
#include "store_fixture.hpp"

#include <sqlite3.h>

#include <algorithm>
#include <set>
#include <csignal>
#include <fstream>
#include <sstream>

#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

using namespace budget;
using testutil::t0;

namespace {

Money usd(const char* s) { return Money::parse(s); }

struct Db {
  sqlite3* db = nullptr;
  explicit Db(const std::string& path) { REQUIRE(sqlite3_open(path.c_str(), &db) == SQLITE_OK); }
  ~Db() { sqlite3_close(db); }
  void exec(const std::string& sql) {
    char* err = nullptr;
    int rc = sqlite3_exec(db, sql.c_str(), nullptr, nullptr, &err);
    std::string msg = err ? err : "";
    sqlite3_free(err);
    REQUIRE_MESSAGE(rc == SQLITE_OK, msg);
  }
  std::vector<std::string> column(const std::string& sql) {
    std::vector<std::string> out;
    sqlite3_stmt* s = nullptr;
    REQUIRE(sqlite3_prepare_v2(db, sql.c_str(), -1, &s, nullptr) == SQLITE_OK);
    while (sqlite3_step(s) == SQLITE_ROW) {
      if (sqlite3_column_type(s, 0) == SQLITE_BLOB) {  // a hash stored as 32 bytes: hex
        static const char* hex = "0123456789abcdef";
        auto* p = static_cast<const unsigned char*>(sqlite3_column_blob(s, 0));
        std::string h;
        for (int i = 0; i < sqlite3_column_bytes(s, 0); ++i) (h += hex[p[i] >> 4]) += hex[p[i] & 15];
        out.push_back(h);
      } else {
        auto* t = reinterpret_cast<const char*>(sqlite3_column_text(s, 0));
        out.push_back(t ? t : "");
      }
    }
    sqlite3_finalize(s);
    return out;
  }
};

std::string temp_path() {
  auto p = testutil::temp_dir() / (testutil::unique_name() + ".db");
  return p.string();
}

// The limits the version-1 file was written with.
Options options_for(const std::string& path, std::shared_ptr<ManualClock> clock) {
  Options o;
  o.store = "sqlite:" + path;
  o.clock = std::move(clock);
  o.limits = {Limit::cost("user:*", Window::day(), usd("2")),
              Limit::cost("tenant:acme", Window::total(), usd("100")),
              Limit::cost("tenant:acme", Window::parse("rolling:1h"), usd("50"))};
  return o;
}

const LimitStatus& status_of(const std::vector<LimitStatus>& all, const std::string& window) {
  for (const auto& s : all)
    if (s.window == window) return s;
  FAIL("no status for window " << window);
  return all.front();
}

// Writes a fixture (a dump of a file of an older schema version) into a new file at `path`
// and returns its ledger hashes.
std::vector<std::string> load_fixture(const std::string& path, const char* file, int version) {
  std::ifstream in(std::string(BUDGET_TEST_DATA_DIR) + "/" + file);
  REQUIRE(in);
  std::stringstream sql;
  sql << in.rdbuf();
  Db db(path);
  db.exec("PRAGMA journal_mode=WAL");
  db.exec(sql.str());
  db.exec("PRAGMA user_version=" + std::to_string(version));
  return db.column("SELECT hash FROM ledger ORDER BY seq");
}

}  // namespace

TEST_CASE("sqlite: a version-1 file is migrated at open and keeps its state and ledger") {
  std::string path = temp_path();
  std::vector<std::string> v1_hashes = load_fixture(path, "sqlite_v1.sql", 1);
  REQUIRE(v1_hashes.size() == 7);
  auto clock = std::make_shared<ManualClock>(t0());
  {
    BudgetManager m(options_for(path, clock));
    auto rep = m.verify();
    for (const auto& p : rep.problems) MESSAGE(p);
    CHECK(rep.ok);
    CHECK(rep.chain_ok);
    auto events = m.events();
    REQUIRE(events.size() == 7);
    for (size_t i = 0; i < events.size(); ++i) CHECK(events[i].hash == v1_hashes[i]);
    CHECK(events[0].request_id == "r-held");
    CHECK(events[0].metadata.find("chat") != std::string::npos);
    CHECK(events[0].windows.size() == 3);
    {  // the live hold moved to `holds`, the settled records stayed in `requests`
      Db db(path);
      CHECK(db.column("SELECT id FROM holds") == std::vector<std::string>{"r-held"});
      CHECK(db.column("SELECT count(*) FROM requests") == std::vector<std::string>{"4"});
    }

    // Counters: alice spent 0.50 and holds 1.00 of her 2.00 a day; the grant raised the tenant.
    auto alice_day = status_of(m.status(Scope("user", "alice")), "day");
    CHECK(alice_day.spent == usd("0.5").nanos());
    CHECK(alice_day.held == usd("1").nanos());
    auto acme_total = status_of(m.status(Scope("tenant", "acme")), "total");
    CHECK(acme_total.granted == usd("5").nanos());
    CHECK(acme_total.spent == usd("0.8").nanos());

    Subject alice{"tenant:acme", "user:alice"};
    CHECK_FALSE(m.reserve(alice, usd("1")).allowed);  // 0.5 + 1 held + 1 > 2
    auto small = m.reserve(alice, usd("0.4"));
    REQUIRE(small.allowed);
    m.release(small.reservation);

    // The hold written by version 1 commits by its request id; replays still replay.
    auto r = m.commit("r-held", usd("0.75"));
    CHECK(r.charged == usd("0.75"));
    CHECK(m.commit("r-held", usd("0.75")).charged == usd("0.75"));
    CHECK_THROWS_AS(m.release("r-commit"), ConflictError);
    alice_day = status_of(m.status(Scope("user", "alice")), "day");
    CHECK(alice_day.spent == usd("1.25").nanos());
    CHECK(alice_day.held == 0);

    rep = m.verify();
    for (const auto& p : rep.problems) MESSAGE(p);
    CHECK(rep.ok);
    CHECK(m.events().size() > 7);
    Db db(path);
    CHECK(db.column("SELECT count(*) FROM holds") == std::vector<std::string>{"0"});
  }
  {
    Db db(path);
    CHECK(db.column("PRAGMA user_version") == std::vector<std::string>{"5"});
  }
  {  // opened again: nothing left to migrate
    BudgetManager m(options_for(path, clock));
    CHECK(m.verify().ok);
    CHECK(status_of(m.status(Scope("user", "alice")), "day").spent == usd("1.25").nanos());
  }
}

TEST_CASE("sqlite: a new file has the current schema version and 1 KiB pages") {
  std::string path = temp_path();
  auto clock = std::make_shared<ManualClock>(t0());
  {
    BudgetManager m(options_for(path, clock));
    auto d = m.reserve(Subject{"tenant:acme", "user:alice"}, usd("1"));
    REQUIRE(d.allowed);
    m.commit(d.reservation, usd("1"));
    CHECK(m.verify().ok);
  }
  Db db(path);
  CHECK(db.column("PRAGMA user_version") == std::vector<std::string>{"5"});
  CHECK(db.column("PRAGMA page_size") == std::vector<std::string>{"1024"});
  // A plan is stored once; events refer to it.
  CHECK(db.column("SELECT count(*) FROM plans") == std::vector<std::string>{"1"});
  CHECK(db.column("SELECT count(*) FROM ledger WHERE plan IS NOT NULL") == std::vector<std::string>{"2"});
}

TEST_CASE("sqlite: a file from a newer schema is refused") {
  std::string path = temp_path();
  {
    Db db(path);
    db.exec("PRAGMA user_version=99");
  }
  Options o;
  o.store = "sqlite:" + path;
  CHECK_THROWS_AS(BudgetManager{o}, Error);
}

// ---- schema version 4: the ledger is the redo log, the state tables its checkpoint ----------
namespace {

constexpr int kCheckpointEvery = 512;  // src/stores/sqlite.cpp

Options big_limits(const std::string& path, std::shared_ptr<ManualClock> clock) {
  Options o;
  o.store = "sqlite:" + path;
  o.clock = std::move(clock);
  o.limits = {Limit::cost("user:*", Window::day(), usd("1000")),
              Limit::cost("tenant:acme", Window::total(), usd("5000")),
              Limit::cost("tenant:acme", Window::parse("rolling:1h"), usd("5000"))};
  return o;
}

int64_t meta_int(const std::string& path, const char* key) {
  Db db(path);
  auto v = db.column(std::string("SELECT value FROM meta WHERE key='") + key + "'");
  REQUIRE(v.size() == 1);
  return std::stoll(v[0]);
}
int64_t head_seq(const std::string& path) {
  Db db(path);
  auto v = db.column("SELECT coalesce(max(seq), 0) FROM ledger");
  return std::stoll(v.at(0));
}

// What the child of crash_child() did: `n` lifecycles of alice (committed at 0.001 each, even i;
// released, odd i) and `live` holds of 0.01 left open, then died without closing the store.
struct Done {
  int n, live;
  int64_t spent() const { return usd("0.001").nanos() * ((n + 1) / 2); }
  int64_t held() const { return usd("0.01").nanos() * live; }
};

void run_ops(BudgetManager& m, const Done& d) {
  Subject alice{"tenant:acme", "user:alice"};
  for (int i = 0; i < d.n; ++i) {
    RequestOptions ro;
    ro.request_id = "op-" + std::to_string(i);
    auto r = m.reserve(alice, usd("0.002"), ro);
    REQUIRE(r.allowed);
    if (i % 2 == 0) m.commit(r.reservation, usd("0.001"));
    else m.release(r.reservation);
  }
  for (int i = 0; i < d.live; ++i) {
    RequestOptions ro;
    ro.request_id = "live-" + std::to_string(i);
    ro.ttl = std::chrono::hours(1);
    REQUIRE(m.reserve(alice, usd("0.01"), ro).allowed);
  }
}

// Runs the operations in a child process that is SIGKILLed when done (no close, no
// checkpoint on close).
void crash_child(const std::string& path, const Done& d) {
  pid_t pid = fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    int code = 0;
    try {
      auto clock = std::make_shared<ManualClock>(t0());
      BudgetManager m(big_limits(path, clock));
      run_ops(m, d);
      kill(getpid(), SIGKILL);  // before the manager closes (a close checkpoints)
    } catch (...) {
      code = 3;
    }
    _exit(code ? code : 4);
  }
  int status = 0;
  REQUIRE(waitpid(pid, &status, 0) == pid);
  REQUIRE(WIFSIGNALED(status));
  REQUIRE(WTERMSIG(status) == SIGKILL);
}

void check_state(BudgetManager& m, const Done& d) {
  auto day = status_of(m.status(Scope("user", "alice")), "day");
  CHECK(day.spent == d.spent());
  CHECK(day.held == d.held());
  auto total = status_of(m.status(Scope("tenant", "acme")), "total");
  CHECK(total.spent == d.spent());
  CHECK(total.held == d.held());
  // Replays answer from the recovered records.
  CHECK_THROWS_AS(m.release("op-0"), ConflictError);
  CHECK(m.commit("op-0", usd("0.001")).charged == usd("0.001"));
  CHECK(m.release("op-1").charged == Money());
  // The live holds are there and settle.
  for (int i = 0; i < d.live; ++i) CHECK(m.commit("live-" + std::to_string(i), usd("0.005")).charged == usd("0.005"));
  day = status_of(m.status(Scope("user", "alice")), "day");
  CHECK(day.spent == d.spent() + usd("0.005").nanos() * d.live);
  CHECK(day.held == 0);
  auto rep = m.verify();
  for (const auto& p : rep.problems) MESSAGE(p);
  CHECK(rep.ok);
}

}  // namespace

TEST_CASE("sqlite: a crash before any checkpoint: the state is rebuilt from the ledger tail alone") {
  std::string path = temp_path();
  Done d{100, 3};  // 203 events: fewer than one checkpoint interval
  REQUIRE(2 * d.n + d.live < kCheckpointEvery);
  crash_child(path, d);
  CHECK(head_seq(path) == 2 * d.n + d.live);
  CHECK(meta_int(path, "checkpoint") == 0);
  {  // the state tables were never written: everything is in the ledger rows' after-images
    Db db(path);
    CHECK(db.column("SELECT count(*) FROM counters") == std::vector<std::string>{"0"});
    CHECK(db.column("SELECT count(*) FROM holds") == std::vector<std::string>{"0"});
    CHECK(db.column("SELECT count(*) FROM requests") == std::vector<std::string>{"0"});
    CHECK(db.column("SELECT count(*) FROM ledger WHERE redo IS NOT NULL") == std::vector<std::string>{std::to_string(2 * d.n + d.live)});
  }
  auto clock = std::make_shared<ManualClock>(t0());
  BudgetManager m(big_limits(path, clock));
  check_state(m, d);
}

TEST_CASE("sqlite: a crash between checkpoints: the state is rebuilt from the tables and the tail") {
  std::string path = temp_path();
  Done d{300, 4};  // 604 events: one checkpoint, then a tail
  crash_child(path, d);
  int64_t head = head_seq(path), ckpt = meta_int(path, "checkpoint");
  CHECK(head == 2 * d.n + d.live);
  CHECK(ckpt >= kCheckpointEvery);
  CHECK(ckpt < head);
  {  // the tables hold the state as of the checkpoint, not the tail
    Db db(path);
    CHECK(db.column("SELECT count(*) FROM requests") != std::vector<std::string>{"0"});
    CHECK(db.column("SELECT count(*) FROM holds") == std::vector<std::string>{"0"});  // the live holds came after
  }
  auto clock = std::make_shared<ManualClock>(t0());
  BudgetManager m(big_limits(path, clock));
  check_state(m, d);
}

TEST_CASE("sqlite: a hold left by a crashed process expires from the ledger tail") {
  std::string path = temp_path();
  Done d{10, 2};
  crash_child(path, d);
  auto clock = std::make_shared<ManualClock>(t0());
  BudgetManager m(big_limits(path, clock));
  clock->advance(std::chrono::hours(2));
  CHECK(m.expire_holds() == 2);
  auto day = status_of(m.status(Scope("user", "alice")), "day");
  CHECK(day.held == 0);
  CHECK(day.spent == d.spent());
  CHECK(m.verify().ok);
}

TEST_CASE("sqlite: two managers on one file see each other's holds and spend exactly, across checkpoints") {
  std::string path = temp_path();
  auto clock = std::make_shared<ManualClock>(t0());
  BudgetManager a(big_limits(path, clock));
  BudgetManager b(big_limits(path, clock));
  Subject alice{"tenant:acme", "user:alice"}, bob{"tenant:acme", "user:bob"};
  int64_t alice_spent = 0, alice_held = 0, bob_spent = 0, acme_granted = 0;
  int64_t last_ckpt = meta_int(path, "checkpoint");
  int crossings = 0;
  for (int i = 0; i < 600; ++i) {  // ~1,270 events: two checkpoints, by either manager
    BudgetManager& x = i % 3 == 0 ? a : b;
    BudgetManager& y = i % 3 == 0 ? b : a;
    // x holds for alice; y sees the hold; y commits it by id; x sees the spend.
    RequestOptions ro;
    ro.request_id = "r" + std::to_string(i);
    auto r = x.reserve(alice, usd("0.003"), ro);
    REQUIRE(r.allowed);
    alice_held += usd("0.003").nanos();
    auto st = status_of(y.status(Scope("user", "alice")), "day");
    REQUIRE(st.held == alice_held);
    REQUIRE(st.spent == alice_spent);
    if (i % 4 == 1) {  // leave it held for a while, settle an older one
      if (i >= 8) {
        std::string old = "r" + std::to_string(i - 4);
        y.commit(old, usd("0.002"));
        alice_held -= usd("0.003").nanos();
        alice_spent += usd("0.002").nanos();
      }
    } else {
      y.commit(ro.request_id, usd("0.001"));
      alice_held -= usd("0.003").nanos();
      alice_spent += usd("0.001").nanos();
    }
    if (i % 7 == 0) {
      RequestOptions rr;
      rr.request_id = "rec" + std::to_string(i);
      y.record(bob, usd("0.004"), rr);
      bob_spent += usd("0.004").nanos();
    }
    if (i % 50 == 0) {
      RequestOptions rg;
      rg.request_id = "g" + std::to_string(i);
      x.grant(Scope("tenant", "acme"), usd("1"), rg);
      acme_granted += usd("1").nanos();
    }
    st = status_of(x.status(Scope("user", "alice")), "day");
    REQUIRE(st.held == alice_held);
    REQUIRE(st.spent == alice_spent);
    auto bt = status_of(x.status(Scope("user", "bob")), "day");
    REQUIRE(bt.spent == bob_spent);
    auto at = status_of(y.status(Scope("tenant", "acme")), "total");
    REQUIRE(at.spent == alice_spent + bob_spent);
    REQUIRE(at.held == alice_held);
    REQUIRE(at.granted == acme_granted);
    int64_t ckpt = meta_int(path, "checkpoint");
    if (ckpt != last_ckpt) ++crossings;
    last_ckpt = ckpt;
  }
  CHECK(crossings >= 2);
  // A third connection opened now starts from the tables + tail and agrees.
  BudgetManager c(big_limits(path, clock));
  auto st = status_of(c.status(Scope("user", "alice")), "day");
  CHECK(st.held == alice_held);
  CHECK(st.spent == alice_spent);
  auto ra = a.verify(), rb = b.verify();
  for (const auto& p : ra.problems) MESSAGE(p);
  CHECK(ra.ok);
  CHECK(rb.ok);
}

TEST_CASE("sqlite: a version-3 file is migrated to the current version: state, ledger and checkpoint carry over") {
  std::string path = temp_path();
  std::vector<std::string> v3_hashes = load_fixture(path, "sqlite_v3.sql", 3);
  REQUIRE(v3_hashes.size() == 8);
  auto clock = std::make_shared<ManualClock>(t0());
  {
    BudgetManager m(options_for(path, clock));
    {
      Db db(path);
      CHECK(db.column("PRAGMA user_version") == std::vector<std::string>{"5"});
      // Every existing row is reflected in the tables: the checkpoint is the head.
      CHECK(db.column("SELECT value FROM meta WHERE key='checkpoint'") == std::vector<std::string>{"8"});
      CHECK(db.column("SELECT count(*) FROM ledger WHERE redo IS NULL") == std::vector<std::string>{"8"});
    }
    auto events = m.events();
    REQUIRE(events.size() == 8);
    for (size_t i = 0; i < events.size(); ++i) CHECK(events[i].hash == v3_hashes[i]);
    auto alice_day = status_of(m.status(Scope("user", "alice")), "day");
    CHECK(alice_day.spent == usd("0.5").nanos());
    CHECK(alice_day.held == usd("1").nanos());
    CHECK(status_of(m.status(Scope("user", "bob")), "day").spent == usd("0.3").nanos());
    auto acme_total = status_of(m.status(Scope("tenant", "acme")), "total");
    CHECK(acme_total.granted == usd("5").nanos());
    CHECK(acme_total.spent == usd("0.8").nanos());
    CHECK(acme_total.held == usd("1").nanos());

    Subject alice{"tenant:acme", "user:alice"};
    CHECK_FALSE(m.reserve(alice, usd("1")).allowed);  // 0.5 + 1 held + 1 > 2
    CHECK_THROWS_AS(m.release("r-commit"), ConflictError);
    // Settled records are stored encoded since version 5: a replay returns the first result.
    auto again = m.commit("r-commit", usd("0.5"));
    CHECK(again.replayed);
    CHECK(again.charged == usd("0.5"));
    CHECK_THROWS_AS(m.commit("r-commit", usd("0.4")), ConflictError);
    {
      Db db(path);
      CHECK(db.column("SELECT state FROM requests WHERE id='r-commit'") == std::vector<std::string>{"1"});
      CHECK(db.column("SELECT state FROM requests WHERE id='r-deny'") == std::vector<std::string>{"4"});
    }
    auto r = m.commit("r-held", usd("0.75"));
    CHECK(r.charged == usd("0.75"));
    alice_day = status_of(m.status(Scope("user", "alice")), "day");
    CHECK(alice_day.spent == usd("1.25").nanos());
    CHECK(alice_day.held == 0);
    {
      Db db(path);  // the new rows carry after-images
      CHECK(db.column("SELECT count(*) FROM ledger WHERE seq > 8 AND redo IS NOT NULL") != std::vector<std::string>{"0"});
    }
    auto rep = m.verify();
    for (const auto& p : rep.problems) MESSAGE(p);
    CHECK(rep.ok);
    CHECK(rep.chain_ok);
  }
  {  // opened again: nothing left to migrate, same state
    BudgetManager m(options_for(path, clock));
    CHECK(m.verify().ok);
    CHECK(status_of(m.status(Scope("user", "alice")), "day").spent == usd("1.25").nanos());
    CHECK(m.commit("r-held", usd("0.75")).charged == usd("0.75"));
  }
}

TEST_CASE("sqlite: an operation that fails half-way leaves the cache as it was (undo log)") {
  // A reserve whose second window overflows (int64 nanos) after its first was added to: the
  // store must take the first back (nothing was written; the cache is what later reads see).
  std::string path = temp_path();
  auto clock = std::make_shared<ManualClock>(t0());
  Options o;
  o.store = "sqlite:" + path;
  o.clock = clock;
  o.limits = {Limit::cost("tenant:acme", Window::total(), usd("2000000000")),
              Limit::cost("user:bob", Window::total(), usd("2000000000"))};
  BudgetManager m(o);
  m.grant(Scope("tenant", "acme"), usd("3000000000"));
  m.grant(Scope("user", "bob"), usd("9000000000"));
  REQUIRE(m.reserve(Subject{"user:bob"}, usd("5000000000")).allowed);
  // acme: 0 + 4.5e9 fits; bob: 5e9 + 4.5e9 held has room (limit + grants) but overflows int64.
  CHECK_THROWS_AS(m.reserve(Subject{"tenant:acme", "user:bob"}, usd("4500000000")), Error);
  CHECK(status_of(m.status(Scope("tenant", "acme")), "total").held == 0);
  // (bob's status is not read: limit + grants exceed int64, which status() does not handle)
  auto small = m.reserve(Subject{"tenant:acme"}, usd("1"));
  REQUIRE(small.allowed);
  CHECK(status_of(m.status(Scope("tenant", "acme")), "total").held == usd("1").nanos());
  m.release(small.reservation);
  auto rep = m.verify();
  for (const auto& p : rep.problems) MESSAGE(p);
  CHECK(rep.ok);
}

TEST_CASE("sqlite: another connection catches up records with escaped and non-ASCII strings") {
  std::string path = temp_path();
  auto clock = std::make_shared<ManualClock>(t0());
  BudgetManager a(big_limits(path, clock));
  BudgetManager b(big_limits(path, clock));
  Subject odd{"tenant:acme", "user:zo\xc3\xab\"q\\x"};
  RequestOptions ro;
  ro.request_id = "id \"quoted\" \xe2\x9c\x93";
  ro.provider = "prov\\ider";
  auto r = a.reserve(odd, usd("0.25"), ro);
  REQUIRE(r.allowed);
  auto st = status_of(b.status(Scope("user", "zo\xc3\xab\"q\\x")), "day");
  CHECK(st.held == usd("0.25").nanos());
  auto rec = b.commit(ro.request_id, usd("0.2"));  // b finds the record through its catch-up
  CHECK(rec.charged == usd("0.2"));
  st = status_of(a.status(Scope("user", "zo\xc3\xab\"q\\x")), "day");
  CHECK(st.held == 0);
  CHECK(st.spent == usd("0.2").nanos());
  CHECK(a.commit(ro.request_id, usd("0.2")).charged == usd("0.2"));  // a replays b's commit
  auto events = a.events();
  REQUIRE(events.size() == 2);
  CHECK(events[0].provider == "prov\\ider");
  CHECK(events[1].subject == events[0].subject);
  CHECK(std::find(events[1].subject.begin(), events[1].subject.end(), "user:zo\xc3\xab\"q\\x") != events[1].subject.end());
  CHECK(a.verify().ok);
}

TEST_CASE("sqlite: checkpoints move live holds into `holds` and settled ones out of it") {
  std::string path = temp_path();
  auto clock = std::make_shared<ManualClock>(t0());
  BudgetManager m(big_limits(path, clock));
  Subject alice{"tenant:acme", "user:alice"};
  auto lifecycles = [&](int n) {
    for (int i = 0; i < n; ++i) {
      auto r = m.reserve(alice, usd("0.001"));
      REQUIRE(r.allowed);
      m.commit(r.reservation, usd("0.001"));
    }
  };
  auto holds = [&] { return Db(path).column("SELECT id FROM holds ORDER BY id"); };
  RequestOptions ro;
  ro.request_id = "long-hold";
  ro.ttl = std::chrono::hours(1);
  REQUIRE(m.reserve(alice, usd("1"), ro).allowed);
  int64_t ckpt = meta_int(path, "checkpoint");
  lifecycles(300);  // crosses a checkpoint: the hold is written to `holds`, the settled ones to `requests`
  CHECK(meta_int(path, "checkpoint") > ckpt);
  {  // the long hold, and perhaps the hold of the lifecycle in flight when the checkpoint ran
    auto h = holds();
    CHECK(std::find(h.begin(), h.end(), "long-hold") != h.end());
    CHECK(h.size() <= 2);
  }
  m.commit("long-hold", usd("0.5"));
  RequestOptions ro2;
  ro2.request_id = "short-hold";
  REQUIRE(m.reserve(alice, usd("1"), ro2).allowed);
  m.release("short-hold");  // created and settled between two checkpoints: never in `holds`
  ckpt = meta_int(path, "checkpoint");
  lifecycles(300);
  CHECK(meta_int(path, "checkpoint") > ckpt);
  CHECK(m.verify().ok);  // checkpoints again, with no hold in flight
  CHECK(holds().empty());  // every hold that was written there was settled since
  Db db(path);
  CHECK(db.column("SELECT state FROM requests WHERE id='long-hold'") == std::vector<std::string>{"1"});
  CHECK(db.column("SELECT state FROM requests WHERE id='short-hold'") == std::vector<std::string>{"2"});
  CHECK(m.verify().ok);
}

TEST_CASE("sqlite: many processes opening a new file at once all succeed") {
  // Switching a new file to WAL needs an exclusive lock, and SQLite answers SQLITE_BUSY at
  // once there (no busy handler): the store must wait for its timeout like everywhere else.
  // Children are released together through a pipe, to collide as a server's workers do.
  constexpr int kRounds = 25, kProcs = 6;
  int failures = 0;
  for (int round = 0; round < kRounds; ++round) {
    std::string path = temp_path();
    int gate[2];
    REQUIRE(pipe(gate) == 0);
    std::vector<pid_t> kids;
    for (int i = 0; i < kProcs; ++i) {
      pid_t pid = fork();
      REQUIRE(pid >= 0);
      if (pid == 0) {
        close(gate[1]);
        char c;
        (void)!read(gate[0], &c, 1);  // returns when the parent closes the pipe
        int code = 0;
        try {
          Options o;
          o.store = "sqlite:" + path;
          o.limits = {Limit::cost("user:*", Window::day(), usd("10"))};
          BudgetManager m(o);
          if (!m.reserve(Subject{"user:u" + std::to_string(i)}, usd("1")).allowed) code = 2;
        } catch (const std::exception& e) {
          std::fprintf(stderr, "round %d, process %d: %s\n", round, i, e.what());
          code = 1;
        }
        _exit(code);
      }
      kids.push_back(pid);
    }
    close(gate[0]);
    close(gate[1]);
    for (pid_t pid : kids) {
      int status = 0;
      waitpid(pid, &status, 0);
      if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) ++failures;
    }
  }
  CHECK(failures == 0);
}

TEST_CASE("generated request ids stay unique across processes forked after the parent made some") {
  // A server forks its workers after it started (and perhaps used) libbudget: each child must
  // generate its own ids, or their reserves collide in the file they share.
  std::string path = temp_path();
  Options o;
  o.store = "sqlite:" + path;
  o.limits = {Limit::cost("user:*", Window::day(), usd("1000"))};
  std::set<std::string> ids;
  {
    BudgetManager parent(o);
    for (int i = 0; i < 3; ++i) ids.insert(parent.reserve(Subject{"user:parent"}, usd("1")).reservation.request_id());
  }
  constexpr int kProcs = 4, kEach = 50;
  std::vector<std::pair<pid_t, int>> kids;
  for (int i = 0; i < kProcs; ++i) {
    int fd[2];
    REQUIRE(pipe(fd) == 0);
    pid_t pid = fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
      close(fd[0]);
      int code = 0;
      try {
        BudgetManager m(o);
        for (int k = 0; k < kEach; ++k) {
          auto d = m.reserve(Subject{"user:u" + std::to_string(i)}, usd("1"));
          if (!d.allowed || d.replayed) code = 2;
          std::string id = d.reservation.request_id() + "\n";
          if (write(fd[1], id.data(), id.size()) != static_cast<ssize_t>(id.size())) code = 3;
        }
      } catch (const std::exception& e) {
        std::fprintf(stderr, "process %d: %s\n", i, e.what());
        code = 1;
      }
      _exit(code);
    }
    close(fd[1]);
    kids.emplace_back(pid, fd[0]);
  }
  size_t got = 0;
  for (auto [pid, fd] : kids) {
    std::string all;
    char buf[4096];
    for (ssize_t n; (n = read(fd, buf, sizeof buf)) > 0;) all.append(buf, static_cast<size_t>(n));
    close(fd);
    int status = 0;
    waitpid(pid, &status, 0);
    CHECK(WIFEXITED(status));
    CHECK(WEXITSTATUS(status) == 0);
    std::istringstream in(all);
    for (std::string id; std::getline(in, id);) {
      ++got;
      CHECK(ids.insert(id).second);  // never seen in the parent or another child
    }
  }
  CHECK(got == kProcs * kEach);
}

namespace {

// In a child process whose files may not grow past `limit` bytes (RLIMIT_FSIZE: a write past
// it fails with EFBIG, as a full disk fails with ENOSPC): lifecycles until a write fails, a
// check that the failed operation changed nothing, then the limit lifted and the same
// manager carrying on (the failed operation retried with its request id). Exit codes: 0 ok,
// 1 no write ever failed (the limit was too high to prove anything), 2 an error other than
// StoreUnavailable, 3 the failed operation left a change, 4 anything else.
int full_disk_child(const Options& o, rlim_t limit, int lifecycles) {
  std::signal(SIGXFSZ, SIG_IGN);
  rlimit rl{limit, RLIM_INFINITY};
  if (setrlimit(RLIMIT_FSIZE, &rl) != 0) return 4;
  try {
    BudgetManager m(o);
    const Subject alice{"user:alice"};
    int64_t acked_spend = usd("1").nanos(), acked_held = 0;  // the parent recorded $1
    bool failed = false;
    auto fail_once = [&]() -> int {
      if (failed) return 0;
      failed = true;
      // Nothing of the failed operation shows, in this process's own view.
      auto st = status_of(m.status(Scope("user", "alice")), "day");
      if (st.spent != acked_spend || st.held != acked_held) return 3;
      rlimit more{RLIM_INFINITY, RLIM_INFINITY};  // space returns
      return setrlimit(RLIMIT_FSIZE, &more) == 0 ? 0 : 4;
    };
    for (int i = 0; i < lifecycles; ++i) {
      RequestOptions ro;
      ro.request_id = "fd-" + std::to_string(i);
      Decision d;
      for (;;) {
        d = m.reserve(alice, usd("0.001"), ro);
        if (d.allowed) break;
        if (d.denial.reason != DenyReason::StoreUnavailable) return 2;
        if (int rc = fail_once()) return rc;
      }
      acked_held += usd("0.001").nanos();
      for (;;) {
        try {
          m.commit(d.reservation, usd("0.001"));
          break;
        } catch (const StoreUnavailableError&) {
          if (int rc = fail_once()) return rc;
        }
      }
      acked_held -= usd("0.001").nanos();
      acked_spend += usd("0.001").nanos();
    }
    return failed ? 0 : 1;
  } catch (const Error& e) {
    std::fprintf(stderr, "full disk child: %s: %s\n", to_string(e.code()), e.what());
    return 2;
  } catch (...) {
    return 4;
  }
}

}  // namespace

TEST_CASE("sqlite: a full disk fails an operation with StoreUnavailable, changes nothing, and the manager recovers") {
  // Four file size limits, so the first failing write comes at different points of the file's
  // growth (which write it is, ledger append or checkpoint, is not pinned down here). Each
  // time the operation is refused whole (fail-closed), the
  // process's view is as before it, and once space returns the same manager goes on; nothing
  // acknowledged is lost, no hold is left, the ledger verifies.
  constexpr int kLifecycles = 1500;
  for (rlim_t limit : {rlim_t{250'000}, rlim_t{420'000}, rlim_t{700'000}, rlim_t{1'000'000}}) {
    CAPTURE(limit);
    std::string path = temp_path();
    Options o;
    o.store = "sqlite:" + path;
    o.limits = {Limit::cost("user:*", Window::day(), usd("1000"))};
    { BudgetManager(o).record(Subject{"user:alice"}, usd("1")); }
    pid_t pid = fork();
    REQUIRE(pid >= 0);
    if (pid == 0) _exit(full_disk_child(o, limit, kLifecycles));
    int status = 0;
    REQUIRE(waitpid(pid, &status, 0) == pid);
    REQUIRE(WIFEXITED(status));
    CHECK(WEXITSTATUS(status) == 0);
    BudgetManager m(o);
    auto day = status_of(m.status(Scope("user", "alice")), "day");
    CHECK(day.spent == usd("1").nanos() + usd("0.001").nanos() * kLifecycles);
    CHECK(day.held == 0);
    auto rep = m.verify();
    for (const auto& p : rep.problems) MESSAGE(p);
    CHECK(rep.ok);
    CHECK(rep.events == 1 + 2 * kLifecycles);
  }
}

TEST_CASE("sqlite: a process whose write failed (full disk) does not keep other processes from writing") {
  // The failed transaction is abandoned whole: its process keeps no write lock and no bytes
  // to write later, so another process writes (the disk has room for it: a file size limit
  // is per process) and the failed process, once it has room again, sees that write.
  std::string path = temp_path();
  Options o;
  o.store = "sqlite:" + path;
  o.limits = {Limit::cost("user:*", Window::day(), usd("1000"))};
  o.store_options.timeout = Duration(500);
  { BudgetManager(o).record(Subject{"user:a"}, usd("1"), {.request_id = "base"}); }
  int to_child[2], to_parent[2];
  REQUIRE(pipe(to_child) == 0);
  REQUIRE(pipe(to_parent) == 0);
  pid_t pid = fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    close(to_parent[0]);
    close(to_child[1]);
    std::signal(SIGXFSZ, SIG_IGN);
    int code = 0;
    char c = 0;
    try {
      BudgetManager m(o);
      m.record(Subject{"user:a"}, usd("0.50"), {.request_id = "a-ok"});
      struct stat sb {};
      if (stat((path + "-wal").c_str(), &sb) != 0) code = 4;
      rlimit rl{static_cast<rlim_t>(sb.st_size), RLIM_INFINITY};  // the WAL may not grow
      if (setrlimit(RLIMIT_FSIZE, &rl) != 0) code = 4;
      try {
        m.record(Subject{"user:a"}, usd("100"), {.request_id = "a-failed"});
        code = 1;  // the write did not fail: the test proves nothing
      } catch (const StoreUnavailableError&) {
      }
      if (write(to_parent[1], &c, 1) != 1 || read(to_child[0], &c, 1) != 1) code = 4;
      // Still without room: reads work, show the other process's write and nothing of the
      // failed record.
      if (status_of(m.status(Scope("user", "a")), "day").spent != usd("3.50").nanos()) code = 3;
      rlimit more{RLIM_INFINITY, RLIM_INFINITY};
      if (setrlimit(RLIMIT_FSIZE, &more) != 0) code = 4;
      m.record(Subject{"user:a"}, usd("100"), {.request_id = "a-failed"});  // the retry
    } catch (const std::exception& e) {
      std::fprintf(stderr, "child: %s\n", e.what());
      code = 2;
    }
    _exit(code);  // (exiting early closes its pipe ends: the parent's read then ends)
  }
  close(to_parent[1]);
  close(to_child[0]);
  char c = 0;
  bool ready = read(to_parent[0], &c, 1) == 1;
  CHECK(ready);
  if (ready) {
    try {
      BudgetManager other(o);  // the other process, while the first one idles after its failure
      other.record(Subject{"user:a"}, usd("2"), {.request_id = "b-ok"});
    } catch (const std::exception& e) {
      FAIL_CHECK("the other process could not write: " << std::string(e.what()));
    }
  }
  CHECK(write(to_child[1], &c, 1) == 1);
  close(to_parent[0]);
  close(to_child[1]);
  int status = 0;
  REQUIRE(waitpid(pid, &status, 0) == pid);
  REQUIRE(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);
  BudgetManager m(o);
  CHECK(status_of(m.status(Scope("user", "a")), "day").spent == usd("103.50").nanos());
  std::vector<std::string> ids;
  for (const auto& e : m.events()) ids.push_back(e.request_id);
  CHECK(ids == std::vector<std::string>{"base", "a-ok", "b-ok", "a-failed"});
  auto rep = m.verify();
  for (const auto& p : rep.problems) MESSAGE(p);
  CHECK(rep.ok);
}
