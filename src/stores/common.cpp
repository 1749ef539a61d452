#include <budget/error.hpp>

#include <charconv>

#include "int128.hpp"
#include "store.hpp"

namespace budget::detail {

std::string WindowRef::key() const {
  std::string k;
  k.reserve(scope.size() + window.size() + 24);
  k += scope;
  k += '|';
  k += window;
  k += '|';
  k += std::to_string(start);
  return k;
}

bool parse_window_key(std::string_view key, std::string* scope, std::string* window, int64_t* start) {
  auto p2 = key.rfind('|');
  if (p2 == std::string_view::npos || p2 == 0) return false;
  auto p1 = key.rfind('|', p2 - 1);
  if (p1 == std::string_view::npos) return false;
  auto num = key.substr(p2 + 1);
  auto [ptr, ec] = std::from_chars(num.data(), num.data() + num.size(), *start);
  if (ec != std::errc() || ptr != num.data() + num.size()) return false;
  *scope = std::string(key.substr(0, p1));
  *window = std::string(key.substr(p1 + 1, p2 - p1 - 1));
  return true;
}


const char* to_string(ReqState s) noexcept {
  switch (s) {
    case ReqState::Held: return "held";
    case ReqState::Committed: return "committed";
    case ReqState::Released: return "released";
    case ReqState::Expired: return "expired";
    case ReqState::Denied: return "denied";
    case ReqState::Recorded: return "recorded";
    case ReqState::Granted: return "granted";
    case ReqState::Adjusted: return "adjusted";
  }
  return "?";
}

std::unique_ptr<Store> open_store(const std::string& url, const StoreOptions& options) {
  // Bounds, not policy: SQLite adds the timeout to steady_clock::now() in nanoseconds (a
  // timeout near INT64_MAX ms overflowed that at open: UB), and the Redis pool makes its
  // connection slots up front (INT_MAX of them exhausted memory). The Redis URL's `pool`
  // has the same 1..256 bound.
  if (options.timeout.count() < 0 || options.timeout.count() > kMaxStoreTimeoutMs)
    throw InvalidArgumentError("store timeout must be within 0..100 years");
  if (options.pool_size > 256) throw InvalidArgumentError("store pool size must be at most 256");
  auto starts = [&](std::string_view p) { return url.rfind(p, 0) == 0; };
  if (url == "memory" || url == "memory:" || url == "memory://") return make_memory_store();
  if (starts("sqlite://")) return make_sqlite_store(url.substr(9), options);
  if (starts("sqlite:")) return make_sqlite_store(url.substr(7), options);
  if (starts("redis://") || starts("rediss://")) {
#ifdef BUDGET_WITH_REDIS
    return make_redis_store(url, options);
#else
    throw InvalidArgumentError("this build of libbudget has no Redis store (BUDGET_WITH_REDIS=OFF)");
#endif
  }
  throw InvalidArgumentError("unknown store URL '" + url +
                             "': expected 'memory', 'sqlite:<path>' or 'redis://host:port/db'");
}

}  // namespace budget::detail
