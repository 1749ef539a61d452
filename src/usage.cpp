#include <budget/error.hpp>
#include <budget/usage.hpp>

#include <iterator>

namespace budget {

Pricer::~Pricer() = default;

namespace {
constexpr const char* kTierNames[] = {"standard", "batch", "flex", "priority"};
}

const char* to_string(ServiceTier t) noexcept {
  auto i = static_cast<size_t>(t);
  return i < std::size(kTierNames) ? kTierNames[i] : "invalid";
}

ServiceTier parse_service_tier(std::string_view name) {
  if (name == "default") return ServiceTier::Standard;
  for (size_t i = 0; i < std::size(kTierNames); ++i)
    if (name == kTierNames[i]) return static_cast<ServiceTier>(i);
  throw InvalidArgumentError("service tier must be 'standard', 'batch', 'flex' or 'priority', not '" +
                             std::string(name.substr(0, 40)) + "'");
}

int64_t Usage::total_tokens() const { return checked_add(input_tokens, output_tokens); }

void Usage::validate() const {
  auto nonneg = [](int64_t v, const char* name) {
    if (v < 0) throw InvalidArgumentError(std::string("usage.") + name + " is negative");
  };
  nonneg(input_tokens, "input_tokens");
  nonneg(cache_read_tokens, "cache_read_tokens");
  nonneg(cache_write_tokens, "cache_write_tokens");
  nonneg(cache_write_1h_tokens, "cache_write_1h_tokens");
  nonneg(output_tokens, "output_tokens");
  nonneg(reasoning_tokens, "reasoning_tokens");
  nonneg(audio_input_tokens, "audio_input_tokens");
  nonneg(audio_output_tokens, "audio_output_tokens");
  nonneg(images, "images");
  nonneg(audio_ms, "audio_ms");
  nonneg(requests, "requests");
  if (checked_add(cache_read_tokens, cache_write_tokens) > input_tokens)
    throw InvalidArgumentError("usage: cache_read_tokens + cache_write_tokens exceed input_tokens");
  if (checked_add(checked_add(cache_read_tokens, cache_write_tokens), audio_input_tokens) > input_tokens)
    throw InvalidArgumentError(
        "usage: cache_read_tokens + cache_write_tokens + audio_input_tokens exceed input_tokens");
  if (cache_write_1h_tokens > cache_write_tokens)
    throw InvalidArgumentError("usage: cache_write_1h_tokens exceed cache_write_tokens");
  if (reasoning_tokens > output_tokens)
    throw InvalidArgumentError("usage: reasoning_tokens exceed output_tokens");
  if (checked_add(reasoning_tokens, audio_output_tokens) > output_tokens)
    throw InvalidArgumentError("usage: reasoning_tokens + audio_output_tokens exceed output_tokens");
  if (static_cast<size_t>(service_tier) >= std::size(kTierNames))
    throw InvalidArgumentError("usage.service_tier is not a service tier");
}

Usage& Usage::operator+=(const Usage& o) {
  input_tokens = checked_add(input_tokens, o.input_tokens);
  cache_read_tokens = checked_add(cache_read_tokens, o.cache_read_tokens);
  cache_write_tokens = checked_add(cache_write_tokens, o.cache_write_tokens);
  cache_write_1h_tokens = checked_add(cache_write_1h_tokens, o.cache_write_1h_tokens);
  output_tokens = checked_add(output_tokens, o.output_tokens);
  reasoning_tokens = checked_add(reasoning_tokens, o.reasoning_tokens);
  audio_input_tokens = checked_add(audio_input_tokens, o.audio_input_tokens);
  audio_output_tokens = checked_add(audio_output_tokens, o.audio_output_tokens);
  images = checked_add(images, o.images);
  audio_ms = checked_add(audio_ms, o.audio_ms);
  requests = checked_add(requests, o.requests);
  complete = complete && o.complete;
  if (service_tier == ServiceTier::Standard) service_tier = o.service_tier;
  return *this;
}

}  // namespace budget
