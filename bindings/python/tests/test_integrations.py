"""Stream guards with the real openai and anthropic SDKs against a local fake provider."""
from __future__ import annotations

import asyncio
import decimal
import gc
import json
from decimal import Decimal
from typing import Any, Callable, Iterator, List

import anthropic
import openai
import pytest

import budget
from budget import BudgetManager
from budget.integrations import AsyncGuardedStream, GuardedStream
from budget.integrations.anthropic import aguard_messages, guard_messages
from budget.integrations.openai import aguard_chat_completions, guard_chat_completions

from fake_provider import FakeProvider

Make = Callable[..., BudgetManager]
MSGS = [{"role": "user", "content": "hi"}]
# test-model: $1/M in, $4/M out; 25 prompt tokens (5 cached) + 20 completion tokens
OPENAI_COST = Decimal("0.000105")
# claude-test: $3/M in, $0.30/M cache read, $15/M out; 20 uncached + 5 cache read in, 20 out
ANTHROPIC_COST = Decimal("0.0003615")


@pytest.fixture
def fake() -> Iterator[FakeProvider]:
    with FakeProvider(words=20) as fp:
        yield fp


def oai(fp: FakeProvider) -> openai.OpenAI:
    return openai.OpenAI(base_url=fp.url + "/v1", api_key="sk-fake", max_retries=0, timeout=10)


def aoai(fp: FakeProvider) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=fp.url + "/v1", api_key="sk-fake", max_retries=0, timeout=10)


def ant(fp: FakeProvider) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=fp.url, api_key="sk-fake", max_retries=0, timeout=10)


def aant(fp: FakeProvider) -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(base_url=fp.url, api_key="sk-fake", max_retries=0, timeout=10)


def commit_event(m: BudgetManager, request_id: str) -> budget.LedgerEvent:
    evs = [e for e in m.events(request_id=request_id) if e.type == "commit"]
    assert len(evs) == 1
    return evs[0]


def test_openai_stream_commits_provider_usage(make: Make, pricing: budget.PricingEngine, fake: FakeProvider) -> None:
    m = make(pricing=pricing, limits={"user:*": {"day": "1"}})
    s = guard_chat_completions(m, oai(fake), subject=["tenant:t", "user:u"], model="test-model",
                               messages=MSGS, max_tokens=100, stream=True, request_id="o1")
    assert isinstance(s, GuardedStream)
    text = "".join(c.choices[0].delta.content or "" for c in s if c.choices)
    assert text == "hello" + " world" * 19
    assert fake.requests[-1]["body"]["stream_options"] == {"include_usage": True}
    assert s.receipt is not None and s.receipt.charged == OPENAI_COST
    ev = commit_event(m, "o1")
    assert ev.usage is not None and ev.usage.complete
    assert (ev.usage.input_tokens, ev.usage.cache_read_tokens, ev.usage.output_tokens) == (25, 5, 20)
    [st] = m.status("user:u")
    assert st.spent == OPENAI_COST and st.held == 0


def test_openai_non_stream(make: Make, pricing: budget.PricingEngine, fake: FakeProvider) -> None:
    m = make(pricing=pricing)
    r = guard_chat_completions(m, oai(fake), subject="user:u", model="test-model", messages=MSGS,
                               request_id="o2")
    assert r.choices[0].message.content.startswith("hello")
    assert commit_event(m, "o2").amount == OPENAI_COST


def test_openai_stream_stopped_by_budget(make: Make, pricing: budget.PricingEngine, fake: FakeProvider) -> None:
    fake.words, fake.ignore_max_tokens, fake.delay = 400, True, 0.001
    m = make(pricing=pricing, limits={"user:*": {"day": "0.0002"}})
    got: List[Any] = []
    with pytest.raises(budget.BudgetExceededError) as ei:
        for c in guard_chat_completions(m, oai(fake), subject="user:r", model="test-model", messages=MSGS,
                                        max_tokens=10, stream=True, request_id="o3"):
            got.append(c)
    assert ei.value.stopped and ei.value.scope == "user:r"
    assert 10 < len(got) < 200  # cut long before the end
    ev = commit_event(m, "o3")
    assert ev.usage is not None and not ev.usage.complete  # the estimate, marked incomplete
    [st] = m.status("user:r")
    assert st.held == 0 and Decimal("0.0001") < st.spent <= Decimal("0.00021")


def test_denied_before_the_call(make: Make, pricing: budget.PricingEngine, fake: FakeProvider) -> None:
    m = make(pricing=pricing, limits={"user:*": {"day": "0.00001"}})
    with pytest.raises(budget.BudgetExceededError) as ei:
        guard_chat_completions(m, oai(fake), subject="user:d", model="test-model", messages=MSGS,
                               max_tokens=100, stream=True)
    assert ei.value.hard and not ei.value.stopped
    assert fake.requests == []


