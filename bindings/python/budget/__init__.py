"""libbudget: real-time AI spend enforcement.

Hold before an LLM call, meter the stream, charge the provider's real usage — across many
scopes (global, tenant, project, user, key...), windows and processes. See docs/python.md.

    import budget
    m = budget.BudgetManager("sqlite:budget.db", limits={"user:*": {"day": "10.00"}})
    with m.hold(["tenant:acme", "user:alice"], "0.05") as h:
        ...
        h.set_cost("0.0123")
"""
from __future__ import annotations

from . import _native
from ._config import load_limits
from ._errors import (
    BudgetError,
    BudgetExceededError,
    BudgetOverflowError,
    ConflictError,
    InternalError,
    InvalidArgumentError,
    NotFoundError,
    StoreUnavailableError,
    UnknownModelError,
)
from ._manager import AsyncHold, BudgetManager, Hold
from ._money import Money, MoneyLike
from ._native import (
    AggregateRow,
    Alert,
    ConsumeResult,
    Decision,
    Denial,
    LedgerEvent,
    Limit,
    LimitStatus,
    LineItem,
    LoadReport,
    ManualClock,
    PriceQuote,
    PricingEngine,
    Receipt,
    Reservation,
    ResolvedModel,
    Subject,
    Usage,
    VerifyReport,
)
from .usage import StreamUsage, estimate_tokens, usage_from_response

__version__: str = getattr(_native, "__version__", "0.0.0")


def money(amount: MoneyLike) -> Money:
    """``amount`` as the library reads it (exact; floats through ``repr``), e.g. ``money(0.1)``.

    Raises ``InvalidArgumentError`` for an amount finer than a nano (``money(1e-10)``).
    """
    return Money.from_nanos(_native.parse_money_nanos(amount))


__all__ = [
    "AggregateRow",
    "Alert",
    "AsyncHold",
    "BudgetError",
    "BudgetExceededError",
    "BudgetManager",
    "BudgetOverflowError",
    "ConflictError",
    "ConsumeResult",
    "Decision",
    "Denial",
    "Hold",
    "InternalError",
    "InvalidArgumentError",
    "LedgerEvent",
    "Limit",
    "LimitStatus",
    "LineItem",
    "LoadReport",
    "ManualClock",
    "Money",
    "MoneyLike",
    "NotFoundError",
    "PriceQuote",
    "PricingEngine",
    "Receipt",
    "Reservation",
    "ResolvedModel",
    "StoreUnavailableError",
    "StreamUsage",
    "Subject",
    "UnknownModelError",
    "Usage",
    "VerifyReport",
    "estimate_tokens",
    "load_limits",
    "money",
    "usage_from_response",
    "__version__",
]
