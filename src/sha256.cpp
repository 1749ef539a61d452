#include "sha256.hpp"

#include <cstring>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <cpuid.h>
#include <immintrin.h>
#define BUDGET_SHA_NI 1
#endif

namespace budget::detail {
namespace {
constexpr uint32_t K[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2};

inline uint32_t rotr(uint32_t x, int n) { return (x >> n) | (x << (32 - n)); }

void block_portable(uint32_t h[8], const uint8_t* p) {
  uint32_t w[64];
  for (int i = 0; i < 16; ++i)
    w[i] = uint32_t(p[4 * i]) << 24 | uint32_t(p[4 * i + 1]) << 16 | uint32_t(p[4 * i + 2]) << 8 | p[4 * i + 3];
  for (int i = 16; i < 64; ++i) {
    uint32_t s0 = rotr(w[i - 15], 7) ^ rotr(w[i - 15], 18) ^ (w[i - 15] >> 3);
    uint32_t s1 = rotr(w[i - 2], 17) ^ rotr(w[i - 2], 19) ^ (w[i - 2] >> 10);
    w[i] = w[i - 16] + s0 + w[i - 7] + s1;
  }
  uint32_t a = h[0], b = h[1], c = h[2], d = h[3], e = h[4], f = h[5], g = h[6], hh = h[7];
  for (int i = 0; i < 64; ++i) {
    uint32_t t1 = hh + (rotr(e, 6) ^ rotr(e, 11) ^ rotr(e, 25)) + ((e & f) ^ (~e & g)) + K[i] + w[i];
    uint32_t t2 = (rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
    hh = g; g = f; f = e; e = d + t1; d = c; c = b; b = a; a = t1 + t2;
  }
  h[0] += a; h[1] += b; h[2] += c; h[3] += d; h[4] += e; h[5] += f; h[6] += g; h[7] += hh;
}

#ifdef BUDGET_SHA_NI
// The same compression function with the x86 SHA extensions (SHA-NI: Intel since Ice Lake /
// Goldmont, AMD since Zen), ~5-8x faster. The state is kept as the two halves the
// instructions want: ABEF and CDGH. Each group of 4 rounds adds K to 4 message words and runs
// sha256rnds2 twice (2 rounds each); words 16..63 come from sha256msg1/msg2 over the previous 16.
__attribute__((target("sha,sse4.1,ssse3"))) void block_shani(uint32_t h[8], const uint8_t* p) {
  const __m128i bswap = _mm_set_epi64x(0x0c0d0e0f08090a0bLL, 0x0405060700010203LL);
  __m128i abcd = _mm_loadu_si128(reinterpret_cast<const __m128i*>(h));
  __m128i efgh = _mm_loadu_si128(reinterpret_cast<const __m128i*>(h + 4));
  abcd = _mm_shuffle_epi32(abcd, 0xB1);                 // b a d c
  efgh = _mm_shuffle_epi32(efgh, 0x1B);                 // h g f e
  __m128i abef = _mm_alignr_epi8(abcd, efgh, 8);        // f e b a
  __m128i cdgh = _mm_blend_epi16(efgh, abcd, 0xF0);     // h g d c
  const __m128i abef0 = abef, cdgh0 = cdgh;
  __m128i w[4];
  for (int g = 0; g < 16; ++g) {
    __m128i& x = w[g & 3];
    if (g < 4) {
      x = _mm_shuffle_epi8(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 16 * g)), bswap);
    } else {
      const __m128i& x1 = w[(g + 1) & 3];
      const __m128i& x2 = w[(g + 2) & 3];
      const __m128i& x3 = w[(g + 3) & 3];
      x = _mm_sha256msg2_epu32(_mm_add_epi32(_mm_sha256msg1_epu32(x, x1), _mm_alignr_epi8(x3, x2, 4)), x3);
    }
    __m128i m = _mm_add_epi32(x, _mm_loadu_si128(reinterpret_cast<const __m128i*>(K + 4 * g)));
    cdgh = _mm_sha256rnds2_epu32(cdgh, abef, m);
    abef = _mm_sha256rnds2_epu32(abef, cdgh, _mm_shuffle_epi32(m, 0x0E));
  }
  abef = _mm_add_epi32(abef, abef0);
  cdgh = _mm_add_epi32(cdgh, cdgh0);
  __m128i feba = _mm_shuffle_epi32(abef, 0x1B);
  __m128i dchg = _mm_shuffle_epi32(cdgh, 0xB1);
  _mm_storeu_si128(reinterpret_cast<__m128i*>(h), _mm_blend_epi16(feba, dchg, 0xF0));   // a b c d
  _mm_storeu_si128(reinterpret_cast<__m128i*>(h + 4), _mm_alignr_epi8(dchg, feba, 8));  // e f g h
}
#endif

using BlockFn = void (*)(uint32_t*, const uint8_t*);

BlockFn best_block() {
#ifdef BUDGET_SHA_NI
  // CPUID (not __builtin_cpu_supports: older clang does not know "sha"): leaf 7 EBX bit 29 =
  // SHA; leaf 1 ECX bits 9 and 19 = SSSE3 and SSE4.1.
  unsigned a = 0, b = 0, c = 0, d = 0;
  bool ssse3_sse41 = __get_cpuid(1, &a, &b, &c, &d) && (c & (1u << 9)) && (c & (1u << 19));
  bool sha = __get_cpuid_count(7, 0, &a, &b, &c, &d) && (b & (1u << 29));
  if (ssse3_sse41 && sha) return block_shani;
#endif
  return block_portable;
}

std::array<uint8_t, 32> digest(std::string_view data, BlockFn block) {
  uint32_t h[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
  const auto* p = reinterpret_cast<const uint8_t*>(data.data());
  size_t n = data.size(), i = 0;
  for (; i + 64 <= n; i += 64) block(h, p + i);
  uint8_t tail[128] = {};
  size_t rem = n - i;
  std::memcpy(tail, p + i, rem);
  tail[rem] = 0x80;
  size_t tlen = rem + 9 <= 64 ? 64 : 128;
  uint64_t bits = static_cast<uint64_t>(n) * 8;
  for (int k = 0; k < 8; ++k) tail[tlen - 1 - k] = static_cast<uint8_t>(bits >> (8 * k));
  block(h, tail);
  if (tlen == 128) block(h, tail + 64);
  std::array<uint8_t, 32> out;
  for (int k = 0; k < 8; ++k)
    for (int b = 0; b < 4; ++b) out[4 * k + b] = static_cast<uint8_t>(h[k] >> (24 - 8 * b));
  return out;
}
}  // namespace

std::array<uint8_t, 32> sha256(std::string_view data) {
  static const BlockFn block = best_block();
  return digest(data, block);
}

std::array<uint8_t, 32> sha256_portable(std::string_view data) { return digest(data, block_portable); }

bool sha256_accelerated() { return best_block() != block_portable; }

std::string sha256_hex(std::string_view data) {
  static const char* hex = "0123456789abcdef";
  auto d = sha256(data);
  std::string s(64, '0');
  for (int i = 0; i < 32; ++i) {
    s[2 * i] = hex[d[i] >> 4];
    s[2 * i + 1] = hex[d[i] & 15];
  }
  return s;
}

}  // namespace budget::detail
