// libbudget Node addon — NativeManager (a BudgetManager) and NativeClock (a ManualClock).
#include "common.hpp"

#include <algorithm>
#include <optional>
#include <sstream>
#include <unordered_map>

namespace bn {

namespace {

// A reservation handed to JS: the C++ Reservation (with its in-process streaming state),
// guarded so concurrent consume() calls on one reservation never race on it.
struct ResHandle {
  std::mutex mu;
  budget::Reservation r;
};
using ResPtr = std::shared_ptr<ResHandle>;

Napi::Value wrap_reservation(Napi::Env env, ResPtr h) {
  const budget::Reservation& r = h->r;
  Napi::Object o = Napi::Object::New(env);
  o.Set("requestId", r.request_id());
  std::vector<std::string> scopes;
  for (const auto& s : r.subject().scopes()) scopes.push_back(s.str());
  o.Set("subject", from_strings(env, scopes));
  o.Set("held", big(env, r.held().nanos()));
  o.Set("heldTokens", count(env, r.held_tokens()));
  o.Set("expiresAt", date(env, r.expires_at()));
  o.Set("model", r.model());
  auto* owned = new ResPtr(std::move(h));
  o.Set("handle", Napi::External<ResPtr>::New(env, owned, [](Napi::Env, ResPtr* p) { delete p; }));
  return o;
}

Napi::Value from_decision(Napi::Env env, budget::Decision& d) {
  Napi::Object o = Napi::Object::New(env);
  o.Set("allowed", d.allowed);
  o.Set("replayed", d.replayed);
  o.Set("failOpen", d.fail_open);
  o.Set("estimate", big(env, d.estimate.nanos()));
  if (d.allowed && d.reservation) {
    auto h = std::make_shared<ResHandle>();
    h->r = std::move(d.reservation);
    o.Set("reservation", wrap_reservation(env, std::move(h)));
  } else {
    o.Set("reservation", env.Null());
  }
  o.Set("denial", d.allowed ? env.Null() : Napi::Value(from_denial(env, d.denial)));
  return o;
}

Napi::Value from_consume(Napi::Env env, budget::ConsumeResult& c) {
  Napi::Object o = Napi::Object::New(env);
  o.Set("verdict", c.ok() ? "continue" : "stop");
  o.Set("consumed", big(env, c.consumed.nanos()));
  o.Set("held", big(env, c.held.nanos()));
  o.Set("denial", c.ok() ? env.Null() : Napi::Value(from_denial(env, c.denial)));
  return o;
}

Napi::Value rejected(Napi::Env env, budget::ErrorCode code, const std::string& message) {
  auto d = Napi::Promise::Deferred::New(env);
  d.Reject(make_error(env, code, message));
  return d.Promise();
}

// Promise-returning methods reject (never throw) on bad arguments.
template <class F>
Napi::Value promise_guard(Napi::Env env, F&& body) {
  try {
    return body();
  } catch (const Napi::Error& e) {
    auto d = Napi::Promise::Deferred::New(env);
    d.Reject(e.Value());
    return d.Promise();
  } catch (const budget::Error& e) {
    return rejected(env, e.code(), e.what());
  } catch (const std::exception& e) {
    return rejected(env, budget::ErrorCode::Internal, e.what());
  }
}

// A reservation argument: the handle of a reserve() result, or a request id.
struct ResArg {
  ResPtr handle;
  std::string id;
};
ResArg to_res_arg(const Napi::Value& v) {
  ResArg a;
  if (v.IsString()) {
    a.id = v.As<Napi::String>().Utf8Value();
    if (a.id.empty()) invalid("request id is empty");
    return a;
  }
  if (v.IsObject() && !v.IsArray()) {
    Napi::Object o = v.As<Napi::Object>();
    Napi::Value h = o.Get("handle");
    if (h.IsExternal()) {
      a.handle = *h.As<Napi::External<ResPtr>>().Data();
      return a;
    }
    Napi::Value id = o.Get("requestId");
    if (id.IsString()) {
      a.id = id.As<Napi::String>().Utf8Value();
      if (a.id.empty()) invalid("request id is empty");
      return a;
    }
  }
  invalid("expected a Reservation or a request id string");
}

// A user callback (onAlert / onDenial) as the core calls it: the thread-safe function that
// delivers it on the JS thread, shared by the NativeManager and the core's std::function (which
// may run on a pool thread while the manager is closed, collected or its environment torn down).
// `live` turns false once the function was released (close, replaced, the manager collected) or
// finalized by Node (environment teardown: Node deletes it then, and a later Release would touch
// freed memory); the core's calls and the release check it under the mutex.
struct CallbackSlot {
  std::mutex mu;
  Napi::ThreadSafeFunction tsfn;
  bool live = false;
  template <class D, class F>
  void call(D* data, F js) {
    std::lock_guard<std::mutex> lock(mu);
    if (!live || tsfn.NonBlockingCall(data, js) != napi_ok) delete data;
  }
  void release() {
    std::lock_guard<std::mutex> lock(mu);
    if (live) tsfn.Release(), live = false;
  }
};
using CallbackPtr = std::shared_ptr<CallbackSlot>;

// The current callback of one kind. The core's on_alert/on_denial *add* an observer (there is
// no removal, and an empty std::function would throw bad_function_call from every later
// operation, after its state change): the manager registers one dispatcher per kind, once,
// and setting, replacing or removing a callback only swaps the slot here.
struct Observer {
  std::mutex mu;
  CallbackPtr cur;
  bool registered = false;  // the dispatcher is registered with the core (JS thread only)
  CallbackPtr get() {
    std::lock_guard<std::mutex> lock(mu);
    return cur;
  }
  void set(CallbackPtr p) {
    CallbackPtr old;
    {
      std::lock_guard<std::mutex> lock(mu);
      old = std::move(cur);
      cur = std::move(p);
    }
    if (old) old->release();
  }
};

// A thread-safe function for `fn` that does not keep the event loop alive.
CallbackPtr make_callback(Napi::Env env, const Napi::Function& fn, const char* name) {
  auto slot = std::make_shared<CallbackSlot>();
  slot->tsfn = Napi::ThreadSafeFunction::New(env, fn, name, 0, 1, [slot](Napi::Env) {
    std::lock_guard<std::mutex> lock(slot->mu);
    slot->live = false;
  });
  slot->tsfn.Unref(env);
  slot->live = true;
  return slot;
}

// ---- NativeClock --------------------------------------------------------------------------
class NativeClock : public Napi::ObjectWrap<NativeClock> {
 public:
  static void Init(Napi::Env env, Napi::Object exports) {
    Napi::Function f = DefineClass(env, "NativeClock",
                                   {InstanceMethod("now", &NativeClock::Now), InstanceMethod("set", &NativeClock::Set),
                                    InstanceMethod("advance", &NativeClock::Advance)});
    env_data(env).clock_ctor = Napi::Persistent(f);
    exports.Set("NativeClock", f);
  }
  explicit NativeClock(const Napi::CallbackInfo& info) : Napi::ObjectWrap<NativeClock>(info) {
    guard(info.Env(), [&] {
      clock_ = info.Length() > 0 && !info[0].IsUndefined() ? std::make_shared<budget::ManualClock>(to_time(info[0], "start"))
                                                           : std::make_shared<budget::ManualClock>();
    });
  }
  std::shared_ptr<budget::ManualClock> clock_;

