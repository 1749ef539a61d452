#include <budget/clock.hpp>

#include <fmt/format.h>

namespace budget {

Clock::~Clock() = default;

Timestamp SystemClock::now() const {
  return std::chrono::time_point_cast<Duration>(std::chrono::system_clock::now());
}

namespace {

// Floor division and its remainder in [0, d).
constexpr int64_t floor_div(int64_t n, int64_t d) { return n / d - (n % d < 0 ? 1 : 0); }
constexpr int64_t floor_mod(int64_t n, int64_t d) { return n % d < 0 ? n % d + d : n % d; }

struct Civil {
  int64_t year;
  int month, day;
};

// The proleptic Gregorian date of a day count since 1970-01-01, for every int64 millisecond
// time (fmt's chrono formatting goes through system_clock's nanoseconds, which overflow past
// the year 2262). Days are counted in 400-year eras of 146097 days, years starting on March 1
// (so the leap day ends the year).
constexpr Civil civil_from_days(int64_t days) {
  const int64_t z = days + 719468;  // days since 0000-03-01
  const int64_t era = floor_div(z, 146097);
  const int64_t doe = z - era * 146097;                                   // [0, 146096]
  const int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;  // [0, 399]
  const int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);            // [0, 365]
  const int64_t mp = (5 * doy + 2) / 153;                                 // [0, 11], March = 0
  const int day = static_cast<int>(doy - (153 * mp + 2) / 5 + 1);
  const int month = static_cast<int>(mp < 10 ? mp + 3 : mp - 9);
  return {yoe + era * 400 + (month <= 2 ? 1 : 0), month, day};
}

static_assert(civil_from_days(0).year == 1970 && civil_from_days(0).month == 1 && civil_from_days(0).day == 1);
static_assert(civil_from_days(-1).year == 1969 && civil_from_days(-1).month == 12 && civil_from_days(-1).day == 31);
static_assert(civil_from_days(11016).year == 2000 && civil_from_days(11016).month == 2 && civil_from_days(11016).day == 29);

}  // namespace

std::string format_time(Timestamp t) {
  const int64_t ms = to_millis(t);
  const int64_t secs = floor_div(ms, 1000), sod = floor_mod(secs, 86400);
  const Civil c = civil_from_days(floor_div(secs, 86400));
  return fmt::format("{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z", c.year, c.month, c.day, sod / 3600, sod / 60 % 60,
                     sod % 60, floor_mod(ms, 1000));
}

}  // namespace budget
