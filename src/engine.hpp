// libbudget — the engine behind BudgetManager (internal).
#pragma once

#include <budget/manager.hpp>

#include <atomic>
#include <mutex>
#include <unordered_map>
#include <unordered_set>

#include "hash.hpp"
#include "spinlock.hpp"
#include "store.hpp"
#include "windows.hpp"

namespace budget::detail {

struct LimitTable {
  uint64_t version = 0;     // the store's limits version (what operations are checked against)
  uint64_t generation = 0;  // this engine's install count: plan caches key on it (a store whose
                            // data was lost counts versions again from the start)
  std::unordered_map<std::string, std::vector<Limit>> by_scope;  // "user:alice", "user:*", "global"
};

struct HoldState {
  SpinLock m;
  std::string request_id;
  size_t id_hash = 0;  // fast_hash(request_id)
  std::shared_ptr<const Plan> plan;
  Amounts initial, held, consumed, persisted;
  int64_t expires_at = INT64_MAX;
  bool stopped = false;
  bool fail_open = false;
  // The request's subject: what on_denial is told when its stream is refused, and for a
  // fail-open state (allowed while the store was down, nothing held) the subject its commit
  // records on, so a commit by request id charges the same scopes.
  std::shared_ptr<const Subject> subject;
  Denial denial;
  // Settled while a stream may still meter it ("committed", "released"): its Stop denial is
  // written when a consume asks (a settle is hot; building a denial's text is not free).
  const char* settled_as = nullptr;
  bool alerts = false;        // the plan has threshold alerts (a settle must report counter states)
  bool token_checks = false;  // the plan limits tokens (a stream's token deficit matters)
  // The engine's table of stream states is intrusive: a state is its own node (see HoldTable).
  HoldState* next_in_table = nullptr;
  std::shared_ptr<HoldState> table_ref;  // the table's reference while listed (under its lock)
  void set_plan(std::shared_ptr<const Plan> p) {
    plan = std::move(p);
    alerts = token_checks = false;
    if (plan)
      for (const auto& c : plan->checks) {
        alerts = alerts || !c.alerts.empty();
        token_checks = token_checks || c.metric == Metric::Tokens;
      }
  }
};

// In-process stream states by request id, striped: each stripe an intrusive chained hash table
// (inserting allocates nothing once the bucket array has grown; erasing needs no search of a
// node to free). A listed state is kept alive by its own table_ref.
class HoldTable {
 public:
  static constexpr size_t kStripes = 256;
  ~HoldTable() { clear_if([](const HoldState&) { return true; }); }
  std::shared_ptr<HoldState> find(std::string_view id, size_t h);
  // Lists `hs` unless a state of the same id is listed; returns the listed one.
  std::shared_ptr<HoldState> insert(const std::shared_ptr<HoldState>& hs);
  // Unlists `hs` if it is listed (no look-up by id); false if it was not.
  bool erase(HoldState& hs);
  // Unlists the state of `id`, if any.
  void erase(std::string_view id, size_t h);
  template <class P>
  void clear_if(P&& pred) {
    for (auto& st : stripes_) {
      std::vector<std::shared_ptr<HoldState>> drop;  // released outside the lock
      {
        std::lock_guard lk(st.m);
        for (auto& b : st.buckets)
          for (HoldState** link = &b; *link;) {
            HoldState* x = *link;
            if (pred(*x)) {
              *link = x->next_in_table;
              x->next_in_table = nullptr;
              drop.push_back(std::move(x->table_ref));
              --st.n;
            } else {
              link = &x->next_in_table;
            }
          }
      }
    }
  }
  size_t size();

 private:
  struct alignas(64) Stripe {
    SpinLock m;
    std::vector<HoldState*> buckets;  // size: a power of two (or empty)
    size_t n = 0;
  };
  Stripe& stripe_of(size_t h) { return stripes_[(h >> 52) % kStripes]; }
  static HoldState** bucket(Stripe& st, size_t h) { return &st.buckets[h & (st.buckets.size() - 1)]; }
  static void grow(Stripe& st);
  std::array<Stripe, kStripes> stripes_;
};

class Engine {
 public:
  explicit Engine(Options options);

  void set_limit(const Limit& limit);
  bool remove_limit(std::string_view scope, Metric metric, const Window& window);
  std::vector<Limit> limits();

