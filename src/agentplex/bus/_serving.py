"""The serving side of a node: what peers ask of the actors living here — calls, tells and
streams into mailboxes (in arrival order, with a bounded overflow and acknowledged tells),
answers and stream credit back, topic deliveries, remote spawns."""

from __future__ import annotations

import asyncio
import copy
import logging
from collections import Counter, deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..message import EncodeError, encode
from ..runtime import (
    ActorError,
    ActorNotFound,
    ActorStopped,
    CallTimeout,
    HandlerError,
    MailboxFull,
)
from ..runtime.lowlevel import Envelope, Kind, StreamChannel
from ..tracing.lowlevel import answer_headers, receive_context
from ._allowlist import build_actor
from ._errors import PayloadTooLarge
from ._frames import Header, Op, error_to_wire
from ._peers import Peers
from ._tasks import Tasks

if TYPE_CHECKING:
    from ..runtime import Runtime
    from ._journal import Journals

__all__ = ["CHUNK_DELAY", "BatchAnswer", "BatchSlot", "RemoteWaiter", "Served", "Serving"]

CHUNK_DELAY = 0.002
"""Seconds a served fan-out gathers answers before sending them (unless all are in)."""

log = logging.getLogger("agentplex.bus")


RETURNED_TELL_MAX = 4096
"""An undeliverable tell up to this many bytes goes back to its sender whole (which sends it
to the actor's new home); a larger one comes back as a short error only, so that a peer
cannot make this node hold (and send back) what it floods it with."""

class RemoteWaiter:
    """Stands in for a remote caller's future: answering sends the answer at once."""

    __slots__ = ("_answer", "_done")

    def __init__(self, answer: Callable[[bool, Any], None]) -> None:
        self._answer = answer
        self._done = False

    def done(self) -> bool:
        return self._done

    def _settle(self, ok: bool, value: Any) -> None:
        if self._done:
            raise asyncio.InvalidStateError("the answer was already given")
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


class BatchAnswer:
    """Gathers the outcomes of a served fan-out (one CALL_MANY frame) and sends them in
    chunks as the actors answer: ``send(items, last)`` gets ``[[index, ok, value], ...]``
    (outcomes of one moment are sent together, after at most :data:`CHUNK_DELAY`); the last
    chunk goes once every target has answered. A :class:`BatchSlot` stands in for the caller
    of each target."""

    __slots__ = ("_send", "_timer", "done", "left", "ready")

    def __init__(self, n: int, send: Callable[[list[Any], bool], None]) -> None:
        self.ready: list[Any] = []
        self.left = n
        self._send = send
        self._timer: asyncio.TimerHandle | None = None
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if n == 0:
            self.done.set_result(None)
            send([], True)

    def answer(self, i: int, target: str, ok: bool, value: Any) -> None:
        self.ready.append([i, True, value] if ok else [i, False, error_to_wire(value, target)])
        self.left -= 1
        if self.left == 0:
            self.flush(True)
            self.done.set_result(None)
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(CHUNK_DELAY, self.flush)

    def flush(self, last: bool = False) -> None:
        """Send what is ready."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self.ready or last:
            items, self.ready = self.ready, []
            self._send(items, last)

    def abandon(self) -> None:
        """The caller left: send nothing more."""
        self._send = lambda items, last: None
        self.flush()


class BatchSlot(RemoteWaiter):
    """Stands in for the caller of one target of a served fan-out (one object per target:
    a fan-out to 250,000 actors of a node makes 250,000 of these)."""

    __slots__ = ("_batch", "_index", "_target")

    def __init__(self, batch: BatchAnswer, index: int, target: str) -> None:
        self._batch = batch
        self._index = index
        self._target = target
        self._done = False

    def _settle(self, ok: bool, value: Any) -> None:
        if self._done:
            raise asyncio.InvalidStateError("the answer was already given")
        self._done = True
        self._batch.answer(self._index, self._target, ok, value)

    def set_result(self, value: Any) -> None:  # the common case, without a detour
        if self._done:
            raise asyncio.InvalidStateError("the answer was already given")
        self._done = True
        self._batch.answer(self._index, self._target, True, value)


class Served:
    """A request we serve for a peer: its envelope and, for a stream, the caller's credit."""

    __slots__ = ("batch", "credit", "env", "task", "wake")

    def __init__(self, env: Envelope, credit: int = 0,
                 batch: list[Envelope] | None = None) -> None:
        self.env = env
        self.batch = batch
        """The envelopes of a served fan-out (``env`` is its first)."""
        self.credit = credit
        self.wake = asyncio.Event() if credit else None
        """Set when a stream's reader returns credit."""
        self.task: asyncio.Task[None] | None = None


