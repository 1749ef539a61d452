// Core benchmark: lifecycle cost on the memory and SQLite stores, with same-run baselines.
//
// A lifecycle = reserve + 4 consumes + commit on a 3-scope subject (tenant, project, user;
// plus the implicit global without limits), each scope with 2 limits (cost/day, cost/month).
// Figures are ratios against baselines measured in the same run, since machines are noisy:
//   memory: p50 latency, and the same against a hand-written floor of its essential work;
//           2 threads on distinct subjects vs 1 thread (scaling);
//   memory, contended: 16 and 64 threads on one subject (the stripe locks under contention);
//   the ledger hash: SHA-256 of an event-sized body, the implementation picked vs portable;
//   SQLite: lifecycle rate vs raw one-row WAL transactions (synchronous=NORMAL), per txn;
//           group commit with several threads.
#include <budget/budget.hpp>

#include <sqlite3.h>

#include "sha256.hpp"  // internal: the ledger hash figure (bench/CMakeLists.txt adds src/)
#include "stores/sqlite_vfs.hpp"  // internal: raw transactions through the store's VFS shim

#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <bit>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <cstdio>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

using namespace budget;
using Steady = std::chrono::steady_clock;

namespace {

Money usd(const char* s) { return Money::parse(s); }

std::vector<Limit> limits() {
  std::vector<Limit> out;
  for (const char* kind : {"tenant:*", "project:*", "user:*"}) {
    out.push_back(Limit::cost(kind, Window::day(), usd("1000000")));
    out.push_back(Limit::cost(kind, Window::month(), usd("10000000")));
  }
  return out;
}

Subject subject(int i) {
  auto n = std::to_string(i);
  return Subject{"tenant:t" + n, "project:p" + n, "user:u" + n};
}

inline void lifecycle(BudgetManager& m, const Subject& s) {
  auto d = m.reserve(s, Money::from_nanos(2'000'000));
  auto& r = d.reservation;
  for (int k = 0; k < 4; ++k) m.consume(r, Money::from_nanos(400'000));
  m.commit(r, Money::from_nanos(1'600'000));
}

std::string temp_db(const char* name) {
  auto p = std::filesystem::temp_directory_path() / (std::string("budget-bench-") + name + ".db");
  for (auto ext : {"", "-wal", "-shm"}) std::filesystem::remove(p.string() + ext);
  return p.string();
}

double seconds_since(Steady::time_point t) { return std::chrono::duration<double>(Steady::now() - t).count(); }

// Runs `threads` workers doing lifecycles for ~`secs`, each on its own subject or all on one
// (`shared`: every operation contends for the same stripes); returns lifecycles/s.
double throughput(BudgetManager& m, int threads, double secs, bool shared = false) {
  std::vector<long> counts(static_cast<size_t>(threads));
  std::vector<std::thread> ts;
  auto start = Steady::now();
  for (int t = 0; t < threads; ++t)
    ts.emplace_back([&, t] {
      auto s = subject(shared ? 99 : 100 + t);
      long n = 0;
      while (seconds_since(start) < secs) {
        for (int k = 0; k < 16; ++k) lifecycle(m, s);
        n += 16;
      }
      counts[static_cast<size_t>(t)] = n;
    });
  for (auto& th : ts) th.join();
  long total = 0;
  for (long c : counts) total += c;
  return static_cast<double>(total) / seconds_since(start);
}

// Latency of reserve and of commit, one thread, `n` lifecycles: the tail shows the store's
// checkpoint of its state tables (every 512 events) and SQLite's WAL checkpoints (every 4 MiB).
void print_op_latency(BudgetManager& m, int n) {
  std::vector<double> res, com;
  res.reserve(static_cast<size_t>(n));
  com.reserve(static_cast<size_t>(n));
  auto s = subject(7);
  for (int i = 0; i < n; ++i) {
    auto t0 = Steady::now();
    auto d = m.reserve(s, Money::from_nanos(2'000'000));
    auto t1 = Steady::now();
    for (int k = 0; k < 4; ++k) m.consume(d.reservation, Money::from_nanos(400'000));
    auto t2 = Steady::now();
    m.commit(d.reservation, Money::from_nanos(1'600'000));
    auto t3 = Steady::now();
    res.push_back(std::chrono::duration<double, std::micro>(t1 - t0).count());
    com.push_back(std::chrono::duration<double, std::micro>(t3 - t2).count());
  }
  for (auto* v : {&res, &com}) {
    std::sort(v->begin(), v->end());
    auto at = [&](double q) { return (*v)[static_cast<size_t>(q * (v->size() - 1))]; };
    std::printf("sqlite %s: p50 %5.1f  p90 %5.1f  p99 %6.1f  p99.9 %7.1f  max %8.1f us (1 thread)\n",
                v == &res ? "reserve" : "commit ", at(0.5), at(0.9), at(0.99), at(0.999), v->back());
  }
}

// `procs` processes (fork), each with its own manager and one thread on its own subject, on
// the SQLite file `path` for ~`secs`, every one looping without pause (the worst case: the
// write lock is always wanted). Prints lifecycles/s over all of them, the spread of their
// shares, and latency per lifecycle (the worst process's percentiles).
void sqlite_processes(const std::string& path, int procs, double secs) {
  struct Result {
    double n, p50, p99, max;
  };
  std::vector<pid_t> kids;
  std::vector<int> fds;
  auto start = Steady::now();
  for (int i = 0; i < procs; ++i) {
    int fd[2];
    if (pipe(fd) != 0) return;
    pid_t pid = fork();
    if (pid == 0) {
      close(fd[0]);
      Result r{};
      {
        Options o;
        o.store = "sqlite:" + path;
        o.limits = limits();
        BudgetManager m(o);
        auto s = subject(200 + i);
        std::vector<double> lat;
        auto t0 = Steady::now();
        while (seconds_since(t0) < secs) {
          auto l0 = Steady::now();
          lifecycle(m, s);
          lat.push_back(std::chrono::duration<double, std::micro>(Steady::now() - l0).count());
        }
        std::sort(lat.begin(), lat.end());
        r = {static_cast<double>(lat.size()), lat[lat.size() / 2], lat[lat.size() * 99 / 100], lat.back()};
      }
      ssize_t w = write(fd[1], &r, sizeof r);
      _exit(w == static_cast<ssize_t>(sizeof r) ? 0 : 1);
    }
    close(fd[1]);
    kids.push_back(pid);
    fds.push_back(fd[0]);
  }
  double total = 0, lo = 1e18, hi = 0;
  int reported = 0;
  Result worst{};
  for (size_t i = 0; i < kids.size(); ++i) {
    Result r{};
    if (read(fds[i], &r, sizeof r) == static_cast<ssize_t>(sizeof r)) {
      ++reported;
      total += r.n;
      lo = std::min(lo, r.n);
      hi = std::max(hi, r.n);
      worst = {0, std::max(worst.p50, r.p50), std::max(worst.p99, r.p99), std::max(worst.max, r.max)};
    }
    close(fds[i]);
    waitpid(kids[i], nullptr, 0);
  }
  std::printf("sqlite %d procs  : %9.0f lifecycles/s, %d processes x 1 thread on one file; shares %.0f..%.0f;"
              " per lifecycle p50 %.0f  p99 %.0f  max %.0f us (worst process)%s\n",
              procs, total / seconds_since(start), procs, lo, hi, worst.p50, worst.p99, worst.max,
              reported == procs ? "" : "  -- SOME PROCESSES FAILED");
}

// The floor of a memory lifecycle: its essential work written by hand, without the library —
// a 15-character id, 4 stripe locks, 6 counters checked and held, a request record and an event
// appended and kept (as the memory store keeps them), an open-addressing index entry, a stream
// state on the heap; 4 consumes inside the hold (a clock read each, as the engine checks the
// TTL); a commit that finds the record by id, moves 6 counters from held to spent and appends
// an event. Nothing else (no validation, pricing, idempotency fingerprint, ledger strings,
// alerts, expiry, plan or limit look-up): a same-run baseline for the p50 figure, on a
// machine whose speed varies several-fold between days. Returns the p50 in ns.
double floor_lifecycle_p50(int n) {
  struct SpinLock {
    std::atomic<bool> locked{false};
    void lock() {
      while (locked.exchange(true, std::memory_order_acquire)) {
      }
    }
    void unlock() { locked.store(false, std::memory_order_release); }
  };
  struct alignas(64) Stripe {
    SpinLock m;
  };
  struct Bucket {
    int64_t spent = 0, held = 0, limit = INT64_MAX / 2;
  };
  struct Record {  // about the size of the store's (a RequestRecord is ~340 bytes)
    char id[16];
    int64_t held = 0, charged = 0, created = 0, expires = 0;
    int state = 0;
    std::shared_ptr<const int> plan;
    std::string model, fingerprint;
    char rest[200];
  };
  struct Event {
    int64_t seq = 0, time = 0, spent = 0, held = 0;
    int type = 0;
    const Record* record = nullptr;
    std::string metadata;
    char rest[64];
  };
  struct Stream {
    int64_t held = 0, consumed = 0, expires = 0;
  };
  static Stripe stripes[1024];
  Bucket buckets[6];
  std::vector<std::pair<uint64_t, Record*>> index(std::bit_ceil(static_cast<size_t>(n) * 4));  // never fuller than 1/4
  const size_t mask = index.size() - 1;
  std::vector<std::unique_ptr<Record[]>> records;
  size_t used = 256;
  std::vector<std::vector<Event>> events;
  auto new_event = [&]() -> Event& {
    if (events.empty() || events.back().size() == 64) {
      events.emplace_back();
      events.back().reserve(64);
    }
    return events.back().emplace_back();
  };
  auto plan = std::make_shared<const int>(0);
  uint64_t rng = 0x9e3779b97f4a7c15ULL;
  int64_t seq = 0;
  std::vector<double> ns(static_cast<size_t>(n));
  for (int i = 0; i < n; ++i) {
    auto t0 = Steady::now();
    const int64_t now = std::chrono::duration_cast<std::chrono::milliseconds>(
                            std::chrono::system_clock::now().time_since_epoch()).count();
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    char id[16];
    for (int k = 0; k < 15; ++k) id[k] = static_cast<char>('a' + ((rng >> (4 * k)) & 15));
    id[15] = 0;
    const uint64_t h = rng * 0x9e3779b97f4a7c15ULL;
    // The request's stripe among the first 128 (as the memory store's), then 3 scopes', ascending.
    const size_t locks[4] = {h >> 57, 300, 600, 900};
    // reserve
    for (size_t k : locks) stripes[k].m.lock();
    bool room = true;
    for (auto& b : buckets) room = room && b.spent + b.held + 2'000'000 <= b.limit;
    if (room)
      for (auto& b : buckets) b.held += 2'000'000;
    size_t slot = h & mask;
    while (index[slot].second) slot = (slot + 1) & mask;
    if (used == 256) {
      records.push_back(std::make_unique<Record[]>(256));
      used = 0;
    }
    Record* r = &records.back()[used++];
    std::memcpy(r->id, id, sizeof id);
    r->held = 2'000'000;
    r->created = now;
    r->expires = now + 60'000;
    r->state = 1;
    r->plan = plan;
    index[slot] = {h, r};
    Event& e = new_event();
    e = Event{++seq, now, 0, 2'000'000, 1, r, {}, {}};
    for (size_t k = 4; k-- > 0;) stripes[locks[k]].m.unlock();
    auto stream = std::make_unique<Stream>(Stream{2'000'000, 0, now + 60'000});
    // 4 consumes inside the hold
    for (int k = 0; k < 4; ++k) {
      stream->consumed += 400'000;
      const int64_t t = std::chrono::duration_cast<std::chrono::milliseconds>(
                            std::chrono::system_clock::now().time_since_epoch()).count();
      if (stream->consumed > stream->held || t >= stream->expires) break;
    }
    // commit
    for (size_t k : locks) stripes[k].m.lock();
    size_t q = h & mask;
    while (!(index[q].first == h && std::memcmp(index[q].second->id, id, sizeof id) == 0)) q = (q + 1) & mask;
    Record* rec = index[q].second;
    for (auto& b : buckets) {
      b.held -= rec->held;
      b.spent += 1'600'000;
    }
    rec->state = 2;
    rec->charged = 1'600'000;
    Event& c = new_event();
    c = Event{++seq, now, 1'600'000, -rec->held, 2, rec, {}, {}};
    for (size_t k = 4; k-- > 0;) stripes[locks[k]].m.unlock();
    stream.reset();
    ns[static_cast<size_t>(i)] = std::chrono::duration<double, std::nano>(Steady::now() - t0).count();
  }
  std::sort(ns.begin(), ns.end());
  return ns[ns.size() / 2];
}

// `vfs`: null for SQLite's own (the baseline of the goal), or the store's WAL-batching shim.
double raw_sqlite_txn_rate(const std::string& path, int n, const char* vfs = nullptr) {
  sqlite3* db = nullptr;
  sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, vfs);
  sqlite3_exec(db, "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; CREATE TABLE t(k INTEGER PRIMARY KEY, v)", nullptr,
               nullptr, nullptr);
  sqlite3_stmt* st = nullptr;
  sqlite3_prepare_v2(db, "INSERT INTO t(v) VALUES (?)", -1, &st, nullptr);
  auto start = Steady::now();
  for (int i = 0; i < n; ++i) {
    sqlite3_exec(db, "BEGIN IMMEDIATE", nullptr, nullptr, nullptr);
    sqlite3_bind_int64(st, 1, i);
    sqlite3_step(st);
    sqlite3_reset(st);
    sqlite3_exec(db, "COMMIT", nullptr, nullptr, nullptr);
  }
  double rate = n / seconds_since(start);
  sqlite3_finalize(st);
  sqlite3_close(db);
  return rate;
}

}  // namespace

int main(int argc, char** argv) {
  double secs = 2.0;
  if (argc > 1) {
    char* end = nullptr;
    secs = std::strtod(argv[1], &end);
    if (argc > 2 || end == argv[1] || *end != '\0' || !(secs > 0 && secs <= 600)) {
      std::fprintf(stderr, "usage: %s [seconds per throughput figure, default 2]\n", argv[0]);
      return 2;
    }
  }
  std::printf("libbudget core benchmark (lifecycle = reserve + 4 consume + commit, 3 scopes x 2 limits)\n\n");

  // ---- memory: latency --------------------------------------------------------------------
  {
    Options o;
    o.store = "memory";
    o.limits = limits();
    BudgetManager m(o);
    auto s = subject(1);
    for (int i = 0; i < 20'000; ++i) lifecycle(m, s);  // warm-up
    const int n = 200'000;
    std::vector<double> ns(n);
    for (int i = 0; i < n; ++i) {
      auto t = Steady::now();
      lifecycle(m, s);
      ns[static_cast<size_t>(i)] = std::chrono::duration<double, std::nano>(Steady::now() - t).count();
    }
    std::sort(ns.begin(), ns.end());
    std::printf("memory  1 thread : p50 %7.0f ns  p90 %7.0f ns  p99 %7.0f ns per lifecycle   (goal p50 <= 500 ns)\n",
                ns[n / 2], ns[n * 9 / 10], ns[n * 99 / 100]);
    const double floor = floor_lifecycle_p50(n);
    std::printf("memory  floor    : p50 %7.0f ns for the essential work written by hand (same run): the lifecycle"
                " = %.1fx the floor\n",
                floor, ns[n / 2] / floor);
  }
  // ---- memory: scaling ----------------------------------------------------------------------
  {
    Options o;
    o.store = "memory";
    o.limits = limits();
    BudgetManager m(o);
    // This VM's speed drifts up to 2x within seconds, so 1 and 2 threads are measured in short
    // interleaved segments (1, 2, 1, ...): each 2-thread segment against the mean of the 1-thread
    // segments on either side, and the median of those ratios is the figure.
    throughput(m, 2, 0.3);  // warm-up
    const int rounds = 11;
    const double seg = std::max(0.05, secs / 10);
    std::vector<double> ones, twos, ratios;
    double before = throughput(m, 1, seg);
    for (int i = 0; i < rounds; ++i) {
      double two = throughput(m, 2, seg), after = throughput(m, 1, seg);
      ones.push_back((before + after) / 2);
      twos.push_back(two);
      ratios.push_back(two / ones.back());
      before = after;
    }
    for (auto* v : {&ones, &twos, &ratios}) std::sort(v->begin(), v->end());
    const double one = ones[rounds / 2], two = twos[rounds / 2];
    std::printf("memory  1 thread : %9.0f lifecycles/s (median of %d interleaved segments of %.2f s)\n", one, rounds,
                seg);
    std::printf("memory  2 threads: %9.0f lifecycles/s  = %.2fx one thread (median; range %.2f-%.2f), distinct"
                " subjects (goal >= 1.5x)\n",
                two, ratios[rounds / 2], ratios.front(), ratios.back());
    for (int threads : {16, 64}) {
      double many = throughput(m, threads, secs / 2, /*shared=*/true);
      std::printf("memory %2d threads: %9.0f lifecycles/s  = %.2fx one thread, all on ONE subject (contended locks)\n",
                  threads, many, many / one);
    }
  }
  // ---- the ledger's hash chain: SHA-256 of an event body -----------------------------------
  {
    std::string body(250, 'x');  // about the size of an event's canonical body
    auto per_hash = [&](auto fn) {
      const int n = 200'000;
      unsigned sink = 0;
      auto t = Steady::now();
      for (int i = 0; i < n; ++i) {
        body[0] = static_cast<char>(i);
        sink += fn(body)[0];
      }
      double ns = std::chrono::duration<double, std::nano>(Steady::now() - t).count() / n;
      if (sink == 1) std::printf(" ");  // keeps the loop
      return ns;
    };
    double sel = per_hash([](std::string_view b) { return detail::sha256(b); });
    double port = per_hash([](std::string_view b) { return detail::sha256_portable(b); });
    std::printf("sha256 250 bytes : %7.0f ns (%s) vs %7.0f ns portable = %.1fx\n", sel,
                detail::sha256_accelerated() ? "SHA-NI" : "portable", port, port / sel);
  }
  // ---- SQLite --------------------------------------------------------------------------------
  {
    double raw = raw_sqlite_txn_rate(temp_db("raw"), 20'000);
    double raw_shim = raw_sqlite_txn_rate(temp_db("raw-shim"), 20'000, detail::sqlite_batching_vfs());
    Options o;
    o.store = "sqlite:" + temp_db("store");
    o.limits = limits();
    BudgetManager m(o);
    double one = throughput(m, 1, secs);
    // A lifecycle is 2 store transactions (reserve, commit); consumes inside the hold are free.
    std::printf("sqlite raw       : %9.0f one-row WAL transactions/s (synchronous=NORMAL, same run)\n", raw);
    std::printf("sqlite  1 thread : %9.0f lifecycles/s = %.0f%% of raw per transaction (2 txns each; goal >= 80%%)\n",
                one, 100.0 * one * 2 / raw);
    std::printf("sqlite raw, shim : %9.0f one-row WAL transactions/s through the store's WAL-batching VFS"
                " (the store = %.0f%% of it)\n",
                raw_shim, 100.0 * one * 2 / raw_shim);
    for (int threads : {4, 8}) {
      double many = throughput(m, threads, secs);
      std::printf("sqlite %2d threads: %9.0f lifecycles/s with group commit (goal >= 25k/s)\n", threads, many);
    }
    print_op_latency(m, 50'000);
  }
  // ---- SQLite, several processes on one file -------------------------------------------------
  for (int procs : {2, 4}) sqlite_processes(temp_db("procs"), procs, secs);
  return 0;
}
