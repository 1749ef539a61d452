// The SQLite store: the embedded durable default.
//
// - WAL journal, synchronous=NORMAL by default (an acknowledged operation survives a crash of
//   the application; `?synchronous=full` also survives power loss), busy timeout, schema
//   version with migrations, 1 KiB pages for new files (an operation dirties a handful of
//   small rows; each page it dirties is one WAL frame written at commit).
// - Every operation runs inside a transaction (BEGIN IMMEDIATE), so a crash never leaves a
//   half-applied hold, and several processes can share one file.
// - Compact rows: a plan is stored once (table `plans`) and referenced by id from requests and
//   ledger events; a ledger event's `windows` array (the plan's window keys) is cut out of the
//   stored body and restored from the plan on read, byte for byte; counters are keyed by an
//   integer series id (table `series`), so a subject's windows sit together.
// - In-process cache of counters, live holds, the limits version and the ledger head. It is
//   valid while no other connection wrote: every transaction starts with PRAGMA data_version
//   (under the write lock) and drops the cache when another connection committed since. Any
//   rollback drops it too. So one process alone reads nothing it wrote; many processes on one
//   file stay exact.
// - Group commit: concurrent operations of one process are batched into one transaction by
//   whichever caller gets there first (leader/follower, no extra thread). If an operation
//   fails, the transaction is rolled back and re-run without it, so one failing operation
//   does not affect the others. Callers are acknowledged only after COMMIT returned, so only
//   durable work is acknowledged.
#include <budget/error.hpp>

#include <sqlite3.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <map>
#include <mutex>
#include <thread>
#include <unordered_map>

#include "ledger_codec.hpp"
#include "stores/txn.hpp"

namespace budget::detail {
namespace {

constexpr int kSchemaVersion = 3;
constexpr int kPageSize = 1024;     // for new files only (an existing file keeps its page size)
constexpr int kGatherMicros = 100;  // longest wait of a new batch leader for the previous batch's callers
constexpr int kSpinMicros = 200;    // longest a waiting caller yields before it sleeps
constexpr int kLeadRounds = 4;      // batches a leader runs after its own before handing over

// Version 1, kept to document what migrate_v1() starts from.
[[maybe_unused]] const char* kSchemaV1 = R"SQL(
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS limits (
  key TEXT PRIMARY KEY, scope TEXT NOT NULL, win TEXT NOT NULL, metric TEXT NOT NULL,
  amount INTEGER NOT NULL, alerts TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS counters (
  series TEXT NOT NULL, start INTEGER NOT NULL, end_ms INTEGER NOT NULL,
  spent_cost INTEGER NOT NULL DEFAULT 0, spent_tokens INTEGER NOT NULL DEFAULT 0, spent_requests INTEGER NOT NULL DEFAULT 0,
  held_cost INTEGER NOT NULL DEFAULT 0, held_tokens INTEGER NOT NULL DEFAULT 0, held_requests INTEGER NOT NULL DEFAULT 0,
  granted_cost INTEGER NOT NULL DEFAULT 0, granted_tokens INTEGER NOT NULL DEFAULT 0, granted_requests INTEGER NOT NULL DEFAULT 0,
  PRIMARY KEY (series, start)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS requests (
  id TEXT PRIMARY KEY, state INTEGER NOT NULL, subject TEXT NOT NULL, plan TEXT,
  held_cost INTEGER, held_tokens INTEGER, held_requests INTEGER,
  consumed_cost INTEGER, consumed_tokens INTEGER, consumed_requests INTEGER,
  charged_cost INTEGER, charged_tokens INTEGER, charged_requests INTEGER,
  created_at INTEGER, expires_at INTEGER, flags INTEGER, model TEXT, provider TEXT, price_version TEXT,
  fingerprint TEXT, failing_check INTEGER, fail_spent INTEGER, fail_held INTEGER, fail_granted INTEGER) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS requests_deadline ON requests(expires_at) WHERE state = 0;
CREATE TABLE IF NOT EXISTS ledger (
  seq INTEGER PRIMARY KEY, time INTEGER NOT NULL, type TEXT NOT NULL, request_id TEXT NOT NULL,
  body TEXT NOT NULL, prev_hash TEXT NOT NULL, hash TEXT NOT NULL);
INSERT OR IGNORE INTO meta(key, value) VALUES ('limits_version', 1);
)SQL";

#define BUDGET_REQUEST_COLUMNS                                                                 \
  "id TEXT PRIMARY KEY, state INTEGER NOT NULL, subject TEXT NOT NULL, plan INTEGER,"          \
  " held_cost INTEGER, held_tokens INTEGER, held_requests INTEGER,"                            \
  " consumed_cost INTEGER, consumed_tokens INTEGER, consumed_requests INTEGER,"                \
  " charged_cost INTEGER, charged_tokens INTEGER, charged_requests INTEGER,"                   \
  " created_at INTEGER, expires_at INTEGER, flags INTEGER, model TEXT, provider TEXT,"         \
  " price_version TEXT, fingerprint TEXT, failing_check INTEGER, fail_spent INTEGER,"          \
  " fail_held INTEGER, fail_granted INTEGER"

// The current version. A table is created here only when absent; the migrations build the
// new layouts from older tables first.
const char* kSchema =
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value) WITHOUT ROWID;"
    "CREATE TABLE IF NOT EXISTS limits ("
    "  key TEXT PRIMARY KEY, scope TEXT NOT NULL, win TEXT NOT NULL, metric TEXT NOT NULL,"
    "  amount INTEGER NOT NULL, alerts TEXT NOT NULL) WITHOUT ROWID;"
    "CREATE TABLE IF NOT EXISTS series (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE);"
    "CREATE TABLE IF NOT EXISTS counters ("
    "  sid INTEGER NOT NULL, start INTEGER NOT NULL, end_ms INTEGER NOT NULL,"
    "  spent_cost INTEGER NOT NULL DEFAULT 0, spent_tokens INTEGER NOT NULL DEFAULT 0,"
    "  spent_requests INTEGER NOT NULL DEFAULT 0, held_cost INTEGER NOT NULL DEFAULT 0,"
    "  held_tokens INTEGER NOT NULL DEFAULT 0, held_requests INTEGER NOT NULL DEFAULT 0,"
    "  granted_cost INTEGER NOT NULL DEFAULT 0, granted_tokens INTEGER NOT NULL DEFAULT 0,"
    "  granted_requests INTEGER NOT NULL DEFAULT 0, PRIMARY KEY (sid, start)) WITHOUT ROWID;"
    "CREATE TABLE IF NOT EXISTS plans (id INTEGER PRIMARY KEY, text TEXT NOT NULL UNIQUE, windows TEXT NOT NULL);"
    // Settled records (every state but held), and live holds: a hold moves from `holds` to
    // `requests` when it is settled, so `holds` stays small and needs no deadline index.
    "CREATE TABLE IF NOT EXISTS requests (" BUDGET_REQUEST_COLUMNS ") WITHOUT ROWID;"
    "CREATE TABLE IF NOT EXISTS holds (" BUDGET_REQUEST_COLUMNS ") WITHOUT ROWID;"
    "CREATE TABLE IF NOT EXISTS ledger (seq INTEGER PRIMARY KEY, body TEXT NOT NULL, hash NOT NULL, plan INTEGER, wpos INTEGER);"
    "INSERT OR IGNORE INTO meta(key, value) VALUES ('limits_version', 1);";

// Version 1 -> 2, in the migration transaction. Plans are moved by migrate_v1() in C++ between
// kMigrateV1a and kMigrateV1b (their window keys are computed from the decoded plan).
const char* kMigrateV1a = R"SQL(
CREATE TABLE series (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE);
INSERT INTO series(name) SELECT DISTINCT series FROM counters ORDER BY series;
CREATE TABLE counters_v2 (
  sid INTEGER NOT NULL, start INTEGER NOT NULL, end_ms INTEGER NOT NULL,
  spent_cost INTEGER NOT NULL DEFAULT 0, spent_tokens INTEGER NOT NULL DEFAULT 0, spent_requests INTEGER NOT NULL DEFAULT 0,
  held_cost INTEGER NOT NULL DEFAULT 0, held_tokens INTEGER NOT NULL DEFAULT 0, held_requests INTEGER NOT NULL DEFAULT 0,
  granted_cost INTEGER NOT NULL DEFAULT 0, granted_tokens INTEGER NOT NULL DEFAULT 0, granted_requests INTEGER NOT NULL DEFAULT 0,
  PRIMARY KEY (sid, start)) WITHOUT ROWID;
INSERT INTO counters_v2 SELECT s.id, c.start, c.end_ms, c.spent_cost, c.spent_tokens, c.spent_requests, c.held_cost,
  c.held_tokens, c.held_requests, c.granted_cost, c.granted_tokens, c.granted_requests
  FROM counters c JOIN series s ON s.name = c.series;
DROP TABLE counters;
ALTER TABLE counters_v2 RENAME TO counters;
CREATE TABLE plans (id INTEGER PRIMARY KEY, text TEXT NOT NULL UNIQUE, windows TEXT NOT NULL);
)SQL";
const char* kMigrateV1b =
    "CREATE TABLE requests_v2 (" BUDGET_REQUEST_COLUMNS ") WITHOUT ROWID;"
    "INSERT INTO requests_v2 SELECT r.id, r.state, r.subject, (SELECT p.id FROM plans p WHERE p.text = r.plan),"
    "  r.held_cost, r.held_tokens, r.held_requests, r.consumed_cost, r.consumed_tokens, r.consumed_requests,"
    "  r.charged_cost, r.charged_tokens, r.charged_requests, r.created_at, r.expires_at, r.flags, r.model,"
    "  r.provider, r.price_version, r.fingerprint, r.failing_check, r.fail_spent, r.fail_held, r.fail_granted"
    "  FROM requests r;"
    "DROP INDEX IF EXISTS requests_deadline;"
    "DROP TABLE requests;"
    "ALTER TABLE requests_v2 RENAME TO requests;"
    "CREATE INDEX requests_deadline ON requests(expires_at) WHERE state = 0;"
    "CREATE TABLE ledger_v2 (seq INTEGER PRIMARY KEY, body TEXT NOT NULL, hash NOT NULL, plan INTEGER, wpos INTEGER);"
    "INSERT INTO ledger_v2(seq, body, hash) SELECT seq, body, hash FROM ledger ORDER BY seq;"
    "DROP TABLE ledger;"
    "ALTER TABLE ledger_v2 RENAME TO ledger;";

// Version 2 -> 3: live holds move to their own table; the deadline index goes.
const char* kMigrateV2 =
    "CREATE TABLE holds (" BUDGET_REQUEST_COLUMNS ") WITHOUT ROWID;"
    "INSERT INTO holds SELECT * FROM requests WHERE state = 0;"
    "DELETE FROM requests WHERE state = 0;"
    "DROP INDEX IF EXISTS requests_deadline;";

const char* kEmptyPlanText = "{\"v\":0,\"w\":[],\"c\":[]}";

[[noreturn]] void fail(sqlite3* db, int rc, const char* what) {
  std::string msg = std::string("sqlite: ") + what + ": " + (db ? sqlite3_errmsg(db) : sqlite3_errstr(rc));
  int prim = rc & 0xFF;
  if (prim == SQLITE_BUSY || prim == SQLITE_LOCKED || prim == SQLITE_IOERR || prim == SQLITE_FULL ||
      prim == SQLITE_CANTOPEN || prim == SQLITE_READONLY || prim == SQLITE_PROTOCOL || prim == SQLITE_NOMEM)
    throw StoreUnavailableError(msg);
  throw InternalError(msg);
}

class Stmt {
 public:
  Stmt(sqlite3* db, const char* sql) : db_(db) {
    int rc = sqlite3_prepare_v3(db, sql, -1, SQLITE_PREPARE_PERSISTENT, &s_, nullptr);
    if (rc != SQLITE_OK) fail(db, rc, "prepare");
  }
  ~Stmt() { sqlite3_finalize(s_); }
  Stmt(const Stmt&) = delete;
  Stmt& operator=(const Stmt&) = delete;

