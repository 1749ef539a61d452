#!/usr/bin/env bash
# Installs everything libbudget needs to build and test, from Debian packages (apt) — the
# C/C++ libraries, the compilers and redis-server. Python build tools and pytest come from
# PyPI and the Node toolchain from npm, inside the bindings' own test scripts.
# Idempotent; run as root (or with sudo) on Debian 12.
set -euo pipefail
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
pkgs=(build-essential cmake ninja-build pkg-config git
      libsqlite3-dev libfmt-dev nlohmann-json3-dev doctest-dev libhiredis-dev
      libhowardhinnant-date-dev tzdata
      redis-server redis-tools clang libclang-rt-14-dev python3 python3-venv)
missing=()
for p in "${pkgs[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1; then :; else missing+=(nodejs npm); fi
if [ "${#missing[@]}" -gt 0 ]; then
  echo "install-deps: apt-get install ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
else
  echo "install-deps: all Debian packages present"
fi
# Fail loudly rather than let a later step skip.
for tool in cmake ninja c++ clang++ redis-server redis-cli redis-check-aof python3 node npm pkg-config; do
  command -v "$tool" >/dev/null 2>&1 || { echo "install-deps: FATAL: $tool is missing" >&2; exit 1; }
done
# The Node addon builds with cmake-js 8, which needs Node >= 20.17 (bindings/node/package.json
# "engines"); Debian 12's own nodejs package is 18.x. Say so now, not halfway through the tests.
node_ok=$(node -e 'const [a,b]=process.versions.node.split(".").map(Number); console.log(a>20||(a===20&&b>=17)?1:0)')
if [ "$node_ok" != 1 ]; then
  echo "install-deps: FATAL: Node $(node --version) is too old: the Node addon needs >= 20.17" \
       "(Debian 12 ships 18.x; install Node 20 or 22, e.g. from NodeSource's apt repository)" >&2
  exit 1
fi
