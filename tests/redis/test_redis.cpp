// Redis store tests against real redis-server instances (run under tools/with-redis.sh).
// They FAIL (not skip) when BUDGET_TEST_REDIS_URL is unset. Fault tests start their own
// redis-server (REDIS_SERVER or redis-server from PATH) on free ports in temp dirs, so they can
// kill, stop and restart it without disturbing other tests.
#include <budget/budget.hpp>

#include <doctest/doctest.h>
#include <hiredis/hiredis.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <functional>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <random>
#include <string>
#include <thread>
#include <vector>

using namespace budget;
using namespace std::chrono_literals;

namespace {

Money usd(const char* s) { return Money::parse(s); }

std::string unique() {
  static std::atomic<int> n{0};
  std::random_device rd;
  return std::to_string(::getpid()) + "_" + std::to_string(rd() % 1000000) + "_" + std::to_string(n++);
}

std::string base_url() {
  const char* url = std::getenv("BUDGET_TEST_REDIS_URL");
  REQUIRE_MESSAGE(url != nullptr, "BUDGET_TEST_REDIS_URL is not set: run under tools/with-redis.sh");
  return url;
}

// host/port of a redis:// URL without credentials.
std::pair<std::string, int> host_port(const std::string& url) {
  auto s = url.substr(8);
  s = s.substr(0, s.find('/'));
  auto c = s.rfind(':');
  return {s.substr(0, c), std::stoi(s.substr(c + 1))};
}

struct Raw {
  redisContext* c = nullptr;
  int64_t infos = 0;
  explicit Raw(int port, const std::string& host = "127.0.0.1") {
    c = redisConnect(host.c_str(), port);
    REQUIRE(c);
    REQUIRE_MESSAGE(c->err == 0, c->errstr);
  }
  ~Raw() { redisFree(c); }
  std::string cmd(const std::vector<std::string>& args) {
    std::vector<const char*> argv;
    std::vector<size_t> lens;
    for (const auto& a : args) argv.push_back(a.c_str()), lens.push_back(a.size());
    auto* r = static_cast<redisReply*>(redisCommandArgv(c, static_cast<int>(args.size()), argv.data(), lens.data()));
    REQUIRE(r);
    std::string out;
    if (r->type == REDIS_REPLY_INTEGER) out = std::to_string(r->integer);
    else if (r->str) out.assign(r->str, r->len);
    else if (r->type == REDIS_REPLY_ARRAY) out = std::to_string(r->elements);
    freeReplyObject(r);
    return out;
  }
  std::vector<std::string> keys(const std::string& pattern) {
    auto* r = static_cast<redisReply*>(redisCommand(c, "KEYS %s", pattern.c_str()));
    std::vector<std::string> out;
    for (size_t i = 0; i < r->elements; ++i) out.emplace_back(r->element[i]->str, r->element[i]->len);
    freeReplyObject(r);
    return out;
  }
  // Commands processed (top-level: commands run inside a script are not counted), minus this
  // INFO call itself.
  int64_t processed() {
    std::string info = cmd({"INFO", "stats"});
    auto p = info.find("total_commands_processed:") + 25;
    return std::stoll(info.substr(p, info.find('\r', p) - p)) - ++infos;
  }
  // Total calls of all commands (INFO commandstats), and of one command.
  int64_t calls(const std::string& only = "") {
    std::string info = cmd({"INFO", "commandstats"});
    int64_t total = 0;
    size_t pos = 0;
    while ((pos = info.find("cmdstat_", pos)) != std::string::npos) {
      auto colon = info.find(':', pos);
      std::string name = info.substr(pos + 8, colon - pos - 8);
      auto cp = info.find("calls=", colon) + 6;
      int64_t n = std::stoll(info.substr(cp, info.find(',', cp) - cp));
      if (name != "info" && (only.empty() || name == only)) total += n;
      pos = colon;
    }
    return total;
  }
};

int free_port() {
  int s = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ::bind(s, reinterpret_cast<sockaddr*>(&a), sizeof a);
  socklen_t len = sizeof a;
  ::getsockname(s, reinterpret_cast<sockaddr*>(&a), &len);
  int port = ntohs(a.sin_port);
  ::close(s);
  return port;
}

// A redis-server of our own (appendonly yes, appendfsync always) that a test may kill.
struct OwnRedis {
  std::filesystem::path dir;
  int port = 0;
  pid_t pid = -1;
  std::vector<std::string> extra;

  explicit OwnRedis(std::vector<std::string> extra_args = {}) : extra(std::move(extra_args)) {
    dir = std::filesystem::temp_directory_path() / ("budget-own-redis-" + unique());
    std::filesystem::create_directories(dir);
    port = free_port();
    start();
  }
  ~OwnRedis() {
    stop(SIGKILL);
    std::error_code ec;
    std::filesystem::remove_all(dir, ec);
  }
  void start() {
    const char* bin = std::getenv("REDIS_SERVER");
    std::string server = bin && *bin ? bin : "redis-server";
    std::vector<std::string> args{server, "--port", std::to_string(port), "--bind", "127.0.0.1", "--dir", dir.string(),
                                  "--appendonly", "yes", "--appendfsync", "always", "--save", "",
                                  "--logfile", (dir / "redis.log").string()};
    args.insert(args.end(), extra.begin(), extra.end());
    pid = ::fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
      ::prctl(PR_SET_PDEATHSIG, SIGKILL);  // never outlive the test
      int devnull = ::open("/dev/null", O_RDWR);
      ::dup2(devnull, 0);
      ::dup2(devnull, 1);
      ::dup2(devnull, 2);
      std::vector<char*> argv;
      for (auto& a : args) argv.push_back(a.data());
      argv.push_back(nullptr);
      ::execvp(argv[0], argv.data());
      _exit(127);
    }
    for (int i = 0; i < 200; ++i) {
      redisContext* c = redisConnect("127.0.0.1", port);
      bool ok = false;
      if (c && !c->err) {
        auto* r = static_cast<redisReply*>(redisCommand(c, "PING"));
        ok = r && (r->type == REDIS_REPLY_STATUS || (r->type == REDIS_REPLY_ERROR && std::string(r->str).find("NOAUTH") != std::string::npos));
        if (r) freeReplyObject(r);
      }
      if (c) redisFree(c);
      if (ok) return;
      int st = 0;
      REQUIRE_MESSAGE(::waitpid(pid, &st, WNOHANG) == 0, "redis-server exited: is it installed?");
      std::this_thread::sleep_for(25ms);
    }
    FAIL("redis-server did not answer PING");
  }
  void stop(int sig) {
    if (pid <= 0) return;
    ::kill(pid, sig);
    if (sig == SIGKILL || sig == SIGTERM) {
      int st = 0;
      ::waitpid(pid, &st, 0);
      pid = -1;
    }
  }
  std::string url(const std::string& params = "") const {
    return "redis://127.0.0.1:" + std::to_string(port) + "/0?prefix=f" + unique() + params;
  }
};

Options opts(const std::string& url, std::shared_ptr<ManualClock> clock = nullptr) {
  Options o;
  o.store = url;
  if (clock) o.clock = clock;
  return o;
}

RequestOptions rid(std::string id) {
  RequestOptions o;
  o.request_id = std::move(id);
  return o;
}
LedgerQuery of_type(EventType t) {
  LedgerQuery q;
  q.type = t;
  return q;
}

