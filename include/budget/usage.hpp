// libbudget — Usage (what a call consumed, in the provider's units) and priced quotes.
#pragma once

#include <budget/clock.hpp>
#include <budget/export.hpp>
#include <budget/money.hpp>

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace budget {

// The provider's processing tier for a call (OpenAI `service_tier`, Anthropic
// `usage.service_tier`, the Batch APIs). It selects the tier's prices (pricing.hpp); a tier
// price missing from an entry falls back to the standard price.
enum class ServiceTier : uint8_t { Standard = 0, Batch = 1, Flex = 2, Priority = 3 };

// "standard", "batch", "flex", "priority".
BUDGET_API const char* to_string(ServiceTier t) noexcept;
// "standard" (or "default", OpenAI's name for it), "batch", "flex", "priority".
// Throws InvalidArgumentError.
BUDGET_API ServiceTier parse_service_tier(std::string_view name);

// Normalised usage. Totals include their parts: input_tokens includes cache_read_tokens,
// cache_write_tokens and audio_input_tokens (three disjoint parts); output_tokens includes
// reasoning_tokens and audio_output_tokens (two disjoint parts). Provider-specific counting
// rules are handled by the extractors (providers.hpp), never by callers.
struct BUDGET_API Usage {
  int64_t input_tokens = 0;           // total input, incl. cache reads and cache writes
  int64_t cache_read_tokens = 0;      // part of input_tokens read from a prompt cache
  int64_t cache_write_tokens = 0;     // part of input_tokens written to a prompt cache
  int64_t cache_write_1h_tokens = 0;  // part of cache_write_tokens with a 1-hour TTL
  int64_t output_tokens = 0;          // total output, incl. reasoning
  int64_t reasoning_tokens = 0;       // part of output_tokens spent on reasoning
  int64_t audio_input_tokens = 0;     // part of input_tokens that is audio, not read from or
                                      // written to a cache (cached audio is in cache_read_tokens)
  int64_t audio_output_tokens = 0;    // part of output_tokens that is audio (not reasoning)
  int64_t images = 0;                 // generated or input images, where priced per image
  int64_t audio_ms = 0;               // audio duration in milliseconds, where priced per second
  int64_t requests = 1;               // billable requests (per-request fees)
  bool complete = true;               // false: an estimate (e.g. a stream cut before usage)
  // The tier that served the call (from the provider's response). Priced at that tier's prices;
  // PricingEngine's CostOptions::tier applies only when this is Standard.
  ServiceTier service_tier = ServiceTier::Standard;

  int64_t total_tokens() const;  // input + output (checked)
  // Throws InvalidArgumentError when a count is negative or a part exceeds its total.
  void validate() const;
  // Checked; complete = both complete; a Standard tier takes the other's (a stream's parts are
  // one call's).
  Usage& operator+=(const Usage& o);
  bool operator==(const Usage&) const = default;
};

// One priced component of a cost: quantity x unit price, rounded up to the nano.
struct BUDGET_API LineItem {
  std::string name;        // "input", "cache_read", "output", "reasoning", "request", ...
  int64_t quantity = 0;    // tokens, images, milliseconds, requests
  std::string unit_price;  // exact decimal text, currency units per unit
  Money amount;
  bool operator==(const LineItem&) const = default;
};

struct BUDGET_API PriceQuote {
  Money cost;                    // sum of the line items
  std::vector<LineItem> items;
  std::string model;             // the price entry that resolved the name
  std::string provider;
  std::string price_version;     // identifies table + rules in force; recorded in the ledger
};

// What the BudgetManager needs from a pricing engine. PricingEngine (pricing.hpp) implements
// it; an application may plug in its own. Implementations must be thread-safe.
class BUDGET_API Pricer {
 public:
  virtual ~Pricer();
  // Throws UnknownModelError when the model cannot be priced.
  virtual PriceQuote price(std::string_view model, const Usage& usage, Timestamp at) const = 0;
  // What a reserve needs: cost, model and provider; line items and price_version may be left
  // empty. Override when that is cheaper than price() (PricingEngine does).
  virtual PriceQuote price_brief(std::string_view model, const Usage& usage, Timestamp at) const {
    return price(model, usage, at);
  }
};

}  // namespace budget
