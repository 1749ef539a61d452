// The README's C++ example: hold, stream, charge.
#include <budget/budget.hpp>

#include <cstdio>

int main() {
  using namespace budget;
  Options o;
  o.store = "memory";  // or "sqlite:budget.db", "redis://127.0.0.1:6379/0"
  o.pricer = PricingEngine::bundled();
  o.limits = {Limit::cost("user:*", Window::day(), Money::parse("1.00")),
              Limit::cost("tenant:acme", Window::month(), Money::parse("500"))};
  BudgetManager budget(o);

  Subject who{"tenant:acme", "user:alice"};
  Usage expected;
  expected.input_tokens = 1200;
  expected.output_tokens = 800;
  Decision d = budget.reserve(who, Estimate::priced("gpt-4o", expected));
  if (!d) return std::printf("denied: %s\n", d.denial.message.c_str()), 1;

  for (int chunk = 0; chunk < 10; ++chunk)  // a streamed answer, metered as it arrives
    if (budget.consume(d.reservation, Money::parse("0.0008"), 80).verdict == Verdict::Stop) break;

  Usage actual = expected;
  actual.output_tokens = 640;
  Receipt r = budget.commit(d.reservation, Charge::priced("gpt-4o", actual));
  std::printf("charged %s USD, released %s\n", r.charged.to_string().c_str(), r.released.to_string().c_str());
}
