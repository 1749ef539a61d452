// libbudget — usage extraction from the providers' own JSON.
//
// Each provider counts differently; the extractors normalise to budget::Usage (usage.hpp),
// whose totals include their parts:
//  * OpenAI Chat Completions: usage.prompt_tokens includes prompt_tokens_details.cached_tokens;
//    completion_tokens includes completion_tokens_details.reasoning_tokens. Streams carry
//    usage in one last chunk (empty choices) only with stream_options.include_usage.
//    OpenAI-compatible APIs whose total_tokens = prompt + completion + reasoning (xAI) count
//    reasoning beside completion_tokens: output = completion_tokens + reasoning_tokens.
//    Audio: *_tokens_details.audio_tokens -> audio_input (cached tokens count as text cache
//    reads: audio_input = min(audio, prompt - cached)) / audio_output. DeepSeek's
//    prompt_cache_hit_tokens is the cache read; Groq's x_groq.usage is read when the chunk
//    has no top-level usage.
//  * OpenAI Responses: usage.input_tokens (incl. input_tokens_details.cached_tokens),
//    output_tokens (incl. output_tokens_details.reasoning_tokens); streams carry it in
//    response.completed / response.incomplete / response.failed. The Realtime API's
//    response.done and its spelling input_token_details / output_token_details (cached audio
//    in cached_tokens_details.audio_tokens, taken out of audio_input) are read too.
//  * Anthropic Messages: usage.input_tokens is the uncached part only; input =
//    input_tokens + cache_creation_input_tokens + cache_read_input_tokens; 1-hour cache
//    writes from usage.cache_creation.ephemeral_1h_input_tokens. Streams: message_start, then
//    message_delta usage values that are cumulative (each field overwrites, never adds).
//  * Google Gemini (generateContent / streamGenerateContent): usageMetadata.promptTokenCount
//    (+ toolUsePromptTokenCount) includes cachedContentTokenCount; thoughtsTokenCount is
//    separate from candidatesTokenCount (output = candidates + thoughts). Streams carry
//    running totals on every chunk: the last wins, and a field missing from a chunk keeps
//    its previous value (missing is not zero). Audio: the AUDIO entries of
//    promptTokensDetails (less those of cacheTokensDetails) and candidatesTokensDetails.
//
// Service tier (Usage::service_tier): OpenAI's top-level `service_tier` (Chat Completions
// response and chunks; the Responses API's response object, also on response.created), and
// Anthropic's usage.service_tier.
// "priority" (and "fast", an alias some gateways use), "flex" and "batch" map to their tiers;
// anything else ("default", "standard", "scale", an unknown value) is Standard. Gemini reports
// no tier: Standard.
//
// Text-based estimate (estimate_tokens): ceil(ASCII bytes / 4) + one token per non-ASCII
// code point. It errs high for most languages (English averages ~4 characters per token;
// CJK text is about one token per character) so streaming enforcement stays conservative
// until the provider's numbers arrive. A stream that ends without usage yields the estimate
// with complete=false.
//
// Errors: malformed or truncated JSON, or a usage count that is not a non-negative integer,
// throw InvalidArgumentError; unknown fields are ignored. Never a crash.
//
// Thread safety: the free functions are thread-safe; a StreamUsage is one stream's state and
// must not be used by two threads at once.
#pragma once

#include <budget/export.hpp>
#include <budget/usage.hpp>

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

namespace budget {

enum class ApiFormat {
  OpenAIChat = 0,       // POST /v1/chat/completions
  OpenAIResponses = 1,  // POST /v1/responses
  Anthropic = 2,        // POST /v1/messages
  Gemini = 3,           // :generateContent / :streamGenerateContent (SSE or JSON array)
};

BUDGET_API const char* to_string(ApiFormat f) noexcept;
// "openai" / "openai-chat", "openai-responses", "anthropic", "gemini" / "google".
// Throws InvalidArgumentError.
BUDGET_API ApiFormat parse_api_format(std::string_view name);

// Token estimate of UTF-8 text (see above).
BUDGET_API int64_t estimate_tokens(std::string_view utf8_text) noexcept;

// Usage of a complete (non-streamed) response body. For Gemini a JSON array of chunks (the
// non-SSE streamGenerateContent body) is accepted too. A body without usage gives an
// estimate from its text with complete=false.
BUDGET_API Usage usage_from_response(ApiFormat format, std::string_view json_body);

struct BUDGET_API StreamOptions {
  // Input tokens to assume until the provider reports them (e.g. estimate_tokens(prompt)).
  int64_t input_tokens_estimate = 0;
};

// Accumulates one streamed response. Feed it either the raw body bytes as they arrive
// (feed: Server-Sent Events split anywhere — mid-line, mid-UTF-8, mid-CRLF — or, for Gemini
// without alt=sse, the JSON array stream), or already-split events (feed_event: one event's
// JSON payload, the `data:` of an SSE event or one chunk object).
class BUDGET_API StreamUsage {
 public:
  explicit StreamUsage(ApiFormat format, StreamOptions options = {});
  ~StreamUsage();
  StreamUsage(StreamUsage&&) noexcept;
  StreamUsage& operator=(StreamUsage&&) noexcept;

  void feed(std::string_view bytes);
  void feed_event(std::string_view json_payload);
  // End of the stream: dispatches a trailing event that had no blank line; returns usage().
  // Throws InvalidArgumentError when the body ends inside an event's JSON.
  Usage finish();

  // The provider's final numbers once seen (complete=true); before that, the best estimate
  // (complete=false): reported counts so far, raised to the text estimate of the deltas.
  Usage usage() const;
  bool has_final_usage() const noexcept;
  // Output tokens estimated from the streamed text alone.
  int64_t estimated_output_tokens() const noexcept;
  size_t events() const noexcept;  // events/chunks processed

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace budget
