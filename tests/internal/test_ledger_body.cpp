// The ledger's canonical event body is hashed into the chain, so its bytes are a contract:
// the direct writer used on the operation path (direct_event_body: every event whose strings
// are well-formed UTF-8 and whose metadata is already in nlohmann's compact dump form) must
// write exactly what nlohmann's ordered dump of the body writes, and hand every other event
// to it. canonical_json decides the metadata: whatever it accepts, nlohmann re-dumps as is.
#include <budget/error.hpp>
#include <doctest/doctest.h>

#include <nlohmann/json.hpp>

#include <cstdint>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "json_text.hpp"
#include "ledger_codec.hpp"

using namespace budget;
using namespace budget::detail;

namespace {
LedgerEvent sample() {
  LedgerEvent e;
  e.time = Timestamp(std::chrono::milliseconds(1'764'000'123'456));
  e.type = EventType::Commit;
  e.request_id = "0PqRs-tu_vwxYZ01";
  e.subject = {"global", "tenant:acme", "user:alice"};
  e.spent = {1'600'000, 2000, 1};
  e.held = {-2'000'000, 0, -1};
  e.granted = {0, 0, 0};
  e.windows = {"tenant:acme|day|1763942400000", "user:alice|month|1761955200000"};
  return e;
}

void same_as_reference(const LedgerEvent& e, bool expect_direct) {
  std::string direct;
  const size_t at = direct_event_body(e, direct, true);
  CHECK((at != std::string::npos) == expect_direct);
  CHECK(event_body(e) == event_body_json(e));
  if (!expect_direct) return;
  CHECK(direct == event_body_json(e));
  // Without windows (the SQLite store's stored body): the reference body of the event without
  // windows, its empty windows field cut out where direct_event_body says it goes.
  std::string bare_direct;
  CHECK(direct_event_body(e, bare_direct, false) == at);
  LedgerEvent bare = e;
  bare.windows.clear();
  std::string ref = event_body_json(bare);
  const std::string empty = ",\"windows\":[]";
  auto pos = ref.find(empty);
  REQUIRE(pos != std::string::npos);
  CHECK(pos == at);
  ref.erase(pos, empty.size());
  CHECK(bare_direct == ref);
  // and the windows field spliced in there gives the whole body.
  std::string field = ",\"windows\":" + nlohmann::json(e.windows).dump();
  CHECK(bare_direct.substr(0, at) + field + bare_direct.substr(at) == event_body_json(e));
}

// An event of the sample's shape carrying `meta` as its metadata.
LedgerEvent with_metadata(std::string meta) {
  LedgerEvent e = sample();
  e.type = EventType::Consume;
  e.metadata = std::move(meta);
  return e;
}

// Random JSON values as nlohmann builds them (their dump is the text under test).
struct Gen {
  std::mt19937_64 rng{20260310};
  uint64_t below(uint64_t n) { return rng() % n; }

  std::string text() {
    static const char* const kPieces[] = {
        "a", "Z", "0", " ", "~", "\"", "\\", "/", "\b", "\f", "\n", "\r", "\t", "\x01", "\x1f", "\x7f",
        "\xc3\xa9", "\xe2\x82\xac", "\xf0\x9f\x98\x80", "\xef\xbf\xbf", "\xed\x9f\xbf", "reason", "{", "]", ",", ":"};
    std::string s;
    const auto n = below(6);
    for (uint64_t i = 0; i < n; ++i) s += kPieces[below(std::size(kPieces))];
    if (below(40) == 0) s += "\xc2\x85";  // a C1 control: written as is
    if (below(30) == 0) s += std::string(1, '\0');
    return s;
  }

