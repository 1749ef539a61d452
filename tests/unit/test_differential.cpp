// Differential test of the stores: the same random sequence of operations (seeded, on a manual
// clock) runs in lockstep on the memory store and on every other store listed in
// BUDGET_TEST_STORES; after every operation the results must be identical, field by field
// (decisions, denials, receipts, stream verdicts, statuses, alerts, error codes), and at the
// end the ledgers must hold the same events and verify().
//
// The memory store is the reference. A shared store (SQLite, Redis, and Redis with its ledger
// drained into a SQLite sink) is driven through two managers on the same store ("two
// processes"), picked at random per operation, so the cross-process paths (SQLite's catch-up
// from the ledger, limits reloaded by version, holds reserved by one process and settled or
// expired by the other, a process restarting) are compared as well.
//
// The conformance suite pins each rule with a hand-written case; this test looks for the
// interleavings nobody wrote down. A failure prints the seed, the operation and both results.
// Environment: BUDGET_DIFF_SEEDS (default 6), BUDGET_DIFF_OPS (600), BUDGET_DIFF_SEED (the
// first seed, 1) for a long soak or to replay one seed; BUDGET_DIFF_TRACE=1 prints every
// operation and the reference result.
#include "store_fixture.hpp"

#include <algorithm>
#include <cstdlib>
#include <functional>
#include <map>
#include <random>
#include <set>
#include <sstream>
#include <tuple>

using namespace budget;

