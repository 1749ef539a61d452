#include <budget/error.hpp>
#include <budget/limits.hpp>
#include <budget/scope.hpp>

#include <charconv>
#include <chrono>

#include <date/tz.h>

#include "windows.hpp"

namespace budget {

const char* to_string(Metric m) noexcept {
  switch (m) {
    case Metric::Cost: return "cost";
    case Metric::Tokens: return "tokens";
    case Metric::Requests: return "requests";
  }
  return "?";
}

Metric parse_metric(std::string_view t) {
  if (t == "cost") return Metric::Cost;
  if (t == "tokens") return Metric::Tokens;
  if (t == "requests") return Metric::Requests;
  throw InvalidArgumentError("unknown metric '" + std::string(t.substr(0, 40)) + "' (cost, tokens, requests)");
}

namespace {

// The longest rolling window: 100 years. Its buckets are summed from start - (n - 1) x bucket
// in int64 milliseconds; an unbounded length overflowed that arithmetic.
constexpr int64_t kMaxRollingMs = 100LL * 366 * 24 * 3600 * 1000;

int64_t parse_int(std::string_view s, std::string_view what) {
  int64_t v = 0;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || p != s.data() + s.size() || s.empty())
    throw InvalidArgumentError("invalid " + std::string(what) + " '" + std::string(s.substr(0, 40)) + "'");
  return v;
}

Duration parse_duration(std::string_view s) {
  if (s.empty()) throw InvalidArgumentError("empty duration");
  size_t i = 0;
  while (i < s.size() && s[i] >= '0' && s[i] <= '9') ++i;
  int64_t n = parse_int(s.substr(0, i), "duration");
  auto unit = s.substr(i);
  int64_t ms;
  if (unit == "ms") ms = 1;
  else if (unit == "s") ms = 1000;
  else if (unit == "m" || unit == "min") ms = 60'000;
  else if (unit == "h") ms = 3'600'000;
  else if (unit == "d") ms = 86'400'000;
  else if (unit == "w") ms = 7 * 86'400'000LL;
  else throw InvalidArgumentError("invalid duration unit in '" + std::string(s.substr(0, 40)) + "' (ms, s, m, h, d, w)");
  int64_t total;
  if (__builtin_mul_overflow(n, ms, &total) || total > kMaxRollingMs)
    throw InvalidArgumentError("a rolling window lasts at most 100 years");
  if (total < 1000) throw InvalidArgumentError("a rolling window lasts at least 1s");
  return Duration(total);
}

std::string format_duration(Duration d) {
  int64_t ms = d.count();
  struct U { int64_t ms; const char* s; } units[] = {{7 * 86'400'000LL, "w"}, {86'400'000, "d"}, {3'600'000, "h"},
                                                     {60'000, "m"}, {1000, "s"}, {1, "ms"}};
  for (auto u : units)
    if (ms % u.ms == 0) return std::to_string(ms / u.ms) + u.s;
  return std::to_string(ms) + "ms";
}

int64_t parse_instant(std::string_view s) {
  if (!s.empty() && s.find_first_not_of("-0123456789") == std::string_view::npos) return parse_int(s, "instant");
  return detail::parse_iso8601_utc(s);
}

}  // namespace

Window Window::rolling(Duration d) {
  if (d.count() < 1000) throw InvalidArgumentError("a rolling window lasts at least 1s");
  if (d.count() > kMaxRollingMs) throw InvalidArgumentError("a rolling window lasts at most 100 years");
  Window w{Kind::Rolling};
  w.length = d;
  return w;
}

Window Window::custom(Timestamp start, Timestamp end) {
  if (!(start < end)) throw InvalidArgumentError("a custom window needs start < end");
  Window w{Kind::Custom};
  w.start = start;
  w.end = end;
  return w;
}

Window Window::parse(std::string_view t) {
  if (t == "minute") return minute();
  if (t == "hour") return hour();
  if (t == "day") return day();
  if (t == "week") return week();
  if (t == "month") return month();
  if (t == "total") return total();
  if (t.rfind("rolling:", 0) == 0) return rolling(parse_duration(t.substr(8)));
  if (t.rfind("custom:", 0) == 0) {
    auto rest = t.substr(7);
    auto slash = rest.find('/');
    if (slash == std::string_view::npos) throw InvalidArgumentError("custom window needs 'custom:<start>/<end>'");
    return custom(from_millis(parse_instant(rest.substr(0, slash))), from_millis(parse_instant(rest.substr(slash + 1))));
  }
  throw InvalidArgumentError("unknown window '" + std::string(t.substr(0, 60)) +
                             "' (minute, hour, day, week, month, total, rolling:<duration>, custom:<start>/<end>)");
}

std::string Window::to_string() const {
  switch (kind) {
    case Kind::Minute: return "minute";
    case Kind::Hour: return "hour";
    case Kind::Day: return "day";
    case Kind::Week: return "week";
    case Kind::Month: return "month";
    case Kind::Total: return "total";
    case Kind::Rolling: return "rolling:" + format_duration(length);
    case Kind::Custom: return "custom:" + std::to_string(to_millis(start)) + "/" + std::to_string(to_millis(end));
  }
  return "?";
}

Limit Limit::cost(std::string scope, Window w, Money amount, std::vector<uint32_t> alerts) {
  return Limit{std::move(scope), w, Metric::Cost, amount.nanos(), std::move(alerts)};
}
Limit Limit::tokens(std::string scope, Window w, int64_t n, std::vector<uint32_t> alerts) {
  return Limit{std::move(scope), w, Metric::Tokens, n, std::move(alerts)};
}
Limit Limit::requests(std::string scope, Window w, int64_t n, std::vector<uint32_t> alerts) {
  return Limit{std::move(scope), w, Metric::Requests, n, std::move(alerts)};
}

std::string Limit::key() const { return scope + "|" + budget::to_string(metric) + "|" + window.to_string(); }

bool Limit::is_kind_default() const { return scope.size() > 2 && scope.compare(scope.size() - 2, 2, ":*") == 0; }

void Limit::validate() const {
  if (is_kind_default()) validate_kind(std::string_view(scope).substr(0, scope.size() - 2));
  else Scope::parse(scope);
  if (amount < 0) throw InvalidArgumentError("limit amount is negative");
  if (amount > INT64_MAX / 4) throw InvalidArgumentError("limit amount too large");
  for (auto a : alert_thresholds_pct)
    if (a == 0 || a > 1000) throw InvalidArgumentError("alert thresholds are percentages in 1..1000");
  if (window.kind == Window::Kind::Rolling && window.length.count() < 1000)
    throw InvalidArgumentError("a rolling window lasts at least 1s");
  if (window.kind == Window::Kind::Rolling && window.length.count() > kMaxRollingMs)
    throw InvalidArgumentError("a rolling window lasts at most 100 years");
  if (window.kind == Window::Kind::Custom && !(window.start < window.end))
    throw InvalidArgumentError("a custom window needs start < end");
}

namespace detail {

using namespace std::chrono;

int64_t parse_iso8601_utc(std::string_view s) {
  // YYYY-MM-DDTHH:MM:SS[.mmm]Z
  auto num = [&](size_t pos, size_t len) -> int {
    if (pos + len > s.size()) throw InvalidArgumentError("invalid ISO-8601 time '" + std::string(s.substr(0, 40)) + "'");
    return static_cast<int>(parse_int(s.substr(pos, len), "ISO-8601 time"));
  };
  if (s.size() < 20 || s[4] != '-' || s[7] != '-' || s[10] != 'T' || s[13] != ':' || s[16] != ':' || s.back() != 'Z')
    throw InvalidArgumentError("invalid ISO-8601 UTC time '" + std::string(s.substr(0, 40)) + "' (YYYY-MM-DDTHH:MM:SSZ)");
  year_month_day ymd{year{num(0, 4)}, month{static_cast<unsigned>(num(5, 2))}, day{static_cast<unsigned>(num(8, 2))}};
  if (!ymd.ok()) throw InvalidArgumentError("invalid date in '" + std::string(s.substr(0, 40)) + "'");
  int hh = num(11, 2), mi = num(14, 2), ss = num(17, 2), ms = 0;
  if (hh > 23 || mi > 59 || ss > 60) throw InvalidArgumentError("invalid time in '" + std::string(s.substr(0, 40)) + "'");
  if (s.size() > 20) {
    if (s[19] != '.' || s.size() != 24) throw InvalidArgumentError("invalid ISO-8601 fraction in '" + std::string(s.substr(0, 40)) + "'");
    ms = num(20, 3);
  }
  auto days = sys_days(ymd).time_since_epoch().count();
  return ((static_cast<int64_t>(days) * 24 + hh) * 60 + mi) * 60'000 + ss * 1000LL + ms;
}

namespace {
int64_t floor_div(int64_t a, int64_t b) { return a / b - ((a % b != 0) && ((a < 0) != (b < 0))); }
}  // namespace

Zone Zone::named(const std::string& name) {
  Zone z;
  if (name.empty() || name == "UTC" || name == "Etc/UTC") return z;
  try {
    z.tz = date::locate_zone(name);
  } catch (const std::exception& e) {
    throw InvalidArgumentError("unknown time zone '" + name.substr(0, 60) + "' (an IANA name such as Europe/Paris): " +
                               e.what());
  }
  return z;
}

namespace {
// Local calendar boundaries in an IANA zone: the local start of the unit containing `now`
// and of the next one, converted back to UTC (a local time skipped by a daylight-saving jump
// maps to the jump; an ambiguous one to its earlier instant).
bool zoned_bucket(const Window& w, int64_t now, const date::time_zone* tz, Bucket& b) {
  using ms = std::chrono::milliseconds;
  date::sys_time<ms> t{ms(now)};
  auto local = tz->to_local(t);
  date::local_time<ms> from, to;
  switch (w.kind) {
    case Window::Kind::Minute:
      from = date::floor<std::chrono::minutes>(local);
      to = from + std::chrono::minutes(1);
      break;
    case Window::Kind::Hour:
      from = date::floor<std::chrono::hours>(local);
      to = from + std::chrono::hours(1);
      break;
    case Window::Kind::Day:
      from = date::floor<date::days>(local);
      to = from + date::days(1);
      break;
    case Window::Kind::Week: {
      auto day = date::floor<date::days>(local);
      date::weekday wd{day};
      from = day - date::days((wd.c_encoding() + 6) % 7);  // back to Monday
      to = from + date::days(7);
      break;
    }
    case Window::Kind::Month: {
      date::year_month_day ymd{date::floor<date::days>(local)};
      auto first = date::local_days(ymd.year() / ymd.month() / 1);
      from = first;
      to = date::local_days((ymd.year() / ymd.month() + date::months(1)) / 1);
      break;
    }
    default:
      return false;
  }
  b.start = tz->to_sys(from, date::choose::earliest).time_since_epoch().count();
  b.end = tz->to_sys(to, date::choose::earliest).time_since_epoch().count();
  b.read_from = b.start;
  b.resets_at = b.end;
  return true;
}
}  // namespace

Bucket bucket_for(const Window& w, int64_t now, const Zone& zone) {
  Bucket b;
  if (zone.tz && w.is_calendar() &&
      zoned_bucket(w, now, static_cast<const date::time_zone*>(zone.tz), b))
    return b;
  const int64_t off = static_cast<int64_t>(zone.offset_minutes) * 60'000;
  const int64_t local = now + off;
  auto fixed = [&](int64_t size) {
    b.start = floor_div(local, size) * size - off;
    b.end = b.start + size;
  };
  switch (w.kind) {
    case Window::Kind::Minute: fixed(60'000); break;
    case Window::Kind::Hour: fixed(3'600'000); break;
    case Window::Kind::Day: fixed(86'400'000); break;
    case Window::Kind::Week: {
      int64_t day = floor_div(local, 86'400'000);
      int64_t monday = day - ((day + 3) % 7 + 7) % 7;  // 1970-01-01 was a Thursday
      b.start = monday * 86'400'000 - off;
      b.end = b.start + 7 * 86'400'000LL;
      break;
    }
    case Window::Kind::Month: {
      sys_days d{days{floor_div(local, 86'400'000)}};
      year_month_day ymd{d};
      auto first = sys_days(ymd.year() / ymd.month() / 1);
      auto next = sys_days((ymd.year() / ymd.month() + months{1}) / 1);
      b.start = static_cast<int64_t>(first.time_since_epoch().count()) * 86'400'000 - off;
      b.end = static_cast<int64_t>(next.time_since_epoch().count()) * 86'400'000 - off;
      break;
    }
    case Window::Kind::Total:
      b.start = 0;
      b.end = INT64_MAX;
      b.read_from = 0;
      b.resets_at = 0;
      return b;
    case Window::Kind::Rolling: {
      int64_t len = w.length.count();
      int64_t g = std::max<int64_t>(1000, len / 60);
      int64_t n = (len + g - 1) / g;  // buckets summed
      b.start = floor_div(now, g) * g;
      b.end = b.start + g;
      b.read_from = b.start - (n - 1) * g;
      b.resets_at = b.end;  // the oldest bucket leaves the window then
      return b;
    }
    case Window::Kind::Custom: {
      int64_t s = to_millis(w.start), e = to_millis(w.end);
      b.applies = s <= now && now < e;
      b.start = s;
      b.end = e;
      b.read_from = s;
      b.resets_at = e;
      return b;
    }
  }
  b.read_from = b.start;
  b.resets_at = b.end;
  return b;
}

}  // namespace detail
}  // namespace budget
