// libbudget C API — the PricingEngine.
#include "glue.hpp"

using namespace budget;
using namespace budget::capi;

namespace {

PricingEngine& eng(const budget_pricing* p) { return *need(p, "pricing").rep; }

ModelPrice to_price(const budget_model_price& c) {
  check_version(c.version, BUDGET_MODEL_PRICE_VERSION, "budget_model_price");
  ModelPrice p;
  p.provider = std::string(opt_str(c.provider));
  p.input = std::string(opt_str(c.input));
  p.output = std::string(opt_str(c.output));
  p.cache_read = std::string(opt_str(c.cache_read));
  p.cache_write = std::string(opt_str(c.cache_write));
  p.cache_write_1h = std::string(opt_str(c.cache_write_1h));
  p.reasoning = std::string(opt_str(c.reasoning));
  p.per_request = std::string(opt_str(c.per_request));
  p.per_image = std::string(opt_str(c.per_image));
  p.per_audio_second = std::string(opt_str(c.per_audio_second));
  if (c.max_output_tokens < 0) invalid("max_output_tokens is negative");
  p.max_output_tokens = c.max_output_tokens;
  p.extra = std::string(opt_str(c.extra));
  return p;
}

CostOptions to_cost_options(const budget_cost_options* o) {
  CostOptions r;
  if (!o) return r;
  check_version(o->version, BUDGET_COST_OPTIONS_VERSION, "budget_cost_options");
  r.tier = to_tier(raw(o->tier));
  if (o->at_ms) r.at = from_millis(o->at_ms);
  r.apply_markup = o->apply_markup != 0;
  return r;
}

Usage usage_arg(const budget_usage* u) { return to_usage(need(u, "usage")); }

budget_load_report* to_c(const LoadReport& rep) {
  Result<budget_load_report> r;
  auto& c = r.c();
  auto& p = r.pool();
  c.table_version = p.str(rep.table_version);
  c.loaded = rep.loaded;
  c.skipped = rep.skipped;
  c.unpriceable_count = rep.unpriceable.size();
  std::vector<std::string> models, reasons;
  for (const auto& u : rep.unpriceable) {
    models.push_back(u.model);
    reasons.push_back(u.reason);
  }
  c.unpriceable_models = p.strs(models);
  c.unpriceable_reasons = p.strs(reasons);
  return r.release();
}

}  // namespace

