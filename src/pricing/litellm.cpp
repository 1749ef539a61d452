// LiteLLM model_prices_and_context_window.json loader.
//
// nlohmann::json would turn prices into doubles, so the document is read through a SAX
// handler that keeps each floating-point number's TEXT (stored as a json binary value, which
// JSON text can never produce), and prices are parsed from that text exactly.
#include <budget/error.hpp>

#include <nlohmann/json.hpp>

#include <array>
#include <string>
#include <vector>

#include "pricing/loaders.hpp"

namespace budget::detail {
namespace {

using json = nlohmann::json;
constexpr size_t kMaxDepth = 64;

class RawNumberSax {
 public:
  using number_integer_t = json::number_integer_t;
  using number_unsigned_t = json::number_unsigned_t;
  using number_float_t = json::number_float_t;
  using string_t = json::string_t;
  using binary_t = json::binary_t;

  json root;
  std::string error;

  bool null() { return put(json(nullptr)); }
  bool boolean(bool v) { return put(json(v)); }
  bool number_integer(number_integer_t v) { return put(json(v)); }
  bool number_unsigned(number_unsigned_t v) { return put(json(v)); }
  bool number_float(number_float_t, const string_t& s) {
    return put(json::binary(binary_t::container_type(s.begin(), s.end())));
  }
  bool string(string_t& v) { return put(json(std::move(v))); }
  bool binary(binary_t&) { return fail("unexpected binary value"); }
  bool start_object(std::size_t) {
    if (stack_.size() >= kMaxDepth) return fail("nesting too deep");
    json* p = put_container(json::object());
    if (!p) return false;
    stack_.push_back(p);
    return true;
  }
  bool key(string_t& k) {
    key_ = std::move(k);
    return true;
  }
  bool end_object() {
    stack_.pop_back();
    return true;
  }
  bool start_array(std::size_t) {
    if (stack_.size() >= kMaxDepth) return fail("nesting too deep");
    json* p = put_container(json::array());
    if (!p) return false;
    stack_.push_back(p);
    return true;
  }
  bool end_array() {
    stack_.pop_back();
    return true;
  }
  bool parse_error(std::size_t, const std::string&, const nlohmann::detail::exception& ex) {
    return fail(ex.what());
  }

 private:
  bool fail(const std::string& m) {
    if (error.empty()) error = m;
    return false;
  }
  json* put_container(json v) {
    if (stack_.empty()) {
      root = std::move(v);
      return &root;
    }
    json* parent = stack_.back();
    if (parent->is_object()) {
      json& slot = (*parent)[key_];
      slot = std::move(v);
      return &slot;
    }
    parent->push_back(std::move(v));
    return &parent->back();
  }
  bool put(json v) {
    if (stack_.empty()) {
      root = std::move(v);
      return true;
    }
    json* parent = stack_.back();
    if (parent->is_object())
      (*parent)[key_] = std::move(v);
    else
      parent->push_back(std::move(v));
    return true;
  }
  std::vector<json*> stack_;
  std::string key_;
};

// The text of a number value (integer or raw float); empty when not a number.
std::string number_text(const json& v) {
  if (v.is_binary()) {
    const auto& b = v.get_binary();
    return std::string(b.begin(), b.end());
  }
  if (v.is_number_unsigned()) return std::to_string(v.get<uint64_t>());
  if (v.is_number_integer()) return std::to_string(v.get<int64_t>());
  return {};
}

struct FieldMap {
  std::string_view prefix;
  Comp comp;
  int rank;         // lower wins when several fields map to the same price
  bool audio_only;  // only for audio transcription / speech entries
};
constexpr std::array<FieldMap, 14> kFields = {{
    {"cache_creation_input_token_cost_above_1hr", kCacheWrite1h, 0, false},
    {"cache_creation_input_token_cost", kCacheWrite, 0, false},
    {"cache_read_input_token_cost", kCacheRead, 0, false},
    {"input_cost_per_token", kIn, 0, false},
    {"output_cost_per_token", kOut, 0, false},
    {"output_cost_per_reasoning_token", kReasoning, 0, false},
    {"input_cost_per_request", kRequest, 0, false},
    {"output_cost_per_image", kImage, 0, false},
    {"input_cost_per_image", kImage, 1, false},
    {"input_cost_per_audio_per_second", kAudioSec, 0, false},
    {"input_cost_per_audio_token", kAudioIn, 0, false},
    {"output_cost_per_audio_token", kAudioOut, 0, false},
    {"input_cost_per_second", kAudioSec, 1, true},
    {"output_cost_per_second", kAudioSec, 2, true},
}};

// Maps a LiteLLM field name to (component, service tier, threshold, rank).
bool map_field(std::string_view name, bool audio_mode, Comp& comp, int& service,
               int64_t& threshold, int& rank) {
  for (const auto& f : kFields) {
    if (name.substr(0, f.prefix.size()) != f.prefix) continue;
    if (f.audio_only && !audio_mode) return false;
    std::string_view rest = name.substr(f.prefix.size());
    threshold = 0;
    service = 0;
    constexpr std::string_view kAbove = "_above_", kTokens = "k_tokens";
    if (rest.substr(0, kAbove.size()) == kAbove) {
      rest.remove_prefix(kAbove.size());
      int64_t n = 0;
      size_t i = 0;
      for (; i < rest.size() && i < 9 && rest[i] >= '0' && rest[i] <= '9'; ++i)
        n = n * 10 + (rest[i] - '0');
      if (i == 0 || rest.substr(i, kTokens.size()) != kTokens || n == 0) return false;
      rest.remove_prefix(i + kTokens.size());
      threshold = n * 1000;
    }
    if (rest == "_batches") service = 1, rest = {};
    else if (rest == "_flex") service = 2, rest = {};
    else if (rest == "_priority") service = 3, rest = {};
    if (!rest.empty()) return false;
    comp = f.comp;
    rank = f.rank;
    return true;
  }
  return false;
}

struct Pending {
  RawEntry entry;
  std::vector<std::array<int64_t, 4>> ranks;  // comp, service, threshold, rank (parallel)
  std::string error;

