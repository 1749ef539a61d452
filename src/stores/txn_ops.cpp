#include "stores/txn.hpp"

#include <budget/error.hpp>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <charconv>
#include <optional>

#include "int128.hpp"
#include "json_text.hpp"

namespace budget::detail {

std::vector<std::string> window_keys(const Plan& p) {
  std::vector<std::string> keys;
  keys.reserve(p.windows.size());
  for (const auto& w : p.windows) keys.push_back(w.key());
  return keys;
}

namespace {

CheckState state_of(const Counters& c, Metric m) {
  return {metric_of(c.spent, m), metric_of(c.held, m), metric_of(c.granted, m)};
}

// The states of a plan's checks, in an inline buffer for usual plans (no allocation).
class States {
 public:
  States() : data_(small_) {}
  States(const States&) = delete;
  States& operator=(const States&) = delete;
  void fill(Txn& t, const Plan& p) {
    const size_t nw = p.windows.size(), nc = p.checks.size();
    if (nc > kInline) {
      big_.resize(nc);
      data_ = big_.data();
    } else {
      data_ = small_;
    }
    n_ = nc;
    if (t.check_states(p, data_)) return;
    union Raw {  // not initialised: sum_into writes every element used
      Raw() {}
      Counters c[kInline];
    } small_sums;
    std::vector<Counters> big_sums;
    Counters* sums = small_sums.c;
    if (nw > kInline) {
      big_sums.resize(nw);
      sums = big_sums.data();
    }
    if (nw) t.sum_into(p, sums);
    for (size_t i = 0; i < nc; ++i) data_[i] = state_of(sums[p.checks[i].window], p.checks[i].metric);
  }
  size_t size() const { return n_; }
  CheckState& operator[](size_t i) { return data_[i]; }
  const CheckState& operator[](size_t i) const { return data_[i]; }
  std::vector<CheckState> vec() const { return {data_, data_ + n_}; }
  void fill_from(const States& o) {
    if (o.n_ > kInline) {
      big_.assign(o.data_, o.data_ + o.n_);
      data_ = big_.data();
    } else {
      std::copy(o.data_, o.data_ + o.n_, small_);
      data_ = small_;
    }
    n_ = o.n_;
  }

