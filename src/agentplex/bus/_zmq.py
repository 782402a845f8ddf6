""":class:`ZmqTransport`: the runtime's transport across processes and machines.

Every process binds one ROUTER socket and opens one DEALER per peer it talks to, so
point-to-point traffic goes straight from sender to receiver. The head process (the one
started without ``head=``) keeps the :class:`~agentplex.bus._directory.Directory`; other
nodes say hello to it, look names up there and cache the answers.
"""

# ruff: noqa: ASYNC109  (the Transport interface passes timeouts as arguments)

from __future__ import annotations

import asyncio
import itertools
import logging
import uuid
from collections import Counter, deque
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, cast

import zmq
import zmq.asyncio
from zmq.auth.asyncio import AsyncioAuthenticator

from ..message import DecodeError, EncodeError, decode, encode
from ..runtime import (
    ActorError,
    ActorNotFound,
    ActorStopped,
    CallTimeout,
    Envelope,
    HandlerError,
    Kind,
    MailboxFull,
    PeerLost,
    StreamChannel,
    Transport,
)
from ..tracing import inject_context, use_context
from ._directory import Directory, Liveness, parse_snapshot
from ._frames import (
    FrameError,
    Header,
    Op,
    error_from_wire,
    error_to_wire,
    split_frames,
    to_frames,
)
from ._security import AllowList, InsecureBindError, KeyPair, is_loopback
from ._worker import build_actor

if TYPE_CHECKING:
    from ..runtime import ActorRef, Runtime
    from ..runtime._cell import ActorCell

__all__ = ["HEAD", "PayloadTooLarge", "ZmqTransport"]

log = logging.getLogger("agentplex.bus")

HEAD = "head"
"""The node id of the head process."""

_COPY_THRESHOLD = 64 * 1024


class PayloadTooLarge(ActorError, ValueError):
    """A message is larger than the bus's ``max_message_size``."""


class _Pending:
    """A request of ours waiting for its answer (caller side)."""

    __slots__ = ("env", "node", "queue", "reply", "retried", "task")

    def __init__(self, reply: Any, node: str, env: Envelope | None = None) -> None:
        self.reply = reply
        self.node = node
        self.env = env
        self.retried = False
        self.queue: asyncio.Queue[tuple[str, Any]] | None = None
        self.task: asyncio.Task[None] | None = None

    def fail(self, err: BaseException) -> None:
        if self.queue is not None:
            self.queue.put_nowait(("error", err))
        elif isinstance(self.reply, asyncio.Future) and not self.reply.done():
            self.reply.set_exception(err)


class _Link:
    """The DEALER to one peer. Sends go out at once through a blocking-free shadow socket;
    only when the high-water mark is reached do they queue (in order) and wait."""

    __slots__ = ("backlog", "sock", "sync")

    def __init__(self, sock: Any) -> None:
        self.sock = sock
        self.sync: Any = zmq.Socket.shadow(sock.underlying)
        self.backlog = 0

    def try_send(self, frames: list[bytes], copy: bool) -> bool:
        if self.backlog:
            return False
        try:
            self.sync.send_multipart(frames, zmq.NOBLOCK, copy=copy)
        except zmq.Again:
            return False
        return True

    def queue(self, frames: list[bytes], copy: bool) -> asyncio.Future[Any]:
        self.backlog += 1
        fut: asyncio.Future[Any] = self.sock.send_multipart(frames, copy=copy)
        fut.add_done_callback(self._sent)
        return fut

    def _sent(self, fut: asyncio.Future[Any]) -> None:
        self.backlog -= 1
        if not fut.cancelled():
            fut.exception()  # retrieved: a failure is reported by whoever awaited it

    def close(self) -> None:
        self.sock.close(linger=0)


class _RemoteReply:
    """Stands in for a remote caller's reply future: answering sends the reply at once."""

    __slots__ = ("_answer", "_done")

    def __init__(self, answer: Callable[[bool, Any], None]) -> None:
        self._answer = answer
        self._done = False

    def done(self) -> bool:
        return self._done

    def _settle(self, ok: bool, value: Any) -> None:
        if self._done:
            raise asyncio.InvalidStateError("the reply was already given")
        self._done = True
        self._answer(ok, value)

    def set_result(self, value: Any) -> None:
        self._settle(True, value)

    def set_exception(self, exc: BaseException) -> None:
        self._settle(False, exc)

    def cancel(self) -> bool:
        if self._done:
            return False
        self._settle(False, ActorStopped("the call was interrupted"))
        return True

    def abandon(self) -> None:
        """The caller left: answer nothing."""
        self._done = True


