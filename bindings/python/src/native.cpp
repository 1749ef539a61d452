// budget._native — the pybind11 layer of the `budget` Python package.
//
// Conventions (after re2's _re2.cc):
//  * every argument is converted to C++ while the GIL is held; the GIL is released by
//    nogil(...) around each call that may touch a store (or a file), and re-acquired before
//    any Python object is built from the result;
//  * budget::Error exceptions become the Python classes of budget._errors (one per code);
//  * money crosses the boundary as budget.Money (a decimal.Decimal subclass) on the way out
//    and as Decimal / str / int / float on the way in (float through repr); all must be exact
//    to the nano (a float finer than that, 1e-10 or 0.1 + 0.2, is refused, as in Node);
//  * Python callbacks (alerts, denials) are held by a shared_ptr whose deleter takes the
//    GIL, and are called with the GIL taken, from whatever thread crossed the threshold.
// Only public headers of the core are used.
#include <budget/budget.hpp>

#include <pybind11/functional.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#if defined(__GLIBCXX__)
#include <cxxabi.h>
#endif

#include <chrono>
#include <cmath>
#include <exception>
#include <cstdint>
#include <limits>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <type_traits>
#include <vector>

namespace py = pybind11;
using namespace budget;

namespace {

// ---------------------------------------------------------------------------------------
// Cached Python objects (created at import, never freed: module lifetime).
struct Cache {
  py::object decimal_type;   // decimal.Decimal
  py::object money_type;     // budget._money.Money
  py::object error_for_code; // budget._errors._from_native(code:int, message:str) -> exception
  py::object datetime_type;  // datetime.datetime
  py::object timedelta_type; // datetime.timedelta
  py::object epoch;          // datetime(1970,1,1,tzinfo=utc)
  py::object json_dumps;     // json.dumps
};
Cache* cache = nullptr;

[[noreturn]] void invalid(const std::string& msg) { throw InvalidArgumentError(msg); }

std::string type_name(py::handle o) { return py::str(py::type::handle_of(o).attr("__name__")); }

// ---------------------------------------------------------------------------------------
// Money in.

// Exact decimal text with an optional exponent ("1e-07", "2.5E+3") to nanos: a nonzero digit
// past the ninth decimal is an InvalidArgumentError, as in Money::parse (and as Node reads a
// number: floats come here through their repr, the shortest text that round-trips).
int64_t decimal_text_to_nanos(const std::string& text) {
  size_t i = 0;
  bool neg = false;
  if (i < text.size() && (text[i] == '-' || text[i] == '+')) neg = text[i++] == '-';
  std::string digits;
  int64_t exp10 = 0;  // value = digits x 10^exp10
  bool dot = false;
  for (; i < text.size(); ++i) {
    char c = text[i];
    if (c >= '0' && c <= '9') {
      digits.push_back(c);
      if (dot) --exp10;
    } else if (c == '.' && !dot) {
      dot = true;
    } else if (c == 'e' || c == 'E') {
      std::string e = text.substr(i + 1);
      size_t k = (!e.empty() && (e[0] == '+' || e[0] == '-')) ? 1 : 0;
      if (k >= e.size() || e.size() > 12 || e.find_first_not_of("0123456789", k) != std::string::npos)
        invalid("not a decimal number: '" + text + "'");
      exp10 += std::stoll(e);
      break;
    } else {
      invalid("not a decimal number: '" + text + "'");
    }
  }
  if (digits.empty()) invalid("not a decimal number: '" + text + "'");
  // Trailing zeros are exact ("1.0000000000", "1E-10" x 10 = "10E-11"): drop them first.
  size_t last = digits.find_last_not_of('0');
  if (last == std::string::npos) return 0;
  exp10 += static_cast<int64_t>(digits.size() - 1 - last);
  digits.erase(last + 1);
  // Nanos: value x 1e9 = digits x 10^(exp10 + 9), an integer only when exp10 + 9 >= 0.
  int64_t shift = exp10 + 9;
  if (shift < 0)
    invalid("invalid money amount '" + text.substr(0, 64) +
            "': more than 9 fractional digits (money is exact to the nano)");
  size_t first = digits.find_first_not_of('0');
  digits = digits.substr(first);
  if (static_cast<int64_t>(digits.size()) + shift > 19) throw OverflowError("money out of range: " + text);
  digits.append(static_cast<size_t>(shift), '0');
  unsigned long long v = std::stoull(digits);
  if (v > static_cast<unsigned long long>(std::numeric_limits<int64_t>::max()))
    throw OverflowError("money out of range: " + text);
  auto n = static_cast<int64_t>(v);
  return neg ? -n : n;
}

Money to_money(py::handle o, const char* what = "amount") {
  PyObject* p = o.ptr();
  if (PyBool_Check(p)) invalid(std::string(what) + ": a bool is not money");
  if (PyLong_Check(p)) {
    int overflow = 0;
    long long v = PyLong_AsLongLongAndOverflow(p, &overflow);
    if (overflow != 0) throw OverflowError(std::string(what) + ": integer out of range for money");
    return Money::from_units(v);
  }
  if (PyFloat_Check(p)) {
    double d = PyFloat_AS_DOUBLE(p);
    if (!std::isfinite(d)) invalid(std::string(what) + ": money must be finite, not " + std::string(py::repr(o)));
    // Errors name the float as repr prints it, with the argument (as Node names a number).
    std::string text = py::repr(o);
    try {
      return Money::from_nanos(decimal_text_to_nanos(text));
    } catch (const InvalidArgumentError& e) {  // a float past the nano: 1e-10, 0.1 + 0.2
      invalid(std::string(what) + ": " + e.what());
    } catch (const OverflowError&) {
      throw OverflowError(std::string(what) + ": money amount out of range: " + text);
    }
  }
  if (PyUnicode_Check(p)) {
    std::string s = o.cast<std::string>();
    return Money::parse(s);
  }
  if (PyObject_IsInstance(p, cache->decimal_type.ptr()) == 1) {
    // str() of a Decimal is exact ("1.5E-7", "NaN", "-Infinity"); parse it without rounding.
    std::string s = py::str(o);
    if (s.find_first_of("nN") != std::string::npos)
      invalid(std::string(what) + ": money must be finite, not " + s);
    return Money::from_nanos(decimal_text_to_nanos(s));
  }
  invalid(std::string(what) + ": money must be Decimal, str, int or float, not " + type_name(o));
}

int64_t to_count(py::handle o, const char* what) {
  PyObject* p = o.ptr();
  if (PyBool_Check(p) || !PyLong_Check(p)) invalid(std::string(what) + ": expected an int, not " + type_name(o));
  int overflow = 0;
  long long v = PyLong_AsLongLongAndOverflow(p, &overflow);
  if (overflow != 0) throw OverflowError(std::string(what) + ": integer out of range");
  return v;
}

// Amount of a limit in its metric's unit: money for cost, a count otherwise.
int64_t to_amount(py::handle o, Metric m, const char* what) {
  if (m == Metric::Cost) return to_money(o, what).nanos();
  return to_count(o, what);
}

// Alert thresholds: a sequence of int percentages (the core checks 1..1000).
std::vector<uint32_t> to_alerts(py::handle o) {
  const char* msg = "alerts: a sequence of int percentages in 1..1000, such as [50, 80, 100]";
  std::vector<uint32_t> v;
  if (o.is_none()) return v;
  if (PyUnicode_Check(o.ptr()) || PyBytes_Check(o.ptr()) || !PySequence_Check(o.ptr()))
    invalid(std::string(msg) + ", not " + type_name(o));
  for (auto item : py::reinterpret_borrow<py::sequence>(o)) {
    if (PyBool_Check(item.ptr()) || !PyLong_Check(item.ptr())) invalid(std::string(msg) + ", not " + type_name(item));
    int overflow = 0;
    long long p = PyLong_AsLongLongAndOverflow(item.ptr(), &overflow);
    if (overflow != 0 || p < 1 || p > 1000) invalid(std::string(msg) + ", not " + std::string(py::str(item)));
    v.push_back(static_cast<uint32_t>(p));
  }
  return v;
}

// ---------------------------------------------------------------------------------------
// Out.
py::object money_out(Money m) { return cache->money_type(py::str(m.to_string())); }
py::object amount_out(int64_t v, Metric m) {
  if (m == Metric::Cost) return money_out(Money::from_nanos(v));
  return py::int_(v);
}
py::object time_out(Timestamp t) {
  return cache->epoch + cache->timedelta_type(py::arg("milliseconds") = to_millis(t));
}
py::object opt_time_out(const std::optional<Timestamp>& t) { return t ? time_out(*t) : py::none(); }

Timestamp to_time(py::handle o) {
  if (PyObject_IsInstance(o.ptr(), cache->datetime_type.ptr()) == 1) {
    if (o.attr("tzinfo").is_none()) invalid("datetime must be timezone-aware (e.g. tzinfo=timezone.utc)");
    py::object delta = o - cache->epoch;
    // Exact milliseconds from the timedelta parts.
    int64_t days = delta.attr("days").cast<int64_t>();
    int64_t secs = delta.attr("seconds").cast<int64_t>();
    int64_t us = delta.attr("microseconds").cast<int64_t>();
    return from_millis(days * 86'400'000 + secs * 1000 + us / 1000);
  }
  if (PyLong_Check(o.ptr()) && !PyBool_Check(o.ptr())) return from_millis(to_count(o, "timestamp (ms)"));
  invalid("a time must be an aware datetime or milliseconds since the epoch, not " + type_name(o));
}

// An int or float as a double (the caller checked the type); an int beyond a double's range
// is as out of range as any other huge number of seconds or factor (not a cast error).
double number_in(py::handle o, const std::string& out_of_range) {
  if (PyFloat_Check(o.ptr())) return PyFloat_AS_DOUBLE(o.ptr());
  int overflow = 0;
  long long v = PyLong_AsLongLongAndOverflow(o.ptr(), &overflow);
  if (overflow != 0) invalid(out_of_range);
  return static_cast<double>(v);
}

Duration to_duration(py::handle o, const char* what) {
  if (PyObject_IsInstance(o.ptr(), cache->timedelta_type.ptr()) == 1) {
    double s = o.attr("total_seconds")().cast<double>();
    return Duration(static_cast<int64_t>(std::llround(s * 1000.0)));
  }
  if (PyBool_Check(o.ptr())) invalid(std::string(what) + ": expected seconds or a timedelta");
  if (PyLong_Check(o.ptr()) || PyFloat_Check(o.ptr())) {
    double s = number_in(o, std::string(what) + ": invalid duration");
    if (!std::isfinite(s) || s < 0 || s > 1e12) invalid(std::string(what) + ": invalid duration");
    return Duration(static_cast<int64_t>(std::llround(s * 1000.0)));
  }
  invalid(std::string(what) + ": expected seconds (int/float) or a timedelta, not " + type_name(o));
}

// A factor (buffer, growth_step) in basis points, read as Node reads it: exactly, from an int, a
// float (through its repr, as money), a decimal str or a Decimal, with at most 4 decimals, in
// [0, 10000]. A float was rounded to the basis point (1.23456 held 1.2346 x) and a str refused.
uint32_t to_bp(py::handle o, const char* what) {
  PyObject* p = o.ptr();
  const std::string range = std::string(what) + ": expected a factor between 0 and 10000 such as 1.2";
  std::string text;
  if (PyBool_Check(p)) {
    invalid(std::string(what) + ": expected a number such as 1.2, not bool");
  } else if (PyLong_Check(p)) {
    int overflow = 0;
    long long v = PyLong_AsLongLongAndOverflow(p, &overflow);
    if (overflow != 0 || v < 0 || v > 10000) invalid(range);
    return static_cast<uint32_t>(v * 10000);
  } else if (PyFloat_Check(p)) {
    double d = PyFloat_AS_DOUBLE(p);
    if (!std::isfinite(d) || d < 0 || d > 10000) invalid(range);
    text = py::repr(o);
  } else if (PyUnicode_Check(p)) {
    text = o.cast<std::string>();
  } else if (PyObject_IsInstance(p, cache->decimal_type.ptr()) == 1) {
    text = py::str(o);
    if (text.find_first_of("nN") != std::string::npos) invalid(range);  // NaN, Infinity
  } else {
    invalid(std::string(what) + ": expected a number such as 1.2 (or its decimal text), not " + type_name(o));
  }
  int64_t nanos = 0;
  try {
    nanos = decimal_text_to_nanos(text);
  } catch (const OverflowError&) {
    invalid(range);
  } catch (const InvalidArgumentError&) {
    invalid(std::string(what) + ": not a factor with at most 4 decimals: '" + text.substr(0, 40) + "'");
  }
  if (nanos < 0 || nanos > int64_t{10000} * Money::kNanosPerUnit) invalid(range);
  if (nanos % 100000 != 0) invalid(std::string(what) + " has more than 4 decimal places: " + text.substr(0, 40));
  return static_cast<uint32_t>(nanos / 100000);
}

Metric to_metric(py::handle o) {
  if (!PyUnicode_Check(o.ptr())) invalid("metric must be 'cost', 'tokens' or 'requests'");
  return parse_metric(o.cast<std::string>());
}

Subject to_subject(py::handle o) {
  if (py::isinstance<Subject>(o)) return o.cast<Subject>();
  if (PyUnicode_Check(o.ptr())) {
    std::vector<std::string> v{o.cast<std::string>()};
    return Subject(v);
  }
  if (PyDict_Check(o.ptr())) {  // {"tenant": "acme", "user": "alice"}
    std::vector<Scope> scopes;
    for (auto kv : py::reinterpret_borrow<py::dict>(o)) {
      if (!PyUnicode_Check(kv.first.ptr()) || !PyUnicode_Check(kv.second.ptr()))
        invalid("a subject dict maps kind (str) to id (str)");
      scopes.emplace_back(kv.first.cast<std::string>(), kv.second.cast<std::string>());
    }
    return Subject(std::move(scopes));
  }
  if (PyList_Check(o.ptr()) || PyTuple_Check(o.ptr())) {
    std::vector<std::string> v;
    for (auto item : o) {
      if (!PyUnicode_Check(item.ptr())) invalid("a subject is a list of scope strings, found " + type_name(item));
      v.push_back(item.cast<std::string>());
    }
    return Subject(v);
  }
  invalid("a subject is a scope string, a list of scopes or a {kind: id} dict, not " + type_name(o));
}

Scope to_scope(py::handle o) {
  if (!PyUnicode_Check(o.ptr())) invalid("a scope is a string such as 'user:alice', not " + type_name(o));
  return Scope::parse(o.cast<std::string>());
}

std::string to_text(py::handle o, const char* what) {
  if (!PyUnicode_Check(o.ptr())) invalid(std::string(what) + ": expected a str, not " + type_name(o));
  return o.cast<std::string>();
}

std::string to_body(py::handle o) {  // str / bytes / JSON-able object
  if (PyUnicode_Check(o.ptr())) return o.cast<std::string>();
  if (PyBytes_Check(o.ptr()))
    return std::string(PyBytes_AS_STRING(o.ptr()), static_cast<size_t>(PyBytes_GET_SIZE(o.ptr())));
  if (PyByteArray_Check(o.ptr()))
    return std::string(PyByteArray_AS_STRING(o.ptr()), static_cast<size_t>(PyByteArray_GET_SIZE(o.ptr())));
  if (PyDict_Check(o.ptr()) || PyList_Check(o.ptr())) return cache->json_dumps(o).cast<std::string>();
  invalid("expected JSON text (str/bytes) or a dict, not " + type_name(o));
}

RequestOptions to_request(py::handle request_id, py::handle buffer, py::handle ttl, py::handle provider,
                          py::handle metadata, py::handle reason = py::none()) {
  RequestOptions r;
  if (!request_id.is_none()) {
    r.request_id = to_text(request_id, "request_id");
    // The core reads an empty id as "none given" and generates one: a retry with an empty
    // key would then be charged again. None asks for a generated id.
    if (r.request_id.empty()) invalid("request_id is empty (pass None to have one generated)");
  }
  if (!buffer.is_none()) r.buffer_bp = to_bp(buffer, "buffer");
  if (!ttl.is_none()) r.ttl = to_duration(ttl, "ttl");
  if (!provider.is_none()) r.provider = to_text(provider, "provider");
  if (!metadata.is_none()) {
    if (!PyDict_Check(metadata.ptr())) invalid("metadata must be a dict of str to str");
    for (auto kv : py::reinterpret_borrow<py::dict>(metadata)) {
      if (!PyUnicode_Check(kv.first.ptr())) invalid("metadata keys must be str");
      std::string key = kv.first.cast<std::string>();
      PyObject* v = kv.second.ptr();
      // The values Node takes (string, number, boolean), written as Node writes them: a bool is
      // "true"/"false" (it was "True"), and None, a list or a dict are errors (they were their
      // Python repr: "None", "{'a': 1}").
      if (PyUnicode_Check(v)) r.metadata[key] = kv.second.cast<std::string>();
      else if (PyBool_Check(v)) r.metadata[key] = v == Py_True ? "true" : "false";
      else if (PyLong_Check(v) || PyFloat_Check(v) || PyObject_IsInstance(v, cache->decimal_type.ptr()) == 1)
        r.metadata[key] = py::str(kv.second);
      else invalid("metadata['" + key + "'] must be a str, int, float, Decimal or bool, not " + type_name(kv.second));
    }
  }
  if (!reason.is_none()) r.reason = to_text(reason, "reason");
  return r;
}

// A service tier by name (budget::parse_service_tier: "standard" or "default", "batch", "flex",
// "priority"); None names none, which is standard. Anything else is an InvalidArgumentError.
ServiceTier to_service_tier(py::handle o, const char* what) {
  if (o.is_none()) return ServiceTier::Standard;
  return parse_service_tier(to_text(o, what));
}

Usage to_usage(py::handle o) {
  if (py::isinstance<Usage>(o)) return o.cast<Usage>();
  invalid("usage must be a budget.Usage, not " + type_name(o));
}

// money-or-usage: the estimate of reserve/check, the charge of commit/record.
template <class T>
T to_cost(py::handle amount, py::handle model, py::handle usage, py::handle tokens, const char* what,
          bool model_required = true) {
  T x;
  if (!amount.is_none() && py::isinstance<Usage>(amount)) {
    if (!usage.is_none()) invalid(std::string(what) + ": give the usage once");
    usage = amount;
    amount = py::none();
  }
  if (!usage.is_none()) {
    if (model.is_none() && model_required) invalid(std::string(what) + ": a usage needs model=...");
    x.usage = to_usage(usage);
    if (!amount.is_none()) invalid(std::string(what) + ": give money or usage, not both");
  } else if (!amount.is_none()) {
    x.cost = to_money(amount, what);
  }
  if (!model.is_none()) x.model = to_text(model, "model");
  if (!tokens.is_none()) x.tokens = to_count(tokens, "tokens");
  return x;
}

// ---------------------------------------------------------------------------------------
// Callbacks: a Python callable shared with C++ threads.
using PyFn = std::shared_ptr<py::object>;
PyFn hold_callable(py::object f) {
  return PyFn(new py::object(std::move(f)), [](py::object* p) {
    py::gil_scoped_acquire gil;
    delete p;
  });
}
void report_callback_error(const char* where) {
  // The exception cannot propagate into the engine: report it like an unraisable one.
  py::error_already_set e;
  e.discard_as_unraisable(where);
}

// ---------------------------------------------------------------------------------------
// The manager: a shared_ptr so close() cannot free it under a call running without the GIL.
struct PyManager {
  std::shared_ptr<BudgetManager> m;
  std::shared_ptr<const Pricer> pricer;
  std::shared_ptr<BudgetManager> get() const {
    auto p = std::atomic_load(&m);
    if (!p) invalid("this BudgetManager is closed");
    return p;
  }
};

// Runs f without the GIL, and takes the GIL back by a plain call, never from a destructor
// (py::gil_scoped_release): at exit the interpreter ends a daemon thread that takes the GIL
// back by pthread_exit, a forced unwind, and one leaving a noexcept destructor is
// std::terminate (the whole process aborted at exit). Errors of f are rethrown with the GIL.
template <class F>
auto nogil(F&& f) -> decltype(f()) {
  using R = decltype(f());
  std::optional<std::conditional_t<std::is_void_v<R>, bool, R>> out;
  std::exception_ptr error;
  PyThreadState* ts = PyEval_SaveThread();
  try {
    if constexpr (std::is_void_v<R>) {
      f();
    } else {
      out.emplace(f());
    }
#if defined(__GLIBCXX__)
  } catch (abi::__forced_unwind&) {
    throw;  // a callback taking the GIL at exit ends this daemon thread: let it unwind
#endif
  } catch (...) {
    error = std::current_exception();
  }
  PyEval_RestoreThread(ts);
  if (error) std::rethrow_exception(error);
  if constexpr (!std::is_void_v<R>) return std::move(*out);
}

Money price_usage(PyManager& self, BudgetManager& m, const std::string& model, const Usage& u) {
  if (!self.pricer) invalid("consuming a usage needs a manager with pricing=...");
  return self.pricer->price(model, u, m.now()).cost;
}

const char* deny_reason(DenyReason r) {
  switch (r) {
    case DenyReason::None: return "none";
    case DenyReason::LimitExceeded: return "limit_exceeded";
    case DenyReason::StoreUnavailable: return "store_unavailable";
    case DenyReason::NotHeld: return "not_held";
  }
  return "none";
}

std::string metric_str(Metric m) { return to_string(m); }

// ---------------------------------------------------------------------------------------
// Benchmark helper: the same operations in a C++ loop (no Python), ns per operation.
double bench_cpp(PyManager& self, const std::string& op, const Subject& subject, Money amount, int64_t n) {
  auto m = self.get();
  return nogil([&] {
    auto t0 = std::chrono::steady_clock::now();
    static std::atomic<int64_t> counter{0};
    std::string prefix = "bench-cpp-" + std::to_string(counter.fetch_add(1)) + "-";
    if (op == "check") {
      for (int64_t i = 0; i < n; ++i) (void)m->check(subject, Estimate(amount));
    } else if (op == "lifecycle") {
      for (int64_t i = 0; i < n; ++i) {
        auto d = m->reserve(subject, Estimate(amount));
        if (d.allowed) (void)m->commit(d.reservation, Charge(amount));
      }
    } else if (op == "reserve_release") {
      for (int64_t i = 0; i < n; ++i) {
        auto d = m->reserve(subject, Estimate(amount));
        if (d.allowed) (void)m->release(d.reservation);
      }
    } else if (op == "record") {
      for (int64_t i = 0; i < n; ++i) (void)m->record(subject, Charge(amount));
    } else if (op == "consume") {
      auto d = m->reserve(subject, Estimate(Money::from_units(1)));
      if (!d.allowed) invalid("bench: reserve denied");
      for (int64_t i = 0; i < n; ++i) (void)m->consume(d.reservation, Money::from_nanos(1));
      (void)m->release(d.reservation);
    } else {
      invalid("bench: unknown op " + op);
    }
    auto t1 = std::chrono::steady_clock::now();
    return std::chrono::duration<double, std::nano>(t1 - t0).count() / static_cast<double>(n);
  });
}

}  // namespace

