"""Money: an exact decimal amount of the budget currency (a ``decimal.Decimal``) with ``.nanos``."""
from __future__ import annotations

from decimal import MAX_EMAX, MAX_PREC, MIN_EMIN, Context, Decimal
from typing import Union

__all__ = ["Money", "MoneyLike"]

NANOS_PER_UNIT = 1_000_000_000
# Decimal arithmetic follows the calling thread's context (an application may lower its
# precision or trap inexact results); the nanos of an amount never depend on it.
_EXACT = Context(prec=MAX_PREC, Emax=MAX_EMAX, Emin=MIN_EMIN)  # for exact operations only
_NANO = Decimal("0.000000001")


def _scaled_nanos(amount: Decimal, numerator: int, denominator: int) -> "Money":
    """``amount * numerator / denominator`` rounded half-to-even to the nano, whatever the context."""
    product = _EXACT.multiply(amount, numerator)
    quotient = Context(prec=60).divide(product, denominator)  # 60 digits: far below the nano
    return Money(_EXACT.quantize(quotient, _NANO))


class Money(Decimal):
    """An exact amount returned by the library: a ``Decimal`` that also knows its nanos.

    Arithmetic on ``Money`` returns plain ``Decimal`` values (exact); pass any of them back
    to the library as they are.
    """

    __slots__ = ()

    @property
    def nanos(self) -> int:
        """The amount as an integer count of nanos (1e-9 units)."""
        return int(self.scaleb(9, context=_EXACT))

    @classmethod
    def from_nanos(cls, nanos: int) -> "Money":
        """The amount of ``nanos`` nanos (1e-9 units), exactly."""
        if isinstance(nanos, bool) or not isinstance(nanos, int):
            raise TypeError("nanos must be an int")
        sign = "-" if nanos < 0 else ""
        whole, frac = divmod(abs(nanos), NANOS_PER_UNIT)
        text = f"{whole}.{frac:09d}".rstrip("0")
        if text.endswith("."):
            text += "00"
        elif len(text.split(".")[1]) < 2:
            text += "0"
        return cls(sign + text)

    def __str__(self) -> str:  # never scientific notation: 0.0000001, not 1E-7
        return format(self, "f")

    def __repr__(self) -> str:
        return "Money('" + format(self, "f") + "')"


#: What the library accepts as money: exact ``Decimal``/``str``/``int`` (whole units), or a
#: ``float`` (converted exactly through its ``repr``, so 0.1 is exactly 0.1; a float finer than
#: a nano, such as 1e-10 or 0.1 + 0.2, is an ``InvalidArgumentError``, as in Node).
MoneyLike = Union[Decimal, str, int, float]
