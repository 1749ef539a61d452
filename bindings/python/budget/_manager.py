"""BudgetManager: the native manager plus the Pythonic conveniences (hold, asyncio, coreason-style)."""
from __future__ import annotations

import asyncio
import functools
import os
import threading
import weakref
from concurrent.futures import Executor
from datetime import timedelta
from decimal import Decimal
from types import TracebackType
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Set, Tuple, Type, TypeVar, Union

from . import _native
from ._config import LimitsSpec, load_limits
from ._errors import BudgetExceededError, InvalidArgumentError, UnknownModelError
from ._money import Money, MoneyLike
from ._native import (
    ConsumeResult,
    Decision,
    LimitStatus,
    PricingEngine,
    Receipt,
    Reservation,
    Subject,
    Usage,
)

__all__ = ["BudgetManager", "Hold", "AsyncHold", "SubjectLike", "PricingSpec"]

SubjectLike = Union[str, Sequence[str], Mapping[str, str], Subject]
PricingSpec = Union[None, bool, PricingEngine, str, "os.PathLike[str]"]
Seconds = Union[int, float, timedelta]
T = TypeVar("T")


def _make_pricing(pricing: PricingSpec) -> Optional[PricingEngine]:
    if pricing is None or pricing is False:
        return None
    if pricing is True:
        return PricingEngine.bundled()
    if isinstance(pricing, PricingEngine):
        return pricing
    if isinstance(pricing, (str, os.PathLike)):
        engine = PricingEngine()
        path = os.fspath(pricing)
        with open(path, "rb") as f:
            head = f.read(64).lstrip()
        if head.startswith(b"{"):
            engine.load_litellm_file(path)
        else:
            engine.load_compact_file(path)
        return engine
    raise InvalidArgumentError(f"pricing must be True, a PricingEngine or a price-table path, not {type(pricing).__name__}")


def _coreason_subject(user_id: str, project_id: Optional[str]) -> List[str]:
    if not isinstance(user_id, str) or not user_id.strip():
        raise InvalidArgumentError("user_id must be a non-empty string.")
    subject = []
    if project_id is not None:
        if not isinstance(project_id, str) or not project_id.strip():
            raise InvalidArgumentError("project_id must be a non-empty string or None.")
        subject.append(f"project:{project_id}")
    subject.append(f"user:{user_id}")
    return subject


def _spend_model(cost: MoneyLike, model: Optional[str]) -> Optional[str]:
    # The ledger's model of a money record; a zero cost names none (the core reads a model
    # without usage or cost as a forgotten usage), the metadata still does.
    if not model or _native.parse_money_nanos(cost) == 0:
        return None
    return model


def _nothing_to_remove() -> None:
    """What on_alert(None) / on_denial(None) return: there is no registration to remove."""


def _dispatcher(manager: "BudgetManager", kind: str) -> Callable[..., None]:
    """The one callable the engine holds per kind: calls the manager's current callbacks."""
    me = weakref.ref(manager)
    where = f"budget {kind} callback"

    def dispatch(*args: object) -> None:
        m = me()
        if m is None:
            return
        for _, callback in m._callbacks[kind]:
            try:
                callback(*args)
            except Exception as e:  # never into the engine; the next callbacks still run
                _native._report_unraisable(e, where)

    return dispatch