// =======================================================================================
PYBIND11_MODULE(_native, mod) {
  mod.doc() = "libbudget native core (private: use the `budget` package)";
  cache = new Cache();
  {
    auto decimal = py::module_::import("decimal");
    auto dt = py::module_::import("datetime");
    cache->decimal_type = decimal.attr("Decimal");
    cache->datetime_type = dt.attr("datetime");
    cache->timedelta_type = dt.attr("timedelta");
    cache->epoch = dt.attr("datetime")(1970, 1, 1, py::arg("tzinfo") = dt.attr("timezone").attr("utc"));
    cache->money_type = py::module_::import("budget._money").attr("Money");
    cache->error_for_code = py::module_::import("budget._errors").attr("_from_native");
    cache->json_dumps = py::module_::import("json").attr("dumps");
  }

  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const budget::Error& e) {
      py::object exc = cache->error_for_code(static_cast<int>(e.code()), e.what());
      PyErr_SetObject(reinterpret_cast<PyObject*>(Py_TYPE(exc.ptr())), exc.ptr());
    }
  });

#ifdef BUDGET_PY_VERSION
  mod.attr("__version__") = BUDGET_PY_VERSION;
#endif
  mod.attr("NANOS_PER_UNIT") = Money::kNanosPerUnit;

  mod.def("parse_money_nanos", [](py::handle o) { return to_money(o).nanos(); }, py::arg("amount"),
          "Nanos of a money value (Decimal/str/int/float) as the library reads it.");
  mod.def("format_money", [](int64_t nanos) { return Money::from_nanos(nanos).to_string(); }, py::arg("nanos"));
  // Reports an exception as unraisable (sys.unraisablehook), as the engine's relays do: the
  // manager's observer dispatcher calls every callback and reports each failure this way.
  mod.def("_report_unraisable", [](py::object exc, py::object where) {
    py::object tb = exc.attr("__traceback__");
    PyErr_Restore(py::type::of(exc).inc_ref().ptr(), exc.inc_ref().ptr(), tb.is_none() ? nullptr : tb.inc_ref().ptr());
    PyErr_WriteUnraisable(where.ptr());
  }, py::arg("exc"), py::arg("where"));

  // ---- time
  py::class_<Clock, std::shared_ptr<Clock>>(mod, "Clock");
  py::class_<ManualClock, Clock, std::shared_ptr<ManualClock>>(mod, "ManualClock")
      .def(py::init([](py::handle start) {
             if (start.is_none()) return std::make_shared<ManualClock>();
             return std::make_shared<ManualClock>(to_time(start));
           }),
           py::arg("start") = py::none())
      .def("now", [](const ManualClock& c) { return time_out(c.now()); })
      .def("set", [](ManualClock& c, py::handle t) { c.set(to_time(t)); }, py::arg("when"))
      .def("advance", [](ManualClock& c, py::handle d) { c.advance(to_duration(d, "advance")); }, py::arg("delta"));

  // ---- scopes
  py::class_<Subject>(mod, "Subject")
      .def(py::init([](py::handle scopes) { return to_subject(scopes); }), py::arg("scopes"))
      .def_property_readonly("scopes", [](const Subject& s) {
        std::vector<std::string> v;
        for (auto& x : s.scopes()) v.push_back(x.str());
        return v;
      })
      .def("__len__", &Subject::size)
      .def("__contains__", [](const Subject& s, const std::string& x) { return s.contains(Scope::parse(x)); })
      .def("__iter__", [](const Subject& s) {
        py::list l;
        for (auto& x : s.scopes()) l.append(x.str());
        return py::iter(l);
      })
      .def("__eq__", [](const Subject& a, py::handle b) { return py::isinstance<Subject>(b) && a == b.cast<Subject>(); })
      .def("__hash__", [](const Subject& s) {  // immutable: usable as a dict key, equal subjects hash equal
        py::list l;
        for (auto& x : s.scopes()) l.append(x.str());
        return py::hash(py::tuple(l));
      })
      .def("__str__", &Subject::to_string)
      .def("__repr__", [](const Subject& s) {
        py::list l;
        for (auto& x : s.scopes()) l.append(x.str());
        return "Subject(" + std::string(py::repr(l)) + ")";
      });
  mod.def("validate_scope", [](const std::string& s) { return Scope::parse(s).str(); }, py::arg("scope"));

  // ---- usage
  py::class_<Usage>(mod, "Usage")
      .def(py::init([](py::handle input_tokens, py::handle output_tokens, py::handle cache_read_tokens,
                       py::handle cache_write_tokens, py::handle cache_write_1h_tokens, py::handle reasoning_tokens,
                       py::handle images, py::handle audio_ms, py::handle requests, bool complete,
                       py::handle service_tier, py::handle audio_input_tokens, py::handle audio_output_tokens) {
             Usage u;
             u.input_tokens = to_count(input_tokens, "input_tokens");
             u.output_tokens = to_count(output_tokens, "output_tokens");
             u.cache_read_tokens = to_count(cache_read_tokens, "cache_read_tokens");
             u.cache_write_tokens = to_count(cache_write_tokens, "cache_write_tokens");
             u.cache_write_1h_tokens = to_count(cache_write_1h_tokens, "cache_write_1h_tokens");
             u.reasoning_tokens = to_count(reasoning_tokens, "reasoning_tokens");
             u.images = to_count(images, "images");
             u.audio_ms = to_count(audio_ms, "audio_ms");
             u.requests = to_count(requests, "requests");
             u.complete = complete;
             u.service_tier = to_service_tier(service_tier, "service_tier");
             u.audio_input_tokens = to_count(audio_input_tokens, "audio_input_tokens");
             u.audio_output_tokens = to_count(audio_output_tokens, "audio_output_tokens");
             u.validate();
             return u;
           }),
           py::kw_only(), py::arg("input_tokens") = 0, py::arg("output_tokens") = 0, py::arg("cache_read_tokens") = 0,
           py::arg("cache_write_tokens") = 0, py::arg("cache_write_1h_tokens") = 0, py::arg("reasoning_tokens") = 0,
           py::arg("images") = 0, py::arg("audio_ms") = 0, py::arg("requests") = 1, py::arg("complete") = true,
           py::arg("service_tier") = "standard", py::arg("audio_input_tokens") = 0, py::arg("audio_output_tokens") = 0)
      .def_readonly("input_tokens", &Usage::input_tokens)
      .def_readonly("output_tokens", &Usage::output_tokens)
      .def_readonly("cache_read_tokens", &Usage::cache_read_tokens)
      .def_readonly("cache_write_tokens", &Usage::cache_write_tokens)
      .def_readonly("cache_write_1h_tokens", &Usage::cache_write_1h_tokens)
      .def_readonly("reasoning_tokens", &Usage::reasoning_tokens)
      .def_readonly("audio_input_tokens", &Usage::audio_input_tokens)
      .def_readonly("audio_output_tokens", &Usage::audio_output_tokens)
      .def_readonly("images", &Usage::images)
      .def_readonly("audio_ms", &Usage::audio_ms)
      .def_readonly("requests", &Usage::requests)
      .def_readonly("complete", &Usage::complete)
      .def_property_readonly("service_tier", [](const Usage& u) { return std::string(to_string(u.service_tier)); })
      .def_property_readonly("total_tokens", &Usage::total_tokens)
      .def("__eq__", [](const Usage& a, py::handle b) { return py::isinstance<Usage>(b) && a == b.cast<Usage>(); })
      .def("__hash__", [](const Usage& u) {
        return py::hash(py::make_tuple(u.input_tokens, u.output_tokens, u.cache_read_tokens, u.cache_write_tokens,
                                       u.reasoning_tokens, u.requests, u.complete,
                                       static_cast<int>(u.service_tier), u.audio_input_tokens, u.audio_output_tokens));
      })
      .def("__add__", [](const Usage& a, const Usage& b) { Usage r = a; r += b; return r; })
      .def("to_dict", [](const Usage& u) {
        py::dict d;
        d["input_tokens"] = u.input_tokens; d["output_tokens"] = u.output_tokens;
        d["cache_read_tokens"] = u.cache_read_tokens; d["cache_write_tokens"] = u.cache_write_tokens;
        d["cache_write_1h_tokens"] = u.cache_write_1h_tokens; d["reasoning_tokens"] = u.reasoning_tokens;
        d["images"] = u.images; d["audio_ms"] = u.audio_ms; d["requests"] = u.requests; d["complete"] = u.complete;
        d["service_tier"] = to_string(u.service_tier);
        d["audio_input_tokens"] = u.audio_input_tokens; d["audio_output_tokens"] = u.audio_output_tokens;
        return d;
      })
      .def("__repr__", [](const Usage& u) {
        std::ostringstream s;
        s << "Usage(input_tokens=" << u.input_tokens << ", output_tokens=" << u.output_tokens;
        if (u.cache_read_tokens) s << ", cache_read_tokens=" << u.cache_read_tokens;
        if (u.cache_write_tokens) s << ", cache_write_tokens=" << u.cache_write_tokens;
        if (u.cache_write_1h_tokens) s << ", cache_write_1h_tokens=" << u.cache_write_1h_tokens;
        if (u.reasoning_tokens) s << ", reasoning_tokens=" << u.reasoning_tokens;
        if (u.audio_input_tokens) s << ", audio_input_tokens=" << u.audio_input_tokens;
        if (u.audio_output_tokens) s << ", audio_output_tokens=" << u.audio_output_tokens;
        if (u.images) s << ", images=" << u.images;
        if (u.audio_ms) s << ", audio_ms=" << u.audio_ms;
        if (u.requests != 1) s << ", requests=" << u.requests;
        if (!u.complete) s << ", complete=False";
        if (u.service_tier != ServiceTier::Standard) s << ", service_tier='" << to_string(u.service_tier) << "'";
        s << ")";
        return s.str();
      })
      .def(py::pickle(  // a value: it crosses process boundaries (multiprocessing, task queues)
          [](const Usage& u) {
            return py::make_tuple(u.input_tokens, u.cache_read_tokens, u.cache_write_tokens, u.cache_write_1h_tokens,
                                  u.output_tokens, u.reasoning_tokens, u.images, u.audio_ms, u.requests, u.complete,
                                  to_string(u.service_tier), u.audio_input_tokens, u.audio_output_tokens);
          },
          [](const py::tuple& t) {
            // 11 items: pickled by a build before the audio parts (13 since).
            if (t.size() != 11 && t.size() != 13) invalid("Usage: bad pickled state");
            Usage u;
            int64_t* counts[] = {&u.input_tokens, &u.cache_read_tokens, &u.cache_write_tokens, &u.cache_write_1h_tokens,
                                 &u.output_tokens, &u.reasoning_tokens, &u.images, &u.audio_ms, &u.requests};
            for (size_t i = 0; i < std::size(counts); ++i) *counts[i] = to_count(t[i], "Usage state");
            if (!py::isinstance<py::bool_>(t[9])) invalid("Usage state: complete is not a bool");
            u.complete = t[9].cast<bool>();
            u.service_tier = to_service_tier(t[10], "Usage state");
            if (t.size() == 13) {
              u.audio_input_tokens = to_count(t[11], "Usage state");
              u.audio_output_tokens = to_count(t[12], "Usage state");
            }
            u.validate();
            return u;
          }));

  py::class_<LineItem>(mod, "LineItem")
      .def_readonly("name", &LineItem::name)
      .def_readonly("quantity", &LineItem::quantity)
      .def_property_readonly("unit_price", [](const LineItem& l) { return cache->decimal_type(l.unit_price); })
      .def_property_readonly("amount", [](const LineItem& l) { return money_out(l.amount); })
      .def("__repr__", [](const LineItem& l) {
        return "LineItem(" + l.name + ", " + std::to_string(l.quantity) + " x " + l.unit_price + " = " +
               l.amount.to_string() + ")";
      });

  // ---- limits
  py::class_<Limit>(mod, "Limit")
      .def(py::init([](py::handle scope, py::handle window, py::handle amount, py::handle metric,
                       py::handle alerts) {
             Limit l;
             l.scope = to_text(scope, "scope");
             l.window = Window::parse(to_text(window, "window"));
             l.metric = to_metric(metric);
             l.amount = to_amount(amount, l.metric, "limit amount");
             l.alert_thresholds_pct = to_alerts(alerts);
             l.validate();
             return l;
           }),
           py::arg("scope"), py::arg("window"), py::arg("amount"), py::kw_only(), py::arg("metric") = "cost",
           py::arg("alerts") = py::tuple())
      .def_readonly("scope", &Limit::scope)
      .def_property_readonly("window", [](const Limit& l) { return l.window.to_string(); })
      .def_property_readonly("metric", [](const Limit& l) { return metric_str(l.metric); })
      .def_property_readonly("amount", [](const Limit& l) { return amount_out(l.amount, l.metric); })
      .def_readonly("alerts", &Limit::alert_thresholds_pct)
      .def_property_readonly("key", &Limit::key)
      .def_property_readonly("is_kind_default", &Limit::is_kind_default)
      .def("__eq__", [](const Limit& a, py::handle b) { return py::isinstance<Limit>(b) && a == b.cast<Limit>(); })
      .def("__repr__", [](const Limit& l) {
        std::string amt = l.metric == Metric::Cost ? "'" + Money::from_nanos(l.amount).to_string() + "'"
                                                   : std::to_string(l.amount);
        return "Limit('" + l.scope + "', '" + l.window.to_string() + "', " + amt + ", metric='" + metric_str(l.metric) +
               "')";
      });
  mod.def("canonical_window", [](const std::string& w) { return Window::parse(w).to_string(); }, py::arg("window"));

  // ---- results
  py::class_<Denial>(mod, "Denial")
      .def_property_readonly("reason", [](const Denial& d) { return deny_reason(d.reason); })
      .def_readonly("scope", &Denial::scope)
      .def_readonly("window", &Denial::window)
      .def_property_readonly("metric", [](const Denial& d) { return metric_str(d.metric); })
      .def_property_readonly("limit", [](const Denial& d) { return amount_out(d.limit, d.metric); })
      .def_property_readonly("spent", [](const Denial& d) { return amount_out(d.spent, d.metric); })
      .def_property_readonly("held", [](const Denial& d) { return amount_out(d.held, d.metric); })
      .def_property_readonly("remaining", [](const Denial& d) { return amount_out(d.remaining, d.metric); })
      .def_property_readonly("requested", [](const Denial& d) { return amount_out(d.requested, d.metric); })
      .def_property_readonly("resets_at", [](const Denial& d) { return opt_time_out(d.resets_at); })
      .def_readonly("hard", &Denial::hard)
      .def_readonly("message", &Denial::message)
      .def(py::pickle(  // so a BudgetExceededError carrying it crosses process boundaries
          [](const Denial& d) {
            py::object resets = d.resets_at ? py::object(py::int_(to_millis(*d.resets_at))) : py::none();
            return py::make_tuple(static_cast<int>(d.reason), d.scope, d.window, static_cast<int>(d.metric), d.limit,
                                  d.spent, d.held, d.remaining, d.requested, resets, d.hard, d.message);
          },
          [](const py::tuple& t) {
            if (t.size() != 12) invalid("Denial: bad pickled state");
            Denial d;
            int reason = t[0].cast<int>(), metric = t[3].cast<int>();
            if (reason < 0 || reason > static_cast<int>(DenyReason::NotHeld) || metric < 0 ||
                metric > static_cast<int>(Metric::Requests))
              invalid("Denial: bad pickled state");
            d.reason = static_cast<DenyReason>(reason);
            d.scope = t[1].cast<std::string>();
            d.window = t[2].cast<std::string>();
            d.metric = static_cast<Metric>(metric);
            d.limit = t[4].cast<int64_t>();
            d.spent = t[5].cast<int64_t>();
            d.held = t[6].cast<int64_t>();
            d.remaining = t[7].cast<int64_t>();
            d.requested = t[8].cast<int64_t>();
            if (!t[9].is_none()) d.resets_at = from_millis(t[9].cast<int64_t>());
            d.hard = t[10].cast<bool>();
            d.message = t[11].cast<std::string>();
            return d;
          }))
      .def("__repr__", [](const Denial& d) {
        return std::string("Denial(") + deny_reason(d.reason) + ", scope='" + d.scope + "', window='" + d.window +
               "', hard=" + (d.hard ? "True" : "False") + ")";
      });

  py::class_<Reservation>(mod, "Reservation")
      .def_property_readonly("request_id", &Reservation::request_id)
      .def_property_readonly("subject", [](const Reservation& r) { return r.subject(); })
      .def_property_readonly("held", [](const Reservation& r) { return money_out(r.held()); })
      .def_property_readonly("held_tokens", &Reservation::held_tokens)
      .def_property_readonly("expires_at", [](const Reservation& r) { return time_out(r.expires_at()); })
      .def_property_readonly("model", &Reservation::model)
      .def("__bool__", [](const Reservation& r) { return static_cast<bool>(r); })
      .def("__repr__", [](const Reservation& r) {
        return "Reservation('" + r.request_id() + "', held=" + r.held().to_string() + ")";
      });

  py::class_<Decision>(mod, "Decision")
      .def_readonly("allowed", &Decision::allowed)
      .def_readonly("replayed", &Decision::replayed)
      .def_readonly("fail_open", &Decision::fail_open)
      .def_property_readonly(
          "reservation", [](Decision& d) -> Reservation* { return d.reservation ? &d.reservation : nullptr; },
          py::return_value_policy::reference_internal)
      .def_property_readonly(
          "denial", [](Decision& d) -> Denial* { return d.allowed ? nullptr : &d.denial; },
          py::return_value_policy::reference_internal)
      .def_property_readonly("estimate", [](const Decision& d) { return money_out(d.estimate); })
      .def_property_readonly("request_id", [](const Decision& d) { return d.reservation.request_id(); })
      .def("__bool__", [](const Decision& d) { return d.allowed; })
      .def("__repr__", [](const Decision& d) {
        if (d.allowed)
          return "Decision(allowed=True, request_id='" + d.reservation.request_id() + "', estimate=" +
                 d.estimate.to_string() + ")";
        return "Decision(allowed=False, scope='" + d.denial.scope + "', window='" + d.denial.window + "', hard=" +
               (d.denial.hard ? "True" : "False") + ")";
      });

  py::class_<ConsumeResult>(mod, "ConsumeResult")
      .def_property_readonly("ok", &ConsumeResult::ok)
      .def_property_readonly("stop", [](const ConsumeResult& c) { return !c.ok(); })
      .def_property_readonly("verdict", [](const ConsumeResult& c) { return c.ok() ? "continue" : "stop"; })
      .def_property_readonly("consumed", [](const ConsumeResult& c) { return money_out(c.consumed); })
      .def_property_readonly("held", [](const ConsumeResult& c) { return money_out(c.held); })
      .def_property_readonly(
          "denial", [](ConsumeResult& c) -> Denial* { return c.ok() ? nullptr : &c.denial; },
          py::return_value_policy::reference_internal)
      .def("__bool__", &ConsumeResult::ok)
      .def("__repr__", [](const ConsumeResult& c) {
        return std::string("ConsumeResult(") + (c.ok() ? "continue" : "stop") + ", consumed=" + c.consumed.to_string() +
               ", held=" + c.held.to_string() + ")";
      });

  py::class_<Receipt>(mod, "Receipt")
      .def_readonly("request_id", &Receipt::request_id)
      .def_property_readonly("charged", [](const Receipt& r) { return money_out(r.charged); })
      .def_property_readonly("released", [](const Receipt& r) { return money_out(r.released); })
      .def_readonly("tokens", &Receipt::tokens)
      .def_readonly("over_hold", &Receipt::over_hold)
      .def_readonly("over_limit", &Receipt::over_limit)
      .def_readonly("over_limit_scopes", &Receipt::over_limit_scopes)
      .def_readonly("after_expiry", &Receipt::after_expiry)
      .def_readonly("replayed", &Receipt::replayed)
      .def_readonly("model", &Receipt::model)
      .def_readonly("price_version", &Receipt::price_version)
      .def_readonly("items", &Receipt::items)
      .def("__repr__", [](const Receipt& r) {
        return "Receipt('" + r.request_id + "', charged=" + r.charged.to_string() +
               ", released=" + r.released.to_string() + (r.over_limit ? ", over_limit=True" : "") + ")";
      });

  py::class_<LimitStatus>(mod, "LimitStatus")
      .def_readonly("key", &LimitStatus::key)
      .def_readonly("scope", &LimitStatus::scope)
      .def_readonly("window", &LimitStatus::window)
      .def_property_readonly("metric", [](const LimitStatus& s) { return metric_str(s.metric); })
      .def_property_readonly("limit", [](const LimitStatus& s) { return amount_out(s.limit, s.metric); })
      .def_property_readonly("granted", [](const LimitStatus& s) { return amount_out(s.granted, s.metric); })
      .def_property_readonly("spent", [](const LimitStatus& s) { return amount_out(s.spent, s.metric); })
      .def_property_readonly("held", [](const LimitStatus& s) { return amount_out(s.held, s.metric); })
      .def_property_readonly("remaining", [](const LimitStatus& s) { return amount_out(s.remaining, s.metric); })
      .def_property_readonly("window_start", [](const LimitStatus& s) { return time_out(s.window_start); })
      .def_property_readonly("resets_at", [](const LimitStatus& s) { return opt_time_out(s.resets_at); })
      .def("__repr__", [](const LimitStatus& s) {
        return "LimitStatus('" + s.key + "', spent=" + py::str(amount_out(s.spent, s.metric)).cast<std::string>() +
               ", remaining=" + py::str(amount_out(s.remaining, s.metric)).cast<std::string>() + ")";
      });

  py::class_<Alert>(mod, "Alert")
      .def_readonly("scope", &Alert::scope)
      .def_readonly("window", &Alert::window)
      .def_readonly("limit_key", &Alert::limit_key)
      .def_property_readonly("metric", [](const Alert& a) { return metric_str(a.metric); })
      .def_readonly("threshold_pct", &Alert::threshold_pct)
      .def_property_readonly("limit", [](const Alert& a) { return amount_out(a.limit, a.metric); })
      .def_property_readonly("spent", [](const Alert& a) { return amount_out(a.spent, a.metric); })
      .def_property_readonly("window_start", [](const Alert& a) { return time_out(a.window_start); })
      .def_readonly("request_id", &Alert::request_id)
      .def("__repr__", [](const Alert& a) {
        return "Alert('" + a.limit_key + "', " + std::to_string(a.threshold_pct) + "%)";
      });

  // ---- ledger
  py::class_<LedgerEvent>(mod, "LedgerEvent")
      .def_readonly("seq", &LedgerEvent::seq)
      .def_property_readonly("time", [](const LedgerEvent& e) { return time_out(e.time); })
      .def_property_readonly("type", [](const LedgerEvent& e) { return std::string(to_string(e.type)); })
      .def_readonly("request_id", &LedgerEvent::request_id)
      .def_readonly("subject", &LedgerEvent::subject)
      .def_readonly("model", &LedgerEvent::model)
      .def_readonly("provider", &LedgerEvent::provider)
      .def_readonly("price_version", &LedgerEvent::price_version)
      .def_readonly("usage", &LedgerEvent::usage)
      .def_property_readonly("amount", [](const LedgerEvent& e) { return money_out(e.amount()); })
      .def_property_readonly("spent_tokens", [](const LedgerEvent& e) { return e.spent.tokens; })
      .def_property_readonly("held_delta", [](const LedgerEvent& e) { return money_out(Money::from_nanos(e.held.cost)); })
      .def_property_readonly("granted", [](const LedgerEvent& e) { return money_out(Money::from_nanos(e.granted.cost)); })
      .def_readonly("windows", &LedgerEvent::windows)
      .def_readonly("metadata", &LedgerEvent::metadata)
      .def_readonly("prev_hash", &LedgerEvent::prev_hash)
      .def_readonly("hash", &LedgerEvent::hash)
      .def("to_json", &LedgerEvent::to_json)
      .def("__repr__", [](const LedgerEvent& e) {
        return "LedgerEvent(" + std::to_string(e.seq) + ", " + to_string(e.type) + ", '" + e.request_id + "')";
      });
  py::class_<AggregateRow>(mod, "AggregateRow")
      .def_readonly("scope", &AggregateRow::scope)
      .def_readonly("model", &AggregateRow::model)
      .def_readonly("day", &AggregateRow::day)
      .def_property_readonly("spent", [](const AggregateRow& r) { return money_out(r.spent); })
      .def_readonly("tokens", &AggregateRow::tokens)
      .def_readonly("requests", &AggregateRow::requests)
      .def_readonly("events", &AggregateRow::events)
      .def("__repr__", [](const AggregateRow& r) {
        return "AggregateRow(scope='" + r.scope + "', model='" + r.model + "', day='" + r.day +
               "', spent=" + r.spent.to_string() + ")";
      });
  py::class_<VerifyReport>(mod, "VerifyReport")
      .def_readonly("ok", &VerifyReport::ok)
      .def_readonly("events", &VerifyReport::events)
      .def_readonly("windows_checked", &VerifyReport::windows_checked)
      .def_readonly("chain_ok", &VerifyReport::chain_ok)
      .def_readonly("problems", &VerifyReport::problems)
      .def("__bool__", [](const VerifyReport& r) { return r.ok; })
      .def("__repr__", [](const VerifyReport& r) {
        return std::string("VerifyReport(ok=") + (r.ok ? "True" : "False") + ", events=" + std::to_string(r.events) + ")";
      });

  // The ledger query of events / export_jsonl / export_csv / aggregate, from their keyword
  // arguments: the fields of C++ LedgerQuery and of Node's query (since/until are its from/to),
  // the same for all four (aggregate also takes by_scope/by_model/by_day when `by` is given).
  // None is "no filter". An unknown keyword is an InvalidArgumentError, as an unknown field is
  // in Node (a misspelt filter must not widen an export); so is a bad value: a negative limit
  // or after_seq (a negative limit was read as 0: an empty export), a non-bool grouping.
  auto make_query = [](const char* fn, const py::kwargs& kw, GroupBy* by) {
    static const char* const known_query[] = {"since", "until", "scope", "request_id", "type", "after_seq", "limit"};
    LedgerQuery q;
    for (auto item : kw) {
      std::string k = py::str(item.first);
      py::handle v = item.second;
      if (by != nullptr && (k == "by_scope" || k == "by_model" || k == "by_day")) {
        if (!PyBool_Check(v.ptr())) invalid(std::string(fn) + ": " + k + " must be True or False, not " + type_name(v));
        bool b = v.ptr() == Py_True;
        (k == "by_scope" ? by->scope : k == "by_model" ? by->model : by->day) = b;
        continue;
      }
      bool known = false;
      for (const char* n : known_query) known = known || k == n;
      if (!known) {
        std::string list;
        for (const char* n : known_query) list += (list.empty() ? "" : ", ") + std::string(n);
        if (by != nullptr) list += ", by_scope, by_model, by_day";
        invalid(std::string(fn) + ": unknown argument '" + k + "' (known: " + list + ")");
      }
      if (v.is_none()) continue;
      if (k == "since") {
        q.from = to_time(v);
      } else if (k == "until") {
        q.to = to_time(v);
      } else if (k == "scope") {
        q.scope = to_scope(v).str();
      } else if (k == "request_id") {
        q.request_id = to_text(v, "request_id");
      } else if (k == "type") {
        q.type = parse_event_type(to_text(v, "type"));
      } else {
        int64_t n = to_count(v, k.c_str());
        if (n < 0) invalid(k + " must not be negative");
        if (k == "after_seq") q.after_seq = n;
        else q.limit = static_cast<size_t>(n);
      }
    }
    return q;
  };

  // ---- pricing
  py::class_<Pricer, std::shared_ptr<Pricer>>(mod, "Pricer");
  py::class_<PriceQuote>(mod, "PriceQuote")
      .def_property_readonly("cost", [](const PriceQuote& q) { return money_out(q.cost); })
      .def_readonly("items", &PriceQuote::items)
      .def_readonly("model", &PriceQuote::model)
      .def_readonly("provider", &PriceQuote::provider)
      .def_readonly("price_version", &PriceQuote::price_version)
      .def("__repr__", [](const PriceQuote& q) { return "PriceQuote('" + q.model + "', " + q.cost.to_string() + ")"; });
  py::class_<LoadReport>(mod, "LoadReport")
      .def_readonly("table_version", &LoadReport::table_version)
      .def_readonly("loaded", &LoadReport::loaded)
      .def_readonly("skipped", &LoadReport::skipped)
      .def_property_readonly("unpriceable", [](const LoadReport& r) {
        py::list l;
        for (auto& u : r.unpriceable) l.append(py::make_tuple(u.model, u.reason));
        return l;
      })
      .def("__repr__", [](const LoadReport& r) {
        return "LoadReport(loaded=" + std::to_string(r.loaded) + ", unpriceable=" + std::to_string(r.unpriceable.size()) +
               ")";
      });
  py::class_<ResolvedModel>(mod, "ResolvedModel")
      .def_readonly("name", &ResolvedModel::name)
      .def_readonly("provider", &ResolvedModel::provider)
      .def_readonly("mode", &ResolvedModel::mode)
      .def_readonly("max_output_tokens", &ResolvedModel::max_output_tokens)
      .def("__repr__", [](const ResolvedModel& r) { return "ResolvedModel('" + r.name + "', '" + r.provider + "')"; });

  auto price_text = [](py::handle o, const char* what) -> std::string {
    if (o.is_none()) return {};
    if (PyUnicode_Check(o.ptr())) return o.cast<std::string>();
    if (PyBool_Check(o.ptr())) invalid(std::string(what) + ": a bool is not a price");
    if (PyFloat_Check(o.ptr())) {
      if (!std::isfinite(PyFloat_AS_DOUBLE(o.ptr()))) invalid(std::string(what) + ": a price must be finite");
      return py::repr(o);
    }
    if (PyLong_Check(o.ptr())) return py::str(o);
    if (PyObject_IsInstance(o.ptr(), cache->decimal_type.ptr()) == 1) {
      if (!o.attr("is_finite")().cast<bool>()) invalid(std::string(what) + ": a price must be finite");
      return py::reinterpret_steal<py::str>(PyObject_Format(o.ptr(), py::str("f").ptr()));
    }
    invalid(std::string(what) + ": a price is Decimal, str, int or float, not " + type_name(o));
  };
  auto make_price = [price_text](py::handle provider, py::handle input, py::handle output, py::handle cache_read,
                                 py::handle cache_write, py::handle cache_write_1h, py::handle reasoning,
                                 py::handle per_request, py::handle per_image, py::handle per_audio_second,
                                 int64_t max_output_tokens, py::handle extra) {
    ModelPrice p;
    if (!provider.is_none()) p.provider = to_text(provider, "provider");
    p.input = price_text(input, "input");
    p.output = price_text(output, "output");
    p.cache_read = price_text(cache_read, "cache_read");
    p.cache_write = price_text(cache_write, "cache_write");
    p.cache_write_1h = price_text(cache_write_1h, "cache_write_1h");
    p.reasoning = price_text(reasoning, "reasoning");
    p.per_request = price_text(per_request, "per_request");
    p.per_image = price_text(per_image, "per_image");
    p.per_audio_second = price_text(per_audio_second, "per_audio_second");
    p.max_output_tokens = max_output_tokens;
    if (!extra.is_none()) p.extra = to_text(extra, "extra");
    return p;
  };
  auto cost_opts = [](py::handle tier, py::handle at, bool markup) {
    CostOptions o;
    // The tier to price at when the usage names none: a tier the usage names wins (core).
    o.tier = to_service_tier(tier, "tier");
    if (!at.is_none()) o.at = to_time(at);
    o.apply_markup = markup;
    return o;
  };
  auto opt_at = [](py::handle at) -> std::optional<Timestamp> {
    if (at.is_none()) return std::nullopt;
    return to_time(at);
  };

  py::class_<PricingEngine, Pricer, std::shared_ptr<PricingEngine>>(mod, "PricingEngine")
      .def(py::init([]() { return std::make_shared<PricingEngine>(); }))
      .def_static("bundled", []() {
        std::shared_ptr<PricingEngine> p = nogil([] { return PricingEngine::bundled(); });
        return p;
      })
      .def_static("bundled_table_info", []() {
        auto i = PricingEngine::bundled_table_info();
        py::dict d;
        d["date"] = i.date ? i.date : "";
        d["source"] = i.source ? i.source : "";
        d["entries"] = i.entries;
        return d;
      })
      .def("load_litellm", [](PricingEngine& e, py::handle text) {
             std::string s = to_body(text);
             return nogil([&] { return e.load_litellm(s); });
           }, py::arg("json_text"))
      .def("load_litellm_file", [](PricingEngine& e, py::handle path) {
             std::string p = py::str(py::module_::import("os").attr("fspath")(path));
             return nogil([&] { return e.load_litellm_file(p); });
           }, py::arg("path"))
      .def("load_compact", [](PricingEngine& e, const std::string& s) {
             return nogil([&] { return e.load_compact(s); });
           }, py::arg("text"))
      .def("load_compact_file", [](PricingEngine& e, py::handle path) {
             std::string p = py::str(py::module_::import("os").attr("fspath")(path));
             return nogil([&] { return e.load_compact_file(p); });
           }, py::arg("path"))
      .def("load_bundled", [](PricingEngine& e) {
        return nogil([&] { return e.load_bundled(); });
      })
      .def("to_compact", &PricingEngine::to_compact)
      .def("set_price",
           [make_price](PricingEngine& e, const std::string& model, py::handle input, py::handle output,
                        py::handle provider, py::handle cache_read, py::handle cache_write, py::handle cache_write_1h,
                        py::handle reasoning, py::handle per_request, py::handle per_image,
                        py::handle per_audio_second, int64_t max_output_tokens, py::handle extra,
                        py::handle effective_from) {
             auto p = make_price(provider, input, output, cache_read, cache_write, cache_write_1h, reasoning,
                                 per_request, per_image, per_audio_second, max_output_tokens, extra);
             e.set_price(model, p, effective_from.is_none() ? Timestamp{} : to_time(effective_from));
           },
           py::arg("model"), py::kw_only(), py::arg("input") = py::none(), py::arg("output") = py::none(),
           py::arg("provider") = py::none(), py::arg("cache_read") = py::none(), py::arg("cache_write") = py::none(),
           py::arg("cache_write_1h") = py::none(), py::arg("reasoning") = py::none(),
           py::arg("per_request") = py::none(), py::arg("per_image") = py::none(),
           py::arg("per_audio_second") = py::none(), py::arg("max_output_tokens") = 0, py::arg("extra") = py::none(),
           py::arg("effective_from") = py::none())
      .def("set_fallback",
           [make_price](PricingEngine& e, py::handle input, py::handle output, py::handle provider,
                        py::handle per_request, bool clear) {
             if (clear) {
               e.set_fallback(std::nullopt);
               return;
             }
             e.set_fallback(make_price(provider, input, output, py::none(), py::none(), py::none(), py::none(),
                                       per_request, py::none(), py::none(), 0, py::none()));
           },
           py::kw_only(), py::arg("input") = py::none(), py::arg("output") = py::none(),
           py::arg("provider") = py::none(), py::arg("per_request") = py::none(), py::arg("clear") = false)
      .def("add_alias", &PricingEngine::add_alias, py::arg("alias"), py::arg("target"))
      .def("add_markup",
           [price_text](PricingEngine& e, py::handle percent, const std::string& scope, const std::string& match,
                        py::handle fixed, py::handle effective_from) {
             MarkupRule r;
             if (scope == "all") r.scope = MarkupRule::Scope::All;
             else if (scope == "provider") r.scope = MarkupRule::Scope::Provider;
             else if (scope == "pattern") r.scope = MarkupRule::Scope::Pattern;
             else if (scope == "model") r.scope = MarkupRule::Scope::Model;
             else invalid("markup scope must be 'all', 'provider', 'pattern' or 'model'");
             r.match = match;
             r.percent = price_text(percent, "percent");
             if (!fixed.is_none()) r.fixed = to_money(fixed, "fixed");
             if (!effective_from.is_none()) r.effective_from = to_time(effective_from);
             e.add_markup(r);
           },
           py::arg("percent"), py::kw_only(), py::arg("scope") = "all", py::arg("match") = "",
           py::arg("fixed") = py::none(), py::arg("effective_from") = py::none())
      .def("resolve", [opt_at](const PricingEngine& e, const std::string& m, py::handle at) { return e.resolve(m, opt_at(at)); },
           py::arg("model"), py::arg("at") = py::none())
      .def("knows", &PricingEngine::knows, py::arg("model"))
      .def("__contains__", &PricingEngine::knows)
      .def("cost",
           [cost_opts](const PricingEngine& e, const std::string& model, const Usage& u, py::handle tier, py::handle at,
                       bool markup) { return money_out(e.cost(model, u, cost_opts(tier, at, markup))); },
           py::arg("model"), py::arg("usage"), py::kw_only(), py::arg("tier") = py::none(), py::arg("at") = py::none(),
           py::arg("markup") = true)
      .def("quote",
           [cost_opts](const PricingEngine& e, const std::string& model, const Usage& u, py::handle tier, py::handle at,
                       bool markup) { return e.quote(model, u, cost_opts(tier, at, markup)); },
           py::arg("model"), py::arg("usage"), py::kw_only(), py::arg("tier") = py::none(), py::arg("at") = py::none(),
           py::arg("markup") = true)
      .def("estimate",
           [cost_opts](const PricingEngine& e, const std::string& model, py::handle input_tokens,
                       py::handle max_output_tokens, py::handle tier, py::handle at, bool markup) {
             std::optional<int64_t> mo;
             if (!max_output_tokens.is_none()) mo = to_count(max_output_tokens, "max_output_tokens");
             return money_out(e.estimate(model, to_count(input_tokens, "input_tokens"), mo, cost_opts(tier, at, markup)));
           },
           py::arg("model"), py::arg("input_tokens"), py::arg("max_output_tokens") = py::none(), py::kw_only(),
           py::arg("tier") = py::none(), py::arg("at") = py::none(), py::arg("markup") = true)
      .def("price_version",
           [](const PricingEngine& e, py::handle at) {
             return e.price_version(at.is_none() ? std::chrono::time_point_cast<std::chrono::milliseconds>(
                                                       std::chrono::system_clock::now())
                                                 : to_time(at));
           },
           py::arg("at") = py::none())
      .def("__len__", &PricingEngine::size);

