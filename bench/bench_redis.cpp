// Redis store benchmark: prints figures and ratios measured in the same run, against the same
// server. Run under tools/with-redis.sh (or set BUDGET_TEST_REDIS_URL):
//   tools/with-redis.sh build/bench/bench_redis [iterations]
// Figures:
//   - raw round trip: EVALSHA of a no-op Lua script over hiredis (the floor of any store op);
//   - single-thread reserve latency p50/p99 and its ratio to the raw EVALSHA p50;
//   - round trips per operation, counted by the server (INFO commandstats, top-level
//     EVALSHA/EVAL calls before/after);
//   - 16-thread reserve throughput over a 4-connection pool (auto-pipelining) and over
//     16 connections (one per thread, no pipelining), and redis-benchmark's EVALSHA no-op
//     throughput at 16 clients (when redis-benchmark is installed) for comparison.
#include <budget/budget.hpp>

#include <hiredis/hiredis.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <random>
#include <string>
#include <thread>
#include <vector>

using namespace budget;
using Steady = std::chrono::steady_clock;

namespace {

std::pair<std::string, int> host_port(const std::string& url) {
  auto s = url.substr(8);
  s = s.substr(0, s.find('/'));
  auto c = s.rfind(':');
  return {s.substr(0, c), std::stoi(s.substr(c + 1))};
}

redisReply* cmd(redisContext* c, const std::vector<std::string>& args) {
  std::vector<const char*> argv;
  std::vector<size_t> lens;
  for (const auto& a : args) argv.push_back(a.c_str()), lens.push_back(a.size());
  return static_cast<redisReply*>(redisCommandArgv(c, static_cast<int>(args.size()), argv.data(), lens.data()));
}

int64_t script_calls(redisContext* c) {
  auto* r = cmd(c, {"INFO", "commandstats"});
  std::string info(r->str, r->len);
  freeReplyObject(r);
  int64_t total = 0;
  for (const char* name : {"cmdstat_evalsha:", "cmdstat_eval:"}) {
    auto p = info.find(name);
    if (p == std::string::npos) continue;
    p = info.find("calls=", p) + 6;
    total += std::stoll(info.substr(p, info.find(',', p) - p));
  }
  return total;
}

double pct(std::vector<double> v, double q) {
  std::sort(v.begin(), v.end());
  return v[static_cast<size_t>(q * static_cast<double>(v.size() - 1))];
}

Options manager_options(const std::string& url) {
  Options o;
  o.store = url;
  o.default_ttl = Duration(3'600'000);
  o.limits = {Limit::cost("global", Window::day(), Money::parse("1000000")),
              Limit::cost("tenant:*", Window::day(), Money::parse("100000")),
              Limit::cost("user:*", Window::day(), Money::parse("10000"))};
  return o;
}

double throughput(const std::string& url, int threads, double seconds) {
  BudgetManager m(manager_options(url));
  std::atomic<bool> stop{false};
  std::atomic<int64_t> ops{0};
  std::vector<std::thread> ts;
  for (int t = 0; t < threads; ++t)
    ts.emplace_back([&, t] {
      Subject s{"tenant:t" + std::to_string(t % 4), "user:u" + std::to_string(t)};
      int64_t n = 0;
      while (!stop.load(std::memory_order_relaxed)) {
        m.reserve(s, Money::from_nanos(1000));
        ++n;
      }
      ops += n;
    });
  auto t0 = Steady::now();
  std::this_thread::sleep_for(std::chrono::duration<double>(seconds));
  stop = true;
  for (auto& t : ts) t.join();
  return static_cast<double>(ops.load()) / std::chrono::duration<double>(Steady::now() - t0).count();
}

}  // namespace