void require_verified(BudgetManager& m) {
  auto rep = m.verify();
  for (const auto& p : rep.problems) MESSAGE(p);
  REQUIRE(rep.ok);
}

}  // namespace

TEST_CASE("the test environment names a Redis server") {
  auto url = base_url();
  CHECK(url.rfind("redis://", 0) == 0);
}

TEST_CASE("every operation is one round trip (INFO commandstats)") {
  base_url();
  OwnRedis server;  // its own server: commandstats are server-wide
  auto url = server.url();
  auto clock = std::make_shared<ManualClock>(from_millis(1'773'144'000'000));
  BudgetManager m(opts(url, clock));
  m.set_limit(Limit::cost("user:*", Window::day(), usd("10")));
  m.set_limit(Limit::cost("tenant:*", Window::month(), usd("100")));
  m.set_limit(Limit::cost("global", Window::rolling(Duration(3'600'000)), usd("1000")));
  Subject s{"tenant:a", "user:b"};
  // Warm-up: the first call also sweeps expired holds, and the first call of each script on a
  // server is EVALSHA -> NOSCRIPT -> EVAL.
  for (int i = 0; i < 2; ++i) {
    auto w = m.reserve(s, usd("0.1"));
    REQUIRE(w.allowed);
    m.consume(w.reservation, usd("0.2"));
    m.commit(w.reservation, usd("0.2"));
    m.record(s, usd("0.01"));
    m.check(s, usd("0.01"));
    m.release(m.reserve(s, usd("0.1")).reservation);
  }
  Raw raw(server.port);
  // Top-level commands: scripts (FCALL, or EVALSHA/EVAL) and the plain reads the store issues
  // outside them.
  auto round_trips = [&] {
    return raw.calls("fcall") + raw.calls("evalsha") + raw.calls("eval") + raw.calls("zrange") + raw.calls("xrange") +
           raw.calls("scan");
  };
  int64_t before = round_trips();
  auto d = m.reserve(s, usd("1"));
  REQUIRE(d.allowed);
  CHECK(round_trips() - before == 1);
  m.consume(d.reservation, usd("1.5"));  // grows the hold: one script
  CHECK(round_trips() - before == 2);
  m.commit(d.reservation, usd("1.5"));
  CHECK(round_trips() - before == 3);
  m.record(s, usd("0.5"));
  CHECK(round_trips() - before == 4);
  CHECK(m.check(s, usd("1")).allowed);
  CHECK(round_trips() - before == 5);
  m.release(m.reserve(s, usd("1")).reservation);
  CHECK(round_trips() - before == 7);
  CHECK(raw.calls("fcall") > 0);  // scripts run as functions of the loaded library
}

namespace {
// 20 lifecycles (reserve 0.10, commit 0.05) on `s`, calling between(i) before the i-th;
// returns the spend committed.
int64_t lifecycles_between(BudgetManager& m, const Subject& s, const std::function<void(int)>& between) {
  int64_t spent = 0;
  for (int i = 0; i < 20; ++i) {
    between(i);
    auto d = m.reserve(s, usd("0.1"));
    REQUIRE(d.allowed);
    m.commit(d.reservation, usd("0.05"));
    spent += usd("0.05").nanos();
  }
  return spent;
}
}  // namespace

TEST_CASE("FUNCTION FLUSH and SCRIPT FLUSH mid-run: scripts are reloaded transparently") {
  OwnRedis server;  // its own server: commandstats are server-wide
  auto url = server.url();
  BudgetManager m(url);
  m.set_limit(Limit::cost("user:*", Window::day(), usd("5")));
  Raw raw(server.port);
  int64_t spent = lifecycles_between(m, Subject{"user:flush"}, [&](int i) {
    if (i % 5 == 2) raw.cmd({"FUNCTION", "FLUSH"});
    if (i % 5 == 3) raw.cmd({"SCRIPT", "FLUSH"});
  });
  CHECK(m.status(Scope::parse("user:flush"))[0].spent == spent);
  CHECK(raw.calls("function|load") >= 5);  // the first call, then once after each flush
  require_verified(m);
}

TEST_CASE("a hold whose stored plan is gone (evicted, flushed) still grows and settles from its record") {
  OwnRedis server;
  BudgetManager m(server.url());
  m.set_limit(Limit::cost("user:*", Window::day(), usd("5")));
  Subject s{"user:plan"};
  Raw raw(server.port);
  auto a = m.reserve(s, usd("1"));
  REQUIRE(a.allowed);
  REQUIRE(raw.keys("*:p:*").size() == 1);
  for (const auto& k : raw.keys("*:p:*")) raw.cmd({"DEL", k});
  // The loaded library remembers that it wrote the plan key, so this reserve does not look.
  auto b = m.reserve(s, usd("1"));
  REQUIRE(b.allowed);
  CHECK(raw.keys("*:p:*").empty());
  raw.cmd({"FUNCTION", "FLUSH"});  // and now the library's parsed plans are gone too
  m.commit(a.reservation, usd("0.5"));
  auto grown = m.consume(b.reservation, usd("1.5"));  // grows the hold by its plan
  CHECK(grown.ok());
  CHECK(grown.held >= usd("1.5"));
  m.commit(b.reservation, usd("1.5"));
  CHECK(m.status(Scope::parse("user:plan"))[0].spent == usd("2").nanos());
  CHECK(m.status(Scope::parse("user:plan"))[0].held == 0);
  auto c = m.reserve(s, usd("1"));  // a reloaded library writes the plan key again
  REQUIRE(c.allowed);
  CHECK(raw.keys("*:p:*").size() == 1);
  m.release(c.reservation);
  require_verified(m);
}

TEST_CASE("the alert read-back after an expiring sweep reads the stream from the last read-back, not from its start") {
  OwnRedis server;  // its own server: commandstats are server-wide
  auto clock = std::make_shared<ManualClock>(from_millis(1'773'144'000'000));
  BudgetManager m(opts(server.url(), clock));  // no ledger sink: the stream is the ledger
  m.set_limit(Limit::cost("user:*", Window::day(), usd("1000")));
  Subject s{"user:rb"};
  for (int i = 0; i < 3000; ++i) m.record(s, usd("0.01"));
  Raw raw(server.port);
  auto expire_one = [&](const char* id) {
    REQUIRE(m.reserve(s, usd("1"), {.request_id = id, .ttl = Duration(1000)}).allowed);
    clock->advance(Duration(2000));
    int64_t before = raw.calls("xrange");
    m.record(s, usd("0.01"));  // sweeps first: the hold expires, its alerts are read back
    return raw.calls("xrange") - before;
  };
  CHECK(expire_one("rb-1") >= 4);  // the first read-back reads the 3000 events before it
  CHECK(expire_one("rb-2") == 1);  // the next one only what came since (it hashed them all again)
  CHECK(m.status(Scope::parse("user:rb"))[0].held == 0);
  require_verified(m);
}