 private:
  Napi::Value Now(const Napi::CallbackInfo& info) { return date(info.Env(), clock_->now()); }
  Napi::Value Set(const Napi::CallbackInfo& info) {
    guard(info.Env(), [&] { clock_->set(to_time(info[0], "time")); });
    return info.Env().Undefined();
  }
  Napi::Value Advance(const Napi::CallbackInfo& info) {
    guard(info.Env(), [&] { clock_->advance(budget::Duration(to_int64(info[0], "ms"))); });
    return date(info.Env(), clock_->now());
  }
};

// ---- NativeManager ------------------------------------------------------------------------
struct ParsedOptions {
  budget::Options o;
  bool offload = true;
};

ParsedOptions parse_options(const Napi::Value& v) {
  ParsedOptions p;
  Napi::Object o = expect_object(v, "options");
  reject_unknown(o, "options",
                 {"store", "storeOptions", "limits", "currency", "timeZone", "utcOffsetMinutes", "defaultTtlMs", "buffer",
                  "growthStep", "minGrowth", "persistEvery", "failOpen", "pricing", "clock", "offload", "onAlert",
                  "onDenial"});
  Napi::Value x;
  auto& opt = p.o;
  if (has(o, "store", &x)) opt.store = to_string(x, "store");
  if (has(o, "storeOptions", &x)) {
    Napi::Object so = expect_object(x, "storeOptions");
    reject_unknown(so, "storeOptions", {"timeoutMs", "poolSize", "streamMaxlen"});
    Napi::Value y;
    if (has(so, "timeoutMs", &y)) opt.store_options.timeout = budget::Duration(to_count(y, "storeOptions.timeoutMs"));
    if (has(so, "poolSize", &y)) {
      int64_t n = to_count(y, "storeOptions.poolSize");
      if (n < 1 || n > 1024) invalid("storeOptions.poolSize must be within [1, 1024]");
      opt.store_options.pool_size = static_cast<int>(n);
    }
    if (has(so, "streamMaxlen", &y)) opt.store_options.stream_maxlen = to_count(y, "storeOptions.streamMaxlen");
  }
  if (has(o, "currency", &x)) opt.currency = to_string(x, "currency");
  if (has(o, "timeZone", &x)) opt.time_zone = to_string(x, "timeZone");
  if (has(o, "utcOffsetMinutes", &x)) {
    int64_t m = to_int64(x, "utcOffsetMinutes");
    if (m < -18 * 60 || m > 18 * 60) invalid("utcOffsetMinutes must be within +/-18h");
    opt.utc_offset_minutes = static_cast<int>(m);
  }
  if (has(o, "defaultTtlMs", &x)) opt.default_ttl = budget::Duration(to_count(x, "defaultTtlMs"));
  if (has(o, "buffer", &x)) opt.default_buffer_bp = to_basis_points(x, "buffer");
  if (has(o, "growthStep", &x)) opt.growth_step_bp = to_basis_points(x, "growthStep");
  if (has(o, "minGrowth", &x)) opt.min_growth = to_money(x, "minGrowth");
  if (has(o, "persistEvery", &x)) opt.persist_every = to_money(x, "persistEvery");
  if (has(o, "failOpen", &x)) opt.fail_open = to_bool(x, "failOpen");
  if (has(o, "pricing", &x)) opt.pricer = unwrap_pricing(x);
  if (has(o, "clock", &x)) opt.clock = unwrap_clock(x);
  if (has(o, "limits", &x)) {
    if (!x.IsArray()) invalid("limits must be an array");
    auto a = x.As<Napi::Array>();
    for (uint32_t i = 0; i < a.Length(); ++i) opt.limits.push_back(to_limit(a.Get(i)));
  }
  p.offload = opt.store != "memory";
  if (has(o, "offload", &x)) p.offload = to_bool(x, "offload");
  return p;
}

class NativeManager : public Napi::ObjectWrap<NativeManager> {
 public:

  static void Init(Napi::Env env, Napi::Object exports) {
    Napi::Function f = DefineClass(
        env, "NativeManager",
        {InstanceMethod("reserve", &NativeManager::Reserve), InstanceMethod("check", &NativeManager::Check),
         InstanceMethod("consume", &NativeManager::Consume), InstanceMethod("commit", &NativeManager::Commit),
         InstanceMethod("release", &NativeManager::Release), InstanceMethod("record", &NativeManager::Record),
         InstanceMethod("grant", &NativeManager::Grant), InstanceMethod("adjust", &NativeManager::Adjust),
         InstanceMethod("status", &NativeManager::Status), InstanceMethod("setLimit", &NativeManager::SetLimit),
         InstanceMethod("removeLimit", &NativeManager::RemoveLimit), InstanceMethod("limits", &NativeManager::Limits),
         InstanceMethod("expireHolds", &NativeManager::ExpireHolds), InstanceMethod("events", &NativeManager::Events),
         InstanceMethod("exportJsonl", &NativeManager::ExportJsonl), InstanceMethod("exportCsv", &NativeManager::ExportCsv),
         InstanceMethod("aggregate", &NativeManager::Aggregate), InstanceMethod("verify", &NativeManager::Verify),
         InstanceMethod("metricsText", &NativeManager::MetricsText), InstanceMethod("now", &NativeManager::Now),
         InstanceMethod("onAlert", &NativeManager::OnAlert), InstanceMethod("onDenial", &NativeManager::OnDenial),
         InstanceMethod("close", &NativeManager::Close), InstanceMethod("info", &NativeManager::Info),
         InstanceMethod("benchLoop", &NativeManager::BenchLoop),
         // the inline fast path (see "Inline execution" below)
         InstanceMethod("reserveI", &NativeManager::ReserveI), InstanceMethod("checkI", &NativeManager::CheckI),
         InstanceMethod("consumeI", &NativeManager::ConsumeI), InstanceMethod("commitI", &NativeManager::CommitI),
         InstanceMethod("releaseI", &NativeManager::ReleaseI), InstanceMethod("recordI", &NativeManager::RecordI),
         InstanceMethod("reservationExtras", &NativeManager::ReservationExtras),
         InstanceMethod("receiptExtras", &NativeManager::ReceiptExtras),
         InstanceMethod("internedFrom", &NativeManager::InternedFrom)});
    env_data(env).manager_ctor = Napi::Persistent(f);
    exports.Set("NativeManager", f);
    exports.Set("openManager", Napi::Function::New(env, &NativeManager::Open));
  }

  // new NativeManager(options) opens the store on the JS thread;
  // openManager(options) opens it on a worker thread and resolves to a NativeManager.
  explicit NativeManager(const Napi::CallbackInfo& info) : Napi::ObjectWrap<NativeManager>(info) {
    Napi::Env env = info.Env();
    ed_ = &env_data(env);
    guard(env, [&] {
      if (info.Length() >= 2 && info[0].IsExternal()) {
        auto* pm = info[0].As<Napi::External<std::shared_ptr<budget::BudgetManager>>>().Data();
        m_ = *pm;
        offload_ = info[1].As<Napi::Boolean>().Value();
        return;
      }
      ParsedOptions p = parse_options(info.Length() > 0 ? info[0] : env.Undefined());
      offload_ = p.offload;
      m_ = std::make_shared<budget::BudgetManager>(std::move(p.o));
    });
  }
  ~NativeManager() override { release_callbacks(); }

  static Napi::Value Open(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    return promise_guard(env, [&] {
      auto p = std::make_shared<ParsedOptions>(parse_options(info.Length() > 0 ? info[0] : env.Undefined()));
      bool offload = p->offload;
      using M = std::shared_ptr<budget::BudgetManager>;
      return run<M>(
          env, true, [p] { return std::make_shared<budget::BudgetManager>(std::move(p->o)); },
          [offload](Napi::Env env, M& m) -> Napi::Value {
            auto* holder = new M(m);
            auto ext = Napi::External<M>::New(env, holder, [](Napi::Env, M* x) { delete x; });
            return env_data(env).manager_ctor.New({ext, Napi::Boolean::New(env, offload)});
          });
    });
  }

 private:
  std::shared_ptr<budget::BudgetManager> m_;
  bool offload_ = true;
  std::shared_ptr<Observer> alerts_ = std::make_shared<Observer>(), denials_ = std::make_shared<Observer>();
  EnvData* ed_ = nullptr;
  // Subject cache: the scope strings last given and their parsed Subject (parsing and
  // validating the scopes is skipped when a caller repeats the same subject).
  std::vector<std::string> subj_in_;
  std::shared_ptr<const budget::Subject> subj_;
  bool subj_simple_ = false;
  std::vector<std::string> subj_read_;  // the strings being read (reused buffers)
  bool reading_subject_ = false;        // an element getter may call back into this manager
  // Strings of the last inline result that the JS layer fetches only when it needs them.
  ResPtr last_res_;
  budget::Receipt last_receipt_;

  std::shared_ptr<budget::BudgetManager> mgr() const {
    if (!m_) throw budget::InvalidArgumentError("the BudgetManager is closed");
    return m_;
  }

  void release_callbacks() {
    alerts_->set(nullptr);
    denials_->set(nullptr);
  }

  Napi::Value Reserve(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    return promise_guard(env, [&] {
      auto m = mgr();
      auto subject = to_subject(info[0]);
      auto est = to_estimate(info[1]);
      auto opts = to_request_options(info[2]);
      return run<budget::Decision>(
          env, offload_, [m, subject = std::move(subject), est = std::move(est), opts = std::move(opts)] {
            return m->reserve(subject, est, opts);
          },
          from_decision);
    });
  }

  Napi::Value Check(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    return promise_guard(env, [&] {
      auto m = mgr();
      auto subject = to_subject(info[0]);
      auto est = to_estimate(info[1]);
      return run<budget::Decision>(
          env, offload_, [m, subject = std::move(subject), est = std::move(est)] { return m->check(subject, est); },
          from_decision);
    });
  }

  Napi::Value Consume(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    return promise_guard(env, [&] {
      auto m = mgr();
      ResArg a = to_res_arg(info[0]);
      budget::Money amount = to_money(info[1], "amount");
      int64_t tokens = info.Length() > 2 && !info[2].IsUndefined() && !info[2].IsNull() ? to_count(info[2], "tokens") : 0;
      return run<budget::ConsumeResult>(
          env, offload_,
          [m, a = std::move(a), amount, tokens] {
            if (a.handle) {
              std::lock_guard<std::mutex> lock(a.handle->mu);
              return m->consume(a.handle->r, amount, tokens);
            }
            return m->consume(a.id, amount, tokens);
          },
          from_consume);
    });
  }