  Decision reserve(const Subject& subject, const Estimate& estimate, const RequestOptions& opts, bool dry_run);
  ConsumeResult consume(Reservation& r, Money amount, int64_t tokens);
  // consume() under the stream state's lock; `denied` is set when this call was refused by a
  // limit or a fail-closed store (a new Stop that on_denial reports, outside the lock).
  ConsumeResult consume_locked(Reservation& r, Money amount, int64_t tokens, bool& denied);
  ConsumeResult consume(std::string_view request_id, Money amount, int64_t tokens);
  Receipt settle(const Reservation* r, std::string_view request_id, const Charge* actual);
  size_t expire_holds();
  Receipt record(const Subject& subject, const Charge& actual, const RequestOptions& opts);
  // record() with a given fingerprint (a fail-open commit passes its commit's, so that repeating
  // the commit by request id replays it).
  Receipt record_as(const Subject& subject, const Charge& actual, const RequestOptions& opts,
                    std::string fingerprint);
  void grant(const Scope& scope, Money amount, const RequestOptions& opts);
  void adjust(const Subject& subject, Money delta, const RequestOptions& opts);
  std::vector<LimitStatus> status(const Scope& scope);

  void on_alert(std::function<void(const Alert&)> cb);
  void on_denial(std::function<void(const Denial&, const Subject&)> cb);

  std::vector<LedgerEvent> events(const LedgerQuery& q);
  void export_csv(std::ostream& out, const LedgerQuery& q);
  void export_jsonl(std::ostream& out, const LedgerQuery& q);
  std::vector<AggregateRow> aggregate(const LedgerQuery& q, GroupBy by);
  VerifyReport verify();
  std::string metrics_text() const;

  const Options& options() const noexcept { return opts_; }
  int64_t now_ms() const { return to_millis(clock_->now()); }

 private:
  struct Priced {
    Amounts amounts;
    PriceQuote quote;
    bool priced = false;
  };
  // brief: cost, model and provider only (a reserve); else the full quote with line items.
  Priced price(const std::string& model, const std::optional<Usage>& usage, Money cost, int64_t tokens, int64_t now,
               bool brief = false);
  std::shared_ptr<const LimitTable> table();
  // The calling thread's cached table itself: valid until this thread's next table call.
  const std::shared_ptr<const LimitTable>& table_ref();
  void reload_limits();
  // The plan of a subject at `now`; valid for every instant in [*valid_from, *valid_to).
  std::shared_ptr<const Plan> plan_for(const std::vector<Scope>& scopes, int64_t now, const LimitTable& t,
                                       int64_t* valid_from = nullptr, int64_t* valid_to = nullptr) const;
  // plan_for through a cache keyed by subject and limits version (no allocation on a hit).
  std::shared_ptr<const Plan> cached_plan(const Subject& subject, int64_t now, const LimitTable& t,
                                          std::shared_ptr<const Subject>* shared = nullptr,
                                          int64_t* valid_from = nullptr, int64_t* valid_to = nullptr);
  // A per-thread memo of the last subject this thread reserved for: its plan (as cached_plan
  // gives it, revalidated by limits version and validity interval), the subject shared with
  // reservations, its scope strings and the fingerprint state after "reserve" + subject.
  // Compared scope by scope: no key built, no hash, no lock on a hit.
  struct SubjectMemo;
  SubjectMemo& subject_memo(const Subject& subject);
  const std::shared_ptr<const Plan>& memo_plan(SubjectMemo& m, int64_t now, const LimitTable& t);
  Denial make_denial(const Plan& plan, int failing, const CheckState& st, const Amounts& need) const;
  void fire_alerts(const Plan& plan, const std::vector<CheckState>& before, const std::vector<CheckState>& after,
                   const std::string& request_id);
  void notify_denial(const Denial& d, const Subject& s);
  void maybe_expire(int64_t now);
  // An operation's store call settled `n` expired holds first (the Redis scripts sweep): count
  // them and report the alerts their spend crossed.
  void expired_by_store(size_t n, int64_t now);
  void alert_expired(int64_t now);
  std::shared_ptr<HoldState> hold_state(std::string_view request_id, bool create);
  void forget_hold(const std::string& request_id);
  void forget_hold(HoldState& hs) {
    if (!holds_.erase(hs)) forget_hold(hs.request_id);  // another state of the id may be listed
  }
  void forget_expired_holds(int64_t now);
  static constexpr int64_t kFailOpenKeepMs = 3'600'000;  // a fail-open state outlives its TTL by an hour
  Receipt receipt_from(const SettleOut& out, const Priced* priced);
  // Runs f(limits) -> (stale?, result) until the store accepts the plan's limits version.
  template <class F>
  auto with_fresh_limits(F&& f);
  static std::string request_id_of(const RequestOptions& o, int64_t now);  // given or generated, validated
  // The id a fail-open commit records under when the store denied its reserve after all.
  static std::string fail_open_record_id(const std::string& request_id);
  // record / grant / adjust: runs the direct operation on the subject's plan (or, without a
  // subject, on the `total` window of op.subject[0]) and fires the alerts it crossed.
  DirectOut run_direct(DirectOp op, const Subject* subject);

