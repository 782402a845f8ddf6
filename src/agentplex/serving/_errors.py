"""Errors of the OpenAI-compatible server and the engine launchers.

The tree::

    AgentplexError
    ├── BadChatRequest   a chat request that cannot be served as asked: HTTP 400
    │                    (also a ValueError)
    └── QueueFull        every slot busy and the waiting queue at its bound: HTTP 429

The server answers its clients with the HTTP errors shown. The engine launchers raise
:class:`~agentplex.engine.EngineError` (defined with the engine's other errors in
``agentplex.engine``, re-exported here) when an engine's server did not start, or died.
"""

from __future__ import annotations

from ..errors import AgentplexError

__all__ = ["BadChatRequest", "QueueFull"]


class BadChatRequest(AgentplexError, ValueError):
    """The request is well-formed JSON but cannot be served as asked (HTTP 400); ``param``
    names the offending field when one is to blame."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


class QueueFull(AgentplexError):
    """Every slot is busy and the waiting queue is at its bound (HTTP 429)."""