extern "C" {

budget_status budget_pricing_new(budget_pricing** out) {
  reset(out);
  return guard([&] {
    auto& o = need(out, "out");
    auto h = std::make_unique<budget_pricing>();
    h->rep = std::make_shared<PricingEngine>();
    o = h.release();
  });
}

budget_status budget_pricing_new_bundled(budget_pricing** out) {
  reset(out);
  return guard([&] {
    auto& o = need(out, "out");
    auto h = std::make_unique<budget_pricing>();
    h->rep = std::shared_ptr<PricingEngine>(PricingEngine::bundled());
    o = h.release();
  });
}

void budget_pricing_destroy(budget_pricing* pricing) { delete pricing; }

budget_status budget_pricing_load(budget_load_report** out, budget_pricing* pricing, budget_price_format format,
                                  const char* text, size_t len) {
  reset(out);
  return guard([&] {
    auto& e = eng(pricing);
    auto t = bytes(text, len, "text");
    LoadReport rep;
    switch (raw(format)) {
      case BUDGET_PRICES_LITELLM: rep = e.load_litellm(t); break;
      case BUDGET_PRICES_COMPACT: rep = e.load_compact(t); break;
      default: invalid("unknown price format " + std::to_string(raw(format)));
    }
    if (out) *out = to_c(rep);
  });
}

budget_status budget_pricing_load_file(budget_load_report** out, budget_pricing* pricing, budget_price_format format,
                                       const char* path) {
  reset(out);
  return guard([&] {
    auto& e = eng(pricing);
    std::string f(need_str(path, "path"));
    LoadReport rep;
    switch (raw(format)) {
      case BUDGET_PRICES_LITELLM: rep = e.load_litellm_file(f); break;
      case BUDGET_PRICES_COMPACT: rep = e.load_compact_file(f); break;
      default: invalid("unknown price format " + std::to_string(raw(format)));
    }
    if (out) *out = to_c(rep);
  });
}

budget_status budget_pricing_set_price(budget_pricing* pricing, const char* model, const budget_model_price* price,
                                       int64_t effective_from_ms) {
  return guard([&] {
    auto& e = eng(pricing);
    e.set_price(std::string(need_str(model, "model")), to_price(need(price, "price")), from_millis(effective_from_ms));
  });
}

budget_status budget_pricing_add_alias(budget_pricing* pricing, const char* alias, const char* target) {
  return guard([&] {
    auto& e = eng(pricing);
    e.add_alias(std::string(need_str(alias, "alias")), std::string(need_str(target, "target")));
  });
}

budget_status budget_pricing_add_markup(budget_pricing* pricing, const budget_markup* rule) {
  return guard([&] {
    auto& e = eng(pricing);
    auto& c = need(rule, "rule");
    check_version(c.version, BUDGET_MARKUP_VERSION, "budget_markup");
    MarkupRule r;
    switch (raw(c.scope)) {
      case BUDGET_MARKUP_ALL: r.scope = MarkupRule::Scope::All; break;
      case BUDGET_MARKUP_PROVIDER: r.scope = MarkupRule::Scope::Provider; break;
      case BUDGET_MARKUP_PATTERN: r.scope = MarkupRule::Scope::Pattern; break;
      case BUDGET_MARKUP_MODEL: r.scope = MarkupRule::Scope::Model; break;
      default: invalid("unknown markup scope " + std::to_string(raw(c.scope)));
    }
    if (r.scope != MarkupRule::Scope::All) r.match = std::string(need_str(c.match, "rule->match"));
    if (c.percent) r.percent = c.percent;
    r.fixed = Money::from_nanos(c.fixed_nanos);
    r.effective_from = from_millis(c.effective_from_ms);
    e.add_markup(r);
  });
}

budget_status budget_pricing_set_fallback(budget_pricing* pricing, const budget_model_price* price) {
  return guard([&] {
    auto& e = eng(pricing);
    if (price)
      e.set_fallback(to_price(*price));
    else
      e.set_fallback(std::nullopt);
  });
}

budget_status budget_pricing_cost(int64_t* out, const budget_pricing* pricing, const char* model,
                                  const budget_usage* usage, const budget_cost_options* options) {
  if (out) *out = 0;
  return guard([&] {
    auto& o = need(out, "out");
    o = eng(pricing).cost(need_str(model, "model"), usage_arg(usage), to_cost_options(options)).nanos();
  });
}

budget_status budget_pricing_quote(budget_quote** out, const budget_pricing* pricing, const char* model,
                                   const budget_usage* usage, const budget_cost_options* options) {
  reset(out);
  return guard([&] {
    auto& o = need(out, "out");
    auto q = eng(pricing).quote(need_str(model, "model"), usage_arg(usage), to_cost_options(options));
    Result<budget_quote> r;
    auto& c = r.c();
    auto& p = r.pool();
    c.cost_nanos = q.cost.nanos();
    c.model = p.str(q.model);
    c.provider = p.str(q.provider);
    c.price_version = p.str(q.price_version);
    c.items_count = q.items.size();
    c.items = make_items(p, q.items);
    o = r.release();
  });
}

budget_status budget_pricing_estimate(int64_t* out, const budget_pricing* pricing, const char* model,
                                      int64_t input_tokens, int64_t max_output_tokens,
                                      const budget_cost_options* options) {
  if (out) *out = 0;
  return guard([&] {
    auto& o = need(out, "out");
    if (input_tokens < 0) invalid("input_tokens is negative");
    std::optional<int64_t> max_out;
    if (max_output_tokens >= 0) max_out = max_output_tokens;
    o = eng(pricing).estimate(need_str(model, "model"), input_tokens, max_out, to_cost_options(options)).nanos();
  });
}

budget_status budget_pricing_resolve(budget_resolved_model** out, const budget_pricing* pricing, const char* model) {
  reset(out);
  return guard([&] {
    auto& o = need(out, "out");
    auto m = eng(pricing).resolve(need_str(model, "model"));
    Result<budget_resolved_model> r;
    r.c().name = r.pool().str(m.name);
    r.c().provider = r.pool().str(m.provider);
    r.c().mode = r.pool().str(m.mode);
    r.c().max_output_tokens = m.max_output_tokens;
    o = r.release();
  });
}

budget_status budget_pricing_price_version(char** out, const budget_pricing* pricing, int64_t at_ms) {
  reset(out);
  return guard([&] {
    auto& o = need(out, "out");
    auto& e = eng(pricing);
    Timestamp at = at_ms ? from_millis(at_ms) : SystemClock().now();
    o = new_string(e.price_version(at));
  });
}

budget_status budget_pricing_size(size_t* out, const budget_pricing* pricing) {
  if (out) *out = 0;
  return guard([&] {
    auto& o = need(out, "out");
    o = eng(pricing).size();
  });
}

budget_status budget_pricing_to_compact(char** out, const budget_pricing* pricing) {
  reset(out);
  return guard([&] {
    auto& o = need(out, "out");
    o = new_string(eng(pricing).to_compact());
  });
}

}  // extern "C"
