// mul_div_ceil: ceil(a * b / c) through a 256-bit product (the service-tier price ratio of the
// pricing table). Checked against a product and comparison written here independently, in
// 32-bit limbs: for every case, c * (q - 1) < a * b <= c * q, or, when it answers "too big",
// a * b > c * (2^127 - 1).
#include <doctest/doctest.h>

#include <array>
#include <random>

#include "int128.hpp"
#include "pricing/decimal.hpp"

using namespace budget::detail;

namespace {

using Wide = std::array<uint32_t, 8>;  // little-endian limbs of a 256-bit number

Wide product(uint128 x, uint128 y) {
  std::array<uint32_t, 4> a{}, b{};
  for (int i = 0; i < 4; ++i) {
    a[i] = static_cast<uint32_t>(x >> (32 * i));
    b[i] = static_cast<uint32_t>(y >> (32 * i));
  }
  Wide out{};
  for (int i = 0; i < 4; ++i) {
    uint64_t carry = 0;
    for (int j = 0; j < 4; ++j) {
      uint64_t t = uint64_t{a[i]} * b[j] + out[i + j] + carry;
      out[i + j] = static_cast<uint32_t>(t);
      carry = t >> 32;
    }
    for (int k = i + 4; carry != 0 && k < 8; ++k) {
      uint64_t t = uint64_t{out[k]} + carry;
      out[k] = static_cast<uint32_t>(t);
      carry = t >> 32;
    }
  }
  return out;
}

int compare(const Wide& x, const Wide& y) {
  for (int i = 7; i >= 0; --i)
    if (x[i] != y[i]) return x[i] < y[i] ? -1 : 1;
  return 0;
}

const int128 kMax = static_cast<int128>(~uint128{0} >> 1);

// The defining property of the answer of mul_div_ceil(a, b, c).
void check(int128 a, int128 b, int128 c) {
  CAPTURE(static_cast<double>(a));
  CAPTURE(static_cast<double>(b));
  CAPTURE(static_cast<double>(c));
  const Wide ab = product(static_cast<uint128>(a), static_cast<uint128>(b));
  const auto q = mul_div_ceil(a, b, c);
  if (!q) {
    CHECK(compare(ab, product(static_cast<uint128>(c), static_cast<uint128>(kMax))) > 0);
    return;
  }
  REQUIRE(*q >= 0);
  CHECK(compare(ab, product(static_cast<uint128>(c), static_cast<uint128>(*q))) <= 0);
  if (*q > 0) CHECK(compare(product(static_cast<uint128>(c), static_cast<uint128>(*q - 1)), ab) < 0);
}

int128 pow2(int n) { return static_cast<int128>(uint128{1} << n); }

}  // namespace

TEST_CASE("mul_div_ceil: known answers, below and beyond a 128-bit product") {
  CHECK(mul_div_ceil(0, 5, 3) == int128{0});
  CHECK(mul_div_ceil(6, 5, 3) == int128{10});
  CHECK(mul_div_ceil(7, 5, 3) == int128{12});  // 35 / 3 = 11.67, rounded up
  CHECK(mul_div_ceil(1, 1, kMax) == int128{1});
  // Products of 200 bits: exact when c divides them, rounded up by one when not.
  CHECK(mul_div_ceil(pow2(100), pow2(100), pow2(80)) == pow2(120));
  CHECK(mul_div_ceil(pow2(100) + 1, pow2(100), pow2(100)) == pow2(100) + 1);
  CHECK(mul_div_ceil(pow2(100) + 1, pow2(100), pow2(100) + 1) == pow2(100));
  CHECK(mul_div_ceil(pow2(100) + 1, pow2(100) - 1, pow2(100)) == pow2(100));
  CHECK(mul_div_ceil(kMax, kMax, kMax) == kMax);
  // The answer does not fit int128: refused, not wrapped.
  CHECK_FALSE(mul_div_ceil(pow2(100), pow2(100), 1).has_value());
  CHECK_FALSE(mul_div_ceil(kMax, 2, 1).has_value());
  CHECK_FALSE(mul_div_ceil(kMax, kMax, kMax - 1).has_value());
  CHECK(mul_div_ceil(pow2(126), 2, 2) == pow2(126));
  CHECK_FALSE(mul_div_ceil(pow2(126), 2, 1).has_value());
  // The tier-ratio shape (prices at 1e-24: ~1e12..1e20 per token), where int128 overflowed.
  const int128 e24 = static_cast<int128>(1'000'000'000'000) * 1'000'000'000'000;
  CHECK(mul_div_ceil(5 * e24 / 100'000, 25 * e24 / 1'000'000, 125 * e24 / 10'000'000) == e24 / 10'000);
}

TEST_CASE("mul_div_ceil: random operands of every size satisfy c*(q-1) < a*b <= c*q") {
  std::mt19937_64 rng(20261203);
  auto draw = [&](bool nonzero) {
    int bits = static_cast<int>(rng() % 127) + 1;  // 1..127 bits
    uint128 v = (static_cast<uint128>(rng()) << 64) | rng();
    v &= (uint128{1} << bits) - 1;
    if (nonzero && v == 0) v = 1;
    return static_cast<int128>(v);
  };
  for (int i = 0; i < 20'000; ++i) check(draw(false), draw(false), draw(true));
}
