// The WAL-batching VFS shim of the SQLite store (src/stores/sqlite_vfs.cpp), driven through
// plain SQLite connections: what SQLite's own write order guarantees must still hold when
// writes are gathered, seen from connections with and without the shim.
#include <doctest/doctest.h>
#include <sqlite3.h>

#include <sys/resource.h>

#include <csignal>
#include <filesystem>
#include <string>

#include "stores/sqlite_vfs.hpp"

namespace {

struct Db {
  sqlite3* db = nullptr;
  Db(const std::string& path, const char* vfs) {
    REQUIRE(sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, vfs) == SQLITE_OK);
    exec("PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA wal_autocheckpoint=0");
  }
  ~Db() { sqlite3_close(db); }
  void exec(const std::string& sql) {
    char* err = nullptr;
    int rc = sqlite3_exec(db, sql.c_str(), nullptr, nullptr, &err);
    std::string what = sql + ": " + (err ? err : "");
    sqlite3_free(err);
    INFO(what);
    REQUIRE(rc == SQLITE_OK);
  }
  long long scalar(const std::string& sql) {
    sqlite3_stmt* st = nullptr;
    REQUIRE(sqlite3_prepare_v2(db, sql.c_str(), -1, &st, nullptr) == SQLITE_OK);
    REQUIRE(sqlite3_step(st) == SQLITE_ROW);
    long long v = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return v;
  }
  std::string text(const std::string& sql) {
    sqlite3_stmt* st = nullptr;
    REQUIRE(sqlite3_prepare_v2(db, sql.c_str(), -1, &st, nullptr) == SQLITE_OK);
    REQUIRE(sqlite3_step(st) == SQLITE_ROW);
    std::string v = reinterpret_cast<const char*>(sqlite3_column_text(st, 0));
    sqlite3_finalize(st);
    return v;
  }
};

std::string fresh(const char* name) {
  auto p = std::filesystem::temp_directory_path() / (std::string("budget-vfs-") + name + ".db");
  for (auto ext : {"", "-wal", "-shm"}) std::filesystem::remove(p.string() + ext);
  return p.string();
}

void insert_rows(Db& d, int from, int n) {
  d.exec("WITH RECURSIVE s(i) AS (SELECT " + std::to_string(from) + " UNION ALL SELECT i + 1 FROM s WHERE i < " +
         std::to_string(from + n - 1) + ") INSERT INTO t(k, v) SELECT i, randomblob(300) FROM s");
}

// This process's files may not grow past `bytes` (SIGXFSZ ignored: a write past it fails with
// EFBIG, as on a full disk) until lift(), or the end of the scope.
struct FileSizeLimit {
  rlimit old{};
  void (*old_handler)(int) = SIG_DFL;
  bool lifted = false;
  explicit FileSizeLimit(uintmax_t bytes) {
    old_handler = std::signal(SIGXFSZ, SIG_IGN);
    REQUIRE(getrlimit(RLIMIT_FSIZE, &old) == 0);
    rlimit low = old;
    low.rlim_cur = static_cast<rlim_t>(bytes);
    REQUIRE(setrlimit(RLIMIT_FSIZE, &low) == 0);
  }
  FileSizeLimit(const FileSizeLimit&) = delete;
  FileSizeLimit& operator=(const FileSizeLimit&) = delete;
  ~FileSizeLimit() { lift(); }
  void lift() {
    if (lifted) return;
    lifted = true;
    CHECK(setrlimit(RLIMIT_FSIZE, &old) == 0);
    std::signal(SIGXFSZ, old_handler);
  }
};

// After `a` abandoned a transaction: `b` commits n rows (300-byte values) where its frames
// were; `a` then reads exactly those (anything it still held back would be written by these
// reads and its next commit) and commits one more row; a plain connection finds the file
// sound, before and after a checkpoint.
void commit_over_abandoned(Db& a, Db& b, const std::string& path, int n) {
  b.exec("BEGIN IMMEDIATE");
  insert_rows(b, 10'000, n);
  b.exec("COMMIT");
  CHECK(a.scalar("SELECT count(*) FROM t") == n);
  a.exec("BEGIN IMMEDIATE; INSERT INTO t(k, v) VALUES (1, x'00'); COMMIT");
  Db plain(path, nullptr);
  CHECK(plain.scalar("SELECT count(*) FROM t") == n + 1);
  CHECK(plain.scalar("SELECT sum(length(v)) FROM t") == n * 300LL + 1);
  CHECK(plain.text("PRAGMA integrity_check") == "ok");
  plain.exec("PRAGMA wal_checkpoint(TRUNCATE)");
  CHECK(plain.text("PRAGMA integrity_check") == "ok");
  CHECK(plain.scalar("SELECT count(*) FROM t") == n + 1);
}

}  // namespace

TEST_CASE("the shim is registered and used by name") {
  const char* name = budget::detail::sqlite_batching_vfs();
  REQUIRE(name != nullptr);
  CHECK(sqlite3_vfs_find(name) != nullptr);
  CHECK(budget::detail::sqlite_batching_vfs() == name);  // registered once
}