#ifdef BUDGET_PY_PROVIDERS
  // ---- usage extraction
  mod.def("estimate_tokens", [](const std::string& t) { return estimate_tokens(t); }, py::arg("text"));
  mod.def("usage_from_response",
          [](const std::string& format, py::handle body) {
            auto f = parse_api_format(format);
            std::string b = to_body(body);
            return usage_from_response(f, b);
          },
          py::arg("format"), py::arg("body"));
  py::class_<StreamUsage>(mod, "StreamUsage")
      .def(py::init([](const std::string& format, py::handle input_tokens_estimate) {
             StreamOptions o;
             // Typed errors (not pybind11's TypeError), and a negative count is refused as in
             // Node: it was read as 0 (the prompt then metered as free until the usage came).
             o.input_tokens_estimate = to_count(input_tokens_estimate, "input_tokens_estimate");
             if (o.input_tokens_estimate < 0) invalid("input_tokens_estimate must not be negative");
             return std::make_unique<StreamUsage>(parse_api_format(format), o);
           }),
           py::arg("format"), py::kw_only(), py::arg("input_tokens_estimate") = 0)
      .def("feed", [](StreamUsage& s, py::handle b) { s.feed(to_body(b)); }, py::arg("data"))
      .def("feed_event", [](StreamUsage& s, py::handle b) { s.feed_event(to_body(b)); }, py::arg("event"))
      .def("finish", &StreamUsage::finish)
      .def_property_readonly("usage", &StreamUsage::usage)
      .def_property_readonly("has_final_usage", &StreamUsage::has_final_usage)
      .def_property_readonly("estimated_output_tokens", &StreamUsage::estimated_output_tokens)
      .def_property_readonly("events", &StreamUsage::events);
  mod.attr("HAVE_PROVIDERS") = true;
