from __future__ import annotations

import asyncio
import decimal
import gc
import json
import pickle
import threading
import weakref
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any, Callable, Dict, List

import pytest

import budget
from budget import BudgetManager, Money

Make = Callable[..., BudgetManager]


def test_lifecycle_reserve_consume_commit(make: Make) -> None:
    m = make(limits={"user:*": {"day": "10.00"}, "global": {"day": 5000}})
    d = m.reserve(["tenant:acme", "user:alice"], "0.05", request_id="r1")
    assert d and d.allowed and not d.replayed
    res = d.reservation
    assert res is not None and res.request_id == "r1"
    assert res.held == Decimal("0.05") and isinstance(res.held, Money) and res.held.nanos == 50_000_000
    assert res.subject.scopes == ["global", "tenant:acme", "user:alice"]
    c = m.consume(res, "0.01")
    assert c.ok and c.verdict == "continue" and c.consumed == Decimal("0.01")
    r = m.commit(res, Decimal("0.02"))
    assert r.charged == Decimal("0.02") and r.released == Decimal("0.03") and not r.over_limit
    [st] = m.status("user:alice")
    assert (st.scope, st.window, st.metric) == ("user:alice", "day", "cost")
    assert st.limit == Decimal("10") and st.spent == Decimal("0.02") and st.held == 0
    assert st.remaining == Decimal("9.98")
    assert st.resets_at == datetime(2026, 3, 11, tzinfo=timezone.utc)
    # tenant has no limit but is tracked; global has one
    assert [s.key for s in m.status("global")] == ["global|cost|day"]


def test_release_and_request_id_strings(make: Make) -> None:
    m = make(limits={"global": {"day": "1"}})
    d = m.reserve("user:bob", "0.40", request_id="abc")
    assert d.allowed
    assert m.consume("abc", "0.1").ok
    r = m.release("abc")
    assert r.request_id == "abc"
    [st] = m.status("global")
    assert st.held == 0


def test_denial_hard_cap_and_held_headroom(make: Make) -> None:
    m = make(limits={"user:*": {"day": "1.00"}})
    m.record("user:a", "0.90")
    d = m.check("user:a", "0.20")
    assert not d and d.denial is not None and d.reservation is None
    den = d.denial
    assert den.hard and den.scope == "user:a" and den.window == "day" and den.metric == "cost"
    assert den.spent == Decimal("0.90") and den.remaining == Decimal("0.10") and den.limit == Decimal("1")
    assert den.resets_at == datetime(2026, 3, 11, tzinfo=timezone.utc)
    # headroom held by an in-flight request: not hard (retry may succeed)
    m2 = make(limits={"user:*": {"day": "1.00"}})
    assert m2.reserve("user:b", "0.90").allowed
    d2 = m2.reserve("user:b", "0.20")
    assert not d2.allowed and d2.denial is not None and not d2.denial.hard
    with pytest.raises(budget.BudgetExceededError) as ei:
        m2.check_availability("b", estimated_cost=0.2)
    assert ei.value.scope == "user:b" and ei.value.window == "day" and ei.value.hard is False
    assert ei.value.remaining == Decimal("0.10") and ei.value.resets_at is not None


def test_idempotency_and_conflict(make: Make) -> None:
    m = make(limits={"global": {"day": "10"}})
    d1 = m.reserve("user:x", "1", request_id="same")
    d2 = m.reserve("user:x", "1", request_id="same")
    assert d1.allowed and d2.allowed and d2.replayed
    r1 = m.commit("same", "0.5")
    r2 = m.commit("same", "0.5")
    assert r2.replayed and r2.charged == r1.charged
    with pytest.raises(budget.ConflictError):
        m.commit("same", "0.7")
    rec1 = m.record("user:x", "0.25", request_id="rec")
    rec2 = m.record("user:x", "0.25", request_id="rec")
    assert rec2.replayed
    [st] = m.status("global")
    assert st.spent == Decimal("0.75")


@pytest.mark.parametrize(
    "value,nanos",
    [
        ("12.50", 12_500_000_000),
        (Decimal("0.000000150"), 150),
        (Decimal("1E+1"), 10_000_000_000),
        (Decimal("1.5E-7"), 150),
        (Decimal("-2.50"), -2_500_000_000),
        (Decimal("0E-20"), 0),
        (3, 3_000_000_000),
        (0.1, 100_000_000),
        (1e-7, 100),
        (-0.5, -500_000_000),
    ],
)
def test_money_in(value: Any, nanos: int) -> None:
    assert budget.money(value).nanos == nanos
    assert budget.Money.from_nanos(nanos).nanos == nanos


