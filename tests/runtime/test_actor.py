import asyncio
from typing import Any

import pytest

from agentplex.runtime import (
    Actor,
    ActorExists,
    ActorNotFound,
    ActorStopped,
    CallTimeout,
    HandlerError,
    MailboxFull,
    Runtime,
)

pytestmark = pytest.mark.anyio


class Recorder(Actor):
    """Records what it handles; some payloads make it misbehave."""

    def __init__(self) -> None:
        self.seen: list[Any] = []
        self.active = 0
        self.max_active = 0
        self.cancelled: list[Any] = []
        self.gate = asyncio.Event()

    async def handle_call(self, message: Any) -> Any:
        self.active += 1
        self.max_active = max(self.max_active, self.active)
        try:
            if message == "boom":
                raise ValueError("bad input")
            if message == "block":
                await self.gate.wait()
            elif message == "hang":
                await asyncio.Event().wait()
            else:
                await asyncio.sleep(0)
            self.seen.append(message)
            return message
        except asyncio.CancelledError:
            self.cancelled.append(message)
            raise
        finally:
            self.active -= 1


async def test_call_returns_the_reply() -> None:
    async with Runtime() as rt:
        ref = await rt.spawn(Recorder(), "r")
        assert await ref.call(41) == 41
        assert await ref(42) == 42


async def test_messages_from_one_sender_arrive_in_order() -> None:
    async with Runtime() as rt:
        actor = Recorder()
        ref = await rt.spawn(actor, "r")
        for i in range(200):
            await ref.tell(i)
        await rt.idle()
        assert actor.seen == list(range(200))


async def test_one_message_at_a_time_under_concurrent_callers() -> None:
    async with Runtime() as rt:
        actor = Recorder()
        ref = await rt.spawn(actor, "r")
        results = await asyncio.gather(*(ref.call(i) for i in range(50)))
        assert results == list(range(50))
        assert actor.max_active == 1


async def test_timeout_raises_and_interrupts_the_handler() -> None:
    async with Runtime() as rt:
        actor = Recorder()
        ref = await rt.spawn(actor, "r")
        with pytest.raises(CallTimeout) as info:
            await ref.call("hang", timeout=0.05)
        assert isinstance(info.value, TimeoutError)
        assert info.value.actor == "r"
        await rt.idle()
        assert actor.cancelled == ["hang"]
        assert await ref.call("after", timeout=5) == "after"  # still serving


async def test_handler_error_reaches_the_caller_and_the_actor_survives() -> None:
    async with Runtime() as rt:
        ref = await rt.spawn(Recorder(), "r")
        with pytest.raises(HandlerError) as info:
            await ref.call("boom", timeout=5)
        err = info.value
        assert err.exc_type == "ValueError"
        assert "bad input" in str(err)
        assert "Traceback" in err.remote_traceback and "bad input" in err.remote_traceback
        assert isinstance(err.__cause__, ValueError)
        assert await ref.call("still here", timeout=5) == "still here"


async def test_stopped_actor_fails_its_callers_at_once() -> None:
    async with Runtime() as rt:
        ref = await rt.spawn(Recorder(), "r")
        await ref.stop()
        with pytest.raises(ActorStopped):
            await asyncio.wait_for(ref.call("x"), 5)
        with pytest.raises(ActorNotFound):
            await asyncio.wait_for(rt.ref("r").call("x"), 5)


async def test_stop_without_drain_fails_queued_and_running_calls() -> None:
    async with Runtime() as rt:
        actor = Recorder()
        ref = await rt.spawn(actor, "r")
        running = asyncio.ensure_future(ref.call("block", timeout=5))
        queued = asyncio.ensure_future(ref.call("queued", timeout=5))
        await asyncio.sleep(0.01)
        await asyncio.wait_for(ref.stop(drain=False), 5)
        for fut in (running, queued):
            with pytest.raises(ActorStopped):
                await asyncio.wait_for(fut, 5)
        assert "queued" not in actor.seen


async def test_stop_with_drain_handles_accepted_messages() -> None:
    async with Runtime() as rt:
        actor = Recorder()
        ref = await rt.spawn(actor, "r")
        for i in range(20):
            await ref.tell(i)
        await asyncio.wait_for(ref.stop(), 5)
        assert actor.seen == list(range(20))


async def test_cancelling_the_caller_interrupts_the_handler() -> None:
    async with Runtime() as rt:
        actor = Recorder()
        ref = await rt.spawn(actor, "r")
        task = asyncio.ensure_future(ref.call("hang", timeout=30))
        await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.wait_for(rt.idle(), 5)
        assert actor.cancelled == ["hang"]
        assert await ref.call("next", timeout=5) == "next"


