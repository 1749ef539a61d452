#include <budget/clock.hpp>

#include <fmt/chrono.h>
#include <fmt/format.h>

namespace budget {

Clock::~Clock() = default;

Timestamp SystemClock::now() const {
  return std::chrono::time_point_cast<Duration>(std::chrono::system_clock::now());
}

std::string format_time(Timestamp t) {
  // Floor division without overflow (ms - 999 overflowed near INT64_MIN).
  const int64_t ms = to_millis(t);
  int64_t q = ms / 1000, r = ms % 1000;
  if (r < 0) --q, r += 1000;
  auto secs = std::chrono::sys_seconds(std::chrono::seconds(q));
  int rem = static_cast<int>(r);
  return fmt::format("{:%Y-%m-%dT%H:%M:%S}.{:03d}Z", secs, rem);
}

}  // namespace budget
