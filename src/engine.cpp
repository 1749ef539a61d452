#include "engine.hpp"

#include <budget/error.hpp>

#include <fmt/format.h>

#include <unistd.h>

#include <algorithm>
#include <exception>
#include <map>
#include <ostream>
#include <random>
#include <thread>

#include "fork.hpp"
#include "int128.hpp"
#include "json_text.hpp"
#include "ledger_codec.hpp"
#include "sha256.hpp"
#include "stores/txn.hpp"
#include "utf8.hpp"
#include "windows.hpp"

namespace budget::detail {

namespace {

constexpr int kMaxStaleRetries = 8;

// The longest hold TTL: 100 years. A hold's expiry is now + ttl in int64 milliseconds (and a
// Lua number, a double, in the Redis scripts): an unbounded TTL overflowed that addition.
constexpr int64_t kMaxTtlMs = 100LL * 366 * 24 * 3600 * 1000;

void check_ttl(Duration ttl, const char* what) {
  if (ttl.count() <= 0) throw InvalidArgumentError(std::string(what) + " must be positive");
  if (ttl.count() > kMaxTtlMs) throw InvalidArgumentError(std::string(what) + " exceeds 100 years");
}

std::string metadata_json(const std::map<std::string, std::string>& meta, const std::string& reason) {
  if (meta.empty() && reason.empty()) return {};
  // The reason is recorded as the metadata key "reason": given both ways with two values, one
  // would silently be lost.
  if (!reason.empty()) {
    auto it = meta.find("reason");
    if (it != meta.end() && it->second != reason)
      throw InvalidArgumentError("metadata key \"reason\" differs from the reason option; give the reason once");
  }
  // Written directly (see json_text.hpp): the bytes of nlohmann's ordered dump of the object
  // {entries in key order...} ("reason" comes last unless a key of that name is there). A
  // string that is not well-formed UTF-8 is refused as that dump refuses it.
  std::string out = "{";
  bool utf8 = true;
  auto entry = [&](std::string_view k, std::string_view v) {
    if (out.size() > 1) out += ',';
    utf8 = utf8 && append_json_string(out, k);
    out += ':';
    utf8 = utf8 && append_json_string(out, v);
  };
  for (const auto& [k, v] : meta) entry(k, !reason.empty() && k == "reason" ? reason : v);
  if (!reason.empty() && !meta.count("reason")) entry("reason", reason);
  out += '}';
  if (!utf8) throw InvalidArgumentError("metadata must be valid UTF-8");
  return out;
}

// Text that the ledger records (model, provider, price version) must be valid UTF-8: the JSON
// of the ledger (export, verify, the Redis events) cannot carry anything else, so one bad
// name would make every later export and verify fail.
void check_utf8(std::string_view s, const char* what) {
  if (!valid_utf8(s)) throw InvalidArgumentError(std::string(what) + " is not valid UTF-8");
}
void check_ledger_text(std::string_view model, std::string_view provider, std::string_view price_version) {
  check_utf8(model, "model");
  check_utf8(provider, "provider");
  check_utf8(price_version, "price version");
}

// A ledger query's scope and request id name something that could exist: a malformed one
// would match nothing and look like an empty ledger.
void check_query(const LedgerQuery& q) {
  if (q.scope) Scope::parse(*q.scope);
  if (q.request_id) validate_id(*q.request_id, "request id");
}

std::vector<std::string> scope_strings(const Subject& s) {
  std::vector<std::string> out;
  out.reserve(s.size());
  for (const auto& x : s.scopes()) out.push_back(x.str());
  return out;
}

bool is_rate_window(std::string_view w) {
  return w == "minute" || w == "hour" || w.rfind("rolling:", 0) == 0;
}

// A limit plus its grants, and what remains of it, can exceed int64 (a huge total limit with
// grants on top): reported saturated, never wrapped.
int64_t saturate(int128 v) {
  return v > INT64_MAX ? INT64_MAX : v < INT64_MIN ? INT64_MIN : static_cast<int64_t>(v);
}
int64_t remaining_of(int128 limit, int64_t spent, int64_t held) {
  int128 r = limit - spent - held;
  return r > 0 ? saturate(r) : 0;
}

int64_t ceil_mul_div(int64_t a, int64_t num, int64_t den) {
  int128 p = static_cast<int128>(a) * num;
  int128 q = p / den;
  if (p % den != 0 && p > 0) ++q;
  return q > INT64_MAX ? INT64_MAX : static_cast<int64_t>(q);
}

}  // namespace

namespace {
// A short, deterministic digest of what a call asked (FNV-1a 64, 15 hex digits: fits the
// small-string buffer), so a retry can be told from a conflicting reuse of a request id.
class Fingerprint {
 public:
  Fingerprint() = default;
  explicit Fingerprint(uint64_t state) : h_(state) {}
  uint64_t state() const { return h_; }
  Fingerprint& add(std::string_view s) {
    for (unsigned char c : s) h_ = (h_ ^ c) * 1099511628211ULL;
    h_ = (h_ ^ 0x1f) * 1099511628211ULL;
    return *this;
  }
  Fingerprint& add(int64_t v) {
    for (int i = 0; i < 8; ++i) h_ = (h_ ^ ((static_cast<uint64_t>(v) >> (8 * i)) & 0xff)) * 1099511628211ULL;
    return *this;
  }
  Fingerprint& add(const Subject& s) {
    for (const auto& x : s.scopes()) add(x.str());
    return *this;
  }
  Fingerprint& add(const Usage& u) {
    for (int64_t v : {u.input_tokens, u.cache_read_tokens, u.cache_write_tokens, u.cache_write_1h_tokens,
                      u.output_tokens, u.reasoning_tokens, u.images, u.audio_ms, u.requests})
      add(v);
    add(int64_t{u.complete}).add(static_cast<int64_t>(u.service_tier));
    // Only when present: the fingerprint of a usage without audio tokens is the one that
    // builds before the fields computed, so a retry across an upgrade is not a conflict.
    if (u.audio_input_tokens != 0 || u.audio_output_tokens != 0)
      add("audio").add(u.audio_input_tokens).add(u.audio_output_tokens);
    return *this;
  }
  // What a charge asked: a priced one by its model and usage (a retry after the prices changed
  // is the same call, not a different amount), else the money; and the tokens.
  Fingerprint& add_charge(bool priced, const Charge& c, const Amounts& charged) {
    if (priced) add("priced").add(c.model).add(*c.usage).add(c.tokens);
    else add(charged.cost).add(charged.tokens);
    return *this;
  }
  std::string str() const {
    static const char* hex = "0123456789abcdef";
    std::string out(15, '0');
    uint64_t v = h_;
    for (int i = 14; i >= 0; --i, v >>= 4) out[static_cast<size_t>(i)] = hex[v & 15];
    return out;
  }

