"""The calling side of a node: our requests to peers and their answers — where an actor
lives (a cached directory lookup), pending calls and streams, tell windows, redelivery when an
actor moved."""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections import Counter, deque
from collections.abc import Callable, Sequence
from typing import Any

from ..message import DecodeError, encode
from ..message.lowlevel import encode_each
from ..runtime import ActorError, ActorNotFound, ActorStopped, CallTimeout, MailboxFull
from ..runtime.lowlevel import Envelope, StreamChannel, abandon, settle
from ..tracing.lowlevel import answer_received, extract_context, send_headers
from ._directory import HEAD, Directory
from ._errors import FrameError
from ._fanout import FanOut
from ._frames import Header, Op, error_from_wire
from ._peers import Peers
from ._tasks import Tasks

__all__ = ["Calls", "Pending"]

log = logging.getLogger("agentplex.bus")


BATCH_SIZE = 50_000
"""The most calls of one fan-out carried by one frame (a larger share goes in several)."""

EACH_BATCH_SIZE = 4096
"""The same for a fan-out with one message per call: its messages are encoded here and
decoded on the node one frame at a time, so smaller frames, sent to the nodes in turn, let
every node start on its first frame while the next ones are encoded."""

LOOKUP_SIZE = 100_000
"""The most names looked up at the head in one request."""


class Pending:
    """A request of ours waiting for its answer."""

    __slots__ = ("batch", "env", "node", "queue", "retried", "task", "waiter")

    def __init__(self, waiter: Any, node: str, env: Envelope | None = None,
                 batch: FanOut | None = None) -> None:
        self.waiter = waiter
        self.node = node
        self.env = env
        self.batch = batch
        self.retried = False
        self.queue: asyncio.Queue[tuple[str, Any]] | None = None
        self.task: asyncio.Task[None] | None = None

    def fail(self, err: BaseException) -> None:
        """Give ``err`` to whoever waits."""
        if self.queue is not None:
            self.queue.put_nowait(("error", err))
        elif isinstance(self.waiter, asyncio.Future) and not self.waiter.done():
            self.waiter.set_exception(err)


def trace_headers(trace: Any, destination: str, node: str) -> dict[str, str] | None:
    """Headers carrying a ``send`` span, child of the caller's trace context (``None`` when
    tracing is off)."""
    if trace is None:
        return None
    if type(trace) is dict:  # headers already (an OTel Context is a dict subclass)
        trace = extract_context(trace)
    return send_headers(destination, trace, **{"agentplex.node": node})


