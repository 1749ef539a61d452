// libbudget — the Store interface (internal).
//
// The engine (BudgetManager) turns a call into a self-contained operation: the concrete
// windows (counters) of every limit of every scope of the subject at "now", the checks to
// make against them, and the deltas to apply. A Store executes each operation atomically and
// idempotently (keyed by request id) as ONE unit: a locked section (memory), one transaction
// (SQLite), or one server-side script and round trip (Redis). The engine never reads and then
// writes in two steps, so no race can overspend a limit.
//
// Stores report state; they never throw for a denial. They throw budget::Error subclasses for
// NotFound / Conflict / StoreUnavailable.
#pragma once

#include <budget/error.hpp>
#include <budget/ledger.hpp>
#include <budget/limits.hpp>
#include <budget/manager.hpp>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "int128.hpp"

namespace budget::detail {

constexpr int64_t kForever = INT64_MAX;

// A request id reused for a different operation (every store's wording).
inline ConflictError conflict_error(const std::string& request_id) {
  return ConflictError("request id '" + request_id + "' was already used for a different operation");
}

// One counter set of one scope over one window. The counters live in buckets: calendar,
// total and custom windows have one bucket per window; rolling windows have many small buckets.
// A check sums every bucket of the series starting at or after read_from (see Txn::sum: later
// buckets count too, which keeps a hold that grows after its bucket passed, and hosts whose
// clocks differ, on the safe side).
struct WindowRef {
  std::string scope;   // "user:alice"
  std::string window;  // canonical window text: "day", "rolling:1h", "total", ...
  int64_t start = 0;   // the bucket written to (ms since epoch)
  int64_t end = 0;     // its end (kForever for total)
  int64_t read_from = 0;
  std::string series_key;   // series(), computed once by seal() (plans are cached and shared)
  size_t series_hash = 0;   // std::hash of series_key
  std::string key() const;  // "scope|window|start" (unambiguous: parsed from the right)
  std::string series() const { return scope + '|' + window; }  // all buckets of the window
  void seal() {
    series_key = series();
    series_hash = std::hash<std::string>{}(series_key);
  }
  bool operator==(const WindowRef&) const = default;
};
// Inverse of WindowRef::key (start/end/read_from = start).
bool parse_window_key(std::string_view key, std::string* scope, std::string* window, int64_t* start);

struct Check {
  uint16_t window = 0;  // index into Plan::windows
  Metric metric = Metric::Cost;
  int64_t limit = 0;
  bool grantable = false;        // a `total` window: grants raise the limit
  int64_t resets_at = 0;         // 0 = never
  std::string limit_key;
  std::vector<uint32_t> alerts;  // engine only
  bool operator==(const Check&) const = default;
};

// What a store resolved for one plan (the memory store: pointers to the plan's counters), so
// a plan cached by the engine is looked up by name once, not on every operation.
struct PlanHandles {
  virtual ~PlanHandles() = default;
  const void* owner = nullptr;  // the store that attached them
};

struct Plan {
  std::vector<WindowRef> windows;
  std::vector<Check> checks;
  uint64_t limits_version = 0;
  std::string encoded;  // encode_plan(*this), filled once by the engine (stores that persist plans)
  // Attached at most once by the store (compare-and-swap from null), freed with the plan,
  // never copied: a copy is a different plan to the store.
  mutable std::atomic<PlanHandles*> handles{nullptr};

