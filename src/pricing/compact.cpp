// The project's compact price format (docs/pricing.md):
//
//   # comment
//   !budget-prices 1
//   !date 2026-07-24T18:23:43.215560+00:00
//   !source model_prices_and_context_window.json (LiteLLM)
//   !alias gpt4o gpt-4o
//   gpt-4o provider=openai mode=chat max_out=16384 in=2.5e-06 out=1e-05 cr=1.25e-06 in/batch=1.25e-06
//
// One model per line: its name, then key=value fields. Price keys are
// <comp>[/<service>][@<threshold>] with comp in {in,out,cr,cw,cw1h,rsn,req,img,sec} and
// service in {batch,flex,priority}; values are exact decimal text.
#include <budget/error.hpp>

#include <charconv>
#include <string>

#include "pricing/loaders.hpp"
#include "utf8.hpp"

namespace budget::detail {
namespace {

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t' || s.front() == '\r')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\r')) s.remove_suffix(1);
  return s;
}

// Splits on spaces/tabs.
std::vector<std::string_view> fields(std::string_view s) {
  std::vector<std::string_view> out;
  size_t i = 0;
  while (i < s.size()) {
    while (i < s.size() && (s[i] == ' ' || s[i] == '\t')) ++i;
    size_t j = i;
    while (j < s.size() && s[j] != ' ' && s[j] != '\t') ++j;
    if (j > i) out.push_back(s.substr(i, j - i));
    i = j;
  }
  return out;
}

}  // namespace

bool compact_token_ok(std::string_view s) {
  if (s.empty() || s.size() > 512 || s.front() == '!' || s.front() == '#') return false;
  for (unsigned char c : s)
    if (c < 0x21 || c == 0x7f) return false;
  return valid_utf8(s);  // a name the ledger records, resolve() returns and to_compact() writes
}

ParsedTable parse_compact(std::string_view text) {
  ParsedTable out;
  bool header = false;
  size_t line_no = 0;
  auto bad = [&](const std::string& why) {
    return InvalidArgumentError("compact price table, line " + std::to_string(line_no) + ": " +
                                why);
  };
  size_t pos = 0;
  while (pos <= text.size()) {
    size_t nl = text.find('\n', pos);
    if (nl == std::string_view::npos) nl = text.size();
    std::string_view line = trim(text.substr(pos, nl - pos));
    pos = nl + 1;
    ++line_no;
    if (line.empty() || line.front() == '#') {
      if (nl == text.size()) break;
      continue;
    }
    auto f = fields(line);
    if (!header) {
      if (f.size() != 2 || f[0] != "!budget-prices")
        throw bad("expected the header '!budget-prices 1'");
      if (f[1] != "1") throw bad("unsupported format version " + std::string(f[1]));
      header = true;
    } else if (f[0] == "!date") {
      out.date = std::string(trim(line.substr(5)));
    } else if (f[0] == "!source") {
      out.source = std::string(trim(line.substr(7)));
    } else if (f[0] == "!alias") {
      if (f.size() != 3) throw bad("!alias takes two names");
      out.aliases.emplace_back(std::string(f[1]), std::string(f[2]));
    } else if (f[0].front() == '!') {
      throw bad("unknown directive " + std::string(f[0].substr(0, 64)));
    } else {
      if (!compact_token_ok(f[0])) throw bad("invalid model name");
      RawEntry e;
      e.name = std::string(f[0]);
      for (size_t i = 1; i < f.size(); ++i) {
        auto eq = f[i].find('=');
        if (eq == std::string_view::npos || eq == 0)
          throw bad("expected key=value, got '" + std::string(f[i].substr(0, 64)) + "'");
        std::string_view k = f[i].substr(0, eq), v = f[i].substr(eq + 1);
        if (k == "provider") {
          e.provider = std::string(v);
        } else if (k == "mode") {
          e.mode = std::string(v);
        } else if (k == "max_out") {
          int64_t n = 0;
          auto [p, ec] = std::from_chars(v.data(), v.data() + v.size(), n);
          if (ec != std::errc() || p != v.data() + v.size() || n < 0)
            throw bad("max_out is not a non-negative integer");
          e.max_output_tokens = n;
        } else {
          Comp c;
          int s;
          int64_t t;
          if (!parse_price_key(k, c, s, t)) continue;  // unknown keys are ignored
          std::string why;
          auto p = parse_price(v, &why);
          if (!p) throw bad(std::string(k) + "=" + std::string(v.substr(0, 64)) + ": " + why);
          e.put(c, s, t, *p, std::string(v));
        }
      }
      out.entries.push_back(std::move(e));
    }
    if (nl == text.size()) break;
  }
  if (!header) throw InvalidArgumentError("compact price table: missing '!budget-prices 1' header");
  return out;
}