  Stmt& reset() {
    sqlite3_reset(s_);
    idx_ = 0;
    return *this;
  }
  Stmt& bind(int64_t v) { check(sqlite3_bind_int64(s_, ++idx_, v)); return *this; }
  Stmt& bind(std::string_view v) {
    check(sqlite3_bind_text(s_, ++idx_, v.data(), static_cast<int>(v.size()), SQLITE_TRANSIENT));
    return *this;
  }
  Stmt& bind_blob(const void* p, size_t n) {
    check(sqlite3_bind_blob(s_, ++idx_, p, static_cast<int>(n), SQLITE_TRANSIENT));
    return *this;
  }
  Stmt& bind_null() { check(sqlite3_bind_null(s_, ++idx_)); return *this; }
  bool step() {
    int rc = sqlite3_step(s_);
    if (rc == SQLITE_ROW) return true;
    if (rc == SQLITE_DONE) return false;
    fail(db_, rc, "step");
  }
  void exec() {
    while (step()) {
    }
  }
  int64_t i64(int c) const { return sqlite3_column_int64(s_, c); }
  std::string text(int c) const {
    auto* p = reinterpret_cast<const char*>(sqlite3_column_text(s_, c));
    return p ? std::string(p, static_cast<size_t>(sqlite3_column_bytes(s_, c))) : std::string();
  }
  // A hash column: 32 bytes (version 2) or 64 hex digits (rows from version 1), as hex.
  std::string hash_hex(int c) const {
    if (sqlite3_column_type(s_, c) != SQLITE_BLOB) return text(c);
    auto* p = static_cast<const unsigned char*>(sqlite3_column_blob(s_, c));
    int n = sqlite3_column_bytes(s_, c);
    static const char* digits = "0123456789abcdef";
    std::string out;
    out.reserve(static_cast<size_t>(n) * 2);
    for (int i = 0; i < n; ++i) {
      out += digits[p[i] >> 4];
      out += digits[p[i] & 15];
    }
    return out;
  }
  bool null(int c) const { return sqlite3_column_type(s_, c) == SQLITE_NULL; }
  // Ends the statement's read (a stepped but unreset SELECT would pin an old snapshot).
  void finish() { sqlite3_reset(s_); }

