"""Budget guard for the ``openai`` SDK's Chat Completions (sync ``OpenAI`` and ``AsyncOpenAI``).

    from budget.integrations.openai import guard_chat_completions
    stream = guard_chat_completions(manager, client, subject=["tenant:acme", "user:alice"],
                                    model="gpt-4o-mini", messages=[...], max_tokens=300, stream=True)
    for chunk in stream: ...

The request is estimated from its messages and ``max_completion_tokens``/``max_tokens`` and
reserved first (``BudgetExceededError`` when denied: nothing is sent). Streams ask for
usage (``stream_options.include_usage``); each chunk is metered; on ``Stop`` the SDK stream
is closed and ``BudgetExceededError(stopped=True)`` raised; the provider's usage is
committed at the end (the estimate, marked incomplete, when the stream is cut), priced at the
service tier the response reports. A request with ``service_tier="priority"`` (or ``"flex"``)
is estimated at that tier's prices.
"""
from __future__ import annotations

from typing import Any, Mapping, Optional

from .._manager import BudgetManager, SubjectLike
from ._guard import Meter, aguarded_call, default_max_output, estimate_input_tokens, guarded_call

__all__ = ["guard_chat_completions", "aguard_chat_completions"]


def _meter(manager: BudgetManager, subject: SubjectLike, kwargs: dict[str, Any], opts: dict[str, Any]) -> Meter:
    model = kwargs.get("model")
    max_out = kwargs.get("max_completion_tokens") or kwargs.get("max_tokens") or default_max_output(manager, str(model))
    input_tokens = estimate_input_tokens(kwargs.get("messages"), tools=kwargs.get("tools"))
    # A request for priority or flex processing is estimated at that tier's prices; "auto" and
    # "default" (the tier is the project's, known only from the response) at standard prices.
    tier = kwargs.get("service_tier")
    return Meter(manager, "openai-chat", "openai", subject, model,  # type: ignore[arg-type]
                 input_tokens, int(max_out), service_tier=tier if tier in ("priority", "flex") else "standard", **opts)


def _prepare(kwargs: dict[str, Any]) -> bool:
    stream = bool(kwargs.get("stream"))
    if stream:
        so = dict(kwargs.get("stream_options") or {})
        so["include_usage"] = True
        kwargs["stream_options"] = so
    return stream


def guard_chat_completions(
    manager: BudgetManager,
    client: Any,
    *,
    subject: SubjectLike,
    request_id: Optional[str] = None,
    estimate: Optional[Any] = None,
    metadata: Optional[Mapping[str, str]] = None,
    ttl: Optional[Any] = None,
    buffer: Optional[float] = None,
    **create_kwargs: Any,
) -> Any:
    """``client.chat.completions.create(**create_kwargs)`` under the budget of ``subject``.

    Returns the ChatCompletion (committed) or, with ``stream=True``, a
    :class:`~budget.integrations.GuardedStream` of the SDK's chunks."""
    stream = _prepare(create_kwargs)
    meter = _meter(manager, subject, create_kwargs, dict(request_id=request_id, estimate=estimate,
                                                         metadata=metadata, ttl=ttl, buffer=buffer))
    return guarded_call(meter, client.chat.completions.create, create_kwargs, stream)


async def aguard_chat_completions(
    manager: BudgetManager,
    client: Any,
    *,
    subject: SubjectLike,
    request_id: Optional[str] = None,
    estimate: Optional[Any] = None,
    metadata: Optional[Mapping[str, str]] = None,
    ttl: Optional[Any] = None,
    buffer: Optional[float] = None,
    **create_kwargs: Any,
) -> Any:
    """The ``AsyncOpenAI`` form: returns the ChatCompletion or an
    :class:`~budget.integrations.AsyncGuardedStream`; store calls never block the event loop."""
    stream = _prepare(create_kwargs)
    meter = _meter(manager, subject, create_kwargs, dict(request_id=request_id, estimate=estimate,
                                                         metadata=metadata, ttl=ttl, buffer=buffer))
    return await aguarded_call(meter, client.chat.completions.create, create_kwargs, stream)
