// The memory store: all state in process, striped so unrelated subjects never share a lock.
//
// Counters live in the stripe of their series (scope|window), request records and their
// ledger events in the stripe of the request id. An operation locks the stripes it touches
// in ascending order (no deadlock), runs the shared state machine (txn.hpp) and unlocks.
// Ledger events get their sequence number from one atomic counter; the hash chain is
// computed when events are read (sealing), off the hot path.
#include <budget/error.hpp>

#include <algorithm>
#include <atomic>
#include <map>
#include <mutex>
#include <set>
#include <unordered_map>

#include "ledger_codec.hpp"
#include "stores/txn.hpp"

namespace budget::detail {
namespace {

constexpr size_t kStripes = 1024;  // an operation locks ~7: few collisions between threads

struct BucketRow {
  int64_t end = 0;
  Counters c;
};

struct alignas(64) Stripe {
  std::mutex m;
  struct SvHash {
    using is_transparent = void;
    size_t operator()(std::string_view s) const noexcept { return std::hash<std::string_view>{}(s); }
  };
  std::unordered_map<std::string, std::map<int64_t, BucketRow>, SvHash, std::equal_to<>> series;
  std::unordered_map<std::string, RequestRecord> requests;
  std::set<std::pair<int64_t, std::string>> deadlines;
  std::vector<std::pair<LedgerEvent, std::shared_ptr<const Plan>>> events;  // windows filled when sealed
};

size_t stripe_of(std::string_view s) { return std::hash<std::string_view>{}(s) % kStripes; }

// A window's series key and its hash, without allocating when the plan was sealed.
struct Series {
  explicit Series(const WindowRef& w) {
    if (w.series_key.empty()) {
      tmp = w.series();
      key = tmp;
      hash = std::hash<std::string_view>{}(key);
    } else {
      key = w.series_key;
      hash = w.series_hash;
    }
  }
  std::string tmp;
  std::string_view key;
  size_t hash;
  size_t stripe() const { return hash % kStripes; }
};

class MemoryStore;

class MemTxn final : public Txn {
 public:
  explicit MemTxn(MemoryStore& s) : s_(s) {}
  uint64_t limits_version() override;
  std::vector<Counters> sum_all(const Plan& p) override {
    std::vector<Counters> out;
    out.reserve(p.windows.size());
    for (const auto& w : p.windows) out.push_back(sum(w));
    return out;
  }
  void add_all(const Plan& p, const Counters& delta) override {
    for (const auto& w : p.windows) add(w, delta);
  }
  std::optional<RequestRecord> get_request(const std::string& id) override;
  void put_request(const RequestRecord& rec) override;
  void append(LedgerEvent&& e, const std::shared_ptr<const Plan>& plan) override;

 private:
  Counters sum(const WindowRef& w);
  void add(const WindowRef& w, const Counters& delta);
  MemoryStore& s_;
};

class MemoryStore final : public Store {
 public:
  std::string describe() const override { return "memory"; }

  std::vector<Limit> load_limits(uint64_t* version) override {
    std::lock_guard lk(limits_m_);
    *version = limits_version_.load();
    std::vector<Limit> out;
    for (auto& [k, l] : limits_) out.push_back(l);
    return out;
  }
  uint64_t put_limit(const Limit& l) override {
    std::lock_guard lk(limits_m_);
    limits_[l.key()] = l;
    return ++limits_version_;
  }
  bool remove_limit(const std::string& key, uint64_t* version) override {
    std::lock_guard lk(limits_m_);
    bool erased = limits_.erase(key) > 0;
    if (erased) ++limits_version_;
    *version = limits_version_.load();
    return erased;
  }

  ReserveOut reserve(const ReserveOp& op) override {
    auto set = stripes_for(*op.plan, &op.request_id);
    return locked(set, [&](Txn& t) { return txn_reserve(t, op); });
  }
  DirectOut direct(const DirectOp& op) override {
    auto set = stripes_for(*op.plan, &op.request_id);
    return locked(set, [&](Txn& t) { return txn_direct(t, op); });
  }
  GrowOut grow(const GrowOp& op) override {
    auto set = stripes_for_request(op.request_id);
    return locked(set, [&](Txn& t) { return txn_grow(t, op); });
  }
  SettleOut settle(const SettleOp& op) override {
    auto set = stripes_for_request(op.request_id);
    return locked(set, [&](Txn& t) { return txn_settle(t, op); });
  }

