#include <budget/error.hpp>
#include <budget/providers.hpp>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <optional>
#include <string>
#include <utility>

namespace budget {

using json = nlohmann::json;

const char* to_string(ApiFormat f) noexcept {
  switch (f) {
    case ApiFormat::OpenAIChat: return "openai-chat";
    case ApiFormat::OpenAIResponses: return "openai-responses";
    case ApiFormat::Anthropic: return "anthropic";
    case ApiFormat::Gemini: return "gemini";
  }
  return "unknown";
}

ApiFormat parse_api_format(std::string_view n) {
  if (n == "openai" || n == "openai-chat" || n == "chat") return ApiFormat::OpenAIChat;
  if (n == "openai-responses" || n == "responses") return ApiFormat::OpenAIResponses;
  if (n == "anthropic") return ApiFormat::Anthropic;
  if (n == "gemini" || n == "google") return ApiFormat::Gemini;
  throw InvalidArgumentError("unknown API format '" + std::string(n.substr(0, 64)) + "'");
}

namespace {

// Running text counts for the estimate.
struct TextCount {
  int64_t ascii = 0;
  int64_t non_ascii = 0;
  void add(std::string_view s) noexcept {
    for (unsigned char c : s) {
      if (c < 0x80) ++ascii;
      else if (c >= 0xC0) ++non_ascii;  // a lead byte: one code point
    }
  }
  int64_t tokens() const noexcept { return (ascii + 3) / 4 + non_ascii; }
};

constexpr size_t kMaxEventBytes = 32u << 20;
constexpr int kMaxDepth = 128;

std::optional<int64_t> count(const json& obj, const char* key) {
  if (!obj.is_object()) return std::nullopt;
  auto it = obj.find(key);
  if (it == obj.end() || it->is_null()) return std::nullopt;
  if (it->is_number_unsigned()) {
    auto v = it->get<uint64_t>();
    if (v <= static_cast<uint64_t>(INT64_MAX)) return static_cast<int64_t>(v);
  } else if (it->is_number_integer()) {
    auto v = it->get<int64_t>();
    if (v >= 0) return v;
  }
  throw InvalidArgumentError(std::string("usage field '") + key +
                             "' is not a non-negative integer");
}

const json* member(const json& obj, const char* key) {
  if (!obj.is_object()) return nullptr;
  auto it = obj.find(key);
  return it == obj.end() ? nullptr : &*it;
}

// The first of two spellings present (OpenAI Responses `input_tokens_details`, Realtime
// `input_token_details`).
const json* member(const json& obj, const char* key, const char* alt) {
  const json* m = member(obj, key);
  return m ? m : member(obj, alt);
}

// Gemini `promptTokensDetails` / `cacheTokensDetails` / `candidatesTokensDetails`: a list of
// {modality, tokenCount}. The tokens of one modality, 0 when the list has none of it; absent
// (nullopt) when the list itself is absent (a running total that keeps its previous value).
std::optional<int64_t> modality_tokens(const json& usage, const char* key, std::string_view modality) {
  const json* list = member(usage, key);
  if (!list || !list->is_array()) return std::nullopt;
  int64_t n = 0;
  for (const auto& d : *list) {
    const json* m = member(d, "modality");
    if (m && m->is_string() && m->get_ref<const std::string&>() == modality)
      n = checked_add(n, count(d, "tokenCount").value_or(0));
  }
  return n;
}

void add_string(TextCount& t, const json* v) {
  if (v && v->is_string()) t.add(v->get_ref<const std::string&>());
}

// Rejects nesting deeper than kMaxDepth before parsing (nlohmann parses iteratively, but a
// bound keeps memory predictable on hostile input).
void check_depth(std::string_view s) {
  int depth = 0;
  bool in_string = false, escape = false;
  for (char c : s) {
    if (in_string) {
      if (escape) escape = false;
      else if (c == '\\') escape = true;
      else if (c == '"') in_string = false;
    } else if (c == '"') {
      in_string = true;
    } else if (c == '{' || c == '[') {
      if (++depth > kMaxDepth) throw InvalidArgumentError("JSON nested too deeply");
    } else if (c == '}' || c == ']') {
      --depth;
    }
  }
}

json parse_json(std::string_view s) {
  check_depth(s);
  json j = json::parse(s.begin(), s.end(), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded())
    throw InvalidArgumentError("malformed or truncated JSON (" + std::to_string(s.size()) +
                               " bytes)");
  return j;
}

}  // namespace

namespace detail {

// What the events of one response have told so far. process() applies an event to a copy and
// keeps it only when the whole event was read (and, once final, the numbers are consistent):
// an event that raises changes nothing, not even the text it carried.
struct Counts {
  // Provider numbers as reported so far (each overwrites; absent keeps the previous value).
  std::optional<int64_t> in, cached, cache_write, cw5m, cw1h, out, reasoning, tool_prompt;
  std::optional<int64_t> total;  // OpenAI formats: usage.total_tokens
  // DeepSeek: prompt_cache_hit_tokens / prompt_cache_miss_tokens (hit + miss = prompt_tokens).
  std::optional<int64_t> cache_hit, cache_miss;
  // Audio tokens as reported: input (cached ones included), the cached part of them where the
  // provider says (Realtime cached_tokens_details, Gemini cacheTokensDetails), output.
  std::optional<int64_t> audio_in, audio_cached, audio_out;
  // Anthropic: the compaction iterations of usage.iterations (billed, but not in the top-level
  // numbers), summed; the last usage with an iterations array replaces them (cumulative).
  std::optional<int64_t> comp_in, comp_cache_write, comp_cw1h, comp_cached, comp_out;
  ServiceTier tier = ServiceTier::Standard;  // as last reported
  bool fast = false;  // Anthropic usage.speed "fast" seen: billed at the priority (fast) tier
  bool final = false;
  bool saw_finish = false;  // Gemini finishReason
  TextCount text, thinking;
  size_t n_events = 0;
};

struct StreamState : Counts {
  ApiFormat format;
  StreamOptions options;

