// Stress and crash tests of the concurrency guarantees (not a benchmark: it checks, it doesn't time).
//
//   budget_stress threads --store URL [--threads N] [--seconds S]
//       N threads run lifecycles (reserve, streamed consumes, commit/release) on overlapping
//       subjects with tight hierarchical limits, while a monitor samples status(). Afterwards:
//       spend + holds never exceeded a limit, verify() is clean, and the ledger reproduces the
//       spend of every scope.
//   budget_stress procs --store URL [--procs P] [--threads N] [--seconds S]
//       The same with P processes (fork/exec of this program) sharing one store.
//   budget_stress crash --store URL [--procs P] [--rounds R]
//       Children run lifecycles and log every acknowledged commit; the parent SIGKILLs them at
//       random moments. Afterwards: no acknowledged commit is lost, no hold is half-applied,
//       expired holds are settled, verify() is clean.
//   budget_stress diskfull --store sqlite:PATH [--procs P] [--threads N] [--seconds S]
//       P processes on one file, the odd ones starved of disk space on and off (a file size
//       limit: writes past the WAL's size fail). Afterwards the same checks as crash.
//   budget_stress serverkill --store own-redis [--procs P] [--threads N] [--seconds S] [--fail-open 1]
//       P processes on a redis-server of this program's own (appendonly yes, appendfsync
//       always; the binary: $REDIS_SERVER or redis-server) that it SIGKILLs and restarts again
//       and again (or makes it forget its scripts, or hang) while they run, its ledger drained into a
//       SQLite sink meanwhile.
//       Afterwards the same checks as crash.
#include <budget/budget.hpp>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

using namespace budget;
using namespace std::chrono_literals;

