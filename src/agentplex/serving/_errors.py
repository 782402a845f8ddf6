"""Errors of the OpenAI-compatible server and the engine launchers.

The tree::

    AgentplexError
    ├── BadChatRequest   a chat request that cannot be served as asked: HTTP 400
    │                    (also a ValueError)
    ├── QueueFull        every slot busy and the waiting queue at its bound: HTTP 429
    └── EngineError      an engine's server did not start, or died (also a RuntimeError)

The server answers its clients with the HTTP errors shown; only the engine launchers raise
to their caller.
"""

from __future__ import annotations

from ..errors import AgentplexError

__all__ = ["BadChatRequest", "EngineError", "QueueFull"]


class BadChatRequest(AgentplexError, ValueError):
    """The request is well-formed JSON but cannot be served as asked (HTTP 400); ``param``
    names the offending field when one is to blame."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


class QueueFull(AgentplexError):
    """Every slot is busy and the waiting queue is at its bound (HTTP 429)."""


class EngineError(AgentplexError, RuntimeError):
    """An engine's server could not be started, or died and may not be restarted."""