 private:
  uint64_t h_ = 14695981039346656037ULL;
};

uint64_t fresh_seed() {
  std::random_device rd;
  uint64_t seed = (static_cast<uint64_t>(rd()) << 32) ^ rd();
  seed ^= mix64(std::hash<std::thread::id>{}(std::this_thread::get_id()));
  seed ^= mix64(static_cast<uint64_t>(std::chrono::steady_clock::now().time_since_epoch().count()));
  return seed ^ mix64(static_cast<uint64_t>(getpid()) << 17);
}
}  // namespace

std::string generate_request_id(int64_t now_ms) {
  // SplitMix64 per thread, seeded from the system's entropy, the thread, the process and the
  // time, and seeded again in a forked child (a generator seeded before a fork would hand the
  // child the parent's sequence: workers forked from one parent would generate the same ids
  // at the same millisecond and collide in the store they share — a Conflict, or a reserve
  // answered as a replay of another's). Ids need uniqueness, not secrecy; a few instructions.
  thread_local uint64_t generation = fork_generation();
  thread_local uint64_t state = fresh_seed();
  if (uint64_t g = fork_generation(); g != generation) {
    generation = g;
    state = fresh_seed();
  }
  auto rng = [] {
    uint64_t z = (state += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
  };
  // 7 digits of the time in ms + 8 random digits, in a 64-letter alphabet whose ASCII order
  // is its numeric order: 15 characters (fits the small-string buffer, so an id is copied
  // without allocating), unique (48 random bits per millisecond), and ordered by time until
  // the year 2109 so stores that index requests insert at the end of their index.
  static constexpr char digits[] = "-0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ_abcdefghijklmnopqrstuvwxyz";
  static_assert(sizeof(digits) == 65);
  std::string id(15, '0');
  auto ms = static_cast<uint64_t>(now_ms);
  for (int i = 6; i >= 0; --i, ms >>= 6) id[static_cast<size_t>(i)] = digits[ms & 63];
  uint64_t v = rng();
  for (int i = 7; i < 15; ++i, v >>= 6) id[static_cast<size_t>(i)] = digits[v & 63];
  return id;
}

size_t Engine::ShardedCounter::shard() {
  static std::atomic<size_t> next{0};
  thread_local size_t mine = [] {
    size_t n = next.fetch_add(1, std::memory_order_relaxed);
    return n < kOwned ? n : kOwned + n % kShared;
  }();
  return mine;
}

namespace {
std::atomic<uint64_t> g_engine_ids{0};
}

Engine::Engine(Options options) : opts_(std::move(options)), engine_id_(++g_engine_ids) {
  clock_ = opts_.clock ? opts_.clock : std::make_shared<SystemClock>();
  if (opts_.utc_offset_minutes < -18 * 60 || opts_.utc_offset_minutes > 18 * 60)
    throw InvalidArgumentError("utc_offset_minutes must be within +/-18h");
  zone_ = Zone::named(opts_.time_zone);
  zone_.offset_minutes = opts_.utc_offset_minutes;
  check_ttl(opts_.default_ttl, "default_ttl");
  // The range reserve() accepts per call: a default outside it made every reserve fail.
  if (opts_.default_buffer_bp < 10000 || opts_.default_buffer_bp > 1'000'000)
    throw InvalidArgumentError("the hold buffer must be within [1.0, 100.0]");
  // Printable ASCII without spaces: the currency is written into denial messages and into the
  // Prometheus text (a newline there would inject lines; other bytes need not be UTF-8).
  if (opts_.currency.empty() || opts_.currency.size() > 16 ||
      !std::all_of(opts_.currency.begin(), opts_.currency.end(), [](char ch) { return ch > 0x20 && ch < 0x7F; }))
    throw InvalidArgumentError("invalid currency (1-16 printable ASCII characters, no spaces)");
  for (const auto& l : opts_.limits) l.validate();
  store_ = open_store(opts_.store, opts_.store_options);
  for (const auto& l : opts_.limits) store_->put_limit(l);
  reload_limits();
}

// ---- limits ------------------------------------------------------------------------------------

void Engine::reload_limits() {
  // The reload that started last wins (not the highest version: a store that lost its data
  // counts versions again from the start). A reload that read older limits than one installed
  // meanwhile only costs one more Stale answer and reload.
  const uint64_t ticket = reload_tickets_.fetch_add(1, std::memory_order_relaxed) + 1;
  uint64_t version = 0;
  auto all = store_->load_limits(&version);
  if (store_->namespace_reset()) {
    // The namespace was created anew (its data, limits included, is gone): this manager applies
    // its configured limits again, as a manager opened now would, and reads them back.
    for (const auto& l : opts_.limits) store_->put_limit(l);
    all = store_->load_limits(&version);
  }
  auto t = std::make_shared<LimitTable>();
  t->version = version;
  for (auto& l : all) t->by_scope[l.scope].push_back(std::move(l));
  std::lock_guard lk(limits_m_);
  if (ticket > installed_ticket_) {
    installed_ticket_ = ticket;
    t->generation = ++table_generation_;
    table_ = std::move(t);
    table_epoch_.fetch_add(1, std::memory_order_release);
  }
}

std::shared_ptr<const LimitTable> Engine::table() { return table_ref(); }

const std::shared_ptr<const LimitTable>& Engine::table_ref() {
  struct Cache {
    uint64_t engine = 0, epoch = 0;
    std::shared_ptr<const LimitTable> table;
  };
  thread_local Cache cache;
  uint64_t epoch = table_epoch_.load(std::memory_order_acquire);
  if (cache.engine == engine_id_ && cache.epoch == epoch) return cache.table;
  std::lock_guard lk(limits_m_);
  cache.engine = engine_id_;
  cache.epoch = table_epoch_.load(std::memory_order_relaxed);
  cache.table = table_;
  return cache.table;
}

void Engine::set_limit(const Limit& limit) {
  limit.validate();
  store_->put_limit(limit);
  reload_limits();
}

bool Engine::remove_limit(std::string_view scope, Metric metric, const Window& window) {
  Limit l;
  l.scope = std::string(scope);
  l.metric = metric;
  l.window = window;
  l.validate();  // a malformed scope or window names no limit: an error, not "nothing removed"
  uint64_t v = 0;
  bool erased = store_->remove_limit(l.key(), &v);
  reload_limits();
  return erased;
}

std::vector<Limit> Engine::limits() {
  reload_limits();
  std::vector<Limit> out;
  for (const auto& [k, v] : table()->by_scope) out.insert(out.end(), v.begin(), v.end());
  std::sort(out.begin(), out.end(), [](const Limit& a, const Limit& b) { return a.key() < b.key(); });
  return out;
}

std::shared_ptr<const Plan> Engine::plan_for(const std::vector<Scope>& scopes, int64_t now, const LimitTable& t,
                                             int64_t* valid_from, int64_t* valid_to) const {
  int64_t from = INT64_MIN, to = INT64_MAX;
  auto plan = std::make_shared<Plan>();
  plan->limits_version = t.version;
  std::string kind_key;
  for (const auto& scope : scopes) {
    const std::vector<Limit>* own = nullptr;
    const std::vector<Limit>* defaults = nullptr;
    if (auto it = t.by_scope.find(scope.str()); it != t.by_scope.end()) own = &it->second;
    if (!scope.is_global()) {
      kind_key.assign(scope.kind());
      kind_key += ":*";
      if (auto it = t.by_scope.find(kind_key); it != t.by_scope.end()) defaults = &it->second;
    }
    auto add = [&](const Limit& l) {
      Bucket b = bucket_for(l.window, now, zone_);
      if (!b.applies) {  // a custom window not yet open, or closed for good
        if (now < b.start) to = std::min(to, b.start);
        else from = std::max(from, b.end);
        return;
      }
      from = std::max(from, b.start);
      to = std::min(to, b.end);
      std::string wtext = l.window.to_string();
      size_t wi = 0;
      for (; wi < plan->windows.size(); ++wi)
        if (plan->windows[wi].scope == scope.str() && plan->windows[wi].window == wtext) break;
      if (wi == plan->windows.size()) {
        plan->windows.push_back(WindowRef{scope.str(), std::move(wtext), b.start, b.end, b.read_from, {}, 0});
        plan->windows.back().seal();
      }
      Check c;
      c.window = static_cast<uint16_t>(wi);
      c.metric = l.metric;
      c.limit = l.amount;
      c.grantable = l.window.kind == Window::Kind::Total;
      c.resets_at = b.resets_at;
      c.limit_key = scope.str() + "|" + to_string(l.metric) + "|" + plan->windows[wi].window;
      c.alerts = l.alert_thresholds_pct;
      plan->checks.push_back(std::move(c));
    };
    if (own)
      for (const auto& l : *own) add(l);
    if (defaults)
      for (const auto& d : *defaults) {
        bool overridden = false;
        if (own)
          for (const auto& l : *own) overridden = overridden || (l.metric == d.metric && l.window == d.window);
        if (!overridden) add(d);
      }
  }
  if (valid_from) *valid_from = from;
  if (valid_to) *valid_to = to;
  plan->encoded = encode_plan(*plan);
  return plan;
}

std::shared_ptr<const Plan> Engine::cached_plan(const Subject& subject, int64_t now, const LimitTable& t,
                                               std::shared_ptr<const Subject>* shared, int64_t* valid_from,
                                               int64_t* valid_to) {
  thread_local std::string key;
  key.clear();
  for (const auto& s : subject.scopes()) {
    key += s.str();
    key += '\x1f';
  }
  auto& stripe = plans_[SvHash{}(key) % kPlanStripes];
  {
    std::lock_guard lk(stripe.m);
    auto it = stripe.map.find(std::string_view(key));
    if (it != stripe.map.end() && it->second.version == t.generation && it->second.valid_from <= now &&
        now < it->second.valid_to) {
      if (shared) *shared = it->second.subject;
      if (valid_from) *valid_from = it->second.valid_from;
      if (valid_to) *valid_to = it->second.valid_to;
      return it->second.plan;
    }
  }
  CachedPlan c;
  c.version = t.generation;
  c.plan = plan_for(subject.scopes(), now, t, &c.valid_from, &c.valid_to);
  c.subject = std::make_shared<const Subject>(subject);
  if (shared) *shared = c.subject;
  if (valid_from) *valid_from = c.valid_from;
  if (valid_to) *valid_to = c.valid_to;
  std::lock_guard lk(stripe.m);
  if (stripe.map.size() >= kPlansPerStripe) stripe.map.clear();  // bounded: many distinct subjects
  auto plan = c.plan;
  stripe.map.insert_or_assign(key, std::move(c));
  return plan;
}

struct Engine::SubjectMemo {
  uint64_t engine = 0;
  Subject subject;
  std::shared_ptr<const Subject> shared;
  ReserveOp op;                     // its subject: scope_strings(subject)
  uint64_t fp_reserve = 0;          // Fingerprint().add("reserve").add(subject)
  uint64_t version = 0;             // of `plan`
  int64_t valid_from = 0, valid_to = 0;
  std::shared_ptr<const Plan> plan;
  bool alerts = false, token_checks = false;  // of `plan` (as HoldState::set_plan finds them)
};

Engine::SubjectMemo& Engine::subject_memo(const Subject& subject) {
  thread_local SubjectMemo m;
  if (m.engine == engine_id_ && m.subject == subject) return m;
  m.engine = 0;  // invalid until complete (copies below may throw)
  m.plan.reset();
  m.op.plan.reset();
  m.subject = subject;
  m.shared = std::make_shared<const Subject>(subject);
  m.op.subject = scope_strings(subject);
  m.fp_reserve = Fingerprint().add("reserve").add(subject).state();
  m.engine = engine_id_;
  return m;
}

const std::shared_ptr<const Plan>& Engine::memo_plan(SubjectMemo& m, int64_t now, const LimitTable& t) {
  if (!m.plan || m.version != t.generation || now < m.valid_from || now >= m.valid_to) {
    m.plan = cached_plan(m.subject, now, t, nullptr, &m.valid_from, &m.valid_to);
    m.version = t.generation;
    m.alerts = m.token_checks = false;
    for (const auto& c : m.plan->checks) {
      m.alerts = m.alerts || !c.alerts.empty();
      m.token_checks = m.token_checks || c.metric == Metric::Tokens;
    }
  }
  return m.plan;
}

template <class F>
auto Engine::with_fresh_limits(F&& f) {
  for (int attempt = 0;; ++attempt) {
    // The thread's cached table, by reference: f runs no user code, so nothing on this thread
    // replaces it while f uses it (another thread's reload replaces only its own cache).
    const auto& t = table_ref();
    auto result = f(*t);
    if (!result.first) return std::move(result.second);
    if (attempt >= kMaxStaleRetries) throw StoreUnavailableError("limits keep changing; gave up after retries");
    reload_limits();
  }
}

// ---- pricing -------------------------------------------------------------------------------------

Engine::Priced Engine::price(const std::string& model, const std::optional<Usage>& usage, Money cost, int64_t tokens,
                             int64_t now, bool brief) {
  Priced p;
  if (tokens < 0) throw InvalidArgumentError("token count is negative");
  if (usage) {
    usage->validate();
    if (!model.empty()) {
      if (!opts_.pricer) throw UnknownModelError("no pricer configured to price model '" + model + "'");
      p.quote = brief ? opts_.pricer->price_brief(model, *usage, from_millis(now))
                      : opts_.pricer->price(model, *usage, from_millis(now));
      p.priced = true;
      cost = p.quote.cost;
    }
    if (tokens == 0) tokens = usage->total_tokens();
  } else if (!model.empty() && cost.is_zero()) {
    throw InvalidArgumentError("model '" + model + "' given without usage to price");
  }
  if (cost.is_negative()) throw InvalidArgumentError("amount is negative: " + cost.to_string());
  p.amounts = {cost.nanos(), tokens, 1};
  return p;
}

// ---- observers ---------------------------------------------------------------------------------

void Engine::on_alert(std::function<void(const Alert&)> cb) {
  // Observers are added, never removed: an empty one would throw bad_function_call from every
  // later crossing, after its operation was applied.
  if (!cb) throw InvalidArgumentError("on_alert: the callback is empty");
  std::lock_guard lk(cb_m_);
  alert_cbs_.push_back(std::move(cb));
  has_alert_cbs_ = true;
}
void Engine::on_denial(std::function<void(const Denial&, const Subject&)> cb) {
  if (!cb) throw InvalidArgumentError("on_denial: the callback is empty");
  std::lock_guard lk(cb_m_);
  denial_cbs_.push_back(std::move(cb));
  has_denial_cbs_ = true;
}

void Engine::notify_denial(const Denial& d, const Subject& s) {
  if (!has_denial_cbs_.load(std::memory_order_relaxed)) return;
  std::vector<std::function<void(const Denial&, const Subject&)>> cbs;
  {
    std::lock_guard lk(cb_m_);
    cbs = denial_cbs_;
  }
  for (auto& cb : cbs) cb(d, s);
}

void Engine::fire_alerts(const Plan& plan, const std::vector<CheckState>& before, const std::vector<CheckState>& after,
                         const std::string& request_id) {
  if (before.size() != plan.checks.size() || after.size() != plan.checks.size()) return;
  std::vector<Alert> out;
  for (size_t i = 0; i < plan.checks.size(); ++i) {
    const auto& c = plan.checks[i];
    if (c.alerts.empty()) continue;
    int64_t cap = saturate(static_cast<int128>(c.limit) + (c.grantable ? after[i].granted : 0));
    for (uint32_t thr : c.alerts) {
      int64_t level = ceil_mul_div(cap, thr, 100);
      if (!(before[i].spent < level && after[i].spent >= level)) continue;
      const auto& w = plan.windows[c.window];
      // Once per window, threshold and cap: spend falling back (a negative adjustment) and
      // rising again does not fire twice, but after a grant raised the cap of a `total` window
      // (a top-up), reaching a threshold of the new cap is a new crossing.
      std::string key = c.limit_key + "|" + std::to_string(w.start) + "|" + std::to_string(thr) + "|" +
                        std::to_string(cap);
      {
        std::lock_guard lk(fired_m_);
        if (!fired_.emplace(std::move(key), w.end).second) continue;
        if (fired_.size() > fired_prune_at_) {
          const int64_t now = now_ms();
          std::erase_if(fired_, [now](const auto& kv) { return kv.second <= now; });
          fired_prune_at_ = std::max<size_t>(1024, 2 * fired_.size());
        }
      }
      Alert a;
      a.scope = w.scope;
      a.window = w.window;
      a.limit_key = c.limit_key;
      a.metric = c.metric;
      a.threshold_pct = thr;
      a.limit = cap;
      a.spent = after[i].spent;
      a.window_start = from_millis(w.start);
      a.request_id = request_id;
      out.push_back(std::move(a));
    }
  }
  if (out.empty()) return;
  m_.alerts += static_cast<int64_t>(out.size());
  if (!has_alert_cbs_.load(std::memory_order_relaxed)) return;
  std::vector<std::function<void(const Alert&)>> cbs;
  {
    std::lock_guard lk(cb_m_);
    cbs = alert_cbs_;
  }
  for (const auto& a : out)
    for (auto& cb : cbs) cb(a);
}

Denial Engine::make_denial(const Plan& plan, int failing, const CheckState& st, const Amounts& need) const {
  Denial d;
  d.reason = DenyReason::LimitExceeded;
  const auto& c = plan.checks[static_cast<size_t>(failing)];
  const auto& w = plan.windows[c.window];
  d.scope = w.scope;
  d.window = w.window;
  d.metric = c.metric;
  const int128 limit = static_cast<int128>(c.limit) + (c.grantable ? st.granted : 0);
  d.limit = saturate(limit);
  d.spent = st.spent;
  d.held = st.held;
  d.remaining = remaining_of(limit, st.spent, st.held);
  d.requested = metric_of(need, c.metric);
  if (c.resets_at) d.resets_at = from_millis(c.resets_at);
  // Spend alone leaves no room: spent + requested > limit (a request of 0 needs spent < limit;
  // a request that fills the limit exactly fits once the holds in its way end).
  d.hard = !is_rate_window(w.window) &&
           (d.requested == 0 ? st.spent >= d.limit : static_cast<int128>(st.spent) + d.requested > d.limit);
  auto unit = [&](int64_t v) {
    return c.metric == Metric::Cost ? Money::from_nanos(v).to_string() + " " + opts_.currency : std::to_string(v);
  };
  // "reached" when nothing is left; otherwise the request is larger than what is left.
  d.message = fmt::format("{} {} limit of {} {} {}: spent {}, held {}, remaining {}, requested {}", w.scope, w.window,
                          unit(d.limit), to_string(c.metric), d.remaining > 0 ? "would be exceeded" : "reached",
                          unit(d.spent), unit(d.held), unit(d.remaining), unit(d.requested));
  return d;
}

// ---- expiry --------------------------------------------------------------------------------------

void Engine::maybe_expire(int64_t now) {
  if (now < next_deadline_.load(std::memory_order_relaxed) &&
      now - last_sweep_.load(std::memory_order_relaxed) < 1000)
    return;
  std::unique_lock lk(sweep_m_, std::try_to_lock);
  if (!lk.owns_lock()) return;
  last_sweep_ = now;
  forget_expired_holds(now);
  size_t total = 0;
  try {
    size_t n;
    while ((n = store_->expire(now, 1000)) > 0) {
      total += n;
      m_.expired += static_cast<int64_t>(n);
      if (n < 1000) break;
    }
    next_deadline_ = store_->next_deadline();
  } catch (const StoreUnavailableError&) {
    ++m_.store_errors;  // the next operation reports it
  }
  lk.unlock();
  if (total > 0) alert_expired(now);
}

void Engine::expired_by_store(size_t n, int64_t now) {
  m_.expired += static_cast<int64_t>(n);
  alert_expired(now);
}

size_t Engine::expire_holds() {
  int64_t now = now_ms();
  std::unique_lock lk(sweep_m_);
  forget_expired_holds(now);
  size_t total = 0, n;
  while ((n = store_->expire(now, 1000)) > 0) {
    total += n;
    if (n < 1000) break;
  }
  m_.expired += static_cast<int64_t>(total);
  last_sweep_ = now;
  next_deadline_ = store_->next_deadline();
  lk.unlock();
  if (total > 0) alert_expired(now);
  return total;
}

// Threshold alerts for spend charged by expiry. A sweep does not report counter states, so
// this reads them back: the sweep's Expire events (stamped `now`) name the windows they
// charged and by how much; each affected plan is read after the sweep (less what later events
// added), and its `before` is that state minus what the sweep added to each window.
// fire_alerts() skips crossings this process reported already. Best effort: a store error
// here loses alerts, never money.
void Engine::alert_expired(int64_t now) {
  try {
    LedgerQuery q;
    // Only events after the last read-back's: a store that filters by scanning (memory) reads
    // what came since, not the whole ledger, once per expiring sweep.
    q.after_seq = expire_scan_seq_.load(std::memory_order_relaxed);
    std::unordered_map<std::string, Amounts> added;  // window key -> spend added by the sweep
    std::unordered_map<std::string, Amounts> later;  // window key -> spend added after it
    std::vector<std::string> ids;
    int64_t last_seq = q.after_seq;
    // The sweep's events are the `expire` events stamped `now`. Whatever came after them (the
    // operation whose script swept first, other threads and processes) is in the counters read
    // below but was not charged by the sweep: it is taken off, so `after` is the state the
    // sweep left and the crossings found are the sweep's own.
    store_->scan_events_unchained(q, [&](const LedgerEvent& e) {
      if (e.type == EventType::Expire && to_millis(e.time) == now) {
        later.clear();  // what came between two expiries is part of the state this one met
        for (const auto& w : e.windows) added[w] += e.spent;
        ids.push_back(e.request_id);
        last_seq = std::max(last_seq, e.seq);
      } else if (!ids.empty()) {
        for (const auto& w : e.windows) later[w] += e.spent;
      }
      return true;
    });
    int64_t known = expire_scan_seq_.load(std::memory_order_relaxed);
    while (last_seq > known && !expire_scan_seq_.compare_exchange_weak(known, last_seq)) {
    }
    std::unordered_set<std::string> seen;  // plans, by their encoding
    for (const auto& id : ids) {
      auto rec = store_->get_request(id);
      if (!rec || !rec->plan) continue;
      const Plan& plan = *rec->plan;
      if (!seen.insert(plan.encoded.empty() ? encode_plan(plan) : plan.encoded).second) continue;
      auto after = store_->read(plan);
      for (size_t i = 0; i < plan.checks.size() && i < after.size(); ++i) {
        const auto& c = plan.checks[i];
        auto it = later.find(plan.windows[c.window].key());
        if (it != later.end()) after[i].spent -= metric_of(it->second, c.metric);
      }
      auto before = after;
      for (size_t i = 0; i < plan.checks.size() && i < before.size(); ++i) {
        const auto& c = plan.checks[i];
        auto it = added.find(plan.windows[c.window].key());
        if (it != added.end()) before[i].spent -= metric_of(it->second, c.metric);
      }
      fire_alerts(plan, before, after, id);
    }
  } catch (const Error&) {  // the store failed while reading back: the sweep itself stands
    ++m_.store_errors;
  }
}

// ---- hold states (in-process streaming) ---------------------------------------------------------

std::shared_ptr<HoldState> HoldTable::find(std::string_view id, size_t h) {
  auto& st = stripe_of(h);
  std::lock_guard lk(st.m);
  if (st.buckets.empty()) return nullptr;
  for (HoldState* x = *bucket(st, h); x; x = x->next_in_table)
    if (x->id_hash == h && x->request_id == id) return x->table_ref;
  return nullptr;
}

std::shared_ptr<HoldState> HoldTable::insert(const std::shared_ptr<HoldState>& hs) {
  const size_t h = hs->id_hash;
  auto& st = stripe_of(h);
  std::lock_guard lk(st.m);
  if (!st.buckets.empty())
    for (HoldState* x = *bucket(st, h); x; x = x->next_in_table)
      if (x->id_hash == h && x->request_id == hs->request_id) return x->table_ref;
  if (st.n + 1 > st.buckets.size()) grow(st);
  HoldState** b = bucket(st, h);
  hs->next_in_table = *b;
  *b = hs.get();
  hs->table_ref = hs;
  ++st.n;
  return hs;
}

void HoldTable::grow(Stripe& st) {
  // The new array first: a failed allocation leaves the table as it was (it was moved out
  // first, and every stream state of the stripe was lost, fail-open ones included).
  std::vector<HoldState*> bigger(st.buckets.empty() ? 16 : st.buckets.size() * 2, nullptr);
  std::vector<HoldState*> old = std::move(st.buckets);
  st.buckets = std::move(bigger);
  for (HoldState* x : old)
    while (x) {
      HoldState* next = x->next_in_table;
      HoldState** b = bucket(st, x->id_hash);
      x->next_in_table = *b;
      *b = x;
      x = next;
    }
}

bool HoldTable::erase(HoldState& hs) {
  std::shared_ptr<HoldState> drop;  // released outside the lock (it may be the last reference)
  auto& st = stripe_of(hs.id_hash);
  std::lock_guard lk(st.m);
  if (!hs.table_ref || st.buckets.empty()) return false;
  for (HoldState** link = bucket(st, hs.id_hash); *link; link = &(*link)->next_in_table)
    if (*link == &hs) {
      *link = hs.next_in_table;
      hs.next_in_table = nullptr;
      drop = std::move(hs.table_ref);
      --st.n;
      return true;
    }
  return false;
}

void HoldTable::erase(std::string_view id, size_t h) {
  std::shared_ptr<HoldState> drop;
  auto& st = stripe_of(h);
  std::lock_guard lk(st.m);
  if (st.buckets.empty()) return;
  for (HoldState** link = bucket(st, h); *link; link = &(*link)->next_in_table) {
    HoldState* x = *link;
    if (x->id_hash == h && x->request_id == id) {
      *link = x->next_in_table;
      x->next_in_table = nullptr;
      drop = std::move(x->table_ref);
      --st.n;
      return;
    }
  }
}

size_t HoldTable::size() {
  size_t n = 0;
  for (auto& st : stripes_) {
    std::lock_guard lk(st.m);
    n += st.n;
  }
  return n;
}

std::shared_ptr<HoldState> Engine::hold_state(std::string_view request_id, bool create) {
  const size_t h = fast_hash(request_id);
  if (auto hs = holds_.find(request_id, h)) return hs;
  if (!create) return nullptr;
  // Not reserved by this process (or restarted): rebuild from the store.
  auto rec = store_->get_request(std::string(request_id));
  if (!rec) throw NotFoundError("unknown request id '" + std::string(request_id) + "'");
  // A record, grant or adjustment never held anything: metering it is a different operation
  // under the same id (as committing it is), not a stream to stop.
  if (rec->state == ReqState::Recorded || rec->state == ReqState::Granted || rec->state == ReqState::Adjusted)
    throw ConflictError("request id '" + rec->request_id + "' is already " + to_string(rec->state) +
                        "; it holds nothing to consume");
  auto hs = std::make_shared<HoldState>();
  hs->request_id = rec->request_id;
  hs->id_hash = h;
  hs->set_plan(rec->plan);
  hs->initial = rec->held;
  hs->held = rec->held;
  hs->consumed = rec->consumed;
  hs->persisted = rec->consumed;
  hs->expires_at = rec->expires_at;
  hs->stopped = rec->state != ReqState::Held;
  // Settled already (or never held): a consume answers Stop and says why, as it does through
  // the Reservation of a hold settled while it streamed (a bare Stop had reason None).
  if (hs->stopped) hs->settled_as = to_string(rec->state);
  try {
    if (!rec->subject.empty()) hs->subject = std::make_shared<const Subject>(rec->subject);
  } catch (const Error&) {
    // only what a denial observer is told; the stream is metered without it
  }
  return holds_.insert(hs);
}

// In-process stream states of holds past their TTL are dead weight: a consume would answer
// Stop, and a later call by request id rebuilds the state from the store. Not so a fail-open
// reservation's: the store never knew it, and its commit, refused while the store is down, is
// retried for as long as the outage lasts, often past the TTL. Forgetting it then turned the
// retried commit by request id (the C API's way) into NotFound and lost the spend. It is kept
// until committed or released, or kFailOpenKeepMs past its TTL (a bound for abandoned ones).
void Engine::forget_expired_holds(int64_t now) {
  holds_.clear_if([&](const HoldState& hs) {
    return hs.fail_open ? hs.expires_at <= now - kFailOpenKeepMs : hs.expires_at <= now;
  });
}

void Engine::forget_hold(const std::string& request_id) { holds_.erase(request_id, fast_hash(request_id)); }

// ---- lifecycle -------------------------------------------------------------------------------------

Decision Engine::reserve(const Subject& subject, const Estimate& est, const RequestOptions& o, bool dry_run) {
  const int64_t now = now_ms();
  std::string request_id = request_id_of(o, now);
  uint32_t bp = o.buffer_bp.value_or(opts_.default_buffer_bp);
  if (bp < 10000 || bp > 1'000'000) throw InvalidArgumentError("buffer must be within [1.0, 100.0]");
  Duration ttl = o.ttl.value_or(opts_.default_ttl);
  check_ttl(ttl, "ttl");
  if (now > INT64_MAX - ttl.count()) throw OverflowError("the clock is too close to the end of int64 for a hold's expiry");
  auto p = price(est.model, est.usage, est.cost, est.tokens, now, /*brief=*/true);
  Amounts need = bp == 10000 ? Amounts{p.amounts.cost, p.amounts.tokens, 1}  // no buffer: as priced
                             : Amounts{Money::from_nanos(p.amounts.cost).mul_bp(bp).nanos(),
                                       ceil_mul_div(p.amounts.tokens, bp, 10000), 1};
  maybe_expire(now);  // may run alert callbacks (user code): before the memo is taken
  std::string meta = metadata_json(o.metadata, o.reason);
  // From here to the store call no user code runs, so this thread's memo stays ours.
  SubjectMemo& memo = subject_memo(subject);
  std::shared_ptr<const Subject> shared_subject = memo.shared;
  const Plan* memo_plan_ref = nullptr;
  bool memo_alerts = false, memo_tokens = false;

  Decision d;
  d.estimate = Money::from_nanos(need.cost);
  ReserveOut out;
  size_t swept = 0;  // expired holds the store's own sweep settled (Redis)
  try {
    // The memo's op keeps its subject (and its strings' capacity) from one reserve to the next.
    ReserveOp& op = memo.op;
    op.request_id = request_id;
    op.amount = need;
    op.now = now;
    op.expires_at = now + ttl.count();
    assign_str(op.model, p.priced ? p.quote.model : est.model);
    assign_str(op.provider, o.provider.empty() ? p.quote.provider : o.provider);
    check_ledger_text(op.model, op.provider, {});
    assign_str(op.metadata, meta);
    // A priced estimate is keyed by what was asked (model and usage), not the price it came to:
    // a retry after the prices changed replays the first decision (as a priced commit does).
    Fingerprint fp(memo.fp_reserve);
    fp.add(est.model);
    if (p.priced) fp.add("priced").add(*est.usage).add(est.tokens);
    else fp.add(p.amounts.cost).add(p.amounts.tokens);
    op.fingerprint = fp.add(int64_t{bp}).str();
    op.dry_run = dry_run;
    out = with_fresh_limits([&](const LimitTable& t) {
      const auto& plan = memo_plan(memo, now, t);
      if (op.plan != plan) op.plan = plan;  // usually the same: no reference count traffic
      auto r = store_->reserve(op);
      swept += r.swept;  // a stale attempt's sweep counts too
      bool stale = r.status == ReserveOut::Stale;
      return std::make_pair(stale, std::move(r));
    });
    memo_plan_ref = memo.plan.get();
    memo_alerts = memo.alerts;
    memo_tokens = memo.token_checks;
  } catch (const StoreUnavailableError& e) {
    ++m_.store_errors;
    if (opts_.fail_open) {
      ++m_.fail_open;
      d.allowed = true;
      d.fail_open = true;
      if (!dry_run) {
        d.reservation.request_id_ = request_id;
        d.reservation.subject_ = std::move(shared_subject);
        d.reservation.held_ = need;
        d.reservation.expires_at_ = from_millis(now + ttl.count());
        d.reservation.model_ = est.model;
        auto hs = std::make_shared<HoldState>();
        hs->request_id = request_id;
        hs->id_hash = fast_hash(request_id);
        hs->initial = hs->held = need;
        hs->fail_open = true;
        hs->subject = d.reservation.subject_;
        hs->expires_at = now + ttl.count();
        // Listed like any stream state, so consume / commit / release by request id (the C API,
        // the bindings' id forms) find it; forgotten after its commit or release, or an hour
        // past its TTL (forget_expired_holds).
        auto listed = holds_.insert(hs);
        d.reservation.state_ = listed == hs ? std::move(hs) : std::move(listed);
      }
      return d;
    }
    d.denial.reason = DenyReason::StoreUnavailable;
    d.denial.message = std::string("store unavailable (fail-closed): ") + e.what();
    notify_denial(d.denial, subject);
    return d;
  }
  if (swept > 0) expired_by_store(swept, now);
  if (out.status == ReserveOut::Conflict) throw conflict_error(request_id);
  if (dry_run) ++m_.checks;
  d.replayed = out.replayed;
  if (out.status == ReserveOut::Denied) {
    ++m_.reserve_denied;
    d.denial = make_denial(*out.plan, out.failing_check, out.failing_state, need);
    if (!out.replayed) notify_denial(d.denial, subject);
    return d;
  }
  d.allowed = true;
  if (dry_run) return d;
  ++m_.reserve_allowed;
  auto& r = d.reservation;
  r.request_id_ = request_id;
  r.subject_ = std::move(shared_subject);
  // A replay answers the first decision: what was held then (the request's fingerprint, which
  // a replay matched, fixes the amount), not the hold as a stream may have grown it since. A
  // priced estimate's fingerprint fixes the model and usage, not the price: its replay answers
  // the hold the store keeps (the first one, unless a stream grew it), not today's price of it.
  r.held_ = out.replayed && !p.priced ? need : out.held;
  r.expires_at_ = from_millis(out.expires_at);
  assign_str(r.model_, p.priced ? p.quote.model : est.model);
  if (out.replayed) {
    auto st = hold_state(request_id, true);
    if (st->fail_open) {
      // The first reserve timed out here (fail-open) but ran on the server; this repeat is
      // its replay. As below: the store's hold is the one to meter, not the fail-open state.
      holds_.erase(*st);
      st = hold_state(request_id, true);
    }
    r.state_ = std::move(st);
  } else {
    auto hs = std::make_shared<HoldState>();
    hs->request_id = std::move(request_id);
    hs->id_hash = fast_hash(hs->request_id);
    if (out.plan.get() == memo_plan_ref) {  // the usual case: flags known from the memo
      hs->plan = std::move(out.plan);
      hs->alerts = memo_alerts;
      hs->token_checks = memo_tokens;
    } else {
      hs->set_plan(std::move(out.plan));
    }
    hs->initial = hs->held = out.held;
    hs->expires_at = out.expires_at;
    hs->subject = r.subject_;  // what a denial observer of its stream is told
    // The sweep in maybe_expire() must not wait for a hold that expires before the deadline
    // it knew of (it refreshes that only when it sweeps): lower it, rarely a write.
    int64_t next = next_deadline_.load(std::memory_order_relaxed);
    while (out.expires_at < next &&
           !next_deadline_.compare_exchange_weak(next, out.expires_at, std::memory_order_relaxed)) {
    }
    auto listed = holds_.insert(hs);  // another thread may have listed a state of this id first
    if (listed != hs && listed->fail_open) {
      // A fail-open state of this id, from a reserve made while the store was down (kept past
      // its TTL for its commit): the store's hold, made now, is the one to meter. Adopting the
      // fail-open state metered this reservation without limits (its consume never stops).
      holds_.erase(*listed);
      listed = holds_.insert(hs);
    }
    r.state_ = listed == hs ? std::move(hs) : std::move(listed);
  }
  return d;
}

ConsumeResult Engine::consume(std::string_view request_id, Money amount, int64_t tokens) {
  // As settle() does: a malformed id (empty included) is the caller's error, not an unknown one.
  validate_id(request_id, "request id");
  Reservation r;
  r.request_id_ = std::string(request_id);
  r.state_ = hold_state(request_id, true);
  return consume(r, amount, tokens);
}

ConsumeResult Engine::consume(Reservation& r, Money amount, int64_t tokens) {
  bool denied = false;
  ConsumeResult res = consume_locked(r, amount, tokens, denied);
  // A stream refused by a limit (or a fail-closed store) is a denial like a refused reserve:
  // observers hear of it once, when it stops, outside the stream state's lock (a callback may
  // call the manager). By request id the subject comes from the stream state.
  if (denied) notify_denial(res.denial, r.subject_ ? *r.subject_ : r.state_->subject ? *r.state_->subject : Subject());
  return res;
}

ConsumeResult Engine::consume_locked(Reservation& r, Money amount, int64_t tokens, bool& denied) {
  if (amount.is_negative()) throw InvalidArgumentError("consumed amount is negative");
  if (tokens < 0) throw InvalidArgumentError("consumed token count is negative");
  if (!r.state_) {
    if (r.request_id_.empty()) throw InvalidArgumentError("empty reservation");
    r.state_ = hold_state(r.request_id_, true);
  }
  auto& hs = *r.state_;
  std::lock_guard lk(hs.m);
  ConsumeResult res;
  auto finish = [&](Verdict v) {
    res.verdict = v;
    res.consumed = Money::from_nanos(hs.consumed.cost);
    res.held = Money::from_nanos(hs.held.cost);
    if (v == Verdict::Stop) {
      if (hs.settled_as) {
        hs.denial = Denial{};
        hs.denial.reason = DenyReason::NotHeld;
        hs.denial.message = std::string("the hold is ") + hs.settled_as + "; the stream must stop";
        hs.settled_as = nullptr;
      }
      res.denial = hs.denial;
    }
    r.held_ = hs.held;
  };
  if (hs.stopped) { finish(Verdict::Stop); return res; }
  Amounts next = hs.consumed;
  next.cost = checked_add(next.cost, amount.nanos());
  next.tokens = checked_add(next.tokens, tokens);
  Amounts deficit{std::max<int64_t>(0, next.cost - hs.held.cost),
                  hs.token_checks ? std::max<int64_t>(0, next.tokens - hs.held.tokens) : 0, 0};
  // A call that throws (the store failed other than unavailable, memory ran out) changes
  // nothing: the store calls below take the consumption back before they rethrow, so the same
  // chunk consumed again counts once.
  const Amounts consumed_before = hs.consumed;
  hs.consumed = next;
  if (hs.fail_open) { finish(Verdict::Continue); return res; }
  const int64_t now = now_ms();
  if (now >= hs.expires_at) {
    // The TTL passed: the hold is (or is about to be) settled by expiry; the stream must stop.
    hs.stopped = true;
    hs.denial = Denial{};
    hs.denial.reason = DenyReason::NotHeld;
    hs.denial.message = "the hold expired; the stream must stop";
    ++m_.stream_stops;
    { finish(Verdict::Stop); return res; }
  }
  if (deficit.is_zero()) {
    if (opts_.persist_every.nanos() > 0 && next.cost - hs.persisted.cost >= opts_.persist_every.nanos()) {
      try {
        auto out = store_->grow(GrowOp{hs.request_id, {}, next, now});
        hs.persisted = next;
        if (out.status == GrowOut::NotHeld) {
          hs.stopped = true;
          hs.denial = Denial{};  // not a denial an earlier growth attempt may have left
          hs.denial.reason = DenyReason::NotHeld;
          hs.denial.message = std::string("the hold is ") + to_string(out.state) + "; the stream must stop";
          ++m_.stream_stops;
          { finish(Verdict::Stop); return res; }
        }
      } catch (const StoreUnavailableError&) {
        ++m_.store_errors;
        if (!opts_.fail_open) {
          hs.stopped = true;
          hs.denial = Denial{};
          hs.denial.reason = DenyReason::StoreUnavailable;
          hs.denial.message = "store unavailable while metering the stream (fail-closed)";
          denied = true;
          { finish(Verdict::Stop); return res; }
        }
      } catch (...) {
        hs.consumed = consumed_before;
        throw;
      }
    }
    { finish(Verdict::Continue); return res; }
  }
  // Grow the hold: a step first; if it does not fit, what is left of the limit that refused
  // (at least the deficit), so a stream close to its limit still grows in few steps.
  Amounts step = deficit;
  if (step.cost > 0) {
    int64_t frac = ceil_mul_div(hs.initial.cost, opts_.growth_step_bp, 10000);
    step.cost = std::max({deficit.cost, frac, opts_.min_growth.nanos()});
  }
  if (step.tokens > 0) step.tokens = std::max(deficit.tokens, ceil_mul_div(hs.initial.tokens, opts_.growth_step_bp, 10000));
  try {
    Amounts delta = step;
    for (int attempt = 0; attempt < 2; ++attempt) {
      if (attempt == 1) {
        Amounts rest = deficit;
        if (hs.denial.metric == Metric::Cost) rest.cost = std::max(deficit.cost, std::min(step.cost, hs.denial.remaining));
        if (hs.denial.metric == Metric::Tokens)
          rest.tokens = std::max(deficit.tokens, std::min(step.tokens, hs.denial.remaining));
        if (rest == delta) break;
        delta = rest;
      }
      auto out = store_->grow(GrowOp{hs.request_id, delta, next, now});
      hs.persisted = next;
      if (out.status == GrowOut::Grown) {
        hs.held = out.held;
        { finish(Verdict::Continue); return res; }
      }
      if (out.status == GrowOut::NotHeld) {
        hs.denial = Denial{};
        hs.denial.reason = DenyReason::NotHeld;
        hs.denial.message = std::string("the hold is ") + to_string(out.state) + "; the stream must stop";
        break;
      }
      hs.denial = make_denial(*out.plan, out.failing_check, out.failing_state, delta);
    }
  } catch (const StoreUnavailableError& e) {
    ++m_.store_errors;
    if (opts_.fail_open) {
      ++m_.fail_open;
      { finish(Verdict::Continue); return res; }
    }
    hs.denial = Denial{};
    hs.denial.reason = DenyReason::StoreUnavailable;
    hs.denial.message = std::string("store unavailable while metering the stream (fail-closed): ") + e.what();
  } catch (...) {
    hs.consumed = consumed_before;
    throw;
  }
  hs.stopped = true;
  ++m_.stream_stops;
  // Refused by a limit or the store; not when the hold was already settled (no budget denial).
  denied = hs.denial.reason == DenyReason::StoreUnavailable || !hs.denial.scope.empty();
  { finish(Verdict::Stop); return res; }
}

Receipt Engine::receipt_from(const SettleOut& out, const Priced* priced) {
  Receipt rc;
  const auto& rec = out.record;
  rc.request_id = rec.request_id;
  rc.charged = Money::from_nanos(rec.charged.cost);
  rc.released = Money::from_nanos(out.released.cost);
  rc.tokens = rec.charged.tokens;
  rc.over_hold = rec.over_hold;
  rc.over_limit = rec.over_limit;
  rc.after_expiry = rec.after_expiry;
  rc.replayed = out.replayed;
  assign_str(rc.model, rec.model);
  assign_str(rc.price_version, rec.price_version);
  if (priced && priced->priced) rc.items = priced->quote.items;
  if (rec.plan && out.after.size() == rec.plan->checks.size()) {
    for (size_t i = 0; i < out.after.size(); ++i) {
      const auto& c = rec.plan->checks[i];
      int128 cap = static_cast<int128>(c.limit) + (c.grantable ? out.after[i].granted : 0);
      if (static_cast<int128>(out.after[i].spent) + out.after[i].held > cap) {
        const auto& s = rec.plan->windows[c.window].scope;
        if (std::find(rc.over_limit_scopes.begin(), rc.over_limit_scopes.end(), s) == rc.over_limit_scopes.end())
          rc.over_limit_scopes.push_back(s);
      }
    }
  }
  return rc;
}

Receipt Engine::settle(const Reservation* r, std::string_view request_id_in, const Charge* actual) {
  const int64_t now = now_ms();
  std::string owned_id;
  if (!r) owned_id = std::string(request_id_in);
  const std::string& request_id = r ? r->request_id_ : owned_id;
  if (request_id.empty()) throw InvalidArgumentError("empty request id");
  // A reservation with a stream state was made by this engine: its id was validated then.
  if (!(r && r->state_)) validate_id(request_id, "request id");
  // Borrowed from the reservation when it has one (no reference count traffic), else looked up.
  std::shared_ptr<HoldState> found;
  if (!(r && r->state_)) found = hold_state(request_id, false);
  HoldState* hs = r && r->state_ ? r->state_.get() : found.get();
  SettleOp op;
  op.kind = actual ? SettleOp::Commit : SettleOp::Release;
  op.request_id = request_id;
  op.now = now;
  if (hs) {
    op.plan_hint = hs->plan;
    op.want_states = !hs->plan || hs->alerts;
  }
  Priced p;
  if (actual) {
    p = price(actual->model, actual->usage, actual->cost, actual->tokens, now);
    op.charge = p.amounts;
    op.usage = actual->usage;
    assign_str(op.model, p.priced ? p.quote.model : actual->model);
    assign_str(op.provider, actual->provider.empty() ? p.quote.provider : actual->provider);
    assign_str(op.price_version, p.quote.price_version);
    check_ledger_text(op.model, op.provider, op.price_version);
    op.fingerprint = Fingerprint().add("commit").add_charge(p.priced, *actual, op.charge).str();
  }
  // A stream still metering this hold through its Reservation must stop once it is settled
  // (by request id, a consume rebuilds the state from the store and stops too).
  auto stop_stream = [&](const char* settled) {
    if (!hs) return;
    std::lock_guard lk(hs->m);
    if (hs->stopped) return;
    hs->stopped = true;
    hs->settled_as = settled;
  };
  if (hs && hs->fail_open) {
    // Allowed while the store was down: nothing was held that this process knows of. But the
    // reserve may have run after all (it timed out here and the server ran it later): then the
    // store knows the id, and its request is settled like any other (below).
    if (actual) {
      // A commit is a direct record. It carries the commit's fingerprint, so repeating the
      // commit (by reservation or by id) replays it; the state is forgotten only once the
      // record is written, so a commit that the store refused meanwhile can be retried.
      RequestOptions o;
      o.request_id = request_id;
      o.metadata["fail_open"] = "true";
      const Subject& subject = r ? r->subject() : hs->subject ? *hs->subject : Subject();
      auto record_spend = [&] {
        Receipt rc = record_as(subject, *actual, o, op.fingerprint);
        stop_stream("committed");
        forget_hold(*hs);
        return rc;
      };
      try {
        return record_spend();
      } catch (const ConflictError&) {
        // The store knows the id as another operation: the reserve, which ran after all. Held
        // (or expired since): that hold is committed, below. Denied: the denial never reached
        // this process, which went ahead, so the spend is recorded under an id derived from
        // this one (the same on a repeat: a replay), naming it in the metadata.
        auto known = store_->get_request(request_id);
        if (known && known->state == ReqState::Denied) {
          o.request_id = fail_open_record_id(request_id);
          o.metadata["denied_request_id"] = request_id;
          return record_spend();
        }
      }
    } else {
      // A release gives back nothing this process holds. The store's hold, if the reserve ran
      // after all, is released too when the store answers; else it expires. A reserve the
      // store denied (or an id settled otherwise) holds nothing to give back either.
      try {
        store_->settle(op);
      } catch (const NotFoundError&) {
      } catch (const ConflictError&) {
      } catch (const StoreUnavailableError&) {
        ++m_.store_errors;
      }
      stop_stream("released");
      forget_hold(*hs);
      Receipt rc;
      rc.request_id = request_id;
      return rc;
    }
  }
  SettleOut out = [&] {  // constructed in place
    try {
      return store_->settle(op);
    } catch (const StoreUnavailableError&) {
      ++m_.store_errors;
      throw;
    }
  }();
  stop_stream(to_string(out.record.state));
  if (hs) forget_hold(*hs);
  else forget_hold(request_id);
  if (!out.replayed) {
    if (actual) {
      ++m_.commits;
      m_.spend_nanos += out.record.charged.cost;
      m_.tokens += out.record.charged.tokens;
    } else {
      ++m_.releases;
    }
    if (out.record.plan) fire_alerts(*out.record.plan, out.before, out.after, request_id);
  }
  return receipt_from(out, &p);
}

std::string Engine::fail_open_record_id(const std::string& request_id) {
  static constexpr std::string_view kSuffix = "/fail-open";
  if (request_id.size() + kSuffix.size() <= 256) return request_id + std::string(kSuffix);
  // Too long for the suffix: a prefix and the SHA-256 of the whole id (the same on a repeat, in
  // any process).
  return request_id.substr(0, 200) + "/" + sha256_hex(request_id).substr(0, 32) + std::string(kSuffix);
}

std::string Engine::request_id_of(const RequestOptions& o, int64_t now) {
  if (o.request_id.empty()) return generate_request_id(now);  // valid by construction
  validate_id(o.request_id, "request id");
  return o.request_id;
}

DirectOut Engine::run_direct(DirectOp op, const Subject* subject) {
  maybe_expire(op.now);  // as a reserve does: holds past their TTL are settled first
  size_t swept = 0;
  auto out = with_fresh_limits([&](const LimitTable& t) {
    if (subject) {
      op.plan = cached_plan(*subject, op.now, t);
    } else {  // a grant: the `total` window of one scope
      auto plan = std::make_shared<Plan>();
      plan->limits_version = t.version;
      plan->windows.push_back(WindowRef{op.subject.at(0), "total", 0, kForever, 0, {}, 0});
      plan->windows.back().seal();
      plan->encoded = encode_plan(*plan);
      op.plan = plan;
    }
    auto r = store_->direct(op);
    swept += r.swept;
    bool stale = r.stale;
    return std::make_pair(stale, std::move(r));
  });
  if (swept > 0) expired_by_store(swept, op.now);
  if (out.conflict) throw conflict_error(op.request_id);
  if (!out.replayed) fire_alerts(*out.record.plan, out.before, out.after, op.request_id);
  return out;
}

Receipt Engine::record(const Subject& subject, const Charge& actual, const RequestOptions& o) {
  return record_as(subject, actual, o, {});
}

Receipt Engine::record_as(const Subject& subject, const Charge& actual, const RequestOptions& o,
                          std::string fingerprint) {
  DirectOp op;
  op.type = EventType::Record;
  op.now = now_ms();
  op.request_id = request_id_of(o, op.now);
  auto p = price(actual.model, actual.usage, actual.cost, actual.tokens, op.now);
  op.subject = scope_strings(subject);
  op.spent = p.amounts;
  op.usage = actual.usage;
  op.model = p.priced ? p.quote.model : actual.model;
  // The charge's provider, else the request options' (as a reserve takes it), else the price's.
  op.provider = !actual.provider.empty() ? actual.provider : !o.provider.empty() ? o.provider : p.quote.provider;
  op.price_version = p.quote.price_version;
  check_ledger_text(op.model, op.provider, op.price_version);
  op.metadata = metadata_json(o.metadata, o.reason);
  op.fingerprint = fingerprint.empty()
                       ? Fingerprint().add("record").add(subject).add_charge(p.priced, actual, p.amounts).str()
                       : std::move(fingerprint);
  auto out = run_direct(std::move(op), &subject);
  if (!out.replayed) {
    ++m_.records;
    m_.spend_nanos += p.amounts.cost;
    m_.tokens += p.amounts.tokens;
  }
  SettleOut so;
  so.record = out.record;
  so.replayed = out.replayed;
  so.after = out.after;
  return receipt_from(so, &p);
}

void Engine::grant(const Scope& scope, Money amount, const RequestOptions& o) {
  if (amount.nanos() <= 0) throw InvalidArgumentError("a grant must be positive (use adjust to correct spend)");
  DirectOp op;
  op.type = EventType::Grant;
  op.now = now_ms();
  op.request_id = request_id_of(o, op.now);
  op.subject = {scope.str()};
  op.granted = {amount.nanos(), 0, 0};
  op.metadata = metadata_json(o.metadata, o.reason);
  op.fingerprint = Fingerprint().add("grant").add(scope.str()).add(amount.nanos()).str();
  run_direct(std::move(op), nullptr);
}

void Engine::adjust(const Subject& subject, Money delta, const RequestOptions& o) {
  if (delta.is_zero()) throw InvalidArgumentError("an adjustment of zero changes nothing");
  DirectOp op;
  op.type = EventType::Adjust;
  op.now = now_ms();
  op.request_id = request_id_of(o, op.now);
  op.subject = scope_strings(subject);
  op.spent = {delta.nanos(), 0, 0};
  op.metadata = metadata_json(o.metadata, o.reason);
  op.fingerprint = Fingerprint().add("adjust").add(subject).add(delta.nanos()).str();
  run_direct(std::move(op), &subject);
}

std::vector<LimitStatus> Engine::status(const Scope& scope) {
  const int64_t now = now_ms();
  maybe_expire(now);
  reload_limits();
  auto t = table();
  auto plan = plan_for({scope}, now, *t);
  auto states = store_->read(*plan);
  std::vector<LimitStatus> out;
  for (size_t i = 0; i < plan->checks.size(); ++i) {
    const auto& c = plan->checks[i];
    const auto& w = plan->windows[c.window];
    LimitStatus s;
    s.key = c.limit_key;
    s.scope = w.scope;
    s.window = w.window;
    s.metric = c.metric;
    s.granted = c.grantable ? states[i].granted : 0;
    const int128 limit = static_cast<int128>(c.limit) + s.granted;
    s.limit = saturate(limit);
    s.spent = states[i].spent;
    s.held = states[i].held;
    s.remaining = remaining_of(limit, s.spent, s.held);
    s.window_start = from_millis(w.start == 0 && w.window == "total" ? 0 : w.read_from);
    if (c.resets_at) s.resets_at = from_millis(c.resets_at);
    out.push_back(std::move(s));
  }
  return out;
}

// ---- ledger ----------------------------------------------------------------------------------------

std::vector<LedgerEvent> Engine::events(const LedgerQuery& q) {
  check_query(q);
  std::vector<LedgerEvent> out;
  store_->scan_events(q, [&](const LedgerEvent& e) {
    out.push_back(e);
    return true;
  });
  return out;
}

void Engine::export_csv(std::ostream& out, const LedgerQuery& q) {
  check_query(q);
  write_csv_header(out);
  store_->scan_events(q, [&](const LedgerEvent& e) {
    write_csv_row(out, e);
    return true;
  });
}

void Engine::export_jsonl(std::ostream& out, const LedgerQuery& q) {
  check_query(q);
  store_->scan_events(q, [&](const LedgerEvent& e) {
    out << e.to_json() << '\n';
    return true;
  });
}

std::vector<AggregateRow> Engine::aggregate(const LedgerQuery& q, GroupBy by) {
  check_query(q);
  std::map<std::tuple<std::string, std::string, std::string>, AggregateRow> rows;
  store_->scan_events(q, [&](const LedgerEvent& e) {
    if (e.spent.is_zero()) return true;
    std::string day;
    if (by.day) day = format_time(e.time).substr(0, 10);
    std::string model = by.model ? e.model : std::string();
    auto add = [&](const std::string& scope) {
      auto& r = rows[{scope, model, day}];
      r.scope = scope;
      r.model = model;
      r.day = day;
      r.spent += Money::from_nanos(e.spent.cost);
      r.tokens = checked_add(r.tokens, e.spent.tokens);
      r.requests = checked_add(r.requests, e.spent.requests);
      ++r.events;
    };
    if (by.scope) {
      for (const auto& s : e.subject)
        if (!q.scope || s == *q.scope) add(s);
    } else {
      add(std::string());
    }
    return true;
  });
  std::vector<AggregateRow> out;
  for (auto& [k, v] : rows) out.push_back(std::move(v));
  return out;
}

VerifyReport Engine::verify() {
  VerifyReport rep;
  std::unordered_map<std::string, detail::Counters> expect;
  std::string prev(64, '0');
  int64_t last_seq = 0;
  store_->scan_events({}, [&](const LedgerEvent& e) {
    ++rep.events;
    if (e.seq != last_seq + 1) {
      rep.chain_ok = false;
      rep.problems.push_back(fmt::format("ledger: sequence jumps from {} to {}", last_seq, e.seq));
    }
    if (e.prev_hash != prev || e.hash != chain_hash(e.prev_hash, e.seq, event_body(e))) {
      if (rep.chain_ok) rep.problems.push_back(fmt::format("ledger: hash chain broken at event {}", e.seq));
      rep.chain_ok = false;
    }
    prev = e.hash;
    last_seq = e.seq;
    for (const auto& w : e.windows) {
      auto& c = expect[w];
      c.spent += e.spent;
      c.held += e.held;
      c.granted += e.granted;
    }
    return true;
  });
  const int64_t now = now_ms();
  store_->scan_counters([&](const StoredCounter& sc) {
    ++rep.windows_checked;
    auto it = expect.find(sc.key);
    detail::Counters want = it == expect.end() ? detail::Counters{} : it->second;
    if (it != expect.end()) expect.erase(it);
    if (want.spent != sc.counters.spent || want.held != sc.counters.held || want.granted != sc.counters.granted)
      rep.problems.push_back(fmt::format(
          "counter {}: stored spent={} held={} granted={}, ledger says spent={} held={} granted={}", sc.key,
          sc.counters.spent.cost, sc.counters.held.cost, sc.counters.granted.cost, want.spent.cost, want.held.cost,
          want.granted.cost));
  });
  for (const auto& [key, c] : expect) {
    if (c.spent.is_zero() && c.held.is_zero() && c.granted.is_zero()) continue;
    if (store_->expires_counters()) {
      std::string scope, window;
      int64_t start = 0;
      if (parse_window_key(key, &scope, &window, &start)) {
        Window w = Window::parse(window);
        Bucket b = bucket_for(w, start, zone_);
        if (w.kind == Window::Kind::Rolling) b.end = start + (b.end - b.start) + w.length.count();
        if (b.end <= now) continue;  // ended and expired by the store: fine
      }
    }
    rep.problems.push_back(fmt::format("counter {} is missing from the store (ledger says spent={} held={})", key,
                                       c.spent.cost, c.held.cost));
  }
  rep.ok = rep.chain_ok && rep.problems.empty();
  return rep;
}

std::string Engine::metrics_text() const {
  std::string out;
  auto counter = [&](const char* name, const char* help, const char* labels, int64_t v) {
    out += fmt::format("# HELP {} {}\n# TYPE {} counter\n{}{} {}\n", name, help, name, name, labels, v);
  };
  counter("budget_reservations_total", "Reservations by result.", "{result=\"allowed\"}", m_.reserve_allowed.load());
  out += fmt::format("budget_reservations_total{{result=\"denied\"}} {}\n", m_.reserve_denied.load());
  counter("budget_checks_total", "Dry-run checks.", "", m_.checks.load());
  counter("budget_commits_total", "Committed reservations.", "", m_.commits.load());
  counter("budget_releases_total", "Released reservations.", "", m_.releases.load());
  counter("budget_records_total", "Direct spend records.", "", m_.records.load());
  counter("budget_expired_holds_total", "Holds settled by expiry.", "", m_.expired.load());
  counter("budget_stream_stops_total", "Streams told to stop.", "", m_.stream_stops.load());
  counter("budget_fail_open_total", "Operations allowed because the store was down (fail-open).", "",
          m_.fail_open.load());
  counter("budget_store_errors_total", "Store errors.", "", m_.store_errors.load());
  counter("budget_alerts_total", "Threshold alerts fired.", "", m_.alerts.load());
  out += fmt::format(
      "# HELP gen_ai_client_cost_nanos_total Money charged, in nanos of {}.\n# TYPE gen_ai_client_cost_nanos_total "
      "counter\ngen_ai_client_cost_nanos_total {}\n",
      opts_.currency, m_.spend_nanos.load());
  out += fmt::format(
      "# HELP gen_ai_client_token_usage_total Tokens charged (input + output).\n# TYPE "
      "gen_ai_client_token_usage_total counter\ngen_ai_client_token_usage_total {}\n",
      m_.tokens.load());
  return out;
}

}  // namespace budget::detail

// ---- BudgetManager: the public face ---------------------------------------------------------------

namespace budget {

BudgetManager::BudgetManager(Options options) : engine_(std::make_unique<detail::Engine>(std::move(options))) {}
BudgetManager::BudgetManager(std::string store_url)
    : BudgetManager([&] {
        Options o;
        o.store = std::move(store_url);
        return o;
      }()) {}
BudgetManager::~BudgetManager() = default;

void BudgetManager::set_limit(const Limit& limit) { engine_->set_limit(limit); }
bool BudgetManager::remove_limit(std::string_view scope, Metric metric, const Window& window) {
  return engine_->remove_limit(scope, metric, window);
}
std::vector<Limit> BudgetManager::limits() { return engine_->limits(); }
Decision BudgetManager::reserve(const Subject& s, const Estimate& e, const RequestOptions& o) {
  return engine_->reserve(s, e, o, false);
}
ConsumeResult BudgetManager::consume(Reservation& r, Money amount, int64_t tokens) {
  return engine_->consume(r, amount, tokens);
}
ConsumeResult BudgetManager::consume(std::string_view id, Money amount, int64_t tokens) {
  return engine_->consume(id, amount, tokens);
}
Receipt BudgetManager::commit(const Reservation& r, const Charge& actual) { return engine_->settle(&r, {}, &actual); }
Receipt BudgetManager::commit(std::string_view id, const Charge& actual) {
  return engine_->settle(nullptr, id, &actual);
}
Receipt BudgetManager::release(const Reservation& r) { return engine_->settle(&r, {}, nullptr); }
Receipt BudgetManager::release(std::string_view id) { return engine_->settle(nullptr, id, nullptr); }
size_t BudgetManager::expire_holds() { return engine_->expire_holds(); }
Decision BudgetManager::check(const Subject& s, const Estimate& e) { return engine_->reserve(s, e, {}, true); }
Receipt BudgetManager::record(const Subject& s, const Charge& actual, const RequestOptions& o) {
  return engine_->record(s, actual, o);
}
void BudgetManager::grant(const Scope& scope, Money amount, const RequestOptions& o) {
  engine_->grant(scope, amount, o);
}
void BudgetManager::adjust(const Subject& s, Money delta, const RequestOptions& o) { engine_->adjust(s, delta, o); }
std::vector<LimitStatus> BudgetManager::status(const Scope& scope) { return engine_->status(scope); }
void BudgetManager::on_alert(std::function<void(const Alert&)> cb) { engine_->on_alert(std::move(cb)); }
void BudgetManager::on_denial(std::function<void(const Denial&, const Subject&)> cb) {
  engine_->on_denial(std::move(cb));
}
std::vector<LedgerEvent> BudgetManager::events(const LedgerQuery& q) { return engine_->events(q); }
void BudgetManager::export_csv(std::ostream& out, const LedgerQuery& q) { engine_->export_csv(out, q); }
void BudgetManager::export_jsonl(std::ostream& out, const LedgerQuery& q) { engine_->export_jsonl(out, q); }
std::vector<AggregateRow> BudgetManager::aggregate(const LedgerQuery& q, GroupBy by) {
  return engine_->aggregate(q, by);
}
VerifyReport BudgetManager::verify() { return engine_->verify(); }
std::string BudgetManager::metrics_text() const { return engine_->metrics_text(); }
const Options& BudgetManager::options() const noexcept { return engine_->options(); }
Timestamp BudgetManager::now() const { return from_millis(engine_->now_ms()); }

}  // namespace budget
