// The memory store: all state in process, striped so unrelated subjects never share a lock.
//
// Counters live in the stripe of their series (scope|window), request records and their
// ledger events in the stripe of the request id. An operation locks the stripes it touches
// in ascending order (no deadlock), runs the shared state machine (txn.hpp) and unlocks.
// Ledger events get their sequence number from one atomic counter; the hash chain is
// computed when events are read (sealing), off the hot path.
#include <budget/error.hpp>

#include <algorithm>
#include <array>
#include <atomic>
#include <map>
#include <mutex>
#include <set>
#include <unordered_map>

#include "ledger_codec.hpp"
#include "spinlock.hpp"
#include "stores/txn.hpp"

namespace budget::detail {
namespace {

constexpr size_t kStripes = 1024;  // an operation locks ~7: few collisions between threads

struct BucketRow {
  int64_t end = 0;
  Counters c;
};

// The buckets of one series (scope|window), by start. Never erased, so a plan keeps pointers.
using SeriesRow = std::map<int64_t, BucketRow>;

using RequestNode = std::pair<const std::string, RequestRecord>;

// A ledger event as the memory store keeps it until it is first read: the request id and
// subject are those of its request's record (which never changes them and is never erased),
// so appending copies no strings in the usual case.
struct MemEvent {
  int64_t seq = 0, time = 0;
  EventType type = EventType::Record;
  Amounts spent, held, granted;
  const RequestNode* req = nullptr;
  std::string model, provider, price_version, metadata;
  std::optional<Usage> usage;
  std::shared_ptr<const Plan> plan;
};

struct alignas(64) Stripe {
  SpinLock m;
  struct SvHash {
    using is_transparent = void;
    size_t operator()(std::string_view s) const noexcept { return std::hash<std::string_view>{}(s); }
  };
  std::unordered_map<std::string, SeriesRow, SvHash, std::equal_to<>> series;
  std::unordered_map<std::string, RequestRecord> requests;  // never erased: nodes stay put
  // Deadlines of held requests; the string is the key of `requests`.
  std::set<std::pair<int64_t, const std::string*>> deadlines;
  // Not yet sealed; in chunks, so appending never moves earlier events.
  std::vector<std::vector<MemEvent>> events;
  void push_event(MemEvent&& ev) {
    if (events.empty() || events.back().size() == events.back().capacity()) {
      events.emplace_back();
      events.back().reserve(64);
    }
    events.back().push_back(std::move(ev));
  }
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

// A plan resolved against one memory store: each window's series, and the stripes to lock.
struct MemHandles final : PlanHandles {
  std::vector<SeriesRow*> series;     // per window of the plan
  std::vector<uint16_t> stripes;      // sorted, unique
  // Per window: its bucket at the plan's start once it exists (buckets are never erased).
  // Written and read only under the window's stripe lock.
  mutable std::vector<BucketRow*> bucket;
};

// The stripes an operation locks, sorted and unique; no allocation for usual plans.
class StripeSet {
 public:
  void assign(const std::vector<uint16_t>& sorted, std::optional<size_t> extra) {
    n_ = 0;
    big_.clear();
    bool placed = !extra;
    for (uint16_t s : sorted) {
      if (!placed && *extra <= s) {
        if (*extra != s) push(static_cast<uint16_t>(*extra));
        placed = true;
      }
      push(s);
    }
    if (!placed) push(static_cast<uint16_t>(*extra));
  }
  const uint16_t* begin() const { return big_.empty() ? small_.data() : big_.data(); }
  const uint16_t* end() const { return begin() + size(); }
  size_t size() const { return big_.empty() ? n_ : big_.size(); }

 private:
  void push(uint16_t s) {
    if (big_.empty() && n_ < small_.size()) {
      small_[n_++] = s;
      return;
    }
    if (big_.empty()) big_.assign(small_.begin(), small_.begin() + static_cast<std::ptrdiff_t>(n_));
    big_.push_back(s);
  }
  std::array<uint16_t, 24> small_{};
  size_t n_ = 0;
  std::vector<uint16_t> big_;
};

class MemTxn final : public Txn {
 public:
  MemTxn(MemoryStore& s, const MemHandles* h) : s_(s), h_(h) {}
  uint64_t limits_version() override;
  std::vector<Counters> sum_all(const Plan& p) override;
  void sum_into(const Plan& p, Counters* out) override;
  void add_all(const Plan& p, const Counters& delta) override;
  std::optional<RequestRecord> get_request(const std::string& id) override;
  const RequestRecord* find_request(const std::string& id) override;
  RequestRecord* edit_request(const std::string& id) override;
  void put_request(const RequestRecord& rec) override;
  void save_request(const RequestRecord& rec) override;
  const RequestRecord& adopt_request(RequestRecord&& rec) override;
  void append(LedgerEvent&& e, const std::shared_ptr<const Plan>& plan) override;
  void record_event(const EventDraft& d) override;

