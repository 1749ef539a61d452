// Table loaders (private): LiteLLM JSON and the compact format, into raw entries.
#pragma once

#include <budget/pricing.hpp>

#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "pricing/table.hpp"

namespace budget::detail {

struct ParsedTable {
  std::vector<RawEntry> entries;                         // priceable or not (compile decides)
  std::vector<std::pair<std::string, std::string>> aliases;  // alias -> target
  std::vector<LoadReport::Unpriceable> unpriceable;      // rejected while parsing
  size_t skipped = 0;
  std::string date;    // last_updated / !date
  std::string source;  // !source
};

// Throw InvalidArgumentError on malformed input.
ParsedTable parse_litellm(std::string_view json_text);
ParsedTable parse_compact(std::string_view text);
// Whether a model name, alias, provider or mode can be written in the compact format (and so
// survives to_compact / load_compact): 1-512 bytes, no space or control character, and not
// starting with '!' (a directive) or '#' (a comment). Every loader applies it.
bool compact_token_ok(std::string_view s);
std::string write_compact(const std::vector<const RawEntry*>& entries, const std::string& date,
                          const std::string& source,
                          const std::vector<std::pair<std::string, std::string>>& aliases);

// Adds the prices of a ModelPrice to a raw entry. Throws InvalidArgumentError.
RawEntry raw_from_model_price(const std::string& name, const ModelPrice& p);

uint64_t fnv1a64(std::string_view s, uint64_t h = 1469598103934665603ULL);

}  // namespace budget::detail
