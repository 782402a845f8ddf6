"""Sessions: save agents to JSON, build new agents, load, resume where they were."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import anyio
import pytest

from agentplex.agent import InMemoryMemory, ReActAgent, load_session, save_session
from agentplex.message import Msg, TextBlock, ThinkingBlock
from agentplex.model import ScriptedChatModel
from agentplex.runtime import Runtime
from agentplex.tool import Toolkit

pytestmark = pytest.mark.anyio


def lookup(word: str) -> str:
    """Look a word up."""
    return word[::-1]


def build(name: str, model: ScriptedChatModel, prompt: str = "You play a game.") -> ReActAgent:
    toolkit = Toolkit()
    toolkit.create_tool_group("dictionary", "word tools")
    toolkit.register_tool_function(lookup, group_name="dictionary")
    agent = ReActAgent(name, prompt, model, toolkit=toolkit)
    agent.set_console_output_enabled(False)
    return agent


def history_texts(call: dict[str, Any]) -> list[str]:
    return [m.get_text_content() or "" for m in call["messages"]]


async def test_save_restart_and_resume(tmp_path: Path) -> None:
    path = tmp_path / "runs" / "game.json"
    async with Runtime():
        alice = build("alice", ScriptedChatModel([[ThinkingBlock(thinking="secret plan"),
                                                   TextBlock(text="I pick 30.")]]))
        bob = build("bob", ScriptedChatModel(["I pick 20."]))
        alice.toolkit.update_tool_groups(["dictionary"], active=True)
        alice.sys_prompt = "You play round 2."
        with anyio.fail_after(10):
            await alice(Msg("host", "Round 1: pick a number.", "user"))
            await bob(Msg("host", "Round 1: pick a number.", "user"))
        notes = InMemoryMemory()
        await notes.add(Msg("host", "round 1 over", "system"), marks="log")
        saved = save_session(path, alice, bob, notes=notes, metadata={"round": 1})
    assert saved == path and path.exists()
    assert not list(path.parent.glob(".*.tmp"))
    data = json.loads(path.read_text())
    assert set(data["modules"]) == {"alice", "bob", "notes"}

    # a "new process": fresh agents, fresh models, then resume from the file
    async with Runtime():
        alice2 = build("alice", ScriptedChatModel(["Round 2: I pick 25."]))
        bob2 = build("bob", ScriptedChatModel(["Round 2: I pick 15."]))
        notes2 = InMemoryMemory()
        assert load_session(path, alice2, bob2, notes=notes2) == {"round": 1}
        assert alice2.sys_prompt == "You play round 2."
        assert alice2.toolkit.active_groups() == ["basic", "dictionary"]
        assert bob2.toolkit.active_groups() == ["basic"]
        assert [m.id for m in await alice2.memory.get_memory()] == [
            m.id for m in await alice.memory.get_memory()]
        assert await notes2.get_memory(mark="log") == await notes.get_memory()
        with anyio.fail_after(10):
            reply = await alice2(Msg("host", "Round 2: pick again.", "user"))
    assert reply.get_text_content() == "Round 2: I pick 25."
    (call,) = alice2.model.calls  # type: ignore[attr-defined]
    assert history_texts(call) == ["You play round 2.", "Round 1: pick a number.", "I pick 30.",
                                   "Round 2: pick again."]
    remembered = call["messages"][2]
    assert remembered.get_content_blocks("thinking")[0].thinking == "secret plan"
    assert [t["function"]["name"] for t in call["tools"]] == ["lookup"]


async def test_strictness_and_bad_files(tmp_path: Path) -> None:
    path = tmp_path / "s.json"
    memory = InMemoryMemory()
    save_session(path, mem=memory)
    other = InMemoryMemory()
    with pytest.raises(KeyError, match="no state for 'other'"):
        load_session(path, other=other)
    assert load_session(path, other=other, strict=False) == {}
    with pytest.raises(TypeError):
        save_session(path, memory)  # no name: must be passed as a keyword
    async with Runtime():
        a1 = build("a", ScriptedChatModel(["x"]))
        a2 = build("a", ScriptedChatModel(["x"]))
        with pytest.raises(ValueError, match="two modules are named 'a'"):
            save_session(path, a1, a2)
        save_session(path, a1)
        a1.toolkit.create_tool_group("extra", active=True)
        save_session(path, a1)
        with pytest.raises(KeyError, match="no tool groups"):
            load_session(path, a2)
    (tmp_path / "bad.json").write_text(json.dumps({"format": 99}))
    with pytest.raises(ValueError, match="not a session file"):
        load_session(tmp_path / "bad.json")
