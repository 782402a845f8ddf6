"""ReActAgent driven by the scripted model: tools, streaming, parallel calls, interrupts,
max_iters, structured answers."""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncGenerator
from typing import Any

import anyio
import pytest
from pydantic import BaseModel

from agentplex.agent import FINISH_TOOL, AgentBase, ReActAgent
from agentplex.message import Msg, TextBlock, ThinkingBlock, ToolResultBlock, ToolUseBlock
from agentplex.model import ChatModelBase, ChatResponse, ScriptedChatModel
from agentplex.orchestration import MsgHub
from agentplex.runtime import Runtime
from agentplex.tool import Toolkit

pytestmark = pytest.mark.anyio


def use(name: str, call_id: str = "t1", **kwargs: Any) -> ToolUseBlock:
    return ToolUseBlock(id=call_id, name=name, input=kwargs)


def add(a: int, b: int) -> int:
    """Add two integers.

    Args:
        a: the first
        b: the second
    """
    return a + b


def make(model: ChatModelBase, toolkit: Toolkit | None = None, **kwargs: Any) -> ReActAgent:
    agent = ReActAgent("bot", "You are helpful.", model, toolkit=toolkit, **kwargs)
    agent.set_console_output_enabled(False)
    return agent


def texts(messages: list[Any]) -> list[str]:
    return [m.get_text_content() or "" for m in messages]


def results(messages: list[Msg]) -> list[ToolResultBlock]:
    return [b for m in messages for b in m.get_content_blocks("tool_result")]


async def test_tool_call_then_final_answer() -> None:
    toolkit = Toolkit()
    toolkit.register_tool_function(add)
    model = ScriptedChatModel([[TextBlock(text="Let me add."), use("add", a=2, b=3)],
                               "The sum is 5."])
    async with Runtime():
        agent = make(model, toolkit)
        with anyio.fail_after(10):
            reply = await agent(Msg("user", "What is 2 + 3?", "user"))
    assert (reply.name, reply.role, reply.get_text_content()) == ("bot", "assistant",
                                                                    "The sum is 5.")
    first, second = model.calls
    assert [t["function"]["name"] for t in first["tools"]] == ["add"]
    assert first["messages"][0].role == "system"
    assert first["messages"][0].get_text_content() == "You are helpful."
    (result,) = results(second["messages"])
    assert (result.id, result.output, result.is_error) == ("t1", "5", False)
    memory = await agent.memory.get_memory()
    assert texts(memory) == ["What is 2 + 3?", "Let me add.", "", "The sum is 5."]
    assert memory[1].has_content_blocks("tool_use")
    assert memory[-1].id == reply.id
    assert agent.model_calls == 2 and agent.usage.output_tokens > 0


async def test_tool_errors_are_fed_back_not_raised() -> None:
    def explode() -> str:
        """Explode."""
        raise RuntimeError("boom")

    toolkit = Toolkit()
    toolkit.register_tool_function(explode)
    model = ScriptedChatModel([use("explode"), use("missing", "t2"), "Both failed."])
    async with Runtime():
        agent = make(model, toolkit)
        with anyio.fail_after(10):
            reply = await agent(Msg("user", "go", "user"))
    assert reply.get_text_content() == "Both failed."
    boom, missing = results(await agent.memory.get_memory())
    assert boom.is_error and boom.output == "Error: RuntimeError: boom"
    assert missing.is_error and "no tool named 'missing'" in str(missing.output)


async def test_streams_reasoning_and_keeps_thinking_private() -> None:
    model = ScriptedChatModel([[ThinkingBlock(thinking="they want a greeting"),
                                TextBlock(text="Hello there, friend.")]], stream=True)
    seen: list[Msg] = []

    class Listener(AgentBase):
        async def observe(self, msg: Msg | list[Msg] | None) -> None:
            if isinstance(msg, Msg):
                seen.append(msg)

    queue: asyncio.Queue[tuple[Msg, bool]] = asyncio.Queue()
    async with Runtime() as rt:
        agent = make(model)
        agent.set_msg_queue(queue)
        listener = Listener("listener")
        async with MsgHub([agent, listener]):
            with anyio.fail_after(10):
                reply = await agent(Msg("user", "hi", "user"))
        with anyio.fail_after(10):
            await rt.idle()
    printed = []
    while not queue.empty():
        printed.append(queue.get_nowait())
    assert len(printed) > 2
    assert len({m.id for m, _ in printed}) == 1
    assert [last for _, last in printed] == [False] * (len(printed) - 1) + [True]
    assert texts([m for m, _ in printed])[-1] == "Hello there, friend."
    assert not reply.has_content_blocks("thinking")
    assert reply.get_text_content() == "Hello there, friend."
    (remembered,) = [m for m in await agent.memory.get_memory() if m.role == "assistant"]
    assert remembered.get_content_blocks("thinking")[0].thinking == "they want a greeting"
    assert [m.get_text_content() for m in seen] == ["Hello there, friend."]
    assert not seen[0].has_content_blocks("thinking")


