from __future__ import annotations

import json
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path
from typing import Callable

import pytest

import budget
from budget import BudgetManager, Usage

Make = Callable[..., BudgetManager]
HERE = Path(__file__).parent
# The shared LiteLLM snapshot next to the repository (../shared/data); absent in a user's clone.
LITELLM = HERE.resolve().parents[2].parent / "shared" / "data" / "model_prices_and_context_window.json"


def test_pricing_engine_exact(pricing: budget.PricingEngine) -> None:
    u = Usage(input_tokens=1000, output_tokens=500)
    assert pricing.cost("test-model", u) == Decimal("0.003")
    q = pricing.quote("test-model", u)
    assert q.cost == Decimal("0.003") and q.model == "test-model" and q.provider == "openai"
    assert {i.name for i in q.items} >= {"input", "output"}
    assert "test-model" in pricing and not pricing.knows("nope")
    with pytest.raises(budget.UnknownModelError):
        pricing.cost("nope", u)
    pricing.set_fallback(input="0.00001", output="0.00001")
    assert pricing.cost("nope", u) == Decimal("0.015")
    pricing.add_markup("20", scope="model", match="test-model")
    assert pricing.cost("test-model", u) == Decimal("0.0036")
    assert pricing.cost("test-model", u, markup=False) == Decimal("0.003")
    assert pricing.estimate("test-model", 1000, 1000) == Decimal("0.006")


def test_bundled_and_litellm() -> None:
    b = budget.PricingEngine.bundled()
    info = budget.PricingEngine.bundled_table_info()
    assert len(b) == info["entries"] > 100
    assert b.resolve("gpt-4o-2024-08-06").name.startswith("gpt-4o")
    assert b.cost("gpt-4o", Usage(input_tokens=1_000_000, output_tokens=0, requests=0)) > 0
    if LITELLM.exists():
        e = budget.PricingEngine()
        rep = e.load_litellm_file(LITELLM)
        assert rep.loaded > 100 and rep.table_version.startswith("litellm")
        # the tiny 1e-15 prices stay exact
        assert isinstance(e.cost("gpt-4o-mini", Usage(input_tokens=1, output_tokens=1)), Decimal)
    with pytest.raises(budget.InvalidArgumentError):
        budget.PricingEngine().load_litellm("{truncated")


def test_manager_prices_usage(make: Make, pricing: budget.PricingEngine) -> None:
    m = make(pricing=pricing, limits={"user:*": {"day": "1"}})
    assert m.pricing is pricing
    d = m.reserve("user:p", Usage(input_tokens=1000, output_tokens=1000), model="test-model")
    assert d.allowed and d.estimate == Decimal("0.005")
    assert d.reservation is not None and d.reservation.model == "test-model"
    c = m.consume(d.reservation, usage=Usage(input_tokens=0, output_tokens=100, requests=0))
    assert c.consumed == Decimal("0.0004")
    r = m.commit(d.reservation, usage=Usage(input_tokens=1000, output_tokens=250))
    assert r.charged == Decimal("0.002") and r.model == "test-model" and r.price_version
    assert [i.name for i in r.items][:2] == ["input", "output"]
    rec = m.record("user:p", usage=Usage(input_tokens=10, output_tokens=10), model="test-model", provider="openai")
    assert rec.charged == Decimal("0.00005")
    with pytest.raises(budget.UnknownModelError):
        m.reserve("user:p", Usage(input_tokens=1), model="unknown-model-x")
    with pytest.raises(budget.InvalidArgumentError):
        m.reserve("user:p", Usage(input_tokens=1))  # usage without a model


def test_manager_pricing_true_and_path(make: Make, tmp_path: Path) -> None:
    m = make(pricing=True)
    assert m.pricing is not None and len(m.pricing) > 100
    if LITELLM.exists():
        m2 = make(pricing=LITELLM)
        assert m2.pricing is not None and m2.pricing.knows("gpt-4o")


def test_usage_openai_chat() -> None:
    body = {
        "id": "x", "object": "chat.completion", "choices": [],
        "usage": {"prompt_tokens": 100, "completion_tokens": 50, "total_tokens": 150,
                  "prompt_tokens_details": {"cached_tokens": 40},
                  "completion_tokens_details": {"reasoning_tokens": 10}},
    }
    u = budget.usage_from_response("openai", body)
    assert (u.input_tokens, u.cache_read_tokens, u.output_tokens, u.reasoning_tokens) == (100, 40, 50, 10)
    assert u.complete
    assert budget.usage_from_response("openai-chat", json.dumps(body).encode()) == u


