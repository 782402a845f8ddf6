"""Giving memory back after hostile load: :class:`MemoryTrimmer` asks the C allocator to
return its free pages to the system (``malloc_trim``, glibc only) a moment after big bodies
or many connections are gone. Without it, a process that once held a flood of 10 MB bodies
or a thousand connections keeps their pages: glibc raises its mmap threshold after freeing
a big block, so later big buffers come from heaps it does not shrink by itself."""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import gc
import sys
from collections.abc import Callable

__all__ = ["MemoryTrimmer", "malloc_trim"]


def _load_trim() -> Callable[[], int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim = libc.malloc_trim
    except (OSError, AttributeError):  # musl and others have no malloc_trim
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return lambda: int(trim(0))


_TRIM = _load_trim()


def malloc_trim() -> bool:
    """Return the C allocator's free pages to the system now; ``False`` where the allocator
    has no such call (not glibc)."""
    if _TRIM is None:
        return False
    _TRIM()
    return True


class MemoryTrimmer:
    """Trims once a burst is over: ``delay`` seconds after the last request for a trim (but
    no later than ``5 * delay`` after the first), so a burst of big requests or closing
    connections costs one trim, taken when what they held is freed. A trim after many
    connections closed runs a full garbage collection first.

    Args:
        delay: the quiet time before a trim.
        big_body: bodies of at least this many bytes ask for a trim once answered.
        connections: a drop of the open connections to half their peak since the last trim
            asks for one, once the peak was at least this many.
    """

    def __init__(self, *, delay: float = 1.0, big_body: int = 1 << 20,
                 connections: int = 64) -> None:
        self.delay = delay
        self.big_body = big_body
        self.connections = connections
        self.trims = 0
        self._peak = 0
        self._pending: asyncio.TimerHandle | None = None
        self._first = 0.0
        self._last = 0.0
        self._collect = False
        self._collected = float("-inf")

    def request(self, *, collect: bool = False) -> None:
        """Ask for a trim (``delay`` seconds from now, or later if more requests follow);
        ``collect``: run a full garbage collection first (it empties CPython's free lists,
        whose leftovers from many connections keep the small-object allocator's arenas in
        use; at most once per ``10 * delay`` seconds, as it stops the event loop a moment)."""
        if _TRIM is None:
            return
        self._collect = self._collect or collect
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        self._last = loop.time()
        if self._pending is None:
            self._first = self._last
            self._pending = loop.call_later(self.delay, self._due, loop)

    def body_done(self, size: int) -> None:
        """A body of ``size`` bytes has been answered (and dropped)."""
        if size >= self.big_body:
            self.request()

    def connections_now(self, count: int) -> None:
        """``count`` connections are open now."""
        if count > self._peak:
            self._peak = count
        elif self._peak >= self.connections and count <= self._peak // 2:
            self._peak = count
            self.request(collect=True)

    def _due(self, loop: asyncio.AbstractEventLoop) -> None:
        now = loop.time()
        wait = min(self._last + self.delay, self._first + 5 * self.delay) - now
        if wait > 0.01:
            self._pending = loop.call_later(wait, self._due, loop)
            return
        if self._collect and now < self._collected + 10 * self.delay:  # (not too often)
            self._pending = loop.call_later(self._collected + 10 * self.delay - now,
                                            self._due, loop)
            return
        self._pending = None
        self.trims += 1
        if self._collect:
            self._collected = now
            gc.collect()
        self._collect = False
        malloc_trim()