TEST_CASE("commits through the shim are seen at once by a plain connection, and the file is sound") {
  auto path = fresh("commits");
  Db w(path, budget::detail::sqlite_batching_vfs());
  Db r(path, nullptr);
  w.exec("CREATE TABLE t(k INTEGER PRIMARY KEY, v BLOB)");
  for (int i = 0; i < 200; ++i) {
    w.exec("BEGIN IMMEDIATE; INSERT INTO t(k, v) VALUES (" + std::to_string(i) + ", randomblob(700)); COMMIT");
    REQUIRE(r.scalar("SELECT count(*) FROM t") == i + 1);
  }
  // A multi-page commit (many frames gathered) and a checkpoint that reads them back.
  w.exec("BEGIN IMMEDIATE");
  insert_rows(w, 1000, 500);
  w.exec("COMMIT");
  CHECK(r.scalar("SELECT count(*) FROM t") == 700);
  w.exec("PRAGMA wal_checkpoint(TRUNCATE)");
  CHECK(r.text("PRAGMA integrity_check") == "ok");
  CHECK(w.text("PRAGMA integrity_check") == "ok");
}

TEST_CASE("frames spilled by a rolled-back transaction never land on another writer's commit") {
  // A transaction larger than its cache spills frames to the WAL before it commits. When it
  // rolls back, the next writer reuses those WAL offsets. The spilled frames must reach the
  // file before the write lock is released (as SQLite's own writes would), not later over the
  // other writer's committed frames.
  auto path = fresh("spill");
  Db a(path, budget::detail::sqlite_batching_vfs());
  Db b(path, budget::detail::sqlite_batching_vfs());
  a.exec("CREATE TABLE t(k INTEGER PRIMARY KEY, v BLOB)");
  // An empty WAL: the rollback then finds every page it reloads in the database file, and
  // reads nothing from the WAL (a read would write the held-back frames at once).
  a.exec("PRAGMA wal_checkpoint(TRUNCATE)");
  a.exec("PRAGMA cache_size=10");  // pages: forces spills
  a.exec("BEGIN IMMEDIATE");
  insert_rows(a, 0, 400);
  a.exec("ROLLBACK");
  // More frames than `a` spilled: they cover its offsets.
  commit_over_abandoned(a, b, path, 1000);
}

TEST_CASE("a WAL write that fails fails its commit, the next commit succeeds and the file is sound") {
  // The file-size limit makes the gathered write of a big commit fail (EFBIG; SIGXFSZ is
  // ignored). The error must reach that COMMIT, not a later call, and nothing may be lost.
  auto path = fresh("fail");
  Db w(path, budget::detail::sqlite_batching_vfs());
  w.exec("CREATE TABLE t(k INTEGER PRIMARY KEY, v BLOB)");
  insert_rows(w, 0, 50);
  FileSizeLimit limit(std::filesystem::file_size(path + "-wal") + 4096);
  char* err = nullptr;
  int rc = sqlite3_exec(w.db,
                        "BEGIN IMMEDIATE; WITH RECURSIVE s(i) AS (SELECT 1000 UNION ALL SELECT i + 1 FROM s WHERE i < 1199)"
                        " INSERT INTO t(k, v) SELECT i, randomblob(300) FROM s; COMMIT",
                        nullptr, nullptr, &err);
  limit.lift();
  sqlite3_free(err);
  CHECK(rc != SQLITE_OK);
  if (!sqlite3_get_autocommit(w.db)) sqlite3_exec(w.db, "ROLLBACK", nullptr, nullptr, nullptr);
  CHECK(w.scalar("SELECT count(*) FROM t") == 50);
  insert_rows(w, 2000, 100);
  Db plain(path, nullptr);
  CHECK(plain.scalar("SELECT count(*) FROM t") == 150);
  CHECK(plain.text("PRAGMA integrity_check") == "ok");
  plain.exec("PRAGMA wal_checkpoint(TRUNCATE)");
  CHECK(plain.text("PRAGMA integrity_check") == "ok");
  CHECK(plain.scalar("SELECT count(*) FROM t") == 150);
}

TEST_CASE("a write that fails while frames are held back releases the write lock, and its frames are never written") {
  // A transaction spills frames (held back: fewer than the gathering limit) and then rolls
  // back while the file may not grow, so writing them fails at the rollback. The write lock
  // must still be released (another connection writes next, even with no further call on
  // this one) and the abandoned frames must never reach the file later.
  auto path = fresh("fail-spill");
  Db a(path, budget::detail::sqlite_batching_vfs());
  a.exec("PRAGMA page_size=1024; VACUUM");  // small pages: a spill of a few KiB stays held back
  a.exec("CREATE TABLE t(k INTEGER PRIMARY KEY, v BLOB)");
  a.exec("PRAGMA wal_checkpoint(TRUNCATE)");
  a.exec("PRAGMA cache_size=10");
  FileSizeLimit limit(std::filesystem::file_size(path + "-wal") + 512);
  int rc = sqlite3_exec(a.db,
                        "BEGIN IMMEDIATE; WITH RECURSIVE s(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM s WHERE i < 149)"
                        " INSERT INTO t(k, v) SELECT i, randomblob(300) FROM s",
                        nullptr, nullptr, nullptr);
  CHECK(rc == SQLITE_OK);  // the spilled frames are held back, not written yet
  sqlite3_exec(a.db, "ROLLBACK", nullptr, nullptr, nullptr);  // writing them fails here
  limit.lift();
  Db b(path, budget::detail::sqlite_batching_vfs());
  sqlite3_busy_timeout(b.db, 200);  // its BEGIN IMMEDIATE fails (busy) if `a` kept its write lock
  commit_over_abandoned(a, b, path, 100);
}
