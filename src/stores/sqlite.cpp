// The SQLite store: the embedded durable default.
//
// - WAL journal, synchronous=NORMAL by default (an acknowledged operation survives a crash of
//   the application; `?synchronous=full` also survives power loss), busy timeout, schema
//   version with migrations, 1 KiB pages for new files (an operation appends one small
//   ledger row; each page it dirties is one WAL frame written at commit).
// - Every operation runs inside a transaction (BEGIN IMMEDIATE), so a crash never leaves a
//   half-applied hold, and several processes can share one file.
// - Compact rows: a plan is stored once (table `plans`) and referenced by id from requests and
//   ledger events; a ledger event's `windows` array (the plan's window keys) is cut out of the
//   stored body and restored from the plan on read, byte for byte; counters are keyed by an
//   integer series id (table `series`), so a subject's windows sit together; a settled request
//   record is one encoded blob (schema version 5), as in the after-images below.
// - WAL frames are written through a VFS shim (sqlite_vfs.hpp) that gathers a transaction's
//   frames into one pwrite().
// - The ledger is the redo log, the state tables are its checkpoint (schema version 4). An
//   ordinary transaction writes ONE kind of row: its ledger event(s). The last event row of an
//   operation carries, in column `redo`, a compact binary after-image of every state entry the
//   operation changed (counter buckets as absolute values, request records as stored, which
//   also says whether a request is a live hold). The counters / requests / holds tables are
//   brought up to date only every kCheckpointEvery events (meta `checkpoint` = the seq they
//   reflect), on close, and before anything reads them with SQL (verify's scan_counters).
//   Between checkpoints the state is: tables + after-images of the ledger rows after the
//   checkpoint. Each process keeps that tail applied in memory (the "dirty overlay": counter
//   buckets and request records changed since the checkpoint), reads a table only for what the
//   overlay does not hold, and catches up when PRAGMA data_version says another connection
//   committed: it reads the ledger rows after the last seq it applied and applies their
//   after-images (no cache drop). The after-image is not part of the hashed event body and is
//   never shown by ledger reads.
// - In-process cache: counters (per series, every bucket from a known start on), live holds,
//   the limits version and the ledger head. A failed operation's changes to the cache are
//   undone from a per-operation undo log; a failed COMMIT drops everything and rebuilds it
//   from the tables and the ledger tail.
// - Group commit: concurrent operations of one process are batched into one transaction by
//   whichever caller gets there first (leader/follower, no extra thread). If an operation
//   fails, its cache changes are undone and it wrote no row (its rows are written when it
//   ends); if it had written other rows (limits, a checkpoint), the transaction is rolled back
//   and re-run without it. Either way one failing operation does not affect the others.
//   Callers are acknowledged only after COMMIT returned, so only durable work is acknowledged.
#include <budget/error.hpp>

#include <sqlite3.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <array>
#include <charconv>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <map>
#include <mutex>
#include <thread>
#include <unordered_map>
#include <unordered_set>

#include "json_text.hpp"
#include "fork.hpp"
#include "ledger_codec.hpp"
#include "stores/txn.hpp"
#include "stores/sqlite_vfs.hpp"

