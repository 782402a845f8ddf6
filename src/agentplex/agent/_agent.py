""":class:`AgentBase`: an actor with ``reply``, ``observe`` and ``print``."""

from __future__ import annotations

import asyncio
import functools
import itertools
import sys
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, TextIO

from ..message import Msg, ThinkingBlock
from ..runtime import Actor, ActorRef, get_runtime
from ..runtime.lowlevel import current_cell
from ..tracing.lowlevel import agent_span, record_received, transcribe
from ._middleware import AgentCall, Middleware, Next
from ._state import StateModule

__all__ = ["AgentBase", "HUB_TOPIC_PREFIX"]

HUB_TOPIC_PREFIX = "msghub:"
"""Topics with this prefix are MsgHubs: an agent broadcasts its replies to them."""

_ids = itertools.count(1)


class _Invocation:
    """A local request to run ``reply`` or ``observe`` with arbitrary arguments."""

    __slots__ = ("args", "kwargs", "method")

    def __init__(self, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        self.method = method
        self.args = args
        self.kwargs = kwargs


def _through_mailbox(method: str, fn: Callable[..., Awaitable[Any]]) -> Callable[..., Any]:
    """Make ``agent.<method>(...)`` from outside the agent go through its mailbox."""

    @functools.wraps(fn)
    async def wrapper(self: AgentBase, *args: Any, **kwargs: Any) -> Any:
        caller = current_cell.get()
        if caller is not None and caller.actor is self:
            if self._depth:  # super().reply(...) inside a reply: no second middleware pass
                return await fn(self, *args, **kwargs)
            return await self._run(method, fn, args, kwargs)
        if caller is None and args:  # from the program driving the agents
            transcribe(args[0], None)
        own = self._cell
        ref = own.ref if own is not None else await self.ensure_spawned()
        if method == "reply" and len(args) == 1 and not kwargs:
            return await ref.call(args[0], timeout=self.timeout)
        return await ref.call(_Invocation(method, args, kwargs), timeout=self.timeout)

    wrapper._agentplex_method = fn  # type: ignore[attr-defined]
    return wrapper


class AgentBase(StateModule, Actor):
    """An agent: an actor that replies to messages and observes others' messages.

    Override :meth:`reply` (and :meth:`observe` if the agent keeps memory). Calling the
    agent — ``await agent(msg)`` — or its ``reply`` / ``observe`` from outside goes through
    its mailbox, so concurrent callers are served one after another and never interleave
    its state. An agent not spawned explicitly joins the current runtime on first use.

    Args:
        name: the agent's name, shown to other agents and used as its actor name.
        timeout: seconds ``await agent(msg)`` waits (default: the runtime's).
    """

    console: TextIO | None = None
    """Where :meth:`print` writes; ``None`` means standard output."""

    _middleware: tuple[Middleware, ...] = ()
    _depth = 0
    _console_enabled = True
    _hub_topics: frozenset[str] = frozenset()
    _print_queue: asyncio.Queue[tuple[Msg, bool]] | None = None
    _stream_send: Callable[[Any], Awaitable[bool]] | None = None
    _printed: dict[str, int] | None = None

    def __init__(self, name: str | None = None, *, timeout: float | None = None) -> None:
        self.id = f"{type(self).__name__.lower()}-{next(_ids)}"
        self.name = name or self.id
        self.timeout = timeout

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for method in ("reply", "observe"):
            fn = cls.__dict__.get(method)
            if fn is not None and not hasattr(fn, "_agentplex_method"):
                setattr(cls, method, _through_mailbox(method, fn))

    # -- what subclasses override -----------------------------------------------------------

    async def reply(self, *args: Any, **kwargs: Any) -> Msg:
        """Produce the agent's answer to a message (``None`` to speak unprompted)."""
        raise NotImplementedError(f"{type(self).__name__} must implement reply()")

    async def observe(self, msg: Msg | list[Msg] | None) -> None:
        """Take in a message without answering (the default ignores it)."""

    async def handle_interrupt(self, *args: Any, **kwargs: Any) -> Msg:
        """The reply given when :meth:`interrupt` cancels a running ``reply``."""
        return Msg(self.name, "I was interrupted before I could finish.", "assistant",
                   metadata={"interrupted": True})

    # -- calling -----------------------------------------------------------------------------

    async def __call__(self, *args: Any, **kwargs: Any) -> Msg:
        """Ask the agent for a reply, through its mailbox (as ``reply`` from outside)."""
        return await self.reply(*args, **kwargs)

    async def ensure_spawned(self) -> ActorRef:
        """This agent's ref; the agent joins the current runtime first if not spawned yet."""
        if self._cell is not None:
            return self._cell.ref
        runtime = get_runtime()
        name = self.name if self.name not in runtime else f"{self.name}#{self.id}"
        return await runtime.spawn(self, name)

    @staticmethod
    async def ensure_spawned_many(agents: Iterable[AgentBase]) -> None:
        """:meth:`ensure_spawned` for every agent of ``agents``, as one batch: those not
        spawned yet join the current runtime at once (:meth:`Runtime.spawn_many`), under
        the names :meth:`ensure_spawned` would give them."""
        fresh: dict[int, AgentBase] = {}
        for agent in agents:
            if not agent.spawned:
                fresh.setdefault(id(agent), agent)
        if not fresh:
            return
        runtime = get_runtime()
        names: list[str] = []
        taken: set[str] = set()
        for agent in fresh.values():
            name = agent.name
            if name in runtime or name in taken:
                name = f"{agent.name}#{agent.id}"
            taken.add(name)
            names.append(name)
        await runtime.spawn_many(list(fresh.values()), names)

    async def interrupt(self) -> bool:
        """Cancel the reply being produced; its caller gets :meth:`handle_interrupt`'s reply.

        Returns whether a reply was running.
        """
        cell = self._cell
        return cell.interrupt() if cell is not None else False

    # -- middleware --------------------------------------------------------------------------

    def use(self, middleware: Middleware) -> None:
        """Add ``middleware`` around ``reply`` and ``observe``; earlier ones run outermost."""
        self._middleware = (*self._middleware, middleware)

    async def _run(self, method: str, fn: Callable[..., Awaitable[Any]],
                   args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        self._depth += 1
        if args:
            record_received(args[0], self.name)
        try:
            if method != "reply":
                return await self._through_middleware(method, fn, args, kwargs)
            with agent_span(self.name, self.id):
                try:
                    result = await self._through_middleware(method, fn, args, kwargs)
                except asyncio.CancelledError:
                    cell = self._cell
                    if cell is None or not cell.interrupting:
                        raise
                    result = await self.handle_interrupt(*args, **kwargs)
        finally:
            self._depth -= 1
        if isinstance(result, Msg):
            transcribe(result, self.name)
            if self._hub_topics:
                await self._broadcast(result)
        return result

    def _through_middleware(self, method: str, fn: Callable[..., Awaitable[Any]],
                            args: tuple[Any, ...], kwargs: dict[str, Any]) -> Awaitable[Any]:
        if not self._middleware:
            return fn(self, *args, **kwargs)

        async def innermost(call: AgentCall) -> Any:
            return await fn(self, *call.args, **call.kwargs)

        chain: Next = innermost
        for mw in reversed(self._middleware):
            chain = _link(mw, chain)
        return chain(AgentCall(self, method, args, kwargs))  # type: ignore[arg-type]

    # -- actor handlers -------------------------------------------------------------------

    async def handle_call(self, message: Any) -> Any:
        if isinstance(message, _Invocation):
            fn = getattr(type(self), message.method)
            return await fn(self, *message.args, **message.kwargs)
        return await self._handle("reply", message)

    async def handle_tell(self, message: Any) -> None:
        await self._handle("observe", message)

    async def handle_publish(self, topic: str, message: Any) -> None:
        await self._handle("observe", message)

    def _handle(self, method: str, message: Any) -> Awaitable[Any]:
        """``self.<method>(message)`` in the agent's own handler: what the mailbox wrapper
        would do from here, without going through it."""
        fn = getattr(getattr(type(self), method), "_agentplex_method", None)
        if fn is None or self._depth:
            return getattr(self, method)(message)  # type: ignore[no-any-return]
        return self._run(method, fn, (message,), {})

    async def serve_stream(self, message: Any, send: Callable[[Any], Awaitable[bool]]) -> None:
        """Stream what the agent prints while replying, as ``(msg, last)`` pairs, ending with
        the reply itself (unless it was just printed as the last chunk)."""
        finished: set[str] = set()

        async def forward(item: tuple[Msg, bool]) -> bool:
            msg, last = item
            if last:
                finished.add(msg.id)
            return await send((msg.model_copy(deep=True), last))

        self._stream_send = forward
        try:
            reply = await self.handle_call(message)
        finally:
            del self._stream_send
        if not (isinstance(reply, Msg) and reply.id in finished):
            await send((reply, True))

    def on_topic(self, topic: str, subscribed: bool) -> None:
        if topic.startswith(HUB_TOPIC_PREFIX):
            topics = set(self._hub_topics)
            (topics.add if subscribed else topics.discard)(topic)
            self._hub_topics = frozenset(topics)

    async def _broadcast(self, msg: Msg) -> None:
        public = _without_thinking(msg)
        for topic in self._hub_topics:
            await self.runtime.publish(topic, public, exclude=(self._bound().name,))

    # -- printing ----------------------------------------------------------------------------

    def set_console_output_enabled(self, enabled: bool) -> None:
        """Turn printing to the console on or off (queues and streams still get messages)."""
        self._console_enabled = enabled

    def set_msg_queue(self, queue: asyncio.Queue[tuple[Msg, bool]] | None) -> None:
        """Also put every printed ``(msg, last)`` pair on ``queue`` (for front ends)."""
        self._print_queue = queue

    async def print(self, msg: Msg, last: bool = True) -> None:
        """Show ``msg``. Call repeatedly with the same ``msg.id`` and growing content to
        stream it; ``last=True`` on the final call."""
        if self._stream_send is not None:
            await self._stream_send((msg, last))
        if self._print_queue is not None:
            await self._print_queue.put((msg.model_copy(deep=True), last))
        if self._console_enabled:
            self._print_console(msg, last)

    def _print_console(self, msg: Msg, last: bool) -> None:
        out = self.console or sys.stdout
        text = msg.get_text_content() or ""
        printed = self._printed if self._printed is not None else {}
        self._printed = printed
        start = printed.get(msg.id)
        if start is None:
            out.write(f"{msg.name}: ")
            start = 0
        out.write(text[start:])
        if last:
            out.write("\n")
            printed.pop(msg.id, None)
        else:
            printed[msg.id] = len(text)
        out.flush()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


def _link(mw: Middleware, nxt: Next) -> Next:
    async def step(call: AgentCall) -> Any:
        return await mw(call, nxt)

    return step


def _without_thinking(msg: Msg) -> Msg:
    if isinstance(msg.content, str) or not any(isinstance(b, ThinkingBlock) for b in msg.content):
        return msg
    return msg.model_copy(
        update={"content": [b for b in msg.content if not isinstance(b, ThinkingBlock)]}
    )
