#include <budget/error.hpp>
#include <budget/money.hpp>

#include <string>

#include "int128.hpp"

namespace budget {

void throw_overflow(const char* what) { throw OverflowError(what); }

Money Money::from_units(int64_t units) { return Money(checked_mul(units, kNanosPerUnit)); }

Money Money::parse(std::string_view text) {
  auto bad = [&](const char* why) {
    return InvalidArgumentError("invalid money amount '" + std::string(text.substr(0, 64)) +
                                "': " + why);
  };
  std::string_view s = text;
  if (s.empty()) throw bad("empty");
  bool neg = false;
  if (s.front() == '-' || s.front() == '+') {
    neg = s.front() == '-';
    s.remove_prefix(1);
  }
  if (s.empty()) throw bad("no digits");
  // Accumulate as a negative number so INT64_MIN nanos is representable.
  detail::int128 whole = 0;
  size_t i = 0, int_digits = 0;
  for (; i < s.size() && s[i] >= '0' && s[i] <= '9'; ++i, ++int_digits) {
    whole = whole * 10 + (s[i] - '0');
    if (whole > static_cast<detail::int128>(INT64_MAX)) throw OverflowError("money amount out of range: " + std::string(text.substr(0, 64)));
  }
  int64_t frac = 0;
  size_t frac_digits = 0;
  if (i < s.size() && s[i] == '.') {
    ++i;
    for (; i < s.size() && s[i] >= '0' && s[i] <= '9'; ++i, ++frac_digits) {
      if (frac_digits < 9) {
        frac = frac * 10 + (s[i] - '0');
      } else if (s[i] != '0') {
        throw bad("more than 9 fractional digits (money is exact to the nano)");
      }
    }
  }
  if (i != s.size()) throw bad("unexpected character");
  if (int_digits == 0 && frac_digits == 0) throw bad("no digits");
  for (size_t k = frac_digits; k < 9; ++k) frac *= 10;
  detail::int128 total = whole * kNanosPerUnit + frac;
  if (neg) total = -total;
  if (total > INT64_MAX || total < INT64_MIN)
    throw OverflowError("money amount out of range: " + std::string(text.substr(0, 64)));
  return Money(static_cast<int64_t>(total));
}

std::string Money::to_string() const {
  // Work in unsigned to handle INT64_MIN.
  bool neg = nanos_ < 0;
  uint64_t mag = neg ? (~static_cast<uint64_t>(nanos_) + 1) : static_cast<uint64_t>(nanos_);
  uint64_t whole = mag / kNanosPerUnit, frac = mag % kNanosPerUnit;
  std::string f = std::to_string(frac);
  f.insert(0, 9 - f.size(), '0');
  while (f.size() > 2 && f.back() == '0') f.pop_back();
  std::string out = neg ? "-" : "";
  out += std::to_string(whole);
  out += '.';
  out += f;
  return out;
}

Money Money::operator+(Money o) const { return Money(checked_add(nanos_, o.nanos_)); }
Money Money::operator-(Money o) const { return Money(checked_sub(nanos_, o.nanos_)); }
Money Money::operator-() const { return Money(checked_sub(0, nanos_)); }
Money Money::operator*(int64_t k) const { return Money(checked_mul(nanos_, k)); }

Money Money::mul_bp(uint32_t bp) const {
  detail::int128 p = static_cast<detail::int128>(nanos_) * bp;
  detail::int128 q = p / 10000;
  if (p % 10000 != 0 && p > 0) q += 1;  // round up: a hold is never below the exact product
  if (q > INT64_MAX || q < INT64_MIN) throw OverflowError("money amount overflow in buffer multiplication");
  return Money(static_cast<int64_t>(q));
}

}  // namespace budget