TEST_CASE("a server without functions (no FCALL): plain scripts, EVALSHA, NOSCRIPT retried as EVAL") {
  OwnRedis server({"--rename-command", "FCALL", ""});
  auto url = server.url();
  BudgetManager m(url);
  m.set_limit(Limit::cost("user:*", Window::day(), usd("5")));
  Raw raw(server.port);
  int64_t spent = lifecycles_between(m, Subject{"user:nofcall"}, [&](int i) {
    if (i % 5 == 2) raw.cmd({"SCRIPT", "FLUSH"});
  });
  CHECK(m.status(Scope::parse("user:nofcall"))[0].spent == spent);
  CHECK(raw.calls("evalsha") > 40);
  CHECK(raw.calls("eval") >= 4);
  require_verified(m);
}

TEST_CASE("Redis killed mid-run: fail closed within the timeout, recover without restart, lose no commit") {
  OwnRedis r;
  auto url = r.url();
  Options o = opts(url);
  o.store_options.timeout = Duration(300);
  BudgetManager m(o);
  Options fo = o;
  fo.fail_open = true;
  BudgetManager open_m(fo);
  m.set_limit(Limit::cost("user:*", Window::day(), usd("100")));
  Subject s{"user:k"};
  // The first calls connect and load the scripts: on a loaded 2-core machine that took over
  // the 300 ms once (the first reserve was denied StoreUnavailable). Warm up before measuring.
  {
    bool warm = false;
    for (int i = 0; i < 50 && !warm; ++i) {
      warm = m.check(s, usd("0.1")).allowed && open_m.check(s, usd("0.1")).allowed;
      if (!warm) std::this_thread::sleep_for(100ms);
    }
    REQUIRE(warm);
  }
  int64_t acknowledged = 0;
  for (int i = 0; i < 50; ++i) {
    auto d = m.reserve(s, usd("0.2"));
    REQUIRE(d.allowed);
    m.commit(d.reservation, usd("0.1"));
    acknowledged += usd("0.1").nanos();
  }
  auto held = m.reserve(s, usd("1"));
  REQUIRE(held.allowed);

  r.stop(SIGKILL);
  auto t0 = std::chrono::steady_clock::now();
  auto d = m.reserve(s, usd("0.1"));
  auto took = std::chrono::steady_clock::now() - t0;
  CHECK_FALSE(d.allowed);
  CHECK(d.denial.reason == DenyReason::StoreUnavailable);
  CHECK(took < 1000ms);
  CHECK_FALSE(m.check(s, usd("0.1")).allowed);
  CHECK_THROWS_AS(m.commit(held.reservation, usd("0.5")), StoreUnavailableError);
  CHECK_THROWS_AS(m.record(s, usd("0.1")), StoreUnavailableError);
  auto fo_d = open_m.reserve(s, usd("0.1"));
  CHECK(fo_d.allowed);
  CHECK(fo_d.fail_open);
  CHECK(open_m.metrics_text().find("budget_fail_open_total 1") != std::string::npos);

  // A hung server (SIGSTOP): operations fail within the timeout too.
  r.start();
  {
    bool back = false;
    for (int i = 0; i < 100 && !back; ++i) {
      back = m.check(s, usd("0.1")).allowed;
      if (!back) std::this_thread::sleep_for(50ms);
    }
    REQUIRE(back);
  }
  r.stop(SIGSTOP);
  t0 = std::chrono::steady_clock::now();
  auto hung = m.reserve(s, usd("0.1"));
  took = std::chrono::steady_clock::now() - t0;
  CHECK_FALSE(hung.allowed);
  CHECK(hung.denial.reason == DenyReason::StoreUnavailable);
  CHECK(took < 1500ms);
  r.stop(SIGCONT);

  // Back again: the same manager recovers (reconnect with backoff) without being rebuilt.
  bool recovered = false;
  for (int i = 0; i < 100 && !recovered; ++i) {
    try {
      recovered = m.reserve(s, usd("0.1"), rid("after-" + std::to_string(i))).allowed;
    } catch (const StoreUnavailableError&) {
    }
    if (!recovered) std::this_thread::sleep_for(50ms);
  }
  REQUIRE(recovered);
  // The hold taken before the crash survived; committing it now works (exactly once).
  auto rc = m.commit(held.reservation, usd("0.5"));
  CHECK(rc.charged == usd("0.5"));
  acknowledged += usd("0.5").nanos();
  auto st = m.status(Scope::parse("user:k"))[0];
  CHECK(st.spent == acknowledged);
  require_verified(m);
}

TEST_CASE("after a Redis restart the first call succeeds: an idle connection the server closed is replaced, not used") {
  OwnRedis r;
  BudgetManager m(opts(r.url("&pool=1")));
  m.set_limit(Limit::cost("user:*", Window::day(), usd("100")));
  Subject s{"user:r"};
  auto before = m.reserve(s, usd("0.1"));
  REQUIRE(before.allowed);  // the pool's one connection is open, and now idle
  r.stop(SIGKILL);
  r.start();  // answers PING again
  auto d = m.reserve(s, usd("0.2"));
  CHECK_MESSAGE(d.allowed, d.denial.message);  // was denied: StoreUnavailable on the dead connection
  m.commit(before.reservation, usd("0.1"));
  CHECK(m.status(Scope::parse("user:r"))[0].spent == usd("0.1").nanos());
  require_verified(m);
}

namespace {
// A fail-open manager's options on `r`'s server: one connection, a 300 ms timeout.
Options fail_open_opts(OwnRedis& r) {
  Options o = opts(r.url("&pool=1"));
  o.fail_open = true;
  o.store_options.timeout = Duration(300);
  return o;
}

// After r.start(): waits until the manager's pool reaches the server again (it reconnects with
// backoff), running an expiry sweep on the way (which forgets in-process states past their TTL).
void sweep_when_back(BudgetManager& m) {
  for (int i = 0; i < 100; ++i) {
    try {
      m.expire_holds();
      return;
    } catch (const StoreUnavailableError&) {
      std::this_thread::sleep_for(50ms);
    }
  }
  FAIL("the store did not come back");
}

// A fail-open reservation (TTL 100 ms) made while the server is down; `while_down` runs then.
// The outage outlasts the TTL; returns once the server is back and a sweep ran.
template <class F>
Decision fail_open_past_ttl(OwnRedis& r, BudgetManager& m, const Subject& s, const std::string& id, Money amount,
                            F&& while_down) {
  r.stop(SIGKILL);
  RequestOptions ro = rid(id);
  ro.ttl = Duration(100);
  auto d = m.reserve(s, amount, ro);
  REQUIRE(d.fail_open);
  while_down();
  std::this_thread::sleep_for(250ms);  // the outage outlasts the TTL
  r.start();
  sweep_when_back(m);
  return d;
}

// A fail-open manager (timeout 300 ms, one connection, $1 a day per user) on a server of its own,
// with a raw connection to see what the server ran: for reserves that time out here and that
// the server runs when it resumes.
struct LateRig {
  OwnRedis r;
  std::string prefix;
  BudgetManager m;
  Raw raw;
  explicit LateRig(const std::string& tag) : prefix(tag + unique()), m(options(r, prefix)), raw(r.port) {
    m.set_limit(Limit::cost("user:*", Window::day(), usd("1")));
  }
  static Options options(OwnRedis& r, const std::string& prefix) {
    Options o = opts("redis://127.0.0.1:" + std::to_string(r.port) + "/0?prefix=" + prefix + "&pool=1&timeout=300");
    o.fail_open = true;
    return o;
  }
  // A reserve that times out here (the server hangs: fail-open) and that the server runs when
  // it resumes; returns once the server knows the id.
  Decision late_reserve(const Subject& s, const std::string& id, Money amount) {
    r.stop(SIGSTOP);
    auto d = m.reserve(s, amount, rid(id));
    r.stop(SIGCONT);
    REQUIRE(d.allowed);
    REQUIRE(d.fail_open);
    bool ran = false;
    for (int i = 0; i < 100 && !ran; ++i) {
      ran = raw.cmd({"EXISTS", "{" + prefix + "}:r:" + id}) == "1";
      if (!ran) std::this_thread::sleep_for(20ms);
    }
    REQUIRE(ran);
    return d;
  }
};
}  // namespace

