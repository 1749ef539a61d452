// libbudget — a fast hash for short keys (request ids) (internal).
//
// Request ids are hashed on every operation (the engine's stream-state table, the memory
// store's stripes and record index). std::hash (MurmurHash, byte loop) costs ~90 instructions
// for a 15-byte id; this one reads 8 bytes at a time and mixes them with multiply-xorshift
// rounds (the finaliser of SplitMix64): ~20 instructions, and every input bit reaches every
// output bit. Not keyed: like std::hash, it is no defence against chosen colliding ids.
#pragma once

#include <cstdint>
#include <cstring>
#include <string_view>

namespace budget::detail {

inline uint64_t mix64(uint64_t x) noexcept {
  x ^= x >> 30;
  x *= 0xbf58476d1ce4e5b9ULL;
  x ^= x >> 27;
  x *= 0x94d049bb133111ebULL;
  x ^= x >> 31;
  return x;
}

inline size_t fast_hash(std::string_view s) noexcept {
  const char* p = s.data();
  size_t n = s.size();
  uint64_t h = 0x9e3779b97f4a7c15ULL ^ (n * 0xff51afd7ed558ccdULL);
  while (n >= 8) {
    uint64_t w;
    std::memcpy(&w, p, 8);
    h = mix64(h ^ w);
    p += 8;
    n -= 8;
  }
  if (n) {
    uint64_t w = 0;
    std::memcpy(&w, p, n);
    h = mix64(h ^ w ^ 0x5bd1e995ULL);
  }
  return static_cast<size_t>(h);
}

}  // namespace budget::detail
