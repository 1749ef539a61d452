// libbudget demo: a small SaaS reselling LLM calls, on the embedded SQLite store.
//
// Three tenants (one on a prepaid balance), a few users each with a daily cap, a global cap.
// Twelve threads play users asking for streamed answers: each call is reserved from an
// estimate priced with the bundled price table, metered chunk by chunk while it streams, cut
// the moment a budget runs out, and committed at the provider's exact usage. At the end: a
// report of spend per scope, the ledger verified, and a CSV export.
//
//   budget_demo [path.db]      (default: budget-demo.db in the current directory)
#include <budget/budget.hpp>

#include <atomic>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <random>
#include <thread>
#include <utility>
#include <vector>

using namespace budget;

namespace {

Money usd(const char* s) { return Money::parse(s); }

struct Stats {
  std::atomic<int> calls{0}, denied{0}, cut{0}, completed{0}, over_limit{0};
  std::mutex m;
  std::map<std::string, int> denied_by;  // "user day" -> count

  void deny(const Denial& d) {
    ++denied;
    std::string by = std::string(Scope::parse(d.scope).kind()) + " " + d.window;
    if (d.metric != Metric::Cost) by += std::string(" ") + to_string(d.metric);
    std::lock_guard lk(m);
    ++denied_by[by];
  }
};

// A simulated streamed answer of up to `output` tokens in chunks of 40; returns the tokens
// delivered and whether the budget cut the stream. As the guards of the bindings do, it prices the request's running usage (the
// prompt, billed as soon as it is sent, plus the output so far) and consumes the difference
// from what it consumed before, so the hold always covers the whole request.
std::pair<int64_t, bool> stream_answer(BudgetManager& m, const PricingEngine& prices, Reservation& r,
                                       const std::string& model, Usage running, int64_t output) {
  Money consumed;
  const int64_t chunk = 40;
  running.output_tokens = 0;
  while (running.output_tokens < output) {
    int64_t n = std::min(chunk, output - running.output_tokens);
    running.output_tokens += n;  // those tokens were generated: they are paid for either way
    Money total = prices.cost(model, running);
    auto verdict = m.consume(r, total - consumed, n);
    consumed = total;
    if (verdict.verdict == Verdict::Stop) return {running.output_tokens, true};
  }
  return {running.output_tokens, false};
}

}  // namespace

