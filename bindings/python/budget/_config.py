"""Limits from code, dicts, JSON or TOML.

Accepted shapes (all may be nested under a top-level ``"limits"`` key, and a top-level
``"defaults"`` maps a kind to windows, i.e. ``{"defaults": {"user": {"day": "10"}}}`` is
``{"user:*": {"day": "10"}}``):

* a list of ``Limit`` objects or of dicts ``{"scope", "window", "amount", "metric"?, "alerts"?}``;
* a mapping ``scope -> {window: amount}``; a window key may carry a metric prefix
  (``"tokens:minute"``, ``"requests:minute"``; default cost) and a value may be a dict
  ``{"amount": ..., "alerts": [50, 80, 100]}``;
* JSON text, or a path to a ``.json`` or ``.toml`` file. Numbers in files are read as exact
  decimals (never through a float).
"""
from __future__ import annotations

import json
import os
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any, Iterable, List, Mapping, Union

from ._errors import InvalidArgumentError
from ._native import Limit

__all__ = ["load_limits", "LimitsSpec"]

LimitsSpec = Union[None, str, "os.PathLike[str]", bytes, Mapping[str, Any], Iterable[Any]]

_METRICS = ("cost", "tokens", "requests")


def _read_toml(data: bytes) -> Any:
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - Python < 3.11
        try:
            import tomli as tomllib
        except ImportError as e:
            raise InvalidArgumentError("reading TOML on Python < 3.11 needs `pip install tomli`") from e
    try:
        return tomllib.loads(data.decode("utf-8"), parse_float=Decimal)
    except (ValueError, UnicodeDecodeError) as e:
        raise InvalidArgumentError(f"malformed TOML limits: {e}") from e


def _read_json(text: Union[str, bytes]) -> Any:
    try:
        return json.loads(text, parse_float=Decimal)
    except (ValueError, UnicodeDecodeError) as e:
        raise InvalidArgumentError(f"malformed JSON limits: {e}") from e


def _read_file(path: Path) -> Any:
    try:
        data = path.read_bytes()
    except OSError as e:
        raise InvalidArgumentError(f"cannot read limits file {path}: {e}") from e
    if path.suffix.lower() == ".toml":
        return _read_toml(data)
    return _read_json(data)


def _one(scope: str, window_key: str, value: Any) -> Limit:
    if not isinstance(window_key, str):
        raise InvalidArgumentError(f"limits of {scope!r}: window keys are strings")
    metric = "cost"
    window = window_key
    head, sep, rest = window_key.partition(":")
    if sep and head in _METRICS:
        metric, window = head, rest
    alerts: Any = []
    amount = value
    if isinstance(value, Mapping):
        amount = value.get("amount")
        metric = value.get("metric", metric)
        alerts = value.get("alerts", [])  # checked by Limit: a sequence of int percentages
    if amount is None:
        raise InvalidArgumentError(f"limit {scope!r} {window_key!r} has no amount")
    if metric != "cost" and isinstance(amount, Decimal):
        if amount != amount.to_integral_value():
            raise InvalidArgumentError(f"limit {scope!r} {window_key!r}: a {metric} limit is a whole number")
        amount = int(amount)
    return Limit(scope, window, amount, metric=metric, alerts=alerts)


def _from_item(item: Any) -> Limit:
    if isinstance(item, Limit):
        return item
    if isinstance(item, Mapping):
        try:
            scope, window, amount = item["scope"], item["window"], item["amount"]
        except KeyError as e:
            raise InvalidArgumentError(f"a limit needs scope, window and amount: missing {e}") from None
        metric = item.get("metric", "cost")
        return _one(scope, f"{metric}:{window}", {"amount": amount, "alerts": item.get("alerts", [])})
    raise InvalidArgumentError(f"a limit is a budget.Limit or a dict, not {type(item).__name__}")


def load_limits(spec: LimitsSpec) -> List[Limit]:
    """Limits from any accepted shape (see the module documentation)."""
    if spec is None:
        return []
    if isinstance(spec, Limit):
        return [spec]
    if isinstance(spec, bytes):
        return load_limits(_read_json(spec))
    if isinstance(spec, (str, os.PathLike)):
        text = os.fspath(spec)
        if isinstance(spec, str) and text.lstrip()[:1] in ("{", "["):
            return load_limits(_read_json(text))
        return load_limits(_read_file(Path(text)))
    if isinstance(spec, Mapping):
        out: List[Limit] = []
        for key, value in spec.items():
            if key == "limits":
                out.extend(load_limits(value))
            elif key == "defaults":
                if not isinstance(value, Mapping):
                    raise InvalidArgumentError("'defaults' maps a kind to its windows")
                for kind, windows in value.items():
                    out.extend(load_limits({f"{kind}:*": windows}))
            elif isinstance(value, Mapping):
                for window_key, amount in value.items():
                    out.append(_one(key, window_key, amount))
            elif isinstance(value, list):
                for item in value:
                    if not isinstance(item, Mapping):
                        raise InvalidArgumentError(f"limits of {key!r}: expected dicts")
                    out.append(_from_item({"scope": key, **item}))
            else:
                raise InvalidArgumentError(f"limits of {key!r}: expected a mapping of window to amount")
        return out
    if isinstance(spec, Iterable):
        return [_from_item(x) for x in spec]
    raise InvalidArgumentError(f"limits: unsupported value of type {type(spec).__name__}")
