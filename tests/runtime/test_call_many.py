"""Runtime.call_many and batches: replies in order, errors per actor, timeouts, busy
actors, arrival order, one message at a time; concurrent actors start while others run."""

import asyncio
import gc
from typing import Any

import pytest

from agentplex.runtime import (
    Actor,
    ActorNotFound,
    ActorStopped,
    CallTimeout,
    HandlerError,
    InProcessNetwork,
    InProcessTransport,
    Runtime,
)
from agentplex.runtime._fanout import PAUSE_GC_AT
from agentplex.runtime.lowlevel import current_cell

pytestmark = pytest.mark.anyio


class Log(Actor):
    """Logs what it handles (shared log); "boom" raises, "block" waits for ``gate``,
    "hang" never ends, "yield" waits one loop step."""

    def __init__(self, name: str, log: list[tuple[str, Any]]) -> None:
        self.name = name
        self.log = log
        self.gate = asyncio.Event()
        self.started = asyncio.Event()
        self.seen = asyncio.Event()
        self.active = 0
        self.max_active = 0
        self.interrupted: list[Any] = []

    async def handle_call(self, message: Any) -> Any:
        self.active += 1
        self.max_active = max(self.max_active, self.active)
        self.log.append((self.name, message))
        self.seen.set()
        try:
            if message == "boom":
                raise ValueError(f"{self.name} exploded")
            if message == "block":
                self.started.set()
                await self.gate.wait()
            elif message == "hang":
                self.started.set()
                await asyncio.Event().wait()
            elif message == "yield":
                await asyncio.sleep(0)
            return f"{self.name}:{message}"
        except asyncio.CancelledError:
            self.interrupted.append(message)
            raise
        finally:
            self.active -= 1


async def spawn_logs(rt: Runtime, n: int) -> tuple[list[Log], list[tuple[str, Any]]]:
    log: list[tuple[str, Any]] = []
    actors = [Log(f"a{i}", log) for i in range(n)]
    for actor in actors:
        await rt.spawn(actor, actor.name)
    return actors, log


async def test_replies_come_back_in_order() -> None:
    async with Runtime() as rt:
        actors, _log = await spawn_logs(rt, 50)
        refs = [a.ref for a in actors]
        assert await rt.call_many(refs, "hi", timeout=5) == [f"a{i}:hi" for i in range(50)]
        # by name too, and handlers that wait a step answer just the same
        names = [a.name for a in reversed(actors)]
        assert await rt.call_many(names, "yield", timeout=5) == [f"{n}:yield" for n in names]
        assert await rt.call_many([], "nothing", timeout=5) == []


async def test_errors_per_actor() -> None:
    async with Runtime() as rt:
        actors, log = await spawn_logs(rt, 3)

        class Picky(Actor):
            async def handle_call(self, message: Any) -> Any:
                raise KeyError(message)

        await rt.spawn(Picky(), "picky")
        targets = ["a0", "picky", "a1", "nobody", "a2"]
        out = await rt.call_many(targets, "x", timeout=5, return_exceptions=True)
        assert out[0] == "a0:x" and out[2] == "a1:x" and out[4] == "a2:x"
        assert isinstance(out[1], HandlerError) and out[1].exc_type == "KeyError"
        assert isinstance(out[3], ActorNotFound)
        # without return_exceptions: the first error in order, once all have answered
        log.clear()
        with pytest.raises(HandlerError, match="KeyError"):
            await rt.call_many(targets, "y", timeout=5)
        assert sorted(log) == [("a0", "y"), ("a1", "y"), ("a2", "y")]
        # the actors keep running after their handler failed
        assert await rt.call_many(["a0", "picky"], "boom", timeout=5,
                                  return_exceptions=True) != [None, None]
        assert await actors[0].ref.call("again", timeout=5) == "a0:again"


async def test_timeout_interrupts_only_the_late_handlers() -> None:
    async with Runtime() as rt:
        actors, log = await spawn_logs(rt, 3)
        out = await rt.call_many(["a0", "a1", "a2"], "hang", timeout=0.05,
                                 return_exceptions=True)
        assert all(isinstance(e, CallTimeout) for e in out)
        assert [a.interrupted for a in actors] == [["hang"]] * 3
        # a fast one answers, a hanging one times out, in the same call
        await rt.spawn(Log("quick", log), "quick")
        actors[0].gate.set()
        out = await rt.call_many(["quick", "a1"], "hang", timeout=0.05, return_exceptions=True)
        assert isinstance(out[0], CallTimeout) and isinstance(out[1], CallTimeout)
        assert await rt.call_many(["quick", "a1"], "fine", timeout=5) == ["quick:fine",
                                                                          "a1:fine"]