class Calls:
    """Sends envelopes and bus requests to peers and routes their answers back.

    ``names`` caches which node hosts an actor (``directory``, on the head, or a LOOKUP to
    the head answers a miss). Tells to one node are bounded by ``tell_window`` until that
    node acknowledges them.
    """

    def __init__(self, peers: Peers, tasks: Tasks, directory: Directory | None, *,
                 stream_window: int, tell_window: int, rpc_timeout: float,
                 stats: Counter[str]) -> None:
        self.peers = peers
        self.tasks = tasks
        self.directory = directory
        self.node_id = peers.node_id
        self.stream_window = stream_window
        self.tell_window = tell_window
        self.rpc_timeout = rpc_timeout
        self.stats = stats
        self.names: dict[str, str] = {}
        self.is_local: Callable[[str], bool] = lambda name: False
        """Whether an actor of this node has that name (set when the transport starts):
        a tell given back to us is re-sent only for one of our own actors."""
        self._pending: dict[int, Pending] = {}
        self._ids = itertools.count(1)
        self._inflight: dict[str, int] = {}
        self._tell_waiters: dict[str, deque[asyncio.Future[None]]] = {}
        self._all_taken: asyncio.Future[None] | None = None

    # -- bus requests --------------------------------------------------------------------

    async def request(self, node: str, op: str, data: bytes, timeout: float,
                      **fields: Any) -> Any:
        """Send a request to ``node`` and wait for its RESULT (or raise its ERROR)."""
        corr = next(self._ids)
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[corr] = Pending(fut, node)
        try:
            await self.peers.send(node, Header(op, self.node_id, corr, **fields), data, timeout)
            async with asyncio.timeout(timeout):
                return await fut
        except TimeoutError:
            raise CallTimeout(f"node {node!r} did not answer {op!r} within {timeout:g}s"
                              ) from None
        finally:
            self._pending.pop(corr, None)

    async def publish(self, nodes: list[str], env: Envelope, timeout: float) -> None:
        """Deliver the topic message ``env`` to ``nodes``, each acknowledging it (so hub
        ordering holds); a node that fails is counted and logged."""
        data = encode(env.payload)
        fields = {"sender": env.sender, "topic": env.topic, "exclude": env.exclude,
                  "trace": trace_headers(env.trace, env.topic or "", self.node_id)}
        self.stats["publish_frames"] += len(nodes)
        results = await asyncio.gather(
            *(self.request(n, Op.PUBLISH, data, timeout, **fields) for n in nodes),
            return_exceptions=True)
        for node, res in zip(nodes, results, strict=True):
            if isinstance(res, BaseException):
                self.stats["publish_failed"] += 1
                log.warning("publish on %r to node %r failed: %s", env.topic, node, res)

    # -- envelopes -----------------------------------------------------------------------

    async def locate(self, name: str, timeout: float, *, fresh: bool = False) -> str:
        """The node hosting actor ``name``; :class:`ActorNotFound` when none does."""
        node = None if fresh else self.names.get(name)
        if node is not None:
            return node
        if self.directory is not None:
            node = self.directory.lookup(name)
        else:
            node = await self.request(HEAD, Op.LOOKUP, encode(name), min(timeout,
                                                                         self.rpc_timeout))
        if not isinstance(node, str) or node == self.node_id:
            self.names.pop(name, None)
            raise ActorNotFound(f"no actor named {name!r} on the bus", actor=name)
        if len(self.names) > 1_000_000:
            self.names.clear()
        self.names[name] = node
        return node

    async def locate_many(self, names: Sequence[str], timeout: float) -> dict[str, str]:
        """The nodes hosting ``names`` (a name no other node hosts is left out), from the
        cache or the directory: one request to the head per :data:`LOOKUP_SIZE` misses."""
        cache = self.names
        found: dict[str, str] = {}
        missing: list[str] = []
        for name in names:
            node = cache.get(name)
            if node is None:
                missing.append(name)
            else:
                found[name] = node
        if not missing:
            return found
        missing = list(dict.fromkeys(missing))
        answers: list[Any] = []
        if self.directory is not None:
            answers = [self.directory.lookup(n) for n in missing]
        else:
            for i in range(0, len(missing), LOOKUP_SIZE):
                chunk = missing[i:i + LOOKUP_SIZE]
                got = await self.request(HEAD, Op.LOOKUP, encode(chunk),
                                         min(timeout, self.rpc_timeout))
                if not isinstance(got, list) or len(got) != len(chunk):
                    raise ActorError("the head answered a lookup with the wrong shape")
                answers += got
        if len(cache) + len(missing) > 1_000_000:
            cache.clear()
        for name, node in zip(missing, answers, strict=True):
            if isinstance(node, str) and node != self.node_id:
                cache[name] = found[name] = node
        return found

    def forget_node(self, node: str) -> None:
        """Drop the cached names hosted by ``node``."""
        if any(h == node for h in self.names.values()):
            self.names = {n: h for n, h in self.names.items() if h != node}

    async def deliver(self, env: Envelope, timeout: float, *, fresh: bool = False) -> None:
        """Send ``env`` to the node hosting ``env.target``; its answer resolves
        ``env.waiter``. ``fresh`` asks the directory again instead of the cache."""
        node = None if fresh else self.names.get(env.target)
        if node is None:
            node = await self.locate(env.target, timeout, fresh=fresh)
        data = encode(env.payload)
        trace = None if env.trace is None else trace_headers(env.trace, env.target,
                                                             self.node_id)
        waiter = env.waiter
        if waiter is None:
            await self._tell_slot(node, timeout)
            try:
                await self.peers.send(node, Header(env.kind, self.node_id, None, env.target,
                                                   env.sender, trace=trace), data, timeout)
            except BaseException:
                self._inflight[node] -= 1
                raise
            return
        corr = env.correlation_id = next(self._ids)
        entry = self._pending[corr] = Pending(waiter, node, env)
        entry.retried = fresh
        if isinstance(waiter, StreamChannel):
            entry.queue = asyncio.Queue()
            entry.task = self.tasks.spawn(self._feed(corr, entry))
        header = Header(env.kind, self.node_id, corr, env.target, env.sender, trace=trace)
        try:
            frames = self.peers.try_send(node, header, data)
            if frames is not None:
                await self.peers.send_frames(node, header, frames, timeout)
        except BaseException:
            self._drop_pending(corr)
            if isinstance(waiter, asyncio.Future) and waiter.done() and not waiter.cancelled():
                # the node was lost while the frame waited to go (its peer_lost failed the
                # waiter too): the error raised here is the caller's news, and the
                # waiter's, never awaited now, must not be reported as never retrieved
                waiter.exception()
            raise

    async def call_many(self, kind: str, names: Sequence[str], payload: Any, timeout: float,
                        sender: str | None, trace: Any, *, each: bool = False
                        ) -> tuple[list[Any], dict[int, BaseException]]:
        """:meth:`Transport.call_many <agentplex.runtime.Transport.call_many>` on the bus:
        one CALL_MANY frame per node (per :data:`BATCH_SIZE` of its actors), answered in
        chunks that go straight into the lists returned; a call is an envelope of its own
        only if its actor moved and it is sent again. With ``each``, ``payload[i]`` is the
        message of ``names[i]``: each frame carries its own targets' messages."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        replies: list[Any] = [None] * len(names)
        errors: dict[int, BaseException] = {}
        cache = self.names
        where = cache if all(name in cache for name in names) else (
            await self.locate_many(names, timeout))
        groups: dict[str, list[int]] = {}
        for i, name in enumerate(names):
            node = where.get(name)
            if node is None:
                errors[i] = ActorNotFound(f"no actor named {name!r} on the bus", actor=name)
                continue
            at = groups.get(node)
            if at is None:
                at = groups[node] = []
            at.append(i)

        def moved(i: int, err: ActorNotFound) -> Envelope:
            env = Envelope(kind, names[i], payload[i] if each else payload,
                           waiter=loop.create_future(), sender=sender, trace=trace)
            self.names.pop(env.target, None)
            self.tasks.spawn(self._redeliver(env, err))
            return env

        def timed_out(i: int) -> BaseException:
            return CallTimeout(f"no reply from {names[i]!r} within {timeout:g}s", actor=names[i])

        data = None if each else encode(payload)
        size = EACH_BATCH_SIZE if each else BATCH_SIZE
        shares = [[at[j:j + size] for j in range(0, len(at), size)] for at in groups.values()]
        headers = {node: trace_headers(trace, node, self.node_id) for node in groups}
        sent: list[tuple[FanOut, asyncio.Future[Any]]] = []
        retry: list[Envelope | None] = []
        try:
            for k in range(max(map(len, shares), default=0)):  # the nodes in turn
                for node, chunks in zip(groups, shares, strict=True):
                    if k >= len(chunks):
                        continue
                    fan = FanOut(node, next(self._ids), chunks[k], replies, errors, moved)
                    own = data if data is not None else encode_each(
                        [payload[i] for i in fan.at])
                    sent.append((fan, await self._send_fanout(
                        fan, kind, sender, headers[node], own, names, deadline - loop.time(),
                        each=each)))
            if sent:
                await asyncio.wait([fut for _, fut in sent],
                                   timeout=max(0.0, deadline - loop.time()))
            retry = [env for fan, _ in sent for _, env in fan.retry]
            await settle(retry, deadline, timeout, self.cancel)
        except asyncio.CancelledError:
            for fan, _ in sent:
                self._give_up(fan, lambda i: ActorStopped("the caller left"))
            abandon(retry, self.cancel)
            raise
        for fan, _ in sent:
            self._give_up(fan, timed_out)
            for i, env in fan.retry:
                fut = env.waiter
                exc = ActorStopped("the handler was interrupted") if fut.cancelled() else (
                    fut.exception())
                if exc is None:
                    replies[i] = fut.result()
                else:
                    errors[i] = exc
        return replies, errors

    async def _send_fanout(self, fan: FanOut, kind: str, sender: str | None,
                           trace: dict[str, str] | None, payload: bytes, names: Sequence[str],
                           timeout: float, *, each: bool = False) -> asyncio.Future[Any]:
        """Send the CALL_MANY frame of ``fan`` (``payload``: the encoded message, or with
        ``each`` the encoded list of its calls' messages); the future is done once all its
        calls are (a failure of the whole frame fails each of them)."""
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        fut.add_done_callback(lambda f: None if f.cancelled() or f.exception() is None
                              else fan.fail(lambda i: f.exception() or ActorError("failed")))
        self._pending[fan.corr] = Pending(fut, fan.node, batch=fan)
        body = [kind, [names[i] for i in fan.at], payload, max(timeout, 1e-3)]
        data = encode([*body, True] if each else body)
        header = Header(Op.CALL_MANY, self.node_id, fan.corr, None, sender, trace=trace)
        self.stats["call_many_frames"] += 1
        try:
            await self.peers.send(fan.node, header, data, timeout)
        except ActorError as exc:
            self._pending.pop(fan.corr, None)
            if not fut.done():
                fut.set_exception(exc)
        return fut

    def _give_up(self, fan: FanOut, err: Callable[[int], BaseException]) -> None:
        """Stop waiting for ``fan``: its unanswered calls fail with ``err(i)`` and the node
        interrupts their handlers."""
        if not fan.left:
            return
        fan.fail(err)
        entry = self._pending.pop(fan.corr, None)
        if entry is not None and entry.node in self.peers.links:
            self.peers.send_nowait(entry.node, Header(Op.CANCEL, self.node_id, fan.corr), b"")

    def _drop_pending(self, corr: int) -> None:
        entry = self._pending.pop(corr, None)
        if entry is not None and entry.task is not None:
            entry.task.cancel()

    def cancel(self, env: Envelope) -> None:
        """The caller of ``env`` gave up: forget it and tell the serving node."""
        corr = env.correlation_id
        if not isinstance(corr, int):
            return
        entry = self._pending.get(corr)
        if entry is None or entry.env is not env or entry.batch is not None:
            return  # a fan-out's calls are interrupted by their caller, as a whole
        self._drop_pending(corr)
        if entry.node in self.peers.links:
            self.peers.send_nowait(entry.node, Header(Op.CANCEL, self.node_id, corr), b"")

    async def _feed(self, corr: int, entry: Pending) -> None:
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
                        self.peers.send_nowait(entry.node, Header(Op.CREDIT, self.node_id, corr),
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

    # -- answers -------------------------------------------------------------------------

    def on_answer(self, h: Header, data: bytes) -> None:
        """A RESULT, ERROR, stream ITEM or END for a request of ours."""
        entry = self._pending.get(h.corr) if h.corr is not None else None
        if entry is None:
            if h.op == Op.ERROR and h.corr is None:
                self._tell_failed(h, self.peers.decode(h, data))
            return  # a late answer to a request given up on
        if entry.node != h.src:
            self.peers.drop(f"answer from {h.src!r} for a request sent to {entry.node!r}")
            return
        try:
            value = self.peers.decode(h, data)
        except DecodeError as exc:
            self._pending.pop(h.corr, None)  # type: ignore[arg-type]
            entry.fail(ActorError(f"undecodable answer: {exc}", actor=h.target))
            return
        op = h.op
        if entry.batch is not None and op in (Op.ITEM, Op.RESULT):
            if op == Op.RESULT:  # the last chunk
                del self._pending[h.corr]  # type: ignore[arg-type]
                entry.waiter.set_result(None)
            entry.batch.answer(value)
            return
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
        if op == Op.RESULT:
            if h.trace:  # an experiment's causal clock: the caller has heard the answer
                answer_received(h.trace, entry.env.sender if entry.env is not None else None)
            if not fut.done():
                fut.set_result(value)
            return
        err = error_from_wire(value)
        env = entry.env
        if isinstance(err, ActorNotFound) and env is not None:
            self.names.pop(env.target, None)
            if not entry.retried:  # the actor may have moved: ask the head again, once
                self.tasks.spawn(self._redeliver(env, err))
                return
        if not fut.done():
            fut.set_exception(err)

    def _tell_failed(self, h: Header, value: Any) -> None:
        """A tell of ours was refused; one for an actor that moved is sent to its new home."""
        err = error_from_wire(value)
        tell = value.get("tell") if isinstance(value, dict) else None
        if isinstance(err, ActorNotFound) and h.target:
            self.names.pop(h.target, None)
            sender = value.get("sender") if isinstance(value, dict) else None
            if sender is not None and not (isinstance(sender, str) and self.is_local(sender)):
                self.peers.drop(f"a returned tell from {h.src!r} names a sender not of ours")
                return
            if isinstance(tell, bytes):
                self.tasks.spawn(self._resend_tell(
                    h.target, sender if isinstance(sender, str) else None, tell, h.src))
                return
        self._count_failed_tell(h.target, err)

    def _count_failed_tell(self, target: str | None, err: BaseException) -> None:
        n = self.stats["tell_failed"] = self.stats["tell_failed"] + 1
        if n & (n - 1) == 0:  # 1, 2, 4, 8 ...: a flood of failures is not a flood of lines
            log.warning("a tell to %r failed (%d so far): %s", target, n, err)

    async def _resend_tell(self, target: str, sender: str | None, data: bytes, gone: str
                           ) -> None:
        try:
            node = await self.locate(target, self.rpc_timeout, fresh=True)
            if node == gone:
                raise ActorNotFound(f"actor {target!r} is not on node {gone!r}", actor=target)
            await self._tell_slot(node, self.rpc_timeout)
            try:
                await self.peers.send(node, Header(Op.TELL, self.node_id, None, target, sender),
                                      data, self.rpc_timeout)
            except BaseException:
                self._inflight[node] -= 1
                raise
        except ActorError as exc:
            self._count_failed_tell(target, exc)

    async def _redeliver(self, env: Envelope, err: ActorError) -> None:
        try:
            await self.deliver(env, self.rpc_timeout, fresh=True)
        except Exception as exc:
            if not env.waiter.done():
                env.waiter.set_exception(exc if isinstance(exc, ActorError) else err)

    # -- tell windows --------------------------------------------------------------------

    def on_ack(self, h: Header, data: bytes) -> None:
        """``h.src`` took some of our tells into mailboxes: open the window by as many."""
        n = self.peers.decode(h, data)
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
        if left <= 0:
            self._check_taken()

    def tell_refused(self, node: str, err: ActorError) -> None:
        """``node`` did not serve a tell of ours (it does not know us): counted and logged
        as failed; its place in the node's tell window is free again."""
        left = self._inflight.get(node, 0) - 1
        self._inflight[node] = max(0, left)
        waiters = self._tell_waiters.get(node)
        while waiters:
            w = waiters.popleft()
            if not w.done():
                w.set_result(None)
                break
        if left <= 0:
            self._check_taken()
        n = self.stats["tell_failed"] = self.stats["tell_failed"] + 1
        if n & (n - 1) == 0:
            log.warning("a tell to node %r failed (%d so far): %s", node, n, err)

    async def tells_taken(self, timeout: float) -> bool:
        """Wait (at most ``timeout``) until every node has taken the tells we sent it into
        a mailbox; whether they all did."""
        if not any(self._inflight.values()):
            return True
        self._all_taken = asyncio.get_running_loop().create_future()
        try:
            async with asyncio.timeout(timeout):
                await self._all_taken
        except TimeoutError:
            return False
        finally:
            self._all_taken = None
        return True

    def _check_taken(self) -> None:
        if self._all_taken is not None and not self._all_taken.done() and not any(
                self._inflight.values()):
            self._all_taken.set_result(None)

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

    # -- endings -------------------------------------------------------------------------

    def peer_lost(self, node: str, err: ActorError) -> None:
        """``node`` is gone: what waits on it fails with ``err``; its tell window closes."""
        self._inflight.pop(node, None)
        self._check_taken()
        for waiter in self._tell_waiters.pop(node, ()):
            if not waiter.done():
                waiter.set_result(None)
        for corr, entry in list(self._pending.items()):
            if entry.node == node:
                if entry.queue is None:
                    del self._pending[corr]
                entry.fail(err)

    def close(self, err: ActorError) -> None:
        """Fail every pending request with ``err``."""
        for entry in list(self._pending.values()):
            entry.fail(err)
        self._pending.clear()
