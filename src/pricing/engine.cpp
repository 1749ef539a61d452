#include <budget/error.hpp>
#include <budget/pricing.hpp>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstring>
#include <thread>
#include <fstream>
#include <mutex>
#include <shared_mutex>
#include <sstream>
#include <unordered_map>

#include "pricing/loaders.hpp"
#include "pricing/table.hpp"

namespace budget {

namespace detail {
// Defined in the generated bundled_table.cpp.
extern const char* const kBundledTableDate;
extern const char* const kBundledTableSource;
extern const size_t kBundledTableEntries;
extern const char* const kBundledTableChunks[];
extern const size_t kBundledTableChunkCount;
}  // namespace detail

using namespace detail;

namespace {

struct SvHash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const noexcept { return std::hash<std::string_view>{}(s); }
};
template <class V>
using NameMap = std::unordered_map<std::string, V, SvHash, std::equal_to<>>;

constexpr Timestamp kAlways = Timestamp(Duration(INT64_MIN));

// Fast 64-bit hash of a short name, 8 bytes at a time.
inline uint64_t hash_name(std::string_view s) noexcept {
  constexpr uint64_t kMul = 0x9E3779B97F4A7C15ULL;
  uint64_t h = 0xA0761D6478BD642FULL ^ (s.size() * kMul);
  const char* p = s.data();
  size_t n = s.size();
  while (n >= 8) {
    uint64_t k;
    std::memcpy(&k, p, 8);
    h = (h ^ k) * kMul;
    h ^= h >> 29;
    p += 8;
    n -= 8;
  }
  if (n) {
    uint64_t k = 0;
    std::memcpy(&k, p, n);
    h = (h ^ k) * kMul;
    h ^= h >> 29;
  }
  h *= 0xBF58476D1CE4E5B9ULL;
  return h ^ (h >> 32);
}

// Open-addressing index from entry name to position (read-only once built).
class NameIndex {
 public:
  void build(const std::vector<Entry>& entries) {
    size_t cap = 16;
    while (cap < entries.size() * 2 + 2) cap <<= 1;
    slots_.assign(cap, Slot{0, kEmpty});
    mask_ = cap - 1;
    names_ = &entries;
    for (uint32_t i = 0; i < entries.size(); ++i) {
      uint64_t h = hash_name(entries[i].name);
      size_t j = h & mask_;
      while (slots_[j].idx != kEmpty) j = (j + 1) & mask_;
      slots_[j] = Slot{h, i};
    }
  }
  const Entry* find(std::string_view name) const noexcept {
    if (slots_.empty()) return nullptr;
    uint64_t h = hash_name(name);
    for (size_t j = h & mask_;; j = (j + 1) & mask_) {
      const Slot& s = slots_[j];
      if (s.idx == kEmpty) return nullptr;
      if (s.hash == h && (*names_)[s.idx].name == name) return &(*names_)[s.idx];
    }
  }

 private:
  static constexpr uint32_t kEmpty = UINT32_MAX;
  struct Slot {
    uint64_t hash;
    uint32_t idx;
  };
  std::vector<Slot> slots_;
  size_t mask_ = 0;
  const std::vector<Entry>* names_ = nullptr;
};

// Reader-writer lock tuned for a read-mostly engine: a reader is one atomic increment and
// one decrement; writers (configuration changes) are serialised and wait for readers to
// drain. The expensive part of a load (parsing, compiling) happens outside the lock.
class RwLock {
 public:
  void lock_shared() noexcept {
    for (;;) {
      if (!(state_.fetch_add(1, std::memory_order_acquire) & kWriter)) return;
      state_.fetch_sub(1, std::memory_order_relaxed);
      while (state_.load(std::memory_order_relaxed) & kWriter) std::this_thread::yield();
    }
  }
  void unlock_shared() noexcept { state_.fetch_sub(1, std::memory_order_release); }
  void lock() {
    writers_.lock();
    state_.fetch_or(kWriter, std::memory_order_acquire);
    while ((state_.load(std::memory_order_acquire) & ~kWriter) != 0) std::this_thread::yield();
  }
  void unlock() {
    state_.fetch_and(~kWriter, std::memory_order_release);
    writers_.unlock();
  }

 private:
  static constexpr uint32_t kWriter = 1u << 31;
  std::atomic<uint32_t> state_{0};
  std::mutex writers_;
};

std::string hex(uint64_t v, int digits) {
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(v));
  return std::string(buf + 16 - digits);
}

