"""AgentBase.ensure_spawned_many: one batch, the names ensure_spawned would give."""

import pytest

from agentplex import AgentBase, MsgHub, Runtime, fanout_pipeline
from agentplex.message import Msg

pytestmark = pytest.mark.anyio


class Echo(AgentBase):
    async def reply(self, msg: Msg | None = None) -> Msg:
        return Msg(self.name, f"{self.name} heard {msg.get_text_content() if msg else ''}",
                   "assistant")


async def test_agents_join_as_one_batch_under_the_names_ensure_spawned_gives() -> None:
    async with Runtime():
        taken = Echo("bob")
        await taken.ensure_spawned()
        agents = [Echo("ann"), Echo("bob"), Echo("ann"), Echo("cy")]
        await AgentBase.ensure_spawned_many([*agents, agents[0]])  # listed twice: once
        names = [a.ref.name for a in agents]
        assert names == ["ann", f"bob#{agents[1].id}", f"ann#{agents[2].id}", "cy"]
        await AgentBase.ensure_spawned_many(agents)  # all spawned: nothing to do
        assert [a.ref.name for a in agents] == names


async def test_a_hub_and_a_fan_out_spawn_their_agents_in_one_batch() -> None:
    calls: list[int] = []
    async with Runtime() as rt:
        real = rt.spawn_many

        async def counting(actors, names, **kwargs):  # type: ignore[no-untyped-def]
            calls.append(len(actors))
            await real(actors, names, **kwargs)

        rt.spawn_many = counting  # type: ignore[method-assign]
        voters = [Echo(f"v{i}") for i in range(50)]
        async with MsgHub(voters, enable_auto_broadcast=False):
            pass
        extra = [Echo(f"x{i}") for i in range(20)]
        replies = await fanout_pipeline([*voters, *extra], Msg("host", "go", "user"))
        assert [r.get_text_content() for r in replies] == [
            f"{a.name} heard go" for a in [*voters, *extra]]
        assert calls == [50, 20]