 private:
  void check(int rc) {
    if (rc != SQLITE_OK) fail(db_, rc, "bind");
  }
  sqlite3* db_;
  sqlite3_stmt* s_ = nullptr;
  int idx_ = 0;
};

// 64 hex digits -> 32 bytes (a hash made by chain_hash; anything else is stored as text).
bool unhex(std::string_view hex, unsigned char* out) {
  if (hex.size() != 64) return false;
  auto val = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
  };
  for (size_t i = 0; i < 32; ++i) {
    int hi = val(hex[2 * i]), lo = val(hex[2 * i + 1]);
    if (hi < 0 || lo < 0) return false;
    out[i] = static_cast<unsigned char>(hi * 16 + lo);
  }
  return true;
}

void add_to(Counters& a, const Counters& d) {
  a.spent += d.spent;
  a.held += d.held;
  a.granted += d.granted;
}

class SqliteStore;

class SqlTxn final : public Txn {
 public:
  explicit SqlTxn(SqliteStore& s) : s_(s) {}
  uint64_t limits_version() override;
  std::optional<RequestRecord> get_request(const std::string& id) override;
  void put_request(const RequestRecord& rec) override;
  void append(LedgerEvent&& e, const std::shared_ptr<const Plan>& plan) override;
  std::vector<Counters> sum_all(const Plan& p) override;
  void add_all(const Plan& p, const Counters& delta) override;
  // Live holds are edited in the cache in place (no copies); the cache is dropped on rollback.
  const RequestRecord* find_request(const std::string& id) override;
  RequestRecord* edit_request(const std::string& id) override;
  void save_request(const RequestRecord& rec) override;
  const RequestRecord& adopt_request(RequestRecord&& rec) override;

 private:
  RequestRecord* lookup(const std::string& id);
  enum Where { kNew, kInHolds, kInRequests, kUnknown };
  void write_request(const RequestRecord& rec, Where where);
  SqliteStore& s_;
  std::optional<RequestRecord> other_;  // a looked-up record that is not a live hold
};

class SqliteStore final : public Store {
 public:
  SqliteStore(const std::string& spec, const StoreOptions& opts) {
    std::string path = spec;
    std::string sync = "NORMAL";
    if (auto q = spec.find('?'); q != std::string::npos) {
      path = spec.substr(0, q);
      auto params = spec.substr(q + 1);
      if (params == "synchronous=full") sync = "FULL";
      else if (params == "synchronous=normal") sync = "NORMAL";
      else throw InvalidArgumentError("unknown sqlite store option '" + params + "' (synchronous=full|normal)");
    }
    if (path.empty()) throw InvalidArgumentError("sqlite store needs a path: 'sqlite:budget.db'");
    path_ = path;
    int rc = sqlite3_open_v2(path.c_str(), &db_, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, nullptr);
    if (rc != SQLITE_OK) {
      std::string msg = db_ ? sqlite3_errmsg(db_) : sqlite3_errstr(rc);
      sqlite3_close(db_);
      throw StoreUnavailableError("sqlite: cannot open '" + path + "': " + msg);
    }
    try {
      sqlite3_busy_timeout(db_, static_cast<int>(opts.timeout.count()));
      exec(("PRAGMA page_size=" + std::to_string(kPageSize)).c_str());  // no-op unless the file is new
      exec("PRAGMA journal_mode=WAL");
      exec(("PRAGMA synchronous=" + sync).c_str());
      // Checkpoint every 4 MiB of WAL (the default is 1000 pages, 1 MiB of 1 KiB pages): fewer
      // syncs, and a page rewritten by many transactions reaches the file once per checkpoint.
      exec(("PRAGMA wal_autocheckpoint=" + std::to_string(4 * 1024 * 1024 / page_size())).c_str());
      exec("PRAGMA foreign_keys=OFF");
      migrate();
      prepare();
    } catch (...) {
      stmts_.clear();
      sqlite3_close(db_);
      throw;
    }
  }
  ~SqliteStore() override {
    multi_add_.clear();
    stmts_.clear();
    sqlite3_close(db_);
  }

  std::string describe() const override { return "sqlite:" + path_; }

  std::vector<Limit> load_limits(uint64_t* version) override {
    return run([&](SqlTxn& t) {
      *version = t.limits_version();
      std::vector<Limit> out;
      auto& s = st(kLoadLimits).reset();
      while (s.step()) {
        Limit l;
        l.scope = s.text(1);
        l.window = Window::parse(s.text(2));
        l.metric = parse_metric(s.text(3));
        l.amount = s.i64(4);
        l.alert_thresholds_pct = nlohmann::json::parse(s.text(5)).get<std::vector<uint32_t>>();
        out.push_back(std::move(l));
      }
      return out;
    });
  }
  uint64_t put_limit(const Limit& l) override {
    return run([&](SqlTxn& t) {
      st(kPutLimit).reset().bind(l.key()).bind(l.scope).bind(l.window.to_string()).bind(to_string(l.metric))
          .bind(l.amount).bind(nlohmann::json(l.alert_thresholds_pct).dump()).exec();
      return bump_limits_version(t);
    });
  }
  bool remove_limit(const std::string& key, uint64_t* version) override {
    return run([&](SqlTxn& t) {
      st(kDelLimit).reset().bind(key).exec();
      bool erased = sqlite3_changes(db_) > 0;
      *version = erased ? bump_limits_version(t) : t.limits_version();
      return erased;
    });
  }

  ReserveOut reserve(const ReserveOp& op) override { return run([&](SqlTxn& t) { return txn_reserve(t, op); }); }
  GrowOut grow(const GrowOp& op) override { return run([&](SqlTxn& t) { return txn_grow(t, op); }); }
  SettleOut settle(const SettleOp& op) override { return run([&](SqlTxn& t) { return txn_settle(t, op); }); }
  DirectOut direct(const DirectOp& op) override { return run([&](SqlTxn& t) { return txn_direct(t, op); }); }

  size_t expire(int64_t now, size_t max) override {
    return run([&](SqlTxn& t) {
      std::vector<std::string> due;
      auto& s = st(kDue).reset().bind(now).bind(static_cast<int64_t>(max));
      while (s.step()) due.push_back(s.text(0));
      s.finish();
      for (const auto& id : due)
        if (auto rec = t.get_request(id)) txn_expire(t, *rec, now);
      return due.size();
    });
  }
  int64_t next_deadline() override {
    return run([&](SqlTxn&) {
      auto& s = st(kNextDeadline).reset();
      int64_t v = s.step() && !s.null(0) ? s.i64(0) : kForever;
      s.finish();
      return v;
    });
  }

  std::optional<RequestRecord> get_request(const std::string& id) override {
    return run([&](SqlTxn& t) { return t.get_request(id); });
  }
  std::vector<CheckState> read(const Plan& plan) override {
    return run([&](SqlTxn& t) { return txn_read(t, plan); });
  }

