// Usage extraction: provider fixtures (full responses and stream transcripts), framing,
// estimates, and malformed input.
#include <budget/error.hpp>
#include <budget/pricing.hpp>
#include <budget/providers.hpp>

#include <doctest/doctest.h>
#include <nlohmann/json.hpp>

#include <fstream>
#include <sstream>
#include <string>

using namespace budget;

namespace {

std::string fixture(const std::string& name) {
  std::string path = std::string(BUDGET_TEST_DATA_DIR) + "/providers/" + name;
  std::ifstream in(path, std::ios::binary);
  REQUIRE_MESSAGE(in.good(), "missing fixture " << path);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

Usage expected_usage(const nlohmann::json& u) {
  Usage x;
  x.input_tokens = u.at("input");
  x.cache_read_tokens = u.at("cache_read");
  x.cache_write_tokens = u.at("cache_write");
  x.cache_write_1h_tokens = u.at("cache_write_1h");
  x.output_tokens = u.at("output");
  x.reasoning_tokens = u.at("reasoning");
  x.audio_input_tokens = u.value("audio_input", int64_t{0});
  x.audio_output_tokens = u.value("audio_output", int64_t{0});
  x.complete = u.at("complete");
  return x;
}

std::string show(const Usage& u) {
  std::ostringstream s;
  s << "{in " << u.input_tokens << ", cr " << u.cache_read_tokens << ", cw " << u.cache_write_tokens
    << ", cw1h " << u.cache_write_1h_tokens << ", out " << u.output_tokens << ", rsn "
    << u.reasoning_tokens << ", ain " << u.audio_input_tokens << ", aout " << u.audio_output_tokens << ", req "
    << u.requests << ", complete " << u.complete << "}";
  return s.str();
}

Usage stream_in_pieces(ApiFormat f, const std::string& body, size_t piece) {
  StreamOptions o;
  o.input_tokens_estimate = 100;
  StreamUsage s(f, o);
  for (size_t i = 0; i < body.size(); i += piece) s.feed(std::string_view(body).substr(i, piece));
  return s.finish();
}

}  // namespace

TEST_CASE("providers: fixtures give the expected usage") {
  auto expected = nlohmann::json::parse(fixture("expected.json"));
  size_t n = 0;
  for (auto& [name, spec] : expected.items()) {
    if (name[0] == '_') continue;
    CAPTURE(name);
    ApiFormat f = parse_api_format(spec.at("format").get<std::string>());
    Usage want = expected_usage(spec.at("usage"));
    std::string body = fixture(name);
    if (spec.at("kind") == "response") {
      Usage got = usage_from_response(f, body);
      CHECK_MESSAGE(got == want, show(got) << " != " << show(want));
    } else {
      for (size_t piece : {body.size(), size_t{1}, size_t{2}, size_t{7}, size_t{64}}) {
        CAPTURE(piece);
        Usage got = stream_in_pieces(f, body, piece);
        CHECK_MESSAGE(got == want, show(got) << " != " << show(want));
      }
    }
    ++n;
  }
  CHECK(n == 21);
}

TEST_CASE("providers: streamed estimate before the usage arrives") {
  std::string body = fixture("openai_chat_stream.sse");
  StreamOptions o;
  o.input_tokens_estimate = 2'000;
  StreamUsage s(ApiFormat::OpenAIChat, o);
  size_t usage_chunk = body.find("data: {\"id\":\"chatcmpl-123\",\"object\":\"chat.completion.chunk\",\"created\":1694268190,\"model\":\"gpt-4o-mini\",\"system_fingerprint\":\"fp_44709d6fcb\",\"choices\":[],");
  REQUIRE(usage_chunk != std::string::npos);
  s.feed(body.substr(0, usage_chunk));
  Usage mid = s.usage();
  CHECK_FALSE(mid.complete);
  CHECK_FALSE(s.has_final_usage());
  CHECK(mid.input_tokens == 2'000);
  CHECK(mid.output_tokens == 11);
  CHECK(s.estimated_output_tokens() == 11);
  s.feed(body.substr(usage_chunk));
  CHECK(s.has_final_usage());
  Usage fin = s.finish();
  CHECK(fin.complete);
  CHECK(fin.output_tokens == 160);
  CHECK(s.events() == 5);
}

TEST_CASE("providers: feed_event with payloads already split") {
  StreamUsage a(ApiFormat::Anthropic);
  a.feed_event(R"({"type":"message_start","message":{"usage":{"input_tokens":10,"cache_read_input_tokens":5,"output_tokens":1}}})");
  a.feed_event(R"({"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"abcdefgh"}})");
  CHECK(a.usage().output_tokens == 2);
  CHECK(a.usage().input_tokens == 15);
  a.feed_event(R"({"type":"message_delta","usage":{"output_tokens":30}})");
  a.feed_event(R"({"type":"message_delta","usage":{"output_tokens":31}})");  // cumulative: overwrite
  a.feed_event("[DONE]");
  Usage u = a.finish();
  CHECK(u.complete);
  CHECK(u.output_tokens == 31);
  CHECK(u.input_tokens == 15);
  CHECK(u.cache_read_tokens == 5);
}

