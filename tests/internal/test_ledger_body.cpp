// The ledger's canonical event body is hashed into the chain, so its bytes are a contract:
// the direct writer used on the hot path (plain strings, no metadata) must write exactly what
// nlohmann's ordered dump of the body writes, and hand every other event to it.
#include <budget/error.hpp>
#include <doctest/doctest.h>

#include <string>
#include <vector>

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

void same_as_reference(const LedgerEvent& e, bool expect_plain) {
  std::string direct;
  CHECK(plain_event_body(e, direct) == expect_plain);
  CHECK(event_body(e) == event_body_json(e));
  if (!expect_plain) return;
  // Without windows: the reference body with its windows field cut out.
  LedgerEvent bare = e;
  bare.windows.clear();
  std::string ref = event_body_json(bare);
  const std::string empty = ",\"windows\":[]";
  auto pos = ref.find(empty);
  REQUIRE(pos != std::string::npos);
  ref.erase(pos, empty.size());
  CHECK(direct == ref);
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

TEST_CASE("ledger body: anything not plain goes through the reference encoder") {
  auto e = sample();
  e.metadata = R"({"reason":"retry","flag":true})";
  same_as_reference(e, false);
  for (std::string odd : {std::string("quote\"d"), std::string("back\\slash"), std::string("tab\there"),
                          std::string("caf\xc3\xa9"), std::string("del\x7f")}) {
    CAPTURE(odd);
    auto a = sample();
    a.request_id = odd;
    same_as_reference(a, false);
    auto b = sample();
    b.subject.push_back("user:" + odd);
    same_as_reference(b, false);
    auto c = sample();
    c.model = odd;
    same_as_reference(c, false);
    auto d = sample();  // a plain event whose window key is not plain: event_body falls back
    d.windows.push_back("user:" + odd + "|day|0");
    CHECK(event_body(d) == event_body_json(d));
  }
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