  Napi::Value Commit(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    return promise_guard(env, [&] {
      auto m = mgr();
      ResArg a = to_res_arg(info[0]);
      budget::Charge c = to_commit_charge(info[1]);
      return run<budget::Receipt>(
          env, offload_,
          [m, a = std::move(a), c = std::move(c)] {
            if (a.handle) {
              std::lock_guard<std::mutex> lock(a.handle->mu);
              return m->commit(a.handle->r, c);
            }
            return m->commit(a.id, c);
          },
          [](Napi::Env env, budget::Receipt& r) -> Napi::Value { return from_receipt(env, r); });
    });
  }

  Napi::Value Release(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    return promise_guard(env, [&] {
      auto m = mgr();
      ResArg a = to_res_arg(info[0]);
      return run<budget::Receipt>(
          env, offload_,
          [m, a = std::move(a)] {
            if (a.handle) {
              std::lock_guard<std::mutex> lock(a.handle->mu);
              return m->release(a.handle->r);
            }
            return m->release(a.id);
          },
          [](Napi::Env env, budget::Receipt& r) -> Napi::Value { return from_receipt(env, r); });
    });
  }

  Napi::Value Record(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    return promise_guard(env, [&] {
      auto m = mgr();
      auto subject = to_subject(info[0]);
      auto c = to_charge(info[1]);
      auto opts = to_request_options(info[2]);
      return run<budget::Receipt>(
          env, offload_, [m, subject = std::move(subject), c = std::move(c), opts = std::move(opts)] {
            return m->record(subject, c, opts);
          },
          [](Napi::Env env, budget::Receipt& r) -> Napi::Value { return from_receipt(env, r); });
    });
  }

  Napi::Value Grant(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    return promise_guard(env, [&] {
      auto m = mgr();
      auto scope = budget::Scope::parse(to_string(info[0], "scope"));
      auto amount = to_money(info[1], "amount");
      auto opts = to_request_options(info[2]);
      return run<Unit>(
          env, offload_, [m, scope, amount, opts = std::move(opts)] { m->grant(scope, amount, opts); return Unit{}; },
          [](Napi::Env env, Unit&) -> Napi::Value { return env.Undefined(); });
    });
  }

  Napi::Value Adjust(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    return promise_guard(env, [&] {
      auto m = mgr();
      auto subject = to_subject(info[0]);
      auto delta = to_money(info[1], "delta");
      auto opts = to_request_options(info[2]);
      return run<Unit>(
          env, offload_,
          [m, subject = std::move(subject), delta, opts = std::move(opts)] { m->adjust(subject, delta, opts); return Unit{}; },
          [](Napi::Env env, Unit&) -> Napi::Value { return env.Undefined(); });
    });
  }

  Napi::Value Status(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    return promise_guard(env, [&] {
      auto m = mgr();
      auto scope = info.Length() == 0 || info[0].IsUndefined() ? budget::Scope::global()
                                                               : budget::Scope::parse(to_string(info[0], "scope"));
      using R = std::vector<budget::LimitStatus>;
      return run<R>(env, offload_, [m, scope] { return m->status(scope); }, [](Napi::Env env, R& v) -> Napi::Value {
        Napi::Array a = Napi::Array::New(env, v.size());
        for (size_t i = 0; i < v.size(); ++i) a.Set(static_cast<uint32_t>(i), from_status(env, v[i]));
        return a;
      });
    });
  }

  Napi::Value SetLimit(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    return promise_guard(env, [&] {
      auto m = mgr();
      auto l = to_limit(info[0]);
      return run<Unit>(
          env, offload_, [m, l = std::move(l)] { m->set_limit(l); return Unit{}; },
          [](Napi::Env env, Unit&) -> Napi::Value { return env.Undefined(); });
    });
  }

  Napi::Value RemoveLimit(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    return promise_guard(env, [&] {
      auto m = mgr();
      std::string scope = to_string(info[0], "scope");
      budget::Metric metric = to_metric(info[1]);
      budget::Window w = budget::Window::parse(to_string(info[2], "window"));
      return run<bool>(
          env, offload_, [m, scope, metric, w] { return m->remove_limit(scope, metric, w); },
          [](Napi::Env env, bool& b) -> Napi::Value { return Napi::Boolean::New(env, b); });
    });
  }

  Napi::Value Limits(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    return promise_guard(env, [&] {
      auto m = mgr();
      using R = std::vector<budget::Limit>;
      return run<R>(env, offload_, [m] { return m->limits(); }, [](Napi::Env env, R& v) -> Napi::Value {
        Napi::Array a = Napi::Array::New(env, v.size());
        for (size_t i = 0; i < v.size(); ++i) a.Set(static_cast<uint32_t>(i), from_limit(env, v[i]));
        return a;
      });
    });
  }

  Napi::Value ExpireHolds(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    return promise_guard(env, [&] {
      auto m = mgr();
      return run<size_t>(env, offload_, [m] { return m->expire_holds(); },
                         [](Napi::Env env, size_t& n) -> Napi::Value { return Napi::Number::New(env, double(n)); });
    });
  }

  Napi::Value Events(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    return promise_guard(env, [&] {
      auto m = mgr();
      auto q = to_ledger_query(info[0]);
      using R = std::vector<budget::LedgerEvent>;
      return run<R>(env, offload_, [m, q] { return m->events(q); }, [](Napi::Env env, R& v) -> Napi::Value {
        Napi::Array a = Napi::Array::New(env, v.size());
        for (size_t i = 0; i < v.size(); ++i) a.Set(static_cast<uint32_t>(i), from_event(env, v[i]));
        return a;
      });
    });
  }

  Napi::Value ExportJsonl(const Napi::CallbackInfo& info) { return export_text(info, false); }
  Napi::Value ExportCsv(const Napi::CallbackInfo& info) { return export_text(info, true); }
  Napi::Value export_text(const Napi::CallbackInfo& info, bool csv) {
    Napi::Env env = info.Env();
    return promise_guard(env, [&] {
      auto m = mgr();
      auto q = to_ledger_query(info[0]);
      return run<std::string>(
          env, offload_,
          [m, q, csv] {
            std::ostringstream out;
            if (csv) m->export_csv(out, q);
            else m->export_jsonl(out, q);
            return out.str();
          },
          [](Napi::Env env, std::string& s) -> Napi::Value { return Napi::String::New(env, s); });
    });
  }