bool glob_match(std::string_view pat, std::string_view s) {
  size_t p = 0, i = 0, star = std::string_view::npos, mark = 0;
  while (i < s.size()) {
    if (p < pat.size() && (pat[p] == '?' || pat[p] == s[i])) {
      ++p, ++i;
    } else if (p < pat.size() && pat[p] == '*') {
      star = p++;
      mark = i;
    } else if (star != std::string_view::npos) {
      p = star + 1;
      i = ++mark;
    } else {
      return false;
    }
  }
  while (p < pat.size() && pat[p] == '*') ++p;
  return p == pat.size();
}

bool all_digits(std::string_view s) {
  if (s.empty()) return false;
  for (char c : s)
    if (c < '0' || c > '9') return false;
  return true;
}

// "gpt-4o-2024-08-06" -> "gpt-4o"; "-20240620", "@20240620", "-0613" likewise. Empty if none.
std::string_view strip_date(std::string_view n) {
  auto tail = [&](size_t len) { return n.size() > len ? n.substr(n.size() - len) : std::string_view{}; };
  if (auto t = tail(11); t.size() == 11 && t[0] == '-' && all_digits(t.substr(1, 4)) &&
                         t[5] == '-' && all_digits(t.substr(6, 2)) && t[8] == '-' &&
                         all_digits(t.substr(9, 2)))
    return n.substr(0, n.size() - 11);
  if (auto t = tail(9); t.size() == 9 && (t[0] == '-' || t[0] == '@') && all_digits(t.substr(1)))
    return n.substr(0, n.size() - 9);
  if (auto t = tail(5); t.size() == 5 && t[0] == '-' && all_digits(t.substr(1)))
    return n.substr(0, n.size() - 5);
  return {};
}

bool provider_compatible(std::string_view prefix, std::string_view provider) {
  if (prefix == provider) return true;
  if (provider.size() > prefix.size() && provider.substr(0, prefix.size()) == prefix &&
      (provider[prefix.size()] == '-' || provider[prefix.size()] == '_'))
    return true;  // vertex_ai -> vertex_ai-language-models
  if (provider.size() > prefix.size() &&
      provider.substr(provider.size() - prefix.size()) == prefix &&
      provider[provider.size() - prefix.size() - 1] == '-')
    return true;  // openai -> text-completion-openai
  if (prefix == "google" && (provider == "gemini" || provider.substr(0, 9) == "vertex_ai"))
    return true;
  return false;
}

}  // namespace

class PricingEngine::Impl {
 public:
  mutable RwLock mu;

  // The table.
  std::vector<Entry> entries;
  NameIndex index;
  std::string table_version = "empty";
  std::string table_date, table_source;
  std::vector<std::pair<std::string, std::string>> table_aliases;

  // Configuration.
  struct Override {
    Timestamp from;
    uint64_t seq;
    std::shared_ptr<const Entry> entry;
    std::string canon;
  };
  NameMap<std::vector<Override>> overrides;  // sorted by (from, seq)
  NameMap<std::string> aliases;              // table + user aliases
  std::vector<std::pair<std::string, std::string>> user_aliases;
  struct Rule {
    MarkupRule rule;
    int64_t ppm;  // parts per million of the cost
    uint64_t seq;
    std::string canon;
  };
  std::vector<Rule> rules;
  std::shared_ptr<const Entry> fallback;
  std::string fallback_canon;
  uint64_t seq = 0;
  bool dated = false;  // overrides or rules exist: `at` matters

  // Version of the rules in force, by epoch.
  std::vector<std::pair<Timestamp, std::string>> epochs;

  // ---- reads (shared lock held) ----
  const Entry* find_exact(std::string_view name, Timestamp at) const {
    if (!overrides.empty()) {
      if (auto it = overrides.find(name); it != overrides.end()) {
        for (auto o = it->second.rbegin(); o != it->second.rend(); ++o)
          if (o->from <= at) return o->entry.get();
      }
    }
    return index.find(name);
  }

