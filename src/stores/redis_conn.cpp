#include "stores/redis_conn.hpp"

#include <budget/error.hpp>

#include <poll.h>

#include <algorithm>
#include <array>
#include <charconv>
#include <cstring>
#include <thread>

#include "fork.hpp"

namespace budget::detail::redis {

namespace {

std::string pct_decode(std::string_view s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '%' && i + 2 < s.size()) {
      int v = 0;
      auto [p, ec] = std::from_chars(s.data() + i + 1, s.data() + i + 3, v, 16);
      if (ec == std::errc() && p == s.data() + i + 3) {
        out += static_cast<char>(v);
        i += 2;
        continue;
      }
    }
    out += s[i];
  }
  return out;
}

int64_t parse_int(std::string_view s, std::string_view what, int64_t lo, int64_t hi) {
  int64_t v = 0;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || p != s.data() + s.size() || v < lo || v > hi)
    throw InvalidArgumentError("redis URL: invalid " + std::string(what) + " '" + std::string(s) + "'");
  return v;
}

// "500ms", "2s", "7d", "1h", "30m" or plain milliseconds.
int64_t parse_duration_ms(std::string_view s, std::string_view what) {
  int64_t mult = 1;
  auto ends = [&](std::string_view suf) { return s.size() > suf.size() && s.substr(s.size() - suf.size()) == suf; };
  if (ends("ms")) s.remove_suffix(2);
  else if (ends("s")) mult = 1000, s.remove_suffix(1);
  else if (ends("m")) mult = 60'000, s.remove_suffix(1);
  else if (ends("h")) mult = 3'600'000, s.remove_suffix(1);
  else if (ends("d")) mult = 86'400'000, s.remove_suffix(1);
  return parse_int(s, what, 0, INT64_MAX / 86'400'000) * mult;
}

}  // namespace

Url parse_url(const std::string& text) {
  Url u;
  std::string_view s = text;
  if (s.rfind("rediss://", 0) == 0)
    throw InvalidArgumentError("rediss:// (TLS) is not supported by this build: use redis:// (e.g. through a TLS tunnel)");
  if (s.rfind("redis://", 0) != 0) throw InvalidArgumentError("not a redis:// URL: '" + text + "'");
  s.remove_prefix(8);
  std::string_view query;
  if (auto q = s.find('?'); q != std::string_view::npos) {
    query = s.substr(q + 1);
    s = s.substr(0, q);
  }
  if (auto at = s.rfind('@'); at != std::string_view::npos) {
    auto cred = s.substr(0, at);
    s.remove_prefix(at + 1);
    if (auto c = cred.find(':'); c != std::string_view::npos) {
      u.user = pct_decode(cred.substr(0, c));
      u.password = pct_decode(cred.substr(c + 1));
    } else {
      u.password = pct_decode(cred);
    }
  }
  std::string_view hostport = s;
  if (auto slash = s.find('/'); slash != std::string_view::npos) {
    hostport = s.substr(0, slash);
    auto db = s.substr(slash + 1);
    if (!db.empty()) u.db = static_cast<int>(parse_int(db, "database number", 0, 1'000'000));
  }
  if (!hostport.empty() && hostport.front() == '[') {  // [ipv6]:port
    auto close = hostport.find(']');
    if (close == std::string_view::npos) throw InvalidArgumentError("redis URL: bad IPv6 host");
    u.host = std::string(hostport.substr(1, close - 1));
    hostport.remove_prefix(close + 1);
    if (!hostport.empty() && hostport.front() == ':')
      u.port = static_cast<int>(parse_int(hostport.substr(1), "port", 1, 65535));
  } else if (auto colon = hostport.rfind(':'); colon != std::string_view::npos) {
    u.host = std::string(hostport.substr(0, colon));
    u.port = static_cast<int>(parse_int(hostport.substr(colon + 1), "port", 1, 65535));
  } else if (!hostport.empty()) {
    u.host = std::string(hostport);
  }
  if (u.host.empty()) u.host = "127.0.0.1";
  while (!query.empty()) {
    auto amp = query.find('&');
    auto kv = query.substr(0, amp);
    query = amp == std::string_view::npos ? std::string_view() : query.substr(amp + 1);
    if (kv.empty()) continue;
    auto eq = kv.find('=');
    auto key = kv.substr(0, eq);
    std::string val = eq == std::string_view::npos ? std::string() : pct_decode(kv.substr(eq + 1));
    if (key == "prefix") {
      if (val.empty() || val.size() > 128) throw InvalidArgumentError("redis URL: prefix must be 1..128 bytes");
      for (unsigned char c : val)
        if (c < 0x21 || c == 0x7F || c == '{' || c == '}' || c == '*' || c == '?' || c == '[' || c == ']' || c == '\\')
          throw InvalidArgumentError("redis URL: prefix may not contain spaces, control characters or {}*?[]\\");
      u.prefix = val;
    } else if (key == "ledger") {
      u.ledger = val;
    } else if (key == "request_ttl") {
      u.request_ttl_ms = parse_duration_ms(val, "request_ttl");
    } else if (key == "pool") {
      u.pool_size = static_cast<int>(parse_int(val, "pool", 1, 256));
    } else if (key == "timeout") {
      u.timeout_ms = parse_duration_ms(val, "timeout");
    } else if (key == "maxlen") {
      u.stream_maxlen = parse_int(val, "maxlen", 0, INT64_MAX);
    } else {
      throw InvalidArgumentError("redis URL: unknown parameter '" + std::string(key) +
                                 "' (prefix, ledger, request_ttl, pool, timeout, maxlen)");
    }
  }
  return u;
}