namespace budget::detail {
namespace {

constexpr int kSchemaVersion = 5;
// Events between checkpoints of the state tables (see the header comment). Bounds the tail a
// process replays at open and the memory of the dirty overlay.
constexpr int64_t kCheckpointEvery = 512;
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

// A record's columns in `holds` (and in `requests` before version 5), as record_from_columns()
// reads them.
#define BUDGET_RECORD_COLUMNS                                                                           \
  "id, state, subject, plan, held_cost, held_tokens, held_requests, consumed_cost, consumed_tokens,"   \
  " consumed_requests, charged_cost, charged_tokens, charged_requests, created_at, expires_at, flags," \
  " model, provider, price_version, fingerprint, failing_check, fail_spent, fail_held, fail_granted"
// `requests` since version 5: a settled record encoded as by encode_record().
#define BUDGET_SETTLED_COLUMNS "id TEXT PRIMARY KEY, state INTEGER NOT NULL, rec BLOB NOT NULL"

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
    // A settled record is written once and read only for a replay: its encoded form (as in a
    // ledger row's after-image) is one short row, cheap to write. Its state stays a column for
    // people looking at the file.
    "CREATE TABLE IF NOT EXISTS requests (" BUDGET_SETTLED_COLUMNS ") WITHOUT ROWID;"
    "CREATE TABLE IF NOT EXISTS holds (" BUDGET_REQUEST_COLUMNS ") WITHOUT ROWID;"
    "CREATE TABLE IF NOT EXISTS ledger (seq INTEGER PRIMARY KEY, body TEXT NOT NULL, hash NOT NULL, plan INTEGER, wpos INTEGER,"
    "  redo BLOB);"
    "INSERT OR IGNORE INTO meta(key, value) VALUES ('limits_version', 1);"
    // The state tables reflect every event up to this seq; later events' after-images are the rest.
    "INSERT OR IGNORE INTO meta(key, value) VALUES ('checkpoint', (SELECT coalesce(max(seq), 0) FROM ledger));"
    "INSERT OR IGNORE INTO meta(key, value) VALUES ('epoch', 0);";

// Version 3 -> 4: ledger rows carry the after-images of the state they changed. Rows written
// before have none: the tables are current up to the head (the checkpoint is set by kSchema).
const char* kMigrateV3 = "ALTER TABLE ledger ADD COLUMN redo BLOB;";

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
  // Without a copy: `v` must stay valid until the statement has been stepped.
  Stmt& bind_static(std::string_view v) {
    check(sqlite3_bind_text(s_, ++idx_, v.data(), static_cast<int>(v.size()), SQLITE_STATIC));
    return *this;
  }
  Stmt& bind_blob(const void* p, size_t n, sqlite3_destructor_type keep = SQLITE_TRANSIENT) {
    check(sqlite3_bind_blob(s_, ++idx_, p, static_cast<int>(n), keep));
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
  sqlite3_stmt* raw() const { return s_; }

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
  static const auto table = [] {
    std::array<int8_t, 256> t{};
    t.fill(-1);
    for (int c = '0'; c <= '9'; ++c) t[static_cast<size_t>(c)] = static_cast<int8_t>(c - '0');
    for (int c = 'a'; c <= 'f'; ++c) t[static_cast<size_t>(c)] = static_cast<int8_t>(c - 'a' + 10);
    return t;
  }();
  int bad = 0;
  for (size_t i = 0; i < 32; ++i) {
    int hi = table[static_cast<unsigned char>(hex[2 * i])], lo = table[static_cast<unsigned char>(hex[2 * i + 1])];
    bad |= hi | lo;  // negative if either is not a digit
    out[i] = static_cast<unsigned char>(((static_cast<unsigned>(hi) & 15u) << 4) | (static_cast<unsigned>(lo) & 15u));
  }
  return bad >= 0;
}

void add_to(Counters& a, const Counters& d) {
  a.spent += d.spent;
  a.held += d.held;
  a.granted += d.granted;
}

// ---- after-images (the `redo` column) -------------------------------------------------------
// A sequence of entries, each a tag byte then LEB128 varints (signed values zigzag-encoded):
//   'P' the current bucket of every window of a stored plan: plan id, then per window its
//       counter values (below), or kSameAsPrevious for the previous window's values — the
//       usual form: an operation changes its plan's windows;
//   'C' one counter bucket: series id, start, end (0 = forever, else end - start), values;
//   'E' the same with end written as a signed value (a bucket that does not end after it starts);
//       counter values: a mask of the non-zero ones among spent, held, granted (cost, tokens,
//       requests each), then those, absolute;
//   'R' request record: id, subject (count, strings), model, provider, price_version, then
//       state, plan id, held/consumed/charged (as counter values), created_at, expires_at -
//       created_at, flags, fingerprint, failing_check (and failing_state when >= 0);
//   'S' the same without the fields its row's event carries (request id, subject, model,
//       provider, price version) and created_at relative to the event's time.
// Absolute values: applying an entry twice, or an older entry before a newer one of the same
// key, ends in the same state.
struct Enc {
  std::string& out;
  void u(uint64_t v) {
    while (v >= 0x80) {
      out += static_cast<char>((v & 0x7F) | 0x80);
      v >>= 7;
    }
    out += static_cast<char>(v);
  }
  void i(int64_t v) { u((static_cast<uint64_t>(v) << 1) ^ static_cast<uint64_t>(v >> 63)); }
  void str(std::string_view v) {
    u(v.size());
    out.append(v);
  }
  void amounts(const Amounts& a) {
    i(a.cost);
    i(a.tokens);
    i(a.requests);
  }
};
struct Dec {
  const unsigned char* p;
  const unsigned char* e;
  [[noreturn]] static void bad() { throw InternalError("sqlite: corrupted data: an after-image in the ledger or a stored record"); }
  bool done() const { return p >= e; }
  uint8_t byte() {
    if (p >= e) bad();
    return *p++;
  }
  uint64_t u() {
    uint64_t v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
      uint8_t b = byte();
      v |= static_cast<uint64_t>(b & 0x7F) << shift;
      if (!(b & 0x80)) return v;
    }
    bad();
  }
  int64_t i() {
    uint64_t v = u();
    return static_cast<int64_t>((v >> 1) ^ (~(v & 1) + 1));
  }
  std::string str() {
    uint64_t n = u();
    if (n > static_cast<uint64_t>(e - p)) bad();
    std::string out(reinterpret_cast<const char*>(p), static_cast<size_t>(n));
    p += n;
    return out;
  }
  Amounts amounts() {
    Amounts a;
    a.cost = i();
    a.tokens = i();
    a.requests = i();
    return a;
  }
};

// Nine counter values (spent, held, granted x cost, tokens, requests): a mask of the non-zero
// ones, then those.
void encode_values(Enc& e, const Counters& c) {
  const int64_t v[9] = {c.spent.cost, c.spent.tokens, c.spent.requests, c.held.cost, c.held.tokens,
                        c.held.requests, c.granted.cost, c.granted.tokens, c.granted.requests};
  uint64_t mask = 0;
  for (int k = 0; k < 9; ++k)
    if (v[k]) mask |= uint64_t{1} << k;
  e.u(mask);
  for (int k = 0; k < 9; ++k)
    if (v[k]) e.i(v[k]);
}
// In a plan group, a window whose values equal the previous window's is written as this mask
// (one scope's windows, or a subject's scopes, often count the same).
constexpr uint64_t kSameAsPrevious = uint64_t{1} << 9;
bool same_counters(const Counters& a, const Counters& b) {
  return a.spent == b.spent && a.held == b.held && a.granted == b.granted;
}
Counters decode_values(Dec& d, const Counters* previous = nullptr) {
  uint64_t mask = d.u();
  if (mask == kSameAsPrevious && previous) return *previous;
  if (mask >> 9) Dec::bad();
  int64_t v[9] = {};
  for (int k = 0; k < 9; ++k)
    if (mask & (uint64_t{1} << k)) v[k] = d.i();
  Counters c;
  c.spent = {v[0], v[1], v[2]};
  c.held = {v[3], v[4], v[5]};
  c.granted = {v[6], v[7], v[8]};
  return c;
}

void encode_counter(std::string& out, int64_t sid, int64_t start, int64_t end, const Counters& c) {
  Enc e{out};
  if (end == kForever || end > start) {
    out += 'C';
    e.u(static_cast<uint64_t>(sid));
    e.i(start);
    e.u(end == kForever ? 0 : static_cast<uint64_t>(end) - static_cast<uint64_t>(start));
  } else {
    out += 'E';
    e.u(static_cast<uint64_t>(sid));
    e.i(start);
    e.i(end);
  }
  encode_values(e, c);
}

// The fields of a record that its own event row also carries; a record whose values are those
// of the row's event is written without them ('S').
struct EventFields {
  std::string request_id, model, provider, price_version;
  std::vector<std::string> subject;
  int64_t time = 0;  // ms
};
bool same_fields(const RequestRecord& r, const EventFields& f) {
  return r.request_id == f.request_id && r.subject == f.subject && r.model == f.model && r.provider == f.provider &&
         r.price_version == f.price_version;
}

void encode_record(std::string& out, const RequestRecord& r, int64_t plan_id, const EventFields* ev) {
  Enc e{out};
  const bool short_form = ev && same_fields(r, *ev);
  out += short_form ? 'S' : 'R';
  if (!short_form) {
    e.str(r.request_id);
    e.u(r.subject.size());
    for (const auto& x : r.subject) e.str(x);
    e.str(r.model);
    e.str(r.provider);
    e.str(r.price_version);
  }
  e.u(static_cast<uint64_t>(r.state));
  e.u(static_cast<uint64_t>(plan_id));
  Counters a;  // the record's amounts, in the counters' layout
  a.spent = r.held;
  a.held = r.consumed;
  a.granted = r.charged;
  encode_values(e, a);
  e.i(static_cast<int64_t>(static_cast<uint64_t>(r.created_at) - static_cast<uint64_t>(short_form ? ev->time : 0)));
  e.i(static_cast<int64_t>(static_cast<uint64_t>(r.expires_at) - static_cast<uint64_t>(r.created_at)));
  e.u((r.over_hold ? 1u : 0u) | (r.over_limit ? 2u : 0u) | (r.after_expiry ? 4u : 0u));
  e.str(r.fingerprint);
  e.i(r.failing_check);
  if (r.failing_check >= 0) {
    e.i(r.failing_state.spent);
    e.i(r.failing_state.held);
    e.i(r.failing_state.granted);
  }
}

// The inverse of encode_record, after its tag: 'R' (complete) or 'S' (the fields it shares
// with its event come from `ev`). Fills `r` but its plan; returns the plan's id (0: none).
int64_t decode_record(Dec& d, uint8_t tag, const EventFields* ev, RequestRecord& r) {
  int64_t base = 0;
  if (tag == 'R') {
    r.request_id = d.str();
    uint64_t n = d.u();
    if (n > static_cast<uint64_t>(d.e - d.p)) Dec::bad();
    r.subject.reserve(static_cast<size_t>(n));
    for (uint64_t k = 0; k < n; ++k) r.subject.push_back(d.str());
    r.model = d.str();
    r.provider = d.str();
    r.price_version = d.str();
  } else {
    if (tag != 'S' || !ev) Dec::bad();
    r.request_id = ev->request_id;
    r.subject = ev->subject;
    r.model = ev->model;
    r.provider = ev->provider;
    r.price_version = ev->price_version;
    base = ev->time;
  }
  uint64_t state = d.u();
  if (state > static_cast<uint64_t>(ReqState::Adjusted)) Dec::bad();
  r.state = static_cast<ReqState>(state);
  int64_t plan_id = static_cast<int64_t>(d.u());
  Counters a = decode_values(d);
  r.held = a.spent;
  r.consumed = a.held;
  r.charged = a.granted;
  r.created_at = static_cast<int64_t>(static_cast<uint64_t>(base) + static_cast<uint64_t>(d.i()));
  r.expires_at = static_cast<int64_t>(static_cast<uint64_t>(r.created_at) + static_cast<uint64_t>(d.i()));
  uint64_t flags = d.u();
  r.over_hold = flags & 1;
  r.over_limit = flags & 2;
  r.after_expiry = flags & 4;
  r.fingerprint = d.str();
  r.failing_check = static_cast<int>(d.i());
  if (r.failing_check >= 0) {
    r.failing_state.spent = d.i();
    r.failing_state.held = d.i();
    r.failing_state.granted = d.i();
  }
  return plan_id;
}

// A record from a row of BUDGET_RECORD_COLUMNS (`holds`; `requests` before version 5), but its
// plan; `*plan_id` gets the plan's id (0: none).
RequestRecord record_from_columns(Stmt& s, int64_t* plan_id) {
  RequestRecord r;
  r.request_id = s.text(0);
  r.state = static_cast<ReqState>(s.i64(1));
  {
    // Read directly in the common case (written by json_strings): no nlohmann value on the
    // path of an operation on a hold read back from the table (see json_text.hpp).
    const std::string subject = s.text(2);
    if (!read_json_strings(subject, r.subject)) r.subject = nlohmann::json::parse(subject).get<std::vector<std::string>>();
  }
  *plan_id = s.null(3) ? 0 : s.i64(3);
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

// JSON array of strings, as nlohmann::json(v).dump() writes it (written directly where it can:
// see json_text.hpp).
std::string json_strings(const std::vector<std::string>& v) {
  std::string out = "[";
  for (const auto& x : v) {
    if (out.size() > 1) out += ',';
    if (!append_json_string(out, x)) return nlohmann::json(v).dump();
  }
  return out + "]";
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
  // Live holds are edited in the cache in place (no copies); the operation's undo log keeps
  // what they were before, for a failed operation.
  const RequestRecord* find_request(const std::string& id) override;
  RequestRecord* edit_request(const std::string& id) override;
  void save_request(const RequestRecord& rec) override;
  const RequestRecord& adopt_request(RequestRecord&& rec) override;

 private:
  RequestRecord* lookup(const std::string& id);
  SqliteStore& s_;
  std::optional<RequestRecord> other_;  // a looked-up record that is not cached
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
    int rc = sqlite3_open_v2(path.c_str(), &db_, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
                             detail::sqlite_batching_vfs());
    if (rc != SQLITE_OK) {
      std::string msg = db_ ? sqlite3_errmsg(db_) : sqlite3_errstr(rc);
      sqlite3_close(db_);
      throw StoreUnavailableError("sqlite: cannot open '" + path + "': " + msg);
    }
    try {
      busy_timeout_ = opts.timeout;
      sqlite3_busy_handler(db_, &SqliteStore::on_busy, this);
      exec(("PRAGMA page_size=" + std::to_string(kPageSize)).c_str());  // no-op unless the file is new
      exec_patiently("PRAGMA journal_mode=WAL");
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
    // In a forked child the connection is the parent's: SQLite forbids using it, even to
    // close it or finalize its statements, so all of it is left alone (the child's copy is
    // lost when the child exits).
    if (fork_generation() != fork_gen_) {
      for (auto& stmt : stmts_) (void)stmt.release();
      return;
    }
    // Best effort: bring the state tables up to date, so the next open replays nothing.
    try {
      run([&](SqlTxn&) {
        if (last_seq_ > ckpt_seq_) checkpoint();
        return 0;
      });
    } catch (...) {
    }
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
      job_sql_writes_ = true;
      st(kPutLimit).reset().bind(l.key()).bind(l.scope).bind(l.window.to_string()).bind(to_string(l.metric))
          .bind(l.amount).bind(nlohmann::json(l.alert_thresholds_pct).dump()).exec();
      return bump_limits_version(t);
    });
  }
  bool remove_limit(const std::string& key, uint64_t* version) override {
    return run([&](SqlTxn& t) {
      job_sql_writes_ = true;
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
      // Live holds: the `holds` table overlaid with the records changed since the checkpoint.
      std::vector<std::pair<int64_t, std::string>> due;
      auto& s = st(kDue).reset().bind(now).bind(static_cast<int64_t>(max + recs_.size()));
      while (s.step()) {
        std::string id = s.text(0);
        if (!recs_.count(id)) due.emplace_back(s.i64(1), std::move(id));
      }
      s.finish();
      for (const auto& [id, e] : recs_)
        if (e.rec.state == ReqState::Held && e.rec.expires_at <= now) due.emplace_back(e.rec.expires_at, id);
      std::sort(due.begin(), due.end());
      if (due.size() > max) due.resize(max);
      for (const auto& d : due)
        if (auto rec = t.get_request(d.second)) txn_expire(t, *rec, now);
      return due.size();
    });
  }
  int64_t next_deadline() override {
    return run([&](SqlTxn&) {
      int64_t v = kForever;
      for (const auto& [id, e] : recs_)
        if (e.rec.state == ReqState::Held) v = std::min(v, e.rec.expires_at);
      auto& s = st(kNextDeadline).reset();
      while (s.step()) {
        if (s.i64(1) >= v) break;
        if (!recs_.count(s.text(0))) {  // else the cached record says
          v = s.i64(1);
          break;
        }
      }
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
      if (last_seq_ > ckpt_seq_ || !dirty_ctr_.empty()) checkpoint();  // the table is read below
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
    kLimitsVersion, kSetMeta, kLoadLimits, kPutLimit, kDelLimit, kGetHold, kGetReq, kPutReq, kPutHold, kAppend,
    kDue, kNextDeadline, kScan, kHashAt, kAllCounters, kLastChain, kBegin, kCommit, kDataVersion,
    kSeriesId, kAddSeries, kLoadSeries, kPlanId, kAddPlan, kPlanById, kPutCounter, kDelHold, kMetaState,
    kTail, kCount
  };

  void exec(const char* sql) {
    char* err = nullptr;
    int rc = sqlite3_exec(db_, sql, nullptr, nullptr, &err);
    if (rc != SQLITE_OK) {
      std::string msg = err ? err : sqlite3_errstr(rc);
      sqlite3_free(err);
      if ((rc & 0xFF) == SQLITE_BUSY || (rc & 0xFF) == SQLITE_IOERR || (rc & 0xFF) == SQLITE_FULL)
        throw StoreUnavailableError("sqlite: " + msg + " (" + std::string(sql).substr(0, 40) + ")");
      throw InternalError("sqlite: " + msg + " in: " + std::string(sql).substr(0, 60));
    }
  }

  // Another process holds the lock (threads of this one queue for group commit instead). It
  // holds it for one transaction, ~10-20 µs: SQLite's own handler sleeps 1, 2, 5, 10... ms, so a
  // process that loses the race once waits for a hundred transactions of the others and
  // operations of a busy file get millisecond latencies and unfair shares. Short sleeps first,
  // then longer ones, until the timeout.
  static int on_busy(void* p, int count) {
    auto* self = static_cast<SqliteStore*>(p);
    const auto now = std::chrono::steady_clock::now();
    if (count == 0) self->busy_since_ = now;
    if (now - self->busy_since_ >= self->busy_timeout_) return 0;
    std::this_thread::sleep_for(count < 50 ? std::chrono::microseconds(20)
                                : count < 200 ? std::chrono::microseconds(200)
                                              : std::chrono::microseconds(2000));
    return 1;
  }

  // exec(), retrying while the file is busy, for up to the busy timeout: SQLite does not call the busy
  // handler everywhere — switching a new file to WAL while other processes open it answers
  // SQLITE_BUSY at once (tested: many processes opening a new file together).
  void exec_patiently(const char* sql) {
    const auto until = std::chrono::steady_clock::now() + busy_timeout_;
    int rc;
    while (((rc = sqlite3_exec(db_, sql, nullptr, nullptr, nullptr)) & 0xFF) == SQLITE_BUSY &&
           std::chrono::steady_clock::now() < until)
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    if (rc != SQLITE_OK) exec(sql);  // one more try, which throws the error if it fails again
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
      if (version >= 1 && version <= 3) exec(kMigrateV3);
      if (version >= 1 && version <= 4) migrate_v4();
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
        ins.reset().bind(text).bind(json_strings(window_keys(*plan))).exec();
      }
    }
    exec(kMigrateV1b);
  }

