#!/usr/bin/env bash
# Installs the built libbudget into a temp prefix, then builds and runs a consumer project
# with find_package(budget) (shared and static targets) and a pkg-config build.
set -euo pipefail
build_dir="$1"; src_dir="$2"
work="$(mktemp -d)"; trap 'rm -rf "$work"' EXIT
cmake --install "$build_dir" --prefix "$work/prefix" >/dev/null
cmake -S "$src_dir/project" -B "$work/build" -G Ninja -DCMAKE_PREFIX_PATH="$work/prefix" >/dev/null
cmake --build "$work/build"
LD_LIBRARY_PATH="$work/prefix/lib" "$work/build/consumer"
"$work/build/consumer_static"
# pkg-config: the shared library
export PKG_CONFIG_PATH="$work/prefix/lib/pkgconfig"
c++ -std=c++20 "$src_dir/project/main.cpp" -o "$work/pc" $(pkg-config --cflags --libs budget)
LD_LIBRARY_PATH="$work/prefix/lib" "$work/pc"
echo "consumer: find_package and pkg-config builds OK"
