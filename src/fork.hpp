// fork() awareness: a counter bumped in the child of every fork() (a pthread_atfork hook).
//
// Used where state must not be carried into a forked child: the request-id generator seeds
// itself again, and the SQLite and Redis stores refuse to be used by a child (their
// connection and sockets belong to the parent; SQLite forbids using a connection across
// fork), with an error that says to create the manager in each process.
#pragma once

#include <cstdint>

namespace budget::detail {

// How many fork()s led to the calling process since libbudget was first used (0 in the
// process that first called it). Cheap: one relaxed atomic load after the first call.
uint64_t fork_generation() noexcept;

}  // namespace budget::detail