  Options opts_;
  Zone zone_;
  std::shared_ptr<const Clock> clock_;
  std::unique_ptr<Store> store_;

  mutable std::mutex limits_m_;
  std::shared_ptr<const LimitTable> table_;
  uint64_t table_generation_ = 0;                 // under limits_m_
  std::atomic<uint64_t> reload_tickets_{0};
  uint64_t installed_ticket_ = 0;                 // under limits_m_: the reload table_ came from

  std::mutex cb_m_;
  std::vector<std::function<void(const Alert&)>> alert_cbs_;
  std::vector<std::function<void(const Denial&, const Subject&)>> denial_cbs_;
  std::atomic<bool> has_alert_cbs_{false}, has_denial_cbs_{false};
  // Crossings this process reported (limit, window start, threshold, cap -> window end), so
  // each fires once; entries of ended windows are dropped as the map grows.
  std::mutex fired_m_;
  std::unordered_map<std::string, int64_t> fired_;
  size_t fired_prune_at_ = 1024;

  struct SvHash {
    using is_transparent = void;
    size_t operator()(std::string_view s) const noexcept { return std::hash<std::string_view>{}(s); }
  };
  struct CachedPlan {
    uint64_t version = 0;
    int64_t valid_from = 0, valid_to = 0;
    std::shared_ptr<const Plan> plan;
    std::shared_ptr<const Subject> subject;  // handed to reservations (no copy per reserve)
  };
  static constexpr size_t kPlanStripes = 64, kPlansPerStripe = 1024;
  struct alignas(64) PlanStripe {
    std::mutex m;
    std::unordered_map<std::string, CachedPlan, SvHash, std::equal_to<>> map;
  };
  std::array<PlanStripe, kPlanStripes> plans_;

  HoldTable holds_;

  std::mutex sweep_m_;
  std::atomic<int64_t> next_deadline_{0};
  std::atomic<int64_t> last_sweep_{0};
  std::atomic<int64_t> expire_scan_seq_{0};  // the last expire event read back for alerts

  // A counter written by many threads: one cache line per shard, summed when read, so hot
  // paths of unrelated requests never write the same line.
  // The first kOwned threads of the process each own a cell, which they update with a plain
  // load and store (no atomic read-modify-write: no lock prefix on the hot path); later
  // threads share the other cells with atomic adds. Readers sum all cells.
  class ShardedCounter {
   public:
    ShardedCounter& operator++() { return *this += 1; }
    ShardedCounter& operator+=(int64_t v) {
      const size_t i = shard();
      auto& c = cells_[i].v;
      if (i < kOwned) c.store(c.load(std::memory_order_relaxed) + v, std::memory_order_relaxed);
      else c.fetch_add(v, std::memory_order_relaxed);
      return *this;
    }
    int64_t load() const {
      int64_t sum = 0;
      for (const auto& s : cells_) sum += s.v.load(std::memory_order_relaxed);
      return sum;
    }

   private:
    static constexpr size_t kOwned = 8, kShared = 8;
    static size_t shard();  // < kOwned: this thread's own cell
    struct alignas(64) Cell {
      std::atomic<int64_t> v{0};
    };
    std::array<Cell, kOwned + kShared> cells_;
  };
  struct Counters {
    ShardedCounter reserve_allowed, reserve_denied, checks, commits, releases, records, expired, stream_stops,
        fail_open, store_errors, spend_nanos, tokens, alerts;
  };
  mutable Counters m_;
  // Limits: readers use a per-thread copy revalidated by one atomic epoch (written only when
  // the limits change), so the hot path takes no lock and writes no shared cache line.
  const uint64_t engine_id_;
  std::atomic<uint64_t> table_epoch_{0};
};

// 15 characters: 7 of `now_ms` (the manager's clock) and 8 random, ordered by time.
std::string generate_request_id(int64_t now_ms);

}  // namespace budget::detail
