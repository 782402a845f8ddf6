"""The wire format: a header and a payload, in one frame or (large payloads) two.

The header is a plain msgpack list ``[PROTO, op, src, corr, target, sender, topic, exclude,
trace]``; the payload is :func:`agentplex.message.encode` output (or empty). A small payload
follows the header in the same frame; a large one travels as its own frame, uncopied. Both
are parsed strictly: anything of the wrong shape raises :class:`FrameError` and is dropped.
"""

from __future__ import annotations

import threading
from typing import Any, Final, NamedTuple

import msgpack

from ..runtime import (
    ActorError,
    ActorNotFound,
    ActorStopped,
    CallTimeout,
    HandlerError,
    MailboxFull,
    PeerLost,
)
from ._errors import FrameError, UnknownPeer

__all__ = ["KNOWN_OPS", "PROTO", "Header", "Op", "Wire", "error_from_wire", "error_to_wire",
           "pack_header", "parse_header", "split_frames", "to_frames"]

PROTO: Final = 1
MAX_HEADER: Final = 64 * 1024
INLINE_LIMIT: Final = 64 * 1024
"""Payloads smaller than this share the header's frame."""


class Op:
    """Message operations. The request ops (call, tell, stream, control, publish) are the
    envelope kinds' strings, so an envelope's ``kind`` is its op."""

    CALL: Final = "call"
    CALL_MANY: Final = "call_many"
    """The calls of one fan-out to actors of one node: ``[kind, targets, payload,
    timeout]`` (one message for all) or ``[kind, targets, payloads, timeout, True]`` (an
    encoded list: one message per target), answered in chunks (ITEM, the last a RESULT)
    listing ``[index, ok, reply or error]`` per target."""
    TELL: Final = "tell"
    STREAM: Final = "stream"
    CONTROL: Final = "control"
    PUBLISH: Final = "publish"
    RESULT: Final = "reply"  # the answer to a request (protocol 1 spells it "reply")
    ERROR: Final = "error"
    ITEM: Final = "stream_item"
    END: Final = "stream_end"
    CANCEL: Final = "cancel"
    CREDIT: Final = "credit"
    PING: Final = "ping"
    PONG: Final = "pong"
    HELLO: Final = "hello"
    REG: Final = "reg"
    UNREG: Final = "unreg"
    REG_MANY: Final = "reg_many"
    UNREG_MANY: Final = "unreg_many"
    LOOKUP: Final = "lookup"
    SUB: Final = "sub"
    UNSUB: Final = "unsub"
    STATE: Final = "state"
    SPAWN: Final = "spawn"
    BYE: Final = "bye"
    ACK: Final = "ack"
    JOURNAL: Final = "journal"
    """A run's journal from a node following it (``[locator, lines]``), or, with a
    correlation id, a request for what a node holds of the run (the run's locator)."""


KNOWN_OPS: Final = frozenset(v for k, v in vars(Op).items() if k.isupper())


class Header(NamedTuple):
    op: str
    src: str
    corr: int | None = None
    target: str | None = None
    sender: str | None = None
    topic: str | None = None
    exclude: tuple[str, ...] = ()
    trace: dict[str, str] | None = None


_KEEP_BELOW: Final = INLINE_LIMIT + MAX_HEADER
"""One-frame messages up to this size are parsed by a :class:`Wire`'s own unpacker."""


def _unpacker(size: int) -> msgpack.Unpacker:
    return msgpack.Unpacker(raw=False, strict_map_key=True, use_list=True,
                            max_buffer_size=max(size, 1))


class Wire:
    """Packs and parses the frames of messages with a msgpack packer and unpacker of its
    own (much cheaper than new ones per message). One per transport: it is not to be
    shared between threads."""

    __slots__ = ("_pack", "_unpacker")

    def __init__(self) -> None:
        self._pack = msgpack.Packer(use_bin_type=True).pack
        self._unpacker = _unpacker(_KEEP_BELOW)

    def header(self, h: Header) -> bytes:
        """Encode ``h`` for the wire."""
        return self._pack(
            [PROTO, h.op, h.src, h.corr, h.target, h.sender, h.topic, list(h.exclude), h.trace])

    def frames(self, h: Header, data: bytes) -> list[bytes]:
        """The frames of one message: ``[header+payload]`` or ``[header, payload]``."""
        head = self.header(h)
        return [head + data] if len(data) < INLINE_LIMIT else [head, data]

    def split(self, frames: list[bytes]) -> tuple[Header, bytes]:
        """Parse the frames of one message (without the routing id)."""
        if len(frames) == 2:
            if len(frames[1]) < INLINE_LIMIT:
                raise FrameError("a small payload in its own frame")
            return parse_header(frames[0]), frames[1]
        if len(frames) != 1:
            raise FrameError(f"{len(frames)} frames")
        data = frames[0]
        size = len(data)
        unpacker = self._unpacker if size <= _KEEP_BELOW else _unpacker(size)
        try:
            start = unpacker.tell()
            unpacker.feed(data)
            raw = unpacker.unpack()
            end = unpacker.tell() - start
            payload = bytes(unpacker.read_bytes(size - end))  # (bytes already: no copy)
        except Exception as exc:  # msgpack raises many types
            self._unpacker = _unpacker(_KEEP_BELOW)  # what it holds is unknown now
            raise FrameError(f"malformed header: {type(exc).__name__}") from None
        if end > MAX_HEADER:
            raise FrameError(f"header of {end} bytes is too large")
        return _check_header(raw), payload


