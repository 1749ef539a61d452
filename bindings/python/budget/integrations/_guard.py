"""Shared machinery of the SDK stream guards (no SDK is imported here).

A guard reserves before the provider call (an estimate from the request's messages and its
maximum output tokens, priced by the manager's PricingEngine), meters every streamed
chunk/event (the provider's usage when it has arrived, a text-based estimate before that),
stops the stream the moment the budget says ``Stop``, commits the provider's usage at the
end, and on error, cancellation or an abandoned stream commits what was streamed so far
(marked incomplete) or releases the hold when nothing was.
"""
from __future__ import annotations

import asyncio
import json
from typing import (Any, AsyncGenerator, AsyncIterator, Dict, Generator, Generic, Iterable, Iterator, Mapping,
                    Optional, Set, Tuple, TypeVar)

from .._errors import BudgetExceededError, InvalidArgumentError
from .._manager import BudgetManager, SubjectLike
from .._money import _EXACT, Money, _scaled_nanos
from .._native import ConsumeResult, Decision, Receipt, Reservation, StreamUsage, Usage, estimate_tokens


def _to_dict(obj: Any) -> Any:
    """A plain dict of an SDK object (pydantic v2/v1) or of a dict."""
    if isinstance(obj, Mapping):
        return obj
    dump = getattr(obj, "model_dump", None)
    if dump is not None:
        return dump(mode="json", exclude_unset=False)
    dump = getattr(obj, "dict", None)
    if dump is not None:
        return dump()
    raise InvalidArgumentError(f"cannot read a provider object of type {type(obj).__name__}")


def _text_of(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, Mapping):
        parts = [str(content.get("text", ""))]
        if "content" in content:
            parts.append(_text_of(content["content"]))
        return " ".join(p for p in parts if p)
    if isinstance(content, Iterable):
        return " ".join(_text_of(c) for c in content)
    return str(content)


def estimate_input_tokens(messages: Any, system: Any = None, tools: Any = None) -> int:
    """Input tokens of a request, estimated high: the text's estimate plus 4 per message."""
    n = 0
    text = []
    for m in messages or ():
        m = _to_dict(m) if not isinstance(m, Mapping) else m
        n += 4
        text.append(_text_of(m.get("content")))
        if m.get("tool_calls"):
            text.append(json.dumps(m["tool_calls"], default=str))
    if system:
        text.append(_text_of(system))
    if tools:
        text.append(json.dumps(tools, default=str))
    return n + estimate_tokens("\n".join(text)) + 3