  size_t expire(int64_t now, size_t max) override {
    std::vector<std::string> due;
    for (auto& st : stripes_) {
      std::lock_guard lk(st.m);
      for (auto it = st.deadlines.begin(); it != st.deadlines.end() && it->first <= now && due.size() < max; ++it)
        due.push_back(it->second);
    }
    size_t n = 0;
    for (const auto& id : due) {
      auto set = stripes_for_request(id);
      n += locked(set, [&](Txn& t) {
        auto rec = t.get_request(id);
        if (!rec || rec->state != ReqState::Held || rec->expires_at > now) return 0;
        txn_expire(t, *rec, now);
        return 1;
      });
    }
    refresh_deadline();
    return n;
  }
  int64_t next_deadline() override { return next_deadline_.load(std::memory_order_relaxed); }

  std::optional<RequestRecord> get_request(const std::string& id) override {
    auto& st = stripes_[stripe_of(id)];
    std::lock_guard lk(st.m);
    auto it = st.requests.find(id);
    if (it == st.requests.end()) return std::nullopt;
    return it->second;
  }

  std::vector<CheckState> read(const Plan& plan) override {
    auto set = stripes_for(plan, nullptr);
    return locked(set, [&](Txn& t) { return txn_read(t, plan); });
  }

  void scan_events(const LedgerQuery& q, const std::function<bool(const LedgerEvent&)>& f) override {
    std::lock_guard lk(seal_m_);
    seal();
    size_t n = 0;
    auto it = std::upper_bound(sealed_.begin(), sealed_.end(), q.after_seq,
                               [](int64_t s, const LedgerEvent& e) { return s < e.seq; });
    for (; it != sealed_.end() && n < q.limit; ++it) {
      if (!matches(q, *it)) continue;
      ++n;
      if (!f(*it)) break;
    }
  }

  void scan_counters(const std::function<void(const StoredCounter&)>& f) override {
    for (auto& st : stripes_) {
      std::lock_guard lk(st.m);
      for (auto& [series, buckets] : st.series)
        for (auto& [start, row] : buckets) f(StoredCounter{series + '|' + std::to_string(start), row.end, row.c});
    }
  }

 private:
  friend class MemTxn;
  using StripeSet = std::vector<size_t>;

  StripeSet stripes_for(const Plan& plan, const std::string* request_id) {
    StripeSet set;
    set.reserve(plan.windows.size() + 1);
    for (const auto& w : plan.windows) set.push_back(Series(w).stripe());
    if (request_id) set.push_back(stripe_of(*request_id));
    std::sort(set.begin(), set.end());
    set.erase(std::unique(set.begin(), set.end()), set.end());
    return set;
  }
  StripeSet stripes_for_request(const std::string& id) {
    std::shared_ptr<const Plan> plan;
    {
      auto& st = stripes_[stripe_of(id)];
      std::lock_guard lk(st.m);
      auto it = st.requests.find(id);
      if (it != st.requests.end()) plan = it->second.plan;
    }
    if (!plan) return {stripe_of(id)};
    return stripes_for(*plan, &id);  // a record's plan never changes, so this set stays right
  }

  template <class F>
  auto locked(const StripeSet& set, F&& f) -> decltype(f(std::declval<Txn&>())) {
    for (size_t i : set) stripes_[i].m.lock();
    struct Unlock {
      MemoryStore* s;
      const StripeSet* set;
      ~Unlock() {
        for (auto it = set->rbegin(); it != set->rend(); ++it) s->stripes_[*it].m.unlock();
      }
    } unlock{this, &set};
    MemTxn t(*this);
    return f(t);
  }

  void refresh_deadline() {
    int64_t best = kForever;
    for (auto& st : stripes_) {
      std::lock_guard lk(st.m);
      if (!st.deadlines.empty()) best = std::min(best, st.deadlines.begin()->first);
    }
    next_deadline_.store(best, std::memory_order_relaxed);
  }