  void scan_events(const LedgerQuery& q, const std::function<bool(const LedgerEvent&)>& f) override {
    // Read in pages, each in its own short transaction, so a long export never blocks writers.
    int64_t after = q.after_seq;
    std::string prev;  // hash of the event before `after` (the chain is over consecutive rows)
    size_t n = 0;
    bool more = true;
    while (more && n < q.limit) {
      std::vector<LedgerEvent> page = run([&](SqlTxn&) {
        std::vector<LedgerEvent> out;
        if (prev.empty()) {
          auto& h = st(kHashAt).reset().bind(after);
          prev = h.step() ? h.hash_hex(0) : std::string(64, '0');
          h.finish();
        }
        auto& s = st(kScan).reset().bind(after).bind(int64_t{2000});
        std::string p = prev;
        while (s.step()) {
          std::string body = s.text(1);
          if (!s.null(3)) {
            const auto& pr = plan_by_id(s.i64(3));
            auto pos = static_cast<size_t>(s.i64(4));
            if (pos > body.size()) throw InternalError("sqlite: corrupted ledger row " + std::to_string(s.i64(0)));
            body.insert(pos, pr.windows_field);
          }
          auto e = event_from_body(body);
          e.seq = s.i64(0);
          e.prev_hash = p;
          e.hash = s.hash_hex(2);
          p = e.hash;
          out.push_back(std::move(e));
        }
        return out;
      });
      more = page.size() == 2000;
      for (auto& e : page) {
        after = e.seq;
        prev = e.hash;
        if (!matches(q, e)) continue;
        ++n;
        if (n > q.limit || !f(e)) return;
      }
    }
  }

  void scan_counters(const std::function<void(const StoredCounter&)>& f) override {
    auto rows = run([&](SqlTxn&) {
      std::vector<StoredCounter> out;
      auto& s = st(kAllCounters).reset();
      while (s.step()) {
        StoredCounter c;
        c.key = s.text(0) + '|' + std::to_string(s.i64(1));
        c.end = s.i64(2);
        c.counters.spent = {s.i64(3), s.i64(4), s.i64(5)};
        c.counters.held = {s.i64(6), s.i64(7), s.i64(8)};
        c.counters.granted = {s.i64(9), s.i64(10), s.i64(11)};
        out.push_back(std::move(c));
      }
      return out;
    });
    for (const auto& c : rows) f(c);
  }

 private:
  friend class SqlTxn;
  enum StmtId {
    kLimitsVersion, kSetMeta, kLoadLimits, kPutLimit, kDelLimit, kGetReq, kPutReq, kPutHold, kAppend,
    kDue, kNextDeadline, kScan, kHashAt, kAllCounters, kLastChain, kBegin, kCommit, kDataVersion,
    kSeriesId, kAddSeries, kLoadSeries, kPlanId, kAddPlan, kPlanById, kAddCounter, kDelHold, kUpdReq, kCount
  };

  void exec(const char* sql) {
    char* err = nullptr;
    int rc = sqlite3_exec(db_, sql, nullptr, nullptr, &err);
    if (rc != SQLITE_OK) {
      std::string msg = err ? err : sqlite3_errstr(rc);
      sqlite3_free(err);
      if ((rc & 0xFF) == SQLITE_BUSY || (rc & 0xFF) == SQLITE_IOERR || (rc & 0xFF) == SQLITE_FULL)
        throw StoreUnavailableError("sqlite: " + msg);
      throw InternalError("sqlite: " + msg + " in: " + std::string(sql).substr(0, 60));
    }
  }

  int page_size() {
    Stmt s(db_, "PRAGMA page_size");
    return s.step() && s.i64(0) > 0 ? static_cast<int>(s.i64(0)) : 4096;
  }

  void migrate() {
    exec("BEGIN IMMEDIATE");
    try {
      int version = 0;
      {
        Stmt s(db_, "PRAGMA user_version");
        if (s.step()) version = static_cast<int>(s.i64(0));
      }
      if (version > kSchemaVersion)
        throw InternalError("sqlite store '" + path_ + "' has schema version " + std::to_string(version) +
                            ", newer than this libbudget (" + std::to_string(kSchemaVersion) + ")");
      if (version == 1) migrate_v1();
      if (version == 1 || version == 2) exec(kMigrateV2);
      if (version < kSchemaVersion) exec(kSchema);
      exec(("PRAGMA user_version=" + std::to_string(kSchemaVersion)).c_str());
      exec("COMMIT");
    } catch (...) {
      sqlite3_exec(db_, "ROLLBACK", nullptr, nullptr, nullptr);
      throw;
    }
  }

  // Version 1 -> 2: series ids, plans stored once, requests referencing plans, compact ledger.
  void migrate_v1() {
    exec(kMigrateV1a);
    {
      std::vector<std::string> texts;
      {
        Stmt s(db_, "SELECT DISTINCT plan FROM requests WHERE plan IS NOT NULL");
        while (s.step()) texts.push_back(s.text(0));
      }
      Stmt ins(db_, "INSERT INTO plans(text, windows) VALUES (?,?)");
      for (const auto& text : texts) {
        auto plan = decode_plan(text);
        ins.reset().bind(text).bind(nlohmann::json(window_keys(*plan)).dump()).exec();
      }
    }
    exec(kMigrateV1b);
  }

