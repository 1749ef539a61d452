// libbudget Node addon — NativePricing (a PricingEngine). Pure computations: synchronous.
#include "common.hpp"

#include <chrono>

namespace bn {

namespace {

std::string to_price_text(const Napi::Value& v, const char* what) {
  if (v.IsString()) return v.As<Napi::String>().Utf8Value();
  if (v.IsNumber()) {
    double d = v.As<Napi::Number>().DoubleValue();
    if (!std::isfinite(d)) invalid(std::string(what) + " must be finite");
    return v.ToString().Utf8Value();  // shortest decimal text, like String(x)
  }
  invalid(std::string(what) + " must be a decimal string or a number");
}

budget::ModelPrice to_model_price(const Napi::Value& v) {
  Napi::Object o = expect_object(v, "price");
  budget::ModelPrice p;
  Napi::Value x;
  if (has(o, "provider", &x)) p.provider = to_string(x, "price.provider");
  if (has(o, "input", &x)) p.input = to_price_text(x, "price.input");
  if (has(o, "output", &x)) p.output = to_price_text(x, "price.output");
  if (has(o, "cacheRead", &x)) p.cache_read = to_price_text(x, "price.cacheRead");
  if (has(o, "cacheWrite", &x)) p.cache_write = to_price_text(x, "price.cacheWrite");
  if (has(o, "cacheWrite1h", &x)) p.cache_write_1h = to_price_text(x, "price.cacheWrite1h");
  if (has(o, "reasoning", &x)) p.reasoning = to_price_text(x, "price.reasoning");
  if (has(o, "perRequest", &x)) p.per_request = to_price_text(x, "price.perRequest");
  if (has(o, "perImage", &x)) p.per_image = to_price_text(x, "price.perImage");
  if (has(o, "perAudioSecond", &x)) p.per_audio_second = to_price_text(x, "price.perAudioSecond");
  if (has(o, "maxOutputTokens", &x)) p.max_output_tokens = to_count(x, "price.maxOutputTokens");
  if (has(o, "extra", &x)) p.extra = to_string(x, "price.extra");
  return p;
}

budget::CostOptions to_cost_options(const Napi::Value& v) {
  budget::CostOptions c;
  if (v.IsUndefined() || v.IsNull()) return c;
  Napi::Object o = expect_object(v, "cost options");
  Napi::Value x;
  if (has(o, "tier", &x)) c.tier = to_service_tier(x, "tier");
  if (has(o, "at", &x)) c.at = to_time(x, "at");
  if (has(o, "applyMarkup", &x)) c.apply_markup = to_bool(x, "applyMarkup");
  return c;
}

Napi::Object from_report(Napi::Env env, const budget::LoadReport& r) {
  Napi::Object o = Napi::Object::New(env);
  o.Set("tableVersion", r.table_version);
  o.Set("loaded", Napi::Number::New(env, double(r.loaded)));
  o.Set("skipped", Napi::Number::New(env, double(r.skipped)));
  Napi::Array a = Napi::Array::New(env, r.unpriceable.size());
  for (size_t i = 0; i < r.unpriceable.size(); ++i) {
    Napi::Object u = Napi::Object::New(env);
    u.Set("model", r.unpriceable[i].model);
    u.Set("reason", r.unpriceable[i].reason);
    a.Set(static_cast<uint32_t>(i), u);
  }
  o.Set("unpriceable", a);
  return o;
}

class NativePricing : public Napi::ObjectWrap<NativePricing> {
 public:
  static void Init(Napi::Env env, Napi::Object exports) {
    Napi::Function f = DefineClass(
        env, "NativePricing",
        {InstanceMethod("loadLitellm", &NativePricing::LoadLitellm),
         InstanceMethod("loadLitellmFile", &NativePricing::LoadLitellmFile),
         InstanceMethod("loadCompact", &NativePricing::LoadCompact),
         InstanceMethod("loadCompactFile", &NativePricing::LoadCompactFile),
         InstanceMethod("loadBundled", &NativePricing::LoadBundled), InstanceMethod("toCompact", &NativePricing::ToCompact),
         InstanceMethod("setPrice", &NativePricing::SetPrice), InstanceMethod("addAlias", &NativePricing::AddAlias),
         InstanceMethod("addMarkup", &NativePricing::AddMarkup), InstanceMethod("setFallback", &NativePricing::SetFallback),
         InstanceMethod("resolve", &NativePricing::Resolve), InstanceMethod("knows", &NativePricing::Knows),
         InstanceMethod("cost", &NativePricing::Cost), InstanceMethod("costF", &NativePricing::CostF),
         InstanceMethod("quote", &NativePricing::Quote),
         InstanceMethod("estimate", &NativePricing::Estimate), InstanceMethod("priceVersion", &NativePricing::PriceVersion),
         InstanceMethod("size", &NativePricing::Size), InstanceMethod("benchCost", &NativePricing::BenchCost),
         StaticMethod("bundledTableInfo", &NativePricing::BundledInfo)});
    env_data(env).pricing_ctor = Napi::Persistent(f);
    exports.Set("NativePricing", f);
  }

