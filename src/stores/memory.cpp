// The memory store: all state in process, striped so unrelated subjects never share a lock.
//
// Counters live in the stripe of their scope (all windows of a scope share it), request
// records and their ledger events in the stripe of the request id. An operation locks the stripes it touches
// in ascending order (no deadlock), runs the shared state machine (txn.hpp) and unlocks.
// Ledger events get their sequence number from one atomic counter; the hash chain is
// computed when events are read (sealing), off the hot path.
//
// The hot path allocates little: a request id is hashed once per operation; records live in
// per-stripe chunks (never erased, never moved) indexed by an open-addressing table of
// (hash, record); the deadlines of held records are an indexed binary heap per stripe (the
// record knows its slot, so settling a hold removes it in O(log held) without a search or a
// free); an event refers to its record and its plan, and to interned model / provider /
// price-version strings, so appending one copies no string in the usual case.
#include <budget/error.hpp>

#include <algorithm>
#include <array>
#include <atomic>
#include <map>
#include <mutex>
#include <new>
#include <unordered_map>
#include <unordered_set>

#include "hash.hpp"
#include "ledger_codec.hpp"
#include "spinlock.hpp"
#include "stores/memory.hpp"
#include "stores/txn.hpp"

namespace budget::detail {
namespace {

constexpr size_t kStripes = 1024;  // an operation locks ~7: few collisions between threads
// Request records, their events and deadlines live in the first kRequestStripes stripes only.
// Every lifecycle appends to its request's stripe (a record, events, a heap entry) and probes
// its index: spread over all 1024 stripes, those tails and headers fall out of the CPU caches
// (bench_core: single-thread lifecycle p50 ~1.7x slower, p99 ~2.3x). Fewer is not better: with
// 64, two threads write the same stripes' lines so often that 2 threads on distinct subjects
// fell to 1.4-1.8x one thread (128: 1.9-2.1x). Scopes keep all 1024 (a hot subject's counters
// stay hot in any case; unrelated subjects rarely share one).
constexpr size_t kRequestStripes = 128;
static_assert(kRequestStripes <= kStripes);

struct BucketRow {
  int64_t end = 0;
  Counters c;
};

// The buckets of one series (scope|window), by start. Never erased, so a plan keeps pointers.
struct SeriesRow {
  std::map<int64_t, BucketRow> buckets;
  int64_t last_start = INT64_MIN;  // the latest bucket's start
  BucketRow& at(int64_t start) {
    last_start = std::max(last_start, start);
    return buckets[start];
  }
};

constexpr uint32_t kNoSlot = UINT32_MAX;

size_t hash_id(std::string_view id) { return fast_hash(id); }

// A request record as the memory store keeps it: never erased and never moved (events and the
// deadline heap point to it).
struct MemRecord {
  RequestRecord rec;
  size_t hash = 0;                // hash_id(rec.request_id)
  uint32_t heap_slot = kNoSlot;   // in its stripe's deadline heap while held
  // The subject, shared with the other records of the plan (MemHandles::subject), in which
  // case rec.subject is empty; else null.
  const std::vector<std::string>* shared_subject = nullptr;
  const std::vector<std::string>& subject() const { return shared_subject ? *shared_subject : rec.subject; }
  RequestRecord full() const {  // the record with its subject
    RequestRecord out = rec;
    if (shared_subject) out.subject = *shared_subject;
    return out;
  }
  // Plans the record had before put_request replaced it with another plan: events of the
  // record point to its plans, which must stay alive.
  std::vector<std::shared_ptr<const Plan>> old_plans;
};

// The records of one stripe, in chunks that never move, with an open-addressing index.
class RecordTable {
 public:
  MemRecord* find(std::string_view id, size_t h) const {
    if (slots_.empty()) return nullptr;
    for (size_t i = h & mask_;; i = (i + 1) & mask_) {
      const Slot& s = slots_[i];
      if (!s.rec) return nullptr;
      if (s.hash == h && s.rec->rec.request_id == id) return s.rec;
    }
  }
  // Stores a new record (the caller checked that its id is absent).
  MemRecord* insert(RequestRecord&& rec, size_t h) {
    MemRecord* r = next_slot();
    r->rec = std::move(rec);
    return commit_slot(r, h);
  }
  // The slot the next record will take, empty; it stays free until commit_slot.
  MemRecord* next_slot() {
    if (chunks_.empty() || used_ == chunks_.back()->cap) {
      chunks_.push_back(std::make_unique<Chunk>(chunks_.empty() ? 4 : std::min<size_t>(chunks_.back()->cap * 2, 256)));
      used_ = 0;
    }
    Chunk& c = *chunks_.back();
    MemRecord* r = c.at(used_);
    if (used_ < c.built) {
      *r = MemRecord{};  // handed out before and not committed (an exception)
    } else {
      new (r) MemRecord();
      ++c.built;
    }
    return r;
  }
  // Indexes the record in the slot next_slot gave (the caller checked that its id is absent).
  MemRecord* commit_slot(MemRecord* r, size_t h) {
    if (chunks_.empty() || r != chunks_.back()->at(used_) || used_ >= chunks_.back()->built)
      throw InternalError("memory store: record slot out of turn");
    if ((n_ + 1) * 2 > slots_.size()) grow();
    ++used_;
    r->hash = h;
    place(Slot{h, r});
    ++n_;
    return r;
  }
  template <class F>
  void for_each(F&& f) {
    for (size_t c = 0; c < chunks_.size(); ++c) {
      const size_t n = c + 1 == chunks_.size() ? used_ : chunks_[c]->cap;
      for (size_t i = 0; i < n; ++i) f(*chunks_[c]->at(i));
    }
  }
  size_t size() const { return n_; }

