"""Typed errors of the cluster.

::

    AgentplexError
    ├── Unschedulable     no node can take a resource request now; ``retryable`` says
    │                     whether it could fit once resources free up
    ├── NodeFailed        a node failed while starting its share of a batch
    │                     (``spawn_many``); nothing of the batch is left running
    ├── NodesMissing      (also a TimeoutError) fewer nodes joined than waited for
    ├── NotSupported      (also a NotImplementedError) the backend does not offer this
    ├── CodeRefused       (also a PermissionError) a node that does not accept code was
    │                     sent some (start it with ``--accept-code``)
    └── CodeRejected      (also a ValueError) a code package that does not check out: its
                          SHA-256 is not its name, a member leaves the package or is not
                          a ``.py`` file, it is too large, or it does not import

Cluster calls also raise the runtime's errors (:class:`~agentplex.runtime.ActorExists` when
the name is taken), the bus's :class:`~agentplex.bus.SpawnRefused` when a node cannot
create the actor (its class path does not import, is not an actor class, or is outside the
node's allow-list), ``ValueError`` for malformed input (a size such as ``"8GB?"``, an
unknown placement policy or backend) and ``ImportError`` for the Ray backend without the
``ray`` extra. Through a head (:class:`~agentplex.cluster.ClusterClient`) each of these is
raised at the caller as its own type.
"""

from __future__ import annotations

from ..errors import AgentplexError

__all__ = ["CodeRefused", "CodeRejected", "NodeFailed", "NodesMissing", "NotSupported",
           "Unschedulable"]


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


class NodesMissing(AgentplexError, TimeoutError):
    """Fewer nodes than asked for joined the cluster within the timeout
    (:meth:`~agentplex.cluster.Cluster.wait_for_nodes`); ``joined`` says how many did."""

    def __init__(self, message: str, *, joined: int) -> None:
        super().__init__(message)
        self.joined = joined


class NotSupported(AgentplexError, NotImplementedError):
    """This backend does not offer the operation (serving engines on the Ray backend,
    an agentplex node joining a Ray head)."""


class CodeRefused(AgentplexError, PermissionError):
    """A node that does not accept code over the bus was sent a code package (a node
    accepts code only when started with ``--accept-code``)."""


class CodeRejected(AgentplexError, ValueError):
    """A code package that does not check out: its SHA-256 is not the one it is named by,
    a member is outside the package, a link or not a ``.py`` file, it is over the size
    limit (nothing of it is written), or a module of it does not import (nothing of it is
    allowed)."""
