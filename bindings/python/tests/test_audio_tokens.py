"""Usage.audio_input_tokens / audio_output_tokens: parts of the input / output totals, priced at
the entry's audio per-token prices (text prices when it has none), filled in by the
extractors, kept in the ledger."""
from __future__ import annotations

import json
import pickle
from decimal import Decimal
from typing import Callable

import pytest

import budget
from budget import BudgetManager, Usage

Make = Callable[..., BudgetManager]

# 1000 in (600 audio) + 500 out (300 audio): 400 x 1e-6 + 600 x 4e-5 + 200 x 4e-6 + 300 x 8e-5.
TABLE = """!budget-prices 1
voice provider=openai mode=chat in=1e-6 out=4e-6 ain=4e-5 aout=8e-5
"""
AUDIO, TEXT = Decimal("0.0492"), Decimal("0.003")


def call(**kw: int) -> Usage:
    return Usage(input_tokens=1000, output_tokens=500, **kw)


@pytest.fixture
def voice() -> budget.PricingEngine:
    p = budget.PricingEngine()
    assert p.load_compact(TABLE).loaded == 1
    return p


def test_usage_fields_round_trip_and_validate() -> None:
    u = call(audio_input_tokens=600, audio_output_tokens=300)
    assert (u.audio_input_tokens, u.audio_output_tokens) == (600, 300)
    assert Usage().audio_input_tokens == 0 and Usage().audio_output_tokens == 0
    d = u.to_dict()
    assert d["audio_input_tokens"] == 600 and d["audio_output_tokens"] == 300
    assert Usage(**d) == u  # type: ignore[arg-type]
    assert u != call() and hash(u) != hash(call())
    assert "audio_input_tokens=600" in repr(u)
    assert (u + u).audio_output_tokens == 600
    assert pickle.loads(pickle.dumps(u)) == u
    # A state pickled before the audio fields (11 items) still loads.
    old = call().__getstate__()[:11]
    back = Usage.__new__(Usage)
    back.__setstate__(old)
    assert back == call()
    with pytest.raises(budget.InvalidArgumentError):
        call(audio_input_tokens=1001)
    with pytest.raises(budget.InvalidArgumentError):
        Usage(input_tokens=10, cache_read_tokens=6, audio_input_tokens=5)
    with pytest.raises(budget.InvalidArgumentError):
        call(audio_output_tokens=-1)


def test_priced_at_the_audio_prices_of_the_real_table() -> None:
    p = budget.PricingEngine.bundled()
    u = Usage(input_tokens=1362, audio_input_tokens=1200, output_tokens=423, audio_output_tokens=336)
    as_text = Usage(input_tokens=1362, output_tokens=423)
    assert p.cost("gpt-4o-audio-preview", as_text) == Decimal("0.007635")
    q = p.quote("gpt-4o-audio-preview", u)
    assert q.cost == Decimal("0.076155")
    assert [li.name for li in q.items] == ["input", "audio_input", "output", "audio_output"]
    # No audio prices (gpt-4o): the text price.
    assert p.cost("gpt-4o", u) == p.cost("gpt-4o", as_text)


def test_extracted_from_responses() -> None:
    body = json.dumps({"choices": [], "usage": {
        "prompt_tokens": 1000, "completion_tokens": 500,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 600},
        "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 300}}})
    u = budget.usage_from_response("openai", body)
    assert (u.audio_input_tokens, u.audio_output_tokens) == (600, 300)
    g = budget.usage_from_response("gemini", {"usageMetadata": {
        "promptTokenCount": 500, "candidatesTokenCount": 64,
        "promptTokensDetails": [{"modality": "TEXT", "tokenCount": 20}, {"modality": "AUDIO", "tokenCount": 480}],
        "candidatesTokensDetails": [{"modality": "AUDIO", "tokenCount": 60}]}})
    assert (g.audio_input_tokens, g.audio_output_tokens) == (480, 60)
    ds = budget.usage_from_response("openai", {"choices": [], "usage": {
        "prompt_tokens": 700, "completion_tokens": 5, "prompt_cache_hit_tokens": 640, "prompt_cache_miss_tokens": 60}})
    assert ds.cache_read_tokens == 640


def test_manager_charges_and_the_ledger_keeps_them(make: Make, voice: budget.PricingEngine) -> None:
    m = make(pricing=voice, limits={"user:*": {"day": "1"}})
    u = call(audio_input_tokens=600, audio_output_tokens=300)
    d = m.reserve("user:v", u, model="voice")
    assert d.allowed and d.estimate == AUDIO and d.reservation is not None
    assert m.commit(d.reservation, usage=u).charged == AUDIO
    assert m.record("user:v", usage=call(), model="voice", request_id="text").charged == TEXT
    [commit] = m.events(request_id=d.reservation.request_id, type="commit")
    assert commit.usage == u
    body = json.loads(commit.to_json())["usage"]
    assert body["audio_input_tokens"] == 600 and body["audio_output_tokens"] == 300
    [text] = m.events(request_id="text")
    assert "audio_input_tokens" not in json.loads(text.to_json())["usage"]  # only when not zero
    assert m.verify().ok
