// The Redis store's connection layer (internal): URL parsing, a thread-safe pool of hiredis
// connections with auto-pipelining, timeouts and reconnect with backoff.
#pragma once

#include <hiredis/hiredis.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <exception>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

namespace budget::detail::redis {

struct Url {
  std::string host = "127.0.0.1";
  int port = 6379;
  int db = 0;
  std::string user, password;
  std::string prefix = "budget";   // key namespace, the hash tag: "{budget}:..."
  std::string ledger;              // SQLite ledger sink path ("" = read the stream directly)
  int64_t request_ttl_ms = 7LL * 86'400'000;  // TTL of settled request records
  int pool_size = 0;               // 0 = StoreOptions::pool_size
  int64_t timeout_ms = 0;          // 0 = StoreOptions::timeout
  int64_t stream_maxlen = -1;      // -1 = StoreOptions::stream_maxlen
};
// redis://[user:password@]host[:port][/db][?prefix=..&ledger=..&request_ttl=..&pool=..&timeout=..&maxlen=..]
Url parse_url(const std::string& url);

// SHA-1 (hex) of a script body, as Redis names it for EVALSHA.
std::string sha1_hex(std::string_view data);

struct ReplyDeleter {
  void operator()(redisReply* r) const noexcept {
    if (r) freeReplyObject(r);
  }
};
using Reply = std::unique_ptr<redisReply, ReplyDeleter>;

// A script: a function of a Redis function library (FCALL <name>), and the same code as a plain
// script (body, SHA-1) for servers without functions. Callers send {"FCALL", name, numkeys, ...}.
// "Function not found" (a new server, FUNCTION FLUSH) loads the library (FUNCTION LOAD REPLACE)
// and retries; a server without FCALL (Redis < 7) switches the pool to EVALSHA, where NOSCRIPT
// (restart, SCRIPT FLUSH) is retried as EVAL, which also caches the script again.
struct Script {
  std::string body, sha, name;
  std::shared_ptr<const std::string> library;
  Script(std::string b, std::string fname, std::shared_ptr<const std::string> lib)
      : body(std::move(b)), sha(sha1_hex(body)), name(std::move(fname)), library(std::move(lib)) {}
};

class Pool {
 public:
  Pool(Url url, int size, std::chrono::milliseconds timeout);
  ~Pool();
  Pool(const Pool&) = delete;
  Pool& operator=(const Pool&) = delete;

  // Runs one command (args[0] is the command). With `script`, args are
  // {"FCALL", name, numkeys, ...}. Throws StoreUnavailableError when Redis cannot answer
  // within the timeout; returns error replies as they are.
  Reply call(const std::vector<std::string_view>& args, const Script* script = nullptr);
  Reply call(const std::vector<std::string>& args, const Script* script = nullptr);

  std::string endpoint() const { return url_.host + ":" + std::to_string(url_.port); }
  int64_t round_trips() const noexcept { return round_trips_.load(std::memory_order_relaxed); }

 private:
  struct Call {
    const std::vector<std::string_view>* args = nullptr;
    const Script* script = nullptr;
    redisReply* reply = nullptr;
    std::string error;
    std::exception_ptr exception;  // run() failed unexpectedly (out of memory): rethrown
    bool done = false;
  };
  struct Conn {
    std::mutex m;
    std::condition_variable cv;
    std::vector<Call*> queue;
    bool busy = false;
    redisContext* ctx = nullptr;
    std::chrono::steady_clock::time_point retry_at{};
    int failures = 0;
  };

  Conn& pick();
  void run(Conn& c, std::vector<Call*>& batch);
  bool ensure_connected(Conn& c, std::string* err);
  void drop(Conn& c, const std::string& why);
  redisReply* command(redisContext* ctx, const std::vector<std::string_view>& args);

  Url url_;
  std::chrono::milliseconds timeout_;
  std::vector<std::unique_ptr<Conn>> conns_;
  std::atomic<unsigned> next_{0};
  std::atomic<int64_t> round_trips_{0};
  uint64_t fork_gen_;  // of the process that made the pool: its sockets are that process's
  std::atomic<bool> functions_{true};  // false: the server has no FCALL, scripts go as EVALSHA
};

}  // namespace budget::detail::redis