  // Byte framing.
  enum class Mode { Unknown, Sse, Objects } mode = Mode::Unknown;
  std::string buf;     // unconsumed bytes
  std::string data;    // SSE: data lines of the current event
  bool has_data = false;
  // Objects mode scanner state.
  size_t scan = 0, obj_start = 0;
  int depth = 0;
  bool in_string = false, escape = false;

  StreamState(ApiFormat f, StreamOptions o) : format(f), options(o) {}

  static void set(std::optional<int64_t>& slot, std::optional<int64_t> v) {
    if (v) slot = v;
  }

  // The tier a response names: OpenAI's `service_tier` ("default", "flex", "priority", "scale"),
  // Anthropic's usage.service_tier ("standard", "priority", "batch"). Absent keeps the last one;
  // a value without tier prices here ("default", "scale", "auto", an unknown one) is standard.
  void note_tier(const json* v) {
    if (!v || !v->is_string()) return;
    const auto& t = v->get_ref<const std::string&>();
    tier = t == "priority" || t == "fast" ? ServiceTier::Priority
           : t == "flex"                  ? ServiceTier::Flex
           : t == "batch"                 ? ServiceTier::Batch
                                          : ServiceTier::Standard;
  }

  // `in_details` / `out_details`: the details objects, under either spelling (Chat Completions
  // `prompt_tokens_details`; Responses `input_tokens_details`; Realtime `input_token_details`).
  void openai_usage(const json& u, const char* in_key, const json* in_d, const char* out_key, const json* out_d) {
    set(in, count(u, in_key));
    if (in_d) {
      set(cached, count(*in_d, "cached_tokens"));
      set(audio_in, count(*in_d, "audio_tokens"));
      if (const json* cd = member(*in_d, "cached_tokens_details")) set(audio_cached, count(*cd, "audio_tokens"));
    }
    // DeepSeek (instead of, or beside, prompt_tokens_details.cached_tokens).
    set(cache_hit, count(u, "prompt_cache_hit_tokens"));
    set(cache_miss, count(u, "prompt_cache_miss_tokens"));
    set(out, count(u, out_key));
    if (out_d) {
      set(reasoning, count(*out_d, "reasoning_tokens"));
      set(audio_out, count(*out_d, "audio_tokens"));
    }
    set(total, count(u, "total_tokens"));
  }
  void chat_usage(const json& u) {
    openai_usage(u, "prompt_tokens", member(u, "prompt_tokens_details"), "completion_tokens",
                 member(u, "completion_tokens_details"));
  }
  void responses_usage(const json& u) {
    openai_usage(u, "input_tokens", member(u, "input_tokens_details", "input_token_details"), "output_tokens",
                 member(u, "output_tokens_details", "output_token_details"));
  }