  // A request record's columns, in the order read_record() reads them, and its upsert into
  // `requests` (settled) or `holds` (live): one text for both tables.
#define BUDGET_RECORD_COLUMNS                                                                           \
  "id, state, subject, plan, held_cost, held_tokens, held_requests, consumed_cost, consumed_tokens,"   \
  " consumed_requests, charged_cost, charged_tokens, charged_requests, created_at, expires_at, flags," \
  " model, provider, price_version, fingerprint, failing_check, fail_spent, fail_held, fail_granted"
#define BUDGET_RECORD_UPSERT(table)                                                                      \
  "INSERT INTO " table "(" BUDGET_RECORD_COLUMNS ")"                                                     \
  " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?) ON CONFLICT(id) DO UPDATE SET state=excluded.state," \
  " held_cost=excluded.held_cost, held_tokens=excluded.held_tokens, held_requests=excluded.held_requests," \
  " consumed_cost=excluded.consumed_cost, consumed_tokens=excluded.consumed_tokens,"                    \
  " consumed_requests=excluded.consumed_requests, charged_cost=excluded.charged_cost,"                  \
  " charged_tokens=excluded.charged_tokens, charged_requests=excluded.charged_requests,"                \
  " expires_at=excluded.expires_at, flags=excluded.flags, model=excluded.model, provider=excluded.provider," \
  " price_version=excluded.price_version, fingerprint=excluded.fingerprint,"                            \
  " failing_check=excluded.failing_check, fail_spent=excluded.fail_spent, fail_held=excluded.fail_held," \
  " fail_granted=excluded.fail_granted"
  void prepare() {
    const char* sql[kCount] = {
        "SELECT value FROM meta WHERE key='limits_version'",
        "UPDATE meta SET value=?2 WHERE key=?1",
        "SELECT key, scope, win, metric, amount, alerts FROM limits ORDER BY key",
        "INSERT OR REPLACE INTO limits(key, scope, win, metric, amount, alerts) VALUES (?,?,?,?,?,?)",
        "DELETE FROM limits WHERE key=?",
        "SELECT " BUDGET_RECORD_COLUMNS " FROM holds WHERE id=?1 UNION ALL "
        "SELECT " BUDGET_RECORD_COLUMNS " FROM requests WHERE id=?1",
        BUDGET_RECORD_UPSERT("requests"),
        BUDGET_RECORD_UPSERT("holds"),
        "INSERT INTO ledger(seq, body, hash, plan, wpos) VALUES (?,?,?,?,?)",
        "SELECT id FROM holds WHERE expires_at<=? ORDER BY expires_at LIMIT ?",
        "SELECT min(expires_at) FROM holds",
        "SELECT seq, body, hash, plan, wpos FROM ledger WHERE seq>? ORDER BY seq LIMIT ?",
        "SELECT hash FROM ledger WHERE seq<=? ORDER BY seq DESC LIMIT 1",
        "SELECT s.name, c.start, c.end_ms, c.spent_cost, c.spent_tokens, c.spent_requests, c.held_cost, c.held_tokens,"
        " c.held_requests, c.granted_cost, c.granted_tokens, c.granted_requests FROM counters c JOIN series s ON s.id = c.sid",
        "SELECT seq, hash FROM ledger ORDER BY seq DESC LIMIT 1",
        "BEGIN IMMEDIATE",
        "COMMIT",
        "PRAGMA data_version",
        "SELECT id FROM series WHERE name=?",
        "INSERT INTO series(name) VALUES (?)",
        "SELECT start, spent_cost, spent_tokens, spent_requests, held_cost, held_tokens, held_requests, granted_cost,"
        " granted_tokens, granted_requests FROM counters WHERE sid=? AND start>=?",
        "SELECT id, windows FROM plans WHERE text=?",
        "INSERT INTO plans(text, windows) VALUES (?,?)",
        "SELECT text, windows FROM plans WHERE id=?",
        "UPDATE counters SET spent_cost=spent_cost+?, spent_tokens=spent_tokens+?, spent_requests=spent_requests+?,"
        " held_cost=held_cost+?, held_tokens=held_tokens+?, held_requests=held_requests+?, granted_cost=granted_cost+?,"
        " granted_tokens=granted_tokens+?, granted_requests=granted_requests+? WHERE sid=? AND start=?",
        "DELETE FROM holds WHERE id=?",
        "UPDATE requests SET state=?2, subject=?3, plan=?4, held_cost=?5, held_tokens=?6, held_requests=?7,"
        " consumed_cost=?8, consumed_tokens=?9, consumed_requests=?10, charged_cost=?11, charged_tokens=?12,"
        " charged_requests=?13, created_at=?14, expires_at=?15, flags=?16, model=?17, provider=?18, price_version=?19,"
        " fingerprint=?20, failing_check=?21, fail_spent=?22, fail_held=?23, fail_granted=?24 WHERE id=?1",
    };
#undef BUDGET_RECORD_UPSERT
#undef BUDGET_RECORD_COLUMNS
    for (int i = 0; i < kCount; ++i) stmts_.push_back(std::make_unique<Stmt>(db_, sql[i]));
  }
  Stmt& st(StmtId id) { return *stmts_[id]; }

  uint64_t bump_limits_version(SqlTxn& t) {
    uint64_t v = t.limits_version() + 1;
    st(kSetMeta).reset().bind("limits_version").bind(static_cast<int64_t>(v)).exec();
    limits_version_ = v;
    return v;
  }

  // ---- cache ----------------------------------------------------------------------------
  // Everything below is used by the leader only, inside a transaction that holds the write
  // lock. What another connection may change (counters, requests, limits version, ledger head)
  // is dropped when PRAGMA data_version says another connection committed; what only grows
  // (series ids, plans) stays. Any rollback drops everything (ids written by the rolled-back
  // transaction are gone).
  struct Series {
    int64_t sid = 0;      // 0: not in the file (as of the last look)
    bool loaded = false;  // `buckets` holds every bucket of the series with start >= lo
    int64_t lo = 0;
    std::map<int64_t, Counters> buckets;
  };
  struct PlanRow {
    int64_t id = 0;
    std::string windows_field;  // ,"windows":[...] exactly as in an event body
    std::shared_ptr<const Plan> plan;
  };

  void drop_shared_state() {
    for (auto it = series_.begin(); it != series_.end();) {
      if (it->second.sid == 0) {  // another connection may have added it since
        it = series_.erase(it);
        continue;
      }
      it->second.loaded = false;
      it->second.buckets.clear();
      ++it;
    }
    held_.clear();
    settled_.clear();
    limits_valid_ = false;
    head_valid_ = false;
  }
  void drop_all_state() {
    series_.clear();
    held_.clear();
    settled_.clear();
    plan_ids_.clear();
    plans_by_id_.clear();
    limits_valid_ = false;
    head_valid_ = false;
  }

  Series& series_of(const WindowRef& w) {
    const std::string& key = w.series_key.empty() ? (scratch_key_ = w.series()) : w.series_key;
    auto it = series_.find(key);
    if (it != series_.end()) return it->second;
    Series& s = series_[key];
    auto& q = st(kSeriesId).reset().bind(key);
    if (q.step()) s.sid = q.i64(0);
    q.finish();
    return s;
  }
  int64_t ensure_sid(Series& s, const WindowRef& w) {
    if (s.sid == 0) {
      auto& q = st(kSeriesId).reset().bind(w.series_key.empty() ? w.series() : w.series_key);
      if (q.step()) s.sid = q.i64(0);
      q.finish();
    }
    if (s.sid == 0) {
      st(kAddSeries).reset().bind(w.series_key.empty() ? w.series() : w.series_key).exec();
      s.sid = sqlite3_last_insert_rowid(db_);
    }
    return s.sid;
  }
  void load(Series& s, int64_t read_from) {
    s.buckets.clear();
    s.loaded = true;
    s.lo = read_from;
    if (s.sid == 0) return;
    auto& q = st(kLoadSeries).reset().bind(s.sid).bind(read_from);
    while (q.step()) {
      Counters c;
      c.spent = {q.i64(1), q.i64(2), q.i64(3)};
      c.held = {q.i64(4), q.i64(5), q.i64(6)};
      c.granted = {q.i64(7), q.i64(8), q.i64(9)};
      s.buckets.emplace(q.i64(0), c);
    }
    q.finish();
  }

  // What a record without a plan stores (as version 1 did).
  static const std::shared_ptr<const Plan>& empty_plan() {
    static const auto empty = [] {
      auto p = std::make_shared<Plan>();
      p->encoded = kEmptyPlanText;
      return std::shared_ptr<const Plan>(std::move(p));
    }();
    return empty;
  }
  void purge_settled() {
    for (const auto& id : settled_)
      if (auto it = held_.find(id); it != held_.end() && it->second.rec.state != ReqState::Held) held_.erase(it);
    settled_.clear();
  }

