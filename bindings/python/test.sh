#!/usr/bin/env bash
# Builds and installs the `libbudget` Python package from this checkout, then runs its pytest
# suite (bindings/python/tests and examples/python/tests) and the type checks.
# Run from the repository root:  bindings/python/test.sh
# Env: PYTHON (default: bindings/python/.venv, created from python3), BUDGET_TEST_STORES (default "memory,sqlite"; add "redis"
# with BUDGET_TEST_REDIS_URL=redis://host:port/db), CMAKE_BUILD_PARALLEL_LEVEL (default 2).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"
# Into a virtual environment of its own unless PYTHON names an interpreter: Debian 12's system
# Python refuses `pip install` (externally managed, PEP 668). Kept between runs (incremental).
PY="${PYTHON:-}"
if [ -z "$PY" ]; then
  venv="$root/bindings/python/.venv"
  if [ ! -x "$venv/bin/python" ]; then
    echo "== creating the virtual environment $venv"
    python3 -m venv "$venv"
  fi
  PY="$venv/bin/python"
fi
export CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-2}"
export PIP_DISABLE_PIP_VERSION_CHECK=1

echo "== installing build and test requirements from PyPI"
"$PY" -m pip install -q "scikit-build-core>=0.8" "pybind11>=2.10" \
  "pytest>=7" "mypy>=1.5" "openai>=1.30" "anthropic>=0.30" "fastapi>=0.100" "httpx>=0.24" "uvicorn>=0.20"

echo "== building and installing libbudget (build dir: bindings/python/build)"
# No build isolation: the requirements above are the build environment, so the CMake build
# directory stays valid between runs and rebuilds are incremental.
"$PY" -m pip install -q --no-build-isolation --force-reinstall --no-deps ./bindings/python

echo "== pytest"
# Run from a temporary directory so `import budget` is the installed package, not the sources.
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
report="$work/junit.xml"
status=0
(cd "$work" && BUDGET_PY_INSTALLED=1 "$PY" -m pytest -c "$root/bindings/python/pyproject.toml" \
   --rootdir "$root/bindings/python" -q --junitxml "$report" \
   "$root/bindings/python/tests" "$root/examples/python/tests") || status=$?
if [ "$status" -ne 0 ]; then
  echo "FAIL: pytest exited with $status" >&2
  exit "$status"
fi
tests=$("$PY" -c 'import sys,xml.etree.ElementTree as E; r=E.parse(sys.argv[1]).getroot(); s=r if r.tag=="testsuite" else r[0]; print(int(s.get("tests",0))-int(s.get("skipped",0)))' "$report")
if [ "${tests:-0}" -le 0 ]; then
  echo "FAIL: pytest ran no test" >&2
  exit 1
fi
echo "== $tests tests passed (type checks included)"