  // The audio part of the input that is not a cache read or write: the reported audio tokens
  // less their cached part where the provider states it; where it does not, cached tokens are
  // taken as text and the audio at most fills the rest of the input (so no audio token is
  // counted twice; the audio priced at the audio rate is never less than the uncached audio).
  // Audio beyond the whole input is left as is, for validate() to refuse.
  static int64_t uncached_audio(int64_t audio, int64_t cached_audio, const Usage& u) {
    if (audio > u.input_tokens) return audio;
    int64_t a = audio - std::min(cached_audio, audio);
    int64_t room = u.input_tokens - u.cache_read_tokens - u.cache_write_tokens;
    return std::max<int64_t>(0, std::min(a, room));
  }

  // OpenAI counts reasoning inside the output total (total_tokens = input + output). Some
  // OpenAI-compatible APIs (xAI's Grok) report it beside the output instead: their
  // total_tokens = input + output + reasoning. Only then is the output total + reasoning;
  // with OpenAI's own numbers the condition cannot hold (reasoning > 0).
  int64_t openai_output() const {
    int64_t o = out.value_or(0), r = reasoning.value_or(0), sum;
    if (r > 0 && in && total && !__builtin_add_overflow(*in, o, &sum) &&
        !__builtin_add_overflow(sum, r, &sum) && sum == *total)
      return checked_add(o, r);
    return o;
  }

  // Cache writes of one Anthropic usage object: the total, or the sum of its 5-minute and
  // 1-hour parts when the total is absent; the 1-hour part at most the total.
  static std::pair<int64_t, int64_t> anthropic_cache_write(std::optional<int64_t> total,
                                                           std::optional<int64_t> w5m,
                                                           std::optional<int64_t> w1h) {
    int64_t cw = total ? *total : checked_add(w5m.value_or(0), w1h.value_or(0));
    return {cw, std::min(w1h.value_or(0), cw)};
  }

  // Vertex AI usageMetadata.trafficType: the quota that served the call. Pay-as-you-go priority
  // and flex are priced apart; ON_DEMAND and PROVISIONED_THROUGHPUT (not billed per token) are
  // standard. Absent keeps the last one.
  void note_traffic_type(const json* v) {
    if (!v || !v->is_string()) return;
    const auto& t = v->get_ref<const std::string&>();
    tier = t == "ON_DEMAND_PRIORITY" ? ServiceTier::Priority
           : t == "ON_DEMAND_FLEX"   ? ServiceTier::Flex
                                     : ServiceTier::Standard;
  }

  void anthropic_usage(const json& u) {
    note_tier(member(u, "service_tier"));
    // Fast mode: the speed the call actually ran at (a fast request may fall back to standard).
    if (const json* sp = member(u, "speed"); sp && sp->is_string())
      fast = sp->get_ref<const std::string&>() == "fast";
    set(in, count(u, "input_tokens"));
    set(cache_write, count(u, "cache_creation_input_tokens"));
    set(cached, count(u, "cache_read_input_tokens"));
    if (const json* cc = member(u, "cache_creation"); cc && cc->is_object()) {
      set(cw5m, count(*cc, "ephemeral_5m_input_tokens"));
      set(cw1h, count(*cc, "ephemeral_1h_input_tokens"));
    }
    set(out, count(u, "output_tokens"));
    // Part of output_tokens (thinking, with its block delimiters).
    if (const json* d = member(u, "output_tokens_details"); d && d->is_object())
      set(reasoning, count(*d, "thinking_tokens"));
    // Server-side compaction: the top-level numbers are the sum of the non-compaction
    // iterations; a compaction iteration is billed on top of them. Iterations of other types
    // ("message": already in the top level; "advisor_message", "fallback_message": another
    // model's tokens) are not added.
    if (const json* its = member(u, "iterations"); its && its->is_array()) {
      int64_t ci = 0, ccw = 0, c1h = 0, ccr = 0, co = 0;
      for (const auto& it : *its) {
        const json* ty = member(it, "type");
        if (!ty || !ty->is_string() || ty->get_ref<const std::string&>() != "compaction") continue;
        std::optional<int64_t> w5m, w1h;
        if (const json* cc = member(it, "cache_creation"); cc && cc->is_object()) {
          w5m = count(*cc, "ephemeral_5m_input_tokens");
          w1h = count(*cc, "ephemeral_1h_input_tokens");
        }
        auto [cw, cw1] = anthropic_cache_write(count(it, "cache_creation_input_tokens"), w5m, w1h);
        ci = checked_add(ci, count(it, "input_tokens").value_or(0));
        ccw = checked_add(ccw, cw);
        c1h = checked_add(c1h, cw1);
        ccr = checked_add(ccr, count(it, "cache_read_input_tokens").value_or(0));
        co = checked_add(co, count(it, "output_tokens").value_or(0));
      }
      comp_in = ci, comp_cache_write = ccw, comp_cw1h = c1h, comp_cached = ccr, comp_out = co;
    }
  }

