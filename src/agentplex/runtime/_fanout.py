"""The fan-out runner: handling one message at many idle actors without a task each
(fan-outs, broadcasts, and what a transport receives for idle actors).

A :class:`Batch` holds the mailboxes of idle local actors, one envelope each, and a single
runner task handles them one after another. Holding is delivery: a message sent to a held
actor afterwards queues behind the held one, so arrival order and one message at a time
per actor are kept exactly as with the actor's own drain task.

A handler that finishes without waiting (a scripted reply, an ``observe`` that appends to a
list) costs no task at all. A handler that does wait stays in the runner that started it
until it ends, so it sees one current task from start to end (``asyncio.timeout`` and anyio
cancel scopes depend on that); the rest of the batch moves on in a fresh runner at once.
So a batch starts at most one task per handler that waits, never one per actor.

The same runner serves two policies: a fan-out's batch, filled and then started, that ends
once it has handled what it holds; and the runtime's feed, open for as long as the runtime
runs, into which a transport hands what arrives for idle actors one envelope at a time.

A large fan-out pauses Python's cyclic garbage collector (:class:`GCPause`) while its
handlers run without waiting, until the last is done or one waits: what they allocate
(envelopes, futures, replies) stays alive until the fan-out returns, so the collector would
only scan it again and again — at 100,000 actors, full collections took a quarter of a
round. Objects that die meanwhile are freed by reference counting as usual; cycles are
found by the first collection after the pause, which ends early if the handlers make more
than :data:`PAUSE_GC_BUDGET` objects.
"""

from __future__ import annotations

import asyncio
import contextvars
import gc
import types
from collections import deque
from collections.abc import Coroutine, Generator
from typing import TYPE_CHECKING, Any

from ..message.lowlevel import deep_copy

if TYPE_CHECKING:
    from ._cell import ActorCell

__all__ = ["PAUSE_GC_AT", "Batch", "GCPause", "Suspended", "deep_copy", "drive"]

_YIELD_EVERY = 256
"""A runner lets other tasks run after this many handlers that did not wait."""

PAUSE_GC_AT = 4096
"""A fan-out to at least this many local actors pauses the cyclic garbage collector."""

PAUSE_GC_BUDGET = 10_000_000
"""A batch's pause ends early once this many more tracked objects exist than when the
collector last ran (``gc.get_count()[0]``): handlers that make cyclic garbage while they
run inline cannot grow memory without bound."""


class GCPause:
    """Holds automatic garbage collection off from :meth:`hold` until :meth:`end` (both
    idempotent); collection resumes when the last pause held ends, if it was on before."""

    __slots__ = ("_held",)
    _count = 0
    _resume = False

    def __init__(self) -> None:
        self._held = False

    def hold(self) -> None:
        if not self._held:
            self._held = True
            if GCPause._count == 0:
                GCPause._resume = gc.isenabled()
                gc.disable()
            GCPause._count += 1

    def end(self) -> None:
        if self._held:
            self._held = False
            GCPause._count -= 1
            if GCPause._count == 0 and GCPause._resume:
                gc.enable()

Suspended = tuple[contextvars.Context, Coroutine[Any, Any, None], Any]
"""A handler that waited on its first step: its context, its coroutine, what it yielded."""


@types.coroutine
def drive(ctx: contextvars.Context | None, coro: Any, yielded: Any) -> Generator[Any, Any, Any]:
    """Finish ``coro`` (already stepped once, which yielded ``yielded``) in the current task,
    each step in ``ctx`` (or the current context): what the task sends or throws (results,
    cancellation) goes on to ``coro``, what ``coro`` yields (the futures it waits on) goes
    to the task. Returns what ``coro`` returns."""
    while True:
        try:
            sent = yield yielded
        except BaseException as exc:  # forwarded as it came (cancellation too)
            try:
                yielded = coro.throw(exc) if ctx is None else ctx.run(coro.throw, exc)
            except StopIteration as stop:
                return stop.value
        else:
            try:
                yielded = coro.send(sent) if ctx is None else ctx.run(coro.send, sent)
            except StopIteration as stop:
                return stop.value


