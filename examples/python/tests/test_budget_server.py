"""The FastAPI example: server mode, and the guarded OpenAI-compatible proxy — driven by the
real openai SDK over a real socket, forwarding to the fake provider."""
from __future__ import annotations

import json
import threading
import time
from decimal import Decimal
from pathlib import Path
from typing import Any, Iterator, Tuple

import openai
import pytest
import uvicorn
from fastapi.testclient import TestClient

import budget
from budget_server import create_app
from fake_provider import FakeProvider


def pricing() -> budget.PricingEngine:
    p = budget.PricingEngine()
    p.set_price("test-model", provider="openai", input="0.000001", output="0.000004")
    return p


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[Tuple[TestClient, budget.BudgetManager, FakeProvider]]:
    with FakeProvider(words=20) as fp:
        m = budget.BudgetManager(f"sqlite:{tmp_path / 'srv.db'}", pricing=pricing(),
                                 limits={"user:*": {"day": "1.00"}, "project:*": {"day": "5"},
                                         "key:*": {"requests:minute": 2}})
        up = openai.AsyncOpenAI(base_url=fp.url + "/v1", api_key="sk-up", max_retries=0, timeout=10)
        with TestClient(create_app(m, up)) as client:
            yield client, m, fp
        m.close()


def test_server_mode(setup: Tuple[TestClient, budget.BudgetManager, FakeProvider]) -> None:
    client, m, _ = setup
    assert client.get("/health").json() == {"status": "healthy", "store": "sqlite"}
    assert client.post("/check", json={"user_id": "alice", "estimated_cost": 0.5}).json() == {"status": "allowed"}
    r = client.post("/spend", json={"user_id": "alice", "cost": 0.9, "project_id": "p", "model": "gpt-4o"})
    assert r.status_code == 200 and r.json()["charged"] == "0.90"
    r = client.post("/check", json={"user_id": "alice", "estimated_cost": 0.5})
    assert r.status_code == 402 and r.headers["x-should-retry"] == "false"
    err = r.json()["error"]
    assert err["code"] == "budget_exceeded" and err["type"] == "insufficient_quota" and err["scope"] == "user:alice"
    assert client.post("/check", json={"user_id": "", "estimated_cost": 0.5}).status_code == 400
    nan = client.post("/spend", content=b'{"user_id": "bob", "cost": NaN}', headers={"content-type": "application/json"})
    assert nan.status_code in (400, 422)
    assert client.post("/spend", json={"user_id": "bob", "cost": -1}).status_code == 400
    assert [s.spent for s in m.status("user:bob")] == [Decimal("0")]
    # A cost a client computed in floating point (JSON 0.30000000000000004): rounded to the nano.
    r = client.post("/spend", json={"user_id": "erin", "cost": 0.1 + 0.2})
    assert r.status_code == 200 and r.json()["charged"] == "0.30"


def test_proxy_held_headroom_is_429(setup: Tuple[TestClient, budget.BudgetManager, FakeProvider]) -> None:
    client, m, fp = setup
    assert m.reserve("user:carol", "0.9999").allowed  # an in-flight request holds the headroom
    r = client.post("/v1/chat/completions", headers={"x-budget-user": "carol"},
                    json={"model": "test-model", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 100})
    assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
    assert r.json()["error"]["type"] == "rate_limit_exceeded" and fp.requests == []


def test_proxy_rate_limit_is_429_with_retry_after(setup: Tuple[TestClient, budget.BudgetManager, FakeProvider]) -> None:
    client, m, fp = setup
    body = {"model": "test-model", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 10}
    hdr = {"x-budget-user": "dave", "x-budget-tenant": "acme"}
    m.set_limit("user:dave", "minute", 2, metric="requests")
    for _ in range(2):
        assert client.post("/v1/chat/completions", headers=hdr, json=body).status_code == 200
    r = client.post("/v1/chat/completions", headers=hdr, json=body)
    assert r.status_code == 429 and 1 <= int(r.headers["retry-after"]) <= 60
    assert len(fp.requests) == 2


def test_proxy_with_real_openai_client(setup: Tuple[TestClient, budget.BudgetManager, FakeProvider]) -> None:
    _, m, fp = setup
    app = create_app(m, openai.AsyncOpenAI(base_url=fp.url + "/v1", api_key="sk-up", max_retries=0))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="off"))
    t = threading.Thread(target=server.run, daemon=True)
    t.start()
    deadline = time.time() + 10
    while not server.started and time.time() < deadline:
        time.sleep(0.02)
    assert server.started
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused", max_retries=0,
                               default_headers={"x-budget-user": "erin", "x-budget-project": "p1"}, timeout=10)
        text = "".join(c.choices[0].delta.content or "" for c in client.chat.completions.create(
            model="test-model", messages=[{"role": "user", "content": "hi"}], stream=True) if c.choices)
        assert text.startswith("hello world")
        resp = client.chat.completions.create(model="test-model", messages=[{"role": "user", "content": "hi"}])
        assert resp.usage is not None and resp.usage.completion_tokens == 20
        [st] = m.status("user:erin")
        assert st.spent == Decimal("0.000210") and st.held == 0  # two calls of $0.000105
        m.record("user:erin", "1")
        with pytest.raises(openai.APIStatusError) as ei:
            client.chat.completions.create(model="test-model", messages=[{"role": "user", "content": "hi"}])
        assert ei.value.status_code == 402 and ei.value.response.headers["x-should-retry"] == "false"
        assert isinstance(ei.value.body, dict) and ei.value.body["code"] == "budget_exceeded"
        # cut mid-stream: the error arrives as an SSE event
        fp.words, fp.ignore_max_tokens = 400, True
        m.set_limit("user:*", "day", "0.0002")
        m2ok = m.check("user:frank", "0.00005").allowed
        assert m2ok
        c2 = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused", max_retries=0,
                           default_headers={"x-budget-user": "frank"}, timeout=10)
        with pytest.raises(openai.APIError) as ei2:
            for _ in c2.chat.completions.create(model="test-model", max_tokens=10, stream=True,
                                                messages=[{"role": "user", "content": "hi"}]):
                pass
        assert "limit of 0.0002" in str(ei2.value) and ei2.value.code == "budget_exceeded"
        [st2] = m.status("user:frank")
        assert st2.held == 0 and st2.spent <= Decimal("0.00021")
    finally:
        server.should_exit = True
        t.join(timeout=10)