// ---- SHA-1 (FIPS 180-4), only to name scripts ------------------------------------------
std::string sha1_hex(std::string_view data) {
  uint32_t h[5] = {0x67452301, 0xEFCDAB89, 0x98BADCFE, 0x10325476, 0xC3D2E1F0};
  std::string msg(data);
  uint64_t bits = static_cast<uint64_t>(data.size()) * 8;
  msg += static_cast<char>(0x80);
  while (msg.size() % 64 != 56) msg += '\0';
  for (int i = 7; i >= 0; --i) msg += static_cast<char>((bits >> (i * 8)) & 0xFF);
  auto rol = [](uint32_t x, int n) { return (x << n) | (x >> (32 - n)); };
  for (size_t off = 0; off < msg.size(); off += 64) {
    uint32_t w[80];
    for (int i = 0; i < 16; ++i) {
      auto b = [&](int k) { return static_cast<uint32_t>(static_cast<unsigned char>(msg[off + static_cast<size_t>(i * 4 + k)])); };
      w[i] = (b(0) << 24) | (b(1) << 16) | (b(2) << 8) | b(3);
    }
    for (int i = 16; i < 80; ++i) w[i] = rol(w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16], 1);
    uint32_t a = h[0], b = h[1], c = h[2], d = h[3], e = h[4];
    for (int i = 0; i < 80; ++i) {
      uint32_t f, k;
      if (i < 20) f = (b & c) | (~b & d), k = 0x5A827999;
      else if (i < 40) f = b ^ c ^ d, k = 0x6ED9EBA1;
      else if (i < 60) f = (b & c) | (b & d) | (c & d), k = 0x8F1BBCDC;
      else f = b ^ c ^ d, k = 0xCA62C1D6;
      uint32_t t = rol(a, 5) + f + e + k + w[i];
      e = d;
      d = c;
      c = rol(b, 30);
      b = a;
      a = t;
    }
    h[0] += a;
    h[1] += b;
    h[2] += c;
    h[3] += d;
    h[4] += e;
  }
  static const char* hex = "0123456789abcdef";
  std::string out;
  for (uint32_t v : h)
    for (int i = 7; i >= 0; --i) out += hex[(v >> (i * 4)) & 15];
  return out;
}

// ---- the pool ------------------------------------------------------------------------------
Pool::Pool(Url url, int size, std::chrono::milliseconds timeout)
    : url_(std::move(url)), timeout_(timeout), fork_gen_(fork_generation()) {
  size = std::max(1, size);
  for (int i = 0; i < size; ++i) conns_.push_back(std::make_unique<Conn>());
}

Pool::~Pool() {
  for (auto& c : conns_)
    if (c->ctx) redisFree(c->ctx);
}

Pool::Conn& Pool::pick() {
  // Each thread sticks to one connection; threads spread round-robin over the pool.
  thread_local unsigned slot = next_.fetch_add(1, std::memory_order_relaxed);
  return *conns_[slot % conns_.size()];
}

redisReply* Pool::command(redisContext* ctx, const std::vector<std::string_view>& args) {
  std::vector<const char*> argv;
  std::vector<size_t> lens;
  argv.reserve(args.size());
  lens.reserve(args.size());
  for (const auto& a : args) {
    argv.push_back(a.data());
    lens.push_back(a.size());
  }
  round_trips_.fetch_add(1, std::memory_order_relaxed);
  return static_cast<redisReply*>(redisCommandArgv(ctx, static_cast<int>(args.size()), argv.data(), lens.data()));
}