 private:
  struct Slot {
    size_t hash = 0;
    MemRecord* rec = nullptr;
  };
  static void place(std::vector<Slot>& slots, size_t mask, const Slot& s) {
    size_t i = s.hash & mask;
    while (slots[i].rec) i = (i + 1) & mask;
    slots[i] = s;
  }
  void place(const Slot& s) { place(slots_, mask_, s); }
  void grow() {
    // The new table is complete before it replaces the old one: a failed allocation leaves the
    // index as it was (emptied, every record would be invisible to look-ups).
    std::vector<Slot> bigger(slots_.empty() ? 8 : slots_.size() * 2);
    const size_t mask = bigger.size() - 1;
    for (const auto& s : slots_)  // the slot's copy of the hash: no record is read (they are cold)
      if (s.rec) place(bigger, mask, s);
    slots_.swap(bigger);
    mask_ = mask;
  }
  std::vector<Slot> slots_;
  size_t mask_ = 0, n_ = 0;
  // Raw storage for `cap` records, each constructed when its slot is handed out. Constructed
  // all at once with the chunk (up to 256 records, ~100 KB), a slot was written long before
  // its reserve came, which then stalled reading it back from memory. The pages are touched
  // here, so the page faults stay with the allocation rather than spread over the reserves.
  struct Chunk {
    explicit Chunk(size_t n)
        : cap(n), mem(static_cast<MemRecord*>(::operator new(n * sizeof(MemRecord), std::align_val_t{alignof(MemRecord)}))) {
      auto* bytes = reinterpret_cast<volatile unsigned char*>(mem);
      for (size_t off = 0; off < n * sizeof(MemRecord); off += 4096) bytes[off] = 0;
    }
    ~Chunk() {
      for (size_t i = 0; i < built; ++i) mem[i].~MemRecord();
      ::operator delete(mem, std::align_val_t{alignof(MemRecord)});
    }
    Chunk(const Chunk&) = delete;
    Chunk& operator=(const Chunk&) = delete;
    MemRecord* at(size_t i) const { return mem + i; }
    const size_t cap;
    size_t built = 0;  // records constructed: [0, built); the last may be an uncommitted draft
    MemRecord* const mem;
  };
  std::vector<std::unique_ptr<Chunk>> chunks_;
  size_t used_ = 0;  // committed records of the last chunk
};

// Deadlines of the held records of one stripe: a binary min-heap of (deadline, record) whose
// records know their slot, so a hold that is settled leaves it in O(log n) without a search.
class DeadlineHeap {
 public:
  bool empty() const { return h_.empty(); }
  size_t size() const { return h_.size(); }
  int64_t min() const { return h_.front().deadline; }
  MemRecord* top() const { return h_.front().rec; }
  void push(MemRecord* r, int64_t deadline) {
    h_.push_back({deadline, r});
    r->heap_slot = static_cast<uint32_t>(h_.size() - 1);
    up(h_.size() - 1);
  }
  void erase(MemRecord* r) {
    size_t i = r->heap_slot;
    r->heap_slot = kNoSlot;
    size_t last = h_.size() - 1;
    if (i != last) {
      h_[i] = h_[last];
      h_[i].rec->heap_slot = static_cast<uint32_t>(i);
    }
    h_.pop_back();
    if (i < h_.size()) {
      up(i);
      down(h_[i].rec->heap_slot);
    }
  }
  // The entries whose deadline is at most `bound()`, in heap order; `bound` may fall as `f`
  // runs (a subtree whose root is past the current bound is skipped: its deadlines are later).
  template <class B, class F>
  void visit_due(B&& bound, F&& f) const {
    std::vector<size_t> stack;
    if (!h_.empty()) stack.push_back(0);
    while (!stack.empty()) {
      size_t i = stack.back();
      stack.pop_back();
      if (h_[i].deadline > bound()) continue;
      f(h_[i].rec);
      for (size_t c : {2 * i + 1, 2 * i + 2})
        if (c < h_.size()) stack.push_back(c);
    }
  }
  bool check() const {  // the heap property and the slots (tests)
    for (size_t i = 0; i < h_.size(); ++i) {
      if (h_[i].rec->heap_slot != i) return false;
      if (i > 0 && h_[(i - 1) / 2].deadline > h_[i].deadline) return false;
    }
    return true;
  }

