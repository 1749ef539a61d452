"""Usage.service_tier: the provider's processing tier, priced at that tier's prices (the usage's
tier wins over PricingEngine's tier=), filled in by the extractors, kept in the ledger."""
from __future__ import annotations

import json
from decimal import Decimal
from typing import Any, Callable

import pytest

import budget
from budget import BudgetManager, Usage

Make = Callable[..., BudgetManager]

# Standard, priority and batch prices of one model (compact format, docs/pricing.md).
TABLE = """!budget-prices 1
tiered provider=openai mode=chat in=1e-6 out=2e-6 in/priority=2e-6 out/priority=4e-6 in/batch=5e-7 out/batch=1e-6
"""
# 1000 in + 500 out: standard 0.002, priority 0.004, batch 0.001.
STANDARD, PRIORITY, BATCH = Decimal("0.002"), Decimal("0.004"), Decimal("0.001")


@pytest.fixture
def tiered() -> budget.PricingEngine:
    p = budget.PricingEngine()
    assert p.load_compact(TABLE).loaded == 1
    return p


def call(tier: str = "standard", **kw: Any) -> Usage:
    return Usage(input_tokens=1000, output_tokens=500, service_tier=tier, **kw)


def test_usage_field() -> None:
    assert Usage().service_tier == "standard"
    assert Usage(service_tier=None).service_tier == "standard"
    assert Usage(service_tier="default").service_tier == "standard"  # OpenAI's name for it
    assert Usage(service_tier="default") == Usage()
    for name in ("standard", "batch", "flex", "priority"):
        u = call(name)
        assert u.service_tier == name
        assert u.to_dict()["service_tier"] == name
        assert Usage(**u.to_dict()) == u  # type: ignore[arg-type]  # round-trips (the stream guards rebuild a usage so)
    p = call("priority")
    assert repr(p) == "Usage(input_tokens=1000, output_tokens=500, service_tier='priority')"
    assert repr(call()) == "Usage(input_tokens=1000, output_tokens=500)"
    assert p != call() and hash(p) != hash(call())
    # one call's parts: a standard part takes the other's tier
    assert (Usage(input_tokens=1) + Usage(output_tokens=1, service_tier="flex")).service_tier == "flex"
    assert (Usage(input_tokens=1, service_tier="batch") + Usage(output_tokens=1)).service_tier == "batch"
    with pytest.raises(AttributeError):
        p.service_tier = "standard"  # type: ignore[misc]


@pytest.mark.parametrize("bad", ["Priority", "", "scale", "auto", " priority", 3, b"priority", True])
def test_usage_bad_tier_rejected(bad: Any, tiered: budget.PricingEngine) -> None:
    with pytest.raises(budget.InvalidArgumentError):
        Usage(input_tokens=1, service_tier=bad)
    for f in (tiered.cost, tiered.quote):
        with pytest.raises(budget.InvalidArgumentError):
            f("tiered", call(), tier=bad)
    with pytest.raises(budget.InvalidArgumentError):
        tiered.estimate("tiered", 1000, 500, tier=bad)


def test_priced_at_the_usage_tier(tiered: budget.PricingEngine) -> None:
    assert tiered.cost("tiered", call()) == STANDARD
    assert tiered.cost("tiered", call("priority")) == PRIORITY
    assert tiered.cost("tiered", call("batch")) == BATCH
    assert tiered.cost("tiered", call("flex")) == STANDARD  # no flex prices: standard
    q = tiered.quote("tiered", call("priority"))
    assert q.cost == PRIORITY and sum((i.amount for i in q.items), Decimal(0)) == PRIORITY
    # the usage's tier wins over tier=; tier= applies to a standard usage
    assert tiered.cost("tiered", call("priority"), tier="batch") == PRIORITY
    assert tiered.quote("tiered", call("batch"), tier="priority").cost == BATCH
    assert tiered.cost("tiered", call(), tier="priority") == PRIORITY
    assert tiered.cost("tiered", call(), tier="default") == STANDARD
    assert tiered.cost("tiered", call(), tier=None) == STANDARD
    assert tiered.estimate("tiered", 1000, 500, tier="priority") == PRIORITY
    assert tiered.estimate("tiered", 1000, 500, tier="batch") == BATCH


