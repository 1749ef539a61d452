#include <budget/clock.hpp>

#include <fmt/chrono.h>
#include <fmt/format.h>

namespace budget {

Clock::~Clock() = default;

Timestamp SystemClock::now() const {
  return std::chrono::time_point_cast<Duration>(std::chrono::system_clock::now());
}

std::string format_time(Timestamp t) {
  auto ms = to_millis(t);
  auto secs = std::chrono::sys_seconds(std::chrono::seconds(ms >= 0 ? ms / 1000 : (ms - 999) / 1000));
  int rem = static_cast<int>(ms - secs.time_since_epoch().count() * 1000);
  return fmt::format("{:%Y-%m-%dT%H:%M:%S}.{:03d}Z", secs, rem);
}

}  // namespace budget
