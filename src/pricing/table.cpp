#include "pricing/table.hpp"

#include <budget/error.hpp>

#include <algorithm>
#include <charconv>
#include <optional>

namespace budget::detail {

void RawEntry::put(Comp c, int service, int64_t threshold, Price v, std::string text) {
  for (auto& p : prices) {
    if (p.comp == c && p.service == service && p.threshold == threshold) {
      p.value = v;
      p.text = std::move(text);
      return;
    }
  }
  prices.push_back(RawPrice{c, service, threshold, v, std::move(text)});
}

const RawPrice* RawEntry::find(Comp c, int service, int64_t threshold) const {
  for (const auto& p : prices)
    if (p.comp == c && p.service == service && p.threshold == threshold) return &p;
  return nullptr;
}

bool parse_price_key(std::string_view key, Comp& comp, int& service, int64_t& threshold) {
  threshold = 0;
  service = 0;
  if (auto at = key.find('@'); at != std::string_view::npos) {
    std::string_view num = key.substr(at + 1);
    if (num.empty() || num.size() > 15) return false;
    int64_t t = 0;
    auto [ptr, ec] = std::from_chars(num.data(), num.data() + num.size(), t);
    if (ec != std::errc() || ptr != num.data() + num.size() || t <= 0) return false;
    threshold = t;
    key = key.substr(0, at);
  }
  if (auto sl = key.find('/'); sl != std::string_view::npos) {
    std::string_view svc = key.substr(sl + 1);
    bool found = false;
    for (int s = 1; s < kNumServiceTiers; ++s)
      if (svc == kServiceKeys[static_cast<size_t>(s)]) {
        service = s;
        found = true;
      }
    if (!found) return false;
    key = key.substr(0, sl);
  }
  for (int c = 0; c < kNumComps; ++c) {
    if (key == kCompKeys[static_cast<size_t>(c)]) {
      comp = static_cast<Comp>(c);
      return true;
    }
  }
  return false;
}

std::string price_key(Comp c, int service, int64_t threshold) {
  std::string k(kCompKeys[static_cast<size_t>(c)]);
  if (service) {
    k += '/';
    k += kServiceKeys[static_cast<size_t>(service)];
  }
  if (threshold) k += "@" + std::to_string(threshold);
  return k;
}

bool compile_entry(const RawEntry& raw, Entry& out, std::string* why) {
  if (raw.prices.empty()) {
    if (why) *why = "no price field that the engine understands";
    return false;
  }
  out.name = raw.name;
  out.provider = raw.provider;
  out.mode = raw.mode;
  out.max_output_tokens = raw.max_output_tokens;
  out.raw = raw;
  out.thresholds.assign(1, 0);
  for (const auto& p : raw.prices) out.thresholds.push_back(p.threshold);
  std::sort(out.thresholds.begin(), out.thresholds.end());
  out.thresholds.erase(std::unique(out.thresholds.begin(), out.thresholds.end()),
                       out.thresholds.end());
  out.levels.assign(out.thresholds.size(), {});
  for (size_t k = 0; k < out.thresholds.size(); ++k) {
    for (int s = 0; s < kNumServiceTiers; ++s) {
      Resolved& r = out.levels[k][static_cast<size_t>(s)];
      for (int c = 0; c < kNumComps; ++c) {
        const auto comp = static_cast<Comp>(c);
        // The nearest price of service `svc` at level k or below, and its level.
        auto nearest = [&](int svc, size_t level, size_t* at) -> const RawPrice* {
          for (size_t j = level + 1; j-- > 0;)
            if (const RawPrice* p = raw.find(comp, svc, out.thresholds[j])) {
              if (at) *at = j;
              return p;
            }
          return nullptr;
        };
        size_t tier_at = 0, std_at = 0;
        const RawPrice* tier_p = s == 0 ? nullptr : nearest(s, k, &tier_at);
        const RawPrice* std_p = nearest(0, k, &std_at);
        std::optional<Price> price;
        if (tier_p) {
          price = tier_p->value;
          // The tier states no price at this long-context level, the standard does (a level
          // above the tier's last price): the tier keeps its ratio to the standard price
          // (batch at half the base price is half the long-context price), rounded up to the
          // 1e-24 unit. Without it a discount tier was billed its *base* price for a long
          // request (gpt-5.4 batch above 272k input: $1.25/M instead of $2.50/M).
          const RawPrice* std_base = std_p && std_at > tier_at ? nearest(0, tier_at, nullptr) : nullptr;
          if (std_base && std_base->value > 0)
            if (auto scaled = mul_div_ceil(std_p->value, tier_p->value, std_base->value); scaled && *scaled <= kMaxPrice)
              price = *scaled;
        } else if (std_p) {
          price = std_p->value;
        }
        if (price) {
          r.price[static_cast<size_t>(c)] = *price;
          r.own[static_cast<size_t>(c)] = true;
        }
      }
    }
  }
  return true;
}

const Resolved& select_level(const Entry& e, int service, int64_t input_tokens) {
  size_t k = 0;
  for (size_t i = 1; i < e.thresholds.size(); ++i)
    if (input_tokens > e.thresholds[i]) k = i;
  return e.levels[k][static_cast<size_t>(service)];
}

void compute_lines(const Resolved& r, const UsageView& u, LineAmounts& out) {
  auto& q = out.quantity;
  q[kIn] = u.input - u.cache_read - u.cache_write - u.audio_input;
  q[kCacheRead] = u.cache_read;
  q[kCacheWrite] = u.cache_write - u.cache_write_1h;
  q[kCacheWrite1h] = u.cache_write_1h;
  q[kOut] = u.output - u.reasoning - u.audio_output;
  q[kReasoning] = u.reasoning;
  q[kRequest] = u.requests;
  q[kImage] = u.images;
  q[kAudioSec] = u.audio_ms;
  q[kAudioIn] = u.audio_input;
  q[kAudioOut] = u.audio_output;
  // Components without their own price are billed with their parent (no overflow: the
  // parts sum to at most their validated total).
  if (!r.own[kCacheWrite1h]) q[kCacheWrite] += q[kCacheWrite1h], q[kCacheWrite1h] = 0;
  if (!r.own[kCacheWrite]) q[kIn] += q[kCacheWrite], q[kCacheWrite] = 0;
  if (!r.own[kCacheRead]) q[kIn] += q[kCacheRead], q[kCacheRead] = 0;
  if (!r.own[kReasoning]) q[kOut] += q[kReasoning], q[kReasoning] = 0;
  // Audio tokens without an audio price are billed at the text price (the table states none).
  if (!r.own[kAudioIn]) q[kIn] += q[kAudioIn], q[kAudioIn] = 0;
  if (!r.own[kAudioOut]) q[kOut] += q[kAudioOut], q[kAudioOut] = 0;
  static const int128 kTokenDiv = pow10_128(kPriceScale - 9);      // 1e15
  static const int128 kMsDiv = pow10_128(kPriceScale - 9 + 3);     // 1e18: per second x ms
  int64_t total = 0;
  for (int c = 0; c < kNumComps; ++c) {
    out.present[static_cast<size_t>(c)] = false;
    out.nanos[static_cast<size_t>(c)] = 0;
    int64_t qty = q[static_cast<size_t>(c)];
    if (qty == 0 || !r.own[static_cast<size_t>(c)]) continue;
    int128 prod;
    if (__builtin_mul_overflow(static_cast<int128>(qty), r.price[static_cast<size_t>(c)], &prod))
      throw OverflowError("cost out of range");
    int128 n = ceil_div(prod, c == kAudioSec ? kMsDiv : kTokenDiv);
    if (n > INT64_MAX) throw OverflowError("cost out of range");
    int64_t nn = static_cast<int64_t>(n);
    if (__builtin_add_overflow(total, nn, &total)) throw OverflowError("cost out of range");
    out.nanos[static_cast<size_t>(c)] = nn;
    out.present[static_cast<size_t>(c)] = true;
  }
  out.total_nanos = total;
}

}  // namespace budget::detail