  void gemini_usage(const json& u) {
    note_traffic_type(member(u, "trafficType"));
    set(in, count(u, "promptTokenCount"));
    set(cached, count(u, "cachedContentTokenCount"));
    set(out, count(u, "candidatesTokenCount"));
    set(reasoning, count(u, "thoughtsTokenCount"));
    set(tool_prompt, count(u, "toolUsePromptTokenCount"));
    set(audio_in, modality_tokens(u, "promptTokensDetails", "AUDIO"));
    set(audio_cached, modality_tokens(u, "cacheTokensDetails", "AUDIO"));
    set(audio_out, modality_tokens(u, "candidatesTokensDetails", "AUDIO"));
  }

  // One event (or a whole response): applied entirely or not at all.
  void process(const json& obj, bool whole_response) {
    Counts& counts = *this;
    Counts saved = counts;
    try {
      apply(obj, whole_response);
      if (final) (void)build();  // validates: inconsistent final numbers are refused here
    } catch (...) {
      counts = std::move(saved);
      throw;
    }
  }

  void apply(const json& obj, bool whole_response) {
    if (obj.is_array()) {  // e.g. a Gemini JSON-array body
      for (const auto& el : obj) apply(el, whole_response);
      return;
    }
    if (!obj.is_object()) return;
    ++n_events;
    switch (format) {
      case ApiFormat::OpenAIChat: {
        note_tier(member(obj, "service_tier"));  // on the response and on every chunk
        if (const json* ch = member(obj, "choices"); ch && ch->is_array()) {
          for (const auto& c : *ch) {
            for (const char* k : {"delta", "message"}) {
              const json* d = member(c, k);
              if (!d || !d->is_object()) continue;
              add_string(text, member(*d, "content"));
              add_string(text, member(*d, "refusal"));
              add_string(thinking, member(*d, "reasoning_content"));
              add_string(text, member(*d, "reasoning_content"));
              if (const json* a = member(*d, "audio")) add_string(text, member(*a, "transcript"));
              if (const json* tc = member(*d, "tool_calls"); tc && tc->is_array())
                for (const auto& call : *tc)
                  if (const json* fn = member(call, "function")) add_string(text, member(*fn, "arguments"));
            }
          }
        }
        const json* u = member(obj, "usage");
        // Groq: the usage of a stream rides in `x_groq.usage` of its last chunk (besides, or
        // instead of, the top-level one).
        if (!u || !u->is_object())
          if (const json* xg = member(obj, "x_groq")) u = member(*xg, "usage");
        if (u && u->is_object()) {
          chat_usage(*u);
          final = true;
        }
        break;
      }
      case ApiFormat::OpenAIResponses: {
        const json* type = member(obj, "type");
        std::string_view t = type && type->is_string() ? std::string_view(type->get_ref<const std::string&>()) : "";
        // The response object rides on the lifecycle events (response.created, .in_progress,
        // .completed, ...): its tier is known from the first, so a stream cut early is priced at it.
        if (const json* r = member(obj, "response"); r && r->is_object()) note_tier(member(*r, "service_tier"));
        if (t == "response.output_text.delta" || t == "response.refusal.delta" ||
            t == "response.function_call_arguments.delta") {
          add_string(text, member(obj, "delta"));
        } else if (t == "response.reasoning_summary_text.delta" || t == "response.reasoning_text.delta") {
          add_string(text, member(obj, "delta"));
          add_string(thinking, member(obj, "delta"));
        } else if (t == "response.completed" || t == "response.incomplete" || t == "response.failed" ||
                   t == "response.done") {  // response.done: the Realtime API's, per response
          if (const json* r = member(obj, "response")) {
            if (const json* u = member(*r, "usage"); u && u->is_object()) {
              responses_usage(*u);
              final = true;
            }
          }
        } else if (t.empty() || t == "response") {
          note_tier(member(obj, "service_tier"));
          // A whole response object.
          if (const json* outl = member(obj, "output"); outl && outl->is_array() && whole_response) {
            for (const auto& item : *outl) {
              bool reasoning_item = member(item, "type") && *member(item, "type") == "reasoning";
              for (const char* k : {"content", "summary"}) {
                if (const json* cs = member(item, k); cs && cs->is_array())
                  for (const auto& c : *cs) {
                    add_string(text, member(c, "text"));
                    if (reasoning_item) add_string(thinking, member(c, "text"));
                  }
              }
              add_string(text, member(item, "arguments"));
            }
          }
          if (const json* u = member(obj, "usage"); u && u->is_object()) {
            responses_usage(*u);
            final = true;
          }
        }
        break;
      }
      case ApiFormat::Anthropic: {
        const json* type = member(obj, "type");
        std::string_view t = type && type->is_string() ? std::string_view(type->get_ref<const std::string&>()) : "";
        if (t == "message_start") {
          if (const json* m = member(obj, "message"))
            if (const json* u = member(*m, "usage"); u && u->is_object()) anthropic_usage(*u);
        } else if (t == "content_block_delta") {
          if (const json* d = member(obj, "delta")) {
            add_string(text, member(*d, "text"));
            add_string(text, member(*d, "partial_json"));
            add_string(text, member(*d, "thinking"));
            add_string(thinking, member(*d, "thinking"));
            // The compaction summary is output of the (billed) compaction iteration.
            if (const json* dt = member(*d, "type"); dt && dt->is_string() && *dt == "compaction_delta")
              add_string(text, member(*d, "content"));
          }
        } else if (t == "message_delta") {
          if (const json* u = member(obj, "usage"); u && u->is_object()) {
            anthropic_usage(*u);
            final = true;
          }
        } else if (t == "message") {
          if (const json* cs = member(obj, "content"); cs && cs->is_array())
            for (const auto& c : *cs) {
              add_string(text, member(c, "text"));
              add_string(text, member(c, "thinking"));
              add_string(thinking, member(c, "thinking"));
              if (const json* ct = member(c, "type"); ct && ct->is_string() && *ct == "compaction")
                add_string(text, member(c, "content"));
            }
          if (const json* u = member(obj, "usage"); u && u->is_object()) {
            anthropic_usage(*u);
            final = true;
          }
        }
        break;
      }
      case ApiFormat::Gemini: {
        if (const json* cands = member(obj, "candidates"); cands && cands->is_array()) {
          for (const auto& c : *cands) {
            if (const json* fr = member(c, "finishReason"); fr && fr->is_string()) saw_finish = true;
            const json* content = member(c, "content");
            const json* parts = content ? member(*content, "parts") : nullptr;
            if (!parts || !parts->is_array()) continue;
            for (const auto& p : *parts) {
              const json* th = member(p, "thought");
              bool thought = th && th->is_boolean() && th->get<bool>();
              add_string(text, member(p, "text"));
              if (thought) add_string(thinking, member(p, "text"));
              if (const json* fc = member(p, "functionCall"); fc && fc->is_object()) text.add(fc->dump());
            }
          }
        }
        if (const json* u = member(obj, "usageMetadata"); u && u->is_object()) {
          gemini_usage(*u);
          if (saw_finish || whole_response) final = true;
        }
        break;
      }
    }
  }