TEST_CASE("providers: the service tier a response names") {
  // OpenAI Chat: top level, on the response and on every chunk.
  CHECK(usage_from_response(ApiFormat::OpenAIChat,
                            R"({"service_tier":"priority","usage":{"prompt_tokens":10,"completion_tokens":5}})")
            .service_tier == ServiceTier::Priority);
  for (const char* name : {"default", "scale", "auto", "something-new"}) {
    CAPTURE(name);
    auto body = std::string(R"({"service_tier":")") + name + R"(","usage":{"prompt_tokens":1,"completion_tokens":1}})";
    CHECK(usage_from_response(ApiFormat::OpenAIChat, body).service_tier == ServiceTier::Standard);
  }
  StreamUsage chat(ApiFormat::OpenAIChat);
  chat.feed("data: {\"service_tier\":\"flex\",\"choices\":[{\"delta\":{\"content\":\"hello world\"}}]}\n\n");
  CHECK(chat.usage().service_tier == ServiceTier::Flex);  // a cut stream's estimate too
  chat.feed("data: {\"choices\":[],\"usage\":{\"prompt_tokens\":7,\"completion_tokens\":3}}\n\ndata: [DONE]\n\n");
  auto cu = chat.finish();
  CHECK(cu.service_tier == ServiceTier::Flex);  // a chunk without the field keeps it
  CHECK(cu.input_tokens == 7);
  // OpenAI Responses: the response object, whole or in response.completed.
  CHECK(usage_from_response(ApiFormat::OpenAIResponses,
                            R"({"object":"response","service_tier":"flex","usage":{"input_tokens":4,"output_tokens":2}})")
            .service_tier == ServiceTier::Flex);
  StreamUsage resp(ApiFormat::OpenAIResponses);
  resp.feed_event(R"({"type":"response.completed","response":{"service_tier":"priority","usage":{"input_tokens":4,"output_tokens":2}}})");
  CHECK(resp.finish().service_tier == ServiceTier::Priority);
  // Known from response.created: a stream cut before response.completed is priced at it (was
  // standard: about half of a priority call).
  StreamUsage cut(ApiFormat::OpenAIResponses);
  cut.feed_event(R"({"type":"response.created","response":{"id":"resp_1","status":"in_progress","service_tier":"priority"}})");
  cut.feed_event(R"({"type":"response.output_text.delta","delta":"some text"})");
  auto cu2 = cut.finish();
  CHECK_FALSE(cu2.complete);
  CHECK(cu2.service_tier == ServiceTier::Priority);
  // Anthropic: usage.service_tier, in the message and in message_start.
  CHECK(usage_from_response(ApiFormat::Anthropic,
                            R"({"type":"message","usage":{"input_tokens":3,"output_tokens":1,"service_tier":"batch"}})")
            .service_tier == ServiceTier::Batch);
  StreamUsage an(ApiFormat::Anthropic);
  an.feed_event(R"({"type":"message_start","message":{"usage":{"input_tokens":3,"output_tokens":1,"service_tier":"priority"}}})");
  an.feed_event(R"({"type":"message_delta","usage":{"output_tokens":9}})");
  auto au = an.finish();
  CHECK(au.service_tier == ServiceTier::Priority);
  CHECK(au.output_tokens == 9);
  // A tier that is not a string is ignored like any odd shape.
  CHECK(usage_from_response(ApiFormat::OpenAIChat, R"({"service_tier":7,"usage":{"prompt_tokens":1}})").service_tier ==
        ServiceTier::Standard);
}

TEST_CASE("providers: token estimate") {
  CHECK(estimate_tokens("") == 0);
  CHECK(estimate_tokens("abcd") == 1);
  CHECK(estimate_tokens("abcde") == 2);
  CHECK(estimate_tokens("日本語") == 3);
  CHECK(estimate_tokens("héllo") == 2);          // 4 ASCII bytes -> 1, 'é' -> 1
  CHECK(estimate_tokens("\xF0\x9F\x98\x80") == 1);  // one emoji
  CHECK(estimate_tokens("\xff\xfe") == 2);        // invalid UTF-8 does not crash
}

TEST_CASE("providers: malformed or truncated JSON is an InvalidArgumentError") {
  for (const char* name : {"openai_chat_response.json", "openai_responses_response.json",
                           "anthropic_response.json", "gemini_response.json"}) {
    CAPTURE(name);
    std::string body = fixture(name);
    for (size_t cut : {size_t{0}, size_t{1}, body.size() / 3, body.size() / 2, body.size() - 2})
      CHECK_THROWS_AS(usage_from_response(ApiFormat::OpenAIChat, body.substr(0, cut)),
                      InvalidArgumentError);
  }
  CHECK_THROWS_AS(usage_from_response(ApiFormat::Gemini, std::string(10'000, '[')), InvalidArgumentError);
  CHECK_THROWS_AS(usage_from_response(ApiFormat::OpenAIChat, R"({"usage":{"prompt_tokens":-1}})"),
                  InvalidArgumentError);
  CHECK_THROWS_AS(usage_from_response(ApiFormat::OpenAIChat, R"({"usage":{"prompt_tokens":"12"}})"),
                  InvalidArgumentError);
  CHECK_THROWS_AS(usage_from_response(ApiFormat::OpenAIChat, R"({"usage":{"prompt_tokens":1.5}})"),
                  InvalidArgumentError);
  CHECK_THROWS_AS(usage_from_response(ApiFormat::OpenAIChat,
                                      R"({"usage":{"prompt_tokens":1,"prompt_tokens_details":{"cached_tokens":2}}})"),
                  InvalidArgumentError);  // a part larger than its total
  CHECK_THROWS_AS(parse_api_format("bogus"), InvalidArgumentError);

  // Truncated streams: the partial event fails at finish(), earlier events stay counted.
  std::string sse = fixture("anthropic_stream.sse");
  StreamUsage s(ApiFormat::Anthropic);
  s.feed(sse.substr(0, sse.size() / 2));
  s.feed("data: {\"type\":\"message_delta\",\"usage\":{\"output_");
  CHECK_THROWS_AS(s.finish(), InvalidArgumentError);
  StreamUsage g(ApiFormat::Gemini);
  std::string arr = fixture("gemini_stream.json");
  g.feed(arr.substr(0, arr.size() - 30));
  CHECK_THROWS_AS(g.finish(), InvalidArgumentError);
  StreamUsage bad(ApiFormat::Gemini);
  CHECK_THROWS_AS(bad.feed("[{\"a\":1} x"), InvalidArgumentError);
  StreamUsage bad2(ApiFormat::OpenAIChat);
  CHECK_THROWS_AS(bad2.feed("data: {not json}\n\n"), InvalidArgumentError);
  // The bad event (object, character) is dropped: the stream goes on and reads the final usage.
  CHECK_NOTHROW(bad2.feed("data: {\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":4}}\n\n"));
  CHECK(bad2.finish().output_tokens == 4);
  CHECK_NOTHROW(bad.feed(",{\"usageMetadata\":{\"promptTokenCount\":2,\"candidatesTokenCount\":5}}]"));
  CHECK(bad.finish().output_tokens == 5);
  StreamUsage bad3(ApiFormat::OpenAIChat);
  CHECK_THROWS_AS(bad3.feed("data: {\"choices\":[{\"delta\":{\"content\":\"abcdefgh\"}}]}\n\ndata: {cut\n\n"),
                  InvalidArgumentError);
  CHECK(bad3.usage().output_tokens == 2);
  bad3.feed(": keep-alive\n\n");
  CHECK(bad3.usage().output_tokens == 2);  // the event before the bad one is not counted again
}

TEST_CASE("providers: unknown fields and odd shapes are ignored") {
  Usage u = usage_from_response(
      ApiFormat::OpenAIChat,
      R"({"choices":"weird","usage":{"prompt_tokens":3,"completion_tokens":4,"future":{"x":[1]},"prompt_tokens_details":null}})");
  CHECK(u.input_tokens == 3);
  CHECK(u.output_tokens == 4);
  CHECK(u.complete);
  // No usage at all: an estimate from the text, incomplete.
  Usage e = usage_from_response(ApiFormat::Anthropic,
                                R"({"type":"message","content":[{"type":"text","text":"abcdefgh"}]})");
  CHECK_FALSE(e.complete);
  CHECK(e.output_tokens == 2);
  Usage n = usage_from_response(ApiFormat::Gemini, "[]");
  CHECK_FALSE(n.complete);
  CHECK(n.output_tokens == 0);
  // An error event in a stream carries no usage.
  StreamUsage s(ApiFormat::Anthropic);
  s.feed("event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\"}}\n\n");
  CHECK_FALSE(s.finish().complete);
}

TEST_CASE("providers: OpenAI-compatible usage with reasoning outside completion_tokens (xAI Grok)") {
  // xAI's OpenAI-compatible API reports reasoning_tokens beside completion_tokens, not inside
  // it: total_tokens = prompt + completion + reasoning (OpenAI: prompt + completion). The
  // reasoning is billed as output, so the output total must include it.
  Usage u = usage_from_response(ApiFormat::OpenAIChat, R"({"model":"grok-3-mini","choices":[],
      "usage":{"prompt_tokens":32,"completion_tokens":9,"total_tokens":135,
               "prompt_tokens_details":{"cached_tokens":6},
               "completion_tokens_details":{"reasoning_tokens":94}}})");
  CHECK(u.complete);
  CHECK(u.input_tokens == 32);
  CHECK(u.cache_read_tokens == 6);
  CHECK(u.output_tokens == 103);
  CHECK(u.reasoning_tokens == 94);
  // Reasoning smaller than the visible answer: was silently charged as 50 output tokens.
  Usage v = usage_from_response(ApiFormat::OpenAIChat, R"({"choices":[],
      "usage":{"prompt_tokens":100,"completion_tokens":50,"total_tokens":170,
               "completion_tokens_details":{"reasoning_tokens":20}}})");
  CHECK(v.output_tokens == 70);
  CHECK(v.reasoning_tokens == 20);
  // OpenAI's own numbers (total = prompt + completion) are unchanged.
  Usage w = usage_from_response(ApiFormat::OpenAIChat, R"({"choices":[],
      "usage":{"prompt_tokens":100,"completion_tokens":50,"total_tokens":150,
               "completion_tokens_details":{"reasoning_tokens":20}}})");
  CHECK(w.output_tokens == 50);
  CHECK(w.reasoning_tokens == 20);
  // The same in a stream's last chunk.
  StreamUsage s(ApiFormat::OpenAIChat);
  s.feed("data: {\"choices\":[{\"delta\":{\"content\":\"Paris\"}}],\"usage\":null}\n\n"
         "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":32,\"completion_tokens\":9,\"total_tokens\":135,"
         "\"completion_tokens_details\":{\"reasoning_tokens\":94}}}\n\ndata: [DONE]\n\n");
  Usage f = s.finish();
  CHECK(f.complete);
  CHECK(f.output_tokens == 103);
  CHECK(f.reasoning_tokens == 94);
  // Priced with the bundled table: xai/grok-3-mini in 3e-7, cached 7.5e-8, out 5e-7.
  auto prices = PricingEngine::bundled();
  CHECK(prices->cost("xai/grok-3-mini", u) == Money::parse("0.00005975"));  // 26*3e-7 + 6*7.5e-8 + 103*5e-7
}

TEST_CASE("providers: an event that raises changes nothing (no half-applied usage)") {
  // Anthropic: a message_delta whose input_tokens is fine but output_tokens is not. The
  // input_tokens it carried must not be kept (was: input 999 + cache applied, output left).
  StreamUsage a(ApiFormat::Anthropic);
  a.feed_event(R"({"type":"message_start","message":{"usage":{"input_tokens":472,"cache_creation_input_tokens":1500,"cache_read_input_tokens":8000,"output_tokens":2,"service_tier":"standard"}}})");
  const Usage before = a.usage();
  const size_t events_before = a.events();
  CHECK_THROWS_AS(a.feed_event(R"({"type":"message_delta","usage":{"input_tokens":999,"service_tier":"priority","output_tokens":"219"}})"),
                  InvalidArgumentError);
  CHECK(a.usage() == before);
  CHECK(a.events() == events_before);
  CHECK_FALSE(a.has_final_usage());
  a.feed_event(R"({"type":"message_delta","usage":{"output_tokens":219}})");
  Usage af = a.finish();
  CHECK(af.complete);
  CHECK(af.input_tokens == 9972);
  CHECK(af.output_tokens == 219);
  CHECK(af.service_tier == ServiceTier::Standard);

  // OpenAI Chat: a chunk with text and a bad usage count: its text is dropped with it.
  StreamUsage c(ApiFormat::OpenAIChat);
  CHECK_THROWS_AS(c.feed("data: {\"choices\":[{\"delta\":{\"content\":\"abcdefghijklmnop\"}}],"
                         "\"usage\":{\"prompt_tokens\":12,\"completion_tokens\":-3}}\n\n"),
                  InvalidArgumentError);
  CHECK(c.usage().output_tokens == 0);
  CHECK(c.estimated_output_tokens() == 0);
  CHECK(c.events() == 0);

  // A final usage whose parts exceed their totals is refused when it arrives (feed raises) and
  // dropped; the stream is not poisoned: finish() gives the estimate (was: usage() and finish()
  // raised for ever after, so the call could not be committed at all).
  StreamUsage o(ApiFormat::OpenAIChat, StreamOptions{.input_tokens_estimate = 50});
  o.feed("data: {\"choices\":[{\"delta\":{\"content\":\"abcdefgh\"}}]}\n\n");
  CHECK_THROWS_AS(o.feed("data: {\"choices\":[],\"usage\":{\"prompt_tokens\":10,\"completion_tokens\":5,"
                         "\"prompt_tokens_details\":{\"cached_tokens\":20}}}\n\n"),
                  InvalidArgumentError);
  CHECK_FALSE(o.has_final_usage());
  Usage of{};
  CHECK_NOTHROW(of = o.finish());
  CHECK_FALSE(of.complete);
  CHECK(of.input_tokens == 50);
  CHECK(of.output_tokens == 2);

  // Gemini: a last chunk (finishReason) with an inconsistent cache count keeps the running
  // totals of the chunks before it.
  StreamUsage g(ApiFormat::Gemini);
  g.feed_event(R"({"candidates":[{"content":{"parts":[{"text":"Hello"}],"role":"model"},"index":0}],"usageMetadata":{"promptTokenCount":100,"candidatesTokenCount":3,"totalTokenCount":103}})");
  const Usage g_before = g.usage();
  CHECK_THROWS_AS(g.feed_event(R"({"candidates":[{"content":{"parts":[{"text":" world"}],"role":"model"},"finishReason":"STOP","index":0}],"usageMetadata":{"promptTokenCount":100,"cachedContentTokenCount":400,"candidatesTokenCount":6,"totalTokenCount":106}})"),
                  InvalidArgumentError);
  CHECK(g.usage() == g_before);
  CHECK_FALSE(g.has_final_usage());

  // A whole response is one event: it raises, as before.
  CHECK_THROWS_AS(usage_from_response(ApiFormat::Gemini,
                                      R"({"usageMetadata":{"promptTokenCount":1,"cachedContentTokenCount":2}})"),
                  InvalidArgumentError);
}

TEST_CASE("providers: Anthropic compaction iterations are billed on top of the top-level usage") {
  // With server-side compaction (beta compact-2026-01-12) the top-level usage counts only the
  // non-compaction iterations; the compaction iteration is billed too and is reported only in
  // usage.iterations (was: ignored, 180k summarised tokens uncharged).
  Usage u = usage_from_response(ApiFormat::Anthropic, R"({"type":"message","content":[],
      "usage":{"input_tokens":23000,"output_tokens":1000,
               "iterations":[{"type":"compaction","input_tokens":180000,"output_tokens":3500},
                             {"type":"message","input_tokens":23000,"output_tokens":1000}]}})");
  CHECK(u.complete);
  CHECK(u.input_tokens == 203000);
  CHECK(u.output_tokens == 4500);
  // Iterations of other models (advisor, fallback) are not this model's tokens: not added.
  Usage v = usage_from_response(ApiFormat::Anthropic, R"({"type":"message","content":[],
      "usage":{"input_tokens":100,"output_tokens":10,
               "iterations":[{"type":"message","input_tokens":100,"output_tokens":10},
                             {"type":"advisor_message","model":"claude-opus-4-6","input_tokens":5000,"output_tokens":300}]}})");
  CHECK(v.input_tokens == 100);
  CHECK(v.output_tokens == 10);
  // Streams: the iterations of the last message_delta (cumulative) replace earlier ones.
  StreamUsage s(ApiFormat::Anthropic);
  s.feed_event(R"({"type":"message_start","message":{"usage":{"input_tokens":23000,"output_tokens":1}}})");
  s.feed_event(R"({"type":"message_delta","usage":{"output_tokens":500,"iterations":[{"type":"compaction","input_tokens":180000,"output_tokens":3500}]}})");
  s.feed_event(R"({"type":"message_delta","usage":{"output_tokens":1000,"iterations":[{"type":"compaction","input_tokens":180000,"output_tokens":3500},{"type":"message","input_tokens":23000,"output_tokens":1000}]}})");
  Usage f = s.finish();
  CHECK(f.input_tokens == 203000);
  CHECK(f.output_tokens == 4500);
  // A bad count inside an iteration is malformed usage like any other.
  CHECK_THROWS_AS(usage_from_response(ApiFormat::Anthropic,
                                      R"({"type":"message","usage":{"input_tokens":1,"output_tokens":1,"iterations":[{"type":"compaction","input_tokens":-5}]}})"),
                  InvalidArgumentError);
}