TEST_CASE("fail-open: a reservation is found by its request id, and a commit refused while the store is still down can be retried") {
  OwnRedis r;
  BudgetManager m(fail_open_opts(r));
  m.set_limit(Limit::cost("user:*", Window::day(), usd("100")));
  Subject s{"user:fo"};
  r.stop(SIGKILL);
  auto a = m.reserve(s, usd("1"), rid("fo-a"));
  auto b = m.reserve(s, usd("1"), rid("fo-b"));
  REQUIRE(a.allowed);
  REQUIRE(a.fail_open);
  REQUIRE(b.fail_open);
  CHECK(m.consume("fo-b", usd("0.3")).ok());  // by id: was NotFound (the state was not listed)
  // Still down: the commits are not acknowledged, so the caller keeps them to retry.
  CHECK_THROWS_AS(m.commit(a.reservation, usd("0.25")), StoreUnavailableError);
  CHECK_THROWS_AS(m.commit("fo-b", usd("0.5")), StoreUnavailableError);
  r.start();
  Receipt ra, rb;
  for (int i = 0; i < 100; ++i) {  // the pool reconnects with backoff
    try {
      ra = m.commit(a.reservation, usd("0.25"));
      break;
    } catch (const StoreUnavailableError&) {
      std::this_thread::sleep_for(50ms);
    }
  }
  CHECK(ra.charged == usd("0.25"));
  CHECK_NOTHROW(rb = m.commit("fo-b", usd("0.5")));  // by id: was NotFound
  CHECK(rb.charged == usd("0.5"));
  // Acknowledged: a repeat returns the first result.
  CHECK(m.commit(a.reservation, usd("0.25")).replayed);
  CHECK(m.commit("fo-b", usd("0.5")).replayed);
  CHECK(m.status(Scope::parse("user:fo"))[0].spent == usd("0.75").nanos());
  CHECK(m.events(of_type(EventType::Record)).size() == 2);
  require_verified(m);
}


TEST_CASE("fail-open: a commit retried by request id through an outage longer than the TTL still records the spend") {
  OwnRedis r;
  BudgetManager m(fail_open_opts(r));
  m.set_limit(Limit::cost("user:*", Window::day(), usd("100")));
  fail_open_past_ttl(r, m, Subject{"user:fl"}, "fo-long", usd("1"), [&] {
    CHECK_THROWS_AS(m.commit("fo-long", usd("0.4")), StoreUnavailableError);
  });
  Receipt rc;
  CHECK_NOTHROW(rc = m.commit("fo-long", usd("0.4")));  // was NotFound: the state was forgotten at its TTL
  CHECK(rc.charged == usd("0.4"));
  CHECK(m.commit("fo-long", usd("0.4")).replayed);
  CHECK(m.status(Scope::parse("user:fl"))[0].spent == usd("0.4").nanos());
  require_verified(m);
}

TEST_CASE("fail-open after a timeout, when the server ran the reserve after all: its hold is committed, or its denial does not lose the spend") {
  LateRig rig("fot");
  auto& m = rig.m;
  auto late = [&](const std::string& id, Money amount) { return rig.late_reserve(Subject{"user:t"}, id, amount); };
  // Allowed by the server: the commit settles that hold (it was a Conflict with it).
  auto held = late("late-held", usd("0.6"));
  auto rc = m.commit(held.reservation, usd("0.5"));
  CHECK(rc.charged == usd("0.5"));
  CHECK(m.status(Scope::parse("user:t"))[0].held == 0);
  // Denied by the server (0.6 + 0.5 > 1): the spend is recorded under a derived id.
  auto denied = late("late-denied", usd("0.6"));
  auto lost = late("late-denied-released", usd("0.6"));  // denied there too; released here
  CHECK_NOTHROW(m.release(lost.reservation));  // was a ConflictError ("already denied")
  auto rd = m.commit("late-denied", usd("0.2"));
  CHECK(rd.charged == usd("0.2"));
  CHECK(rd.request_id == "late-denied/fail-open");
  CHECK(m.commit(denied.reservation, usd("0.2")).replayed);  // a repeat replays it
  auto st = m.status(Scope::parse("user:t"))[0];
  CHECK(st.spent == usd("0.7").nanos());
  CHECK(st.held == 0);
  auto recs = m.events(of_type(EventType::Record));
  REQUIRE(recs.size() == 1);
  CHECK(recs[0].request_id == "late-denied/fail-open");
  CHECK(recs[0].metadata.find("late-denied") != std::string::npos);
  require_verified(m);
}

TEST_CASE("Redis lost its data (FLUSHALL): the managers recover, with their configured limits applied again") {
  OwnRedis r;
  const std::string url = r.url();
  Options o = opts(url);
  o.limits = {Limit::cost("user:*", Window::day(), usd("1"))};
  BudgetManager a(o), b(o);
  a.set_limit(Limit::cost("tenant:*", Window::day(), usd("5")));  // a runtime change: versions move on
  Subject s{"tenant:x", "user:f"};
  REQUIRE(a.reserve(s, usd("0.5")).allowed);
  REQUIRE(b.reserve(s, usd("0.4")).allowed);
  Raw(r.port).cmd({"FLUSHALL"});
  // Everything is gone, spend and limits; the limits version starts again below theirs. Was:
  // every reserve denied, "limits keep changing; gave up after retries", for good.
  auto d = a.reserve(s, usd("0.6"));
  CHECK_MESSAGE(d.allowed, d.denial.message);
  auto over = b.reserve(s, usd("0.6"));  // the other manager follows; user:* $1 is back
  CHECK_FALSE(over.allowed);
  CHECK(over.denial.reason == DenyReason::LimitExceeded);
  CHECK(over.denial.scope == "user:f");
  auto st = a.status(Scope::parse("user:f"));
  REQUIRE(st.size() == 1);
  CHECK(st[0].held == usd("0.6").nanos());
  CHECK(a.status(Scope::parse("tenant:x")).empty());  // set at run time, not configured: gone with the data
  require_verified(a);
}