namespace {

struct Args {
  std::string mode, store;
  int threads = 4, procs = 4, rounds = 4;
  bool fail_open = false;  // serverkill: the managers fail open
  double seconds = 3;
  int child_id = -1;
  std::string log;
};

[[noreturn]] void die(const std::string& msg) {
  std::cerr << "FAIL: " << msg << std::endl;
  std::exit(1);
}

const int kTenants = 2, kUsersPerTenant = 3;
Money usd(const char* s) { return Money::parse(s); }

// Tight hierarchical limits over a 2-second rolling window (so the run keeps hitting them
// rather than exhausting them once), plus `total` windows that track all spend for the final
// ledger comparison. Two users also have tight per-minute limits on the other metrics
// (binding: the others run at the cost limits), so requests and tokens are proven under
// contention too; the replay checks every minute limit listed here exactly.
struct MinuteLimit {
  const char* scope;
  Metric metric;
  int64_t limit;
};
const MinuteLimit kMinuteLimits[] = {
    {"global", Metric::Cost, 1500'000'000'000},  // $1500
    {"user:t0u0", Metric::Requests, 60},
    {"user:t0u1", Metric::Tokens, 30'000},
};
int64_t amount_of(const Amounts& a, Metric m) {
  return m == Metric::Cost ? a.cost : m == Metric::Tokens ? a.tokens : a.requests;
}
std::vector<Limit> limits() {
  auto w = Window::rolling(2s);
  std::vector<Limit> out{Limit::cost("global", w, usd("200")),
                         Limit::cost("tenant:*", w, usd("80")),
                         Limit::cost("user:*", w, usd("20")),
                         Limit::requests("user:*", Window::minute(), 1'000'000),
                         Limit::cost("global", Window::total(), usd("1000000")),
                         Limit::cost("tenant:*", Window::total(), usd("1000000")),
                         Limit::cost("user:*", Window::total(), usd("1000000"))};
  for (const auto& m : kMinuteLimits) {
    Limit l = Limit::requests(m.scope, Window::minute(), m.limit);
    l.metric = m.metric;
    out.push_back(l);
  }
  return out;
}

Subject subject_for(std::mt19937_64& rng) {
  int t = static_cast<int>(rng() % kTenants), u = static_cast<int>(rng() % kUsersPerTenant);
  return Subject{"tenant:t" + std::to_string(t), "user:t" + std::to_string(t) + "u" + std::to_string(u)};
}

std::vector<Scope> all_scopes() {
  std::vector<Scope> out{Scope::global()};
  for (int t = 0; t < kTenants; ++t) {
    out.push_back(Scope::parse("tenant:t" + std::to_string(t)));
    for (int u = 0; u < kUsersPerTenant; ++u)
      out.push_back(Scope::parse("user:t" + std::to_string(t) + "u" + std::to_string(u)));
  }
  return out;
}

std::atomic<long> g_refused{0};      // operations the store refused (StoreUnavailable)
std::atomic<long> g_fail_opened{0};  // reservations allowed because the store was down (fail-open)
// serverkill: commits the store refused are retried (same request id, by reservation or by id,
// for up to 10 s), as an application would; one that the store ran before it failed must not
// count twice. BUDGET_STRESS_FAIL_OPEN: the managers fail open (limits may then be exceeded).
bool retry_commits() { return std::getenv("BUDGET_STRESS_RETRY") != nullptr; }
// A child's counters file ("<log>.refused": refused, fail-opened), rewritten while it runs so
// the parent of a fault test can go on until its faults were seen (see mode_serverkill).
std::string g_counts_path;
void write_counts() {
  if (g_counts_path.empty()) return;
  const std::string tmp = g_counts_path + ".tmp";
  std::ofstream out(tmp);
  out << g_refused.load() << ' ' << g_fail_opened.load() << '\n';
  out.close();
  // Atomic: a reader never sees half a file; one that could not be written (diskfull starves
  // this process's file sizes on and off) leaves the last one in place.
  if (out) std::filesystem::rename(tmp, g_counts_path);
}
bool fail_open_mode() { return std::getenv("BUDGET_STRESS_FAIL_OPEN") != nullptr; }

// One lifecycle; commits never exceed the hold, so no limit may ever be exceeded.
// Returns the request id and amount when a commit was acknowledged.
std::optional<std::pair<std::string, int64_t>> lifecycle(BudgetManager& m, std::mt19937_64& rng, int tag, long n) {
  auto s = subject_for(rng);
  RequestOptions o;
  o.request_id = "p" + std::to_string(::getpid()) + "-" + std::to_string(tag) + "-" + std::to_string(n);
  o.ttl = Duration(2000);
  auto cost = Money::from_nanos(static_cast<int64_t>(20'000'000 + rng() % 80'000'000));
  auto d = m.reserve(s, Estimate::money(cost, static_cast<int64_t>(300 + rng() % 1500)), o);
  if (!d.allowed) {
    if (d.denial.reason == DenyReason::StoreUnavailable) ++g_refused;
    return std::nullopt;
  }
  if (d.fail_open) ++g_fail_opened;
  auto r = d.reservation;
  Money committed = Money();
  int64_t tokens = 0;  // consumed (and admitted)
  int chunks = static_cast<int>(rng() % 8);
  for (int i = 0; i < chunks; ++i) {
    Money chunk = Money::from_nanos(1 + static_cast<int64_t>(rng() % 30'000'000));  // persisted: see options_for
    auto t = static_cast<int64_t>(rng() % 400);
    auto c = m.consume(r, chunk, t);
    if (!c.ok()) break;
    committed = c.consumed;
    tokens += t;
  }
  switch (rng() % 10) {
    case 0:
      m.release(r);
      return std::nullopt;
    case 1:
      return std::nullopt;  // abandoned: expires
    default: {
      Money amount = committed;  // what it consumed (persisted), even nothing: see options_for
      if (amount > r.held()) amount = r.held();
      const auto charge = Charge::money(amount, std::min(tokens, r.held_tokens()));
      const bool retry = retry_commits();
      // By id: the C API's way, the state found by its id; a fail-open reservation's too, even
      // when the retries below outlast its TTL (they did in CI: NotFound, the spend lost).
      const bool by_id = retry && rng() % 2 == 0;
      for (auto give_up = std::chrono::steady_clock::now() + 10s;;) {
        try {
          auto rc = by_id ? m.commit(r.request_id(), charge) : m.commit(r, charge);
          if (rc.over_limit && std::getenv("STRESS_DEBUG")) std::cerr << "over_limit: " << rc.over_limit_scopes.at(0) << "\n";
          return std::make_pair(r.request_id(), amount.nanos());
        } catch (const StoreUnavailableError&) {
          if (!retry || std::chrono::steady_clock::now() > give_up) throw;
          ++g_refused;
          std::this_thread::sleep_for(20ms);
        }
      }
    }
  }
}

// Checks that no calendar/total limit is exceeded now (spent + held <= limit) for any scope.
// A status() read takes its `now` first and may then wait (contention, an oversubscribed or
// memory-starved machine): read late, its window has ended and the read also counts the next
// window's buckets (a check counts later buckets too), which is not an overspend. So a
// window that ended before the read returned is skipped here; the ledger replay below checks
// every window exactly, rolling and calendar.
void check_limits(BudgetManager& m, const char* when) {
  for (const auto& sc : all_scopes()) {
    auto sts = m.status(sc);
    const auto read_at = std::chrono::system_clock::now();
    for (const auto& st : sts) {
      if (st.window.rfind("rolling:", 0) == 0 || (st.resets_at && *st.resets_at <= read_at)) continue;
      if (st.spent + st.held > st.limit)
        die(std::string(when) + ": " + st.key + " spent " + std::to_string(st.spent) + " + held " +
            std::to_string(st.held) + " > limit " + std::to_string(st.limit));
    }
  }
}

// Calls f on every event the query selects, in seq order, a page at a time: a long run's
// ledger is millions of events, too many to hold as one vector beside the store's own copy.
template <class F>
void for_each_event(BudgetManager& m, LedgerQuery q, F&& f) {
  q.limit = 50'000;
  for (;;) {
    auto page = m.events(q);
    for (const auto& e : page) f(e);
    if (page.size() < q.limit) return;
    q.after_seq = page.back().seq;
  }
}

// Replays the ledger in commit order: after every admission (reserve, grown hold), the
// holds + spend of every rolling window as seen at that event's time, and of every minute
// bucket of kMinuteLimits it was charged to, never exceed their limits.
void check_windows_by_replay(BudgetManager& m) {
  std::map<std::string, std::map<int64_t, int64_t>> buckets;  // series -> bucket start -> spent+held
  auto limit_of = [](const std::string& scope) {
    if (scope == "global") return usd("200").nanos();
    if (scope.rfind("tenant:", 0) == 0) return usd("80").nanos();
    return usd("20").nanos();
  };
  constexpr size_t kMinutes = std::size(kMinuteLimits);
  std::map<int64_t, int64_t> minute[kMinutes];  // per minute limit: bucket start -> spent+held
  long checked = 0, minute_checked[kMinutes] = {};
  for_each_event(m, {}, [&](const LedgerEvent& e) {
    for (const auto& key : e.windows) {
      auto p2 = key.rfind('|'), p1 = key.rfind('|', p2 - 1);
      std::string scope = key.substr(0, p1);
      if (key.compare(p1 + 1, p2 - p1 - 1, "minute") == 0) {
        for (size_t i = 0; i < kMinutes; ++i) {
          const auto& ml = kMinuteLimits[i];
          if (scope != ml.scope) continue;
          int64_t& sum = minute[i][std::stoll(key.substr(p2 + 1))];
          int64_t held = amount_of(e.held, ml.metric);
          sum += amount_of(e.spent, ml.metric) + held;
          if (held <= 0) continue;
          ++minute_checked[i];
          if (sum > ml.limit)
            die("ledger replay: " + scope + " " + to_string(ml.metric) + " per minute: holds+spend " +
                std::to_string(sum) + " > limit " + std::to_string(ml.limit) + " at event " + std::to_string(e.seq));
        }
        continue;
      }
      if (key.compare(p1 + 1, p2 - p1 - 1, "rolling:2s") != 0) continue;
      auto& series = buckets[scope];
      series[std::stoll(key.substr(p2 + 1))] += e.spent.cost + e.held.cost;
      // Only admissions (a reserve or a grown hold) are checked: they saw this very range.
      if (e.held.cost <= 0) continue;
      int64_t t = to_millis(e.time);
      int64_t from = (t / 1000) * 1000 - 1000;
      int64_t sum = 0;
      for (auto it = series.lower_bound(from); it != series.end(); ++it) sum += it->second;
      ++checked;
      if (sum > limit_of(scope))
        die("ledger replay: " + scope + " rolling:2s holds+spend " + std::to_string(sum) + " > limit at event " +
            std::to_string(e.seq));
    }
  });
  std::cout << "replay: " << checked << " rolling window states checked; per minute:";
  for (size_t i = 0; i < kMinutes; ++i) {
    std::cout << ' ' << kMinuteLimits[i].scope << ' ' << to_string(kMinuteLimits[i].metric) << ' '
              << minute_checked[i];
    if (minute_checked[i] == 0)
      die(std::string("no admission charged ") + kMinuteLimits[i].scope + "'s minute: that limit was not exercised");
  }
  std::cout << "\n";
}

// verify() clean, no hold left after expiry, and per-scope spend equals the ledger's sum.
void final_checks(BudgetManager& m) {
  const bool limits_hold = !fail_open_mode();  // fail-open admits what the store could not check
  if (limits_hold) check_windows_by_replay(m);
  auto rep = m.verify();
  for (const auto& p : rep.problems) std::cerr << "  " << p << "\n";
  if (!rep.ok) die("verify() reported problems");
  std::map<std::string, int64_t> ledger_spend;
  for_each_event(m, {}, [&](const LedgerEvent& e) {
    for (const auto& s : e.subject) ledger_spend[s] += e.spent.cost;
  });
  for (const auto& sc : all_scopes()) {
    for (const auto& st : m.status(sc)) {
      if (st.held != 0) die(st.key + " still holds " + std::to_string(st.held) + " after expiry");
      if (st.metric != Metric::Cost || st.window != "total") continue;
      if (st.spent != ledger_spend[sc.str()])
        die(st.key + ": status spent " + std::to_string(st.spent) + " != ledger " +
            std::to_string(ledger_spend[sc.str()]));
      if (limits_hold && st.spent > st.limit) die(st.key + " overspent");
    }
  }
  std::cout << "verify: " << rep.events << " events, " << rep.windows_checked << " counters, chain ok\n";
}

Options options_for(const std::string& store) {
  Options o;
  o.store = store;
  o.limits = limits();
  o.store_options.timeout = Duration(10'000);
  // A commit may land after its hold's 2 s TTL (a loaded machine, a starved process), as an
  // adjustment of what expiry charged. With every consume persisted (and a stream committing
  // what it consumed), expiry charges exactly what the commit then asks, so such a late
  // commit never adds spend after the window's room was reused: that would be a flagged
  // over-limit commit, which the in-run limit check cannot tell from an overspend (seen on a
  // tokens-per-minute limit under ctest -j2).
  o.persist_every = Money::from_nanos(1);
  o.fail_open = fail_open_mode();
  return o;
}

void settle_everything(BudgetManager& m) {
  // Holds have a 2 s TTL: wait them out, then settle.
  std::this_thread::sleep_for(2100ms);
  m.expire_holds();
}

long run_workers(BudgetManager& m, int threads, double seconds, int tag, std::ofstream* log) {
  std::atomic<long> done{0};
  std::atomic<bool> stop{false};
  std::mutex log_m;
  std::vector<std::thread> ts;
  for (int i = 0; i < threads; ++i)
    ts.emplace_back([&, i] {
      std::mt19937_64 rng(static_cast<uint64_t>(tag * 1000 + i) ^ static_cast<uint64_t>(::getpid()));
      long n = 0;
      while (!stop.load()) {
        const long refused_before = g_refused.load();
        try {
          auto ack = lifecycle(m, rng, tag * 100 + i, n++);
          if (ack && log) {
            std::lock_guard lk(log_m);
            *log << ack->first << ' ' << ack->second << '\n';
            log->flush();
          }
        } catch (const StoreUnavailableError&) {
          // busy under contention (or a full disk): the operation did not happen; go on
          ++g_refused;
        }
        // Refused: back off a little, as an application would (the store may be down for a while).
        if (g_refused.load() != refused_before) std::this_thread::sleep_for(1ms);
        ++done;
      }
    });
  auto end = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
  // serverkill: the parent ends the run (it knows when its faults are done).
  const char* stop_file = std::getenv("BUDGET_STRESS_STOP_FILE");
  while (std::chrono::steady_clock::now() < end && !(stop_file && std::filesystem::exists(stop_file))) {
    try {
      if (!fail_open_mode()) check_limits(m, "during the run");  // fail-open may exceed them
    } catch (const StoreUnavailableError&) {
      // the store is down (serverkill) or busy: no sample this time
    }
    write_counts();
    std::this_thread::sleep_for(50ms);
  }
  stop = true;
  for (auto& t : ts) t.join();
  return done.load();
}

int mode_threads(const Args& a) {
  BudgetManager m(options_for(a.store));
  long n = run_workers(m, a.threads, a.seconds, 1, nullptr);
  check_limits(m, "after the run");
  settle_everything(m);
  final_checks(m);
  std::cout << "threads: " << a.threads << " threads, " << n << " lifecycles on " << a.store << ": OK\n";
  std::cout << m.metrics_text().substr(0, 400) << "\n";
  return 0;
}

std::vector<pid_t> spawn(const char* self, const Args& a, int count, const std::string& log_prefix) {
  std::vector<pid_t> pids;
  for (int i = 0; i < count; ++i) {
    pid_t pid = fork();
    if (pid < 0) die("fork failed");
    if (pid == 0) {
      std::string id = std::to_string(i), th = std::to_string(a.threads), secs = std::to_string(a.seconds);
      std::string log = log_prefix.empty() ? "" : log_prefix + "." + std::to_string(i);
      execl(self, self, "child", "--store", a.store.c_str(), "--child", id.c_str(), "--threads", th.c_str(),
            "--seconds", secs.c_str(), "--log", log.c_str(), static_cast<char*>(nullptr));
      _exit(127);
    }
    pids.push_back(pid);
  }
  return pids;
}

// diskfull mode: odd children's files may not grow, on and off (RLIMIT_FSIZE, as a full disk
// that comes and goes: every write past the WAL's current size fails), until `stop`.
void starve_disk(const std::string& store, std::atomic<bool>& stop) {
  std::string wal = store.substr(store.find(':') + 1) + "-wal";
  std::mt19937_64 rng(static_cast<uint64_t>(::getpid()));
  ::signal(SIGXFSZ, SIG_IGN);
  while (!stop.load()) {
    struct stat sb {};
    rlimit tight{stat(wal.c_str(), &sb) == 0 ? static_cast<rlim_t>(sb.st_size) : 0, RLIM_INFINITY};
    setrlimit(RLIMIT_FSIZE, &tight);
    std::this_thread::sleep_for(std::chrono::milliseconds(50 + rng() % 250));
    rlimit room{RLIM_INFINITY, RLIM_INFINITY};
    setrlimit(RLIMIT_FSIZE, &room);
    std::this_thread::sleep_for(std::chrono::milliseconds(50 + rng() % 250));
  }
}

// A manager on the store, retried for up to 20 s while the store cannot answer (serverkill:
// the server may be down when a child starts).
std::unique_ptr<BudgetManager> open_manager(const std::string& store) {
  auto give_up = std::chrono::steady_clock::now() + 20s;
  for (;;) {
    try {
      return std::make_unique<BudgetManager>(options_for(store));
    } catch (const StoreUnavailableError&) {
      if (std::chrono::steady_clock::now() > give_up) throw;
      std::this_thread::sleep_for(50ms);
    }
  }
}

int mode_child(const Args& a) {
  auto manager = open_manager(a.store);
  BudgetManager& m = *manager;
  std::atomic<bool> stop_starving{false};
  std::thread starver;
  if (std::getenv("BUDGET_STRESS_DISKFULL") && a.child_id % 2 == 1)
    starver = std::thread(starve_disk, a.store, std::ref(stop_starving));
  struct Join {
    std::atomic<bool>& stop;
    std::thread& t;
    ~Join() {
      stop = true;
      if (t.joinable()) t.join();
    }
  } join{stop_starving, starver};
  std::ofstream log;
  if (!a.log.empty()) log.open(a.log, std::ios::app);
  if (!a.log.empty()) g_counts_path = a.log + ".refused";
  run_workers(m, a.threads, a.seconds, a.child_id + 10, a.log.empty() ? nullptr : &log);
  write_counts();
  return 0;
}

int mode_procs(const char* self, const Args& a) {
  { BudgetManager init(options_for(a.store)); }  // create the schema and limits once
  auto pids = spawn(self, a, a.procs, "");
  BudgetManager m(options_for(a.store));
  auto end = std::chrono::steady_clock::now() + std::chrono::duration<double>(a.seconds);
  while (std::chrono::steady_clock::now() < end) {
    check_limits(m, "during the multi-process run");
    std::this_thread::sleep_for(100ms);
  }
  for (pid_t p : pids) {
    int st = 0;
    waitpid(p, &st, 0);
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) die("a child process failed");
  }
  check_limits(m, "after the run");
  settle_everything(m);
  final_checks(m);
  std::cout << "procs: " << a.procs << " processes x " << a.threads << " threads on " << a.store << ": OK\n";
  return 0;
}

// Every commit the children acknowledged (their logs, removed here) is in the ledger with
// its amount; returns how many there were.
size_t check_acknowledged(BudgetManager& m, const std::string& log_prefix, int rounds, int procs) {
  std::map<std::string, int64_t> acked;
  for (int round = 0; round < rounds; ++round)
    for (int i = 0; i < procs; ++i) {
      std::string path = log_prefix + "-r" + std::to_string(round) + "." + std::to_string(i);
      {
        std::ifstream in(path);
        std::string id;
        int64_t amount;
        while (in >> id >> amount) acked[id] = amount;
      }
      std::remove(path.c_str());
      std::remove((path + ".refused").c_str());
    }
  if (acked.empty()) die("no commit was acknowledged: the test proves nothing");
  // What a request was charged: its commit, or (a commit that came after the hold's TTL, as
  // a starved process's may) its expiry's charge plus the commit's adjustment of it.
  std::map<std::string, int64_t> committed;
  std::set<std::string> commit_seen;
  // (A fail-open reservation's commit is a record of the same request id, or of
  // "<id>/fail-open" when the store denied the reserve after all: it had timed out here.)
  for_each_event(m, {}, [&](const LedgerEvent& e) {
    const bool commit = e.type == EventType::Commit || e.type == EventType::Record;
    std::string id = e.request_id;
    if (e.type == EventType::Record && id.size() > 10 && id.compare(id.size() - 10, 10, "/fail-open") == 0)
      id.resize(id.size() - 10);
    if (commit) commit_seen.insert(id);
    if (commit || e.type == EventType::Expire) committed[id] += e.spent.cost;
  });
  for (const auto& [id, amount] : acked) {
    auto it = committed.find(id);
    if (it == committed.end() || !commit_seen.count(id)) die("acknowledged commit " + id + " is missing from the ledger");
    if (it->second != amount) die("acknowledged commit " + id + " has a different amount in the ledger");
  }
  return acked.size();
}

// How many operations a child that logged to `log` had refused (StoreUnavailable).
long refused_by(const std::string& log, long* fail_opened = nullptr) {
  long n = 0, f = 0;
  std::ifstream(log + ".refused") >> n >> f;
  if (fail_opened) *fail_opened += f;
  return n;
}

// Children on one SQLite file, half of them starved of disk space on and off: what failed
// changed nothing, what was acknowledged is all there, and no limit was overspent.
int mode_diskfull(const char* self, const Args& a) {
  if (a.store.rfind("sqlite:", 0) != 0) die("diskfull needs a sqlite: store");
  std::string log_prefix = "/tmp/budget-diskfull-" + std::to_string(::getpid());
  { BudgetManager init(options_for(a.store)); }
  setenv("BUDGET_STRESS_DISKFULL", "1", 1);
  auto pids = spawn(self, a, a.procs, log_prefix + "-r0");
  for (pid_t p : pids) {
    int st = 0;
    waitpid(p, &st, 0);
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) die("a child process failed");
  }
  long refused = 0;
  for (int i = 1; i < a.procs; i += 2) refused += refused_by(log_prefix + "-r0." + std::to_string(i));
  if (refused == 0) die("no operation was refused for want of disk space: the test proves nothing");
  BudgetManager m(options_for(a.store));
  settle_everything(m);
  size_t acked = check_acknowledged(m, log_prefix, 1, a.procs);
  final_checks(m);
  std::cout << "diskfull: " << a.procs << " processes (" << a.procs / 2 << " starved of disk on and off; " << refused
            << " operations refused), " << acked << " acknowledged commits all present: OK\n";
  return 0;
}

// serverkill mode: a redis-server of our own, on a free loopback port, with every write
// fsynced before its reply (appendonly yes, appendfsync always), so a restart loses nothing
// that was acknowledged. The child process dies with us.
class KillableRedis {
 public:
  explicit KillableRedis(std::string dir) : dir_(std::move(dir)) {
    int s = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    if (s < 0 || ::bind(s, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 ||
        ::getsockname(s, reinterpret_cast<sockaddr*>(&a), &len) != 0)
      die("no free loopback port");
    port_ = ntohs(a.sin_port);
    ::close(s);
    start();
  }
  ~KillableRedis() { kill(); }
  KillableRedis(const KillableRedis&) = delete;
  KillableRedis& operator=(const KillableRedis&) = delete;
  int port() const { return port_; }
  // Starts the server. It refuses a damaged append-only file (aof-load-truncated no, the
  // configuration docs/redis.md recommends: Redis 7.0's own truncation can keep the first part
  // of a script's MULTI block); then, as an operator would, this runs redis-check-aof --fix
  // (which cuts the file before the incomplete block) and starts it again.
  void start() {
    if (launch()) return;
    const char* tool = std::getenv("REDIS_CHECK_AOF");
    std::string fix = std::string(tool && *tool ? tool : "redis-check-aof") + " --fix " + dir_ +
                      "/appendonlydir/appendonly.aof.manifest >> " + dir_ + "/check-aof.log 2>&1";
    FILE* p = ::popen(fix.c_str(), "w");
    if (!p) die("cannot run " + fix);
    std::fputs("y\n", p);
    if (::pclose(p) != 0) die("redis-server refused its append-only file and `" + fix + "` failed");
    ++fixes_;
    if (!launch()) die("redis-server did not start after redis-check-aof --fix (see " + dir_ + "/redis.log)");
  }
  int fixes() const { return fixes_; }
  // The server forgets its scripts and functions (as after FUNCTION FLUSH / SCRIPT FLUSH by an
  // operator, or a failover to a replica without them): the clients reload them transparently.
  void flush_scripts() {
    if (!ask("FUNCTION FLUSH", "+OK") || !ask("SCRIPT FLUSH", "+OK")) die("FUNCTION/SCRIPT FLUSH failed");
  }
  // SIGSTOP for `ms`, then SIGCONT: a hung server (calls time out, and run when it resumes).
  void pause_for(std::chrono::milliseconds ms) {
    if (pid_ <= 0) return;
    ::kill(pid_, SIGSTOP);
    std::this_thread::sleep_for(ms);
    ::kill(pid_, SIGCONT);
  }
  void kill() {
    if (pid_ <= 0) return;
    ::kill(pid_, SIGKILL);
    waitpid(pid_, nullptr, 0);
    pid_ = -1;
  }

 private:
  // false: the server exited at start.
  bool launch() {
    const char* bin = std::getenv("REDIS_SERVER");
    std::string server = bin && *bin ? bin : "redis-server";
    std::vector<std::string> args{server, "--port", std::to_string(port_), "--bind", "127.0.0.1", "--dir", dir_,
                                  "--appendonly", "yes", "--appendfsync", "always", "--aof-load-truncated", "no",
                                  "--save", "", "--logfile", dir_ + "/redis.log"};
    pid_ = fork();
    if (pid_ < 0) die("fork failed");
    if (pid_ == 0) {
      ::prctl(PR_SET_PDEATHSIG, SIGKILL);
      std::vector<char*> argv;
      for (auto& x : args) argv.push_back(x.data());
      argv.push_back(nullptr);
      execvp(argv[0], argv.data());
      _exit(127);
    }
    for (int i = 0; i < 400; ++i) {  // up to 10 s (it replays its append-only file first)
      if (answers_ping()) return true;
      int st = 0;
      if (waitpid(pid_, &st, WNOHANG) == pid_) {
        pid_ = -1;
        if (WIFEXITED(st) && WEXITSTATUS(st) == 127) die("cannot run " + server + ": is it installed?");
        return false;
      }
      std::this_thread::sleep_for(25ms);
    }
    die("redis-server did not answer PING within 10 s");
  }
  bool answers_ping() const { return ask("PING", "+PONG"); }
  // Sends one inline command on a connection of its own; true if the reply starts with `want`.
  bool ask(const std::string& command, const std::string& want) const {
    int s = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(static_cast<uint16_t>(port_));
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    bool ok = false;
    const std::string line = command + "\r\n";
    if (s >= 0 && ::connect(s, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0 &&
        ::write(s, line.data(), line.size()) == static_cast<ssize_t>(line.size())) {
      std::string got(want.size(), '\0');
      ok = ::recv(s, got.data(), got.size(), MSG_WAITALL) == static_cast<ssize_t>(got.size()) && got == want;
    }
    if (s >= 0) ::close(s);
    return ok;
  }
  std::string dir_;
  int port_ = 0;
  pid_t pid_ = -1;
  int fixes_ = 0;
};

// Children on one Redis that is SIGKILLed and restarted again and again while they run: what
// failed changed nothing, what was acknowledged is all there (in the ledger drained into the
// SQLite sink, while the server came and went), and no limit was overspent.
int mode_serverkill(const char* self, Args a) {
  if (a.store != "own-redis") die("serverkill runs its own redis-server: --store own-redis");
  std::string dir = "/tmp/budget-serverkill-" + std::to_string(::getpid());
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  std::string log_prefix = dir + "/acked";
  KillableRedis server(dir);
  // A small stream cap: the drain trims the stream while the server comes and goes. The
  // workers' calls time out after 250 ms (a hung server); the final checks keep options_for's.
  const std::string url =
      "redis://127.0.0.1:" + std::to_string(server.port()) + "/0?prefix=sk&maxlen=200&ledger=" + dir + "/ledger.db";
  a.store = url + "&timeout=250";
  { BudgetManager init(options_for(url)); }
  // The children run until the faults are over (a stop file; at most 120 s more than asked).
  const std::string stop_file = dir + "/stop";
  setenv("BUDGET_STRESS_STOP_FILE", stop_file.c_str(), 1);
  setenv("BUDGET_STRESS_RETRY", "1", 1);
  if (a.fail_open) setenv("BUDGET_STRESS_FAIL_OPEN", "1", 1);
  Args child_args = a;
  child_args.seconds = a.seconds + 120;
  auto pids = spawn(self, child_args, a.procs, log_prefix + "-r0");
  // Faults start once every child works (has a commit acknowledged): a slow start (a loaded
  // machine, a sanitizer) must not let the faults pass while no child is running.
  for (auto give_up = std::chrono::steady_clock::now() + 60s;;) {
    bool all = true;
    for (int i = 0; i < a.procs; ++i) {
      std::error_code ec;
      all = all && std::filesystem::file_size(log_prefix + "-r0." + std::to_string(i), ec) > 0 && !ec;
    }
    if (all) break;
    if (std::chrono::steady_clock::now() > give_up) die("the children did not start working within 60 s");
    std::this_thread::sleep_for(50ms);
  }
  int kills = 0, flushes = 0, pauses = 0;
  long drains = 0;
  // The children saw the faults: some operation of theirs was refused or (fail-open) allowed
  // while the server was down. A loaded machine can let a few short outages pass while every
  // child is busy elsewhere (a fail-open reserve is never refused; a commit is refused only
  // if it falls into an outage), so the faults go on until they were seen (at most 60 s more).
  auto children_saw_faults = [&] {
    long refused = 0, fail_opened = 0;
    for (int i = 0; i < a.procs; ++i) refused += refused_by(log_prefix + "-r0." + std::to_string(i), &fail_opened);
    return a.fail_open ? fail_opened > 0 : refused > 0;
  };
  {
    BudgetManager watcher(options_for(a.store));
    std::mt19937_64 rng(static_cast<uint64_t>(::getpid()));
    auto end = std::chrono::steady_clock::now() + std::chrono::duration<double>(a.seconds);
    while (std::chrono::steady_clock::now() < end || kills == 0 || !children_saw_faults()) {
      if (std::chrono::steady_clock::now() > end + 60s) break;  // judged below
      std::this_thread::sleep_for(std::chrono::milliseconds(300 + rng() % 600));
      try {  // a ledger read drains the stream into the sink (refused while the server is down)
        LedgerQuery q;
        q.limit = 1;
        watcher.events(q);
        ++drains;
      } catch (const StoreUnavailableError&) {
      }
      switch (kills == 0 ? 3 : rng() % 4) {  // the first fault is a kill
        case 0:  // the server forgets its scripts (the clients reload them)
          server.flush_scripts();
          ++flushes;
          continue;
        case 1:  // the server hangs for longer than the calls' timeout (see the URL), then resumes
          server.pause_for(std::chrono::milliseconds(300 + rng() % 500));
          ++pauses;
          continue;
        default:
          break;
      }
      server.kill();
      ++kills;
      std::this_thread::sleep_for(std::chrono::milliseconds(50 + rng() % 250));
      server.start();
    }
  }
  std::ofstream(stop_file).put('\n');
  for (pid_t p : pids) {
    int st = 0;
    waitpid(p, &st, 0);
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) die("a child process failed");
  }
  long refused = 0, fail_opened = 0;
  for (int i = 0; i < a.procs; ++i) refused += refused_by(log_prefix + "-r0." + std::to_string(i), &fail_opened);
  // Fail-open: a reserve the server cannot answer is allowed, not refused; a commit is refused
  // only if it happens to fall into an outage (a few short ones in a run), so the evidence
  // there is the reservations allowed while the server was down.
  if (a.fail_open) {
    if (fail_opened == 0) die("no reservation was allowed fail-open: the test proves nothing");
  } else if (refused == 0) {
    die("no operation was refused while the server was down: the test proves nothing");
  }
  if (drains == 0) die("the ledger was never drained while the children ran: the test proves less than it says");
  BudgetManager m(options_for(url));
  settle_everything(m);
  size_t acked = check_acknowledged(m, log_prefix, 1, a.procs);
  final_checks(m);
  std::cout << "serverkill" << (a.fail_open ? " (fail-open: " + std::to_string(fail_opened) + " allowed while down)" : "")
            << ": " << a.procs << " processes x " << a.threads << " threads, redis-server killed " << kills
            << " times (" << server.fixes() << " restarts needed redis-check-aof --fix), its scripts flushed " << flushes
            << " times, hung " << pauses << " times (" << refused
            << " operations refused, " << drains << " drains meanwhile), " << acked
            << " acknowledged commits all present: OK\n";
  server.kill();
  std::filesystem::remove_all(dir);
  return 0;
}

int mode_crash(const char* self, Args a) {
  std::string log_prefix = "/tmp/budget-crash-" + std::to_string(::getpid());
  { BudgetManager init(options_for(a.store)); }
  std::mt19937_64 rng(static_cast<uint64_t>(::getpid()));
  a.seconds = 30;  // children run until killed
  for (int round = 0; round < a.rounds; ++round) {
    auto pids = spawn(self, a, a.procs, log_prefix + "-r" + std::to_string(round));
    for (pid_t p : pids) {
      std::this_thread::sleep_for(std::chrono::milliseconds(150 + rng() % 400));
      kill(p, SIGKILL);
    }
    for (pid_t p : pids) waitpid(p, nullptr, 0);
  }
  // Restart: a new manager on the same file.
  BudgetManager m(options_for(a.store));
  settle_everything(m);
  size_t acked = check_acknowledged(m, log_prefix, a.rounds, a.procs);
  final_checks(m);
  std::cout << "crash: " << a.rounds << " rounds x " << a.procs << " killed processes, " << acked
            << " acknowledged commits all present: OK\n";
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  Args a;
  if (argc < 2) die("usage: budget_stress threads|procs|crash|diskfull|serverkill --store URL [...]");
  a.mode = argv[1];
  for (int i = 2; i + 1 < argc; i += 2) {
    std::string k = argv[i], v = argv[i + 1];
    if (k == "--store") a.store = v;
    else if (k == "--threads") a.threads = std::stoi(v);
    else if (k == "--procs") a.procs = std::stoi(v);
    else if (k == "--rounds") a.rounds = std::stoi(v);
    else if (k == "--seconds") a.seconds = std::stod(v);
    else if (k == "--child") a.child_id = std::stoi(v);
    else if (k == "--log") a.log = v;
    else if (k == "--fail-open") a.fail_open = v == "1";
    else die("unknown option " + k);
  }
  if (a.store.empty()) die("--store is required");
  if (a.store == "redis") {
    const char* url = std::getenv("BUDGET_TEST_REDIS_URL");
    if (!url) die("--store redis needs BUDGET_TEST_REDIS_URL (run under tools/with-redis.sh)");
    a.store = std::string(url) + "?prefix=stress" + std::to_string(::getpid());
  }
  if (a.store.rfind("sqlite:new", 0) == 0) {  // a fresh temp file
    a.store = "sqlite:/tmp/budget-stress-" + std::to_string(::getpid()) + ".db";
    for (auto ext : {"", "-wal", "-shm"}) std::remove((a.store.substr(7) + ext).c_str());
  }
  try {
    if (a.mode == "threads") return mode_threads(a);
    if (a.mode == "procs") return mode_procs(argv[0], a);
    if (a.mode == "crash") return mode_crash(argv[0], a);
    if (a.mode == "diskfull") return mode_diskfull(argv[0], a);
    if (a.mode == "serverkill") return mode_serverkill(argv[0], a);
    if (a.mode == "child") return mode_child(a);
  } catch (const std::exception& e) {
    die(std::string("unexpected exception: ") + e.what());
  }
  die("unknown mode " + a.mode);
}
