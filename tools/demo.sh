#!/usr/bin/env bash
# The README's first command: installs the dependencies, builds libbudget and runs the demo
# (a small SaaS reselling LLM calls) on the embedded SQLite store.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
bash tools/install-deps.sh
# Its own build directory: build/ is the tests' (tools/test-all.sh), with other options.
cmake -S . -B build-demo -G Ninja -DCMAKE_BUILD_TYPE=Release -DBUDGET_BUILD_TESTS=OFF -DBUDGET_BUILD_BENCH=OFF >/dev/null
cmake --build build-demo -j2 --target budget_demo
./build-demo/examples/budget_demo "${1:-budget-demo.db}"
