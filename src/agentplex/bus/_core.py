"""The state and plumbing shared by the roles of :class:`~agentplex.bus.ZmqTransport`:
peer sockets, sending, requests awaiting answers, decoding and dropping bad input."""



from __future__ import annotations

import asyncio
import itertools
import logging
import uuid
from abc import abstractmethod
from collections import Counter, deque
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import zmq
import zmq.asyncio
from zmq.auth.asyncio import AsyncioAuthenticator

from ..message import DecodeError, decode, encode
from ..runtime import ActorError, CallTimeout, MailboxFull, PeerLost, Transport
from ..runtime.lowlevel import Envelope
from ._directory import Directory, Liveness
from ._frames import (
    Header,
    Op,
    error_to_wire,
    to_frames,
)
from ._parts import PayloadTooLarge, _Link, _Pending, _Serving
from ._security import AllowList, InsecureBindError, KeyPair, is_loopback

if TYPE_CHECKING:
    from ..runtime import Runtime

__all__ = ["HEAD"]

log = logging.getLogger("agentplex.bus")

HEAD = "head"
"""The node id of the head process."""

_COPY_THRESHOLD = 64 * 1024
_ANSWERS = frozenset({Op.REPLY, Op.ERROR, Op.ITEM, Op.END})


class _Core(Transport):
    """What every role of the transport shares; see :class:`ZmqTransport` for the options."""

    def __init__(
        self,
        bind: str = "tcp://127.0.0.1:0",
        *,
        head: str | None = None,
        head_key: str | None = None,
        node_id: str | None = None,
        keys: KeyPair | None = None,
        allow: Iterable[str] = (),
        insecure: bool = False,
        advertise: str | None = None,
        heartbeat_interval: float = 1.0,
        heartbeat_timeout: float = 5.0,
        max_message_size: int = 256 * 1024 * 1024,
        hwm: int = 10_000,
        spawn_allow: Iterable[str] = (),
        stream_window: int = 32,
        max_overflow: int = 10_000,
        tell_window: int = 1000,
        rpc_timeout: float = 10.0,
    ) -> None:
        if keys is None and not insecure and not is_loopback(bind):
            raise InsecureBindError(
                f"refusing to bind {bind} without CURVE keys; pass keys=... "
                "or insecure=True to run an unauthenticated, unencrypted bus"
            )
        if keys is not None and not keys.secret:
            raise ValueError("keys must include the secret key")
        if keys is not None and head is not None and not head_key:
            raise ValueError("with keys, head_key (the head's public key) is required")
        self.bind = bind
        self.head = head
        self.head_key = head_key or ""
        self.is_head = head is None
        self.node_id = HEAD if self.is_head else (node_id or f"node-{uuid.uuid4().hex[:8]}")
        self.keys = keys
        self.allow = AllowList([*allow, *([keys.public] if keys else [])])
        self.advertise = advertise
        self.heartbeat_interval = heartbeat_interval
        self.heartbeat_timeout = heartbeat_timeout
        self.max_message_size = max_message_size
        self.hwm = hwm
        self.spawn_allow = tuple(spawn_allow)
        self.stream_window = max(2, stream_window)
        self.max_overflow = max_overflow
        self.tell_window = tell_window
        self.rpc_timeout = rpc_timeout
        self.endpoint = ""
        self.stats: Counter[str] = Counter()
        """Counters: ``dropped`` frames, ``unknown_actor``, ``publish_failed``, ..."""
        self._runtime: Runtime | None = None
        self._ctx: zmq.asyncio.Context | None = None
        self._auth: AsyncioAuthenticator | None = None
        self._router: Any = None
        self._peers: dict[str, _Link] = {}
        self._nodes: dict[str, tuple[str, str]] = {}
        self._topics: dict[str, set[str]] = {}
        self._names: dict[str, str] = {}
        self._version = -1
        self._dir = Directory() if self.is_head else None
        self._live = Liveness(heartbeat_timeout)
        self._pending: dict[int, _Pending] = {}
        self._serving: dict[tuple[str, int], _Serving] = {}
        self._overflow: dict[str, deque[tuple[Envelope, str | None]]] = {}
        self._overflowing = 0
        self._acks: dict[str, int] = {}
        self._inflight: dict[str, int] = {}
        self._tell_waiters: dict[str, deque[asyncio.Future[None]]] = {}
        self._corr = itertools.count(1)
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closed = False
        self._conn_keys: dict[bytes, str] = {}
        self._inbox: Any = None
        self._fd = -1
        self._head_lost = False
        self._rejoining: asyncio.Task[None] | None = None

    @property
    def runtime(self) -> Runtime:
        if self._runtime is None:
            raise RuntimeError("the transport has not been started")
        return self._runtime

    def _spawn_task(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("bus task failed", exc_info=task.exception())

    def _peer(self, node: str) -> _Link:
        link = self._peers.get(node)
        if link is not None:
            return link
        info = self._nodes.get(node)
        if info is None or self._ctx is None:
            raise PeerLost(f"node {node!r} is not on the bus")
        sock = self._ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.SNDHWM, self.hwm)
        sock.setsockopt(zmq.RECONNECT_IVL, 100)
        sock.setsockopt(zmq.RECONNECT_IVL_MAX, 2000)
        if self.keys is not None:
            sock.curve_secretkey = self.keys.secret.encode("ascii")
            sock.curve_publickey = self.keys.public.encode("ascii")
            sock.curve_serverkey = info[1].encode("ascii")
        sock.connect(info[0])
        link = self._peers[node] = _Link(sock)
        self._live.seen(node)
        return link

    def _frames(self, header: Header, data: bytes) -> tuple[list[bytes], bool]:
        if len(data) > self.max_message_size:
            raise PayloadTooLarge(
                f"message of {len(data)} bytes exceeds max_message_size={self.max_message_size}",
                actor=header.target)
        return to_frames(header, data), len(data) < _COPY_THRESHOLD

    async def _send(self, node: str, header: Header, data: bytes, timeout: float) -> None:
        frames, copy = self._frames(header, data)
        link = self._peer(node)
        if link.try_send(frames, copy):
            return
        try:
            await asyncio.wait_for(link.queue(frames, copy), timeout)
        except TimeoutError:
            raise MailboxFull(f"node {node!r} accepted nothing for {timeout:g}s",
                              actor=header.target) from None

    def _send_nowait(self, node: str, header: Header, data: bytes) -> None:
        try:
            frames, copy = self._frames(header, data)
            link = self._peer(node)
            if not link.try_send(frames, copy):
                link.queue(frames, copy)
        except Exception as exc:
            self.stats["send_failed"] += 1
            log.warning("could not send %s to node %r: %s", header.op, node, exc)

    async def _request(self, node: str, op: str, data: bytes, timeout: float,
                       **fields: Any) -> Any:
        """Send a request to ``node`` and wait for its REPLY (or raise its ERROR)."""
        corr = next(self._corr)
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[corr] = _Pending(fut, node)
        try:
            await self._send(node, Header(op, self.node_id, corr, **fields), data, timeout)
            async with asyncio.timeout(timeout):
                return await fut
        except TimeoutError:
            raise CallTimeout(f"node {node!r} did not answer {op!r} within {timeout:g}s"
                              ) from None
        finally:
            self._pending.pop(corr, None)

    def _reply(self, h: Header, op: str, data: bytes) -> None:
        if h.corr is not None or op == Op.ERROR:
            self._send_nowait(h.src, Header(op, self.node_id, h.corr, target=h.target), data)

    def _reply_error(self, h: Header, exc: BaseException, **extra: Any) -> None:
        self._reply(h, Op.ERROR, encode({**error_to_wire(exc, h.target), **extra}))

    def _drop(self, why: str) -> None:
        n = self.stats["dropped"] = self.stats["dropped"] + 1
        if n & (n - 1) == 0:  # log the 1st, 2nd, 4th, 8th ... drop
            log.warning("dropped a bad bus frame (%d so far): %s", n, why)

    def _decode(self, h: Header, data: bytes) -> Any:
        if not data:
            return None
        try:
            return decode(data, max_size=self.max_message_size)
        except DecodeError as exc:
            n = self.stats["bad_payload"] = self.stats["bad_payload"] + 1
            if n & (n - 1) == 0:
                log.warning("dropped an undecodable %s payload (%d so far): %s", h.op, n, exc)
            if h.corr is not None and h.op not in _ANSWERS:
                self._reply_error(h, ActorError(f"undecodable payload: {exc}", actor=h.target))
            raise

    def _drop_peer(self, node: str) -> None:
        sock = self._peers.pop(node, None)
        if sock is not None:
            sock.close()
        self._live.forget(node)

    @abstractmethod
    def _peer_lost(self, node: str) -> None:
        """``node`` went silent: fail what waits on it, forget what it hosted."""
