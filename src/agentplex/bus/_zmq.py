""":class:`ZmqTransport`: the runtime's transport across processes and machines.

Every process binds one ROUTER socket and opens one DEALER per peer it talks to, so
point-to-point traffic goes straight from sender to receiver. The head process (the one
started without ``head=``) keeps the :class:`~agentplex.bus.Directory`; other nodes say
hello to it, look names up there and cache the answers.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections import Counter
from collections.abc import Callable, Coroutine, Iterable, Sequence
from typing import TYPE_CHECKING, Any, cast

import zmq
import zmq.asyncio
from zmq.auth.asyncio import AsyncioAuthenticator

from ..message import DecodeError, encode
from ..runtime import ActorError, ActorStopped, PeerLost, Transport
from ..tracing.lowlevel import add_run_drain, remove_run_drain, set_journal_shipper
from ._calls import Calls
from ._directory import HEAD, Directory
from ._errors import FrameError, InsecureBindError, UnknownPeer
from ._frames import Header, Op, error_from_wire, error_to_wire
from ._head import HeadRole
from ._heartbeat import Heartbeats
from ._journal import Journals
from ._peers import Peers
from ._security import AllowList, KeyPair, is_loopback
from ._serving import Serving
from ._tasks import Tasks

if TYPE_CHECKING:
    from ..runtime import ActorRef, Runtime
    from ..runtime.lowlevel import Envelope

__all__ = ["ZmqTransport"]

log = logging.getLogger("agentplex.bus")

# plain ints: pyzmq's enum members cost an enum construction per use
_NOBLOCK, _RCVMORE = int(zmq.NOBLOCK), int(zmq.RCVMORE)
_EVENTS, _POLLIN = int(zmq.EVENTS), int(zmq.POLLIN)
_PEER_OPS = frozenset({Op.CALL, Op.CALL_MANY, Op.TELL, Op.STREAM, Op.CONTROL, Op.PUBLISH,
                       Op.STATE, Op.SPAWN, Op.HELLO, Op.REG, Op.UNREG, Op.REG_MANY,
                       Op.UNREG_MANY, Op.LOOKUP, Op.SUB, Op.UNSUB,
                       Op.PING, Op.CREDIT, Op.CANCEL, Op.BYE, Op.ACK, Op.JOURNAL})


class ZmqTransport(Transport):
    """Carries envelopes between runtimes over ZeroMQ, as msgpack, peer to peer.

    The transport owns its parts and routes each incoming frame to one of them: the peers
    (links and sending, ``_peers.py``), our calls to other nodes (``_calls.py``), the
    serving of peers' requests for local actors (``_serving.py``) and the head role
    (``_head.py``).

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
        max_backlog: bytes of answers queued for one peer beyond its socket's high-water
            mark; a peer that reads nothing gets no more (they are dropped and counted in
            ``stats["send_dropped"]``).
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
        max_backlog: int = 32 * 2**20,
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
        """Counters: ``dropped`` frames, ``unknown_actor``, ``publish_failed``,
        ``publish_frames`` and ``call_many_frames`` sent (one per node and broadcast or
        fan-out), ..."""
        self._runtime: Runtime | None = None
        self._ctx: zmq.asyncio.Context | None = None
        self._auth: AsyncioAuthenticator | None = None
        self._router: Any = None
        self._inbox: Any = None
        self._fd = -1
        self._closed = False
        self._closing = False
        self._heartbeats: Heartbeats | None = None
        self._tasks = Tasks()
        self._shipper_before: Callable[[str], None] | None = None
        directory = Directory() if self.is_head else None
        self._peers = Peers(self.node_id, keys=keys, hwm=hwm, max_message_size=max_message_size,
                            heartbeat_timeout=heartbeat_timeout, stats=self.stats,
                            max_backlog=max_backlog)
        self._calls = Calls(self._peers, self._tasks, directory,
                            stream_window=self.stream_window, tell_window=tell_window,
                            rpc_timeout=rpc_timeout, stats=self.stats)
        self._head = HeadRole(self._peers, self._calls, self._tasks, directory, head=head,
                              head_key=self.head_key, rpc_timeout=rpc_timeout,
                              push_timeout=heartbeat_timeout, on_restart=self._peer_lost,
                              on_dropped=self._dropped)
        self._serving = Serving(self._peers, self._tasks, stream_window=self.stream_window,
                                max_overflow=max_overflow, send_timeout=heartbeat_timeout,
                                spawn_allow=self.spawn_allow, stats=self.stats)
        self._journals = Journals(self._peers, self._calls, rpc_timeout=rpc_timeout,
                                  stats=self.stats)
        self._serving.journals = self._journals

    @property
    def runtime(self) -> Runtime:
        """The runtime this transport serves (once started)."""
        if self._runtime is None:
            raise RuntimeError("the transport has not been started")
        return self._runtime

    # -- lifecycle -----------------------------------------------------------------------

    async def start(self, runtime: Runtime) -> None:
        self._runtime = runtime
        self._serving.attach(runtime)
        self._calls.is_local = runtime.__contains__
        self._ctx = self._peers.ctx = ctx = zmq.asyncio.Context()
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
        self._inbox = zmq.Socket.shadow(router.underlying)
        self._fd = cast(int, self._inbox.getsockopt(zmq.FD))
        loop = asyncio.get_running_loop()
        loop.add_reader(self._fd, self._readable)
        loop.call_soon(self._readable)
        peers = self._peers
        self._heartbeats = Heartbeats(ctx, self.node_id, self.keys, self.heartbeat_interval,
                                      lambda: peers.targets, lambda: self._head.joins,
                                      self._ping_refused)
        self._heartbeats.start()
        self._tasks.spawn(self._heartbeat())
        self._shipper_before = set_journal_shipper(self._journals.ship_upstream)
        add_run_drain(self._journals.drain)
        try:
            await self._head.start(runtime, self.endpoint, self.keys.public if self.keys else "")
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        if self._closed or self._closing:
            return
        self._closing = True
        remove_run_drain(self._journals.drain)
        await self._journals.closing()
        set_journal_shipper(self._shipper_before)  # a run's journals, before anyone says goodbye
        # what tell accepted must arrive: wait until the receivers have it in a mailbox
        # (before saying goodbye, after which they would drop it as from an unknown node)
        if not await self._calls.tells_taken(self.heartbeat_timeout):
            log.warning("closing with tells not yet acknowledged by their nodes")
        self._closed = True
        if self._heartbeats is not None:
            self._heartbeats.stop()  # no ping may follow our goodbye
        self._serving.close()
        self._head.close()
        if not self.is_head and self._peers.links:  # the head and every node we spoke to
            for node in list(self._peers.links):
                self._peers.send_nowait(node, Header(Op.BYE, self.node_id), b"")
            await asyncio.sleep(0.01)  # let the goodbyes leave before the sockets close
        self._tasks.cancel()
        self._calls.close(ActorStopped("the bus transport was closed"))
        self._peers.close()
        if self._fd >= 0:
            asyncio.get_running_loop().remove_reader(self._fd)
        if self._router is not None:
            self._router.close(linger=0)
        if self._auth is not None:
            self._auth.stop()
        if self._ctx is not None:
            self._ctx.destroy(linger=0)

    # -- what the runtime asks of its transport ----------------------------------------------

    def deliver(self, env: Envelope, timeout: float) -> Coroutine[Any, Any, None]:
        return self._calls.deliver(env, timeout)  # (no coroutine of its own around it)

    async def call_many(self, kind: str, names: Sequence[str], payload: Any, timeout: float,
                        *, sender: str | None = None, trace: Any = None, each: bool = False
                        ) -> tuple[list[Any], dict[int, BaseException]]:
        return await self._calls.call_many(kind, names, payload, timeout, sender, trace,
                                           each=each)

    def cancel(self, env: Envelope) -> None:
        self._calls.cancel(env)

    async def publish(self, env: Envelope, timeout: float) -> None:
        nodes = self._head.subscriber_nodes(env.topic or "")
        if nodes:
            await self._calls.publish(nodes, env, timeout)

    async def registered(self, name: str) -> None:
        await self._head.registered(name)

    async def unregistered(self, name: str) -> None:
        await self._head.unregistered(name)

    async def registered_many(self, names: Sequence[str]) -> None:
        await self._head.registered_many(names)

    async def unregistered_many(self, names: Sequence[str]) -> None:
        await self._head.unregistered_many(names)

    async def subscribed(self, topic: str) -> None:
        await self._head.subscribed(topic)

    async def unsubscribed(self, topic: str) -> None:
        await self._head.unsubscribed(topic)

    # -- for users -----------------------------------------------------------------------

    async def spawn(self, node: str, cls: str, *args: Any, name: str | None = None,
                    timeout: float | None = None, **kwargs: Any) -> ActorRef:
        """Spawn ``cls`` (``"package.module:Class"``) on ``node`` with msgpack-able arguments.

        The node refuses classes outside its ``spawn_allow`` list.
        """
        spec = {"cls": cls, "args": list(args), "kwargs": kwargs, "name": name}
        got = await self._calls.request(node, Op.SPAWN, encode(spec),
                                        timeout or self.rpc_timeout)
        if not isinstance(got, str):
            raise ActorError(f"node {node!r} answered a spawn with {got!r:.100}")
        self._calls.names[got] = node
        return self.runtime.ref(got)

    def nodes(self) -> dict[str, str]:
        """Known nodes and their endpoints."""
        return {n: info[0] for n, info in self._peers.nodes.items()}

    # -- incoming frames -----------------------------------------------------------------

    def _readable(self) -> None:
        """The ROUTER's descriptor fired: handle what is queued, inline (no task hop).

        The descriptor is edge-triggered, so read until nothing is left; after a batch,
        yield to the loop and come back.
        """
        inbox = self._inbox
        if self._closed:
            return
        for i in range(256):
            try:
                self._read(inbox)
                # Most often one message came (a call, its answer): asking whether more
                # wait is cheaper than the failing read that would tell.
                if i == 0 and not inbox.get(_EVENTS) & _POLLIN:
                    return
            except zmq.Again:
                return
            except zmq.ZMQError:
                return  # closed under us
        asyncio.get_running_loop().call_soon(self._readable)

    def _read(self, inbox: Any) -> None:
        """Read and handle one message: the routing id, then one or two frames. With CURVE,
        the sender's authenticated key comes along, read from every message's own frame:
        a routing id names a connection only while it lasts (a peer may choose its own, and
        so take one a closed connection had), so a key is never remembered by it."""
        recv = inbox.recv
        ident = recv(_NOBLOCK)
        key = None
        if self.keys is not None:
            part = recv(_NOBLOCK, copy=False)
            key = part.get("User-Id")
            frames = [ident, part.bytes]
        else:
            frames = [ident, recv(_NOBLOCK)]
        while inbox.get(_RCVMORE):
            frames.append(recv(_NOBLOCK))
        self._handle(frames, key)

    def _handle(self, frames: list[bytes], key: str | None = None) -> None:
        try:
            self._on_frames(frames, key)
        except DecodeError:
            pass  # counted and logged by Peers.decode
        except Exception as exc:  # never let one message stop the loop
            self._peers.drop(f"{type(exc).__name__}: {exc}")

    def _on_frames(self, frames: list[bytes], key: str | None) -> None:
        """Route one message. ``key``: the sender's CURVE public key, which must be the
        key its node id was registered with (so no node can speak for another)."""
        peers = self._peers
        try:
            h, data = peers.wire.split(frames[1:])
        except FrameError as exc:
            peers.drop(str(exc))
            return
        if h.op == Op.BYE and h.src not in peers.nodes:
            # after the head's news that it left: the node is out of the directory (and its
            # key with it), but a link to it still waits on its heartbeat until it goes
            if h.src in peers.links:
                self._peer_lost(h.src, left=True)
            return
        if key is not None and not (h.op == Op.HELLO and self.is_head):
            # every frame but a hello to the head comes from a node that joined with its key
            info = peers.nodes.get(h.src)
            if info is None:
                if h.op in _PEER_OPS:  # (the key passed the allow-list)
                    self._refuse_unknown(frames[0], h)
                else:
                    peers.drop(f"{h.op} from {h.src!r}, which has not joined")
                return
            if info[1] != key:
                peers.drop(f"{h.op} claiming to come from {h.src!r} signed by another key")
                return
        if h.src == self.node_id:
            peers.drop("a frame claiming to come from this node")
            return
        if h.src in peers.live.last_seen:
            peers.live.seen(h.src)
        op = h.op
        if op in _PEER_OPS and h.src not in peers.nodes and not (op == Op.HELLO
                                                                  and self.is_head):
            self._refuse_unknown(frames[0], h)
            return
        if op in (Op.RESULT, Op.ERROR, Op.ITEM, Op.END):
            self._calls.on_answer(h, data)
        elif op in (Op.CALL, Op.TELL, Op.STREAM, Op.CONTROL, Op.CALL_MANY, Op.PUBLISH):
            if h.trace is not None:
                self._journals.heard(h)
            if op == Op.CALL_MANY:
                self._serving.on_call_many(h, data)
            elif op == Op.PUBLISH:
                self._serving.on_publish(h, data)
            else:
                self._serving.on_request(h, data)
        elif op == Op.CANCEL:
            self._serving.on_cancel(h)
        elif op == Op.ACK:
            self._calls.on_ack(h, data)
        elif op == Op.CREDIT:
            self._serving.on_credit(h, data)
        elif op == Op.PING:
            peers.send_nowait(h.src, Header(Op.PONG, self.node_id), b"")
        elif op == Op.PONG:
            pass
        elif op == Op.STATE:
            self._head.on_state(h, data)
        elif op == Op.SPAWN:
            self._tasks.spawn(self._serving.on_spawn(h, peers.decode(h, data)))
        elif op == Op.BYE:
            self._peer_lost(h.src, left=True)
        elif op == Op.JOURNAL:
            self._journals.on_journal(h, data)
        else:
            self._tasks.spawn(self._head.on_head_op(h, peers.decode(h, data), key))

    # -- unknown peers -------------------------------------------------------------------

    def _refuse_unknown(self, ident: bytes, h: Header) -> None:
        """A frame from a node we do not know (not in our copy of the directory): it is not
        served, and its sender hears so at once — an :class:`UnknownPeer` error sent back
        over the connection it came on (we have no address for it), with the request's
        correlation id and op — instead of waiting for its timeout."""
        self._peers.drop(f"{h.op} from unknown node {h.src!r} (told so)")
        err = UnknownPeer(f"node {self.node_id!r} does not know node {h.src!r} (the head "
                          f"declared it lost, or has not announced it yet): its {h.op} was "
                          "not served", actor=h.target)
        data = encode({**error_to_wire(err, h.target), "op": h.op})
        try:
            frames = self._peers.wire.frames(Header(Op.ERROR, self.node_id, h.corr,
                                                    h.target), data)
            self._inbox.send_multipart([ident, *frames], _NOBLOCK)
        except zmq.ZMQError:  # (gone, or its queue is full)
            self.stats["send_failed"] += 1

    def _read_links(self) -> None:
        """Read what came back on our links to peers: only a peer that does not know us
        answers there (:meth:`_refuse_unknown`); read once per heartbeat interval."""
        for node, link in list(self._peers.links.items()):
            sock = link.sync
            try:
                while sock.get(_EVENTS) & _POLLIN:
                    self._on_link_frames(node, sock.recv_multipart(_NOBLOCK))
            except zmq.ZMQError:
                continue

    def _on_link_frames(self, node: str, frames: list[bytes]) -> None:
        """``node``'s answer on our link to it: an error for a request of ours it did not
        serve (it does not know us). A call gets it as its answer; a tell is counted as
        failed and frees its place in the node's tell window."""
        peers = self._peers
        try:
            h, data = peers.wire.split(frames)
            if h.src != node or h.op != Op.ERROR:
                raise FrameError(f"{h.op} from {h.src!r} on the link to {node!r}")
            if h.corr is not None:
                self._calls.on_answer(h, data)
                return
            value = peers.decode(h, data)
        except (FrameError, DecodeError) as exc:
            peers.drop(str(exc))
            return
        if isinstance(value, dict) and value.get("op") == Op.TELL:
            self._calls.tell_refused(node, error_from_wire(value))

    def _ping_refused(self, node: str, joins: int | None) -> None:
        """``node`` answered a ping with an error: it does not know us. If it is the head,
        join it again."""
        n = self.stats["unknown_to_peer"] = self.stats["unknown_to_peer"] + 1
        if node == HEAD:
            self._head.forgotten(joins)
        elif n & (n - 1) == 0:
            log.info("node %r does not know this node yet (%d times)", node, n)

    # -- liveness ------------------------------------------------------------------------

    async def _heartbeat(self) -> None:
        """Judge the peers every interval (a thread of its own pings them: ``_heartbeat.py``);
        read what came back on the links."""
        loop = asyncio.get_running_loop()
        while not self._closed:
            before = loop.time()
            await asyncio.sleep(self.heartbeat_interval)
            if self._closed:
                return
            self._read_links()
            if loop.time() - before > 2 * self.heartbeat_interval or (
                    self._inbox.getsockopt(zmq.EVENTS) & zmq.POLLIN):
                # This loop is behind (a big batch, a starved process, a backlog of
                # answers): what peers sent is still unread, so their silence proves
                # nothing yet. (Reading EVENTS resets the descriptor's edge: read now.)
                loop.call_soon(self._readable)
                continue
            for node in self._peers.live.stale():
                self._peer_lost(node)
            self._head.rejoin_if_lost()

    def _peer_lost(self, node: str, *, left: bool = False) -> None:
        """``node`` went silent, restarted or said goodbye (``left``): fail what waits on
        it, forget what it hosted (the head: drop it from the directory, tell the others)."""
        if left:  # its answers came before its goodbye, on the same link
            log.info("node %r left the bus", node)
            err = PeerLost(f"node {node!r} left the bus")
        else:  # news only for a node the directory still lists (the head may have said)
            log.log(logging.WARNING if node in self._peers.nodes else logging.INFO,
                    "node %r is lost (silent for %gs)", node, self.heartbeat_timeout)
            self.stats["peers_lost"] += 1
            err = PeerLost(f"node {node!r} stopped answering (no heartbeat for "
                           f"{self.heartbeat_timeout:g}s)")
        self._forget_peer(node, err)

    def _dropped(self, node: str) -> None:
        """The head's snapshot no longer lists ``node``: forget it as after its silence."""
        self._forget_peer(node, PeerLost(f"node {node!r} left the bus (the head dropped it "
                                         f"from the directory)"))

    def peer_died(self, node: str, reason: str) -> None:
        """``node``'s process is known to be dead (what launched it says so: Ray, say):
        what waits on it fails now with ``PeerLost(reason)``, as after its silence, and
        the head forgets what it hosted. Nothing happens for a node not on the bus."""
        if node in self._peers.nodes:
            log.warning("node %r is lost: %s", node, reason)
            self.stats["peers_lost"] += 1
            self._forget_peer(node, PeerLost(reason))

    def _forget_peer(self, node: str, err: PeerLost) -> None:
        self._peers.forget(node)
        self._calls.peer_lost(node, err)
        self._serving.peer_lost(node)
        self._head.peer_lost(node)
