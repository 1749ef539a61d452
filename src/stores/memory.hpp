// libbudget — memory store internals exposed to tests (internal).
#pragma once

#include "store.hpp"

namespace budget::detail {

// For tests: checks a memory store's invariants under its locks — every stripe's deadline
// heap is a min-heap whose records know their slots and holds exactly the held records, and
// every record is found by its id. False if `s` is not a memory store or an invariant fails.
bool memory_store_self_check(Store& s);

}  // namespace budget::detail