TEST_CASE("providers: Anthropic fast mode and Vertex traffic types select the tier that billed the call") {
  // Anthropic fast mode (speed: "fast", beta fast-mode-2026-02-01) is billed at a multiple of
  // the standard rates, and the response says at which speed the call ran (a fast request may
  // fall back to standard). Fast maps to the priority tier, as the "fast" service_tier alias
  // already did (was: ignored, priced at standard).
  CHECK(usage_from_response(ApiFormat::Anthropic, R"({"type":"message","content":[],
      "usage":{"input_tokens":10,"output_tokens":5,"service_tier":"standard","speed":"fast"}})")
            .service_tier == ServiceTier::Priority);
  CHECK(usage_from_response(ApiFormat::Anthropic, R"({"type":"message","content":[],
      "usage":{"input_tokens":10,"output_tokens":5,"service_tier":"batch","speed":"standard"}})")
            .service_tier == ServiceTier::Batch);
  StreamUsage a(ApiFormat::Anthropic);
  a.feed_event(R"({"type":"message_start","message":{"usage":{"input_tokens":10,"output_tokens":1,"service_tier":"standard","speed":"fast"}}})");
  CHECK(a.usage().service_tier == ServiceTier::Priority);  // a cut stream's estimate too
  a.feed_event(R"({"type":"message_delta","usage":{"output_tokens":9,"service_tier":"standard"}})");
  CHECK(a.finish().service_tier == ServiceTier::Priority);  // a later service_tier does not undo it

  // Vertex AI: usageMetadata.trafficType names the quota (and price) that served the call.
  auto vertex = [](const char* tt) {
    return usage_from_response(ApiFormat::Gemini, std::string(R"({"candidates":[],"usageMetadata":{"promptTokenCount":10,"candidatesTokenCount":2,"trafficType":")") + tt + R"("}})")
        .service_tier;
  };
  CHECK(vertex("ON_DEMAND_PRIORITY") == ServiceTier::Priority);
  CHECK(vertex("ON_DEMAND_FLEX") == ServiceTier::Flex);
  CHECK(vertex("ON_DEMAND") == ServiceTier::Standard);
  CHECK(vertex("PROVISIONED_THROUGHPUT") == ServiceTier::Standard);
  // Priced with the bundled table: 1000 in x 3.6e-6 + 100 out x 2.16e-5 at priority (was the
  // standard 1000 x 2e-6 + 100 x 1.2e-5 = 0.0032: 44% under what Vertex bills).
  auto prices = PricingEngine::bundled();
  Usage pu = usage_from_response(ApiFormat::Gemini, R"({"candidates":[],"usageMetadata":{"promptTokenCount":1000,"candidatesTokenCount":100,"trafficType":"ON_DEMAND_PRIORITY"}})");
  CHECK(prices->cost("vertex_ai/gemini-3-pro-preview", pu) == Money::parse("0.00576"));
  StreamUsage g(ApiFormat::Gemini);
  g.feed_event(R"({"candidates":[{"content":{"parts":[{"text":"Hi"}],"role":"model"},"index":0}],"usageMetadata":{"promptTokenCount":10,"candidatesTokenCount":1,"trafficType":"ON_DEMAND_FLEX"}})");
  g.feed_event(R"({"candidates":[{"content":{"parts":[{"text":"!"}],"role":"model"},"finishReason":"STOP","index":0}],"usageMetadata":{"promptTokenCount":10,"candidatesTokenCount":2}})");
  Usage gu = g.finish();
  CHECK(gu.complete);
  CHECK(gu.service_tier == ServiceTier::Flex);  // a chunk without the field keeps it
}