void Pool::drop(Conn& c, const std::string&) {
  if (c.ctx) redisFree(c.ctx);
  c.ctx = nullptr;
  c.retry_at = std::chrono::steady_clock::now();  // the next batch may reconnect at once
}

bool Pool::ensure_connected(Conn& c, std::string* err) {
  if (c.ctx) return true;
  auto now = std::chrono::steady_clock::now();
  if (now < c.retry_at) {
    *err = "redis at " + endpoint() + " is unavailable (reconnecting with backoff)";
    return false;
  }
  timeval tv{};
  tv.tv_sec = static_cast<time_t>(timeout_.count() / 1000);
  tv.tv_usec = static_cast<suseconds_t>((timeout_.count() % 1000) * 1000);
  redisContext* ctx = redisConnectWithTimeout(url_.host.c_str(), url_.port, tv);
  auto fail = [&](const std::string& why) {
    if (ctx) redisFree(ctx);
    ++c.failures;
    auto backoff = std::chrono::milliseconds(std::min<int64_t>(1000, int64_t{25} << std::min(c.failures, 6)));
    c.retry_at = std::chrono::steady_clock::now() + backoff;
    *err = "redis at " + endpoint() + " is unavailable: " + why;
    return false;
  };
  if (!ctx) return fail("cannot allocate a connection");
  if (ctx->err) return fail(ctx->errstr);
  redisSetTimeout(ctx, tv);
  redisEnableKeepAlive(ctx);
  auto setup = [&](const std::vector<std::string_view>& args) -> bool {
    Reply r(command(ctx, args));
    if (!r) return fail(ctx->errstr);
    if (r->type == REDIS_REPLY_ERROR) return fail(std::string(args[0]) + ": " + std::string(r->str, r->len));
    return true;
  };
  if (!url_.password.empty()) {
    if (!url_.user.empty()) {
      if (!setup({"AUTH", url_.user, url_.password})) return false;
    } else if (!setup({"AUTH", url_.password})) {
      return false;
    }
  }
  if (url_.db != 0 && !setup({"SELECT", std::to_string(url_.db)})) return false;
  c.ctx = ctx;
  c.failures = 0;
  return true;
}

namespace {
// True when the peer closed an idle connection (or sent something unasked, which a Redis
// connection without push messages never gets): its socket is readable with nothing in flight.
bool closed_while_idle(const redisContext* ctx) {
  pollfd p{};
  p.fd = ctx->fd;
  p.events = POLLIN;
  return ::poll(&p, 1, 0) > 0 && (p.revents & (POLLIN | POLLHUP | POLLERR)) != 0;
}
}  // namespace