 private:
  struct Entry {
    int64_t deadline;
    MemRecord* rec;
  };
  void set(size_t i, const Entry& e) {
    h_[i] = e;
    e.rec->heap_slot = static_cast<uint32_t>(i);
  }
  void up(size_t i) {
    Entry e = h_[i];
    while (i > 0) {
      size_t p = (i - 1) / 2;
      if (h_[p].deadline <= e.deadline) break;
      set(i, h_[p]);
      i = p;
    }
    set(i, e);
  }
  void down(size_t i) {
    Entry e = h_[i];
    const size_t n = h_.size();
    for (;;) {
      size_t c = 2 * i + 1;
      if (c >= n) break;
      if (c + 1 < n && h_[c + 1].deadline < h_[c].deadline) ++c;
      if (e.deadline <= h_[c].deadline) break;
      set(i, h_[c]);
      i = c;
    }
    set(i, e);
  }
  std::vector<Entry> h_;
};

// A ledger event as the memory store keeps it until it is first read: the request id and
// subject are those of its record (which never changes them and is never erased), the plan is
// the record's (kept alive by it), and model / provider / price version are interned strings
// (null: empty), so appending copies no strings in the usual case.
struct MemEvent {
  int64_t seq = 0, time = 0;
  EventType type = EventType::Record;
  Amounts spent, held, granted;
  const MemRecord* req = nullptr;
  const Plan* plan = nullptr;
  const std::string *model = nullptr, *provider = nullptr, *price_version = nullptr;
  std::string metadata;
  std::unique_ptr<Usage> usage;
};

struct SvHash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const noexcept { return std::hash<std::string_view>{}(s); }
};

struct alignas(64) Stripe {
  SpinLock m;
  std::unordered_map<std::string, SeriesRow, SvHash, std::equal_to<>> series;
  RecordTable requests;
  DeadlineHeap deadlines;
  // Model, provider and price-version strings of this stripe's events (never erased).
  std::unordered_set<std::string, SvHash, std::equal_to<>> strings;
  // Not yet sealed; in chunks, so appending never moves earlier events.
  std::vector<std::vector<MemEvent>> events;
  MemEvent& new_event() {
    if (events.empty() || events.back().size() == events.back().capacity()) {
      events.emplace_back();
      events.back().reserve(64);
    }
    return events.back().emplace_back();
  }
  const std::string* intern(const std::string& s) {
    if (s.empty()) return nullptr;
    auto it = strings.find(std::string_view(s));
    if (it == strings.end()) it = strings.insert(s).first;
    return &*it;
  }
};

// A request's stripe takes its id hash's high bits; the record index of the stripe uses its low bits.
size_t stripe_of_hash(size_t h) { return (h >> 48) % kRequestStripes; }

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
  // By scope: the windows of one scope share a stripe, so an operation locks one stripe per
  // scope of its subject rather than one per window.
  size_t stripe() const { return (fast_hash(key.substr(0, key.rfind('|'))) >> 48) % kStripes; }
};

class MemoryStore;

// A plan resolved against one memory store: each window's series, and the stripes to lock.
struct MemHandles final : PlanHandles {
  std::vector<SeriesRow*> series;     // per window of the plan
  std::vector<uint16_t> stripes;      // sorted, unique
  // Per window: its bucket at the plan's start once it exists (buckets are never erased).
  // Written and read only under the window's stripe lock.
  mutable std::vector<BucketRow*> bucket;
  // The subject of the plan's reservations, one copy for all of them (records point to it; a
  // record keeps its plan, which keeps these handles). Set by the first reserve, under the
  // plan's stripe locks (so only for plans with windows).
  mutable std::unique_ptr<const std::vector<std::string>> subject;
};

