// Price table internals (private): raw entries from the loaders, compiled entries for the
// cost path.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "pricing/decimal.hpp"

namespace budget::detail {

enum Comp : int {
  kIn = 0,
  kOut,
  kCacheRead,
  kCacheWrite,
  kCacheWrite1h,
  kReasoning,
  kRequest,
  kImage,
  kAudioSec,
  kAudioIn,   // audio input tokens (part of input; no price: billed in kIn)
  kAudioOut,  // audio output tokens (part of output; no price: billed in kOut)
  kNumComps
};
inline constexpr int kNumServiceTiers = 4;  // standard, batch, flex, priority

// Compact-format names.
inline constexpr std::array<std::string_view, kNumComps> kCompKeys = {
    "in", "out", "cr", "cw", "cw1h", "rsn", "req", "img", "sec", "ain", "aout"};
// Line item names.
inline constexpr std::array<std::string_view, kNumComps> kCompItemNames = {
    "input", "output", "cache_read", "cache_write", "cache_write_1h",
    "reasoning", "request", "image", "audio", "audio_input", "audio_output"};
inline constexpr std::array<std::string_view, kNumServiceTiers> kServiceKeys = {
    "", "batch", "flex", "priority"};

struct RawPrice {
  Comp comp;
  int service;        // 0..3
  int64_t threshold;  // 0 = base; else billed when input_tokens > threshold
  Price value;
  std::string text;   // decimal text as written (for the compact output)
};

struct RawEntry {
  std::string name;
  std::string provider;
  std::string mode;
  int64_t max_output_tokens = 0;
  std::vector<RawPrice> prices;
  // Sets or replaces (comp, service, threshold).
  void put(Comp c, int service, int64_t threshold, Price v, std::string text);
  const RawPrice* find(Comp c, int service, int64_t threshold) const;
};

// Parses a compact price key "in", "out/priority", "cw1h@200000", "in/batch@128000".
bool parse_price_key(std::string_view key, Comp& comp, int& service, int64_t& threshold);
std::string price_key(Comp c, int service, int64_t threshold);

// The resolved prices of one (tier level, service tier): for each component, its price when
// the entry (or a fallback level/service) defines it; `own` false means its quantity is
// billed with another component (cache parts and audio input with input, 1h writes with 5m
// writes, reasoning and audio output with output) or, for in/out/req/img/sec, is not priced.
struct Resolved {
  std::array<Price, kNumComps> price{};
  std::array<bool, kNumComps> own{};
};

struct Entry {
  std::string name;
  std::string provider;
  std::string mode;
  int64_t max_output_tokens = 0;
  std::vector<int64_t> thresholds;  // ascending; thresholds[0] == 0 (the base level)
  std::vector<std::array<Resolved, kNumServiceTiers>> levels;
  RawEntry raw;  // kept for to_compact()
};

// Compiles a raw entry (resolving fallbacks). Returns false with *why when it has no price.
bool compile_entry(const RawEntry& raw, Entry& out, std::string* why);

// Exact per-line computation shared by the engine.
// Not zero-initialised: compute_lines writes every element. (Zeroing 11-element arrays made
// GCC emit `rep stos`, ~25 ns of a ~90 ns cost() on the bench machine.)
struct LineAmounts {
  std::array<int64_t, kNumComps> quantity;
  std::array<int64_t, kNumComps> nanos;
  std::array<bool, kNumComps> present;
  int64_t total_nanos = 0;
};
// Throws InvalidArgumentError (usage) / OverflowError.
struct UsageView {
  int64_t input, cache_read, cache_write, cache_write_1h, output, reasoning, requests, images,
      audio_ms, audio_input, audio_output;
};
const Resolved& select_level(const Entry& e, int service, int64_t input_tokens);
void compute_lines(const Resolved& r, const UsageView& u, LineAmounts& out);

}  // namespace budget::detail
