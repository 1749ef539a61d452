"""Usage extraction from the providers' own JSON (OpenAI chat + responses, Anthropic, Gemini).

``format``: ``"openai"`` / ``"openai-chat"``, ``"openai-responses"``, ``"anthropic"``,
``"gemini"``. Bodies and events may be ``str``, ``bytes`` or already-parsed ``dict``s (an
SDK object: pass ``obj.model_dump()``). The counting rules are the core's (providers.hpp).
"""
from __future__ import annotations

from typing import Any, Union

from . import _native
from ._native import Usage

__all__ = ["StreamUsage", "estimate_tokens", "usage_from_response", "Body"]

Body = Union[str, bytes, bytearray, "dict[str, Any]", "list[Any]"]

if not getattr(_native, "HAVE_PROVIDERS", False):  # pragma: no cover - built without providers.hpp
    raise ImportError("budget._native was built without the usage extractors (include/budget/providers.hpp)")

StreamUsage = _native.StreamUsage


def estimate_tokens(text: str) -> int:
    """A deliberately high token estimate of UTF-8 text (ceil(ASCII bytes / 4) + 1 per non-ASCII code point)."""
    return _native.estimate_tokens(text)


def usage_from_response(format: str, body: Body) -> Usage:
    """The usage of a complete (non-streamed) response body."""
    return _native.usage_from_response(format, body)