class Serving:
    """Requests from peers for the local actors of ``runtime`` (set by :meth:`attach`).

    Everything reaches the actors through the runtime's transport methods
    (``accepts``, ``offer_local``, ``deliver_local``, ``publish_local``,
    ``interrupt_local``). :meth:`enqueue` is the one way into a mailbox: it keeps arrival
    order and acknowledges tells, so any new request kind (a batch of envelopes, say) goes
    through it too. ``len(serving)`` counts the calls and streams being served.
    """

    runtime: Runtime

    def __init__(self, peers: Peers, tasks: Tasks, *, stream_window: int, max_overflow: int,
                 send_timeout: float, spawn_allow: tuple[str, ...],
                 stats: Counter[str]) -> None:
        self.peers = peers
        self.tasks = tasks
        self.node_id = peers.node_id
        self.stream_window = stream_window
        self.max_overflow = max_overflow
        self.send_timeout = send_timeout
        self.spawn_allow = spawn_allow
        self.stats = stats
        self.closed = False
        self._served: dict[tuple[str, int], Served] = {}
        self._overflow: dict[str, deque[tuple[Envelope, str | None]]] = {}
        self._overflowing = 0
        self._acks: dict[str, int] = {}
        self.journals: Journals | None = None
        """Where a run's journal goes ahead of answers (set by the transport)."""

    def attach(self, runtime: Runtime) -> None:
        """Serve the actors of ``runtime`` from now on."""
        self.runtime = runtime

    def __len__(self) -> int:
        return len(self._served)

    # -- calls, tells, streams -------------------------------------------------------------

    def on_request(self, h: Header, data: bytes) -> None:
        """A CALL, TELL, STREAM or CONTROL for the local actor ``h.target``."""
        target = h.target
        if target is None:
            self.peers.drop("request without a target")
            return
        payload = self.peers.decode(h, data)
        if not self.runtime.accepts(target):
            if h.op == Op.TELL:
                self._ack(h.src)
            self.stats["unknown_actor"] += 1
            err = ActorNotFound(f"no actor named {target!r} on node {self.node_id!r}",
                                actor=target)
            if h.op == Op.TELL and len(data) <= RETURNED_TELL_MAX:
                # give a small tell back: its sender may find the actor's new home
                self.peers.answer_error(h, err, tell=data, sender=h.sender)
            else:
                self.peers.answer_error(h, err)
            return
        op = h.op
        waiter: Any = None
        if op != Op.TELL and h.corr is None:
            self.peers.drop(f"{op} without a correlation id")
            return
        key = (h.src, h.corr or 0)
        trace = None if h.trace is None else receive_context(
            target, h.trace, **{"agentplex.node": self.node_id})
        if h.src not in self.peers.links:
            self.peers.link(h.src)  # watch the caller's heartbeat: if it dies, its handler stops
        if op in (Op.CALL, Op.CONTROL):
            waiter = RemoteWaiter(lambda ok, value: self._call_done(h, key, ok, value))
            env = Envelope(op, target, payload, waiter=waiter, sender=h.sender,
                           correlation_id=h.corr, trace=trace)
            self._served[key] = Served(env)
        else:
            if op == Op.STREAM:
                waiter = StreamChannel(self.stream_window)
            env = Envelope(op, target, payload, waiter=waiter, sender=h.sender,
                           correlation_id=h.corr, trace=trace)
            if op == Op.STREAM:
                served = self._served[key] = Served(env, self.stream_window)
                served.task = self.tasks.spawn(self._pump(h, key, served))
        self.enqueue(env, h.src if op == Op.TELL else None)

    def on_call_many(self, h: Header, data: bytes) -> None:
        """The calls of one fan-out (CALL_MANY) for local actors: delivered at once (idle
        actors handle theirs in one batch, without a task each), answered in chunks listing
        each target's reply or error as they come, the last once all have answered or the
        caller's timeout has passed. The body is ``[kind, targets, payload, timeout]``
        (one message for all, each target given its own copy) or ``[kind, targets,
        payloads, timeout, True]`` (``payloads``: one message per target, as
        :func:`~agentplex.message.lowlevel.encode_each` writes them)."""
        if h.corr is None:
            self.peers.drop("call_many without a correlation id")
            return
        body = self.peers.decode(h, data)
        if not (isinstance(body, list) and len(body) in (4, 5)
                and body[0] in (Op.CALL, Op.CONTROL)
                and isinstance(body[1], list) and all(isinstance(t, str) for t in body[1])
                and isinstance(body[2], bytes) and isinstance(body[3], (int, float))
                and 0 < body[3] < 1e9 and body[4:] in ([], [True])):
            self.peers.answer_error(h, ActorError("malformed call_many request"))
            return
        kind, targets, encoded, timeout = body[:4]
        each = len(body) == 5
        payload = self.peers.decode(h, encoded, each=len(targets) if each else None)
        if each and not (isinstance(payload, list) and len(payload) == len(targets)):
            self.peers.answer_error(h, ActorError(
                "malformed call_many request: not one message per target"))
            return
        trace = receive_context(targets[0] if targets else "", h.trace,
                                **{"agentplex.node": self.node_id})
        answer = BatchAnswer(len(targets), lambda items, last: self._send_answers(h, items,
                                                                                  last))
        sender, corr = h.sender, h.corr
        if each:
            envs = [Envelope(kind, target, message, waiter=BatchSlot(answer, i, target),
                             sender=sender, correlation_id=corr, trace=trace)
                    for i, (target, message) in enumerate(zip(targets, payload, strict=True))]
        else:
            envs = [Envelope(kind, target, payload, waiter=BatchSlot(answer, i, target),
                             sender=sender, correlation_id=corr, trace=trace)
                    for i, target in enumerate(targets)]
        if h.src not in self.peers.links:
            self.peers.link(h.src)  # watch the caller's heartbeat: if it dies, handlers stop
        key = (h.src, h.corr)
        if envs:
            self._served[key] = Served(envs[0], batch=envs)
        self.enqueue_many(envs, timeout, shared=not each)
        task = self.tasks.spawn(self._answer_many(h, key, answer, envs, timeout))
        if envs:
            self._served[key].task = task

    async def _answer_many(self, h: Header, key: tuple[str, int], answer: BatchAnswer,
                           envs: list[Envelope], timeout: float) -> None:
        try:
            async with asyncio.timeout(timeout):
                await asyncio.shield(answer.done)
        except TimeoutError:
            for env in envs:
                if not env.waiter.done():
                    env.waiter.set_exception(CallTimeout(
                        f"no reply from {env.target!r} within {timeout:g}s", actor=env.target))
                    self.runtime.interrupt_local(env)
        except asyncio.CancelledError:
            answer.abandon()
            raise
        finally:
            self._served.pop(key, None)

    def _send_answers(self, h: Header, items: list[Any], last: bool) -> None:
        """Send a chunk of a served fan-out's outcomes (RESULT for the last one)."""
        if self.closed:
            return
        if self.journals is not None:  # what these calls journaled goes before the answers
            self.journals.before_answer(h)
        op = Op.RESULT if last else Op.ITEM
        try:
            data = encode(items)
        except EncodeError:  # some reply does not encode: that call fails, not its batch
            data = encode([_encodable(item) for item in items])
        try:
            self.peers.check_size(h, data)
        except PayloadTooLarge:  # too much at once: one frame per outcome
            for n, item in enumerate(items):
                self._send_answers(h, [_fitting(item, self.peers, h)],
                                   last and n == len(items) - 1)
            return
        self.peers.answer(h, op, data)

    def _call_done(self, h: Header, key: tuple[str, int], ok: bool, value: Any) -> None:
        self._served.pop(key, None)
        if self.closed:
            return
        if not ok:
            self.peers.answer_error(h, value)
            return
        try:
            data = encode(value)
        except EncodeError as exc:
            self.peers.answer_error(h, HandlerError(str(exc), actor=h.target,
                                                    exc_type="EncodeError"))
            return
        try:
            self.peers.check_size(h, data)
        except PayloadTooLarge as exc:
            self.peers.answer_error(h, exc)
            return
        headers = answer_headers(h.target)
        if headers is not None and self.journals is not None:
            self.journals.before_answer(h)  # what the call journaled goes first
        self.peers.answer(h, Op.RESULT, data, headers)

    async def _pump(self, h: Header, key: tuple[str, int], s: Served) -> None:
        """Send a served stream's items to the caller, as the caller's credit allows."""
        channel: StreamChannel[Any] = s.env.waiter
        try:
            while True:
                try:
                    more, item = await channel.receive()
                except Exception as exc:
                    self.peers.answer_error(h, exc)
                    return
                if not more:
                    self.peers.answer(h, Op.END, b"")
                    return
                while s.credit <= 0:
                    assert s.wake is not None
                    s.wake.clear()
                    await s.wake.wait()
                s.credit -= 1
                try:
                    data = encode(item)
                    await self.peers.send(h.src, Header(Op.ITEM, self.node_id, h.corr, h.target),
                                          data, self.send_timeout)
                except (EncodeError, ActorError) as exc:
                    channel.close()
                    self.runtime.interrupt_local(s.env)
                    self.peers.answer_error(h, HandlerError(str(exc), actor=h.target,
                                                            exc_type=type(exc).__name__))
                    return
        finally:
            self._served.pop(key, None)

    def on_credit(self, h: Header, data: bytes) -> None:
        """The reader of a stream we serve can take ``n`` more items."""
        s = self._served.get((h.src, h.corr or 0))
        n = self.peers.decode(h, data)
        if s is not None and s.wake is not None and type(n) is int and n > 0:
            s.credit += n
            s.wake.set()

    def on_cancel(self, h: Header) -> None:
        """The caller of a request we serve gave up."""
        s = self._served.pop((h.src, h.corr or 0), None)
        if s is not None:
            self._abandon(s)

    def _abandon(self, s: Served) -> None:
        """The caller of ``s`` left: skip or interrupt its handler(s)."""
        if s.batch is not None:
            if s.task is not None:
                s.task.cancel()
            for env in s.batch:
                if not env.waiter.done():
                    env.waiter.abandon()
                    self.runtime.interrupt_local(env)
            return
        waiter = s.env.waiter
        if isinstance(waiter, StreamChannel):
            waiter.close()
        elif isinstance(waiter, RemoteWaiter):
            waiter.abandon()
        if s.task is not None:
            s.task.cancel()
        self.runtime.interrupt_local(s.env)

    # -- into the mailbox ------------------------------------------------------------------

    def enqueue(self, env: Envelope, tell_from: str | None) -> None:
        """Put ``env`` in its actor's mailbox, in arrival order; a full mailbox holds later
        envelopes back, bounded by ``max_overflow``.

        A tell is acknowledged to ``tell_from`` once it is in the mailbox (or failed): the
        sender's window of unacknowledged tells is what bounds this overflow.
        """
        name = env.target
        held = self._overflow.get(name)
        if held is None:
            try:
                if self.runtime.offer_local(env):
                    if tell_from is not None:
                        self._ack(tell_from)
                    return
            except ActorError as exc:
                self._fail(env, exc, tell_from)
                return
            held = self._overflow[name] = deque()
            self.tasks.spawn(self._drain(name, held))
        if self._overflowing >= self.max_overflow:
            self._fail(env, MailboxFull(f"mailbox of {name!r} is full", actor=name), tell_from)
            return
        held.append((env, tell_from))
        self._overflowing += 1

    def enqueue_many(self, envs: list[Envelope], timeout: float, *, shared: bool = True
                     ) -> None:
        """Put the calls of one fan-out in their actors' mailboxes, each in arrival order
        as :meth:`enqueue` keeps it: an actor with envelopes held back gets its call behind
        them, the others at once through the runtime's batch delivery. ``shared``: the
        envelopes share one payload, and each actor gets its own copy."""
        overflow = self._overflow
        if overflow:
            now = [env for env in envs if env.target not in overflow]
            for env in envs:
                if env.target in overflow:
                    if shared:
                        env.payload = copy.deepcopy(env.payload)
                    self.enqueue(env, None)
        else:
            now = envs
        self.runtime.deliver_local_many(now, timeout, copy_payloads=shared)

    async def _drain(self, name: str, held: deque[tuple[Envelope, str | None]]) -> None:
        try:
            while held:
                env, tell_from = held[0]
                try:
                    await self.runtime.deliver_local(env, self.runtime.default_timeout)
                except ActorError as exc:
                    self._fail(env, exc, None)
                held.popleft()
                self._overflowing -= 1
                if tell_from is not None:
                    self._ack(tell_from)
        finally:
            self._overflowing -= len(held)
            for env, tell_from in held:
                self._fail(env, ActorStopped("the bus transport was closed"), tell_from)
            self._overflow.pop(name, None)

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
        if n and not self.closed and node in self.peers.nodes:
            self.peers.send_nowait(node, Header(Op.ACK, self.node_id), encode(n))

    def _fail(self, env: Envelope, exc: ActorError, tell_from: str | None = None) -> None:
        if tell_from is not None:
            self._ack(tell_from)
        waiter = env.waiter
        if isinstance(waiter, StreamChannel):
            waiter.fail(exc)
        elif isinstance(waiter, RemoteWaiter):
            if not waiter.done():
                waiter.set_exception(exc)
        else:
            n = self.stats["tell_failed"] = self.stats["tell_failed"] + 1
            if n & (n - 1) == 0:
                log.warning("dropped a %s for %r (%d so far): %s", env.kind, env.target, n, exc)

    # -- topics and spawns -----------------------------------------------------------------

    def on_publish(self, h: Header, data: bytes) -> None:
        """A topic message for the local subscribers; answered once they all have it."""
        env = Envelope(Kind.PUBLISH, "", self.peers.decode(h, data), sender=h.sender,
                       topic=h.topic,
                       trace=receive_context(h.topic or "", h.trace,
                                             **{"agentplex.node": self.node_id}),
                       exclude=h.exclude)
        self.tasks.spawn(self._publish_here(h, env))

    async def _publish_here(self, h: Header, env: Envelope) -> None:
        try:
            await self.runtime.publish_local(env, self.runtime.default_timeout)
        except Exception as exc:
            self.peers.answer_error(h, exc)
        else:
            self.peers.answer(h, Op.RESULT, b"")

    async def on_spawn(self, h: Header, spec: Any) -> None:
        """Spawn the actor ``spec`` describes, if the spawn allow-list admits its class."""
        try:
            actor, name = build_actor(spec, self.spawn_allow)
            ref = await self.runtime.spawn(actor, name)
        except Exception as exc:
            log.warning("refused a remote spawn from %r: %s", h.src, exc)
            self.peers.answer_error(h, exc)
        else:
            self.peers.answer(h, Op.RESULT, encode(ref.name))

    # -- endings ---------------------------------------------------------------------------

    def peer_lost(self, node: str) -> None:
        """``node`` is gone: the handlers serving its requests are skipped or interrupted."""
        for key, s in list(self._served.items()):
            if key[0] == node:
                del self._served[key]
                self._abandon(s)

    def close(self) -> None:
        """Answer nothing more (the transport's tasks, draining overflow, are cancelled)."""
        self.closed = True


def _encodable(item: list[Any]) -> list[Any]:
    """``item`` (``[index, ok, value]``) if its value encodes, else the error saying why."""
    try:
        encode(item)
    except EncodeError as exc:
        return [item[0], False, error_to_wire(HandlerError(str(exc), exc_type="EncodeError"),
                                              None)]
    return item


def _fitting(item: list[Any], peers: Peers, h: Header) -> list[Any]:
    """``item`` if it fits in a frame, else the error saying it does not."""
    try:
        peers.check_size(h, encode(item))
    except PayloadTooLarge as exc:
        return [item[0], False, error_to_wire(exc, None)]
    return item
