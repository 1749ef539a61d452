#!/bin/sh
# Builds the libFuzzer targets with clang and runs each briefly (default 30 s in total).
# Usage: tests/fuzz/run.sh [total-seconds]     (CI calls it without arguments)
set -eu
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
total=${1:-30}
build=${BUDGET_FUZZ_BUILD_DIR:-$repo/build-fuzz}
cc=${CC_FUZZ:-$(command -v clang-14 || command -v clang)}
cxx=${CXX_FUZZ:-$(command -v clang++-14 || command -v clang++)}
cmake -S "$repo" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DCMAKE_C_COMPILER="$cc" -DCMAKE_CXX_COMPILER="$cxx" -DBUDGET_BUILD_FUZZ=ON \
  -DBUDGET_BUILD_EXAMPLES=OFF -DBUDGET_BUILD_BENCH=OFF -DBUDGET_BUILD_SHARED=OFF \
  -DBUDGET_WITH_REDIS=OFF -DCMAKE_CXX_FLAGS="-fsanitize=fuzzer-no-link,address,undefined" >/dev/null
cmake --build "$build" -j2 --target fuzz_price_table fuzz_usage fuzz_parse
per=$((total / 3))
[ "$per" -ge 1 ] || per=1
status=0
for t in price_table usage parse; do
  work=$(mktemp -d)
  cp "$here/corpus/$t/"* "$work/" 2>/dev/null || true
  echo "== fuzz_$t for ${per}s"
  "$build/tests/fuzz/fuzz_$t" -max_total_time="$per" -max_len=65536 -timeout=10 \
    -rss_limit_mb=2048 "$work" || status=1
  rm -rf "$work"
done
exit $status
