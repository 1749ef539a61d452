// libbudget — a fast hash for short keys (request ids) (internal).
//
// Request ids are hashed on every operation (the engine's stream-state table, the memory
// store's stripes and record index). std::hash (MurmurHash, byte loop) costs ~90 instructions
// for a 15-byte id; this one reads 8 bytes at a time and mixes them with multiply-xorshift
// rounds (the finaliser of SplitMix64), the last block overlapping the one before it (no
// byte loop, no memcpy call): ~25 instructions, and every input bit reaches every output bit.
// Seeded once per process with a random value: request ids often come from outside (an
// idempotency key a client sends), and an unseeded hash would let someone choose ids that
// collide in the memory store's index. Only in-process tables use it (nothing persisted).
#pragma once

#include <cstdint>
#include <cstring>
#include <random>
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

inline uint64_t load64(const char* p) noexcept {
  uint64_t w;
  std::memcpy(&w, p, 8);
  return w;
}
inline uint32_t load32(const char* p) noexcept {
  uint32_t w;
  std::memcpy(&w, p, 4);
  return w;
}

// The process's hash seed (random; fixed for the life of the process).
inline uint64_t hash_seed() noexcept {
  static const uint64_t seed = [] {
    uint64_t s = 0x9e3779b97f4a7c15ULL;
    try {
      std::random_device rd;
      s ^= (static_cast<uint64_t>(rd()) << 32) ^ rd();
    } catch (...) {  // no entropy source: still differs per process and per run
    }
    return mix64(s ^ reinterpret_cast<uintptr_t>(&s));
  }();
  return seed;
}

inline size_t fast_hash(std::string_view s) noexcept {
  const char* p = s.data();
  const size_t n = s.size();
  uint64_t h = hash_seed() ^ (n * 0xff51afd7ed558ccdULL);  // the length is mixed in
  if (n >= 8) {
    const char* end = p + n;
    for (; end - p > 8; p += 8) h = mix64(h ^ load64(p));
    h = mix64(h ^ load64(end - 8) ^ 0x5bd1e995ULL);  // the last 8 bytes (may overlap the previous)
  } else if (n >= 4) {
    h = mix64(h ^ ((static_cast<uint64_t>(load32(p)) << 32) | load32(p + n - 4)));
  } else if (n > 0) {
    const auto b = [&](size_t i) { return static_cast<uint64_t>(static_cast<unsigned char>(p[i])); };
    h = mix64(h ^ ((b(0) << 16) | (b(n / 2) << 8) | b(n - 1)));
  }
  return static_cast<size_t>(h);
}

}  // namespace budget::detail
