// libbudget — BudgetManager: hold before a call, meter a stream, charge after it.
//
// Thread safety: a BudgetManager is shared by all threads of a process; every method may be
// called concurrently. Operations on unrelated subjects do not serialise on a common lock
// (the memory store stripes its state; SQLite and Redis serialise in the store itself).
// Callbacks (alerts, denials) run on the thread that caused them, outside internal locks.
//
// Idempotency: every mutating call is keyed by a request id. Repeating a call with the same
// id returns the first result and changes nothing; reusing an id for a different operation or
// a different amount is a ConflictError.
#pragma once

#include <budget/clock.hpp>
#include <budget/error.hpp>
#include <budget/export.hpp>
#include <budget/ledger.hpp>
#include <budget/limits.hpp>
#include <budget/money.hpp>
#include <budget/scope.hpp>
#include <budget/usage.hpp>

#include <functional>
#include <iosfwd>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace budget {

namespace detail {
class Engine;
struct HoldState;
}  // namespace detail

// Options of a store opened from a URL (see docs/stores.md).
struct BUDGET_API StoreOptions {
  Duration timeout{2000};             // connect/command/busy timeout (0..100 years)
  int pool_size = 4;                  // Redis connections (at most 256)
  int64_t stream_maxlen = 1'000'000;  // Redis ledger stream cap (approximate)
};

struct BUDGET_API Options {
  // "memory", "sqlite:<path>" (default "sqlite:budget.db"), "redis://[user:pass@]host:port/db"
  std::string store = "sqlite:budget.db";
  StoreOptions store_options;
  std::string currency = "USD";
  // Time zone of calendar windows: an IANA name ("Europe/Paris", daylight saving included;
  // needs the system tz database) or, when empty, the fixed offset below (UTC by default).
  std::string time_zone;
  int utc_offset_minutes = 0;
  Duration default_ttl{10 * 60 * 1000};    // hold time-to-live
  uint32_t default_buffer_bp = 10000;      // hold = estimate x buffer (basis points: 12000 = 1.2)
  // Streaming: grow a hold by max(deficit, this fraction of the initial hold, min_growth).
  uint32_t growth_step_bp = 5000;
  Money min_growth = Money::from_nanos(1000);
  // Persist consumed spend every time it advanced by this much since the last persist
  // (0 = only when the hold grows). Bounds the spend a crash can leave unrecorded.
  Money persist_every = Money();
  bool fail_open = false;  // when the store is down: false = deny (default), true = allow
  std::shared_ptr<const Clock> clock;   // default: SystemClock
  std::shared_ptr<const Pricer> pricer; // prices (model, usage); default: none
  std::vector<Limit> limits;            // applied (upserted) at construction
};

// What to hold or check: money, or a model + expected usage priced by the Pricer.
struct BUDGET_API Estimate {
  Money cost;
  int64_t tokens = 0;  // counted against `tokens` limits
  std::string model;   // when set with `usage`, the cost is priced (and `cost` ignored)
  std::optional<Usage> usage;

  Estimate() = default;
  Estimate(Money c) : cost(c) {}  // NOLINT(google-explicit-constructor)
  static Estimate money(Money c, int64_t tokens = 0) { Estimate e(c); e.tokens = tokens; return e; }
  static Estimate priced(std::string model, Usage u) {
    Estimate e; e.model = std::move(model); e.usage = u; return e;
  }
};

// The actual charge at commit/record: money, or a model + actual usage.
struct BUDGET_API Charge {
  Money cost;
  int64_t tokens = 0;
  std::string model;
  std::optional<Usage> usage;
  std::string provider;

  Charge() = default;
  Charge(Money c) : cost(c) {}  // NOLINT(google-explicit-constructor)
  static Charge money(Money c, int64_t tokens = 0) { Charge x(c); x.tokens = tokens; return x; }
  static Charge priced(std::string model, Usage u) {
    Charge x; x.model = std::move(model); x.usage = u; return x;
  }
};

struct BUDGET_API RequestOptions {
  std::string request_id;                  // generated when empty
  std::optional<uint32_t> buffer_bp;       // default Options::default_buffer_bp
  std::optional<Duration> ttl;             // default Options::default_ttl
  std::string provider;
  std::map<std::string, std::string> metadata;  // recorded in the ledger (no prompt text!)
  std::string reason;                      // grants and adjustments; recorded as metadata key
                                           // "reason" (that key with another value: InvalidArgument)
};

// LimitExceeded: a limit has no room (Denial::scope names it). StoreUnavailable: the store
// could not answer (fail-closed). NotHeld (a consume's Stop): the request holds nothing — its
// hold expired or was committed or released (here or by another process), or its reserve was
// denied: the stream must stop, but no limit refused it (scope empty; not reported to denial
// observers).
enum class DenyReason : uint8_t { None, LimitExceeded, StoreUnavailable, NotHeld };

// Why a reserve/check/consume was refused.
struct BUDGET_API Denial {
  DenyReason reason = DenyReason::None;
  std::string scope;   // the first exhausted scope
  std::string window;  // its window ("day", "rolling:1h", ...)
  Metric metric = Metric::Cost;
  int64_t limit = 0, spent = 0, held = 0, remaining = 0, requested = 0;  // in the metric's unit
  std::optional<Timestamp> resets_at;  // none for `total`
  // true when spend alone leaves no room (a hard cap: HTTP 402); false when in-flight holds
  // or a short window (rate limit) are the cause, so a retry may succeed (HTTP 429).
  bool hard = false;
  std::string message;
};