def test_money_nanos_ignore_the_decimal_context() -> None:
    # An application's own decimal context (a low precision, trapped inexact results) must not
    # change how much money an amount is.
    amount = budget.money("1234567.891234567")
    with decimal.localcontext() as ctx:
        ctx.prec = 6
        ctx.traps[decimal.Inexact] = True
        assert amount.nanos == 1_234_567_891_234_567
        assert budget.money("-9223372036.854775807").nanos == -9_223_372_036_854_775_807


def test_money_out_is_exact_decimal() -> None:
    m = budget.Money.from_nanos(150)
    assert isinstance(m, Decimal) and str(m) == "0.00000015" and repr(m) == "Money('0.00000015')"
    assert budget.Money.from_nanos(-3_000_000_000) == Decimal(-3)


@pytest.mark.parametrize(
    "bad,exc",
    [
        (float("nan"), budget.InvalidArgumentError),
        (float("inf"), budget.InvalidArgumentError),
        (Decimal("NaN"), budget.InvalidArgumentError),
        (Decimal("-Infinity"), budget.InvalidArgumentError),
        (Decimal("sNaN"), budget.InvalidArgumentError),
        (Decimal("1E-999999999"), budget.InvalidArgumentError),
        (Decimal("1E+999999999"), budget.BudgetOverflowError),
        (Decimal("1.0000000001"), budget.InvalidArgumentError),
        (0.1 + 0.2, budget.InvalidArgumentError),  # a float is exact to the nano too, as in Node
        (1e-10, budget.InvalidArgumentError),
        (1e21, budget.BudgetOverflowError),
        ("-0.5", budget.InvalidArgumentError),
        ("1.0000000001", budget.InvalidArgumentError),
        ("12,5", budget.InvalidArgumentError),
        ("1e3", budget.InvalidArgumentError),
        (10**30, budget.BudgetOverflowError),
        (9_300_000_000, budget.BudgetOverflowError),
        (True, budget.InvalidArgumentError),
        ([1], budget.InvalidArgumentError),
        (object(), budget.InvalidArgumentError),
    ],
)
def test_bad_input_raises_typed_and_changes_nothing(make: Make, bad: Any, exc: type) -> None:
    m = make(limits={"global": {"day": "10"}})
    before = len(m.events())
    with pytest.raises(exc) as ei:
        m.reserve("user:z", bad)
    assert isinstance(ei.value, budget.BudgetError)
    with pytest.raises(budget.BudgetError):
        m.record("user:z", bad)
    assert len(m.events()) == before
    [st] = m.status("global")
    assert st.spent == 0 and st.held == 0


def test_budget_exceeded_error_pickles_with_its_denial(make: Make) -> None:
    # Errors cross process boundaries (multiprocessing, ProcessPoolExecutor) by pickling.
    m = make(limits={"user:*": {"day": "1"}})
    with pytest.raises(budget.BudgetExceededError) as ei:
        with m.hold("user:pk", "5", request_id="pk1"):
            pass
    e = ei.value
    back = pickle.loads(pickle.dumps(e))
    assert type(back) is budget.BudgetExceededError and str(back) == str(e)
    assert (back.scope, back.window, back.limit, back.remaining, back.requested, back.hard, back.request_id) == (
        "user:pk", "day", Decimal(1), Decimal(1), Decimal(5), True, "pk1")
    assert back.resets_at == e.resets_at is not None
    assert e.denial is not None and back.denial is not None
    assert (back.denial.reason, back.denial.scope, back.denial.metric, back.denial.limit, back.denial.spent,
            back.denial.held, back.denial.remaining, back.denial.requested, back.denial.resets_at,
            back.denial.hard, back.denial.message) == (
        e.denial.reason, e.denial.scope, e.denial.metric, e.denial.limit, e.denial.spent, e.denial.held,
        e.denial.remaining, e.denial.requested, e.denial.resets_at, e.denial.hard, e.denial.message)


def test_events_after_seq_out_of_range_is_a_typed_error(make: Make) -> None:
    m = make()
    m.record("user:ev", "1")
    with pytest.raises(budget.BudgetOverflowError):
        m.events(after_seq=10**30)
    with pytest.raises(budget.InvalidArgumentError):
        m.events(after_seq="1")  # type: ignore[arg-type]
    assert [e.seq for e in m.events(after_seq=0)] == [1]


