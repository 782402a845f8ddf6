"""The root of every error agentplex raises on purpose.

Each package defines its own errors in its errors module and derives them from
:class:`AgentplexError`, keeping the built-in base a user already catches (a timeout is
also a ``TimeoutError``, a bad argument also a ``ValueError``). ``except AgentplexError``
catches everything agentplex raised on purpose and nothing else.

This module imports nothing from agentplex, so every package, however low, may use it.
"""

from __future__ import annotations

__all__ = ["AgentplexError"]


class AgentplexError(Exception):
    """Base of every error agentplex raises on purpose."""
