"""The transport's background tasks, kept so that closing cancels them all."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

__all__ = ["Tasks"]

log = logging.getLogger("agentplex.bus")


class Tasks:
    """A set of running tasks: a failure is logged, never lost; :meth:`cancel` ends them."""

    def __init__(self) -> None:
        self._running: set[asyncio.Task[Any]] = set()

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """Run ``coro`` in a task of its own."""
        task = asyncio.get_running_loop().create_task(coro)
        self._running.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._running.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("bus task failed", exc_info=task.exception())

    def cancel(self) -> None:
        """Cancel every running task."""
        for task in list(self._running):
            task.cancel()
