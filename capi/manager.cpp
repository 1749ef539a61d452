// libbudget C API — the BudgetManager: limits, the lifecycle, observers, the ledger.
#include "glue.hpp"

#include <sstream>
#include <utility>

struct budget_manager {
  std::unique_ptr<budget::BudgetManager> rep;
};

using namespace budget;
using namespace budget::capi;

namespace {

// The caller's clock (budget_options.clock).
class CallbackClock final : public Clock {
 public:
  CallbackClock(budget_clock_fn fn, void* user_data) : fn_(fn), user_data_(user_data) {}
  Timestamp now() const override { return from_millis(fn_(user_data_)); }

 private:
  budget_clock_fn fn_;
  void* user_data_;
};

BudgetManager& mgr(budget_manager* m) { return *need(m, "manager").rep; }

Options to_options(const char* store_url, const budget_options* o) {
  Options r;
  r.store = std::string(need_str(store_url, "store_url"));
  if (!o) return r;
  check_version(o->version, BUDGET_OPTIONS_VERSION, "budget_options");
  if (o->currency) r.currency = o->currency;
  r.utc_offset_minutes = o->utc_offset_minutes;
  if (o->default_ttl_ms < 0) invalid("default_ttl_ms is negative");
  if (o->default_ttl_ms) r.default_ttl = Duration(o->default_ttl_ms);
  if (o->default_buffer_bp) r.default_buffer_bp = o->default_buffer_bp;
  if (o->growth_step_bp) r.growth_step_bp = o->growth_step_bp;
  if (o->min_growth_nanos < 0) invalid("min_growth_nanos is negative");
  if (o->min_growth_nanos) r.min_growth = Money::from_nanos(o->min_growth_nanos);
  if (o->persist_every_nanos < 0) invalid("persist_every_nanos is negative");
  r.persist_every = Money::from_nanos(o->persist_every_nanos);
  r.fail_open = o->fail_open != 0;
  if (o->store_timeout_ms < 0) invalid("store_timeout_ms is negative");
  if (o->store_timeout_ms) r.store_options.timeout = Duration(o->store_timeout_ms);
  if (o->store_pool_size < 0) invalid("store_pool_size is negative");
  if (o->store_pool_size) r.store_options.pool_size = o->store_pool_size;
  if (o->pricing) r.pricer = o->pricing->rep;
  if (o->clock) r.clock = std::make_shared<CallbackClock>(o->clock, o->clock_user_data);
  if (o->version >= 2 && o->time_zone) r.time_zone = o->time_zone;  // fields of version 2
  return r;
}

Estimate to_estimate(const budget_estimate* e) {
  Estimate r;
  if (!e) return r;
  check_version(e->version, BUDGET_ESTIMATE_VERSION, "budget_estimate");
  r.cost = Money::from_nanos(e->cost_nanos);
  r.tokens = e->tokens;
  r.model = std::string(opt_str(e->model));
  if (e->usage) r.usage = to_usage(*e->usage);
  return r;
}

Charge to_charge(const budget_charge* c) {
  if (!c) invalid("actual is NULL");
  check_version(c->version, BUDGET_CHARGE_VERSION, "budget_charge");
  Charge r;
  r.cost = Money::from_nanos(c->cost_nanos);
  r.tokens = c->tokens;
  r.model = std::string(opt_str(c->model));
  if (c->usage) r.usage = to_usage(*c->usage);
  r.provider = std::string(opt_str(c->provider));
  return r;
}

budget_decision* to_c(const Decision& d) {
  Result<budget_decision> r;
  auto& c = r.c();
  auto& p = r.pool();
  c.allowed = d.allowed ? 1 : 0;
  c.replayed = d.replayed ? 1 : 0;
  c.fail_open = d.fail_open ? 1 : 0;
  c.estimate_nanos = d.estimate.nanos();
  c.request_id = p.str(d.reservation.request_id());
  c.held_nanos = d.reservation.held().nanos();
  c.held_tokens = d.reservation.held_tokens();
  c.expires_at_ms = d.reservation ? ms(d.reservation.expires_at()) : 0;
  c.denial = d.allowed ? nullptr : make_denial(p, d.denial);
  return r.release();
}

budget_receipt* to_c(const Receipt& x) {
  Result<budget_receipt> r;
  auto& c = r.c();
  auto& p = r.pool();
  c.request_id = p.str(x.request_id);
  c.charged_nanos = x.charged.nanos();
  c.released_nanos = x.released.nanos();
  c.tokens = x.tokens;
  c.over_hold = x.over_hold ? 1 : 0;
  c.over_limit = x.over_limit ? 1 : 0;
  c.after_expiry = x.after_expiry ? 1 : 0;
  c.replayed = x.replayed ? 1 : 0;
  c.model = p.str(x.model);
  c.price_version = p.str(x.price_version);
  c.over_limit_scopes_count = x.over_limit_scopes.size();
  c.over_limit_scopes = p.strs(x.over_limit_scopes);
  c.items_count = x.items.size();
  c.items = make_items(p, x.items);
  return r.release();
}

LedgerQuery to_query(const budget_ledger_query* q) {
  LedgerQuery r;
  if (!q) return r;
  check_version(q->version, BUDGET_LEDGER_QUERY_VERSION, "budget_ledger_query");
  if (q->from_ms > INT64_MIN / 2) r.from = from_millis(q->from_ms);
  if (q->to_ms < INT64_MAX / 2) r.to = from_millis(q->to_ms);
  if (q->scope) r.scope = std::string(q->scope);
  if (q->request_id) r.request_id = std::string(q->request_id);
  if (q->type) r.type = parse_event_type(q->type);
  r.after_seq = q->after_seq;
  if (q->limit) r.limit = q->limit;
  return r;
}

}  // namespace