  // The stored row of a plan (inserted if new).
  const PlanRow& plan_row(const std::shared_ptr<const Plan>& p) {
    std::string encoded;
    const std::string& text = p->encoded.empty() ? (encoded = encode_plan(*p)) : p->encoded;
    if (auto it = plan_ids_.find(text); it != plan_ids_.end()) {
      auto& row = plans_by_id_[it->second];
      if (!row.plan) row.plan = p;
      return row;
    }
    if (plan_ids_.size() >= 4096) {
      plan_ids_.clear();
      plans_by_id_.clear();
    }
    PlanRow row;
    row.plan = p;
    auto& q = st(kPlanId).reset().bind(text);
    if (q.step()) {
      row.id = q.i64(0);
      row.windows_field = ",\"windows\":" + q.text(1);
      q.finish();
    } else {
      q.finish();
      std::string windows = nlohmann::json(window_keys(*p)).dump();
      st(kAddPlan).reset().bind(text).bind(windows).exec();
      row.id = sqlite3_last_insert_rowid(db_);
      row.windows_field = ",\"windows\":" + windows;
    }
    plan_ids_[text] = row.id;
    return plans_by_id_[row.id] = std::move(row);
  }
  const PlanRow& plan_by_id(int64_t id) {
    auto it = plans_by_id_.find(id);
    if (it != plans_by_id_.end() && it->second.plan) return it->second;
    if (plan_ids_.size() >= 4096) {
      plan_ids_.clear();
      plans_by_id_.clear();
    }
    auto& q = st(kPlanById).reset().bind(id);
    if (!q.step()) throw InternalError("sqlite: missing plan " + std::to_string(id));
    std::string text = q.text(0);
    PlanRow row;
    row.id = id;
    row.windows_field = ",\"windows\":" + q.text(1);
    q.finish();
    auto plan = std::make_shared<Plan>(*decode_plan(text));
    plan->encoded = text;
    row.plan = std::move(plan);
    plan_ids_[text] = id;
    return plans_by_id_[id] = std::move(row);
  }

  // ---- group commit -------------------------------------------------------------------
  // Callers queue their operation; the first finds no leader and leads: it runs every queued
  // operation in one transaction, answers their callers (each is woken alone), and while more
  // have queued meanwhile runs those too (a few rounds at most, then hands over to the oldest
  // waiting caller), so the transaction after this one is ready when this one commits.
  struct Job {
    std::function<void(SqlTxn&)> fn;
    std::exception_ptr error;
    bool done = false;  // guarded by qm_
    bool lead = false;  // guarded by qm_: this caller leads next
    std::atomic<bool> ready{false};  // done or lead (a hint read without qm_)
    std::condition_variable cv;
  };

  template <class F>
  auto run(F&& f) -> decltype(f(std::declval<SqlTxn&>())) {
    using R = decltype(f(std::declval<SqlTxn&>()));
    std::optional<R> result;
    Job job;
    job.fn = [&](SqlTxn& t) { result.emplace(f(t)); };
    std::unique_lock lk(qm_);
    queue_.push_back(&job);
    if (leader_) {
      // Yield for a while before sleeping (like RocksDB's adaptive yield): a batch takes
      // 50-200 µs, and a caller that slept would be woken late and come back late.
      lk.unlock();
      auto until = std::chrono::steady_clock::now() + std::chrono::microseconds(kSpinMicros);
      while (!job.ready.load(std::memory_order_acquire) && std::chrono::steady_clock::now() < until)
        std::this_thread::yield();
      lk.lock();
      job.cv.wait(lk, [&] { return job.done || job.lead; });
      if (job.done) wake_next(&job);
    } else {
      leader_ = true;
      job.lead = true;
    }
    if (!job.done) lead(lk, job);
    lk.unlock();
    if (job.error) std::rethrow_exception(job.error);
    return std::move(*result);
  }

  // Answered callers are woken one after the other: the leader wakes the first and gets on
  // with the next batch, each woken caller wakes the next. Under qm_: a caller leaves only
  // after taking itself off the list (under qm_), so a job is never notified after it is gone.
  void wake_next(Job* self) {
    if (self) {
      auto it = std::find(to_wake_.begin(), to_wake_.end(), self);
      if (it != to_wake_.end()) to_wake_.erase(it);
    }
    if (to_wake_.empty()) return;
    Job* next = to_wake_.front();
    to_wake_.pop_front();
    next->cv.notify_one();
  }

  // Called with lk held and leader_ set; returns with lk held, `self` done.
  void lead(std::unique_lock<std::mutex>& lk, Job& self) {
    // The callers of the last batch are probably about to come back: wait a moment for them
    // (never when one thread works alone), so a batch carries every concurrent operation.
    // Yielding rather than sleeping: a woken leader would start late, and the callers need
    // the CPU to come back.
    if (queue_.size() < expected_) {
      auto until = std::chrono::steady_clock::now() + std::chrono::microseconds(kGatherMicros);
      while (queue_.size() < expected_ && std::chrono::steady_clock::now() < until) {
        lk.unlock();
        std::this_thread::yield();
        lk.lock();
      }
    }
    for (int round = 0; !queue_.empty(); ++round) {
      if (self.done && round >= kLeadRounds) {  // hand over to the oldest waiting caller
        Job* next = queue_.front();
        next->lead = true;
        next->ready.store(true, std::memory_order_release);
        next->cv.notify_one();
        return;
      }
      std::vector<Job*> batch(queue_.begin(), queue_.end());
      queue_.clear();
      lk.unlock();
      execute(batch);
      lk.lock();
      for (auto* j : batch) {
        j->done = true;
        j->ready.store(true, std::memory_order_release);
        if (j != &self) to_wake_.push_back(j);
      }
      wake_next(nullptr);
      expected_ = batch.size();
    }
    leader_ = false;
  }

