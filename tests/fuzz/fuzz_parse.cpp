// Fuzzes the text a user hands the library (amounts, windows, scopes, subjects, names) and
// the checked money arithmetic. Properties, beyond "no crash, no undefined behaviour, only
// a budget::Error on bad input":
//   - what parses prints back to text that parses to the same value (Money, Window, Scope);
//   - checked arithmetic is exact or throws OverflowError (compared with 128-bit results);
//   - mul_bp never rounds a hold below the exact product.
// The first byte picks the target; the rest is its input.
#include <budget/error.hpp>
#include <budget/ledger.hpp>
#include <budget/limits.hpp>
#include <budget/money.hpp>
#include <budget/providers.hpp>
#include <budget/scope.hpp>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

namespace {

void require(bool ok) {
  if (!ok) std::abort();  // a property failed: libFuzzer reports the input
}

void money_text(std::string_view text) {
  budget::Money m;
  try {
    m = budget::Money::parse(text);
  } catch (const budget::Error&) {
    return;
  }
  auto printed = m.to_string();
  require(budget::Money::parse(printed) == m);
}

int64_t read64(std::string_view& s) {
  uint64_t v = 0;
  size_t n = s.size() < 8 ? s.size() : 8;
  std::memcpy(&v, s.data(), n);
  s.remove_prefix(n);
  return static_cast<int64_t>(v);
}

void money_arith(std::string_view s) {
  using budget::Money;
  const int64_t a = read64(s), b = read64(s);
  const __int128 A = a, B = b;
  auto fits = [](__int128 x) { return x >= INT64_MIN && x <= INT64_MAX; };
  auto expect = [&](auto op, __int128 exact) {
    try {
      Money r = op();
      require(fits(exact) && r.nanos() == static_cast<int64_t>(exact));
    } catch (const budget::OverflowError&) {
      require(!fits(exact));
    }
  };
  const Money x = Money::from_nanos(a), y = Money::from_nanos(b);
  expect([&] { return x + y; }, A + B);
  expect([&] { return x - y; }, A - B);
  expect([&] { return -x; }, -A);
  expect([&] { return x * b; }, A * B);
  // Basis points: a buffer in [1.0, 100.0] as the engine allows it, and beyond.
  const uint32_t bp = static_cast<uint32_t>(b) % 2'000'001;
  const __int128 num = A * bp;
  // The smallest amount at or above the exact product num / 10000 (toward zero when negative).
  const __int128 up = num / 10000 + (num > 0 && num % 10000 != 0 ? 1 : 0);
  try {
    Money r = x.mul_bp(bp);
    const __int128 scaled = static_cast<__int128>(r.nanos()) * 10000;
    require(scaled >= num && scaled - num < 10000);  // never below the product, by under a nano
  } catch (const budget::OverflowError&) {
    require(!fits(up));
  }
}

void window_text(std::string_view text) {
  budget::Window w;
  try {
    w = budget::Window::parse(text);
  } catch (const budget::Error&) {
    return;
  }
  require(budget::Window::parse(w.to_string()) == w);
}

void scope_text(std::string_view text) {
  budget::Scope s;
  try {
    s = budget::Scope::parse(text);
  } catch (const budget::Error&) {
    return;
  }
  require(budget::Scope::parse(s.str()) == s);
  if (!s.is_global()) require(s.str() == std::string(s.kind()) + ":" + std::string(s.id()));
}

void subject_text(std::string_view text) {
  std::vector<std::string> parts;
  size_t start = 0;
  for (size_t i = 0; i <= text.size(); ++i)
    if (i == text.size() || text[i] == '\n') {
      parts.emplace_back(text.substr(start, i - start));
      start = i + 1;
    }
  try {
    budget::Subject s(parts);
    require(s.size() >= 1 && s.scopes().front().is_global());
    require(budget::Subject(s.scopes()).size() == s.size());
  } catch (const budget::Error&) {
  }
}

void names(std::string_view text) {
  try {
    (void)budget::parse_metric(text);
  } catch (const budget::Error&) {
  }
  try {
    (void)budget::parse_event_type(text);
  } catch (const budget::Error&) {
  }
  try {
    (void)budget::parse_api_format(text);
  } catch (const budget::Error&) {
  }
  try {
    budget::validate_id(text);
  } catch (const budget::Error&) {
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  std::string_view text(reinterpret_cast<const char*>(data) + 1, size - 1);
  switch (data[0] % 6) {
    case 0: money_text(text); break;
    case 1: money_arith(text); break;
    case 2: window_text(text); break;
    case 3: scope_text(text); break;
    case 4: subject_text(text); break;
    default: names(text); break;
  }
  return 0;
}
