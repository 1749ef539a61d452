// libbudget — the append-only ledger.
//
// Every state change is one event. Events carry the exact deltas they applied to the
// counters of each window they touched, so balances can be recomputed from the ledger alone
// (BudgetManager::verify). Events are hash-chained (SHA-256 over a canonical encoding of the
// event and the previous hash), so editing, inserting or deleting an event is detectable.
// Events never contain prompt text: only ids, counts, amounts and caller metadata.
#pragma once

#include <budget/clock.hpp>
#include <budget/export.hpp>
#include <budget/money.hpp>
#include <budget/usage.hpp>

#include <cstdint>
#include <iosfwd>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace budget {

enum class EventType : uint8_t { Reserve, Consume, Commit, Release, Expire, Record, Grant, Adjust, Deny };
BUDGET_API const char* to_string(EventType t) noexcept;
BUDGET_API EventType parse_event_type(std::string_view text);

// Deltas per metric: cost in nanos, tokens, requests.
struct BUDGET_API Amounts {
  int64_t cost = 0, tokens = 0, requests = 0;
  bool is_zero() const noexcept { return cost == 0 && tokens == 0 && requests == 0; }
  bool operator==(const Amounts&) const = default;
};

struct BUDGET_API LedgerEvent {
  int64_t seq = 0;              // 1, 2, 3... in commit order of the store
  Timestamp time{};
  EventType type = EventType::Record;
  std::string request_id;
  std::vector<std::string> subject;  // scopes
  std::string model, provider, price_version;
  std::optional<Usage> usage;
  Amounts spent;    // change of committed spend (commit, record, expire, adjust; + consume never)
  Amounts held;     // change of holds (reserve +, consume +growth, commit/release/expire -)
  Amounts granted;  // change of grants (grant)
  std::vector<std::string> windows;  // counters touched: "scope|window|bucket_start_ms"
  std::string metadata;              // JSON object text (caller's metadata, reason, flags)
  std::string prev_hash, hash;       // hex SHA-256

  Money amount() const { return Money::from_nanos(spent.cost); }  // money charged by this event
  std::string to_json() const;       // one line of JSON (the export format)
};

struct BUDGET_API LedgerQuery {
  Timestamp from{Duration(INT64_MIN / 2)};  // inclusive
  Timestamp to{Duration(INT64_MAX / 2)};    // exclusive
  std::optional<std::string> scope;         // events whose subject contains it
  std::optional<std::string> request_id;
  std::optional<EventType> type;
  int64_t after_seq = 0;                    // events with seq > after_seq
  size_t limit = SIZE_MAX;
};

// Aggregation of charged money (spent deltas) by any of scope / model / day.
struct BUDGET_API AggregateRow {
  std::string scope;  // empty unless grouped by scope
  std::string model;  // empty unless grouped by model
  std::string day;    // "YYYY-MM-DD" (UTC) unless not grouped by day
  Money spent;
  int64_t tokens = 0;
  int64_t requests = 0;
  int64_t events = 0;
};
struct BUDGET_API GroupBy {
  bool scope = true, model = false, day = false;
};

struct BUDGET_API VerifyReport {
  bool ok = true;
  int64_t events = 0;
  int64_t windows_checked = 0;
  bool chain_ok = true;
  std::vector<std::string> problems;  // human-readable differences
};

BUDGET_API void write_csv_header(std::ostream& out);
BUDGET_API void write_csv_row(std::ostream& out, const LedgerEvent& e);

}  // namespace budget