namespace {

int env_int(const char* name, int def) {
  const char* v = std::getenv(name);
  return v && *v ? std::atoi(v) : def;
}

std::string money_text(int64_t nanos) { return Money::from_nanos(nanos).to_string(); }

std::string show(const Denial& d) {
  std::ostringstream o;
  o << "denial{" << static_cast<int>(d.reason) << ' ' << d.scope << ' ' << d.window << ' ' << to_string(d.metric)
    << " limit=" << d.limit << " spent=" << d.spent << " held=" << d.held << " remaining=" << d.remaining
    << " requested=" << d.requested << " resets=" << (d.resets_at ? to_millis(*d.resets_at) : -1)
    << " hard=" << d.hard << '}';
  return o.str();
}

std::string show(const Decision& d) {
  std::ostringstream o;
  o << "decision{allowed=" << d.allowed << " replayed=" << d.replayed << " estimate=" << d.estimate.to_string();
  if (d.allowed && d.reservation) {
    o << " id=" << d.reservation.request_id() << " held=" << d.reservation.held().to_string()
      << " held_tokens=" << d.reservation.held_tokens() << " expires=" << to_millis(d.reservation.expires_at());
  }
  if (!d.allowed) o << ' ' << show(d.denial);
  o << '}';
  return o.str();
}

std::string show(const ConsumeResult& c) {
  std::ostringstream o;
  o << "consume{" << (c.verdict == Verdict::Continue ? "continue" : "stop") << " consumed=" << c.consumed.to_string()
    << " held=" << c.held.to_string();
  if (c.verdict == Verdict::Stop) o << ' ' << show(c.denial);
  o << '}';
  return o.str();
}

std::string show(const Receipt& r) {
  std::ostringstream o;
  o << "receipt{" << r.request_id << " charged=" << r.charged.to_string() << " released=" << r.released.to_string()
    << " tokens=" << r.tokens << " over_hold=" << r.over_hold << " over_limit=" << r.over_limit << " scopes=[";
  for (const auto& s : r.over_limit_scopes) o << s << ',';
  o << "] after_expiry=" << r.after_expiry << " replayed=" << r.replayed << '}';
  return o.str();
}

std::string show(const std::vector<LimitStatus>& v) {
  std::vector<std::string> rows;
  for (const auto& s : v) {
    std::ostringstream o;
    o << s.key << ' ' << s.scope << ' ' << s.window << ' ' << to_string(s.metric) << " limit=" << s.limit
      << " granted=" << s.granted << " spent=" << s.spent << " held=" << s.held << " remaining=" << s.remaining
      << " start=" << to_millis(s.window_start) << " resets=" << (s.resets_at ? to_millis(*s.resets_at) : -1);
    rows.push_back(o.str());
  }
  std::sort(rows.begin(), rows.end());
  std::string out = "status{";
  for (const auto& r : rows) out += r + "; ";
  return out + '}';
}

std::string show(const Alert& a) {
  std::ostringstream o;
  // Not the request id: a crossing by spend that several holds expiring in one sweep charged
  // together is reported with one of them, and which one depends on the store's sweep order.
  o << "alert{" << a.scope << ' ' << a.window << ' ' << a.limit_key << ' ' << a.threshold_pct << "% limit=" << a.limit
    << " spent=" << a.spent << " start=" << to_millis(a.window_start) << '}';
  return o.str();
}

// An event without what legitimately differs between stores (sequence numbers are compared
// through the order; hashes through verify()).
std::string show(const LedgerEvent& e) {
  std::ostringstream o;
  o << to_string(e.type) << ' ' << to_millis(e.time) << ' ' << e.request_id << " [";
  for (const auto& s : e.subject) o << s << ',';
  o << "] spent=" << e.spent.cost << '/' << e.spent.tokens << '/' << e.spent.requests << " held=" << e.held.cost << '/'
    << e.held.tokens << '/' << e.held.requests << " granted=" << e.granted.cost << " windows=[";
  auto w = e.windows;
  std::sort(w.begin(), w.end());
  for (const auto& s : w) o << s << ',';
  o << "] meta=" << e.metadata << " model=" << e.model << " provider=" << e.provider << " version=" << e.price_version;
  if (e.usage)
    o << " usage=" << e.usage->input_tokens << '/' << e.usage->cache_read_tokens << '/' << e.usage->output_tokens << '/'
      << e.usage->complete;
  return o.str();
}

// Where and when a run happens: calendar windows in UTC, or in a zone whose daylight-saving
// change (a 23- or 25-hour day) falls inside the run, next to a month boundary.
struct Setting {
  const char* zone;  // "" = UTC
  Timestamp start;
};
Setting setting_of(uint32_t seed) {
  switch (seed % 3) {
    case 1: return {"Europe/Paris", from_millis(1'774'641'600'000)};      // 2026-03-27T20:00Z; DST on 03-29
    case 2: return {"America/New_York", from_millis(1'793'383'200'000)};  // 2026-10-30T18:00Z; DST off 11-01
    default: return {"", testutil::t0()};                                 // 2026-03-10T12:00Z
  }
}

std::vector<Limit> initial_limits(Timestamp t0) {
  return {
      Limit::cost("global", Window::month(), Money::parse("40"), {50, 90}),
      Limit::cost("tenant:*", Window::day(), Money::parse("6"), {80}),
      Limit::cost("tenant:t1", Window::total(), Money::parse("3"), {50, 100}),
      Limit::cost("project:*", Window::rolling(std::chrono::hours(1)), Money::parse("2.5")),
      Limit::cost("user:*", Window::day(), Money::parse("1.2"), {100}),
      Limit::requests("user:*", Window::minute(), 5),
      Limit::tokens("user:*", Window::hour(), 20000),
      Limit::cost("feature:chat", Window::custom(t0, t0 + std::chrono::hours(48)), Money::parse("4")),
  };
}

const std::vector<Subject>& subjects() {
  static const std::vector<Subject> s = [] {
    std::vector<Subject> out;
    for (const char* t : {"tenant:t1", "tenant:t2"})
      for (const char* p : {"project:p1", "project:p2"})
        for (const char* u : {"user:u1", "user:u2", "user:u3"}) out.push_back(Subject{t, p, u});
    out.push_back(Subject{"tenant:t2", "user:u1", "feature:chat"});
    out.push_back(Subject{"tenant:t1", "project:p1", "user:u2", "feature:chat"});
    return out;
  }();
  return s;
}

// One store under test: one or two managers sharing it, a clock, the alerts they fired.
struct Lane {
  std::string kind, url;
  Setting setting;
  std::shared_ptr<const Pricer> pricer;
  bool opened_once = false;
  std::shared_ptr<ManualClock> clock;
  std::vector<std::unique_ptr<BudgetManager>> ms;
  std::vector<std::string> alerts;
  std::set<std::string> reported;
  std::map<std::string, Reservation> holds;  // live reservations by request id

