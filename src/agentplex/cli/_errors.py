"""Errors of the ``agentplex`` command.

The tree::

    AgentplexError
    └── NodesFailed   a head or node process the command started did not come up
                      (also a RuntimeError)
"""

from __future__ import annotations

from ..errors import AgentplexError

__all__ = ["NodesFailed"]


class NodesFailed(AgentplexError, RuntimeError):
    """A head or node process did not start (its log's tail is in the message)."""