  // Version 4 -> 5: settled records are stored encoded (encode_record) in `requests`.
  void migrate_v4() {
    exec("CREATE TABLE requests_v5 (" BUDGET_SETTLED_COLUMNS ") WITHOUT ROWID");
    {
      Stmt read(db_, "SELECT " BUDGET_RECORD_COLUMNS " FROM requests");
      Stmt ins(db_, "INSERT INTO requests_v5(id, state, rec) VALUES (?,?,?)");
      std::string rec;
      while (read.step()) {
        int64_t plan_id = 0;
        RequestRecord r = record_from_columns(read, &plan_id);
        rec.clear();
        encode_record(rec, r, plan_id, nullptr);
        ins.reset().bind(r.request_id).bind(static_cast<int64_t>(r.state)).bind_blob(rec.data(), rec.size()).exec();
      }
    }
    exec("DROP TABLE requests; ALTER TABLE requests_v5 RENAME TO requests;");
  }

  // The upsert of a record into `holds`.
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
        "SELECT " BUDGET_RECORD_COLUMNS " FROM holds WHERE id=?1",
        "SELECT rec FROM requests WHERE id=?1",
        "INSERT OR REPLACE INTO requests(id, state, rec) VALUES (?,?,?)",
        BUDGET_RECORD_UPSERT("holds"),
        "INSERT INTO ledger(seq, body, hash, plan, wpos, redo) VALUES (?,?,?,?,?,?)",
        "SELECT id, expires_at FROM holds WHERE expires_at<=? ORDER BY expires_at, id LIMIT ?",
        "SELECT id, expires_at FROM holds ORDER BY expires_at",
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
        "INSERT OR REPLACE INTO counters(sid, start, end_ms, spent_cost, spent_tokens, spent_requests, held_cost,"
        " held_tokens, held_requests, granted_cost, granted_tokens, granted_requests) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
        "DELETE FROM holds WHERE id=?",
        "SELECT (SELECT value FROM meta WHERE key='checkpoint'), (SELECT value FROM meta WHERE key='epoch'),"
        " (SELECT value FROM meta WHERE key='limits_version')",
        "SELECT seq, hash, redo, body FROM ledger WHERE seq>? ORDER BY seq",
    };
