""":class:`Runtime`: spawns, names, finds and stops actors; delivers their messages.

What the runtime's own actor cells (``_cell``) and refs (``_ref``) may call on it, besides
what any user may (the transport's side of the runtime is listed in ``_transport.py``):

- ``runtime.mark_busy()``: a cell has work now (its drain task or its first worker
  started, or a fan-out batch holds it); ``runtime.mark_settled()``: that work is done.
  :meth:`Runtime.idle` waits until every busy cell settled; nothing else counts them.
- ``runtime.call_deadlines(loop)``: the coarse deadlines (``_deadlines``) of the calls
  waiting on ``loop``, made on first use; a ref adds its call's future and discards it
  once answered.
- Package-private, for these two modules only: ``runtime._make_ref(name, cell)`` (a cell's
  own ref), ``runtime._cells`` (the local cells by name, read only), ``runtime._route(env,
  timeout)`` (what delivers an envelope, to a local mailbox or through the transport),
  ``runtime._cancel(env)`` (a caller gave up: interrupt its handler, here or elsewhere),
  ``runtime._trace_context(trace)``, ``runtime._control(cell, env)`` (subscriptions and
  state, run in the actor's turn) and ``runtime._record_unhandled(name, env, err)``.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Awaitable, Iterable, Mapping, Sequence, Sized
from contextvars import ContextVar, Token
from typing import Any

from opentelemetry import context as otel_context

from ..tracing import is_enabled
from ..tracing.lowlevel import current_context, extract_context
from ._actor import Actor
from ._cell import _RUNNING, ActorCell, current_cell, handler_error
from ._deadlines import Deadlines, call_timed_out
from ._envelope import Envelope, Kind
from ._errors import ActorError, ActorExists, ActorNotFound, ActorStopped
from ._fanout import PAUSE_GC_AT, Batch, GCPause, deep_copy
from ._names import NameRange
from ._per_actor import PerActor
from ._ref import ActorRef
from ._settle import abandon, settle
from ._transport import InProcessTransport, Transport

__all__ = ["Runtime", "get_runtime"]

log = logging.getLogger("agentplex.runtime")

_current_runtime: ContextVar[Runtime | None] = ContextVar("agentplex_runtime", default=None)
_default_runtime: Runtime | None = None


def get_runtime() -> Runtime:
    """The runtime of the current context: the innermost ``async with Runtime()``, the
    runtime of the actor whose handler is running, or else a process-wide default runtime
    (in-process transport) created on first use for the running event loop."""
    global _default_runtime
    runtime = _current_runtime.get()
    if runtime is not None:
        return runtime
    cell = current_cell.get()
    if cell is not None:
        return cell.runtime
    loop = asyncio.get_running_loop()
    if _default_runtime is None or _default_runtime._loop is not loop:
        _default_runtime = Runtime()
        _default_runtime._bind(loop)
    return _default_runtime


class Runtime:
    """Hosts actors in this process and reaches others through its transport.

    Use it as an async context manager: entering starts the transport and makes it the
    current runtime; leaving drains every mailbox and stops every actor::

        async with Runtime() as rt:
            ref = await rt.spawn(MyActor(), name="alice")
            print(await ref.call("hi", timeout=5))

    Args:
        transport: how to reach actors hosted elsewhere (default: in-process only).
        default_timeout: seconds a call, tell or stream waits when given no timeout.
        mailbox_size: default mailbox capacity of spawned actors.
    """

    def __init__(
        self,
        transport: Transport | None = None,
        *,
        default_timeout: float = 300.0,
        mailbox_size: int = 1024,
    ) -> None:
        if default_timeout <= 0:
            raise ValueError("default_timeout must be positive")
        if mailbox_size < 1:
            raise ValueError("mailbox_size must be at least 1")
        self.transport: Transport = transport if transport is not None else InProcessTransport()
        self.default_timeout = default_timeout
        self.mailbox_size = mailbox_size
        self._cells: dict[str, ActorCell] = {}
        self._topics: dict[str, dict[str, None]] = {}
        self._busy = 0
        self._putting: set[asyncio.Task[None]] = set()
        self._idle: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._started = False
        self._closed = False
        self._token: Token[Runtime | None] | None = None
        self._ids = itertools.count(1)
        self._deadlines: Deadlines | None = None
        self._feed: Batch | None = None
        self.unhandled_errors = 0
        """Errors raised by handlers of tells and publishes, which have no caller."""

    # -- lifecycle ---------------------------------------------------------------------

    def _bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    async def start(self) -> Runtime:
        """Start the transport. Idempotent; :meth:`spawn` calls it when needed."""
        if self._closed:
            raise RuntimeError("this runtime has been shut down")
        if not self._started:
            self._started = True
            self._loop = asyncio.get_running_loop()
            await self.transport.start(self)
        return self

    async def __aenter__(self) -> Runtime:
        await self.start()
        self._token = _current_runtime.set(self)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        try:
            await self.shutdown()
        finally:
            if self._token is not None:
                _current_runtime.reset(self._token)
                self._token = None

    async def shutdown(self, *, drain: bool = True, timeout: float | None = None) -> None:
        """Stop every actor and close the transport.

        With ``drain`` every accepted message is handled first (actors may still message
        each other meanwhile); after ``timeout`` seconds (default: ``default_timeout``)
        the remaining messages fail with :class:`ActorStopped`.
        """
        if self._closed:
            return
        timeout = self.default_timeout if timeout is None else timeout
        if drain:
            try:
                await asyncio.wait_for(self.idle(), timeout)
            except TimeoutError:
                log.warning("runtime shutdown: mailboxes not drained after %gs", timeout)
        self._closed = True
        cells = list(self._cells.values())
        for cell in cells:
            cell.close()
            cell.fail_queued()
            cell.kill()
        for cell in cells:
            await cell.wait_idle()
            await self._finish(cell)
        self._topics.clear()
        if self._feed is not None:
            self._feed.close()
        await self.transport.close()

    async def idle(self) -> None:
        """Wait until no actor has a message to handle."""
        while self._busy:
            if self._idle is None:
                self._idle = asyncio.Event()
            await self._idle.wait()

    # -- for cells and refs (listed in the module docstring) ---------------------------

    def mark_busy(self) -> None:
        """A cell has work now (for the runtime's cells: see the module docstring)."""
        self._busy += 1

    def mark_settled(self) -> None:
        """A cell's work is done; :meth:`idle` returns once every busy cell settled."""
        self._busy -= 1
        if self._busy == 0 and self._idle is not None:
            self._idle.set()
            self._idle = None

    def call_deadlines(self, loop: asyncio.AbstractEventLoop) -> Deadlines:
        """The deadlines of this runtime's calls waiting on ``loop`` (made on first use, and
        made again when the runtime is used from another loop)."""
        deadlines = self._deadlines
        if deadlines is None or deadlines.loop is not loop:
            deadlines = self._deadlines = Deadlines(loop, call_timed_out)
        return deadlines

    # -- actors ------------------------------------------------------------------------

    async def spawn(
        self, actor: Actor, name: str | None = None, *, mailbox_size: int | None = None
    ) -> ActorRef:
        """Start ``actor`` under ``name`` and return its ref.

        ``name`` defaults to the actor's ``name`` attribute, else its class name and a
        number. Raises :class:`ActorExists` when the name is taken.
        """
        if not self._started:
            await self.start()
        if self._closed:
            raise RuntimeError("this runtime has been shut down")
        if actor._cell is not None:
            raise RuntimeError(f"{actor!r} is already spawned as {actor._cell.name!r}")
        if name is None:
            name = getattr(actor, "name", None) or f"{type(actor).__name__}-{next(self._ids)}"
        if name in self._cells:
            raise ActorExists(f"an actor named {name!r} already runs", actor=name)
        cell = ActorCell(self, actor, name, mailbox_size or self.mailbox_size)
        self._cells[name] = cell
        actor._cell = cell
        if type(actor).on_start is not Actor.on_start:
            try:
                await actor.on_start()
            except BaseException:
                del self._cells[name]
                actor._cell = None
                raise
        if type(self.transport) is not InProcessTransport:
            await self.transport.registered(name)
        return cell.ref

    async def spawn_many(self, actors: Sequence[Actor], names: Sequence[str], *,
                         mailbox_size: int | None = None) -> list[ActorRef]:
        """Start every actor of ``actors`` under the name at the same position of ``names``
        (a list, or a :class:`NameRange` for generated names), all or none; return their
        refs, in that order.

        The transport hears of the whole batch at once (one message across processes,
        however many actors). Raises :class:`ActorExists` (nothing started) when a name is
        taken or repeated; an ``on_start`` that raises undoes the actors started so far.
        """
        if len(actors) != len(names):
            raise ValueError(f"{len(actors)} actors for {len(names)} names")
        if not self._started:
            await self.start()
        if self._closed:
            raise RuntimeError("this runtime has been shut down")
        cells = self._cells
        fresh = set(names) if not isinstance(names, NameRange) else None
        if fresh is not None and len(fresh) != len(names):
            raise ActorExists("a batch names one actor twice")
        clash = next((n for n in names if n in cells), None) if (
            fresh is None) else next((n for n in fresh if n in cells), None)
        if clash is not None:
            raise ActorExists(f"an actor named {clash!r} already runs", actor=clash)
        for actor in actors:
            if actor._cell is not None:
                raise RuntimeError(f"{actor!r} is already spawned as {actor._cell.name!r}")
        size = mailbox_size or self.mailbox_size
        started: list[ActorCell] = []
        pause = GCPause()  # a big batch makes only live objects (see ``_fanout``)
        if len(actors) >= PAUSE_GC_AT:
            pause.hold()
        try:
            for actor, name in zip(actors, names, strict=True):
                cell = ActorCell(self, actor, name, size)
                cells[name] = cell
                actor._cell = cell
                started.append(cell)
                if type(actor).on_start is not Actor.on_start:
                    pause.end()  # the actor's own code may wait on anything
                    await actor.on_start()
                elif len(started) % 8192 == 0:
                    await asyncio.sleep(0)  # a big batch lets other work through
        except BaseException:
            for cell in started:
                del cells[cell.name]
                cell.actor._cell = None
            raise
        finally:
            pause.end()
        if type(self.transport) is not InProcessTransport:
            try:
                await self.transport.registered_many(names)
            except BaseException:
                for cell in started:
                    del cells[cell.name]
                    cell.actor._cell = None
                raise
        return [cell.ref for cell in started]

    def ref(self, name: str) -> ActorRef:
        """A ref to the actor ``name``, local or hosted elsewhere (not checked here)."""
        cell = self._cells.get(name)
        return cell.ref if cell is not None else ActorRef(self, name)

    def _make_ref(self, name: str, cell: ActorCell) -> ActorRef:
        return ActorRef(self, name, cell)

    def __contains__(self, name: object) -> bool:
        return name in self._cells

    def __len__(self) -> int:
        return len(self._cells)

    def names(self) -> list[str]:
        """Names of the actors hosted by this runtime."""
        return list(self._cells)

    def backlog(self, name: str) -> int:
        """Messages waiting in the mailbox of the local actor ``name``."""
        cell = self._cells.get(name)
        if cell is None:
            raise ActorNotFound(f"no local actor named {name!r}", actor=name)
        return cell.backlog()

    async def stop(self, name: str, *, drain: bool = True, timeout: float | None = None) -> None:
        """Stop the local actor ``name``.

        From this moment its callers get :class:`ActorStopped` at once. With ``drain`` the
        messages already accepted are handled first (for at most ``timeout`` seconds);
        without, they fail with :class:`ActorStopped` and the running handler is cancelled.
        """
        cell = self._cells.get(name)
        if cell is None:
            raise ActorNotFound(f"no local actor named {name!r}", actor=name)
        cell.close()
        if drain:
            try:
                await asyncio.wait_for(cell.wait_idle(), self.default_timeout
                                       if timeout is None else timeout)
            except TimeoutError:
                log.warning("actor %r did not drain in time; stopping it", name)
        cell.fail_queued()
        cell.kill()
        await cell.wait_idle()
        await self._finish(cell)

    async def stop_many(self, names: Sequence[str], *, drain: bool = True,
                        timeout: float | None = None) -> None:
        """Stop the local actors of ``names`` (those still running) together, as
        :meth:`stop` each; the transport hears of them all at once."""
        cells = [c for c in (self._cells.get(n) for n in names) if c is not None]
        for cell in cells:
            cell.close()
        if drain:
            try:
                await asyncio.wait_for(asyncio.gather(*(c.wait_idle() for c in cells)),
                                       self.default_timeout if timeout is None else timeout)
            except TimeoutError:
                log.warning("%d actors did not drain in time; stopping them", len(cells))
        for cell in cells:
            cell.fail_queued()
            cell.kill()
        for cell in cells:
            await cell.wait_idle()
            await self._finish(cell, announce=False)
        if cells and type(self.transport) is not InProcessTransport and not self._closed:
            await self.transport.unregistered_many(
                names if len(cells) == len(names) else [c.name for c in cells])

    async def _finish(self, cell: ActorCell, *, announce: bool = True) -> None:
        if self._cells.get(cell.name) is cell:
            del self._cells[cell.name]
        for topic, names in list(self._topics.items()):
            if names.pop(cell.name, 0) is None and not names:
                del self._topics[topic]
        cell.mark_stopped()
        try:
            await cell.actor.on_stop()
        except Exception:
            log.exception("on_stop of actor %r raised", cell.name)
        if announce and type(self.transport) is not InProcessTransport and not self._closed:
            await self.transport.unregistered(cell.name)

    # -- delivery ----------------------------------------------------------------------

    def _route(self, env: Envelope, timeout: float) -> Awaitable[None]:
        """What delivers ``env`` (to a local mailbox or through the transport)."""
        cell = self._cells.get(env.target)
        if cell is not None:
            return cell.put(env, timeout)
        if self._closed:
            raise ActorStopped("the runtime has been shut down", actor=env.target)
        return self.transport.deliver(env, timeout)

    # -- for transports: the runtime's side of the seam (listed in _transport.py) ---------

    def accepts(self, name: str) -> bool:
        """Whether a local actor ``name`` exists and takes messages."""
        cell = self._cells.get(name)
        return cell is not None and cell.accepting

    def offer_local(self, env: Envelope) -> bool:
        """Put ``env`` in the mailbox of the local actor ``env.target`` if it has room, without
        waiting; ``False`` when the mailbox is full. An idle actor handles it in the
        runtime's feed (one task for all such envelopes), not in a task of its own.

        Raises :class:`ActorNotFound` when no local actor has that name and
        :class:`ActorStopped` when it no longer takes messages.
        """
        cell = self._cells.get(env.target)
        if cell is None:
            raise ActorNotFound(f"no local actor named {env.target!r}", actor=env.target)
        feed = self._feed
        if feed is None:
            feed = self._feed = Batch(feed=True)
        return cell.hold(env, feed) or cell.offer(env)

    async def deliver_local(self, env: Envelope, timeout: float) -> None:
        """Put ``env`` in the mailbox of the local actor ``env.target``, waiting up to
        ``timeout`` seconds for room (then :class:`MailboxFull`).

        Raises as :meth:`offer_local` does. The actor answers through ``env.waiter``.
        """
        cell = self._cells.get(env.target)
        if cell is None:
            raise ActorNotFound(f"no local actor named {env.target!r}", actor=env.target)
        await cell.put(env, timeout)

    def interrupt_local(self, env: Envelope) -> bool:
        """The caller of ``env`` gave up: skip ``env`` if still queued at the local actor
        ``env.target``, or cancel its handler if running. Returns whether a handler was
        interrupted."""
        cell = self._cells.get(env.target)
        return cell.interrupt(env) if cell is not None else False

    def topics(self) -> list[str]:
        """Topics at least one local actor subscribes to."""
        return list(self._topics)

    def deliver_local_many(self, envs: Sequence[Envelope], timeout: float, *,
                           copy_payloads: bool = False) -> None:
        """Deliver the calls of one fan-out to the local actors ``env.target``, without
        waiting, as :meth:`call_many` does: idle actors handle theirs in one batch (no task
        each), busy ones get it in their mailbox (a full one within ``timeout``).

        Nothing is raised: an envelope that cannot be delivered gets its error
        (:class:`ActorNotFound`, :class:`ActorStopped`, :class:`MailboxFull`) on its
        ``waiter``. With ``copy_payloads`` each actor gets its own deep copy of the payload.
        """
        cells = self._cells
        local: list[tuple[ActorCell, Envelope]] = []
        for env in envs:
            cell = cells.get(env.target)
            if cell is None:
                env.waiter.set_exception(
                    ActorNotFound(f"no local actor named {env.target!r}", actor=env.target))
            else:
                local.append((cell, env))
        for task in self._hand_over(local, timeout, copy_payloads):
            self._putting.add(task)
            task.add_done_callback(self._putting.discard)

    async def call_many(
        self,
        actors: Iterable[str | ActorRef],
        message: Any,
        *,
        timeout: float | None = None,
        return_exceptions: bool = False,
        copy_message: bool = False,
    ) -> list[Any]:
        """Call every actor in ``actors`` with ``message``; return the replies in that order.

        ``message`` is one message for all, or a :class:`PerActor` giving each actor its
        own (``PerActor(messages)``: ``messages[i]`` for ``actors[i]``; a plain list is
        one message, as an agent takes a list of ``Msg``).

        Like one :meth:`ActorRef.call` per actor, all at once, with the same guarantees:
        each actor handles one message at a time, in arrival order (a busy actor gets the
        message in its mailbox), and a handler's error goes back as that actor's error.
        Cheaper: an idle local actor's handler runs without a task of its own (see
        ``docs/runtime.md``), and actors hosted elsewhere are handed to the transport as
        one batch (:meth:`Transport.call_many`: one frame per node on the bus, with one
        message per actor as well).

        ``timeout`` (default: ``default_timeout``) bounds the whole call: an actor that has
        not answered by then gets :class:`CallTimeout` and its handler is interrupted, as
        is every pending handler when the caller is cancelled. The call returns once every
        actor has answered, failed or timed out. With ``return_exceptions`` an actor's
        error takes the place of its reply; otherwise the first error in ``actors`` order
        is raised (after all have finished). With ``copy_message`` every local actor gets
        its own deep copy of its message (remote ones always decode their own).
        """
        return await self._call_many(Kind.CALL, actors, message, timeout, return_exceptions,
                                     copy_message)

    async def _call_many(self, kind: str, actors: Iterable[str | ActorRef], payload: Any,
                         timeout: float | None, return_exceptions: bool,
                         copy_each: bool) -> list[Any]:
        timeout = self.default_timeout if timeout is None else timeout
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        sender = current_cell.get()
        sender_name = sender.name if sender is not None else None
        itself = sender_name if sender is not None and sender.runtime is self else None
        trace = current_context() if is_enabled() else None
        cells = self._cells
        if not isinstance(actors, Sized):
            actors = list(actors)
        each = isinstance(payload, PerActor)
        if each:
            payloads = payload.messages
            if len(payloads) != len(actors):
                raise ValueError(f"{len(payloads)} messages for {len(actors)} actors")
        remote_payloads: list[Any] = []  # with ``each``: those of ``remote``, in order
        pause = GCPause()  # a large fan-out: from its first envelope (see ``_fanout``)
        if len(actors) >= PAUSE_GC_AT:
            pause.hold()
        envs: list[Envelope | None] = []  # None: an actor elsewhere (in ``remote``)
        futs: list[asyncio.Future[Any] | None] = []
        remote: list[str] = []
        local: list[tuple[ActorCell, Envelope]] = []
        closed = self._closed
        for i, actor in enumerate(actors):
            if each:
                payload = payloads[i]
            stale = False
            if type(actor) is str:
                name = actor
            elif isinstance(actor, ActorRef):
                name = actor.name
                stale = actor._cell is not None and actor._cell._state != _RUNNING
            else:
                name = actor
            cell = cells.get(name)
            if cell is None and not stale and not closed:
                remote.append(name)
                if each:
                    remote_payloads.append(payload)
                envs.append(None)
                futs.append(None)
                continue
            fut: asyncio.Future[Any] = loop.create_future()
            env = Envelope(kind, name, payload, waiter=fut, sender=sender_name, trace=trace)
            envs.append(env)
            futs.append(fut)
            if cell is None:
                fut.set_exception(ActorStopped(f"actor {name!r} is stopped", actor=name))
            elif name == itself:
                fut.set_exception(RuntimeError(
                    f"actor {name!r} called itself and would wait for itself forever"))
            else:
                local.append((cell, env))
        try:
            if len(local) < PAUSE_GC_AT:
                pause.end()
            waiting = self._hand_over(local, timeout, copy_each, pause)
            del local
            replies: list[Any] = []
            errors: dict[int, BaseException] = {}
            if remote:
                try:
                    replies, errors = await self.transport.call_many(
                        kind, remote, remote_payloads if each else payload,
                        max(0.0, deadline - loop.time()), sender=sender_name, trace=trace,
                        each=each)
                except asyncio.CancelledError:
                    abandon(envs, self._cancel)
                    raise
                except Exception as exc:  # becomes each remote call's error
                    errors = dict.fromkeys(range(len(remote)), exc)
                    replies = [None] * len(remote)
            await settle(envs, deadline, timeout, self._cancel)
            del waiting
        finally:
            pause.end()
        return _results(futs, replies, errors, return_exceptions)

    def _hand_over(self, local: list[tuple[ActorCell, Envelope]], timeout: float,
                   copy_each: bool, pause: GCPause | None = None) -> list[asyncio.Task[None]]:
        """Deliver the envelopes of one fan-out to their local actors: idle ones hold theirs
        in one batch, the others get it in their mailbox; a full mailbox within ``timeout``
        (the tasks that wait for room are returned). Errors go to each envelope's waiter.
        ``pause``: a garbage collector pause, ended by the batch (see ``_fanout``)."""
        batch = Batch(copy_payloads=copy_each, pause=pause)
        full: list[tuple[ActorCell, Envelope]] = []
        for cell, env in local:
            try:
                if cell.hold(env, batch):
                    continue  # the batch copies the payload when the handler starts
                if copy_each:
                    env.payload = deep_copy(env.payload)
                if not cell.offer(env):
                    full.append((cell, env))
            except ActorStopped as exc:
                env.waiter.set_exception(exc)
        batch.start()
        loop = asyncio.get_running_loop()
        return [loop.create_task(self._put_or_fail(cell, env, timeout)) for cell, env in full]

    async def _put_or_fail(self, cell: ActorCell, env: Envelope, timeout: float) -> None:
        try:
            await cell.put(env, timeout)
        except ActorError as exc:
            if not env.waiter.done():
                env.waiter.set_exception(exc)

    def _cancel(self, env: Envelope) -> None:
        cell = self._cells.get(env.target)
        if cell is not None:
            cell.interrupt(env)
        else:
            self.transport.cancel(env)

    def _record_unhandled(self, name: str, env: Envelope, err: ActorError) -> None:
        self.unhandled_errors += 1
        log.error("actor %r failed on a %s message: %s", name, env.kind, err)

    def _trace_context(self, trace: Any) -> otel_context.Context | None:
        if isinstance(trace, otel_context.Context):  # in-process: the caller's own context
            return trace
        if isinstance(trace, Mapping):  # from the wire: propagation headers
            return extract_context(trace)
        return None

    # -- topics --------------------------------------------------------------------------

    async def subscribe(self, topic: str, actor: str | ActorRef, *, timeout: float | None = None
                        ) -> None:
        """Subscribe ``actor`` (local or remote) to ``topic``, in its mailbox order."""
        await self._topic_many(topic, (actor,), True, timeout)

    async def unsubscribe(self, topic: str, actor: str | ActorRef, *, timeout: float | None = None
                          ) -> None:
        """Undo :meth:`subscribe`."""
        await self._topic_many(topic, (actor,), False, timeout)

    async def subscribe_many(self, topic: str, actors: Iterable[str | ActorRef], *,
                             timeout: float | None = None) -> None:
        """:meth:`subscribe` every actor in ``actors`` at once (the first error is raised
        after all have been tried)."""
        await self._topic_many(topic, actors, True, timeout)

    async def unsubscribe_many(self, topic: str, actors: Iterable[str | ActorRef], *,
                               timeout: float | None = None) -> None:
        """:meth:`unsubscribe` every actor in ``actors`` at once."""
        await self._topic_many(topic, actors, False, timeout)

    async def _control_call(self, actor: str | ActorRef, op: tuple[str, Any],
                            timeout: float | None) -> Any:
        ref = actor if isinstance(actor, ActorRef) else self.ref(actor)
        timeout = self.default_timeout if timeout is None else timeout
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        env = Envelope(Kind.CONTROL, ref.name, op, waiter=fut)
        await self._route(env, timeout)
        return await asyncio.wait_for(fut, timeout)

    async def _control(self, cell: ActorCell, env: Envelope) -> None:
        action, arg = env.payload
        result: Any = None
        if action in ("subscribe", "unsubscribe"):
            await self._topic_change(cell, action == "subscribe", arg)
        elif action == "state":
            state_dict = getattr(cell.actor, "state_dict", None)
            result = state_dict() if callable(state_dict) else None
        elif action == "load_state":
            load = getattr(cell.actor, "load_state_dict", None)
            if not callable(load):
                raise TypeError(f"actor {cell.name!r} has no load_state_dict()")
            load(arg)
        else:
            raise ValueError(f"unknown control operation {action!r}")
        if env.waiter is not None and not env.waiter.done():
            env.waiter.set_result(result)

    async def _topic_change(self, cell: ActorCell, subscribe: bool, topic: str) -> None:
        if self._apply_topic(cell, subscribe, topic):
            await self._notify_topic(subscribe, topic)
        cell.actor.on_topic(topic, subscribe)

    def _apply_topic(self, cell: ActorCell, subscribe: bool, topic: str) -> bool:
        """Record ``cell``'s (un)subscription; whether the transport must hear of it (the
        topic's first local subscriber came, or its last one left)."""
        if subscribe:
            names = self._topics.setdefault(topic, {})
            changed = not names
            names[cell.name] = None
        else:
            left = self._topics.get(topic)
            if left is None or left.pop(cell.name, 0) is not None:
                return False
            changed = not left
            if changed:
                del self._topics[topic]
        return changed and type(self.transport) is not InProcessTransport

    async def _notify_topic(self, subscribe: bool, topic: str) -> None:
        if subscribe:
            await self.transport.subscribed(topic)
        else:
            await self.transport.unsubscribed(topic)

    async def _topic_many(self, topic: str, actors: Iterable[str | ActorRef], subscribe: bool,
                          timeout: float | None) -> None:
        """(Un)subscribe ``actors``. An idle local actor has nothing ahead of this in its
        mailbox, so its change is made at once; the others get it in mailbox order."""
        rest: list[str | ActorRef] = []
        errors: list[Exception] = []
        notify = False
        cells = self._cells
        for actor in actors:
            name = actor.name if isinstance(actor, ActorRef) else actor
            cell = cells.get(name)
            if cell is None or not cell.idle or not cell.accepting:
                rest.append(actor)
                continue
            notify = self._apply_topic(cell, subscribe, topic) or notify
            try:
                cell.actor.on_topic(topic, subscribe)
            except Exception as exc:
                errors.append(handler_error(exc, name))
        if notify:
            await self._notify_topic(subscribe, topic)
        if rest:
            try:
                await self._call_many(Kind.CONTROL, rest,
                                      ("subscribe" if subscribe else "unsubscribe", topic),
                                      timeout, False, False)
            except Exception as exc:
                errors.append(exc)
        if errors:
            raise errors[0]

    async def state_of(self, actor: str | ActorRef, *, timeout: float | None = None) -> Any:
        """The actor's ``state_dict()`` (``None`` if it has none), taken in mailbox order,
        wherever the actor runs."""
        return await self._control_call(actor, ("state", None), timeout)

    async def load_state(self, actor: str | ActorRef, state: Any, *,
                         timeout: float | None = None) -> None:
        """Call the actor's ``load_state_dict(state)`` in mailbox order, wherever it runs."""
        await self._control_call(actor, ("load_state", state), timeout)

    def subscribers(self, topic: str) -> list[str]:
        """Names of the local actors subscribed to ``topic``."""
        return list(self._topics.get(topic, ()))

    async def publish(
        self,
        topic: str,
        message: Any,
        *,
        exclude: Iterable[str] = (),
        timeout: float | None = None,
    ) -> None:
        """Deliver ``message`` to every subscriber of ``topic``, here and elsewhere.

        Subscribers named in ``exclude`` are skipped. Waits only while a subscriber's
        mailbox is full (at most ``timeout`` seconds each).
        """
        sender = current_cell.get()
        env = Envelope(
            Kind.PUBLISH,
            "",
            message,
            sender=sender.name if sender is not None else None,
            topic=topic,
            trace=current_context() if is_enabled() else None,
            exclude=tuple(exclude),
        )
        timeout = self.default_timeout if timeout is None else timeout
        await self.publish_local(env, timeout)
        if not self._closed:
            await self.transport.publish(env, timeout)

    async def publish_local(self, env: Envelope, timeout: float) -> None:
        """Deliver the topic message ``env`` to the local subscribers of ``env.topic``
        (skipping those in ``env.exclude``), waiting up to ``timeout`` seconds at each full
        mailbox; a subscriber that stopped meanwhile is skipped. Never uses the transport."""
        names = self._topics.get(env.topic or "")
        if not names:
            return
        skip = env.exclude
        cells = self._cells
        batch = Batch()  # idle subscribers observe without a task each
        try:
            for name in list(names):
                if name in skip:
                    continue
                cell = cells.get(name)
                if cell is None:
                    continue
                try:
                    if cell.hold(env, batch) or cell.offer(env):
                        continue
                    batch.start()  # a full mailbox: let the held ones go on meanwhile
                    batch = Batch()
                    await cell.put(env, timeout)
                except ActorStopped:
                    continue
        finally:
            batch.start()


def _results(futs: Sequence[asyncio.Future[Any] | None], replies: Sequence[Any],
             errors: Mapping[int, BaseException], return_exceptions: bool) -> list[Any]:
    """The outcomes of settled calls, in order; errors in place or the first one raised.
    A ``None`` future stands for the next call made elsewhere: its reply is the next of
    ``replies``, unless ``errors`` has that position's error."""
    results: list[Any] = []
    first: BaseException | None = None
    at = 0
    for fut in futs:
        exc: BaseException | None
        if fut is None:
            exc = errors.get(at)
            value = replies[at] if exc is None else None
            at += 1
        elif fut.cancelled():
            exc = ActorStopped("the handler was interrupted")
        else:
            exc = fut.exception()
            value = fut.result() if exc is None else None
        if exc is None:
            results.append(value)
        elif return_exceptions:
            results.append(exc)
        else:
            results.append(None)
            if first is None:
                first = exc
    if first is not None:
        raise first
    return results
