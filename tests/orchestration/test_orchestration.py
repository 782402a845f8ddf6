import asyncio

import pytest

from agentplex import (
    AgentBase,
    FanoutPipeline,
    Msg,
    MsgHub,
    Runtime,
    SequentialPipeline,
    TextBlock,
    ThinkingBlock,
    fanout_pipeline,
    sequential_pipeline,
    stream_printing_messages,
)

pytestmark = pytest.mark.anyio


class Member(AgentBase):
    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.heard: list[str] = []
        self.set_console_output_enabled(False)

    async def observe(self, msg: Msg | list[Msg] | None) -> None:
        assert isinstance(msg, Msg)
        self.heard.append(f"{msg.name}:{msg.get_text_content()}")
        if msg.has_content_blocks("thinking"):
            self.heard.append("LEAKED THINKING")

    async def reply(self, msg: Msg | None = None) -> Msg:
        text = f"{self.name} after {len(self.heard)}"
        out = Msg(self.name, [ThinkingBlock(thinking="secret"), TextBlock(text=text)],
                  "assistant")
        await self.print(out)
        return out


async def test_hub_participants_observe_each_others_replies_in_order() -> None:
    async with Runtime():
        a, b, c = Member("a"), Member("b"), Member("c")
        async with MsgHub([a, b, c], announcement=Msg("host", "start", "system")) as hub:
            await a()
            await b()
            await c()
            await hub.broadcast(Msg("host", "end", "system"))
        await a()  # after the hub: nobody hears it
        await asyncio.sleep(0.01)
    assert a.heard == ["host:start", "b:b after 2", "c:c after 3", "host:end"]
    assert b.heard == ["host:start", "a:a after 1", "c:c after 3", "host:end"]
    assert c.heard == ["host:start", "a:a after 1", "b:b after 2", "host:end"]


async def test_hub_add_and_delete_participants() -> None:
    async with Runtime():
        a, b, c = Member("a"), Member("b"), Member("c")
        async with MsgHub([a, b]) as hub:
            await a()
            await hub.add(c)
            await b()
            await hub.delete(a)
            await c()
        await asyncio.sleep(0.01)
    assert a.heard == ["b:b after 1"]
    assert b.heard == ["a:a after 0", "c:c after 1"]
    assert c.heard == ["b:b after 1"]


async def test_hub_without_auto_broadcast_shares_only_broadcasts() -> None:
    async with Runtime():
        a, b = Member("a"), Member("b")
        async with MsgHub([a, b], enable_auto_broadcast=False) as hub:
            await a()
            await hub.broadcast(Msg("host", "note", "system"))
        await asyncio.sleep(0.01)
    assert a.heard == ["host:note"] and b.heard == ["host:note"]


async def test_hub_auto_broadcast_can_be_switched() -> None:
    async with Runtime():
        a, b = Member("a"), Member("b")
        async with MsgHub([a, b]) as hub:
            await a()
            await hub.set_auto_broadcast(False)
            await b()  # not shared
            await hub.set_auto_broadcast(True)
            await a()
            await hub.broadcast(Msg("host", "note", "system"))
        await asyncio.sleep(0.01)
    assert b.heard == ["a:a after 0", "a:a after 0", "host:note"]
    assert a.heard == ["host:note"]


class Adder(AgentBase):
    def __init__(self, name: str, add: int) -> None:
        super().__init__(name)
        self.add = add
        self.set_console_output_enabled(False)

    async def reply(self, msg: Msg | None = None) -> Msg:
        assert msg is not None
        value = int(msg.get_text_content() or 0) + self.add
        msg.content = "mutated"  # must not leak into other agents' copies
        await asyncio.sleep(0)
        return Msg(self.name, str(value), "assistant")


async def test_sequential_pipeline_chains_replies() -> None:
    async with Runtime():
        agents = [Adder(f"a{i}", i) for i in range(1, 4)]
        out = await sequential_pipeline(agents, Msg("u", "0", "user"))
        assert out.get_text_content() == "6"
        again = await SequentialPipeline(agents)(Msg("u", "10", "user"))
        assert again.get_text_content() == "16"


async def test_fanout_pipeline_gives_each_agent_its_own_copy() -> None:
    async with Runtime():
        agents = [Adder(f"a{i}", i) for i in range(1, 4)]
        msg = Msg("u", "100", "user")
        replies = await fanout_pipeline(agents, msg)
        assert [r.get_text_content() for r in replies] == ["101", "102", "103"]
        assert msg.get_text_content() == "100"
        serial = await FanoutPipeline(agents, enable_gather=False)(msg)
        assert [r.get_text_content() for r in serial] == ["101", "102", "103"]


async def test_stream_printing_messages_yields_what_agents_print() -> None:
    async with Runtime():
        a, b = Member("a"), Member("b")
        seen = [(m.name, last) async for m, last in
                stream_printing_messages([a, b], sequential_pipeline([a, b]))]
    assert seen == [("a", True), ("b", True)]
