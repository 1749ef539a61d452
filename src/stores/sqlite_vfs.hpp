// A SQLite VFS shim that writes each transaction's WAL frames with one system call.
//
// SQLite writes a WAL frame as two pwrite() calls (a 24-byte header, then the page), so a
// transaction touching two pages costs four system calls; on these machines a system call is
// ~1 µs, a large part of a 13 µs transaction. The shim wraps the platform VFS and, for WAL
// files only, gathers contiguous writes in memory and hands them to the real file in one
// write when:
//   - the commit frame's page has been written (a frame header whose "database size" field is
//     not zero marks a commit frame; its page is the last write of the commit), so a commit
//     is on disk, as far as SQLite's own writes would be, before SQLite publishes it in the
//     WAL index; an error of that write is the commit's error;
//   - a write is not contiguous with the gathered ones, or any other operation (read, sync,
//     truncate, size, file control, close) reaches the WAL file;
//   - the connection takes or releases a WAL-index lock (xShmLock) or issues a barrier
//     (xShmBarrier). That covers frames spilled by a transaction that is then rolled back:
//     they are written before the write lock is released, so they can never land on top of
//     another writer's frames later, which is what SQLite's own write order guarantees.
// A write that fails is forgotten (its error goes to the SQLite call that caused it, which
// abandons the transaction), and an unlock is never skipped: see flush() and x_shm_lock().
// The last point relies on one invariant of SqliteStore: a transaction runs on one thread from
// BEGIN to COMMIT or ROLLBACK (the pending WAL file is remembered per thread). The file format
// is unchanged: other processes and tools using plain SQLite share the files safely.
#pragma once

namespace budget::detail {

// Registers the shim (once, thread-safe) over the default VFS and returns its name, for
// sqlite3_open_v2's zVfs argument.
const char* sqlite_batching_vfs();

}  // namespace budget::detail
