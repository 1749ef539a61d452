// PricingEngine: exact costs, loaders, resolution, tiers, markups and overrides.
#include <budget/error.hpp>
#include <budget/pricing.hpp>

#include <doctest/doctest.h>

#include <atomic>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <thread>

using namespace budget;

namespace {

Usage tokens(int64_t in, int64_t out) {
  Usage u;
  u.input_tokens = in;
  u.output_tokens = out;
  return u;
}

Timestamp day(int d) { return from_millis(int64_t{86'400'000} * d); }

ModelPrice mp(std::string provider, std::string in, std::string out = "", std::string extra = "") {
  ModelPrice p;
  p.provider = std::move(provider);
  p.input = std::move(in);
  p.output = std::move(out);
  p.extra = std::move(extra);
  return p;
}
CostOptions at(Timestamp t, bool markup = true) {
  CostOptions o;
  o.at = t;
  o.apply_markup = markup;
  return o;
}
CostOptions tier(ServiceTier t) {
  CostOptions o;
  o.tier = t;
  return o;
}
MarkupRule rule(MarkupRule::Scope scope, std::string match, std::string percent, Timestamp from,
                Money fixed = {}) {
  MarkupRule r;
  r.scope = scope;
  r.match = std::move(match);
  r.percent = std::move(percent);
  r.effective_from = from;
  r.fixed = fixed;
  return r;
}
using S = MarkupRule::Scope;

const char* kSmallTable = R"({
  "last_updated": "2026-01-01",
  "sample_spec": {"input_cost_per_token": 0.0, "mode": "one of: chat"},
  "gpt-4o": {"litellm_provider": "openai", "mode": "chat", "max_output_tokens": 16384,
             "input_cost_per_token": 2.5e-06, "output_cost_per_token": 1e-05,
             "cache_read_input_token_cost": 1.25e-06,
             "input_cost_per_token_batches": 1.25e-06, "output_cost_per_token_batches": 5e-06,
             "input_cost_per_token_priority": 4.25e-06, "output_cost_per_token_priority": 1.7e-05,
             "supports_vision": true, "some_future_field": {"x": [1, 2, 3]}},
  "gpt-4o-2024-08-06": {"litellm_provider": "openai", "mode": "chat",
             "input_cost_per_token": 2.5e-06, "output_cost_per_token": 1e-05},
  "o-reasoner": {"litellm_provider": "openai", "mode": "chat",
             "input_cost_per_token": 1e-06, "output_cost_per_token": 4e-06,
             "output_cost_per_reasoning_token": 8e-06},
  "claude-sonnet-4-5": {"litellm_provider": "anthropic", "mode": "chat", "max_tokens": 64000,
             "input_cost_per_token": 3e-06, "output_cost_per_token": 1.5e-05,
             "cache_read_input_token_cost": 3e-07, "cache_creation_input_token_cost": 3.75e-06,
             "cache_creation_input_token_cost_above_1hr": 6e-06,
             "input_cost_per_token_above_200k_tokens": 6e-06,
             "output_cost_per_token_above_200k_tokens": 2.25e-05,
             "cache_read_input_token_cost_above_200k_tokens": 6e-07,
             "cache_creation_input_token_cost_above_200k_tokens": 7.5e-06,
             "cache_creation_input_token_cost_above_1hr_above_200k_tokens": 1.2e-05},
  "gemini/gemini-2.5-pro": {"litellm_provider": "gemini", "mode": "chat",
             "input_cost_per_token": 1.25e-06, "output_cost_per_token": 1e-05},
  "dashscope/qwen-flash": {"litellm_provider": "dashscope", "mode": "chat",
             "tiered_pricing": [
               {"input_cost_per_token": 5e-08, "output_cost_per_token": 4e-07, "range": [0, 256000.0]},
               {"input_cost_per_token": 2.5e-07, "output_cost_per_token": 2e-06, "range": [256000.0, 1000000.0]}]},
  "odd-price": {"litellm_provider": "x", "mode": "chat", "input_cost_per_token": 5.46875e-07,
             "output_cost_per_token": 1e-15},
  "too-precise": {"litellm_provider": "x", "mode": "chat", "input_cost_per_token": 1e-30},
  "string-price": {"litellm_provider": "x", "mode": "chat", "input_cost_per_token": "0.1"},
  "search-only": {"litellm_provider": "exa", "mode": "search", "tiered_pricing": [
             {"input_cost_per_query": 0.005, "max_results_range": [0, 25]}]},
  "whisper-1": {"litellm_provider": "openai", "mode": "audio_transcription", "input_cost_per_second": 0.0001},
  "dall-e-3": {"litellm_provider": "openai", "mode": "image_generation", "output_cost_per_image": 0.04},
  "pplx": {"litellm_provider": "perplexity", "mode": "chat", "input_cost_per_request": 0.005,
           "input_cost_per_token": 1e-06, "output_cost_per_token": 1e-06},
  "fallback_generalizations": [{"name": "x"}],
  "a_string": "not a model"
})";