class BUDGET_API Reservation {
 public:
  Reservation() = default;
  const std::string& request_id() const noexcept { return request_id_; }
  const Subject& subject() const noexcept { return subject_ ? *subject_ : default_subject(); }
  Money held() const noexcept { return Money::from_nanos(held_.cost); }
  int64_t held_tokens() const noexcept { return held_.tokens; }
  Timestamp expires_at() const noexcept { return expires_at_; }
  const std::string& model() const noexcept { return model_; }
  explicit operator bool() const noexcept { return !request_id_.empty(); }

 private:
  friend class detail::Engine;
  static const Subject& default_subject() noexcept {
    static const Subject s;
    return s;
  }
  std::string request_id_;
  std::shared_ptr<const Subject> subject_;  // shared with the engine's plan cache
  Amounts held_;
  Timestamp expires_at_{};
  std::string model_;
  std::shared_ptr<detail::HoldState> state_;  // in-process streaming state
};

struct BUDGET_API Decision {
  bool allowed = false;
  bool replayed = false;       // the request id had been seen: this is the first result
  bool fail_open = false;      // allowed only because the store was down and fail_open is on
  Reservation reservation;     // when allowed (reserve only)
  Denial denial;               // when not allowed
  Money estimate;              // the priced/buffered amount asked for
  explicit operator bool() const noexcept { return allowed; }
};

enum class Verdict : uint8_t { Continue, Stop };

struct BUDGET_API ConsumeResult {
  Verdict verdict = Verdict::Continue;
  Money consumed;   // running total of the stream
  Money held;       // current hold
  Denial denial;    // when Stop
  bool ok() const noexcept { return verdict == Verdict::Continue; }
};

struct BUDGET_API Receipt {
  std::string request_id;
  Money charged;                 // what this request was charged in total
  Money released;                // hold released (held - charged, >= 0)
  int64_t tokens = 0;
  bool over_hold = false;        // charged more than was held
  bool over_limit = false;       // a limit is now exceeded (spend is recorded anyway)
  std::vector<std::string> over_limit_scopes;
  bool after_expiry = false;     // committed after the hold had expired: recorded as adjustment
  bool replayed = false;
  std::string model, price_version;
  std::vector<LineItem> items;   // when priced
};

struct BUDGET_API LimitStatus {
  std::string key, scope, window;
  Metric metric = Metric::Cost;
  int64_t limit = 0;    // including grants
  int64_t granted = 0;
  int64_t spent = 0, held = 0, remaining = 0;
  Timestamp window_start{};
  std::optional<Timestamp> resets_at;
};

struct BUDGET_API Alert {
  std::string scope, window, limit_key;
  Metric metric = Metric::Cost;
  uint32_t threshold_pct = 0;
  int64_t limit = 0, spent = 0;
  Timestamp window_start{};
  std::string request_id;  // the operation, or the expired hold, whose spend crossed it
};

class BUDGET_API BudgetManager {
 public:
  explicit BudgetManager(Options options = {});
  explicit BudgetManager(std::string store_url);
  ~BudgetManager();
  BudgetManager(const BudgetManager&) = delete;
  BudgetManager& operator=(const BudgetManager&) = delete;

  // Limits (stored in the store, so all processes sharing it see them).
  void set_limit(const Limit& limit);
  bool remove_limit(std::string_view scope, Metric metric, const Window& window);
  std::vector<Limit> limits();

  // The lifecycle.
  Decision reserve(const Subject& subject, const Estimate& estimate, const RequestOptions& opts = {});
  ConsumeResult consume(Reservation& reservation, Money amount, int64_t tokens = 0);
  ConsumeResult consume(std::string_view request_id, Money amount, int64_t tokens = 0);
  Receipt commit(const Reservation& reservation, const Charge& actual);
  Receipt commit(std::string_view request_id, const Charge& actual);
  Receipt release(const Reservation& reservation);
  Receipt release(std::string_view request_id);
  // Settles holds whose TTL passed (also done lazily by other operations). Returns how many.
  size_t expire_holds();

  // Check-then-charge convenience.
  Decision check(const Subject& subject, const Estimate& estimate);
  Receipt record(const Subject& subject, const Charge& actual, const RequestOptions& opts = {});

  // Corrections: a grant raises the `total` limits of a scope (top-up, credit); an
  // adjustment adds (or, negative, removes) spend on every scope of a subject.
  void grant(const Scope& scope, Money amount, const RequestOptions& opts = {});
  void adjust(const Subject& subject, Money delta, const RequestOptions& opts = {});

  std::vector<LimitStatus> status(const Scope& scope);

  // Observers: called once per window per threshold crossing (a grant that raised the cap of
  // a `total` window re-arms it; docs/concepts.md) / for every denial. Observers are added,
  // never removed; an empty callback is an InvalidArgumentError.
  void on_alert(std::function<void(const Alert&)> callback);
  void on_denial(std::function<void(const Denial&, const Subject&)> callback);

  // Ledger.
  std::vector<LedgerEvent> events(const LedgerQuery& query = {});
  void export_csv(std::ostream& out, const LedgerQuery& query = {});
  void export_jsonl(std::ostream& out, const LedgerQuery& query = {});
  std::vector<AggregateRow> aggregate(const LedgerQuery& query = {}, GroupBy by = {});
  VerifyReport verify();

  // Prometheus text exposition of the manager's counters.
  std::string metrics_text() const;

  const Options& options() const noexcept;
  Timestamp now() const;

 private:
  std::unique_ptr<detail::Engine> engine_;
};

}  // namespace budget