def test_extracted_from_the_response(tiered: budget.PricingEngine) -> None:
    body = {"id": "c1", "object": "chat.completion", "service_tier": "priority",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 1000, "completion_tokens": 500, "total_tokens": 1500}}
    u = budget.usage_from_response("openai", body)
    assert u.service_tier == "priority" and (u.input_tokens, u.output_tokens) == (1000, 500)
    assert budget.usage_from_response("openai-chat", json.dumps(body)) == u
    assert tiered.cost("tiered", u) == PRIORITY
    assert budget.usage_from_response("openai", {**body, "service_tier": "default"}).service_tier == "standard"
    a = budget.usage_from_response("anthropic", {"type": "message", "usage": {
        "input_tokens": 3, "output_tokens": 1, "service_tier": "batch"}})
    assert a.service_tier == "batch"
    s = budget.StreamUsage("openai")
    s.feed(b'data: {"service_tier":"flex","choices":[{"delta":{"content":"hello"}}]}\n\n')
    assert s.usage.service_tier == "flex"  # the estimate of a cut stream too
    s.feed(b'data: {"choices":[],"usage":{"prompt_tokens":7,"completion_tokens":3}}\n\ndata: [DONE]\n\n')
    assert s.finish().service_tier == "flex"


def test_manager_charges_the_usage_tier(make: Make, tiered: budget.PricingEngine) -> None:
    m = make(pricing=tiered, limits={"user:*": {"day": "1"}})
    d = m.reserve("user:t", call("priority"), model="tiered")
    assert d.allowed and d.estimate == PRIORITY and d.reservation is not None
    c = m.consume(d.reservation, usage=Usage(output_tokens=500, requests=0, service_tier="priority"))
    assert c.consumed == Decimal("0.002")  # 500 x 4e-6
    r = m.commit(d.reservation, usage=call("priority"))
    assert r.charged == PRIORITY
    rec = m.record("user:t", usage=call("batch"), model="tiered", provider="openai", request_id="rec-batch")
    assert rec.charged == BATCH
    std = m.record("user:t", usage=call(), model="tiered", request_id="rec-std")
    assert std.charged == STANDARD
    [st] = m.status("user:t")
    assert st.spent == PRIORITY + BATCH + STANDARD
    # the ledger keeps the tier: the event's usage, its JSON and the JSON lines export
    [commit] = m.events(request_id=d.reservation.request_id, type="commit")
    assert commit.usage is not None and commit.usage.service_tier == "priority" and commit.amount == PRIORITY
    assert json.loads(commit.to_json())["usage"]["service_tier"] == "priority"
    [batch] = m.events(request_id="rec-batch")
    assert batch.usage is not None and batch.usage.service_tier == "batch"
    [plain] = m.events(request_id="rec-std")
    assert plain.usage is not None and plain.usage.service_tier == "standard"
    assert "service_tier" not in json.loads(plain.to_json())["usage"]  # only when not standard
    lines = [json.loads(x) for x in m.export_jsonl().splitlines() if x]
    tiers = {x["request_id"]: x["usage"].get("service_tier") for x in lines if x.get("usage")}
    assert tiers["rec-batch"] == "batch" and tiers["rec-std"] is None
    assert tiers[d.reservation.request_id] == "priority"
    assert m.verify().ok


def test_bad_tier_changes_nothing(make: Make, tiered: budget.PricingEngine) -> None:
    m = make(pricing=tiered, limits={"user:*": {"day": "1"}})
    before = len(m.events())
    with pytest.raises(budget.InvalidArgumentError):
        m.record("user:t", usage=Usage(input_tokens=1000, service_tier="premium"), model="tiered")
    with pytest.raises(budget.InvalidArgumentError):
        m.reserve("user:t", Usage(input_tokens=1000, service_tier="PRIORITY"), model="tiered")
    assert len(m.events()) == before
    assert [(s.spent, s.held) for s in m.status("user:t")] == [(0, 0)]


def test_usage_pickles_with_every_field() -> None:
    import multiprocessing.reduction
    import pickle

    u = Usage(input_tokens=1000, cache_read_tokens=200, cache_write_tokens=100, cache_write_1h_tokens=40,
              output_tokens=500, reasoning_tokens=60, images=2, audio_ms=1500, requests=3, complete=False,
              service_tier="priority")
    back = pickle.loads(pickle.dumps(u))
    assert back == u
    assert back.to_dict() == u.to_dict()
    assert pickle.loads(multiprocessing.reduction.ForkingPickler.dumps(u)) == u
    assert pickle.loads(pickle.dumps(Usage())) == Usage()
    # A tampered state is refused like bad constructor input, not accepted half-valid.
    state = u.__getstate__()
    bad = list(state)
    bad[1] = 5000  # cache reads above the input total
    with pytest.raises(budget.InvalidArgumentError):
        Usage.__new__(Usage).__setstate__(tuple(bad))
    for i, value in ((9, "yes"), (10, "gold"), (0, -1)):
        bad = list(state)
        bad[i] = value
        with pytest.raises(budget.InvalidArgumentError):
            Usage.__new__(Usage).__setstate__(tuple(bad))
