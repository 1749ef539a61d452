// libbudget — the state machine of every operation, written once over a transaction
// interface. The memory store runs it inside striped locks, the SQLite store inside one
// SQLite transaction; the Redis store mirrors it in its Lua script (src/stores/redis*),
// and the shared conformance suite keeps the three in agreement.
#pragma once

#include <algorithm>

#include "store.hpp"

namespace budget::detail {

class Txn {
 public:
  virtual ~Txn() = default;
  virtual uint64_t limits_version() = 0;
  // Per window of the plan: counters summed over every bucket of the window's series that
  // starts at or after read_from. Buckets after the window's start are included on purpose:
  // they exist when a hold from an earlier bucket grows later (rolling windows) or when another
  // host's clock runs ahead; counting them is conservative, never an overspend.
  virtual std::vector<Counters> sum_all(const Plan& p) = 0;
  // The same sums written to out[0 .. p.windows.size()) (no allocation where overridden).
  virtual void sum_into(const Plan& p, Counters* out) {
    auto v = sum_all(p);
    std::copy(v.begin(), v.end(), out);
  }
  // The state of every check of the plan, out[0 .. p.checks.size()), computed directly where a
  // store can (true), or false: the caller derives them from sum_into.
  virtual bool check_states(const Plan& p, CheckState* out) {
    (void)p;
    (void)out;
    return false;
  }
  // Adds delta to the current bucket (start, ending at end) of every window of the plan.
  virtual void add_all(const Plan& p, const Counters& delta) = 0;
  virtual std::optional<RequestRecord> get_request(const std::string& id) = 0;
  virtual void put_request(const RequestRecord& rec) = 0;  // insert or replace
  // Appends an event; the store assigns seq (and the hash chain) and fills e.windows with the
  // keys of `plan`'s windows.
  virtual void append(LedgerEvent&& e, const std::shared_ptr<const Plan>& plan) = 0;

  // ---- overridable fast paths (defaults are built on the five calls above) -----------------
  // Read-only look-up without a copy (valid until the next call on t).
  virtual const RequestRecord* find_request(const std::string& id) {
    scratch_ = get_request(id);
    return scratch_ ? &*scratch_ : nullptr;
  }
  // The record to change in place; save_request(*rec) makes the change durable. Valid until
  // the next call on t.
  virtual RequestRecord* edit_request(const std::string& id) {
    scratch_ = get_request(id);
    return scratch_ ? &*scratch_ : nullptr;
  }
  virtual void save_request(const RequestRecord& rec) { put_request(rec); }
  // Inserts a new record the caller gives away; returns the stored record.
  virtual const RequestRecord& adopt_request(RequestRecord&& rec) {
    put_request(rec);
    scratch_ = std::move(rec);
    return *scratch_;
  }
  // A new, empty record to fill and then store with adopt_draft. Stores that keep records in
  // place hand out the slot it will live in, so storing it moves nothing; the default is a
  // scratch record that adopt_draft gives to adopt_request. The record's id must be the id of
  // the operation the transaction runs.
  virtual RequestRecord& draft_request() {
    draft_.emplace();
    return *draft_;
  }
  virtual const RequestRecord& adopt_draft(RequestRecord& rec) { return adopt_request(std::move(rec)); }
  // rec.subject = subject, for a record from draft_request whose plan is set. A store may
  // share one copy of a plan's subject among its records instead (the memory store: its
  // find/edit results then have an empty subject, which the state machine never reads; its
  // get_request and events show the subject).
  virtual void set_subject(RequestRecord& rec, const std::vector<std::string>& subject) { rec.subject = subject; }
  // Appends the event of an operation on `rec` (the record as stored after it).
  struct EventDraft {
    EventType type;
    const RequestRecord& rec;
    int64_t now;
    Amounts spent{}, held{}, granted{};
    std::string_view metadata{};
    const std::optional<Usage>* usage = nullptr;
  };
  virtual void record_event(const EventDraft& d);

 private:
  std::optional<RequestRecord> scratch_, draft_;
};

ReserveOut txn_reserve(Txn& t, const ReserveOp& op);
GrowOut txn_grow(Txn& t, const GrowOp& op);
SettleOut txn_settle(Txn& t, const SettleOp& op);
// The same, writing into `out` (a fresh SettleOut): no SettleOut is moved.
void txn_settle_into(Txn& t, const SettleOp& op, SettleOut& out);
DirectOut txn_direct(Txn& t, const DirectOp& op);
// Settles one held record whose deadline passed (the caller selected it).
void txn_expire(Txn& t, RequestRecord rec, int64_t now);
std::vector<CheckState> txn_read(Txn& t, const Plan& plan);

// Plan encoding for stores that persist request records (JSON text).
std::string encode_plan(const Plan& plan);
// The same text through nlohmann::json (the reference encode_plan is tested against).
std::string encode_plan_json(const Plan& plan);
std::shared_ptr<const Plan> decode_plan(std::string_view text);
// The event's `windows` field: the keys of the plan's windows.
std::vector<std::string> window_keys(const Plan& plan);

}  // namespace budget::detail