#else
  mod.attr("HAVE_PROVIDERS") = false;
#endif

  // ---- the manager
  py::class_<PyManager>(mod, "BudgetManager")
      .def(py::init([](py::handle store, py::handle currency, py::handle limits, py::handle pricing, py::handle clock,
                       py::handle default_ttl, py::handle buffer, py::handle growth_step, py::handle min_growth,
                       py::handle persist_every, bool fail_open, int utc_offset_minutes, py::handle store_timeout,
                       py::handle time_zone, py::handle store_pool_size, py::handle store_stream_maxlen) {
             Options o;
             o.store = to_text(store, "store");
             if (!currency.is_none()) o.currency = to_text(currency, "currency");
             if (!limits.is_none())
               for (auto l : limits) {
                 if (!py::isinstance<Limit>(l)) invalid("limits must be budget.Limit objects");
                 o.limits.push_back(l.cast<Limit>());
               }
             std::shared_ptr<const Pricer> pricer;
             if (!pricing.is_none()) {
               if (!py::isinstance<Pricer>(pricing)) invalid("pricing must be a budget.PricingEngine");
               pricer = pricing.cast<std::shared_ptr<Pricer>>();
             }
             o.pricer = pricer;
             if (!clock.is_none()) o.clock = clock.cast<std::shared_ptr<Clock>>();
             if (!default_ttl.is_none()) o.default_ttl = to_duration(default_ttl, "default_ttl");
             if (!buffer.is_none()) o.default_buffer_bp = to_bp(buffer, "buffer");
             if (!growth_step.is_none()) o.growth_step_bp = to_bp(growth_step, "growth_step");
             if (!min_growth.is_none()) o.min_growth = to_money(min_growth, "min_growth");
             if (!persist_every.is_none()) o.persist_every = to_money(persist_every, "persist_every");
             o.fail_open = fail_open;
             o.utc_offset_minutes = utc_offset_minutes;
             if (!time_zone.is_none()) o.time_zone = to_text(time_zone, "time_zone");
             if (!store_timeout.is_none()) o.store_options.timeout = to_duration(store_timeout, "store_timeout");
             // Node's storeOptions.poolSize / streamMaxlen (the Redis URL's pool= / maxlen= win).
             if (!store_pool_size.is_none()) {
               int64_t n = to_count(store_pool_size, "store_pool_size");
               if (n < 1 || n > 256) invalid("store_pool_size must be within [1, 256]");
               o.store_options.pool_size = static_cast<int>(n);
             }
             if (!store_stream_maxlen.is_none()) {
               o.store_options.stream_maxlen = to_count(store_stream_maxlen, "store_stream_maxlen");
               if (o.store_options.stream_maxlen < 0) invalid("store_stream_maxlen must not be negative");
             }
             auto pm = std::make_unique<PyManager>();
             pm->pricer = pricer;
             pm->m = nogil([&] { return std::make_shared<BudgetManager>(std::move(o)); });
             return pm;
           }),
           py::arg("store") = "sqlite:budget.db", py::kw_only(), py::arg("currency") = py::none(),
           py::arg("limits") = py::none(), py::arg("pricing") = py::none(), py::arg("clock") = py::none(),
           py::arg("default_ttl") = py::none(), py::arg("buffer") = py::none(), py::arg("growth_step") = py::none(),
           py::arg("min_growth") = py::none(), py::arg("persist_every") = py::none(), py::arg("fail_open") = false,
           py::arg("utc_offset_minutes") = 0, py::arg("store_timeout") = py::none(), py::arg("time_zone") = py::none(),
           py::arg("store_pool_size") = py::none(), py::arg("store_stream_maxlen") = py::none())
      .def("close", [](PyManager& self) {
        std::shared_ptr<BudgetManager> old = std::atomic_exchange(&self.m, std::shared_ptr<BudgetManager>());
        nogil([&] { old.reset(); });  // the store closes without the GIL
      })
      .def_property_readonly("closed", [](const PyManager& self) { return !std::atomic_load(&self.m); })
      .def_property_readonly("store_url", [](const PyManager& self) { return self.get()->options().store; })
      .def_property_readonly("currency", [](const PyManager& self) { return self.get()->options().currency; })
      .def_property_readonly("fail_open", [](const PyManager& self) { return self.get()->options().fail_open; })
      .def("now", [](const PyManager& self) { return time_out(self.get()->now()); })

      // limits
      .def("set_limit",
           [](PyManager& self, py::handle scope_or_limit, py::handle window, py::handle amount, py::handle metric,
              py::handle alerts) {
             Limit l;
             if (py::isinstance<Limit>(scope_or_limit)) {
               l = scope_or_limit.cast<Limit>();
             } else {
               if (window.is_none() || amount.is_none()) invalid("set_limit(scope, window, amount) or set_limit(Limit)");
               l.scope = to_text(scope_or_limit, "scope");
               l.window = Window::parse(to_text(window, "window"));
               l.metric = to_metric(metric);
               l.amount = to_amount(amount, l.metric, "limit amount");
               l.alert_thresholds_pct = to_alerts(alerts);
             }
             auto m = self.get();
             nogil([&] { m->set_limit(l); });
           },
           py::arg("scope"), py::arg("window") = py::none(), py::arg("amount") = py::none(), py::kw_only(),
           py::arg("metric") = "cost", py::arg("alerts") = py::tuple())
      .def("remove_limit",
           [](PyManager& self, py::handle scope, py::handle window, py::handle metric) {
             std::string s = to_text(scope, "scope");
             Window w = Window::parse(to_text(window, "window"));
             Metric mt = to_metric(metric);
             auto m = self.get();
             return nogil([&] { return m->remove_limit(s, mt, w); });
           },
           py::arg("scope"), py::arg("window"), py::kw_only(), py::arg("metric") = "cost")
      .def("limits", [](PyManager& self) {
        auto m = self.get();
        return nogil([&] { return m->limits(); });
      })

      // lifecycle
      .def("reserve",
           [](PyManager& self, py::handle subject, py::handle estimate, py::handle model, py::handle usage,
              py::handle tokens, py::handle request_id, py::handle buffer, py::handle ttl, py::handle provider,
              py::handle metadata, py::handle reason) {
             Subject s = to_subject(subject);
             auto e = to_cost<Estimate>(estimate, model, usage, tokens, "estimate");
             auto o = to_request(request_id, buffer, ttl, provider, metadata, reason);
             auto m = self.get();
             return nogil([&] { return m->reserve(s, e, o); });
           },
           py::arg("subject"), py::arg("estimate") = py::none(), py::kw_only(), py::arg("model") = py::none(),
           py::arg("usage") = py::none(), py::arg("tokens") = py::none(), py::arg("request_id") = py::none(),
           py::arg("buffer") = py::none(), py::arg("ttl") = py::none(), py::arg("provider") = py::none(),
           py::arg("metadata") = py::none(), py::arg("reason") = py::none())  // reason: as Node's options
      .def("check",
           [](PyManager& self, py::handle subject, py::handle estimate, py::handle model, py::handle usage,
              py::handle tokens) {
             Subject s = to_subject(subject);
             auto e = to_cost<Estimate>(estimate, model, usage, tokens, "estimate");
             auto m = self.get();
             return nogil([&] { return m->check(s, e); });
           },
           py::arg("subject"), py::arg("estimate") = py::none(), py::kw_only(), py::arg("model") = py::none(),
           py::arg("usage") = py::none(), py::arg("tokens") = py::none())
      .def("consume",
           [](PyManager& self, py::handle target, py::handle amount, py::handle tokens, py::handle usage,
              py::handle model) {
             // Nothing to consume is a mistake, not a free chunk (Node requires the amount too):
             // consume(reservation) was a silent Continue that metered nothing.
             if (amount.is_none() && usage.is_none() && tokens.is_none())
               invalid("consume needs an amount (0 for none), usage= or tokens=");
             Money amt;
             int64_t tk = tokens.is_none() ? 0 : to_count(tokens, "tokens");
             auto m = self.get();
             Reservation* res = py::isinstance<Reservation>(target) ? target.cast<Reservation*>() : nullptr;
             std::string id;
             if (!res) id = to_text(target, "reservation or request id");
             if (!usage.is_none()) {
               if (!amount.is_none()) invalid("consume: give an amount or a usage, not both");
               Usage u = to_usage(usage);
               std::string mdl = !model.is_none() ? to_text(model, "model") : (res ? res->model() : std::string());
               if (mdl.empty()) invalid("consume: a usage needs model=...");
               amt = price_usage(self, *m, mdl, u);
               if (tokens.is_none()) tk = u.total_tokens();
             } else if (!amount.is_none()) {
               amt = to_money(amount, "amount");
             }
             return nogil([&] { return res ? m->consume(*res, amt, tk) : m->consume(id, amt, tk); });
           },
           py::arg("reservation"), py::arg("amount") = py::none(), py::kw_only(), py::arg("tokens") = py::none(),
           py::arg("usage") = py::none(), py::arg("model") = py::none())
      .def("commit",
           [](PyManager& self, py::handle target, py::handle actual, py::handle model, py::handle usage,
              py::handle tokens, py::handle provider) {
             // No charge at all is a mistake, not a free call: commit(reservation) read as "commit
             // the hold" would silently charge nothing (a Hold's commit() charges what was consumed).
             if (actual.is_none() && usage.is_none() && tokens.is_none())
               invalid("commit needs the actual charge: an amount (0 charges nothing), usage= or tokens=");
             bool by_res = py::isinstance<Reservation>(target);
             auto c = to_cost<Charge>(actual, model, usage, tokens, "actual", !by_res);
             if (!provider.is_none()) c.provider = to_text(provider, "provider");
             auto m = self.get();
             if (by_res) {
               Reservation* res = target.cast<Reservation*>();
               if (c.usage && c.model.empty()) c.model = res->model();
               if (c.usage && c.model.empty()) invalid("actual: a usage needs model=...");
               return nogil([&] { return m->commit(*res, c); });
             }
             std::string id = to_text(target, "reservation or request id");
             return nogil([&] { return m->commit(id, c); });
           },
           py::arg("reservation"), py::arg("actual") = py::none(), py::kw_only(), py::arg("model") = py::none(),
           py::arg("usage") = py::none(), py::arg("tokens") = py::none(), py::arg("provider") = py::none())
      .def("release",
           [](PyManager& self, py::handle target) {
             auto m = self.get();
             if (py::isinstance<Reservation>(target)) {
               Reservation* res = target.cast<Reservation*>();
               return nogil([&] { return m->release(*res); });
             }
             std::string id = to_text(target, "reservation or request id");
             return nogil([&] { return m->release(id); });
           },
           py::arg("reservation"))
      .def("expire_holds", [](PyManager& self) {
        auto m = self.get();
        return nogil([&] { return m->expire_holds(); });
      })
      .def("record",
           [](PyManager& self, py::handle subject, py::handle actual, py::handle model, py::handle usage,
              py::handle tokens, py::handle provider, py::handle request_id, py::handle metadata, py::handle reason) {
             Subject s = to_subject(subject);
             auto c = to_cost<Charge>(actual, model, usage, tokens, "actual");
             if (!provider.is_none()) c.provider = to_text(provider, "provider");
             auto o = to_request(request_id, py::none(), py::none(), provider, metadata, reason);
             auto m = self.get();
             return nogil([&] { return m->record(s, c, o); });
           },
           py::arg("subject"), py::arg("actual") = py::none(), py::kw_only(), py::arg("model") = py::none(),
           py::arg("usage") = py::none(), py::arg("tokens") = py::none(), py::arg("provider") = py::none(),
           py::arg("request_id") = py::none(), py::arg("metadata") = py::none(), py::arg("reason") = py::none())
      .def("grant",
           [](PyManager& self, py::handle scope, py::handle amount, py::handle request_id, py::handle reason,
              py::handle metadata) {
             Scope sc = to_scope(scope);
             Money a = to_money(amount, "grant amount");
             auto o = to_request(request_id, py::none(), py::none(), py::none(), metadata, reason);
             auto m = self.get();
             nogil([&] { m->grant(sc, a, o); });
           },
           py::arg("scope"), py::arg("amount"), py::kw_only(), py::arg("request_id") = py::none(),
           py::arg("reason") = py::none(), py::arg("metadata") = py::none())
      .def("adjust",
           [](PyManager& self, py::handle subject, py::handle delta, py::handle request_id, py::handle reason,
              py::handle metadata) {
             Subject s = to_subject(subject);
             Money a = to_money(delta, "adjustment");
             auto o = to_request(request_id, py::none(), py::none(), py::none(), metadata, reason);
             auto m = self.get();
             nogil([&] { m->adjust(s, a, o); });
           },
           py::arg("subject"), py::arg("delta"), py::kw_only(), py::arg("request_id") = py::none(),
           py::arg("reason") = py::none(), py::arg("metadata") = py::none())
      .def("status",
           [](PyManager& self, py::handle scope) {
             Scope sc = to_scope(scope);
             auto m = self.get();
             return nogil([&] { return m->status(sc); });
           },
           py::arg("scope") = "global")  // as Node's status()

      // observers
      // The registration primitives: each call adds an observer to the engine, for good.
      // budget.BudgetManager.on_alert / on_denial register one dispatcher per kind and keep the
      // callbacks themselves (added, removable) where the garbage collector sees them.
      .def("_on_alert",
           [](PyManager& self, py::object callback) {
             if (!PyCallable_Check(callback.ptr())) invalid("on_alert needs a callable");
             PyFn fn = hold_callable(std::move(callback));
             self.get()->on_alert([fn](const Alert& a) {
               py::gil_scoped_acquire gil;
               try {
                 (*fn)(a);
               } catch (py::error_already_set& e) {
                 e.discard_as_unraisable("budget alert callback");
#if defined(__GLIBCXX__)
               } catch (abi::__forced_unwind&) {
                 throw;  // the interpreter ends this daemon thread at exit
#endif
               } catch (...) {
               }
             });
           },
           py::arg("callback"))
      .def("_on_denial",
           [](PyManager& self, py::object callback) {
             if (!PyCallable_Check(callback.ptr())) invalid("on_denial needs a callable");
             PyFn fn = hold_callable(std::move(callback));
             self.get()->on_denial([fn](const Denial& d, const Subject& s) {
               py::gil_scoped_acquire gil;
               try {
                 (*fn)(d, s);
               } catch (py::error_already_set& e) {
                 e.discard_as_unraisable("budget denial callback");
#if defined(__GLIBCXX__)
               } catch (abi::__forced_unwind&) {
                 throw;  // the interpreter ends this daemon thread at exit
#endif
               } catch (...) {
               }
             });
           },
           py::arg("callback"))

      // ledger
      .def("events",
           [make_query](PyManager& self, const py::kwargs& kw) {
             auto q = make_query("events", kw, nullptr);
             auto m = self.get();
             return nogil([&] { return m->events(q); });
           },
           "events(*, since=None, until=None, scope=None, request_id=None, type=None, after_seq=0, limit=None) -> list[LedgerEvent]")
      .def("export_jsonl",
           [make_query](PyManager& self, const py::kwargs& kw) {
             auto q = make_query("export_jsonl", kw, nullptr);
             auto m = self.get();
             std::ostringstream out;
             nogil([&] { m->export_jsonl(out, q); });
             return out.str();
           },
           "export_jsonl(*, since=None, until=None, scope=None, request_id=None, type=None, after_seq=0, limit=None) -> str")
      .def("export_csv",
           [make_query](PyManager& self, const py::kwargs& kw) {
             auto q = make_query("export_csv", kw, nullptr);
             auto m = self.get();
             std::ostringstream out;
             nogil([&] { m->export_csv(out, q); });
             return out.str();
           },
           "export_csv(*, since=None, until=None, scope=None, request_id=None, type=None, after_seq=0, limit=None) -> str")
      .def("aggregate",
           [make_query](PyManager& self, const py::kwargs& kw) {
             GroupBy g;  // by scope unless told otherwise (C++'s default; Node's too)
             auto q = make_query("aggregate", kw, &g);
             auto m = self.get();
             return nogil([&] { return m->aggregate(q, g); });
           },
           "aggregate(*, since=None, until=None, scope=None, request_id=None, type=None, after_seq=0, limit=None, by_scope=True, by_model=False, by_day=False) -> list[AggregateRow]")
      .def("verify", [](PyManager& self) {
        auto m = self.get();
        return nogil([&] { return m->verify(); });
      })
      .def("metrics_text", [](PyManager& self) {
        auto m = self.get();
        return nogil([&] { return m->metrics_text(); });
      })
      .def("_bench_cpp",
           [](PyManager& self, const std::string& op, py::handle subject, py::handle amount, int64_t n) {
             return bench_cpp(self, op, to_subject(subject), to_money(amount), n);
           },
           py::arg("op"), py::arg("subject"), py::arg("amount"), py::arg("n"));
}
