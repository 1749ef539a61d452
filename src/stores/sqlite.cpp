// The SQLite store: the embedded durable default.
//
// - WAL journal, synchronous=NORMAL by default (an acknowledged operation survives a crash of
//   the application; `?synchronous=full` also survives power loss), busy timeout, schema
//   version with migrations.
// - Every operation runs inside a transaction (BEGIN IMMEDIATE), so a crash never leaves a
//   half-applied hold, and several processes can share one file.
// - Group commit: concurrent operations of one process are batched into one transaction by
//   whichever caller gets there first (leader/follower, no extra thread); each operation runs
//   in its own SAVEPOINT, so one failing operation does not affect the others. Callers are
//   acknowledged only after COMMIT returned, so only durable work is acknowledged.
#include <budget/error.hpp>

#include <sqlite3.h>

#include <nlohmann/json.hpp>

#include <condition_variable>
#include <deque>
#include <functional>
#include <mutex>
#include <unordered_map>

#include "ledger_codec.hpp"
#include "stores/txn.hpp"

namespace budget::detail {
namespace {

constexpr int kSchemaVersion = 1;

const char* kSchemaV1 = R"SQL(
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

[[noreturn]] void fail(sqlite3* db, int rc, const char* what) {
  std::string msg = std::string("sqlite: ") + what + ": " + (db ? sqlite3_errmsg(db) : sqlite3_errstr(rc));
  int prim = rc & 0xFF;
  if (prim == SQLITE_BUSY || prim == SQLITE_LOCKED || prim == SQLITE_IOERR || prim == SQLITE_FULL ||
      prim == SQLITE_CANTOPEN || prim == SQLITE_READONLY || prim == SQLITE_PROTOCOL || prim == SQLITE_NOMEM)
    throw StoreUnavailableError(msg);
  if (prim == SQLITE_CORRUPT || prim == SQLITE_NOTADB) throw InternalError(msg);
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
    sqlite3_clear_bindings(s_);
    idx_ = 0;
    return *this;
  }
  Stmt& bind(int64_t v) { check(sqlite3_bind_int64(s_, ++idx_, v)); return *this; }
  Stmt& bind(std::string_view v) {
    check(sqlite3_bind_text(s_, ++idx_, v.data(), static_cast<int>(v.size()), SQLITE_TRANSIENT));
    return *this;
  }
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