TEST_CASE("appendfsync always: a Redis restart loses no acknowledged commit") {
  OwnRedis r;
  auto url = r.url();
  int64_t acknowledged = 0;
  std::vector<std::string> ids;
  {
    BudgetManager m(url);
    m.set_limit(Limit::cost("tenant:*", Window::total(), usd("1000")));
    for (int i = 0; i < 100; ++i) {
      auto d = m.reserve(Subject{"tenant:dur"}, usd("1"), rid("dur-" + std::to_string(i)));
      REQUIRE(d.allowed);
      m.commit(d.reservation, Money::from_nanos(1000 + i));
      acknowledged += 1000 + i;
      ids.push_back(d.reservation.request_id());
    }
  }
  r.stop(SIGKILL);  // no shutdown save: only the AOF survives
  r.start();
  BudgetManager m(url);
  bool up = false;
  for (int i = 0; i < 100 && !up; ++i) {
    try {
      m.status(Scope::parse("tenant:dur"));
      up = true;
    } catch (const StoreUnavailableError&) {
      std::this_thread::sleep_for(50ms);
    }
  }
  REQUIRE(up);
  CHECK(m.status(Scope::parse("tenant:dur"))[0].spent == acknowledged);
  for (const auto& id : ids) CHECK(m.commit(id, Money::from_nanos(1000 + std::stoll(id.substr(4)))).replayed);
  CHECK(m.events(of_type(EventType::Commit)).size() == 100);
  require_verified(m);
}

TEST_CASE("an ACL user without FCALL and FUNCTION: plain scripts") {
  OwnRedis server;
  Raw admin(server.port);
  admin.cmd({"ACL", "SETUSER", "nofn", "on", ">pw", "~*", "&*", "+@all", "-fcall", "-function"});
  auto url = "redis://nofn:pw@127.0.0.1:" + std::to_string(server.port) + "/0?prefix=acl" + unique();
  BudgetManager m(url);
  m.set_limit(Limit::cost("user:*", Window::day(), usd("5")));
  Subject s{"user:acl"};
  for (int i = 0; i < 5; ++i) {
    auto d = m.reserve(s, usd("0.1"));
    REQUIRE(d.allowed);
    m.commit(d.reservation, usd("0.05"));
  }
  CHECK(m.status(Scope::parse("user:acl"))[0].spent == usd("0.25").nanos());
  CHECK(admin.calls("evalsha") > 10);
  require_verified(m);
}

TEST_CASE("calendar windows count a later bucket (a clock running ahead) in either order of creation") {
  // Layout 2 reads a calendar bucket alone unless it is marked as having a later bucket: the
  // marks are set when the later bucket is created, or on the bucket itself when it is created
  // after a later one.
  auto url = base_url() + "?prefix=cal" + unique();
  const auto t = from_millis(1'773'144'000'000);
  auto today = std::make_shared<ManualClock>(t);
  auto ahead = std::make_shared<ManualClock>(t + Duration(86'400'000));
  BudgetManager a(opts(url, today));
  a.set_limit(Limit::cost("user:*", Window::day(), usd("5")));
  BudgetManager b(opts(url, ahead));
  for (bool today_first : {true, false}) {
    const char* user = today_first ? "user:x" : "user:y";
    Subject s{user};
    if (today_first) {
      a.record(s, usd("1"));
      b.record(s, usd("3"));
    } else {
      b.record(s, usd("3"));
      a.record(s, usd("1"));
    }
    CHECK(a.status(Scope::parse(user))[0].spent == usd("4").nanos());
    CHECK_FALSE(a.check(s, usd("1.5")).allowed);
    CHECK(a.check(s, usd("1")).allowed);
    CHECK_FALSE(a.reserve(s, usd("1.5")).allowed);
    auto d = a.reserve(s, usd("1"));
    REQUIRE(d.allowed);
    a.commit(d.reservation, usd("0.5"));
    CHECK(a.status(Scope::parse(user))[0].spent == usd("4.5").nanos());
    CHECK(b.status(Scope::parse(user))[0].spent == usd("3").nanos());  // tomorrow's own bucket
  }
  require_verified(a);
}

TEST_CASE("key layout: a namespace written by layout 1 is refused, one holding only limits is adopted") {
  auto [host, port] = host_port(base_url());
  Raw raw(port, host);
  // Layout 1 left events ({p}:seq) and string counters, and no {p}:layout.
  auto old = "lay1" + unique();
  raw.cmd({"SET", "{" + old + "}:seq", "12"});
  raw.cmd({"SET", "{" + old + "}:c:user:a|day|0", "86400000 1 0 1 0 0 0 0 0 0"});
  CHECK_THROWS_AS(BudgetManager(base_url() + "?prefix=" + old), InvalidArgumentError);
  CHECK(raw.cmd({"GET", "{" + old + "}:layout"}).empty());
  // Limits only (their format did not change): adopted.
  auto fresh = "lay0" + unique();
  raw.cmd({"SET", "{" + fresh + "}:lv", "3"});
  raw.cmd({"HSET", "{" + fresh + "}:limits", "user:a|day|cost",
           R"({"s":"user:a","w":"day","m":"cost","a":1000000000,"t":[]})"});
  BudgetManager m(base_url() + "?prefix=" + fresh);
  CHECK(raw.cmd({"GET", "{" + fresh + "}:layout"}) == "2");
  m.record(Subject{"user:a"}, usd("0.25"));
  auto st = m.status(Scope::parse("user:a"));
  REQUIRE(st.size() == 1);
  CHECK(st[0].limit == usd("1").nanos());
  CHECK(st[0].spent == usd("0.25").nanos());
  // A second process on the same namespace (layout 2, events written) is fine.
  BudgetManager again(base_url() + "?prefix=" + fresh);
  CHECK(again.status(Scope::parse("user:a"))[0].spent == usd("0.25").nanos());
}

TEST_CASE("keys and ids with Redis-special characters are handled safely") {
  auto url = base_url() + "?prefix=sc" + unique();
  BudgetManager m(url);
  std::vector<std::string> ids{"{a}", "}{", "a b c", "*?[x]\\", "x|y|z", "caf\xc3\xa9 \xe2\x82\xac", "{", "}",
                               std::string(256, 'L'), "\"quoted\" 'single'", "%41%00", "-1", "ledger", "lv"};
  m.set_limit(Limit::cost("user:*", Window::day(), usd("1")));
  int64_t n = 0;
  for (const auto& id : ids) {
    Subject s(std::vector<Scope>{Scope("tenant", id), Scope("user", id)});
    auto d = m.reserve(s, usd("0.5"), rid("req " + id.substr(0, 200) + " {x}"));
    REQUIRE(d.allowed);
    CHECK(m.commit(d.reservation, usd("0.25")).charged == usd("0.25"));
    CHECK(m.status(Scope("user", id))[0].spent == usd("0.25").nanos());
    ++n;
  }
  CHECK_THROWS_AS(m.reserve(Subject{"user:x"}, usd("1"), rid("bad\nid")), InvalidArgumentError);
  CHECK(m.events(of_type(EventType::Commit)).size() == ids.size());
  require_verified(m);
  // Every key sits under the namespace's hash tag.
  auto [host, port] = host_port(base_url());
  Raw raw(port, host);
  auto prefix = url.substr(url.find("prefix=") + 7);
  for (const auto& k : raw.keys("*" + prefix + "*")) CHECK(k.rfind("{" + prefix + "}:", 0) == 0);
}