  Usage build() const {
    Usage u;
    switch (format) {
      case ApiFormat::OpenAIChat:
      case ApiFormat::OpenAIResponses:
        // DeepSeek's split, when present, is the cache read (and, without prompt_tokens, the input).
        u.input_tokens = in ? *in : cache_hit || cache_miss ? checked_add(cache_hit.value_or(0), cache_miss.value_or(0)) : 0;
        u.cache_read_tokens = cache_hit ? *cache_hit : cached.value_or(0);
        u.output_tokens = openai_output();
        u.reasoning_tokens = reasoning.value_or(0);
        break;
      case ApiFormat::Anthropic: {
        auto [cw, cw1] = anthropic_cache_write(cache_write, cw5m, cw1h);
        u.cache_write_tokens = checked_add(cw, comp_cache_write.value_or(0));
        u.cache_write_1h_tokens = checked_add(cw1, comp_cw1h.value_or(0));
        u.cache_read_tokens = checked_add(cached.value_or(0), comp_cached.value_or(0));
        u.input_tokens = checked_add(checked_add(checked_add(in.value_or(0), comp_in.value_or(0)),
                                                 u.cache_write_tokens),
                                     u.cache_read_tokens);
        u.output_tokens = checked_add(out.value_or(0), comp_out.value_or(0));
        u.reasoning_tokens = reasoning.value_or(0);
        break;
      }
      case ApiFormat::Gemini:
        u.input_tokens = checked_add(in.value_or(0), tool_prompt.value_or(0));
        u.cache_read_tokens = cached.value_or(0);
        u.reasoning_tokens = reasoning.value_or(0);
        u.output_tokens = checked_add(out.value_or(0), u.reasoning_tokens);
        break;
    }
    if (audio_in) u.audio_input_tokens = uncached_audio(*audio_in, audio_cached.value_or(0), u);
    u.audio_output_tokens = audio_out.value_or(0);
    u.requests = 1;
    u.service_tier = fast ? ServiceTier::Priority : tier;
    if (final) {
      u.complete = true;
      try {
        u.validate();
      } catch (const InvalidArgumentError& e) {
        throw InvalidArgumentError(std::string("provider usage is inconsistent: ") + e.what());
      }
      return u;
    }
    // Estimate: reported counts so far, raised to the text estimate.
    u.complete = false;
    bool input_known = in || cached || cache_write || cw5m || cw1h || tool_prompt || comp_in || cache_hit || cache_miss;
    if (!input_known) u.input_tokens = std::max<int64_t>(0, options.input_tokens_estimate);
    u.output_tokens = std::max(u.output_tokens, text.tokens());
    u.reasoning_tokens = std::min(std::max(u.reasoning_tokens, thinking.tokens()), u.output_tokens);
    u.cache_read_tokens = std::min(u.cache_read_tokens, u.input_tokens);
    u.cache_write_tokens = std::min(u.cache_write_tokens, u.input_tokens - u.cache_read_tokens);
    u.cache_write_1h_tokens = std::min(u.cache_write_1h_tokens, u.cache_write_tokens);
    u.audio_input_tokens =
        std::min(u.audio_input_tokens, u.input_tokens - u.cache_read_tokens - u.cache_write_tokens);
    u.audio_output_tokens = std::min(u.audio_output_tokens, u.output_tokens - u.reasoning_tokens);
    return u;
  }