def handshake_toolkit(timeout: float) -> Toolkit:
    """Two tools that each need the other to be running at the same time."""
    ping_seen, pong_seen = asyncio.Event(), asyncio.Event()

    async def ping() -> str:
        """Ping."""
        ping_seen.set()
        await pong_seen.wait()
        return "ping done"

    async def pong() -> str:
        """Pong."""
        pong_seen.set()
        await ping_seen.wait()
        return "pong done"

    toolkit = Toolkit(timeout=timeout)
    toolkit.register_tool_function(ping)
    toolkit.register_tool_function(pong)
    return toolkit


async def test_parallel_tool_calls_run_concurrently() -> None:
    model = ScriptedChatModel([[use("ping", "a"), use("pong", "b")], "done"])
    async with Runtime():
        agent = make(model, handshake_toolkit(timeout=30), parallel_tool_calls=True)
        with anyio.fail_after(20):
            reply = await agent(Msg("user", "go", "user"))
    assert reply.get_text_content() == "done"
    got = results(model.calls[1]["messages"])
    assert [(r.id, r.output, r.is_error) for r in got] == [("a", "ping done", False),
                                                          ("b", "pong done", False)]


async def test_sequential_tool_calls_run_one_after_another() -> None:
    model = ScriptedChatModel([[use("ping", "a"), use("pong", "b")], "done"])
    async with Runtime():
        agent = make(model, handshake_toolkit(timeout=0.2))
        with anyio.fail_after(20):
            await agent(Msg("user", "go", "user"))
    ping, pong = results(model.calls[1]["messages"])
    assert ping.is_error and "timed out" in str(ping.output)  # pong never ran meanwhile
    assert (pong.output, pong.is_error) == ("pong done", False)


async def test_interrupt_mid_tool_closes_every_pending_call() -> None:
    started = asyncio.Event()

    async def quick() -> str:
        """Quick."""
        return "quick done"

    async def hang(label: str) -> str:
        """Hang."""
        started.set()
        await asyncio.Event().wait()
        return label

    toolkit = Toolkit()
    toolkit.register_tool_function(quick)
    toolkit.register_tool_function(hang)
    model = ScriptedChatModel([
        [use("quick", "q"), use("hang", "h1", label="x"), use("hang", "h2", label="y")],
        "Back again.",
    ])
    async with Runtime():
        agent = make(model, toolkit, parallel_tool_calls=True)
        task = asyncio.ensure_future(agent(Msg("user", "go", "user")))
        with anyio.fail_after(10):
            await started.wait()
            assert await agent.interrupt()
            reply = await task
        assert reply.metadata == {"interrupted": True}
        assert "interrupted" in (reply.get_text_content() or "")
        assert "hang" in (reply.get_text_content() or "")
        memory = await agent.memory.get_memory()
        closed = {r.id: r for r in results(memory)}
        assert set(closed) == {"q", "h1", "h2"}
        assert (closed["q"].output, closed["q"].is_error) == ("quick done", False)
        for call_id in ("h1", "h2"):
            assert closed[call_id].is_error and "interrupted" in str(closed[call_id].output)
        assert memory[-1].id == reply.id

        with anyio.fail_after(10):
            after = await agent(Msg("user", "continue", "user"))
    assert after.get_text_content() == "Back again."
    history = model.calls[1]["messages"]
    used = [b.id for m in history for b in m.get_content_blocks("tool_use")]
    answered = [b.id for m in history for b in m.get_content_blocks("tool_result")]
    assert sorted(used) == sorted(answered) == ["h1", "h2", "q"]


async def test_max_iters_summarises_instead_of_failing() -> None:
    toolkit = Toolkit()
    toolkit.register_tool_function(add)

    def script(messages: list[Msg], tools: Any = None, **_: Any) -> Any:
        if tools:
            return use("add", f"t{len(messages)}", a=1, b=1)
        return "I kept adding; the answer so far is 2."

    model = ScriptedChatModel(script)
    async with Runtime():
        agent = make(model, toolkit, max_iters=3)
        with anyio.fail_after(10):
            reply = await agent(Msg("user", "loop", "user"))
    assert reply.get_text_content() == "I kept adding; the answer so far is 2."
    assert len(model.calls) == 4
    last = model.calls[-1]
    assert last["tools"] is None
    assert "summarising" in (last["messages"][-1].get_text_content() or "")
    memory = await agent.memory.get_memory()
    assert memory[-1].id == reply.id
    assert "summarising" not in " ".join(texts(memory))  # the hint is not remembered


class Guess(BaseModel):
    number: int
    reason: str