  // Moves appended events into the sealed, hash-chained sequence (contiguous prefix only).
  void seal() {
    for (auto& st : stripes_) {
      std::lock_guard lk(st.m);
      for (auto& [e, plan] : st.events) {
        if (plan) e.windows = window_keys(*plan);
        staging_.push_back(std::move(e));
      }
      st.events.clear();
    }
    std::sort(staging_.begin(), staging_.end(), [](const auto& a, const auto& b) { return a.seq < b.seq; });
    size_t used = 0;
    for (; used < staging_.size(); ++used) {
      auto& e = staging_[used];
      if (e.seq != static_cast<int64_t>(sealed_.size()) + 1) break;
      e.prev_hash = sealed_.empty() ? std::string(64, '0') : sealed_.back().hash;
      e.hash = chain_hash(e.prev_hash, e.seq, event_body(e));
      sealed_.push_back(std::move(e));
    }
    staging_.erase(staging_.begin(), staging_.begin() + static_cast<std::ptrdiff_t>(used));
  }

  std::array<Stripe, kStripes> stripes_;
  std::atomic<int64_t> seq_{0};
  std::atomic<int64_t> next_deadline_{kForever};
  std::mutex limits_m_;
  std::map<std::string, Limit> limits_;
  std::atomic<uint64_t> limits_version_{1};
  std::mutex seal_m_;
  std::vector<LedgerEvent> sealed_, staging_;
};

uint64_t MemTxn::limits_version() { return s_.limits_version_.load(std::memory_order_acquire); }

Counters MemTxn::sum(const WindowRef& w) {
  Series sr(w);
  auto& st = s_.stripes_[sr.stripe()];
  Counters total;
  auto it = st.series.find(sr.key);
  if (it == st.series.end()) return total;
  auto& buckets = it->second;
  for (auto b = buckets.lower_bound(w.read_from); b != buckets.end(); ++b) {
    total.spent += b->second.c.spent;
    total.held += b->second.c.held;
    total.granted += b->second.c.granted;
  }
  return total;
}

void MemTxn::add(const WindowRef& w, const Counters& d) {
  Series sr(w);
  auto& st = s_.stripes_[sr.stripe()];
  auto it = st.series.find(sr.key);
  if (it == st.series.end()) it = st.series.emplace(std::string(sr.key), std::map<int64_t, BucketRow>{}).first;
  auto& row = it->second[w.start];
  row.end = w.end;
  row.c.spent += d.spent;
  row.c.held += d.held;
  row.c.granted += d.granted;
}

std::optional<RequestRecord> MemTxn::get_request(const std::string& id) {
  auto& st = s_.stripes_[stripe_of(id)];
  auto it = st.requests.find(id);
  if (it == st.requests.end()) return std::nullopt;
  return it->second;
}

void MemTxn::put_request(const RequestRecord& rec) {
  auto& st = s_.stripes_[stripe_of(rec.request_id)];
  auto [it, inserted] = st.requests.try_emplace(rec.request_id, rec);
  if (!inserted) {
    if (it->second.state == ReqState::Held) st.deadlines.erase({it->second.expires_at, rec.request_id});
    it->second = rec;
  }
  if (rec.state == ReqState::Held) {
    st.deadlines.emplace(rec.expires_at, rec.request_id);
    int64_t cur = s_.next_deadline_.load(std::memory_order_relaxed);
    while (rec.expires_at < cur && !s_.next_deadline_.compare_exchange_weak(cur, rec.expires_at)) {
    }
  }
}

void MemTxn::append(LedgerEvent&& e, const std::shared_ptr<const Plan>& plan) {
  e.seq = s_.seq_.fetch_add(1, std::memory_order_relaxed) + 1;
  s_.stripes_[stripe_of(e.request_id)].events.emplace_back(std::move(e), plan);
}

}  // namespace

std::unique_ptr<Store> make_memory_store() { return std::make_unique<MemoryStore>(); }

}  // namespace budget::detail
