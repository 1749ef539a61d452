#include "pricing/decimal.hpp"

#include <algorithm>

namespace budget::detail {

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