  Plan() = default;
  Plan(const Plan& o) : windows(o.windows), checks(o.checks), limits_version(o.limits_version), encoded(o.encoded) {}
  Plan& operator=(const Plan&) = delete;
  ~Plan() { delete handles.load(std::memory_order_acquire); }
};

struct Counters {
  Amounts spent, held, granted;
};
// dst = src, a few instructions when src is empty (model, provider, price version and
// metadata usually are on the hot path).
inline void assign_str(std::string& dst, const std::string& src) {
  if (src.empty()) dst.clear();
  else dst = src;
}

inline int64_t metric_of(const Amounts& a, Metric m) noexcept {
  switch (m) {
    case Metric::Cost: return a.cost;
    case Metric::Tokens: return a.tokens;
    case Metric::Requests: return a.requests;
  }
  return 0;
}
inline Amounts& operator+=(Amounts& a, const Amounts& b) {  // checked
  a.cost = checked_add(a.cost, b.cost);
  a.tokens = checked_add(a.tokens, b.tokens);
  a.requests = checked_add(a.requests, b.requests);
  return a;
}
inline Amounts operator-(const Amounts& a) {  // checked
  return {checked_sub(0, a.cost), checked_sub(0, a.tokens), checked_sub(0, a.requests)};
}
inline Amounts operator+(Amounts a, const Amounts& b) { return a += b; }
inline Amounts operator-(Amounts a, const Amounts& b) { return a += -b; }

// The state of one check: summed counters of its metric.
struct CheckState {
  int64_t spent = 0, held = 0, granted = 0;
};
// The allowance rule, shared by every store (and mirrored in the Redis script):
// room iff spent + held + need <= limit (+ granted), and a need of 0 still needs some room.
inline bool has_room(const Check& c, const CheckState& s, int64_t need) noexcept {
  int128 cap = static_cast<int128>(c.limit) + (c.grantable ? s.granted : 0);
  int128 used = static_cast<int128>(s.spent) + s.held;
  if (need == 0) return used < cap;
  return used + need <= cap;
}

enum class ReqState : uint8_t { Held, Committed, Released, Expired, Denied, Recorded, Granted, Adjusted };
const char* to_string(ReqState s) noexcept;

struct RequestRecord {
  std::string request_id;
  ReqState state = ReqState::Held;
  std::vector<std::string> subject;
  std::shared_ptr<const Plan> plan;
  Amounts held, consumed, charged;
  int64_t created_at = 0, expires_at = 0;
  bool over_hold = false, over_limit = false, after_expiry = false;
  std::string model, provider, price_version;
  std::string fingerprint;  // what the first call asked, to tell a replay from a conflict
  int failing_check = -1;   // Denied: which check
  CheckState failing_state; // Denied: its state then
};

// What expiry charges a hold: what was consumed (last persisted), but on a metric that one of
// the plan's checks limits never more than the hold. Consumption past the hold is what a
// refused growth (Stop) recorded; expiry is no commit, and only a commit may spend past its
// hold (flagged). Mirrored by expire_rec in the Redis scripts.
inline Amounts expiry_charge(const Plan& p, const RequestRecord& rec) {
  Amounts c = rec.consumed;
  // The request itself counts as a commit would count it (each reservation counts 1): a hold
  // is released by the app when the call did not happen; one left to expire was admitted and
  // most likely sent (the process died, or forgot to commit), so a requests/minute limit sees it.
  c.requests = rec.held.requests;
  for (const auto& k : p.checks) {
    if (k.metric == Metric::Cost) c.cost = std::min(c.cost, rec.held.cost);
    if (k.metric == Metric::Tokens) c.tokens = std::min(c.tokens, rec.held.tokens);
  }
  return c;
}

// ---- operations --------------------------------------------------------------------------
struct ReserveOp {
  std::string request_id;
  std::vector<std::string> subject;
  std::shared_ptr<const Plan> plan;
  Amounts amount;
  int64_t now = 0, expires_at = 0;
  std::string model, provider, metadata, fingerprint;
  bool dry_run = false;  // check(): nothing is written
};
struct ReserveOut {
  // Conflict: the request id was used for another operation (a store whose operation swept
  // first reports it so, and the engine throws after reporting the sweep; others throw).
  enum Status { Allowed, Denied, Stale, Conflict } status = Allowed;
  bool replayed = false;
  int failing_check = -1;
  CheckState failing_state;
  std::shared_ptr<const Plan> plan;  // the plan in force (the recorded one on replay)
  Amounts held;
  int64_t expires_at = 0;
  // Holds whose TTL had passed that the operation settled first (the Redis scripts sweep
  // before they reserve): the engine reports the alerts their spend crossed.
  size_t swept = 0;
};

// Streaming: grow the hold by `delta` (all-or-nothing over every check of the reservation's
// plan) and persist `consumed`. delta = 0 only persists `consumed`.
struct GrowOp {
  std::string request_id;
  Amounts delta, consumed;
  int64_t now = 0;
};
struct GrowOut {
  enum Status { Grown, Denied, NotHeld } status = Grown;
  ReqState state = ReqState::Held;
  int failing_check = -1;
  CheckState failing_state;
  std::shared_ptr<const Plan> plan;
  Amounts held;
};

struct SettleOp {
  enum Kind { Commit, Release } kind = Commit;
  std::string request_id;
  Amounts charge;  // Commit
  std::optional<Usage> usage;
  std::string model, provider, price_version, metadata, fingerprint;
  int64_t now = 0;
  // The record's plan as this process knows it (from the reservation), or null. A hint only:
  // a store may use it to lock before looking the record up, and must check it.
  std::shared_ptr<const Plan> plan_hint;
  // Whether SettleOut::before/after are wanted (threshold alerts). When false they are filled
  // only if the commit left a limit exceeded (the receipt names those scopes).
  bool want_states = true;
};
struct SettleOut {
  // After the operation. txn_settle fills what a receipt shows (id, state, plan, amounts,
  // times, flags, model, price version) and leaves subject, provider and fingerprint empty.
  RequestRecord record;
  bool replayed = false;
  Amounts released;
  std::vector<CheckState> before, after;  // per check of record.plan (empty on replay)
};

// record / adjust / grant: direct deltas on the plan's windows.
struct DirectOp {
  EventType type = EventType::Record;
  std::string request_id;
  std::vector<std::string> subject;
  std::shared_ptr<const Plan> plan;
  Amounts spent, granted;
  std::optional<Usage> usage;
  std::string model, provider, price_version, metadata, fingerprint;
  int64_t now = 0;
};
struct DirectOut {
  bool stale = false, replayed = false;
  bool conflict = false;  // as ReserveOut::Conflict
  size_t swept = 0;  // as ReserveOut::swept
  RequestRecord record;
  std::vector<CheckState> before, after;
};

struct StoredCounter {
  std::string key;  // WindowRef::key()
  int64_t end = 0;
  Counters counters;
};

class Store {
 public:
  virtual ~Store() = default;
  virtual std::string describe() const = 0;