def test_an_empty_request_id_is_refused_not_replaced(make: Make) -> None:
    # An empty idempotency key (a missing header read as "") must not silently become a fresh
    # generated id on every retry: that would charge each retry again. None asks for one.
    m = make(limits={"global": {"day": "10"}})
    before = len(m.events())
    with pytest.raises(budget.InvalidArgumentError):
        m.reserve("user:ri", "1", request_id="")
    with pytest.raises(budget.InvalidArgumentError):
        m.record("user:ri", "1", request_id="")
    with pytest.raises(budget.InvalidArgumentError):
        m.grant("user:ri", "1", request_id="")
    with pytest.raises(budget.InvalidArgumentError):
        m.adjust("user:ri", "1", request_id="")
    with pytest.raises(budget.InvalidArgumentError):
        m.record_spend("ri", "1", request_id="")
    assert len(m.events()) == before
    [st] = m.status("global")
    assert st.spent == 0 and st.held == 0
    assert m.reserve("user:ri", "1", request_id=None).request_id != ""


def test_errors_are_also_builtin_kinds() -> None:
    assert issubclass(budget.InvalidArgumentError, ValueError)
    assert issubclass(budget.BudgetOverflowError, OverflowError)
    assert issubclass(budget.StoreUnavailableError, ConnectionError)
    assert issubclass(budget.UnknownModelError, LookupError)
    e = budget.InvalidArgumentError("x")
    assert e.code == "invalid_argument" and e.code_number == 1


@pytest.mark.parametrize(
    "subject",
    ["user:", "nokind", "user:\x01", ["user:ok", 3], {"user": 5}, 42, None, "a" * 70 + ":x"],
)
def test_bad_subjects(make: Make, subject: Any) -> None:
    m = make()
    with pytest.raises(budget.InvalidArgumentError):
        m.reserve(subject, "1")


def test_subject_forms(make: Make) -> None:
    m = make()
    for s in ("user:a", ["tenant:t", "user:a"], ("tenant:t", "user:a"), {"tenant": "t", "user": "a"},
              budget.Subject(["tenant:t", "user:a"])):
        assert m.reserve(s, "0.01").allowed
    subj = budget.Subject({"tenant": "t", "user": "a"})
    assert list(subj) == ["global", "tenant:t", "user:a"] and "user:a" in subj and len(subj) == 3


def test_subject_compares_with_anything_and_hashes() -> None:
    a, b = budget.Subject(["tenant:t", "user:a"]), budget.Subject({"tenant": "t", "user": "a"})
    assert a == b and hash(a) == hash(b) and {a: 1}[b] == 1
    assert a != "user:a" and a != ["tenant:t", "user:a"] and a != budget.Subject("user:a")
    assert "user:a" not in [a] and a in ["x", b]


def test_bad_other_arguments(make: Make) -> None:
    m = make()
    with pytest.raises(budget.InvalidArgumentError):
        m.reserve("user:a", "1", ttl=float("nan"))
    with pytest.raises(budget.InvalidArgumentError):
        m.reserve("user:a", "1", buffer=-1.0)
    with pytest.raises(budget.InvalidArgumentError):
        m.reserve("user:a", "1", metadata=["x"])  # type: ignore[arg-type]
    with pytest.raises(budget.InvalidArgumentError):
        m.reserve("user:a", "1", tokens=-5)
    with pytest.raises(budget.InvalidArgumentError):
        m.reserve("user:a", "1", tokens=1.5)  # type: ignore[arg-type]
    with pytest.raises(budget.NotFoundError):
        m.commit("no-such-request", "1")
    # A commit without any charge is refused, not a silent zero: the hold stays, and 0 commits.
    r = m.reserve("user:nocharge", "1").reservation
    assert r is not None
    with pytest.raises(budget.InvalidArgumentError, match="actual charge"):
        m.commit(r)
    with pytest.raises(budget.InvalidArgumentError, match="actual charge"):
        m.commit(r.request_id)
    with pytest.raises(budget.InvalidArgumentError, match="actual charge"):
        m.commit(r, model="gpt-4o")
    assert [e.type for e in m.events(request_id=r.request_id)] == ["reserve"]  # still held
    rc = m.commit(r, 0)  # an explicit zero is a free call
    assert rc.charged == 0 and rc.released == 1
    with pytest.raises(budget.InvalidArgumentError):
        m.set_limit("user:*", "fortnight", "1")
    with pytest.raises(budget.InvalidArgumentError):
        budget.Limit("user:*", "day", "1", metric="dollars")
    with pytest.raises(budget.InvalidArgumentError):
        budget.Usage(input_tokens=-1)
    with pytest.raises(budget.InvalidArgumentError):
        budget.Usage(input_tokens=1, cache_read_tokens=2)