 private:
  SqliteStore& s_;
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
    sqlite3_busy_timeout(db_, static_cast<int>(opts.timeout.count()));
    exec("PRAGMA journal_mode=WAL");
    exec(("PRAGMA synchronous=" + sync).c_str());
    exec("PRAGMA foreign_keys=OFF");
    migrate();
    prepare();
  }
  ~SqliteStore() override {
    multi_sum_.clear();
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
      for (const auto& id : due)
        if (auto rec = t.get_request(id)) txn_expire(t, *rec, now);
      return due.size();
    });
  }
  int64_t next_deadline() override {
    return run([&](SqlTxn&) {
      auto& s = st(kNextDeadline).reset();
      return s.step() && !s.null(0) ? s.i64(0) : kForever;
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
    size_t n = 0;
    bool more = true;
    while (more && n < q.limit) {
      std::vector<LedgerEvent> page = run([&](SqlTxn&) {
        std::vector<LedgerEvent> out;
        auto& s = st(kScan).reset().bind(after).bind(int64_t{2000});
        while (s.step()) {
          auto e = event_from_body(s.text(1));
          e.seq = s.i64(0);
          e.prev_hash = s.text(2);
          e.hash = s.text(3);
          out.push_back(std::move(e));
        }
        return out;
      });
      more = page.size() == 2000;
      for (auto& e : page) {
        after = e.seq;
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
    kLimitsVersion, kSetMeta, kLoadLimits, kPutLimit, kDelLimit, kGetReq, kPutReq, kAppend,
    kDue, kNextDeadline, kScan, kAllCounters, kLastChain, kBegin, kCommit, kSavepoint, kRelease, kCount
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
      if (version < 1) exec(kSchemaV1);
      // Future migrations: if (version < 2) exec(kMigrateV2); ...
      exec(("PRAGMA user_version=" + std::to_string(kSchemaVersion)).c_str());
      exec("COMMIT");
    } catch (...) {
      sqlite3_exec(db_, "ROLLBACK", nullptr, nullptr, nullptr);
      throw;
    }
  }

  void prepare() {
    const char* sql[kCount] = {
        "SELECT value FROM meta WHERE key='limits_version'",
        "UPDATE meta SET value=?2 WHERE key=?1",
        "SELECT key, scope, win, metric, amount, alerts FROM limits ORDER BY key",
        "INSERT OR REPLACE INTO limits(key, scope, win, metric, amount, alerts) VALUES (?,?,?,?,?,?)",
        "DELETE FROM limits WHERE key=?",
        "SELECT id, state, subject, plan, held_cost, held_tokens, held_requests, consumed_cost, consumed_tokens,"
        " consumed_requests, charged_cost, charged_tokens, charged_requests, created_at, expires_at, flags, model,"
        " provider, price_version, fingerprint, failing_check, fail_spent, fail_held, fail_granted FROM requests WHERE id=?",
        "INSERT INTO requests(id, state, subject, plan, held_cost, held_tokens, held_requests, consumed_cost,"
        " consumed_tokens, consumed_requests, charged_cost, charged_tokens, charged_requests, created_at, expires_at,"
        " flags, model, provider, price_version, fingerprint, failing_check, fail_spent, fail_held, fail_granted)"
        " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?) ON CONFLICT(id) DO UPDATE SET state=excluded.state,"
        " held_cost=excluded.held_cost, held_tokens=excluded.held_tokens, held_requests=excluded.held_requests,"
        " consumed_cost=excluded.consumed_cost, consumed_tokens=excluded.consumed_tokens,"
        " consumed_requests=excluded.consumed_requests, charged_cost=excluded.charged_cost,"
        " charged_tokens=excluded.charged_tokens, charged_requests=excluded.charged_requests,"
        " expires_at=excluded.expires_at, flags=excluded.flags, model=excluded.model, provider=excluded.provider,"
        " price_version=excluded.price_version, fingerprint=excluded.fingerprint,"
        " failing_check=excluded.failing_check, fail_spent=excluded.fail_spent, fail_held=excluded.fail_held,"
        " fail_granted=excluded.fail_granted",
        "INSERT INTO ledger(seq, time, type, request_id, body, prev_hash, hash) VALUES (?,?,?,?,?,?,?)",
        "SELECT id FROM requests WHERE state=0 AND expires_at<=? ORDER BY expires_at LIMIT ?",
        "SELECT min(expires_at) FROM requests WHERE state=0",
        "SELECT seq, body, prev_hash, hash FROM ledger WHERE seq>? ORDER BY seq LIMIT ?",
        "SELECT series, start, end_ms, spent_cost, spent_tokens, spent_requests, held_cost, held_tokens, held_requests,"
        " granted_cost, granted_tokens, granted_requests FROM counters",
        "SELECT seq, hash FROM ledger ORDER BY seq DESC LIMIT 1",
        "BEGIN IMMEDIATE",
        "COMMIT",
        "SAVEPOINT op",
        "RELEASE op",
    };
    for (int i = 0; i < kCount; ++i) stmts_.push_back(std::make_unique<Stmt>(db_, sql[i]));
  }
  Stmt& st(StmtId id) { return *stmts_[id]; }

  uint64_t bump_limits_version(SqlTxn& t) {
    uint64_t v = t.limits_version() + 1;
    st(kSetMeta).reset().bind("limits_version").bind(static_cast<int64_t>(v)).exec();
    return v;
  }

  // ---- group commit -------------------------------------------------------------------
  struct Job {
    std::function<void(SqlTxn&)> fn;
    std::exception_ptr error;
    bool done = false;
  };

  template <class F>
  auto run(F&& f) -> decltype(f(std::declval<SqlTxn&>())) {
    using R = decltype(f(std::declval<SqlTxn&>()));
    std::optional<R> result;
    Job job;
    job.fn = [&](SqlTxn& t) { result.emplace(f(t)); };
    std::unique_lock lk(qm_);
    queue_.push_back(&job);
    while (!job.done) {
      if (leader_) {
        qcv_.wait(lk);
        continue;
      }
      leader_ = true;
      std::vector<Job*> batch(queue_.begin(), queue_.end());
      queue_.clear();
      lk.unlock();
      execute(batch);
      lk.lock();
      for (auto* j : batch) j->done = true;
      leader_ = false;
      qcv_.notify_all();
    }
    lk.unlock();
    if (job.error) std::rethrow_exception(job.error);
    return std::move(*result);
  }

  void execute(const std::vector<Job*>& batch) {
    finish_all();
    try {
      st(kBegin).reset().exec();
    } catch (...) {
      for (auto* j : batch) j->error = std::current_exception();
      return;
    }
    try {
      auto& s = st(kLastChain).reset();
      if (s.step()) {
        last_seq_ = s.i64(0);
        last_hash_ = s.text(1);
      } else {
        last_seq_ = 0;
        last_hash_.assign(64, '0');
      }
    } catch (...) {
      rollback();
      for (auto* j : batch) j->error = std::current_exception();
      return;
    }
    SqlTxn t(*this);
    if (batch.size() == 1) {
      // One operation: the transaction itself is its all-or-nothing unit.
      try {
        batch[0]->fn(t);
      } catch (...) {
        batch[0]->error = std::current_exception();
        rollback();
        return;
      }
    } else {
      // Several: each in a savepoint, so one failing operation leaves the others intact.
      for (auto* j : batch) {
        int64_t seq_before = last_seq_;
        std::string hash_before = last_hash_;
        try {
          st(kSavepoint).reset().exec();
          j->fn(t);
          st(kRelease).reset().exec();
        } catch (...) {
          j->error = std::current_exception();
          finish_all();
          sqlite3_exec(db_, "ROLLBACK TO op; RELEASE op", nullptr, nullptr, nullptr);
          last_seq_ = seq_before;
          last_hash_ = hash_before;
        }
      }
    }
    finish_all();
    try {
      st(kCommit).reset().exec();
    } catch (...) {
      auto err = std::make_exception_ptr(StoreUnavailableError(std::string("sqlite: commit failed: ") + sqlite3_errmsg(db_)));
      rollback();
      for (auto* j : batch) j->error = err;
    }
    finish_all();
  }

  void finish_all() {
    for (auto& stmt : stmts_) stmt->finish();
    for (auto& [n, stmt] : multi_sum_)
      if (stmt) stmt->finish();
    for (auto& [n, stmt] : multi_add_)
      if (stmt) stmt->finish();
  }

  void rollback() {
    finish_all();
    if (!sqlite3_get_autocommit(db_)) sqlite3_exec(db_, "ROLLBACK", nullptr, nullptr, nullptr);
  }

  // Statements over n windows at once (one round through SQLite instead of n), by n.
  Stmt& multi_sum(size_t n) {
    auto& slot = multi_sum_[n];
    if (!slot) {
      std::string sql;
      for (size_t k = 0; k < n; ++k)
        sql += (k ? " UNION ALL " : "") + std::string("SELECT ") + std::to_string(k) +
               ", sum(spent_cost), sum(spent_tokens), sum(spent_requests), sum(held_cost), sum(held_tokens),"
               " sum(held_requests), sum(granted_cost), sum(granted_tokens), sum(granted_requests)"
               " FROM counters WHERE series=? AND start>=?";
      slot = std::make_unique<Stmt>(db_, sql.c_str());
    }
    return *slot;
  }
  Stmt& multi_add(size_t n) {
    auto& slot = multi_add_[n];
    if (!slot) {
      std::string sql =
          "INSERT INTO counters(series, start, end_ms, spent_cost, spent_tokens, spent_requests, held_cost, held_tokens,"
          " held_requests, granted_cost, granted_tokens, granted_requests) VALUES ";
      for (size_t k = 0; k < n; ++k) sql += k ? ",(?,?,?,?,?,?,?,?,?,?,?,?)" : "(?,?,?,?,?,?,?,?,?,?,?,?)";
      sql += " ON CONFLICT(series, start) DO UPDATE SET spent_cost=spent_cost+excluded.spent_cost,"
             " spent_tokens=spent_tokens+excluded.spent_tokens, spent_requests=spent_requests+excluded.spent_requests,"
             " held_cost=held_cost+excluded.held_cost, held_tokens=held_tokens+excluded.held_tokens,"
             " held_requests=held_requests+excluded.held_requests, granted_cost=granted_cost+excluded.granted_cost,"
             " granted_tokens=granted_tokens+excluded.granted_tokens,"
             " granted_requests=granted_requests+excluded.granted_requests";
      slot = std::make_unique<Stmt>(db_, sql.c_str());
    }
    return *slot;
  }
  std::unordered_map<size_t, std::unique_ptr<Stmt>> multi_sum_, multi_add_;

  // Decoded plans by their text: many requests share a plan, so settle/grow rarely decode.
  std::shared_ptr<const Plan> plan_of(const std::string& text) {
    auto it = plans_.find(text);
    if (it != plans_.end()) return it->second;
    if (plans_.size() >= 1024) plans_.clear();
    auto p = decode_plan(text);
    plans_.emplace(text, p);
    return p;
  }

  std::string path_;
  std::unordered_map<std::string, std::shared_ptr<const Plan>> plans_;  // used by the leader only
  sqlite3* db_ = nullptr;
  std::vector<std::unique_ptr<Stmt>> stmts_;
  std::mutex qm_;
  std::condition_variable qcv_;
  std::deque<Job*> queue_;
  bool leader_ = false;
  int64_t last_seq_ = 0;
  std::string last_hash_;
};

uint64_t SqlTxn::limits_version() {
  auto& s = s_.st(SqliteStore::kLimitsVersion).reset();
  return s.step() ? static_cast<uint64_t>(s.i64(0)) : 0;
}

std::vector<Counters> SqlTxn::sum_all(const Plan& p) {
  std::vector<Counters> out(p.windows.size());
  if (p.windows.empty()) return out;
  auto& s = s_.multi_sum(p.windows.size()).reset();
  for (const auto& w : p.windows) {
    if (w.series_key.empty()) s.bind(w.series());
    else s.bind(w.series_key);
    s.bind(w.read_from);
  }
  while (s.step()) {
    auto& c = out.at(static_cast<size_t>(s.i64(0)));
    c.spent = {s.i64(1), s.i64(2), s.i64(3)};
    c.held = {s.i64(4), s.i64(5), s.i64(6)};
    c.granted = {s.i64(7), s.i64(8), s.i64(9)};
  }
  return out;
}

void SqlTxn::add_all(const Plan& p, const Counters& d) {
  if (p.windows.empty()) return;
  auto& s = s_.multi_add(p.windows.size()).reset();
  for (const auto& w : p.windows) {
    if (w.series_key.empty()) s.bind(w.series());
    else s.bind(w.series_key);
    s.bind(w.start).bind(w.end)
        .bind(d.spent.cost).bind(d.spent.tokens).bind(d.spent.requests)
        .bind(d.held.cost).bind(d.held.tokens).bind(d.held.requests)
        .bind(d.granted.cost).bind(d.granted.tokens).bind(d.granted.requests);
  }
  s.exec();
}

std::optional<RequestRecord> SqlTxn::get_request(const std::string& id) {
  auto& s = s_.st(SqliteStore::kGetReq).reset().bind(id);
  if (!s.step()) return std::nullopt;
  RequestRecord r;
  r.request_id = s.text(0);
  r.state = static_cast<ReqState>(s.i64(1));
  r.subject = nlohmann::json::parse(s.text(2)).get<std::vector<std::string>>();
  if (!s.null(3)) r.plan = s_.plan_of(s.text(3));
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
  return r;
}

void SqlTxn::put_request(const RequestRecord& r) {
  auto& s = s_.st(SqliteStore::kPutReq).reset();
  s.bind(r.request_id).bind(static_cast<int64_t>(r.state)).bind(nlohmann::json(r.subject).dump());
  if (!r.plan) s.bind(std::string_view("{\"v\":0,\"w\":[],\"c\":[]}"));
  else if (!r.plan->encoded.empty()) s.bind(r.plan->encoded);
  else s.bind(encode_plan(*r.plan));
  s.bind(r.held.cost).bind(r.held.tokens).bind(r.held.requests)
      .bind(r.consumed.cost).bind(r.consumed.tokens).bind(r.consumed.requests)
      .bind(r.charged.cost).bind(r.charged.tokens).bind(r.charged.requests)
      .bind(r.created_at).bind(r.expires_at)
      .bind(int64_t{(r.over_hold ? 1 : 0) | (r.over_limit ? 2 : 0) | (r.after_expiry ? 4 : 0)})
      .bind(r.model).bind(r.provider).bind(r.price_version).bind(r.fingerprint)
      .bind(int64_t{r.failing_check}).bind(r.failing_state.spent).bind(r.failing_state.held).bind(r.failing_state.granted)
      .exec();
}

void SqlTxn::append(LedgerEvent&& e, const std::shared_ptr<const Plan>& plan) {
  if (plan) e.windows = window_keys(*plan);
  e.seq = s_.last_seq_ + 1;
  e.prev_hash = s_.last_hash_;
  std::string body = event_body(e);
  e.hash = chain_hash(e.prev_hash, e.seq, body);
  s_.st(SqliteStore::kAppend).reset().bind(e.seq).bind(to_millis(e.time)).bind(to_string(e.type))
      .bind(e.request_id).bind(body).bind(e.prev_hash).bind(e.hash).exec();
  s_.last_seq_ = e.seq;
  s_.last_hash_ = e.hash;
}

}  // namespace

std::unique_ptr<Store> make_sqlite_store(const std::string& path, const StoreOptions& options) {
  return std::make_unique<SqliteStore>(path, options);
}

}  // namespace budget::detail