int main(int argc, char** argv) {
  std::string path = argc > 1 ? argv[1] : "budget-demo.db";
  for (auto ext : {"", "-wal", "-shm"}) std::filesystem::remove(path + ext);

  auto prices = std::shared_ptr<PricingEngine>(PricingEngine::bundled());
  prices->add_markup({MarkupRule::Scope::All, "", "20", Money(), {}});  // resell at +20%

  Options o;
  o.store = "sqlite:" + path;
  o.pricer = prices;
  o.limits = {
      Limit::cost("global", Window::day(), usd("6")),
      Limit::cost("tenant:*", Window::day(), usd("1.50"), {50, 80, 100}),
      Limit::cost("tenant:startup", Window::total(), usd("0.60"), {80}),  // prepaid balance
      Limit::cost("user:*", Window::day(), usd("0.25")),
      Limit::cost("user:acme-ceo", Window::day(), usd("1.00")),           // a per-user override
      Limit::requests("user:*", Window::minute(), 40),                   // a rate limit too
  };
  BudgetManager m(o);
  std::mutex out_m;
  m.on_alert([&](const Alert& a) {
    std::lock_guard lk(out_m);
    std::printf("  alert: %s crossed %u%% of its %s limit\n", a.scope.c_str(), a.threshold_pct, a.window.c_str());
  });

  const std::vector<std::pair<std::string, std::vector<std::string>>> tenants = {
      {"acme", {"acme-ceo", "acme-dev1", "acme-dev2"}},
      {"globex", {"globex-ana", "globex-bo"}},
      {"startup", {"startup-founder", "startup-intern"}},
  };
  const std::vector<std::string> models = {"gpt-4o", "gpt-4o-mini", "claude-sonnet-4-20250514"};

  std::printf("libbudget demo on %s\n", o.store.c_str());
  Stats stats;
  std::vector<std::thread> threads;
  for (int t = 0; t < 12; ++t)
    threads.emplace_back([&, t] {
      std::mt19937_64 rng(static_cast<uint64_t>(t) * 7919 + 17);
      for (int call = 0; call < 25; ++call) {
        const auto& [tenant, users] = tenants[rng() % tenants.size()];
        const auto& user = users[rng() % users.size()];
        const auto& model = models[rng() % models.size()];
        Subject subject{"tenant:" + tenant, "user:" + user, "feature:chat"};
        Usage expected;
        expected.input_tokens = static_cast<int64_t>(500 + rng() % 4000);
        expected.output_tokens = 300;  // a typical answer; long ones grow the hold as they stream
        ++stats.calls;
        auto d = m.reserve(subject, Estimate::priced(model, expected));
        if (!d.allowed) {
          stats.deny(d.denial);
          continue;
        }
        int64_t wanted = static_cast<int64_t>(100 + rng() % 2000);
        Usage actual = expected;
        actual.cache_read_tokens = expected.input_tokens / 4;  // the provider reports a cache hit
        auto [delivered, cut] = stream_answer(m, *prices, d.reservation, model, actual, wanted);
        actual.output_tokens = delivered;
        ++(cut ? stats.cut : stats.completed);
        if (m.commit(d.reservation, Charge::priced(model, actual)).over_limit) ++stats.over_limit;
      }
    });
  for (auto& th : threads) th.join();

  std::printf("\n%d calls: %d completed, %d streams cut by the budget, %d denied up front", stats.calls.load(),
              stats.completed.load(), stats.cut.load(), stats.denied.load());
  const char* sep = " (";
  for (const auto& [by, n] : stats.denied_by) std::printf("%s%s limits: %d", std::exchange(sep, ", "), by.c_str(), n);
  std::printf("%s\n", stats.denied_by.empty() ? "" : ")");
  std::printf("%d commits ended slightly over a limit: the chunk that crossed it had been generated, so it is billed\n\n",
              stats.over_limit.load());
  std::printf("%-24s %-10s %14s %14s %14s\n", "scope", "window", "limit", "spent", "remaining");
  std::vector<Scope> scopes{Scope::global()};
  for (const auto& [tenant, users] : tenants) {
    scopes.push_back(Scope("tenant", tenant));
    for (const auto& u : users) scopes.push_back(Scope("user", u));
  }
  scopes.push_back(Scope("feature", "chat"));
  for (const auto& s : scopes) {
    auto st = m.status(s);
    if (st.empty()) {
      // No limit on this scope: its spend is still in the ledger.
      LedgerQuery q;
      q.scope = s.str();
      auto rows = m.aggregate(q);
      std::printf("%-24s %-10s %14s %14s %14s\n", s.str().c_str(), "(none)", "-",
                  rows.empty() ? "0.00" : rows[0].spent.to_string().c_str(), "-");
    }
    for (const auto& l : st) {
      if (l.metric != Metric::Cost) continue;
      std::printf("%-24s %-10s %14s %14s %14s\n", s.str().c_str(), l.window.c_str(),
                  Money::from_nanos(l.limit).to_string().c_str(), Money::from_nanos(l.spent).to_string().c_str(),
                  Money::from_nanos(l.remaining).to_string().c_str());
    }
  }
  auto rep = m.verify();
  std::printf("\nledger: %lld events, hash chain %s, %lld counters recomputed from the ledger: %s\n",
              static_cast<long long>(rep.events), rep.chain_ok ? "intact" : "BROKEN",
              static_cast<long long>(rep.windows_checked), rep.ok ? "all match" : "MISMATCH");
  for (const auto& p : rep.problems) std::printf("  %s\n", p.c_str());
  std::ofstream csv(path + ".csv");
  m.export_csv(csv);
  std::printf("ledger exported to %s.csv\n", path.c_str());
  return rep.ok ? 0 : 1;
}