  Napi::Value Aggregate(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    return promise_guard(env, [&] {
      auto m = mgr();
      auto q = to_ledger_query(info[0]);
      budget::GroupBy by;
      if (info.Length() > 1 && !info[1].IsUndefined() && !info[1].IsNull()) {
        Napi::Object o = expect_object(info[1], "groupBy");
        reject_unknown(o, "groupBy", {"scope", "model", "day"});  // { models: true } is no grouping
        Napi::Value x;
        // An absent field keeps C++'s default (GroupBy: by scope, not by model nor day), as
        // Python's by_scope=True: { model: true } groups by scope and model.
        by.scope = has(o, "scope", &x) ? to_bool(x, "groupBy.scope") : true;
        by.model = has(o, "model", &x) ? to_bool(x, "groupBy.model") : false;
        by.day = has(o, "day", &x) ? to_bool(x, "groupBy.day") : false;
      }
      using R = std::vector<budget::AggregateRow>;
      return run<R>(env, offload_, [m, q, by] { return m->aggregate(q, by); }, [](Napi::Env env, R& v) -> Napi::Value {
        Napi::Array a = Napi::Array::New(env, v.size());
        for (size_t i = 0; i < v.size(); ++i) {
          Napi::Object o = Napi::Object::New(env);
          o.Set("scope", v[i].scope);
          o.Set("model", v[i].model);
          o.Set("day", v[i].day);
          o.Set("spent", big(env, v[i].spent.nanos()));
          o.Set("tokens", count(env, v[i].tokens));
          o.Set("requests", count(env, v[i].requests));
          o.Set("events", count(env, v[i].events));
          a.Set(static_cast<uint32_t>(i), o);
        }
        return a;
      });
    });
  }

  Napi::Value Verify(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    return promise_guard(env, [&] {
      auto m = mgr();
      return run<budget::VerifyReport>(env, offload_, [m] { return m->verify(); },
                                       [](Napi::Env env, budget::VerifyReport& r) -> Napi::Value {
                                         Napi::Object o = Napi::Object::New(env);
                                         o.Set("ok", r.ok);
                                         o.Set("events", count(env, r.events));
                                         o.Set("windowsChecked", count(env, r.windows_checked));
                                         o.Set("chainOk", r.chain_ok);
                                         o.Set("problems", from_strings(env, r.problems));
                                         return o;
                                       });
    });
  }

  Napi::Value MetricsText(const Napi::CallbackInfo& info) {
    return guard(info.Env(), [&] { return Napi::String::New(info.Env(), mgr()->metrics_text()); });
  }
  Napi::Value Now(const Napi::CallbackInfo& info) {
    return guard(info.Env(), [&] { return date(info.Env(), mgr()->now()); });
  }
  Napi::Value Info(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    return guard(env, [&] {
      auto m = mgr();
      const auto& o = m->options();
      Napi::Object r = Napi::Object::New(env);
      r.Set("store", o.store);
      r.Set("currency", o.currency);
      r.Set("offload", offload_);
      r.Set("failOpen", o.fail_open);
      r.Set("defaultTtlMs", count(env, o.default_ttl.count()));
      return Napi::Value(r);
    });
  }

  // callbacks are delivered on the JS thread through thread-safe functions; they do not
  // keep the event loop alive.
  Napi::Value OnAlert(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    guard(env, [&] {
      if (!info[0].IsNull() && !info[0].IsUndefined() && !info[0].IsFunction()) invalid("onAlert expects a function");
      if (info[0].IsNull() || info[0].IsUndefined()) {  // removing needs no store: a no-op once closed
        alerts_->set(nullptr);
        return;
      }
      auto m = mgr();
      if (!alerts_->registered) {
        m->on_alert([obs = alerts_](const budget::Alert& a) {
          CallbackPtr slot = obs->get();
          if (!slot) return;
          slot->call(new budget::Alert(a), [](Napi::Env env, Napi::Function cb, budget::Alert* a) {
            std::unique_ptr<budget::Alert> own(a);
            if (env && cb) cb.Call({from_alert(env, *a)});
          });
        });
        alerts_->registered = true;
      }
      alerts_->set(make_callback(env, info[0].As<Napi::Function>(), "libbudget.alert"));
    });
    return env.Undefined();
  }

  Napi::Value OnDenial(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    guard(env, [&] {
      if (!info[0].IsNull() && !info[0].IsUndefined() && !info[0].IsFunction()) invalid("onDenial expects a function");
      if (info[0].IsNull() || info[0].IsUndefined()) {  // removing needs no store: a no-op once closed
        denials_->set(nullptr);
        return;
      }
      auto m = mgr();
      if (!denials_->registered) {
        using P = std::pair<budget::Denial, std::vector<std::string>>;
        m->on_denial([obs = denials_](const budget::Denial& d, const budget::Subject& s) {
          CallbackPtr slot = obs->get();
          if (!slot) return;
          auto* copy = new P(d, {});
          for (const auto& sc : s.scopes()) copy->second.push_back(sc.str());
          slot->call(copy, [](Napi::Env env, Napi::Function cb, P* p) {
            std::unique_ptr<P> own(p);
            if (env && cb) cb.Call({from_denial(env, p->first), from_strings(env, p->second)});
          });
        });
        denials_->registered = true;
      }
      denials_->set(make_callback(env, info[0].As<Napi::Function>(), "libbudget.denial"));
    });
    return env.Undefined();
  }

  Napi::Value Close(const Napi::CallbackInfo& info) {
    release_callbacks();  // the core's dispatchers stay registered and find no callback
    m_.reset();  // in-flight jobs keep their own reference; the store closes after them
    return info.Env().Undefined();
  }

  // ---- Inline execution ---------------------------------------------------------------------
  // With `offload` false (the memory store by default) the TS layer calls these synchronous
  // variants and wraps the outcome in an already-settled Promise: a typed error thrown here
  // becomes a rejected Promise there. Scalars travel through the scratch buffer (EnvData);
  // the JS layer builds the result objects. Rare strings (a generated request id, a priced
  // model, line items...) are fetched by a second call (reservationExtras/receiptExtras).

