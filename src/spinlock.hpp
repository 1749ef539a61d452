// libbudget — a small lock for short critical sections that rarely collide (internal).
//
// The memory store and the engine's hold table guard each stripe of their state with one of
// these. Uncontended, lock is one compare-exchange and unlock one exchange, where a
// std::mutex costs two library calls as well. A waiter spins briefly (the holder is usually
// done within a few hundred cycles), then sleeps in the kernel on the lock word (futex, via
// C++20 atomic wait) until the holder wakes it: an oversubscribed machine (more runnable
// threads than cores, the holder preempted) neither burns cores nor waits for a timer.
// The word is 0 (free), 1 (held) or 2 (held, and someone may sleep on it): unlock wakes a
// sleeper only in state 2, so the common path never makes a system call.
#pragma once

#include <atomic>
#include <cstdint>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

namespace budget::detail {

class SpinLock {
 public:
  void lock() noexcept {
    uint32_t c = 0;
    if (state_.compare_exchange_strong(c, 1, std::memory_order_acquire, std::memory_order_relaxed)) return;
    wait(c);
  }
  bool try_lock() noexcept {
    uint32_t c = 0;
    return state_.load(std::memory_order_relaxed) == 0 &&
           state_.compare_exchange_strong(c, 1, std::memory_order_acquire, std::memory_order_relaxed);
  }
  void unlock() noexcept {
    if (state_.exchange(0, std::memory_order_release) == 2) state_.notify_one();
  }

 private:
  static void pause() noexcept {
#if defined(__x86_64__) || defined(__i386__)
    _mm_pause();
#endif
  }
  void wait(uint32_t c) noexcept {
    for (int n = 0; n < 100 && c != 2; ++n) {
      pause();
      c = 0;
      if (state_.load(std::memory_order_relaxed) == 0 &&
          state_.compare_exchange_strong(c, 1, std::memory_order_acquire, std::memory_order_relaxed))
        return;
    }
    // Announce a sleeper (2), then sleep while the lock stays held; taking it in state 2 is
    // conservative (the next unlock makes one spare wake-up call at most).
    if (c != 2) c = state_.exchange(2, std::memory_order_acquire);
    while (c != 0) {
      state_.wait(2, std::memory_order_relaxed);
      c = state_.exchange(2, std::memory_order_acquire);
    }
  }
  std::atomic<uint32_t> state_{0};
};

}  // namespace budget::detail
