"""A round of calls to many actors that survives a node dying: ask everyone, ask again
those restarted elsewhere, report the lost by name."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from ..runtime import ActorError, ActorRef, HandlerError, Runtime
from ._batch import RoundResult

__all__ = ["call_round"]

Recover = Callable[[Sequence[str]], Awaitable[dict[str, list[str]]]]

WINDOW = 5_000
"""Calls in flight at once (bounds the caller's memory on a big round)."""


async def call_round(runtime: Runtime, recover: Recover, refs: Sequence[ActorRef] | Sequence[str],
                     message: Any, *, timeout: float, attempts: int) -> RoundResult:
    """Call every actor of ``refs`` with ``message``; see ``Cluster.call_round``.

    A call failing for want of its actor (its node lost, the actor not found or
    stopped, no answer in time) is not an answer: ``recover`` says where such actors
    stand, and those running again (restarted) are asked again, up to ``attempts`` times.
    A handler's own error is an answer: it lands in ``errors`` at once.
    """
    result = RoundResult()
    todo = [r.name if isinstance(r, ActorRef) else r for r in refs]
    for attempt in range(max(1, attempts)):
        failed: dict[str, ActorError] = {}
        for i in range(0, len(todo), WINDOW):
            chunk = todo[i:i + WINDOW]
            got = await asyncio.gather(
                *(runtime.ref(n).call(message, timeout=timeout) for n in chunk),
                return_exceptions=True)
            for name, value in zip(chunk, got, strict=True):
                if isinstance(value, HandlerError) or not isinstance(value, BaseException):
                    if isinstance(value, HandlerError):
                        result.errors[name] = value
                    else:
                        result.replies[name] = value
                elif isinstance(value, ActorError):
                    failed[name] = value
                else:
                    raise value
        if not failed:
            return result
        where = await recover(list(failed))
        result.lost.extend(where.get("lost", ()))
        for name in where.get("unknown", ()):
            result.errors[name] = failed[name]
        todo = list(where.get("running", ()))
        if attempt + 1 == max(1, attempts):
            for name in todo:
                result.errors[name] = failed[name]
            return result
        result.asked_again += len(todo)
        if not todo:
            return result
    return result
