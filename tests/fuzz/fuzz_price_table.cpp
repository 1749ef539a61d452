// Fuzzes the LiteLLM JSON loader, the compact loader and costing of what loaded.
// Any budget::Error is an accepted outcome; a crash, a sanitizer report or another exception
// is a bug.
#include <budget/error.hpp>
#include <budget/pricing.hpp>

#include <cstddef>
#include <cstdint>
#include <string_view>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);
  budget::Usage u;
  u.input_tokens = 300'000;
  u.cache_read_tokens = 1'000;
  u.cache_write_tokens = 1'000;
  u.cache_write_1h_tokens = 10;
  u.output_tokens = 5'000;
  u.reasoning_tokens = 10;
  u.images = 1;
  u.audio_ms = 1'000;
  u.audio_input_tokens = 2'000;
  u.audio_output_tokens = 100;
  for (int format = 0; format < 2; ++format) {
    budget::PricingEngine e;
    try {
      if (format == 0) e.load_litellm(text);
      else e.load_compact(text);
    } catch (const budget::Error&) {
      continue;
    }
    std::string compact = e.to_compact();
    budget::PricingEngine again;
    again.load_compact(compact);  // what we write, we read back
    for (const char* m : {"a", "gpt-4o", "openai/x-2024-01-01"}) {
      try {
        (void)e.quote(m, u);
        (void)e.estimate(m, 10);
      } catch (const budget::Error&) {
      }
    }
  }
  return 0;
}
