// The Redis store: shared by many processes and hosts. Every operation is ONE server-side Lua
// script (src/stores/redis_scripts.hpp, mirroring txn_ops.cpp) and one round trip, atomic over
// every scope and window of the subject. See docs/redis.md for the key layout, the number
// bound, TTLs, the ledger drain and failure behaviour.
#include <budget/error.hpp>

#include <sqlite3.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <climits>
#include <charconv>
#include <cstring>
#include <mutex>
#include <shared_mutex>
#include <unordered_map>
#include <unordered_set>

#include "ledger_codec.hpp"
#include "stores/redis_conn.hpp"
#include "stores/redis_scripts.hpp"
#include "stores/txn.hpp"

namespace budget::detail {
namespace {

using redis::Reply;
using redis::Script;

constexpr int64_t kExact = int64_t{1} << 53;  // amounts in this store stay below 2^53

std::string i2s(int64_t v) { return std::to_string(v); }

void check_exact(int64_t v, const char* what) {
  if (v >= kExact || v <= -kExact)
    throw InvalidArgumentError(std::string(what) + " " + std::to_string(v) +
                               " exceeds the Redis store's exact range (|x| < 2^53 nanos or units)");
}
void check_exact(const Amounts& a, const char* what) {
  check_exact(a.cost, what);
  check_exact(a.tokens, what);
  check_exact(a.requests, what);
}
void check_plan(const Plan& p) {
  for (const auto& w : p.windows) {
    check_exact(w.start, "a window start");
    check_exact(w.read_from, "a window start");
    if (w.end != kForever) check_exact(w.end, "a window end");
  }
  for (const auto& c : p.checks) check_exact(c.limit, "a limit");
}

std::string join(const std::vector<std::string>& v) {
  std::string out;
  for (size_t i = 0; i < v.size(); ++i) {
    if (i) out += '\n';
    out += v[i];
  }
  return out;
}
std::vector<std::string> split(std::string_view s, char sep) {
  std::vector<std::string> out;
  if (s.empty()) return out;
  size_t pos = 0;
  while (true) {
    auto q = s.find(sep, pos);
    out.emplace_back(s.substr(pos, q == std::string_view::npos ? std::string_view::npos : q - pos));
    if (q == std::string_view::npos) break;
    pos = q + 1;
  }
  return out;
}

int64_t to_i64(std::string_view s) {
  int64_t v = 0;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || p != s.data() + s.size())
    throw InternalError("redis store: expected an integer, got '" + std::string(s.substr(0, 40)) + "'");
  return v;
}

std::string str(const redisReply* r) {
  if (!r) return {};
  if (r->type == REDIS_REPLY_STRING || r->type == REDIS_REPLY_STATUS || r->type == REDIS_REPLY_ERROR)
    return std::string(r->str, r->len);
  if (r->type == REDIS_REPLY_INTEGER) return std::to_string(r->integer);
  return {};
}
int64_t num(const redisReply* r) {
  if (!r) throw InternalError("redis store: missing reply element");
  if (r->type == REDIS_REPLY_INTEGER) return r->integer;
  if (r->type == REDIS_REPLY_STRING) return r->len == 0 ? 0 : to_i64(std::string_view(r->str, r->len));
  if (r->type == REDIS_REPLY_NIL) return 0;
  throw InternalError("redis store: expected a number in the reply");
}
const redisReply* elem(const redisReply* r, size_t i) {
  if (!r || r->type != REDIS_REPLY_ARRAY || i >= r->elements) throw InternalError("redis store: malformed reply");
  return r->element[i];
}

// Usage travels through the stream as 10 integers: input cache_read cache_write
// cache_write_1h output reasoning images audio_ms requests complete; an 11th, the service
// tier's code, when it is not standard or when audio tokens follow; a 12th and 13th, the audio
// input and output tokens, when either is not zero. The entries written before a field existed
// (10 or 11 integers) read as before, and a usage without audio is written as they were.
std::string encode_usage(const std::optional<Usage>& u) {
  if (!u) return {};
  std::string out;
  for (int64_t v : {u->input_tokens, u->cache_read_tokens, u->cache_write_tokens, u->cache_write_1h_tokens,
                    u->output_tokens, u->reasoning_tokens, u->images, u->audio_ms, u->requests,
                    int64_t{u->complete ? 1 : 0}}) {
    if (!out.empty()) out += ' ';
    out += std::to_string(v);
  }
  const bool audio = u->audio_input_tokens != 0 || u->audio_output_tokens != 0;
  if (audio || u->service_tier != ServiceTier::Standard) {
    out += ' ';
    out += std::to_string(static_cast<int>(u->service_tier));
  }
  if (audio) {
    out += ' ';
    out += std::to_string(u->audio_input_tokens);
    out += ' ';
    out += std::to_string(u->audio_output_tokens);
  }
  return out;
}
std::optional<Usage> decode_usage(std::string_view s) {
  if (s.empty()) return std::nullopt;
  auto f = split(s, ' ');
  if (f.size() != 10 && f.size() != 11 && f.size() != 13)
    throw InternalError("redis store: corrupted usage in the ledger stream");
  Usage u;
  u.input_tokens = to_i64(f[0]);
  u.cache_read_tokens = to_i64(f[1]);
  u.cache_write_tokens = to_i64(f[2]);
  u.cache_write_1h_tokens = to_i64(f[3]);
  u.output_tokens = to_i64(f[4]);
  u.reasoning_tokens = to_i64(f[5]);
  u.images = to_i64(f[6]);
  u.audio_ms = to_i64(f[7]);
  u.requests = to_i64(f[8]);
  u.complete = f[9] == "1";
  if (f.size() >= 11) {
    // A code this build does not know is an error, as in the ledger's JSON (read as standard,
    // the event's hash would no longer match).
    const int64_t t = to_i64(f[10]);
    if (t < 0 || t > static_cast<int64_t>(ServiceTier::Priority))
      throw InternalError("redis store: unknown service tier code in the ledger stream (a newer libbudget?)");
    u.service_tier = static_cast<ServiceTier>(t);
  }
  if (f.size() == 13) {
    u.audio_input_tokens = to_i64(f[11]);
    u.audio_output_tokens = to_i64(f[12]);
  }
  return u;
}

// One stream entry -> a ledger event (seq from the entry id; no hashes yet).
LedgerEvent event_from_entry(const redisReply* entry) {
  LedgerEvent e;
  std::string id = str(elem(entry, 0));
  e.seq = to_i64(std::string_view(id).substr(0, id.find('-')));
  const redisReply* f = elem(entry, 1);
  for (size_t i = 0; i + 1 < f->elements; i += 2) {
    std::string k = str(f->element[i]);
    const redisReply* v = f->element[i + 1];
    std::string_view val(v->str ? v->str : "", v->str ? v->len : 0);
    if (k.size() != 1) continue;
    switch (k[0]) {
      case 't': e.time = from_millis(to_i64(val)); break;
      case 'y': e.type = parse_event_type(val); break;
      case 'i': e.request_id = std::string(val); break;
      case 's': e.subject = split(val, '\n'); break;
      case 'm': e.model = std::string(val); break;
      case 'p': e.provider = std::string(val); break;
      case 'v': e.price_version = std::string(val); break;
      case 'u': e.usage = decode_usage(val); break;
      case 'a': {
        auto a = split(val, ' ');
        if (a.size() != 9) throw InternalError("redis store: corrupted amounts in the ledger stream");
        e.spent = {to_i64(a[0]), to_i64(a[1]), to_i64(a[2])};
        e.held = {to_i64(a[3]), to_i64(a[4]), to_i64(a[5])};
        e.granted = {to_i64(a[6]), to_i64(a[7]), to_i64(a[8])};
        break;
      }
      case 'w': e.windows = split(val, '\n'); break;
      case 'd': e.metadata = std::string(val); break;
      default: break;
    }
  }
  return e;
}

std::string glob_escape(std::string_view s) {
  std::string out;
  for (char c : s) {
    if (c == '*' || c == '?' || c == '[' || c == ']' || c == '\\') out += '\\';
    out += c;
  }
  return out;
}

// ---- the ledger sink: a SQLite file where the drained stream is hash-chained ----------------
class LedgerSink {
 public:
  LedgerSink(const std::string& path, const std::string& ns, int64_t timeout_ms) : path_(path) {
    int rc = sqlite3_open_v2(path.c_str(), &db_, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
                             nullptr);
    if (rc != SQLITE_OK) {
      std::string msg = db_ ? sqlite3_errmsg(db_) : sqlite3_errstr(rc);
      sqlite3_close(db_);
      db_ = nullptr;
      throw StoreUnavailableError("redis ledger sink: cannot open '" + path + "': " + msg);
    }
    // At least 5 s; SQLite takes an int (the store's timeout may be up to 100 years).
    sqlite3_busy_timeout(db_, static_cast<int>(std::clamp<int64_t>(timeout_ms, 5000, INT_MAX)));
    exec("PRAGMA journal_mode=WAL");
    exec("PRAGMA synchronous=NORMAL");
    exec("CREATE TABLE IF NOT EXISTS sink_meta (key TEXT PRIMARY KEY, value TEXT) WITHOUT ROWID;"
         "CREATE TABLE IF NOT EXISTS ledger (seq INTEGER PRIMARY KEY, time INTEGER NOT NULL, type TEXT NOT NULL,"
         " request_id TEXT NOT NULL, body TEXT NOT NULL, prev_hash TEXT NOT NULL, hash TEXT NOT NULL);");
    exec("BEGIN IMMEDIATE");
    std::string have;
    {
      Stmt s(db_, "SELECT value FROM sink_meta WHERE key='namespace'");
      if (s.step()) have = s.text(0);
    }
    if (have.empty()) {
      Stmt s(db_, "INSERT INTO sink_meta(key, value) VALUES ('namespace', ?)");
      s.bind(1, ns);
      s.step();
    }
    exec("COMMIT");
    if (!have.empty() && have != ns)
      throw InvalidArgumentError("redis ledger sink '" + path + "' belongs to namespace '" + have + "', not '" + ns + "'");
  }
  ~LedgerSink() { sqlite3_close(db_); }
  LedgerSink(const LedgerSink&) = delete;
  LedgerSink& operator=(const LedgerSink&) = delete;