  // The subject argument, through the subject cache. Same validation and messages as
  // to_subject. `simple`: the Subject is `global` followed by the scopes given, in order (the
  // JS layer then builds reservation.subject itself).
  struct SubjectArg {
    std::shared_ptr<const budget::Subject> subject;
    bool simple = false;
  };
  static bool is_simple(const budget::Subject& s, const std::vector<std::string>& in, size_t n) {
    const auto& sc = s.scopes();
    if (sc.size() != n + 1 || !sc[0].is_global()) return false;
    for (size_t i = 0; i < n; ++i)
      if (sc[i + 1].str() != in[i]) return false;
    return true;
  }
  SubjectArg subject_arg(const Napi::Value& v) {
    napi_env env = v.Env();
    napi_valuetype t;
    napi_typeof(env, v, &t);
    size_t n = 0;
    if (t == napi_string) {
      if (subj_read_.empty()) subj_read_.emplace_back();
      read_utf8(env, v, subj_read_[0]);  // a primitive: no user code runs
      n = 1;
    } else {
      bool arr = false;
      napi_is_array(env, v, &arr);
      // Not an array (to_subject throws the typed error), or re-entered from an element
      // getter of a subject being read: no cache; not "simple", so the JS layer takes the
      // reservation's subject from the addon.
      if (!arr || reading_subject_) return {std::make_shared<const budget::Subject>(to_subject(v)), false};
      uint32_t len = 0;
      napi_get_array_length(env, v, &len);
      if (len > 64) invalid("subject has too many scopes");
      n = len;
      if (subj_read_.size() < n) subj_read_.resize(n);
      reading_subject_ = true;
      try {
        for (uint32_t i = 0; i < len; ++i) {
          napi_value e;
          napi_get_element(env, v, i, &e);  // may run a getter
          napi_valuetype et;
          napi_typeof(env, e, &et);
          if (et != napi_string) to_string(Napi::Value(env, e), "subject scope");  // throws
          read_utf8(env, e, subj_read_[i]);
        }
      } catch (...) {
        reading_subject_ = false;
        throw;
      }
      reading_subject_ = false;
    }
    bool same = subj_ != nullptr && subj_in_.size() == n;
    for (size_t i = 0; same && i < n; ++i) same = subj_in_[i] == subj_read_[i];
    if (same) return {subj_, subj_simple_};
    std::vector<std::string> in(subj_read_.begin(), subj_read_.begin() + static_cast<std::ptrdiff_t>(n));
    auto s = std::make_shared<const budget::Subject>(in);  // may throw: cache untouched
    subj_simple_ = is_simple(*s, in, n);
    subj_in_ = std::move(in);
    subj_ = std::move(s);
    return {subj_, subj_simple_};
  }

  // Options of reserve/record: (requestId, options); options undefined = only the id.
  static budget::RequestOptions options_arg(const Napi::CallbackInfo& info, size_t i) {
    if (info.Length() > i + 1 && !info[i + 1].IsUndefined()) return to_request_options(info[i + 1]);
    budget::RequestOptions ro;
    if (info.Length() > i && !info[i].IsUndefined() && !info[i].IsNull()) ro.request_id = to_request_id(info[i]);
    return ro;
  }

  // A priced estimate or charge whose usage the TS layer put in the scratch buffer:
  // info[i] is the model (a non-empty string), info[i + 1] the provider (charges).
  bool priced_arg(const Napi::CallbackInfo& info, size_t i) const { return info.Length() > i && info[i].IsString(); }
  std::optional<UsageSlots> slots_if_priced(const Napi::CallbackInfo& info, size_t i) const {
    if (!priced_arg(info, i)) return std::nullopt;
    return usage_slots(*ed_);
  }
  template <class T>
  T priced(const Napi::CallbackInfo& info, size_t i, const UsageSlots& s) const {
    T t;
    t.model = to_string(info[i], "model");
    t.usage = usage_from_slots(s);
    return t;
  }
  budget::Charge charge_arg(const Napi::CallbackInfo& info, size_t charge, size_t model,
                            const std::optional<UsageSlots>& s) const {
    if (!s) return to_charge(info[charge]);
    auto c = priced<budget::Charge>(info, model, *s);
    if (info.Length() > model + 1 && !info[model + 1].IsUndefined() && !info[model + 1].IsNull())
      c.provider = to_string(info[model + 1], "provider");
    return c;
  }

  // A reservation argument (res, res.handle): the handle when it is one, else as to_res_arg.
  static ResArg res_arg(const Napi::CallbackInfo& info) {
    if (info.Length() > 1 && info[1].IsExternal()) return ResArg{*info[1].As<Napi::External<ResPtr>>().Data(), {}};
    return to_res_arg(info[0]);
  }

  // scratch: [0] flags (1 allowed, 2 replayed, 4 failOpen, 8 reservation, 16 request id
  // not the one given, 32 subject not simple, 64 model set and not the one given, 128 model
  // = the one given), [1] estimate, [2] held, [3,4] heldTokens, [5] expiresAt ms.
  // Returns the handle, the Denial object, or null.
  Napi::Value decision_out(Napi::Env env, budget::Decision& d, bool subject_simple, const std::string* given_id,
                           const std::string* given_model) {
    EnvData& e = *ed_;
    int flags = (d.allowed ? 1 : 0) | (d.replayed ? 2 : 0) | (d.fail_open ? 4 : 0);
    e.i64(1, d.estimate.nanos());
    if (d.allowed && d.reservation) {
      const budget::Reservation& r = d.reservation;
      flags |= 8;
      if (!given_id || *given_id != r.request_id()) flags |= 16;
      if (!subject_simple) flags |= 32;  // the reservation's subject is the one given
      if (!r.model().empty()) flags |= given_model && *given_model == r.model() ? 128 : 64;
      e.i64(2, r.held().nanos());
      e.count(3, r.held_tokens());
      e.f64(5, static_cast<double>(budget::to_millis(r.expires_at())));
      e.f64(0, flags);
      auto h = std::make_shared<ResHandle>();
      h->r = std::move(d.reservation);
      if (flags & (16 | 32 | 64)) last_res_ = h;
      auto* owned = new ResPtr(std::move(h));
      return Napi::External<ResPtr>::New(env, owned, [](Napi::Env, ResPtr* p) { delete p; });
    }
    e.f64(0, flags);
    if (!d.allowed) return from_denial(env, d.denial);
    return env.Null();
  }