 private:
  static constexpr size_t kInline = 16;
  union {  // not initialised: written before read
    CheckState small_[kInline];
  };
  std::vector<CheckState> big_;
  CheckState* data_;
  size_t n_ = 0;
};

std::vector<CheckState> states(Txn& t, const Plan& p) {
  States st;
  st.fill(t, p);
  return st.vec();
}

// First check without room for `need`, or -1.
template <class S>
int first_failing(const Plan& p, const S& st, const Amounts& need) {
  for (size_t i = 0; i < p.checks.size(); ++i)
    if (!has_room(p.checks[i], st[i], metric_of(need, p.checks[i].metric))) return static_cast<int>(i);
  return -1;
}

void add_all(Txn& t, const Plan& p, const Counters& delta) {
  if (!p.windows.empty()) t.add_all(p, delta);
}

bool over_limit(const Check& c, const CheckState& s) {
  int128 cap = static_cast<int128>(c.limit) + (c.grantable ? s.granted : 0);
  return static_cast<int128>(s.spent) + s.held > cap;
}

template <class S>
S& shift(const Plan& p, S& st, const Amounts& spent, const Amounts& held) {
  for (size_t i = 0; i < p.checks.size(); ++i) {
    st[i].spent = checked_add(st[i].spent, metric_of(spent, p.checks[i].metric));
    st[i].held = checked_add(st[i].held, metric_of(held, p.checks[i].metric));
  }
  return st;
}
std::vector<CheckState> shifted(const Plan& p, std::vector<CheckState> st, const Amounts& spent, const Amounts& held) {
  return shift(p, st, spent, held);
}

// The plan's windows as they stand at `now`: a rolling window slides forward (a calendar
// window stays the one the reservation was charged to). Used to judge over_limit at commit.
// Returns `p` itself when nothing slides (no copy), else a shifted copy kept in `storage`.
const Plan& current_view(const Plan& p, int64_t now, std::optional<Plan>& storage) {
  auto shift_of = [&](const WindowRef& w) -> int64_t {
    if (w.window.rfind("rolling:", 0) != 0 || w.end <= w.start) return 0;
    int64_t g = w.end - w.start;
    int64_t cur = (now >= 0 ? now / g : (now - g + 1) / g) * g;
    return cur > w.start ? cur - w.start : 0;
  };
  bool slides = false;
  for (const auto& w : p.windows) slides = slides || shift_of(w) > 0;
  if (!slides) return p;
  storage.emplace(p);
  for (auto& w : storage->windows) {
    int64_t d = shift_of(w);
    w.read_from += d;
    w.start += d;
    w.end += d;
  }
  return *storage;
}

template <class S>
void flag_over_limit(const Plan& p, const S& after, RequestRecord& rec) {
  for (size_t i = 0; i < p.checks.size(); ++i)
    if (over_limit(p.checks[i], after[i])) rec.over_limit = true;
}

// What a settle hands back: the parts of the record that a receipt shows (the engine reads
// nothing else of SettleOut::record; see store.hpp).
void copy_result(const RequestRecord& rec, RequestRecord& out) {
  out.request_id = rec.request_id;
  out.state = rec.state;
  out.plan = rec.plan;
  out.held = rec.held;
  out.consumed = rec.consumed;
  out.charged = rec.charged;
  out.created_at = rec.created_at;
  out.expires_at = rec.expires_at;
  out.over_hold = rec.over_hold;
  out.over_limit = rec.over_limit;
  out.after_expiry = rec.after_expiry;
  assign_str(out.model, rec.model);
  assign_str(out.price_version, rec.price_version);
}

[[noreturn]] void conflict(const RequestRecord& rec, const char* asked) {
  throw ConflictError("request id '" + rec.request_id + "' is already " + to_string(rec.state) +
                      "; cannot " + asked);
}

}  // namespace

ReserveOut txn_reserve(Txn& t, const ReserveOp& op) {
  ReserveOut out;
  if (!op.dry_run) {
    if (const auto* rec = t.find_request(op.request_id)) {
      bool was_reserve = rec->state == ReqState::Held || rec->state == ReqState::Committed ||
                         rec->state == ReqState::Released || rec->state == ReqState::Expired ||
                         rec->state == ReqState::Denied;
      if (!was_reserve || rec->fingerprint != op.fingerprint)
        throw conflict_error(op.request_id);
      out.replayed = true;
      out.plan = rec->plan;
      out.held = rec->held;
      out.expires_at = rec->expires_at;
      if (rec->state == ReqState::Denied) {
        out.status = ReserveOut::Denied;
        out.failing_check = rec->failing_check;
        out.failing_state = rec->failing_state;
      }
      return out;
    }
  }
  if (t.limits_version() != op.plan->limits_version) {
    out.status = ReserveOut::Stale;
    return out;
  }
  out.plan = op.plan;
  States st;
  st.fill(t, *op.plan);
  int failing = first_failing(*op.plan, st, op.amount);
  if (failing >= 0) {
    out.status = ReserveOut::Denied;
    out.failing_check = failing;
    out.failing_state = st[failing];
  }
  if (op.dry_run) return out;
  // The record is drafted (allocated, its strings copied) before the first change, so that an
  // allocation that fails leaves nothing changed (the memory store cannot undo a change).
  RequestRecord& rec = t.draft_request();
  rec.request_id = op.request_id;
  rec.plan = op.plan;
  t.set_subject(rec, op.subject);
  rec.created_at = op.now;
  rec.expires_at = op.expires_at;
  assign_str(rec.model, op.model);
  assign_str(rec.provider, op.provider);
  rec.fingerprint = op.fingerprint;
  if (failing >= 0) {
    rec.state = ReqState::Denied;
    rec.failing_check = failing;
    rec.failing_state = st[failing];
  } else {
    rec.state = ReqState::Held;
    rec.held = op.amount;
    Counters delta;
    delta.held = op.amount;
    add_all(t, *op.plan, delta);
    out.held = op.amount;
    out.expires_at = op.expires_at;
  }
  const auto& stored = t.adopt_draft(rec);
  Txn::EventDraft e{failing >= 0 ? EventType::Deny : EventType::Reserve, stored, op.now};
  if (failing < 0) e.held = op.amount;
  e.metadata = op.metadata;
  t.record_event(e);
  return out;
}

GrowOut txn_grow(Txn& t, const GrowOp& op) {
  GrowOut out;
  auto* rec = t.edit_request(op.request_id);
  if (!rec) throw NotFoundError("unknown request id '" + op.request_id + "'");
  out.plan = rec->plan;
  if (rec->state == ReqState::Held && rec->expires_at <= op.now) {
    txn_expire(t, *rec, op.now);
    rec = t.edit_request(op.request_id);  // now Expired
  }
  out.state = rec->state;
  out.held = rec->held;
  if (rec->state != ReqState::Held) {
    out.status = GrowOut::NotHeld;
    return out;
  }
  // Built before the first change (an allocation that fails then changes nothing).
  std::string meta = "{\"consumed\":";  // nlohmann's dump of the same object (see json_text.hpp)
  append_json_int(meta, op.consumed.cost);
  meta += ",\"consumed_tokens\":";
  append_json_int(meta, op.consumed.tokens);
  meta += '}';
  bool grown = false;
  if (!op.delta.is_zero()) {
    States st;
    st.fill(t, *rec->plan);
    int failing = first_failing(*rec->plan, st, op.delta);
    if (failing >= 0) {
      out.status = GrowOut::Denied;
      out.failing_check = failing;
      out.failing_state = st[failing];
      if (rec->consumed == op.consumed) return out;
    } else {
      Amounts held = rec->held + op.delta;  // checked before anything changes
      Counters delta;
      delta.held = op.delta;
      add_all(t, *rec->plan, delta);
      rec->held = held;
      grown = true;
    }
  }
  rec->consumed = op.consumed;
  t.save_request(*rec);
  Txn::EventDraft e{EventType::Consume, *rec, op.now};
  if (grown) e.held = op.delta;
  e.metadata = meta;
  t.record_event(e);
  out.held = rec->held;
  return out;
}

void txn_settle_into(Txn& t, const SettleOp& op, SettleOut& out) {
  auto* rec = t.edit_request(op.request_id);
  if (!rec) throw NotFoundError("unknown request id '" + op.request_id + "'");
  const bool commit = op.kind == SettleOp::Commit;
  switch (rec->state) {
    case ReqState::Committed:
      if (!commit) conflict(*rec, "release it");
      if (rec->fingerprint != op.fingerprint) conflict(*rec, "commit it again with a different amount");
      copy_result(*rec, out.record);
      out.replayed = true;
      return;
    case ReqState::Released:
      if (commit) conflict(*rec, "commit it");
      copy_result(*rec, out.record);
      out.replayed = true;
      return;
    case ReqState::Expired:
      if (!commit) {  // the hold is already gone; what expiry charged stays
        copy_result(*rec, out.record);
        out.replayed = true;
        return;
      }
      break;
    case ReqState::Held:
      break;
    case ReqState::Recorded:
      // A commit the engine wrote as a record (a fail-open reservation's) carries the commit's
      // fingerprint: repeating that commit replays it. Any other record is another operation.
      if (commit && rec->fingerprint == op.fingerprint) {
        copy_result(*rec, out.record);
        out.replayed = true;
        return;
      }
      conflict(*rec, commit ? "commit it" : "release it");
    default:
      conflict(*rec, commit ? "commit it" : "release it");
  }
  const Plan& plan = *rec->plan;
  std::optional<Plan> shifted_plan;
  const Plan& view = current_view(plan, op.now, shifted_plan);
  States before, after;
  before.fill(t, view);
  // Everything that can throw (checked arithmetic) comes before the first change.
  Counters delta;
  const bool late = rec->state == ReqState::Expired;
  if (late) {
    // A late commit: expiry charged what was consumed; record the difference as an adjustment.
    delta.spent = op.charge - rec->charged;
  } else {
    delta.held = -rec->held;
    if (commit) delta.spent = op.charge;
    // What the hold gave back: all of it on release, the uncharged rest on commit.
    out.released = rec->held;
    if (commit)
      out.released = {std::max<int64_t>(0, rec->held.cost - op.charge.cost),
                      std::max<int64_t>(0, rec->held.tokens - op.charge.tokens),
                      std::max<int64_t>(0, rec->held.requests - op.charge.requests)};
  }
  // The reservation's buckets inside today's view: after = before + delta, no re-read.
  bool inside = true;
  for (size_t i = 0; i < plan.windows.size(); ++i) inside = inside && plan.windows[i].start >= view.windows[i].read_from;
  if (inside) {
    after.fill_from(before);
    shift(view, after, delta.spent, delta.held);
  }
  add_all(t, plan, delta);
  if (!inside) after.fill(t, view);
  if (late) rec->after_expiry = true;
  if (commit) {
    rec->state = ReqState::Committed;
    rec->over_hold = op.charge.cost > rec->held.cost || op.charge.tokens > rec->held.tokens;
    rec->charged = op.charge;
    rec->fingerprint = op.fingerprint;
    if (!op.model.empty()) rec->model = op.model;
    if (!op.provider.empty()) rec->provider = op.provider;
    assign_str(rec->price_version, op.price_version);
  } else {
    rec->state = ReqState::Released;
  }
  rec->over_limit = false;
  if (commit) flag_over_limit(view, after, *rec);
  if (op.want_states || rec->over_limit) {
    out.before = before.vec();
    out.after = after.vec();
  }
  t.save_request(*rec);
  Txn::EventDraft e{commit ? EventType::Commit : EventType::Release, *rec, op.now};
  e.spent = delta.spent;
  e.held = delta.held;
  e.metadata = op.metadata;
  if (commit) e.usage = &op.usage;
  t.record_event(e);
  copy_result(*rec, out.record);
  return;
}

SettleOut txn_settle(Txn& t, const SettleOp& op) {
  SettleOut out;
  txn_settle_into(t, op, out);
  return out;
}

void txn_expire(Txn& t, RequestRecord rec, int64_t now) {
  if (rec.state != ReqState::Held) return;
  Counters delta;
  delta.held = -rec.held;
  delta.spent = expiry_charge(*rec.plan, rec);
  add_all(t, *rec.plan, delta);
  rec.state = ReqState::Expired;
  rec.charged = delta.spent;
  t.save_request(rec);
  Txn::EventDraft e{EventType::Expire, rec, now};
  e.held = delta.held;
  e.spent = delta.spent;
  t.record_event(e);
}

DirectOut txn_direct(Txn& t, const DirectOp& op) {
  DirectOut out;
  static constexpr ReqState kStateOf[] = {ReqState::Held, ReqState::Held, ReqState::Committed,
                                          ReqState::Released, ReqState::Expired, ReqState::Recorded,
                                          ReqState::Granted, ReqState::Adjusted, ReqState::Denied};
  const ReqState target = kStateOf[static_cast<int>(op.type)];
  if (const auto* rec = t.find_request(op.request_id)) {
    if (rec->state != target || rec->fingerprint != op.fingerprint)
      throw conflict_error(op.request_id);
    out.replayed = true;
    out.record = *rec;
    return out;
  }
  if (t.limits_version() != op.plan->limits_version) {
    out.stale = true;
    return out;
  }
  RequestRecord rec;
  rec.request_id = op.request_id;
  rec.state = target;
  rec.subject = op.subject;
  rec.plan = op.plan;
  rec.created_at = op.now;
  rec.charged = op.spent;
  rec.model = op.model;
  rec.provider = op.provider;
  rec.price_version = op.price_version;
  rec.fingerprint = op.fingerprint;
  auto before = states(t, *op.plan);
  out.after = shifted(*op.plan, before, op.spent, {});
  for (size_t i = 0; i < op.plan->checks.size(); ++i)
    if (op.plan->checks[i].grantable) out.after[i].granted = checked_add(out.after[i].granted, metric_of(op.granted, op.plan->checks[i].metric));
  Counters delta;
  delta.spent = op.spent;
  delta.granted = op.granted;
  add_all(t, *op.plan, delta);
  out.before = std::move(before);
  if (op.type != EventType::Grant) flag_over_limit(*op.plan, out.after, rec);
  const auto& stored = t.adopt_request(std::move(rec));
  Txn::EventDraft e{op.type, stored, op.now};
  e.spent = op.spent;
  e.granted = op.granted;
  e.usage = &op.usage;
  e.metadata = op.metadata;
  t.record_event(e);
  out.record = stored;
  return out;
}

// The default: a full LedgerEvent for Txn::append.
void Txn::record_event(const EventDraft& d) {
  LedgerEvent e;
  e.time = from_millis(d.now);
  e.type = d.type;
  e.request_id = d.rec.request_id;
  e.subject = d.rec.subject;
  e.model = d.rec.model;
  e.provider = d.rec.provider;
  e.price_version = d.rec.price_version;
  if (d.usage) e.usage = *d.usage;
  e.spent = d.spent;
  e.held = d.held;
  e.granted = d.granted;
  e.metadata = d.metadata;
  append(std::move(e), d.rec.plan);
}

std::vector<CheckState> txn_read(Txn& t, const Plan& plan) { return states(t, plan); }

// ---- plan encoding --------------------------------------------------------------------------
std::string encode_plan(const Plan& p) {
  // As encode_plan_json writes it (keys sorted, no spaces): {"c":[...],"v":N,"w":[...]}.
  std::string out;
  out.reserve(64 + 64 * (p.windows.size() + p.checks.size()));
  auto str = [&](const std::string& s) {
    if (!append_json_string(out, s)) throw std::invalid_argument("not UTF-8");  // caught below
  };
  try {
    out += "{\"c\":[";
    for (size_t i = 0; i < p.checks.size(); ++i) {
      const auto& c = p.checks[i];
      out += i ? ",[" : "[";
      append_json_int(out, c.window);
      out += ',';
      append_json_int(out, static_cast<int>(c.metric));
      out += ',';
      append_json_int(out, c.limit);
      out += c.grantable ? ",true," : ",false,";
      append_json_int(out, c.resets_at);
      out += ',';
      str(c.limit_key);
      out += ",[";
      for (size_t k = 0; k < c.alerts.size(); ++k) {
        if (k) out += ',';
        append_json_int(out, c.alerts[k]);
      }
      out += "]]";
    }
    out += "],\"v\":";
    append_json_int(out, p.limits_version);
    out += ",\"w\":[";
    for (size_t i = 0; i < p.windows.size(); ++i) {
      const auto& w = p.windows[i];
      out += i ? ",[" : "[";
      str(w.scope);
      out += ',';
      str(w.window);
      out += ',';
      append_json_int(out, w.start);
      out += ',';
      append_json_int(out, w.end);
      out += ',';
      append_json_int(out, w.read_from);
      out += ']';
    }
    out += "]}";
  } catch (const std::invalid_argument&) {
    return encode_plan_json(p);  // a string that is not plain UTF-8: nlohmann decides
  }
  return out;
}

std::string encode_plan_json(const Plan& p) {
  nlohmann::json j;
  j["v"] = p.limits_version;
  auto& ws = j["w"] = nlohmann::json::array();
  for (const auto& w : p.windows) ws.push_back({w.scope, w.window, w.start, w.end, w.read_from});
  auto& cs = j["c"] = nlohmann::json::array();
  for (const auto& c : p.checks)
    cs.push_back({c.window, static_cast<int>(c.metric), c.limit, c.grantable, c.resets_at, c.limit_key, c.alerts});
  return j.dump();
}

namespace {
// A strict reader of exactly what encode_plan writes (its strings read by read_json_string):
// a plan is decoded on the operation path (the Redis and SQLite stores), where an allocation
// that fails must not meet nlohmann (see json_text.hpp). Anything else: nullopt.
class PlanReader {
 public:
  explicit PlanReader(std::string_view t) : t_(t) {}
  std::optional<std::shared_ptr<Plan>> read() {
    auto p = std::make_shared<Plan>();
    if (!lit("{\"c\":[")) return std::nullopt;
    for (bool first = true; !lit("]"); first = false) {
      if (!first && !lit(",")) return std::nullopt;
      Check k;
      int64_t window, metric;
      bool grantable;
      if (!(lit("[") && num(window) && lit(",") && num(metric) && lit(",") && num(k.limit) && lit(",") &&
            boolean(grantable) && lit(",") && num(k.resets_at) && lit(",") && str(k.limit_key) && lit(",[")))
        return std::nullopt;
      if (window < 0 || window > UINT16_MAX || metric < 0 || metric > 2) return std::nullopt;
      k.window = static_cast<uint16_t>(window);
      k.metric = static_cast<Metric>(metric);
      k.grantable = grantable;
      for (bool f = true; !lit("]"); f = false) {
        int64_t a;
        if ((!f && !lit(",")) || !num(a) || a < 0 || a > UINT32_MAX) return std::nullopt;
        k.alerts.push_back(static_cast<uint32_t>(a));
      }
      if (!lit("]")) return std::nullopt;
      p->checks.push_back(std::move(k));
    }
    int64_t version;
    if (!lit(",\"v\":") || !num(version) || version < 0 || !lit(",\"w\":[")) return std::nullopt;
    p->limits_version = static_cast<uint64_t>(version);
    for (bool first = true; !lit("]"); first = false) {
      WindowRef w;
      if (!(( first || lit(",")) && lit("[") && str(w.scope) && lit(",") && str(w.window) && lit(",") && num(w.start) &&
            lit(",") && num(w.end) && lit(",") && num(w.read_from) && lit("]")))
        return std::nullopt;
      w.seal();
      p->windows.push_back(std::move(w));
    }
    if (!lit("}") || i_ != t_.size()) return std::nullopt;
    for (const auto& c : p->checks)
      if (c.window >= p->windows.size()) return std::nullopt;
    return p;
  }