void Pool::run(Conn& c, std::vector<Call*>& batch) {
  std::string err;
  // A connection the server closed while it was idle (a restart, its `timeout`, CLIENT KILL) is
  // replaced before it is used: nothing was sent on it since its last reply, so nothing can be
  // lost, and a call need not fail against a server that is back (one poll() per batch).
  if (c.ctx && closed_while_idle(c.ctx)) drop(c, "closed by the server while idle");
  if (!ensure_connected(c, &err)) {
    for (auto* x : batch) x->error = err;
    return;
  }
  std::vector<const char*> argv;
  std::vector<size_t> lens;
  const bool functions = functions_.load(std::memory_order_relaxed);
  for (auto* x : batch) {
    argv.clear();
    lens.clear();
    for (const auto& a : *x->args) {
      argv.push_back(a.data());
      lens.push_back(a.size());
    }
    if (x->script && !functions) {
      argv[0] = "EVALSHA";
      lens[0] = 7;
      argv[1] = x->script->sha.data();
      lens[1] = x->script->sha.size();
    }
    redisAppendCommandArgv(c.ctx, static_cast<int>(argv.size()), argv.data(), lens.data());
  }
  round_trips_.fetch_add(1, std::memory_order_relaxed);
  for (size_t i = 0; i < batch.size(); ++i) {
    void* r = nullptr;
    if (redisGetReply(c.ctx, &r) != REDIS_OK) {
      std::string why = std::string("redis at ") + endpoint() + " did not answer: " +
                        (c.ctx->err == REDIS_ERR_IO && (errno == EAGAIN || errno == EWOULDBLOCK)
                             ? "timed out after " + std::to_string(timeout_.count()) + " ms"
                             : std::string(c.ctx->errstr));
      drop(c, why);
      for (size_t j = i; j < batch.size(); ++j) batch[j]->error = why;
      return;
    }
    batch[i]->reply = static_cast<redisReply*>(r);
  }
  // Scripts the server does not know: load the library (or send the body with EVAL) and retry.
  auto is_error = [](const redisReply* r, const char* prefix) {
    return r && r->type == REDIS_REPLY_ERROR && std::strncmp(r->str, prefix, std::strlen(prefix)) == 0;
  };
  for (auto* x : batch) {
    if (!x->script) continue;
    const bool no_function = is_error(x->reply, "ERR Function not found");
    // No FCALL here: an older server, a renamed command, or an ACL user without it.
    const bool no_fcall = is_error(x->reply, "ERR unknown command 'FCALL'") ||
                          is_error(x->reply, "ERR unknown command `FCALL`") ||
                          (is_error(x->reply, "NOPERM") && std::strstr(x->reply->str, "fcall") != nullptr);
    const bool no_script = is_error(x->reply, "NOSCRIPT");
    if (!no_function && !no_fcall && !no_script) continue;
    freeReplyObject(x->reply);
    x->reply = nullptr;
    std::vector<std::string_view> args = *x->args;
    bool use_eval = no_fcall || no_script;
    if (no_fcall) functions_.store(false, std::memory_order_relaxed);
    if (no_function) {
      Reply loaded(command(c.ctx, {"FUNCTION", "LOAD", "REPLACE", *x->script->library}));
      if (!loaded) {
        std::string why = std::string("redis at ") + endpoint() + " did not answer: " + c.ctx->errstr;
        drop(c, why);
        x->error = why;
        return;  // later calls of the batch already have their replies
      }
      if (loaded->type == REDIS_REPLY_ERROR) {
        if (!is_error(loaded.get(), "ERR unknown") && !is_error(loaded.get(), "NOPERM")) {
          // LOADING, READONLY, OOM...: the call's answer
          x->reply = loaded.release();
          continue;
        }
        functions_.store(false, std::memory_order_relaxed);  // no functions here: plain scripts
        use_eval = true;
      }
    }
    if (use_eval) {
      args[0] = "EVAL";
      args[1] = x->script->body;
    }
    x->reply = command(c.ctx, args);
    if (!x->reply) {
      std::string why = std::string("redis at ") + endpoint() + " did not answer: " + c.ctx->errstr;
      drop(c, why);
      x->error = why;
      return;  // later calls of the batch already have their replies
    }
  }
}

Reply Pool::call(const std::vector<std::string>& args, const Script* script) {
  std::vector<std::string_view> views(args.begin(), args.end());
  return call(views, script);
}

Reply Pool::call(const std::vector<std::string_view>& args, const Script* script) {
  // A forked child would share the parent's sockets and interleave its commands with them.
  if (fork_generation() != fork_gen_)
    throw InvalidArgumentError("redis: this store (its BudgetManager) was created before fork(); its connections "
                               "cannot be shared across fork(): create the manager in each process");
  Conn& c = pick();
  Call call;
  call.args = &args;
  call.script = script;
  std::unique_lock lk(c.m);
  c.queue.push_back(&call);
  while (!call.done) {
    if (c.busy) {
      c.cv.wait(lk);
      continue;
    }
    // Leader: send everything queued on this connection as one pipeline, read all replies.
    c.busy = true;
    std::vector<Call*> batch;
    batch.swap(c.queue);
    lk.unlock();
    try {
      run(c, batch);
    } catch (...) {
      // Something run() does not expect (an allocation that failed): the pipeline's state is
      // unknown, so the connection goes, and every call of the batch without its reply fails
      // with that exception. Without this, `busy` stayed set and every later call on the
      // connection waited forever.
      drop(c, std::string());  // (an empty string allocates nothing)
      for (auto* x : batch)
        if (!x->reply || !x->error.empty()) x->exception = std::current_exception();
    }
    lk.lock();
    for (auto* x : batch) x->done = true;
    c.busy = false;
    c.cv.notify_all();
  }
  lk.unlock();
  if (call.exception) {
    if (call.reply) freeReplyObject(call.reply);
    std::rethrow_exception(call.exception);
  }
  if (!call.error.empty()) {
    if (call.reply) freeReplyObject(call.reply);
    throw StoreUnavailableError(call.error);
  }
  return Reply(call.reply);
}

}  // namespace budget::detail::redis
