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

int64_t metric_of(const Amounts& a, Metric m) noexcept {
  switch (m) {
    case Metric::Cost: return a.cost;
    case Metric::Tokens: return a.tokens;
    case Metric::Requests: return a.requests;
  }
  return 0;
}

Amounts& operator+=(Amounts& a, const Amounts& b) {
  a.cost = checked_add(a.cost, b.cost);
  a.tokens = checked_add(a.tokens, b.tokens);
  a.requests = checked_add(a.requests, b.requests);
  return a;
}
Amounts operator-(const Amounts& a) {
  return {checked_sub(0, a.cost), checked_sub(0, a.tokens), checked_sub(0, a.requests)};
}
Amounts operator+(Amounts a, const Amounts& b) { return a += b; }
Amounts operator-(Amounts a, const Amounts& b) { return a += -b; }

bool has_room(const Check& c, const CheckState& s, int64_t need) noexcept {
  int128 cap = static_cast<int128>(c.limit) + (c.grantable ? s.granted : 0);
  int128 used = static_cast<int128>(s.spent) + s.held;
  if (need == 0) return used < cap;
  return used + need <= cap;
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