// The stripes an operation locks, sorted and unique; no allocation for usual plans.
class StripeSet {
 public:
  void assign(const std::vector<uint16_t>& sorted, std::optional<size_t> extra) {
    const size_t n = sorted.size() + (extra ? 1 : 0);
    uint16_t* out = small_.data();
    if (n > small_.size()) {
      big_.resize(n);
      out = big_.data();
    }
    size_t k = 0;
    if (!extra) {
      for (uint16_t s : sorted) out[k++] = s;
    } else {
      const auto x = static_cast<uint16_t>(*extra);
      size_t i = 0;
      for (; i < sorted.size() && sorted[i] < x; ++i) out[k++] = sorted[i];
      if (i == sorted.size() || sorted[i] != x) out[k++] = x;
      for (; i < sorted.size(); ++i) out[k++] = sorted[i];
    }
    data_ = out;
    n_ = k;
  }
  const uint16_t* begin() const { return data_; }
  const uint16_t* end() const { return data_ + n_; }
  size_t size() const { return n_; }

 private:
  std::array<uint16_t, 24> small_;
  std::vector<uint16_t> big_;
  const uint16_t* data_ = nullptr;
  size_t n_ = 0;
};

class MemTxn final : public Txn {
 public:
  // `id`, `id_hash`: the request id of the operation and its hash (computed once).
  MemTxn(MemoryStore& s, const MemHandles* h, std::string_view id, size_t id_hash)
      : s_(s), h_(h), id_(id), id_hash_(id_hash) {}
  uint64_t limits_version() override;
  std::vector<Counters> sum_all(const Plan& p) override;
  void sum_into(const Plan& p, Counters* out) override;
  bool check_states(const Plan& p, CheckState* out) override;
  void add_all(const Plan& p, const Counters& delta) override;
  std::optional<RequestRecord> get_request(const std::string& id) override;
  const RequestRecord* find_request(const std::string& id) override;
  RequestRecord* edit_request(const std::string& id) override;
  void put_request(const RequestRecord& rec) override;
  void save_request(const RequestRecord& rec) override;
  const RequestRecord& adopt_request(RequestRecord&& rec) override;
  RequestRecord& draft_request() override;
  const RequestRecord& adopt_draft(RequestRecord& rec) override;
  void set_subject(RequestRecord& rec, const std::vector<std::string>& subject) override;
  void append(LedgerEvent&& e, const std::shared_ptr<const Plan>& plan) override;
  void record_event(const EventDraft& d) override;

  // The record of `id`, or null; remembered so that the next look-up of it is free.
  MemRecord* record(std::string_view id);

 private:
  size_t hash_of(std::string_view id) const { return id == id_ ? id_hash_ : hash_id(id); }
  // The resolved handles when `p` is the plan the operation was locked for, else null
  // (a shifted copy of it: looked up by name; its windows' stripes are locked all the same).
  const MemHandles* handles_for(const Plan& p) const {
    return h_ && p.handles.load(std::memory_order_acquire) == h_ ? h_ : nullptr;
  }
  SeriesRow* series(const WindowRef& w, const MemHandles* h, size_t i, bool create);
  // Keeps the stripe's deadline heap in step with a record that was (held, deadline).
  void track_deadline(MemRecord& r, bool was_held, int64_t old_deadline);
  Stripe& stripe(const MemRecord& r);

  MemoryStore& s_;
  const MemHandles* h_;
  std::string_view id_;
  size_t id_hash_;
  MemRecord* cached_ = nullptr;
  // A look-up of the operation's own id found nothing: storing a record of it needs no second
  // look-up (nothing else stores one while the stripes are locked).
  bool id_absent_ = false;
  // The record last handed out by edit_request, with its deadline state at that time.
  MemRecord* edited_ = nullptr;
  bool edited_held_ = false;
  int64_t edited_deadline_ = 0;
  MemRecord* last_ = nullptr;  // the record last stored or edited (events refer to it)
  MemRecord* draft_ = nullptr;  // the slot draft_request handed out