@pytest.mark.parametrize("big", [10**400, 2**64, -(10**30)])
def test_huge_ints_for_durations_and_factors_are_typed_errors(make: Make, clock: budget.ManualClock, big: int) -> None:
    m = make(limits={"global": {"day": "10"}})
    before = len(m.events())
    per_call: List[Dict[str, Any]] = [{"ttl": big}, {"buffer": big}]
    for kw in per_call:
        with pytest.raises(budget.InvalidArgumentError):
            m.reserve("user:hi", "1", **kw)
    per_manager: List[Dict[str, Any]] = [{"default_ttl": big}, {"buffer": big}, {"growth_step": big},
                                         {"store_timeout": big}]
    for kw in per_manager:
        with pytest.raises(budget.InvalidArgumentError):
            BudgetManager("memory", **kw)
    with pytest.raises(budget.InvalidArgumentError):
        clock.advance(big)
    assert len(m.events()) == before
    [st] = m.status("global")
    assert st.held == 0 and st.spent == 0


@pytest.mark.parametrize("alerts", [[-5], [50.5], [True], [2**40], ["50"], "50", 50, [None]])
def test_bad_alert_thresholds_are_typed_errors(make: Make, alerts: Any) -> None:
    m = make()
    with pytest.raises(budget.InvalidArgumentError):
        budget.Limit("user:*", "day", "1", alerts=alerts)
    with pytest.raises(budget.InvalidArgumentError):
        m.set_limit("user:*", "day", "1", alerts=alerts)
    with pytest.raises(budget.InvalidArgumentError):
        m.set_limits({"user:*": {"day": {"amount": "1", "alerts": alerts}}})
    with pytest.raises(budget.InvalidArgumentError):
        m.set_limits([{"scope": "user:*", "window": "day", "amount": "1", "alerts": alerts}])
    assert m.limits() == []
    # JSON and TOML thresholds of the wrong type, too
    with pytest.raises(budget.InvalidArgumentError):
        budget.load_limits('{"user:*": {"day": {"amount": 1, "alerts": [50.5]}}}')
    assert budget.Limit("user:*", "day", "1", alerts=(50, 80, 100)).alerts == [50, 80, 100]


def test_limits_from_dict_list_json_toml(make: Make, tmp_path: Path) -> None:
    spec = {
        "defaults": {"user": {"day": "10", "tokens:minute": 1000}},
        "limits": {
            "project:launch": {"day": "500", "month": {"amount": "5000", "alerts": [50, 80, 100]}},
            "global": {"day": 5000},
            "user:vip": {"day": "100"},
            "tenant:acme": [{"window": "total", "amount": "250"}],
        },
    }
    want = {
        "user:*|cost|day": Decimal("10"), "user:*|tokens|minute": 1000,
        "project:launch|cost|day": Decimal("500"), "project:launch|cost|month": Decimal("5000"),
        "global|cost|day": Decimal("5000"), "user:vip|cost|day": Decimal("100"),
        "tenant:acme|cost|total": Decimal("250"),
    }
    ls = budget.load_limits(spec)
    assert {limit.key: limit.amount for limit in ls} == want
    assert [x for x in ls if x.key == "project:launch|cost|month"][0].alerts == [50, 80, 100]
    jf = tmp_path / "limits.json"
    jf.write_text(json.dumps(spec))
    assert {x.key for x in budget.load_limits(jf)} == set(want)
    assert {x.key for x in budget.load_limits(json.dumps(spec))} == set(want)
    tf = tmp_path / "limits.toml"
    tf.write_text(
        '[defaults.user]\nday = "10"\n"tokens:minute" = 1000\n'
        '[limits."project:launch"]\nday = 500\nmonth = { amount = 5000.00, alerts = [50, 80, 100] }\n'
        '[limits.global]\nday = 5000\n[limits."user:vip"]\nday = "100"\n'
        '[[limits."tenant:acme"]]\nwindow = "total"\namount = "250"\n'
    )
    assert {x.key: x.amount for x in budget.load_limits(tf)} == want
    lst = [{"scope": "user:*", "window": "day", "amount": 0.1}, budget.Limit("global", "hour", 3)]
    assert [x.key for x in budget.load_limits(lst)] == ["user:*|cost|day", "global|cost|hour"]
    assert budget.load_limits(lst)[0].amount == Decimal("0.1")
    # kind default + per-id override
    m = make(limits=tf)
    assert m.check("user:someone", "10").allowed and not m.check("user:someone", "10.01").allowed
    assert m.check("user:vip", "50").allowed
    assert len(m.limits()) == len(want)


@pytest.mark.parametrize("bad", ["{not json", "[1, 2]", '{"user:*": {"day": "x"}}', '{"user:*": 5}',
                                 '{"user:*": {"day": null}}', '{"limits": [{"scope": "user:*"}]}'])
def test_malformed_limits(make: Make, bad: str) -> None:
    with pytest.raises(budget.InvalidArgumentError):
        make(limits=bad)


