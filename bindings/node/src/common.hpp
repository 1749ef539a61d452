// libbudget Node addon — shared helpers: JS <-> C++ conversions, errors, Promise jobs.
//
// The native layer is deliberately thin: it converts arguments on the JS thread, runs the
// C++ call (on a libuv worker thread for calls that touch a store, see Job), and converts
// the result back on the JS thread. Naming, defaults and ergonomics live in the TypeScript
// layer (lib/*.ts). Only the public C++ API (include/budget/*.hpp) is used.
#pragma once

#include <budget/budget.hpp>

#include <napi.h>

#include <cmath>
#include <cstring>
#include <functional>
#include <initializer_list>
#include <memory>
#include <mutex>
#include <string>
#include <utility>

namespace bn {

// ---- per-environment data ----------------------------------------------------------------
// The class constructors, the error factory and the scratch buffer of one environment (the
// main thread or a worker). The scratch buffer is an ArrayBuffer shared with the TypeScript
// layer, through which the synchronous fast paths (the inline memory store, pricing.cost)
// exchange numbers without building JS objects in C++ (each named property set from C++
// costs ~100 ns; the JS layer builds the result objects with literal shapes instead). Only
// the JS thread touches it, one call at a time. Slots are 8 bytes: doubles (flags, counts,
// epoch ms) or int64 nanos.
struct EnvData {
  static constexpr size_t kSlots = 64;
  // A reference is only usable in the environment that created it.
  Napi::FunctionReference error_factory;  // set by the TS layer (setErrorFactory)
  Napi::FunctionReference clock_ctor, manager_ctor, pricing_ctor;
  Napi::Reference<Napi::ArrayBuffer> scratch_ref;
  unsigned char* scratch = nullptr;
  void f64(size_t i, double v) noexcept { std::memcpy(scratch + 8 * i, &v, 8); }
  void i64(size_t i, int64_t v) noexcept { std::memcpy(scratch + 8 * i, &v, 8); }
  double f64(size_t i) const noexcept {
    double v;
    std::memcpy(&v, scratch + 8 * i, 8);
    return v;
  }
  // A count: slot i = the number when it is a safe integer, else NaN and slot i+1 = int64.
  void count(size_t i, int64_t v) noexcept {
    bool safe = v <= 9007199254740991LL && v >= -9007199254740991LL;
    f64(i, safe ? static_cast<double>(v) : std::nan(""));
    i64(i + 1, v);
  }
};
EnvData& env_data(Napi::Env env);

// ---- errors -------------------------------------------------------------------------------
// Every failure reaches JS as an instance of the TypeScript layer's BudgetError subclass for
// its code: the TS layer registers a factory (setErrorFactory) at load time.
Napi::Value make_error(Napi::Env env, budget::ErrorCode code, const std::string& message);
[[noreturn]] void throw_js(Napi::Env env, budget::ErrorCode code, const std::string& message);

// Runs `body` and turns C++ exceptions into JS exceptions of the right class.
template <class F>
auto guard(Napi::Env env, F&& body) -> decltype(body()) {
  try {
    return body();
  } catch (const Napi::Error&) {
    throw;
  } catch (const budget::Error& e) {
    throw_js(env, e.code(), e.what());
  } catch (const std::bad_alloc&) {
    throw_js(env, budget::ErrorCode::Internal, "out of memory");
  } catch (const std::exception& e) {
    throw_js(env, budget::ErrorCode::Internal, e.what());
  }
}

[[noreturn]] inline void invalid(const std::string& message) { throw budget::InvalidArgumentError(message); }

// ---- conversions in -----------------------------------------------------------------------
// Money: bigint nanos, a decimal string ("12.50"), or a finite number through its shortest
// decimal text (String(x)), never through binary floating point arithmetic.
budget::Money to_money(const Napi::Value& v, const char* what);
// A whole count (tokens, requests, ms): a safe integer number or a bigint within int64.
int64_t to_int64(const Napi::Value& v, const char* what);
int64_t to_count(const Napi::Value& v, const char* what);  // >= 0
// A decimal ratio ("1.2", 1.2) as basis points (12000); exact or InvalidArgument.
uint32_t to_basis_points(const Napi::Value& v, const char* what);
std::string to_string(const Napi::Value& v, const char* what);
// A request id given by the caller: a non-empty string.
std::string to_request_id(const Napi::Value& v);
// Reads a JS string into `out` (reusing its buffer): one Node-API call for short strings.
void read_utf8(napi_env env, napi_value v, std::string& out);
bool to_bool(const Napi::Value& v, const char* what);
budget::Timestamp to_time(const Napi::Value& v, const char* what);  // Date or ms number
budget::Subject to_subject(const Napi::Value& v);
// A service tier name (budget::parse_service_tier: "standard" or "default", "batch", "flex",
// "priority"); anything else is InvalidArgument naming `what`.
budget::ServiceTier to_service_tier(const Napi::Value& v, const char* what);
budget::Usage to_usage(const Napi::Value& v);
// The usage put in scratch slots 0-10 and 14-15 by the TS layer (putUsage in lib/native.ts):
// the counts input, cache read, cache write, 1h cache write, output, reasoning, images,
// audio ms, requests (0-8), `complete` (9), the service tier's code (10), the audio input and
// output tokens (14, 15: slots 11-13 carry cost()'s options); NaN = absent (the Usage
// default). Copied at the entry of a call (before converting other arguments can run user
// code), validated when its turn comes. v[11], v[12] hold slots 14, 15.
struct UsageSlots {
  static constexpr size_t kCount = 13;
  static constexpr size_t kAudioSlot = 14;
  double v[kCount];
};
UsageSlots usage_slots(const EnvData& e);
budget::Usage usage_from_slots(const UsageSlots& s);
inline budget::Usage usage_from_scratch(const EnvData& e) { return usage_from_slots(usage_slots(e)); }
budget::Estimate to_estimate(const Napi::Value& v);
budget::Charge to_charge(const Napi::Value& v);
// A commit's charge: as to_charge, and an object without cost, tokens or usage is refused.
budget::Charge to_commit_charge(const Napi::Value& v);
budget::RequestOptions to_request_options(const Napi::Value& v);
budget::Limit to_limit(const Napi::Value& v);
budget::LedgerQuery to_ledger_query(const Napi::Value& v);
budget::Metric to_metric(const Napi::Value& v);
// Optional property: undefined/null -> false.
bool has(const Napi::Object& o, const char* key, Napi::Value* out);
// Throws InvalidArgument for an enumerable property not in `known` (a misspelt setting must
// not yield a manager or a limit without it). For configuration objects, not per-call ones.
void reject_unknown(const Napi::Object& o, const char* what, std::initializer_list<const char*> known);
Napi::Object expect_object(const Napi::Value& v, const char* what);

// ---- conversions out ----------------------------------------------------------------------
Napi::BigInt big(Napi::Env env, int64_t v);
Napi::Value count(Napi::Env env, int64_t v);  // number when safe, else bigint
Napi::Value date(Napi::Env env, budget::Timestamp t);
Napi::Value opt_date(Napi::Env env, const std::optional<budget::Timestamp>& t);
Napi::Object from_usage(Napi::Env env, const budget::Usage& u);
Napi::Object from_denial(Napi::Env env, const budget::Denial& d);
Napi::Object from_receipt(Napi::Env env, const budget::Receipt& r);
Napi::Object from_status(Napi::Env env, const budget::LimitStatus& s);
Napi::Object from_alert(Napi::Env env, const budget::Alert& a);
Napi::Object from_limit(Napi::Env env, const budget::Limit& l);
Napi::Object from_event(Napi::Env env, const budget::LedgerEvent& e);
Napi::Object from_line_item(Napi::Env env, const budget::LineItem& li);
Napi::Object from_quote(Napi::Env env, const budget::PriceQuote& q);
Napi::Array from_strings(Napi::Env env, const std::vector<std::string>& v);
const char* metric_name(budget::Metric m);

// ---- Promise jobs -------------------------------------------------------------------------
// A Job runs `exec` (pure C++, no JS values) and settles a Promise with `conv(result)`.
// Offloaded jobs run on the libuv thread pool (the event loop never waits on SQLite or
// Redis); inline jobs run at once on the JS thread (the memory store never blocks, and a
// thread hop would cost ten times the operation) and still answer through a Promise.
template <class R>
using Exec = std::function<R()>;
template <class R>
using Conv = std::function<Napi::Value(Napi::Env, R&)>;

struct Failure {
  bool failed = false;
  budget::ErrorCode code = budget::ErrorCode::Ok;
  std::string message;
  template <class F>
  void capture(F&& f) noexcept {
    try {
      f();
    } catch (const budget::Error& e) {
      failed = true, code = e.code(), message = e.what();
    } catch (const std::bad_alloc&) {
      failed = true, code = budget::ErrorCode::Internal, message = "out of memory";
    } catch (const std::exception& e) {
      failed = true, code = budget::ErrorCode::Internal, message = e.what();
    } catch (...) {
      failed = true, code = budget::ErrorCode::Internal, message = "unknown C++ exception";
    }
  }
};

template <class R>
class Job final : public Napi::AsyncWorker {
 public:
  Job(Napi::Env env, Exec<R> exec, Conv<R> conv)
      : Napi::AsyncWorker(env, "libbudget"), deferred_(Napi::Promise::Deferred::New(env)),
        exec_(std::move(exec)), conv_(std::move(conv)) {}
  Napi::Promise promise() const { return deferred_.Promise(); }
  void Execute() override {
    failure_.capture([&] { result_ = exec_(); });
  }
  void OnOK() override {
    Napi::Env env = Env();
    Napi::HandleScope scope(env);
    settle(env, deferred_, failure_, result_, conv_);
  }
  void OnError(const Napi::Error& e) override { deferred_.Reject(e.Value()); }