  nlohmann::ordered_json value(int depth) {
    switch (below(depth > 4 ? 6 : 9)) {
      case 0: return nullptr;
      case 1: return below(2) == 0;
      case 2: {
        static const int64_t kInts[] = {0, 1, -1, 9, 10, -10, std::numeric_limits<int64_t>::max(),
                                        std::numeric_limits<int64_t>::min(), std::numeric_limits<int64_t>::min() + 1};
        if (below(2)) return kInts[below(std::size(kInts))];
        return static_cast<int64_t>(rng());
      }
      case 3: {
        if (below(3) == 0) return std::numeric_limits<uint64_t>::max();
        return rng();  // often above int64: stored unsigned
      }
      case 4:
        if (below(4) == 0) {
          static const double kFloats[] = {0.5, -1.25, 1.0, 1e300, -0.0, 3.141592653589793};
          return kFloats[below(std::size(kFloats))];
        }
        return text();
      case 5: return text();
      case 6:
      case 7: {
        auto o = nlohmann::ordered_json::object();
        const auto n = below(5);
        for (uint64_t i = 0; i < n; ++i) o[text()] = value(depth + 1);
        return o;
      }
      default: {
        auto a = nlohmann::ordered_json::array();
        const auto n = below(5);
        for (uint64_t i = 0; i < n; ++i) a.push_back(value(depth + 1));
        return a;
      }
    }
  }
};

// Whether `v` holds something canonical_json refuses: a float.
bool refused(const nlohmann::ordered_json& v) {
  if (v.is_number_float()) return true;
  if (v.is_structured())
    for (const auto& x : v)
      if (refused(x)) return true;
  return false;
}
}  // namespace

TEST_CASE("ledger body: the direct writer matches the reference for plain events") {
  auto e = sample();
  same_as_reference(e, true);
  e.model = "gpt-4o";
  e.provider = "openai";
  e.price_version = "litellm:2026-11-01";
  same_as_reference(e, true);
  Usage u;
  u.input_tokens = 1200;
  u.output_tokens = 800;
  u.cache_read_tokens = 5;
  u.reasoning_tokens = 64;
  u.complete = false;
  e.usage = u;
  same_as_reference(e, true);
  for (auto t : {ServiceTier::Batch, ServiceTier::Flex, ServiceTier::Priority}) {  // written when not standard
    e.usage->service_tier = t;
    same_as_reference(e, true);
    CHECK(event_body(e).find(std::string("\"service_tier\":\"") + to_string(t) + "\"") != std::string::npos);
    CHECK(event_from_body(event_body(e)).usage->service_tier == t);
  }
  e.usage->service_tier = ServiceTier::Standard;
  CHECK(event_body(e).find("service_tier") == std::string::npos);  // old events keep their bytes
  e.windows.clear();
  same_as_reference(e, true);
  for (int t = 0; t < 9; ++t) {
    e.type = static_cast<EventType>(t);
    e.spent = {INT64_MIN + t, INT64_MAX - t, -t};
    same_as_reference(e, true);
  }
  e.time = Timestamp(std::chrono::milliseconds(-5));
  same_as_reference(e, true);
}

TEST_CASE("ledger body: audio token parts are written only when not zero, old bodies keep their bytes") {
  // A body as builds before the audio fields wrote it (and as this build writes a usage
  // without audio): it reads back and is written again byte for byte, so its hash holds.
  const std::string old_body =
      R"({"time":1764806400000,"type":"commit","request_id":"r-1","subject":["global","user:a"],)"
      R"("model":"gpt-4o-audio-preview","provider":"openai","price_version":"bundled:x#1",)"
      R"("usage":{"input_tokens":1362,"cache_read_tokens":0,"cache_write_tokens":0,"cache_write_1h_tokens":0,)"
      R"("output_tokens":423,"reasoning_tokens":0,"images":0,"audio_ms":0,"requests":1,"service_tier":"priority",)"
      R"("complete":true},"spent":[7635000,1785,1],"held":[0,0,0],"granted":[0,0,0],"windows":["day:20261204"]})";
  auto e = event_from_body(old_body);
  REQUIRE(e.usage.has_value());
  CHECK(e.usage->audio_input_tokens == 0);
  CHECK(e.usage->audio_output_tokens == 0);
  CHECK(event_body(e) == old_body);
  CHECK(event_body_json(e) == old_body);
  // With audio: both parts after `requests`, the same bytes from both writers, read back.
  e.usage->audio_input_tokens = 1200;
  same_as_reference(e, true);
  const std::string body = event_body(e);
  CHECK(body.find(R"("requests":1,"audio_input_tokens":1200,"service_tier":"priority")") != std::string::npos);
  CHECK(body.find("audio_output_tokens") == std::string::npos);
  e.usage->audio_output_tokens = 336;
  same_as_reference(e, true);
  auto back = event_from_body(event_body(e));
  CHECK(*back.usage == *e.usage);
  CHECK(event_body(back) == event_body(e));
}