  // Limits, versioned: every operation carries the version its plan was made with and a
  // store answers Stale when another process changed the limits since.
  virtual std::vector<Limit> load_limits(uint64_t* version) = 0;
  virtual uint64_t put_limit(const Limit& limit) = 0;                       // new version
  virtual bool remove_limit(const std::string& key, uint64_t* version) = 0;
  // True (once) when load_limits found the store's namespace created anew since this store
  // last read it: its data was lost (Redis: FLUSHALL, a restart without persistence), limits
  // included, and its limits version started again.
  virtual bool namespace_reset() { return false; }

  virtual ReserveOut reserve(const ReserveOp& op) = 0;
  virtual GrowOut grow(const GrowOp& op) = 0;
  virtual SettleOut settle(const SettleOp& op) = 0;
  virtual DirectOut direct(const DirectOp& op) = 0;
  // Settles up to `max` holds whose deadline <= now. Returns how many.
  virtual size_t expire(int64_t now, size_t max) = 0;
  // Earliest deadline of a live hold (kForever if none), a hint for lazy expiry.
  virtual int64_t next_deadline() = 0;

  virtual std::optional<RequestRecord> get_request(const std::string& request_id) = 0;
  virtual std::vector<CheckState> read(const Plan& plan) = 0;
  // Events in seq order; the callback returns false to stop.
  virtual void scan_events(const LedgerQuery& q, const std::function<bool(const LedgerEvent&)>& f) = 0;
  // The same events, whose prev_hash / hash may be left empty: for readers that need only their
  // contents after q.after_seq (the engine's alert read-back). A store that computes the chain
  // while reading (Redis without a ledger sink) starts at after_seq instead of the first event.
  virtual void scan_events_unchained(const LedgerQuery& q, const std::function<bool(const LedgerEvent&)>& f) {
    scan_events(q, f);
  }
  virtual void scan_counters(const std::function<void(const StoredCounter&)>& f) = 0;
  // Whether counters of windows that ended may be gone (Redis TTLs them).
  virtual bool expires_counters() const { return false; }
};

// The longest store timeout (StoreOptions::timeout, a Redis URL's `timeout`): 100 years.
inline constexpr int64_t kMaxStoreTimeoutMs = 100LL * 366 * 24 * 3600 * 1000;
std::unique_ptr<Store> open_store(const std::string& url, const StoreOptions& options);
std::unique_ptr<Store> make_memory_store();
std::unique_ptr<Store> make_sqlite_store(const std::string& path, const StoreOptions& options);
#ifdef BUDGET_WITH_REDIS
std::unique_ptr<Store> make_redis_store(const std::string& url, const StoreOptions& options);
#endif

}  // namespace budget::detail
