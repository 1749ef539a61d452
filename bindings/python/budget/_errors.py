"""The exceptions of libbudget: one base class and a subclass per stable error code."""
from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any, Dict, Optional, Type, Union

if TYPE_CHECKING:  # pragma: no cover
    from decimal import Decimal

    from ._native import Denial

__all__ = [
    "BudgetError",
    "InvalidArgumentError",
    "UnknownModelError",
    "NotFoundError",
    "StoreUnavailableError",
    "ConflictError",
    "BudgetOverflowError",
    "InternalError",
    "BudgetExceededError",
]


class BudgetError(Exception):
    """Base of every libbudget error.

    ``code`` is the stable code name ("invalid_argument", "budget_exceeded", ...) and
    ``code_number`` its number, shared with C++ ``budget::ErrorCode`` and the C ABI's
    ``budget_status`` (the Node package's ``.code`` is the upper-case name,
    ``"INVALID_ARGUMENT"``, and it has no number). Budget
    denials carry the structured fields below; for other errors they are ``None``.
    """

    code: str = "error"
    code_number: int = 0

    def __init__(self, message: str = "", **fields: Any) -> None:
        super().__init__(message)
        self.message: str = message
        self.scope: Optional[str] = fields.get("scope")
        self.window: Optional[str] = fields.get("window")
        self.metric: Optional[str] = fields.get("metric")
        self.limit: Optional[Union["Decimal", int]] = fields.get("limit")
        self.spent: Optional[Union["Decimal", int]] = fields.get("spent")
        self.held: Optional[Union["Decimal", int]] = fields.get("held")
        self.remaining: Optional[Union["Decimal", int]] = fields.get("remaining")
        self.requested: Optional[Union["Decimal", int]] = fields.get("requested")
        self.resets_at: Optional[datetime] = fields.get("resets_at")
        self.hard: bool = bool(fields.get("hard", False))
        self.reason: Optional[str] = fields.get("reason")
        self.request_id: Optional[str] = fields.get("request_id")

    def __reduce__(self) -> Any:  # picklable with its fields
        return (_rebuild, (type(self), self.message, self.__dict__.copy()))


def _rebuild(cls: Type[BudgetError], message: str, state: Dict[str, Any]) -> BudgetError:
    e = cls(message)
    e.__dict__.update(state)
    return e


class InvalidArgumentError(BudgetError, ValueError):
    """Bad input: NaN/inf money, a negative amount, a malformed scope, JSON or window, a wrong type."""

    code, code_number = "invalid_argument", 1


class UnknownModelError(BudgetError, LookupError):
    """The pricing engine has no price for the model and no fallback."""

    code, code_number = "unknown_model", 2


class NotFoundError(BudgetError, LookupError):
    """Unknown request id, scope or limit."""

    code, code_number = "not_found", 3


class StoreUnavailableError(BudgetError, ConnectionError):
    """The store could not answer (I/O error, Redis down, busy timeout)."""

    code, code_number = "store_unavailable", 4


class ConflictError(BudgetError):
    """A request id was reused for a different operation or amount."""

    code, code_number = "conflict", 5


class BudgetOverflowError(BudgetError, OverflowError):
    """Checked money or count arithmetic would overflow (e.g. an amount above 9.2 billion)."""

    code, code_number = "overflow", 6


class InternalError(BudgetError):
    """A bug or a corrupted store."""

    code, code_number = "internal", 7


class BudgetExceededError(BudgetError):
    """A budget has no room: raised by the raising conveniences (``check_availability``,
    ``hold``, the stream guards). ``hard`` is True for a hard cap (HTTP 402) and False when
    in-flight holds or a rate limit are the cause and a retry may succeed (HTTP 429)."""

    code, code_number = "budget_exceeded", 8

    def __init__(self, message: str = "", **fields: Any) -> None:
        super().__init__(message, **fields)
        self.denial: Optional["Denial"] = fields.get("denial")
        self.stopped: bool = bool(fields.get("stopped", False))

    @classmethod
    def from_denial(
        cls, denial: Optional["Denial"], *, request_id: Optional[str] = None, stopped: bool = False
    ) -> "BudgetExceededError":
        """The error that describes a denial (``Decision.denial`` or ``ConsumeResult.denial``)."""
        if denial is None:
            return cls("budget exceeded", request_id=request_id, stopped=stopped)
        if denial.reason == "store_unavailable":
            return StoreUnavailableError(denial.message or "the budget store is unavailable",  # type: ignore[return-value]
                                         reason=denial.reason, request_id=request_id)
        msg = denial.message or f"budget exceeded on {denial.scope} ({denial.window})"
        return cls(
            msg,
            scope=denial.scope,
            window=denial.window,
            metric=denial.metric,
            limit=denial.limit,
            spent=denial.spent,
            held=denial.held,
            remaining=denial.remaining,
            requested=denial.requested,
            resets_at=denial.resets_at,
            hard=denial.hard,
            reason=denial.reason,
            denial=denial,
            request_id=request_id,
            stopped=stopped,
        )

    @property
    def retry_after(self) -> Optional[float]:
        """Seconds until the exhausted window resets (None for a hard cap or a `total` window)."""
        if self.hard or self.resets_at is None:
            return None
        from datetime import timezone

        return max(0.0, (self.resets_at - datetime.now(timezone.utc)).total_seconds())


_BY_CODE: Dict[int, Type[BudgetError]] = {
    c.code_number: c
    for c in (
        InvalidArgumentError,
        UnknownModelError,
        NotFoundError,
        StoreUnavailableError,
        ConflictError,
        BudgetOverflowError,
        InternalError,
        BudgetExceededError,
    )
}


def _from_native(code: int, message: str) -> BudgetError:
    """Called by budget._native to turn a C++ budget::Error into its Python class."""
    return _BY_CODE.get(code, BudgetError)(message)