TEST_CASE("ledger body: strings that need escaping are written directly, others go through the reference") {
  for (std::string odd : {std::string("quote\"d"), std::string("back\\slash"), std::string("tab\there"),
                          std::string("nl\n\x01\x1f"), std::string("caf\xc3\xa9"), std::string("del\x7f"),
                          std::string("\xf0\x9f\x98\x80"), std::string("nul\0x", 5)}) {
    CAPTURE(odd);
    auto a = sample();
    a.request_id = odd;
    same_as_reference(a, true);
    auto b = sample();
    b.subject.push_back("user:" + odd);
    same_as_reference(b, true);
    auto c = sample();
    c.model = odd;
    c.provider = odd;
    c.price_version = odd;
    same_as_reference(c, true);
    auto d = sample();
    d.windows.push_back("user:" + odd + "|day|0");
    same_as_reference(d, true);
  }
  // C1 controls: well-formed UTF-8 that nlohmann writes as is (valid_utf8 refuses them in ids).
  auto c1 = sample();
  c1.request_id = "c1\xc2\x85";
  same_as_reference(c1, true);
  auto w = sample();
  w.windows.push_back("user:\xc2\x9f|day|0");
  same_as_reference(w, true);
  // Not UTF-8: refused here, and nlohmann refuses it too (the engine checks such text first).
  for (std::string bad_text : {"bad\xff", "\xc3", "\xed\xa0\x80" /* a surrogate */, "\xc0\xaf" /* overlong */}) {
    auto bad = sample();
    bad.model = bad_text;
    std::string out;
    CHECK(direct_event_body(bad, out, true) == std::string::npos);
    CHECK_THROWS_AS(event_body(bad), nlohmann::json::exception);
  }
}

TEST_CASE("ledger body: metadata in nlohmann's dump form is spliced as is, anything else is re-dumped by nlohmann") {
  // Written by our own writers (metadata_json, the consume's), read back by nlohmann::json.
  const std::string direct_cases[] = {
      R"({"reason":"retry","flag":true})",
      R"({"consumed":1500000000,"consumed_tokens":0})",
      R"({"consumed":-9223372036854775808,"consumed_tokens":9223372036854775807})",
      R"({"big":18446744073709551615,"neg":-1,"zero":0,"ten":10})",
      "{\"a\":\"\xc3\xa9\",\"b\":\"x\\ny \\\"q\\\" \\\\\",\"ctl\":\"\\u0001\\u001f\x7f\",\"reason\":\"replaced\"}",
      R"({"zeta":"1","alpha":"2","reason":"why"})",  // not sorted: the reason goes last
      R"({"nested":{"a":[1,[2,[3,{}]],[]],"b":{"c":{"d":null}}},"list":[true,false,null,"s",-5]})",
      "{\"unicode\":\"caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80 \xef\xbf\xbf\",\"\xc3\xa9\":\"k\"}",
      R"({"esc":"\b\f\n\r\t\"\\\u0000\u0007\u000b\u000e\u001b","slash":"/"})",
      R"({"":""})", R"({})", R"([])", R"([1,2,3])", R"("a string")", R"(42)", R"(-7)", R"(true)", R"(null)",
      R"({"a":1,"b":{"a":1},"c":[{"a":1,"b":2}]})",  // the same key in different objects
      R"({"b":1,"a":2,"c":3,"d":4,"ab":5})",
      "{\"c1\":\"\xc2\x85\",\"del\":\"\x7f\"}",  // C1 and DEL: nlohmann writes them as is
  };
  for (const auto& t : direct_cases) {
    CAPTURE(t);
    CHECK(canonical_json(t));
    CHECK(nlohmann::ordered_json::parse(t).dump() == t);
    same_as_reference(with_metadata(t), true);
  }
  // Text that nlohmann would re-dump differently (or that canonical_json does not vouch for).
  const std::string fallback_cases[] = {
      R"({"a": 1})", R"({ "a":1})", R"({"a":1} )", " {}", R"([1, 2])", "{\"a\":1,\n\"b\":2}",
      R"({"f":1.5})", R"({"f":1.0})", R"({"f":-0.25})", R"({"e":1e5})", R"({"e":1E+2})", R"(2.5)",
      R"({"z":-0})", R"({"big":18446744073709551616})", R"({"neg":-9223372036854775809})",
      R"({"big":100000000000000000000})",
      R"({"u":"\u0041"})", R"({"u":"\u00E9"})", R"({"u":"\u001F"})", R"({"u":"\u000a"})", R"({"s":"\/"})",
      R"({"u":"\ud83d\ude00"})",
      R"({"a":1,"a":2})", R"({"b":1,"a":2,"b":3})", R"({"a":{"x":1,"x":1}})",
      R"({"zeta":"1","alpha":"2","zeta":"3"})",
  };
  for (const auto& t : fallback_cases) {
    CAPTURE(t);
    CHECK_FALSE(canonical_json(t));
    same_as_reference(with_metadata(t), false);
  }
  // Too deep for the checker (65 levels): nlohmann decides.
  std::string deep = std::string(65, '[') + std::string(65, ']');
  CHECK_FALSE(canonical_json(deep));
  same_as_reference(with_metadata(deep), false);
  std::string ok = std::string(64, '[') + std::string(64, ']');
  CHECK(canonical_json(ok));
  same_as_reference(with_metadata(ok), true);
  // Not JSON at all: refused (and nlohmann throws).
  for (const std::string& t : std::vector<std::string>{"{", "}", "[1,]", "{\"a\"}", "{\"a\":}", "\"open", "tru", "nul", "-", "01", "[1]x", "{,}",
                        "\"\\u00\"", "\"\\x\"", "\"bad\xff\"", std::string("\"nul\0\"", 6)}) {
    CAPTURE(t);
    CHECK_FALSE(canonical_json(t));
  }
}