TEST_CASE("amounts are exact and bounded by 2^53 in the Redis store") {
  auto url = base_url() + "?prefix=nb" + unique();
  BudgetManager m(url);
  const int64_t big = (int64_t{1} << 53) - 1;
  CHECK_THROWS_AS(m.set_limit(Limit::cost("user:*", Window::day(), Money::from_nanos(big + 1))), InvalidArgumentError);
  m.set_limit(Limit::cost("user:*", Window::day(), Money::from_nanos(big)));
  Subject s{"user:big"};
  CHECK_THROWS_AS(m.record(s, Money::from_nanos(big + 1)), InvalidArgumentError);
  // Exact comparisons next to the bound: big - 1 spent leaves exactly 1 nano.
  m.record(s, Money::from_nanos(big - 1));
  CHECK_FALSE(m.check(s, Money::from_nanos(2)).allowed);
  CHECK(m.check(s, Money::from_nanos(1)).allowed);
  m.record(s, Money::from_nanos(1));
  CHECK(m.status(Scope::parse("user:big"))[0].spent == big);
  // One more nano would take the counter to 2^53: refused, and nothing changes.
  auto n = m.events().size();
  CHECK_THROWS_AS(m.record(s, Money::from_nanos(1)), OverflowError);
  CHECK(m.events().size() == n);
  CHECK(m.status(Scope::parse("user:big"))[0].spent == big);
  require_verified(m);
}

TEST_CASE("ledger drain into a SQLite sink: at-least-once, deduplicated, nothing trimmed before it is drained") {
  auto sink = std::filesystem::temp_directory_path() / ("budget-redis-sink-" + unique() + ".db");
  auto prefix = "ld" + unique();
  auto url = base_url() + "?prefix=" + prefix + "&ledger=" + sink.string() + "&maxlen=50";
  auto [host, port] = host_port(base_url());
  Raw raw(port, host);
  const std::string stream = "{" + prefix + "}:ledger";
  {
    BudgetManager m(url);
    m.set_limit(Limit::cost("user:*", Window::total(), usd("100")));
    for (int i = 0; i < 300; ++i) m.record(Subject{"user:l"}, usd("0.01"));
    // Not drained yet: the cap never drops an event the sink has not copied.
    CHECK(std::stoll(raw.cmd({"XLEN", stream})) == 300);
    CHECK(m.events().size() == 300);  // drains
    for (int i = 0; i < 300; ++i) m.record(Subject{"user:l"}, usd("0.01"));
    CHECK(std::stoll(raw.cmd({"XLEN", stream})) >= 300);  // 301..600 are not drained yet
    CHECK(m.events().size() == 600);                        // drains them
    m.record(Subject{"user:l"}, usd("0.01"));
    CHECK(std::stoll(raw.cmd({"XLEN", stream})) < 200);  // trimmed down to about the cap
    auto ev = m.events();
    REQUIRE(ev.size() == 601);
    for (size_t i = 0; i < ev.size(); ++i) CHECK(ev[i].seq == static_cast<int64_t>(i) + 1);
    CHECK(m.events().size() == 601);  // draining again copies nothing twice
    require_verified(m);
  }
  // Another process with the same sink sees the same chain.
  BudgetManager other(url);
  auto ev = other.events();
  CHECK(ev.size() == 601);
  CHECK(other.status(Scope::parse("user:l"))[0].spent == usd("6.01").nanos());
  require_verified(other);
  std::filesystem::remove(sink);
}

TEST_CASE("ledger drain: a sequence number without its event (a script applied in part) is skipped, and verify() reports it") {
  // Redis 7.0's AOF recovery can apply the first part of a script's MULTI block after a crash
  // in the middle of writing it (docs/redis.md, "Durability"): e.g. its INCR of the sequence
  // without its XADD. Simulated here by that INCR alone. The drain must not stall on the hole
  // (every ledger read failing from then on); it copies on and verify() names the jump.
  auto sink = std::filesystem::temp_directory_path() / ("budget-redis-hole-" + unique() + ".db");
  auto prefix = "lh" + unique();
  auto url = base_url() + "?prefix=" + prefix + "&ledger=" + sink.string();
  auto [host, port] = host_port(base_url());
  Raw raw(port, host);
  BudgetManager m(url);
  Subject s{"user:h"};
  m.record(s, usd("1"));
  m.record(s, usd("2"));
  REQUIRE(m.events().size() == 2);  // drained: 1, 2
  m.record(s, usd("3"));            // 3, not drained yet
  CHECK(raw.cmd({"INCR", "{" + prefix + "}:seq"}) == "4");  // 4: never written
  m.record(s, usd("4"));            // 5
  auto ev = m.events();
  REQUIRE(ev.size() == 4);
  CHECK(ev[2].seq == 3);
  CHECK(ev[3].seq == 5);
  auto rep = m.verify();
  CHECK_FALSE(rep.ok);
  CHECK_FALSE(rep.chain_ok);
  bool named = false;
  for (const auto& p : rep.problems) named = named || p.find("sequence jumps from 3 to 5") != std::string::npos;
  CHECK_MESSAGE(named, "verify() names the hole");
  m.record(s, usd("5"));  // 6: the drain goes on after the hole
  CHECK(m.events().size() == 5);
  std::filesystem::remove(sink);
}

TEST_CASE("ledger drain: events that another sink drained and the stream let go are an error, not a hole") {
  auto dir = std::filesystem::temp_directory_path();
  auto a = dir / ("budget-redis-sink-a-" + unique() + ".db"), b = dir / ("budget-redis-sink-b-" + unique() + ".db");
  auto base = base_url() + "?prefix=l2" + unique() + "&maxlen=10&ledger=";
  {
    BudgetManager m(base + a.string());
    for (int i = 0; i < 300; ++i) m.record(Subject{"user:s"}, usd("0.01"));
    REQUIRE(m.events().size() == 300);  // drained into a, then the stream is trimmed
  }
  BudgetManager other(base + b.string());
  CHECK_THROWS_AS(other.events(), InternalError);
  std::filesystem::remove(a);
  std::filesystem::remove(b);
}

TEST_CASE("AUTH, SELECT and URL parameters") {
  OwnRedis r({"--requirepass", "s3cret"});
  auto url = "redis://:s3cret@127.0.0.1:" + std::to_string(r.port) + "/3?prefix=auth";
  {
    BudgetManager m(url);
    m.set_limit(Limit::cost("user:a", Window::day(), usd("5")));
    m.record(Subject{"user:a"}, usd("1"));
    CHECK(m.status(Scope::parse("user:a"))[0].spent == usd("1").nanos());
  }
  Raw raw(r.port);
  raw.cmd({"AUTH", "s3cret"});
  raw.cmd({"SELECT", "3"});
  CHECK(std::stoll(raw.cmd({"DBSIZE"})) > 0);
  CHECK_THROWS_AS(BudgetManager("redis://:wrong@127.0.0.1:" + std::to_string(r.port) + "/3"), StoreUnavailableError);
  CHECK_THROWS_AS(BudgetManager("redis://127.0.0.1:" + std::to_string(r.port) + "/0?nope=1"), InvalidArgumentError);
  CHECK_THROWS_AS(BudgetManager("redis://127.0.0.1:99999/0"), InvalidArgumentError);
  CHECK_THROWS_AS(BudgetManager("redis://127.0.0.1:1/0?prefix=a{b}"), InvalidArgumentError);
  CHECK_THROWS_AS(BudgetManager("rediss://127.0.0.1:1/0"), InvalidArgumentError);
}