def test_upstream_error_releases(make: Make, pricing: budget.PricingEngine, fake: FakeProvider) -> None:
    fake.fail_status = 500
    m = make(pricing=pricing, limits={"user:*": {"day": "1"}})
    with pytest.raises(openai.APIStatusError):
        guard_chat_completions(m, oai(fake), subject="user:e", model="test-model", messages=MSGS, stream=True)
    [st] = m.status("user:e")
    assert st.held == 0 and st.spent == 0
    assert [e.type for e in m.events(scope="user:e")] == ["reserve", "release"]


def test_consumer_closes_early(make: Make, pricing: budget.PricingEngine, fake: FakeProvider) -> None:
    m = make(pricing=pricing, limits={"user:*": {"day": "1"}})
    with guard_chat_completions(m, oai(fake), subject="user:c", model="test-model", messages=MSGS,
                                stream=True, request_id="o4") as s:
        for i, _ in enumerate(s):
            if i == 3:
                break
    ev = commit_event(m, "o4")
    assert ev.usage is not None and not ev.usage.complete and ev.amount > 0
    [st] = m.status("user:c")
    assert st.held == 0


def tiered_pricing() -> budget.PricingEngine:
    """A model priced twice as much at the priority tier."""
    p = budget.PricingEngine()
    p.load_compact("!budget-prices 1\ntier-model provider=openai mode=chat in=1e-6 out=4e-6 "
                   "in/priority=2e-6 out/priority=8e-6\n")
    return p


def test_openai_priority_tier_is_charged_and_kept(make: Make, fake: FakeProvider) -> None:
    # The tier the provider reports is committed with the usage: a complete stream, a stream cut
    # by the consumer (its estimate is rebuilt as incomplete and must keep the tier) and a
    # non-streamed response, each priced at priority.
    p = tiered_pricing()
    fake.service_tier = "priority"
    m = make(pricing=p, limits={"user:*": {"day": "1"}})
    with guard_chat_completions(m, oai(fake), subject="user:t", model="tier-model", messages=MSGS,
                                stream=True, request_id="t-full") as s:
        for _ in s:
            pass
    with guard_chat_completions(m, oai(fake), subject="user:t", model="tier-model", messages=MSGS,
                                stream=True, request_id="t-cut") as s:
        for i, _ in enumerate(s):
            if i == 3:
                break
    guard_chat_completions(m, oai(fake), subject="user:t", model="tier-model", messages=MSGS,
                           request_id="t-plain")
    for rid, complete in (("t-full", True), ("t-cut", False), ("t-plain", True)):
        ev = commit_event(m, rid)
        assert ev.usage is not None and ev.usage.complete == complete, rid
        assert ev.usage.service_tier == "priority", rid
        assert ev.amount == p.cost("tier-model", ev.usage) > p.cost("tier-model", budget.Usage(
            **{**ev.usage.to_dict(), "service_tier": "standard"})), rid  # type: ignore[arg-type]


def test_openai_priority_request_is_estimated_at_priority(make: Make, fake: FakeProvider) -> None:
    p = tiered_pricing()
    fake.service_tier = "priority"
    m = make(pricing=p, limits={"user:*": {"day": "1"}})
    for rid, tier in (("e-prio", "priority"), ("e-auto", "auto")):
        with guard_chat_completions(m, oai(fake), subject="user:e", model="tier-model", messages=MSGS,
                                    max_tokens=100, stream=True, request_id=rid, service_tier=tier) as s:
            for _ in s:
                pass
        assert fake.requests[-1]["body"]["service_tier"] == tier  # passed through to the provider
    est = {e.request_id: e.held_delta for e in m.events(type="reserve")}
    assert est["e-prio"] == 2 * est["e-auto"] > 0  # priority prices are twice the standard ones here
    assert commit_event(m, "e-auto").usage.service_tier == "priority"  # type: ignore[union-attr]


def test_a_stream_dropped_unread_releases_its_hold(make: Make, pricing: budget.PricingEngine, fake: FakeProvider) -> None:
    # An error in the caller's code between the call and the loop: the stream is never read.
    m = make(pricing=pricing, limits={"user:*": {"day": "1"}})
    s = guard_chat_completions(m, oai(fake), subject="user:g", model="test-model", messages=MSGS,
                               stream=True, request_id="o9")
    [st] = m.status("user:g")
    assert st.held > 0
    del s
    gc.collect()  # the stream and its generator refer to each other: the collector frees them
    [st] = m.status("user:g")
    assert st.held == 0 and st.spent == 0  # released, not held until the TTL
    assert [e.type for e in m.events(request_id="o9")] == ["reserve", "release"]


def test_an_async_stream_dropped_unread_releases_its_hold(make: Make, pricing: budget.PricingEngine,
                                                          fake: FakeProvider) -> None:
    m = make(pricing=pricing, limits={"user:*": {"day": "1"}})

    async def main() -> None:
        s = await aguard_chat_completions(m, aoai(fake), subject="user:ag", model="test-model", messages=MSGS,
                                          stream=True, request_id="a9")
        [st] = await m.astatus("user:ag")
        assert st.held > 0
        del s
        gc.collect()
        for _ in range(200):  # the settle runs as a task on this loop
            await asyncio.sleep(0.01)
            if [e.type for e in m.events(request_id="a9")] == ["reserve", "release"]:
                break

    asyncio.run(main())
    [st] = m.status("user:ag")
    assert st.held == 0 and st.spent == 0  # released, not held until the TTL
    assert [e.type for e in m.events(request_id="a9")] == ["reserve", "release"]