 public:
  // Whether the operation changed anything yet (counters, a record, an event, a deadline): an
  // exception after that (an allocation that failed) leaves a change the store cannot undo.
  bool changed = false;
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
    const size_t id_hash = hash_id(op.request_id);
    StripeSet set;
    set.assign(h.stripes, stripe_of_hash(id_hash));
    return locked(set, &h, op.request_id, id_hash, [&](Txn& t) { return txn_reserve(t, op); });
  }
  DirectOut direct(const DirectOp& op) override {
    const auto& h = resolve(*op.plan);
    const size_t id_hash = hash_id(op.request_id);
    StripeSet set;
    set.assign(h.stripes, stripe_of_hash(id_hash));
    return locked(set, &h, op.request_id, id_hash, [&](Txn& t) { return txn_direct(t, op); });
  }
  GrowOut grow(const GrowOp& op) override {
    return for_request(op.request_id, [&](Txn& t) { return txn_grow(t, op); });
  }
  SettleOut settle(const SettleOp& op) override {
    SettleOut out;  // written in place (f runs exactly once)
    for_request(op.request_id, [&](Txn& t) { txn_settle_into(t, op, out); return 0; }, op.plan_hint.get());
    return out;
  }

  size_t expire(int64_t now, size_t max) override {
    // The earliest `max` due holds, settled in (deadline, request id) order as the SQLite and
    // Redis stores do, so their Expire events, and the alerts read back from them, come in the
    // same order on every store. `due` is a max-heap while it is filled.
    if (max == 0) return 0;
    using Due = std::pair<int64_t, std::string>;
    std::vector<Due> due;
    auto later = [](const Due& a, int64_t d, std::string_view id) {
      return a.first != d ? a.first > d : std::string_view(a.second) > id;
    };
    auto bound = [&] { return due.size() < max ? now : due.front().first; };
    for (auto& st : stripes_) {
      std::lock_guard lk(st.m);
      if (st.deadlines.empty() || st.deadlines.min() > bound()) continue;
      st.deadlines.visit_due(bound, [&](const MemRecord* r) {
        const auto& id = r->rec.request_id;
        const int64_t d = r->rec.expires_at;
        if (due.size() == max) {
          if (!later(due.front(), d, id)) return;
          std::pop_heap(due.begin(), due.end());
          due.pop_back();
        }
        due.emplace_back(d, id);
        std::push_heap(due.begin(), due.end());
      });
    }
    std::sort_heap(due.begin(), due.end());
    size_t n = 0;
    for (const auto& d : due) {
      const std::string& id = d.second;
      n += for_request(id, [&](Txn& t) {
        auto* r = static_cast<MemTxn&>(t).record(id);
        if (!r || r->rec.state != ReqState::Held || r->rec.expires_at > now) return 0;
        txn_expire(t, r->rec, now);
        return 1;
      });
    }
    refresh_deadline();
    return n;
  }
  int64_t next_deadline() override { return next_deadline_.load(std::memory_order_relaxed); }

  std::optional<RequestRecord> get_request(const std::string& id) override {
    check_usable();
    const size_t h = hash_id(id);
    auto& st = stripes_[stripe_of_hash(h)];
    std::lock_guard lk(st.m);
    auto* r = st.requests.find(id, h);
    if (!r) return std::nullopt;
    return r->full();
  }

  std::vector<CheckState> read(const Plan& plan) override {
    const auto& h = resolve(plan);
    StripeSet set;
    set.assign(h.stripes, std::nullopt);
    return locked(set, &h, {}, 0, [&](Txn& t) { return txn_read(t, plan); });
  }

  void scan_events(const LedgerQuery& q, const std::function<bool(const LedgerEvent&)>& f) override {
    check_usable();
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
    check_usable();
    for (auto& st : stripes_) {
      std::lock_guard lk(st.m);
      for (auto& [series, row] : st.series)
        for (auto& [start, b] : row.buckets) f(StoredCounter{series + '|' + std::to_string(start), b.end, b.c});
    }
  }

  // For tests (budget_memory_selfcheck): every stripe's deadline heap is a heap whose records
  // know their slots, holds exactly the held records, and each record is found by its id.
  bool self_check() {
    for (auto& st : stripes_) {
      std::lock_guard lk(st.m);
      if (!st.deadlines.check()) return false;
      size_t held = 0;
      bool ok = true;
      st.requests.for_each([&](MemRecord& r) {
        bool is_held = r.rec.state == ReqState::Held;
        held += is_held;
        if (is_held != (r.heap_slot != kNoSlot)) ok = false;
        if (st.requests.find(r.rec.request_id, r.hash) != &r) ok = false;
      });
      if (!ok || held != st.deadlines.size()) return false;
    }
    return true;
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
    const size_t id_hash = hash_id(id);
    const size_t own = stripe_of_hash(id_hash);
    StripeSet set;
    if (hint) {
      const auto& h = resolve(*hint);
      set.assign(h.stripes, own);
      decltype(f(std::declval<Txn&>())) out{};
      bool right = false;
      locked(set, &h, id, id_hash, [&](Txn& t) {
        auto* r = static_cast<MemTxn&>(t).record(id);
        right = r && r->rec.plan.get() == hint;
        if (right) out = f(t);
        return 0;
      });
      if (right) return out;
    }
    std::shared_ptr<const Plan> plan;
    {
      auto& st = stripes_[own];
      std::lock_guard lk(st.m);
      if (auto* r = st.requests.find(id, id_hash)) plan = r->rec.plan;
    }
    if (!plan) {
      set.assign({}, own);
      return locked(set, nullptr, id, id_hash, f);
    }
    const auto& h = resolve(*plan);  // a record's plan never changes, so this set stays right
    set.assign(h.stripes, own);
    return locked(set, &h, id, id_hash, f);
  }

  template <class F>
  auto locked(const StripeSet& set, const MemHandles* h, std::string_view id, size_t id_hash, F&& f)
      -> decltype(f(std::declval<Txn&>())) {
    for (uint16_t i : set) stripes_[i].m.lock();
    struct Unlock {
      MemoryStore* s;
      const StripeSet* set;
      ~Unlock() {
        for (auto it = set->end(); it != set->begin();) s->stripes_[*--it].m.unlock();
      }
    } unlock{this, &set};
    check_usable();
    MemTxn t(*this, h, id, id_hash);
    try {
      return f(t);
    } catch (...) {
      // The state machine checks everything that can refuse before its first change; what
      // fails after one is an allocation (out of memory). The memory store keeps no undo log,
      // so it stops here rather than go on with counters, records and ledger out of step:
      // every later call throws InternalError (a restart starts a new, empty store anyway).
      if (t.changed) broken_.store(true, std::memory_order_relaxed);
      throw;
    }
  }

  void check_usable() const {
    if (broken_.load(std::memory_order_relaxed))
      throw InternalError("memory store: an earlier operation failed half-way (out of memory) and the store "
                          "cannot undo it; it refuses every call");
  }

  void refresh_deadline() {
    int64_t best = kForever;
    for (auto& st : stripes_) {
      std::lock_guard lk(st.m);
      if (!st.deadlines.empty()) best = std::min(best, st.deadlines.min());
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
          e.request_id = m.req->rec.request_id;
          e.subject = m.req->subject();
          if (m.model) e.model = *m.model;
          if (m.provider) e.provider = *m.provider;
          if (m.price_version) e.price_version = *m.price_version;
          if (m.usage) e.usage = *m.usage;
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
  // Written by every event: on a cache line of its own, so the fields read by every
  // operation (next_deadline_, limits_version_) do not bounce between cores with it.
  alignas(64) std::atomic<int64_t> seq_{0};
  alignas(64) std::atomic<int64_t> next_deadline_{kForever};
  std::mutex limits_m_;
  std::map<std::string, Limit> limits_;
  std::atomic<uint64_t> limits_version_{1};
  std::atomic<bool> broken_{false};  // see locked(); read with limits_version_ by every operation
  std::mutex seal_m_;
  std::vector<LedgerEvent> sealed_, staging_;
  // Handles that could not be attached to their plan (lost a race): kept for this call only.
  static thread_local std::unique_ptr<MemHandles> scratch_handles_;
};

thread_local std::unique_ptr<MemHandles> MemoryStore::scratch_handles_;

MemRecord* MemTxn::record(std::string_view id) {
  if (cached_ && cached_->rec.request_id == id) return cached_;
  size_t h = hash_of(id);
  MemRecord* r = s_.stripes_[stripe_of_hash(h)].requests.find(id, h);
  if (r) cached_ = r;
  else if (id == id_) id_absent_ = true;
  return r;
}

Stripe& MemTxn::stripe(const MemRecord& r) { return s_.stripes_[stripe_of_hash(r.hash)]; }

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
    // Usual case: the plan's own bucket is the series' latest and the window starts there.
    if (h && h->bucket[i] && w.read_from == w.start && h->series[i]->last_start == w.start) {
      total = h->bucket[i]->c;
      continue;
    }
    total = Counters{};
    auto* row = series(w, h, i, false);
    if (!row) continue;
    for (auto b = row->buckets.lower_bound(w.read_from); b != row->buckets.end(); ++b) {
      total.spent += b->second.c.spent;
      total.held += b->second.c.held;
      total.granted += b->second.c.granted;
    }
  }
}

