"""Typed errors of the cluster.

::

    AgentplexError
    ├── Unschedulable     no node can take a resource request now; ``retryable`` says
    │                     whether it could fit once resources free up
    └── NodeFailed        a node failed while starting its share of a batch
                          (``spawn_many``); nothing of the batch is left running

Cluster calls also raise the runtime's errors (:class:`~agentplex.runtime.ActorExists` when
the name is taken), ``ValueError`` for malformed input (a size such as ``"8GB?"``, an
unknown placement policy or backend) and ``ImportError`` for the Ray backend without the
``ray`` extra. Through a head (:class:`~agentplex.cluster.ClusterClient`) a refusal
arrives as the runtime's :class:`~agentplex.runtime.HandlerError` naming the remote error.
"""

from __future__ import annotations

from ..errors import AgentplexError

__all__ = ["NodeFailed", "Unschedulable"]


class Unschedulable(AgentplexError):
    """No node can take the request now; ``reason`` says why for each node considered."""

    def __init__(self, reason: str, *, retryable: bool) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retryable = retryable
        """True when the request could fit once resources free up (waiting for other actors
        to be released may place it); False when no node could hold it even empty (retrying
        cannot help: refuse)."""


class NodeFailed(AgentplexError):
    """A node failed while starting its share of a batch; nothing of the batch is left
    running and none of its names stays registered."""
