""":class:`ZmqTransport`: the runtime's transport across processes and machines.

Every process binds one ROUTER socket and opens one DEALER per peer it talks to, so
point-to-point traffic goes straight from sender to receiver. The head process (the one
started without ``head=``) keeps the :class:`~agentplex.bus._directory.Directory`; other
nodes say hello to it, look names up there and cache the answers.
"""



from __future__ import annotations

import asyncio
from collections import deque
from typing import TYPE_CHECKING, Any, cast

import zmq
import zmq.asyncio
from zmq.auth.asyncio import AsyncioAuthenticator

from ..message import DecodeError, encode
from ..runtime import ActorError, ActorNotFound, ActorStopped, MailboxFull, PeerLost
from ..runtime.lowlevel import Envelope, StreamChannel
from ._core import HEAD, log
from ._frames import (
    FrameError,
    Header,
    Op,
    error_from_wire,
    split_frames,
)
from ._head import _HeadRole
from ._hosting import _Hosting
from ._parts import PayloadTooLarge, _Pending, _trace_headers

if TYPE_CHECKING:
    from ..runtime import ActorRef, Runtime

__all__ = ["HEAD", "PayloadTooLarge", "ZmqTransport"]

_PEER_OPS = frozenset({Op.CALL, Op.TELL, Op.STREAM, Op.CONTROL, Op.PUBLISH, Op.STATE,
                       Op.SPAWN, Op.HELLO, Op.REG, Op.UNREG, Op.LOOKUP, Op.SUB, Op.UNSUB,
                       Op.PING, Op.CREDIT, Op.CANCEL, Op.BYE, Op.ACK})


class ZmqTransport(_Hosting, _HeadRole):
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
        self._inbox = zmq.Socket.shadow(router.underlying)
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
        if self._fd >= 0:
            asyncio.get_running_loop().remove_reader(self._fd)
        if self._router is not None:
            self._router.close(linger=0)
        if self._auth is not None:
            self._auth.stop()
        if self._ctx is not None:
            self._ctx.destroy(linger=0)

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
                        trace=_trace_headers(env.trace, env.target, self.node_id))
        if env.waiter is None:
            await self._tell_slot(node, timeout)
            try:
                await self._send(node, header, data, timeout)
            except BaseException:
                self._inflight[node] -= 1
                raise
            return
        corr = env.correlation_id = next(self._corr)
        entry = self._pending[corr] = _Pending(env.waiter, node, env)
        entry.retried = fresh
        if isinstance(env.waiter, StreamChannel):
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
        corr = env.correlation_id
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
        channel: StreamChannel[Any] = entry.waiter
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
                  "trace": _trace_headers(env.trace, env.topic or "", self.node_id)}
        results = await asyncio.gather(
            *(self._request(n, Op.PUBLISH, data, timeout, **fields) for n in nodes),
            return_exceptions=True)
        for node, res in zip(nodes, results, strict=True):
            if isinstance(res, BaseException):
                self.stats["publish_failed"] += 1
                log.warning("publish on %r to node %r failed: %s", env.topic, node, res)

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

    def _readable(self) -> None:
        """The ROUTER's descriptor fired: handle what is queued, inline (no task hop).

        The descriptor is edge-triggered, so read until nothing is left; after a batch,
        yield to the loop and come back.
        """
        inbox = self._inbox
        if self._closed:
            return
        curve = self.keys is not None
        for _ in range(256):
            try:
                if curve:
                    self._handle_curve(inbox)
                    continue
                frames = inbox.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            except zmq.ZMQError:
                return  # closed under us
            self._handle(frames)
        asyncio.get_running_loop().call_soon(self._readable)

    def _handle_curve(self, inbox: Any) -> None:
        """Read one message along with its sender's authenticated key (looked up once per
        connection: the routing id frame carries it)."""
        first = inbox.recv(zmq.NOBLOCK, copy=False)
        ident = first.bytes
        key = self._conn_keys.get(ident)
        if key is None:
            key = first.get("User-Id")
            if len(self._conn_keys) > 100_000:
                self._conn_keys.clear()
            self._conn_keys[ident] = key
        rest = inbox.recv_multipart(zmq.NOBLOCK) if first.more else []
        self._handle([ident, *rest], key)

    def _handle(self, frames: list[bytes], key: str | None = None) -> None:
        try:
            self._on_frames(frames, key)
        except DecodeError:
            pass  # counted and logged by _decode
        except Exception as exc:  # never let one message stop the loop
            self._drop(f"{type(exc).__name__}: {exc}")

    def _on_frames(self, frames: list[bytes], key: str | None) -> None:
        """Route one message. ``key``: the sender's CURVE public key, which must be the
        key its node id was registered with (so no node can speak for another)."""
        try:
            h, data = split_frames(frames[1:])
        except FrameError as exc:
            self._drop(str(exc))
            return
        if key is not None and h.op != Op.HELLO:
            info = self._nodes.get(h.src)
            if info is not None and info[1] != key:
                self._drop(f"{h.op} claiming to come from {h.src!r} signed by another key")
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
            self._spawn_task(self._head_op(h, self._decode(h, data), key))

    def _on_answer(self, h: Header, data: bytes) -> None:
        entry = self._pending.get(h.corr) if h.corr is not None else None
        if entry is None:
            if h.op == Op.ERROR and h.corr is None:
                self._tell_failed(h, self._decode(h, data))
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
        fut = entry.waiter
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

    def _tell_failed(self, h: Header, value: Any) -> None:
        """A tell of ours was refused; one for an actor that moved is sent to its new home."""
        err = error_from_wire(value)
        tell = value.get("tell") if isinstance(value, dict) else None
        if isinstance(err, ActorNotFound) and h.target:
            self._names.pop(h.target, None)
            if isinstance(tell, bytes):
                sender = value.get("sender")
                self._spawn_task(self._resend_tell(
                    h.target, sender if isinstance(sender, str) else None, tell, h.src))
                return
        self.stats["tell_failed"] += 1
        log.warning("a tell to %r failed: %s", h.target, err)

    async def _resend_tell(self, target: str, sender: str | None, data: bytes, gone: str
                           ) -> None:
        try:
            node = await self._locate(target, self.rpc_timeout, fresh=True)
            if node == gone:
                raise ActorNotFound(f"actor {target!r} is not on node {gone!r}", actor=target)
            await self._tell_slot(node, self.rpc_timeout)
            try:
                await self._send(node, Header(Op.TELL, self.node_id, None, target, sender),
                                 data, self.rpc_timeout)
            except BaseException:
                self._inflight[node] -= 1
                raise
        except ActorError as exc:
            self.stats["tell_failed"] += 1
            log.warning("a tell to %r failed: %s", target, exc)

    async def _redeliver(self, env: Envelope, err: ActorError) -> None:
        try:
            await self._deliver(env, self.rpc_timeout, fresh=True)
        except Exception as exc:
            if not env.waiter.done():
                env.waiter.set_exception(exc if isinstance(exc, ActorError) else err)

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

    async def _heartbeat(self) -> None:
        while not self._closed:
            await asyncio.sleep(self.heartbeat_interval)
            if self._closed:
                return  # no ping may follow our goodbye
            for node in list(self._peers):
                self._send_nowait(node, Header(Op.PING, self.node_id), b"")
            for node in self._live.stale():
                self._peer_lost(node)
            if self._head_lost and not self._closed and (
                    self._rejoining is None or self._rejoining.done()):
                self._rejoining = self._spawn_task(self._rejoin())

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