 private:
  // The resolved handles when `p` is the plan the operation was locked for, else null
  // (a shifted copy of it: looked up by name; its windows' stripes are locked all the same).
  const MemHandles* handles_for(const Plan& p) const {
    return h_ && p.handles.load(std::memory_order_acquire) == h_ ? h_ : nullptr;
  }
  SeriesRow* series(const WindowRef& w, const MemHandles* h, size_t i, bool create);
  RequestNode* node_of(const std::string& id);

 public:
  // The record's node, remembered so that the next look-up of the same id is free.
  RequestNode* node(const std::string& id) { return cached_ = node_of(id); }

 private:
  RequestNode* cached_ = nullptr;
  // Keeps the stripe's deadline set in step with a record that was (held, deadline).
  void track_deadline(RequestNode& n, bool was_held, int64_t old_deadline);
  MemoryStore& s_;
  const MemHandles* h_;
  // The record last handed out by edit_request, with its deadline state at that time.
  RequestNode* edited_ = nullptr;
  bool edited_held_ = false;
  int64_t edited_deadline_ = 0;
  RequestNode* last_ = nullptr;  // the record last stored or edited (events refer to it)
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
    const auto& h = resolve(*op.plan);
    StripeSet set;
    set.assign(h.stripes, stripe_of(op.request_id));
    return locked(set, &h, [&](Txn& t) { return txn_reserve(t, op); });
  }
  DirectOut direct(const DirectOp& op) override {
    const auto& h = resolve(*op.plan);
    StripeSet set;
    set.assign(h.stripes, stripe_of(op.request_id));
    return locked(set, &h, [&](Txn& t) { return txn_direct(t, op); });
  }
  GrowOut grow(const GrowOp& op) override {
    return for_request(op.request_id, [&](Txn& t) { return txn_grow(t, op); });
  }
  SettleOut settle(const SettleOp& op) override {
    return for_request(op.request_id, [&](Txn& t) { return txn_settle(t, op); }, op.plan_hint.get());
  }

