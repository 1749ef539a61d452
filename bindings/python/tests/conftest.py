"""Fixtures: one BudgetManager per store kind listed in BUDGET_TEST_STORES (default
"memory,sqlite"), like tests/unit/store_fixture.hpp. "redis" needs BUDGET_TEST_REDIS_URL:
listing it without the URL FAILS the tests (never skips them)."""
from __future__ import annotations

import os
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator, List

import pytest

import budget

T0 = datetime(2026, 3, 10, 12, 0, 0, tzinfo=timezone.utc)  # a Tuesday


def store_kinds() -> List[str]:
    env = os.environ.get("BUDGET_TEST_STORES") or "memory,sqlite"
    return [s.strip() for s in env.split(",") if s.strip()]


def fresh_url(kind: str, tmp: Path) -> str:
    if kind == "memory":
        return "memory"
    if kind == "sqlite":
        return f"sqlite:{tmp / ('b_' + uuid.uuid4().hex[:8] + '.db')}"
    if kind == "redis":
        url = os.environ.get("BUDGET_TEST_REDIS_URL")
        if not url:
            pytest.fail("BUDGET_TEST_STORES names redis but BUDGET_TEST_REDIS_URL is not set")
        sep = "&" if "?" in url else "?"
        return f"{url}{sep}prefix=py{uuid.uuid4().hex[:12]}"
    pytest.fail(f"unknown store kind {kind!r} in BUDGET_TEST_STORES")
    raise AssertionError


@pytest.fixture(params=store_kinds())
def store_kind(request: Any) -> str:
    return str(request.param)


@pytest.fixture
def store_url(store_kind: str, tmp_path: Path) -> str:
    return fresh_url(store_kind, tmp_path)


@pytest.fixture
def clock() -> budget.ManualClock:
    return budget.ManualClock(T0)


@pytest.fixture
def make(store_url: str, clock: budget.ManualClock) -> Iterator[Callable[..., budget.BudgetManager]]:
    made: List[budget.BudgetManager] = []

    def factory(**kw: Any) -> budget.BudgetManager:
        kw.setdefault("clock", clock)
        m = budget.BudgetManager(store_url, **kw)
        made.append(m)
        return m

    yield factory
    for m in made:
        m.close()


@pytest.fixture
def pricing() -> budget.PricingEngine:
    p = budget.PricingEngine()
    p.set_price("test-model", provider="openai", input="0.000001", output="0.000004")
    p.set_price("claude-test", provider="anthropic", input="0.000003", output="0.000015",
                cache_read="0.0000003", cache_write="0.00000375")
    return p