async def test_a_busy_actor_gets_the_message_in_its_mailbox() -> None:
    async with Runtime() as rt:
        actors, log = await spawn_logs(rt, 3)
        busy = asyncio.ensure_future(actors[1].ref.call("block", timeout=5))
        await asyncio.wait_for(actors[1].started.wait(), 5)
        fan = asyncio.ensure_future(rt.call_many(["a0", "a1", "a2"], "fan", timeout=5))
        await asyncio.wait_for(actors[2].seen.wait(), 5)
        assert rt.backlog("a1") == 1 and not fan.done()  # queued behind "block"
        actors[1].gate.set()
        assert await asyncio.wait_for(fan, 5) == ["a0:fan", "a1:fan", "a2:fan"]
        assert await busy == "a1:block"
        assert actors[1].max_active == 1  # never two handlers at once
        assert [m for n, m in log if n == "a1"] == ["block", "fan"]


async def test_arrival_order_holds_around_a_fan_out() -> None:
    async with Runtime() as rt:
        actors, log = await spawn_logs(rt, 2)

        async def tell_then_fan_then_tell() -> list[Any]:
            await actors[0].ref.tell("before")
            fan = asyncio.ensure_future(rt.call_many(["a0", "a1"], "fan", timeout=5))
            await asyncio.sleep(0)  # the fan-out has delivered, not necessarily handled
            await actors[0].ref.tell("after")
            await actors[1].ref.tell("after")
            return await fan

        assert await tell_then_fan_then_tell() == ["a0:fan", "a1:fan"]
        await rt.idle()
        assert [m for n, m in log if n == "a0"] == ["before", "fan", "after"]
        assert [m for n, m in log if n == "a1"] == ["fan", "after"]


async def test_handlers_that_wait_run_concurrently_in_their_own_task() -> None:
    both = asyncio.Event()
    started: list[str] = []
    tasks: dict[str, list[asyncio.Task[Any] | None]] = {}

    class Waiter(Actor):
        def __init__(self, name: str) -> None:
            self.name = name

        async def handle_call(self, message: Any) -> Any:
            first = asyncio.current_task()
            started.append(self.name)
            if len(started) == 2:
                both.set()
            async with asyncio.timeout(5):  # needs one current task from start to end
                await both.wait()
            tasks[self.name] = [first, asyncio.current_task()]
            assert current_cell.get() is self._cell
            return self.name

    async with Runtime() as rt:
        await rt.spawn(Waiter("w0"), "w0")
        await rt.spawn(Waiter("w1"), "w1")
        assert await rt.call_many(["w0", "w1"], None, timeout=5) == ["w0", "w1"]
        assert all(first is last for first, last in tasks.values())
        assert tasks["w0"][0] is not tasks["w1"][0]


async def test_cancelling_the_caller_interrupts_the_handlers() -> None:
    async with Runtime() as rt:
        actors, _log = await spawn_logs(rt, 2)
        fan = asyncio.ensure_future(rt.call_many(["a0", "a1"], "hang", timeout=5))
        await asyncio.wait_for(actors[1].started.wait(), 5)
        fan.cancel()
        with pytest.raises(asyncio.CancelledError):
            await fan
        await asyncio.wait_for(rt.idle(), 5)
        assert [a.interrupted for a in actors] == [["hang"], ["hang"]]


async def test_stopped_actors_and_calling_oneself() -> None:
    async with Runtime() as rt:
        actors, _log = await spawn_logs(rt, 2)
        ref = actors[1].ref
        await rt.stop("a1")
        out = await rt.call_many([actors[0].ref, ref], "x", timeout=5, return_exceptions=True)
        assert out[0] == "a0:x" and isinstance(out[1], ActorStopped)

        class Fanner(Actor):
            async def handle_call(self, message: Any) -> Any:
                return await self.runtime.call_many(["fanner", "a0"], "y", timeout=5,
                                                    return_exceptions=True)

        out = await (await rt.spawn(Fanner(), "fanner")).call(None, timeout=5)
        assert isinstance(out[0], RuntimeError) and out[1] == "a0:y"


async def test_each_local_actor_may_get_its_own_copy() -> None:
    got: list[Any] = []

    class Keep(Actor):
        async def handle_call(self, message: Any) -> Any:
            got.append(message)
            return None

    async with Runtime() as rt:
        for i in range(3):
            await rt.spawn(Keep(), f"k{i}")
        payload = {"a": [1]}
        await rt.call_many(["k0", "k1", "k2"], payload, timeout=5, copy_message=True)
        assert got == [payload] * 3 and len({id(m) for m in got} | {id(payload)}) == 4
        got.clear()
        await rt.call_many(["k0", "k1"], payload, timeout=5)
        assert all(m is payload for m in got)