int main(int argc, char** argv) {
  const char* env = std::getenv("BUDGET_TEST_REDIS_URL");
  if (!env) {
    std::cerr << "bench_redis: set BUDGET_TEST_REDIS_URL (run under tools/with-redis.sh)\n";
    return 2;
  }
  const std::string base = env;
  const int iters = argc > 1 ? std::atoi(argv[1]) : 20000;
  auto [host, port] = host_port(base);
  redisContext* raw = redisConnect(host.c_str(), port);
  if (!raw || raw->err) {
    std::cerr << "bench_redis: cannot connect to " << base << "\n";
    return 1;
  }

  // 1. The floor: EVALSHA of a no-op script.
  auto* r = cmd(raw, {"SCRIPT", "LOAD", "return 1"});
  std::string noop_sha(r->str, r->len);
  freeReplyObject(r);
  std::vector<double> raw_us;
  for (int i = 0; i < iters; ++i) {
    auto t0 = Steady::now();
    freeReplyObject(cmd(raw, {"EVALSHA", noop_sha, "0"}));
    raw_us.push_back(std::chrono::duration<double, std::micro>(Steady::now() - t0).count());
  }

  // 2. Single-thread reserve latency (3 scopes x day limits), counting round trips.
  std::string url = base + "?prefix=bench" + std::to_string(::getpid());
  std::vector<double> res_us;
  int64_t calls_before = 0, calls_after = 0;
  {
    BudgetManager m(manager_options(url));
    Subject s{"tenant:acme", "user:alice"};
    for (int i = 0; i < 200; ++i) m.reserve(s, Money::from_nanos(1000));  // warm-up, scripts loaded
    calls_before = script_calls(raw);
    for (int i = 0; i < iters; ++i) {
      auto t0 = Steady::now();
      auto d = m.reserve(s, Money::from_nanos(1000));
      res_us.push_back(std::chrono::duration<double, std::micro>(Steady::now() - t0).count());
      if (!d.allowed) {
        std::cerr << "unexpected denial\n";
        return 1;
      }
    }
    calls_after = script_calls(raw);
  }
  double raw_p50 = pct(raw_us, 0.5), res_p50 = pct(res_us, 0.5);
  std::printf("raw EVALSHA no-op round trip:  p50 %7.1f us  p99 %7.1f us\n", raw_p50, pct(raw_us, 0.99));
  std::printf("reserve (3 scopes), 1 thread:  p50 %7.1f us  p99 %7.1f us   ratio p50 %.2fx raw\n", res_p50,
              pct(res_us, 0.99), res_p50 / raw_p50);
  std::printf("round trips per reserve (INFO commandstats): %.3f\n",
              static_cast<double>(calls_after - calls_before) / iters);

  // 3. Throughput with 16 threads.
  const double secs = 3.0;
  double piped = throughput(url + "&pool=4", 16, secs);
  double unpiped = throughput(url + "&pool=16", 16, secs);
  std::printf("reserve, 16 threads, pool 4 (auto-pipelining): %9.0f ops/s\n", piped);
  std::printf("reserve, 16 threads, pool 16 (no pipelining):  %9.0f ops/s\n", unpiped);

  // 4. redis-benchmark, same server, same number of clients, no-op EVALSHA.
  std::string rb = "redis-benchmark -h " + host + " -p " + std::to_string(port) + " -c 16 -n 200000 -q EVALSHA " +
                   noop_sha + " 0 2>/dev/null";
  if (FILE* p = ::popen(rb.c_str(), "r")) {
    char line[512];
    double rps = 0;
    while (std::fgets(line, sizeof line, p)) {
      std::string l(line);
      auto pos = l.find("requests per second");
      if (pos == std::string::npos) continue;
      auto colon = l.rfind(':', pos);
      auto q = l.find_first_of("0123456789", colon);
      rps = std::atof(l.c_str() + q);
    }
    ::pclose(p);
    if (rps > 0) {
      std::printf("redis-benchmark EVALSHA no-op, 16 clients:     %9.0f ops/s\n", rps);
      std::printf("ratios vs redis-benchmark: pipelined reserve %.2f, unpipelined reserve %.2f\n", piped / rps,
                  unpiped / rps);
    }
  }
  redisFree(raw);
  return 0;
}