  Lane(const std::string& k, bool two, const Setting& set, std::shared_ptr<const Pricer> prices)
      : kind(k), url(url_of(k)), setting(set), pricer(std::move(prices)) {
    clock = std::make_shared<ManualClock>(set.start);
    ms.resize(two ? 2 : 1);
    for (size_t i = 0; i < ms.size(); ++i) open(i);
  }
  ~Lane() {
    holds.clear();
    ms.clear();
    testutil::remove_store_files(url);
  }
  Lane(const Lane&) = delete;
  Lane& operator=(const Lane&) = delete;
  // "redis+sink": Redis whose ledger stream is drained into a SQLite file and trimmed to a
  // small cap as it goes (the drain runs on every ledger read: alerts' read-backs, events()).
  static std::string url_of(const std::string& k) {
    if (k != "redis+sink") return testutil::fresh_url(k);
    auto sink = testutil::temp_dir() / (testutil::unique_name() + "-sink.db");
    return testutil::fresh_url("redis") + "&ledger=" + sink.string() + "&maxlen=16";
  }
  // (Re)opens manager i: a process that starts, or restarts, on the store.
  void open(size_t i) {
    ms[i].reset();
    Options o;
    o.store = url;
    o.clock = clock;
    o.time_zone = setting.zone;
    o.pricer = pricer;
    o.default_ttl = std::chrono::minutes(5);
    if (i == 0 && !opened_once) o.limits = initial_limits(setting.start);
    opened_once = true;
    ms[i] = std::make_unique<BudgetManager>(std::move(o));
    // Alerts fire once per window, threshold and cap in each process (docs/concepts.md): when
    // spend falls back (a negative adjustment) and rises again, another process may report
    // the crossing a second time. The first report is compared; such repeats are not.
    ms[i]->on_alert([this](const Alert& a) {
      std::string key = a.limit_key + '|' + std::to_string(to_millis(a.window_start)) + '|' +
                        std::to_string(a.threshold_pct) + '|' + std::to_string(a.limit);
      if (reported.insert(key).second) alerts.push_back(show(a));
    });
  }
  BudgetManager& m(size_t i) { return *ms[i % ms.size()]; }
};

// Runs f, turning a library error into its code (messages may differ between stores).
std::string guarded(const std::function<std::string()>& f) {
  try {
    return f();
  } catch (const Error& e) {
    return std::string("error:") + to_string(e.code());
  }
}

struct Op {
  std::string what;                             // printed on a mismatch
  std::function<std::string(Lane&)> run;        // the result, canonical
};

class Generator {
 public:
  explicit Generator(uint32_t seed) : rng_(seed) {}

  // The next operation, drawn against the reference lane's state (its live holds, its clock).
  Op next(const Lane& ref) {
    now_ = to_millis(ref.clock->now());
    int pick = uniform(0, 99);
    size_t mgr = static_cast<size_t>(uniform(0, 1));
    if (pick < 28) return reserve(mgr, false);
    if (pick < 31) return replay_reserve(mgr);
    if (pick < 35) return reserve(mgr, true);
    if (pick < 50 && !ref.holds.empty()) return consume(ref);
    if (pick < 63 && !ref.holds.empty()) return commit(ref, mgr, false);
    if (pick < 66) return commit(ref, mgr, true);
    if (pick < 70 && !ref.holds.empty()) return release(ref, mgr);
    if (pick < 74) return record(mgr);
    if (pick < 76) return grant(mgr);
    if (pick < 78) return adjust(mgr);
    if (pick < 88) return advance();
    if (pick < 90) return expire(mgr);
    if (pick < 95) return status(mgr);
    if (pick < 97) return limit_change(mgr);
    if (pick < 98) return reopen(mgr);
    return bad_input(mgr);
  }

 private:
  std::mt19937 rng_;
  int next_id_ = 0;
  int64_t now_ = 0;
  struct Asked {
    size_t subject;
    int64_t cost, tokens;
    uint32_t bp;
    std::string model;  // set: priced from `usage` (cost and tokens unused)
    Usage usage;
  };
  std::map<std::string, Asked> asked_;  // reserve arguments by id (for replays)
  std::vector<std::string> used_;       // every reserve id so far
  std::map<std::string, int64_t> when_; // ... and when it was made (ms)

