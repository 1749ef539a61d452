// libbudget C API — usage extraction from the providers' JSON.
#include "glue.hpp"

struct budget_stream {
  budget::StreamUsage rep;
};

using namespace budget;
using namespace budget::capi;

namespace {

ApiFormat to_format(int f) {
  switch (f) {
    case BUDGET_API_OPENAI_CHAT: return ApiFormat::OpenAIChat;
    case BUDGET_API_OPENAI_RESPONSES: return ApiFormat::OpenAIResponses;
    case BUDGET_API_ANTHROPIC: return ApiFormat::Anthropic;
    case BUDGET_API_GEMINI: return ApiFormat::Gemini;
    default: invalid("unknown API format " + std::to_string(f));
  }
}

budget_usage& usage_out(budget_usage* out) {
  auto& o = need(out, "out");
  check_version(o.version, BUDGET_USAGE_VERSION, "budget_usage (out)");
  return o;
}

StreamUsage& strm(budget_stream* s) { return need(s, "stream").rep; }
const StreamUsage& strm(const budget_stream* s) { return need(s, "stream").rep; }

}  // namespace

extern "C" {

budget_status budget_api_format_parse(budget_api_format* out, const char* name) {
  if (out) *out = BUDGET_API_OPENAI_CHAT;
  return guard([&] {
    auto& o = need(out, "out");
    o = static_cast<budget_api_format>(static_cast<int>(parse_api_format(need_str(name, "name"))));
  });
}

budget_status budget_estimate_tokens(int64_t* out, const char* utf8_text, size_t len) {
  if (out) *out = 0;
  return guard([&] {
    auto& o = need(out, "out");
    o = estimate_tokens(bytes(utf8_text, len, "utf8_text"));
  });
}

budget_status budget_usage_from_response(budget_usage* out, budget_api_format format, const char* json, size_t len) {
  return guard([&] {
    auto& o = usage_out(out);
    from_usage(o, usage_from_response(to_format(raw(format)), bytes(json, len, "json")));
  });
}

budget_status budget_stream_new(budget_stream** out, budget_api_format format, int64_t input_tokens_estimate) {
  reset(out);
  return guard([&] {
    auto& o = need(out, "out");
    if (input_tokens_estimate < 0) invalid("input_tokens_estimate is negative");
    StreamOptions so;
    so.input_tokens_estimate = input_tokens_estimate;
    o = new budget_stream{StreamUsage(to_format(raw(format)), so)};
  });
}

void budget_stream_destroy(budget_stream* stream) { delete stream; }

budget_status budget_stream_feed(budget_stream* stream, const char* bytes_, size_t len) {
  return guard([&] {
    auto& s = strm(stream);
    s.feed(bytes(bytes_, len, "bytes"));
  });
}

budget_status budget_stream_feed_event(budget_stream* stream, const char* json, size_t len) {
  return guard([&] {
    auto& s = strm(stream);
    s.feed_event(bytes(json, len, "json"));
  });
}

budget_status budget_stream_finish(budget_usage* out, budget_stream* stream) {
  return guard([&] {
    auto& o = usage_out(out);
    from_usage(o, strm(stream).finish());
  });
}

budget_status budget_stream_usage(budget_usage* out, const budget_stream* stream) {
  return guard([&] {
    auto& o = usage_out(out);
    from_usage(o, strm(stream).usage());
  });
}

budget_status budget_stream_has_final_usage(int* out, const budget_stream* stream) {
  if (out) *out = 0;
  return guard([&] {
    auto& o = need(out, "out");
    o = strm(stream).has_final_usage() ? 1 : 0;
  });
}

budget_status budget_stream_estimated_output_tokens(int64_t* out, const budget_stream* stream) {
  if (out) *out = 0;
  return guard([&] {
    auto& o = need(out, "out");
    o = strm(stream).estimated_output_tokens();
  });
}

}  // extern "C"
