from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from typing import Any, Callable, List

import pytest

import budget
from budget import BudgetManager

Make = Callable[..., BudgetManager]


class CountingExecutor(ThreadPoolExecutor):
    def __init__(self) -> None:
        super().__init__(max_workers=2)
        self.threads: List[int] = []

    def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> Any:
        def wrapped() -> Any:
            self.threads.append(threading.get_ident())
            return fn(*args, **kwargs)

        return super().submit(wrapped)


def test_async_api_runs_in_executor(make: Make) -> None:
    ex = CountingExecutor()
    m = make(limits={"user:*": {"day": "1"}}, executor=ex)

    async def main() -> int:
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0)

        t = asyncio.create_task(ticker())
        d = await m.areserve("user:a", "0.30")
        assert d.allowed and d.reservation is not None
        assert (await m.aconsume(d.reservation, "0.10")).ok
        r = await m.acommit(d.reservation, "0.20")
        assert r.charged == Decimal("0.2")
        assert (await m.acheck("user:a", "0.5")).allowed
        await m.acheck_availability("a", estimated_cost=0.5)
        await m.arecord_spend("a", "0.5", model="gpt-4o")
        with pytest.raises(budget.BudgetExceededError):
            await m.acheck_availability("a", estimated_cost=0.5)
        async with m.ahold("user:b", "0.2") as h:
            await h.consume("0.05")
        assert h.receipt is not None and h.receipt.charged == Decimal("0.05")
        await m.agrant("user:b", "1")
        await m.aadjust("user:b", "0.01")
        [st] = await m.astatus("user:b")
        assert st.spent == Decimal("0.06")
        assert await m.aexpire_holds() == 0
        t.cancel()
        return ticks

    ticks = asyncio.run(main())
    assert ticks > 0
    assert len(ex.threads) >= 12 and threading.get_ident() not in ex.threads
    ex.shutdown()


def test_async_hold_cancelled_releases(make: Make) -> None:
    m = make(limits={"user:*": {"day": "1"}})
    entered = asyncio.Event

    async def main() -> None:
        ready = asyncio.Event()

        async def request() -> None:
            async with m.ahold("user:c", "0.5"):
                ready.set()
                await asyncio.sleep(60)

        task = asyncio.create_task(request())
        await ready.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    del entered
    [st] = m.status("user:c")
    assert st.held == 0 and st.spent == 0


class GateExecutor(ThreadPoolExecutor):
    """Runs each call when the test opens the gate, either before (``when="before"``: the store
    call starts after the awaiting task was cancelled) or after it (``"after"``: the call landed,
    the result is not delivered yet)."""

    def __init__(self, when: str) -> None:
        super().__init__(max_workers=2)
        self.when = when
        self.started = threading.Event()
        self.gate = threading.Event()

    def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> Any:
        def gated() -> Any:
            self.started.set()
            if self.when == "before":
                self.gate.wait(10)
            try:
                return fn(*args, **kwargs)
            finally:
                if self.when == "after":
                    self.gate.wait(10)

        return super().submit(gated)


@pytest.mark.parametrize("when", ["before", "after"])
def test_cancelled_reserve_holds_nothing(make: Make, when: str) -> None:
    # A task cancelled while its reserve runs in the executor: the store call goes on, and its
    # hold must not stay behind (nobody will commit or release it).
    ex = GateExecutor(when)
    m = make(limits={"user:*": {"day": "1"}}, executor=ex)
    live = m.reserve("user:cr", "0.2", request_id="cr-live")  # in use elsewhere

    async def request() -> None:
        async with m.ahold("user:cr", "0.5", request_id="cr-ahold"):
            await asyncio.sleep(60)

    async def cancel_while_running(call: Callable[[], Any]) -> None:
        ex.started.clear()
        ex.gate.clear()
        task = asyncio.ensure_future(call())
        while not ex.started.is_set():
            await asyncio.sleep(0.005)
        task.cancel()
        ex.gate.set()
        with pytest.raises(asyncio.CancelledError):
            await task

    async def main() -> None:
        await cancel_while_running(lambda: m.areserve("user:cr", "0.3", request_id="cr-areserve"))
        await cancel_while_running(request)
        # A cancelled retry of a reserve that is replayed leaves the first (live) hold alone.
        await cancel_while_running(lambda: m.areserve("user:cr", "0.2", request_id="cr-live"))

    asyncio.run(main())
    ex.shutdown(wait=True)
    for rid in ("cr-areserve", "cr-ahold"):
        assert [e.type for e in m.events(request_id=rid)] == ["reserve", "release"]
    [st] = m.status("user:cr")
    assert st.held == Decimal("0.2") and st.spent == 0
    assert m.commit(live.reservation, "0.1").charged == Decimal("0.1")


def test_gil_released_while_store_blocks(tmp_path: Any) -> None:
    path = tmp_path / "locked.db"
    m = BudgetManager(f"sqlite:{path}", limits={"global": {"day": "10"}}, store_timeout=0.4)
    m.record("user:a", "0.01")  # creates the schema
    con = sqlite3.connect(str(path), isolation_level=None, timeout=0.1)
    con.execute("BEGIN EXCLUSIVE")
    result: List[Any] = []

    def blocked() -> None:
        try:
            result.append(m.reserve("user:a", "0.5"))
        except budget.BudgetError as e:
            result.append(e)

    t = threading.Thread(target=blocked)
    start = time.perf_counter()
    t.start()
    spins = 0
    while t.is_alive():
        spins += 1  # pure Python work: only possible while the blocked call has released the GIL
    elapsed = time.perf_counter() - start
    con.execute("ROLLBACK")
    con.close()
    assert elapsed >= 0.3
    assert spins > 10_000
    [r] = result
    # fail-closed: a denial naming the store (or the typed error)
    if isinstance(r, budget.BudgetError):
        assert isinstance(r, budget.StoreUnavailableError)
    else:
        assert not r.allowed and r.denial is not None and r.denial.reason == "store_unavailable"
    m.close()


EXIT_WITH_A_BUSY_DAEMON_THREAD = """
import sys, threading, time
import budget
m = budget.BudgetManager(sys.argv[1], limits={"user:*": {"day": "1"}})
m.set_limit("global", "day", "1000", alerts=[1])
m.on_alert(lambda a: None)
m.on_denial(lambda d, s: None)

def busy():
    while True:
        m.check("user:d", "5")                 # a denial: the denial callback takes the GIL
        m.record("user:e", "0.000000001")      # a store write
        m.status("user:e")

for _ in range(2):
    threading.Thread(target=busy, daemon=True).start()
time.sleep(0.3)
print("bye", flush=True)
"""


def test_interpreter_exits_cleanly_while_a_daemon_thread_is_in_a_store_call(store_url: str) -> None:
    # At exit the interpreter ends daemon threads that take the GIL back (pthread_exit); a
    # thread inside a store call (GIL released) or a callback must end quietly, not abort the
    # process ("terminate called without an active exception", SIGABRT).
    for _ in range(3):
        p = subprocess.run([sys.executable, "-c", EXIT_WITH_A_BUSY_DAEMON_THREAD, store_url],
                           capture_output=True, text=True, timeout=120)
        assert (p.returncode, p.stdout) == (0, "bye\n"), p.stderr[-2000:]
