"""The peers of a node: where each listens, one DEALER link to each peer we talk to, sending
(size limit, back-pressure), answering requests, and decoding or dropping what arrives."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from typing import Any

import zmq
import zmq.asyncio

from ..message import DecodeError, decode, encode
from ..message.lowlevel import decode_each
from ..runtime import ActorError, MailboxFull, PeerLost
from ._directory import Liveness
from ._errors import PayloadTooLarge
from ._frames import Header, Op, Wire, error_to_wire
from ._security import KeyPair

__all__ = ["Link", "Peers"]

log = logging.getLogger("agentplex.bus")

_NOBLOCK = int(zmq.NOBLOCK)  # (pyzmq's enum member costs more)
_ANSWERS = frozenset({Op.RESULT, Op.ERROR, Op.ITEM, Op.END})


class Link:
    """The DEALER to one peer. Sends go out at once through a blocking-free shadow socket;
    only when the high-water mark is reached do they queue (in order) and wait."""

    __slots__ = ("backlog", "queued_bytes", "sock", "sync")

    def __init__(self, sock: Any) -> None:
        self.sock = sock
        self.sync: Any = zmq.Socket.shadow(sock.underlying)
        self.backlog = 0
        self.queued_bytes = 0

    def try_send(self, frames: list[bytes]) -> bool:
        """Send now if the socket takes it without waiting; ``False`` otherwise. (A
        message in one frame is small and copied; a large payload's frame is not.)"""
        if self.backlog:
            return False
        try:
            if len(frames) == 1:
                self.sync.send(frames[0], _NOBLOCK)
            else:
                self.sync.send_multipart(frames, _NOBLOCK, copy=False)
        except zmq.Again:
            return False
        return True

    def queue(self, frames: list[bytes]) -> asyncio.Future[Any]:
        """Send after what is already queued; the future resolves once sent."""
        self.backlog += 1
        size = sum(len(f) for f in frames)
        self.queued_bytes += size
        fut: asyncio.Future[Any] = self.sock.send_multipart(frames, copy=len(frames) == 1)
        fut.add_done_callback(lambda f: self._sent(f, size))
        return fut

    def _sent(self, fut: asyncio.Future[Any], size: int) -> None:
        self.backlog -= 1
        self.queued_bytes -= size
        if not fut.cancelled():
            fut.exception()  # retrieved: a failure is reported by whoever awaited it

    def close(self) -> None:
        self.sock.close(linger=0)


class Peers:
    """Everything this node sends goes through here, and every payload it receives is
    decoded here.

    ``nodes`` is the address book (node id → endpoint and CURVE public key), kept up to date
    from the head's directory; ``links`` the DEALER sockets opened so far; ``live`` when
    each linked peer was last heard from. ``ctx`` is set when the transport starts.
    """

    def __init__(self, node_id: str, *, keys: KeyPair | None, hwm: int, max_message_size: int,
                 heartbeat_timeout: float, stats: Counter[str],
                 max_backlog: int = 32 * 2**20) -> None:
        self.node_id = node_id
        self.keys = keys
        self.hwm = hwm
        self.max_backlog = max_backlog
        self.max_message_size = max_message_size
        self.stats = stats
        self.ctx: zmq.asyncio.Context | None = None
        self.nodes: dict[str, tuple[str, str]] = {}
        self.links: dict[str, Link] = {}
        self.live = Liveness(heartbeat_timeout)
        self.wire = Wire()
        self.targets: tuple[tuple[str, str, str], ...] = ()
        """The linked peers as ``(node, endpoint, public key)``, for the heartbeat thread
        (a tuple replaced whole, never changed in place)."""

    # -- links ---------------------------------------------------------------------------

    def link(self, node: str) -> Link:
        """The link to ``node``, connected on first use; :class:`PeerLost` if unknown."""
        link = self.links.get(node)
        if link is not None:
            return link
        info = self.nodes.get(node)
        if info is None or self.ctx is None:
            raise PeerLost(f"node {node!r} is not on the bus")
        sock = self.ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.SNDHWM, self.hwm)
        sock.setsockopt(zmq.RECONNECT_IVL, 100)
        sock.setsockopt(zmq.RECONNECT_IVL_MAX, 2000)
        if self.keys is not None:
            sock.curve_secretkey = self.keys.secret.encode("ascii")
            sock.curve_publickey = self.keys.public.encode("ascii")
            sock.curve_serverkey = info[1].encode("ascii")
        sock.connect(info[0])
        link = self.links[node] = Link(sock)
        self.targets = (*self.targets, (node, *info))
        self.live.seen(node)
        return link

    def forget(self, node: str) -> None:
        """Close the link to ``node`` and stop watching its heartbeat."""
        link = self.links.pop(node, None)
        if link is not None:
            link.close()
            self.targets = tuple(t for t in self.targets if t[0] != node)
        self.live.forget(node)

    def close(self) -> None:
        """Close every link."""
        for link in self.links.values():
            link.close()
        self.links.clear()
        self.targets = ()

    # -- sending -------------------------------------------------------------------------

    def frames(self, header: Header, data: bytes) -> list[bytes]:
        """The frames of one message; :class:`PayloadTooLarge` over ``max_message_size``.
        (One frame is copied when sent, a large payload's own frame is not.)"""
        self.check_size(header, data)
        return self.wire.frames(header, data)

    def check_size(self, header: Header, data: bytes) -> None:
        """Raise :class:`PayloadTooLarge` when ``data`` is over ``max_message_size``."""
        if len(data) > self.max_message_size:
            raise PayloadTooLarge(
                f"message of {len(data)} bytes exceeds max_message_size={self.max_message_size}",
                actor=header.target)

    def try_send(self, node: str, header: Header, data: bytes) -> list[bytes] | None:
        """Send to ``node`` if its link takes it at once (``None``); else return the
        frames, for :meth:`send_frames`."""
        frames = self.frames(header, data)
        link = self.links.get(node) or self.link(node)
        return None if link.try_send(frames) else frames

    async def send(self, node: str, header: Header, data: bytes, timeout: float) -> None:
        """Send to ``node``, waiting at most ``timeout`` while its link is full (then
        :class:`MailboxFull`)."""
        frames = self.try_send(node, header, data)
        if frames is not None:
            await self.send_frames(node, header, frames, timeout)

    async def send_frames(self, node: str, header: Header, frames: list[bytes],
                          timeout: float) -> None:
        """Send the ``frames`` of ``header`` to ``node`` after what waits on its link,
        waiting at most ``timeout`` (then :class:`MailboxFull`); :class:`PeerLost` if the
        link closes meanwhile (the node was lost or left)."""
        link = self.link(node)
        if link.try_send(frames):
            return
        sent = link.queue(frames)
        try:
            await asyncio.wait_for(sent, timeout)
        except TimeoutError:
            raise MailboxFull(f"node {node!r} accepted nothing for {timeout:g}s",
                              actor=header.target) from None
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if sent.cancelled() and (task is None or not task.cancelling()):
                # the link closed under the waiting send: not our caller's cancellation
                raise PeerLost(f"node {node!r} was lost while a {header.op} to it waited "
                               "to be sent", actor=header.target) from None
            raise

    def send_nowait(self, node: str, header: Header, data: bytes) -> None:
        """Send to ``node`` without waiting; a failure is counted and logged (rate
        limited). A peer that reads nothing holds at most ``max_backlog`` bytes queued
        here beyond its socket's high-water mark: more is dropped and counted."""
        try:
            frames = self.frames(header, data)
            link = self.links.get(node) or self.link(node)
            if not link.try_send(frames):
                if link.queued_bytes > self.max_backlog:
                    n = self.stats["send_dropped"] = self.stats["send_dropped"] + 1
                    if n & (n - 1) == 0:
                        log.warning("node %r reads nothing: dropped a %s to it (%d so far)",
                                    node, header.op, n)
                    return
                link.queue(frames)
        except Exception as exc:
            n = self.stats["send_failed"] = self.stats["send_failed"] + 1
            if n & (n - 1) == 0:
                log.warning("could not send %s to node %r (%d failures so far): %s",
                            header.op, node, n, exc)

    def answer(self, h: Header, op: str, data: bytes,
               trace: dict[str, str] | None = None) -> None:
        """Answer the request ``h`` (a tell is answered only with an error); ``trace``:
        headers for the caller (an experiment's causal clock)."""
        if h.corr is not None or op == Op.ERROR:
            self.send_nowait(h.src, Header(op, self.node_id, h.corr, target=h.target,
                                           trace=trace), data)

    def answer_error(self, h: Header, exc: BaseException, **extra: Any) -> None:
        """Answer the request ``h`` with ``exc``, raised again at its sender."""
        self.answer(h, Op.ERROR, encode({**error_to_wire(exc, h.target), **extra}))

    # -- receiving -----------------------------------------------------------------------

    def drop(self, why: str) -> None:
        """Count a bad frame that was dropped (logging the 1st, 2nd, 4th, 8th ...)."""
        n = self.stats["dropped"] = self.stats["dropped"] + 1
        if n & (n - 1) == 0:
            log.warning("dropped a bad bus frame (%d so far): %s", n, why)

    def decode(self, h: Header, data: bytes, *, each: int | None = None) -> Any:
        """The payload of ``h``; :class:`DecodeError` (counted, and answered to a request's
        sender) when it is not valid. ``each``: ``data`` holds that many values, one per
        target (:func:`~agentplex.message.lowlevel.decode_each`)."""
        if not data:
            return None
        try:
            if each is not None:
                return decode_each(data, each, max_size=self.max_message_size)
            return decode(data, max_size=self.max_message_size)
        except DecodeError as exc:
            n = self.stats["bad_payload"] = self.stats["bad_payload"] + 1
            if n & (n - 1) == 0:
                log.warning("dropped an undecodable %s payload (%d so far): %s", h.op, n, exc)
            if h.corr is not None and h.op not in _ANSWERS:
                self.answer_error(h, ActorError(f"undecodable payload: {exc}", actor=h.target))
            raise