class BudgetManager(_native.BudgetManager):
    """Enforces spend budgets over a store shared by threads, processes and hosts.

    ``store``: ``"memory"``, ``"sqlite:<path>"`` (default ``"sqlite:budget.db"``) or
    ``"redis://host:port/db"``. ``limits``: see :func:`budget.load_limits` (list, dict, JSON,
    a ``.json``/``.toml`` path). ``pricing``: ``True`` for the bundled price table, a
    :class:`PricingEngine`, or the path of a LiteLLM JSON / compact table. Other keyword
    options: ``currency``, ``clock``, ``default_ttl`` (seconds or timedelta), ``buffer``
    (1.2 = hold 20 % more than the estimate), ``growth_step``, ``min_growth``,
    ``persist_every``, ``fail_open``, ``time_zone`` (an IANA name such as ``"Europe/Paris"``
    for calendar windows; default UTC), ``utc_offset_minutes``, ``store_timeout``,
    ``executor`` (for the ``a``-prefixed asyncio methods; default: the loop's executor),
    ``on_alert`` / ``on_denial`` (a first callback, as :meth:`on_alert` / :meth:`on_denial` add).

    Every method may be called from any thread; the GIL is released while the store works.
    """

    def __init__(
        self,
        store: str = "sqlite:budget.db",
        *,
        limits: LimitsSpec = None,
        pricing: PricingSpec = None,
        executor: Optional[Executor] = None,
        on_alert: Optional[Callable[[_native.Alert], object]] = None,
        on_denial: Optional[Callable[[_native.Denial, Subject], object]] = None,
        **options: Any,
    ) -> None:
        engine = _make_pricing(pricing)
        for what, cb in (("on_alert", on_alert), ("on_denial", on_denial)):
            if cb is not None and not callable(cb):  # before the store is opened
                raise InvalidArgumentError(f"{what} needs a callable")
        super().__init__(store, limits=load_limits(limits), pricing=engine, **options)
        self._pricing = engine
        self._executor = executor
        self._observer_lock = threading.Lock()
        self._callbacks: Dict[str, Tuple[Tuple[object, Callable[..., object]], ...]] = {"alert": (), "denial": ()}
        self._dispatching: Set[str] = set()  # kinds whose dispatcher the engine holds (see _observe)
        if on_alert is not None:
            self.on_alert(on_alert)
        if on_denial is not None:
            self.on_denial(on_denial)

    # ---- configuration ---------------------------------------------------------------
    @property
    def pricing(self) -> Optional[PricingEngine]:
        """The pricing engine (None when the manager prices nothing)."""
        return self._pricing

    def set_limits(self, spec: LimitsSpec) -> List[_native.Limit]:
        """Upserts the limits of ``spec`` (any shape :func:`budget.load_limits` reads)."""
        limits = load_limits(spec)
        for limit in limits:
            self.set_limit(limit)
        return limits

    def __enter__(self) -> "BudgetManager":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def __aenter__(self) -> "BudgetManager":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._run(self.close)

    # ---- observers -------------------------------------------------------------------
    # Registering adds a callback (as C++ BudgetManager::on_alert/on_denial, the C API and the
    # Node package do): registering twice calls both (a function registered twice is called
    # twice). Each registration returns a function that removes it; None removes every callback
    # of the kind. Callbacks run in registration order; one that raises is reported as
    # unraisable and the others still run.
    def on_alert(self, callback: Optional[Callable[[_native.Alert], object]]) -> Callable[[], None]:
        """Adds ``callback(alert)``, called once per limit, threshold and window when spend
        crosses it. Returns a function that removes this callback; ``on_alert(None)`` removes
        every alert callback."""
        return self._observe("alert", callback)

    def on_denial(self, callback: Optional[Callable[[_native.Denial, Subject], object]]) -> Callable[[], None]:
        """Adds ``callback(denial, subject)``, called for every denial (reserve, check, stream
        Stop). Returns a function that removes this callback; ``on_denial(None)`` removes every
        denial callback."""
        return self._observe("denial", callback)

    def _observe(self, kind: str, callback: Optional[Callable[..., object]]) -> Callable[[], None]:
        # The engine (C++) keeps what it is given where Python's garbage collector cannot see
        # it, and never lets go of it. So it gets one dispatcher per kind, registered on first
        # use, that refers to this manager weakly; the callbacks are kept here: a callback that
        # refers to its manager (a bound method of the service owning it, a lambda using it) is
        # then a cycle the collector frees, not a manager (its store, its files) kept alive for
        # good, and removing one needs nothing from the engine.
        if callback is None:
            with self._observer_lock:
                self._callbacks[kind] = ()
            return _nothing_to_remove
        if not callable(callback):
            raise InvalidArgumentError(f"on_{kind} needs a callable (or None to remove every {kind} callback)")
        token = object()  # this registration (the same function may be registered twice)
        with self._observer_lock:
            if kind not in self._dispatching:
                register = self._on_alert if kind == "alert" else self._on_denial
                register(_dispatcher(self, kind))  # raises when the manager is closed
                self._dispatching.add(kind)
            elif self.closed:
                raise InvalidArgumentError("this BudgetManager is closed")
            # Copy on write: the dispatcher reads the tuple without the lock, from any thread.
            self._callbacks[kind] = self._callbacks[kind] + ((token, callback),)
        me = weakref.ref(self)

        def remove() -> None:
            manager = me()
            if manager is not None:
                with manager._observer_lock:
                    manager._callbacks[kind] = tuple(e for e in manager._callbacks[kind] if e[0] is not token)

        return remove

    # ---- holds -----------------------------------------------------------------------
    def hold(
        self,
        subject: SubjectLike,
        estimate: Union[MoneyLike, Usage, None] = None,
        **kwargs: Any,
    ) -> "Hold":
        """A context manager around one request's reservation.

        ``with manager.hold(subject, "0.05", model="gpt-4o") as h:`` reserves on entry
        (raising :class:`BudgetExceededError` when denied); ``h.consume(...)`` meters a
        stream (raising ``BudgetExceededError`` with ``stopped=True`` on ``Stop``);
        ``h.commit(...)`` / ``h.set_usage(...)`` give the real cost. On a normal exit the
        hold is committed with the real cost if given, else with what was consumed, else
        with the estimate; on an exception or cancellation the real cost is committed if it was
        given, else what was consumed (those tokens were generated) or, if nothing was, the hold
        is released.
        """
        return Hold(self, subject, estimate, kwargs)

    def ahold(
        self,
        subject: SubjectLike,
        estimate: Union[MoneyLike, Usage, None] = None,
        **kwargs: Any,
    ) -> "AsyncHold":
        """The ``async with`` form of :meth:`hold` (store calls run off the event loop)."""
        return AsyncHold(self, subject, estimate, kwargs)

    # ---- coreason-budget style -------------------------------------------------------
    def check_availability(
        self, user_id: str, project_id: Optional[str] = None, estimated_cost: MoneyLike = 0.0
    ) -> None:
        """Raises :class:`BudgetExceededError` when ``user:<user_id>`` (and
        ``project:<project_id>``, and ``global``) cannot spend ``estimated_cost`` now. Nothing is held."""
        d = self.check(_coreason_subject(user_id, project_id), estimated_cost)
        if not d.allowed:
            raise BudgetExceededError.from_denial(d.denial)

    def record_spend(
        self,
        user_id: str,
        cost: MoneyLike,
        project_id: Optional[str] = None,
        model: Optional[str] = None,
        *,
        request_id: Optional[str] = None,
    ) -> Receipt:
        """Records ``cost`` as spent by the user (and project), under ``model`` (the ledger's model
        field: ``aggregate(by_model=True)``); returns the receipt."""
        subject = _coreason_subject(user_id, project_id)
        metadata = {"model": model} if model else None
        return self.record(subject, cost, model=_spend_model(cost, model), request_id=request_id, metadata=metadata)

    # ---- asyncio ---------------------------------------------------------------------
    async def _run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, functools.partial(fn, *args, **kwargs))

    async def areserve(self, subject: SubjectLike, estimate: Union[MoneyLike, Usage, None] = None, **kw: Any) -> Decision:
        """Async :meth:`reserve`. A cancelled ``areserve`` holds nothing: the store call runs on
        in the executor, and the hold it makes (unless it is a replay of an earlier reserve) is
        released, since the cancelled caller never gets it."""
        lock = threading.Lock()
        delivered: List[Decision] = []
        abandoned = False

        def reserve() -> Decision:
            d = self.reserve(subject, estimate, **kw)
            with lock:
                if not abandoned:
                    delivered.append(d)
                    return d
            if d.allowed and not d.replayed and d.reservation is not None:
                self.release(d.reservation)  # the caller was cancelled before the hold was made
            return d

        try:
            return await self._run(reserve)
        except asyncio.CancelledError:
            with lock:
                abandoned = True
                landed = delivered[0] if delivered else None
            if landed is not None and landed.allowed and not landed.replayed and landed.reservation is not None:
                # The hold was made, the cancellation came before the result reached the caller.
                await asyncio.shield(self.arelease(landed.reservation))
            raise

    async def acheck(self, subject: SubjectLike, estimate: Union[MoneyLike, Usage, None] = None, **kw: Any) -> Decision:
        return await self._run(self.check, subject, estimate, **kw)

    async def aconsume(self, reservation: Union[Reservation, str], amount: Optional[MoneyLike] = None, **kw: Any) -> ConsumeResult:
        return await self._run(self.consume, reservation, amount, **kw)

    async def acommit(self, reservation: Union[Reservation, str], actual: Union[MoneyLike, Usage, None] = None, **kw: Any) -> Receipt:
        return await self._run(self.commit, reservation, actual, **kw)

    async def arelease(self, reservation: Union[Reservation, str]) -> Receipt:
        return await self._run(self.release, reservation)

    async def arecord(self, subject: SubjectLike, actual: Union[MoneyLike, Usage, None] = None, **kw: Any) -> Receipt:
        return await self._run(self.record, subject, actual, **kw)

    async def agrant(self, scope: str, amount: MoneyLike, **kw: Any) -> None:
        await self._run(self.grant, scope, amount, **kw)

    async def aadjust(self, subject: SubjectLike, delta: MoneyLike, **kw: Any) -> None:
        await self._run(self.adjust, subject, delta, **kw)

    async def astatus(self, scope: str = "global") -> List[LimitStatus]:
        return await self._run(self.status, scope)

    async def aexpire_holds(self) -> int:
        return await self._run(self.expire_holds)

    async def acheck_availability(
        self, user_id: str, project_id: Optional[str] = None, estimated_cost: MoneyLike = 0.0
    ) -> None:
        """Async :meth:`check_availability` (the store call runs off the event loop)."""
        subject = _coreason_subject(user_id, project_id)
        d = await self._run(self.check, subject, estimated_cost)
        if not d.allowed:
            raise BudgetExceededError.from_denial(d.denial)

    async def arecord_spend(
        self,
        user_id: str,
        cost: MoneyLike,
        project_id: Optional[str] = None,
        model: Optional[str] = None,
        *,
        request_id: Optional[str] = None,
    ) -> Receipt:
        """Async :meth:`record_spend`."""
        subject = _coreason_subject(user_id, project_id)
        metadata = {"model": model} if model else None
        return await self._run(self.record, subject, cost, model=_spend_model(cost, model), request_id=request_id,
                               metadata=metadata)