class Meter:
    """One guarded request: the reservation and the running consumption."""

    def __init__(
        self,
        manager: BudgetManager,
        fmt: str,
        provider: str,
        subject: SubjectLike,
        model: str,
        input_tokens: int,
        max_output_tokens: int,
        *,
        request_id: Optional[str] = None,
        estimate: Optional[Any] = None,
        metadata: Optional[Mapping[str, str]] = None,
        ttl: Optional[Any] = None,
        buffer: Optional[float] = None,
        service_tier: str = "standard",
    ) -> None:
        if not isinstance(model, str) or not model:
            raise InvalidArgumentError("the request needs a model")
        if estimate is None and manager.pricing is None:
            raise InvalidArgumentError("guarding a provider call needs a manager with pricing=... or estimate=...")
        self.manager = manager
        self.fmt = fmt
        self.provider = provider
        self.subject = subject
        self.model = model
        self.input_tokens = input_tokens
        self.max_output_tokens = max_output_tokens
        self.request_id = request_id
        self.estimate = estimate
        self.metadata = dict(metadata) if metadata else None
        self.ttl = ttl
        self.buffer = buffer
        self.service_tier = service_tier  # the tier the reserve estimate is priced at
        self.stream = StreamUsage(fmt, input_tokens_estimate=input_tokens)
        self.reservation: Optional[Reservation] = None
        self.decision: Optional[Decision] = None
        self.receipt: Optional[Receipt] = None
        self.consumed_cost = Money("0")
        self.consumed_tokens = 0
        self.last: Optional[ConsumeResult] = None
        self.events = 0

    # -- reserve ---------------------------------------------------------------------
    def reserve_call(self) -> Tuple[Tuple[Any, ...], Dict[str, Any]]:
        kw: Dict[str, Any] = {"request_id": self.request_id, "provider": self.provider, "metadata": self.metadata,
                              "ttl": self.ttl, "buffer": self.buffer}
        if self.estimate is not None:
            kw["tokens"] = self.input_tokens + self.max_output_tokens
            return (self.subject, self.estimate), kw
        kw["model"] = self.model
        usage = Usage(input_tokens=self.input_tokens, output_tokens=self.max_output_tokens,
                      service_tier=self.service_tier)
        return (self.subject, usage), kw

    def on_decision(self, d: Decision) -> None:
        self.decision = d
        if not d.allowed:
            raise BudgetExceededError.from_denial(d.denial, request_id=self.request_id)
        self.reservation = d.reservation

    # -- meter -----------------------------------------------------------------------
    def feed(self, event: Any) -> Optional[Tuple[Money, int]]:
        """Feeds one chunk/event; returns the (money, tokens) to consume, or None when nothing moved."""
        self.events += 1
        self.stream.feed_event(_to_dict(event))
        usage = self.stream.usage
        cost = self._cost(usage)
        tokens = usage.total_tokens
        d_cost = _EXACT.subtract(cost, self.consumed_cost)  # exact whatever the caller's decimal context
        d_tokens = max(0, tokens - self.consumed_tokens)
        if d_cost <= 0 and d_tokens == 0:
            return None
        if cost > self.consumed_cost:
            self.consumed_cost = cost
        self.consumed_tokens = max(tokens, self.consumed_tokens)
        return (Money(d_cost) if d_cost > 0 else Money("0")), d_tokens

    def _cost(self, usage: Usage) -> Money:
        pricing = self.manager.pricing
        if pricing is not None:
            return pricing.cost(self.model, usage)
        # no pricing: spread the money estimate over the expected tokens
        assert self.estimate is not None and self.decision is not None
        expected = max(1, self.input_tokens + self.max_output_tokens)
        est = self.decision.estimate
        return _scaled_nanos(est, usage.total_tokens, expected)

    def after_consume(self, r: ConsumeResult) -> bool:
        """True when the stream must stop."""
        self.last = r
        return r.stop

    def stop_error(self) -> BudgetExceededError:
        denial = self.last.denial if self.last is not None else None
        rid = self.reservation.request_id if self.reservation is not None else self.request_id
        return BudgetExceededError.from_denial(denial, request_id=rid, stopped=True)

    # -- settle ----------------------------------------------------------------------
    def final_charge(self, finished: bool) -> Optional[Dict[str, Any]]:
        """Commit kwargs, or None to release (nothing was streamed)."""
        if finished:
            try:
                usage = self.stream.finish()
            except InvalidArgumentError:
                usage = self.stream.usage
        else:
            usage = self.stream.usage
        if not finished and self.events == 0:
            return None
        if not finished and usage.complete:
            pass  # the provider's numbers had arrived before the stream was cut
        elif not finished:
            usage = Usage(**{**usage.to_dict(), "complete": False})  # type: ignore[arg-type]
        if self.manager.pricing is None:
            return {"actual": self._cost(usage), "tokens": usage.total_tokens, "provider": self.provider}
        return {"usage": usage, "model": self.model, "provider": self.provider}

    def response_charge(self, response: Any) -> Dict[str, Any]:
        from ..usage import usage_from_response

        usage = usage_from_response(self.fmt, _to_dict(response))
        if self.manager.pricing is None:
            return {"actual": self._cost(usage), "tokens": usage.total_tokens, "provider": self.provider}
        return {"usage": usage, "model": self.model, "provider": self.provider}


# ---------------------------------------------------------------------------------------
# Stream wrappers.

E = TypeVar("E")


class GuardedStream(Generic[E]):
    """An SDK stream metered against the budget. Iterate it like the SDK stream; ``close()``
    (or the ``with`` block) ends it early. ``receipt`` is set once the request is settled.
    Raises :class:`BudgetExceededError` (``stopped=True``) when the budget stops it."""

    def __init__(self, meter: Meter, sdk_stream: Any) -> None:
        self._meter = meter
        self._stream = sdk_stream
        self._gen = self._iterate()
        self._settled = False

    @property
    def receipt(self) -> Optional[Receipt]:
        return self._meter.receipt

    @property
    def request_id(self) -> str:
        assert self._meter.reservation is not None
        return self._meter.reservation.request_id

    @property
    def response(self) -> Any:
        """The SDK stream object."""
        return self._stream

    def __iter__(self) -> Iterator[E]:
        return self

    def __next__(self) -> E:
        return next(self._gen)

    def __enter__(self) -> "GuardedStream[E]":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._gen.close()
        self._settle(False)
        self._close_sdk()

    def __del__(self) -> None:
        # Dropped before it was read to the end or closed (an error in the caller's code, a
        # stream never iterated): settled as a cancelled stream when the collector frees it —
        # released if nothing streamed, else the estimate so far committed — instead of
        # holding the budget until the hold's TTL. (A partly read stream settles through its
        # generator's cleanup too; this also covers one never started.)
        try:
            if not self._settled:
                self._settle(False)
                self._close_sdk()
        except Exception:  # a closed manager, a store down: the hold then expires by its TTL
            pass

    def _close_sdk(self) -> None:
        close = getattr(self._stream, "close", None)
        if close is not None:
            try:
                close()
            except Exception:  # closing a broken connection must not mask the real error
                pass

    def _settle(self, finished: bool) -> None:
        if self._settled:
            return
        self._settled = True
        m = self._meter
        assert m.reservation is not None
        charge = m.final_charge(finished)
        if charge is None:
            m.receipt = m.manager.release(m.reservation)
        else:
            m.receipt = m.manager.commit(m.reservation, **charge)

    def _iterate(self) -> Generator[E, None, None]:
        m = self._meter
        finished = False
        try:
            for event in self._stream:
                step = m.feed(event)
                if step is not None:
                    assert m.reservation is not None
                    r = m.manager.consume(m.reservation, step[0], tokens=step[1])
                    if m.after_consume(r):
                        self._close_sdk()
                        self._settle(False)
                        raise m.stop_error()
                yield event
            finished = True
        finally:
            self._settle(finished)


