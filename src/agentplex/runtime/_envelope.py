"""Envelopes: what the runtime moves between callers, transports and mailboxes."""

from __future__ import annotations

from typing import Any, Final

__all__ = ["Envelope", "Kind"]


class Kind:
    """Envelope kinds, plain strings. The request kinds (call, tell, stream, publish,
    control) cross the wire as they are; the answer kinds name what comes back."""

    CALL: Final = "call"
    """A request that expects one reply (or an error)."""
    TELL: Final = "tell"
    """Fire and forget."""
    STREAM: Final = "stream"
    """A request whose reply is a sequence of items."""
    PUBLISH: Final = "publish"
    """A topic message delivered to one subscriber."""
    CONTROL: Final = "control"
    """Runtime housekeeping handled in mailbox order (subscribe, unsubscribe)."""
    RESULT: Final = "result"
    """The answer to a call."""
    ERROR: Final = "error"
    STREAM_ITEM: Final = "stream_item"
    STREAM_END: Final = "stream_end"
    CANCEL: Final = "cancel"


class Envelope:
    """One message on its way to an actor.

    ``waiter`` is where the answer goes in *this* process: an ``asyncio.Future`` for a call,
    a stream channel for a stream, ``None`` otherwise. A transport that carries the envelope
    to another process replaces it with a stand-in there; it never crosses the wire.
    ``correlation_id`` is the transport's id of the request on the wire (``None``
    in-process).
    ``exclude`` lists subscribers a published message skips. ``trace`` is the caller's
    trace context (an OpenTelemetry context in-process, headers across processes), or
    ``None`` when tracing is off.
    """

    __slots__ = (
        "correlation_id", "exclude", "kind", "payload", "sender", "target", "topic", "trace",
        "waiter",
    )

    def __init__(
        self,
        kind: str,
        target: str,
        payload: Any,
        *,
        waiter: Any = None,
        sender: str | None = None,
        correlation_id: int | str | None = None,
        topic: str | None = None,
        trace: Any = None,
        exclude: tuple[str, ...] = (),
    ) -> None:
        self.kind = kind
        self.target = target
        self.payload = payload
        self.waiter = waiter
        self.sender = sender
        self.correlation_id = correlation_id
        self.topic = topic
        self.trace = trace
        self.exclude = exclude

    def __repr__(self) -> str:
        return f"Envelope({self.kind}, to={self.target!r}, from={self.sender!r})"
