""":class:`UserAgent`: a human (or a program standing in for one) in the conversation."""

from __future__ import annotations

import asyncio
import inspect
import sys
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable
from typing import Any, TypeAlias

from ..message import Msg
from ._agent import AgentBase

__all__ = ["UserAgent", "UserInput"]

UserInput: TypeAlias = (
    asyncio.Queue[Any] | AsyncIterable[Any] | Callable[[Msg | None], Awaitable[Any] | Any]
)
"""Where a :class:`UserAgent`'s input comes from: a queue, an async iterable, or a (sync or
async) function of the message being answered. Each item is text, a ``Msg`` or blocks."""


class UserAgent(AgentBase):
    """Speaks for a user: each reply is the next input from ``source``.

    Without ``source`` it reads a line from the terminal (in a worker thread, so the event
    loop keeps running). A program or a test feeds it through a queue (see :meth:`feed`),
    an async iterable or a function. An item that is a ``Msg`` is sent as it is; anything
    else becomes the content of a ``user`` message from this agent.

    Args:
        name: the user's name.
        source: where input comes from (default: the terminal).
        prompt: shown before reading from the terminal.
        input_timeout: seconds to wait for one input (``None``: no limit).
    """

    def __init__(self, name: str = "user", source: UserInput | None = None,
                 prompt: str | None = None, input_timeout: float | None = None,
                 timeout: float | None = None) -> None:
        super().__init__(name, timeout=timeout)
        self.prompt = prompt if prompt is not None else f"{name}: "
        self.input_timeout = input_timeout
        self._queue: asyncio.Queue[Any] | None = None
        self._iterator: AsyncIterator[Any] | None = None
        self._function: Callable[[Msg | None], Any] | None = None
        if source is None:
            pass
        elif isinstance(source, asyncio.Queue):
            self._queue = source
        elif isinstance(source, AsyncIterable):
            self._iterator = aiter(source)
        elif callable(source):
            self._function = source
        else:
            raise TypeError(f"cannot read user input from {type(source).__name__}")

    def feed(self, *items: Any) -> None:
        """Queue input for coming replies (the agent then reads from its queue)."""
        if self._queue is None:
            if self._iterator is not None or self._function is not None:
                raise RuntimeError("this UserAgent reads from another source")
            self._queue = asyncio.Queue()
        for item in items:
            self._queue.put_nowait(item)

    async def reply(self, msg: Msg | list[Msg] | None = None) -> Msg:
        """Show ``msg`` is being answered, take the next input and send it as a message."""
        last = msg[-1] if isinstance(msg, list) and msg else msg
        item = await asyncio.wait_for(self._next(last if isinstance(last, Msg) else None),
                                      self.input_timeout)
        reply = item if isinstance(item, Msg) else Msg(self.name, item, "user")
        if self._queue is not None or self._iterator is not None or self._function is not None:
            await self.print(reply, True)  # typed at a terminal, it is on screen already
        return reply

    async def _next(self, msg: Msg | None) -> Any:
        if self._queue is not None:
            return await self._queue.get()
        if self._iterator is not None:
            try:
                return await anext(self._iterator)
            except StopAsyncIteration:
                raise EOFError(f"the input of user agent {self.name!r} is exhausted") from None
        if self._function is not None:
            out = self._function(msg)
            return await out if inspect.isawaitable(out) else out
        return await asyncio.to_thread(_read_line, self.prompt)


def _read_line(prompt: str) -> str:
    sys.stdout.write(prompt)
    sys.stdout.flush()
    line = sys.stdin.readline()
    if not line:
        raise EOFError("the terminal input is closed")
    return line.rstrip("\n")
