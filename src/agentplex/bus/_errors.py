"""Typed errors of the ZeroMQ bus.

::

    agentplex.runtime.ActorError
    └── PayloadTooLarge (also a ValueError)   a message over max_message_size
    ValueError
    ├── FrameError                            a received frame that is not a bus frame
    └── InsecureBindError                     a non-loopback bind without CURVE keys
    PermissionError
    └── SpawnRefused                          a remote spawn outside the allow-list

The runtime's own errors (``ActorNotFound``, ``MailboxFull``, ``PeerLost``,
``HandlerError``, ...) cross the bus as they are and are raised at the caller.
"""

from __future__ import annotations

from ..runtime import ActorError

__all__ = ["FrameError", "InsecureBindError", "PayloadTooLarge", "SpawnRefused"]


class PayloadTooLarge(ActorError, ValueError):
    """A message is larger than the bus's ``max_message_size``."""


class FrameError(ValueError):
    """A frame that is not a well-formed agentplex bus frame (it is dropped and counted)."""


class InsecureBindError(ValueError):
    """Binding to a non-loopback address without CURVE keys (and without ``insecure=True``)."""


class SpawnRefused(PermissionError):
    """A remote spawn named a class outside the node's spawn allow-list, or not an actor."""
