#!/usr/bin/env python3
"""Benchmark of the Python binding: call overhead per operation vs the same operation in a
C++ loop (BudgetManager._bench_cpp, measured in the same process on the same manager), and
reserve+commit lifecycles per second on the memory and SQLite stores.

    python bindings/python/bench.py [--n 20000] [--sqlite-n 2000]
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from decimal import Decimal
from typing import Any, Callable, Dict, List, Tuple

# Benchmark the installed package, not the sources next to this script.
_here = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _here]

import budget  # noqa: E402

AMOUNT = "0.000001"


def per_op_ns(fn: Callable[[], Any], n: int) -> float:
    t0 = time.perf_counter_ns()
    for _ in range(n):
        fn()
    return (time.perf_counter_ns() - t0) / n


def best(f: Callable[[], float], repeat: int = 3) -> float:
    return min(f() for _ in range(repeat))


def manager(store: str) -> budget.BudgetManager:
    return budget.BudgetManager(store, limits={"global": {"day": "1000000"}, "user:*": {"day": "1000000"}})


def overhead_table(n: int) -> List[Tuple[str, float, float]]:
    """Each measurement on a fresh manager (the memory store's ledger grows with every
    operation, so Python and C++ runs are given the same starting state), best of 3."""
    subj_list = ["tenant:acme", "user:alice"]
    subj = budget.Subject(subj_list)
    amt = Decimal(AMOUNT)
    nano = Decimal("0.000000001")

    def py_run(op: str, variant: str = "") -> float:
        m = manager("memory")
        res = m.reserve(subj, "1000").reservation
        assert res is not None

        def lifecycle() -> None:
            d = m.reserve(subj, amt)
            m.commit(d.reservation, amt)  # type: ignore[arg-type]

        def lifecycle_list_str() -> None:
            d = m.reserve(subj_list, AMOUNT)
            m.commit(d.reservation, AMOUNT)  # type: ignore[arg-type]

        def reserve_release() -> None:
            d = m.reserve(subj, amt)
            m.release(d.reservation)  # type: ignore[arg-type]

        fns: Dict[str, Callable[[], Any]] = {
            "check": lambda: m.check(subj, amt),
            "record": lambda: m.record(subj, amt),
            "consume": lambda: m.consume(res, nano),
            "lifecycle": lifecycle_list_str if variant else lifecycle,
            "reserve_release": reserve_release,
        }
        ns = per_op_ns(fns[op], n)
        m.close()
        return ns

    def cpp_run(op: str) -> float:
        m = manager("memory")
        ns = m._bench_cpp(op, subj, amt, n)
        m.close()
        return ns

    rows = [("check", "check", ""), ("record", "record", ""), ("consume (inside the hold)", "consume", ""),
            ("reserve+commit", "lifecycle", ""), ("reserve+commit (list[str], str money)", "lifecycle", "s"),
            ("reserve+release", "reserve_release", "")]
    out = []
    for name, op, variant in rows:
        py_run(op, variant)  # warm up
        py = best(lambda: py_run(op, variant))
        cpp = best(lambda: cpp_run(op))
        out.append((name, py, cpp))
    return out


def lifecycles_per_s(store: str, n: int) -> float:
    m = manager(store)
    subj = budget.Subject(["tenant:acme", "user:alice"])
    amt = Decimal(AMOUNT)
    for _ in range(min(100, n)):
        d = m.reserve(subj, amt)
        m.commit(d.reservation, amt)  # type: ignore[arg-type]
    t0 = time.perf_counter()
    for _ in range(n):
        d = m.reserve(subj, amt)
        m.commit(d.reservation, amt)  # type: ignore[arg-type]
    dt = time.perf_counter() - t0
    cpp_ns = m._bench_cpp("lifecycle", subj, amt, n)
    m.close()
    print(f"  {store.split(':')[0]:<8} python {n / dt:>12,.0f} lifecycles/s   C++ {1e9 / cpp_ns:>12,.0f} lifecycles/s")
    return n / dt


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=20000)
    ap.add_argument("--sqlite-n", type=int, default=2000)
    args = ap.parse_args()
    print(f"libbudget {budget.__version__} Python binding benchmark (memory store, {args.n} ops, best of 3)")
    print(f"  {'operation':<40}{'python ns/op':>14}{'C++ ns/op':>12}{'overhead ns':>13}")
    results: Dict[str, float] = {}
    for name, py, cpp in overhead_table(args.n):
        print(f"  {name:<40}{py:>14,.0f}{cpp:>12,.0f}{py - cpp:>13,.0f}")
        results[name] = py - cpp
    print("Lifecycles (reserve + commit, subject of 3 scopes) per second:")
    lifecycles_per_s("memory", args.n)
    with tempfile.TemporaryDirectory() as d:
        lifecycles_per_s(f"sqlite:{os.path.join(d, 'bench.db')}", args.sqlite_n)


if __name__ == "__main__":
    main()
