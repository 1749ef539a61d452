// libbudget — where a window's current bucket starts and ends (internal).
#pragma once

#include <budget/limits.hpp>

#include <cstdint>
#include <string>

namespace budget::detail {

struct Bucket {
  bool applies = true;   // false: a custom window that does not contain `now`
  int64_t start = 0, end = 0, read_from = 0;
  int64_t resets_at = 0;  // 0 = never (total)
};

// The time zone of calendar windows: an IANA zone (daylight saving included) or, without one,
// a fixed offset in minutes east of UTC.
struct Zone {
  int offset_minutes = 0;
  const void* tz = nullptr;  // a date::time_zone (kept opaque here)
  static Zone named(const std::string& iana_name);  // throws InvalidArgumentError
};

// Calendar windows reset at the zone's local boundaries.
Bucket bucket_for(const Window& w, int64_t now_ms, const Zone& zone);
// Parses "2026-01-01T00:00:00Z" (or with .mmm) to ms since the epoch; throws InvalidArgument.
int64_t parse_iso8601_utc(std::string_view text);

}  // namespace budget::detail