TEST_CASE("providers: audio tokens (OpenAI chat, Responses/Realtime spelling, Gemini modalities)") {
  // Chat Completions: audio is part of prompt_tokens / completion_tokens.
  auto chat = [](const char* usage) {
    return usage_from_response(ApiFormat::OpenAIChat, std::string(R"({"choices":[],"usage":)") + usage + "}");
  };
  Usage u = chat(R"({"prompt_tokens":1000,"completion_tokens":300,"total_tokens":1300,
      "prompt_tokens_details":{"cached_tokens":0,"audio_tokens":900},
      "completion_tokens_details":{"reasoning_tokens":0,"audio_tokens":250}})");
  CHECK(u.input_tokens == 1000);
  CHECK(u.audio_input_tokens == 900);
  CHECK(u.output_tokens == 300);
  CHECK(u.audio_output_tokens == 250);
  // cached_tokens without a breakdown are cache reads of text: the audio fills at most the rest
  // of the input (no token counted twice).
  u = chat(R"({"prompt_tokens":1000,"completion_tokens":10,"prompt_tokens_details":{"cached_tokens":512,"audio_tokens":900}})");
  CHECK(u.cache_read_tokens == 512);
  CHECK(u.audio_input_tokens == 488);
  // Audio beyond the whole prompt is inconsistent.
  CHECK_THROWS_AS(chat(R"({"prompt_tokens":100,"completion_tokens":10,"prompt_tokens_details":{"audio_tokens":101}})"),
                  InvalidArgumentError);
  CHECK_THROWS_AS(chat(R"({"prompt_tokens":100,"completion_tokens":10,"completion_tokens_details":{"reasoning_tokens":5,"audio_tokens":6}})"),
                  InvalidArgumentError);
  // Responses: input_tokens_details, or the Realtime spelling input_token_details with the
  // cached audio stated apart.
  u = usage_from_response(ApiFormat::OpenAIResponses, R"({"object":"response","usage":{"input_tokens":400,
      "output_tokens":90,"input_tokens_details":{"cached_tokens":0,"audio_tokens":300},
      "output_tokens_details":{"reasoning_tokens":0,"audio_tokens":80}}})");
  CHECK(u.audio_input_tokens == 300);
  CHECK(u.audio_output_tokens == 80);
  u = usage_from_response(ApiFormat::OpenAIResponses, R"({"object":"realtime.response","usage":{"input_tokens":1200,
      "output_tokens":530,"input_token_details":{"cached_tokens":768,"audio_tokens":1020,
      "cached_tokens_details":{"text_tokens":128,"audio_tokens":640}},"output_token_details":{"audio_tokens":420}}})");
  CHECK(u.cache_read_tokens == 768);
  CHECK(u.audio_input_tokens == 380);
  CHECK(u.audio_output_tokens == 420);
  // Gemini: running totals; a chunk without the details list keeps the audio seen.
  StreamUsage g(ApiFormat::Gemini);
  g.feed_event(R"({"usageMetadata":{"promptTokenCount":500,"promptTokensDetails":[{"modality":"TEXT","tokenCount":20},{"modality":"AUDIO","tokenCount":480}]}})");
  CHECK(g.usage().audio_input_tokens == 480);
  CHECK_FALSE(g.usage().complete);
  g.feed_event(R"({"candidates":[{"finishReason":"STOP"}],"usageMetadata":{"promptTokenCount":500,"candidatesTokenCount":64,
      "candidatesTokensDetails":[{"modality":"AUDIO","tokenCount":60},{"modality":"TEXT","tokenCount":4}]}})");
  Usage gu = g.finish();
  CHECK(gu.complete);
  CHECK(gu.audio_input_tokens == 480);
  CHECK(gu.audio_output_tokens == 60);
}