  void dispatch_payload(std::string_view payload) {
    std::string_view p = payload;
    while (!p.empty() && (p.front() == ' ' || p.front() == '\t' || p.front() == '\n' || p.front() == '\r'))
      p.remove_prefix(1);
    if (p.empty() || p == "[DONE]") return;
    process(parse_json(p), false);
  }

  // ---- SSE framing ----
  void sse_line(std::string_view line) {
    if (line.empty()) {  // dispatch
      if (has_data) {
        std::string payload;
        payload.swap(data);
        has_data = false;
        dispatch_payload(payload);
      }
      return;
    }
    if (line.front() == ':') return;  // comment
    auto colon = line.find(':');
    std::string_view field = line.substr(0, colon), value;
    if (colon != std::string_view::npos) {
      value = line.substr(colon + 1);
      if (!value.empty() && value.front() == ' ') value.remove_prefix(1);
    }
    if (field == "data") {
      if (has_data) data.push_back('\n');
      data.append(value);
      has_data = true;
      if (data.size() > kMaxEventBytes) throw InvalidArgumentError("stream event too large");
    }
    // event:, id:, retry: and unknown fields are ignored (payloads carry their type).
  }

  void sse_drain(bool at_end) {
    size_t pos = 0;
    while (pos < buf.size()) {
      size_t eol = buf.find_first_of("\r\n", pos);
      if (eol == std::string::npos) break;
      if (buf[eol] == '\r' && eol + 1 == buf.size() && !at_end) break;  // maybe CRLF split
      std::string_view line(buf.data() + pos, eol - pos);
      size_t next = eol + 1;
      if (buf[eol] == '\r' && next < buf.size() && buf[next] == '\n') ++next;
      try {
        sse_line(line);
      } catch (...) {
        // The bad event is dropped with the lines before it: the next feed goes on after it
        // (left in the buffer, it was read again by every later feed, which then failed too,
        // and the events before it in this read were counted again each time).
        buf.erase(0, next);
        throw;
      }
      pos = next;
    }
    buf.erase(0, pos);
    if (buf.size() > kMaxEventBytes) throw InvalidArgumentError("stream line too large");
    if (at_end) {
      if (!buf.empty()) {
        std::string last;
        last.swap(buf);
        sse_line(last);
      }
      sse_line({});
    }
  }

