""":class:`ActorRef`: the location-transparent handle to an actor."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable
from typing import TYPE_CHECKING, Any

from ..tracing import is_enabled
from ..tracing.lowlevel import current_context
from ._cell import current_cell
from ._channel import StreamChannel
from ._envelope import Envelope, Kind
from ._errors import ActorStopped, CallTimeout

if TYPE_CHECKING:
    from ._cell import ActorCell
    from ._runtime import Runtime

__all__ = ["ActorRef", "ReplyStream"]


class ActorRef:
    """A handle to the actor ``name``, wherever it runs.

    The same methods work whether the actor lives in this process or on another machine:
    only where it was spawned differs. Every method takes a ``timeout`` in seconds
    (default: the runtime's ``default_timeout``).
    """

    __slots__ = ("_cell", "_runtime", "name")

    def __init__(self, runtime: Runtime, name: str, cell: ActorCell | None = None) -> None:
        self._runtime = runtime
        self.name = name
        self._cell = cell

    def __repr__(self) -> str:
        return f"ActorRef({self.name!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ActorRef) and other.name == self.name

    def __hash__(self) -> int:
        return hash(self.name)

    def _local(self) -> ActorCell | None:
        cell = self._cell
        if cell is not None and cell.accepting:
            return cell
        fresh = self._runtime._cells.get(self.name)
        if fresh is not None:
            self._cell = fresh
            return fresh
        if cell is not None:  # the actor this ref was made for has stopped
            raise ActorStopped(f"actor {self.name!r} is stopped", actor=self.name)
        return None

    def _envelope(self, kind: str, payload: Any, waiter: Any) -> Envelope:
        sender = current_cell.get()
        if (
            sender is not None
            and kind == Kind.CALL
            and sender.name == self.name
            and sender.runtime is self._runtime
        ):
            raise RuntimeError(
                f"actor {self.name!r} called itself and would wait for itself forever; "
                "call the method directly instead"
            )
        return Envelope(
            kind,
            self.name,
            payload,
            waiter=waiter,
            sender=sender.name if sender is not None else None,
            trace=current_context() if is_enabled() else None,
        )

    def _send(self, env: Envelope, timeout: float) -> Awaitable[None] | None:
        """Deliver ``env``: ``None`` when it is delivered already, else what to await."""
        cell = self._local()
        if cell is not None:
            return None if cell.offer(env) else cell.put(env, timeout)
        return self._runtime._route(env, timeout)

    async def call(self, message: Any, *, timeout: float | None = None) -> Any:
        """Send ``message`` and wait for the reply.

        Raises :class:`CallTimeout` after ``timeout`` seconds, :class:`HandlerError` when
        the handler raised, :class:`ActorStopped` / :class:`ActorNotFound` when there is
        nobody to answer. Cancelling the caller, or a timeout, interrupts the handler.
        """
        runtime = self._runtime
        if timeout is None:
            timeout = runtime.default_timeout
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        env = self._envelope(Kind.CALL, message, fut)
        deadlines = runtime.call_deadlines(loop)
        token = deadlines.add(fut, timeout, self.name)
        try:
            sending = self._send(env, timeout)
            if sending is not None:
                await sending
            return await fut
        except (asyncio.CancelledError, CallTimeout):
            runtime._cancel(env)
            raise
        finally:
            deadlines.discard(token, fut)

    __call__ = call

    async def tell(self, message: Any, *, timeout: float | None = None) -> None:
        """Deliver ``message`` without waiting for it to be handled.

        Waits only while the mailbox is full, at most ``timeout`` seconds, then raises
        :class:`MailboxFull`. Errors of the handler are logged, not returned.
        """
        env = self._envelope(Kind.TELL, message, None)
        sending = self._send(env, self._runtime.default_timeout if timeout is None else timeout)
        if sending is not None:
            await sending

    def stream(self, message: Any, *, timeout: float | None = None) -> ReplyStream:
        """Send ``message`` and iterate over the items of the reply as they arrive.

        ``timeout`` bounds the wait for each item. Leaving the iteration early (``break``,
        or :meth:`ReplyStream.aclose`) interrupts the handler.
        """
        return ReplyStream(self, message, self._runtime.default_timeout if timeout is None
                           else timeout)

    async def stop(self, *, drain: bool = True, timeout: float | None = None) -> None:
        """Stop the actor; see :meth:`Runtime.stop`."""
        await self._runtime.stop(self.name, drain=drain, timeout=timeout)


class ReplyStream:
    """The items of a streamed reply; an async iterator and an async context manager."""

    __slots__ = ("_channel", "_env", "_message", "_ref", "_started", "_timeout")

    def __init__(self, ref: ActorRef, message: Any, timeout: float) -> None:
        self._ref = ref
        self._message = message
        self._timeout = timeout
        self._channel: StreamChannel[Any] = StreamChannel()
        self._env: Envelope | None = None
        self._started = False

    def __aiter__(self) -> AsyncIterator[Any]:
        return self

    async def __anext__(self) -> Any:
        if not self._started:
            self._started = True
            self._env = self._ref._envelope(Kind.STREAM, self._message, self._channel)
            sending = self._ref._send(self._env, self._timeout)
            if sending is not None:
                await sending
        try:
            async with asyncio.timeout(self._timeout):
                more, item = await self._channel.receive()
        except TimeoutError:
            await self.aclose()
            raise CallTimeout(
                f"no stream item from {self._ref.name!r} within {self._timeout:g}s",
                actor=self._ref.name,
            ) from None
        except asyncio.CancelledError:
            await self.aclose()
            raise
        if not more:
            raise StopAsyncIteration
        return item

    async def aclose(self) -> None:
        """Stop reading; the handler producing the stream is interrupted."""
        self._close()

    def _close(self) -> None:
        if self._channel.closed:
            return
        self._channel.close()
        if self._env is not None:
            self._ref._runtime._cancel(self._env)

    def __del__(self) -> None:
        # ``break`` out of ``async for`` drops the iterator without closing it; closing
        # needs no await, so do it here (CPython runs this as soon as the loop lets go).
        if self._started and not self._channel.closed:
            self._close()

    async def __aenter__(self) -> ReplyStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

