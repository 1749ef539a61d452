// Exactness sweep: every priced chat / completion / responses / embedding entry of the shared
// LiteLLM table x a set of usages x the service tiers, against tests/pricing_reference.py
// (Python `decimal`, parsing the JSON text itself: independent of the C++ parser).
#include <budget/error.hpp>
#include <budget/pricing.hpp>

#include <doctest/doctest.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <unistd.h>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

using namespace budget;

namespace {

std::string shared_table_path() {
  return std::string(BUDGET_SHARED_DATA_DIR) + "/model_prices_and_context_window.json";
}

std::vector<std::string> split_tabs(const std::string& s) {
  std::vector<std::string> out;
  size_t i = 0;
  while (true) {
    size_t j = s.find('\t', i);
    out.push_back(s.substr(i, j == std::string::npos ? std::string::npos : j - i));
    if (j == std::string::npos) break;
    i = j + 1;
  }
  return out;
}

}  // namespace

TEST_CASE("pricing: the shared LiteLLM table loads, every entry priced or reported") {
  std::ifstream in(shared_table_path(), std::ios::binary);
  if (!in) {
    MESSAGE("SKIPPED: " << shared_table_path() << " is absent (a user's clone); not tested");
    return;
  }
  std::ostringstream ss;
  ss << in.rdbuf();
  PricingEngine e;
  auto r = e.load_litellm(ss.str());
  MESSAGE("shared table: " << r.loaded << " priced, " << r.unpriceable.size()
                           << " unpriceable, " << r.skipped << " non-model keys skipped, version "
                           << r.table_version);
  CHECK(r.loaded + r.unpriceable.size() + r.skipped == 2'985);  // every top-level key
  CHECK(r.loaded > 2'500);
  size_t without_reason = 0;
  for (const auto& u : r.unpriceable) without_reason += u.reason.empty() ? 1 : 0;
  CHECK(without_reason == 0);
  Usage u;
  u.input_tokens = 1'000'000;
  u.output_tokens = 1'000'000;
  CHECK(e.cost("gpt-4o", u) == Money::parse("12.5"));
}

TEST_CASE("pricing: exactness sweep against the Python decimal reference") {
  const std::string table = shared_table_path();
  std::ifstream probe(table);
  if (!probe) {
    MESSAGE("SKIPPED: " << table << " is absent (a user's clone); exactness sweep not run");
    return;
  }
  const char* given = std::getenv("BUDGET_PRICING_REFERENCE");
  std::string ref_path;
  if (given && *given) {
    ref_path = given;
  } else {
    ref_path = (std::filesystem::temp_directory_path() /
                ("budget_pricing_reference_" + std::to_string(::getpid()) + ".tsv"))
                   .string();
    std::string script = std::string(BUDGET_TEST_DATA_DIR) + "/../pricing_reference.py";
    std::string cmd = "python3 '" + script + "' '" + table + "' '" + ref_path + "' > /dev/null";
    int rc = std::system(cmd.c_str());
    if (rc != 0) {
      // No python3: the sweep cannot run. Visible, and a failure: CI has python3.
      FAIL("cannot run the reference script (python3 " << script << "), exit " << rc);
    }
  }
  std::ifstream ref(ref_path);
  REQUIRE_MESSAGE(ref.good(), "no reference file " << ref_path);
  struct Cleanup {
    std::string path;
    bool owned;
    ~Cleanup() {
      if (owned) std::remove(path.c_str());
    }
  } cleanup{ref_path, !(given && *given)};

  std::ifstream tin(table, std::ios::binary);
  std::ostringstream ss;
  ss << tin.rdbuf();
  PricingEngine e;
  auto report = e.load_litellm(ss.str());
  std::map<std::string, std::string> unpriceable;
  for (const auto& u : report.unpriceable) unpriceable[u.model] = u.reason;

  size_t lines = 0, mismatches = 0, entries_unpriceable = 0;
  std::map<std::string, int> models;
  std::string line;
  while (std::getline(ref, line)) {
    if (line.empty()) continue;
    auto f = split_tabs(line);
    ++lines;
    if (f.size() == 3 && f[1] == "UNPRICEABLE") {
      ++entries_unpriceable;
      if (!unpriceable.count(f[0])) {
        ++mismatches;
        FAIL_CHECK("reference says unpriceable (" << f[2] << ") but the engine loaded " << f[0]);
      }
      continue;
    }
    REQUIRE(f.size() == 14);
    models[f[0]]++;
    static const std::map<std::string, ServiceTier> tiers = {
        {"standard", ServiceTier::Standard}, {"batch", ServiceTier::Batch},
        {"flex", ServiceTier::Flex}, {"priority", ServiceTier::Priority}};
    Usage u;
    u.input_tokens = std::stoll(f[2]);
    u.cache_read_tokens = std::stoll(f[3]);
    u.cache_write_tokens = std::stoll(f[4]);
    u.cache_write_1h_tokens = std::stoll(f[5]);
    u.output_tokens = std::stoll(f[6]);
    u.reasoning_tokens = std::stoll(f[7]);
    u.requests = std::stoll(f[8]);
    u.images = std::stoll(f[9]);
    u.audio_ms = std::stoll(f[10]);
    u.audio_input_tokens = std::stoll(f[11]);
    u.audio_output_tokens = std::stoll(f[12]);
    int64_t expected = std::stoll(f[13]);
    try {
      CostOptions o;
      o.tier = tiers.at(f[1]);
      o.at = from_millis(0);
      Money got = e.cost(f[0], u, o);
      if (got.nanos() != expected) {
        if (++mismatches <= 20)
          FAIL_CHECK(f[0] << " " << f[1] << " usage " << line << ": engine " << got.nanos()
                          << " != reference " << expected);
      }
    } catch (const Error& ex) {
      if (++mismatches <= 20) FAIL_CHECK(f[0] << ": " << ex.what());
    }
  }
  MESSAGE("exactness sweep: " << models.size() << " entries, " << lines << " reference lines, "
                              << entries_unpriceable << " unpriceable, " << mismatches
                              << " mismatches");
  CHECK(mismatches == 0);
  CHECK(models.size() > 2'000);
  // Every model the reference priced resolved to itself (exact name).
  for (const auto& [m, n] : models) {
    if (e.resolve(m).name != m) FAIL_CHECK("resolved " << m << " to " << e.resolve(m).name);
  }
}
