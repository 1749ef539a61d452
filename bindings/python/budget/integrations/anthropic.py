"""Budget guard for the ``anthropic`` SDK's Messages API (sync ``Anthropic`` and ``AsyncAnthropic``).

    from budget.integrations.anthropic import guard_messages
    stream = guard_messages(manager, client, subject="user:alice", model="claude-sonnet-4-5",
                            max_tokens=1024, messages=[...], stream=True)
    for event in stream: ...

Anthropic streams report usage in ``message_start`` and cumulatively in ``message_delta``;
the guard meters every event (text deltas by estimate until then), closes the SDK stream on
``Stop`` (raising ``BudgetExceededError(stopped=True)``) and commits the final usage.
"""
from __future__ import annotations

from typing import Any, Mapping, Optional

from .._manager import BudgetManager, SubjectLike
from ._guard import Meter, aguarded_call, default_max_output, estimate_input_tokens, guarded_call

__all__ = ["guard_messages", "aguard_messages"]


def _meter(manager: BudgetManager, subject: SubjectLike, kwargs: dict[str, Any], opts: dict[str, Any]) -> Meter:
    model = kwargs.get("model")
    max_out = kwargs.get("max_tokens") or default_max_output(manager, str(model))
    input_tokens = estimate_input_tokens(kwargs.get("messages"), system=kwargs.get("system"), tools=kwargs.get("tools"))
    return Meter(manager, "anthropic", "anthropic", subject, model,  # type: ignore[arg-type]
                 input_tokens, int(max_out), **opts)


def guard_messages(
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
    """``client.messages.create(**create_kwargs)`` under the budget of ``subject``: the Message
    (committed) or, with ``stream=True``, a :class:`~budget.integrations.GuardedStream` of events."""
    meter = _meter(manager, subject, create_kwargs, dict(request_id=request_id, estimate=estimate,
                                                         metadata=metadata, ttl=ttl, buffer=buffer))
    return guarded_call(meter, client.messages.create, create_kwargs, bool(create_kwargs.get("stream")))


async def aguard_messages(
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
    """The ``AsyncAnthropic`` form (an :class:`~budget.integrations.AsyncGuardedStream` when streaming)."""
    meter = _meter(manager, subject, create_kwargs, dict(request_id=request_id, estimate=estimate,
                                                         metadata=metadata, ttl=ttl, buffer=buffer))
    return await aguarded_call(meter, client.messages.create, create_kwargs, bool(create_kwargs.get("stream")))
