// Test fixture: one BudgetManager per store kind, on a fresh store, with a manual clock.
// The conformance suite runs every case against every store listed in BUDGET_TEST_STORES
// (default "memory,sqlite"; the test script adds "redis" with BUDGET_TEST_REDIS_URL).
#pragma once

#include <budget/budget.hpp>

#include <doctest/doctest.h>

#include <atomic>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <random>
#include <sstream>
#include <string>
#include <vector>

namespace testutil {

inline std::vector<std::string> store_kinds() {
  const char* env = std::getenv("BUDGET_TEST_STORES");
  std::string s = env && *env ? env : "memory,sqlite";
  std::vector<std::string> out;
  std::stringstream ss(s);
  for (std::string item; std::getline(ss, item, ',');)
    if (!item.empty()) out.push_back(item);
  return out;
}

inline std::string unique_name() {
  static std::atomic<int> n{0};
  std::random_device rd;
  return std::to_string(::getpid()) + "_" + std::to_string(rd()) + "_" + std::to_string(n++);
}

inline std::filesystem::path temp_dir() {
  auto d = std::filesystem::temp_directory_path() / "budget-tests";
  std::filesystem::create_directories(d);
  return d;
}

// A fresh store URL of the given kind.
inline std::string fresh_url(const std::string& kind) {
  if (kind == "memory") return "memory";
  if (kind == "sqlite") {
    auto p = temp_dir() / (unique_name() + ".db");
    return "sqlite:" + p.string();
  }
  if (kind == "redis") {
    const char* url = std::getenv("BUDGET_TEST_REDIS_URL");
    REQUIRE_MESSAGE(url != nullptr, "BUDGET_TEST_STORES names redis but BUDGET_TEST_REDIS_URL is not set");
    return std::string(url) + "?prefix=t" + unique_name();
  }
  FAIL("unknown store kind " << kind);
  return {};
}

// 2026-03-10T12:00:00Z (a Tuesday).
inline budget::Timestamp t0() { return budget::from_millis(1'773'144'000'000); }

// Deletes an SQLite store's files (the database, its WAL and shared memory) when the URL names one.
inline void remove_store_files(const std::string& url) {
  if (url.rfind("sqlite:", 0) != 0) return;
  std::error_code ec;
  for (const char* ext : {"", "-wal", "-shm"}) std::filesystem::remove(url.substr(7) + ext, ec);
}

struct Env {
  std::string kind, url;
  std::shared_ptr<budget::ManualClock> clock;
  std::unique_ptr<budget::BudgetManager> m;

  explicit Env(const std::string& k, budget::Options o = {}) : kind(k), url(fresh_url(k)) {
    clock = std::make_shared<budget::ManualClock>(t0());
    o.store = url;
    o.clock = clock;
    m = std::make_unique<budget::BudgetManager>(std::move(o));
  }
  // A second manager (another "process") on the same store; memory stores cannot be shared.
  std::unique_ptr<budget::BudgetManager> another(budget::Options o = {}) const {
    o.store = url;
    o.clock = clock;
    return std::make_unique<budget::BudgetManager>(std::move(o));
  }
  budget::BudgetManager* operator->() { return m.get(); }
  // An SQLite file is deleted with its Env (tens of thousands piled up in the temp dir).
  ~Env() {
    m.reset();
    remove_store_files(url);
  }
  Env(const Env&) = delete;
  Env& operator=(const Env&) = delete;
};

inline budget::Money usd(const char* s) { return budget::Money::parse(s); }

inline const budget::LimitStatus* find_status(const std::vector<budget::LimitStatus>& v, const std::string& window,
                                              budget::Metric metric = budget::Metric::Cost) {
  for (const auto& s : v)
    if (s.window == window && s.metric == metric) return &s;
  return nullptr;
}

}  // namespace testutil

// Runs the body once per store kind, as a doctest SUBCASE named after the store.
#define FOR_EACH_STORE(kindvar)                                   \
  for (const std::string& kindvar : testutil::store_kinds())      \
    DOCTEST_SUBCASE((std::string("store=") + kindvar).c_str())