class Batch:
    """Idle actors holding one envelope each, handled in turn by one runner task (see the
    module doc). One runner, two policies:

    - a **fan-out's batch** (``Batch()``): fill it with :meth:`ActorCell.hold`, then
      :meth:`start` it; the runner ends once it has handled everything held. ``pause``: a
      garbage collector pause the batch ends once its handlers are done or one waits;
      without one, a batch of :data:`PAUSE_GC_AT` actors or more holds its own.
    - a **feed** (``Batch(feed=True)``): envelopes come one at a time (what a transport
      receives for idle actors), the runner starts with the first, handles them as they
      come and waits for more when none is left, so a request from another process costs
      no task of its own; :meth:`close` ends it.

    Either way a handler that waits keeps the runner that started it and a fresh runner
    takes over the rest, and :meth:`next_release` is how a held actor's cell waits for the
    batch to let go of something.
    """

    __slots__ = ("_base", "_feed", "_pause", "_queue", "_released", "_runner", "_sleeping",
                 "copy_payloads")

    def __init__(self, *, feed: bool = False, copy_payloads: bool = False,
                 pause: GCPause | None = None) -> None:
        self.copy_payloads = copy_payloads
        """Give each held envelope a deep copy of its payload when its handler starts (a
        copy made then lives only as long as the handler keeps it)."""
        self._feed = feed
        self._pause = pause
        self._queue: deque[ActorCell] = deque()
        self._released: asyncio.Future[None] | None = None
        self._base: contextvars.Context | None = None
        self._runner: asyncio.Task[None] | None = None
        self._sleeping: asyncio.Future[None] | None = None

    def __len__(self) -> int:
        return len(self._queue)

    def add(self, cell: ActorCell) -> None:
        """Hold ``cell`` (its envelope is in ``cell``); a feed handles it at once."""
        self._queue.append(cell)
        if self._feed:
            wake = self._sleeping
            if wake is not None:
                self._sleeping = None
                if not wake.done():  # (done: cancelled with its runner, which drops the rest)
                    wake.set_result(None)
            elif self._runner is None:
                self._start_runner()

    def start(self) -> None:
        """Start handling the held envelopes (in the current context's copy); a feed runs
        as envelopes come and needs no start."""
        if self._feed:
            return
        if not self._queue or self._base is not None:
            if self._pause is not None and self._base is None:
                self._pause.end()
            return
        if self._pause is None and len(self._queue) >= PAUSE_GC_AT:
            self._pause = GCPause()
            self._pause.hold()
        self._start_runner()

    def close(self) -> None:
        """Cancel the runner (the envelopes it has not handled fail with ``ActorStopped``)."""
        if self._runner is not None:
            self._runner.cancel()

    def released(self) -> None:
        """The batch let go of one held actor."""
        released = self._released
        if released is not None:
            self._released = None
            if not released.done():
                released.set_result(None)

    def next_release(self) -> asyncio.Future[None]:
        """A future resolved the next time the batch lets go of a held actor (a cell that
        waits until its own actor is let go looks again then)."""
        if self._released is None:
            self._released = asyncio.get_running_loop().create_future()
        return self._released

    # -- the runner ----------------------------------------------------------------------

    def _start_runner(self) -> None:
        if self._base is None:
            self._base = contextvars.copy_context()
        self._runner = asyncio.get_running_loop().create_task(self._run(),
                                                              context=self._base.copy())

    def _end_pause(self) -> None:
        if self._pause is not None:
            self._pause.end()

    async def _more(self) -> bool:
        """Called by the runner once it has handled every envelope held: a feed waits for
        more and returns ``True``; a fan-out's batch returns ``False`` (it ends)."""
        if not self._feed:
            return False
        wake = self._sleeping = asyncio.get_running_loop().create_future()
        try:
            await wake
        finally:
            self._sleeping = None
        return True

    async def _run(self) -> None:
        """The runner: handles what is held in turn, letting other tasks run every
        :data:`_YIELD_EVERY` handlers, until :meth:`_more` says the batch ends or a handler
        waits (this runner then finishes that handler and a fresh one takes the rest)."""
        queue = self._queue
        base = self._base
        assert base is not None
        runner = asyncio.current_task()
        done = 0
        try:
            while True:
                while queue:
                    cell = queue.popleft()  # the batch lets go of what it handles
                    suspended = cell.run_held(base, runner)
                    if suspended is not None:
                        break
                    done += 1
                    if done % _YIELD_EVERY == 0 and queue:
                        if self._pause is not None and gc.get_count()[0] > PAUSE_GC_BUDGET:
                            self._end_pause()
                        await asyncio.sleep(0)
                else:
                    self._end_pause()
                    if await self._more():
                        continue
                    self._runner = None
                    return
                break
        except asyncio.CancelledError:  # closed, or the loop is: the rest will not be handled
            self._runner = None
            self._end_pause()
            while queue:
                queue.popleft().drop_held()
            raise
        except BaseException:  # a handler raised KeyboardInterrupt or the like: go on
            self._runner = None
            self._end_pause()
            if queue:
                self._start_runner()
            raise
        self._runner = None  # a handler waits: the fan-out may take long now
        self._end_pause()
        if queue:  # the rest moves on while this runner finishes the handler that waits
            self._start_runner()
        await cell.finish_held(suspended)