  struct Stmt {
    sqlite3* db;
    sqlite3_stmt* s = nullptr;
    Stmt(sqlite3* d, const char* sql) : db(d) {
      if (sqlite3_prepare_v2(d, sql, -1, &s, nullptr) != SQLITE_OK)
        throw StoreUnavailableError(std::string("redis ledger sink: ") + sqlite3_errmsg(d));
    }
    ~Stmt() { sqlite3_finalize(s); }
    Stmt(const Stmt&) = delete;
    Stmt& operator=(const Stmt&) = delete;
    void bind(int i, int64_t v) { sqlite3_bind_int64(s, i, v); }
    void bind(int i, const std::string& v) { sqlite3_bind_text(s, i, v.data(), static_cast<int>(v.size()), SQLITE_TRANSIENT); }
    bool step() {
      int rc = sqlite3_step(s);
      if (rc == SQLITE_ROW) return true;
      if (rc == SQLITE_DONE) return false;
      throw StoreUnavailableError(std::string("redis ledger sink: ") + sqlite3_errmsg(db));
    }
    int64_t i64(int c) { return sqlite3_column_int64(s, c); }
    std::string text(int c) {
      auto* p = reinterpret_cast<const char*>(sqlite3_column_text(s, c));
      return p ? std::string(p, static_cast<size_t>(sqlite3_column_bytes(s, c))) : std::string();
    }
  };

