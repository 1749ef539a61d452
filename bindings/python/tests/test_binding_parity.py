"""Where the Python and Node packages must agree (docs/python.md and docs/node.md say so):
observers are added and removable. The Node side is bindings/node/test/parity.test.mjs."""
from __future__ import annotations

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