  // ---- JSON object framing (Gemini array stream, or concatenated objects) ----
  void objects_drain() {
    for (; scan < buf.size(); ++scan) {
      char c = buf[scan];
      if (depth == 0) {
        if (c == '{') {
          obj_start = scan;
          depth = 1;
        } else if (c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == ',' || c == '[' || c == ']') {
          // separators of the array stream
        } else {
          buf.erase(0, scan + 1);  // dropped with what was read before it: the next feed goes on
          scan = 0;
          obj_start = 0;
          throw InvalidArgumentError("malformed JSON stream: unexpected character outside an object");
        }
        continue;
      }
      if (in_string) {
        if (escape) escape = false;
        else if (c == '\\') escape = true;
        else if (c == '"') in_string = false;
        continue;
      }
      if (c == '"') {
        in_string = true;
      } else if (c == '{' || c == '[') {
        if (++depth > kMaxDepth) throw InvalidArgumentError("JSON nested too deeply");
      } else if (c == '}' || c == ']') {
        if (--depth == 0) {
          std::string_view obj(buf.data() + obj_start, scan + 1 - obj_start);
          try {
            process(parse_json(obj), false);
          } catch (...) {
            // Drop the bad object: the next feed resumes after it (as for an SSE event).
            buf.erase(0, scan + 1);
            scan = 0;
            obj_start = 0;
            throw;
          }
        }
      }
    }
    if (depth == 0) {
      buf.clear();
      scan = 0;
    } else if (obj_start > 0) {
      buf.erase(0, obj_start);
      scan -= obj_start;
      obj_start = 0;
    }
    if (buf.size() > kMaxEventBytes) throw InvalidArgumentError("stream object too large");
  }

  void feed(std::string_view bytes) {
    if (mode == Mode::Unknown) {
      size_t i = 0;
      while (i < bytes.size() && (bytes[i] == ' ' || bytes[i] == '\t' || bytes[i] == '\r' || bytes[i] == '\n')) ++i;
      if (i == bytes.size()) {
        buf.append(bytes);
        return;
      }
      mode = (bytes[i] == '[' || bytes[i] == '{') ? Mode::Objects : Mode::Sse;
    }
    buf.append(bytes);
    if (mode == Mode::Sse) sse_drain(false);
    else objects_drain();
  }

  void finish() {
    if (mode == Mode::Sse) sse_drain(true);
    else if (mode == Mode::Objects && depth != 0)
      throw InvalidArgumentError("stream ended inside a JSON object (truncated)");
  }
};

}  // namespace detail

struct StreamUsage::Impl : detail::StreamState {
  using StreamState::StreamState;
};

StreamUsage::StreamUsage(ApiFormat format, StreamOptions options)
    : impl_(std::make_unique<Impl>(format, options)) {}
StreamUsage::~StreamUsage() = default;
StreamUsage::StreamUsage(StreamUsage&&) noexcept = default;
StreamUsage& StreamUsage::operator=(StreamUsage&&) noexcept = default;

void StreamUsage::feed(std::string_view bytes) { impl_->feed(bytes); }
void StreamUsage::feed_event(std::string_view payload) { impl_->dispatch_payload(payload); }
Usage StreamUsage::finish() {
  impl_->finish();
  return impl_->build();
}
Usage StreamUsage::usage() const { return impl_->build(); }
bool StreamUsage::has_final_usage() const noexcept { return impl_->final; }
int64_t StreamUsage::estimated_output_tokens() const noexcept { return impl_->text.tokens(); }
size_t StreamUsage::events() const noexcept { return impl_->n_events; }

int64_t estimate_tokens(std::string_view text) noexcept {
  TextCount t;
  t.add(text);
  return t.tokens();
}

Usage usage_from_response(ApiFormat format, std::string_view body) {
  detail::StreamState impl(format, {});
  impl.process(parse_json(body), true);
  return impl.build();
}

}  // namespace budget
