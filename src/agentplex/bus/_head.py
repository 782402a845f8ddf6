"""The head role: the head keeps the directory (nodes, actor names, topics) and pushes its
snapshot to every node; a node says hello, registers its actors and topics there, applies
pushed snapshots and rejoins a head that restarted."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from ..message import encode
from ..runtime import ActorError
from ._calls import Calls
from ._directory import HEAD, Directory, names_from_wire, names_to_wire, parse_snapshot
from ._frames import Header, Op
from ._peers import Peers
from ._tasks import Tasks

if TYPE_CHECKING:
    from ..runtime import Runtime

__all__ = ["HeadRole"]

log = logging.getLogger("agentplex.bus")


class HeadRole:
    """Directory traffic between the head and the nodes, from either side.

    ``directory`` is the head's :class:`Directory` (``None`` on other nodes); ``topics``
    this node's copy of which nodes subscribe to each topic. ``on_restart(node)`` is called
    when a known node says hello again: what waited on its past life has failed.
    """

    runtime: Runtime

    def __init__(self, peers: Peers, calls: Calls, tasks: Tasks, directory: Directory | None,
                 *, head: str | None, head_key: str, rpc_timeout: float, push_timeout: float,
                 on_restart: Callable[[str], None],
                 on_dropped: Callable[[str], None] = lambda node: None) -> None:
        self.peers = peers
        self.calls = calls
        self.tasks = tasks
        self.directory = directory
        self.head = head
        self.head_key = head_key
        self.node_id = peers.node_id
        self.rpc_timeout = rpc_timeout
        self.push_timeout = push_timeout
        self.on_restart = on_restart
        self.on_dropped = on_dropped
        """Called with each node a pushed snapshot no longer lists (the head dropped it:
        dead or gone), as this node's own loss of it would be."""
        self.topics: dict[str, set[str]] = {}
        self.endpoint = ""
        self.public_key = ""
        self.head_lost = False
        self.joins = 0
        """How many times this node has joined the head (its pings carry it)."""
        self.closed = False
        self._version = -1
        self._rejoining: asyncio.Task[None] | None = None
        self._reg_names: list[str] = []
        self._reg_done: asyncio.Future[None] | None = None

    async def start(self, runtime: Runtime, endpoint: str, public_key: str) -> None:
        """Join the bus as ``endpoint``: the head enters itself in its directory, a node
        says hello to the head (:class:`~agentplex.runtime.ActorError` if it does not
        answer)."""
        self.runtime = runtime
        self.endpoint = endpoint
        self.public_key = public_key
        if self.directory is not None:
            self.directory.add_node(self.node_id, endpoint, public_key)
            self.peers.nodes = dict(self.directory.nodes)
            return
        assert self.head is not None
        self.peers.nodes[HEAD] = (self.head, self.head_key)
        await self.hello()

    def close(self) -> None:
        self.closed = True

    # -- a node's side -------------------------------------------------------------------

    async def hello(self) -> None:
        """Announce this node to the head and take its snapshot.

        The version is reset before the hello (the head may have restarted with a fresh
        directory), not after its answer: a state the head pushes while the answer is on
        its way (another node joined) may be handled first, and is newer than it."""
        self._version = -1
        snap = await self.calls.request(HEAD, Op.HELLO, encode(
            {"endpoint": self.endpoint, "key": self.public_key}), self.rpc_timeout)
        self.apply_snapshot(snap)
        self.joins += 1

    async def _rejoin(self) -> None:
        """The head was lost: say hello again until it answers, then re-register."""
        try:
            await self.hello()
            for chunk in names_to_wire(self.runtime.names()):
                await self.calls.request(HEAD, Op.REG_MANY, encode(chunk), self.rpc_timeout)
            for topic in self.runtime.topics():
                await self.calls.request(HEAD, Op.SUB, encode(topic), self.rpc_timeout)
        except ActorError as exc:
            log.info("the head is still unreachable: %s", exc)
            return
        self.head_lost = False
        log.warning("rejoined the head at %s", self.head)

    def forgotten(self, joins: int | None) -> None:
        """The head answered a ping sent after our ``joins``-th hello: it does not know
        us (it declared us lost, say while we were stopped): join it again at once. (An
        answer to a ping from before our last hello is old news.)"""
        if joins != self.joins or not self.joins or self.directory is not None or self.closed:
            return  # (not joined yet: the first hello is under way)
        if not self.head_lost:
            log.warning("the head no longer knows this node (%s): joining again",
                        self.node_id)
            self.head_lost = True
        self.rejoin_if_lost()

    def rejoin_if_lost(self) -> None:
        """Try to rejoin a lost head, unless a try is under way (called every heartbeat)."""
        if self.head_lost and not self.closed and (
                self._rejoining is None or self._rejoining.done()):
            self._rejoining = self.tasks.spawn(self._rejoin())

    def apply_snapshot(self, snap: Any) -> None:
        """Take the head's pushed nodes and topics (an older version is ignored)."""
        version, nodes, topics = parse_snapshot(snap)
        if version < self._version:
            return
        self._version = version
        known = self.peers.nodes
        if HEAD in known and HEAD not in nodes:
            nodes[HEAD] = known[HEAD]
        for gone in set(known) - set(nodes):  # what waits on it fails now, not after
            self.on_dropped(gone)               # this node's own heartbeat silence
        self.peers.nodes, self.topics = nodes, topics

    def on_state(self, h: Header, data: bytes) -> None:
        """A snapshot pushed by the head."""
        if self.directory is not None:
            self.peers.drop("directory state sent to the head")
            return
        self.apply_snapshot(self.peers.decode(h, data))
        self.peers.answer(h, Op.RESULT, encode(None))

    # -- announcing local actors and topics ----------------------------------------------

    async def registered(self, name: str) -> None:
        """Register ``name`` at the head. Registrations made at the same moment (actors
        spawned concurrently) travel together in one request."""
        self.calls.names.pop(name, None)
        if self.directory is not None:
            self.directory.register(name, self.node_id)
            return
        if self._reg_done is None:
            self._reg_done = asyncio.get_running_loop().create_future()
            asyncio.get_running_loop().call_soon(self._send_registrations)
        self._reg_names.append(name)
        await asyncio.shield(self._reg_done)

    def _send_registrations(self) -> None:
        names, done = self._reg_names, self._reg_done
        self._reg_names, self._reg_done = [], None
        assert done is not None
        done.add_done_callback(lambda f: f.cancelled() or f.exception())  # seen by callers
        self.tasks.spawn(self._register(names if len(names) > 1 else names[0], done))

    async def _register(self, names: str | list[str], done: asyncio.Future[None]) -> None:
        try:
            await self.calls.request(HEAD, Op.REG, encode(names), self.rpc_timeout)
        except asyncio.CancelledError:
            done.cancel()
            raise
        except Exception as exc:
            done.set_exception(exc)
        else:
            done.set_result(None)

    async def unregistered(self, name: str) -> None:
        if self.directory is not None:
            self.directory.unregister(name, self.node_id)
        elif not self.closed:
            await self.calls.request(HEAD, Op.UNREG, encode(name), self.rpc_timeout)

    async def registered_many(self, names: Sequence[str]) -> None:
        """Announce a batch of local actors: one message per range (or per
        ``MAX_NAMES_PER_FRAME`` explicit names), not one per actor."""
        if self.calls.names:
            for name in names:
                self.calls.names.pop(name, None)
        for chunk in names_to_wire(names):
            if self.directory is not None:
                self.directory.register_many(names_from_wire(chunk), self.node_id)
            else:
                await self.calls.request(HEAD, Op.REG_MANY, encode(chunk), self.rpc_timeout)

    async def unregistered_many(self, names: Sequence[str]) -> None:
        for chunk in names_to_wire(names):
            if self.directory is not None:
                self.directory.unregister_many(names_from_wire(chunk), self.node_id)
            elif not self.closed:
                await self.calls.request(HEAD, Op.UNREG_MANY, encode(chunk),
                                         self.rpc_timeout)

    async def subscribed(self, topic: str) -> None:
        if self.directory is not None:
            self.directory.subscribe(topic, self.node_id)
            await self.push_state()
        else:
            await self.calls.request(HEAD, Op.SUB, encode(topic), self.rpc_timeout)

    async def unsubscribed(self, topic: str) -> None:
        if self.directory is not None:
            self.directory.unsubscribe(topic, self.node_id)
            await self.push_state()
        elif not self.closed:
            await self.calls.request(HEAD, Op.UNSUB, encode(topic), self.rpc_timeout)

    def subscriber_nodes(self, topic: str) -> list[str]:
        """Other nodes where some actor subscribes to ``topic``."""
        return [n for n in self.topics.get(topic, ()) if n != self.node_id]

    # -- the head's side -----------------------------------------------------------------

    async def push_state(self, *, skip: str | None = None) -> None:
        """Send the directory's snapshot to every node but ``skip`` (the head only).

        A joining node is skipped: its hello's answer carries the snapshot, and waiting on
        its acknowledgement of a push would hold that answer up to ``push_timeout`` (a
        peer that never acknowledges would then be dropped as silent before hearing it)."""
        assert self.directory is not None
        d = self.directory
        snap = d.snapshot()
        for gone in set(self.peers.nodes) - set(d.nodes):
            self.calls.forget_node(gone)
        self.peers.nodes = dict(d.nodes)
        self.topics = {t: set(v) for t, v in d.topics.items()}
        data = encode(snap)
        others = [n for n in self.peers.nodes if n not in (self.node_id, skip)]
        await asyncio.gather(
            *(self.calls.request(n, Op.STATE, data, self.push_timeout) for n in others),
            return_exceptions=True)

    async def on_head_op(self, h: Header, arg: Any, key: str | None = None) -> None:
        """A directory request (HELLO, REG, UNREG, REG_MANY, UNREG_MANY, LOOKUP, SUB,
        UNSUB) from a node;
        ``key`` is its CURVE public key when the bus is encrypted."""
        d = self.directory
        try:
            if d is None:
                raise ActorError(f"node {self.node_id!r} is not the head")
            result: Any = None
            if h.op == Op.HELLO:
                if not (isinstance(arg, dict) and isinstance(arg.get("endpoint"), str)
                        and isinstance(arg.get("key"), str)):
                    raise ActorError("malformed hello")
                if key is not None and arg["key"] != key:
                    raise ActorError("a hello must announce the key it is signed with")
                known = d.nodes.get(h.src)
                if key is not None and known is not None and known[1] != key:
                    raise ActorError(f"node id {h.src!r} belongs to another key")
                if known is not None:  # restarted: what waited on its past life has failed
                    self.on_restart(h.src)
                d.add_node(h.src, arg["endpoint"], arg["key"])
                await self.push_state(skip=h.src)
                result = d.snapshot()
            elif h.op == Op.REG and isinstance(arg, list):  # actors spawned together
                if not all(isinstance(n, str) for n in arg):
                    raise ActorError("malformed registration")
                for name in arg:
                    d.register(name, h.src)
            elif h.op == Op.LOOKUP and isinstance(arg, list):  # many names at once
                if not all(isinstance(n, str) for n in arg):
                    raise ActorError("malformed lookup request")
                result = [d.lookup(n) for n in arg]
            elif h.op in (Op.REG_MANY, Op.UNREG_MANY):
                try:
                    names = names_from_wire(arg)
                except ValueError as exc:
                    raise ActorError(str(exc)) from None
                if h.op == Op.REG_MANY:
                    d.register_many(names, h.src)
                else:
                    d.unregister_many(names, h.src)
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
                await self.push_state()
            else:
                d.unsubscribe(arg, h.src)
                await self.push_state()
            self.peers.answer(h, Op.RESULT, encode(result))
        except Exception as exc:
            self.peers.answer_error(h, exc)

    # -- endings -------------------------------------------------------------------------

    def peer_lost(self, node: str) -> None:
        """``node`` is gone: forget what it hosted; the head drops it from the directory
        and tells the others; a node that lost the head will rejoin it."""
        if node == HEAD and self.directory is None:
            self.head_lost = True
        self.calls.forget_node(node)
        if self.directory is not None and self.directory.remove_node(node):
            self.tasks.spawn(self.push_state())