extern "C" {

budget_status budget_manager_open(budget_manager** out, const char* store_url, const budget_options* options) {
  reset(out);
  return guard([&] {
    auto& o = need(out, "out");
    auto m = std::make_unique<budget_manager>();
    m->rep = std::make_unique<BudgetManager>(to_options(store_url, options));
    o = m.release();
  });
}

void budget_manager_close(budget_manager* manager) {
  try {
    delete manager;
  } catch (...) {  // destructors do not throw; belt and braces at the boundary
  }
}

// ---- limits ----

budget_status budget_set_limit(budget_manager* manager, const budget_limit* limit) {
  return guard([&] {
    auto& m = mgr(manager);
    auto& l = need(limit, "limit");
    check_version(l.version, BUDGET_LIMIT_VERSION, "budget_limit");
    Limit x;
    x.scope = std::string(need_str(l.scope, "limit->scope"));
    x.window = Window::parse(need_str(l.window, "limit->window"));
    x.metric = to_metric(raw(l.metric));
    x.amount = l.amount;
    if (l.alert_thresholds_count && !l.alert_thresholds_pct) invalid("alert_thresholds_pct is NULL");
    x.alert_thresholds_pct.assign(l.alert_thresholds_pct, l.alert_thresholds_pct + l.alert_thresholds_count);
    m.set_limit(x);
  });
}

budget_status budget_remove_limit(int* out, budget_manager* manager, const char* scope, const char* window,
                                  budget_metric metric) {
  if (out) *out = 0;
  return guard([&] {
    auto& m = mgr(manager);
    bool removed = m.remove_limit(need_str(scope, "scope"), to_metric(raw(metric)), Window::parse(need_str(window, "window")));
    if (out) *out = removed ? 1 : 0;
  });
}

budget_status budget_list_limits(budget_limit_list** out, budget_manager* manager) {
  reset(out);
  return guard([&] {
    auto& o = need(out, "out");
    auto limits = mgr(manager).limits();
    Result<budget_limit_list> r;
    auto& p = r.pool();
    r.c().count = limits.size();
    auto** items = p.ptrs<budget_limit>(limits.size());
    for (size_t i = 0; i < limits.size(); ++i) {
      const auto& l = limits[i];
      auto* c = p.obj<budget_limit>();
      c->version = BUDGET_LIMIT_VERSION;
      c->scope = p.str(l.scope);
      c->window = p.str(l.window.to_string());
      c->metric = static_cast<budget_metric>(static_cast<int>(l.metric));
      c->amount = l.amount;
      auto* th = static_cast<uint32_t*>(p.raw(sizeof(uint32_t) * l.alert_thresholds_pct.size()));
      for (size_t k = 0; k < l.alert_thresholds_pct.size(); ++k) th[k] = l.alert_thresholds_pct[k];
      c->alert_thresholds_pct = th;
      c->alert_thresholds_count = l.alert_thresholds_pct.size();
      items[i] = c;
    }
    r.c().items = items;
    o = r.release();
  });
}

// ---- the lifecycle ----

budget_status budget_reserve(budget_decision** out, budget_manager* manager, const char* const* subject,
                             size_t subject_count, const budget_estimate* estimate,
                             const budget_request_options* options) {
  reset(out);
  return guard([&] {
    auto& o = need(out, "out");
    auto& m = mgr(manager);
    auto d = m.reserve(to_subject(subject, subject_count), to_estimate(estimate), to_request_options(options));
    o = to_c(d);
  });
}

budget_status budget_check(budget_decision** out, budget_manager* manager, const char* const* subject,
                           size_t subject_count, const budget_estimate* estimate) {
  reset(out);
  return guard([&] {
    auto& o = need(out, "out");
    auto& m = mgr(manager);
    o = to_c(m.check(to_subject(subject, subject_count), to_estimate(estimate)));
  });
}

budget_status budget_consume(budget_consume_result** out, budget_manager* manager, const char* request_id,
                             int64_t amount_nanos, int64_t tokens) {
  reset(out);
  return guard([&] {
    auto& o = need(out, "out");
    auto& m = mgr(manager);
    auto res = m.consume(need_str(request_id, "request_id"), Money::from_nanos(amount_nanos), tokens);
    Result<budget_consume_result> r;
    r.c().verdict = res.ok() ? BUDGET_CONTINUE : BUDGET_STOP;
    r.c().consumed_nanos = res.consumed.nanos();
    r.c().held_nanos = res.held.nanos();
    r.c().denial = res.ok() ? nullptr : make_denial(r.pool(), res.denial);
    o = r.release();
  });
}

budget_status budget_commit(budget_receipt** out, budget_manager* manager, const char* request_id,
                            const budget_charge* actual) {
  reset(out);
  return guard([&] {
    auto& o = need(out, "out");
    auto& m = mgr(manager);
    auto id = need_str(request_id, "request_id");
    o = to_c(m.commit(id, to_charge(actual)));
  });
}

budget_status budget_release(budget_receipt** out, budget_manager* manager, const char* request_id) {
  reset(out);
  return guard([&] {
    auto& m = mgr(manager);
    auto receipt = m.release(need_str(request_id, "request_id"));
    if (out) *out = to_c(receipt);
  });
}

budget_status budget_expire_holds(size_t* out, budget_manager* manager) {
  if (out) *out = 0;
  return guard([&] {
    size_t n = mgr(manager).expire_holds();
    if (out) *out = n;
  });
}

budget_status budget_record(budget_receipt** out, budget_manager* manager, const char* const* subject,
                            size_t subject_count, const budget_charge* actual, const budget_request_options* options) {
  reset(out);
  return guard([&] {
    auto& m = mgr(manager);
    auto receipt = m.record(to_subject(subject, subject_count), to_charge(actual), to_request_options(options));
    if (out) *out = to_c(receipt);
  });
}

budget_status budget_grant(budget_manager* manager, const char* scope, int64_t amount_nanos,
                           const budget_request_options* options) {
  return guard([&] {
    auto& m = mgr(manager);
    m.grant(Scope::parse(need_str(scope, "scope")), Money::from_nanos(amount_nanos), to_request_options(options));
  });
}

budget_status budget_adjust(budget_manager* manager, const char* const* subject, size_t subject_count,
                            int64_t delta_nanos, const budget_request_options* options) {
  return guard([&] {
    auto& m = mgr(manager);
    m.adjust(to_subject(subject, subject_count), Money::from_nanos(delta_nanos), to_request_options(options));
  });
}

budget_status budget_scope_status(budget_limit_status_list** out, budget_manager* manager, const char* scope) {
  reset(out);
  return guard([&] {
    auto& o = need(out, "out");
    auto& m = mgr(manager);
    auto rows = m.status(Scope::parse(need_str(scope, "scope")));
    Result<budget_limit_status_list> r;
    auto& p = r.pool();
    auto** items = p.ptrs<budget_limit_status>(rows.size());
    for (size_t i = 0; i < rows.size(); ++i) {
      const auto& s = rows[i];
      auto* c = p.obj<budget_limit_status>();
      c->key = p.str(s.key);
      c->scope = p.str(s.scope);
      c->window = p.str(s.window);
      c->metric = static_cast<budget_metric>(static_cast<int>(s.metric));
      c->limit = s.limit;
      c->granted = s.granted;
      c->spent = s.spent;
      c->held = s.held;
      c->remaining = s.remaining;
      c->window_start_ms = ms(s.window_start);
      c->has_resets_at = s.resets_at ? 1 : 0;
      c->resets_at_ms = s.resets_at ? ms(*s.resets_at) : 0;
      items[i] = c;
    }
    r.c().count = rows.size();
    r.c().items = items;
    o = r.release();
  });
}

// ---- observers ----

budget_status budget_on_alert(budget_manager* manager, budget_alert_fn callback, void* user_data) {
  return guard([&] {
    auto& m = mgr(manager);
    if (!callback) invalid("callback is NULL");
    m.on_alert([callback, user_data](const Alert& a) {
      budget_alert c{};
      c.scope = a.scope.c_str();
      c.window = a.window.c_str();
      c.limit_key = a.limit_key.c_str();
      c.metric = static_cast<budget_metric>(static_cast<int>(a.metric));
      c.threshold_pct = a.threshold_pct;
      c.limit = a.limit;
      c.spent = a.spent;
      c.window_start_ms = ms(a.window_start);
      c.request_id = a.request_id.c_str();
      try {
        callback(user_data, &c);
      } catch (...) {  // a C++ caller's exception must not unwind through the engine
      }
    });
  });
}

budget_status budget_on_denial(budget_manager* manager, budget_denial_fn callback, void* user_data) {
  return guard([&] {
    auto& m = mgr(manager);
    if (!callback) invalid("callback is NULL");
    m.on_denial([callback, user_data](const Denial& d, const Subject& s) {
      try {
        Pool p;
        const budget_denial* c = make_denial(p, d);
        std::vector<const char*> scopes;
        scopes.reserve(s.size());
        for (const auto& sc : s.scopes()) scopes.push_back(sc.str().c_str());
        callback(user_data, c, scopes.data(), scopes.size());
      } catch (...) {
      }
    });
  });
}

// ---- the ledger ----

budget_status budget_export(char** out, size_t* out_len, budget_manager* manager, budget_export_format format,
                            const budget_ledger_query* query) {
  reset(out);
  if (out_len) *out_len = 0;
  return guard([&] {
    auto& o = need(out, "out");
    auto& m = mgr(manager);
    auto q = to_query(query);
    std::ostringstream s;
    switch (raw(format)) {
      case BUDGET_EXPORT_CSV: m.export_csv(s, q); break;
      case BUDGET_EXPORT_JSONL: m.export_jsonl(s, q); break;
      default: invalid("unknown export format " + std::to_string(raw(format)));
    }
    std::string text = std::move(s).str();
    o = new_string(text);
    if (out_len) *out_len = text.size();
  });
}

budget_status budget_verify(budget_verify_report** out, budget_manager* manager) {
  reset(out);
  return guard([&] {
    auto& o = need(out, "out");
    auto rep = mgr(manager).verify();
    Result<budget_verify_report> r;
    r.c().ok = rep.ok ? 1 : 0;
    r.c().chain_ok = rep.chain_ok ? 1 : 0;
    r.c().events = rep.events;
    r.c().windows_checked = rep.windows_checked;
    r.c().problems_count = rep.problems.size();
    r.c().problems = r.pool().strs(rep.problems);
    o = r.release();
  });
}

budget_status budget_metrics_text(char** out, const budget_manager* manager) {
  reset(out);
  return guard([&] {
    auto& o = need(out, "out");
    o = new_string(need(manager, "manager").rep->metrics_text());
  });
}

}  // extern "C"
