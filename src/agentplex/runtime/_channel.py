"""A bounded single-consumer channel carrying one streamed reply."""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any, Generic, TypeVar

__all__ = ["StreamChannel"]

T = TypeVar("T")

_END = object()


class StreamChannel(Generic[T]):
    """Items flow from the handler (:meth:`send`) to the caller (:meth:`receive`).

    ``send`` waits while ``capacity`` items are unread, so a slow reader slows the
    producer instead of growing memory. Closing from the reader side (:meth:`close`) makes
    further ``send`` calls return ``False`` so the producer can stop.
    """

    __slots__ = ("_capacity", "_closed", "_error", "_items", "_reader", "_writer")

    def __init__(self, capacity: int = 64) -> None:
        self._items: deque[Any] = deque()
        self._capacity = capacity
        self._reader: asyncio.Future[None] | None = None
        self._writer: asyncio.Future[None] | None = None
        self._closed = False
        self._error: BaseException | None = None

    @property
    def closed(self) -> bool:
        """Whether the reader went away (nothing more will be read)."""
        return self._closed

    def done(self) -> bool:  # so the runtime can treat it like a reply future
        return self._closed

    async def send(self, item: T) -> bool:
        """Queue ``item``; wait while the channel is full. ``False`` once the reader left."""
        while len(self._items) >= self._capacity and not self._closed:
            self._writer = asyncio.get_running_loop().create_future()
            try:
                await self._writer
            finally:
                self._writer = None
        if self._closed:
            return False
        self._items.append(item)
        self._wake_reader()
        return True

    def end(self) -> None:
        """Mark the normal end of the stream."""
        self._items.append(_END)
        self._wake_reader()

    def fail(self, error: BaseException) -> None:
        """End the stream with ``error``, raised at the reader after the queued items."""
        self._error = error
        self._items.append(_END)
        self._wake_reader()

    async def receive(self) -> tuple[bool, T | None]:
        """Return ``(True, item)``, or ``(False, None)`` at the end; raise the stream's error."""
        while not self._items:
            self._reader = asyncio.get_running_loop().create_future()
            try:
                await self._reader
            finally:
                self._reader = None
        item = self._items.popleft()
        if self._writer is not None and not self._writer.done():
            self._writer.set_result(None)
        if item is _END:
            self._items.appendleft(_END)
            if self._error is not None:
                raise self._error
            return False, None
        return True, item

    def close(self) -> None:
        """Reader side: stop reading; wakes a waiting producer."""
        self._closed = True
        if self._writer is not None and not self._writer.done():
            self._writer.set_result(None)

    def _wake_reader(self) -> None:
        if self._reader is not None and not self._reader.done():
            self._reader.set_result(None)