  void exec(const char* sql) {
    char* err = nullptr;
    if (sqlite3_exec(db_, sql, nullptr, nullptr, &err) != SQLITE_OK) {
      std::string msg = err ? err : "error";
      sqlite3_free(err);
      throw StoreUnavailableError("redis ledger sink '" + path_ + "': " + msg);
    }
  }
  sqlite3* db() { return db_; }

 private:
  std::string path_;
  sqlite3* db_ = nullptr;
};

class RedisStore final : public Store {
 public:
  RedisStore(const std::string& url_text, const StoreOptions& opts)
      : url_(redis::parse_url(url_text)),
        timeout_ms_(url_.timeout_ms > 0 ? url_.timeout_ms : opts.timeout.count()),
        maxlen_(url_.stream_maxlen >= 0 ? url_.stream_maxlen : opts.stream_maxlen),
        pool_(url_, url_.pool_size > 0 ? url_.pool_size : opts.pool_size, std::chrono::milliseconds(timeout_ms_)),
        base_("{" + url_.prefix + "}:"),
        lv_key_(base_ + "lv"),
        reserve_(script("reserve")),
        grow_(script("grow")),
        settle_(script("settle")),
        direct_(script("direct")),
        expire_(script("expire")),
        read_(script("read")),
        buckets_(script("buckets")),
        load_limits_(script("load_limits")),
        load_limits_ro_(script("load_limits_ro")),
        put_limit_(script("put_limit")),
        remove_limit_(script("remove_limit")),
        drained_(script("drained")),
        maxlen_s_(std::to_string(maxlen_)),
        rttl_s_(std::to_string(url_.request_ttl_ms)) {
    if (timeout_ms_ <= 0) throw InvalidArgumentError("redis store: the timeout must be positive");
    if (timeout_ms_ > kMaxStoreTimeoutMs) throw InvalidArgumentError("redis store: the timeout exceeds 100 years");
    display_ = "redis://" + url_.host + ":" + std::to_string(url_.port) + "/" + std::to_string(url_.db) +
               "?prefix=" + url_.prefix;
    if (!url_.ledger.empty()) sink_ = std::make_unique<LedgerSink>(url_.ledger, url_.prefix, timeout_ms_);
  }

  std::string describe() const override { return display_; }
  bool expires_counters() const override { return true; }

  // ---- limits ---------------------------------------------------------------------------
  std::vector<Limit> load_limits(uint64_t* version) override {
    // Read-only (it runs when Redis is out of memory); the writing form when the namespace is
    // new and still has to be marked with its key layout.
    auto r = eval_reply(load_limits_ro_, {});
    if (r->type == REDIS_REPLY_ERROR && std::string_view(r->str, r->len).find("BUDGET_UNMARKED") != std::string_view::npos) {
      // Marked before, unmarked now: the namespace lost its data (see namespace_reset).
      if (marked_seen_.load(std::memory_order_relaxed)) reset_.store(true, std::memory_order_relaxed);
      r = eval(load_limits_, {});
    } else if (r->type == REDIS_REPLY_ERROR) {
      fail(r.get());
    }
    marked_seen_.store(true, std::memory_order_relaxed);
    *version = static_cast<uint64_t>(num(elem(r.get(), 0)));
    std::vector<Limit> out;
    const redisReply* h = elem(r.get(), 1);
    for (size_t i = 0; i + 1 < h->elements; i += 2) {
      try {
        auto j = nlohmann::json::parse(str(h->element[i + 1]));
        Limit l;
        l.scope = j.at("s").get<std::string>();
        l.window = Window::parse(j.at("w").get<std::string>());
        l.metric = parse_metric(j.at("m").get<std::string>());
        l.amount = j.at("a").get<int64_t>();
        l.alert_thresholds_pct = j.at("t").get<std::vector<uint32_t>>();
        out.push_back(std::move(l));
      } catch (const nlohmann::json::exception& e) {
        throw InternalError(std::string("redis store: corrupted limit: ") + e.what());
      }
    }
    std::sort(out.begin(), out.end(), [](const Limit& a, const Limit& b) { return a.key() < b.key(); });
    return out;
  }
  bool namespace_reset() override { return reset_.exchange(false, std::memory_order_relaxed); }
  uint64_t put_limit(const Limit& l) override {
    check_exact(l.amount, "a limit");
    nlohmann::json j{{"s", l.scope}, {"w", l.window.to_string()}, {"m", to_string(l.metric)}, {"a", l.amount},
                     {"t", l.alert_thresholds_pct}};
    auto r = eval(put_limit_, {l.key(), j.dump()});
    return static_cast<uint64_t>(num(r.get()));
  }
  bool remove_limit(const std::string& key, uint64_t* version) override {
    auto r = eval(remove_limit_, {key});
    *version = static_cast<uint64_t>(num(elem(r.get(), 1)));
    return num(elem(r.get(), 0)) == 1;
  }

