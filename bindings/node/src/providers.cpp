// libbudget Node addon — usage extraction from provider JSON (providers.hpp): synchronous.
#include "common.hpp"

namespace bn {

namespace {

std::string bytes_of(const Napi::Value& v, const char* what) {
  if (v.IsString()) return v.As<Napi::String>().Utf8Value();
  if (v.IsBuffer()) {
    auto b = v.As<Napi::Buffer<char>>();
    return std::string(b.Data(), b.Length());
  }
  if (v.IsTypedArray()) {
    auto t = v.As<Napi::TypedArray>();
    auto ab = t.ArrayBuffer();
    return std::string(static_cast<const char*>(ab.Data()) + t.ByteOffset(), t.ByteLength());
  }
  invalid(std::string(what) + " must be a string, Buffer or Uint8Array");
}

Napi::Value EstimateTokens(const Napi::CallbackInfo& i) {
  return guard(i.Env(), [&] {
    return count(i.Env(), budget::estimate_tokens(bytes_of(i[0], "text")));
  });
}

Napi::Value UsageFromResponse(const Napi::CallbackInfo& i) {
  return guard(i.Env(), [&] {
    auto f = budget::parse_api_format(to_string(i[0], "format"));
    return Napi::Value(from_usage(i.Env(), budget::usage_from_response(f, bytes_of(i[1], "body"))));
  });
}

class NativeStreamUsage : public Napi::ObjectWrap<NativeStreamUsage> {
 public:
  static void Init(Napi::Env env, Napi::Object exports) {
    Napi::Function f = DefineClass(
        env, "NativeStreamUsage",
        {InstanceMethod("feed", &NativeStreamUsage::Feed), InstanceMethod("feedEvent", &NativeStreamUsage::FeedEvent),
         InstanceMethod("finish", &NativeStreamUsage::Finish), InstanceMethod("usage", &NativeStreamUsage::GetUsage),
         InstanceMethod("hasFinalUsage", &NativeStreamUsage::HasFinal),
         InstanceMethod("estimatedOutputTokens", &NativeStreamUsage::EstOut),
         InstanceMethod("events", &NativeStreamUsage::Events)});
    exports.Set("NativeStreamUsage", f);
  }
  // new NativeStreamUsage(format, inputTokensEstimate?)
  explicit NativeStreamUsage(const Napi::CallbackInfo& i) : Napi::ObjectWrap<NativeStreamUsage>(i) {
    guard(i.Env(), [&] {
      auto f = budget::parse_api_format(to_string(i[0], "format"));
      budget::StreamOptions o;
      if (i.Length() > 1 && !i[1].IsUndefined() && !i[1].IsNull()) o.input_tokens_estimate = to_count(i[1], "inputTokensEstimate");
      s_ = std::make_unique<budget::StreamUsage>(f, o);
    });
  }

 private:
  std::unique_ptr<budget::StreamUsage> s_;
  Napi::Value Feed(const Napi::CallbackInfo& i) {
    guard(i.Env(), [&] { s_->feed(bytes_of(i[0], "bytes")); });
    return i.Env().Undefined();
  }
  Napi::Value FeedEvent(const Napi::CallbackInfo& i) {
    guard(i.Env(), [&] { s_->feed_event(bytes_of(i[0], "event")); });
    return i.Env().Undefined();
  }
  Napi::Value Finish(const Napi::CallbackInfo& i) {
    return guard(i.Env(), [&] { return Napi::Value(from_usage(i.Env(), s_->finish())); });
  }
  Napi::Value GetUsage(const Napi::CallbackInfo& i) {
    return guard(i.Env(), [&] { return Napi::Value(from_usage(i.Env(), s_->usage())); });
  }
  Napi::Value HasFinal(const Napi::CallbackInfo& i) { return Napi::Boolean::New(i.Env(), s_->has_final_usage()); }
  Napi::Value EstOut(const Napi::CallbackInfo& i) { return count(i.Env(), s_->estimated_output_tokens()); }
  Napi::Value Events(const Napi::CallbackInfo& i) { return Napi::Number::New(i.Env(), double(s_->events())); }
};

}  // namespace

void init_providers(Napi::Env env, Napi::Object exports) {
  exports.Set("estimateTokens", Napi::Function::New(env, EstimateTokens));
  exports.Set("usageFromResponse", Napi::Function::New(env, UsageFromResponse));
  NativeStreamUsage::Init(env, exports);
}

}  // namespace bn