def test_usage_anthropic_and_stream() -> None:
    body = {"type": "message", "content": [{"type": "text", "text": "hi"}],
            "usage": {"input_tokens": 10, "cache_creation_input_tokens": 20, "cache_read_input_tokens": 30,
                      "output_tokens": 7}}
    u = budget.usage_from_response("anthropic", body)
    assert u.input_tokens == 60 and u.cache_write_tokens == 20 and u.cache_read_tokens == 30 and u.output_tokens == 7
    s = budget.StreamUsage("anthropic", input_tokens_estimate=5)
    s.feed_event({"type": "message_start", "message": {"usage": {"input_tokens": 10, "output_tokens": 1}}})
    s.feed_event({"type": "content_block_delta", "delta": {"type": "text_delta", "text": "hello world"}})
    assert not s.has_final_usage
    s.feed(b'event: message_delta\ndata: {"type":"message_delta","usage":{"output_tokens":12}}\n\n')
    fin = s.finish()
    assert fin.input_tokens == 10 and fin.output_tokens == 12


def test_usage_gemini_and_responses() -> None:
    g = {"usageMetadata": {"promptTokenCount": 10, "cachedContentTokenCount": 4, "candidatesTokenCount": 5,
                           "thoughtsTokenCount": 3}}
    u = budget.usage_from_response("gemini", g)
    assert u.input_tokens == 10 and u.cache_read_tokens == 4 and u.output_tokens == 8 and u.reasoning_tokens == 3
    r = {"usage": {"input_tokens": 9, "output_tokens": 4, "input_tokens_details": {"cached_tokens": 2},
                   "output_tokens_details": {"reasoning_tokens": 1}}}
    u2 = budget.usage_from_response("openai-responses", r)
    assert (u2.input_tokens, u2.cache_read_tokens, u2.output_tokens, u2.reasoning_tokens) == (9, 2, 4, 1)


def test_usage_bad_input() -> None:
    with pytest.raises(budget.InvalidArgumentError):
        budget.usage_from_response("openai", "{not json")
    with pytest.raises(budget.InvalidArgumentError):
        budget.usage_from_response("carrier-pigeon", "{}")
    with pytest.raises(budget.InvalidArgumentError):
        budget.usage_from_response("openai", {"usage": {"prompt_tokens": -1}})
    assert budget.estimate_tokens("abcdefgh") == 2
    # A negative prompt estimate was read as 0 (Node refuses it); a float or bool is no count.
    for bad in (-5, 1.5, True):
        with pytest.raises(budget.InvalidArgumentError):
            budget.StreamUsage("openai", input_tokens_estimate=bad)  # type: ignore[arg-type]


def test_a_malformed_stream_event_raises_once_and_the_stream_goes_on() -> None:
    # "Events processed before an error stay counted": the bad event raised, but it stayed in
    # the buffer, so every later feed raised again, the provider's final usage was never read,
    # and the good event before it in the same read was counted again by each later feed.
    good = b'data: {"choices":[{"delta":{"content":"' + b"x" * 400 + b'"}}]}\n\n'
    bad = b'data: {"choices":[{"delta":{"content":"cut\n\n'
    s = budget.StreamUsage("openai", input_tokens_estimate=100)
    with pytest.raises(budget.InvalidArgumentError):
        s.feed(good + bad)
    assert s.usage.output_tokens == 100  # the good event, once
    s.feed(b": keep-alive\n\n")
    s.feed(good)
    assert s.usage.output_tokens == 200  # counted once more, not again and again
    s.feed(b'data: {"choices":[],"usage":{"prompt_tokens":120,"completion_tokens":180}}\n\ndata: [DONE]\n\n')
    fin = s.finish()
    assert fin.complete and (fin.input_tokens, fin.output_tokens) == (120, 180)

    # The same for a JSON-array stream (Gemini): a bad object is dropped, the next one read.
    g = budget.StreamUsage("gemini")
    with pytest.raises(budget.InvalidArgumentError):
        g.feed(b'[{"usageMetadata":{"promptTokenCount":"x"}}')
    g.feed(b',{"candidates":[{"content":{"parts":[{"text":"hi"}]},"finishReason":"STOP"}],'
           b'"usageMetadata":{"promptTokenCount":5,"candidatesTokenCount":7}}]')
    fin = g.finish()
    assert fin.complete and (fin.input_tokens, fin.output_tokens) == (5, 7)
