// libbudget — time. All instants are milliseconds since the Unix epoch (UTC).
// A Clock is injected into the BudgetManager so tests control window rollover and hold
// expiry without sleeping.
#pragma once

#include <budget/export.hpp>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <string>

namespace budget {

using Timestamp = std::chrono::sys_time<std::chrono::milliseconds>;
using Duration = std::chrono::milliseconds;

inline int64_t to_millis(Timestamp t) noexcept { return t.time_since_epoch().count(); }
inline Timestamp from_millis(int64_t ms) noexcept { return Timestamp(Duration(ms)); }
// "2026-11-24T05:45:21.123Z"
BUDGET_API std::string format_time(Timestamp t);

// Thread-safe source of the current time.
class BUDGET_API Clock {
 public:
  virtual ~Clock();
  virtual Timestamp now() const = 0;
};

class BUDGET_API SystemClock final : public Clock {
 public:
  Timestamp now() const override;
};

// A clock that only moves when told to; safe to advance from any thread.
class BUDGET_API ManualClock final : public Clock {
 public:
  explicit ManualClock(Timestamp start = Timestamp(Duration(1'767'225'600'000)))  // 2026-01-01
      : ms_(to_millis(start)) {}
  Timestamp now() const override { return from_millis(ms_.load(std::memory_order_acquire)); }
  void set(Timestamp t) { ms_.store(to_millis(t), std::memory_order_release); }
  void advance(Duration d) { ms_.fetch_add(d.count(), std::memory_order_acq_rel); }

 private:
  std::atomic<int64_t> ms_;
};

}  // namespace budget