async def test_actors_of_another_runtime_go_through_the_transport() -> None:
    net = InProcessNetwork()
    async with Runtime(transport=InProcessTransport(net)) as a, \
            Runtime(transport=InProcessTransport(net)) as b:
        log: list[tuple[str, Any]] = []
        await a.spawn(Log("here", log), "here")
        await b.spawn(Log("there", log), "there")
        out = await a.call_many(["there", "here", "nowhere"], "x", timeout=5,
                                return_exceptions=True)
        assert out[:2] == ["there:x", "here:x"] and isinstance(out[2], ActorNotFound)


async def test_publish_to_idle_subscribers_keeps_mailbox_order() -> None:
    async with Runtime() as rt:
        _actors, log = await spawn_logs(rt, 3)

        class Listener(Log):
            async def handle_publish(self, topic: str, message: Any) -> None:
                await self.handle_call(message)

        listeners = [Listener(f"l{i}", log) for i in range(3)]
        for listener in listeners:
            await rt.spawn(listener, listener.name)
            await rt.subscribe("news", listener.name)
        await rt.publish("news", "first")
        for listener in listeners:  # sent after the publish: handled after it
            await listener.ref.tell("second")
        await rt.publish("news", "yield")
        await rt.publish("news", "third")
        await asyncio.wait_for(rt.idle(), 5)
        for listener in listeners:
            assert [m for n, m in log if n == listener.name] == [
                "first", "second", "yield", "third"]
            assert listener.max_active == 1


async def test_stopping_an_actor_a_batch_holds() -> None:
    async with Runtime() as rt:
        _actors, _log = await spawn_logs(rt, 2)
        fan = asyncio.ensure_future(rt.call_many(["a0", "a1"], "x", timeout=5,
                                                 return_exceptions=True))
        await asyncio.sleep(0)  # delivered into the batch, not yet handled
        assert rt.backlog("a1") == 1
        async with asyncio.timeout(5):
            await rt.stop("a1", drain=False)
        out = await asyncio.wait_for(fan, 5)
        assert out[0] == "a0:x" and isinstance(out[1], ActorStopped)


class Pool(Actor):
    max_concurrency = 8

    def __init__(self) -> None:
        self.slow_started = asyncio.Event()
        self.release = asyncio.Event()
        self.order: list[Any] = []

    async def handle_call(self, message: Any) -> Any:
        self.order.append(message)
        if message == "slow":
            self.slow_started.set()
            await self.release.wait()
        return message


async def test_concurrent_actor_starts_a_message_while_its_handlers_are_busy() -> None:
    async with Runtime() as rt:
        pool = Pool()
        ref = await rt.spawn(pool, "pool")
        slow = asyncio.ensure_future(ref.call("slow", timeout=10))
        await asyncio.wait_for(pool.slow_started.wait(), 5)
        # the slow handler still runs; a fast call must not wait for it
        assert await ref.call("fast", timeout=5) == "fast"
        assert not slow.done()
        assert await asyncio.gather(*(ref.call(i, timeout=5) for i in range(20))) == list(
            range(20))
        assert not slow.done()
        pool.release.set()
        assert await asyncio.wait_for(slow, 5) == "slow"
        await rt.idle()
        assert pool.order[:2] == ["slow", "fast"]


async def test_concurrent_actor_limit_and_start_order() -> None:
    async with Runtime() as rt:
        pool = Pool()
        ref = await rt.spawn(pool, "pool")
        slow = [asyncio.ensure_future(ref.call("slow", timeout=10)) for _ in range(8)]
        await asyncio.wait_for(pool.slow_started.wait(), 5)
        queued = [asyncio.ensure_future(ref.call(i, timeout=10)) for i in range(5)]
        for _ in range(5):
            await asyncio.sleep(0)
        assert rt.backlog("pool") == 5 and not any(q.done() for q in queued)  # all 8 busy
        pool.release.set()
        assert await asyncio.wait_for(asyncio.gather(*queued), 5) == list(range(5))
        await asyncio.wait_for(asyncio.gather(*slow), 5)
        assert pool.order == ["slow"] * 8 + list(range(5))


async def test_a_fan_out_inside_a_fanned_out_handler() -> None:
    class Lead(Actor):
        def __init__(self, team: list[str]) -> None:
            self.team = team

        async def handle_call(self, message: Any) -> Any:
            return await self.runtime.call_many(self.team, message, timeout=5)

    async with Runtime() as rt:
        _actors, log = await spawn_logs(rt, 4)
        await rt.spawn(Lead(["a0", "a1"]), "lead0")
        await rt.spawn(Lead(["a2", "a3"]), "lead1")
        assert await rt.call_many(["lead0", "lead1", "a0"], "go", timeout=5) == [
            ["a0:go", "a1:go"], ["a2:go", "a3:go"], "a0:go"]
        await asyncio.wait_for(rt.idle(), 5)
        assert sorted(log) == sorted([(f"a{i}", "go") for i in range(4)] + [("a0", "go")])