TEST_CASE("a Redis Cluster node that does not serve the namespace's slot: a clear StoreUnavailable, not an internal error") {
  // The cluster bus port is given: the default (port + 10000) may be past 65535.
  const int bus_b = free_port();
  struct Dirs {  // removed after the servers (declared before them)
    std::vector<std::filesystem::path> v;
    ~Dirs() {
      std::error_code ec;
      for (auto& d : v) std::filesystem::remove_all(d, ec);
    }
  } dirs;
  auto cluster_node = [&dirs](int bus) {
    auto dir = std::filesystem::temp_directory_path() / ("budget-cluster-" + unique());
    std::filesystem::create_directories(dir);
    dirs.v.push_back(dir);
    return std::make_unique<OwnRedis>(std::vector<std::string>{"--cluster-enabled", "yes", "--cluster-config-file",
                                                                (dir / "nodes.conf").string(), "--cluster-port",
                                                                std::to_string(bus)});
  };
  auto a = cluster_node(free_port()), b = cluster_node(bus_b);
  Raw ra(a->port), rb(b->port);
  REQUIRE(ra.cmd({"CLUSTER", "ADDSLOTSRANGE", "0", "8191"}) == "OK");
  REQUIRE(rb.cmd({"CLUSTER", "ADDSLOTSRANGE", "8192", "16383"}) == "OK");
  REQUIRE(ra.cmd({"CLUSTER", "MEET", "127.0.0.1", std::to_string(b->port), std::to_string(bus_b)}) == "OK");
  bool ok = false;
  for (int i = 0; i < 200 && !ok; ++i) {
    ok = ra.cmd({"CLUSTER", "INFO"}).find("cluster_state:ok") != std::string::npos &&
         rb.cmd({"CLUSTER", "INFO"}).find("cluster_state:ok") != std::string::npos;
    if (!ok) std::this_thread::sleep_for(50ms);
  }
  REQUIRE(ok);
  // A namespace whose slot node b serves, opened on node a.
  std::string prefix;
  for (int i = 0; prefix.empty(); ++i) {
    std::string p = "cl" + std::to_string(i);
    if (std::stoll(ra.cmd({"CLUSTER", "KEYSLOT", "{" + p + "}:lv"})) >= 8192) prefix = p;
  }
  auto on = [&](int port) { return "redis://127.0.0.1:" + std::to_string(port) + "/0?prefix=" + prefix; };
  try {
    BudgetManager wrong(on(a->port));
    FAIL("opened a namespace on a node that does not serve its slot");
  } catch (const StoreUnavailableError& e) {
    CHECK(std::string(e.what()).find("MOVED") != std::string::npos);
    CHECK(std::string(e.what()).find("point it at the node that serves the slot") != std::string::npos);
  }
  BudgetManager right(on(b->port));  // the node that serves it works
  right.record(Subject{"user:c"}, usd("1"));
  CHECK(right.events().size() == 1);
}

TEST_CASE("a Redis at its maxclients: StoreUnavailable (fail closed), not an internal error") {
  OwnRedis r({"--maxclients", "1"});
  auto url = r.url();
  {
    Raw hog(r.port);  // takes the only client slot
    REQUIRE(hog.cmd({"PING"}) == "PONG");
    CHECK_THROWS_AS(BudgetManager{url}, StoreUnavailableError);
  }
  // A slot is free again once the server has seen the hog leave (it may take a moment).
  std::unique_ptr<BudgetManager> m;
  for (int i = 0; i < 100 && !m; ++i) {
    try {
      m = std::make_unique<BudgetManager>(url);
    } catch (const StoreUnavailableError&) {
      std::this_thread::sleep_for(20ms);
    }
  }
  REQUIRE(m);
  m->record(Subject{"user:mc"}, usd("1"));
  CHECK(m->events().size() == 1);
}

TEST_CASE("auto-pipelining: many threads over a small pool keep every call atomic and exact") {
  auto url = base_url() + "?prefix=ap" + unique() + "&pool=2";
  BudgetManager m(url);
  m.set_limit(Limit::cost("tenant:*", Window::day(), usd("50")));
  std::atomic<int64_t> committed{0};
  std::vector<std::thread> ts;
  for (int t = 0; t < 16; ++t)
    ts.emplace_back([&, t] {
      for (int i = 0; i < 100; ++i) {
        auto d = m.reserve(Subject{"tenant:p", "user:u" + std::to_string(t)}, usd("0.1"));
        if (!d.allowed) continue;
        auto amount = Money::from_nanos(1 + (t * 100 + i) % 50'000'000);
        m.commit(d.reservation, amount);
        committed += amount.nanos();
      }
    });
  for (auto& t : ts) t.join();
  auto st = m.status(Scope::parse("tenant:p"))[0];
  CHECK(st.spent == committed.load());
  CHECK(st.held == 0);
  CHECK(st.spent <= st.limit);
  require_verified(m);
}

// The day's status of one scope's only limit.
LimitStatus status_of(BudgetManager& m, const char* scope) {
  auto st = m.status(Scope::parse(scope));
  REQUIRE(st.size() == 1);
  return st[0];
}

TEST_CASE("Redis out of memory: writes fail closed, status keeps working, and all recovers when memory returns") {
  // maxmemory reached with noeviction: Redis refuses every function that may write (OOM), as
  // a whole. Reads are no-writes functions and still run; check() fails closed like reserve
  // (it gates check-then-record, whose record could not be written).
  OwnRedis r({"--maxmemory", "3mb", "--maxmemory-policy", "noeviction", "--appendonly", "no"});
  auto url = r.url();
  BudgetManager m(url);
  m.set_limit(Limit::cost("user:*", Window::day(), usd("1000")));
  const Subject s{"user:oom"};
  int64_t recorded = 0;
  bool full = false;
  for (int i = 0; i < 200'000 && !full; ++i) {
    try {
      m.record(s, usd("0.01"), rid("oom-" + std::to_string(i)));
      recorded += usd("0.01").nanos();
    } catch (const StoreUnavailableError& e) {
      CHECK(std::string(e.what()).find("OOM") != std::string::npos);
      full = true;
    }
  }
  REQUIRE(full);
  // Right at the limit a write may fit again a moment later (Redis freed a buffer: a reserve
  // was allowed here once, under load). From here on the limit is far below what is used, so
  // every write is refused.
  Raw raw(r.port);
  raw.cmd({"CONFIG", "SET", "maxmemory", "1mb"});
  CHECK(status_of(m, "user:oom").spent == recorded);  // a read, while full
  auto d = m.reserve(s, usd("0.01"));
  CHECK_FALSE(d.allowed);
  CHECK(d.denial.reason == DenyReason::StoreUnavailable);
  auto c = m.check(s, usd("0.01"));
  CHECK_FALSE(c.allowed);
  CHECK(c.denial.reason == DenyReason::StoreUnavailable);
  {
    BudgetManager other(url);  // a process starting now: it loads the limits, reads
    CHECK(status_of(other, "user:oom").spent == recorded);
  }
  raw.cmd({"CONFIG", "SET", "maxmemory", "0"});
  auto again = m.reserve(s, usd("0.01"), rid("oom-after"));
  REQUIRE(again.allowed);
  m.commit(again.reservation, usd("0.01"));
  CHECK(status_of(m, "user:oom").spent == recorded + usd("0.01").nanos());
  require_verified(m);
}

