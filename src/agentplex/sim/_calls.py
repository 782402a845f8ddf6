"""How the driver reaches many agents at once: asking (a shared message, or one message
per agent: both one fan-out), telling, and their states."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any

from ..runtime import ActorRef, PerActor, Runtime

__all__ = ["WINDOW", "ask_all", "ask_each", "load_states", "states_of", "tell_all"]

WINDOW = 50_000
"""Agents asked per fan-out (bounds the driver's memory on a big round)."""

Target = str | ActorRef


def _name(ref: Target) -> str:
    return ref.name if isinstance(ref, ActorRef) else ref


IN_FLIGHT = 2
"""Windows of one fan-out in flight at once (the nodes answer one while the next travels)."""


async def ask_all(rt: Runtime, refs: Sequence[Target], message: Any, timeout: float
                  ) -> list[Any]:
    """Every agent of ``refs`` asked ``message``; replies or exceptions, in ``refs`` order."""
    return await _fan_out(rt, refs, lambda indices: message, timeout)


async def ask_each(rt: Runtime, refs: Sequence[Target], messages: Sequence[Any],
                   timeout: float) -> list[Any]:
    """Agent ``refs[i]`` asked ``messages[i]``; replies or exceptions, in ``refs`` order:
    one fan-out whose frame to each node carries each of its agents its own message
    (:class:`~agentplex.runtime.PerActor`)."""
    if len(refs) != len(messages):
        raise ValueError(f"{len(messages)} messages for {len(refs)} agents")
    return await _fan_out(rt, refs, lambda indices: PerActor([messages[i] for i in indices]),
                          timeout)


async def _fan_out(rt: Runtime, refs: Sequence[Target],
                   payload: Callable[[range], Any], timeout: float) -> list[Any]:
    """:data:`WINDOW` agents per :meth:`Runtime.call_many` (one frame per node), and
    :data:`IN_FLIGHT` windows at once; each window takes every k-th agent, so that every
    node has its share of each (agents are placed in ranges: a window of neighbours would
    keep one node busy). ``payload(indices)`` is the message of the window ``indices``."""
    refs = getattr(refs, "names", refs)  # a batch's refs: their names, made on access
    n = len(refs)
    if n <= WINDOW:
        return await rt.call_many(refs, payload(range(n)), timeout=timeout,
                                  return_exceptions=True)
    windows = -(-n // WINDOW)
    out: list[Any] = [None] * n
    todo = iter(range(windows))

    async def asker() -> None:
        for j in todo:
            indices = range(j, n, windows)
            got = await rt.call_many([refs[i] for i in indices], payload(indices),
                                     timeout=timeout, return_exceptions=True)
            for i, value in zip(indices, got, strict=True):
                out[i] = value

    await asyncio.gather(*(asker() for _ in range(min(IN_FLIGHT, windows))))
    return out


async def tell_all(rt: Runtime, refs: Sequence[Target], message: Any, timeout: float
                   ) -> list[BaseException | None]:
    """``message`` told to every agent of ``refs`` (their ``observe``); failures in order."""
    out: list[BaseException | None] = []
    for i in range(0, len(refs), WINDOW):
        got = await asyncio.gather(*(rt.ref(_name(r)).tell(message, timeout=timeout)
                                     for r in refs[i:i + WINDOW]), return_exceptions=True)
        out.extend(v if isinstance(v, BaseException) else None for v in got)
    return out


async def states_of(rt: Runtime, refs: Sequence[Target], timeout: float, *,
                    return_exceptions: bool = False) -> list[Any]:
    """Each agent's ``state_dict()``, in mailbox order, wherever it runs; the first
    failure is raised once every call of its window has ended (or, with
    ``return_exceptions``, each failure is in the list in its agent's place)."""
    out: list[Any] = []
    for i in range(0, len(refs), WINDOW):
        out.extend(_all_or_first_error(await asyncio.gather(
            *(rt.state_of(r, timeout=timeout) for r in refs[i:i + WINDOW]),
            return_exceptions=True), return_exceptions))
    return out


async def load_states(rt: Runtime, refs: Sequence[Target], states: Sequence[Any],
                      timeout: float, *, return_exceptions: bool = False
                      ) -> list[BaseException | None]:
    """``load_state_dict(states[i])`` on agent ``refs[i]``, wherever it runs; the first
    failure is raised once every call of its window has ended (or, with
    ``return_exceptions``, returned in its agent's place: ``None`` where it loaded)."""
    out: list[BaseException | None] = []
    for i in range(0, len(refs), WINDOW):
        out.extend(_all_or_first_error(await asyncio.gather(
            *(rt.load_state(r, s, timeout=timeout)
              for r, s in zip(refs[i:i + WINDOW], states[i:i + WINDOW], strict=True)),
            return_exceptions=True), return_exceptions))
    return out


def _all_or_first_error(results: list[Any], keep: bool = False) -> list[Any]:
    """``results`` of a gather that returned exceptions: the first one raised (the others
    retrieved with it: no "exception was never retrieved" for each agent of a lost
    node), else the results; ``keep``: the results, exceptions and all."""
    if keep:
        return results
    for value in results:
        if isinstance(value, BaseException):
            raise value
    return results
