#include <budget/error.hpp>
#include <budget/usage.hpp>

namespace budget {

Pricer::~Pricer() = default;

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
  nonneg(images, "images");
  nonneg(audio_ms, "audio_ms");
  nonneg(requests, "requests");
  if (checked_add(cache_read_tokens, cache_write_tokens) > input_tokens)
    throw InvalidArgumentError("usage: cache_read_tokens + cache_write_tokens exceed input_tokens");
  if (cache_write_1h_tokens > cache_write_tokens)
    throw InvalidArgumentError("usage: cache_write_1h_tokens exceed cache_write_tokens");
  if (reasoning_tokens > output_tokens)
    throw InvalidArgumentError("usage: reasoning_tokens exceed output_tokens");
}

Usage& Usage::operator+=(const Usage& o) {
  input_tokens = checked_add(input_tokens, o.input_tokens);
  cache_read_tokens = checked_add(cache_read_tokens, o.cache_read_tokens);
  cache_write_tokens = checked_add(cache_write_tokens, o.cache_write_tokens);
  cache_write_1h_tokens = checked_add(cache_write_1h_tokens, o.cache_write_1h_tokens);
  output_tokens = checked_add(output_tokens, o.output_tokens);
  reasoning_tokens = checked_add(reasoning_tokens, o.reasoning_tokens);
  images = checked_add(images, o.images);
  audio_ms = checked_add(audio_ms, o.audio_ms);
  requests = checked_add(requests, o.requests);
  complete = complete && o.complete;
  return *this;
}

}  // namespace budget
