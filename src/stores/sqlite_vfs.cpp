// The WAL-batching VFS shim; see sqlite_vfs.hpp for what it does and why it is safe.
#include "stores/sqlite_vfs.hpp"

#include <sqlite3.h>

#include <cstdint>
#include <cstring>
#include <mutex>
#include <new>

namespace budget::detail {
namespace {

// At most this many bytes are gathered (a large group commit goes out in several writes): the
// unix VFS writes at most 128 KiB - 1 bytes per call (seekAndWrite masks the length with
// 0x1ffff), and one incoming write is at most a 64 KiB page.
constexpr size_t kMaxGathered = 96 * 1024;
constexpr int kFrameHeaderSize = 24;

sqlite3_vfs* g_real = nullptr;

// SQLite allocates sqlite3_vfs::szOsFile bytes per open file: this header, then the real
// VFS's file. SQLite neither constructs nor destroys it, so it holds plain members only.
struct ShimFile {
  sqlite3_file base;       // base.pMethods: our methods (or null when the open failed)
  sqlite3_file* real;      // the wrapped file, right after this header
  bool wal;                // gather writes (a WAL file)
  bool commit_pending;     // the last gathered write was a commit frame's header
  char* buf;               // gathered bytes [buf_off, buf_off + buf_len)
  size_t buf_len, buf_cap;
  sqlite3_int64 buf_off;
};

// The WAL file whose writes are gathered on this thread (at most one: a thread runs one
// transaction at a time), flushed when the connection touches the WAL-index locks.
thread_local ShimFile* t_pending = nullptr;

// Writes what was gathered, and forgets it whether or not the write succeeded. A failed write
// is reported to the SQLite call that caused the flush, and SQLite abandons the transaction:
// frames past the last commit in the WAL index are never read, and SQLite writes them again
// when it retries. Keeping failed bytes to write them later was wrong: every later call on
// the file (a read, the WAL-index unlock) flushed first and failed, so a full disk failed
// reads too and kept the write lock from being released, locking every other connection out
// (found by a test that fills the disk).
int flush(ShimFile* f) {
  if (f->buf_len == 0) return SQLITE_OK;
  int rc = f->real->pMethods->xWrite(f->real, f->buf, static_cast<int>(f->buf_len), f->buf_off);
  f->buf_len = 0;
  f->commit_pending = false;
  if (t_pending == f) t_pending = nullptr;
  return rc;
}

int flush_pending() { return t_pending ? flush(t_pending) : SQLITE_OK; }

ShimFile* shim(sqlite3_file* p) { return reinterpret_cast<ShimFile*>(p); }

// Appends a write to the gathered bytes; false when it cannot (no memory), the caller then
// writes it through.
bool gather(ShimFile* f, const void* data, int n, sqlite3_int64 off) {
  // Another WAL file's writes gathered on this thread (not expected: one transaction at a time
  // per thread) are written first, so that the per-thread flushes below never lose track of them.
  if (t_pending && t_pending != f && flush(t_pending) != SQLITE_OK) return false;
  size_t need = f->buf_len + static_cast<size_t>(n);
  if (need > f->buf_cap) {
    size_t cap = f->buf_cap ? f->buf_cap : 8192;
    while (cap < need) cap *= 2;
    auto* nb = static_cast<char*>(sqlite3_realloc64(f->buf, cap));
    if (!nb) return false;
    f->buf = nb;
    f->buf_cap = cap;
  }
  if (f->buf_len == 0) f->buf_off = off;
  std::memcpy(f->buf + f->buf_len, data, static_cast<size_t>(n));
  f->buf_len = need;
  t_pending = f;
  return true;
}

int x_write(sqlite3_file* p, const void* data, int n, sqlite3_int64 off) {
  ShimFile* f = shim(p);
  if (!f->wal) return f->real->pMethods->xWrite(f->real, data, n, off);
  if (f->buf_len && (off != f->buf_off + static_cast<sqlite3_int64>(f->buf_len) ||
                    f->buf_len + static_cast<size_t>(n) > kMaxGathered)) {
    if (int rc = flush(f); rc != SQLITE_OK) return rc;
  }
  // A frame header: bytes 4..7 hold the database size after a commit, zero otherwise.
  bool header = n == kFrameHeaderSize;
  bool commit_header = header && std::memcmp(static_cast<const char*>(data) + 4, "\0\0\0\0", 4) != 0;
  bool ends_commit = !header && f->commit_pending;
  if (!gather(f, data, n, off)) {  // written through, after what was gathered
    if (int rc = flush(f); rc != SQLITE_OK) return rc;
    f->commit_pending = commit_header;
    return f->real->pMethods->xWrite(f->real, data, n, off);
  }
  f->commit_pending = commit_header;
  if (ends_commit) return flush(f);
  return SQLITE_OK;
}

int x_close(sqlite3_file* p) {
  ShimFile* f = shim(p);
  int rc = flush(f);
  if (t_pending == f) t_pending = nullptr;
  sqlite3_free(f->buf);
  f->buf = nullptr;
  f->buf_len = f->buf_cap = 0;
  int rc2 = f->real->pMethods ? f->real->pMethods->xClose(f->real) : SQLITE_OK;
  return rc != SQLITE_OK ? rc : rc2;
}

// Every other method: write what was gathered (a no-op when nothing was), then forward.
int x_read(sqlite3_file* p, void* d, int n, sqlite3_int64 off) {
  ShimFile* f = shim(p);
  if (int rc = flush(f); rc != SQLITE_OK) return rc;
  return f->real->pMethods->xRead(f->real, d, n, off);
}
int x_truncate(sqlite3_file* p, sqlite3_int64 size) {
  ShimFile* f = shim(p);
  if (int rc = flush(f); rc != SQLITE_OK) return rc;
  return f->real->pMethods->xTruncate(f->real, size);
}
int x_sync(sqlite3_file* p, int flags) {
  ShimFile* f = shim(p);
  if (int rc = flush(f); rc != SQLITE_OK) return rc;
  return f->real->pMethods->xSync(f->real, flags);
}
int x_file_size(sqlite3_file* p, sqlite3_int64* size) {
  ShimFile* f = shim(p);
  if (int rc = flush(f); rc != SQLITE_OK) return rc;
  return f->real->pMethods->xFileSize(f->real, size);
}
int x_file_control(sqlite3_file* p, int op, void* arg) {
  ShimFile* f = shim(p);
  if (int rc = flush(f); rc != SQLITE_OK) return rc;
  return f->real->pMethods->xFileControl(f->real, op, arg);
}
int x_lock(sqlite3_file* p, int l) { return shim(p)->real->pMethods->xLock(shim(p)->real, l); }
int x_unlock(sqlite3_file* p, int l) { return shim(p)->real->pMethods->xUnlock(shim(p)->real, l); }
int x_check_reserved(sqlite3_file* p, int* out) {
  return shim(p)->real->pMethods->xCheckReservedLock(shim(p)->real, out);
}
int x_sector_size(sqlite3_file* p) { return shim(p)->real->pMethods->xSectorSize(shim(p)->real); }
int x_device(sqlite3_file* p) { return shim(p)->real->pMethods->xDeviceCharacteristics(shim(p)->real); }
int x_shm_map(sqlite3_file* p, int pg, int size, int extend, void volatile** out) {
  if (int rc = flush_pending(); rc != SQLITE_OK) return rc;
  return shim(p)->real->pMethods->xShmMap(shim(p)->real, pg, size, extend, out);
}
int x_shm_lock(sqlite3_file* p, int off, int n, int flags) {
  int rc = flush_pending();
  // A lock is not taken after a failed write; an unlock always happens (SQLite does not retry
  // one, and a write lock kept would lock every other connection out of the file).
  if (rc != SQLITE_OK && !(flags & SQLITE_SHM_UNLOCK)) return rc;
  int rc2 = shim(p)->real->pMethods->xShmLock(shim(p)->real, off, n, flags);
  return rc != SQLITE_OK ? rc : rc2;
}
void x_shm_barrier(sqlite3_file* p) {
  // Nothing is pending here in practice: SQLite issues barriers when it publishes a commit
  // (whose frames were written at its commit frame) and when it reads the WAL-index header
  // (after the flush of the lock it took first). A failed write cannot be reported from here.
  (void)flush_pending();
  shim(p)->real->pMethods->xShmBarrier(shim(p)->real);
}
int x_shm_unmap(sqlite3_file* p, int del) { return shim(p)->real->pMethods->xShmUnmap(shim(p)->real, del); }
int x_fetch(sqlite3_file* p, sqlite3_int64 off, int n, void** pp) {
  return shim(p)->real->pMethods->xFetch(shim(p)->real, off, n, pp);
}
int x_unfetch(sqlite3_file* p, sqlite3_int64 off, void* ptr) {
  return shim(p)->real->pMethods->xUnfetch(shim(p)->real, off, ptr);
}

// One table per version the real file may offer; SQLite calls no method past the version.
#define BUDGET_SHIM_METHODS(v)                                                                     \
  {v,          x_close,    x_read,        x_write,     x_truncate, x_sync,        x_file_size,     \
   x_lock,     x_unlock,   x_check_reserved, x_file_control, x_sector_size, x_device,            \
   x_shm_map,  x_shm_lock, x_shm_barrier, x_shm_unmap, x_fetch,    x_unfetch}
const sqlite3_io_methods kMethods[] = {BUDGET_SHIM_METHODS(1), BUDGET_SHIM_METHODS(2), BUDGET_SHIM_METHODS(3)};
#undef BUDGET_SHIM_METHODS

int x_open(sqlite3_vfs*, sqlite3_filename name, sqlite3_file* p, int flags, int* out_flags) {
  ShimFile* f = shim(p);
  std::memset(f, 0, sizeof(ShimFile));
  f->real = reinterpret_cast<sqlite3_file*>(f + 1);
  f->wal = (flags & SQLITE_OPEN_WAL) != 0;
  int rc = g_real->xOpen(g_real, name, f->real, flags, out_flags);
  // Offer the real file's version of the methods (capped at the ones written here).
  if (const sqlite3_io_methods* m = f->real->pMethods) f->base.pMethods = &kMethods[m->iVersion >= 3 ? 2 : m->iVersion >= 2 ? 1 : 0];
  return rc;
}

// The rest of the VFS is the real one's: these only pass the real VFS on.
int x_delete(sqlite3_vfs*, const char* n, int sync) { return g_real->xDelete(g_real, n, sync); }
int x_access(sqlite3_vfs*, const char* n, int flags, int* out) { return g_real->xAccess(g_real, n, flags, out); }
int x_full_path(sqlite3_vfs*, const char* n, int size, char* out) { return g_real->xFullPathname(g_real, n, size, out); }
void* x_dl_open(sqlite3_vfs*, const char* n) { return g_real->xDlOpen(g_real, n); }
void x_dl_error(sqlite3_vfs*, int n, char* msg) { g_real->xDlError(g_real, n, msg); }
void (*x_dl_sym(sqlite3_vfs*, void* h, const char* s))(void) { return g_real->xDlSym(g_real, h, s); }
void x_dl_close(sqlite3_vfs*, void* h) { g_real->xDlClose(g_real, h); }
int x_randomness(sqlite3_vfs*, int n, char* out) { return g_real->xRandomness(g_real, n, out); }
int x_sleep(sqlite3_vfs*, int us) { return g_real->xSleep(g_real, us); }
int x_current_time(sqlite3_vfs*, double* out) { return g_real->xCurrentTime(g_real, out); }
int x_last_error(sqlite3_vfs*, int n, char* out) {
  return g_real->xGetLastError ? g_real->xGetLastError(g_real, n, out) : 0;
}
int x_current_time64(sqlite3_vfs*, sqlite3_int64* out) { return g_real->xCurrentTimeInt64(g_real, out); }

sqlite3_vfs g_vfs;

}  // namespace

const char* sqlite_batching_vfs() {
  static std::once_flag once;
  static const char* name = nullptr;
  std::call_once(once, [] {
    g_real = sqlite3_vfs_find(nullptr);
    // Without a default VFS of version 2 or more (unix is 3), SQLite's own is used (name null).
    if (!g_real || g_real->iVersion < 2 || !g_real->xCurrentTimeInt64) return;
    g_vfs = sqlite3_vfs{};
    g_vfs.iVersion = 2;
    g_vfs.szOsFile = static_cast<int>(sizeof(ShimFile)) + g_real->szOsFile;
    g_vfs.mxPathname = g_real->mxPathname;
    g_vfs.zName = "budget-wal-batch";
    g_vfs.xOpen = x_open;
    g_vfs.xDelete = x_delete;
    g_vfs.xAccess = x_access;
    g_vfs.xFullPathname = x_full_path;
    g_vfs.xDlOpen = x_dl_open;
    g_vfs.xDlError = x_dl_error;
    g_vfs.xDlSym = x_dl_sym;
    g_vfs.xDlClose = x_dl_close;
    g_vfs.xRandomness = x_randomness;
    g_vfs.xSleep = x_sleep;
    g_vfs.xCurrentTime = x_current_time;
    g_vfs.xGetLastError = x_last_error;
    g_vfs.xCurrentTimeInt64 = x_current_time64;
    if (sqlite3_vfs_register(&g_vfs, /*makeDflt=*/0) == SQLITE_OK) name = g_vfs.zName;
  });
  return name;
}

}  // namespace budget::detail