 private:
  bool lit(std::string_view s) {
    if (t_.substr(i_, s.size()) != s) return false;
    i_ += s.size();
    return true;
  }
  bool num(int64_t& v) {
    const char* b = t_.data() + i_;
    auto r = std::from_chars(b, t_.data() + t_.size(), v);
    if (r.ec != std::errc() || r.ptr == b || (*b == '0' && r.ptr - b > 1) || (*b == '-' && b[1] == '0')) return false;
    i_ += static_cast<size_t>(r.ptr - b);
    return true;
  }
  bool boolean(bool& v) {
    if (lit("true")) return v = true, true;
    if (lit("false")) return v = false, true;
    return false;
  }
  // Escapes and UTF-8 included: a scope id with a quote or an accent no longer sends the
  // plan to nlohmann.
  bool str(std::string& v) { return read_json_string(t_, i_, v); }
  std::string_view t_;
  size_t i_ = 0;
};
}  // namespace

std::shared_ptr<const Plan> decode_plan(std::string_view text) {
  if (auto p = PlanReader(text).read()) return std::move(*p);
  try {
    auto j = nlohmann::json::parse(text);
    auto p = std::make_shared<Plan>();
    p->limits_version = j.at("v").get<uint64_t>();
    for (const auto& w : j.at("w")) {
      p->windows.push_back({w.at(0).get<std::string>(), w.at(1).get<std::string>(), w.at(2).get<int64_t>(),
                            w.at(3).get<int64_t>(), w.at(4).get<int64_t>(), {}, 0});
      p->windows.back().seal();
    }
    for (const auto& c : j.at("c")) {
      Check k;
      k.window = c.at(0).get<uint16_t>();
      k.metric = static_cast<Metric>(c.at(1).get<int>());
      k.limit = c.at(2).get<int64_t>();
      k.grantable = c.at(3).get<bool>();
      k.resets_at = c.at(4).get<int64_t>();
      k.limit_key = c.at(5).get<std::string>();
      k.alerts = c.at(6).get<std::vector<uint32_t>>();
      p->checks.push_back(std::move(k));
    }
    return p;
  } catch (const nlohmann::json::exception& e) {
    throw InternalError(std::string("corrupted plan in store: ") + e.what());
  }
}

}  // namespace budget::detail