bool MemTxn::check_states(const Plan& p, CheckState* out) {
  // Only the usual case, straight from the buckets: every window of the plan is resolved, its
  // bucket exists, is the series' latest and is where the window starts (else: sum_into).
  const auto* h = handles_for(p);
  if (!h) return false;
  for (size_t i = 0; i < p.windows.size(); ++i) {
    const auto& w = p.windows[i];
    if (!h->bucket[i] || w.read_from != w.start || h->series[i]->last_start != w.start) return false;
  }
  for (size_t k = 0; k < p.checks.size(); ++k) {
    const auto& c = p.checks[k];
    const Counters& b = h->bucket[c.window]->c;
    out[k] = {metric_of(b.spent, c.metric), metric_of(b.held, c.metric), metric_of(b.granted, c.metric)};
  }
  return true;
}

namespace {
inline bool add_overflows(const Amounts& a, const Amounts& b) {
  int64_t r;
  // Bitwise on purpose (no branches): as ints, which clang's -Wbitwise-instead-of-logical accepts.
  return (int{__builtin_add_overflow(a.cost, b.cost, &r)} | int{__builtin_add_overflow(a.tokens, b.tokens, &r)} |
          int{__builtin_add_overflow(a.requests, b.requests, &r)}) != 0;
}
inline void add_unchecked(Amounts& a, const Amounts& b) {
  a.cost += b.cost;
  a.tokens += b.tokens;
  a.requests += b.requests;
}
}  // namespace