  const Entry* resolve(std::string_view name, Timestamp at, int depth = 0) const {
    if (depth > 8 || name.empty()) return nullptr;
    if (const Entry* e = find_exact(name, at)) return e;
    if (auto a = aliases.find(name); a != aliases.end())
      if (const Entry* e = resolve(a->second, at, depth + 1)) return e;
    if (auto sl = name.find('/'); sl != std::string_view::npos && sl > 0) {
      std::string_view prefix = name.substr(0, sl), rest = name.substr(sl + 1);
      if (const Entry* e = find_exact(rest, at); e && provider_compatible(prefix, e->provider))
        return e;
      if (prefix == "google") {
        if (const Entry* e = find_exact("gemini/" + std::string(rest), at)) return e;
      }
    }
    if (auto s = strip_date(name); !s.empty())
      if (const Entry* e = resolve(s, at, depth + 1)) return e;
    if (std::any_of(name.begin(), name.end(), [](char c) { return c >= 'A' && c <= 'Z'; })) {
      std::string lower(name);
      for (auto& c : lower)
        if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
      return resolve(lower, at, depth + 1);
    }
    return nullptr;
  }

  const Entry& resolve_or_fallback(std::string_view name, Timestamp at) const {
    if (const Entry* e = resolve(name, at)) return *e;
    if (fallback) return *fallback;
    throw UnknownModelError("unknown model '" + std::string(name.substr(0, 200)) +
                            "': no price entry (configure a fallback price to accept it)");
  }

  const Rule* markup_for(const Entry& e, std::string_view requested, Timestamp at) const {
    const Rule* best = nullptr;
    auto key = [](const Rule& r) {
      return std::make_tuple(static_cast<int>(r.rule.scope),
                             r.rule.scope == MarkupRule::Scope::Pattern ? r.rule.match.size() : 0,
                             r.rule.effective_from, r.seq);
    };
    for (const Rule& r : rules) {
      if (r.rule.effective_from > at) continue;
      bool m = false;
      switch (r.rule.scope) {
        case MarkupRule::Scope::All: m = true; break;
        case MarkupRule::Scope::Provider: m = e.provider == r.rule.match; break;
        case MarkupRule::Scope::Model: m = e.name == r.rule.match || requested == r.rule.match; break;
        case MarkupRule::Scope::Pattern:
          m = glob_match(r.rule.match, e.name) || glob_match(r.rule.match, requested);
          break;
      }
      if (m && (!best || key(r) > key(*best))) best = &r;
    }
    return best;
  }

  std::string version_at(Timestamp at) const {
    const std::string* v = nullptr;
    for (const auto& [t, s] : epochs) {  // few epochs; sorted ascending
      if (t <= at) v = &s;
      else break;
    }
    return v ? *v : table_version;
  }

  // ---- writes (exclusive lock held) ----
  void rebuild_versions() {
    struct Item {
      Timestamp from;
      std::string canon;
    };
    std::vector<Item> items;
    for (const auto& [n, list] : overrides)
      for (const auto& o : list) items.push_back({o.from, o.canon});
    for (const auto& r : rules) items.push_back({r.rule.effective_from, r.canon});
    for (const auto& [a, t] : user_aliases) items.push_back({kAlways, "alias " + a + " " + t});
    if (fallback) items.push_back({kAlways, fallback_canon});
    dated = !overrides.empty() || !rules.empty();
    std::sort(items.begin(), items.end(), [](const Item& a, const Item& b) {
      return a.from != b.from ? a.from < b.from : a.canon < b.canon;
    });
    epochs.clear();
    for (size_t i = 0; i < items.size(); ++i) {
      if (i + 1 < items.size() && items[i + 1].from == items[i].from) continue;
      // Items [0, i] are in force from items[i].from on; hash them order-independently.
      std::vector<std::string> canon;
      for (size_t j = 0; j <= i; ++j) canon.push_back(items[j].canon);
      std::sort(canon.begin(), canon.end());
      uint64_t h = fnv1a64("rules");
      for (const auto& c : canon) h = fnv1a64(c, fnv1a64("\n", h));
      epochs.emplace_back(items[i].from, table_version + "+rules:" + hex(h, 12));
    }
  }

