"""A fan-out that gives each actor its own message (``call_many(refs, PerActor(messages))``),
in one process and through a transport, and ``spawn_many`` giving back the refs."""

import asyncio
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
    NameRange,
    PerActor,
    Runtime,
)

pytestmark = pytest.mark.anyio


class Echo(Actor):
    """Answers ``(its name, the message)``; ``"boom"`` raises, ``"hang"`` never ends, a
    list is answered with its length (it is one message)."""

    def __init__(self) -> None:
        self.seen: list[Any] = []

    async def handle_call(self, message: Any) -> Any:
        self.seen.append(message)
        if message == "boom":
            raise ValueError("boom requested")
        if message == "hang":
            await asyncio.Event().wait()
        if message == "yield":
            await asyncio.sleep(0)
        if isinstance(message, list):
            return len(message)
        return (self.ref.name, message)


async def test_each_actor_gets_its_own_message_and_replies_keep_the_order() -> None:
    async with Runtime() as rt:
        refs = await rt.spawn_many([Echo() for _ in range(300)], NameRange("e", 0, 300))
        messages = [f"m{i}" for i in range(300)]
        with pytest.raises(ValueError, match="3 messages for 300 actors"):
            await rt.call_many(refs, PerActor(["a", "b", "c"]), timeout=5)
        got = await rt.call_many(refs, PerActor(messages), timeout=5)
        assert got == [(f"e{i}", f"m{i}") for i in range(300)]
        # names in another order, handlers that wait a step: the same
        order = list(reversed(range(300)))
        got = await rt.call_many([f"e{i}" for i in order],
                                 PerActor(["yield"] * 300), timeout=5)
        assert got == [(f"e{i}", "yield") for i in order]
        # a plain list is one message for all
        assert await rt.call_many(refs[:3], [1, 2], timeout=5) == [2, 2, 2]
        assert await rt.call_many(refs[:3], PerActor([[1], [1, 2], []]), timeout=5) == [1, 2, 0]


async def test_per_actor_errors_in_place_and_copies() -> None:
    async with Runtime() as rt:
        actors = [Echo() for _ in range(4)]
        refs = await rt.spawn_many(actors, ["a", "b", "c", "d"])
        await rt.stop("d")
        got = await rt.call_many([*refs, "ghost"], PerActor(["x", "boom", "hang", "y", "z"]),
                                 timeout=0.5, return_exceptions=True)
        assert got[0] == ("a", "x")
        assert isinstance(got[1], HandlerError) and got[1].actor == "b"
        assert isinstance(got[2], CallTimeout)
        assert isinstance(got[3], ActorStopped)
        assert isinstance(got[4], ActorNotFound)
        with pytest.raises(HandlerError):
            await rt.call_many(refs[:2], PerActor(["x", "boom"]), timeout=5)
        payloads = [{"n": 1}, {"n": 2}]
        await rt.call_many(refs[:2], PerActor(payloads), timeout=5, copy_message=True)
        assert actors[0].seen[-1] == {"n": 1} and actors[0].seen[-1] is not payloads[0]
        await rt.call_many(refs[:2], PerActor(payloads), timeout=5)
        assert actors[1].seen[-1] is payloads[1]


async def test_per_actor_messages_through_a_transport() -> None:
    net = InProcessNetwork()
    async with Runtime(transport=InProcessTransport(net)) as a, \
            Runtime(transport=InProcessTransport(net)) as b:
        await a.spawn_many([Echo(), Echo()], ["here0", "here1"])
        await b.spawn_many([Echo(), Echo()], ["there0", "there1"])
        names = ["there1", "here0", "nowhere", "there0", "here1"]
        got = await a.call_many(names, PerActor(f"to {n}" for n in names), timeout=5,
                                return_exceptions=True)
        assert isinstance(got[2], ActorNotFound)
        assert [g for i, g in enumerate(got) if i != 2] == [
            (n, f"to {n}") for i, n in enumerate(names) if i != 2]


async def test_per_actor_slices_are_per_actor() -> None:
    messages = PerActor(iter(range(10)))
    assert len(messages) == 10 and messages[3] == 3 and list(messages) == list(range(10))
    window = messages[2:5]
    assert isinstance(window, PerActor) and list(window) == [2, 3, 4]


async def test_spawn_many_returns_the_refs_in_order() -> None:
    async with Runtime() as rt:
        refs = await rt.spawn_many([Echo() for _ in range(3)], ["x", "y", "z"])
        assert [r.name for r in refs] == ["x", "y", "z"]
        assert refs[1] == rt.ref("y")
        ranged = await rt.spawn_many([Echo() for _ in range(5)], NameRange("p", 10, 15))
        assert [r.name for r in ranged] == [f"p{i}" for i in range(10, 15)]
        assert await ranged[4].call("hi", timeout=5) == ("p14", "hi")
