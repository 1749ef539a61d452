"""A FastAPI budget service on libbudget.

* coreason-budget's server mode: ``POST /check``, ``POST /spend``, ``GET /health``;
* an OpenAI-compatible ``POST /v1/chat/completions`` proxy guarded by the library: the
  request is reserved before it is forwarded, the stream is metered and cut when the budget
  says Stop, and the upstream's usage is committed. A hard cap answers 402 with
  ``x-should-retry: false``; headroom held by in-flight requests or a rate limit answers 429
  with ``Retry-After``; both with an OpenAI-shaped error body.

Who pays: headers ``X-Budget-User`` (or the body's ``user``), ``X-Budget-Project``,
``X-Budget-Tenant``. Run it:

    BUDGET_STORE=sqlite:budget.db BUDGET_LIMITS=limits.toml UPSTREAM_BASE_URL=https://api.openai.com/v1 \\
    UPSTREAM_API_KEY=sk-... uvicorn budget_server:app
"""
from __future__ import annotations

import math
import os
from datetime import datetime, timezone
from typing import Any, AsyncIterator, Dict, List, Optional

import openai
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel

import budget
from budget.integrations import AsyncGuardedStream
from budget.integrations.openai import aguard_chat_completions


def nano(x: float) -> float:
    """A JSON number as money: rounded to the nano here, at the HTTP edge (the library reads a
    float exactly through its repr and refuses digits past the 9th decimal, which a cost that a
    client computed in floating point, 0.1 + 0.2, usually has)."""
    return round(x, 9) if math.isfinite(x) else x


class CheckBudgetRequest(BaseModel):
    user_id: Optional[str] = None
    project_id: Optional[str] = None
    estimated_cost: float = 0.0


class RecordSpendRequest(BaseModel):
    user_id: Optional[str] = None
    cost: float
    project_id: Optional[str] = None
    model: Optional[str] = None


def retry_after_seconds(e: budget.BudgetExceededError) -> int:
    """Until the window resets when that is soon (a rate limit), else 1 s (held headroom frees up)."""
    if e.resets_at is not None:
        secs = (e.resets_at - datetime.now(timezone.utc)).total_seconds()
        if 0 < secs <= 3600:
            return max(1, math.ceil(secs))
    return 1


def budget_error_body(e: budget.BudgetExceededError) -> Dict[str, Any]:
    return {"error": {
        "message": str(e),
        "type": "insufficient_quota" if e.hard else "rate_limit_exceeded",
        "param": None,
        "code": "budget_exceeded",
        "scope": e.scope,
        "window": e.window,
        "remaining": None if e.remaining is None else str(e.remaining),
        "resets_at": e.resets_at.isoformat() if e.resets_at else None,
    }}


def budget_error_response(e: budget.BudgetError) -> JSONResponse:
    if isinstance(e, budget.BudgetExceededError):
        if e.hard:
            return JSONResponse(budget_error_body(e), status_code=402, headers={"x-should-retry": "false"})
        return JSONResponse(budget_error_body(e), status_code=429,
                            headers={"retry-after": str(retry_after_seconds(e))})
    if isinstance(e, budget.StoreUnavailableError):
        return JSONResponse({"error": {"message": str(e), "type": "server_error", "param": None,
                                       "code": "store_unavailable"}}, status_code=503,
                            headers={"retry-after": "1"})
    return JSONResponse({"error": {"message": str(e), "type": "invalid_request_error", "param": None,
                                   "code": e.code}}, status_code=400)


def subject_of(request: Request, body: Dict[str, Any]) -> List[str]:
    h = request.headers
    user = h.get("x-budget-user") or body.get("user")
    if not user:
        raise budget.InvalidArgumentError("who pays? set the X-Budget-User header (or the body's `user`)")
    subject = []
    if h.get("x-budget-tenant"):
        subject.append(f"tenant:{h['x-budget-tenant']}")
    if h.get("x-budget-project"):
        subject.append(f"project:{h['x-budget-project']}")
    subject.append(f"user:{user}")
    return subject


