"""The actor cell: one actor's mailbox and the loop that drains it.

An idle actor costs no task and no queue: the mailbox deque exists only while messages
wait, and the drain task exists only while the mailbox has work. The task handles
messages one at a time, in arrival order, inline (no task per message). A fan-out or a
broadcast may instead hold an idle actor's mailbox in a :class:`~._fanout.Batch`, which
handles it without a task of its own.

An actor with ``max_concurrency = N > 1`` has up to N worker tasks instead of one drain
task: a message starts as soon as fewer than N handlers run, and a worker that finishes
takes the next waiting message.
"""

from __future__ import annotations

import asyncio
import logging
import traceback
from collections import deque
from collections.abc import Coroutine
from contextvars import Context, ContextVar
from types import CoroutineType
from typing import TYPE_CHECKING, Any

from ..tracing.lowlevel import current_context, set_current_actor, use_context
from ._channel import StreamChannel
from ._envelope import Envelope, Kind
from ._errors import ActorStopped, HandlerError, MailboxFull
from ._fanout import Batch, Suspended, deep_copy, drive

if TYPE_CHECKING:
    from ._actor import Actor
    from ._ref import ActorRef
    from ._runtime import Runtime

__all__ = ["ActorCell", "current_cell"]

log = logging.getLogger("agentplex.runtime")

current_cell: ContextVar[ActorCell | None] = ContextVar("agentplex_current_cell", default=None)
"""The cell whose handler is running in this task, if any."""

_RUNNING, _STOPPING, _STOPPED = 0, 1, 2
_DIRECT = frozenset({Kind.CALL, Kind.TELL, Kind.PUBLISH})
"""Kinds :meth:`ActorCell._begin` hands straight to the actor's handler."""


def handler_error(exc: BaseException, actor: str) -> HandlerError:
    """Wrap an exception raised by ``actor``'s handler for its caller."""
    err = HandlerError(
        str(exc),
        actor=actor,
        exc_type=type(exc).__qualname__,
        remote_traceback="".join(traceback.format_exception(exc)),
    )
    err.__cause__ = exc
    return err


def _enter(cell: ActorCell) -> None:
    current_cell.set(cell)
    set_current_actor(cell.name, type(cell.actor))


