"""Waiting for the calls of one fan-out: every envelope answered, timed out or given up."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from ._envelope import Envelope
from ._errors import CallTimeout

__all__ = ["abandon", "settle"]


def abandon(envs: list[Envelope | None], interrupt: Callable[[Envelope], Any]) -> None:
    """The caller left: cancel every call still waiting and ``interrupt`` its handler."""
    for env in envs:
        if env is not None and not env.waiter.done():
            env.waiter.cancel()
            interrupt(env)


async def settle(envs: list[Envelope | None], deadline: float, timeout: float,
                 interrupt: Callable[[Envelope], Any]) -> None:
    """Wait until every call of ``envs`` (``None``: none there) is answered; at the loop time
    ``deadline`` the rest fail with :class:`CallTimeout` (``timeout``: the seconds it
    allowed) and are ``interrupt``-ed, as all are if the caller is cancelled. Envelopes of
    answered calls are dropped from ``envs`` on the way (with their message copies)."""
    loop = asyncio.get_running_loop()

    def expire() -> None:
        for env in envs:
            if env is not None and not env.waiter.done():
                env.waiter.set_exception(CallTimeout(
                    f"no reply from {env.target!r} within {timeout:g}s", actor=env.target))
                interrupt(env)

    timer: asyncio.TimerHandle | None = None
    try:
        for i, env in enumerate(envs):
            if env is None:
                continue
            fut = env.waiter
            if not fut.done():
                if timer is None:
                    timer = loop.call_at(deadline, expire)
                await asyncio.wait((fut,))
            envs[i] = None
    except asyncio.CancelledError:
        abandon(envs, interrupt)
        raise
    finally:
        if timer is not None:
            timer.cancel()
