// libbudget — a small lock for short critical sections that rarely collide (internal).
//
// The memory store and the engine's hold table guard each stripe of their state with one of
// these: an uncontended lock is one atomic exchange and an unlock one release store, where a
// std::mutex costs two library calls and two atomic read-modify-writes. A waiter spins
// briefly, then yields, then sleeps, so an oversubscribed machine (more runnable threads than
// cores, the holder preempted) still makes progress without burning its cores.
#pragma once

#include <atomic>
#include <chrono>
#include <thread>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

namespace budget::detail {

class SpinLock {
 public:
  void lock() noexcept {
    if (!flag_.exchange(true, std::memory_order_acquire)) return;
    wait();
  }
  bool try_lock() noexcept {
    return !flag_.load(std::memory_order_relaxed) && !flag_.exchange(true, std::memory_order_acquire);
  }
  void unlock() noexcept { flag_.store(false, std::memory_order_release); }

 private:
  static void pause() noexcept {
#if defined(__x86_64__) || defined(__i386__)
    _mm_pause();
#endif
  }
  void wait() noexcept {
    for (unsigned n = 0;; ++n) {
      if (!flag_.load(std::memory_order_relaxed) && !flag_.exchange(true, std::memory_order_acquire)) return;
      if (n < 64) pause();
      else if (n < 64 + 128) std::this_thread::yield();
      else std::this_thread::sleep_for(std::chrono::microseconds(50));
    }
  }
  std::atomic<bool> flag_{false};
};

}  // namespace budget::detail