class _Wires(threading.local):
    """This thread's :class:`Wire`, for the module-level functions below."""

    def __init__(self) -> None:
        self.wire = Wire()


_wires = _Wires()


def pack_header(h: Header) -> bytes:
    """Encode ``h`` for the wire."""
    return _wires.wire.header(h)


def to_frames(h: Header, data: bytes) -> list[bytes]:
    """The frames of one message: ``[header+payload]`` or ``[header, payload]``."""
    return _wires.wire.frames(h, data)


def split_frames(frames: list[bytes]) -> tuple[Header, bytes]:
    """Parse the frames of one message (without the routing id)."""
    return _wires.wire.split(frames)


def parse_header(data: bytes) -> Header:
    """Parse a header frame; raise :class:`FrameError` on anything unexpected."""
    if len(data) > MAX_HEADER:
        raise FrameError(f"header of {len(data)} bytes is too large")
    try:
        h = msgpack.unpackb(data, raw=False, strict_map_key=True, use_list=True)
    except Exception as exc:  # msgpack raises many types
        raise FrameError(f"malformed header: {type(exc).__name__}") from None
    return _check_header(h)


_new_header = tuple.__new__


def _check_header(h: Any) -> Header:
    if type(h) is not list or len(h) != 9 or h[0] != PROTO:
        raise FrameError("not an agentplex header")
    _, op, src, corr, target, sender, topic, exclude, trace = h
    if op not in KNOWN_OPS or type(src) is not str or not src:
        raise FrameError("bad op or source")
    if corr is not None and (type(corr) is not int or not 0 <= corr < 2**63):
        raise FrameError("bad correlation id")
    for v in (target, sender, topic):
        if v is not None and type(v) is not str:
            raise FrameError("expected a string or nil")
    if type(exclude) is not list or not all(type(x) is str for x in exclude):
        raise FrameError("bad exclude list")
    if trace is not None and not (
        type(trace) is dict
        and all(type(k) is str and type(v) is str for k, v in trace.items())
    ):
        raise FrameError("bad trace headers")
    return _new_header(Header, (op, src, corr, target, sender, topic,
                                tuple(exclude) if exclude else (), trace))


_ERRORS: dict[str, type[ActorError]] = {
    cls.__name__: cls
    for cls in (ActorError, ActorNotFound, ActorStopped, CallTimeout, MailboxFull, PeerLost,
                UnknownPeer)
}


def error_to_wire(exc: BaseException, actor: str | None) -> dict[str, Any]:
    """A msgpack-able description of ``exc``, raised again by :func:`error_from_wire`."""
    if isinstance(exc, HandlerError):
        return {"type": "HandlerError", "message": exc.remote_message, "actor": exc.actor,
                "exc_type": exc.exc_type, "traceback": exc.remote_traceback}
    name = type(exc).__name__ if type(exc).__name__ in _ERRORS else "ActorError"
    actor = getattr(exc, "actor", None) or actor
    return {"type": name, "message": str(exc), "actor": actor}


def error_from_wire(data: Any) -> ActorError:
    """Rebuild the typed error that :func:`error_to_wire` described."""
    if not isinstance(data, dict):
        return ActorError(f"malformed error from peer: {data!r:.200}")
    actor = data.get("actor") if isinstance(data.get("actor"), str) else None
    message = str(data.get("message", ""))
    if data.get("type") == "HandlerError":
        return HandlerError(message, actor=actor, exc_type=str(data.get("exc_type", "Exception")),
                            remote_traceback=str(data.get("traceback", "")))
    cls = _ERRORS.get(str(data.get("type")), ActorError)
    return cls(message, actor=actor)