def test_malformed_toml(tmp_path: Path) -> None:
    f = tmp_path / "x.toml"
    f.write_text("[limits\nday=")
    with pytest.raises(budget.InvalidArgumentError):
        budget.load_limits(f)
    with pytest.raises(budget.InvalidArgumentError):
        budget.load_limits(tmp_path / "missing.json")


def test_grant_adjust_total_balance(make: Make) -> None:
    m = make(limits={"tenant:acme": {"total": "250"}})
    m.record("tenant:acme", "249")
    assert not m.check("tenant:acme", "2").allowed
    m.grant("tenant:acme", "100", reason="top-up", request_id="g1")
    [st] = m.status("tenant:acme")
    assert st.limit == Decimal("350") and st.granted == Decimal("100") and st.resets_at is None
    assert m.check("tenant:acme", "2").allowed
    m.adjust("tenant:acme", "-49", reason="refund")
    [st] = m.status("tenant:acme")
    assert st.spent == Decimal("200") and st.remaining == Decimal("150")
    types = [e.type for e in m.events()]
    assert "grant" in types and "adjust" in types


def test_hold_context_manager(make: Make) -> None:
    m = make(limits={"user:*": {"day": "1"}})
    with m.hold("user:h", "0.30", request_id="h1") as h:
        assert h.reservation.held == Decimal("0.3")
        h.consume("0.05")
        h.consume("0.05")
    assert h.receipt is not None and h.receipt.charged == Decimal("0.10")
    # explicit cost
    with m.hold("user:h", "0.30") as h2:
        h2.set_cost("0.20")
    assert h2.receipt is not None and h2.receipt.charged == Decimal("0.20")
    # nothing said: the estimate is charged (never undercharge)
    with m.hold("user:h", "0.05") as h3:
        pass
    assert h3.receipt is not None and h3.receipt.charged == Decimal("0.05")
    # exception before any consumption: released
    with pytest.raises(RuntimeError):
        with m.hold("user:h", "0.30") as h4:
            raise RuntimeError("provider failed")
    assert h4.receipt is not None and h4.receipt.charged == 0
    [st] = m.status("user:h")
    assert st.spent == Decimal("0.35") and st.held == 0
    # denied on entry
    with pytest.raises(budget.BudgetExceededError) as ei:
        with m.hold("user:h", "0.70"):
            pass
    assert ei.value.scope == "user:h"


def test_hold_exception_after_the_real_cost_charges_it(make: Make) -> None:
    # The real cost was given, then the block failed (post-processing): charging only what was
    # consumed so far would undercharge; the library never undercharges.
    m = make(limits={"user:*": {"day": "1"}})
    with pytest.raises(RuntimeError):
        with m.hold("user:rc", "0.50") as h:
            h.consume("0.10")
            h.set_cost("0.30")
            raise RuntimeError("post-processing failed")
    assert h.receipt is not None and h.receipt.charged == Decimal("0.30")
    [st] = m.status("user:rc")
    assert st.spent == Decimal("0.30") and st.held == 0


def test_hold_with_an_unchargeable_final_cost_leaves_no_hold(make: Make, pricing: budget.PricingEngine) -> None:
    # A bad cost given to set_cost/set_usage fails at the end of the block: the error is raised,
    # and the hold is settled as for a failed block (consumed committed, else released), not
    # left held until its TTL.
    m = make(limits={"user:*": {"day": "1"}}, pricing=pricing)
    with pytest.raises(budget.InvalidArgumentError):
        with m.hold("user:bf", "0.50") as h:
            h.consume("0.10")
            h.set_cost("12,50")
    assert h.receipt is not None and h.receipt.charged == Decimal("0.10")
    with pytest.raises(budget.InvalidArgumentError):
        with m.hold("user:bf", "0.50") as h:
            h.set_usage(budget.Usage(output_tokens=5))  # no model anywhere
    assert h.receipt is not None and h.receipt.charged == 0
    with pytest.raises(budget.UnknownModelError):
        with m.hold("user:bf", "0.50") as h:
            h.set_usage(budget.Usage(output_tokens=5), model="no-such-model")
    assert h.receipt is not None and h.receipt.charged == 0

    async def failing_async_block() -> None:
        async with m.ahold("user:bf", "0.50") as ah:
            await ah.consume("0.05")
            ah.set_cost(float("nan"))

    with pytest.raises(budget.InvalidArgumentError):
        asyncio.run(failing_async_block())
    [st] = m.status("user:bf")
    assert st.held == 0 and st.spent == Decimal("0.15")