  LoadReport install(ParsedTable&& t, const std::string& kind, std::string_view content) {
    std::vector<Entry> new_entries;
    NameMap<size_t> new_index;
    LoadReport report;
    report.skipped = t.skipped;
    report.unpriceable = std::move(t.unpriceable);
    new_entries.reserve(t.entries.size());
    for (auto& raw : t.entries) {
      Entry e;
      std::string why;
      if (!compile_entry(raw, e, &why)) {
        report.unpriceable.push_back({raw.name, why});
        continue;
      }
      auto [it, fresh] = new_index.emplace(e.name, new_entries.size());
      if (!fresh) {
        new_entries[it->second] = std::move(e);  // a later duplicate wins
      } else {
        new_entries.push_back(std::move(e));
      }
    }
    report.loaded = new_entries.size();
    std::string version = kind + ":" + (t.date.empty() ? std::string("undated") : t.date) + "#" +
                          hex(fnv1a64(content), 8);
    report.table_version = version;
    std::unique_lock lock(mu);
    entries = std::move(new_entries);
    index.build(entries);
    table_version = std::move(version);
    table_date = t.date;
    table_source = t.source;
    table_aliases = t.aliases;
    aliases.clear();
    for (const auto& [a, target] : table_aliases) aliases[a] = target;
    for (const auto& [a, target] : user_aliases) aliases[a] = target;
    rebuild_versions();
    return report;
  }

  // ---- the cost path ----
  struct Computed {
    const Entry* entry;
    const Resolved* level;
    LineAmounts lines;
    const Rule* rule = nullptr;
    int64_t markup_nanos = 0;
    int64_t total_nanos = 0;
  };

  void compute(std::string_view model, const Usage& u, const CostOptions& o, Computed& c) const {
    u.validate();
    // The tier the usage names (the provider's answer) wins over the caller's default.
    int tier = static_cast<int>(u.service_tier != ServiceTier::Standard ? u.service_tier : o.tier);
    if (tier < 0 || tier >= kNumServiceTiers) throw InvalidArgumentError("invalid service tier");
    Timestamp at = kAlways;
    if (dated) at = o.at ? *o.at : std::chrono::time_point_cast<Duration>(std::chrono::system_clock::now());
    c.entry = &resolve_or_fallback(model, at);
    c.level = &select_level(*c.entry, tier, u.input_tokens);
    UsageView v{u.input_tokens, u.cache_read_tokens, u.cache_write_tokens, u.cache_write_1h_tokens,
                u.output_tokens, u.reasoning_tokens, u.requests, u.images, u.audio_ms,
                u.audio_input_tokens, u.audio_output_tokens};
    compute_lines(*c.level, v, c.lines);
    c.total_nanos = c.lines.total_nanos;
    c.markup_nanos = 0;
    c.rule = nullptr;
    if (o.apply_markup && !rules.empty()) {
      c.rule = markup_for(*c.entry, model, at);
      if (c.rule) {
        int128 m = ceil_div(static_cast<int128>(c.total_nanos) * c.rule->ppm, 1'000'000);
        int128 fixed = static_cast<int128>(c.rule->rule.fixed.nanos()) * u.requests;
        m += fixed;
        if (m > INT64_MAX || m < INT64_MIN) throw OverflowError("cost out of range");
        c.markup_nanos = static_cast<int64_t>(m);
        c.total_nanos = checked_add(c.total_nanos, c.markup_nanos);
      }
    }
  }
};

PricingEngine::PricingEngine() : impl_(std::make_unique<Impl>()) {}
PricingEngine::~PricingEngine() = default;

std::unique_ptr<PricingEngine> PricingEngine::bundled() {
  auto e = std::make_unique<PricingEngine>();
  e->load_bundled();
  return e;
}

BundledTableInfo PricingEngine::bundled_table_info() noexcept {
  return {kBundledTableDate, kBundledTableSource, kBundledTableEntries};
}

static std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw InvalidArgumentError("cannot open price table '" + path + "'");
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

LoadReport PricingEngine::load_litellm(std::string_view json_text) {
  return impl_->install(parse_litellm(json_text), "litellm", json_text);
}
LoadReport PricingEngine::load_litellm_file(const std::string& path) {
  return load_litellm(read_file(path));
}
LoadReport PricingEngine::load_compact(std::string_view text) {
  return impl_->install(parse_compact(text), "compact", text);
}
LoadReport PricingEngine::load_compact_file(const std::string& path) {
  return load_compact(read_file(path));
}
LoadReport PricingEngine::load_bundled() {
  std::string text;
  for (size_t i = 0; i < kBundledTableChunkCount; ++i) text += kBundledTableChunks[i];
  auto t = parse_compact(text);
  return impl_->install(std::move(t), "bundled", text);
}

