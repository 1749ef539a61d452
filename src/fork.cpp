#include "fork.hpp"

#include <pthread.h>

#include <atomic>

namespace budget::detail {
namespace {
std::atomic<uint64_t> g_generation{0};
void on_fork_child() { g_generation.fetch_add(1, std::memory_order_relaxed); }
}  // namespace

uint64_t fork_generation() noexcept {
  static const bool hooked = pthread_atfork(nullptr, nullptr, on_fork_child) == 0;
  (void)hooked;
  return g_generation.load(std::memory_order_relaxed);
}

}  // namespace budget::detail