def test_hold_commit_without_a_cost_follows_the_exit_rule(make: Make) -> None:
    # h.commit() with no cost charges what the end of the block would: the cost given by
    # set_cost/set_usage, else what was consumed, else the estimate; never zero by omission.
    m = make(limits={"user:*": {"day": "5"}})
    with m.hold("user:hc", "0.50") as h:
        h.consume("0.10")
        assert h.commit().charged == Decimal("0.10")
    with m.hold("user:hc", "0.50") as h:
        h.consume("0.10")
        h.set_cost("0.30")
        assert h.commit().charged == Decimal("0.30")
    with m.hold("user:hc", "0.50") as h:
        assert h.commit().charged == Decimal("0.50")

    async def async_block() -> Decimal:
        async with m.ahold("user:hc", "0.50") as ah:
            await ah.consume("0.20")
            return Decimal((await ah.commit()).charged)

    assert asyncio.run(async_block()) == Decimal("0.20")
    [st] = m.status("user:hc")
    assert st.spent == Decimal("1.10") and st.held == 0


def test_consume_after_the_hold_is_settled_stops(make: Make) -> None:
    # A stream metered after its hold was committed or released must stop (the kill switch),
    # through the Reservation as through its request id; nothing more is charged.
    m = make(limits={"user:*": {"day": "1"}})
    d = m.reserve("user:st", "0.50")
    assert d.reservation is not None
    assert m.consume(d.reservation, "0.10").ok
    m.commit(d.reservation, "0.10")
    r = m.consume(d.reservation, "0.10")
    assert r.stop and r.denial is not None and "committed" in r.denial.message
    assert m.consume(d.reservation.request_id, "0.10").stop
    with pytest.raises(budget.BudgetExceededError) as ei:
        with m.hold("user:st", "0.20") as h:
            h.release()
            h.consume("0.05")
    assert ei.value.stopped
    [st] = m.status("user:st")
    assert st.spent == Decimal("0.10") and st.held == 0


def test_hold_stop_raises_and_commits_consumed(make: Make) -> None:
    m = make(limits={"user:*": {"day": "1"}}, min_growth="0.01", growth_step=0.5)
    with pytest.raises(budget.BudgetExceededError) as ei:
        with m.hold("user:s", "0.50") as h:
            for _ in range(100):
                h.consume("0.10")
    assert ei.value.stopped and h.stopped
    # The refused chunk was generated too: what was consumed is charged, and reported over the limit.
    assert h.receipt is not None and h.receipt.charged == h.consumed == Decimal("1.10")
    assert h.receipt.over_limit
    [st] = m.status("user:s")
    assert st.spent == Decimal("1.10") and st.held == 0


def test_expiry_with_manual_clock(make: Make, clock: budget.ManualClock) -> None:
    m = make(limits={"global": {"day": "10"}}, persist_every="0.01")
    d = m.reserve("user:e", "1", ttl=timedelta(seconds=5))
    assert d.reservation is not None
    assert d.reservation.expires_at == clock.now() + timedelta(seconds=5)
    m.consume(d.reservation, "0.25")
    clock.advance(10)
    assert m.expire_holds() == 1
    [st] = m.status("global")
    assert st.held == 0 and st.spent == Decimal("0.25")
    late = m.commit(d.reservation, "0.40")
    assert late.after_expiry
    [st] = m.status("global")
    assert st.spent == Decimal("0.40")


def test_window_rollover(make: Make, clock: budget.ManualClock) -> None:
    m = make(limits={"user:*": {"day": "1"}})
    m.record("user:w", "1")
    assert not m.check("user:w", "0.01").allowed
    clock.advance(timedelta(hours=12))
    assert m.check("user:w", "0.01").allowed


def test_iana_time_zone(make: Make, clock: budget.ManualClock) -> None:
    # 2026-03-29 lasts 23 hours in Paris: its day window ends at 2026-03-29T22:00Z.
    m = make(limits={"user:*": {"day": "1"}}, time_zone="Europe/Paris")
    clock.set(datetime(2026, 3, 29, 0, 0, tzinfo=timezone.utc))  # 01:00 in Paris
    m.record("user:p", "1")
    d = m.check("user:p", "0.01")
    assert not d.allowed and d.denial is not None
    assert d.denial.resets_at == datetime(2026, 3, 29, 22, 0, tzinfo=timezone.utc)
    with pytest.raises(budget.InvalidArgumentError):
        budget.BudgetManager("memory", time_zone="Mars/Olympus")