void MemTxn::add_all(const Plan& p, const Counters& d) {
  const auto* h = handles_for(p);
  const size_t n = p.windows.size();
  BucketRow* small[16];
  std::vector<BucketRow*> big;
  BucketRow** rows = small;
  if (n > 16) {
    big.resize(n);
    rows = big.data();
  }
  // All or nothing: every sum is checked before the first counter changes (a plan names each
  // bucket once, so checking each alone is checking them all). Parts of the delta that are
  // zero (most of them: a reserve only holds, a commit holds and spends) are skipped.
  const bool ds = !d.spent.is_zero(), dh = !d.held.is_zero(), dg = !d.granted.is_zero();
  bool overflow = false;
  for (size_t i = 0; i < n; ++i) {
    BucketRow* row = h ? h->bucket[i] : nullptr;
    if (!row) {
      const auto& w = p.windows[i];
      row = &series(w, h, i, true)->at(w.start);
      row->end = w.end;
      if (h) h->bucket[i] = row;
    }
    rows[i] = row;
    const Counters& c = row->c;
    overflow |= (int{ds && add_overflows(c.spent, d.spent)} | int{dh && add_overflows(c.held, d.held)} |
                 int{dg && add_overflows(c.granted, d.granted)}) != 0;
  }
  if (overflow) throw_overflow("integer overflow in addition");
  changed = true;
  for (size_t i = 0; i < n; ++i) {
    auto& c = rows[i]->c;
    if (ds) add_unchecked(c.spent, d.spent);
    if (dh) add_unchecked(c.held, d.held);
    if (dg) add_unchecked(c.granted, d.granted);
  }
}

std::optional<RequestRecord> MemTxn::get_request(const std::string& id) {
  if (auto* r = record(id)) return r->full();
  return std::nullopt;
}

const RequestRecord* MemTxn::find_request(const std::string& id) {
  auto* r = record(id);
  return r ? &r->rec : nullptr;
}

RequestRecord* MemTxn::edit_request(const std::string& id) {
  edited_ = record(id);
  if (!edited_) return nullptr;
  edited_held_ = edited_->rec.state == ReqState::Held;
  edited_deadline_ = edited_->rec.expires_at;
  last_ = edited_;
  return &edited_->rec;
}

void MemTxn::track_deadline(MemRecord& r, bool was_held, int64_t old_deadline) {
  changed = true;
  bool held = r.rec.state == ReqState::Held;
  if (was_held == held && (!held || old_deadline == r.rec.expires_at)) return;
  auto& st = stripe(r);
  if (r.heap_slot != kNoSlot) st.deadlines.erase(&r);
  if (!held) return;
  st.deadlines.push(&r, r.rec.expires_at);
  int64_t cur = s_.next_deadline_.load(std::memory_order_relaxed);
  while (r.rec.expires_at < cur && !s_.next_deadline_.compare_exchange_weak(cur, r.rec.expires_at)) {
  }
}

void MemTxn::save_request(const RequestRecord& rec) {
  changed = true;  // (an edited record was changed in place before this call)
  if (edited_ && &edited_->rec == &rec) {  // changed in place
    track_deadline(*edited_, edited_held_, edited_deadline_);
    edited_held_ = rec.state == ReqState::Held;
    edited_deadline_ = rec.expires_at;
    return;
  }
  put_request(rec);
}

void MemTxn::put_request(const RequestRecord& rec) {
  changed = true;
  auto* r = record(rec.request_id);
  if (!r) {
    adopt_request(RequestRecord(rec));
    return;
  }
  bool was_held = r->rec.state == ReqState::Held;
  int64_t old_deadline = r->rec.expires_at;
  if (r->rec.plan && r->rec.plan != rec.plan) r->old_plans.push_back(r->rec.plan);  // events point to it
  if (&r->rec != &rec) {
    // A record handed out by find/edit has an empty subject when it is shared: keep sharing
    // while the plan stays; otherwise the record takes its own copy of the subject.
    if (rec.subject.empty() && r->shared_subject && rec.plan == r->rec.plan) {
      r->rec = rec;
    } else {
      RequestRecord copy = rec;
      if (copy.subject.empty() && r->shared_subject) copy.subject = *r->shared_subject;
      r->shared_subject = nullptr;
      r->rec = std::move(copy);
    }
  }
  if (edited_ == r) {
    edited_held_ = rec.state == ReqState::Held;
    edited_deadline_ = rec.expires_at;
  }
  last_ = r;
  track_deadline(*r, was_held, old_deadline);
}

