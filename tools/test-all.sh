#!/usr/bin/env bash
# The README's second command (and CI's, through .ci/run): installs what is needed, builds,
# starts a throwaway redis-server on a free loopback port, and runs every suite:
#   1. C++ and C tests (doctest + CTest, incl. the conformance suite on memory, SQLite and
#      Redis, stress and crash tests, examples, the find_package consumer test) — release build;
#   2. the same unit/conformance/C tests under ASan+UBSan (developer mode, -Werror);
#   3. the stress tests under TSan;
#   4. the fuzzers, briefly;
#   5. the Python package (pip install + pytest + type check) and, at the same time,
#   6. the Node package (npm + tsc --noEmit + node:test).
# Any failure, or a suite that cannot run (no redis-server, no toolchain), fails the run.
# BUDGET_TEST_QUICK=1 skips the sanitizer builds and the fuzzers (developer convenience).
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
export CMAKE_BUILD_PARALLEL_LEVEL=2
export BUDGET_TEST_STORES=memory,sqlite,redis
start=$(date +%s)
step() { printf '\n==== %s (%ss)\n' "$*" "$(( $(date +%s) - start ))"; }
results=()
run() {  # run NAME CMD...: records the result, stops at the first failure
  local name="$1"; shift
  step "$name"
  if "$@"; then results+=("PASS  $name"); else results+=("FAIL  $name"); summary; exit 1; fi
}
summary() {
  printf '\n==== summary (%ss)\n' "$(( $(date +%s) - start ))"
  printf '%s\n' "${results[@]}"
}

step "install dependencies"
bash tools/install-deps.sh

configure() {  # configure DIR [cmake args...]
  local dir="$1"; shift
  cmake -S . -B "$dir" -G Ninja -DBUDGET_BUILD_TESTS=ON "$@" >/dev/null
}

run "build (release)" bash -c 'cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DBUDGET_BUILD_TESTS=ON -DBUDGET_BUILD_EXAMPLES=ON -DBUDGET_BUILD_BENCH=ON >/dev/null && cmake --build build -j2'
run "C++/C tests (release; memory, sqlite, redis)" tools/with-redis.sh ctest --test-dir build --output-on-failure -j2 --timeout 600

if [ "${BUDGET_TEST_QUICK:-0}" != 1 ]; then
  run "build (ASan+UBSan, -Werror)" bash -c 'cmake -S . -B build-asan -G Ninja -DCMAKE_BUILD_TYPE=Debug -DBUDGET_DEVELOPER_MODE=ON -DBUDGET_SANITIZE=address,undefined -DBUDGET_BUILD_EXAMPLES=ON -DBUDGET_BUILD_BENCH=OFF >/dev/null && cmake --build build-asan -j2'
  run "C++/C tests (ASan+UBSan)" tools/with-redis.sh ctest --test-dir build-asan --output-on-failure -j2 -LE stress --timeout 900
  run "build (TSan)" bash -c 'cmake -S . -B build-tsan -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DBUDGET_DEVELOPER_MODE=ON -DBUDGET_SANITIZE=thread -DBUDGET_BUILD_EXAMPLES=OFF -DBUDGET_BUILD_BENCH=OFF -DBUDGET_BUILD_SHARED=OFF >/dev/null && cmake --build build-tsan -j2 --target budget_stress'
  run "stress tests (TSan)" tools/with-redis.sh env TSAN_OPTIONS=halt_on_error=1 ctest --test-dir build-tsan --output-on-failure -L stress -R 'threads|diskfull|serverkill' --timeout 900
  run "fuzzers" bash tests/fuzz/run.sh 30
fi

# The Python and Node packages at once: each builds its own copy of the core, then spends
# minutes in mostly single-threaded work (pytest and the type checks; npm ci, tsc, node:test), so
# one after the other left a core idle. Each has its own redis-server and log, printed whole,
# one after the other, when both are done.
both() {  # both NAME1 CMD1 -- NAME2 CMD2...: runs the two, records both results
  local name1="$1"; shift
  local cmd1=()
  while [ "$1" != "--" ]; do cmd1+=("$1"); shift; done
  shift
  local name2="$1"; shift
  step "$name1 | $name2 (concurrently)"
  local log1 log2 pid1 pid2 status1=0 status2=0
  log1="$(mktemp)"; log2="$(mktemp)"
  "${cmd1[@]}" >"$log1" 2>&1 & pid1=$!
  "$@" >"$log2" 2>&1 & pid2=$!
  wait "$pid1" || status1=$?
  wait "$pid2" || status2=$?
  printf '\n==== %s (exit %s)\n' "$name1" "$status1"; cat "$log1"
  printf '\n==== %s (exit %s)\n' "$name2" "$status2"; cat "$log2"
  rm -f "$log1" "$log2"
  if [ "$status1" -eq 0 ]; then results+=("PASS  $name1"); else results+=("FAIL  $name1"); fi
  if [ "$status2" -eq 0 ]; then results+=("PASS  $name2"); else results+=("FAIL  $name2"); fi
  if [ "$status1" -ne 0 ] || [ "$status2" -ne 0 ]; then summary; exit 1; fi
}
both "Python package" tools/with-redis.sh bash bindings/python/test.sh -- \
     "Node package" tools/with-redis.sh bash bindings/node/test.sh

summary
n_pass=$(printf '%s\n' "${results[@]}" | grep -c '^PASS' || true)
echo "suites: ${n_pass} passed, 0 failed"
