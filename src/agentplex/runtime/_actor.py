"""The :class:`Actor` base class."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._cell import ActorCell
    from ._ref import ActorRef
    from ._runtime import Runtime

__all__ = ["Actor"]


class Actor:
    """An object that owns its state and handles one message at a time.

    Subclasses override the handlers they need. A handler runs inside the actor's own
    loop, never concurrently with another handler of the same actor, so it may use
    ``self`` freely. An exception raised by a handler goes back to the caller as a
    :class:`~agentplex.runtime.HandlerError`; the actor keeps running.

    Spawn an actor with :meth:`Runtime.spawn`, which returns an :class:`ActorRef`.
    """

    _cell: ActorCell | None = None

    max_concurrency: int = 1
    """How many messages the actor may handle at once. Keep 1 (the default) for actors with
    state; a stateless service (a model actor feeding a batching model) raises it so that
    concurrent requests reach it together. Above 1, messages start in arrival order but
    may finish in any order."""

    # -- lifecycle ---------------------------------------------------------------

    async def on_start(self) -> None:
        """Called once when the actor is spawned, before its first message."""

    async def on_stop(self) -> None:
        """Called once after the actor's last message, when it stops."""

    # -- handlers ------------------------------------------------------------------

    async def handle_call(self, message: Any) -> Any:
        """Answer a :meth:`ActorRef.call`; the return value goes back to the caller."""
        raise NotImplementedError(f"{type(self).__name__} does not handle calls")

    async def handle_tell(self, message: Any) -> None:
        """Handle a :meth:`ActorRef.tell`. By default runs :meth:`handle_call`."""
        await self.handle_call(message)

    async def handle_publish(self, topic: str, message: Any) -> None:
        """Handle a message published on a topic the actor subscribes to."""
        await self.handle_tell(message)

    def handle_stream(self, message: Any) -> AsyncIterator[Any]:
        """Answer a :meth:`ActorRef.stream` with an async iterator of items.

        By default yields the result of :meth:`handle_call` once.
        """
        return _single(self.handle_call(message))

    async def serve_stream(self, message: Any, send: Callable[[Any], Awaitable[bool]]) -> None:
        """Produce a streamed reply by calling ``send(item)`` (``False``: the reader left).

        The default feeds :meth:`handle_stream`'s items to ``send``. Override this instead
        when items are produced deep inside other code (an agent's ``print``).
        """
        source = self.handle_stream(message)
        try:
            async for item in source:
                if not await send(item):
                    break
        finally:
            aclose = getattr(source, "aclose", None)
            if aclose is not None:
                await aclose()

    def on_topic(self, topic: str, subscribed: bool) -> None:
        """Told (in mailbox order) that the actor was subscribed to or left ``topic``."""

    # -- identity --------------------------------------------------------------------

    @property
    def ref(self) -> ActorRef:
        """The handle through which others reach this actor. Raises if not spawned."""
        return self._bound().ref

    @property
    def runtime(self) -> Runtime:
        """The runtime hosting this actor. Raises if not spawned."""
        return self._bound().runtime

    @property
    def spawned(self) -> bool:
        """Whether the actor runs in a runtime."""
        return self._cell is not None

    def _bound(self) -> ActorCell:
        cell = self._cell
        if cell is None:
            raise RuntimeError(f"{type(self).__name__} has not been spawned in a runtime")
        return cell


async def _single(result: Any) -> AsyncIterator[Any]:
    yield await result
