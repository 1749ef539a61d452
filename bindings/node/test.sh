#!/usr/bin/env bash
# Builds and tests the Node package (run from anywhere, e.g. the repo root:
#   bash bindings/node/test.sh). Installs the npm dependencies, builds the addon and the
# TypeScript layer, type-checks the tests/examples (tsc --noEmit), runs the node:test suites
# of the package and of examples/node. Exits non-zero on any failure or when no test ran.
# Stores: env BUDGET_TEST_STORES (default "memory,sqlite"); "redis" needs BUDGET_TEST_REDIS_URL.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
examples="$here/../../examples/node"
export CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-2}"
cd "$here"
echo "== npm ci (bindings/node)"
npm ci --ignore-scripts --no-audit --no-fund
echo "== build (addon + TypeScript)"
npm run build
if [ -d "$examples" ]; then
  echo "== npm ci (examples/node)"
  (cd "$examples" && npm ci --ignore-scripts --no-audit --no-fund)
fi
echo "== tsc --noEmit over tests and examples"
npx tsc -p tsconfig.test.json --noEmit
echo "== node:test"
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
suites=(test/)
[ -d "$examples/test" ] && suites+=("$examples/test/")
set +e
node --test --test-concurrency=1 --test-timeout=120000 --test-reporter=tap "${suites[@]}" | tee "$log"
status=${PIPESTATUS[0]}
set -e
tests=$(grep -E '^# tests [0-9]+' "$log" | tail -1 | awk '{print $3}')
fails=$(grep -E '^# fail [0-9]+' "$log" | tail -1 | awk '{print $3}')
if [ "$status" -ne 0 ] || [ "${fails:-1}" != "0" ]; then
  echo "node tests FAILED (exit $status, ${fails:-?} failed)"; exit 1
fi
if [ -z "$tests" ] || [ "$tests" -eq 0 ]; then
  echo "node tests: no test ran"; exit 1
fi
echo "node: $tests passed, 0 failed"