def create_app(
    manager: Optional[budget.BudgetManager] = None,
    upstream: Optional[openai.AsyncOpenAI] = None,
) -> FastAPI:
    if manager is None:
        manager = budget.BudgetManager(os.environ.get("BUDGET_STORE", "sqlite:budget.db"),
                                       limits=os.environ.get("BUDGET_LIMITS") or None, pricing=True)
    if upstream is None and os.environ.get("UPSTREAM_BASE_URL"):
        upstream = openai.AsyncOpenAI(base_url=os.environ["UPSTREAM_BASE_URL"],
                                      api_key=os.environ.get("UPSTREAM_API_KEY", "none"))
    app = FastAPI(title="libbudget service")
    m: budget.BudgetManager = manager

    @app.exception_handler(budget.BudgetError)
    async def on_budget_error(request: Request, e: budget.BudgetError) -> JSONResponse:
        return budget_error_response(e)

    @app.post("/check")
    async def check(req: CheckBudgetRequest, request: Request) -> Dict[str, str]:
        user = req.user_id or request.headers.get("x-budget-user") or ""
        await m.acheck_availability(user, req.project_id, nano(req.estimated_cost))
        return {"status": "allowed"}

    @app.post("/spend")
    async def spend(req: RecordSpendRequest, request: Request) -> Dict[str, str]:
        user = req.user_id or request.headers.get("x-budget-user") or ""
        receipt = await m.arecord_spend(user, nano(req.cost), req.project_id, req.model)
        return {"status": "recorded", "charged": str(receipt.charged),
                "over_limit": "true" if receipt.over_limit else "false"}

    @app.get("/health")
    async def health() -> Response:
        try:
            await m.astatus("global")
        except budget.BudgetError as e:
            return JSONResponse({"status": "unhealthy", "detail": str(e)}, status_code=503)
        return JSONResponse({"status": "healthy", "store": m.store_url.split("?")[0].split(":")[0]})

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Response:
        if upstream is None:
            return JSONResponse({"error": {"message": "no upstream configured", "type": "server_error",
                                           "param": None, "code": None}}, status_code=503)
        body: Dict[str, Any] = await request.json()
        subject = subject_of(request, body)
        body.pop("user", None)
        try:
            result = await aguard_chat_completions(m, upstream, subject=subject,
                                                   request_id=request.headers.get("x-request-id"), **body)
        except openai.APIStatusError as e:
            return JSONResponse(e.body if isinstance(e.body, dict) and "error" in e.body
                                else {"error": {"message": str(e), "type": "upstream_error", "param": None,
                                                "code": None}}, status_code=e.status_code)
        if not isinstance(result, AsyncGuardedStream):
            return JSONResponse(result.model_dump(mode="json", exclude_unset=True))
        stream: AsyncGuardedStream[Any] = result

        async def sse() -> AsyncIterator[bytes]:
            try:
                async for chunk in stream:
                    yield b"data: " + chunk.model_dump_json(exclude_unset=True).encode() + b"\n\n"
            except budget.BudgetExceededError as e:
                # The status line is gone: tell the client in the stream, as OpenAI does for errors.
                yield b"data: " + JSONResponse(budget_error_body(e)).body + b"\n\n"
            finally:
                await stream.close()
            yield b"data: [DONE]\n\n"

        return StreamingResponse(sse(), media_type="text/event-stream",
                                 headers={"x-budget-request-id": stream.request_id})

    app.state.budget = m
    return app


_app: Optional[FastAPI] = None


def __getattr__(name: str) -> Any:
    """``uvicorn budget_server:app`` builds the app from the environment on first access."""
    global _app
    if name == "app":
        if _app is None:
            _app = create_app()
        return _app
    raise AttributeError(name)
