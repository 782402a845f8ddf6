"""Context-window management: token counts, truncation, summaries, formatters."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import anyio
import pytest

from agentplex.agent import ReActAgent, TruncationPolicy, turn_groups
from agentplex.message import Msg, TextBlock, ToolResultBlock, ToolUseBlock
from agentplex.model import (
    AnthropicMultiAgentFormatter,
    OpenAIChatFormatter,
    OpenAIMultiAgentFormatter,
    ScriptedChatModel,
)
from agentplex.model.lowlevel import estimate_text_tokens, estimate_tokens
from agentplex.runtime import Runtime

pytestmark = pytest.mark.anyio


class WordCounting(ScriptedChatModel):
    """A scripted model whose token count is exact: one token per word, counted here."""

    def __init__(self, script: Any) -> None:
        super().__init__(script)
        self.counts = 0

    async def count_tokens(self, messages: Sequence[Msg | dict[str, Any]],
                           tools: Sequence[dict[str, Any]] | None = None) -> int:
        self.counts += 1
        return sum(len((m.get_text_content() or "x").split()) + 2 for m in messages
                   if isinstance(m, Msg))


def turn(i: int) -> list[Msg]:
    """One user question, a tool call, its result and an answer: 4 messages, ~40 words."""
    words = " ".join(["word"] * 8)
    return [Msg("user", f"question {i} {words}", "user"),
            Msg("bot", [TextBlock(text=f"calling {words}"),
                        ToolUseBlock(id=f"c{i}", name="look", input={})], "assistant"),
            Msg("system", [ToolResultBlock(id=f"c{i}", name="look", output=f"found {i}")],
                "system"),
            Msg("bot", f"answer {i} {words}", "assistant")]


def history(n: int) -> list[Msg]:
    return [Msg("system", "You are helpful.", "system"), *[m for i in range(n) for m in turn(i)]]


def test_turn_groups_keep_calls_with_results() -> None:
    groups = turn_groups(history(2)[1:])
    assert [len(g) for g in groups] == [1, 2, 1, 1, 2, 1]
    assert all(not any(isinstance(b, ToolResultBlock) for b in g[0].get_content_blocks())
               for g in groups)


async def test_under_budget_nothing_changes() -> None:
    model = WordCounting(["ok"])
    prompt = history(2)
    assert await TruncationPolicy(10_000).fit(model, prompt) == prompt
    assert model.counts == 1


async def test_truncation_keeps_system_and_newest_turns() -> None:
    model = WordCounting(["ok"])
    prompt = history(10)
    total = await model.count_tokens(prompt)
    policy = TruncationPolicy(total // 3)
    kept = await policy.fit(model, prompt)
    assert kept[0] is prompt[0] and kept[-1] is prompt[-1]
    assert await model.count_tokens(kept) <= total // 3
    assert policy.dropped == len(prompt) - len(kept) > 0
    calls = {b.id for m in kept for b in m.get_content_blocks() if isinstance(b, ToolUseBlock)}
    answered = {b.id for m in kept for b in m.get_content_blocks()
                if isinstance(b, ToolResultBlock)}
    assert calls == answered  # no call without its result, no result without its call
    assert model.counts <= 4


async def test_text_known_to_fit_is_what_fit_keeps_whole() -> None:
    texts = [("system", "You are helpful."), ("user", "host: hello " * 5),
             ("user", "question é " * 9)]
    msgs = [Msg(name, text, "system" if name == "system" else "user") for name, text in texts]
    assert estimate_text_tokens(texts) == estimate_tokens(msgs)
    model = ScriptedChatModel(["ok"])  # counts by estimate
    total = estimate_tokens(msgs)
    for budget in (total - 1, total, total + 1):
        policy = TruncationPolicy(budget)
        policy.dropped = 7
        fits = policy.fits_as_text(model, texts)
        assert fits == (await TruncationPolicy(budget).fit(model, msgs) == msgs)
        assert policy.dropped == (0 if fits else 7)
    assert not TruncationPolicy(10_000).fits_as_text(WordCounting(["ok"]), texts)


async def test_the_newest_turn_is_kept_even_when_too_long() -> None:
    model = WordCounting(["ok"])
    kept = await TruncationPolicy(3).fit(model, history(3))
    assert kept[0].role == "system" and (kept[-1].get_text_content() or "").startswith("answer 2")


async def test_summaries_replace_what_is_dropped() -> None:
    model = WordCounting(["ok"])
    writer = ScriptedChatModel(["They asked 7 questions; every lookup succeeded."])
    prompt = history(8)
    policy = TruncationPolicy(await model.count_tokens(prompt) // 2, summarize=writer)
    kept = await policy.fit(model, prompt, agent_name="bot")
    assert kept[1].role == "system"
    assert "every lookup succeeded" in (kept[1].get_text_content() or "")
    asked = writer.calls[0]["messages"][0].get_text_content()
    assert "question 0" in asked and "'bot'" in asked
    again = await policy.fit(model, prompt, agent_name="bot")
    assert again[1] is kept[1] and len(writer.calls) == 1  # the same cut: summary reused


async def test_react_agent_truncates_its_prompt_not_its_memory() -> None:
    model = ScriptedChatModel(["first", "second"], cycle=True)
    async with Runtime():
        agent = ReActAgent("bot", "You are helpful.", model, max_input_tokens=60)
        agent.set_console_output_enabled(False)
        with anyio.fail_after(10):
            for i in range(6):
                await agent(Msg("user", f"message {i} " + "lorem ipsum " * 10, "user"))
    sent = model.calls[-1]["messages"]
    assert sent[0].role == "system" and sent[-1].get_text_content().startswith("message 5")
    assert len(sent) < 12 and estimate_tokens(sent) <= 60
    assert len(await agent.memory.get_memory()) == 12


def conversation() -> list[Msg]:
    return [Msg("system", "Referee.", "system"), Msg("alice", "rock", "assistant"),
            Msg("bob", "paper", "assistant"), Msg("bot", "Bob wins.", "assistant")]


async def test_multi_agent_formatter_puts_others_on_the_user_side() -> None:
    plain = await OpenAIChatFormatter().format(conversation(), agent_name="bot")
    assert [m["role"] for m in plain] == ["system", "assistant", "assistant", "assistant"]
    multi = await OpenAIMultiAgentFormatter().format(conversation(), agent_name="bot")
    assert multi == [{"role": "system", "content": "Referee."},
                     {"role": "user", "content": "alice: rock"},
                     {"role": "user", "content": "bob: paper"},
                     {"role": "assistant", "content": "bot: Bob wins."}]
    anthropic = await AnthropicMultiAgentFormatter().format(conversation(), agent_name="bot")
    assert anthropic[0] == {"role": "system", "content": "Referee."}
    assert [m["role"] for m in anthropic[1:]] == ["user", "assistant"]


async def test_react_agent_takes_a_formatter() -> None:
    model = ScriptedChatModel(["Bob wins."])
    async with Runtime():
        agent = ReActAgent("bot", "Referee.", model, formatter=OpenAIMultiAgentFormatter())
        agent.set_console_output_enabled(False)
        await agent.observe([Msg("alice", "rock", "assistant"), Msg("bob", "paper", "assistant")])
        with anyio.fail_after(10):
            await agent(Msg("carol", "Who wins?", "user"))
    sent = model.calls[0]["messages"]
    assert [(m.name, m.role) for m in sent] == [("system", "system"), ("alice", "user"),
                                                ("bob", "user"), ("carol", "user")]