  int uniform(int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng_); }
  int64_t cents(int lo, int hi) { return int64_t{uniform(lo, hi)} * 10'000'000; }
  template <class C>
  const auto& any_of(const C& c) {
    auto it = c.begin();
    std::advance(it, uniform(0, static_cast<int>(c.size()) - 1));
    return *it;
  }

  static Estimate estimate_of(const Asked& a) {
    return a.model.empty() ? Estimate::money(Money::from_nanos(a.cost), a.tokens) : Estimate::priced(a.model, a.usage);
  }
  // A model (one unknown to the table now and then) and a usage of it, or none.
  std::pair<std::string, Usage> maybe_priced() {
    static const char* models[] = {"gpt-4o-mini", "gpt-4o-2024-08-06", "claude-3-5-haiku-20241022", "no-such-model"};
    if (uniform(0, 3) != 0) return {};
    Usage u;
    u.input_tokens = uniform(0, 40000);
    u.cache_read_tokens = uniform(0, 1) ? u.input_tokens / 2 : 0;
    u.output_tokens = uniform(0, 8000);
    std::string m = models[uniform(0, 9) == 0 ? 3 : uniform(0, 2)];
    return {m, u};
  }
  static std::string priced_text(const std::string& model, const Usage& u) {
    if (model.empty()) return "";
    return " priced " + model + " in=" + std::to_string(u.input_tokens) + " cached=" + std::to_string(u.cache_read_tokens) +
           " out=" + std::to_string(u.output_tokens);
  }

  Op reserve(size_t mgr, bool dry) {
    Asked a{static_cast<size_t>(uniform(0, static_cast<int>(subjects().size()) - 1)), cents(0, 60),
            uniform(0, 3) == 0 ? int64_t{uniform(0, 9000)} : 0, uniform(0, 4) == 0 ? 12000u : 10000u, {}, {}};
    std::tie(a.model, a.usage) = maybe_priced();
    if (dry) {
      std::ostringstream w;
      w << "check s" << a.subject << ' ' << money_text(a.cost) << " tokens=" << a.tokens << priced_text(a.model, a.usage)
        << " m" << mgr;
      return {w.str(), [a, mgr](Lane& L) {
                return guarded([&] { return show(L.m(mgr).check(subjects()[a.subject], estimate_of(a))); });
              }};
    }
    std::string id = "r" + std::to_string(next_id_++);
    asked_[id] = a;
    used_.push_back(id);
    when_[id] = now_;
    int64_t ttl_min = uniform(1, 12);
    std::ostringstream w;
    w << "reserve " << id << " s" << a.subject << ' ' << money_text(a.cost) << " tokens=" << a.tokens
      << priced_text(a.model, a.usage) << " bp=" << a.bp << " ttl=" << ttl_min << "min m" << mgr;
    return {w.str(), [a, id, ttl_min, mgr](Lane& L) {
              return guarded([&] {
                RequestOptions o;
                o.request_id = id;
                o.buffer_bp = a.bp;
                o.ttl = std::chrono::minutes(ttl_min);
                auto d = L.m(mgr).reserve(subjects()[a.subject], estimate_of(a), o);
                if (d.allowed && !d.replayed) L.holds[id] = d.reservation;
                return show(d);
              });
            }};
  }

  Op replay_reserve(size_t mgr) {
    if (used_.empty()) return reserve(mgr, false);
    std::string id = any_of(used_);
    Asked a = asked_[id];
    bool same = uniform(0, 2) != 0;
    if (!same) a.cost += 10'000'000;
    std::ostringstream w;
    w << "replay reserve " << id << (same ? " (same)" : " (different amount)") << " m" << mgr;
    return {w.str(), [a, id, mgr](Lane& L) {
              return guarded([&] {
                RequestOptions o;
                o.request_id = id;
                o.buffer_bp = a.bp;
                auto d = L.m(mgr).reserve(subjects()[a.subject], estimate_of(a), o);
                return show(d);  // a replay reports the first result (ttl is not part of the key)
              });
            }};
  }

