// libbudget Node addon — conversions between JS values and the C++ API's value types.
#include "common.hpp"

#include <cmath>

namespace bn {

namespace {

const char* type_name(const Napi::Value& v) {
  switch (v.Type()) {
    case napi_undefined: return "undefined";
    case napi_null: return "null";
    case napi_boolean: return "boolean";
    case napi_number: return "number";
    case napi_string: return "string";
    case napi_symbol: return "symbol";
    case napi_object: return v.IsArray() ? "array" : "object";
    case napi_function: return "function";
    case napi_external: return "external";
    case napi_bigint: return "bigint";
  }
  return "value";
}

// JS String(x) may use exponent notation ("1e-7", "1.5e+21"); Money::parse takes plain
// decimal text only. Moves the decimal point, digit for digit: exact.
std::string expand_exponent(const std::string& s) {
  auto e = s.find_first_of("eE");
  if (e == std::string::npos) return s;
  std::string mant = s.substr(0, e);
  long exp = std::strtol(s.c_str() + e + 1, nullptr, 10);
  bool neg = !mant.empty() && mant[0] == '-';
  if (neg) mant.erase(0, 1);
  std::string digits = mant;
  long intlen = static_cast<long>(mant.size());
  if (auto dot = mant.find('.'); dot != std::string::npos) {
    digits = mant.substr(0, dot) + mant.substr(dot + 1);
    intlen = static_cast<long>(dot);
  }
  long point = intlen + exp;
  std::string out;
  if (point <= 0) {
    out = "0." + std::string(static_cast<size_t>(-point), '0') + digits;
  } else if (point >= static_cast<long>(digits.size())) {
    out = digits + std::string(static_cast<size_t>(point) - digits.size(), '0');
  } else {
    out = digits.substr(0, static_cast<size_t>(point)) + "." + digits.substr(static_cast<size_t>(point));
  }
  return (neg ? "-" : "") + out;
}
}  // namespace

Napi::Value set_error_factory(const Napi::CallbackInfo& info) {
  if (info.Length() < 1 || !info[0].IsFunction()) throw Napi::TypeError::New(info.Env(), "factory must be a function");
  env_data(info.Env()).error_factory = Napi::Persistent(info[0].As<Napi::Function>());
  return info.Env().Undefined();
}

Napi::Value make_error(Napi::Env env, budget::ErrorCode code, const std::string& message) {
  const char* name = budget::to_string(code);
  auto* d = env.GetInstanceData<EnvData>();
  if (d && !d->error_factory.IsEmpty()) {
    return d->error_factory.Call({Napi::String::New(env, name), Napi::String::New(env, message)});
  }
  Napi::Error e = Napi::Error::New(env, message);
  e.Set("code", Napi::String::New(env, name));
  return e.Value();
}

void throw_js(Napi::Env env, budget::ErrorCode code, const std::string& message) {
  throw Napi::Error(env, make_error(env, code, message));
}

Napi::Object expect_object(const Napi::Value& v, const char* what) {
  if (!v.IsObject() || v.IsArray() || v.IsFunction())
    invalid(std::string(what) + " must be an object, got " + type_name(v));
  return v.As<Napi::Object>();
}

// Reads a JS string into `out` (reusing its buffer): one Node-API call for short strings.
void read_utf8(napi_env env, napi_value v, std::string& out) {
  char buf[256];
  size_t len = 0;
  if (napi_get_value_string_utf8(env, v, buf, sizeof buf, &len) != napi_ok) invalid("expected a string");
  // Not truncated: V8 writes no partial UTF-8 sequence, so a cut string leaves at most 3
  // bytes of the buffer unused.
  if (len + 4 < sizeof buf) {
    out.assign(buf, len);
    return;
  }
  napi_get_value_string_utf8(env, v, nullptr, 0, &len);
  out.resize(len);
  napi_get_value_string_utf8(env, v, out.data(), len + 1, &len);
}

bool has(const Napi::Object& o, const char* key, Napi::Value* out) {
  Napi::Value v = o.Get(key);
  if (v.IsUndefined() || v.IsNull()) return false;
  *out = v;
  return true;
}

void reject_unknown(const Napi::Object& o, const char* what, std::initializer_list<const char*> known) {
  Napi::Array keys = o.GetPropertyNames();
  for (uint32_t i = 0; i < keys.Length(); ++i) {
    std::string k = keys.Get(i).ToString().Utf8Value();
    bool ok = false;
    for (const char* n : known) ok = ok || k == n;
    if (ok) continue;
    std::string list;
    for (const char* n : known) list += (list.empty() ? "" : ", ") + std::string(n);
    invalid(std::string(what) + ": unknown field '" + k + "' (known: " + list + ")");
  }
}

budget::Money to_money(const Napi::Value& v, const char* what) {
  switch (v.Type()) {
    case napi_bigint: {
      bool lossless = false;
      int64_t n = v.As<Napi::BigInt>().Int64Value(&lossless);
      if (!lossless) throw budget::OverflowError(std::string(what) + ": bigint nanos out of the int64 range");
      return budget::Money::from_nanos(n);
    }
    case napi_string: {
      std::string s = v.As<Napi::String>().Utf8Value();
      try {
        return budget::Money::parse(s);
      } catch (const budget::InvalidArgumentError& e) {
        invalid(std::string(what) + ": " + e.what());
      }
    }
    case napi_number: {
      double d = v.As<Napi::Number>().DoubleValue();
      if (!std::isfinite(d)) invalid(std::string(what) + " must be a finite amount, got " + (std::isnan(d) ? "NaN" : "Infinity"));
      // The shortest decimal text of the number, exactly as JS String(x) prints it; the errors
      // name it so ("5e-324", "1e+21"), not its expansion (which may be cut at 64 characters).
      std::string js = v.ToString().Utf8Value();
      try {
        return budget::Money::parse(expand_exponent(js));
      } catch (const budget::InvalidArgumentError&) {
        invalid(std::string(what) + ": invalid money amount '" + js +
                "': more than 9 fractional digits (money is exact to the nano)");
      } catch (const budget::OverflowError&) {
        throw budget::OverflowError(std::string(what) + ": money amount out of range: " + js);
      }
    }
    default:
      invalid(std::string(what) + " must be a bigint (nanos), a decimal string or a number, got " + type_name(v));
  }
}

int64_t to_int64(const Napi::Value& v, const char* what) {
  if (v.IsBigInt()) {
    bool lossless = false;
    int64_t n = v.As<Napi::BigInt>().Int64Value(&lossless);
    if (!lossless) throw budget::OverflowError(std::string(what) + ": bigint out of the int64 range");
    return n;
  }
  if (v.IsNumber()) {
    double d = v.As<Napi::Number>().DoubleValue();
    if (!std::isfinite(d)) invalid(std::string(what) + " must be finite");
    if (d != std::trunc(d)) invalid(std::string(what) + " must be an integer");
    if (std::fabs(d) > 9007199254740991.0) invalid(std::string(what) + " is beyond Number.MAX_SAFE_INTEGER (pass a bigint)");
    return static_cast<int64_t>(d);
  }
  invalid(std::string(what) + " must be an integer number or bigint, got " + type_name(v));
}

int64_t to_count(const Napi::Value& v, const char* what) {
  int64_t n = to_int64(v, what);
  if (n < 0) invalid(std::string(what) + " must not be negative");
  return n;
}

uint32_t to_basis_points(const Napi::Value& v, const char* what) {
  if (v.IsBigInt()) invalid(std::string(what) + " must be a decimal ratio such as 1.2");
  budget::Money m = to_money(v, what);  // exact decimal
  if (m.nanos() % 100000 != 0) invalid(std::string(what) + " has more than 4 decimal places");
  int64_t bp = m.nanos() / 100000;
  if (bp < 0 || bp > 100'000'000) invalid(std::string(what) + " is out of range");
  return static_cast<uint32_t>(bp);
}

std::string to_string(const Napi::Value& v, const char* what) {
  if (!v.IsString()) invalid(std::string(what) + " must be a string, got " + type_name(v));
  std::string s;
  read_utf8(v.Env(), v, s);
  return s;
}

std::string to_request_id(const Napi::Value& v) {
  std::string id = to_string(v, "requestId");
  // Leaving it out has one generated; '' is refused: an idempotency key read from an absent
  // header must not silently become a fresh id, charged again on every retry.
  if (id.empty()) invalid("requestId is empty (leave it out to have one generated)");
  return id;
}

bool to_bool(const Napi::Value& v, const char* what) {
  if (!v.IsBoolean()) invalid(std::string(what) + " must be a boolean, got " + type_name(v));
  return v.As<Napi::Boolean>().Value();
}

budget::Timestamp to_time(const Napi::Value& v, const char* what) {
  if (v.IsDate()) {
    double ms = v.As<Napi::Date>().ValueOf();
    if (!std::isfinite(ms)) invalid(std::string(what) + " is an invalid Date");
    return budget::from_millis(static_cast<int64_t>(ms));
  }
  return budget::from_millis(to_int64(v, what));
}

budget::Metric to_metric(const Napi::Value& v) {
  return budget::parse_metric(to_string(v, "metric"));
}

budget::Subject to_subject(const Napi::Value& v) {
  if (v.IsString()) return budget::Subject(std::vector<std::string>{v.As<Napi::String>().Utf8Value()});
  if (!v.IsArray()) invalid(std::string("subject must be a scope string or an array of scopes, got ") + type_name(v));
  auto a = v.As<Napi::Array>();
  uint32_t n = a.Length();
  if (n > 64) invalid("subject has too many scopes");
  std::vector<std::string> scopes;
  scopes.reserve(n);
  for (uint32_t i = 0; i < n; ++i) scopes.push_back(to_string(a.Get(i), "subject scope"));
  return budget::Subject(scopes);
}

budget::ServiceTier to_service_tier(const Napi::Value& v, const char* what) {
  std::string name = to_string(v, what);
  try {
    return budget::parse_service_tier(name);  // the names are the core's
  } catch (const budget::InvalidArgumentError& e) {
    invalid(std::string(what) + ": " + e.what());
  }
}

budget::Usage to_usage(const Napi::Value& v) {
  Napi::Object o = expect_object(v, "usage");
  // a provider's raw usage ({ prompt_tokens }) or a misspelt field must not price as zero
  reject_unknown(o, "usage",
                 {"inputTokens", "cacheReadTokens", "cacheWriteTokens", "cacheWrite1hTokens", "outputTokens",
                  "reasoningTokens", "images", "audioMs", "requests", "complete", "serviceTier", "audioInputTokens",
                  "audioOutputTokens"});
  budget::Usage u;
  Napi::Value x;
  if (has(o, "inputTokens", &x)) u.input_tokens = to_count(x, "usage.inputTokens");
  if (has(o, "cacheReadTokens", &x)) u.cache_read_tokens = to_count(x, "usage.cacheReadTokens");
  if (has(o, "cacheWriteTokens", &x)) u.cache_write_tokens = to_count(x, "usage.cacheWriteTokens");
  if (has(o, "cacheWrite1hTokens", &x)) u.cache_write_1h_tokens = to_count(x, "usage.cacheWrite1hTokens");
  if (has(o, "outputTokens", &x)) u.output_tokens = to_count(x, "usage.outputTokens");
  if (has(o, "reasoningTokens", &x)) u.reasoning_tokens = to_count(x, "usage.reasoningTokens");
  if (has(o, "images", &x)) u.images = to_count(x, "usage.images");
  if (has(o, "audioMs", &x)) u.audio_ms = to_count(x, "usage.audioMs");
  if (has(o, "requests", &x)) u.requests = to_count(x, "usage.requests");
  if (has(o, "complete", &x)) u.complete = to_bool(x, "usage.complete");
  if (has(o, "serviceTier", &x)) u.service_tier = to_service_tier(x, "usage.serviceTier");
  if (has(o, "audioInputTokens", &x)) u.audio_input_tokens = to_count(x, "usage.audioInputTokens");
  if (has(o, "audioOutputTokens", &x)) u.audio_output_tokens = to_count(x, "usage.audioOutputTokens");
  u.validate();
  return u;
}

UsageSlots usage_slots(const EnvData& e) {
  UsageSlots s;
  for (size_t k = 0; k < 11; ++k) s.v[k] = e.f64(k);
  s.v[11] = e.f64(UsageSlots::kAudioSlot);
  s.v[12] = e.f64(UsageSlots::kAudioSlot + 1);
  return s;
}

budget::Usage usage_from_slots(const UsageSlots& s) {
  budget::Usage u;
  struct Count {
    int64_t* field;
    size_t slot;  // in s.v
  };
  const Count counts[] = {{&u.input_tokens, 0}, {&u.cache_read_tokens, 1}, {&u.cache_write_tokens, 2},
                          {&u.cache_write_1h_tokens, 3}, {&u.output_tokens, 4}, {&u.reasoning_tokens, 5},
                          {&u.images, 6}, {&u.audio_ms, 7}, {&u.requests, 8},
                          {&u.audio_input_tokens, 11}, {&u.audio_output_tokens, 12}};
  for (const auto& [field, slot] : counts) {
    double d = s.v[slot];
    if (d == d) *field = static_cast<int64_t>(d);  // NaN = absent: the default
  }
  double c = s.v[9];
  if (c == c) u.complete = c != 0;
  double t = s.v[10];  // a code from the addon's serviceTiers map (lib/native.ts)
  if (t == t) {
    if (!(t >= 0 && t <= static_cast<double>(budget::ServiceTier::Priority)) || t != static_cast<int>(t))
      invalid("usage.serviceTier: not a service tier code");
    u.service_tier = static_cast<budget::ServiceTier>(static_cast<int>(t));
  }
  u.validate();
  return u;
}

namespace {
template <class T>
T to_amount(const Napi::Value& v, const char* what) {
  if (v.IsBigInt() || v.IsString() || v.IsNumber()) return T(to_money(v, what));
  Napi::Object o = expect_object(v, what);
  T t;
  Napi::Value x;
  bool any = false;
  if (has(o, "cost", &x)) t.cost = to_money(x, "cost"), any = true;
  if (has(o, "tokens", &x)) t.tokens = to_count(x, "tokens"), any = true;
  if (has(o, "model", &x)) t.model = to_string(x, "model"), any = true;
  if (has(o, "usage", &x)) t.usage = to_usage(x), any = true;
  if (t.usage && t.model.empty()) invalid(std::string(what) + ": usage given without a model to price it");
  // No amount field: zero, unless the object only carries misspelt ones ({ amount: '1' }
  // must not charge or hold nothing). Checked only then: the common shapes pay nothing.
  if (!any) reject_unknown(o, what, {"cost", "tokens", "model", "usage", "provider"});
  return t;
}
}  // namespace

budget::Estimate to_estimate(const Napi::Value& v) { return to_amount<budget::Estimate>(v, "estimate"); }

budget::Charge to_charge(const Napi::Value& v) {
  budget::Charge c = to_amount<budget::Charge>(v, "charge");
  if (v.IsObject()) {
    Napi::Value x;
    if (has(v.As<Napi::Object>(), "provider", &x)) c.provider = to_string(x, "provider");
  }
  return c;
}

budget::Charge to_commit_charge(const Napi::Value& v) {
  // No charge at all ({} or { provider }) is a mistake, not a free call: read as "commit the
  // hold" it would silently charge nothing. 0 (or { cost: 0 }) commits a free call.
  budget::Charge c = to_charge(v);  // first: a misspelt field is named
  if (v.IsObject() && !v.IsArray()) {
    Napi::Object o = v.As<Napi::Object>();
    Napi::Value x;
    if (!has(o, "cost", &x) && !has(o, "tokens", &x) && !has(o, "usage", &x))
      invalid("commit needs the actual charge: an amount (0 charges nothing), { cost }, { usage, model } or { tokens }");
  }
  return c;
}

budget::RequestOptions to_request_options(const Napi::Value& v) {
  budget::RequestOptions r;
  if (v.IsUndefined() || v.IsNull()) return r;
  Napi::Object o = expect_object(v, "options");
  // a misspelt requestId must not silently drop the idempotency key
  reject_unknown(o, "options", {"requestId", "buffer", "ttlMs", "provider", "metadata", "reason"});
  Napi::Value x;
  if (has(o, "requestId", &x)) r.request_id = to_request_id(x);
  if (has(o, "buffer", &x)) r.buffer_bp = to_basis_points(x, "buffer");
  if (has(o, "ttlMs", &x)) r.ttl = budget::Duration(to_count(x, "ttlMs"));
  if (has(o, "provider", &x)) r.provider = to_string(x, "provider");
  if (has(o, "reason", &x)) r.reason = to_string(x, "reason");
  if (has(o, "metadata", &x)) {
    Napi::Object m = expect_object(x, "metadata");
    Napi::Array keys = m.GetPropertyNames();
    for (uint32_t i = 0; i < keys.Length(); ++i) {
      std::string k = keys.Get(i).ToString().Utf8Value();
      Napi::Value val = m.Get(k);
      if (val.IsString()) r.metadata[k] = val.As<Napi::String>().Utf8Value();
      else if (val.IsNumber() || val.IsBoolean() || val.IsBigInt()) r.metadata[k] = val.ToString().Utf8Value();
      else invalid("metadata." + k + " must be a string, number or boolean");
    }
  }
  return r;
}

budget::Limit to_limit(const Napi::Value& v) {
  Napi::Object o = expect_object(v, "limit");
  // `key`: a Limit read back from limits() may be passed as it is
  reject_unknown(o, "limit", {"scope", "window", "amount", "metric", "alerts", "key"});
  budget::Limit l;
  Napi::Value x;
  if (!has(o, "scope", &x)) invalid("limit.scope is required");
  l.scope = to_string(x, "limit.scope");
  if (!has(o, "window", &x)) invalid("limit.window is required");
  l.window = budget::Window::parse(to_string(x, "limit.window"));
  if (has(o, "metric", &x)) l.metric = to_metric(x);
  if (!has(o, "amount", &x)) invalid("limit.amount is required");
  l.amount = l.metric == budget::Metric::Cost ? to_money(x, "limit.amount").nanos() : to_count(x, "limit.amount");
  if (has(o, "alerts", &x)) {
    if (!x.IsArray()) invalid("limit.alerts must be an array of percentages");
    auto a = x.As<Napi::Array>();
    for (uint32_t i = 0; i < a.Length(); ++i) {
      int64_t p = to_count(a.Get(i), "limit.alerts[]");
      if (p > 1000000) invalid("limit.alerts[] is out of range");
      l.alert_thresholds_pct.push_back(static_cast<uint32_t>(p));
    }
  }
  l.validate();
  return l;
}

budget::LedgerQuery to_ledger_query(const Napi::Value& v) {
  budget::LedgerQuery q;
  if (v.IsUndefined() || v.IsNull()) return q;
  Napi::Object o = expect_object(v, "query");
  // A misspelt field (Python's since/until, requestID) must not silently widen the query: an
  // export meant for one tenant and one month would carry every event.
  reject_unknown(o, "query", {"from", "to", "scope", "requestId", "type", "afterSeq", "limit"});
  Napi::Value x;
  if (has(o, "from", &x)) q.from = to_time(x, "query.from");
  if (has(o, "to", &x)) q.to = to_time(x, "query.to");
  if (has(o, "scope", &x)) q.scope = to_string(x, "query.scope");
  if (has(o, "requestId", &x)) q.request_id = to_string(x, "query.requestId");
  if (has(o, "type", &x)) q.type = budget::parse_event_type(to_string(x, "query.type"));
  if (has(o, "afterSeq", &x)) q.after_seq = to_count(x, "query.afterSeq");
  if (has(o, "limit", &x)) q.limit = static_cast<size_t>(to_count(x, "query.limit"));
  return q;
}

// ---- out ----------------------------------------------------------------------------------
Napi::BigInt big(Napi::Env env, int64_t v) { return Napi::BigInt::New(env, v); }

Napi::Value count(Napi::Env env, int64_t v) {
  if (v > 9007199254740991LL || v < -9007199254740991LL) return Napi::BigInt::New(env, v);
  return Napi::Number::New(env, static_cast<double>(v));
}

Napi::Value date(Napi::Env env, budget::Timestamp t) {
  return Napi::Date::New(env, static_cast<double>(budget::to_millis(t)));
}

Napi::Value opt_date(Napi::Env env, const std::optional<budget::Timestamp>& t) {
  return t ? date(env, *t) : env.Null();
}

const char* metric_name(budget::Metric m) { return budget::to_string(m); }

Napi::Array from_strings(Napi::Env env, const std::vector<std::string>& v) {
  Napi::Array a = Napi::Array::New(env, v.size());
  for (size_t i = 0; i < v.size(); ++i) a.Set(static_cast<uint32_t>(i), Napi::String::New(env, v[i]));
  return a;
}

Napi::Object from_usage(Napi::Env env, const budget::Usage& u) {
  Napi::Object o = Napi::Object::New(env);
  o.Set("inputTokens", count(env, u.input_tokens));
  o.Set("cacheReadTokens", count(env, u.cache_read_tokens));
  o.Set("cacheWriteTokens", count(env, u.cache_write_tokens));
  o.Set("cacheWrite1hTokens", count(env, u.cache_write_1h_tokens));
  o.Set("outputTokens", count(env, u.output_tokens));
  o.Set("reasoningTokens", count(env, u.reasoning_tokens));
  o.Set("audioInputTokens", count(env, u.audio_input_tokens));
  o.Set("audioOutputTokens", count(env, u.audio_output_tokens));
  o.Set("images", count(env, u.images));
  o.Set("audioMs", count(env, u.audio_ms));
  o.Set("requests", count(env, u.requests));
  o.Set("complete", Napi::Boolean::New(env, u.complete));
  o.Set("serviceTier", budget::to_string(u.service_tier));  // always, as every other field
  return o;
}

Napi::Object from_denial(Napi::Env env, const budget::Denial& d) {
  Napi::Object o = Napi::Object::New(env);
  const char* reason = d.reason == budget::DenyReason::StoreUnavailable ? "store_unavailable"
                       : d.reason == budget::DenyReason::LimitExceeded  ? "limit_exceeded"
                       : d.reason == budget::DenyReason::NotHeld      ? "not_held"
                                                                        : "none";
  o.Set("reason", reason);
  o.Set("scope", d.scope);
  o.Set("window", d.window);
  o.Set("metric", metric_name(d.metric));
  o.Set("limit", big(env, d.limit));
  o.Set("spent", big(env, d.spent));
  o.Set("held", big(env, d.held));
  o.Set("remaining", big(env, d.remaining));
  o.Set("requested", big(env, d.requested));
  o.Set("resetsAt", opt_date(env, d.resets_at));
  o.Set("hard", d.hard);
  o.Set("message", d.message);
  return o;
}

Napi::Object from_line_item(Napi::Env env, const budget::LineItem& li) {
  Napi::Object o = Napi::Object::New(env);
  o.Set("name", li.name);
  o.Set("quantity", count(env, li.quantity));
  o.Set("unitPrice", li.unit_price);
  o.Set("amount", big(env, li.amount.nanos()));
  return o;
}

Napi::Object from_receipt(Napi::Env env, const budget::Receipt& r) {
  Napi::Object o = Napi::Object::New(env);
  o.Set("requestId", r.request_id);
  o.Set("charged", big(env, r.charged.nanos()));
  o.Set("released", big(env, r.released.nanos()));
  o.Set("tokens", count(env, r.tokens));
  o.Set("overHold", r.over_hold);
  o.Set("overLimit", r.over_limit);
  o.Set("overLimitScopes", from_strings(env, r.over_limit_scopes));
  o.Set("afterExpiry", r.after_expiry);
  o.Set("replayed", r.replayed);
  o.Set("model", r.model);
  o.Set("priceVersion", r.price_version);
  Napi::Array items = Napi::Array::New(env, r.items.size());
  for (size_t i = 0; i < r.items.size(); ++i) items.Set(static_cast<uint32_t>(i), from_line_item(env, r.items[i]));
  o.Set("items", items);
  return o;
}

Napi::Object from_status(Napi::Env env, const budget::LimitStatus& s) {
  Napi::Object o = Napi::Object::New(env);
  o.Set("key", s.key);
  o.Set("scope", s.scope);
  o.Set("window", s.window);
  o.Set("metric", metric_name(s.metric));
  o.Set("limit", big(env, s.limit));
  o.Set("granted", big(env, s.granted));
  o.Set("spent", big(env, s.spent));
  o.Set("held", big(env, s.held));
  o.Set("remaining", big(env, s.remaining));
  o.Set("windowStart", date(env, s.window_start));
  o.Set("resetsAt", opt_date(env, s.resets_at));
  return o;
}

Napi::Object from_alert(Napi::Env env, const budget::Alert& a) {
  Napi::Object o = Napi::Object::New(env);
  o.Set("scope", a.scope);
  o.Set("window", a.window);
  o.Set("limitKey", a.limit_key);
  o.Set("metric", metric_name(a.metric));
  o.Set("thresholdPct", Napi::Number::New(env, a.threshold_pct));
  o.Set("limit", big(env, a.limit));
  o.Set("spent", big(env, a.spent));
  o.Set("windowStart", date(env, a.window_start));
  o.Set("requestId", a.request_id);
  return o;
}

Napi::Object from_limit(Napi::Env env, const budget::Limit& l) {
  Napi::Object o = Napi::Object::New(env);
  o.Set("scope", l.scope);
  o.Set("window", l.window.to_string());
  o.Set("metric", metric_name(l.metric));
  o.Set("amount", big(env, l.amount));
  Napi::Array a = Napi::Array::New(env, l.alert_thresholds_pct.size());
  for (size_t i = 0; i < l.alert_thresholds_pct.size(); ++i)
    a.Set(static_cast<uint32_t>(i), Napi::Number::New(env, l.alert_thresholds_pct[i]));
  o.Set("alerts", a);
  o.Set("key", l.key());
  return o;
}

namespace {
Napi::Object from_amounts(Napi::Env env, const budget::Amounts& a) {
  Napi::Object o = Napi::Object::New(env);
  o.Set("cost", big(env, a.cost));
  o.Set("tokens", count(env, a.tokens));
  o.Set("requests", count(env, a.requests));
  return o;
}
}  // namespace

Napi::Object from_event(Napi::Env env, const budget::LedgerEvent& e) {
  Napi::Object o = Napi::Object::New(env);
  o.Set("seq", count(env, e.seq));
  o.Set("time", date(env, e.time));
  o.Set("type", budget::to_string(e.type));
  o.Set("requestId", e.request_id);
  o.Set("subject", from_strings(env, e.subject));
  o.Set("model", e.model);
  o.Set("provider", e.provider);
  o.Set("priceVersion", e.price_version);
  o.Set("usage", e.usage ? Napi::Value(from_usage(env, *e.usage)) : env.Null());
  o.Set("spent", from_amounts(env, e.spent));
  o.Set("held", from_amounts(env, e.held));
  o.Set("granted", from_amounts(env, e.granted));
  o.Set("windows", from_strings(env, e.windows));
  o.Set("metadata", e.metadata);
  o.Set("prevHash", e.prev_hash);
  o.Set("hash", e.hash);
  return o;
}

Napi::Object from_quote(Napi::Env env, const budget::PriceQuote& q) {
  Napi::Object o = Napi::Object::New(env);
  o.Set("cost", big(env, q.cost.nanos()));
  Napi::Array items = Napi::Array::New(env, q.items.size());
  for (size_t i = 0; i < q.items.size(); ++i) items.Set(static_cast<uint32_t>(i), from_line_item(env, q.items[i]));
  o.Set("items", items);
  o.Set("model", q.model);
  o.Set("provider", q.provider);
  o.Set("priceVersion", q.price_version);
  return o;
}

}  // namespace bn