async def test_structured_answer_through_the_finishing_tool() -> None:
    model = ScriptedChatModel([
        "I guess 33.",
        use(FINISH_TOOL, "f1", number="many", reason="x"),
        [TextBlock(text="My guess is 33."), use(FINISH_TOOL, "f2", number=33, reason="2/3")],
    ])
    async with Runtime():
        agent = make(model, structured_model=Guess)
        with anyio.fail_after(10):
            reply = await agent(Msg("user", "Guess a number.", "user"))
    assert reply.metadata == {"number": 33, "reason": "2/3"}
    assert reply.get_text_content() == "My guess is 33."
    finishing = model.calls[0]["tools"][-1]["function"]
    assert finishing["name"] == FINISH_TOOL
    assert finishing["parameters"]["required"] == ["number", "reason"]
    assert "generate_response" in (model.calls[1]["messages"][-1].get_text_content() or "")
    rejected = results(model.calls[2]["messages"])
    assert rejected[0].is_error and "does not fit the schema" in str(rejected[0].output)
    hints = [m for m in model.calls[2]["messages"] if "system-hint" in (m.get_text_content()
                                                                          or "")]
    assert hints == []  # the hint was dropped after the step it was for


async def test_structured_answer_at_max_iters_uses_the_models_structured_output() -> None:
    def script(messages: list[Msg], tools: Any = None, structured_model: Any = None,
               **_: Any) -> Any:
        if structured_model is not None:
            return '{"number": 21, "reason": "ran out of steps"}'
        return use("add", f"t{len(messages)}", a=1, b=2)

    toolkit = Toolkit()
    toolkit.register_tool_function(add)
    model = ScriptedChatModel(script)
    async with Runtime():
        agent = make(model, toolkit, max_iters=1)
        with anyio.fail_after(10):
            reply = await agent(Msg("user", "Guess.", "user"), structured_model=Guess)
    assert reply.metadata == {"number": 21, "reason": "ran out of steps"}
    assert model.calls[-1]["structured_model"] is Guess


async def test_structured_answer_never_given_is_summarised_without_leftover_hints() -> None:
    model = ScriptedChatModel(["Maybe 10.", "Maybe 12.", '{"number": 12, "reason": "guess"}'])
    async with Runtime():
        agent = make(model, structured_model=Guess, max_iters=2)
        with anyio.fail_after(10):
            reply = await agent(Msg("user", "Guess.", "user"))
    assert reply.metadata == {"number": 12, "reason": "guess"}
    assert len(model.calls) == 3
    assert not [m for m in await agent.memory.get_memory()
                if "system-hint" in (m.get_text_content() or "")]


async def test_console_shows_text_tool_calls_and_results() -> None:
    toolkit = Toolkit()
    toolkit.register_tool_function(add)
    model = ScriptedChatModel([[TextBlock(text="Adding."), use("add", a=2, b=3)],
                               [ThinkingBlock(thinking="private"), TextBlock(text="It is 5.")]],
                              stream=True)
    async with Runtime():
        agent = ReActAgent("bot", "sys", model, toolkit=toolkit)
        agent.console = io.StringIO()
        with anyio.fail_after(10):
            await agent(Msg("user", "2+3?", "user"))
    assert agent.console.getvalue().splitlines() == [
        "bot: Adding.", '→ add({"a": 2, "b": 3})', "system: ← add: 5", "bot: It is 5."]


async def test_observe_and_state() -> None:
    toolkit = Toolkit()
    toolkit.create_tool_group("math", active=True, notes="Show your working.")
    model = ScriptedChatModel(["ok"])
    async with Runtime():
        agent = make(model, toolkit)
        with anyio.fail_after(10):
            await agent.observe(Msg("alice", "I like 7.", "user"))
            await agent(Msg("user", "What does alice like?", "user"))
    assert "I like 7." in texts(model.calls[0]["messages"])
    assert texts(model.calls[0]["messages"])[0] == "You are helpful.\n\n## math\nShow your working."
    state = agent.state_dict()
    assert state["sys_prompt"] == "You are helpful."
    assert state["toolkit"] == {"active_groups": ["basic", "math"]}
    assert len(state["memory"]["content"]) == 3


class StallingModel(ChatModelBase):
    """Streams the start of an answer, then never finishes (until interrupted)."""

    def __init__(self) -> None:
        super().__init__("stalling", stream=True)
        self.streaming = asyncio.Event()

    async def _call(self, messages: Any, tools: Any = None, tool_choice: Any = None,
                       structured_model: Any = None, **kwargs: Any) -> Any:
        async def chunks() -> AsyncGenerator[ChatResponse, None]:
            text = [TextBlock(text="Let me think about")]
            yield ChatResponse(content=text, delta=text, is_last=False)
            self.streaming.set()
            await asyncio.Event().wait()
            yield ChatResponse(content=text)

        return chunks()


async def test_interrupt_mid_reasoning_keeps_what_was_said() -> None:
    model = StallingModel()
    async with Runtime():
        agent = make(model)
        task = asyncio.ensure_future(agent(Msg("user", "hard question", "user")))
        with anyio.fail_after(10):
            await model.streaming.wait()
            assert await agent.interrupt()
            reply = await task
    assert reply.metadata == {"interrupted": True}
    assert texts(await agent.memory.get_memory()) == [
        "hard question", "Let me think about", reply.get_text_content()]