  // ---- operations -------------------------------------------------------------------------
  ReserveOut reserve(const ReserveOp& op) override {
    check_exact(op.amount, "an amount");
    auto fp = flat_plan(*op.plan);
    auto r = eval(reserve_, {op.request_id, join(op.subject), fp->encoded, fp->id, fp->version, i2s(op.amount.cost),
                             i2s(op.amount.tokens), i2s(op.amount.requests), i2s(op.expires_at), op.model, op.provider,
                             op.metadata, op.fingerprint, op.dry_run ? "1" : "0"},
                  op.now, &fp->args);
    ReserveOut out;
    out.swept = swept_of(r.get());
    std::string tag = str(elem(r.get(), 0));
    if (tag == "C") {  // the engine throws, after reporting what the script's sweep expired
      out.status = ReserveOut::Conflict;
      return out;
    }
    if (tag == "S") {
      out.status = ReserveOut::Stale;
      return out;
    }
    if (tag == "R") {
      out.replayed = true;
      auto state = static_cast<ReqState>(num(elem(r.get(), 1)));
      out.plan = plan_from(str(elem(r.get(), 2)));
      out.held = {num(elem(r.get(), 3)), num(elem(r.get(), 4)), num(elem(r.get(), 5))};
      out.expires_at = num(elem(r.get(), 6));
      if (state == ReqState::Denied) {
        out.status = ReserveOut::Denied;
        out.failing_check = static_cast<int>(num(elem(r.get(), 7)));
        out.failing_state = {num(elem(r.get(), 8)), num(elem(r.get(), 9)), num(elem(r.get(), 10))};
      }
      return out;
    }
    out.plan = op.plan;
    if (tag == "D") {
      out.status = ReserveOut::Denied;
      out.failing_check = static_cast<int>(num(elem(r.get(), 1)));
      out.failing_state = {num(elem(r.get(), 2)), num(elem(r.get(), 3)), num(elem(r.get(), 4))};
      return out;
    }
    if (tag != "A") throw InternalError("redis store: unexpected reserve reply '" + tag + "'");
    if (!op.dry_run) {
      out.held = op.amount;
      out.expires_at = op.expires_at;
    }
    return out;
  }

  GrowOut grow(const GrowOp& op) override {
    check_exact(op.delta, "an amount");
    check_exact(op.consumed, "a consumed amount");
    auto r = eval(grow_, {op.request_id, i2s(op.delta.cost), i2s(op.delta.tokens), i2s(op.delta.requests),
                          i2s(op.consumed.cost), i2s(op.consumed.tokens), i2s(op.consumed.requests)},
                  op.now);
    std::string tag = str(elem(r.get(), 0));
    if (tag == "N") throw NotFoundError("unknown request id '" + op.request_id + "'");
    GrowOut out;
    out.status = static_cast<GrowOut::Status>(num(elem(r.get(), 1)));
    out.state = static_cast<ReqState>(num(elem(r.get(), 2)));
    out.held = {num(elem(r.get(), 3)), num(elem(r.get(), 4)), num(elem(r.get(), 5))};
    out.failing_check = static_cast<int>(num(elem(r.get(), 6)));
    out.failing_state = {num(elem(r.get(), 7)), num(elem(r.get(), 8)), num(elem(r.get(), 9))};
    std::string plan = str(elem(r.get(), 10));
    if (!plan.empty()) out.plan = plan_from(plan);
    return out;
  }

  SettleOut settle(const SettleOp& op) override {
    const bool commit = op.kind == SettleOp::Commit;
    check_exact(op.charge, "an amount");
    auto r = eval(settle_, {op.request_id, commit ? "c" : "r", i2s(op.charge.cost), i2s(op.charge.tokens),
                            i2s(op.charge.requests), encode_usage(op.usage), op.model, op.provider, op.price_version,
                            op.metadata, op.fingerprint},
                  op.now);
    std::string tag = str(elem(r.get(), 0));
    if (tag == "N") throw NotFoundError("unknown request id '" + op.request_id + "'");
    if (tag == "C")
      throw ConflictError("request id '" + op.request_id + "' is already " +
                          to_string(static_cast<ReqState>(num(elem(r.get(), 1)))) + "; cannot " +
                          str(elem(r.get(), 2)));
    SettleOut out;
    out.replayed = num(elem(r.get(), 1)) == 1;
    out.record = record_from(op.request_id, elem(r.get(), 4));
    if (out.replayed) return out;
    const redisReply* d = elem(r.get(), 2);
    out.released = {num(elem(d, 0)), num(elem(d, 1)), num(elem(d, 2))};
    out.before = states_from(elem(r.get(), 3));
    out.after = states_from(elem(r.get(), 5));
    if (out.after.size() != out.record.plan->checks.size() || out.before.size() != out.after.size())
      throw InternalError("redis store: states do not match the plan");
    return out;
  }

