// libbudget Node addon — usage extraction from provider JSON (providers.hpp): synchronous.
#include "common.hpp"

#include <chrono>

namespace bn {

namespace {

std::string bytes_of(const Napi::Value& v, const char* what) {
  if (v.IsString()) {
    std::string s;
    read_utf8(v.Env(), v, s);
    return s;
  }
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

// Benchmark baseline: benchFeedEvent(format, text, n) feeds one event n times to a fresh C++
// StreamUsage in a tight loop; elapsed nanoseconds.
Napi::Value BenchFeedEvent(const Napi::CallbackInfo& i) {
  return guard(i.Env(), [&] {
    budget::StreamUsage s(budget::parse_api_format(to_string(i[0], "format")), budget::StreamOptions{});
    std::string text = to_string(i[1], "event");
    int64_t n = to_count(i[2], "n");
    auto t0 = std::chrono::steady_clock::now();
    for (int64_t k = 0; k < n; ++k) s.feed_event(text);
    auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - t0).count();
    return Napi::Value(Napi::Number::New(i.Env(), double(ns)));
  });
}

}  // namespace

void init_providers(Napi::Env env, Napi::Object exports) {
  exports.Set("estimateTokens", Napi::Function::New(env, EstimateTokens));
  exports.Set("usageFromResponse", Napi::Function::New(env, UsageFromResponse));
  exports.Set("benchFeedEvent", Napi::Function::New(env, BenchFeedEvent));
  NativeStreamUsage::Init(env, exports);
}

}  // namespace bn