class ActorCell:
    """Runtime-side state of one spawned actor. Internal to the runtime."""

    __slots__ = (
        "_batch",
        "_held",
        "_inflight",
        "_interrupting",
        "_queue",
        "_space",
        "_state",
        "_task",
        "actor",
        "capacity",
        "current",
        "name",
        "ref",
        "runtime",
    )

    def __init__(self, runtime: Runtime, actor: Actor, name: str, capacity: int) -> None:
        self.runtime = runtime
        self.actor = actor
        self.name = name
        self.capacity = capacity
        self.ref: ActorRef = runtime._make_ref(name, self)
        self.current: Envelope | None = None
        self._queue: deque[Envelope] | None = None
        self._task: asyncio.Task[None] | None = None
        self._space: deque[asyncio.Future[None]] | None = None
        self._interrupting: Envelope | None = None
        self._inflight: dict[Envelope, asyncio.Task[None]] | None = None
        self._batch: Batch | None = None
        self._held: Envelope | None = None
        self._state = _RUNNING

    # -- state ---------------------------------------------------------------------

    @property
    def accepting(self) -> bool:
        return self._state == _RUNNING

    @property
    def idle(self) -> bool:
        return self._task is None and self._batch is None and not self._inflight

    @property
    def interrupting(self) -> bool:
        """Whether the running handler is being interrupted."""
        return self._interrupting is not None

    def backlog(self) -> int:
        """Messages waiting in the mailbox (not counting the one being handled)."""
        return (len(self._queue) if self._queue else 0) + (self._held is not None)

    # -- enqueue -------------------------------------------------------------------

    def offer(self, env: Envelope) -> bool:
        """Put ``env`` in the mailbox if there is room; ``False`` when full.

        Raises :class:`ActorStopped` when the actor no longer accepts messages.
        """
        if self._state != _RUNNING:
            raise ActorStopped(f"actor {self.name!r} is stopped", actor=self.name)
        queue = self._queue
        if queue is None:
            queue = self._queue = deque()
        elif len(queue) >= self.capacity:
            return False
        queue.append(env)
        if self.actor.max_concurrency > 1:
            inflight = self._inflight
            if inflight is None or len(inflight) < self.actor.max_concurrency:
                self._start_worker()
        elif self._task is None and self._batch is None:
            self._activate()
        return True

    def hold(self, env: Envelope, batch: Batch) -> bool:
        """Deliver ``env`` into ``batch`` if the actor is idle (``False`` otherwise: then
        :meth:`offer` it). Raises :class:`ActorStopped` like :meth:`offer`."""
        if self._state != _RUNNING:
            raise ActorStopped(f"actor {self.name!r} is stopped", actor=self.name)
        if self._task is not None or self._batch is not None or self.actor.max_concurrency > 1:
            return False
        self._held = env
        self._batch = batch
        batch.add(self)
        self.runtime.mark_busy()
        return True

    async def put(self, env: Envelope, timeout: float) -> None:
        """Put ``env`` in the mailbox, waiting up to ``timeout`` seconds for room."""
        if self.offer(env):
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            waiter = loop.create_future()
            if self._space is None:
                self._space = deque()
            self._space.append(waiter)
            remaining = deadline - loop.time()
            try:
                if remaining <= 0:
                    raise TimeoutError
                async with asyncio.timeout(remaining):
                    await waiter
            except TimeoutError:
                raise MailboxFull(
                    f"mailbox of actor {self.name!r} stayed full ({self.capacity} messages) "
                    f"for {timeout:g}s",
                    actor=self.name,
                ) from None
            finally:
                if not waiter.done():
                    waiter.cancel()
                    if self._space is not None and waiter in self._space:
                        self._space.remove(waiter)
            if self.offer(env):
                return

    def _wake_sender(self) -> None:
        space = self._space
        while space:
            waiter = space.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    # -- the drain loop ------------------------------------------------------------

    def _activate(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name=f"actor:{self.name}")
        self.runtime.mark_busy()

    async def _run(self) -> None:
        current_cell.set(self)
        set_current_actor(self.name, type(self.actor))
        replied = False
        try:
            while True:
                queue = self._queue
                while queue:
                    env = queue.popleft()
                    if self._space:
                        self._wake_sender()
                    await self._process(env)
                    replied = env.waiter is not None
                # After a reply, linger one loop tick: the caller it woke often sends again
                # right away, and catching that here saves starting a new task. Tells and
                # publishes wake nobody, so lingering after them only costs a loop step.
                if not replied:
                    break
                replied = False
                await asyncio.sleep(0)
                if not self._queue:
                    break
        finally:
            if self._queue:  # leaving abnormally (killed): nothing queued may be lost silently
                self.fail_queued()
            self._task = None
            self._queue = None
            self.runtime.mark_settled()

    # -- held by a batch (see ``_fanout``) ------------------------------------------------

    def run_held(self, base: Context, runner: asyncio.Task[Any] | None) -> Suspended | None:
        """Handle the held envelope, then whatever queued behind it, in the batch runner.

        Returns ``None`` when every handler finished without waiting (the batch has let go
        of the actor), or the handler that waited, for :meth:`finish_held`.
        """
        env = self._held
        self._held = None
        if env is None:  # failed while held (the actor was stopped)
            self._let_go()
            return None
        if self._batch is not None and self._batch.copy_payloads:
            env.payload = deep_copy(env.payload)
        self._task = runner
        ctx = base.copy()
        ctx.run(_enter, self)
        try:
            while True:
                try:
                    started = ctx.run(self._begin, env)
                except asyncio.CancelledError:
                    started = None  # raised by the handler itself; its caller was failed
                if started is not None:
                    return ctx, started[0], started[1]
                queue = self._queue
                if not queue:
                    break
                env = queue.popleft()
                if self._space:
                    self._wake_sender()
        except BaseException:
            self._let_go()
            raise
        self._let_go()
        return None

    def drop_held(self) -> None:
        """The batch will not run: fail the held envelope and let go of the actor."""
        env = self._held
        self._held = None
        if env is not None:
            self._fail(env, ActorStopped(f"actor {self.name!r} was stopped", actor=self.name))
        self._let_go()

    async def finish_held(self, suspended: Suspended) -> None:
        """Finish a handler :meth:`run_held` left waiting, in the runner that started it."""
        try:
            await drive(*suspended)
        finally:
            self._let_go()

    def _let_go(self) -> None:
        batch = self._batch
        self._batch = None
        self._task = None
        if self._queue:  # messages came while the batch held the actor: drain them
            self._task = asyncio.get_running_loop().create_task(self._run(),
                                                                name=f"actor:{self.name}")
        else:
            self._queue = None
            self.runtime.mark_settled()
        if batch is not None:
            batch.released()

    # -- concurrent actors (max_concurrency > 1) ---------------------------------------

    def _start_worker(self) -> None:
        """Start the oldest waiting message in a worker task of its own."""
        queue = self._queue
        assert queue
        env = queue.popleft()
        if self._space:
            self._wake_sender()
        inflight = self._inflight
        if inflight is None:
            inflight = self._inflight = {}
        if not inflight:
            self.runtime.mark_busy()
        inflight[env] = asyncio.get_running_loop().create_task(self._work(env),
                                                               name=f"actor:{self.name}")

    async def _work(self, env: Envelope) -> None:
        """A worker: handle ``env``, then the oldest waiting message, until none waits."""
        current_cell.set(self)
        set_current_actor(self.name, type(self.actor))
        task = asyncio.current_task()
        inflight = self._inflight
        assert inflight is not None and task is not None
        try:
            while True:
                await self._serve(env, task)
                del inflight[env]
                queue = self._queue
                if not queue:
                    break
                env = queue.popleft()
                if self._space:
                    self._wake_sender()
                inflight[env] = task
        finally:
            if inflight.get(env) is task:
                del inflight[env]
            if not inflight:
                if self._queue:  # the last worker left abnormally (killed)
                    self.fail_queued()
                self._queue = None
                self.runtime.mark_settled()

    async def _serve(self, env: Envelope, task: asyncio.Task[Any]) -> None:
        if env.waiter is not None and env.waiter.done():
            return  # the caller gave up before we began
        try:
            trace = env.trace
            if trace is None or trace is current_context():  # nothing to switch to
                await self._dispatch(env.kind, env)
            else:
                with use_context(self.runtime._trace_context(trace)):
                    await self._dispatch(env.kind, env)
        except asyncio.CancelledError as exc:  # interrupted, or stopped
            stopped = self._state != _RUNNING
            self._fail(env, ActorStopped(f"actor {self.name!r} was stopped", actor=self.name)
                       if stopped else exc)
            if stopped:
                raise
            task.uncancel()
        except BaseException as exc:
            self._fail(env, exc)
            if not isinstance(exc, Exception):
                raise

    async def _process(self, env: Envelope) -> None:
        kind = env.kind
        waiter = env.waiter
        if waiter is not None and waiter.done():
            return  # the caller gave up (cancelled or timed out) before we began
        self.current = env
        try:
            trace = env.trace
            if trace is None or trace is current_context():  # nothing to switch to
                await self._dispatch(kind, env)
            else:
                with use_context(self.runtime._trace_context(trace)):
                    await self._dispatch(kind, env)
        except BaseException as exc:
            self._ended(env, exc)
        else:
            self._ended(env, None)

    def _ended(self, env: Envelope, exc: BaseException | None) -> None:
        """The handler of ``env`` ended (raising ``exc``): fail its caller if it raised,
        and raise again what must stop the task (a cancellation that was not an
        interruption, ``KeyboardInterrupt`` and the like)."""
        self.current = None
        interrupted = self._interrupting is env
        if interrupted:
            self._interrupting = None
            task = asyncio.current_task()
            if task is not None:
                task.uncancel()
        if exc is None:
            return
        if isinstance(exc, asyncio.CancelledError):
            if interrupted:
                self._fail(env, exc)
                return
            self._fail(env, ActorStopped(f"actor {self.name!r} was stopped", actor=self.name))
            raise exc
        self._fail(env, exc)
        if not isinstance(exc, Exception):
            raise exc

    def _begin(self, env: Envelope) -> tuple[Coroutine[Any, Any, None], Any] | None:
        """Handle ``env`` up to its first wait, without a coroutine of the runtime's own
        around the handler when it needs none (a call, tell or publish, not traced).

        Returns ``None`` when it finished without waiting, else the rest of it and what it
        yielded (to go on with :func:`~._fanout.drive`). Raises as :meth:`_process` does.
        """
        kind = env.kind
        waiter = env.waiter
        if waiter is not None and waiter.done():
            return None
        trace = env.trace
        if (trace is not None and trace is not current_context()) or kind not in _DIRECT:
            coro = self._process(env)
            try:
                return coro, coro.send(None)
            except StopIteration:
                return None
        self.current = env
        try:
            actor = self.actor
            if kind == Kind.CALL:
                handler = actor.handle_call(env.payload)
            elif kind == Kind.PUBLISH:
                handler = actor.handle_publish(env.topic or "", env.payload)
            else:
                handler = actor.handle_tell(env.payload)
            steps = handler if type(handler) is CoroutineType else handler.__await__()
            yielded = steps.send(None)
        except StopIteration as stop:
            try:
                if kind == Kind.CALL and not waiter.done():
                    waiter.set_result(stop.value)
            except BaseException as exc:  # as when ``_dispatch`` answers
                self._ended(env, exc)
                return None
            self._ended(env, None)
            return None
        except BaseException as exc:
            self._ended(env, exc)
            return None
        rest = self._resume(env, steps, yielded)
        return rest, rest.send(None)  # its first step yields ``yielded`` again

    async def _resume(self, env: Envelope, steps: Any, yielded: Any) -> None:
        """The rest of a handler :meth:`_begin` started, which yielded ``yielded``."""
        try:
            result = await drive(None, steps, yielded)
            if env.kind == Kind.CALL and not env.waiter.done():
                env.waiter.set_result(result)
        except BaseException as exc:
            self._ended(env, exc)
        else:
            self._ended(env, None)

    async def _dispatch(self, kind: str, env: Envelope) -> None:
        actor = self.actor
        if kind == Kind.CALL:
            result = await actor.handle_call(env.payload)
            if not env.waiter.done():
                env.waiter.set_result(result)
        elif kind == Kind.TELL:
            await actor.handle_tell(env.payload)
        elif kind == Kind.PUBLISH:
            await actor.handle_publish(env.topic or "", env.payload)
        elif kind == Kind.STREAM:
            await self._stream(env)
        elif kind == Kind.CONTROL:
            await self.runtime._control(self, env)
        else:
            raise ValueError(f"actor {self.name!r} cannot handle a {kind!r} envelope")

    async def _stream(self, env: Envelope) -> None:
        channel: StreamChannel[Any] = env.waiter
        await self.actor.serve_stream(env.payload, channel.send)
        channel.end()

    def _fail(self, env: Envelope, exc: BaseException) -> None:
        waiter = env.waiter
        if isinstance(exc, asyncio.CancelledError):
            if waiter is not None and not waiter.done():
                if isinstance(waiter, StreamChannel):
                    waiter.fail(ActorStopped(f"stream from {self.name!r} was interrupted",
                                            actor=self.name))
                else:
                    waiter.cancel()
            return
        err = exc if isinstance(exc, ActorStopped) else handler_error(exc, self.name)
        if waiter is None:
            self.runtime._record_unhandled(self.name, env, err)
        elif isinstance(waiter, StreamChannel):
            waiter.fail(err)
        elif not waiter.done():
            waiter.set_exception(err)

    # -- interruption and stopping ---------------------------------------------------

    def interrupt(self, env: Envelope | None = None) -> bool:
        """Cancel the running handler (only if it serves ``env``, when given).

        A queued ``env`` is simply skipped when its caller has gone. Returns whether a
        handler was interrupted.
        """
        if self._inflight:
            targets = [t for e, t in self._inflight.items() if env is None or e is env]
            for t in targets:
                t.cancel()
            return bool(targets)
        current = self.current
        task = self._task
        if current is None or task is None or (env is not None and current is not env):
            return False
        if self._interrupting is current:
            return True
        self._interrupting = current
        task.cancel()
        return True

    def close(self) -> None:
        """Accept no more messages; queued ones are still handled."""
        if self._state == _RUNNING:
            self._state = _STOPPING

    def fail_queued(self) -> None:
        """Fail every queued message with :class:`ActorStopped`."""
        held = self._held
        if held is not None:
            self._held = None
            self._fail(held, ActorStopped(f"actor {self.name!r} stopped", actor=self.name))
        queue = self._queue
        while queue:
            env = queue.popleft()
            self._fail(env, ActorStopped(f"actor {self.name!r} stopped", actor=self.name))
        space = self._space
        while space:
            waiter = space.popleft()
            if not waiter.done():
                waiter.set_result(None)

    async def wait_idle(self) -> None:
        """Wait until the mailbox is empty and no handler runs."""
        while True:
            busy: asyncio.Future[Any]
            if self._task is not None:
                busy = self._task
            elif self._inflight:
                busy = next(iter(self._inflight.values()))
            elif self._batch is not None:
                busy = self._batch.next_release()
            else:
                return
            try:
                await asyncio.shield(busy)
            except asyncio.CancelledError:
                if not busy.done():
                    raise  # we ourselves were cancelled
            except Exception:  # the handler's own failure was reported already
                continue

    def kill(self) -> None:
        """Cancel the running handlers outright (their callers get :class:`ActorStopped`)."""
        if self._inflight:
            for task in self._inflight.values():
                task.cancel()
        if self._task is not None:
            self._task.cancel()

    def mark_stopped(self) -> None:
        self._state = _STOPPED
        if self.actor._cell is self:
            self.actor._cell = None