  // new NativePricing(bundled: boolean)
  explicit NativePricing(const Napi::CallbackInfo& info) : Napi::ObjectWrap<NativePricing>(info) {
    ed_ = &env_data(info.Env());
    guard(info.Env(), [&] {
      bool bundled = info.Length() > 0 && info[0].IsBoolean() && info[0].As<Napi::Boolean>().Value();
      if (bundled) e_ = std::shared_ptr<budget::PricingEngine>(budget::PricingEngine::bundled().release());
      else e_ = std::make_shared<budget::PricingEngine>();
    });
  }
  std::shared_ptr<budget::PricingEngine> e_;

 private:
  EnvData* ed_ = nullptr;
  std::string model_;  // reused buffer of CostF

  // The fast path of cost(model, usage, options) for usage fields that are absent or
  // non-negative safe integers (number or bigint) and plain options (the TS layer checks;
  // anything else takes Cost, whose validation and errors are the reference). (model) with
  // the usage in scratch slots 0-10 (UsageSlots: the counts, `complete`, the usage's service
  // tier code; NaN = absent: the Usage default), the options in slots 11-13 (tier code, `at`
  // ms, applyMarkup; NaN = absent). The cost (nanos) is returned in slot 0.
  Napi::Value CostF(const Napi::CallbackInfo& i) {
    Napi::Env env = i.Env();
    return guard(env, [&] {
      if (!i[0].IsString()) to_string(i[0], "model");  // throws the typed error
      size_t len = 0;
      char buf[256];
      napi_get_value_string_utf8(env, i[0], buf, sizeof buf, &len);
      std::string_view model(buf, len);
      if (len + 4 >= sizeof buf) {  // maybe cut (see read_utf8)
        model_ = i[0].As<Napi::String>().Utf8Value();
        model = model_;
      }
      EnvData& e = *ed_;
      budget::Usage u = usage_from_scratch(e);
      budget::CostOptions o;
      double tier = e.f64(11), at = e.f64(12), markup = e.f64(13);
      if (tier == tier) o.tier = static_cast<budget::ServiceTier>(static_cast<int>(tier));
      if (at == at) o.at = budget::from_millis(static_cast<int64_t>(at));
      if (markup == markup) o.apply_markup = markup != 0;
      e.i64(0, e_->cost(model, u, o).nanos());
      return env.Undefined();
    });
  }