std::unique_ptr<PricingEngine> small_engine() {
  auto e = std::make_unique<PricingEngine>();
  e->load_litellm(kSmallTable);
  return e;
}

std::string read_all(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

}  // namespace

TEST_CASE("pricing: LiteLLM load report") {
  PricingEngine e;
  auto r = e.load_litellm(kSmallTable);
  CHECK(r.table_version.rfind("litellm:2026-01-01#", 0) == 0);
  CHECK(r.skipped == 4);  // last_updated, sample_spec, fallback_generalizations, a_string
  CHECK(r.loaded == 10);
  REQUIRE(r.unpriceable.size() == 3);
  std::map<std::string, std::string> why;
  for (const auto& u : r.unpriceable) why[u.model] = u.reason;
  CHECK(why["too-precise"].find("24 decimal places") != std::string::npos);
  CHECK(why["string-price"].find("not a number") != std::string::npos);
  CHECK(why["search-only"].find("no price field") != std::string::npos);
  CHECK(e.size() == 10);
  CHECK_THROWS_AS(e.cost("too-precise", tokens(1, 1)), UnknownModelError);
}

TEST_CASE("pricing: names the compact format cannot write are refused, so to_compact always reads back") {
  // Found by fuzz_price_table: a model named "!" loaded from LiteLLM JSON was written by
  // to_compact() as a line that load_compact() reads as an unknown directive.
  const char* table = R"({
    "last_updated": "2026-01-01\n!bogus",
    "!": {"litellm_provider": "p", "input_cost_per_token": 1e-06},
    "#x": {"litellm_provider": "p", "input_cost_per_token": 1e-06},
    "a b": {"litellm_provider": "p", "input_cost_per_token": 1e-06},
    "tab\tname": {"litellm_provider": "p", "input_cost_per_token": 1e-06},
    "odd-provider": {"litellm_provider": "p q", "input_cost_per_token": 1e-06},
    "fine!#": {"litellm_provider": "p", "input_cost_per_token": 1e-06}
  })";
  PricingEngine e;
  auto r = e.load_litellm(table);
  CHECK(r.loaded == 1);
  std::set<std::string> refused;
  for (const auto& u : r.unpriceable) refused.insert(u.model);
  CHECK(refused == std::set<std::string>{"!", "#x", "a b", "tab\tname", "odd-provider"});
  PricingEngine again;
  again.load_compact(e.to_compact());  // the newline in last_updated is not written either
  CHECK(again.cost("fine!#", tokens(1000, 0)) == e.cost("fine!#", tokens(1000, 0)));
  const ModelPrice price = mp("p", "0.000001");
  // ... nor a name that is not UTF-8 (the ledger records names; resolve() returns them).
  for (const char* bad : {"", "!x", "#x", "a b", "a\nb", "gpt\xff", "\xc3\x28", "\xed\xa0\x80"}) {
    CAPTURE(bad);
    CHECK_THROWS_AS(e.set_price(bad, price), InvalidArgumentError);
    CHECK_THROWS_AS(e.add_alias(bad, "fine!#"), InvalidArgumentError);
  }
  CHECK_THROWS_AS(e.load_compact("!budget-prices 1\nbad\xffname in=1e-6\n"), InvalidArgumentError);
  CHECK(e.knows("fine!#"));  // the refused load left the table as it was
  again.load_compact(e.to_compact());
}