  // Strings of line items (names, unit prices) interned per manager: the JS layer keeps a copy
  // of the table (internedFrom) and receipts carry indices. Bounded; beyond, receipts take the
  // extras path.
  static constexpr size_t kMaxInterned = 4096;
  static constexpr size_t kItemBase = 6, kItemSlots = 4, kMaxItems = (EnvData::kSlots - kItemBase) / kItemSlots;
  std::vector<std::string> strs_;
  std::unordered_map<std::string, uint32_t> str_idx_;
  std::string last_pv_;  // the price version the JS layer has (see receipt_out)
  bool intern(const std::string& s, uint32_t& idx, bool& added) {
    auto it = str_idx_.find(s);
    if (it != str_idx_.end()) {
      idx = it->second;
      return true;
    }
    if (strs_.size() >= kMaxInterned) return false;
    idx = static_cast<uint32_t>(strs_.size());
    strs_.push_back(s);
    str_idx_.emplace(s, idx);
    added = true;
    return true;
  }

  // scratch: [0] flags (1 overHold, 2 overLimit, 4 afterExpiry, 8 replayed, 16 extras: fetch
  // model, priceVersion, overLimitScopes and items with receiptExtras; else 32 model = the one
  // given (else ''), 64 priceVersion = the last one fetched (else ''), 128 new interned
  // strings), [1] charged, [2] released, [3,4] tokens, [5] item count, then per item 4 slots
  // from [6]: quantity, amount (int64), name and unit price (interned string indices).
  // Returns the request id.
  Napi::Value receipt_out(Napi::Env env, budget::Receipt& r, const std::string* given_model = nullptr) {
    EnvData& e = *ed_;
    bool extras = !r.over_limit_scopes.empty() || r.items.size() > kMaxItems;
    int flags = (r.over_hold ? 1 : 0) | (r.over_limit ? 2 : 0) | (r.after_expiry ? 4 : 0) | (r.replayed ? 8 : 0);
    if (!r.model.empty()) {
      if (given_model && *given_model == r.model) flags |= 32;
      else extras = true;
    }
    if (!r.price_version.empty()) {
      if (r.price_version == last_pv_) flags |= 64;
      else extras = true;
    }
    bool added = false;
    for (size_t i = 0; !extras && i < r.items.size(); ++i) {
      const auto& li = r.items[i];
      uint32_t name = 0, unit = 0;
      size_t base = kItemBase + kItemSlots * i;
      if (li.quantity > 9007199254740991LL || li.quantity < -9007199254740991LL || !intern(li.name, name, added) ||
          !intern(li.unit_price, unit, added)) {
        extras = true;
        break;
      }
      e.f64(base, static_cast<double>(li.quantity));
      e.i64(base + 1, li.amount.nanos());
      e.f64(base + 2, name);
      e.f64(base + 3, unit);
    }
    if (extras) flags = (flags & 15) | 16;
    else if (added) flags |= 128;
    e.i64(1, r.charged.nanos());
    e.i64(2, r.released.nanos());
    e.count(3, r.tokens);
    e.f64(5, extras ? 0 : static_cast<double>(r.items.size()));
    e.f64(0, flags);
    Napi::String id = Napi::String::New(env, r.request_id);
    if (extras) {
      last_pv_ = r.price_version;  // the JS layer takes it from receiptExtras
      last_receipt_ = std::move(r);
    }
    return id;
  }
  // The interned strings from index `from` on (for the JS copy of the table).
  Napi::Value InternedFrom(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    return guard(env, [&] {
      auto from = static_cast<size_t>(to_count(info[0], "from"));
      std::vector<std::string> v(strs_.begin() + static_cast<std::ptrdiff_t>(std::min(from, strs_.size())), strs_.end());
      return Napi::Value(from_strings(env, v));
    });
  }