async def test_a_cancelled_queued_call_is_never_handled() -> None:
    async with Runtime() as rt:
        actor = Recorder()
        ref = await rt.spawn(actor, "r")
        blocker = asyncio.ensure_future(ref.call("block", timeout=5))
        await asyncio.sleep(0.01)
        doomed = asyncio.ensure_future(ref.call("doomed", timeout=5))
        await asyncio.sleep(0.01)
        doomed.cancel()
        actor.gate.set()
        assert await blocker == "block"
        await rt.idle()
        assert "doomed" not in actor.seen


async def test_shutdown_drains_every_mailbox() -> None:
    actors = [Recorder() for _ in range(10)]
    rt = Runtime()
    refs = [await rt.spawn(a) for a in actors]
    for ref in refs:
        for i in range(10):
            await ref.tell(i)
    await asyncio.wait_for(rt.shutdown(), 10)
    assert all(a.seen == list(range(10)) for a in actors)
    assert len(rt) == 0


async def test_full_mailbox_applies_backpressure() -> None:
    async with Runtime(mailbox_size=2) as rt:
        actor = Recorder()
        ref = await rt.spawn(actor, "r")
        await ref.tell("block")
        await asyncio.sleep(0.01)  # now handling "block"; the mailbox is empty
        await ref.tell(1)
        await ref.tell(2)
        with pytest.raises(MailboxFull):
            await ref.tell(3, timeout=0.05)
        waiting = asyncio.ensure_future(ref.tell(4, timeout=5))
        await asyncio.sleep(0.01)
        assert not waiting.done()
        actor.gate.set()
        await asyncio.wait_for(waiting, 5)
        await rt.idle()
        assert actor.seen == ["block", 1, 2, 4]


async def test_idle_actors_cost_no_task() -> None:
    async with Runtime() as rt:
        before = len(asyncio.all_tasks())
        refs = [await rt.spawn(Recorder()) for _ in range(500)]
        assert len(asyncio.all_tasks()) == before
        await asyncio.gather(*(r.call(1) for r in refs))
        await rt.idle()
        await asyncio.sleep(0)
        assert len(asyncio.all_tasks()) == before


async def test_names_are_unique_and_unknown_names_fail() -> None:
    async with Runtime() as rt:
        await rt.spawn(Recorder(), "r")
        with pytest.raises(ActorExists):
            await rt.spawn(Recorder(), "r")
        with pytest.raises(ActorNotFound):
            await rt.ref("ghost").call(1, timeout=5)
        assert "r" in rt and rt.names() == ["r"]


async def test_an_actor_calling_itself_is_refused() -> None:
    class Narcissus(Actor):
        async def handle_call(self, message: Any) -> Any:
            return await self.ref.call(message)

    async with Runtime() as rt:
        ref = await rt.spawn(Narcissus(), "n")
        with pytest.raises(HandlerError, match="called itself"):
            await ref.call(1, timeout=5)


class Counter(Actor):
    def __init__(self, stop_at: int = 5, fail_at: int | None = None) -> None:
        self.stop_at = stop_at
        self.fail_at = fail_at
        self.closed = False

    async def handle_stream(self, message: Any):  # type: ignore[no-untyped-def]
        try:
            for i in range(self.stop_at):
                if i == self.fail_at:
                    raise RuntimeError("stream broke")
                yield i
                await asyncio.sleep(0)
        finally:
            self.closed = True


async def test_stream_delivers_items_in_order() -> None:
    async with Runtime() as rt:
        ref = await rt.spawn(Counter(5), "c")
        assert [i async for i in ref.stream("go", timeout=5)] == [0, 1, 2, 3, 4]


async def test_stream_error_arrives_after_the_items_before_it() -> None:
    async with Runtime() as rt:
        ref = await rt.spawn(Counter(5, fail_at=3), "c")
        got = []
        with pytest.raises(HandlerError, match="stream broke"):
            async for i in ref.stream("go", timeout=5):
                got.append(i)
        assert got == [0, 1, 2]


async def test_leaving_a_stream_early_stops_the_producer() -> None:
    async with Runtime() as rt:
        counter = Counter(10_000)
        ref = await rt.spawn(counter, "c")
        async with ref.stream("go", timeout=5) as stream:
            async for i in stream:
                if i == 3:
                    break
        await asyncio.wait_for(rt.idle(), 5)
        assert counter.closed
        with pytest.raises(HandlerError, match="does not handle calls"):
            await ref.call("x", timeout=5)