std::string PricingEngine::to_compact() const {
  std::shared_lock lock(impl_->mu);
  std::vector<const RawEntry*> raws;
  raws.reserve(impl_->entries.size());
  for (const auto& e : impl_->entries) raws.push_back(&e.raw);
  return write_compact(raws, impl_->table_date, impl_->table_source, impl_->table_aliases);
}

void PricingEngine::set_price(const std::string& model, const ModelPrice& price,
                              Timestamp effective_from) {
  if (!detail::compact_token_ok(model))
    throw InvalidArgumentError("set_price: a model name is 1-512 bytes without spaces or control characters, "
                               "not starting with '!' or '#'");
  if (price.max_output_tokens < 0)
    throw InvalidArgumentError("set_price '" + model + "': max_output_tokens is negative");
  RawEntry raw = raw_from_model_price(model, price);
  auto e = std::make_shared<Entry>();
  std::string why;
  if (!compile_entry(raw, *e, &why)) throw InvalidArgumentError("set_price '" + model + "': " + why);
  std::string canon = "price " + std::to_string(to_millis(effective_from)) + " " +
                      write_compact({&raw}, "", "", {});
  std::unique_lock lock(impl_->mu);
  auto& list = impl_->overrides[model];
  list.push_back({effective_from, ++impl_->seq, std::move(e), std::move(canon)});
  std::stable_sort(list.begin(), list.end(),
                   [](const Impl::Override& a, const Impl::Override& b) { return a.from < b.from; });
  impl_->rebuild_versions();
}

void PricingEngine::add_alias(const std::string& alias, const std::string& target) {
  if (!detail::compact_token_ok(alias) || !detail::compact_token_ok(target))
    throw InvalidArgumentError("add_alias: a name is 1-512 bytes without spaces or control characters, "
                               "not starting with '!' or '#'");
  std::unique_lock lock(impl_->mu);
  impl_->user_aliases.emplace_back(alias, target);
  impl_->aliases[alias] = target;
  impl_->rebuild_versions();
}

void PricingEngine::add_markup(const MarkupRule& rule) {
  std::string why;
  auto ppm = parse_scaled(rule.percent, 4, &why);  // percent with 4 decimals = ppm
  if (!ppm) throw InvalidArgumentError("markup percent '" + rule.percent.substr(0, 64) + "': " + why);
  if (*ppm < -1'000'000) throw InvalidArgumentError("markup percent below -100");
  // A discount is a negative percent (down to -100): a negative fixed fee could price a call
  // below zero.
  if (rule.fixed.is_negative()) throw InvalidArgumentError("markup fixed fee is negative");
  if (rule.scope != MarkupRule::Scope::All && rule.match.empty())
    throw InvalidArgumentError("markup rule: empty match");
  std::string canon = "markup " + std::to_string(static_cast<int>(rule.scope)) + " " + rule.match +
                      " " + std::to_string(*ppm) + " " + std::to_string(rule.fixed.nanos()) + " " +
                      std::to_string(to_millis(rule.effective_from));
  std::unique_lock lock(impl_->mu);
  impl_->rules.push_back({rule, *ppm, ++impl_->seq, std::move(canon)});
  impl_->rebuild_versions();
}

void PricingEngine::set_fallback(const std::optional<ModelPrice>& price) {
  std::shared_ptr<Entry> e;
  std::string canon;
  if (price) {
    RawEntry raw = raw_from_model_price("fallback", *price);
    e = std::make_shared<Entry>();
    std::string why;
    if (!compile_entry(raw, *e, &why)) throw InvalidArgumentError("fallback price: " + why);
    canon = "fallback " + write_compact({&raw}, "", "", {});
  }
  std::unique_lock lock(impl_->mu);
  impl_->fallback = std::move(e);
  impl_->fallback_canon = std::move(canon);
  impl_->rebuild_versions();
}

ResolvedModel PricingEngine::resolve(std::string_view model, std::optional<Timestamp> at) const {
  std::shared_lock lock(impl_->mu);
  Timestamp t = at ? *at : std::chrono::time_point_cast<Duration>(std::chrono::system_clock::now());
  const Entry* e = impl_->resolve(model, t);
  if (!e) throw UnknownModelError("unknown model '" + std::string(model.substr(0, 200)) + "'");
  return {e->name, e->provider, e->mode, e->max_output_tokens};
}