class _HoldBase:
    def __init__(self, manager: BudgetManager, subject: SubjectLike, estimate: Any, kwargs: Dict[str, Any]) -> None:
        self.manager = manager
        self._subject = subject
        self._estimate = estimate
        self._kwargs = kwargs
        self._model: Optional[str] = kwargs.get("model")
        self.decision: Optional[Decision] = None
        self.receipt: Optional[Receipt] = None
        self.last: Optional[ConsumeResult] = None
        self.stopped = False
        self._final: Optional[Dict[str, Any]] = None

    @property
    def reservation(self) -> Reservation:
        if self.decision is None or self.decision.reservation is None:
            raise InvalidArgumentError("the hold is not active (use it in a with block)")
        return self.decision.reservation

    @property
    def request_id(self) -> str:
        return self.reservation.request_id

    @property
    def consumed(self) -> Money:
        """What was consumed so far (0 before the first consume)."""
        return self.last.consumed if self.last is not None else Money("0.00")

    def set_usage(self, usage: Usage, *, model: Optional[str] = None) -> None:
        """The real usage to commit at the end of the ``with`` block."""
        self._final = {"usage": usage, "model": model or self._model or self.reservation.model or None}

    def set_cost(self, actual: MoneyLike, *, tokens: Optional[int] = None) -> None:
        """The real cost to commit at the end of the ``with`` block."""
        self._final = {"actual": actual, "tokens": tokens}

    def _after_consume(self, r: ConsumeResult, raise_on_stop: bool) -> ConsumeResult:
        self.last = r
        if r.stop:
            self.stopped = True
            if raise_on_stop:
                raise BudgetExceededError.from_denial(r.denial, request_id=self.request_id, stopped=True)
        return r

    def _exit_charge(self, failed: bool) -> Optional[Dict[str, Any]]:
        """What to commit on exit, or None to release."""
        if self._final is not None:
            return self._final  # the real cost, also when the block failed after it was given
        if self.last is not None and self.last.consumed > 0:
            return {"actual": self.last.consumed}
        if failed:
            return None
        assert self.decision is not None
        return {"actual": self.decision.estimate}

    def _charge_kwargs(self, actual: Any, usage: Optional[Usage], model: Optional[str], tokens: Optional[int]) -> Dict[str, Any]:
        kw: Dict[str, Any] = {}
        if usage is not None:
            kw["usage"] = usage
            kw["model"] = model or self._model or self.reservation.model or None
        elif actual is not None:
            kw["actual"] = actual
        else:  # no cost given: what the end of the block would charge, never zero by omission
            charge = self._exit_charge(False)
            assert charge is not None
            kw.update((k, v) for k, v in charge.items() if v is not None)
        if tokens is not None:
            kw["tokens"] = tokens
        return kw