const RequestRecord& MemTxn::adopt_request(RequestRecord&& rec) {
  const size_t h = hash_of(rec.request_id);
  auto& st = s_.stripes_[stripe_of_hash(h)];
  if (st.requests.find(rec.request_id, h)) throw InternalError("request record stored twice: " + rec.request_id);
  MemRecord* r = st.requests.insert(std::move(rec), h);
  id_absent_ = false;  // (conservative: whichever id it was)
  last_ = cached_ = r;
  track_deadline(*r, false, 0);
  return r->rec;
}

RequestRecord& MemTxn::draft_request() {
  draft_ = s_.stripes_[stripe_of_hash(id_hash_)].requests.next_slot();
  return draft_->rec;
}

void MemTxn::set_subject(RequestRecord& rec, const std::vector<std::string>& subject) {
  const MemHandles* h = rec.plan ? handles_for(*rec.plan) : nullptr;
  if (draft_ && &draft_->rec == &rec && h && !h->stripes.empty()) {
    if (!h->subject) h->subject = std::make_unique<const std::vector<std::string>>(subject);
    if (*h->subject == subject) {
      rec.subject.clear();
      draft_->shared_subject = h->subject.get();
      return;
    }
  }
  rec.subject = subject;
}

const RequestRecord& MemTxn::adopt_draft(RequestRecord& rec) {
  MemRecord* r = draft_;
  draft_ = nullptr;
  if (!r || &r->rec != &rec || rec.request_id != id_) {  // not the slot handed out for this id
    RequestRecord tmp = std::move(rec);  // (rec may be that slot, which the next draft resets)
    if (r && &r->rec == &rec && r->shared_subject) tmp.subject = *r->shared_subject;
    return adopt_request(std::move(tmp));
  }
  auto& st = s_.stripes_[stripe_of_hash(id_hash_)];
  if (!id_absent_ && st.requests.find(rec.request_id, id_hash_))
    throw InternalError("request record stored twice: " + rec.request_id);
  st.requests.commit_slot(r, id_hash_);
  id_absent_ = false;
  last_ = cached_ = r;
  track_deadline(*r, false, 0);
  return r->rec;
}

void MemTxn::record_event(const EventDraft& d) {
  MemRecord* r = last_ && (&last_->rec == &d.rec || last_->rec.request_id == d.rec.request_id)
                     ? last_
                     : record(d.rec.request_id);
  if (!r) throw InternalError("event of an unknown request: " + d.rec.request_id);
  auto& st = stripe(*r);
  MemEvent& m = st.new_event();
  changed = true;
  m.seq = s_.seq_.fetch_add(1, std::memory_order_relaxed) + 1;
  m.time = d.now;
  m.type = d.type;
  m.spent = d.spent;
  m.held = d.held;
  m.granted = d.granted;
  m.req = r;
  m.plan = r->rec.plan.get();  // d.rec is r->rec (or a copy of it with the same plan)
  m.model = st.intern(d.rec.model);
  m.provider = st.intern(d.rec.provider);
  m.price_version = st.intern(d.rec.price_version);
  if (!d.metadata.empty()) m.metadata = d.metadata;
  if (d.usage && *d.usage) m.usage = std::make_unique<Usage>(**d.usage);
}

void MemTxn::append(LedgerEvent&& e, const std::shared_ptr<const Plan>& plan) {
  // Not used by the shared state machine (it calls record_event); kept for the interface.
  auto* r = record(e.request_id);
  if (!r) throw InternalError("event of an unknown request: " + e.request_id);
  if (plan && plan != r->rec.plan) r->old_plans.push_back(plan);  // the event points to it
  auto& st = stripe(*r);
  MemEvent& m = st.new_event();
  changed = true;
  m.seq = s_.seq_.fetch_add(1, std::memory_order_relaxed) + 1;
  m.time = to_millis(e.time);
  m.type = e.type;
  m.spent = e.spent;
  m.held = e.held;
  m.granted = e.granted;
  m.req = r;
  m.plan = plan.get();
  m.model = st.intern(e.model);
  m.provider = st.intern(e.provider);
  m.price_version = st.intern(e.price_version);
  m.metadata = std::move(e.metadata);
  if (e.usage) m.usage = std::make_unique<Usage>(*e.usage);
}

}  // namespace

std::unique_ptr<Store> make_memory_store() { return std::make_unique<MemoryStore>(); }

bool memory_store_self_check(Store& s) {
  auto* m = dynamic_cast<MemoryStore*>(&s);
  return m && m->self_check();
}

}  // namespace budget::detail
