"""Errors of the ``agentplex`` command.

The tree::

    AgentplexError
    ├── NodesFailed   a head or node process the command started did not come up
    │                 (also a RuntimeError)
    └── NotUserCode   a target names neither a ``.py`` file nor a module
                      (also a ValueError)
"""

from __future__ import annotations

from ..errors import AgentplexError

__all__ = ["NodesFailed", "NotUserCode"]


class NodesFailed(AgentplexError, RuntimeError):
    """A head or node process did not start (its log's tail is in the message)."""


class NotUserCode(AgentplexError, ValueError):
    """A scenario or actor target names neither a ``.py`` file that can be imported as a
    module nor a module name."""
