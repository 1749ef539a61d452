// The README's C++ example, verbatim between the README:begin and README:end markers (the test
// example_cpp_readme checks that it matches README.md), with stand-ins for what it leaves to
// the application: the provider's stream, the cost of a chunk, its final usage, the answer to
// a denial.
#include <budget/budget.hpp>
using namespace budget;

#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

namespace {

int reply_402_or_429(const Denial& denial) {
  std::printf("denied (HTTP %d): %s\n", denial.hard ? 402 : 429, denial.message.c_str());
  return 1;
}

// The running cost of the call grows by this much per chunk (prompt included in the first).
Money cost_of(const std::string& chunk) { return Money::parse(chunk == "Hel" ? "0.0031" : "0.0008"); }

}  // namespace

int main() {
  for (const char* ext : {"", "-wal", "-shm"}) std::filesystem::remove(std::string("budget.db") + ext);
  const std::vector<std::string> stream = {"Hel", "lo", ",", " world"};
  const Usage provider_usage{.input_tokens = 1100, .output_tokens = 640};

  // README:begin
  Options o;
  o.store = "sqlite:budget.db";                 // or "memory", "redis://127.0.0.1:6379/0"
  o.pricer = PricingEngine::bundled();          // the bundled LiteLLM-derived price table
  o.limits = {Limit::cost("user:*", Window::day(), Money::parse("1.00")),      // every user
              Limit::cost("tenant:acme", Window::total(), Money::parse("250"))}; // prepaid
  BudgetManager budget(o);                      // one per process, shared by all threads

  Subject who{"tenant:acme", "user:alice"};     // + global, always
  Usage expected{.input_tokens = 1200, .output_tokens = 800};
  Decision d = budget.reserve(who, Estimate::priced("gpt-4o", expected));
  if (!d) return reply_402_or_429(d.denial);    // scope, window, remaining, resets_at, hard

  for (auto& chunk : stream)                    // meter the stream as it arrives
    if (budget.consume(d.reservation, cost_of(chunk)).verdict == Verdict::Stop) break;

  Receipt r = budget.commit(d.reservation, Charge::priced("gpt-4o", provider_usage));
  // README:end
  std::printf("charged %s USD, released %s\n", r.charged.to_string().c_str(), r.released.to_string().c_str());
  // gpt-4o: 1100 x $2.50/M + 640 x $10/M
  return r.charged == Money::parse("0.00915") && !r.over_limit ? 0 : 1;
}