TEST_CASE("pricing: exact prices from the number text, rounded up per line item") {
  auto e = small_engine();
  // 5.46875e-07 is exact: 1000 tokens = 0.000546875 exactly.
  CHECK(e->cost("odd-price", tokens(1000, 0)) == Money::from_nanos(546'875));
  // One token: 546.875 nanos -> rounded up to 547.
  CHECK(e->cost("odd-price", tokens(1, 0)) == Money::from_nanos(547));
  // 1e-15 per token: one token is rounded up to a nano; 1e6 tokens are exactly one nano.
  CHECK(e->cost("odd-price", tokens(0, 1)) == Money::from_nanos(1));
  CHECK(e->cost("odd-price", tokens(0, 1'000'000)) == Money::from_nanos(1));
  CHECK(e->cost("odd-price", tokens(0, 1'000'001)) == Money::from_nanos(2));
  // Each line rounded separately: 1 in + 1 out.
  CHECK(e->cost("odd-price", tokens(1, 1)) == Money::from_nanos(548));
  // $0.0375 per million tokens.
  e->set_price("cheap", mp("x", "0.0000000375"));
  CHECK(e->cost("cheap", tokens(1'000'000, 0)) == Money::parse("0.0375"));
  CHECK(e->cost("cheap", tokens(1, 0)) == Money::from_nanos(38));  // 37.5 nanos -> 38
  CHECK(e->cost("gpt-4o", tokens(0, 0)).is_zero());
}

TEST_CASE("pricing: OpenAI cache and reasoning, line items") {
  auto e = small_engine();
  Usage u = tokens(10'000, 2'000);
  u.cache_read_tokens = 6'000;
  auto q = e->price("gpt-4o", u, day(1));
  // input 4000 x 2.5e-6 = 0.01; cache 6000 x 1.25e-6 = 0.0075; output 2000 x 1e-5 = 0.02
  CHECK(q.cost == Money::parse("0.0375"));
  REQUIRE(q.items.size() == 3);
  CHECK(q.items[0] == LineItem{"input", 4000, "0.0000025", Money::parse("0.01")});
  CHECK(q.items[1] == LineItem{"cache_read", 6000, "0.00000125", Money::parse("0.0075")});
  CHECK(q.items[2] == LineItem{"output", 2000, "0.00001", Money::parse("0.02")});
  CHECK(q.model == "gpt-4o");
  CHECK(q.provider == "openai");
  CHECK(q.price_version.rfind("litellm:2026-01-01#", 0) == 0);

  // Reasoning billed at its own price when the entry has one, else with the output.
  Usage r = tokens(100, 1'000);
  r.reasoning_tokens = 400;
  auto qr = e->quote("o-reasoner", r);
  REQUIRE(qr.items.size() == 3);
  CHECK(qr.items[1].name == "output");
  CHECK(qr.items[1].quantity == 600);
  CHECK(qr.items[2].name == "reasoning");
  CHECK(qr.items[2].amount == Money::parse("0.0032"));
  CHECK(e->quote("gpt-4o", r).items.size() == 2);  // input, output (reasoning inside)
}

TEST_CASE("pricing: Anthropic cache writes, 1-hour writes and the 200k long-context tier") {
  auto e = small_engine();
  Usage u;
  u.input_tokens = 1'000 + 2'000 + 3'000;  // uncached + cache read + cache write
  u.cache_read_tokens = 2'000;
  u.cache_write_tokens = 3'000;
  u.cache_write_1h_tokens = 1'000;
  u.output_tokens = 500;
  auto q = e->quote("claude-sonnet-4-5", u);
  // 1000x3e-6 + 2000x3e-7 + 2000x3.75e-6 + 1000x6e-6 + 500x1.5e-5
  CHECK(q.cost == Money::parse("0.0246"));
  CHECK(q.items.size() == 5);
  // Above 200k input tokens, the whole request is billed at the tier prices.
  Usage big = tokens(200'001, 1'000);
  CHECK(e->cost("claude-sonnet-4-5", big) == Money::parse("1.222506"));  // 200001x6e-6 + 1000x2.25e-5
  Usage edge = tokens(200'000, 1'000);
  CHECK(e->cost("claude-sonnet-4-5", edge) == Money::parse("0.615"));
  big.cache_write_tokens = 100'000;
  big.cache_write_1h_tokens = 100'000;
  // 100001 x 6e-6 + 100000 x 1.2e-5 + 1000 x 2.25e-5
  CHECK(e->cost("claude-sonnet-4-5", big) == Money::parse("1.822506"));
}

TEST_CASE("pricing: tiered_pricing ranges and service tiers") {
  auto e = small_engine();
  CHECK(e->cost("dashscope/qwen-flash", tokens(256'000, 1'000)) == Money::parse("0.0132"));
  CHECK(e->cost("dashscope/qwen-flash", tokens(256'001, 1'000)) == Money::parse("0.06600025"));
  CostOptions batch = tier(ServiceTier::Batch);
  CostOptions prio = tier(ServiceTier::Priority);
  CostOptions flex = tier(ServiceTier::Flex);
  Usage u = tokens(1'000, 1'000);
  u.cache_read_tokens = 400;
  CHECK(e->cost("gpt-4o", u) == Money::parse("0.0120"));           // 600x2.5e-6+400x1.25e-6+1000x1e-5
  CHECK(e->cost("gpt-4o", u, batch) == Money::parse("0.00625"));   // 600x1.25e-6+400x1.25e-6+1000x5e-6
  CHECK(e->cost("gpt-4o", u, prio) == Money::parse("0.02005"));    // 600x4.25e-6+400x1.25e-6+1000x1.7e-5
  CHECK(e->cost("gpt-4o", u, flex) == e->cost("gpt-4o", u));       // no flex prices: standard
}

TEST_CASE("pricing: a service tier without a long-context price keeps its ratio to the standard price") {
  PricingEngine e;
  e.load_compact(
      "!budget-prices 1\n"
      "half provider=openai in=2e-6 in@1000=4e-6 out=1e-5 in/batch=1e-6 out/batch=5e-6\n"
      "prio provider=openai in=5.5e-6 in@272000=1.1e-5 out=3.3e-5 out@272000=4.95e-5 "
      "in/priority=1.375e-5 out/priority=8.25e-5\n"
      "third provider=openai in=3e-6 in@1000=1e-5 in/flex=1e-6\n"
      "own provider=openai in=2e-6 in@1000=4e-6 in/batch=1e-6 in/batch@1000=3e-6\n");
  auto unit = [&](const char* model, ServiceTier t, int64_t in, int64_t out, const char* item) {
    Usage u = tokens(in, out);
    u.service_tier = t;
    for (const auto& li : e.quote(model, u).items)
      if (li.name == item) return li.unit_price;
    return std::string("(none)");
  };
  // Below the long-context level nothing changes.
  CHECK(unit("half", ServiceTier::Batch, 1'000, 10, "input") == "0.000001");
  // Above it: batch is half the long-context price (was its base price, 0.000001: undercharged).
  CHECK(unit("half", ServiceTier::Batch, 1'001, 10, "input") == "0.000002");
  CHECK(unit("half", ServiceTier::Batch, 1'001, 10, "output") == "0.000005");  // standard has no level: as stated
  // Priority 2.5x, prices whose 1e-24 product needs more than 128 bits (4.95e19 x 8.25e19).
  CHECK(unit("prio", ServiceTier::Priority, 272'001, 10, "input") == "0.0000275");
  CHECK(unit("prio", ServiceTier::Priority, 272'001, 10, "output") == "0.00012375");
  // A ratio that does not end: the unit price is rounded up at the 24th decimal.
  CHECK(unit("third", ServiceTier::Flex, 1'001, 0, "input") == "0.000003333333333333333334");
  // A tier's own long-context price wins.
  CHECK(unit("own", ServiceTier::Batch, 1'001, 0, "input") == "0.000003");
}

TEST_CASE("pricing: the tier a usage names is priced, over the caller's default tier") {
  auto e = small_engine();
  Usage u = tokens(1'000, 1'000);
  u.cache_read_tokens = 400;
  u.service_tier = ServiceTier::Priority;
  CHECK(e->cost("gpt-4o", u) == Money::parse("0.02005"));  // was 0.0120: priority priced as standard
  CHECK(e->cost("gpt-4o", u, tier(ServiceTier::Batch)) == Money::parse("0.02005"));  // the usage's tier wins
  CHECK(e->quote("gpt-4o", u).cost == Money::parse("0.02005"));
  CHECK(e->price("gpt-4o", u, Timestamp{}).cost == Money::parse("0.02005"));  // the Pricer a manager uses
  CHECK(e->price_brief("gpt-4o", u, Timestamp{}).cost == Money::parse("0.02005"));
  u.service_tier = ServiceTier::Standard;  // unnamed: the caller's default applies
  CHECK(e->cost("gpt-4o", u, tier(ServiceTier::Batch)) == Money::parse("0.00625"));
  u.service_tier = static_cast<ServiceTier>(9);
  CHECK_THROWS_AS(e->cost("gpt-4o", u), InvalidArgumentError);
}

TEST_CASE("service tier names") {
  for (auto t : {ServiceTier::Standard, ServiceTier::Batch, ServiceTier::Flex, ServiceTier::Priority})
    CHECK(parse_service_tier(to_string(t)) == t);
  CHECK(parse_service_tier("default") == ServiceTier::Standard);
  CHECK_THROWS_AS(parse_service_tier("Priority"), InvalidArgumentError);
  CHECK_THROWS_AS(parse_service_tier(""), InvalidArgumentError);
  Usage a, b;
  b.service_tier = ServiceTier::Flex;
  a += b;  // one call's parts: the tier is the call's
  CHECK(a.service_tier == ServiceTier::Flex);
  a += Usage{};
  CHECK(a.service_tier == ServiceTier::Flex);
}

TEST_CASE("pricing: per request, per image, per audio second") {
  auto e = small_engine();
  Usage u = tokens(1'000, 1'000);
  CHECK(e->cost("pplx", u) == Money::parse("0.007"));
  u.requests = 3;
  CHECK(e->cost("pplx", u) == Money::parse("0.017"));
  Usage img;
  img.images = 3;
  CHECK(e->cost("dall-e-3", img) == Money::parse("0.12"));
  Usage audio;
  audio.audio_ms = 61'234;  // 61.234 s x 0.0001 = 0.0061234
  auto q = e->quote("whisper-1", audio);
  CHECK(q.cost == Money::parse("0.0061234"));
  REQUIRE(q.items.size() == 1);
  CHECK(q.items[0].name == "audio");
  CHECK(q.items[0].unit_price == "0.0000001");  // per millisecond
}

TEST_CASE("pricing: audio tokens at the audio per-token prices (real table), text price when none") {
  // gpt-4o-audio-preview in the bundled (LiteLLM) table: text $2.50/M in, $10/M out; audio
  // $40/M in, $80/M out.
  auto e = PricingEngine::bundled();
  Usage u;
  u.input_tokens = 1'362;
  u.audio_input_tokens = 1'200;
  u.output_tokens = 423;
  u.audio_output_tokens = 336;
  Usage as_text = u;
  as_text.audio_input_tokens = as_text.audio_output_tokens = 0;
  CHECK(e->cost("gpt-4o-audio-preview", as_text) == Money::parse("0.007635"));
  // 162 x 2.5e-6 + 1200 x 4e-5 + 87 x 1e-5 + 336 x 8e-5
  auto q = e->quote("gpt-4o-audio-preview", u);
  CHECK(q.cost == Money::parse("0.076155"));
  CHECK(q.cost > e->cost("gpt-4o-audio-preview", as_text) * 9);
  std::vector<std::string> names;
  for (const auto& li : q.items) names.push_back(li.name);
  CHECK(names == std::vector<std::string>{"input", "audio_input", "output", "audio_output"});
  CHECK(q.items[1].quantity == 1'200);
  CHECK(q.items[1].unit_price == "0.00004");
  CHECK(q.items[3].quantity == 336);
  // Cache reads stay at the cache-read price; the audio part is disjoint from them.
  Usage rt;
  rt.input_tokens = 1'200;
  rt.cache_read_tokens = 768;
  rt.audio_input_tokens = 380;
  rt.output_tokens = 530;
  rt.audio_output_tokens = 420;
  // gpt-realtime: in 4e-6, cr 4e-7, ain 3.2e-5, out 1.6e-5, aout 6.4e-5:
  // 52 x 4e-6 + 768 x 4e-7 + 380 x 3.2e-5 + 110 x 1.6e-5 + 420 x 6.4e-5
  CHECK(e->cost("gpt-realtime", rt) == Money::parse("0.0413152"));
  // gemini-2.0-flash has an audio input price only: audio output is billed at the text price.
  Usage g;
  g.input_tokens = 1'000;
  g.audio_input_tokens = 1'000;
  g.output_tokens = 100;
  g.audio_output_tokens = 100;
  CHECK(e->cost("gemini-2.0-flash", g) == Money::parse("0.00074"));  // 1000 x 7e-7 + 100 x 4e-7
  // An entry without audio prices (gpt-4o): the audio tokens cost the text price.
  Usage t = u;
  t.audio_input_tokens = t.audio_output_tokens = 0;
  CHECK(e->cost("gpt-4o", u) == e->cost("gpt-4o", t));
  CHECK(e->quote("gpt-4o", u).items.size() == 2);
}

TEST_CASE("pricing: audio token prices from LiteLLM fields, the compact format and overrides") {
  PricingEngine e;
  e.load_litellm(R"({"audio-m": {"litellm_provider": "openai", "mode": "chat",
      "input_cost_per_token": 2.5e-06, "output_cost_per_token": 1e-05,
      "input_cost_per_audio_token": 4e-05, "output_cost_per_audio_token": 8e-05,
      "input_cost_per_audio_token_priority": 8e-05}})");
  Usage u;
  u.input_tokens = 10;
  u.audio_input_tokens = 10;
  CHECK(e.cost("audio-m", u) == Money::parse("0.0004"));
  u.service_tier = ServiceTier::Priority;
  CHECK(e.cost("audio-m", u) == Money::parse("0.0008"));
  const std::string compact = e.to_compact();
  CHECK(compact.find("ain=4e-05") != std::string::npos);
  CHECK(compact.find("aout=8e-05") != std::string::npos);
  CHECK(compact.find("ain/priority=8e-05") != std::string::npos);
  PricingEngine back;
  back.load_compact(compact);
  CHECK(back.cost("audio-m", u) == Money::parse("0.0008"));
  ModelPrice mp;
  mp.input = "0.000001";
  mp.extra = "ain=0.00001 aout=0.00002";
  e.set_price("custom-audio", mp);
  Usage c;
  c.input_tokens = 100;
  c.audio_input_tokens = 50;
  c.output_tokens = 10;
  c.audio_output_tokens = 10;
  CHECK(e.cost("custom-audio", c) == Money::parse("0.00075"));  // 50 x 1e-6 + 50 x 1e-5 + 10 x 2e-5 (out unpriced)
}

TEST_CASE("usage: audio parts are validated and summed") {
  Usage u;
  u.input_tokens = 100;
  u.cache_read_tokens = 60;
  u.audio_input_tokens = 40;
  CHECK_NOTHROW(u.validate());
  u.audio_input_tokens = 41;
  CHECK_THROWS_AS(u.validate(), InvalidArgumentError);
  u.audio_input_tokens = -1;
  CHECK_THROWS_AS(u.validate(), InvalidArgumentError);
  u.audio_input_tokens = 0;
  u.output_tokens = 10;
  u.reasoning_tokens = 4;
  u.audio_output_tokens = 7;
  CHECK_THROWS_AS(u.validate(), InvalidArgumentError);
  u.audio_output_tokens = 6;
  CHECK_NOTHROW(u.validate());
  Usage sum = u;
  sum += u;
  CHECK(sum.audio_output_tokens == 12);
  Usage a;
  a.audio_input_tokens = INT64_MAX;
  CHECK_THROWS_AS(a += a, OverflowError);
}

TEST_CASE("pricing: name resolution") {
  auto e = small_engine();
  CHECK(e->resolve("gpt-4o").name == "gpt-4o");
  CHECK(e->resolve("openai/gpt-4o").name == "gpt-4o");
  CHECK(e->resolve("anthropic/claude-sonnet-4-5").name == "claude-sonnet-4-5");
  CHECK(e->resolve("claude-sonnet-4-5-20250929").name == "claude-sonnet-4-5");
  CHECK(e->resolve("claude-sonnet-4-5@20250929").name == "claude-sonnet-4-5");
  CHECK(e->resolve("gpt-4o-2024-08-06").name == "gpt-4o-2024-08-06");  // exact entry wins
  CHECK(e->resolve("gpt-4o-2024-11-20").name == "gpt-4o");            // dated suffix
  CHECK(e->resolve("openai/gpt-4o-2024-11-20").name == "gpt-4o");
  CHECK(e->resolve("google/gemini-2.5-pro").name == "gemini/gemini-2.5-pro");
  CHECK(e->resolve("GPT-4o").name == "gpt-4o");
  CHECK_THROWS_AS(e->resolve("anthropic/gpt-4o"), UnknownModelError);  // provider mismatch
  CHECK_THROWS_AS(e->cost("no-such-model", tokens(1, 1)), UnknownModelError);
  CHECK_FALSE(e->knows("no-such-model"));
  e->add_alias("my-default", "openai/gpt-4o");
  CHECK(e->resolve("my-default").name == "gpt-4o");
  CHECK(e->knows("my-default"));
  // Fallback price for unknown names.
  e->set_fallback(mp("unknown", "0.00001", "0.00003"));
  auto q = e->quote("no-such-model", tokens(1'000, 1'000));
  CHECK(q.cost == Money::parse("0.04"));
  CHECK(q.model == "fallback");
  e->set_fallback(std::nullopt);
  CHECK_THROWS_AS(e->cost("no-such-model", tokens(1, 1)), UnknownModelError);
}

TEST_CASE("pricing: estimate uses the table's max output tokens") {
  auto e = small_engine();
  CHECK(e->estimate("gpt-4o", 1'000, 500) == Money::parse("0.0075"));
  CHECK(e->estimate("gpt-4o", 1'000) == Money::parse("0.16634"));          // 16384 out
  CHECK(e->estimate("claude-sonnet-4-5", 0) == Money::parse("0.96"));     // max_tokens 64000
  CHECK(e->estimate("odd-price", 0) == Money::from_nanos(1));              // default 4096 out
  CHECK_THROWS_AS(e->estimate("gpt-4o", -1), InvalidArgumentError);
}

TEST_CASE("pricing: markups and overrides are versioned by effective date") {
  auto e = small_engine();
  const Usage u = tokens(1'000, 1'000);  // 0.0125 at list price
  const std::string v0 = e->price_version(day(5));

  MarkupRule all = rule(S::All, "", "10", day(10));
  e->add_markup(all);
  auto before = e->price("gpt-4o", u, day(9));
  auto after = e->price("gpt-4o", u, day(10));
  CHECK(before.cost == Money::parse("0.0125"));
  CHECK(after.cost == Money::parse("0.01375"));
  CHECK(after.items.back().name == "markup");
  CHECK(after.items.back().amount == Money::parse("0.00125"));
  CHECK(before.price_version == v0);
  CHECK(after.price_version != v0);
  CHECK(after.price_version.rfind(v0, 0) == 0);

  // More specific rules win: provider < pattern < model.
  e->add_markup(rule(S::Provider, "openai", "20", day(20)));
  e->add_markup(rule(S::Pattern, "gpt-4*", "-50", day(20), Money::parse("0.001")));
  e->add_markup(rule(S::Model, "o-reasoner", "0.0001", day(20)));
  CHECK(e->cost("gpt-4o", u, at(day(20))) == Money::parse("0.00725"));  // -50% + 0.001
  CHECK(e->cost("gpt-4o", u, at(day(20), false)) == Money::parse("0.0125"));
  CHECK(e->cost("claude-sonnet-4-5", tokens(1'000, 0), at(day(20))) ==
        Money::parse("0.0033"));  // the All rule: +10%
  CHECK(e->cost("o-reasoner", tokens(1'000'000, 0), at(day(20))) ==
        Money::parse("1.000001"));  // +0.0001%
  // A rule with the same scope and match replaces the older one from its date.
  e->add_markup(rule(S::Provider, "openai", "30", day(30)));
  CHECK(e->cost("o-reasoner", tokens(1'000, 0), at(day(20))) != Money{});
  CHECK(e->cost("gemini/gemini-2.5-pro", tokens(1'000'000, 0), at(day(25))) ==
        Money::parse("1.375"));  // All +10%

  // Recorded history does not change: the quote at day 9/10 is recomputed identically.
  CHECK(e->price("gpt-4o", u, day(9)).cost == before.cost);
  CHECK(e->price("gpt-4o", u, day(10)).cost == after.cost);
  CHECK(e->price("gpt-4o", u, day(10)).price_version == after.price_version);

  // Price override in force from day 40.
  e->set_price("gpt-4o", mp("openai", "0.000002", "0.000008"),
               day(40));
  CHECK(e->cost("gpt-4o", u, at(day(39), false)) == Money::parse("0.0125"));
  CHECK(e->cost("gpt-4o", u, at(day(40), false)) == Money::parse("0.01"));
  CHECK(e->price_version(day(39)) != e->price_version(day(40)));
  CHECK(e->price_version(day(9)) == v0);
  // A new model by override.
  e->set_price("house-model", [] { ModelPrice p = mp("local", ""); p.per_request = "0.01"; return p; }(), day(50));
  CHECK_THROWS_AS(e->cost("house-model", u, at(day(49))), UnknownModelError);
  CHECK(e->cost("house-model", u, at(day(50), false)) == Money::parse("0.01"));
  // Identical configurations give identical versions.
  PricingEngine a, b;
  a.load_litellm(kSmallTable);
  b.load_litellm(kSmallTable);
  a.add_markup(all);
  b.add_markup(all);
  CHECK(a.price_version(day(11)) == b.price_version(day(11)));
  CHECK_THROWS_AS(e->add_markup(rule(S::All, "", "-101", day(0))), InvalidArgumentError);
  CHECK_THROWS_AS(e->add_markup(rule(S::All, "", "abc", day(0))), InvalidArgumentError);
  // A negative fixed fee is refused, as a percent below -100 is: it made costs negative
  // (-100% and -1 per request priced gpt-4o at -1.00), and every priced reserve, commit and
  // record then failed with "amount is negative".
  const std::string v_before = e->price_version(day(60));
  CHECK_THROWS_AS(e->add_markup(rule(S::All, "", "-100", day(0), Money::parse("-1"))), InvalidArgumentError);
  CHECK_THROWS_AS(e->add_markup(rule(S::All, "", "0", day(0), Money::from_nanos(-1))), InvalidArgumentError);
  CHECK(e->price_version(day(60)) == v_before);  // refused: nothing added
  CHECK_THROWS_AS(e->set_price("x", mp("", "1e-40")), InvalidArgumentError);
  // A negative default maximum of output tokens would make estimate() price a negative usage.
  const auto version = e->price_version(day(60));
  CHECK_THROWS_AS(e->set_price("x", [] { ModelPrice p = mp("", "0.000001"); p.max_output_tokens = -5; return p; }()),
                  InvalidArgumentError);
  CHECK(e->price_version(day(60)) == version);  // nothing changed
}

TEST_CASE("pricing: extra price fields in the compact syntax") {
  PricingEngine e;
  e.set_price("m", mp("p", "1e-6", "2e-6", "in@1000=3e-6 out/batch=1e-6"));
  CHECK(e.cost("m", tokens(1'000, 1'000)) == Money::parse("0.003"));
  CHECK(e.cost("m", tokens(1'001, 1'000)) == Money::parse("0.005003"));
  CHECK(e.cost("m", tokens(1'000, 1'000), tier(ServiceTier::Batch)) == Money::parse("0.002"));
  CHECK_THROWS_AS(e.set_price("m", mp("", "", "", "bogus=1")), InvalidArgumentError);
}

TEST_CASE("pricing: compact format round trip and errors") {
  auto e = small_engine();
  std::string compact = e->to_compact();
  CHECK(compact.rfind("!budget-prices 1\n!date 2026-01-01\n", 0) == 0);
  PricingEngine c;
  auto r = c.load_compact(compact);
  CHECK(r.loaded == e->size());
  for (const char* m : {"gpt-4o", "claude-sonnet-4-5", "dashscope/qwen-flash", "odd-price", "pplx"}) {
    Usage u = tokens(300'000, 12'345);
    u.cache_read_tokens = 1'000;
    u.cache_write_tokens = 500;
    u.cache_write_1h_tokens = 100;
    for (auto t : {ServiceTier::Standard, ServiceTier::Batch, ServiceTier::Priority})
      CHECK(c.cost(m, u, tier(t)) == e->cost(m, u, tier(t)));
  }
  CHECK_THROWS_AS(c.load_compact("gpt-4o in=1"), InvalidArgumentError);             // no header
  CHECK_THROWS_AS(c.load_compact("!budget-prices 2\n"), InvalidArgumentError);      // version
  CHECK_THROWS_AS(c.load_compact("!budget-prices 1\nm in=1e-99\n"), InvalidArgumentError);
  CHECK_THROWS_AS(c.load_compact("!budget-prices 1\nm in\n"), InvalidArgumentError);
  CHECK(c.size() == e->size());  // failed loads keep the previous table
  auto ok = c.load_compact("# comment\n!budget-prices 1\n!alias short m\nm in=1e-6 future_key=7\n");
  CHECK(ok.loaded == 1);
  CHECK(c.cost("short", tokens(1'000, 0)) == Money::parse("0.001"));
}

TEST_CASE("pricing: malformed JSON is an InvalidArgumentError, never a crash") {
  PricingEngine e;
  e.load_litellm(kSmallTable);
  std::string t = kSmallTable;
  for (size_t cut : {size_t{0}, size_t{1}, size_t{10}, t.size() / 2, t.size() - 1})
    CHECK_THROWS_AS(e.load_litellm(t.substr(0, cut)), InvalidArgumentError);
  CHECK_THROWS_AS(e.load_litellm("[1,2]"), InvalidArgumentError);
  CHECK_THROWS_AS(e.load_litellm(std::string(100'000, '[')), InvalidArgumentError);
  CHECK_THROWS_AS(e.load_litellm("{\"a\": 1e999999999999}"), InvalidArgumentError);
  CHECK(e.size() == 10);
  CHECK_THROWS_AS(e.load_litellm_file("/nonexistent/table.json"), InvalidArgumentError);
}

TEST_CASE("pricing: invalid usage and overflow") {
  auto e = small_engine();
  Usage bad = tokens(10, 10);
  bad.cache_read_tokens = 11;
  CHECK_THROWS_AS(e->cost("gpt-4o", bad), InvalidArgumentError);
  CHECK_THROWS_AS(e->cost("gpt-4o", tokens(-1, 0)), InvalidArgumentError);
  e->set_price("pricey", mp("", "1000000"));
  CHECK_THROWS_AS(e->cost("pricey", tokens(INT64_MAX, 0)), OverflowError);
  CHECK_THROWS_AS(e->cost("pricey", tokens(10'000, 0)), OverflowError);  // 1e10 units > Money
}

TEST_CASE("pricing: concurrent readers while rules change") {
  auto e = small_engine();
  std::atomic<bool> stop{false};
  std::atomic<int> errors{0};
  std::vector<std::thread> readers;
  for (int t = 0; t < 4; ++t)
    readers.emplace_back([&] {
      Usage u = tokens(1'000, 1'000);
      while (!stop.load()) {
        Money m = e->cost("openai/gpt-4o", u, at(day(1)));
        if (m != Money::parse("0.0125")) ++errors;
      }
    });
  for (int i = 0; i < 200; ++i)
    e->add_markup(rule(S::Model, "m" + std::to_string(i), "5", day(2)));
  stop = true;
  for (auto& r : readers) r.join();
  CHECK(errors.load() == 0);
}

TEST_CASE("pricing: price_brief is price() without line items, markups and fallback included") {
  auto e = PricingEngine::bundled();
  MarkupRule rule;
  rule.scope = MarkupRule::Scope::Provider;
  rule.match = "anthropic";
  rule.percent = "10";
  e->add_markup(rule);
  ModelPrice fb;
  fb.provider = "local";
  fb.input = "0.000001";
  fb.output = "0.000002";
  e->set_fallback(fb);
  Usage u = tokens(12'345, 678);
  u.cache_read_tokens = 2'000;
  for (const char* m : {"gpt-4o", "anthropic/claude-sonnet-4-5-20250929", "no-such-model-anywhere"}) {
    auto full = e->price(m, u, day(1));
    auto brief = e->price_brief(m, u, day(1));
    CHECK(brief.cost == full.cost);
    CHECK(brief.model == full.model);
    CHECK(brief.provider == full.provider);
    CHECK(brief.items.empty());
    CHECK_FALSE(full.items.empty());
  }
  e->set_fallback(std::nullopt);
  CHECK_THROWS_AS(e->price_brief("no-such-model-anywhere", u, day(1)), UnknownModelError);
}

TEST_CASE("pricing: the bundled table") {
  auto info = PricingEngine::bundled_table_info();
  MESSAGE("bundled table: " << info.entries << " entries, last_updated " << std::string(info.date));
  auto e = PricingEngine::bundled();
  CHECK(e->size() == info.entries);
  CHECK(e->size() > 2'000);
  CHECK(e->cost("gpt-4o", tokens(1'000'000, 1'000'000)) == Money::parse("12.5"));
  CHECK(e->resolve("anthropic/claude-sonnet-4-5-20250929").provider == "anthropic");
  CHECK(e->price_version(day(1)).rfind("bundled:", 0) == 0);

  // Generated from the shared LiteLLM table: every bundled entry prices like the loader.
  std::string path = std::string(BUDGET_SHARED_DATA_DIR) + "/model_prices_and_context_window.json";
  std::string text = read_all(path);
  if (text.empty()) {
    MESSAGE("SKIPPED: " << path << " is absent; bundled-vs-LiteLLM comparison not run");
    return;
  }
  PricingEngine l;
  l.load_litellm(text);
  std::string compact = e->to_compact();
  size_t compared = 0;
  std::istringstream lines(compact);
  std::string line;
  while (std::getline(lines, line)) {
    if (line.empty() || line[0] == '!' || line[0] == '#') continue;
    std::string name = line.substr(0, line.find(' '));
    for (int64_t in : {int64_t{0}, int64_t{1'234}, int64_t{300'000}}) {
      Usage u = tokens(in, 777);
      u.cache_read_tokens = in / 3;
      u.cache_write_tokens = in / 5;
      u.reasoning_tokens = 100;
      u.images = 1;
      u.audio_ms = 1'500;
      for (auto t : {ServiceTier::Standard, ServiceTier::Priority}) {
        if (l.cost(name, u, tier(t)) != e->cost(name, u, tier(t))) {
          FAIL_CHECK("bundled differs from LiteLLM for " << name);
        }
      }
    }
    ++compared;
  }
  CHECK(compared == info.entries);
}
