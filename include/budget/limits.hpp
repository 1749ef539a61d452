// libbudget — metrics, windows and limits.
#pragma once

#include <budget/clock.hpp>
#include <budget/export.hpp>
#include <budget/money.hpp>

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace budget {

// What a limit counts: money (nanos), tokens (input + output), or requests.
enum class Metric : uint8_t { Cost = 0, Tokens = 1, Requests = 2 };
BUDGET_API const char* to_string(Metric m) noexcept;
BUDGET_API Metric parse_metric(std::string_view text);  // "cost" | "tokens" | "requests"

// A window over which a limit counts.
//   minute, hour, day, week (ISO, Monday), month: calendar windows, reset at boundaries of the
//     manager's time zone (UTC or a fixed offset, Options::utc_offset_minutes);
//   total: never resets (a prepaid balance or a lifetime cap; grants raise it);
//   rolling:<duration> ("rolling:90s", "rolling:1h", "rolling:7d"): sliding, counted in
//     buckets of max(1 s, duration / 60), so spend leaves the window up to one bucket late;
//     1 s to 100 years;
//   custom:<start>/<end>: a fixed [start, end) in ms since the epoch or ISO-8601 UTC
//     ("custom:2026-01-01T00:00:00Z/2026-02-01T00:00:00Z"); outside it the limit does not apply.
struct BUDGET_API Window {
  enum class Kind : uint8_t { Minute, Hour, Day, Week, Month, Total, Rolling, Custom };
  Kind kind = Kind::Day;
  Duration length{0};          // Rolling only
  Timestamp start{}, end{};    // Custom only

  static Window parse(std::string_view text);  // throws InvalidArgumentError
  static Window minute() { return {Kind::Minute}; }
  static Window hour() { return {Kind::Hour}; }
  static Window day() { return {Kind::Day}; }
  static Window week() { return {Kind::Week}; }
  static Window month() { return {Kind::Month}; }
  static Window total() { return {Kind::Total}; }
  static Window rolling(Duration d);
  static Window custom(Timestamp start, Timestamp end);
  std::string to_string() const;  // the canonical text, parse(to_string()) == *this
  bool is_calendar() const noexcept { return kind <= Kind::Month; }
  bool operator==(const Window&) const = default;
};

// A limit on one scope (`user:alice`, `global`) or on every scope of a kind (`user:*`, a
// kind-wide default). A per-id limit overrides the kind default with the same metric and
// window; kind defaults for other windows still apply.
struct BUDGET_API Limit {
  std::string scope;          // "global", "kind:id" or "kind:*"
  Window window;
  Metric metric = Metric::Cost;
  int64_t amount = 0;         // nanos for Cost, a count for Tokens and Requests
  std::vector<uint32_t> alert_thresholds_pct;  // e.g. {50, 80, 100}

  static Limit cost(std::string scope, Window w, Money amount, std::vector<uint32_t> alerts = {});
  static Limit tokens(std::string scope, Window w, int64_t n, std::vector<uint32_t> alerts = {});
  static Limit requests(std::string scope, Window w, int64_t n, std::vector<uint32_t> alerts = {});

  // Identity: one limit per (scope, metric, window): "user:*|cost|day".
  std::string key() const;
  bool is_kind_default() const;  // scope is "kind:*"
  void validate() const;         // throws InvalidArgumentError
  bool operator==(const Limit&) const = default;
};

}  // namespace budget
