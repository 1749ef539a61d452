"""Where the Python and Node packages must agree (docs/python.md and docs/node.md say so):
observers are added and removable, ledger queries take the same filters in every call and
refuse unknown or bad ones, status() defaults to global. The Node side is
bindings/node/test/parity.test.mjs."""
from __future__ import annotations

import csv
import io
import json
import re
import sys
from decimal import Decimal
from typing import Any, Callable, List, Tuple

import pytest

import budget
from budget import BudgetManager

Make = Callable[..., BudgetManager]


# ---- observers ------------------------------------------------------------------------------

def test_on_alert_adds_and_returns_a_remover(make: Make) -> None:
    m = make(limits={"user:*": {"day": {"amount": "10", "alerts": [20, 40, 60, 80]}}})
    calls: List[Tuple[str, int]] = []
    remove_first = m.on_alert(lambda a: calls.append(("first", a.threshold_pct)))
    m.on_alert(lambda a: calls.append(("second", a.threshold_pct)))
    m.record("user:obs", "2")  # crosses 20%: both, in registration order
    assert calls == [("first", 20), ("second", 20)]
    remove_first()
    remove_first()  # removing twice is a no-op
    m.record("user:obs", "2")  # 40%
    assert calls[2:] == [("second", 40)]
    m.on_alert(None)  # removes every alert callback
    m.record("user:obs", "2")  # 60%: nobody is called
    assert calls[3:] == []
    twice: List[int] = []

    def cb(a: budget.Alert) -> None:
        twice.append(a.threshold_pct)

    m.on_alert(cb)
    m.on_alert(cb)  # the same function registered twice is called twice
    m.record("user:obs", "2")  # 80%
    assert twice == [80, 80]
    assert m.status("user:obs")[0].spent == Decimal("8")  # the operations were not disturbed


def test_on_denial_adds_and_returns_a_remover(make: Make) -> None:
    m = make(limits={"user:*": {"day": "1"}})
    seen: List[Tuple[str, str]] = []
    remove_a = m.on_denial(lambda d, s: seen.append(("a", d.scope)))
    m.on_denial(lambda d, s: seen.append(("b", str(s))))
    assert not m.reserve("user:den", "5").allowed
    assert seen == [("a", "user:den"), ("b", "global,user:den")]
    remove_a()
    assert not m.check("user:den", "5").allowed
    assert seen[2:] == [("b", "global,user:den")]
    m.on_denial(None)
    assert not m.check("user:den", "5").allowed
    assert len(seen) == 3


def test_observers_given_to_the_constructor(make: Make) -> None:
    alerts: List[int] = []
    denials: List[str] = []
    m = make(limits={"user:*": {"day": {"amount": "1", "alerts": [50]}}},
             on_alert=lambda a: alerts.append(a.threshold_pct), on_denial=lambda d, s: denials.append(d.scope))
    m.record("user:ctor", "0.6")
    assert not m.reserve("user:ctor", "1").allowed
    assert alerts == [50] and denials == ["user:ctor"]
    with pytest.raises(budget.InvalidArgumentError):
        make(on_alert="not callable")


def test_a_raising_callback_is_reported_and_the_others_still_run(make: Make) -> None:
    m = make(limits={"user:*": {"day": {"amount": "1", "alerts": [50]}}})
    got: List[int] = []

    def boom(a: budget.Alert) -> None:
        raise RuntimeError("boom")

    m.on_alert(boom)  # first: must not keep the next one from running
    m.on_alert(lambda a: got.append(a.threshold_pct))
    reported: List[Any] = []
    hook = sys.unraisablehook  # set here, inside the test (pytest installs its own per phase)
    sys.unraisablehook = lambda u: reported.append((u.exc_type, str(u.exc_value), u.err_msg, u.object))
    try:
        rc = m.record("user:boom", "0.6")
    finally:
        sys.unraisablehook = hook
    assert rc.charged == Decimal("0.6")
    assert got == [50]
    assert [r[:2] for r in reported] == [(RuntimeError, "boom")]


