// Redis store benchmark: prints figures and ratios measured in the same run, against the same
// server. Run under tools/with-redis.sh (or set BUDGET_TEST_REDIS_URL):
//   tools/with-redis.sh build/bench/bench_redis [iterations] [seconds]
//
// Each figure is measured twice on the same server, switched with CONFIG SET:
//   fsync    appendonly yes + appendfsync always (what tools/with-redis.sh starts; every
//            writing command waits for an fsync before its reply)
//   no-AOF   appendonly no (Redis's default persistence; RDB snapshots stay as configured)
// Figures, per mode:
//   - latency, 1 thread, interleaved in one loop so background load hits all alike:
//       raw EVALSHA of a no-op script (the floor of any call), raw EVALSHA of a one-write
//       script (INCR: the floor of any *writing* call, which pays the fsync in fsync mode),
//       and BudgetManager::reserve (3 scopes x 1 day limit); p50/p99 and the ratios;
//   - round trips per reserve counted by the server (INFO commandstats: FCALL + EVALSHA + EVAL);
//   - server time per reserve script (INFO commandstats, reserve-only loop), split into the
//     commands it calls and the rest (Lua and call glue), and of the no-op script;
//   - 16 threads: reserve over a 4-connection pool (auto-pipelining) and over 16 connections
//     (one per thread), with the CPU per reserve of this process and of redis-server (INFO
//     cpu), against redis-benchmark -c 16 running the *same reserve call* (FCALL of the same
//     function with the same arguments, captured with MONITOR from a real reserve; the request
//     id is "rb-__rand_int__" so each call is a new hold) and EVALSHA of the no-op script.
#include <budget/budget.hpp>

#include <hiredis/hiredis.h>

#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iostream>
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
std::string cmd_str(redisContext* c, const std::vector<std::string>& args) {
  auto* r = cmd(c, args);
  if (!r) {
    std::cerr << "bench_redis: connection lost\n";
    std::exit(1);
  }
  std::string s;
  if (r->type == REDIS_REPLY_STRING || r->type == REDIS_REPLY_STATUS || r->type == REDIS_REPLY_ERROR)
    s.assign(r->str, r->len);
  else if (r->type == REDIS_REPLY_ARRAY && r->elements == 2 && r->element[1]->str)
    s.assign(r->element[1]->str, r->element[1]->len);  // CONFIG GET
  freeReplyObject(r);
  return s;
}

std::string info_field(redisContext* c, const char* section, const std::string& field) {
  std::string info = cmd_str(c, {"INFO", section});
  auto p = info.find(field + ":");
  if (p == std::string::npos) return {};
  p += field.size() + 1;
  return info.substr(p, info.find_first_of("\r\n", p) - p);
}

