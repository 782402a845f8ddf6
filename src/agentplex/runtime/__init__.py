"""The actor core: actors, refs, the runtime and the transport interface.

Envelopes, their kinds and the other names a transport author needs live in
:mod:`agentplex.runtime.lowlevel`.
"""

from ._actor import Actor
from ._errors import (
    ActorError,
    ActorExists,
    ActorNotFound,
    ActorStopped,
    CallTimeout,
    HandlerError,
    MailboxFull,
    PeerLost,
)
from ._names import NameRange
from ._per_actor import PerActor
from ._ref import ActorRef, ReplyStream
from ._runtime import Runtime, get_runtime
from ._transport import InProcessNetwork, InProcessTransport, Transport

__all__ = [
    "Actor",
    "ActorError",
    "ActorExists",
    "ActorNotFound",
    "ActorRef",
    "ActorStopped",
    "CallTimeout",
    "HandlerError",
    "InProcessNetwork",
    "InProcessTransport",
    "MailboxFull",
    "NameRange",
    "PeerLost",
    "PerActor",
    "ReplyStream",
    "Runtime",
    "Transport",
    "get_runtime",
]