def test_observers_of_a_closed_manager(make: Make) -> None:
    m = make()
    remove = m.on_alert(lambda a: None)
    m.close()
    remove()  # removing never fails
    m.on_alert(None)
    with pytest.raises(budget.InvalidArgumentError, match="closed"):
        m.on_alert(lambda a: None)
    with pytest.raises(budget.InvalidArgumentError, match="closed"):
        m.on_denial(lambda d, s: None)
    with pytest.raises(budget.InvalidArgumentError):
        make().on_alert("x")  # type: ignore[arg-type]


# ---- ledger queries -------------------------------------------------------------------------

def _ledger(make: Make) -> BudgetManager:
    m = make(limits={"global": {"day": "100"}})
    d = m.reserve(["tenant:q", "user:q"], "2", request_id="q-1", model="m-1")
    assert d.reservation is not None
    m.commit(d.reservation, "1.5")
    m.record(["tenant:q", "user:r"], "0.25", request_id="q-2", model="m-2")
    m.record(["tenant:q", "user:r"], "0.75", request_id="q-3")
    return m


def test_every_ledger_call_filters_by_request_id_type_after_seq_and_limit(make: Make) -> None:
    m = _ledger(make)
    # events (the reference)
    assert [e.type for e in m.events(request_id="q-1")] == ["reserve", "commit"]
    assert [e.request_id for e in m.events(type="record")] == ["q-2", "q-3"]
    # JSON lines
    lines = [json.loads(x) for x in m.export_jsonl(request_id="q-1").splitlines()]
    assert [(x["request_id"], x["type"]) for x in lines] == [("q-1", "reserve"), ("q-1", "commit")]
    lines = [json.loads(x) for x in m.export_jsonl(type="commit").splitlines()]
    assert [x["request_id"] for x in lines] == ["q-1"]
    # CSV (a header line, then one row per event)
    rows = list(csv.DictReader(io.StringIO(m.export_csv(type="record", request_id="q-3"))))
    assert [(r["request_id"], r["type"]) for r in rows] == [("q-3", "record")]
    first = m.events()[0].seq
    rows = list(csv.DictReader(io.StringIO(m.export_csv(after_seq=first, limit=2))))
    assert [r["seq"] for r in rows] == [str(first + 1), str(first + 2)]
    # aggregate
    spent = {r.scope: r.spent for r in m.aggregate(request_id="q-2")}
    assert spent == {"global": Decimal("0.25"), "tenant:q": Decimal("0.25"), "user:r": Decimal("0.25")}
    spent = {r.scope: r.spent for r in m.aggregate(type="commit", by_scope=True)}
    assert spent["tenant:q"] == Decimal("1.5")
    assert {r.scope for r in m.aggregate(scope="user:r", limit=1)} <= {"global", "tenant:q", "user:r"}
    # None is "no filter" everywhere
    assert len(m.export_jsonl(request_id=None, type=None, limit=None).splitlines()) == len(m.events())


@pytest.mark.parametrize("call", ["events", "export_jsonl", "export_csv", "aggregate"])
@pytest.mark.parametrize("kwargs", [
    {"requestId": "q-1"},            # Node's spelling
    {"from_": 0},
    {"to": 0},                       # Node's name; Python's is until
    {"scopes": "user:q"},
    {"by_models": True},
    {"type": "explode"},             # not an event type
    {"limit": -1},                   # was read as 0: an empty export
    {"after_seq": -1},
    {"limit": 1.5},
    {"scope": "not a scope"},
    {"request_id": 5},
    {"since": "yesterday"},
])
def test_unknown_or_bad_query_arguments_are_invalid_argument_errors(make: Make, call: str, kwargs: Any) -> None:
    m = _ledger(make)
    with pytest.raises(budget.InvalidArgumentError):
        getattr(m, call)(**kwargs)


@pytest.mark.parametrize("bad", ["yes", 1, None])
def test_aggregate_groupings_are_bools(make: Make, bad: Any) -> None:
    m = _ledger(make)
    with pytest.raises(budget.InvalidArgumentError):
        m.aggregate(by_model=bad)
    # by_model alone groups by scope (the default) and model, as in C++ and Node
    rows = {(r.scope, r.model): r.spent for r in m.aggregate(by_model=True)}
    assert rows[("user:r", "m-2")] == Decimal("0.25") and rows[("user:r", "")] == Decimal("0.75")
    assert all(scope for scope, _ in rows)