  static void settle(Napi::Env env, Napi::Promise::Deferred& d, Failure& f, R& r, Conv<R>& conv) {
    if (f.failed) {
      d.Reject(make_error(env, f.code, f.message));
      return;
    }
    try {
      d.Resolve(conv(env, r));
    } catch (const Napi::Error& e) {
      d.Reject(e.Value());
    } catch (const budget::Error& e) {
      d.Reject(make_error(env, e.code(), e.what()));
    } catch (const std::exception& e) {
      d.Reject(make_error(env, budget::ErrorCode::Internal, e.what()));
    }
  }

 private:
  Napi::Promise::Deferred deferred_;
  Exec<R> exec_;
  Conv<R> conv_;
  R result_{};
  Failure failure_;
};

template <class R>
Napi::Value run(Napi::Env env, bool offload, Exec<R> exec, Conv<R> conv) {
  if (offload) {
    auto* job = new Job<R>(env, std::move(exec), std::move(conv));  // deletes itself
    Napi::Promise p = job->promise();
    job->Queue();
    return p;
  }
  auto d = Napi::Promise::Deferred::New(env);
  R r{};
  Failure f;
  f.capture([&] { r = exec(); });
  Job<R>::settle(env, d, f, r, conv);
  return d.Promise();
}

struct Unit {};

// ---- classes ------------------------------------------------------------------------------
void init_manager(Napi::Env env, Napi::Object exports);
void init_pricing(Napi::Env env, Napi::Object exports);
void init_providers(Napi::Env env, Napi::Object exports);
// The PricingEngine behind a NativePricing object (for Options::pricer).
std::shared_ptr<budget::PricingEngine> unwrap_pricing(const Napi::Value& v);
std::shared_ptr<budget::ManualClock> unwrap_clock(const Napi::Value& v);

}  // namespace bn
