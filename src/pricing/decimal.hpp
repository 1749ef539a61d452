// Exact decimal prices (private). A Price is an integer count of 1e-24 currency units.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "int128.hpp"

namespace budget::detail {

using Price = int128;
inline constexpr int kPriceScale = 24;  // decimal places
// Largest accepted unit price: 1e12 currency units per unit (keeps products in int128 range
// checks simple and rejects nonsense).
inline constexpr Price kMaxPrice = static_cast<Price>(1'000'000'000'000'000'000LL) *
                                   static_cast<Price>(1'000'000'000'000'000'000LL);  // 1e36

// Parses a JSON-number-like decimal ("5.46875e-07", "0", "12", "1E+2") exactly. On failure
// returns std::nullopt and sets *why (not representable at 1e-24, negative, malformed, too
// large).
std::optional<Price> parse_price(std::string_view text, std::string* why);

// Parses a decimal text with at most `scale` fractional digits (after exponent) into an
// integer scaled by 10^scale; accepts a sign. Used for percents (scale 4 -> ppm of 100).
std::optional<int64_t> parse_scaled(std::string_view text, int scale, std::string* why);

// Decimal text of value / 10^scale without trailing zeros: "0.0000025", "3", "-0.5".
std::string format_scaled(int128 value, int scale);

// 10^n for 0 <= n <= 38.
int128 pow10_128(int n);

// ceil(a * b / c) for a, b >= 0 and c > 0, exact through a 256-bit product; std::nullopt when
// the result exceeds int128. For derived prices (a tier's ratio), not the cost path.
std::optional<int128> mul_div_ceil(int128 a, int128 b, int128 c);

// ceil(a / b) for b > 0.
inline int128 ceil_div(int128 a, int128 b) {
  if (a >= 0) {  // the cost path: one unsigned division (fast path for a 64-bit divisor)
    uint128 ua = static_cast<uint128>(a), ub = static_cast<uint128>(b);
    uint128 q = ua / ub;
    if (q * ub != ua) ++q;
    return static_cast<int128>(q);
  }
  return a / b;  // truncation toward zero is the ceiling for a negative quotient
}

}  // namespace budget::detail