def test_status_defaults_to_global(make: Make) -> None:
    m = make(limits={"global": {"day": "10"}})
    m.record("user:s", "1")
    [st] = m.status()
    assert st.scope == "global" and st.spent == Decimal("1")


# ---- request metadata -----------------------------------------------------------------------

def test_metadata_values_are_written_as_node_writes_them(make: Make) -> None:
    m = make()
    m.record("user:md", "1", request_id="md-1",
             metadata={"s": "text", "retry": True, "cached": False, "n": 2, "x": 1.5, "d": Decimal("0.25")})
    [e] = m.events(request_id="md-1")
    assert json.loads(e.metadata) == {"s": "text", "retry": "true", "cached": "false", "n": "2", "x": "1.5", "d": "0.25"}
    bads: List[Any] = [None, {"a": 1}, [1, 2], b"x"]
    for bad in bads:
        with pytest.raises(budget.InvalidArgumentError):
            m.record("user:md", "1", metadata={"k": bad})
    assert len(m.events()) == 1  # nothing recorded by the refused calls


# ---- money: a float is read as Node reads a number --------------------------------------------
# Through its shortest round-trip text (repr here, String(x) in Node), exactly: at most 9
# fractional digits, else an InvalidArgumentError naming it (never a rounding: until
# 2026-12-04 Python rounded 1e-10 to 0 and 0.1 + 0.2 to 0.30 where Node refused them).

FLOATS_READ_EXACTLY = [(0.1, 100_000_000), (1.23456789, 1_234_567_890), (1e-9, 1), (-1e-9, -1), (1.5e-7, 150),
                       (-0.0, 0), (2.0, 2_000_000_000), (9.2e9, 9_200_000_000_000_000_000),
                       (123456789.12345679, 123_456_789_123_456_790)]
FLOATS_FINER_THAN_A_NANO = [1e-10, 0.1 + 0.2, 2.5e-10, -1e-10, 1.0000000001, 0.123456789012, 5e-324]
FLOATS_OUT_OF_RANGE = [9.3e9, -9.3e9, 1e21, 1.7976931348623157e308]


@pytest.mark.parametrize("value,nanos", FLOATS_READ_EXACTLY)
def test_a_float_is_read_through_its_repr(value: float, nanos: int) -> None:
    assert budget.money(value).nanos == nanos


@pytest.mark.parametrize("value", FLOATS_FINER_THAN_A_NANO)
def test_a_float_finer_than_a_nano_is_refused_naming_it(value: float) -> None:
    with pytest.raises(budget.InvalidArgumentError) as ei:
        budget.money(value)
    assert f"amount: invalid money amount '{value!r}': more than 9 fractional digits" in str(ei.value)


@pytest.mark.parametrize("value", FLOATS_OUT_OF_RANGE)
def test_a_float_out_of_the_money_range_is_an_overflow_naming_it(value: float) -> None:
    with pytest.raises(budget.BudgetOverflowError, match=re.escape(f"amount: money amount out of range: {value!r}") + "$"):
        budget.money(value)


def _money_calls(m: BudgetManager, r: Any, bad: float) -> List[Tuple[str, Callable[[], object]]]:
    return [
        ("reserve", lambda: m.reserve("user:fl", bad)),
        ("check", lambda: m.check("user:fl", bad)),
        ("consume", lambda: m.consume(r, bad)),
        ("commit", lambda: m.commit(r, bad)),
        ("record", lambda: m.record("user:fl", bad)),
        ("grant", lambda: m.grant("tenant:fl", bad)),
        ("adjust", lambda: m.adjust("user:fl", bad)),
        ("set_limit", lambda: m.set_limit("user:*", "week", bad)),
        ("set_limits", lambda: m.set_limits({"user:*": {"month": "5", "week": bad}})),
        ("check_availability", lambda: m.check_availability("fl", estimated_cost=bad)),
        ("record_spend", lambda: m.record_spend("fl", bad)),
        ("hold", lambda: m.hold("user:fl", bad).__enter__()),
    ]