async def test_topics_reach_every_subscriber_except_excluded() -> None:
    class Listener(Actor):
        def __init__(self) -> None:
            self.got: list[tuple[str, Any]] = []

        async def handle_publish(self, topic: str, message: Any) -> None:
            self.got.append((topic, message))

    async with Runtime() as rt:
        listeners = [Listener() for _ in range(3)]
        for i, listener in enumerate(listeners):
            await rt.spawn(listener, f"l{i}")
            await rt.subscribe("news", f"l{i}")
        await rt.publish("news", "hello", exclude=["l1"])
        await rt.publish("other", "nobody listens")
        await rt.unsubscribe("news", "l2")
        await rt.publish("news", "again")
        await rt.idle()
        assert listeners[0].got == [("news", "hello"), ("news", "again")]
        assert listeners[1].got == [("news", "again")]
        assert listeners[2].got == [("news", "hello")]


class Service(Actor):
    max_concurrency = 4

    def __init__(self) -> None:
        self.active = 0
        self.max_active = 0
        self.cancelled = 0
        self.gate = asyncio.Event()

    async def handle_call(self, message: Any) -> Any:
        self.active += 1
        self.max_active = max(self.max_active, self.active)
        try:
            if message == "hang":
                await asyncio.Event().wait()
            await self.gate.wait()
            return message
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        finally:
            self.active -= 1


async def test_concurrent_actor_serves_up_to_its_limit_at_once() -> None:
    async with Runtime() as rt:
        service = Service()
        ref = await rt.spawn(service, "svc")
        calls = [asyncio.ensure_future(ref.call(i, timeout=5)) for i in range(10)]
        await asyncio.sleep(0.02)
        assert service.active == 4  # the limit, not one, not ten
        service.gate.set()
        assert await asyncio.gather(*calls) == list(range(10))
        assert service.max_active == 4


async def test_concurrent_actor_interrupts_only_the_abandoned_request() -> None:
    async with Runtime() as rt:
        service = Service()
        ref = await rt.spawn(service, "svc")
        doomed = asyncio.ensure_future(ref.call("hang", timeout=0.05))
        kept = asyncio.ensure_future(ref.call("kept", timeout=5))
        with pytest.raises(CallTimeout):
            await doomed
        await asyncio.sleep(0.01)
        assert service.cancelled == 1 and not kept.done()
        service.gate.set()
        assert await kept == "kept"


async def test_stopping_a_concurrent_actor_fails_its_inflight_calls() -> None:
    async with Runtime() as rt:
        ref = await rt.spawn(Service(), "svc")
        calls = [asyncio.ensure_future(ref.call(i, timeout=5)) for i in range(6)]
        await asyncio.sleep(0.01)
        await asyncio.wait_for(ref.stop(drain=False), 5)
        for call in calls:
            with pytest.raises(ActorStopped):
                await asyncio.wait_for(call, 5)


async def test_long_timeouts_fire_too() -> None:
    """Timeouts of a second or more share coarse timer slots; they must still fire."""
    async with Runtime() as rt:
        actor = Recorder()
        ref = await rt.spawn(actor, "r")
        with pytest.raises(CallTimeout, match=r"within 1\.2s"):
            await asyncio.wait_for(ref.call("hang", timeout=1.2), 10)
        await rt.idle()
        assert actor.cancelled == ["hang"]


async def test_control_requests_reach_concurrent_actors_too() -> None:
    from agentplex.agent import StateModule

    class StatefulService(StateModule, Service):
        def __init__(self) -> None:
            super().__init__()
            self.level = 1
            self.register_state("level")

    async with Runtime() as rt:
        await rt.spawn(StatefulService(), "svc")
        assert await rt.state_of("svc", timeout=5) == {"level": 1}
        await rt.load_state("svc", {"level": 9}, timeout=5)
        assert await rt.state_of("svc", timeout=5) == {"level": 9}
        await rt.subscribe("t", "svc", timeout=5)
        assert rt.subscribers("t") == ["svc"]


async def test_breaking_out_of_a_stream_stops_the_producer() -> None:
    async with Runtime() as rt:
        counter = Counter(10_000)
        ref = await rt.spawn(counter, "c")
        async for i in ref.stream("go", timeout=5):
            if i == 3:
                break
        await asyncio.wait_for(rt.idle(), 5)  # the producer did not block on a full channel
        assert counter.closed
        assert [i async for i in ref.stream("again", timeout=5)][:2] == [0, 1]