TEST_CASE("fail-open: a reserve of the same id once the store is back is metered against the store's hold") {
  // The fail-open state outlives its TTL (for its commit); a new reserve of the id must not
  // adopt it (its consume never stops: $5 against a $1 limit went on).
  OwnRedis r;
  BudgetManager m(fail_open_opts(r));
  m.set_limit(Limit::cost("user:*", Window::day(), usd("1")));
  fail_open_past_ttl(r, m, Subject{"user:fr"}, "fo-reuse", usd("0.5"), [] {});
  RequestOptions ro2 = rid("fo-reuse");
  ro2.ttl = Duration(60'000);
  auto d2 = m.reserve(Subject{"user:fr"}, usd("0.5"), ro2);
  REQUIRE(d2.allowed);
  CHECK_FALSE(d2.fail_open);
  auto c = m.consume(d2.reservation, usd("5"));  // far past the $1 limit
  CHECK_FALSE(c.ok());
  auto rc = m.commit(d2.reservation, usd("0.5"));
  CHECK(rc.charged == usd("0.5"));
  CHECK(m.status(Scope::parse("user:fr"))[0].held == 0);
  require_verified(m);
}

TEST_CASE("fail-open after a timeout: a repeated reserve, replayed by the store, meters the store's hold") {
  // The reserve timed out here (fail-open state listed) but ran on the server; the same request
  // retried is a replay there. The replayed reservation must not adopt the fail-open state
  // (unmetered: its consume never stops).
  LateRig rig("forp");
  auto& m = rig.m;
  rig.late_reserve(Subject{"user:rp"}, "late-replay", usd("0.6"));
  Decision again;
  for (int i = 0; i < 100; ++i) {  // the pool reconnects with backoff
    again = m.reserve(Subject{"user:rp"}, usd("0.6"), rid("late-replay"));
    if (!again.fail_open) break;
    std::this_thread::sleep_for(50ms);
  }
  REQUIRE(again.allowed);
  REQUIRE_FALSE(again.fail_open);
  CHECK(again.replayed);
  CHECK_FALSE(m.consume(again.reservation, usd("5")).ok());  // far past the $1 limit: Stop
  auto rc = m.commit(again.reservation, usd("0.6"));
  CHECK(rc.charged == usd("0.6"));
  CHECK(m.status(Scope::parse("user:rp"))[0].held == 0);
  require_verified(m);
}

namespace {
// The 'u' (usage) field of every entry of the namespace's ledger stream, in order.
std::vector<std::string> raw_usages(Raw& raw, const std::string& prefix) {
  std::vector<std::string> out;
  for (const auto& key : raw.keys("{" + prefix + "}*")) {
    if (raw.cmd({"TYPE", key}) != "stream") continue;
    auto* r = static_cast<redisReply*>(redisCommand(raw.c, "XRANGE %b - +", key.data(), key.size()));
    REQUIRE(r);
    for (size_t i = 0; i < r->elements; ++i) {
      const redisReply* f = r->element[i]->element[1];
      for (size_t j = 0; j + 1 < f->elements; j += 2)
        if (std::string(f->element[j]->str, f->element[j]->len) == "u")
          out.emplace_back(f->element[j + 1]->str, f->element[j + 1]->len);
    }
    freeReplyObject(r);
  }
  return out;
}

// The request fingerprint as builds before the audio fields computed it (FNV-1a 64, 15 hex
// digits) for a priced record: an independent copy of src/engine.cpp's.
std::string pre_audio_record_fingerprint(const std::vector<std::string>& subject, const std::string& model,
                                         const Usage& u) {
  uint64_t h = 14695981039346656037ULL;
  auto add_s = [&](std::string_view s) {
    for (unsigned char c : s) h = (h ^ c) * 1099511628211ULL;
    h = (h ^ 0x1f) * 1099511628211ULL;
  };
  auto add_i = [&](int64_t v) {
    for (int i = 0; i < 8; ++i) h = (h ^ ((static_cast<uint64_t>(v) >> (8 * i)) & 0xff)) * 1099511628211ULL;
  };
  add_s("record");
  for (const auto& s : subject) add_s(s);
  add_s("priced");
  add_s(model);
  for (int64_t v : {u.input_tokens, u.cache_read_tokens, u.cache_write_tokens, u.cache_write_1h_tokens,
                    u.output_tokens, u.reasoning_tokens, u.images, u.audio_ms, u.requests})
    add_i(v);
  add_i(int64_t{u.complete});
  add_i(static_cast<int64_t>(u.service_tier));
  add_i(0);  // Charge::tokens
  std::string out(15, '0');
  for (int i = 14; i >= 0; --i, h >>= 4) out[static_cast<size_t>(i)] = "0123456789abcdef"[h & 15];
  return out;
}
}  // namespace

TEST_CASE("usage in the ledger stream: a usage without audio keeps the older encoding, audio adds two fields") {
  auto prefix = "au" + unique();
  auto [host, port] = host_port(base_url());
  Raw raw(port, host);
  auto pe = std::make_shared<PricingEngine>();
  ModelPrice mp;
  mp.input = "0.000001";
  mp.output = "0.000004";
  mp.extra = "ain=0.00004 aout=0.00008";
  pe->set_price("audio-model", mp);
  Options o;
  o.store = base_url() + "?prefix=" + prefix;
  o.pricer = pe;
  BudgetManager m(o);
  Subject s{"user:r"};
  Usage plain;
  plain.input_tokens = 100;
  plain.output_tokens = 10;
  Usage tiered = plain;
  tiered.service_tier = ServiceTier::Priority;
  Usage audio = plain;
  audio.audio_input_tokens = 60;
  audio.audio_output_tokens = 5;
  m.record(s, Charge::priced("audio-model", plain), {.request_id = "p"});
  m.record(s, Charge::priced("audio-model", tiered), {.request_id = "t"});
  m.record(s, Charge::priced("audio-model", audio), {.request_id = "a"});
  // Exactly what builds before the audio fields wrote (10 integers; 11 with a tier) -- and so
  // what this build reads back from them -- and 13 with audio.
  auto u = raw_usages(raw, prefix);
  REQUIRE(u.size() == 3);
  CHECK(u[0] == "100 0 0 0 10 0 0 0 1 1");
  CHECK(u[1] == "100 0 0 0 10 0 0 0 1 1 3");
  CHECK(u[2] == "100 0 0 0 10 0 0 0 1 1 0 60 5");
  auto ev = m.events();
  REQUIRE(ev.size() == 3);
  CHECK(*ev[0].usage == plain);
  CHECK(*ev[1].usage == tiered);
  CHECK(*ev[2].usage == audio);
  CHECK(m.verify().ok);
  // The request fingerprint of a usage without audio is the one older builds stored, so a
  // retry across an upgrade replays instead of conflicting.
  const std::string want = pre_audio_record_fingerprint(ev[0].subject, "audio-model", plain);
  bool found = false;
  for (const auto& key : raw.keys("{" + prefix + "}*"))
    if (raw.cmd({"TYPE", key}) == "hash") found = found || raw.cmd({"HGET", key, "fp"}) == want;
  CHECK_MESSAGE(found, "a stored fingerprint equals the pre-audio computation " << want);
  CHECK(m.record(s, Charge::priced("audio-model", plain), {.request_id = "p"}).replayed);
}
