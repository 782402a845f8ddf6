"""The actor core: actors, refs, the runtime, envelopes and the transport interface."""

from ._actor import Actor
from ._cell import current_cell
from ._channel import StreamChannel
from ._envelope import Envelope, Kind
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
    "Envelope",
    "HandlerError",
    "InProcessNetwork",
    "InProcessTransport",
    "Kind",
    "MailboxFull",
    "PeerLost",
    "ReplyStream",
    "Runtime",
    "StreamChannel",
    "Transport",
    "current_cell",
    "get_runtime",
]