  DirectOut direct(const DirectOp& op) override {
    check_exact(op.spent, "an amount");
    check_exact(op.granted, "a grant");
    auto fp = flat_plan(*op.plan);
    static constexpr char kStateOf[] = {'0', '0', '1', '2', '3', '5', '6', '7', '4'};
    auto r = eval(direct_, {op.request_id, to_string(op.type), std::string(1, kStateOf[static_cast<int>(op.type)]),
                            join(op.subject), fp->encoded, fp->version, i2s(op.spent.cost), i2s(op.spent.tokens),
                            i2s(op.spent.requests), i2s(op.granted.cost), i2s(op.granted.tokens),
                            i2s(op.granted.requests), encode_usage(op.usage), op.model, op.provider, op.price_version,
                            op.metadata, op.fingerprint},
                  op.now, &fp->args);
    std::string tag = str(elem(r.get(), 0));
    DirectOut out;
    out.swept = swept_of(r.get());
    if (tag == "C") {  // as in reserve()
      out.conflict = true;
      return out;
    }
    if (tag == "S") {
      out.stale = true;
      return out;
    }
    out.replayed = num(elem(r.get(), 1)) == 1;
    out.record = record_from(op.request_id, elem(r.get(), 3));
    if (out.replayed) return out;
    out.before = states_from(elem(r.get(), 2));
    out.after = out.before;
    const Plan& plan = *op.plan;
    if (out.after.size() != plan.checks.size()) throw InternalError("redis store: states do not match the plan");
    for (size_t i = 0; i < plan.checks.size(); ++i) {
      const auto& c = plan.checks[i];
      out.after[i].spent = checked_add(out.after[i].spent, metric_of(op.spent, c.metric));
      if (c.grantable) out.after[i].granted = checked_add(out.after[i].granted, metric_of(op.granted, c.metric));
    }
    out.record.plan = op.plan;
    return out;
  }

  size_t expire(int64_t now, size_t max) override {
    auto r = eval(expire_, {std::to_string(max)}, now);
    return static_cast<size_t>(num(r.get()));
  }

  int64_t next_deadline() override {
    auto r = call({"ZRANGE", base_ + "dl", "0", "0", "WITHSCORES"});
    if (r->type != REDIS_REPLY_ARRAY || r->elements < 2) return kForever;
    double score = std::strtod(str(r->element[1]).c_str(), nullptr);
    return static_cast<int64_t>(score);
  }

  std::optional<RequestRecord> get_request(const std::string& id) override {
    auto r = call({"HGETALL", base_ + "r:" + id});
    if (r->type != REDIS_REPLY_ARRAY || r->elements == 0) return std::nullopt;
    return record_from(id, r.get());
  }

  std::vector<CheckState> read(const Plan& plan) override {
    auto fp = flat_plan(plan);
    auto r = eval(read_, {}, 0, &fp->args);
    return states_from(r.get());
  }

  // ---- the ledger ---------------------------------------------------------------------------
  void scan_events(const LedgerQuery& q, const std::function<bool(const LedgerEvent&)>& f) override {
    if (sink_) {
      drain();
      scan_sink(q, f);
      return;
    }
    scan_stream(q, f, /*chain=*/true);
  }

  void scan_events_unchained(const LedgerQuery& q, const std::function<bool(const LedgerEvent&)>& f) override {
    if (sink_) {
      scan_events(q, f);
      return;
    }
    scan_stream(q, f, /*chain=*/false);
  }

  void scan_counters(const std::function<void(const StoredCounter&)>& f) override {
    std::string cursor = "0";
    std::unordered_set<std::string> seen;
    const std::string match = glob_escape(base_) + "b:*";
    do {
      auto r = call({"SCAN", cursor, "MATCH", match, "COUNT", "1000"});
      cursor = str(elem(r.get(), 0));
      const redisReply* keys = elem(r.get(), 1);
      std::vector<std::string> batch;
      for (size_t i = 0; i < keys->elements; ++i) {
        std::string k = str(keys->element[i]);
        if (seen.insert(k).second) batch.push_back(std::move(k));
      }
      if (batch.empty()) continue;
      auto vals = eval(buckets_, {}, 0, &batch);
      for (size_t i = 0; i < batch.size(); ++i) {
        const redisReply* h = elem(vals.get(), i);
        if (h->type != REDIS_REPLY_ARRAY || h->elements == 0) continue;  // expired in between
        StoredCounter c;
        c.key = batch[i].substr(base_.size() + 2);
        bool has_end = false;
        int64_t v[9] = {};
        for (size_t j = 0; j + 1 < h->elements; j += 2) {
          std::string field = str(h->element[j]);
          if (field == "e") {
            c.end = num(h->element[j + 1]);
            has_end = true;
          } else if (field.size() == 1 && field[0] >= '1' && field[0] <= '9') {
            v[field[0] - '1'] = num(h->element[j + 1]);
          } else if (field != "n") {  // n: a later bucket of the series exists
            throw InternalError("redis store: corrupted counter " + batch[i]);
          }
        }
        if (!has_end) throw InternalError("redis store: counter without an end " + batch[i]);
        c.counters.spent = {v[0], v[1], v[2]};
        c.counters.held = {v[3], v[4], v[5]};
        c.counters.granted = {v[6], v[7], v[8]};
        f(c);
      }
    } while (cursor != "0");
  }

  int64_t round_trips() const { return pool_.round_trips(); }

