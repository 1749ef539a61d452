// libbudget C API — shared glue: error capture, result blocks, conversions.
// Private to capi/*.cpp; uses only the public headers.
#pragma once

#include <budget/budget.h>
#include <budget/budget.hpp>

#include <cstddef>
#include <cstdint>
#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <new>
#include <string>
#include <string_view>
#include <vector>

namespace budget::capi {

// ---- errors ------------------------------------------------------------------------------

void set_error(budget_status status, const char* message) noexcept;
void clear_error() noexcept;

// Runs f(); maps every exception to a status and the thread's message.
template <class F>
budget_status guard(F&& f) noexcept {
  try {
    f();
    clear_error();
    return BUDGET_OK;
  } catch (const Error& e) {
    auto st = static_cast<budget_status>(static_cast<int>(e.code()));
    set_error(st, e.what());
    return st;
  } catch (const std::bad_alloc&) {
    set_error(BUDGET_ERR_INTERNAL, "out of memory");
  } catch (const std::exception& e) {
    set_error(BUDGET_ERR_INTERNAL, e.what());
  } catch (...) {
    set_error(BUDGET_ERR_INTERNAL, "unknown exception");
  }
  return BUDGET_ERR_INTERNAL;
}

[[noreturn]] inline void invalid(const std::string& what) { throw InvalidArgumentError(what); }

template <class T>
T& need(T* p, const char* name) {
  if (!p) invalid(std::string(name) + " is NULL");
  return *p;
}
inline std::string_view need_str(const char* s, const char* name) {
  if (!s) invalid(std::string(name) + " is NULL");
  return s;
}
inline std::string_view opt_str(const char* s) { return s ? std::string_view(s) : std::string_view(); }
inline std::string_view bytes(const char* p, size_t len, const char* name) {
  if (!p && len) invalid(std::string(name) + " is NULL");
  return p ? std::string_view(p, len) : std::string_view();
}

// The value of a C enum as the caller passed it. C lets any int through an enum type; in C++
// loading an out-of-range value as the enum is undefined, so the glue reads the bits.
template <class E>
int raw(const E& e) noexcept {
  static_assert(sizeof(E) == sizeof(int), "C enums are int-sized");
  int v;
  std::memcpy(&v, &e, sizeof v);
  return v;
}

// A caller-filled struct's version: 1..current.
inline void check_version(unsigned int v, unsigned int current, const char* name) {
  if (v == 0 || v > current)
    invalid(std::string(name) + ": unsupported struct version " + std::to_string(v) +
            " (initialise it with its _INIT macro)");
}

// ---- result blocks -------------------------------------------------------------------------
//
// Everything handed out is one block: a header, then the C struct (or string) the caller
// sees. The header points to a Pool that owns the nested strings, structs and arrays.
// budget_free() finds the header just before the pointer.

class Pool {
 public:
  Pool() = default;
  Pool(const Pool&) = delete;
  Pool& operator=(const Pool&) = delete;
  ~Pool() {
    for (void* p : blocks_) std::free(p);
  }
  void* raw(size_t n) {
    // Room first (push_back below then cannot throw and leak the block), geometrically: one
    // more each time reallocated on every block (a list of 3,000 limits: 3,000 copies).
    if (blocks_.size() == blocks_.capacity()) blocks_.reserve(std::max<size_t>(16, blocks_.capacity() * 2));
    void* p = std::calloc(1, n ? n : 1);
    if (!p) throw std::bad_alloc();
    blocks_.push_back(p);
    return p;
  }
  const char* str(std::string_view s) {
    auto* p = static_cast<char*>(raw(s.size() + 1));
    if (!s.empty()) std::memcpy(p, s.data(), s.size());
    return p;
  }
  template <class T>
  T* obj() {
    return new (raw(sizeof(T))) T{};
  }
  const char* const* strs(const std::vector<std::string>& v) {
    auto** a = static_cast<const char**>(raw(sizeof(char*) * v.size()));
    for (size_t i = 0; i < v.size(); ++i) a[i] = str(v[i]);
    return a;
  }
  template <class T>
  T** ptrs(size_t n) {
    return static_cast<T**>(raw(sizeof(T*) * n));
  }

 private:
  std::vector<void*> blocks_;
};

struct alignas(std::max_align_t) BlockHeader {
  uint64_t magic;
  Pool* pool;  // may be null
};
constexpr uint64_t kBlockMagic = 0x62756467'6574'0001ULL;  // "budget" v1

void* new_block(size_t payload, Pool* pool);  // takes ownership of pool

// A result: a C struct T plus the pool for what it points to. release() hands it out.
template <class T>
class Result {
 public:
  Result() : pool_(new Pool) {}
  ~Result() {
    delete pool_;
  }
  Result(const Result&) = delete;
  Result& operator=(const Result&) = delete;
  Pool& pool() { return *pool_; }
  T& c() { return value_; }
  T* release() {
    void* p = new_block(sizeof(T), pool_);  // on throw, pool_ stays ours
    pool_ = nullptr;
    return new (p) T(value_);
  }

 private:
  Pool* pool_;
  T value_{};
};

char* new_string(std::string_view s);  // a block holding a NUL-terminated copy

template <class T>
void reset(T** out) {
  if (out) *out = nullptr;
}

// ---- conversions ---------------------------------------------------------------------------

ServiceTier to_tier(int t);  // a budget_service_tier, read with raw()
Usage to_usage(const budget_usage& u);
void from_usage(budget_usage& out, const Usage& u);  // respects out.version
Subject to_subject(const char* const* scopes, size_t count);
Metric to_metric(int m);  // a budget_metric, read with raw()
RequestOptions to_request_options(const budget_request_options* o);
const budget_denial* make_denial(Pool& pool, const Denial& d);
const budget_line_item* const* make_items(Pool& pool, const std::vector<LineItem>& items);
inline int64_t ms(Timestamp t) { return to_millis(t); }

}  // namespace budget::capi

// The handles (global namespace: they complete the C API's opaque types).
struct budget_pricing {
  std::shared_ptr<budget::PricingEngine> rep;
};
