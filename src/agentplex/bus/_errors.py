"""Typed errors of the ZeroMQ bus.

The tree::

    AgentplexError
    ├── agentplex.runtime.ActorError
    │   ├── PayloadTooLarge     a message over max_message_size (also a ValueError)
    │   └── agentplex.runtime.PeerLost
    │       └── UnknownPeer     the receiving node does not know the sender
    ├── FrameError              a received frame that is not a bus frame (also a ValueError)
    ├── InsecureBindError       a non-loopback bind without CURVE keys (also a ValueError)
    └── SpawnRefused            a remote spawn outside the allow-list (also a PermissionError)

The runtime's own errors (``ActorNotFound``, ``MailboxFull``, ``PeerLost``,
``HandlerError``, ...) cross the bus as they are and are raised at the caller.
"""

from __future__ import annotations

from ..errors import AgentplexError
from ..runtime import ActorError, PeerLost

__all__ = ["FrameError", "InsecureBindError", "PayloadTooLarge", "SpawnRefused", "UnknownPeer"]


class PayloadTooLarge(ActorError, ValueError):
    """A message is larger than the bus's ``max_message_size``."""


class UnknownPeer(PeerLost):
    """The node a request went to does not know the node that sent it (the head declared
    the sender lost, or its news of the sender has not reached that node): the request was
    not served, and the sender hears so at once instead of waiting for its timeout."""


class FrameError(AgentplexError, ValueError):
    """A frame that is not a well-formed agentplex bus frame (it is dropped and counted)."""


class InsecureBindError(AgentplexError, ValueError):
    """Binding to a non-loopback address without CURVE keys (and without ``insecure=True``)."""


class SpawnRefused(AgentplexError, PermissionError):
    """A remote spawn named a class outside the node's spawn allow-list, or not an actor."""