std::string write_compact(const std::vector<const RawEntry*>& entries, const std::string& date,
                          const std::string& source,
                          const std::vector<std::pair<std::string, std::string>>& aliases) {
  std::string out = "!budget-prices 1\n";
  if (!date.empty()) out += "!date " + date + "\n";
  if (!source.empty()) out += "!source " + source + "\n";
  for (const auto& [a, t] : aliases) out += "!alias " + a + " " + t + "\n";
  for (const RawEntry* e : entries) {
    out += e->name;
    if (!e->provider.empty()) out += " provider=" + e->provider;
    if (!e->mode.empty()) out += " mode=" + e->mode;
    if (e->max_output_tokens) out += " max_out=" + std::to_string(e->max_output_tokens);
    for (const auto& p : e->prices) {
      out += ' ';
      out += price_key(p.comp, p.service, p.threshold);
      out += '=';
      out += p.text.empty() ? format_scaled(p.value, kPriceScale) : p.text;
    }
    out += '\n';
  }
  return out;
}

RawEntry raw_from_model_price(const std::string& name, const ModelPrice& mp) {
  RawEntry e;
  e.name = name;
  e.provider = mp.provider;
  e.max_output_tokens = mp.max_output_tokens;
  const std::pair<const std::string*, Comp> named[] = {
      {&mp.input, kIn},           {&mp.output, kOut},
      {&mp.cache_read, kCacheRead}, {&mp.cache_write, kCacheWrite},
      {&mp.cache_write_1h, kCacheWrite1h}, {&mp.reasoning, kReasoning},
      {&mp.per_request, kRequest}, {&mp.per_image, kImage},
      {&mp.per_audio_second, kAudioSec}};
  for (const auto& [text, comp] : named) {
    if (text->empty()) continue;
    std::string why;
    auto p = parse_price(*text, &why);
    if (!p)
      throw InvalidArgumentError("price for '" + name + "' " +
                                 std::string(kCompKeys[static_cast<size_t>(comp)]) + "=" +
                                 text->substr(0, 64) + ": " + why);
    e.put(comp, 0, 0, *p, *text);
  }
  for (auto f : fields(mp.extra)) {
    auto eq = f.find('=');
    Comp c;
    int s;
    int64_t t;
    if (eq == std::string_view::npos || !parse_price_key(f.substr(0, eq), c, s, t))
      throw InvalidArgumentError("price for '" + name + "': bad extra field '" +
                                 std::string(f.substr(0, 64)) + "'");
    std::string why;
    auto p = parse_price(f.substr(eq + 1), &why);
    if (!p)
      throw InvalidArgumentError("price for '" + name + "': " + std::string(f.substr(0, 64)) +
                                 ": " + why);
    e.put(c, s, t, *p, std::string(f.substr(eq + 1)));
  }
  return e;
}

uint64_t fnv1a64(std::string_view s, uint64_t h) {
  for (unsigned char c : s) {
    h ^= c;
    h *= 1099511628211ULL;
  }
  return h;
}

}  // namespace budget::detail
