// The SQLite store's schema: a file written by schema version 1 is migrated at open to the
// current version (through version 2, so both migrations run; counters,
// holds, ledger and limits carry over; the hash chain still verifies); a new file gets the
// current version and small pages.
#include "store_fixture.hpp"

#include <sqlite3.h>

#include <fstream>
#include <sstream>

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

}  // namespace

TEST_CASE("sqlite: a version-1 file is migrated at open and keeps its state and ledger") {
  std::string path = temp_path();
  std::vector<std::string> v1_hashes;
  {
    std::ifstream in(std::string(BUDGET_TEST_DATA_DIR) + "/sqlite_v1.sql");
    REQUIRE(in);
    std::stringstream sql;
    sql << in.rdbuf();
    Db db(path);
    db.exec("PRAGMA journal_mode=WAL");
    db.exec(sql.str());
    db.exec("PRAGMA user_version=1");
    v1_hashes = db.column("SELECT hash FROM ledger ORDER BY seq");
    REQUIRE(v1_hashes.size() == 7);
  }
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
    CHECK(db.column("PRAGMA user_version") == std::vector<std::string>{"4"});
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
  CHECK(db.column("PRAGMA user_version") == std::vector<std::string>{"4"});
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