  Napi::Value LoadLitellm(const Napi::CallbackInfo& i) {
    return guard(i.Env(), [&] { return Napi::Value(from_report(i.Env(), e_->load_litellm(to_string(i[0], "json")))); });
  }
  Napi::Value LoadLitellmFile(const Napi::CallbackInfo& i) {
    return guard(i.Env(), [&] { return Napi::Value(from_report(i.Env(), e_->load_litellm_file(to_string(i[0], "path")))); });
  }
  Napi::Value LoadCompact(const Napi::CallbackInfo& i) {
    return guard(i.Env(), [&] { return Napi::Value(from_report(i.Env(), e_->load_compact(to_string(i[0], "text")))); });
  }
  Napi::Value LoadCompactFile(const Napi::CallbackInfo& i) {
    return guard(i.Env(), [&] { return Napi::Value(from_report(i.Env(), e_->load_compact_file(to_string(i[0], "path")))); });
  }
  Napi::Value LoadBundled(const Napi::CallbackInfo& i) {
    return guard(i.Env(), [&] { return Napi::Value(from_report(i.Env(), e_->load_bundled())); });
  }
  Napi::Value ToCompact(const Napi::CallbackInfo& i) {
    return guard(i.Env(), [&] { return Napi::Value(Napi::String::New(i.Env(), e_->to_compact())); });
  }
  Napi::Value SetPrice(const Napi::CallbackInfo& i) {
    guard(i.Env(), [&] {
      std::string model = to_string(i[0], "model");
      budget::ModelPrice p = to_model_price(i[1]);
      budget::Timestamp from{};
      if (i.Length() > 2 && !i[2].IsUndefined() && !i[2].IsNull()) from = to_time(i[2], "effectiveFrom");
      e_->set_price(model, p, from);
    });
    return i.Env().Undefined();
  }
  Napi::Value AddAlias(const Napi::CallbackInfo& i) {
    guard(i.Env(), [&] { e_->add_alias(to_string(i[0], "alias"), to_string(i[1], "target")); });
    return i.Env().Undefined();
  }
  Napi::Value AddMarkup(const Napi::CallbackInfo& i) {
    guard(i.Env(), [&] {
      Napi::Object o = expect_object(i[0], "markup");
      budget::MarkupRule r;
      Napi::Value x;
      if (has(o, "scope", &x)) {
        std::string s = to_string(x, "markup.scope");
        if (s == "all") r.scope = budget::MarkupRule::Scope::All;
        else if (s == "provider") r.scope = budget::MarkupRule::Scope::Provider;
        else if (s == "pattern") r.scope = budget::MarkupRule::Scope::Pattern;
        else if (s == "model") r.scope = budget::MarkupRule::Scope::Model;
        else invalid("markup.scope must be one of all, provider, pattern, model");
      }
      if (has(o, "match", &x)) r.match = to_string(x, "markup.match");
      if (has(o, "percent", &x)) r.percent = to_price_text(x, "markup.percent");
      if (has(o, "fixed", &x)) r.fixed = to_money(x, "markup.fixed");
      if (has(o, "effectiveFrom", &x)) r.effective_from = to_time(x, "markup.effectiveFrom");
      e_->add_markup(r);
    });
    return i.Env().Undefined();
  }
  Napi::Value SetFallback(const Napi::CallbackInfo& i) {
    guard(i.Env(), [&] {
      if (i.Length() == 0 || i[0].IsNull() || i[0].IsUndefined()) e_->set_fallback(std::nullopt);
      else e_->set_fallback(to_model_price(i[0]));
    });
    return i.Env().Undefined();
  }
  Napi::Value Resolve(const Napi::CallbackInfo& i) {
    Napi::Env env = i.Env();
    return guard(env, [&] {
      std::optional<budget::Timestamp> at;
      if (i.Length() > 1 && !i[1].IsUndefined() && !i[1].IsNull()) at = to_time(i[1], "at");
      auto r = e_->resolve(to_string(i[0], "model"), at);
      Napi::Object o = Napi::Object::New(env);
      o.Set("name", r.name);
      o.Set("provider", r.provider);
      o.Set("mode", r.mode);
      o.Set("maxOutputTokens", count(env, r.max_output_tokens));
      return Napi::Value(o);
    });
  }
  Napi::Value Knows(const Napi::CallbackInfo& i) {
    return guard(i.Env(), [&] { return Napi::Value(Napi::Boolean::New(i.Env(), e_->knows(to_string(i[0], "model")))); });
  }
  Napi::Value Cost(const Napi::CallbackInfo& i) {
    return guard(i.Env(), [&] {
      std::string model = to_string(i[0], "model");
      budget::Usage u = to_usage(i[1]);
      return Napi::Value(big(i.Env(), e_->cost(model, u, to_cost_options(i[2])).nanos()));
    });
  }
  Napi::Value Quote(const Napi::CallbackInfo& i) {
    return guard(i.Env(), [&] {
      std::string model = to_string(i[0], "model");
      budget::Usage u = to_usage(i[1]);
      return Napi::Value(from_quote(i.Env(), e_->quote(model, u, to_cost_options(i[2]))));
    });
  }
  Napi::Value Estimate(const Napi::CallbackInfo& i) {
    return guard(i.Env(), [&] {
      std::string model = to_string(i[0], "model");
      int64_t in = to_count(i[1], "inputTokens");
      std::optional<int64_t> out;
      if (i.Length() > 2 && !i[2].IsUndefined() && !i[2].IsNull()) out = to_count(i[2], "maxOutputTokens");
      return Napi::Value(big(i.Env(), e_->estimate(model, in, out, to_cost_options(i[3])).nanos()));
    });
  }
  Napi::Value PriceVersion(const Napi::CallbackInfo& i) {
    return guard(i.Env(), [&] {
      budget::Timestamp at = i.Length() > 0 && !i[0].IsUndefined() ? to_time(i[0], "at")
                                                                   : budget::SystemClock().now();
      return Napi::Value(Napi::String::New(i.Env(), e_->price_version(at)));
    });
  }
  // Benchmark baseline: n cost(model, usage) calls in a tight C++ loop, elapsed nanoseconds.
  Napi::Value BenchCost(const Napi::CallbackInfo& i) {
    return guard(i.Env(), [&] {
      std::string model = to_string(i[0], "model");
      budget::Usage u = to_usage(i[1]);
      int64_t n = to_count(i[2], "n");
      volatile int64_t sink = 0;  // the results are used: the loop stays
      auto t0 = std::chrono::steady_clock::now();
      for (int64_t k = 0; k < n; ++k) sink = sink + e_->cost(model, u).nanos();
      auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - t0).count();
      return Napi::Value(Napi::Number::New(i.Env(), double(ns)));
    });
  }
  Napi::Value Size(const Napi::CallbackInfo& i) { return Napi::Number::New(i.Env(), double(e_->size())); }
  static Napi::Value BundledInfo(const Napi::CallbackInfo& i) {
    auto b = budget::PricingEngine::bundled_table_info();
    Napi::Object o = Napi::Object::New(i.Env());
    o.Set("date", b.date ? b.date : "");
    o.Set("source", b.source ? b.source : "");
    o.Set("entries", Napi::Number::New(i.Env(), double(b.entries)));
    return o;
  }
};

}  // namespace

std::shared_ptr<budget::PricingEngine> unwrap_pricing(const Napi::Value& v) {
  if (!v.IsObject()) invalid("pricing must be a PricingEngine");
  Napi::Object o = v.As<Napi::Object>();
  Napi::Value inner = o.Get("native");  // the TS PricingEngine keeps its NativePricing here
  Napi::Object target = inner.IsObject() ? inner.As<Napi::Object>() : o;
  if (!target.InstanceOf(env_data(v.Env()).pricing_ctor.Value())) invalid("pricing must be a PricingEngine");
  return NativePricing::Unwrap(target)->e_;
}

void init_pricing(Napi::Env env, Napi::Object exports) { NativePricing::Init(env, exports); }

}  // namespace bn