class Hold(_HoldBase):
    """A reservation held for the duration of a ``with`` block (see :meth:`BudgetManager.hold`)."""

    def __enter__(self) -> "Hold":
        d = self.manager.reserve(self._subject, self._estimate, **self._kwargs)
        if not d.allowed:
            raise BudgetExceededError.from_denial(d.denial, request_id=self._kwargs.get("request_id"))
        self.decision = d
        return self

    def consume(
        self,
        amount: Optional[MoneyLike] = None,
        *,
        tokens: Optional[int] = None,
        usage: Optional[Usage] = None,
        raise_on_stop: bool = True,
    ) -> ConsumeResult:
        """Adds incremental spend; raises BudgetExceededError(stopped=True) on Stop unless told not to."""
        kw: Dict[str, Any] = {"tokens": tokens}
        if usage is not None:
            kw["usage"] = usage
            kw["model"] = self._model or self.reservation.model or None
        r = self.manager.consume(self.reservation, amount, **kw)
        return self._after_consume(r, raise_on_stop)

    def commit(
        self,
        actual: Optional[MoneyLike] = None,
        *,
        usage: Optional[Usage] = None,
        model: Optional[str] = None,
        tokens: Optional[int] = None,
    ) -> Receipt:
        """Charges the real cost now (money or usage) and releases the rest of the hold; with
        no cost, what the end of the block would charge (set cost, else consumed, else estimate)."""
        if self.receipt is None:
            self.receipt = self.manager.commit(self.reservation, **self._charge_kwargs(actual, usage, model, tokens))
        return self.receipt

    def release(self) -> Receipt:
        """Voids the hold now."""
        if self.receipt is None:
            self.receipt = self.manager.release(self.reservation)
        return self.receipt

    def __exit__(
        self, exc_type: Optional[Type[BaseException]], exc: Optional[BaseException], tb: Optional[TracebackType]
    ) -> None:
        if self.decision is None or self.receipt is not None:
            return
        charge = self._exit_charge(exc_type is not None)
        try:
            self._settle(charge)
        except (InvalidArgumentError, UnknownModelError):
            if charge is None or charge is not self._final:
                raise
            # The cost given to set_cost/set_usage cannot be charged: settle as a failed block
            # (never leave the hold behind), then report the bad cost.
            self._final = None
            self._settle(self._exit_charge(True))
            raise

    def _settle(self, charge: Optional[Dict[str, Any]]) -> None:
        if charge is None:
            self.receipt = self.manager.release(self.reservation)
        else:
            self.receipt = self.manager.commit(self.reservation, **{k: v for k, v in charge.items() if v is not None})


