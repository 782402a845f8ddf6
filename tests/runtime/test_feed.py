"""What a transport offers an idle local actor (``Runtime.offer_local``) runs in the runtime's
feed: one task for all such messages, one message at a time per actor, in arrival order."""

import asyncio
from typing import Any

import anyio
import pytest

from agentplex.runtime import Actor, ActorStopped, Runtime
from agentplex.runtime.lowlevel import Envelope, Kind


class _Where(Actor):
    """Answers with the task its handler runs in; waits at ``gate`` for ``"wait"``."""

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.seen: list[Any] = []

    async def handle_call(self, message: Any) -> Any:
        self.seen.append(message)
        if message == "wait":
            async with asyncio.timeout(5):  # needs a task of its own, from start to end
                await self.gate.wait()
        return asyncio.current_task()

    async def handle_tell(self, message: Any) -> None:
        self.seen.append(message)


def _call(rt: Runtime, target: str, message: Any) -> asyncio.Future[Any]:
    fut = asyncio.get_running_loop().create_future()
    assert rt.offer_local(Envelope(Kind.CALL, target, message, waiter=fut))
    return fut


@pytest.mark.anyio
async def test_idle_actors_share_one_task_for_what_a_transport_offers() -> None:
    async with Runtime() as rt:
        for name in ("a", "b"):
            await rt.spawn(_Where(), name)
        with anyio.fail_after(5):
            first = await _call(rt, "a", 1)
            second = await _call(rt, "b", 2)
            third = await _call(rt, "a", 3)
        assert first is second is third  # no task per message
        assert first is not asyncio.current_task()


@pytest.mark.anyio
async def test_a_handler_that_waits_keeps_its_task_and_the_feed_goes_on() -> None:
    async with Runtime() as rt:
        slow, quick = _Where(), _Where()
        await rt.spawn(slow, "slow")
        await rt.spawn(quick, "quick")
        waiting = _call(rt, "slow", "wait")
        behind = _call(rt, "slow", "next")  # queued behind the waiting handler
        assert rt.offer_local(Envelope(Kind.TELL, "slow", "told"))
        with anyio.fail_after(5):
            assert await _call(rt, "quick", 1) is not None  # not held up by "slow"
            assert not waiting.done() and not behind.done()
            slow.gate.set()
            task = await waiting
            assert await behind is not None
        assert task is not asyncio.current_task()
        assert slow.seen == ["wait", "next", "told"]  # arrival order, one at a time


@pytest.mark.anyio
async def test_stopping_an_actor_and_the_runtime_with_the_feed_waiting() -> None:
    rt = Runtime()
    async with rt:
        where = _Where()
        await rt.spawn(where, "w")
        with anyio.fail_after(5):
            await _call(rt, "w", 1)
            pending = _call(rt, "w", "wait")
            await asyncio.sleep(0)
            stop = asyncio.ensure_future(rt.stop("w", drain=False))
            with pytest.raises(ActorStopped):
                await pending
            await stop
    runner = rt._feed._runner if rt._feed is not None else None
    assert runner is None or runner.done() or runner.cancelling()