  void add(Comp c, int s, int64_t t, int rank, const std::string& field, const json& v,
           bool override_same_rank) {
    if (!error.empty() || v.is_null()) return;
    std::string text = number_text(v);
    if (text.empty()) {
      error = field + ": not a number";
      return;
    }
    std::string why;
    auto p = parse_price(text, &why);
    if (!p) {
      error = field + " = " + text + ": " + why;
      return;
    }
    for (size_t i = 0; i < entry.prices.size(); ++i) {
      auto& rp = entry.prices[i];
      if (rp.comp == c && rp.service == s && rp.threshold == t) {
        if (rank < ranks[i][3] || (rank == ranks[i][3] && override_same_rank)) {
          rp.value = *p;
          rp.text = text;
          ranks[i][3] = rank;
        }
        return;
      }
    }
    entry.prices.push_back(RawPrice{c, s, t, *p, text});
    ranks.push_back({c, s, t, rank});
  }
};

}  // namespace

ParsedTable parse_litellm(std::string_view text) {
  RawNumberSax sax;
  bool ok = json::sax_parse(text.begin(), text.end(), &sax, json::input_format_t::json, true);
  if (!ok || !sax.error.empty())
    throw InvalidArgumentError("price table: malformed JSON: " +
                               (sax.error.empty() ? std::string("parse failed") : sax.error));
  if (!sax.root.is_object())
    throw InvalidArgumentError("price table: the top level is not a JSON object");
  ParsedTable out;
  for (auto& [name, v] : sax.root.items()) {
    if (name == "last_updated" && v.is_string()) {
      // Kept only as one printable line: it is written back as the compact table's !date.
      auto d = v.get<std::string>();
      bool line = !d.empty();
      for (unsigned char c : d) line = line && c >= 0x20 && c != 0x7f;
      if (line) out.date = std::move(d);
    }
    if (!v.is_object() || name == "sample_spec" || name == "fallback_generalizations") {
      ++out.skipped;
      continue;
    }
    Pending pe;
    pe.entry.name = name;
    if (auto it = v.find("litellm_provider"); it != v.end() && it->is_string())
      pe.entry.provider = it->get<std::string>();
    if (auto it = v.find("mode"); it != v.end() && it->is_string())
      pe.entry.mode = it->get<std::string>();
    for (const char* k : {"max_output_tokens", "max_tokens"}) {
      auto it = v.find(k);
      if (pe.entry.max_output_tokens == 0 && it != v.end() && it->is_number_integer() &&
          it->get<int64_t>() > 0)
        pe.entry.max_output_tokens = it->get<int64_t>();
    }
    bool audio = pe.entry.mode == "audio_transcription" || pe.entry.mode == "audio_speech";
    for (auto& [field, fv] : v.items()) {
      Comp c;
      int s, rank;
      int64_t t;
      if (map_field(field, audio, c, s, t, rank)) pe.add(c, s, t, rank, field, fv, false);
    }
    // tiered_pricing: [{"range": [lo, hi], "input_cost_per_token": ...}, ...]: billed at the
    // range containing the input tokens; a range starting at lo is a level "above lo".
    if (auto tp = v.find("tiered_pricing"); tp != v.end() && tp->is_array()) {
      for (const auto& tier : *tp) {
        if (!tier.is_object()) continue;
        auto rg = tier.find("range");
        if (rg == tier.end()) continue;  // e.g. max_results_range (per-query search prices)
        if (!rg->is_array() || rg->empty()) {
          pe.error = "tiered_pricing: malformed range";
          break;
        }
        std::string lo_text = number_text((*rg)[0]), why;
        auto lo = lo_text.empty() ? std::nullopt : parse_scaled(lo_text, 0, &why);
        if (!lo || *lo < 0) {
          pe.error = "tiered_pricing: range start is not a non-negative integer";
          break;
        }
        for (auto& [field, fv] : tier.items()) {
          Comp c;
          int s, rank;
          int64_t t;
          if (map_field(field, audio, c, s, t, rank) && t == 0)
            pe.add(c, s, *lo, rank, "tiered_pricing." + field, fv, true);
        }
      }
    }
    if (pe.error.empty() && !compact_token_ok(name))
      pe.error = "the model name has a space or control character, or starts with '!' or '#'";
    if (pe.error.empty() && ((!pe.entry.provider.empty() && !compact_token_ok(pe.entry.provider)) ||
                             (!pe.entry.mode.empty() && !compact_token_ok(pe.entry.mode))))
      pe.error = "litellm_provider or mode has a space or control character, or starts with '!' or '#'";
    if (!pe.error.empty()) {
      out.unpriceable.push_back({name, pe.error});
      continue;
    }
    out.entries.push_back(std::move(pe.entry));
  }
  return out;
}

}  // namespace budget::detail