  // Starts the batch's transaction and validates the cache. False (errors set) on failure.
  bool begin(const std::vector<Job*>& jobs) {
    try {
      finish_all();
      st(kBegin).reset().exec();
      auto& v = st(kDataVersion).reset();
      int64_t dv = v.step() ? v.i64(0) : -1;
      v.finish();
      if (dv != data_version_) {
        drop_shared_state();
        data_version_ = dv;
      }
      if (series_.size() > 100'000) series_.clear();
      if (held_.size() > 100'000) held_.clear();
      if (!head_valid_) {
        auto& s = st(kLastChain).reset();
        if (s.step()) {
          last_seq_ = s.i64(0);
          last_hash_ = s.hash_hex(1);
        } else {
          last_seq_ = 0;
          last_hash_.assign(64, '0');
        }
        s.finish();
        head_valid_ = true;
      }
      return true;
    } catch (...) {
      rollback();
      for (auto* j : jobs) j->error = std::current_exception();
      return false;
    }
  }

  void execute(const std::vector<Job*>& batch) {
    // All operations in one transaction. If one fails, the transaction is rolled back and run
    // again without it: the others are not affected (and only committed work is answered).
    std::vector<Job*> jobs = batch;
    while (!jobs.empty()) {
      if (!begin(jobs)) return;
      SqlTxn t(*this);
      size_t failed = jobs.size();
      for (size_t i = 0; i < jobs.size(); ++i) {
        try {
          jobs[i]->fn(t);
        } catch (...) {
          jobs[i]->error = std::current_exception();
          failed = i;
          break;
        }
      }
      if (failed < jobs.size()) {
        rollback();
        jobs.erase(jobs.begin() + static_cast<std::ptrdiff_t>(failed));
        continue;
      }
      finish_all();
      try {
        st(kCommit).reset().exec();
      } catch (...) {
        auto err = std::make_exception_ptr(StoreUnavailableError(std::string("sqlite: commit failed: ") + sqlite3_errmsg(db_)));
        rollback();
        for (auto* j : jobs) j->error = err;
      }
      purge_settled();
      return;
    }
  }

  void finish_all() {
    for (auto& stmt : stmts_) stmt->finish();
    for (auto& [n, stmt] : multi_add_)
      if (stmt) stmt->finish();
  }

  void rollback() {
    finish_all();
    if (!sqlite3_get_autocommit(db_)) sqlite3_exec(db_, "ROLLBACK", nullptr, nullptr, nullptr);
    drop_all_state();
  }

  // Adds to n counters at once (one statement instead of n), by n.
  Stmt& multi_add(size_t n) {
    auto& slot = multi_add_[n];
    if (!slot) {
      std::string sql =
          "INSERT INTO counters(sid, start, end_ms, spent_cost, spent_tokens, spent_requests, held_cost, held_tokens,"
          " held_requests, granted_cost, granted_tokens, granted_requests) VALUES ";
      for (size_t k = 0; k < n; ++k) sql += k ? ",(?,?,?,?,?,?,?,?,?,?,?,?)" : "(?,?,?,?,?,?,?,?,?,?,?,?)";
      sql += " ON CONFLICT(sid, start) DO UPDATE SET spent_cost=spent_cost+excluded.spent_cost,"
             " spent_tokens=spent_tokens+excluded.spent_tokens, spent_requests=spent_requests+excluded.spent_requests,"
             " held_cost=held_cost+excluded.held_cost, held_tokens=held_tokens+excluded.held_tokens,"
             " held_requests=held_requests+excluded.held_requests, granted_cost=granted_cost+excluded.granted_cost,"
             " granted_tokens=granted_tokens+excluded.granted_tokens,"
             " granted_requests=granted_requests+excluded.granted_requests";
      slot = std::make_unique<Stmt>(db_, sql.c_str());
    }
    return *slot;
  }
  std::unordered_map<size_t, std::unique_ptr<Stmt>> multi_add_;

  std::string path_;
  sqlite3* db_ = nullptr;
  std::vector<std::unique_ptr<Stmt>> stmts_;
  std::mutex qm_;
  std::deque<Job*> queue_;
  std::deque<Job*> to_wake_;  // answered callers not woken yet
  bool leader_ = false;
  size_t expected_ = 1;  // operations in the last batch

  // Cache (leader only).
  int64_t data_version_ = -1;
  bool limits_valid_ = false, head_valid_ = false;
  uint64_t limits_version_ = 0;
  int64_t last_seq_ = 0;
  std::string last_hash_;
  std::unordered_map<std::string, Series> series_;        // by series key
  struct Held {
    RequestRecord rec;
    bool in_holds = true;  // where its row is: `holds`, or `requests` once settled
  };
  std::unordered_map<std::string, Held> held_;            // live holds, by request id
  std::vector<std::string> settled_;                      // to drop from held_ after the transaction
  std::unordered_map<std::string, int64_t> plan_ids_;     // plan text -> id
  std::unordered_map<int64_t, PlanRow> plans_by_id_;
  std::string scratch_key_;
};

uint64_t SqlTxn::limits_version() {
  if (!s_.limits_valid_) {
    auto& s = s_.st(SqliteStore::kLimitsVersion).reset();
    s_.limits_version_ = s.step() ? static_cast<uint64_t>(s.i64(0)) : 0;
    s.finish();
    s_.limits_valid_ = true;
  }
  return s_.limits_version_;
}

std::vector<Counters> SqlTxn::sum_all(const Plan& p) {
  std::vector<Counters> out(p.windows.size());
  for (size_t i = 0; i < p.windows.size(); ++i) {
    const auto& w = p.windows[i];
    auto& s = s_.series_of(w);
    if (!s.loaded || w.read_from < s.lo) s_.load(s, w.read_from);
    auto from = s.buckets.lower_bound(w.read_from);
    if (s.buckets.size() > 64 && w.read_from > s.lo) {  // buckets no current plan reads
      from = s.buckets.erase(s.buckets.begin(), from);
      s.lo = w.read_from;
    }
    for (auto it = from; it != s.buckets.end(); ++it) add_to(out[i], it->second);
  }
  return out;
}

void SqlTxn::add_all(const Plan& p, const Counters& d) {
  if (p.windows.empty()) return;
  const size_t n = p.windows.size();
  SqliteStore::Series* small[16];
  std::vector<SqliteStore::Series*> large;
  SqliteStore::Series** series = small;
  if (n > 16) {
    large.resize(n);
    series = large.data();
  }
  // Every bucket known to exist (the usual case): one UPDATE by key each; else one upsert.
  bool all_known = true;
  for (size_t i = 0; i < n; ++i) {
    const auto& w = p.windows[i];
    series[i] = &s_.series_of(w);
    const auto& ser = *series[i];
    all_known = all_known && ser.sid != 0 && ser.loaded && w.start >= ser.lo && ser.buckets.count(w.start) > 0;
  }
  if (all_known) {
    auto& s = s_.st(SqliteStore::kAddCounter);
    for (size_t i = 0; i < n; ++i) {
      s.reset().bind(d.spent.cost).bind(d.spent.tokens).bind(d.spent.requests)
          .bind(d.held.cost).bind(d.held.tokens).bind(d.held.requests)
          .bind(d.granted.cost).bind(d.granted.tokens).bind(d.granted.requests)
          .bind(series[i]->sid).bind(p.windows[i].start).exec();
    }
  } else {
    auto& s = s_.multi_add(n).reset();
    for (size_t i = 0; i < n; ++i) {
      const auto& w = p.windows[i];
      s.bind(s_.ensure_sid(*series[i], w)).bind(w.start).bind(w.end)
          .bind(d.spent.cost).bind(d.spent.tokens).bind(d.spent.requests)
          .bind(d.held.cost).bind(d.held.tokens).bind(d.held.requests)
          .bind(d.granted.cost).bind(d.granted.tokens).bind(d.granted.requests);
    }
    s.exec();
  }
  for (size_t i = 0; i < n; ++i) {
    auto& ser = *series[i];
    if (ser.loaded && p.windows[i].start >= ser.lo) add_to(ser.buckets[p.windows[i].start], d);
  }
}

// The record of `id`: a live hold from the cache (loaded into it on a miss), another record in
// `other_`, or null.
RequestRecord* SqlTxn::lookup(const std::string& id) {
  if (auto it = s_.held_.find(id); it != s_.held_.end()) return &it->second.rec;
  auto& s = s_.st(SqliteStore::kGetReq).reset().bind(id);
  if (!s.step()) {
    s.finish();
    return nullptr;
  }
  RequestRecord r;
  r.request_id = s.text(0);
  r.state = static_cast<ReqState>(s.i64(1));
  r.subject = nlohmann::json::parse(s.text(2)).get<std::vector<std::string>>();
  int64_t plan_id = s.null(3) ? 0 : s.i64(3);
  r.held = {s.i64(4), s.i64(5), s.i64(6)};
  r.consumed = {s.i64(7), s.i64(8), s.i64(9)};
  r.charged = {s.i64(10), s.i64(11), s.i64(12)};
  r.created_at = s.i64(13);
  r.expires_at = s.i64(14);
  int64_t flags = s.i64(15);
  r.over_hold = flags & 1;
  r.over_limit = flags & 2;
  r.after_expiry = flags & 4;
  r.model = s.text(16);
  r.provider = s.text(17);
  r.price_version = s.text(18);
  r.fingerprint = s.text(19);
  r.failing_check = static_cast<int>(s.i64(20));
  r.failing_state = {s.i64(21), s.i64(22), s.i64(23)};
  s.finish();
  r.plan = plan_id ? s_.plan_by_id(plan_id).plan : SqliteStore::empty_plan();
  if (r.state == ReqState::Held) {
    auto& slot = s_.held_[id];
    slot.rec = std::move(r);
    slot.in_holds = true;
    return &slot.rec;
  }
  other_ = std::move(r);
  return &*other_;
}

std::optional<RequestRecord> SqlTxn::get_request(const std::string& id) {
  if (auto* r = lookup(id)) return *r;
  return std::nullopt;
}
const RequestRecord* SqlTxn::find_request(const std::string& id) { return lookup(id); }
RequestRecord* SqlTxn::edit_request(const std::string& id) { return lookup(id); }

// JSON array of strings, as nlohmann::json(v).dump() writes it.
std::string json_strings(const std::vector<std::string>& v) {
  std::string out = "[";
  for (const auto& x : v) {
    for (unsigned char c : x)
      if (c == '"' || c == '\\' || c < 0x20 || c >= 0x7f) return nlohmann::json(v).dump();
    if (out.size() > 1) out += ',';
    out += '"';
    out += x;
    out += '"';
  }
  return out + "]";
}

// Writes the record where its state belongs: a live hold in `holds`, any other in `requests`
// (and out of `holds`). `where` is where its row is now.
void SqlTxn::write_request(const RequestRecord& r, Where where) {
  int64_t plan_id = s_.plan_row(r.plan ? r.plan : SqliteStore::empty_plan()).id;
  const bool held = r.state == ReqState::Held;
  auto id = held ? SqliteStore::kPutHold : where == kInRequests ? SqliteStore::kUpdReq : SqliteStore::kPutReq;
  auto& s = s_.st(id).reset();
  s.bind(r.request_id).bind(static_cast<int64_t>(r.state)).bind(json_strings(r.subject)).bind(plan_id);
  s.bind(r.held.cost).bind(r.held.tokens).bind(r.held.requests)
      .bind(r.consumed.cost).bind(r.consumed.tokens).bind(r.consumed.requests)
      .bind(r.charged.cost).bind(r.charged.tokens).bind(r.charged.requests)
      .bind(r.created_at).bind(r.expires_at)
      .bind(int64_t{(r.over_hold ? 1 : 0) | (r.over_limit ? 2 : 0) | (r.after_expiry ? 4 : 0)})
      .bind(r.model).bind(r.provider).bind(r.price_version).bind(r.fingerprint)
      .bind(int64_t{r.failing_check}).bind(r.failing_state.spent).bind(r.failing_state.held).bind(r.failing_state.granted)
      .exec();
  if (!held && (where == kInHolds || where == kUnknown)) s_.st(SqliteStore::kDelHold).reset().bind(r.request_id).exec();
}

void SqlTxn::save_request(const RequestRecord& r) {
  auto it = s_.held_.find(r.request_id);
  if (it == s_.held_.end()) {
    // Not a cached hold: other_ was read from `requests` in this transaction.
    write_request(r, other_ && &*other_ == &r ? kInRequests : kUnknown);
    if (r.state == ReqState::Held) s_.held_.emplace(r.request_id, SqliteStore::Held{r, true});
    return;
  }
  auto& entry = it->second;
  write_request(r, entry.in_holds ? kInHolds : kInRequests);
  if (&entry.rec != &r) entry.rec = r;
  entry.in_holds = r.state == ReqState::Held;
  // A record that is no longer held leaves the cache after the transaction (`r` may be it).
  if (!entry.in_holds) s_.settled_.push_back(r.request_id);
}

void SqlTxn::put_request(const RequestRecord& r) { save_request(r); }

const RequestRecord& SqlTxn::adopt_request(RequestRecord&& r) {
  write_request(r, kNew);  // a new request id (find_request found none)
  if (r.state == ReqState::Held) {
    auto& slot = s_.held_[r.request_id];
    slot.rec = std::move(r);
    slot.in_holds = true;
    return slot.rec;
  }
  s_.held_.erase(r.request_id);
  other_ = std::move(r);
  return *other_;
}

void SqlTxn::append(LedgerEvent&& e, const std::shared_ptr<const Plan>& plan) {
  e.seq = s_.last_seq_ + 1;
  e.prev_hash = s_.last_hash_;
  // The body is stored without its windows array (the plan's window keys, kept once in
  // `plans`); scan_events puts the same bytes back at the same place. It is serialised with
  // an empty array and the plan's stored array is spliced in for the hash: the same bytes as
  // event_body() with the keys, without building them for every event.
  std::string body, stored;
  int64_t plan_id = 0, wpos = 0;
  if (plan && !plan->windows.empty()) {
    static constexpr std::string_view kNoWindows = ",\"windows\":[]";
    const auto& row = s_.plan_row(plan);
    e.windows.clear();
    stored = event_body(e);
    // The first match is the field: a '"' after a ',' cannot be inside a JSON string, and the
    // fields before `windows` hold no objects that could have such a key.
    auto pos = stored.find(kNoWindows);
    if (pos != std::string::npos) {
      stored.erase(pos, kNoWindows.size());
      body.reserve(stored.size() + row.windows_field.size());
      body.append(stored, 0, pos).append(row.windows_field).append(stored, pos, std::string::npos);
      plan_id = row.id;
      wpos = static_cast<int64_t>(pos);
    } else {  // not expected; store the whole body
      e.windows = window_keys(*plan);
      body = stored = event_body(e);
    }
  } else {
    if (plan) e.windows = window_keys(*plan);
    body = stored = event_body(e);
  }
  e.hash = chain_hash(e.prev_hash, e.seq, body);
  auto& s = s_.st(SqliteStore::kAppend).reset();
  s.bind(e.seq).bind(stored);
  unsigned char raw[32];
  if (unhex(e.hash, raw)) s.bind_blob(raw, sizeof raw);
  else s.bind(e.hash);
  if (plan_id) s.bind(plan_id).bind(wpos);
  else s.bind_null().bind_null();
  s.exec();
  s_.last_seq_ = e.seq;
  s_.last_hash_ = e.hash;
}

}  // namespace

std::unique_ptr<Store> make_sqlite_store(const std::string& path, const StoreOptions& options) {
  return std::make_unique<SqliteStore>(path, options);
}

}  // namespace budget::detail
