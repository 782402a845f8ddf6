"""Coarse deadlines for many concurrent waits.

Every call has a timeout, and most calls finish long before it. Scheduling and cancelling
one loop timer per call costs more than the rest of an in-process call, so long timeouts are
grouped into slots of ``resolution`` seconds with one loop timer per slot; a call only
enters and leaves a dict. Such a timeout fires up to ``resolution`` late. Short timeouts
(under ``precise_below`` seconds) keep an exact timer of their own.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from typing import Any

from ._errors import CallTimeout

__all__ = ["Deadlines", "call_timed_out"]

Expire = Callable[[asyncio.Future[Any], str, float], None]


def call_timed_out(fut: asyncio.Future[Any], name: str, timeout: float) -> None:
    """The expiry of a call: its future fails with :class:`CallTimeout`."""
    if not fut.done():
        fut.set_exception(CallTimeout(f"no reply from {name!r} within {timeout:g}s", actor=name))


class Deadlines:
    """Calls ``expire(fut, name, timeout)`` for each registered future still pending at
    its deadline."""

    __slots__ = ("_expire", "_loop", "_precise_below", "_resolution", "_slots")

    def __init__(self, loop: asyncio.AbstractEventLoop, expire: Expire, *,
                 resolution: float = 0.05, precise_below: float = 1.0) -> None:
        self._loop = loop
        self._expire = expire
        self._resolution = resolution
        self._precise_below = precise_below
        self._slots: dict[int, dict[asyncio.Future[Any], tuple[str, float]]] = {}

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The event loop whose timers these deadlines use."""
        return self._loop

    def add(self, fut: asyncio.Future[Any], timeout: float, name: str) -> Any:
        """Register ``fut`` (waiting on ``name``); returns a token for :meth:`discard`."""
        if timeout < self._precise_below:
            return self._loop.call_later(timeout, self._expire, fut, name, timeout)
        slot = math.ceil((self._loop.time() + timeout) / self._resolution)
        bucket = self._slots.get(slot)
        if bucket is None:
            bucket = self._slots[slot] = {}
            self._loop.call_at(slot * self._resolution, self._fire, slot)
        bucket[fut] = (name, timeout)
        return slot

    def discard(self, token: Any, fut: asyncio.Future[Any]) -> None:
        """``fut`` finished (or gave up): forget its deadline."""
        if isinstance(token, int):
            bucket = self._slots.get(token)
            if bucket is not None:
                bucket.pop(fut, None)
        else:
            token.cancel()

    def _fire(self, slot: int) -> None:
        for fut, (name, timeout) in self._slots.pop(slot, {}).items():
            if not fut.done():
                self._expire(fut, name, timeout)
