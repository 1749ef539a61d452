"""Guards for provider SDKs (no hard dependency: the SDKs are only used through the client you pass).

* :mod:`budget.integrations.openai`: ``guard_chat_completions`` / ``aguard_chat_completions``
* :mod:`budget.integrations.anthropic`: ``guard_messages`` / ``aguard_messages``
"""
from ._guard import AsyncGuardedStream, GuardedStream, estimate_input_tokens

__all__ = ["AsyncGuardedStream", "GuardedStream", "estimate_input_tokens"]