 private:
  // The scripts: one Redis function library "budget_<sha1 of the code>" with a function per
  // operation, and the same code as plain scripts for servers without functions.
  // `ro`: registered with the no-writes flag, so Redis runs it when it is out of memory (a
  // writing function is refused there as a whole, OOM): status() and ledger reads keep
  // working while writes fail closed. check() stays a writing function on purpose (its body is
  // reserve's): it is the gate of the check-then-record style, and a store that cannot record
  // the spend afterwards must deny it (fail-closed), not let the call through.
  struct Op {
    const char* name;
    const char* body;
    const char* body2;
    bool ro;
  };
  static constexpr Op kOps[] = {{"reserve", redis_lua::kReserve, "", false},
                                {"grow", redis_lua::kGrow, "", false},
                                {"settle", redis_lua::kSettle, "", false},
                                {"direct", redis_lua::kDirect, "", false},
                                {"expire", redis_lua::kExpire, "", false},
                                {"read", redis_lua::kRead, "", true},
                                {"buckets", redis_lua::kBuckets, "", true},
                                {"load_limits", redis_lua::kLayout, redis_lua::kLoadLimits, false},
                                {"load_limits_ro", redis_lua::kLayoutRead, redis_lua::kLoadLimits, true},
                                {"put_limit", redis_lua::kLayout, redis_lua::kPutLimit, false},
                                {"remove_limit", redis_lua::kLayout, redis_lua::kRemoveLimit, false},
                                {"drained", redis_lua::kDrained, "", false}};
  struct Library {
    std::string name;
    std::shared_ptr<const std::string> text;
  };
  static const Library& library() {
    static const Library lib = [] {
      std::string code = redis_lua::kPrelude;
      for (const auto& op : kOps) code += std::string(op.body) + op.body2;
      Library l;
      l.name = "budget_" + redis::sha1_hex(code).substr(0, 16);
      std::string text = "#!lua name=" + l.name + "\n" + redis_lua::kPrelude;
      for (const auto& op : kOps)
        text += "redis.register_function{function_name='" + l.name + "_" + op.name +
                "', callback=function(keys, args)\ninit(keys, args)\n" + op.body + op.body2 + "\nend" +
                (op.ro ? ", flags={'no-writes'}}\n" : "}\n");
      l.text = std::make_shared<const std::string>(std::move(text));
      return l;
    }();
    return lib;
  }
  // Built once per process (bodies and SHA-1s are constants): hashing them for every store
  // opened cost ~1 ms in a release build, ~20 ms under ASan.
  static const Script& script(std::string_view name) {
    static const std::vector<Script> scripts = [] {
      const auto& lib = library();
      std::vector<Script> v;
      for (const auto& op : kOps) {
        std::string body = std::string("local K0, A0 = KEYS, ARGV\n") + redis_lua::kPrelude + "init(K0, A0)\n" + op.body + op.body2;
        v.emplace_back(std::move(body), lib.name + "_" + op.name, lib.text);
      }
      return v;
    }();
    for (size_t i = 0; i < std::size(kOps); ++i)
      if (name == kOps[i].name) return scripts[i];
    throw InternalError("redis store: no script " + std::string(name));
  }

  Reply call(const std::vector<std::string>& args) {
    auto r = pool_.call(args);
    if (!r) throw StoreUnavailableError("redis: no reply");
    if (r->type == REDIS_REPLY_ERROR) fail(r.get());
    return r;
  }

  // FCALL s 1 {ns}:lv now maxlen request_ttl args... tail... (views: nothing is copied).
  Reply eval(const Script& s, std::initializer_list<std::string_view> args, int64_t now = 0,
             const std::vector<std::string>* tail = nullptr) {
    auto r = eval_reply(s, args, now, tail);
    if (r->type == REDIS_REPLY_ERROR) fail(r.get());
    return r;
  }
  // The same, answering an error reply instead of throwing it.
  Reply eval_reply(const Script& s, std::initializer_list<std::string_view> args, int64_t now = 0,
                   const std::vector<std::string>* tail = nullptr) {
    char nowbuf[24];
    auto nowend = std::to_chars(nowbuf, nowbuf + sizeof nowbuf, now).ptr;
    std::vector<std::string_view> full;
    full.reserve(args.size() + 7 + (tail ? tail->size() : 0));
    full.insert(full.end(), {"FCALL", s.name, "1", lv_key_, std::string_view(nowbuf, static_cast<size_t>(nowend - nowbuf)),
                             maxlen_s_, rttl_s_});
    full.insert(full.end(), args.begin(), args.end());
    if (tail) full.insert(full.end(), tail->begin(), tail->end());
    auto r = pool_.call(full, &s);
    if (!r) throw StoreUnavailableError("redis: no reply");
    return r;
  }

  [[noreturn]] static void fail(const redisReply* r) {
    std::string msg(r->str, r->len);
    auto has = [&](const char* s) { return msg.find(s) != std::string::npos; };
    if (has("BUDGET_OVERFLOW")) throw OverflowError("redis store: " + msg);
    if (has("BUDGET_LAYOUT")) throw InvalidArgumentError("redis store: " + msg);
    if (msg.rfind("LOADING", 0) == 0 || msg.rfind("BUSY", 0) == 0 || msg.rfind("MASTERDOWN", 0) == 0 ||
        msg.rfind("READONLY", 0) == 0 || msg.rfind("OOM", 0) == 0 || msg.rfind("TRYAGAIN", 0) == 0 ||
        msg.rfind("CLUSTERDOWN", 0) == 0 || msg.rfind("NOREPLICAS", 0) == 0 || msg.rfind("MISCONF", 0) == 0 ||
        msg.rfind("NOAUTH", 0) == 0 || msg.rfind("ERR max number of clients reached", 0) == 0)
      throw StoreUnavailableError("redis: " + msg);
    if (msg.rfind("MOVED ", 0) == 0 || msg.rfind("ASK ", 0) == 0)
      throw StoreUnavailableError("redis: " + msg +
                                  ": a Redis Cluster node that does not serve this namespace's hash slot; the store "
                                  "talks to the one node its URL names: point it at the node that serves the slot "
                                  "(CLUSTER KEYSLOT on the key {<prefix>}:lv)");
    throw InternalError("redis: " + msg);
  }

