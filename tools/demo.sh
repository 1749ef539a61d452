#!/usr/bin/env bash
# The README's first command: installs the dependencies, builds libbudget and runs the demo
# (a small SaaS reselling LLM calls) on the embedded SQLite store.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
bash tools/install-deps.sh
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release -DBUDGET_BUILD_TESTS=OFF -DBUDGET_BUILD_BENCH=OFF >/dev/null
cmake --build build -j2 --target budget_demo
./build/examples/budget_demo "${1:-budget-demo.db}"