class Plain(Actor):
    """Handlers that are plain functions returning an awaitable (not a coroutine): a future
    set at once, one set a moment later, or one that fails; a publish whose handler raises
    after waiting."""

    def __init__(self) -> None:
        self.heard: list[Any] = []

    def handle_call(self, message: Any) -> Any:
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if message == "later":
            asyncio.get_running_loop().call_later(0.01, fut.set_result, "later!")
        elif message == "fail":
            fut.set_exception(KeyError("fail"))
        else:
            fut.set_result(f"{message}!")
        return fut

    async def handle_publish(self, topic: str, message: Any) -> None:
        await asyncio.sleep(0)
        self.heard.append(message)
        if message == "bad":
            raise ValueError("bad news")


async def test_a_batch_runs_handlers_that_return_any_awaitable() -> None:
    async with Runtime() as rt:
        actors = [Plain() for _ in range(3)]
        for i, actor in enumerate(actors):
            await rt.spawn(actor, f"p{i}")
            await rt.subscribe("news", f"p{i}")
        got = await rt.call_many(["p0", "p1", "p2"], "now")
        assert got == ["now!"] * 3
        assert await rt.call_many(["p0", "p1"], "later", timeout=5) == ["later!"] * 2
        got = await rt.call_many(["p2"], "fail", return_exceptions=True)
        assert isinstance(got[0], HandlerError) and got[0].exc_type == "KeyError"
        await rt.publish("news", "bad")
        await rt.publish("news", "good")
        await asyncio.wait_for(rt.idle(), 5)
        assert [a.heard for a in actors] == [["bad", "good"]] * 3
        assert rt.unhandled_errors == 3


class CollectorProbe(Actor):
    """Replies whether automatic garbage collection is on; "wait" first waits a loop step."""

    async def handle_call(self, message: Any) -> Any:
        if message == "wait":
            await asyncio.sleep(0)
        return gc.isenabled()


async def test_a_large_fan_out_pauses_the_collector_only_while_handlers_run_inline() -> None:
    count = PAUSE_GC_AT
    async with Runtime() as rt:
        refs = [await rt.spawn(CollectorProbe(), name=f"p{i}") for i in range(count)]
        assert gc.isenabled()
        assert await rt.call_many(refs, "now", timeout=30) == [False] * count
        assert gc.isenabled()  # back on once the fan-out returns
        assert await rt.call_many(iter(refs), "now", timeout=30) == [False] * count
        # a handler that waits ends the pause: the fan-out may take long now
        assert await rt.call_many(refs, "wait", timeout=30) == [True] * count
        assert await rt.call_many(refs[:10], "now", timeout=30) == [True] * 10  # small: no pause
        # a pause never turns on a collector that was off before
        gc.disable()
        try:
            await rt.call_many(refs, "now", timeout=30)
            assert not gc.isenabled()
        finally:
            gc.enable()
        # a caller cancelled mid-fan-out leaves the collector on
        task = asyncio.ensure_future(rt.call_many(refs, "wait", timeout=30))
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await rt.idle()
        assert gc.isenabled()


async def test_a_large_broadcast_pauses_the_collector_while_observers_run() -> None:
    seen: list[bool] = []

    class Observer(Actor):
        async def handle_publish(self, topic: str, message: Any) -> None:
            seen.append(gc.isenabled())

    async with Runtime() as rt:
        for i in range(PAUSE_GC_AT):
            await rt.subscribe("all", await rt.spawn(Observer(), name=f"o{i}"))
        await rt.publish("all", "hello")
        await rt.idle()
        assert seen == [False] * PAUSE_GC_AT and gc.isenabled()


async def test_a_pause_ends_early_when_handlers_make_too_many_objects(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from agentplex.runtime import _fanout

    monkeypatch.setattr(_fanout, "PAUSE_GC_BUDGET", 50_000)
    kept: list[Any] = []

    class Hoarder(Actor):
        async def handle_call(self, message: Any) -> Any:
            kept.append([[] for _ in range(100)])  # 101 tracked objects, all alive
            return gc.isenabled()

    async with Runtime() as rt:
        refs = [await rt.spawn(Hoarder(), name=f"h{i}") for i in range(PAUSE_GC_AT)]
        collecting = await rt.call_many(refs, "go", timeout=30)
        assert collecting[:256] == [False] * 256  # paused at first
        assert collecting[-1] and collecting.index(True) <= 1024  # then back, in budget
        assert gc.isenabled()