TEST_CASE("ledger body: random metadata: direct and nlohmann bodies are the same bytes") {
  Gen g;
  int direct = 0, fallback = 0;
  for (int i = 0; i < 3000; ++i) {
    auto v = g.value(0);
    const std::string t = v.dump();
    CAPTURE(t);
    const bool accepted = canonical_json(t);
    CHECK(accepted == !refused(v));
    if (accepted) CHECK(nlohmann::ordered_json::parse(t).dump() == t);
    (accepted ? direct : fallback) += 1;
    auto e = with_metadata(t);
    if (i % 3 == 0) e.usage = Usage{};
    if (i % 5 == 0) e.windows.clear();
    same_as_reference(e, accepted);
  }
  MESSAGE(direct << " written directly, " << fallback << " through nlohmann");
  CHECK(direct > 1000);
  CHECK(fallback > 100);
}

TEST_CASE("ledger body: whatever canonical_json accepts, nlohmann re-dumps byte for byte (mutated texts)") {
  // Soundness: texts near canonical ones (a byte inserted, removed or replaced, a part
  // repeated); a text accepted must parse and dump to itself.
  Gen g;
  std::mt19937_64 rng(7);
  static const char* const kBytes[] = {" ", "\"", "\\", ",", ":", "{", "}", "[", "]", "0", "1", "-", ".", "e",
                                       "a", "u", "\\u0041", "\\u001f", "\\/", "\xc3", "\xa9", "\xc2\x85", "\n", "\x01"};
  int accepted = 0;
  for (int i = 0; i < 20000; ++i) {
    std::string t = g.value(0).dump();
    const auto edits = 1 + rng() % 3;
    for (uint64_t k = 0; k < edits; ++k) {
      const size_t at = t.empty() ? 0 : rng() % (t.size() + 1);
      switch (rng() % 4) {
        case 0: t.insert(at, kBytes[rng() % std::size(kBytes)]); break;
        case 1: if (at < t.size()) t.erase(at, 1); break;
        case 2: if (at < t.size()) t.replace(at, 1, kBytes[rng() % std::size(kBytes)]); break;
        default: {
          const size_t len = t.empty() ? 0 : rng() % (t.size() - at + 1);
          t.insert(at, t.substr(at, len));
        }
      }
    }
    if (!canonical_json(t)) continue;
    ++accepted;
    CAPTURE(t);
    std::string redumped;
    try {
      redumped = nlohmann::ordered_json::parse(t).dump();
    } catch (const nlohmann::json::exception& ex) {
      FAIL_CHECK("accepted, but nlohmann refuses it: " << ex.what());
      continue;
    }
    CHECK(redumped == t);
  }
  MESSAGE(accepted << " mutated texts accepted");
  CHECK(accepted > 100);
}