bool PricingEngine::knows(std::string_view model) const {
  std::shared_lock lock(impl_->mu);
  return impl_->resolve(model, Timestamp(Duration(INT64_MAX))) != nullptr;
}

Money PricingEngine::cost(std::string_view model, const Usage& usage, const CostOptions& options) const {
  std::shared_lock lock(impl_->mu);
  Impl::Computed c;
  impl_->compute(model, usage, options, c);
  return Money::from_nanos(c.total_nanos);
}

namespace {
// The part of a quote price_brief() gives: cost, model and provider.
PriceQuote quote_head(const PricingEngine::Impl& impl, const PricingEngine::Impl::Computed& c);
}  // namespace

PriceQuote PricingEngine::quote(std::string_view model, const Usage& usage,
                                const CostOptions& options) const {
  CostOptions o = options;
  if (!o.at) o.at = std::chrono::time_point_cast<Duration>(std::chrono::system_clock::now());
  std::shared_lock lock(impl_->mu);
  Impl::Computed c;
  impl_->compute(model, usage, o, c);
  PriceQuote q = quote_head(*impl_, c);
  q.price_version = impl_->version_at(*o.at);
  static constexpr Comp kOrder[] = {kIn,  kCacheRead, kCacheWrite, kCacheWrite1h, kAudioIn, kOut,
                                    kReasoning, kAudioOut, kRequest, kImage, kAudioSec};
  for (Comp comp : kOrder) {
    auto i = static_cast<size_t>(comp);
    if (!c.lines.present[i]) continue;
    LineItem li;
    li.name = std::string(kCompItemNames[i]);
    li.quantity = c.lines.quantity[i];
    // Audio is priced per second and counted in milliseconds: the unit price is per ms.
    li.unit_price = format_scaled(c.level->price[i], comp == kAudioSec ? kPriceScale + 3 : kPriceScale);
    li.amount = Money::from_nanos(c.lines.nanos[i]);
    q.items.push_back(std::move(li));
  }
  if (c.rule && c.markup_nanos != 0) {
    LineItem li;
    li.name = "markup";
    li.quantity = 1;
    li.unit_price = Money::from_nanos(c.markup_nanos).to_string();
    li.amount = Money::from_nanos(c.markup_nanos);
    q.items.push_back(std::move(li));
  }
  return q;
}

PriceQuote PricingEngine::price(std::string_view model, const Usage& usage, Timestamp at) const {
  CostOptions o;
  o.at = at;
  return quote(model, usage, o);
}

PriceQuote PricingEngine::price_brief(std::string_view model, const Usage& usage, Timestamp at) const {
  CostOptions o;
  o.at = at;
  std::shared_lock lock(impl_->mu);
  Impl::Computed c;
  impl_->compute(model, usage, o, c);
  return quote_head(*impl_, c);
}

namespace {
PriceQuote quote_head(const PricingEngine::Impl& impl, const PricingEngine::Impl::Computed& c) {
  PriceQuote q;
  q.cost = Money::from_nanos(c.total_nanos);
  q.model = c.entry == impl.fallback.get() ? std::string("fallback") : c.entry->name;
  q.provider = c.entry->provider;
  return q;
}
}  // namespace

Money PricingEngine::estimate(std::string_view model, int64_t input_tokens,
                              std::optional<int64_t> max_output_tokens,
                              const CostOptions& options) const {
  if (input_tokens < 0 || (max_output_tokens && *max_output_tokens < 0))
    throw InvalidArgumentError("estimate: negative token count");
  Usage u;
  u.input_tokens = input_tokens;
  if (max_output_tokens) {
    u.output_tokens = *max_output_tokens;
  } else {
    std::shared_lock lock(impl_->mu);
    Timestamp at = options.at ? *options.at
                              : std::chrono::time_point_cast<Duration>(std::chrono::system_clock::now());
    const Entry& e = impl_->resolve_or_fallback(model, at);
    u.output_tokens = e.max_output_tokens > 0 ? e.max_output_tokens : 4096;
  }
  return cost(model, u, options);
}

std::string PricingEngine::price_version(Timestamp at) const {
  std::shared_lock lock(impl_->mu);
  return impl_->version_at(at);
}

size_t PricingEngine::size() const {
  std::shared_lock lock(impl_->mu);
  return impl_->entries.size();
}

}  // namespace budget
