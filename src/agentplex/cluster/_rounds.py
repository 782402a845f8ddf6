"""A round of calls to many actors that survives a node dying: ask everyone, ask again
those restarted elsewhere, report the lost by name."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..runtime import ActorError, ActorRef, HandlerError, Runtime

__all__ = ["RoundResult", "call_round"]

@dataclass
class RoundResult:
    """What a round of calls (:meth:`Cluster.call_round`) gave: each answering actor's
    reply, the actors lost with their node (not restarted), and other errors."""

    replies: dict[str, Any] = field(default_factory=dict)
    lost: list[str] = field(default_factory=list)
    errors: dict[str, Exception] = field(default_factory=dict)
    asked_again: int = 0
    """Calls repeated because their actor was restarted elsewhere meanwhile."""


Recover = Callable[[Sequence[str]], Awaitable[dict[str, list[str]]]]

WINDOW = 5_000
"""Calls in flight at once (bounds the caller's memory on a big round)."""


async def call_round(runtime: Runtime, recover: Recover, refs: Sequence[ActorRef] | Sequence[str],
                     message: Any, *, timeout: float, attempts: int) -> RoundResult:
    """Call every actor of ``refs`` with ``message``; see ``Cluster.call_round``.

    Each window of calls is one :meth:`Runtime.call_many` (one frame per node).

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
            got = await runtime.call_many(chunk, message, timeout=timeout,
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
