"""Errors of the OpenAI-compatible server and the engine launchers.

The tree::

    AgentplexError
    ├── BadChatRequest   a chat request that cannot be served as asked: HTTP 400
    │                    (also a ValueError)
    ├── QueueFull        every slot busy and the waiting queue at its bound: HTTP 429
    └── ServerFailed     a launched inference server (vLLM, SGLang, llama.cpp or
                         ``agentplex serve``) did not start, stopped answering, or died
                         (also a RuntimeError)

The server answers its clients with the HTTP errors shown; the launchers raise
:class:`ServerFailed`. (Our own in-process engine's errors are
:class:`~agentplex.engine.EngineError`.)
"""

from __future__ import annotations

from ..errors import AgentplexError

__all__ = ["BadChatRequest", "QueueFull", "ServerFailed"]


class BadChatRequest(AgentplexError, ValueError):
    """The request is well-formed JSON but cannot be served as asked (HTTP 400); ``param``
    names the offending field when one is to blame."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


class QueueFull(AgentplexError):
    """Every slot is busy and the waiting queue is at its bound (HTTP 429)."""


class ServerFailed(AgentplexError, RuntimeError):
    """A launched inference server did not start, stopped answering its health check, or
    exited; the message says which and carries the end of its log when there is one."""