#undef BUDGET_RECORD_UPSERT
    for (int i = 0; i < kCount; ++i) stmts_.push_back(std::make_unique<Stmt>(db_, sql[i]));
  }
  // Statements used since the last finish_all() (only those can hold a read open).
  Stmt& st(StmtId id) {
    if (!(used_mask_ & (uint64_t{1} << id))) {
      used_mask_ |= uint64_t{1} << id;
      used_.push_back(id);
    }
    return *stmts_[id];
  }
  static_assert(kCount <= 64);
  uint64_t used_mask_ = 0;
  std::vector<int> used_;

  uint64_t bump_limits_version(SqlTxn& t) {
    uint64_t v = t.limits_version() + 1;
    st(kSetMeta).reset().bind("limits_version").bind(static_cast<int64_t>(v)).exec();
    limits_version_ = v;
    return v;
  }

  // ---- cache ----------------------------------------------------------------------------
  // Everything below is used by the leader only, inside a transaction that holds the write
  // lock. The state is: tables (as of meta `checkpoint`) + the after-images of later ledger
  // rows. This process keeps those after-images applied in memory: `dirty_ctr_` (counter
  // buckets) and the dirty entries of `recs_` (request records), each with the seq of the row
  // that last changed it; a lookup that misses them reads the table, which is then current.
  // `series_` (bucket cache per series) and the clean entries of `recs_` (live holds read from
  // the table) are a plain cache of the same state. Series ids and plans only grow.
  struct Series {
    int64_t sid = 0;       // 0: not in the file (as of the last look)
    bool recheck = false;  // sid 0, and another connection committed since the look
    bool loaded = false;   // `buckets` holds every bucket of the series with start >= lo
    int64_t lo = 0;
    std::map<int64_t, Counters> buckets;
  };
  struct PlanRow {
    int64_t id = 0;
    std::string windows_field;  // ,"windows":[...] exactly as in an event body
    std::shared_ptr<const Plan> plan;
  };
  static constexpr int64_t kClean = -1;               // Rec::dirty: the table has it
  static constexpr int64_t kPending = INT64_MAX;      // changed by the running operation
  struct DirtyBucket {
    int64_t end = 0;
    Counters c;
    int64_t seq = kPending;
  };
  struct Rec {
    RequestRecord rec;
    int64_t dirty = kClean;  // seq of the ledger row that carries its after-image, or kClean
    // False only while the record is known to have no row in `holds` (created by this
    // process since, and no other process checkpointed since): settling it then needs no
    // DELETE from `holds` at the checkpoint.
    bool maybe_in_holds = true;
  };
  // The undo log of the running operation: what it touched, as it was before.
  struct CtrTouch {
    Series* s;
    int64_t sid, start, end;
    std::optional<Counters> cached;     // the cache's bucket (absent: no such bucket)
    std::optional<DirtyBucket> dirty;   // the overlay's entry
    DirtyBucket* after = nullptr;       // its entry in the overlay now
    bool grouped = false;               // written as part of a plan group ('P')
  };
  struct RecTouch {
    std::string id;
    std::optional<Rec> prev;
  };
  struct PendingRow {
    int64_t seq = 0, plan_id = 0, wpos = 0;
    std::string stored, hash;
    EventFields ev;
  };
  // What this store resolved for a plan the engine caches (Plan::handles): its stored id and
  // the series of its windows, valid while the generations match.
  struct SqlHandles final : PlanHandles {
    uint64_t store_id = 0;
    uint64_t plan_gen = 0, series_gen = 0;
    int64_t plan_id = 0;
    std::vector<Series*> series;
  };
  SqlHandles* handles_of(const Plan& p) {
    PlanHandles* h = p.handles.load(std::memory_order_acquire);
    if (!h) {
      auto* n = new SqlHandles;
      n->owner = this;
      n->store_id = store_id_;
      if (p.handles.compare_exchange_strong(h, n, std::memory_order_acq_rel)) h = n;
      else delete n;
    }
    auto* sh = dynamic_cast<SqlHandles*>(h);
    return sh && sh->owner == this && sh->store_id == store_id_ ? sh : nullptr;
  }
  // The stored id of a plan.
  int64_t plan_id_of(const Plan& p, const std::shared_ptr<const Plan>* sp) {
    auto* h = handles_of(p);
    if (h && h->plan_gen == plans_gen_ && h->plan_id) return h->plan_id;
    int64_t id = plan_row(p, sp).id;
    if (h) {
      h->plan_id = id;
      h->plan_gen = plans_gen_;
    }
    return id;
  }
  // The series of window i of p (its sid re-checked if another connection may have added it).
  Series& series_at(const Plan& p, size_t i, SqlHandles* h) {
    Series* s;
    if (h && h->series_gen == series_gen_ && h->series.size() == p.windows.size()) {
      s = h->series[i];
    } else if (h) {
      h->series.clear();
      for (const auto& w : p.windows) h->series.push_back(&series_of(w));
      h->series_gen = series_gen_;
      s = h->series[i];
    } else {
      s = &series_of(p.windows[i]);
    }
    if (s->recheck) {
      s->recheck = false;
      s->loaded = false;
      s->buckets.clear();
      const auto& w = p.windows[i];
      auto& q = st(kSeriesId).reset().bind(w.series_key.empty() ? w.series() : w.series_key);
      if (q.step()) {
        s->sid = q.i64(0);
        by_sid_[s->sid] = s;
      } else {
        unknown_series_.push_back(s);
      }
      q.finish();
    }
    return *s;
  }

  // Everything cached goes; the next transaction reloads from the checkpoint and the tail.
  void drop_all_state() {
    clear_series();
    ++plans_gen_;
    recs_.clear();
    dirty_ctr_.clear();
    plan_ids_.clear();
    plans_by_id_.clear();
    limits_valid_ = false;
    reload_ = true;
  }

  // At the start of a transaction (write lock held) when another connection committed since
  // the last one: apply the ledger rows it added. A full reload when asked (open, after a
  // failed COMMIT) or when another process rewrote the tables outside the ledger (epoch).
  void catch_up() {
    auto& m = st(kMetaState).reset();
    int64_t ckpt = 0, epoch = 0;
    if (m.step()) {
      ckpt = m.null(0) ? 0 : m.i64(0);
      epoch = m.null(1) ? 0 : m.i64(1);
      limits_version_ = m.null(2) ? 0 : static_cast<uint64_t>(m.i64(2));  // read with the rest: one statement
    }
    m.finish();
    if (epoch != epoch_) reload_ = true;
    if (reload_) {
      drop_all_state();
      reload_ = false;
      epoch_ = epoch;
      ckpt_seq_ = ckpt;
      last_seq_ = ckpt;
      last_hash_.clear();
    }
    limits_valid_ = true;  // after a reload too: the version was read in this transaction
    // Another connection may have added series this process looked for and did not find.
    for (auto* ser : unknown_series_)
      if (ser->sid == 0) ser->recheck = true;
    unknown_series_.clear();
    bool any = false;
    {
      auto& t = st(kTail).reset().bind(last_seq_);
      while (t.step()) {
        int64_t seq = t.i64(0);
        if (sqlite3_column_type(stmt_of(t), 2) == SQLITE_BLOB) {
          auto* p = static_cast<const unsigned char*>(sqlite3_column_blob(stmt_of(t), 2));
          apply_image(p, p + sqlite3_column_bytes(stmt_of(t), 2), seq, t);
        }
        last_seq_ = seq;
        last_hash_ = t.hash_hex(1);
        any = true;
      }
      t.finish();
    }
    if (!any && last_hash_.empty()) {
      auto& h = st(kLastChain).reset();
      if (h.step()) {
        last_seq_ = h.i64(0);
        last_hash_ = h.hash_hex(1);
      } else {
        last_seq_ = 0;
        last_hash_.assign(64, '0');
      }
      h.finish();
    }
    if (ckpt > ckpt_seq_) {  // another process wrote the tables up to ckpt: those entries are clean
      ckpt_seq_ = ckpt;
      for (auto it = dirty_ctr_.begin(); it != dirty_ctr_.end();) {
        auto& bs = it->second;
        for (auto b = bs.begin(); b != bs.end();) b = b->second.seq <= ckpt ? bs.erase(b) : std::next(b);
        it = bs.empty() ? dirty_ctr_.erase(it) : std::next(it);
      }
      for (auto it = recs_.begin(); it != recs_.end();) {
        it->second.maybe_in_holds = true;  // that checkpoint may have written it to `holds`
        if (it->second.dirty != kClean && it->second.dirty <= ckpt) it->second.dirty = kClean;
        if (it->second.dirty == kClean && it->second.rec.state != ReqState::Held) it = recs_.erase(it);
        else ++it;
      }
    }
  }
  static sqlite3_stmt* stmt_of(Stmt& s) { return s.raw(); }

  // Applies one ledger row's after-images (written by another process, or before this open).
  // `row` is positioned on the row (its body gives the fields a short record leaves out).
  void apply_image(const unsigned char* p, const unsigned char* end, int64_t seq, Stmt& row) {
    Dec d{p, end};
    std::optional<EventFields> ev;
    auto set_bucket = [&](Series* ser, int64_t sid, int64_t start, int64_t bend, const Counters& c) {
      dirty_ctr_[sid][start] = DirtyBucket{bend, c, seq};
      if (!ser) {
        auto it = by_sid_.find(sid);
        ser = it == by_sid_.end() ? nullptr : it->second;
      }
      if (ser && ser->loaded && start >= ser->lo) ser->buckets[start] = c;
    };
    while (!d.done()) {
      uint8_t tag = d.byte();
      if (tag == 'P') {
        const auto plan = plan_by_id(static_cast<int64_t>(d.u())).plan;  // a copy: the cache may be cleared below
        auto* h = handles_of(*plan);
        Counters c;
        for (size_t i = 0; i < plan->windows.size(); ++i) {
          const auto& w = plan->windows[i];
          c = decode_values(d, i > 0 ? &c : nullptr);
          Series& ser = series_at(*plan, i, h);
          if (ser.sid == 0) ensure_sid(ser, w);  // not expected: the writer added the series
          set_bucket(&ser, ser.sid, w.start, w.end, c);
        }
      } else if (tag == 'C' || tag == 'E') {
        int64_t sid = static_cast<int64_t>(d.u());
        int64_t start = d.i();
        int64_t bend;
        if (tag == 'C') {
          uint64_t len = d.u();
          bend = len == 0 ? kForever : static_cast<int64_t>(static_cast<uint64_t>(start) + len);
        } else {
          bend = d.i();
        }
        set_bucket(nullptr, sid, start, bend, decode_values(d));
      } else if (tag == 'R' || tag == 'S') {
        if (tag == 'S' && !ev) ev = row_fields(row);
        RequestRecord r;
        int64_t plan_id = decode_record(d, tag, ev ? &*ev : nullptr, r);
        r.plan = plan_id ? plan_by_id(plan_id).plan : empty_plan();
        auto& e = recs_[r.request_id];
        e.rec = std::move(r);
        e.dirty = seq;
        e.maybe_in_holds = true;
      } else {
        Dec::bad();
      }
    }
  }
  // The event fields of the ledger row `row` is on (column 3: the stored body). The body's
  // first fields are read directly when they have the canonical shape (strings as
  // append_json_string writes them), else it is parsed as JSON.
  static EventFields row_fields(Stmt& row) {
    auto* p = reinterpret_cast<const char*>(sqlite3_column_text(row.raw(), 3));
    std::string_view body(p ? p : "", p ? static_cast<size_t>(sqlite3_column_bytes(row.raw(), 3)) : 0);
    EventFields f;
    if (scan_fields(body, f)) return f;
    f = EventFields{};
    try {
      auto j = nlohmann::json::parse(body);
      f.time = j.at("time").get<int64_t>();
      f.request_id = j.at("request_id").get<std::string>();
      f.subject = j.at("subject").get<std::vector<std::string>>();
      f.model = j.value("model", "");
      f.provider = j.value("provider", "");
      f.price_version = j.value("price_version", "");
      return f;
    } catch (const nlohmann::json::exception&) {
      Dec::bad();
    }
  }
  static bool scan_fields(std::string_view b, EventFields& f) {
    size_t i = 0;
    auto lit = [&](std::string_view x) {
      if (b.substr(i, x.size()) != x) return false;
      i += x.size();
      return true;
    };
    auto str = [&](std::string& out) { return read_json_string(b, i, out); };
    if (!lit("{\"time\":")) return false;
    auto r = std::from_chars(b.data() + i, b.data() + b.size(), f.time);
    if (r.ec != std::errc()) return false;
    i = static_cast<size_t>(r.ptr - b.data());
    std::string type;
    if (!lit(",\"type\":") || !str(type) || !lit(",\"request_id\":") || !str(f.request_id) || !lit(",\"subject\":["))
      return false;
    while (i < b.size() && b[i] != ']') {
      if (!f.subject.empty() && !lit(",")) return false;
      if (!str(f.subject.emplace_back())) return false;
    }
    if (!lit("]")) return false;
    if (lit(",\"model\":") && !str(f.model)) return false;
    if (lit(",\"provider\":") && !str(f.provider)) return false;
    if (lit(",\"price_version\":") && !str(f.price_version)) return false;
    return lit(",\"usage\":") || lit(",\"spent\":");
  }

  // Writes every entry changed since the checkpoint to the state tables and advances the
  // checkpoint to the head. Inside the running transaction, after catch_up (so the overlay
  // holds every change up to the head).
  void checkpoint() {
    job_sql_writes_ = true;
    auto& pc = st(kPutCounter);
    for (const auto& [sid, bs] : dirty_ctr_)
      for (const auto& [start, b] : bs)
        pc.reset().bind(sid).bind(start).bind(b.end)
            .bind(b.c.spent.cost).bind(b.c.spent.tokens).bind(b.c.spent.requests)
            .bind(b.c.held.cost).bind(b.c.held.tokens).bind(b.c.held.requests)
            .bind(b.c.granted.cost).bind(b.c.granted.tokens).bind(b.c.granted.requests).exec();
    for (auto it = recs_.begin(); it != recs_.end();) {
      auto& e = it->second;
      if (e.dirty != kClean) {
        write_record(e.rec, e.maybe_in_holds);
        e.dirty = kClean;
        e.maybe_in_holds = e.rec.state == ReqState::Held;
      }
      // Settled records leave the cache once in the table (bounded memory).
      if (e.rec.state != ReqState::Held) it = recs_.erase(it);
      else ++it;
    }
    dirty_ctr_.clear();
    st(kSetMeta).reset().bind("checkpoint").bind(last_seq_).exec();
    ckpt_seq_ = last_seq_;
  }

  // Writes a record where its state belongs: a live hold in `holds`, any other in `requests`
  // (and out of `holds`).
  void write_record(const RequestRecord& r, bool maybe_in_holds) {
    const auto& plan = r.plan ? r.plan : empty_plan();
    int64_t plan_id = plan_id_of(*plan, &plan);
    const bool held = r.state == ReqState::Held;
    if (!held) {
      scratch_rec_.clear();
      encode_record(scratch_rec_, r, plan_id, nullptr);
      st(kPutReq).reset().bind_static(r.request_id).bind(static_cast<int64_t>(r.state))
          .bind_blob(scratch_rec_.data(), scratch_rec_.size(), SQLITE_STATIC).exec();
      if (maybe_in_holds) st(kDelHold).reset().bind(r.request_id).exec();
      return;
    }
    auto& s = st(kPutHold).reset();
    scratch_rec_ = json_strings(r.subject);  // outlives the statement's step
    s.bind_static(r.request_id).bind(static_cast<int64_t>(r.state)).bind_static(scratch_rec_).bind(plan_id);
    s.bind(r.held.cost).bind(r.held.tokens).bind(r.held.requests)
        .bind(r.consumed.cost).bind(r.consumed.tokens).bind(r.consumed.requests)
        .bind(r.charged.cost).bind(r.charged.tokens).bind(r.charged.requests)
        .bind(r.created_at).bind(r.expires_at)
        .bind(int64_t{(r.over_hold ? 1 : 0) | (r.over_limit ? 2 : 0) | (r.after_expiry ? 4 : 0)})
        .bind_static(r.model).bind_static(r.provider).bind_static(r.price_version).bind_static(r.fingerprint)
        .bind(int64_t{r.failing_check}).bind(r.failing_state.spent).bind(r.failing_state.held).bind(r.failing_state.granted)
        .exec();
  }

  void clear_series() {
    series_.clear();
    by_sid_.clear();
    unknown_series_.clear();
    ++series_gen_;
  }
  Series& series_of(const WindowRef& w) {
    const std::string& key = w.series_key.empty() ? (scratch_key_ = w.series()) : w.series_key;
    auto it = series_.find(key);
    if (it != series_.end()) return it->second;
    Series& s = series_[key];
    auto& q = st(kSeriesId).reset().bind(key);
    if (q.step()) {
      s.sid = q.i64(0);
      by_sid_[s.sid] = &s;
    } else {
      unknown_series_.push_back(&s);
    }
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
    by_sid_[s.sid] = &s;
    return s.sid;
  }
  // The buckets of s from read_from on: the table's, overlaid with the dirty ones. Marked
  // loaded once complete: an allocation that fails half-way leaves the series unloaded (read
  // again by the next look), never loaded with buckets missing (read as zero).
  void load(Series& s, int64_t read_from) {
    s.loaded = false;
    s.buckets.clear();
    if (s.sid != 0) {
      auto& q = st(kLoadSeries).reset().bind(s.sid).bind(read_from);
      while (q.step()) {
        Counters c;
        c.spent = {q.i64(1), q.i64(2), q.i64(3)};
        c.held = {q.i64(4), q.i64(5), q.i64(6)};
        c.granted = {q.i64(7), q.i64(8), q.i64(9)};
        s.buckets.emplace(q.i64(0), c);
      }
      q.finish();
      if (auto it = dirty_ctr_.find(s.sid); it != dirty_ctr_.end())
        for (auto b = it->second.lower_bound(read_from); b != it->second.end(); ++b) s.buckets[b->first] = b->second.c;
    }
    s.lo = read_from;
    s.loaded = true;
  }

  // ---- the running operation's undo log and ledger rows ------------------------------------
  void job_start() {
    ctr_touch_.clear();
    rec_touch_.clear();
    rec_touch_index_.clear();
    pending_.clear();
    groups_.clear();
    group_buckets_.clear();
    job_seq_ = last_seq_;
    job_hash_ = last_hash_;
    job_sql_writes_ = false;
  }
  CtrTouch& touch_counter(Series& s, const WindowRef& w) {
    for (auto& t : ctr_touch_)
      if (t.s == &s && t.start == w.start) return t;
    CtrTouch t{&s, s.sid, w.start, w.end, std::nullopt, std::nullopt};
    if (auto b = s.buckets.find(w.start); b != s.buckets.end()) t.cached = b->second;
    if (auto it = dirty_ctr_.find(s.sid); it != dirty_ctr_.end())
      if (auto b = it->second.find(w.start); b != it->second.end()) t.dirty = b->second;
    ctr_touch_.push_back(std::move(t));
    return ctr_touch_.back();
  }
  void touch_record(const std::string& id) {
    if (rec_touch_.size() < 16) {
      for (const auto& t : rec_touch_)
        if (t.id == id) return;
    } else {
      if (rec_touch_index_.empty())
        for (const auto& t : rec_touch_) rec_touch_index_.insert(t.id);
      if (!rec_touch_index_.insert(id).second) return;
    }
    RecTouch t{id, std::nullopt};
    if (auto it = recs_.find(id); it != recs_.end()) t.prev = it->second;
    rec_touch_.push_back(std::move(t));
  }
  // A failed operation: the cache as it was before it. (Rows of series and plans it inserted
  // stay: they only name things.)
  void job_undo() {
    for (auto t = ctr_touch_.rbegin(); t != ctr_touch_.rend(); ++t) {
      Series& s = *t->s;
      if (t->cached) s.buckets[t->start] = *t->cached;
      else s.buckets.erase(t->start);
      if (t->dirty) dirty_ctr_[t->sid][t->start] = *t->dirty;
      else if (auto it = dirty_ctr_.find(t->sid); it != dirty_ctr_.end()) {
        it->second.erase(t->start);
        if (it->second.empty()) dirty_ctr_.erase(it);
      }
    }
    for (auto t = rec_touch_.rbegin(); t != rec_touch_.rend(); ++t) {
      if (t->prev) recs_[t->id] = std::move(*t->prev);
      else recs_.erase(t->id);
    }
    pending_.clear();
    groups_.clear();
    group_buckets_.clear();
    last_seq_ = job_seq_;
    last_hash_ = job_hash_;
    ctr_touch_.clear();
    rec_touch_.clear();
    rec_touch_index_.clear();
  }
  // A successful operation: its ledger rows, the last one with the after-images of what it
  // changed.
  void job_flush() {
    if (pending_.empty()) {
      if (!ctr_touch_.empty() || !rec_touch_.empty()) {
        // State changed without an event (no operation does this today): write the tables
        // directly and tell the other processes to reload (they cannot see it in the ledger).
        checkpoint();
        st(kSetMeta).reset().bind("epoch").bind(++epoch_).exec();
      }
      return;
    }
    const int64_t seq = pending_.back().seq;
    redo_.clear();
    Enc enc{redo_};
    for (const auto& g : groups_) {
      redo_ += 'P';
      enc.u(static_cast<uint64_t>(g.plan_id));
      for (size_t k = 0; k < g.n; ++k) {
        const Counters& c = group_buckets_[g.first + k]->c;
        if (k > 0 && same_counters(c, group_buckets_[g.first + k - 1]->c)) enc.u(kSameAsPrevious);
        else encode_values(enc, c);
      }
    }
    for (const auto& t : ctr_touch_) {
      t.after->seq = seq;
      if (!t.grouped) encode_counter(redo_, t.sid, t.start, t.after->end, t.after->c);
    }
    for (const auto& t : rec_touch_) {
      auto it = recs_.find(t.id);
      if (it == recs_.end()) continue;  // not expected: a touched record is stored
      it->second.dirty = seq;
      const auto& r = it->second.rec;
      const auto& plan = r.plan ? r.plan : empty_plan();
      encode_record(redo_, r, plan_id_of(*plan, &plan), &pending_.back().ev);
    }
    auto& s = st(kAppend);
    for (const auto& row : pending_) {
      // Bound without copies: the row, `raw` and redo_ outlive the step.
      s.reset().bind(row.seq).bind_static(row.stored);
      unsigned char raw[32];
      if (unhex(row.hash, raw)) s.bind_blob(raw, sizeof raw, SQLITE_STATIC);
      else s.bind(row.hash);
      if (row.plan_id) s.bind(row.plan_id).bind(row.wpos);
      else s.bind_null().bind_null();
      if (&row == &pending_.back() && !redo_.empty()) s.bind_blob(redo_.data(), redo_.size(), SQLITE_STATIC);
      else s.bind_null();
      s.exec();
    }
    pending_.clear();
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
  // The stored row of a plan, found by the id its handles remember when they can.
  const PlanRow& stored_plan(const Plan& p, const std::shared_ptr<const Plan>* sp) {
    auto it = plans_by_id_.find(plan_id_of(p, sp));
    return it != plans_by_id_.end() ? it->second : plan_row(p, sp);
  }
  // The stored row of a plan (inserted if new).
  const PlanRow& plan_row(const Plan& p, const std::shared_ptr<const Plan>* sp) {
    std::string encoded;
    const std::string& text = p.encoded.empty() ? (encoded = encode_plan(p)) : p.encoded;
    if (auto it = plan_ids_.find(text); it != plan_ids_.end()) {
      if (auto r = plans_by_id_.find(it->second); r != plans_by_id_.end()) {
        if (!r->second.plan && sp) r->second.plan = *sp;
        return r->second;
      }
      plan_ids_.erase(it);  // (not expected: see cache_plan_row) read again below
    }
    if (plan_ids_.size() >= 4096) {
      plan_ids_.clear();
      plans_by_id_.clear();
      ++plans_gen_;
    }
    PlanRow row;
    if (sp) row.plan = *sp;
    auto& q = st(kPlanId).reset().bind(text);
    if (q.step()) {
      row.id = q.i64(0);
      row.windows_field = ",\"windows\":" + q.text(1);
      q.finish();
    } else {
      q.finish();
      std::string windows = json_strings(window_keys(p));
      st(kAddPlan).reset().bind(text).bind(windows).exec();
      row.id = sqlite3_last_insert_rowid(db_);
      row.windows_field = ",\"windows\":" + windows;
    }
    return cache_plan_row(text, std::move(row));
  }
  // Both maps or neither: an entry of plan_ids_ without its row (an allocation that failed in
  // between) was read as an empty row, and the next event was written without its windows.
  const PlanRow& cache_plan_row(const std::string& text, PlanRow&& row) {
    const int64_t id = row.id;
    auto it = plans_by_id_.insert_or_assign(id, std::move(row)).first;
    try {
      plan_ids_[text] = id;
    } catch (...) {
      plans_by_id_.erase(it);
      throw;
    }
    return it->second;
  }
  const PlanRow& plan_by_id(int64_t id) {
    auto it = plans_by_id_.find(id);
    if (it != plans_by_id_.end() && it->second.plan) return it->second;
    if (plan_ids_.size() >= 4096) {
      plan_ids_.clear();
      plans_by_id_.clear();
      ++plans_gen_;
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
    return cache_plan_row(text, std::move(row));
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
    Job* next_to_wake = nullptr;  // guarded by qm_: the list of answered callers (to_wake_)
  };

  template <class F>
  auto run(F&& f) -> decltype(f(std::declval<SqlTxn&>())) {
    if (fork_generation() != fork_gen_)
      throw InvalidArgumentError("sqlite: this store (its BudgetManager) was opened before fork(); a connection "
                                 "cannot be used across fork(): create the manager in each process");
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
  // The list is intrusive (no allocation): nothing between a batch's end and its callers'
  // wake-up may throw, or they would wait forever.
  void wake_next(Job* self) noexcept {
    if (self)
      for (Job** p = &to_wake_; *p; p = &(*p)->next_to_wake)
        if (*p == self) {
          *p = self->next_to_wake;
          break;
        }
    Job* next = to_wake_;
    if (!next) return;
    to_wake_ = next->next_to_wake;
    next->next_to_wake = nullptr;
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
      std::vector<Job*> batch;
      batch.swap(queue_);  // no allocation: from here to the callers' wake-up nothing throws
      lk.unlock();
      try {
        execute(batch);
      } catch (...) {
        // Something execute() does not expect (an allocation that failed between its own
        // checks): nothing of the batch is committed; every caller is told so. Without this
        // the leader's exception left leader_ set and the queue waiting: every later call of
        // the process hung.
        rollback();
        for (auto* j : batch) j->error = std::current_exception();
      }
      lk.lock();
      Job** tail = &to_wake_;
      while (*tail) tail = &(*tail)->next_to_wake;
      for (auto* j : batch) {
        j->done = true;
        j->ready.store(true, std::memory_order_release);
        if (j != &self) {
          *tail = j;
          tail = &j->next_to_wake;
        }
      }
      wake_next(nullptr);
      expected_ = batch.size();
    }
    leader_ = false;
  }

  // Starts the batch's transaction and brings the cache up to date. False (errors set) on failure.
  bool begin(const std::vector<Job*>& jobs) {
    try {
      finish_all();
      st(kBegin).reset().exec();
      auto& v = st(kDataVersion).reset();
      int64_t dv = v.step() ? v.i64(0) : -1;
      v.finish();
      if (dv != data_version_ || reload_) {
        catch_up();
        data_version_ = dv;
      }
      if (series_.size() > 100'000) clear_series();
      if (recs_.size() > 100'000)  // clean entries only: the dirty ones are the overlay
        for (auto it = recs_.begin(); it != recs_.end();) it = it->second.dirty == kClean ? recs_.erase(it) : std::next(it);
      return true;
    } catch (...) {
      rollback();
      auto e = std::current_exception();
      for (auto* j : jobs) j->error = own_copy(e);
      return false;
    }
  }

  // A copy of a library error for each caller that is answered with it: callers rethrow on
  // their own threads, and one exception object shared by several is destroyed on whichever
  // thread lets go of it last, which ThreadSanitizer reports as a race with another's what()
  // (libstdc++'s reference count is not instrumented). Anything else is passed on as it is.
  static std::exception_ptr own_copy(const std::exception_ptr& e) {
    try {
      std::rethrow_exception(e);
    } catch (const Error& x) {
      try {
        throw_error(x.code(), x.what());
      } catch (...) {
        return std::current_exception();
      }
    } catch (...) {
    }
    return e;
  }

  void execute(const std::vector<Job*>& batch) {
    // All operations in one transaction. A failing operation's changes to the cache are undone
    // (it wrote no row but perhaps a series or plan name) and the others go on; if it wrote
    // other rows, the transaction is rolled back and run again without it. Only committed work
    // is answered.
    std::vector<Job*> jobs = batch;
    while (!jobs.empty()) {
      if (!begin(jobs)) return;
      SqlTxn t(*this);
      size_t failed = jobs.size();
      std::vector<char> wrote(jobs.size(), 0);  // the job changed state (or wrote rows)
      bool any_wrote = false;
      for (size_t i = 0; i < jobs.size(); ++i) {
        job_start();
        try {
          jobs[i]->fn(t);
          wrote[i] = !pending_.empty() || !ctr_touch_.empty() || !rec_touch_.empty() || job_sql_writes_;
          any_wrote = any_wrote || wrote[i];
        } catch (...) {
          jobs[i]->error = std::current_exception();
          if (!job_sql_writes_) {
            job_undo();
            continue;
          }
          failed = i;
          break;
        }
        try {
          job_flush();
        } catch (...) {
          jobs[i]->error = std::current_exception();
          failed = i;
          break;
        }
      }
      if (failed < jobs.size()) {
        rollback();
        for (size_t i = 0; i < jobs.size(); ++i)
          if (i != failed) jobs[i]->error = nullptr;  // run again
        jobs.erase(jobs.begin() + static_cast<std::ptrdiff_t>(failed));
        continue;
      }
      try {
        // A batch that changed nothing (reads, checks) never checkpoints: it must not fail
        // for want of disk space; the next batch that writes does it.
        if (any_wrote && last_seq_ - ckpt_seq_ >= kCheckpointEvery) checkpoint();
        finish_all();
        st(kCommit).reset().exec();
      } catch (...) {
        const std::string why = std::string("sqlite: commit failed: ") + sqlite3_errmsg(db_);
        rollback();
        // The jobs that changed nothing are run again alone (what they read included the
        // failed writes), so a full disk fails the writes and not the reads batched with
        // them. Each round drops the jobs that wrote, so this ends.
        std::vector<Job*> readers;
        for (size_t i = 0; i < jobs.size(); ++i) {
          if (any_wrote && !wrote[i]) {
            jobs[i]->error = nullptr;
            readers.push_back(jobs[i]);
          } else {
            jobs[i]->error = std::make_exception_ptr(StoreUnavailableError(why));
          }
        }
        if (!readers.empty()) {
          jobs = std::move(readers);
          continue;
        }
      }
      return;
    }
  }

  void finish_all() {
    for (int id : used_) stmts_[static_cast<size_t>(id)]->finish();
    used_.clear();
    used_mask_ = 0;
  }

  void rollback() {
    finish_all();
    if (!sqlite3_get_autocommit(db_)) sqlite3_exec(db_, "ROLLBACK", nullptr, nullptr, nullptr);
    drop_all_state();
  }

  std::string path_;
  sqlite3* db_ = nullptr;
  uint64_t fork_gen_ = fork_generation();  // of the process that opened db_
  std::chrono::milliseconds busy_timeout_{0};
  std::chrono::steady_clock::time_point busy_since_;  // of the wait on_busy is in
  std::vector<std::unique_ptr<Stmt>> stmts_;
  std::mutex qm_;
  std::vector<Job*> queue_;
  Job* to_wake_ = nullptr;  // answered callers not woken yet (a list through Job::next_to_wake)
  bool leader_ = false;
  size_t expected_ = 1;  // operations in the last batch

  // Cache (leader only).
  int64_t data_version_ = -1;
  bool reload_ = true;  // rebuild the cache from the checkpoint and the tail
  bool limits_valid_ = false;
  uint64_t limits_version_ = 0;
  int64_t last_seq_ = 0;  // the ledger head, every row up to which is applied
  std::string last_hash_;
  int64_t ckpt_seq_ = 0;  // meta `checkpoint` as last seen or written
  int64_t epoch_ = -1;    // meta `epoch` as last seen
  std::unordered_map<std::string, Series> series_;        // by series key
  std::unordered_map<int64_t, Series*> by_sid_;           // the same, by series id
  std::vector<Series*> unknown_series_;                   // looked for, not found (sid 0)
  uint64_t series_gen_ = 1, plans_gen_ = 1;               // bumped when those caches are dropped
  uint64_t store_id_ = next_store_id();
  static uint64_t next_store_id() {
    static std::atomic<uint64_t> n{0};
    return ++n;
  }
  struct Group {
    int64_t plan_id;
    size_t first, n;  // in group_buckets_
  };
  std::vector<Group> groups_;
  std::vector<DirtyBucket*> group_buckets_;
  std::unordered_map<int64_t, std::map<int64_t, DirtyBucket>> dirty_ctr_;  // by series id, start
  std::unordered_map<std::string, Rec> recs_;             // live holds and dirty records, by id
  // The running operation.
  std::vector<CtrTouch> ctr_touch_;
  std::vector<RecTouch> rec_touch_;
  std::unordered_set<std::string> rec_touch_index_;
  std::vector<PendingRow> pending_;
  int64_t job_seq_ = 0;
  std::string job_hash_;
  bool job_sql_writes_ = false;  // wrote rows an undo cannot take back (limits, a checkpoint)
  std::string redo_;
  std::unordered_map<std::string, int64_t> plan_ids_;     // plan text -> id
  std::unordered_map<int64_t, PlanRow> plans_by_id_;
  std::string scratch_key_;
  std::string scratch_rec_;  // write_record's encoded record or subject text, bound without a copy
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
  auto* h = s_.handles_of(p);
  for (size_t i = 0; i < p.windows.size(); ++i) {
    const auto& w = p.windows[i];
    auto& s = s_.series_at(p, i, h);
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

// Adds d to the current bucket of every window of the plan: in the cache and in the overlay
// (absolute values; the ledger row of the operation carries them). Nothing is written here.
void SqlTxn::add_all(const Plan& p, const Counters& d) {
  if (p.windows.empty()) return;
  auto* h = s_.handles_of(p);
  // The after-images of these buckets go to the operation's row as one plan group when the
  // plan is stored (it is, for any plan a record or an event refers to).
  int64_t plan_id = h ? s_.plan_id_of(p, nullptr) : 0;
  const size_t first = s_.group_buckets_.size();
  for (size_t i = 0; i < p.windows.size(); ++i) {
    const auto& w = p.windows[i];
    auto& ser = s_.series_at(p, i, h);
    s_.ensure_sid(ser, w);
    if (!ser.loaded || w.start < ser.lo) s_.load(ser, ser.loaded ? std::min(ser.lo, w.start) : w.start);
    auto b = ser.buckets.find(w.start);
    Counters now = b == ser.buckets.end() ? Counters{} : b->second;
    add_to(now, d);  // checked: throws before this bucket changed (the undo log has the others)
    auto& t = s_.touch_counter(ser, w);
    ser.buckets[w.start] = now;
    auto& db = s_.dirty_ctr_[t.sid][w.start];
    db.end = w.end;
    db.c = now;
    db.seq = SqliteStore::kPending;
    t.after = &db;
    if (plan_id) {
      t.grouped = true;
      s_.group_buckets_.push_back(&db);
    }
  }
  if (plan_id) {
    bool dup = false;
    for (const auto& g : s_.groups_) dup = dup || g.plan_id == plan_id;
    if (dup) s_.group_buckets_.resize(first);  // the same buckets, already in the row
    else s_.groups_.push_back({plan_id, first, p.windows.size()});
  }
}

// The record of `id`: cached (a live hold, or changed since the checkpoint), else read from the
// table (a live hold is cached then; another record is kept in `other_`), or null.
RequestRecord* SqlTxn::lookup(const std::string& id) {
  if (auto it = s_.recs_.find(id); it != s_.recs_.end()) return &it->second.rec;
  RequestRecord r;
  int64_t plan_id = 0;
  if (auto& h = s_.st(SqliteStore::kGetHold).reset().bind(id); h.step()) {
    r = record_from_columns(h, &plan_id);
    h.finish();
  } else {
    h.finish();
    auto& s = s_.st(SqliteStore::kGetReq).reset().bind(id);
    if (!s.step()) {
      s.finish();
      return nullptr;
    }
    const auto* p = static_cast<const unsigned char*>(sqlite3_column_blob(s.raw(), 0));
    Dec d{p, p + sqlite3_column_bytes(s.raw(), 0)};
    if (d.done() || d.byte() != 'R') Dec::bad();
    plan_id = decode_record(d, 'R', nullptr, r);
    if (!d.done() || r.request_id != id) Dec::bad();
    s.finish();
  }
  r.plan = plan_id ? s_.plan_by_id(plan_id).plan : SqliteStore::empty_plan();
  if (r.state == ReqState::Held) {
    auto& slot = s_.recs_[id];
    slot.rec = std::move(r);
    slot.dirty = SqliteStore::kClean;
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
RequestRecord* SqlTxn::edit_request(const std::string& id) {
  auto* r = lookup(id);
  if (r && r != (other_ ? &*other_ : nullptr)) s_.touch_record(id);  // before the caller changes it in place
  return r;
}

void SqlTxn::save_request(const RequestRecord& r) {
  s_.touch_record(r.request_id);
  auto& e = s_.recs_[r.request_id];
  if (&e.rec != &r) e.rec = r;
  e.dirty = SqliteStore::kPending;
}

void SqlTxn::put_request(const RequestRecord& r) { save_request(r); }

const RequestRecord& SqlTxn::adopt_request(RequestRecord&& r) {
  s_.touch_record(r.request_id);  // a new request id (find_request found none)
  auto& e = s_.recs_[r.request_id];
  e.rec = std::move(r);
  e.dirty = SqliteStore::kPending;
  e.maybe_in_holds = false;  // a new request id: no row anywhere
  return e.rec;
}

void SqlTxn::append(LedgerEvent&& e, const std::shared_ptr<const Plan>& plan) {
  e.seq = s_.last_seq_ + 1;
  e.prev_hash = s_.last_hash_;
  // The body is stored without its windows array (the plan's window keys, kept once in
  // `plans`); scan_events puts the same bytes back at the same place. It is serialised with
  // an empty array and the plan's stored array is spliced in for the hash: the same bytes as
  // event_body() with the keys, without building them for every event.
  SqliteStore::PendingRow row;
  std::string body;
  if (plan && !plan->windows.empty()) {
    const auto& prow = s_.stored_plan(*plan, &plan);
    // Where the windows field goes in the stored body (left out of it, spliced in for the hash).
    size_t pos = direct_event_body(e, row.stored, false);
    if (pos == std::string::npos) {  // not written directly (see direct_event_body): nlohmann
      static constexpr std::string_view kNoWindows = ",\"windows\":[]";
      e.windows.clear();
      row.stored = event_body_json(e);
      // The first match is the field: a '"' after a ',' cannot be inside a JSON string, and the
      // fields before `windows` hold no objects that could have such a key.
      pos = row.stored.find(kNoWindows);
      if (pos != std::string::npos) row.stored.erase(pos, kNoWindows.size());
    }
    if (pos != std::string::npos) {
      body.reserve(row.stored.size() + prow.windows_field.size());
      body.append(row.stored, 0, pos).append(prow.windows_field).append(row.stored, pos, std::string::npos);
      row.plan_id = prow.id;
      row.wpos = static_cast<int64_t>(pos);
    } else {  // not expected; store the whole body
      e.windows = window_keys(*plan);
      body = row.stored = event_body(e);
    }
  } else {
    if (plan) e.windows = window_keys(*plan);
    body = row.stored = event_body(e);
  }
  e.hash = chain_hash(e.prev_hash, e.seq, body);
  row.seq = e.seq;
  row.hash = e.hash;
  row.ev.time = to_millis(e.time);
  row.ev.request_id = std::move(e.request_id);
  row.ev.subject = std::move(e.subject);
  row.ev.model = std::move(e.model);
  row.ev.provider = std::move(e.provider);
  row.ev.price_version = std::move(e.price_version);
  // Written when the operation ends (SqliteStore::job_flush), the last row with the
  // after-images of everything the operation changed.
  s_.pending_.push_back(std::move(row));
  s_.last_seq_ = e.seq;
  s_.last_hash_ = e.hash;
}

}  // namespace

std::unique_ptr<Store> make_sqlite_store(const std::string& path, const StoreOptions& options) {
  return std::make_unique<SqliteStore>(path, options);
}

}  // namespace budget::detail
