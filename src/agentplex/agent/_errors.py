"""Errors of agents.

The tree::

    AgentplexError
    └── SandboxError   the code sandbox's worker failed to start or broke its protocol
                       (also a RuntimeError)

The sandbox worker's own signals (code refused, a final answer) never leave its process:
they come back as a :class:`~agentplex.agent.SandboxResult`.
"""

from __future__ import annotations

from ..errors import AgentplexError

__all__ = ["SandboxError"]


class SandboxError(AgentplexError, RuntimeError):
    """The sandbox worker could not be started or answered out of protocol."""