@pytest.mark.parametrize("bad", [1e-10, 0.1 + 0.2])
def test_every_money_argument_refuses_a_float_finer_than_a_nano_and_changes_nothing(make: Make, bad: float) -> None:
    m = make(limits={"user:*": {"day": "10"}, "tenant:fl": {"total": "5"}})
    r = m.reserve("user:fl", "1", request_id="fl-1").reservation
    assert r is not None

    def state() -> Any:
        return (len(m.events()), [(s.window, s.limit, s.spent, s.held) for sc in ("global", "user:fl", "tenant:fl")
                                  for s in m.status(sc)], sorted(repr(x) for x in m.limits()))

    before = state()
    for name, call in _money_calls(m, r, bad):
        with pytest.raises(budget.InvalidArgumentError, match=re.escape(f"invalid money amount '{bad!r}'")):
            call()
        assert state() == before, name
    assert m.commit(r, "0.5").charged == Decimal("0.5")  # the hold was left as it was
    with pytest.raises(budget.InvalidArgumentError, match=re.escape(repr(bad))):
        make(min_growth=bad)
    with pytest.raises(budget.InvalidArgumentError, match=re.escape(repr(bad))):
        make(persist_every=bad)
    p = budget.PricingEngine()
    p.set_price("m-1", provider="openai", input="0.000001", output="0.000002")
    with pytest.raises(budget.InvalidArgumentError, match=re.escape(repr(bad))):
        p.add_markup("10", fixed=bad)
    assert p.cost("m-1", budget.Usage(input_tokens=1000)) == Decimal("0.001")  # no markup was added


# ---- factors and consume ----------------------------------------------------------------------

def test_buffer_and_growth_step_are_read_exactly_as_in_node(make: Make) -> None:
    m = make()
    assert m.reserve("user:f", "1", buffer="1.5").estimate == Decimal("1.5")  # a str, as Node takes it
    assert m.reserve("user:f", "1", buffer=Decimal("1.25")).estimate == Decimal("1.25")
    assert m.reserve("user:f", "1", buffer=1.2).estimate == Decimal("1.2")
    assert m.reserve("user:f", "1", buffer=2).estimate == Decimal("2")
    bads: List[Any] = [1.23456, "1.23456", "abc", Decimal("NaN"), float("inf"), True, [1.2]]
    for bad in bads:
        with pytest.raises(budget.InvalidArgumentError):
            m.reserve("user:f", "1", buffer=bad)
    with pytest.raises(budget.InvalidArgumentError):
        make(growth_step=0.12345)
    make(growth_step=200, buffer="1.2")  # growth steps beyond 100x are Node's range too
    with pytest.raises(budget.InvalidArgumentError):
        make(growth_step=10001)


def test_consume_needs_an_amount_usage_or_tokens(make: Make) -> None:
    m = make()
    r = m.reserve("user:cn", "1").reservation
    assert r is not None
    with pytest.raises(budget.InvalidArgumentError, match="consume needs"):
        m.consume(r)
    with pytest.raises(budget.InvalidArgumentError, match="consume needs"):
        m.consume(r.request_id)
    assert m.consume(r, 0).ok and m.consume(r, tokens=5).ok  # an explicit zero, or tokens alone
    assert m.consume(r, "0.25").consumed == Decimal("0.25")


# ---- options Node has -------------------------------------------------------------------------

def test_reserve_and_record_take_a_reason_as_node_does(make: Make) -> None:
    m = make()
    m.reserve("user:why", "1", request_id="why-1", reason="retry of r-0")
    m.record("user:why", "1", request_id="why-2", reason="backfill")
    assert [json.loads(e.metadata).get("reason") for e in m.events(scope="user:why")] == ["retry of r-0", "backfill"]
    with pytest.raises(budget.InvalidArgumentError):
        m.record("user:why", "1", reason=5)  # type: ignore[arg-type]


def test_store_pool_size_and_stream_maxlen(store_url: str) -> None:
    with BudgetManager(store_url, store_pool_size=2, store_stream_maxlen=1000) as m:  # Node's storeOptions
        assert m.record("user:so", "1").charged == Decimal("1")
    for bad in ({"store_pool_size": 0}, {"store_pool_size": 257}, {"store_pool_size": 1.5},
                {"store_stream_maxlen": -1}, {"store_stream_maxlen": "10"}):
        with pytest.raises(budget.InvalidArgumentError):
            BudgetManager(store_url, **bad)
