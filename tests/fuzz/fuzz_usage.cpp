// Fuzzes usage extraction: whole responses and streams (fed in two pieces at a data-derived
// split) for every API format. Any budget::Error is an accepted outcome.
#include <budget/error.hpp>
#include <budget/providers.hpp>

#include <cstddef>
#include <cstdint>
#include <string_view>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  auto format = static_cast<budget::ApiFormat>(data[0] % 4);
  std::string_view text(reinterpret_cast<const char*>(data) + 1, size - 1);
  try {
    (void)budget::usage_from_response(format, text);
  } catch (const budget::Error&) {
  }
  try {
    budget::StreamUsage s(format);
    size_t cut = text.empty() ? 0 : data[0] % (text.size() + 1);
    s.feed(text.substr(0, cut));
    (void)s.usage();
    s.feed(text.substr(cut));
    (void)s.finish();
  } catch (const budget::Error&) {
  }
  try {
    budget::StreamUsage s(format);
    s.feed_event(text);
    (void)s.usage();
  } catch (const budget::Error&) {
  }
  (void)budget::estimate_tokens(text);
  return 0;
}