  size_t expire(int64_t now, size_t max) override {
    std::vector<std::string> due;
    for (auto& st : stripes_) {
      std::lock_guard lk(st.m);
      for (auto it = st.deadlines.begin(); it != st.deadlines.end() && it->first <= now && due.size() < max; ++it)
        due.push_back(*it->second);
    }
    size_t n = 0;
    for (const auto& id : due) {
      n += for_request(id, [&](Txn& t) {
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
    const auto& h = resolve(plan);
    StripeSet set;
    set.assign(h.stripes, std::nullopt);
    return locked(set, &h, [&](Txn& t) { return txn_read(t, plan); });
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

  // The plan's handles, resolved once per plan: each window's series (created if new; a
  // series is never erased, so the pointer stays valid), and its sorted stripes.
  const MemHandles& resolve(const Plan& plan) {
    auto* cur = plan.handles.load(std::memory_order_acquire);
    if (cur && cur->owner == this) return *static_cast<const MemHandles*>(cur);
    auto h = std::make_unique<MemHandles>();
    h->owner = this;
    for (const auto& w : plan.windows) {
      Series sr(w);
      auto& st = stripes_[sr.stripe()];
      std::lock_guard lk(st.m);
      auto it = st.series.find(sr.key);
      if (it == st.series.end()) it = st.series.emplace(std::string(sr.key), SeriesRow{}).first;
      h->series.push_back(&it->second);
      h->stripes.push_back(static_cast<uint16_t>(sr.stripe()));
    }
    h->bucket.assign(plan.windows.size(), nullptr);
    std::sort(h->stripes.begin(), h->stripes.end());
    h->stripes.erase(std::unique(h->stripes.begin(), h->stripes.end()), h->stripes.end());
    PlanHandles* expected = nullptr;
    if (cur == nullptr && plan.handles.compare_exchange_strong(expected, h.get(), std::memory_order_acq_rel))
      return *h.release();
    // Another thread attached first (or the plan belongs to another store): use ours once.
    if (expected && expected->owner == this) return *static_cast<const MemHandles*>(expected);
    scratch_handles_ = std::move(h);  // thread-confined: see below
    return *scratch_handles_;
  }

  // Runs f on a request's record under the stripes of the request and of its plan's windows.
  // `hint`: the plan the caller expects the record to have; when it is right (checked under
  // the locks), the record is looked up once instead of twice.
  template <class F>
  auto for_request(const std::string& id, F&& f, const Plan* hint = nullptr) -> decltype(f(std::declval<Txn&>())) {
    StripeSet set;
    if (hint) {
      const auto& h = resolve(*hint);
      set.assign(h.stripes, stripe_of(id));
      std::optional<decltype(f(std::declval<Txn&>()))> out;
      bool right = false;
      locked(set, &h, [&](Txn& t) {
        auto* n = static_cast<MemTxn&>(t).node(id);
        right = n && n->second.plan.get() == hint;
        if (right) out.emplace(f(t));
        return 0;
      });
      if (right) return std::move(*out);
    }
    std::shared_ptr<const Plan> plan;
    {
      auto& st = stripes_[stripe_of(id)];
      std::lock_guard lk(st.m);
      auto it = st.requests.find(id);
      if (it != st.requests.end()) plan = it->second.plan;
    }
    if (!plan) {
      set.assign({}, stripe_of(id));
      return locked(set, nullptr, f);
    }
    const auto& h = resolve(*plan);  // a record's plan never changes, so this set stays right
    set.assign(h.stripes, stripe_of(id));
    return locked(set, &h, f);
  }

  template <class F>
  auto locked(const StripeSet& set, const MemHandles* h, F&& f) -> decltype(f(std::declval<Txn&>())) {
    for (uint16_t i : set) stripes_[i].m.lock();
    struct Unlock {
      MemoryStore* s;
      const StripeSet* set;
      ~Unlock() {
        for (auto it = set->end(); it != set->begin();) s->stripes_[*--it].m.unlock();
      }
    } unlock{this, &set};
    MemTxn t(*this, h);
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
      std::lock_guard lk(st.m);  // also guards the records the events refer to
      for (auto& chunk : st.events)
      for (auto& m : chunk) {
        LedgerEvent e;
        e.seq = m.seq;
        e.time = from_millis(m.time);
        e.type = m.type;
        e.request_id = m.req->first;
        e.subject = m.req->second.subject;
        e.model = std::move(m.model);
        e.provider = std::move(m.provider);
        e.price_version = std::move(m.price_version);
        e.usage = m.usage;
        e.spent = m.spent;
        e.held = m.held;
        e.granted = m.granted;
        if (m.plan) e.windows = window_keys(*m.plan);
        e.metadata = std::move(m.metadata);
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
  // Handles that could not be attached to their plan (lost a race): kept for this call only.
  static thread_local std::unique_ptr<MemHandles> scratch_handles_;
};

thread_local std::unique_ptr<MemHandles> MemoryStore::scratch_handles_;

uint64_t MemTxn::limits_version() { return s_.limits_version_.load(std::memory_order_acquire); }

SeriesRow* MemTxn::series(const WindowRef& w, const MemHandles* h, size_t i, bool create) {
  if (h) return h->series[i];
  Series sr(w);
  auto& st = s_.stripes_[sr.stripe()];
  auto it = st.series.find(sr.key);
  if (it == st.series.end()) {
    if (!create) return nullptr;
    it = st.series.emplace(std::string(sr.key), SeriesRow{}).first;
  }
  return &it->second;
}

std::vector<Counters> MemTxn::sum_all(const Plan& p) {
  std::vector<Counters> out(p.windows.size());
  sum_into(p, out.data());
  return out;
}

void MemTxn::sum_into(const Plan& p, Counters* out) {
  const auto* h = handles_for(p);
  for (size_t i = 0; i < p.windows.size(); ++i) {
    const auto& w = p.windows[i];
    auto& total = out[i];
    total = Counters{};
    auto* buckets = series(w, h, i, false);
    if (!buckets || buckets->empty()) continue;
    // Usual case: the plan's own bucket is the series' latest and the window starts there.
    if (h && h->bucket[i] && w.read_from == w.start && &buckets->rbegin()->second == h->bucket[i]) {
      total = h->bucket[i]->c;
      continue;
    }
    for (auto b = buckets->lower_bound(w.read_from); b != buckets->end(); ++b) {
      total.spent += b->second.c.spent;
      total.held += b->second.c.held;
      total.granted += b->second.c.granted;
    }
  }
}

void MemTxn::add_all(const Plan& p, const Counters& d) {
  const auto* h = handles_for(p);
  auto row_of = [&](size_t i) {
    const auto& w = p.windows[i];
    BucketRow* row = h ? h->bucket[i] : nullptr;
    if (!row) {
      row = &(*series(w, h, i, true))[w.start];
      row->end = w.end;
      if (h) h->bucket[i] = row;
    }
    return row;
  };
  // All or nothing: every sum is checked before the first counter changes (a plan names each
  // bucket once, so checking each alone is checking them all).
  for (size_t i = 0; i < p.windows.size(); ++i) {
    Counters c = row_of(i)->c;
    c.spent += d.spent;
    c.held += d.held;
    c.granted += d.granted;
  }
  for (size_t i = 0; i < p.windows.size(); ++i) {
    auto& c = row_of(i)->c;
    c.spent += d.spent;
    c.held += d.held;
    c.granted += d.granted;
  }
}

std::optional<RequestRecord> MemTxn::get_request(const std::string& id) {
  if (const auto* rec = find_request(id)) return *rec;
  return std::nullopt;
}

RequestNode* MemTxn::node_of(const std::string& id) {
  if (cached_ && cached_->first == id) return cached_;
  auto& st = s_.stripes_[stripe_of(id)];
  auto it = st.requests.find(id);
  return it == st.requests.end() ? nullptr : &*it;
}

const RequestRecord* MemTxn::find_request(const std::string& id) {
  auto* n = node_of(id);
  return n ? &n->second : nullptr;
}

RequestRecord* MemTxn::edit_request(const std::string& id) {
  edited_ = node_of(id);
  if (!edited_) return nullptr;
  edited_held_ = edited_->second.state == ReqState::Held;
  edited_deadline_ = edited_->second.expires_at;
  last_ = edited_;
  return &edited_->second;
}

void MemTxn::track_deadline(RequestNode& n, bool was_held, int64_t old_deadline) {
  const RequestRecord& r = n.second;
  bool held = r.state == ReqState::Held;
  if (was_held == held && (!held || old_deadline == r.expires_at)) return;
  auto& st = s_.stripes_[stripe_of(n.first)];
  if (was_held) st.deadlines.erase({old_deadline, &n.first});
  if (!held) return;
  st.deadlines.emplace(r.expires_at, &n.first);
  int64_t cur = s_.next_deadline_.load(std::memory_order_relaxed);
  while (r.expires_at < cur && !s_.next_deadline_.compare_exchange_weak(cur, r.expires_at)) {
  }
}

void MemTxn::save_request(const RequestRecord& rec) {
  if (edited_ && &edited_->second == &rec) {  // changed in place
    track_deadline(*edited_, edited_held_, edited_deadline_);
    edited_held_ = rec.state == ReqState::Held;
    edited_deadline_ = rec.expires_at;
    return;
  }
  put_request(rec);
}

void MemTxn::put_request(const RequestRecord& rec) {
  auto* n = node_of(rec.request_id);
  if (!n) {
    adopt_request(RequestRecord(rec));
    return;
  }
  bool was_held = n->second.state == ReqState::Held;
  int64_t old_deadline = n->second.expires_at;
  n->second = rec;
  if (edited_ == n) {
    edited_held_ = rec.state == ReqState::Held;
    edited_deadline_ = rec.expires_at;
  }
  last_ = n;
  track_deadline(*n, was_held, old_deadline);
}

const RequestRecord& MemTxn::adopt_request(RequestRecord&& rec) {
  auto& st = s_.stripes_[stripe_of(rec.request_id)];
  std::string key = rec.request_id;
  auto [it, inserted] = st.requests.try_emplace(std::move(key), std::move(rec));
  if (!inserted) throw InternalError("request record stored twice: " + it->first);
  last_ = &*it;
  track_deadline(*it, false, 0);
  return it->second;
}

void MemTxn::record_event(const EventDraft& d) {
  RequestNode* n = last_ && (&last_->second == &d.rec || last_->first == d.rec.request_id) ? last_
                                                                                         : node_of(d.rec.request_id);
  if (!n) throw InternalError("event of an unknown request: " + d.rec.request_id);
  MemEvent m;
  m.seq = s_.seq_.fetch_add(1, std::memory_order_relaxed) + 1;
  m.time = d.now;
  m.type = d.type;
  m.spent = d.spent;
  m.held = d.held;
  m.granted = d.granted;
  m.req = n;
  m.model = d.rec.model;
  m.provider = d.rec.provider;
  m.price_version = d.rec.price_version;
  m.metadata = d.metadata;
  if (d.usage) m.usage = *d.usage;
  m.plan = d.rec.plan;
  s_.stripes_[stripe_of(n->first)].push_event(std::move(m));
}

void MemTxn::append(LedgerEvent&& e, const std::shared_ptr<const Plan>& plan) {
  // Not used by the shared state machine (it calls record_event); kept for the interface.
  auto* n = node_of(e.request_id);
  if (!n) throw InternalError("event of an unknown request: " + e.request_id);
  MemEvent m;
  m.seq = s_.seq_.fetch_add(1, std::memory_order_relaxed) + 1;
  m.time = to_millis(e.time);
  m.type = e.type;
  m.spent = e.spent;
  m.held = e.held;
  m.granted = e.granted;
  m.req = n;
  m.model = std::move(e.model);
  m.provider = std::move(e.provider);
  m.price_version = std::move(e.price_version);
  m.metadata = std::move(e.metadata);
  m.usage = std::move(e.usage);
  m.plan = plan;
  s_.stripes_[stripe_of(n->first)].push_event(std::move(m));
}

}  // namespace

std::unique_ptr<Store> make_memory_store() { return std::make_unique<MemoryStore>(); }

}  // namespace budget::detail