TEST_CASE("ledger body: a service tier this build does not know is an error, not standard") {
  // Read as standard, the event would re-encode without it and verify() would report the hash
  // chain broken where nothing was altered (found by a review).
  auto e = sample();
  Usage u;
  u.input_tokens = 10;
  u.service_tier = ServiceTier::Priority;
  e.usage = u;
  std::string body = event_body(e);
  const std::string known = "\"service_tier\":\"priority\"";
  auto pos = body.find(known);
  REQUIRE(pos != std::string::npos);
  body.replace(pos, known.size(), "\"service_tier\":\"ultrafast\"");  // a newer build's tier
  CHECK_THROWS_AS(event_from_body(body), InvalidArgumentError);
  CHECK(event_from_body(event_body(e)).usage->service_tier == ServiceTier::Priority);
}

TEST_CASE("ledger body: an event read back from its body has its metadata in the same order") {
  // Read with sorted keys, metadata written in another order (a reason after the caller's
  // keys) changed the body, and the hash no longer matched it.
  auto e = sample();
  e.metadata = R"({"team":"x","a":{"z":1,"b":[2,{"y":null,"c":true}]},"reason":"goodwill"})";
  const std::string body = event_body(e);
  auto back = event_from_body(body);
  CHECK(back.metadata == e.metadata);
  back.windows = e.windows;
  CHECK(event_body(back) == body);
}

TEST_CASE("json_text readers: what they accept, they read as nlohmann reads it") {
  Gen g;
  std::mt19937_64 rng(11);
  // Arrays of strings as json_strings writes them (a subject), and the strings in them.
  for (int i = 0; i < 3000; ++i) {
    std::vector<std::string> v(rng() % 4);
    for (auto& x : v) x = g.text();
    const std::string text = nlohmann::json(v).dump();
    CAPTURE(text);
    std::vector<std::string> back{"stale"};
    REQUIRE(read_json_strings(text, back));
    CHECK(back == v);
  }
  // Escapes nlohmann reads that our writers do not write: \/ and \u00xx in any case (below 0x80).
  std::vector<std::string> got;
  CHECK(read_json_strings(R"(["a\/b","\u0041\u007F\u001f","\u00e9x"])", got) == false);  // \u00e9: nlohmann decides
  CHECK(read_json_strings(R"(["a\/b","\u0041\u007F\u001f"])", got));
  CHECK(got == std::vector<std::string>{"a/b", "A\x7f\x1f"});
  CHECK(read_json_strings("[]", got));
  CHECK(got.empty());
  for (const std::string& t : std::vector<std::string>{"", "[", "]", "[\"a\"", "[\"a\",]", "[,]", "[\"a\"] ", " []",
                                                        "[\"a\" ,\"b\"]", "[1]", "[\"\\x\"]", "[\"\\u00\"]",
                                                        "[\"\\ud83d\\ude00\"]", "[\"bad\xff\"]", "[\"raw\ttab\"]",
                                                        std::string("[\"nul\0\"]", 8)}) {
    CAPTURE(t);
    CHECK_FALSE(read_json_strings(t, got));
  }
  // Mutated texts: accepted only where nlohmann reads the same strings.
  static const char* const kBytes[] = {" ", "\"", "\\", ",", "[", "]", "a", "\\u0041", "\\u00e9", "\\/", "\\n", "\xc3",
                                       "\xa9", "\xc2\x85", "\x01", "\\ud800"};
  int accepted = 0;
  for (int i = 0; i < 20000; ++i) {
    std::vector<std::string> v(rng() % 4);
    for (auto& x : v) x = g.text();
    std::string t = nlohmann::json(v).dump();
    const size_t at = rng() % (t.size() + 1);
    switch (rng() % 3) {
      case 0: t.insert(at, kBytes[rng() % std::size(kBytes)]); break;
      case 1: if (at < t.size()) t.erase(at, 1); break;
      default: if (at < t.size()) t.replace(at, 1, kBytes[rng() % std::size(kBytes)]);
    }
    if (!read_json_strings(t, got)) continue;
    ++accepted;
    CAPTURE(t);
    std::vector<std::string> ref;
    try {
      ref = nlohmann::json::parse(t).get<std::vector<std::string>>();
    } catch (const nlohmann::json::exception& ex) {
      FAIL_CHECK("accepted, but nlohmann refuses it: " << ex.what());
      continue;
    }
    CHECK(got == ref);
  }
  MESSAGE(accepted << " mutated texts accepted");
  CHECK(accepted > 1000);
}