# The settles of dropped async streams in flight (a task nobody else refers to may be collected).
_DROPPED: Set["asyncio.Task[None]"] = set()


class AsyncGuardedStream(Generic[E]):
    """The asyncio form of :class:`GuardedStream` (``async for``, ``await close()``)."""

    def __init__(self, meter: Meter, sdk_stream: Any) -> None:
        self._meter = meter
        self._stream = sdk_stream
        self._gen = self._iterate()
        self._settled = False
        self._loop = asyncio.get_running_loop()  # made by an async guard, on its loop

    @property
    def receipt(self) -> Optional[Receipt]:
        return self._meter.receipt

    @property
    def request_id(self) -> str:
        assert self._meter.reservation is not None
        return self._meter.reservation.request_id

    @property
    def response(self) -> Any:
        return self._stream

    def __del__(self) -> None:
        # Dropped unread or unclosed (see GuardedStream.__del__): a finalizer cannot await, so
        # the settle is scheduled on the stream's loop (while it runs) as a task kept alive
        # until it is done.
        try:
            if self._settled or self._loop.is_closed():
                return

            def start() -> None:
                task = self._loop.create_task(self._settle_dropped())
                _DROPPED.add(task)
                task.add_done_callback(_DROPPED.discard)

            self._loop.call_soon_threadsafe(start)
        except Exception:  # the loop is gone: the hold then expires by its TTL
            pass

    async def _settle_dropped(self) -> None:
        try:
            await self._settle(False)
            await self._close_sdk()
        except Exception:
            pass

    def __aiter__(self) -> AsyncIterator[E]:
        return self

    async def __anext__(self) -> E:
        return await self._gen.__anext__()

    async def __aenter__(self) -> "AsyncGuardedStream[E]":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self._gen.aclose()
        await self._settle(False)
        await self._close_sdk()

    async def _close_sdk(self) -> None:
        close = getattr(self._stream, "close", None)
        if close is not None:
            try:
                res = close()
                if asyncio.iscoroutine(res):
                    await res
            except Exception:
                pass

    async def _settle(self, finished: bool) -> None:
        if self._settled:
            return
        self._settled = True
        m = self._meter
        assert m.reservation is not None
        charge = m.final_charge(finished)
        if charge is None:
            fut = m.manager.arelease(m.reservation)
        else:
            fut = m.manager.acommit(m.reservation, **charge)
        m.receipt = await asyncio.shield(fut)  # settle even when the task is being cancelled

    async def _iterate(self) -> AsyncGenerator[E, None]:
        m = self._meter
        finished = False
        try:
            async for event in self._stream:
                step = m.feed(event)
                if step is not None:
                    assert m.reservation is not None
                    r = await m.manager.aconsume(m.reservation, step[0], tokens=step[1])
                    if m.after_consume(r):
                        await self._close_sdk()
                        await self._settle(False)
                        raise m.stop_error()
                yield event
            finished = True
        finally:
            await self._settle(finished)


def default_max_output(manager: BudgetManager, model: str) -> int:
    pricing = manager.pricing
    if pricing is not None:
        try:
            n = pricing.resolve(model).max_output_tokens
            if n > 0:
                return n
        except Exception:
            pass
    return 4096


def guarded_call(meter: Meter, call: Any, kwargs: Dict[str, Any], stream: bool) -> Any:
    args, kw = meter.reserve_call()
    meter.on_decision(meter.manager.reserve(*args, **kw))
    assert meter.reservation is not None
    try:
        result = call(**kwargs)
    except BaseException:
        meter.receipt = meter.manager.release(meter.reservation)
        raise
    if stream:
        return GuardedStream(meter, result)
    try:
        charge = meter.response_charge(result)
    except BaseException:
        meter.receipt = meter.manager.commit(meter.reservation, meter.decision.estimate if meter.decision else None)
        raise
    meter.receipt = meter.manager.commit(meter.reservation, **charge)
    return result


async def aguarded_call(meter: Meter, call: Any, kwargs: Dict[str, Any], stream: bool) -> Any:
    args, kw = meter.reserve_call()
    meter.on_decision(await meter.manager.areserve(*args, **kw))
    assert meter.reservation is not None
    try:
        result = await call(**kwargs)
    except BaseException:
        meter.receipt = await asyncio.shield(meter.manager.arelease(meter.reservation))
        raise
    if stream:
        return AsyncGuardedStream(meter, result)
    charge = meter.response_charge(result)
    meter.receipt = await asyncio.shield(meter.manager.acommit(meter.reservation, **charge))
    return result
