"""Keeping an agent's prompt inside the model's context window: :class:`TruncationPolicy`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..message import Msg, ToolResultBlock, ToolUseBlock
from ..model import ChatModelBase, collect
from ..model.lowlevel import TokenCounting, estimate_text_tokens, estimate_tokens

__all__ = ["TruncationPolicy", "turn_groups"]

SUMMARY_PROMPT = (
    "Summarise the conversation below for the participant {name!r}, who will continue it "
    "without seeing it again. Keep facts, decisions, open questions and tool results that "
    "matter; be brief.\n\n{conversation}"
)


def turn_groups(messages: Sequence[Msg]) -> list[list[Msg]]:
    """``messages`` cut into groups that must stay together: a turn that calls tools and
    the messages holding those calls' results form one group."""
    groups: list[list[Msg]] = []
    open_calls: set[str] = set()
    for msg in messages:
        blocks = msg.get_content_blocks()
        results = {b.id for b in blocks if isinstance(b, ToolResultBlock)}
        if groups and open_calls & results:
            groups[-1].append(msg)
            open_calls -= results
        else:
            groups.append([msg])
            open_calls = set()
        open_calls |= {b.id for b in blocks if isinstance(b, ToolUseBlock)}
    return groups


class TruncationPolicy:
    """Fit a prompt into ``max_input_tokens``: keep the leading system messages and the
    newest turns, drop the oldest, never split a tool call from its result.

    Counting uses the model's own ``count_tokens`` (the provider's count endpoint or
    tokenizer where it has one) for the whole prompt, and per-message estimates scaled to
    that count to choose what to drop, so one fit costs one or two counts, not one per
    message. With ``summarize`` (``True``: the agent's model, or another model), what is
    dropped is replaced by a short summary written by that model; the summary is reused
    while the dropped part stays the same and extended when it grows. The newest turn is
    always kept, even if it alone is too long.
    """

    def __init__(self, max_input_tokens: int, *, summarize: bool | ChatModelBase = False,
                 summary_tokens: int = 256, max_rounds: int = 4) -> None:
        if max_input_tokens < 1:
            raise ValueError("max_input_tokens must be at least 1")
        self.max_input_tokens = max_input_tokens
        self.summarize = summarize
        self.summary_tokens = summary_tokens
        """Budget kept free for the summary (at most a quarter of the window)."""
        self.max_rounds = max_rounds
        self.dropped = 0
        """Messages left out of the last prompt fitted."""
        self._summary: tuple[tuple[str, ...], Msg] | None = None

    async def fit(self, model: ChatModelBase, messages: Sequence[Msg],
                  tools: Sequence[dict[str, Any]] | None = None, *,
                  agent_name: str = "assistant") -> list[Msg]:
        """``messages`` (a prompt: system messages first) cut to fit ``model``."""
        prompt = list(messages)
        total = await model.count_tokens(prompt, tools)
        self.dropped = 0
        if total <= self.max_input_tokens:
            return prompt
        lead = 0
        while lead < len(prompt) and prompt[lead].role == "system" and not any(
                isinstance(b, ToolResultBlock) for b in prompt[lead].get_content_blocks()):
            lead += 1
        system, groups = prompt[:lead], turn_groups(prompt[lead:])
        scale = total / max(estimate_tokens(prompt, tools), 1)
        reserve = min(self.summary_tokens, self.max_input_tokens // 4) if self.summarize else 0
        budget = self.max_input_tokens - reserve - estimate_tokens(system, tools) * scale
        keep = _newest_fitting(groups, budget, scale)
        dropped = [m for g in groups[:len(groups) - keep] for m in g]
        summary = await self._summary_of(model, dropped, agent_name) if dropped else None

        def assemble() -> list[Msg]:
            return [*system, *([summary] if summary else []),
                    *[m for g in groups[len(groups) - keep:] for m in g]]

        kept = assemble()
        for _ in range(self.max_rounds):  # the estimate can be short: drop more, exactly
            excess: float = await model.count_tokens(kept, tools) - self.max_input_tokens
            if excess <= 0 or keep <= 1:
                break
            while keep > 1 and excess > 0:  # the summary stays; it covers the older part
                excess -= estimate_tokens(groups[len(groups) - keep]) * scale
                keep -= 1
            kept = assemble()
        self.dropped = len(prompt) - lead - sum(len(g) for g in groups[len(groups) - keep:])
        return kept

    def fits_as_text(self, model: ChatModelBase, messages: Sequence[tuple[str, str]]) -> bool:
        """Whether text messages given as ``(name, text)`` pairs are known to fit whole,
        without building them: true only for a model that counts by :func:`estimate_tokens`
        (``fit`` would then keep every message). Sets :attr:`dropped` to 0 when true."""
        if type(model).count_tokens is not TokenCounting.count_tokens:
            return False
        if estimate_text_tokens(messages) > self.max_input_tokens:
            return False
        self.dropped = 0
        return True

    async def _summary_of(self, model: ChatModelBase, dropped: list[Msg], agent_name: str
                          ) -> Msg | None:
        """A summary of ``dropped``; extends the last one when ``dropped`` extends what it
        covered (an agent's prompt moves forward a few messages per step)."""
        if self.summarize is False:
            return None
        key = tuple(m.id for m in dropped)
        earlier = ""
        if self._summary is not None:
            done, previous = self._summary
            if done == key:
                return previous
            if key[:len(done)] == done:
                earlier = f"(summary so far) {previous.get_text_content()}\n"
                dropped = dropped[len(done):]
        writer = model if self.summarize is True else self.summarize
        conversation = earlier + "\n".join(f"{m.name} ({m.role}): {_text(m)}" for m in dropped)
        response = await collect(await writer([Msg("user", SUMMARY_PROMPT.format(
            name=agent_name, conversation=conversation), "user")], stream=False))
        summary = Msg("system", f"Summary of the earlier conversation: {response.text}",
                      "system", metadata={"summary_of": len(key)})
        self._summary = (key, summary)
        return summary

    def __repr__(self) -> str:
        return (f"TruncationPolicy(max_input_tokens={self.max_input_tokens}, "
                f"summarize={bool(self.summarize)})")


def _newest_fitting(groups: list[list[Msg]], budget: float, scale: float) -> int:
    """How many of the newest groups fit ``budget`` (at least one)."""
    used = 0.0
    for count, group in enumerate(reversed(groups)):
        used += estimate_tokens(group) * scale
        if used > budget:
            return max(count, 1)
    return len(groups)


def _text(msg: Msg) -> str:
    parts = []
    for block in msg.get_content_blocks():
        if isinstance(block, ToolUseBlock):
            parts.append(f"[calls {block.name}({block.input})]")
        elif isinstance(block, ToolResultBlock):
            output = block.output if isinstance(block.output, str) else "(media)"
            parts.append(f"[{block.name} returned: {output}]")
        elif hasattr(block, "text"):
            parts.append(block.text)
    return " ".join(parts)