  // A plan as the scripts take it (see redis_scripts.hpp): built once per plan.
  struct FlatPlan {
    std::string encoded;            // the plan's JSON (request records keep it)
    std::string id;                 // SHA-1 of encoded: the plan's key {ns}:p:<id>
    std::string version;            // limits version
    std::vector<std::string> args;  // the flat form
  };
  std::shared_ptr<const FlatPlan> flat_plan(const Plan& p) {
    std::string own;
    const std::string& enc = p.encoded.empty() ? (own = encode_plan(p)) : p.encoded;
    {
      std::shared_lock lk(flat_m_);
      auto it = flat_.find(&p);
      if (it != flat_.end() && it->second->encoded == enc) return it->second;
    }
    check_plan(p);
    auto f = std::make_shared<FlatPlan>();
    f->encoded = enc;
    f->id = redis::sha1_hex(enc);
    f->version = std::to_string(p.limits_version);
    auto& a = f->args;
    a.reserve(3 + p.windows.size() * 6 + p.checks.size() * 2);
    a.push_back(std::to_string(p.windows.size()));
    a.push_back(std::to_string(p.checks.size()));
    a.push_back(join(window_keys(p)));
    for (const auto& w : p.windows) {
      const bool single = w.end == kForever || w.window.rfind("custom:", 0) == 0;
      a.push_back(base_ + "b:" + w.key());
      a.push_back(single ? std::string() : base_ + "x:" + w.series());
      a.push_back(std::to_string(w.start));
      a.push_back(std::to_string(w.end));
      a.push_back(std::to_string(w.read_from));
      a.push_back(w.window.rfind("rolling:", 0) == 0 ? "1" : "0");
    }
    for (const auto& c : p.checks) {
      a.push_back(std::to_string(int64_t{c.window} * 8 + static_cast<int64_t>(c.metric) * 2 + (c.grantable ? 1 : 0)));
      a.push_back(std::to_string(c.limit));
    }
    std::unique_lock lk(flat_m_);
    if (flat_.size() > 4096) flat_.clear();
    flat_[&p] = f;
    return f;
  }

  std::shared_ptr<const Plan> plan_from(const std::string& text) {
    {
      std::lock_guard lk(plans_m_);
      if (auto it = plans_.find(text); it != plans_.end()) return it->second;
    }
    auto p = decode_plan(text);
    std::lock_guard lk(plans_m_);
    if (plans_.size() > 4096) plans_.clear();
    plans_.emplace(text, p);
    return p;
  }

  // The last element of a reserve or direct reply: how many expired holds its sweep settled.
  static size_t swept_of(const redisReply* r) {
    if (!r || r->type != REDIS_REPLY_ARRAY || r->elements == 0) throw InternalError("redis store: malformed reply");
    return static_cast<size_t>(num(r->element[r->elements - 1]));
  }

  static std::vector<CheckState> states_from(const redisReply* r) {
    std::vector<CheckState> out;
    if (!r || r->type != REDIS_REPLY_ARRAY) throw InternalError("redis store: malformed states");
    for (size_t i = 0; i + 3 <= r->elements; i += 3)
      out.push_back({num(r->element[i]), num(r->element[i + 1]), num(r->element[i + 2])});
    return out;
  }

  RequestRecord record_from(const std::string& id, const redisReply* flat) {
    std::unordered_map<std::string, std::string> f;
    for (size_t i = 0; i + 1 < flat->elements; i += 2) f[str(flat->element[i])] = str(flat->element[i + 1]);
    auto n = [&](const char* k) {
      auto it = f.find(k);
      return it == f.end() || it->second.empty() ? int64_t{0} : to_i64(it->second);
    };
    RequestRecord r;
    r.request_id = id;
    r.state = static_cast<ReqState>(n("st"));
    r.subject = split(f["sub"], '\n');
    if (!f["p"].empty()) r.plan = plan_from(f["p"]);
    r.held = {n("h1"), n("h2"), n("h3")};
    r.consumed = {n("u1"), n("u2"), n("u3")};
    r.charged = {n("x1"), n("x2"), n("x3")};
    r.created_at = n("ca");
    r.expires_at = n("ea");
    int64_t fl = n("fl");
    r.over_hold = fl & 1;
    r.over_limit = fl & 2;
    r.after_expiry = fl & 4;
    r.model = f["m"];
    r.provider = f["pr"];
    r.price_version = f["pv"];
    r.fingerprint = f["fp"];
    r.failing_check = static_cast<int>(f["fc"].empty() ? -1 : n("fc"));
    r.failing_state = {n("f1"), n("f2"), n("f3")};
    return r;
  }