  Op consume(const Lane& ref) {
    std::string id = any_of(ref.holds).first;
    int64_t amount = cents(0, 40) / 2;
    int64_t tokens = uniform(0, 2) == 0 ? int64_t{uniform(0, 6000)} : 0;
    std::ostringstream w;
    w << "consume " << id << ' ' << money_text(amount) << " tokens=" << tokens;
    return {w.str(), [id, amount, tokens](Lane& L) {
              auto it = L.holds.find(id);
              if (it == L.holds.end()) return std::string("no such live hold in this lane");
              // The reservation's own manager meters its stream (the stream state is in-process).
              return guarded([&] { return show(L.m(0).consume(it->second, Money::from_nanos(amount), tokens)); });
            }};
  }

  Op commit(const Lane& ref, size_t mgr, bool any) {
    // Any id: a settled one (a replay or a conflict), an expired one (a late commit), or none.
    // Only ids of the last 50 minutes: the Redis store forgets the counters of a window about
    // one window length plus an hour after it ended (TTLs; docs/redis.md), so a later commit
    // is judged against fewer buckets there than in memory — a documented difference.
    std::vector<std::string> recent, held;
    for (const auto& u : used_)
      if (when_[u] >= now_ - 50 * 60'000) (ref.holds.count(u) ? held : recent).push_back(u);
    if (!any && !held.empty()) recent = held;
    std::string id = recent.empty() ? "r-none" : any_of(recent);
    int64_t amount = cents(0, 70);
    int64_t tokens = uniform(0, 2) == 0 ? int64_t{uniform(0, 12000)} : 0;
    bool by_reservation = !any && uniform(0, 1) == 0;
    auto [model, usage] = maybe_priced();
    std::ostringstream w;
    w << "commit " << id << ' ' << money_text(amount) << " tokens=" << tokens << priced_text(model, usage)
      << (by_reservation ? " (reservation)" : " (id)") << " m" << mgr;
    return {w.str(), [id, amount, tokens, mgr, by_reservation, model = model, usage = usage](Lane& L) {
              auto it = L.holds.find(id);
              auto out = guarded([&] {
                Charge c = model.empty() ? Charge::money(Money::from_nanos(amount), tokens) : Charge::priced(model, usage);
                if (by_reservation && it != L.holds.end()) return show(L.m(0).commit(it->second, c));
                return show(L.m(mgr).commit(id, c));
              });
              if (it != L.holds.end() && out.rfind("receipt", 0) == 0) L.holds.erase(it);
              return out;
            }};
  }

  Op release(const Lane& ref, size_t mgr) {
    std::string id = any_of(ref.holds).first;
    std::ostringstream w;
    w << "release " << id << " m" << mgr;
    return {w.str(), [id, mgr](Lane& L) {
              auto out = guarded([&] { return show(L.m(mgr).release(id)); });
              if (out.rfind("receipt", 0) == 0) L.holds.erase(id);
              return out;
            }};
  }

  Op record(size_t mgr) {
    size_t s = static_cast<size_t>(uniform(0, static_cast<int>(subjects().size()) - 1));
    int64_t amount = cents(0, 30);
    std::string id = "rec" + std::to_string(next_id_++);
    std::ostringstream w;
    w << "record " << id << " s" << s << ' ' << money_text(amount) << " m" << mgr;
    return {w.str(), [s, amount, id, mgr](Lane& L) {
              return guarded([&] {
                RequestOptions o;
                o.request_id = id;
                return show(L.m(mgr).record(subjects()[s], Money::from_nanos(amount), o));
              });
            }};
  }

  Op grant(size_t mgr) {
    std::string scope = uniform(0, 1) ? "tenant:t1" : "tenant:t2";
    int64_t amount = cents(1, 100);
    std::string id = "g" + std::to_string(next_id_++);
    return {"grant " + id + ' ' + scope + ' ' + money_text(amount), [scope, amount, id, mgr](Lane& L) {
              return guarded([&] {
                RequestOptions o;
                o.request_id = id;
                o.reason = "top-up";
                L.m(mgr).grant(Scope::parse(scope), Money::from_nanos(amount), o);
                return std::string("granted");
              });
            }};
  }

  Op adjust(size_t mgr) {
    size_t s = static_cast<size_t>(uniform(0, static_cast<int>(subjects().size()) - 1));
    int64_t delta = cents(-20, 20);
    std::string id = "a" + std::to_string(next_id_++);
    return {"adjust " + id + " s" + std::to_string(s) + ' ' + money_text(delta), [s, delta, id, mgr](Lane& L) {
              return guarded([&] {
                RequestOptions o;
                o.request_id = id;
                o.reason = "correction";
                L.m(mgr).adjust(subjects()[s], Money::from_nanos(delta), o);
                return std::string("adjusted");
              });
            }};
  }

  Op advance() {
    int kind = uniform(0, 9);
    int64_t ms = kind < 6 ? int64_t{uniform(1, 120)} * 1000           // seconds
                 : kind < 9 ? int64_t{uniform(2, 90)} * 60'000        // minutes
                            : int64_t{uniform(4, 30)} * 3'600'000;    // hours: days and months roll
    return {"advance " + std::to_string(ms) + " ms", [ms](Lane& L) {
              L.clock->advance(Duration(ms));
              return std::string("now=") + std::to_string(to_millis(L.clock->now()));
            }};
  }

  Op expire(size_t mgr) {
    return {"expire_holds m" + std::to_string(mgr), [mgr](Lane& L) {
              return guarded([&] {
                size_t n = L.m(mgr).expire_holds();
                // Which holds expired shows in the statuses and the ledger; the count is
                // compared too: every store settles every hold whose TTL has passed.
                return "expired " + std::to_string(n);
              });
            }};
  }

  Op status(size_t mgr) {
    static const char* scopes[] = {"global", "tenant:t1", "tenant:t2", "project:p1", "project:p2",
                                   "user:u1", "user:u2", "user:u3", "feature:chat", "user:nobody"};
    std::string scope = scopes[uniform(0, 9)];
    return {"status " + scope + " m" + std::to_string(mgr), [scope, mgr](Lane& L) {
              return guarded([&] { return show(L.m(mgr).status(Scope::parse(scope))); });
            }};
  }

  Op limit_change(size_t mgr) {
    int which = uniform(0, 3);
    if (which == 0)
      return {"set_limit user:u2 day 0.80", [mgr](Lane& L) {
                return guarded([&] {
                  L.m(mgr).set_limit(Limit::cost("user:u2", Window::day(), Money::parse("0.80"), {50}));
                  return std::string("set");
                });
              }};
    if (which == 1)
      return {"remove_limit user:u2 day", [mgr](Lane& L) {
                return guarded([&] {
                  return std::string(L.m(mgr).remove_limit("user:u2", Metric::Cost, Window::day()) ? "removed" : "absent");
                });
              }};
    if (which == 2)
      return {"set_limit project:* rolling:1h 3.00", [mgr](Lane& L) {
                return guarded([&] {
                  L.m(mgr).set_limit(Limit::cost("project:*", Window::rolling(std::chrono::hours(1)), Money::parse("3")));
                  return std::string("set");
                });
              }};
    return {"set_limit tenant:t2 week 9", [mgr](Lane& L) {
              return guarded([&] {
                L.m(mgr).set_limit(Limit::cost("tenant:t2", Window::week(), Money::parse("9")));
                return std::string("set");
              });
            }};
  }

  // A process restarts: its manager is closed and opened again on the same store (the memory
  // store cannot be reopened: there it is a no-op). Reservations made through it stay usable
  // by id; their stream state lives on in the Reservation objects the test keeps.
  Op reopen(size_t mgr) {
    return {"reopen m" + std::to_string(mgr), [mgr](Lane& L) {
              if (L.ms.size() > 1) L.open(mgr % L.ms.size());
              return std::string("reopened");
            }};
  }

  Op bad_input(size_t mgr) {
    int which = uniform(0, 3);
    if (which == 0)
      return {"commit with a negative amount", [mgr](Lane& L) {
                return guarded([&] { return show(L.m(mgr).commit("r0", Money::from_nanos(-5))); });
              }};
    if (which == 1)
      return {"release of an unknown id", [mgr](Lane& L) {
                return guarded([&] { return show(L.m(mgr).release("never-seen")); });
              }};
    if (which == 2)
      return {"reserve on a malformed scope", [mgr](Lane& L) {
                return guarded([&] { return show(L.m(mgr).reserve(Subject{"user:"}, Money::parse("0.1"))); });
              }};
    return {"reserve with a negative estimate", [mgr](Lane& L) {
              return guarded([&] { return show(L.m(mgr).reserve(subjects()[0], Money::from_nanos(-1))); });
            }};
  }
};

void compare_run(uint32_t seed, int ops, const std::vector<std::string>& kinds) {
  const Setting set = setting_of(seed);
  std::shared_ptr<const Pricer> pricer = PricingEngine::bundled();
  Lane ref("memory", false, set, pricer);
  std::vector<std::unique_ptr<Lane>> others;
  for (const auto& k : kinds) others.push_back(std::make_unique<Lane>(k, k != "memory", set, pricer));
  if (std::find(kinds.begin(), kinds.end(), "redis") != kinds.end())
    others.push_back(std::make_unique<Lane>("redis+sink", true, set, pricer));
  Generator gen(seed);
  const bool trace = env_int("BUDGET_DIFF_TRACE", 0) != 0;
  for (int i = 0; i < ops; ++i) {
    Op op = gen.next(ref);
    std::string want = op.run(ref);
    if (trace) std::printf("%d %s -> %s\n", i, op.what.c_str(), want.c_str());
    for (auto& L : others) {
      std::string got = op.run(*L);
      if (got != want || L->alerts != ref.alerts) {
        std::ostringstream al;
        for (size_t k = 0; k < std::max(L->alerts.size(), ref.alerts.size()); ++k)
          al << "\n  alert " << k << ": memory " << (k < ref.alerts.size() ? ref.alerts[k] : "-") << " | " << L->kind
             << ' ' << (k < L->alerts.size() ? L->alerts[k] : "-");
        FAIL("seed " << seed << " op " << i << ": " << op.what << "\n  memory: " << want << "\n  " << L->kind << ": "
                     << got << al.str());
      }
    }
  }
  // The ledgers: the same events, each verified. When a store settles expired holds is its
  // own (the Redis scripts sweep due holds before every reserve, record, grant and adjust; the
  // engine sweeps before reserves, in batches): what an expiry charged is compared, and its
  // effect on every later result was compared above, but not its place among the events.
  auto canonical = [](const std::vector<LedgerEvent>& ev) {
    std::vector<std::string> out, expired;
    for (const auto& e : ev) (e.type == EventType::Expire ? expired : out).push_back(show(e));
    std::sort(expired.begin(), expired.end());
    out.insert(out.end(), expired.begin(), expired.end());
    return out;
  };
  auto ref_events = canonical(ref.m(0).events());
  for (auto& L : others) {
    auto rep = L->m(1).verify();
    for (const auto& p : rep.problems) MESSAGE(L->kind << ": " << p);
    CHECK_MESSAGE(rep.ok, "seed " << seed << ": " << L->kind << " ledger does not verify");
    auto ev = canonical(L->m(0).events());
    REQUIRE_MESSAGE(ev.size() == ref_events.size(), "seed " << seed << ": " << L->kind << " has " << ev.size()
                                                            << " events, memory " << ref_events.size());
    for (size_t k = 0; k < ev.size(); ++k)
      REQUIRE_MESSAGE(ev[k] == ref_events[k], "seed " << seed << " event " << k << "\n  memory: " << ref_events[k]
                                                      << "\n  " << L->kind << ": " << ev[k]);
  }
  auto rep = ref.m(0).verify();
  CHECK(rep.ok);
}

}  // namespace

TEST_CASE("every store gives the memory store's results for the same random operations") {
  auto kinds = testutil::store_kinds();
  const int seeds = env_int("BUDGET_DIFF_SEEDS", 6);
  const int ops = env_int("BUDGET_DIFF_OPS", 600);
  const uint32_t base = static_cast<uint32_t>(env_int("BUDGET_DIFF_SEED", 1));
  for (int s = 0; s < seeds; ++s) compare_run(base + static_cast<uint32_t>(s), ops, kinds);
}