class _Serving:
    """A request we host for a peer (the stand-in side)."""

    __slots__ = ("credit", "env", "task", "wake")

    def __init__(self, env: Envelope, credit: int = 0) -> None:
        self.env = env
        self.credit = credit
        self.wake = asyncio.Event()
        self.task: asyncio.Task[None] | None = None


class ZmqTransport(Transport):
    """Carries envelopes between runtimes over ZeroMQ, as msgpack, peer to peer.

    Args:
        bind: the endpoint this process's ROUTER binds (port 0: any free port).
        head: the head's endpoint; ``None`` makes this process the head.
        head_key: the head's CURVE public key (when ``keys`` are given).
        node_id: this node's id (default: random; the head is always ``"head"``).
        keys: this node's CURVE key pair; ``None`` means no encryption.
        allow: client public keys admitted besides our own (with ``keys``).
        insecure: allow a non-loopback ``bind`` without keys.
        advertise: the endpoint peers should connect to, when ``bind`` is a wildcard.
        heartbeat_interval, heartbeat_timeout: seconds between pings; silence after which
            a peer is declared lost and calls waiting on it fail with ``PeerLost``.
        max_message_size: the largest payload accepted or sent, in bytes.
        hwm: high-water mark (messages) of every socket.
        spawn_allow: modules (and their submodules) remote peers may spawn actors from.
        stream_window: stream items in flight before the producer waits for the reader.
        max_overflow: envelopes held for full mailboxes before new ones are refused.
        tell_window: tells sent to one node and not yet in a mailbox there; a further
            tell waits (up to its timeout, then ``MailboxFull``) until the node takes some.
        rpc_timeout: seconds directory operations wait for the head.
    """

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
        self._head_lost = False
        self._rejoining: asyncio.Task[None] | None = None

    # -- lifecycle ------------------------------------------------------------------------

    @property
    def runtime(self) -> Runtime:
        if self._runtime is None:
            raise RuntimeError("the transport has not been started")
        return self._runtime

    async def start(self, runtime: Runtime) -> None:
        self._runtime = runtime
        self._ctx = ctx = zmq.asyncio.Context()
        router = self._router = ctx.socket(zmq.ROUTER)
        router.setsockopt(zmq.LINGER, 0)
        router.setsockopt(zmq.RCVHWM, self.hwm)
        router.setsockopt(zmq.MAXMSGSIZE, self.max_message_size + 65536)
        if self.keys is not None:
            self._auth = AsyncioAuthenticator(ctx)
            self._auth.start()
            self._auth.configure_curve_callback("*", credentials_provider=self.allow)
            router.curve_server = True
            router.curve_secretkey = self.keys.secret.encode("ascii")
            router.curve_publickey = self.keys.public.encode("ascii")
        router.bind(self.bind)
        self.endpoint = self.advertise or router.getsockopt_string(zmq.LAST_ENDPOINT)
        public = self.keys.public if self.keys else ""
        self._inbox: Any = zmq.Socket.shadow(router.underlying)
        self._fd = cast(int, self._inbox.getsockopt(zmq.FD))
        loop = asyncio.get_running_loop()
        loop.add_reader(self._fd, self._readable)
        loop.call_soon(self._readable)
        self._spawn_task(self._heartbeat())
        if self._dir is not None:
            self._dir.add_node(self.node_id, self.endpoint, public)
            self._nodes = dict(self._dir.nodes)
            return
        assert self.head is not None
        self._nodes[HEAD] = (self.head, self.head_key)
        try:
            await self._hello()
        except BaseException:
            await self.close()
            raise

    async def _hello(self) -> None:
        public = self.keys.public if self.keys else ""
        snap = await self._request(HEAD, Op.HELLO, encode(
            {"endpoint": self.endpoint, "key": public}), self.rpc_timeout)
        self._version = -1  # the head may have restarted with a fresh directory
        self._apply_snapshot(snap)

    async def _rejoin(self) -> None:
        """The head was lost: say hello again until it answers, then re-register."""
        try:
            await self._hello()
            runtime = self.runtime
            for name in list(runtime._cells):
                await self._request(HEAD, Op.REG, encode(name), self.rpc_timeout)
            for topic in list(runtime._topics):
                await self._request(HEAD, Op.SUB, encode(topic), self.rpc_timeout)
        except ActorError as exc:
            log.info("the head is still unreachable: %s", exc)
            return
        self._head_lost = False
        log.warning("rejoined the head at %s", self.head)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if not self.is_head and HEAD in self._peers:
            self._send_nowait(HEAD, Header(Op.BYE, self.node_id), b"")
            await asyncio.sleep(0.01)  # let the goodbye leave before the socket closes
        for task in list(self._tasks):
            task.cancel()
        err = ActorStopped("the bus transport was closed")
        for entry in list(self._pending.values()):
            entry.fail(err)
        self._pending.clear()
        for peer in self._peers.values():
            peer.close()
        self._peers.clear()
        if self._router is not None:
            asyncio.get_running_loop().remove_reader(self._fd)
            self._router.close(linger=0)
        if self._auth is not None:
            self._auth.stop()
        if self._ctx is not None:
            self._ctx.term()

    def _spawn_task(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("bus task failed", exc_info=task.exception())

    # -- sending --------------------------------------------------------------------------

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

    def _reply_error(self, h: Header, exc: BaseException) -> None:
        self._reply(h, Op.ERROR, encode(error_to_wire(exc, h.target)))

    # -- Transport: the caller side ---------------------------------------------------------

    async def _locate(self, name: str, timeout: float, *, fresh: bool = False) -> str:
        node = None if fresh else self._names.get(name)
        if node is not None:
            return node
        if self._dir is not None:
            node = self._dir.lookup(name)
        else:
            node = await self._request(HEAD, Op.LOOKUP, encode(name), min(timeout,
                                                                          self.rpc_timeout))
        if not isinstance(node, str) or node == self.node_id:
            self._names.pop(name, None)
            raise ActorNotFound(f"no actor named {name!r} on the bus", actor=name)
        if len(self._names) > 1_000_000:
            self._names.clear()
        self._names[name] = node
        return node

    async def deliver(self, env: Envelope, timeout: float) -> None:
        await self._deliver(env, timeout, fresh=False)

    async def _deliver(self, env: Envelope, timeout: float, *, fresh: bool) -> None:
        node = await self._locate(env.target, timeout, fresh=fresh)
        data = encode(env.payload)
        header = Header(env.kind, self.node_id, None, env.target, env.sender,
                        trace=_trace_headers(env.trace))
        if env.reply is None:
            await self._tell_slot(node, timeout)
            try:
                await self._send(node, header, data, timeout)
            except BaseException:
                self._inflight[node] -= 1
                raise
            return
        corr = env.corr = next(self._corr)
        entry = self._pending[corr] = _Pending(env.reply, node, env)
        entry.retried = fresh
        if isinstance(env.reply, StreamChannel):
            entry.queue = asyncio.Queue()
            entry.task = self._spawn_task(self._feed(corr, entry))
        try:
            await self._send(node, header._replace(corr=corr), data, timeout)
        except BaseException:
            self._drop_pending(corr)
            raise

    def _drop_pending(self, corr: int) -> None:
        entry = self._pending.pop(corr, None)
        if entry is not None and entry.task is not None:
            entry.task.cancel()

    def cancel(self, env: Envelope) -> None:
        corr = env.corr
        if not isinstance(corr, int):
            return
        entry = self._pending.get(corr)
        if entry is None or entry.env is not env:
            return
        self._drop_pending(corr)
        if entry.node in self._peers:
            self._send_nowait(entry.node, Header(Op.CANCEL, self.node_id, corr), b"")

    async def _feed(self, corr: int, entry: _Pending) -> None:
        """Move stream items from the wire into the caller's channel; return credit."""
        channel: StreamChannel[Any] = entry.reply
        assert entry.queue is not None
        used, half = 0, self.stream_window // 2
        try:
            while True:
                what, item = await entry.queue.get()
                if what == "item":
                    if not await channel.send(item):
                        return
                    used += 1
                    if used >= half:
                        self._send_nowait(entry.node, Header(Op.CREDIT, self.node_id, corr),
                                          encode(used))
                        used = 0
                elif what == "end":
                    channel.end()
                    return
                else:
                    channel.fail(item)
                    return
        finally:
            if self._pending.get(corr) is entry:
                del self._pending[corr]

    async def publish(self, env: Envelope, timeout: float) -> None:
        nodes = [n for n in self._topics.get(env.topic or "", ()) if n != self.node_id]
        if not nodes:
            return
        data = encode(env.payload)
        fields = {"sender": env.sender, "topic": env.topic, "exclude": env.exclude,
                  "trace": _trace_headers(env.trace)}
        results = await asyncio.gather(
            *(self._request(n, Op.PUBLISH, data, timeout, **fields) for n in nodes),
            return_exceptions=True)
        for node, res in zip(nodes, results, strict=True):
            if isinstance(res, BaseException):
                self.stats["publish_failed"] += 1
                log.warning("publish on %r to node %r failed: %s", env.topic, node, res)

    # -- Transport: directory hooks -----------------------------------------------------------

    async def registered(self, name: str) -> None:
        self._names.pop(name, None)
        if self._dir is not None:
            self._dir.register(name, self.node_id)
        else:
            await self._request(HEAD, Op.REG, encode(name), self.rpc_timeout)

    async def unregistered(self, name: str) -> None:
        if self._dir is not None:
            self._dir.unregister(name, self.node_id)
        elif not self._closed:
            await self._request(HEAD, Op.UNREG, encode(name), self.rpc_timeout)

    async def subscribed(self, topic: str) -> None:
        if self._dir is not None:
            self._dir.subscribe(topic, self.node_id)
            await self._push_state()
        else:
            await self._request(HEAD, Op.SUB, encode(topic), self.rpc_timeout)

    async def unsubscribed(self, topic: str) -> None:
        if self._dir is not None:
            self._dir.unsubscribe(topic, self.node_id)
            await self._push_state()
        elif not self._closed:
            await self._request(HEAD, Op.UNSUB, encode(topic), self.rpc_timeout)

    async def spawn(self, node: str, cls: str, *args: Any, name: str | None = None,
                    timeout: float | None = None, **kwargs: Any) -> ActorRef:
        """Spawn ``cls`` (``"package.module:Class"``) on ``node`` with msgpack-able arguments.

        The node refuses classes outside its ``spawn_allow`` list.
        """
        spec = {"cls": cls, "args": list(args), "kwargs": kwargs, "name": name}
        got = await self._request(node, Op.SPAWN, encode(spec), timeout or self.rpc_timeout)
        if not isinstance(got, str):
            raise ActorError(f"node {node!r} answered a spawn with {got!r:.100}")
        self._names[got] = node
        return self.runtime.ref(got)

    def nodes(self) -> dict[str, str]:
        """Known nodes and their endpoints."""
        return {n: info[0] for n, info in self._nodes.items()}

    # -- the head -----------------------------------------------------------------------------

    def _apply_snapshot(self, snap: Any) -> None:
        version, nodes, topics = parse_snapshot(snap)
        if version < self._version:
            return
        self._version = version
        if HEAD in self._nodes and HEAD not in nodes:
            nodes[HEAD] = self._nodes[HEAD]
        for gone in set(self._nodes) - set(nodes):
            self._forget(gone)
        self._nodes, self._topics = nodes, topics

    def _forget(self, node: str) -> None:
        """Drop the cached names hosted by ``node``."""
        if any(h == node for h in self._names.values()):
            self._names = {n: h for n, h in self._names.items() if h != node}

    async def _push_state(self) -> None:
        assert self._dir is not None
        snap = self._dir.snapshot()
        for gone in set(self._nodes) - set(self._dir.nodes):
            self._forget(gone)
        self._nodes = dict(self._dir.nodes)
        self._topics = {t: set(v) for t, v in self._dir.topics.items()}
        data = encode(snap)
        others = [n for n in self._nodes if n != self.node_id]
        await asyncio.gather(
            *(self._request(n, Op.STATE, data, self.heartbeat_timeout) for n in others),
            return_exceptions=True)

    async def _head_op(self, h: Header, arg: Any) -> None:
        d = self._dir
        try:
            if d is None:
                raise ActorError(f"node {self.node_id!r} is not the head")
            result: Any = None
            if h.op == Op.HELLO:
                if not (isinstance(arg, dict) and isinstance(arg.get("endpoint"), str)
                        and isinstance(arg.get("key"), str)):
                    raise ActorError("malformed hello")
                if h.src in d.nodes:  # restarted: what waited on its past life has failed
                    self._peer_lost(h.src)
                d.add_node(h.src, arg["endpoint"], arg["key"])
                await self._push_state()
                result = d.snapshot()
            elif h.op == Op.BYE:
                if d.remove_node(h.src):
                    self._drop_peer(h.src)
                    await self._push_state()
                return
            elif not isinstance(arg, str):
                raise ActorError(f"malformed {h.op} request")
            elif h.op == Op.REG:
                d.register(arg, h.src)
            elif h.op == Op.UNREG:
                d.unregister(arg, h.src)
            elif h.op == Op.LOOKUP:
                result = d.lookup(arg)
            elif h.op == Op.SUB:
                d.subscribe(arg, h.src)
                await self._push_state()
            else:
                d.unsubscribe(arg, h.src)
                await self._push_state()
            self._reply(h, Op.REPLY, encode(result))
        except Exception as exc:
            self._reply_error(h, exc)

    # -- receiving ------------------------------------------------------------------------------

    def _readable(self) -> None:
        """The ROUTER's descriptor fired: handle what is queued, inline (no task hop).

        The descriptor is edge-triggered, so read until nothing is left; after a batch,
        yield to the loop and come back.
        """
        inbox = self._inbox
        if self._closed:
            return
        for _ in range(256):
            try:
                frames = inbox.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            except zmq.ZMQError:
                return  # closed under us
            self._handle(frames)
        asyncio.get_running_loop().call_soon(self._readable)

    def _handle(self, frames: list[bytes]) -> None:
        try:
            self._on_frames(frames)
        except DecodeError:
            pass  # counted and logged by _decode
        except Exception as exc:  # never let one message stop the loop
            self._drop(f"{type(exc).__name__}: {exc}")

    def _drop(self, why: str) -> None:
        n = self.stats["dropped"] = self.stats["dropped"] + 1
        if n & (n - 1) == 0:  # log the 1st, 2nd, 4th, 8th ... drop
            log.warning("dropped a bad bus frame (%d so far): %s", n, why)

    def _on_frames(self, frames: list[bytes]) -> None:
        try:
            h, data = split_frames(frames[1:])
        except FrameError as exc:
            self._drop(str(exc))
            return
        if h.src == self.node_id:
            self._drop("a frame claiming to come from this node")
            return
        if h.src in self._live.last_seen:
            self._live.seen(h.src)
        op = h.op
        if op in _PEER_OPS and h.src not in self._nodes and not (op == Op.HELLO
                                                                  and self._dir is not None):
            self._drop(f"{op} from unknown node {h.src!r}")
            return
        if op in (Op.REPLY, Op.ERROR, Op.ITEM, Op.END):
            self._on_answer(h, data)
        elif op in (Op.CALL, Op.TELL, Op.STREAM, Op.CONTROL):
            self._on_request(h, data)
        elif op == Op.PUBLISH:
            self._on_publish(h, data)
        elif op == Op.CANCEL:
            self._on_cancel(h)
        elif op == Op.ACK:
            self._on_ack(h, data)
        elif op == Op.CREDIT:
            self._on_credit(h, data)
        elif op == Op.PING:
            self._send_nowait(h.src, Header(Op.PONG, self.node_id), b"")
        elif op == Op.PONG:
            pass
        elif op == Op.STATE:
            if self._dir is not None:
                self._drop("directory state sent to the head")
                return
            self._apply_snapshot(self._decode(h, data))
            self._reply(h, Op.REPLY, encode(None))
        elif op == Op.SPAWN:
            self._spawn_task(self._on_spawn(h, self._decode(h, data)))
        else:
            self._spawn_task(self._head_op(h, self._decode(h, data)))

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

    def _on_answer(self, h: Header, data: bytes) -> None:
        entry = self._pending.get(h.corr) if h.corr is not None else None
        if entry is None:
            if h.op == Op.ERROR and h.corr is None:
                self.stats["tell_failed"] += 1
                err = error_from_wire(self._decode(h, data))
                if isinstance(err, ActorNotFound) and h.target:
                    self._names.pop(h.target, None)
                log.warning("a tell to %r failed: %s", h.target, err)
            return  # a late answer to a request given up on
        if entry.node != h.src:
            self._drop(f"answer from {h.src!r} for a request sent to {entry.node!r}")
            return
        try:
            value = self._decode(h, data)
        except DecodeError as exc:
            self._pending.pop(h.corr, None)  # type: ignore[arg-type]
            entry.fail(ActorError(f"undecodable answer: {exc}", actor=h.target))
            return
        op = h.op
        if entry.queue is not None:
            if op == Op.ITEM:
                entry.queue.put_nowait(("item", value))
            elif op == Op.END:
                entry.queue.put_nowait(("end", None))
            else:
                entry.queue.put_nowait(("error", error_from_wire(value)))
            return
        del self._pending[h.corr]  # type: ignore[arg-type]
        fut = entry.reply
        if op == Op.REPLY:
            if not fut.done():
                fut.set_result(value)
            return
        err = error_from_wire(value)
        env = entry.env
        if isinstance(err, ActorNotFound) and env is not None:
            self._names.pop(env.target, None)
            if not entry.retried:  # the actor may have moved: ask the head again, once
                self._spawn_task(self._redeliver(env, err))
                return
        if not fut.done():
            fut.set_exception(err)

    async def _redeliver(self, env: Envelope, err: ActorError) -> None:
        try:
            await self._deliver(env, self.rpc_timeout, fresh=True)
        except Exception as exc:
            if not env.reply.done():
                env.reply.set_exception(exc if isinstance(exc, ActorError) else err)

    # -- hosting requests from peers ---------------------------------------------------------------

    def _on_request(self, h: Header, data: bytes) -> None:
        target = h.target
        if target is None:
            self._drop("request without a target")
            return
        payload = self._decode(h, data)
        cell = self.runtime._cells.get(target)
        if cell is None or not cell.accepting:
            if h.op == Op.TELL:
                self._ack(h.src)
            self.stats["unknown_actor"] += 1
            self._reply_error(h, ActorNotFound(
                f"no actor named {target!r} on node {self.node_id!r}", actor=target))
            return
        op = h.op
        reply: Any = None
        if op != Op.TELL and h.corr is None:
            self._drop(f"{op} without a correlation id")
            return
        key = (h.src, h.corr or 0)
        if op in (Op.CALL, Op.CONTROL):
            reply = _RemoteReply(lambda ok, value: self._call_done(h, key, ok, value))
            env = Envelope(op, target, payload, reply=reply, sender=h.sender, corr=h.corr,
                           trace=h.trace)
            self._serving[key] = _Serving(env)
        else:
            if op == Op.STREAM:
                reply = StreamChannel(self.stream_window)
            env = Envelope(op, target, payload, reply=reply, sender=h.sender, corr=h.corr,
                           trace=h.trace)
            if op == Op.STREAM:
                serving = self._serving[key] = _Serving(env, self.stream_window)
                serving.task = self._spawn_task(self._pump(h, key, serving, cell))
        self._enqueue(cell, env, h.src if op == Op.TELL else None)

    def _call_done(self, h: Header, key: tuple[str, int], ok: bool, value: Any) -> None:
        self._serving.pop(key, None)
        if self._closed:
            return
        if not ok:
            self._reply_error(h, value)
        else:
            try:
                data = encode(value)
            except EncodeError as exc:
                self._reply_error(h, HandlerError(str(exc), actor=h.target,
                                                  exc_type="EncodeError"))
                return
            try:
                self._frames(h, data)
            except PayloadTooLarge as exc:
                self._reply_error(h, exc)
                return
            self._reply(h, Op.REPLY, data)

    async def _pump(self, h: Header, key: tuple[str, int], s: _Serving, cell: ActorCell
                    ) -> None:
        """Send a hosted stream's items to the caller, as the caller's credit allows."""
        channel: StreamChannel[Any] = s.env.reply
        try:
            while True:
                try:
                    more, item = await channel.receive()
                except Exception as exc:
                    self._reply_error(h, exc)
                    return
                if not more:
                    self._reply(h, Op.END, b"")
                    return
                while s.credit <= 0:
                    s.wake.clear()
                    await s.wake.wait()
                s.credit -= 1
                try:
                    data = encode(item)
                    await self._send(h.src, Header(Op.ITEM, self.node_id, h.corr, h.target),
                                     data, self.heartbeat_timeout)
                except (EncodeError, ActorError) as exc:
                    channel.close()
                    cell.interrupt(s.env)
                    self._reply_error(h, HandlerError(str(exc), actor=h.target,
                                                      exc_type=type(exc).__name__))
                    return
        finally:
            self._serving.pop(key, None)

    def _on_credit(self, h: Header, data: bytes) -> None:
        s = self._serving.get((h.src, h.corr or 0))
        n = self._decode(h, data)
        if s is not None and type(n) is int and n > 0:
            s.credit += n
            s.wake.set()

    def _on_cancel(self, h: Header) -> None:
        s = self._serving.pop((h.src, h.corr or 0), None)
        if s is not None:
            self._abandon(s)

    def _abandon(self, s: _Serving) -> None:
        """The caller of ``s`` left: skip or interrupt its handler."""
        reply = s.env.reply
        if isinstance(reply, StreamChannel):
            reply.close()
        elif isinstance(reply, _RemoteReply):
            reply.abandon()
        if s.task is not None:
            s.task.cancel()
        cell = self.runtime._cells.get(s.env.target)
        if cell is not None:
            cell.interrupt(s.env)

    def _enqueue(self, cell: ActorCell, env: Envelope, tell_from: str | None) -> None:
        """Mailbox in arrival order; a full mailbox holds later envelopes back, bounded.

        A tell is acknowledged to ``tell_from`` once it is in the mailbox (or failed): the
        sender's window of unacknowledged tells is what bounds this overflow.
        """
        held = self._overflow.get(cell.name)
        if held is None:
            try:
                if cell.offer(env):
                    if tell_from is not None:
                        self._ack(tell_from)
                    return
            except ActorError as exc:
                self._fail_env(env, exc, tell_from)
                return
            held = self._overflow[cell.name] = deque()
            self._spawn_task(self._drain(cell, held))
        if self._overflowing >= self.max_overflow:
            self._fail_env(env, MailboxFull(f"mailbox of {cell.name!r} is full", actor=cell.name),
                           tell_from)
            return
        held.append((env, tell_from))
        self._overflowing += 1

    async def _drain(self, cell: ActorCell, held: deque[tuple[Envelope, str | None]]) -> None:
        try:
            while held:
                env, tell_from = held[0]
                try:
                    await cell.put(env, self.runtime.default_timeout)
                except ActorError as exc:
                    self._fail_env(env, exc, None)
                held.popleft()
                self._overflowing -= 1
                if tell_from is not None:
                    self._ack(tell_from)
        finally:
            self._overflowing -= len(held)
            for env, tell_from in held:
                self._fail_env(env, ActorStopped("the bus transport was closed"), tell_from)
            self._overflow.pop(cell.name, None)

    def _ack(self, node: str) -> None:
        """Count a tell from ``node`` as taken; acknowledgements go out in batches."""
        n = self._acks.get(node, 0) + 1
        self._acks[node] = n
        if n >= 64:
            self._flush_acks(node)
        elif n == 1:
            asyncio.get_running_loop().call_later(0.002, self._flush_acks, node)

    def _flush_acks(self, node: str) -> None:
        n = self._acks.pop(node, 0)
        if n and not self._closed and node in self._nodes:
            self._send_nowait(node, Header(Op.ACK, self.node_id), encode(n))

    def _on_ack(self, h: Header, data: bytes) -> None:
        n = self._decode(h, data)
        if type(n) is not int or n <= 0:
            raise FrameError("bad acknowledgement count")
        left = self._inflight.get(h.src, 0) - n
        self._inflight[h.src] = max(0, left)
        waiters = self._tell_waiters.get(h.src)
        while waiters and n > 0:
            w = waiters.popleft()
            if not w.done():
                w.set_result(None)
                n -= 1

    async def _tell_slot(self, node: str, timeout: float) -> None:
        """Wait (at most ``timeout``) until ``node`` has room for one more tell of ours."""
        if self._inflight.get(node, 0) >= self.tell_window:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + timeout
            while self._inflight.get(node, 0) >= self.tell_window:
                waiter = loop.create_future()
                self._tell_waiters.setdefault(node, deque()).append(waiter)
                try:
                    async with asyncio.timeout(max(0.0, deadline - loop.time())):
                        await waiter
                except TimeoutError:
                    raise MailboxFull(f"node {node!r} took none of our last "
                                      f"{self.tell_window} tells for {timeout:g}s") from None
                finally:
                    if not waiter.done():
                        waiter.cancel()
        self._inflight[node] = self._inflight.get(node, 0) + 1

    def _fail_env(self, env: Envelope, exc: ActorError, tell_from: str | None = None) -> None:
        if tell_from is not None:
            self._ack(tell_from)
        reply = env.reply
        if isinstance(reply, StreamChannel):
            reply.fail(exc)
        elif isinstance(reply, _RemoteReply):
            if not reply.done():
                reply.set_exception(exc)
        else:
            n = self.stats["tell_failed"] = self.stats["tell_failed"] + 1
            if n & (n - 1) == 0:
                log.warning("dropped a %s for %r (%d so far): %s", env.kind, env.target, n, exc)

    def _on_publish(self, h: Header, data: bytes) -> None:
        env = Envelope(Kind.PUBLISH, "", self._decode(h, data), sender=h.sender, topic=h.topic,
                       trace=h.trace, exclude=h.exclude)
        self._spawn_task(self._publish_here(h, env))

    async def _publish_here(self, h: Header, env: Envelope) -> None:
        try:
            await self.runtime._publish_local(env, self.runtime.default_timeout)
        except Exception as exc:
            self._reply_error(h, exc)
        else:
            self._reply(h, Op.REPLY, b"")

    async def _on_spawn(self, h: Header, spec: Any) -> None:
        try:
            actor, name = build_actor(spec, self.spawn_allow)
            ref = await self.runtime.spawn(actor, name)
        except Exception as exc:
            log.warning("refused a remote spawn from %r: %s", h.src, exc)
            self._reply_error(h, exc)
        else:
            self._reply(h, Op.REPLY, encode(ref.name))

    # -- liveness -------------------------------------------------------------------------------

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_interval)
            for node in list(self._peers):
                self._send_nowait(node, Header(Op.PING, self.node_id), b"")
            for node in self._live.stale():
                self._peer_lost(node)
            if self._head_lost and not self._closed and (
                    self._rejoining is None or self._rejoining.done()):
                self._rejoining = self._spawn_task(self._rejoin())

    def _drop_peer(self, node: str) -> None:
        sock = self._peers.pop(node, None)
        if sock is not None:
            sock.close()
        self._live.forget(node)

    def _peer_lost(self, node: str) -> None:
        """``node`` went silent: fail what waits on it, forget what it hosted."""
        log.warning("node %r is lost (silent for %gs)", node, self.heartbeat_timeout)
        self.stats["peers_lost"] += 1
        self._drop_peer(node)
        if node == HEAD and not self.is_head:
            self._head_lost = True
        self._inflight.pop(node, None)
        for waiter in self._tell_waiters.pop(node, ()):
            if not waiter.done():
                waiter.set_result(None)
        err = PeerLost(f"node {node!r} stopped answering (no heartbeat for "
                       f"{self.heartbeat_timeout:g}s)")
        for corr, entry in list(self._pending.items()):
            if entry.node == node:
                if entry.queue is None:
                    del self._pending[corr]
                entry.fail(err)
        for key, s in list(self._serving.items()):
            if key[0] == node:
                del self._serving[key]
                self._abandon(s)
        self._forget(node)
        if self._dir is not None and self._dir.remove_node(node):
            self._spawn_task(self._push_state())


_ANSWERS = frozenset({Op.REPLY, Op.ERROR, Op.ITEM, Op.END})
_PEER_OPS = frozenset({Op.CALL, Op.TELL, Op.STREAM, Op.CONTROL, Op.PUBLISH, Op.STATE,
                       Op.SPAWN, Op.HELLO, Op.REG, Op.UNREG, Op.LOOKUP, Op.SUB, Op.UNSUB,
                       Op.PING, Op.CREDIT, Op.CANCEL, Op.BYE,
                       Op.ACK})


def _trace_headers(trace: Any) -> dict[str, str] | None:
    if trace is None:
        return None
    if type(trace) is dict:  # headers already (an OTel Context is a dict subclass)
        return trace
    with use_context(trace):
        return inject_context()
