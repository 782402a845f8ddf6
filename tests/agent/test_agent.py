import asyncio
import io
from typing import Any

import pytest

from agentplex import AgentBase, AgentCall, Msg, Runtime
from agentplex.agent import Next

pytestmark = pytest.mark.anyio


class Diary(AgentBase):
    """Writes every message into its memory; replying takes a few scheduler turns."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.memory: list[str] = []
        self.register_state("memory")
        self.started = asyncio.Event()
        self.release = asyncio.Event()
        self.release.set()

    async def observe(self, msg: Msg | list[Msg] | None) -> None:
        if isinstance(msg, Msg):
            self.memory.append(msg.get_text_content() or "")

    async def reply(self, msg: Msg | None = None) -> Msg:
        text = msg.get_text_content() if msg is not None else ""
        self.memory.append(f"in:{text}")
        self.started.set()
        await self.release.wait()
        for _ in range(3):
            await asyncio.sleep(0)
        self.memory.append(f"out:{text}")
        return Msg(self.name, f"echo {text}", "assistant")


async def test_awaiting_the_agent_goes_through_its_mailbox() -> None:
    async with Runtime():
        agent = Diary("d")
        agent.set_console_output_enabled(False)
        replies = await asyncio.gather(*(agent(Msg("u", str(i), "user")) for i in range(5)))
        assert [r.get_text_content() for r in replies] == [f"echo {i}" for i in range(5)]
        # Two callers never interleave the agent's memory.
        assert agent.memory == [x for i in range(5) for x in (f"in:{i}", f"out:{i}")]


async def test_observe_from_outside_is_serialised_with_replies() -> None:
    async with Runtime():
        agent = Diary("d")
        agent.release.clear()
        call = asyncio.ensure_future(agent(Msg("u", "a", "user")))
        await asyncio.wait_for(agent.started.wait(), 5)
        seen = asyncio.ensure_future(agent.observe(Msg("u", "seen", "user")))
        await asyncio.sleep(0.01)
        assert not seen.done()  # waits for the reply in progress
        agent.release.set()
        await asyncio.wait_for(asyncio.gather(call, seen), 5)
        assert agent.memory == ["in:a", "out:a", "seen"]


async def test_middleware_runs_in_onion_order_and_can_rewrite() -> None:
    order: list[str] = []

    def tracer(tag: str) -> Any:
        async def mw(call: AgentCall, next: Next) -> Any:
            order.append(f"{tag}>{call.method}")
            result = await next(call)
            order.append(f"{tag}<{call.method}")
            return result
        return mw

    async def shout(call: AgentCall, next: Next) -> Any:
        if call.method == "reply":
            call.args = (Msg("u", call.msg.get_text_content().upper(), "user"),)
        return await next(call)

    async with Runtime():
        agent = Diary("d")
        agent.use(tracer("outer"))
        agent.use(tracer("inner"))
        agent.use(shout)
        reply = await agent(Msg("u", "hi", "user"))
        await agent.observe(Msg("u", "x", "user"))
    assert reply.get_text_content() == "echo HI"
    assert order == ["outer>reply", "inner>reply", "inner<reply", "outer<reply",
                     "outer>observe", "inner>observe", "inner<observe", "outer<observe"]


async def test_middleware_can_short_circuit() -> None:
    async def cached(call: AgentCall, next: Next) -> Any:
        return Msg("cache", "from cache", "assistant")

    async with Runtime():
        agent = Diary("d")
        agent.use(cached)
        reply = await agent(Msg("u", "hi", "user"))
    assert reply.get_text_content() == "from cache"
    assert agent.memory == []


async def test_interrupt_returns_the_interrupt_reply() -> None:
    async with Runtime():
        agent = Diary("d")
        agent.release.clear()
        call = asyncio.ensure_future(agent(Msg("u", "long", "user")))
        await asyncio.wait_for(agent.started.wait(), 5)
        assert await agent.interrupt()
        reply = await asyncio.wait_for(call, 5)
        assert reply.metadata == {"interrupted": True}
        agent.release.set()
        assert (await agent(Msg("u", "next", "user"))).get_text_content() == "echo next"
        assert not await agent.interrupt()


async def test_handler_errors_reach_the_caller() -> None:
    class Broken(AgentBase):
        async def reply(self, msg: Msg | None = None) -> Msg:
            raise KeyError("missing")

    from agentplex import HandlerError

    async with Runtime():
        with pytest.raises(HandlerError, match="KeyError"):
            await Broken("b")(Msg("u", "x", "user"))


async def test_state_dict_round_trip() -> None:
    async with Runtime():
        agent = Diary("d")
        await agent(Msg("u", "one", "user"))
        state = agent.state_dict()
        clone = Diary("clone")
        clone.load_state_dict(state)
        assert clone.memory == agent.memory
        with pytest.raises(KeyError):
            clone.load_state_dict({})
        clone.load_state_dict({}, strict=False)


async def test_print_streams_to_console_queue_and_stream() -> None:
    class Streamer(AgentBase):
        async def reply(self, msg: Msg | None = None) -> Msg:
            out = Msg(self.name, "", "assistant")
            for word in ["Hello", " there"]:
                out.content = str(out.content) + word
                await self.print(out, last=False)
            await self.print(out, last=True)
            return out

    console = io.StringIO()
    async with Runtime():
        agent = Streamer("s")
        agent.console = console
        queue: asyncio.Queue[tuple[Msg, bool]] = asyncio.Queue()
        agent.set_msg_queue(queue)
        ref = await agent.ensure_spawned()
        items = [item async for item in ref.stream(Msg("u", "go", "user"), timeout=5)]
    assert console.getvalue() == "s: Hello there\n"
    assert [(m.get_text_content(), last) for m, last in items] == [
        ("Hello", False), ("Hello there", False), ("Hello there", True)]
    assert queue.qsize() == 3


async def test_agents_join_the_current_runtime_on_first_use() -> None:
    async with Runtime() as rt:
        agent = Diary("solo")
        assert not agent.spawned
        await agent(Msg("u", "x", "user"))
        assert agent.spawned and "solo" in rt
        twin = Diary("solo")
        await twin(Msg("u", "y", "user"))
        assert twin.ref.name != "solo"  # the name was taken; the twin got a unique one
