// libbudget — Money: an exact integer count of nanos (1e-9) of the budget currency.
//
// Never a float. Range +/- 9.2 billion currency units. Every arithmetic operation is
// checked: overflow throws budget::OverflowError, it never wraps. Values are immutable,
// trivially copyable and safe to share between threads.
#pragma once

#include <budget/export.hpp>

#include <compare>
#include <cstdint>
#include <string>
#include <string_view>

namespace budget {

class BUDGET_API Money {
 public:
  static constexpr int64_t kNanosPerUnit = 1'000'000'000;

  constexpr Money() noexcept = default;
  static constexpr Money from_nanos(int64_t nanos) noexcept { return Money(nanos); }
  // Whole currency units (checked).
  static Money from_units(int64_t units);
  // Exact decimal text: "12.50", "-3", "0.000000150", "+1e-3" is NOT accepted (no exponent).
  // At most 9 fractional digits (more are accepted only when they are zeros).
  // Throws InvalidArgumentError on malformed text, OverflowError when out of range.
  static Money parse(std::string_view text);

  constexpr int64_t nanos() const noexcept { return nanos_; }
  constexpr bool is_zero() const noexcept { return nanos_ == 0; }
  constexpr bool is_negative() const noexcept { return nanos_ < 0; }

  // Decimal text with at least two fractional digits and no trailing zeros beyond them:
  // 12.5 -> "12.50", 150 nanos -> "0.00000015", -3 -> "-3.00".
  std::string to_string() const;

  Money operator+(Money o) const;
  Money operator-(Money o) const;
  Money operator-() const;
  Money operator*(int64_t k) const;
  Money& operator+=(Money o) { return *this = *this + o; }
  Money& operator-=(Money o) { return *this = *this - o; }
  // Multiplies by basis points (10000 = x1.0, 12000 = x1.2), rounding up (away from zero
  // for positive values) so a buffered hold is never smaller than the exact product.
  Money mul_bp(uint32_t basis_points) const;

  constexpr auto operator<=>(const Money&) const noexcept = default;

 private:
  constexpr explicit Money(int64_t n) noexcept : nanos_(n) {}
  int64_t nanos_ = 0;
};

// Checked int64 helpers shared by the engine and the stores (throw OverflowError). Inline:
// they sit on every hot path; only the throw is out of line.
[[noreturn]] BUDGET_API void throw_overflow(const char* what);
inline int64_t checked_add(int64_t a, int64_t b) {
  int64_t r;
  if (__builtin_add_overflow(a, b, &r)) [[unlikely]] throw_overflow("integer overflow in addition");
  return r;
}
inline int64_t checked_sub(int64_t a, int64_t b) {
  int64_t r;
  if (__builtin_sub_overflow(a, b, &r)) [[unlikely]] throw_overflow("integer overflow in subtraction");
  return r;
}
inline int64_t checked_mul(int64_t a, int64_t b) {
  int64_t r;
  if (__builtin_mul_overflow(a, b, &r)) [[unlikely]] throw_overflow("integer overflow in multiplication");
  return r;
}

}  // namespace budget
