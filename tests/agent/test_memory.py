"""InMemoryMemory: dedup by id, marks, deletion, state."""

from __future__ import annotations

import json

import pytest

from agentplex.agent import InMemoryMemory
from agentplex.message import Msg, TextBlock, ThinkingBlock

pytestmark = pytest.mark.anyio


def msgs(n: int) -> list[Msg]:
    return [Msg("bob", f"m{i}", "user") for i in range(n)]


async def test_add_dedups_by_id_and_merges_marks() -> None:
    memory = InMemoryMemory()
    a, b = msgs(2)
    await memory.add(a)
    await memory.add([a, b], marks="seen")
    await memory.add(None)
    assert await memory.size() == 2 and len(memory) == 2
    assert [m.id for m in await memory.get_memory()] == [a.id, b.id]
    assert await memory.get_marks(a.id) == {"seen"}
    await memory.add(a, allow_duplicates=True)
    assert await memory.size() == 3
    with pytest.raises(TypeError):
        await memory.add(["not a msg"])  # type: ignore[list-item]


async def test_marks_select_update_and_delete() -> None:
    memory = InMemoryMemory()
    a, b, c = msgs(3)
    await memory.add(a)
    await memory.add(b, marks=["hint", "tmp"])
    await memory.add(c, marks="tmp")
    assert await memory.get_memory(mark="tmp") == [b, c]
    assert await memory.get_memory(exclude_mark="tmp") == [a]
    assert await memory.get_memory(mark="tmp", exclude_mark="hint") == [c]
    assert await memory.update_marks("important", [a.id, c.id]) == 2
    assert await memory.update_marks("important", [a.id]) == 0  # already marked
    assert await memory.get_memory(mark="important") == [a, c]
    assert await memory.update_marks("important", remove=True) == 2
    assert await memory.get_memory(mark="important") == []
    assert await memory.delete_by_mark("hint") == 1
    assert await memory.get_memory() == [a, c]
    assert await memory.delete([a.id, "missing"]) == 1
    assert await memory.get_memory() == [c]
    await memory.clear()
    assert await memory.size() == 0


async def test_state_round_trips_through_json() -> None:
    memory = InMemoryMemory()
    rich = Msg("ai", [ThinkingBlock(thinking="hmm"), TextBlock(text="hi")], "assistant",
               metadata={"k": 1})
    await memory.add([*msgs(2), rich], marks="x")
    state = json.loads(json.dumps(memory.state_dict()))
    restored = InMemoryMemory()
    restored.load_state_dict(state)
    assert await restored.get_memory() == await memory.get_memory()
    assert await restored.get_marks(rich.id) == {"x"}
    with pytest.raises(KeyError):
        InMemoryMemory().load_state_dict({})