// INFO commandstats: calls and usec of the top-level script commands (FCALL + EVALSHA + EVAL),
// and of every other command but INFO/CONFIG (those a script calls, during a script-only loop).
struct Stats {
  int64_t calls = 0, usec = 0, inner_calls = 0, inner_usec = 0;
};
Stats script_stats(redisContext* c) {
  std::string info = cmd_str(c, {"INFO", "commandstats"});
  Stats st;
  size_t pos = 0;
  while ((pos = info.find("cmdstat_", pos)) != std::string::npos) {
    auto colon = info.find(':', pos);
    std::string name = info.substr(pos + 8, colon - pos - 8);
    auto q = info.find("calls=", colon) + 6;
    int64_t calls = std::stoll(info.substr(q, info.find(',', q) - q));
    q = info.find("usec=", colon) + 5;
    int64_t usec = std::stoll(info.substr(q, info.find(',', q) - q));
    if (name == "fcall" || name == "evalsha" || name == "eval") {
      st.calls += calls;
      st.usec += usec;
    } else if (name != "info" && name.rfind("config", 0) != 0) {
      st.inner_calls += calls;
      st.inner_usec += usec;
    }
    pos = colon;
  }
  return st;
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

double cpu_seconds() {
  rusage u{};
  ::getrusage(RUSAGE_SELF, &u);
  return static_cast<double>(u.ru_utime.tv_sec + u.ru_stime.tv_sec) +
         static_cast<double>(u.ru_utime.tv_usec + u.ru_stime.tv_usec) / 1e6;
}
double server_cpu_seconds(redisContext* c) {
  return std::atof(info_field(c, "cpu", "used_cpu_user").c_str()) + std::atof(info_field(c, "cpu", "used_cpu_sys").c_str());
}

struct Throughput {
  double ops_s = 0, client_us = 0, server_us = 0;  // ops/s; CPU per op of this process and of redis-server
};
Throughput throughput(redisContext* raw, const std::string& url, int threads, double seconds) {
  BudgetManager m(manager_options(url));
  for (int i = 0; i < 100; ++i) m.reserve(Subject{"tenant:t0", "user:u0"}, Money::from_nanos(1000));
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
  double cpu0 = cpu_seconds(), srv0 = server_cpu_seconds(raw);
  auto t0 = Steady::now();
  std::this_thread::sleep_for(std::chrono::duration<double>(seconds));
  stop = true;
  for (auto& t : ts) t.join();
  Throughput out;
  double n = static_cast<double>(ops.load());
  out.ops_s = n / std::chrono::duration<double>(Steady::now() - t0).count();
  out.client_us = (cpu_seconds() - cpu0) * 1e6 / n;
  out.server_us = (server_cpu_seconds(raw) - srv0) * 1e6 / n;
  return out;
}

// MONITOR line -> the command's arguments ("..." quoted, with sdscatrepr escapes).
std::vector<std::string> parse_monitor(const std::string& line) {
  std::vector<std::string> out;
  size_t i = line.find(']');
  if (i == std::string::npos) return out;
  while (true) {
    i = line.find('"', i + 1);
    if (i == std::string::npos) break;
    std::string a;
    for (++i; i < line.size() && line[i] != '"'; ++i) {
      char ch = line[i];
      if (ch != '\\') {
        a += ch;
        continue;
      }
      char e = line[++i];
      switch (e) {
        case 'n': a += '\n'; break;
        case 'r': a += '\r'; break;
        case 't': a += '\t'; break;
        case 'a': a += '\a'; break;
        case 'b': a += '\b'; break;
        case 'x': a += static_cast<char>(std::stoi(line.substr(i + 1, 2), nullptr, 16)); i += 2; break;
        default: a += e;
      }
    }
    out.push_back(std::move(a));
  }
  return out;
}

// The EVALSHA a reserve sends, captured with MONITOR.
std::vector<std::string> capture_reserve(const std::string& host, int port, BudgetManager& m, const Subject& s) {
  m.reserve(s, Money::from_nanos(1000));  // a fresh plan (limits may have changed since)
  redisContext* mon = redisConnect(host.c_str(), port);
  freeReplyObject(cmd(mon, {"MONITOR"}));
  std::string id = "bench-capture-" + std::to_string(::getpid());
  RequestOptions ro;
  ro.request_id = id;
  m.release(m.reserve(s, Money::from_nanos(1000), ro).reservation);
  std::vector<std::string> args;
  for (int i = 0; i < 100 && args.empty(); ++i) {
    void* r = nullptr;
    if (redisGetReply(mon, &r) != REDIS_OK) break;
    auto* rep = static_cast<redisReply*>(r);
    std::string line(rep->str ? rep->str : "", rep->str ? rep->len : 0);
    freeReplyObject(rep);
    auto a = parse_monitor(line);
    if (a.size() > 7 && (a[0] == "FCALL" || a[0] == "EVALSHA") && a[7] == id) args = std::move(a);
  }
  redisFree(mon);
  return args;
}

// redis-benchmark -c 16 running one command (argv, no shell): requests per second.
double redis_benchmark(const std::string& host, int port, int clients, int requests, std::vector<std::string> command) {
  std::vector<std::string> a = {"redis-benchmark", "-h", host, "-p", std::to_string(port), "-c", std::to_string(clients),
                                "-n", std::to_string(requests), "-r", "100000000000", "-q"};
  a.insert(a.end(), command.begin(), command.end());
  int fd[2];
  if (::pipe(fd) != 0) return 0;
  pid_t pid = ::fork();
  if (pid == 0) {
    ::dup2(fd[1], 1);
    ::close(fd[0]);
    ::close(fd[1]);
    std::vector<char*> argv;
    for (auto& s : a) argv.push_back(s.data());
    argv.push_back(nullptr);
    ::execvp(argv[0], argv.data());
    ::_exit(127);
  }
  ::close(fd[1]);
  std::string outp;
  char buf[4096];
  ssize_t n;
  while ((n = ::read(fd[0], buf, sizeof buf)) > 0) outp.append(buf, static_cast<size_t>(n));
  ::close(fd[0]);
  int st = 0;
  ::waitpid(pid, &st, 0);
  auto pos = outp.rfind("requests per second");
  if (pos == std::string::npos) return 0;
  auto colon = outp.rfind(':', pos);
  return std::atof(outp.c_str() + outp.find_first_of("0123456789", colon));
}

struct ModeFigures {
  double noop_p50, write_p50, res_p50, res_p99, rt, srv_res, srv_noop, inner_calls, inner_us, rb_res, rb_noop;
  Throughput piped, unpiped;
};

bool wait_aof_idle(redisContext* c) {
  for (int i = 0; i < 600; ++i) {
    if (info_field(c, "persistence", "aof_rewrite_in_progress") == "0" &&
        info_field(c, "persistence", "aof_rewrite_scheduled") == "0")
      return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return false;
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
  const double secs = argc > 2 ? std::atof(argv[2]) : 3.0;
  auto [host, port] = host_port(base);
  redisContext* raw = redisConnect(host.c_str(), port);
  if (!raw || raw->err) {
    std::cerr << "bench_redis: cannot connect to " << base << "\n";
    return 1;
  }
  const std::string noop_sha = cmd_str(raw, {"SCRIPT", "LOAD", "return 1"});
  const std::string write_sha = cmd_str(raw, {"SCRIPT", "LOAD", "return redis.call('INCR', KEYS[1])"});
  const std::string write_key = "{bench" + std::to_string(::getpid()) + "}:w";
  const std::string orig_aof = cmd_str(raw, {"CONFIG", "GET", "appendonly"});
  const std::string orig_fsync = cmd_str(raw, {"CONFIG", "GET", "appendfsync"});

  std::string url = base + "?prefix=bench" + std::to_string(::getpid());
  BudgetManager m(manager_options(url));
  Subject s{"tenant:acme", "user:alice"};
  for (int i = 0; i < 200; ++i) m.reserve(s, Money::from_nanos(1000));  // warm-up, scripts loaded
  // The reserve call as sent, for redis-benchmark (captured right before each use: opening a
  // manager re-puts its limits, which may bump the limits version and make older plans stale).
  auto capture = [&] {
    auto c = capture_reserve(host, port, m, s);
    if (c.empty()) std::cerr << "bench_redis: could not capture the reserve command (MONITOR)\n";
    else c[7] = "rb-__rand_int__";
    return c;
  };
  {
    auto c = capture();
    size_t bytes = 0;
    for (auto& a : c) bytes += a.size();
    std::printf("reserve call: %s with %zu arguments, %zu bytes\n", c.empty() ? "?" : c[0].c_str(), c.size(), bytes);
  }

  auto measure = [&](const char* name) {
    ModeFigures f{};
    std::vector<double> noop_us, write_us, res_us;
    auto lap = [](auto&& fn) {
      auto t0 = Steady::now();
      fn();
      return std::chrono::duration<double, std::micro>(Steady::now() - t0).count();
    };
    for (int i = 0; i < iters; ++i) {
      noop_us.push_back(lap([&] { freeReplyObject(cmd(raw, {"EVALSHA", noop_sha, "0"})); }));
      write_us.push_back(lap([&] { freeReplyObject(cmd(raw, {"EVALSHA", write_sha, "1", write_key})); }));
      res_us.push_back(lap([&] {
        if (!m.reserve(s, Money::from_nanos(1000)).allowed) {
          std::cerr << "unexpected denial\n";
          std::exit(1);
        }
      }));
    }
    f.noop_p50 = pct(noop_us, 0.5);
    f.write_p50 = pct(write_us, 0.5);
    f.res_p50 = pct(res_us, 0.5);
    f.res_p99 = pct(res_us, 0.99);
    // Round trips and server time: reserve-only, then no-op-only loops.
    const int n = std::min(iters, 5000);
    auto s0 = script_stats(raw);
    for (int i = 0; i < n; ++i) m.reserve(s, Money::from_nanos(1000));
    auto s1 = script_stats(raw);
    for (int i = 0; i < n; ++i) freeReplyObject(cmd(raw, {"EVALSHA", noop_sha, "0"}));
    auto s2 = script_stats(raw);
    f.rt = static_cast<double>(s1.calls - s0.calls) / n;
    f.srv_res = static_cast<double>(s1.usec - s0.usec) / static_cast<double>(s1.calls - s0.calls);
    f.srv_noop = static_cast<double>(s2.usec - s1.usec) / static_cast<double>(s2.calls - s1.calls);
    f.inner_calls = static_cast<double>(s1.inner_calls - s0.inner_calls) / n;
    f.inner_us = static_cast<double>(s1.inner_usec - s0.inner_usec) / n;
    f.piped = throughput(raw, url + "&pool=4", 16, secs);
    f.unpiped = throughput(raw, url + "&pool=16", 16, secs);
    const int rbn = static_cast<int>(std::max(20000.0, 20000.0 * secs));
    if (auto reserve_cmd = capture(); !reserve_cmd.empty()) f.rb_res = redis_benchmark(host, port, 16, rbn, reserve_cmd);
    f.rb_noop = redis_benchmark(host, port, 16, rbn * 4, {"EVALSHA", noop_sha, "0"});

    std::printf("\n== %s ==\n", name);
    std::printf("1 thread, interleaved, p50: no-op EVALSHA %.1f us | one-write EVALSHA %.1f us | reserve %.1f us "
                "(p99 %.1f)\n",
                f.noop_p50, f.write_p50, f.res_p50, f.res_p99);
    std::printf("  reserve / no-op EVALSHA   = %.2fx   (goal <= 1.2x); reserve - no-op = %.1f us\n", f.res_p50 / f.noop_p50,
                f.res_p50 - f.noop_p50);
    std::printf("  reserve / one-write EVALSHA = %.2fx\n", f.res_p50 / f.write_p50);
    std::printf("  round trips per reserve (INFO commandstats): %.3f\n", f.rt);
    std::printf("  server time per script (commandstats): reserve %.1f us (of which %.1f redis.calls: %.1f us; Lua and "
                "call glue: %.1f us), no-op %.1f us\n",
                f.srv_res, f.inner_calls, f.inner_us, f.srv_res - f.inner_us, f.srv_noop);
    std::printf("16 threads: reserve pool 4 (auto-pipelining) %.0f ops/s (goal >= 70000), pool 16 %.0f ops/s\n",
                f.piped.ops_s, f.unpiped.ops_s);
    std::printf("  CPU per reserve, pool 4: client %.1f us + redis-server %.1f us; pool 16: client %.1f us + "
                "redis-server %.1f us\n",
                f.piped.client_us, f.piped.server_us, f.unpiped.client_us, f.unpiped.server_us);
    std::printf("  -> bounds on this machine (%u cores): redis-server alone %.0f ops/s; client + server %.0f ops/s\n",
                std::thread::hardware_concurrency(), 1e6 / f.piped.server_us,
                std::thread::hardware_concurrency() * 1e6 / (f.piped.client_us + f.piped.server_us));
    if (f.rb_res > 0)
      std::printf("  redis-benchmark -c 16, same reserve call: %.0f ops/s -> ratios: pipelined %.2f, "
                  "pool 16 %.2f (goal >= 0.80)\n",
                  f.rb_res, f.piped.ops_s / f.rb_res, f.unpiped.ops_s / f.rb_res);
    if (f.rb_noop > 0) std::printf("  redis-benchmark -c 16 EVALSHA no-op: %.0f ops/s\n", f.rb_noop);
    std::fflush(stdout);
    return f;
  };

  // Mode 1: fsync on every write.
  cmd_str(raw, {"CONFIG", "SET", "appendonly", "yes"});
  cmd_str(raw, {"CONFIG", "SET", "appendfsync", "always"});
  wait_aof_idle(raw);
  measure("fsync: appendonly yes, appendfsync always");
  // Mode 2: Redis's default persistence, no AOF.
  cmd_str(raw, {"CONFIG", "SET", "appendonly", "no"});
  measure("no-AOF: appendonly no (Redis default)");
  // Restore the server's configuration.
  cmd_str(raw, {"CONFIG", "SET", "appendfsync", orig_fsync});
  cmd_str(raw, {"CONFIG", "SET", "appendonly", orig_aof});
  wait_aof_idle(raw);
  redisFree(raw);
  return 0;
}
