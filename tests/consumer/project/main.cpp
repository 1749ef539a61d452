#include <budget/budget.hpp>

#include <cstdio>

int main() {
  budget::BudgetManager m("memory");
  m.set_limit(budget::Limit::cost("user:*", budget::Window::day(), budget::Money::parse("1")));
  auto d = m.reserve(budget::Subject{"user:a"}, budget::Money::parse("0.40"));
  if (!d) return 1;
  auto r = m.commit(d.reservation, budget::Money::parse("0.25"));
  std::printf("libbudget %s: charged %s\n", BUDGET_VERSION_STRING, r.charged.to_string().c_str());
  return r.charged == budget::Money::parse("0.25") ? 0 : 1;
}