def test_token_and_request_limits(make: Make) -> None:
    m = make(limits={"key:*": {"tokens:minute": 100, "requests:minute": 2}})
    assert m.reserve("key:k", "0.01", tokens=60).allowed
    d = m.reserve("key:k", "0.01", tokens=60)
    assert not d.allowed and d.denial is not None and d.denial.metric == "tokens"
    assert d.denial.remaining == 40 and isinstance(d.denial.remaining, int) and not d.denial.hard
    assert m.reserve("key:k", "0.01", tokens=10).allowed
    d3 = m.reserve("key:k", "0.01", tokens=1)
    assert not d3.allowed and d3.denial is not None and d3.denial.metric == "requests"


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_alert_callbacks_from_threads(make: Make) -> None:
    m = make(limits={"user:*": {"day": {"amount": "1", "alerts": [50, 100]}}})
    seen: List[budget.Alert] = []
    denials: List[str] = []
    lock = threading.Lock()

    def on_alert(a: budget.Alert) -> None:
        with lock:
            seen.append(a)

    def boom(a: budget.Alert) -> None:
        raise RuntimeError("a failing callback must not break the manager")

    m.on_alert(on_alert)
    m.on_alert(boom)  # reported as unraisable, never propagated into the engine
    m.on_denial(lambda d, s: denials.append(d.scope))
    threads = [threading.Thread(target=lambda: [m.record("user:cb", "0.1") for _ in range(3)]) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(a.threshold_pct for a in seen) == [50, 100]
    assert seen[0].scope == "user:cb" and seen[0].limit == Decimal("1")
    assert not m.check("user:cb", "0.1").allowed  # 1.2 spent of 1
    m.reserve("user:cb", "5")
    assert "user:cb" in denials


def test_a_callback_referring_to_its_manager_does_not_keep_it_alive(store_url: str) -> None:
    # The usual shape: a service owns the manager and observes it with its own methods.
    class Service:
        def __init__(self) -> None:
            self.m = BudgetManager(store_url, limits={"user:*": {"day": {"amount": "1", "alerts": [50]}}})
            self.alerts: List[budget.Alert] = []
            self.m.on_alert(self.alerted)
            self.m.on_denial(lambda d, s: self.m.status("global"))

        def alerted(self, a: budget.Alert) -> None:
            self.alerts.append(a)

    svc = Service()
    svc.m.record("user:gc", "0.6")
    assert [a.threshold_pct for a in svc.alerts] == [50]  # the relay reaches the callback
    assert not svc.m.reserve("user:gc", "1").allowed  # a denial callback that uses the manager
    manager = weakref.ref(svc.m)
    del svc
    gc.collect()
    assert manager() is None, "the cycle service -> manager -> callback -> service was not collected"


def test_threads_hammering_one_manager_never_overspend(make: Make) -> None:
    m = make(limits={"global": {"day": "1.00"}})
    allowed: List[int] = []
    lock = threading.Lock()

    def worker() -> None:
        n = 0
        for _ in range(40):
            d = m.reserve("user:t", "0.01")
            if d.allowed:
                assert d.reservation is not None
                m.consume(d.reservation, "0.005")
                m.commit(d.reservation, "0.01")
                n += 1
        with lock:
            allowed.append(n)

    threads = [threading.Thread(target=worker) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    [st] = m.status("global")
    assert sum(allowed) == 100
    assert st.spent == Decimal("1.00") and st.held == 0
    assert m.verify().ok


def test_ledger_export_verify(make: Make) -> None:
    m = make(limits={"global": {"day": "10"}})
    d = m.reserve(["tenant:l", "user:l"], "1", request_id="led", metadata={"feature": "chat"}, provider="openai")
    assert d.reservation is not None
    m.commit(d.reservation, "0.5")
    ev = m.events(request_id="led")
    assert [e.type for e in ev] == ["reserve", "commit"]
    assert ev[1].amount == Decimal("0.5") and ev[0].subject == ["global", "tenant:l", "user:l"]
    assert len(ev[1].hash) == 64 and ev[1].prev_hash == ev[0].hash
    lines = m.export_jsonl().strip().splitlines()
    assert len(lines) == len(m.events()) and json.loads(lines[-1])["request_id"] == "led"
    assert m.export_csv().count("\n") == len(lines) + 1
    rows = m.aggregate(by_scope=True)
    assert any(r.scope == "user:l" and r.spent == Decimal("0.5") for r in rows)
    rep = m.verify()
    assert rep.ok and rep.chain_ok and rep.events == len(lines)
    assert "budget" in m.metrics_text()


def test_close(make: Make) -> None:
    m = make()
    m.close()
    assert m.closed
    with pytest.raises(budget.InvalidArgumentError):
        m.reserve("user:a", "1")
    m.close()


def test_coreason_style(make: Make) -> None:
    m = make(limits={"user:*": {"day": "1"}, "project:*": {"day": "1.5"}})
    m.check_availability("alice", estimated_cost=0.5)
    r = m.record_spend("alice", 0.9, project_id="p1", model="gpt-4o")
    assert r.charged == Decimal("0.9")
    with pytest.raises(budget.BudgetExceededError) as ei:
        m.check_availability("alice", "p1", estimated_cost=0.2)
    assert ei.value.scope == "user:alice"
    m.record_spend("bob", "0.8", project_id="p1")
    with pytest.raises(budget.BudgetExceededError) as ei2:
        m.check_availability("carol", "p1", estimated_cost="0.01")
    assert ei2.value.scope == "project:p1" and ei2.value.hard
    with pytest.raises(ValueError):
        m.check_availability("  ")
    with pytest.raises(ValueError):
        m.record_spend("", 1)


def test_record_spend_records_the_model(make: Make) -> None:
    # The ledger's model field is what aggregate(by_model=True) and the exports group by.
    m = make(pricing=True)
    r = m.record_spend("alice", "0.25", project_id="p1", model="gpt-4o", request_id="rs1")
    assert r.model == "gpt-4o"
    r2 = asyncio.run(m.arecord_spend("bob", "0.5", model="my-own-model", request_id="rs2"))  # unpriced: fine
    assert r2.model == "my-own-model"
    assert [e.model for e in m.events(request_id="rs1")] == ["gpt-4o"]
    rows = {(row.scope, row.model): row.spent for row in m.aggregate(by_model=True)}
    assert rows[("user:alice", "gpt-4o")] == Decimal("0.25")
    assert rows[("user:bob", "my-own-model")] == Decimal("0.5")
    assert m.record_spend("carol", 0, model="gpt-4o", request_id="rs3").charged == 0  # free: fine too
    assert [e.metadata for e in m.events(request_id="rs3")] == ['{"model":"gpt-4o"}']


def test_worker_processes_create_their_own_manager_after_fork(make: Make, store_kind: str, store_url: str) -> None:
    # A pre-forking server (gunicorn --preload): the parent's manager refuses to work in the
    # child (a memory store is the child's own copy, so it goes on working there); one made in
    # the child works, and its generated ids differ from the parent's.
    import os

    m = make(limits={"user:*": {"day": "10.00"}})
    parent_ids = set()
    for _ in range(3):
        held = m.reserve(["user:p"], "0.10").reservation
        assert held is not None
        parent_ids.add(held.request_id)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report through the pipe, never return into pytest
        code = 0
        try:
            if store_kind == "memory":
                copy = m.reserve(["user:c"], "0.10").reservation
                code = 0 if copy is not None and copy.request_id not in parent_ids else 1
            else:
                try:
                    m.reserve(["user:c"], "0.10")
                    code = 1
                except budget.InvalidArgumentError as e:
                    code = 0 if "fork()" in str(e) else 2
            mine = budget.BudgetManager(store_url)
            d = mine.reserve(["user:c"], "0.10")
            if not d.allowed or d.reservation is None:
                code = 3
            else:
                os.write(w, d.reservation.request_id.encode())
            mine.close()
        except BaseException:
            code = 4
        os._exit(code)
    os.close(w)
    child_id = os.read(r, 100).decode()
    os.close(r)
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
    assert child_id and child_id not in parent_ids
    assert m.reserve(["user:p"], "0.10").allowed  # the parent goes on
    assert m.verify().ok


def test_a_stream_stop_is_reported_to_on_denial(make: Make) -> None:
    # on_denial is documented for every denial: reserve, check and a stream's Stop (the C API:
    # "the budget_consume that was denied"). A Stop was never reported.
    m = make(limits={"user:*": {"day": "1.00"}})
    seen: List[Any] = []
    m.on_denial(lambda d, s: seen.append((d.scope, d.window, list(s))))
    res = m.reserve(["tenant:t", "user:st"], "0.50", request_id="st-1").reservation
    assert res is not None
    assert m.consume(res, "0.40").ok
    assert seen == []
    assert m.consume(res, "0.70").stop  # 1.10 > 1.00: the hold cannot grow
    assert seen == [("user:st", "day", ["global", "tenant:t", "user:st"])]
    assert m.consume(res, "0.01").stop  # still stopped: reported once
    assert len(seen) == 1
    m.commit(res, "1.10")
    assert m.consume(res, "0.01").stop  # committed: no budget denial, nothing reported
    # A hold committed while its stream ran: Stop, reason not_held (no limit refused it).
    other = m.reserve("user:st3", "0.10").reservation
    assert other is not None
    m.commit(other, "0.05")
    settled = m.consume(other, "0.01")
    assert settled.stop
    assert settled.denial is not None and settled.denial.reason == "not_held" and settled.denial.scope == ""
    assert len(seen) == 1
    # By request id: the subject comes from the stream state.
    m.reserve("user:st2", "0.50", request_id="st-2")
    assert m.consume("st-2", "2.00").stop
    assert seen[-1] == ("user:st2", "day", ["global", "user:st2"])
