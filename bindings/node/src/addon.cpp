// libbudget Node addon — module entry: money helpers, version, the classes.
#include "common.hpp"

namespace bn {
Napi::Value set_error_factory(const Napi::CallbackInfo& info);

namespace {
// parseMoney(bigint | string | number) -> bigint nanos (exact; typed errors).
Napi::Value ParseMoney(const Napi::CallbackInfo& info) {
  return guard(info.Env(), [&] { return Napi::Value(big(info.Env(), to_money(info[0], "amount").nanos())); });
}
// formatMoney(bigint | string | number) -> "12.50"
Napi::Value FormatMoney(const Napi::CallbackInfo& info) {
  return guard(info.Env(), [&] { return Napi::Value(Napi::String::New(info.Env(), to_money(info[0], "amount").to_string())); });
}
// Validation helpers exposed for the TS layer (throw typed errors).
Napi::Value ParseScope(const Napi::CallbackInfo& info) {
  return guard(info.Env(), [&] {
    return Napi::Value(Napi::String::New(info.Env(), budget::Scope::parse(to_string(info[0], "scope")).str()));
  });
}
Napi::Value ParseWindow(const Napi::CallbackInfo& info) {
  return guard(info.Env(), [&] {
    return Napi::Value(Napi::String::New(info.Env(), budget::Window::parse(to_string(info[0], "window")).to_string()));
  });
}
}  // namespace

EnvData& env_data(Napi::Env env) {
  auto* d = env.GetInstanceData<EnvData>();
  if (!d) throw Napi::Error::New(env, "libbudget: addon not initialised");
  return *d;
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  auto* d = new EnvData();
  Napi::ArrayBuffer scratch = Napi::ArrayBuffer::New(env, EnvData::kSlots * 8);
  d->scratch = static_cast<unsigned char*>(scratch.Data());
  d->scratch_ref = Napi::Persistent(scratch);
  env.SetInstanceData<EnvData>(d);  // deleted with the environment
  exports.Set("scratch", scratch);
  exports.Set("setErrorFactory", Napi::Function::New(env, set_error_factory));
  exports.Set("parseMoney", Napi::Function::New(env, ParseMoney));
  exports.Set("formatMoney", Napi::Function::New(env, FormatMoney));
  exports.Set("parseScope", Napi::Function::New(env, ParseScope));
  exports.Set("parseWindow", Napi::Function::New(env, ParseWindow));
  // { standard: 0, batch: 1, flex: 2, priority: 3, default: 0 }: the service tier names the
  // core accepts (budget::parse_service_tier) and their codes, for the TS fast paths.
  Napi::Object tiers = Napi::Object::New(env);
  for (int t = 0; t <= static_cast<int>(budget::ServiceTier::Priority); ++t)
    tiers.Set(budget::to_string(static_cast<budget::ServiceTier>(t)), Napi::Number::New(env, t));
  tiers.Set("default", Napi::Number::New(env, static_cast<int>(budget::parse_service_tier("default"))));
  exports.Set("serviceTiers", tiers);
  exports.Set("version", Napi::String::New(env, BUDGET_VERSION_STRING));
  exports.Set("napiVersion", Napi::Number::New(env, NAPI_VERSION));
#ifdef BUDGET_NODE_WITH_REDIS
  exports.Set("withRedis", Napi::Boolean::New(env, true));
#else
  exports.Set("withRedis", Napi::Boolean::New(env, false));
#endif
  init_manager(env, exports);
  init_pricing(env, exports);
  init_providers(env, exports);
  return exports;
}

}  // namespace bn

static Napi::Object InitModule(Napi::Env env, Napi::Object exports) { return bn::Init(env, exports); }
NODE_API_MODULE(budget, InitModule)