  // Copies the stream into the sink (at-least-once; deduplicated by seq), building the chain.
  void drain() {
    std::lock_guard lk(drain_m_);
    auto* db = sink_->db();
    int64_t copied = 0;
    while (true) {
      sink_->exec("BEGIN IMMEDIATE");
      try {
        int64_t last = 0;
        std::string prev(64, '0');
        {
          LedgerSink::Stmt s(db, "SELECT seq, hash FROM ledger ORDER BY seq DESC LIMIT 1");
          if (s.step()) {
            last = s.i64(0);
            prev = s.text(1);
          }
        }
        auto r = call({"XRANGE", base_ + "ledger", "(" + std::to_string(last) + "-0", "+", "COUNT", "1000"});
        size_t got = r->type == REDIS_REPLY_ARRAY ? r->elements : 0;
        LedgerSink::Stmt ins(db, "INSERT INTO ledger(seq, time, type, request_id, body, prev_hash, hash) VALUES (?,?,?,?,?,?,?)");
        for (size_t i = 0; i < got; ++i) {
          auto e = event_from_entry(r->element[i]);
          if (e.seq != last + 1) {
            // Events last+1 .. seq-1 are not in the stream, and never will be (entry ids only
            // grow). The drain trims nothing past `drained`: if no sink copied them, they were
            // never written — a script applied in part, which Redis's own AOF recovery can do
            // (docs/redis.md, "Durability") — and the copy goes on; the sink keeps the jump, so
            // verify() reports it (with the counters the partial script changed).
            const int64_t drained = num(call({"GET", base_ + "drained"}).get());
            if (drained > last)
              throw InternalError("redis ledger: events " + std::to_string(last + 1) + ".." +
                                  std::to_string(e.seq - 1) + " left the stream before this sink copied them (" +
                                  std::to_string(drained) + " were drained: by another sink?)");
          }
          std::string body = event_body(e);
          std::string hash = chain_hash(prev, e.seq, body);
          sqlite3_reset(ins.s);
          ins.bind(1, e.seq);
          ins.bind(2, to_millis(e.time));
          ins.bind(3, std::string(to_string(e.type)));
          ins.bind(4, e.request_id);
          ins.bind(5, body);
          ins.bind(6, prev);
          ins.bind(7, hash);
          ins.step();
          prev = hash;
          last = e.seq;
        }
        sink_->exec("COMMIT");
        copied = last;
        if (got < 1000) break;
      } catch (...) {
        sqlite3_exec(db, "ROLLBACK", nullptr, nullptr, nullptr);
        throw;
      }
    }
    if (copied > 0) eval(drained_, {std::to_string(copied)});
  }

  // No sink: the stream is the ledger, and the chain is computed while reading, from the first
  // event. Without the chain (`chain` false) the read starts after q.after_seq: the engine's
  // alert read-back after every expiring sweep would otherwise hash the whole stream again.
  void scan_stream(const LedgerQuery& q, const std::function<bool(const LedgerEvent&)>& f, bool chain) {
    std::string prev(64, '0');
    std::string start = chain || q.after_seq <= 0 ? "-" : "(" + std::to_string(q.after_seq) + "-0";
    size_t n = 0;
    while (true) {
      auto r = call({"XRANGE", base_ + "ledger", start, "+", "COUNT", "1000"});
      if (r->type != REDIS_REPLY_ARRAY || r->elements == 0) return;
      for (size_t i = 0; i < r->elements; ++i) {
        auto e = event_from_entry(r->element[i]);
        if (chain) {
          e.prev_hash = prev;
          e.hash = chain_hash(prev, e.seq, event_body(e));
          prev = e.hash;
        }
        start = "(" + std::to_string(e.seq) + "-0";
        if (e.seq <= q.after_seq || !matches(q, e)) continue;
        if (++n > q.limit || !f(e)) return;
      }
      if (r->elements < 1000) return;
    }
  }

  void scan_sink(const LedgerQuery& q, const std::function<bool(const LedgerEvent&)>& f) {
    std::vector<LedgerEvent> page;
    int64_t after = q.after_seq;
    size_t n = 0;
    while (true) {
      page.clear();
      {
        std::lock_guard lk(drain_m_);
        LedgerSink::Stmt s(sink_->db(), "SELECT seq, body, prev_hash, hash FROM ledger WHERE seq > ? ORDER BY seq LIMIT 2000");
        s.bind(1, after);
        while (s.step()) {
          auto e = event_from_body(s.text(1));
          e.seq = s.i64(0);
          e.prev_hash = s.text(2);
          e.hash = s.text(3);
          page.push_back(std::move(e));
        }
      }
      for (auto& e : page) {
        after = e.seq;
        if (!matches(q, e)) continue;
        if (++n > q.limit || !f(e)) return;
      }
      if (page.size() < 2000) return;
    }
  }

  redis::Url url_;
  int64_t timeout_ms_;
  int64_t maxlen_;
  redis::Pool pool_;
  std::string base_, lv_key_, display_;
  std::atomic<bool> marked_seen_{false};  // load_limits found the namespace marked (or marked it)
  std::atomic<bool> reset_{false};        // ... and later unmarked: namespace_reset()
  const Script &reserve_, &grow_, &settle_, &direct_, &expire_, &read_, &buckets_, &load_limits_, &load_limits_ro_, &put_limit_,
      &remove_limit_, &drained_;
  std::string maxlen_s_, rttl_s_;
  std::unique_ptr<LedgerSink> sink_;
  std::mutex drain_m_;
  std::mutex plans_m_;
  std::shared_mutex flat_m_;
  std::unordered_map<const Plan*, std::shared_ptr<const FlatPlan>> flat_;
  std::unordered_map<std::string, std::shared_ptr<const Plan>> plans_;
};

}  // namespace

std::unique_ptr<Store> make_redis_store(const std::string& url, const StoreOptions& options) {
  return std::make_unique<RedisStore>(url, options);
}

}  // namespace budget::detail