class AsyncHold(_HoldBase):
    """The ``async with`` form of :class:`Hold`: every store call runs in the executor."""

    async def __aenter__(self) -> "AsyncHold":
        d = await self.manager.areserve(self._subject, self._estimate, **self._kwargs)
        if not d.allowed:
            raise BudgetExceededError.from_denial(d.denial, request_id=self._kwargs.get("request_id"))
        self.decision = d
        return self

    async def consume(
        self,
        amount: Optional[MoneyLike] = None,
        *,
        tokens: Optional[int] = None,
        usage: Optional[Usage] = None,
        raise_on_stop: bool = True,
    ) -> ConsumeResult:
        kw: Dict[str, Any] = {"tokens": tokens}
        if usage is not None:
            kw["usage"] = usage
            kw["model"] = self._model or self.reservation.model or None
        r = await self.manager.aconsume(self.reservation, amount, **kw)
        return self._after_consume(r, raise_on_stop)

    async def commit(
        self,
        actual: Optional[MoneyLike] = None,
        *,
        usage: Optional[Usage] = None,
        model: Optional[str] = None,
        tokens: Optional[int] = None,
    ) -> Receipt:
        if self.receipt is None:
            self.receipt = await self.manager.acommit(self.reservation, **self._charge_kwargs(actual, usage, model, tokens))
        return self.receipt

    async def release(self) -> Receipt:
        if self.receipt is None:
            self.receipt = await self.manager.arelease(self.reservation)
        return self.receipt

    async def __aexit__(
        self, exc_type: Optional[Type[BaseException]], exc: Optional[BaseException], tb: Optional[TracebackType]
    ) -> None:
        if self.decision is None or self.receipt is not None:
            return
        charge = self._exit_charge(exc_type is not None)
        try:
            await self._settle(charge)
        except (InvalidArgumentError, UnknownModelError):
            if charge is None or charge is not self._final:
                raise
            # The cost given to set_cost/set_usage cannot be charged: settle as a failed block.
            self._final = None
            await self._settle(self._exit_charge(True))
            raise

    async def _settle(self, charge: Optional[Dict[str, Any]]) -> None:
        # Settle even when the task is being cancelled: shield the store call.
        if charge is None:
            fut = self.manager.arelease(self.reservation)
        else:
            fut = self.manager.acommit(self.reservation, **{k: v for k, v in charge.items() if v is not None})
        self.receipt = await asyncio.shield(fut)
