"""Events from the engine's thread reach the callers' event loop in order, with few wake-ups."""

import asyncio
import threading
from typing import Any

import pytest

from agentplex.engine.lowlevel import LoopHandoff, deferred, handoff_for

pytestmark = pytest.mark.anyio


def count_wakeups(loop: asyncio.AbstractEventLoop) -> list[int]:
    calls = [0]
    original = loop.call_soon_threadsafe

    def counting(*args: Any, **kwargs: Any) -> Any:
        calls[0] += 1
        return original(*args, **kwargs)

    loop.call_soon_threadsafe = counting  # type: ignore[method-assign, assignment]
    return calls


async def test_items_arrive_in_order_and_a_deferred_block_wakes_the_loop_once() -> None:
    loop = asyncio.get_running_loop()
    handoff = handoff_for(loop)
    assert handoff_for(loop) is handoff
    wakeups = count_wakeups(loop)
    queues: list[asyncio.Queue[int]] = [asyncio.Queue() for _ in range(4)]

    def worker() -> None:
        for step in range(3):
            with deferred():
                for q in queues:
                    handoff.send(q, step)

    thread = threading.Thread(target=worker)
    thread.start()
    got = [[await asyncio.wait_for(q.get(), 10) for _ in range(3)] for q in queues]
    thread.join(10)
    assert got == [[0, 1, 2]] * 4
    assert wakeups[0] <= 3  # one per step at most, not one per item (12)


async def test_a_closed_loop_raises_and_keeps_raising() -> None:
    other = asyncio.new_event_loop()
    handoff = LoopHandoff(other)
    queue: asyncio.Queue[int] = asyncio.Queue()
    other.close()
    with pytest.raises(RuntimeError):
        handoff.send(queue, 1)
    with deferred():  # a deferred wake-up that fails marks the loop closed ...
        handoff2 = LoopHandoff(other)
        handoff2.send(queue, 1)
    with pytest.raises(RuntimeError):  # ... and the next send says so
        handoff2.send(queue, 2)