  Napi::Value ReserveI(const Napi::CallbackInfo& info) {  // (subject, estimate, requestId, options, model)
    Napi::Env env = info.Env();
    return guard(env, [&] {
      auto m = mgr();  // a reference: a getter may close() the manager meanwhile
      auto slots = slots_if_priced(info, 4);
      SubjectArg subject = subject_arg(info[0]);
      auto est = slots ? priced<budget::Estimate>(info, 4, *slots) : to_estimate(info[1]);
      auto opts = options_arg(info, 2);
      auto d = m->reserve(*subject.subject, est, opts);
      // The TS layer knows the id only when it passed it as the plain argument (info[2]); an id
      // inside a full options object (info[3]) comes back through reservationExtras.
      bool id_given = info.Length() > 2 && info[2].IsString() && !(info.Length() > 3 && !info[3].IsUndefined());
      return decision_out(env, d, subject.simple, id_given && !opts.request_id.empty() ? &opts.request_id : nullptr,
                          slots ? &est.model : nullptr);
    });
  }
  Napi::Value CheckI(const Napi::CallbackInfo& info) {  // (subject, estimate, model)
    Napi::Env env = info.Env();
    return guard(env, [&] {
      auto m = mgr();  // a reference: a getter may close() the manager meanwhile
      auto slots = slots_if_priced(info, 2);
      SubjectArg subject = subject_arg(info[0]);
      auto est = slots ? priced<budget::Estimate>(info, 2, *slots) : to_estimate(info[1]);
      auto d = m->check(*subject.subject, est);
      return decision_out(env, d, subject.simple, nullptr, nullptr);
    });
  }
  // scratch: [0] 1 = continue, [1] consumed, [2] held. Returns the Denial object or null.
  Napi::Value ConsumeI(const Napi::CallbackInfo& info) {  // (res, res.handle, amount, tokens)
    Napi::Env env = info.Env();
    return guard(env, [&] {
      auto m = mgr();  // a reference: a getter may close() the manager meanwhile
      ResArg a = res_arg(info);
      budget::Money amount = to_money(info[2], "amount");
      int64_t tokens = info.Length() > 3 && !info[3].IsUndefined() && !info[3].IsNull() ? to_count(info[3], "tokens") : 0;
      budget::ConsumeResult c;
      if (a.handle) {
        std::lock_guard<std::mutex> lock(a.handle->mu);
        c = m->consume(a.handle->r, amount, tokens);
      } else {
        c = m->consume(a.id, amount, tokens);
      }
      EnvData& e = *ed_;
      e.f64(0, c.ok() ? 1 : 0);
      e.i64(1, c.consumed.nanos());
      e.i64(2, c.held.nanos());
      return c.ok() ? env.Null() : Napi::Value(from_denial(env, c.denial));
    });
  }
  Napi::Value CommitI(const Napi::CallbackInfo& info) {  // (res, res.handle, charge, model, provider)
    Napi::Env env = info.Env();
    return guard(env, [&] {
      auto m = mgr();  // a reference: a getter may close() the manager meanwhile
      auto slots = slots_if_priced(info, 3);
      ResArg a = res_arg(info);
      budget::Charge c = slots ? charge_arg(info, 2, 3, slots) : to_commit_charge(info[2]);
      budget::Receipt r;
      if (a.handle) {
        std::lock_guard<std::mutex> lock(a.handle->mu);
        r = m->commit(a.handle->r, c);
      } else {
        r = m->commit(a.id, c);
      }
      return receipt_out(env, r, slots ? &c.model : nullptr);
    });
  }
  Napi::Value ReleaseI(const Napi::CallbackInfo& info) {  // (res, res.handle)
    Napi::Env env = info.Env();
    return guard(env, [&] {
      auto m = mgr();  // a reference: a getter may close() the manager meanwhile
      ResArg a = res_arg(info);
      budget::Receipt r;
      if (a.handle) {
        std::lock_guard<std::mutex> lock(a.handle->mu);
        r = m->release(a.handle->r);
      } else {
        r = m->release(a.id);
      }
      return receipt_out(env, r);
    });
  }
  Napi::Value RecordI(const Napi::CallbackInfo& info) {  // (subject, charge, requestId, options, model, provider)
    Napi::Env env = info.Env();
    return guard(env, [&] {
      auto m = mgr();  // a reference: a getter may close() the manager meanwhile
      auto slots = slots_if_priced(info, 4);
      SubjectArg subject = subject_arg(info[0]);
      auto c = charge_arg(info, 1, 4, slots);
      auto opts = options_arg(info, 2);
      auto r = m->record(*subject.subject, c, opts);
      return receipt_out(env, r, slots ? &c.model : nullptr);
    });
  }
  // [requestId, subject, model] of the last reservation returned with flags 16|32|64 (a
  // subject that is not simple, a model not given).
  Napi::Value ReservationExtras(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    Napi::Array a = Napi::Array::New(env, 3);
    if (!last_res_) return a;
    const budget::Reservation& r = last_res_->r;
    a.Set(0u, Napi::String::New(env, r.request_id()));
    std::vector<std::string> scopes;
    for (const auto& s : r.subject().scopes()) scopes.push_back(s.str());
    a.Set(1u, from_strings(env, scopes));
    a.Set(2u, Napi::String::New(env, r.model()));
    last_res_.reset();
    return a;
  }
  // [model, priceVersion, overLimitScopes, items] of the last receipt returned with flag 16.
  Napi::Value ReceiptExtras(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    const budget::Receipt& r = last_receipt_;
    Napi::Array a = Napi::Array::New(env, 4);
    a.Set(0u, Napi::String::New(env, r.model));
    a.Set(1u, Napi::String::New(env, r.price_version));
    a.Set(2u, from_strings(env, r.over_limit_scopes));
    Napi::Array items = Napi::Array::New(env, r.items.size());
    for (size_t i = 0; i < r.items.size(); ++i) items.Set(static_cast<uint32_t>(i), from_line_item(env, r.items[i]));
    a.Set(3u, items);
    last_receipt_ = budget::Receipt();
    return a;
  }

  // Benchmark baseline: benchLoop(subject, estimate, n, prefix, charge = estimate): n
  // reserve+commit lifecycles in a tight C++ loop on this manager (same store, same subject),
  // returning the elapsed nanoseconds. Used by bench.mjs to measure the binding's per-call
  // overhead against C++ in the same run.
  Napi::Value BenchLoop(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    return guard(env, [&] {
      auto m = mgr();
      auto subject = to_subject(info[0]);
      budget::Estimate est = to_estimate(info[1]);
      int64_t n = to_count(info[2], "n");
      std::string prefix = info.Length() > 3 ? to_string(info[3], "prefix") : "bench";
      budget::Charge charge = info.Length() > 4 && !info[4].IsUndefined() ? to_charge(info[4]) : to_charge(info[1]);
      auto t0 = std::chrono::steady_clock::now();
      for (int64_t i = 0; i < n; ++i) {
        budget::RequestOptions ro;
        ro.request_id = prefix + std::to_string(i);
        auto d = m->reserve(subject, est, ro);
        if (d.allowed) m->commit(d.reservation, charge);
      }
      auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - t0).count();
      return Napi::Value(Napi::Number::New(env, double(ns)));
    });
  }
};

}  // namespace

std::shared_ptr<budget::ManualClock> unwrap_clock(const Napi::Value& v) {
  if (!v.IsObject()) invalid("clock must be a ManualClock");
  Napi::Object o = v.As<Napi::Object>();
  Napi::Value inner = o.Get("native");  // the TS ManualClock keeps its NativeClock here
  Napi::Object target = inner.IsObject() ? inner.As<Napi::Object>() : o;
  if (!target.InstanceOf(env_data(v.Env()).clock_ctor.Value())) invalid("clock must be a ManualClock");
  return NativeClock::Unwrap(target)->clock_;
}

void init_manager(Napi::Env env, Napi::Object exports) {
  NativeClock::Init(env, exports);
  NativeManager::Init(env, exports);
}

}  // namespace bn
