"""Errors of tools that are loaded or called from elsewhere.

A tool that fails while running does not raise: :meth:`~agentplex.tool.Toolkit.execute`
returns an error :class:`~agentplex.tool.ToolResponse` for the model to read.

The tree::

    AgentplexError
    ├── RemoteToolError      an HTTP tool endpoint failed (also a RuntimeError)
    └── UntrustedCodeError   loading would run a tool's code, not trusted (also a PermissionError)
"""

from __future__ import annotations

from ..errors import AgentplexError

__all__ = ["RemoteToolError", "UntrustedCodeError"]


class RemoteToolError(AgentplexError, RuntimeError):
    """The endpoint could not be reached or answered with an HTTP error."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class UntrustedCodeError(AgentplexError, PermissionError):
    """Loading the tool would run code from it, and ``trust_remote_code`` was not given."""
