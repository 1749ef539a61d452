// Known answers (FIPS 180-4 examples and lengths around the padding boundaries) for both
// SHA-256 implementations: the portable one and the one sha256() picks on this CPU.
#include <doctest/doctest.h>

#include <cstdint>
#include <random>
#include <string>

#include "sha256.hpp"

using namespace budget::detail;

namespace {
std::string hex(const std::array<uint8_t, 32>& d) {
  static const char* digits = "0123456789abcdef";
  std::string s;
  for (uint8_t b : d) {
    s += digits[b >> 4];
    s += digits[b & 15];
  }
  return s;
}
}  // namespace

TEST_CASE("sha256: FIPS 180-4 known answers, portable and selected implementation") {
  struct Case {
    std::string in, want;
  };
  const Case cases[] = {
      {"", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"},
      {"abc", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"},
      {"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq",
       "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"},
      {"abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmnhijklmnoijklmnopjklmnopqklmnopqrlmnopqrsmnopqrstnopqrstu",
       "cf5b16a778af8380036ce59e7b0492370b249b11e8f07a51afac45037afee9d1"},
      {std::string(1'000'000, 'a'), "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0"},
  };
  for (const auto& c : cases) {
    CAPTURE(c.in.size());
    CHECK(hex(sha256_portable(c.in)) == c.want);
    CHECK(hex(sha256(c.in)) == c.want);
    CHECK(sha256_hex(c.in) == c.want);
  }
  const std::string how = sha256_accelerated() ? "yes (SHA-NI)" : "no";
  MESSAGE("SHA-256 accelerated on this CPU: " << how);
}

TEST_CASE("sha256: both implementations agree on every length 0..300 and random data") {
  std::mt19937_64 rng(42);
  for (size_t n = 0; n <= 300; ++n) {
    std::string s(n, '\0');
    for (auto& ch : s) ch = static_cast<char>(rng());
    CAPTURE(n);
    REQUIRE(sha256(s) == sha256_portable(s));
  }
}