TEST_CASE("providers: DeepSeek's prompt cache hit/miss split and Groq's x_groq.usage") {
  auto chat = [](const std::string& body) { return usage_from_response(ApiFormat::OpenAIChat, body); };
  // Without prompt_tokens the input is hit + miss.
  Usage u = chat(R"({"choices":[],"usage":{"completion_tokens":20,"prompt_cache_hit_tokens":640,"prompt_cache_miss_tokens":60}})");
  CHECK(u.input_tokens == 700);
  CHECK(u.cache_read_tokens == 640);
  // Beside prompt_tokens_details.cached_tokens the hit count is the one read.
  u = chat(R"({"choices":[],"usage":{"prompt_tokens":700,"completion_tokens":20,"prompt_tokens_details":{"cached_tokens":600},
      "prompt_cache_hit_tokens":640,"prompt_cache_miss_tokens":60}})");
  CHECK(u.input_tokens == 700);
  CHECK(u.cache_read_tokens == 640);
  // Groq: a top-level usage wins over x_groq.usage; x_groq alone is read.
  u = chat(R"({"choices":[],"x_groq":{"id":"req_1","usage":{"prompt_tokens":48,"completion_tokens":25,"total_tokens":73}}})");
  CHECK(u.input_tokens == 48);
  CHECK(u.output_tokens == 25);
  u = chat(R"({"choices":[],"usage":{"prompt_tokens":50,"completion_tokens":26},"x_groq":{"usage":{"prompt_tokens":48,"completion_tokens":25}}})");
  CHECK(u.input_tokens == 50);
  // A first chunk's x_groq without usage is no usage.
  StreamUsage s(ApiFormat::OpenAIChat, {.input_tokens_estimate = 10});
  s.feed_event(R"({"choices":[{"index":0,"delta":{"content":"hi"}}],"x_groq":{"id":"req_1"}})");
  CHECK_FALSE(s.has_final_usage());
}