def test_openai_async_stream_and_stop(make: Make, pricing: budget.PricingEngine, fake: FakeProvider) -> None:
    m = make(pricing=pricing, limits={"user:*": {"day": "0.0002"}})

    async def main() -> None:
        client = aoai(fake)
        s = await aguard_chat_completions(m, client, subject="user:a", model="test-model", messages=MSGS,
                                          max_tokens=20, stream=True, request_id="a1")
        assert isinstance(s, AsyncGuardedStream)
        n = 0
        async for _ in s:
            n += 1
        assert n == 23 and s.receipt is not None and s.receipt.charged == OPENAI_COST
        fake.words, fake.ignore_max_tokens = 400, True
        with pytest.raises(budget.BudgetExceededError) as ei:
            s2 = await aguard_chat_completions(m, client, subject="user:a", model="test-model",
                                               messages=MSGS, max_tokens=5, stream=True, request_id="a2")
            async for _ in s2:
                pass
        assert ei.value.stopped
        r = await aguard_chat_completions(m, client, subject="user:b", model="test-model", messages=MSGS,
                                          max_tokens=5, request_id="a3")
        assert r.usage is not None

    asyncio.run(main())
    [st] = m.status("user:a")
    assert st.held == 0 and st.spent <= Decimal("0.00021")
    assert commit_event(m, "a3").amount > 0


def test_anthropic_stream_and_message(make: Make, pricing: budget.PricingEngine, fake: FakeProvider) -> None:
    m = make(pricing=pricing, limits={"user:*": {"day": "1"}})
    s = guard_messages(m, ant(fake), subject="user:an", model="claude-test", max_tokens=100,
                       system="be brief", messages=MSGS, stream=True, request_id="an1")
    types = [e.type for e in s]
    assert types[0] == "message_start" and "message_delta" in types and types[-1] == "message_stop"
    assert s.receipt is not None and s.receipt.charged == ANTHROPIC_COST
    ev = commit_event(m, "an1")
    assert ev.usage is not None and ev.usage.complete
    assert (ev.usage.input_tokens, ev.usage.cache_read_tokens, ev.usage.output_tokens) == (25, 5, 20)
    msg = guard_messages(m, ant(fake), subject="user:an", model="claude-test", max_tokens=100, messages=MSGS,
                         request_id="an2")
    assert msg.content[0].text.startswith("hello")
    assert commit_event(m, "an2").amount == ANTHROPIC_COST


def test_anthropic_async_stop(make: Make, pricing: budget.PricingEngine, fake: FakeProvider) -> None:
    fake.words, fake.ignore_max_tokens, fake.delay = 400, True, 0.001
    m = make(pricing=pricing, limits={"user:*": {"day": "0.001"}})

    async def main() -> int:
        n = 0
        s = await aguard_messages(m, aant(fake), subject="user:as", model="claude-test", max_tokens=20,
                                  messages=MSGS, stream=True, request_id="as1")
        with pytest.raises(budget.BudgetExceededError) as ei:
            async for _ in s:
                n += 1
        assert ei.value.stopped
        return n

    n = asyncio.run(main())
    assert 5 < n < 200
    [st] = m.status("user:as")
    assert st.held == 0 and st.spent <= Decimal("0.00105")
    ev = commit_event(m, "as1")
    assert ev.usage is not None and not ev.usage.complete


def test_guard_without_pricing_needs_estimate(make: Make, fake: FakeProvider) -> None:
    m = make(limits={"user:*": {"day": "1"}})
    with pytest.raises(budget.InvalidArgumentError):
        guard_chat_completions(m, oai(fake), subject="user:n", model="test-model", messages=MSGS)
    r = guard_chat_completions(m, oai(fake), subject="user:n", model="test-model", messages=MSGS,
                               max_tokens=100, estimate="0.01", request_id="n1")
    assert r.usage is not None
    assert 0 < commit_event(m, "n1").amount <= Decimal("0.01")


def test_guard_metering_ignores_the_decimal_context(make: Make, fake: FakeProvider) -> None:
    # Without pricing the guard spreads the estimate over the expected tokens; an application's
    # own decimal context (low precision, trapped inexact results) must not change the money.
    def run(request_id: str) -> Decimal:
        s = guard_chat_completions(m, oai(fake), subject="user:dc", model="test-model", messages=MSGS,
                                   max_tokens=100, stream=True, estimate="0.012345678", request_id=request_id)
        for _ in s:
            pass
        assert s.receipt is not None
        return Decimal(s.receipt.charged)

    m = make(limits={"user:*": {"day": "1"}})
    expected = run("dc0")
    with decimal.localcontext() as ctx:
        ctx.prec = 4
        ctx.traps[decimal.Inexact] = True
        assert run("dc1") == expected
    assert 0 < expected <= Decimal("0.012345678")
    [st] = m.status("user:dc")
    assert st.held == 0 and st.spent == 2 * expected
