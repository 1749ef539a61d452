#include "pricing/decimal.hpp"

#include <algorithm>

namespace budget::detail {

std::optional<int128> mul_div_ceil(int128 a, int128 b, int128 c) {
  // The 256-bit product hi:lo from 64-bit limbs.
  const uint128 ua = static_cast<uint128>(a), ub = static_cast<uint128>(b), uc = static_cast<uint128>(c);
  const uint128 m64 = ~uint64_t{0};
  const uint128 a0 = ua & m64, a1 = ua >> 64, b0 = ub & m64, b1 = ub >> 64;
  const uint128 p00 = a0 * b0, p01 = a0 * b1, p10 = a1 * b0, p11 = a1 * b1;
  const uint128 mid = (p00 >> 64) + (p01 & m64) + (p10 & m64);
  uint128 lo = (p00 & m64) | (mid << 64);
  uint128 hi = p11 + (p01 >> 64) + (p10 >> 64) + (mid >> 64);
  // Long division, one bit at a time (c < 2^127, so the remainder never needs a 129th bit).
  uint128 q = 0, r = 0;
  for (int i = 255; i >= 0; --i) {
    const uint128 bit = i >= 128 ? (hi >> (i - 128)) & 1 : (lo >> i) & 1;
    r = (r << 1) | bit;
    const bool take = r >= uc;
    if (take) r -= uc;
    if (i >= 127 && take) return std::nullopt;  // the quotient needs bit 127 or more
    if (take) q |= uint128{1} << i;
  }
  if (r != 0) {
    if (q == (~uint128{0} >> 1)) return std::nullopt;
    ++q;
  }
  return static_cast<int128>(q);
}

int128 pow10_128(int n) {
  int128 r = 1;
  for (int i = 0; i < n; ++i) r *= 10;
  return r;
}

namespace {

struct Parsed {
  bool negative = false;
  std::string digits;  // significant digits, no leading zeros (may be empty = zero)
  int64_t exponent = 0;  // value = digits * 10^exponent
};

bool parse_number_text(std::string_view s, Parsed& out, std::string* why) {
  auto fail = [&](const char* m) {
    if (why) *why = m;
    return false;
  };
  size_t i = 0;
  if (i < s.size() && (s[i] == '-' || s[i] == '+')) {
    out.negative = s[i] == '-';
    ++i;
  }
  size_t int_digits = 0, frac_digits = 0;
  for (; i < s.size() && s[i] >= '0' && s[i] <= '9'; ++i, ++int_digits) {
    if (!(out.digits.empty() && s[i] == '0')) out.digits.push_back(s[i]);
    if (out.digits.size() > 80) return fail("too many digits");
  }
  int64_t frac_shift = 0;
  if (i < s.size() && s[i] == '.') {
    ++i;
    for (; i < s.size() && s[i] >= '0' && s[i] <= '9'; ++i, ++frac_digits) {
      if (!(out.digits.empty() && s[i] == '0')) out.digits.push_back(s[i]);
      ++frac_shift;
      if (out.digits.size() > 80 || frac_shift > 400) return fail("too many digits");
    }
  }
  if (int_digits + frac_digits == 0) return fail("no digits");
  int64_t exp = 0;
  if (i < s.size() && (s[i] == 'e' || s[i] == 'E')) {
    ++i;
    bool eneg = false;
    if (i < s.size() && (s[i] == '-' || s[i] == '+')) {
      eneg = s[i] == '-';
      ++i;
    }
    size_t ed = 0;
    for (; i < s.size() && s[i] >= '0' && s[i] <= '9'; ++i, ++ed) {
      if (exp < 100000) exp = exp * 10 + (s[i] - '0');
    }
    if (ed == 0) return fail("malformed exponent");
    if (eneg) exp = -exp;
  }
  if (i != s.size()) return fail("unexpected character");
  // Drop trailing zeros of the significand into the exponent.
  int64_t e = exp - frac_shift;
  while (!out.digits.empty() && out.digits.back() == '0') {
    out.digits.pop_back();
    ++e;
  }
  out.exponent = e;
  return true;
}

// digits * 10^(exponent + scale) as int128 when integral and below `limit`.
std::optional<int128> to_scaled(const Parsed& p, int scale, int128 limit, std::string* why,
                                const char* precision_msg) {
  if (p.digits.empty()) return int128{0};
  int64_t shift = p.exponent + scale;
  if (shift < 0) {
    if (why) *why = precision_msg;
    return std::nullopt;
  }
  if (static_cast<int64_t>(p.digits.size()) + shift > 37) {
    if (why) *why = "too large";
    return std::nullopt;
  }
  int128 v = 0;
  for (char c : p.digits) v = v * 10 + (c - '0');
  v *= pow10_128(static_cast<int>(shift));
  if (v > limit) {
    if (why) *why = "too large";
    return std::nullopt;
  }
  return p.negative ? -v : v;
}

}  // namespace

std::optional<Price> parse_price(std::string_view text, std::string* why) {
  Parsed p;
  if (!parse_number_text(text, p, why)) return std::nullopt;
  if (p.negative && !p.digits.empty()) {
    if (why) *why = "negative price";
    return std::nullopt;
  }
  p.negative = false;
  return to_scaled(p, kPriceScale, kMaxPrice, why,
                   "not exactly representable: needs more than 24 decimal places");
}

std::optional<int64_t> parse_scaled(std::string_view text, int scale, std::string* why) {
  Parsed p;
  if (!parse_number_text(text, p, why)) return std::nullopt;
  auto v = to_scaled(p, scale, static_cast<int128>(INT64_MAX), why,
                     "too many decimal places");
  if (!v) return std::nullopt;
  return static_cast<int64_t>(*v);
}

std::string format_scaled(int128 value, int scale) {
  bool neg = value < 0;
  uint128 mag = neg ? static_cast<uint128>(-(value + 1)) + 1 : static_cast<uint128>(value);
  std::string digits;
  if (mag == 0) digits = "0";
  while (mag > 0) {
    digits.push_back(static_cast<char>('0' + static_cast<int>(mag % 10)));
    mag /= 10;
  }
  std::reverse(digits.begin(), digits.end());
  std::string out;
  if (scale > 0) {
    if (static_cast<int>(digits.size()) <= scale)
      digits.insert(0, static_cast<size_t>(scale) - digits.size() + 1, '0');
    std::string ip = digits.substr(0, digits.size() - static_cast<size_t>(scale));
    std::string fp = digits.substr(digits.size() - static_cast<size_t>(scale));
    while (!fp.empty() && fp.back() == '0') fp.pop_back();
    out = ip;
    if (!fp.empty()) out += "." + fp;
  } else {
    out = digits;
  }
  if (neg && out != "0") out.insert(0, "-");
  return out;
}

}  // namespace budget::detail
