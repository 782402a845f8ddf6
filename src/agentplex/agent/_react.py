""":class:`ReActAgent`: reasons with a model, acts with tools, repeats until it can answer."""

from __future__ import annotations

import asyncio
import json
from contextlib import aclosing
from typing import Any

from pydantic import BaseModel, ValidationError

from ..message import Msg, TextBlock, ToolResultBlock, ToolUseBlock
from ..model import (
    ChatModelBase,
    ChatResponse,
    ChatUsage,
    FormatterBase,
    StructuredOutputError,
    ToolChoice,
    UnsupportedOptionError,
    chunks_of,
)
from ..tool import Toolkit
from ..tool.lowlevel import tidy_schema
from ._agent import AgentBase, _without_thinking
from ._context import TruncationPolicy
from ._memory import InMemoryMemory, MemoryBase

__all__ = ["ReActAgent"]

FINISH_TOOL = "generate_response"
"""The tool a ReAct agent with a ``structured_model`` calls to give its final answer."""

_HINT = "hint"
_INTERRUPTED = "The tool call was interrupted by the user before it finished."
_SUMMARY_HINT = (
    "You have not produced a final answer within the maximum number of reasoning steps. "
    "Do not call any tool. Answer now by summarising the current situation: what you "
    "found, what is still missing, and your best answer so far."
)


class ReActAgent(AgentBase):
    """An agent that alternates reasoning (a model call) and acting (tool calls).

    Each step the model sees the system prompt and the agent's memory and may call tools;
    their results go into memory and the loop continues until the model answers without
    calling a tool. Reasoning streams through :meth:`print` as it arrives.

    Args:
        name: the agent's name.
        sys_prompt: the system prompt (the active tool groups' notes are appended).
        model: the chat model.
        toolkit: the tools it may call (default: none).
        memory: its memory (default: a new :class:`InMemoryMemory`).
        max_iters: reasoning steps before it stops and summarises instead of failing.
        parallel_tool_calls: run the tool calls of one step concurrently.
        structured_model: a pydantic model the final answer must fill; the agent gets a
            ``generate_response`` tool taking its fields, and the reply's ``metadata``
            holds the validated answer.
        tool_choice: passed to the model whenever tools are offered.
        timeout: seconds ``await agent(msg)`` waits.
        formatter: an AgentScope-style formatter (``OpenAIMultiAgentFormatter`` ...): its
            layout is applied to the history (a multi-agent formatter puts other agents'
            turns on the user side, named), and its ``max_tokens`` caps the prompt.
        max_input_tokens: the prompt's token budget: older turns are left out of the
            prompt (never a tool call without its result; the memory keeps them).
        truncation: a full :class:`TruncationPolicy` (e.g. with summarisation) instead.

    An interrupt closes every pending tool call with an "interrupted" result and returns a
    reply saying so. Thinking blocks stay in the agent's own memory; the reply it returns
    (and broadcasts) has them stripped. ``usage`` and ``model_calls`` add up its model use.
    """

    def __init__(
        self,
        name: str,
        sys_prompt: str,
        model: ChatModelBase,
        toolkit: Toolkit | None = None,
        memory: MemoryBase | None = None,
        max_iters: int = 10,
        parallel_tool_calls: bool = False,
        structured_model: type[BaseModel] | None = None,
        tool_choice: ToolChoice | None = None,
        timeout: float | None = None,
        formatter: FormatterBase | None = None,
        max_input_tokens: int | None = None,
        truncation: TruncationPolicy | None = None,
    ) -> None:
        super().__init__(name, timeout=timeout)
        if max_iters < 1:
            raise ValueError("max_iters must be at least 1")
        self.sys_prompt = sys_prompt
        self.model = model
        self.toolkit = toolkit if toolkit is not None else Toolkit()
        self.memory = memory if memory is not None else InMemoryMemory()
        self.max_iters = max_iters
        self.parallel_tool_calls = parallel_tool_calls
        self.structured_model = structured_model
        self.tool_choice = tool_choice
        self.formatter = formatter
        budget = max_input_tokens or (formatter.max_tokens if formatter else None)
        self.truncation = truncation or (TruncationPolicy(budget) if budget else None)
        self.usage = ChatUsage()
        self.model_calls = 0
        self._partial: Msg | None = None
        self._calls: list[ToolUseBlock] = []
        self._results: dict[str, Msg] = {}
        self._answer: dict[str, Any] | None = None
        self.register_state("sys_prompt")

    # -- state: memory is nested automatically; the toolkit is added here --------------------

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "toolkit": self.toolkit.state_dict()}

    def load_state_dict(self, state: dict[str, Any], strict: bool = True) -> None:
        super().load_state_dict({k: v for k, v in state.items() if k != "toolkit"}, strict)
        if "toolkit" in state:
            self.toolkit.load_state_dict(state["toolkit"], strict)
        elif strict:
            raise KeyError("state of ReActAgent lacks 'toolkit'")

    # -- the loop ---------------------------------------------------------------------------

    async def observe(self, msg: Msg | list[Msg] | None) -> None:
        """Remember ``msg`` without answering."""
        await self.memory.add(msg)

    async def reply(self, msg: Msg | list[Msg] | None = None,
                    structured_model: type[BaseModel] | None = None) -> Msg:
        """Answer ``msg`` (``None``: continue from memory), reasoning and acting in turns."""
        await self.memory.add(msg)
        structured = structured_model or self.structured_model
        self._answer, self._partial, self._calls, self._results = None, None, [], {}
        for _ in range(self.max_iters):
            reasoning = await self._reasoning(structured)
            calls = reasoning.get_content_blocks("tool_use")
            if not calls:
                if structured is None:
                    return _without_thinking(reasoning)
                await self.memory.add(Msg("user", f"<system-hint>Give your final answer by "
                                          f"calling the {FINISH_TOOL} tool.</system-hint>",
                                          "user"), marks=_HINT)
                continue
            await self._acting(calls, structured)
            if self._answer is not None:
                return await self._finish(reasoning, self._answer)
        return await self._summarising(structured)

    def _prompt(self) -> Msg:
        notes = self.toolkit.get_activated_notes()
        return Msg("system", f"{self.sys_prompt}\n\n{notes}" if notes else self.sys_prompt,
                   "system")

    def _tools(self, structured: type[BaseModel] | None) -> list[dict[str, Any]]:
        schemas = self.toolkit.get_json_schemas()
        if structured is not None:
            schemas.append({"type": "function", "function": {
                "name": FINISH_TOOL,
                "description": "Give your final answer, filling in every field.",
                "parameters": tidy_schema(structured.model_json_schema()),
            }})
        return schemas

    async def _call_model(self, hint: Msg | None = None, **kwargs: Any) -> Msg:
        history: list[Any] = [self._prompt(), *await self.memory.get_memory()]
        if hint is not None:
            history.append(hint)
        if self.formatter is not None:
            history = self.formatter.layout(history, self.name)
        if self.truncation is not None:
            history = await self.truncation.fit(self.model, history, kwargs.get("tools"),
                                                agent_name=self.name)
        result = await self.model(history, **kwargs)
        self.model_calls += 1
        msg = Msg(self.name, [], "assistant")
        self._partial = msg
        final: ChatResponse | None = None
        async with aclosing(chunks_of(result)) as chunks:
            async for chunk in chunks:
                final = chunk
                msg.content = list(chunk.content)
                if not chunk.is_last:
                    await self.print(msg, False)
        if final is None:
            raise RuntimeError("the model's stream ended without a single chunk")
        msg.content = list(final.content)
        if final.usage is not None:
            self.usage = self.usage + final.usage
        if final.metadata and kwargs.get("structured_model") is not None:
            msg.metadata = dict(final.metadata)
        await self.print(msg, True)
        return msg

    async def _reasoning(self, structured: type[BaseModel] | None) -> Msg:
        tools = self._tools(structured)
        msg = await self._call_model(tools=tools or None,
                                     tool_choice=self.tool_choice if tools else None)
        await self.memory.delete_by_mark(_HINT)
        await self.memory.add(msg)
        self._partial = None
        return msg

    async def _acting(self, calls: list[ToolUseBlock], structured: type[BaseModel] | None
                      ) -> None:
        self._calls, self._results = calls, {}
        if self.parallel_tool_calls:
            await asyncio.gather(*(self._act(call, structured) for call in calls))
        else:
            for call in calls:
                await self._act(call, structured)
        for call in calls:
            await self.memory.add(self._results[call.id])
        self._calls, self._results = [], {}

    async def _act(self, call: ToolUseBlock, structured: type[BaseModel] | None) -> None:
        result = Msg("system", [ToolResultBlock(id=call.id, name=call.name, output="")],
                     "system")
        if structured is not None and call.name == FINISH_TOOL:
            result.content = [self._check_answer(call, structured)]
            await self.print(result, True)
        else:
            async for chunk in self.toolkit.call_tool_function(call):
                result.content = [chunk.to_block(call.id, call.name)]
                await self.print(result, chunk.is_last)
        self._results[call.id] = result

    def _check_answer(self, call: ToolUseBlock, structured: type[BaseModel]) -> ToolResultBlock:
        try:
            self._answer = structured.model_validate(call.input).model_dump(mode="json")
        except ValidationError as exc:
            return ToolResultBlock(id=call.id, name=call.name, is_error=True,
                                   output=f"Error: the answer does not fit the schema: {exc}")
        return ToolResultBlock(id=call.id, name=call.name, output="The answer was recorded.")

    async def _finish(self, reasoning: Msg, answer: dict[str, Any]) -> Msg:
        text = reasoning.get_text_content() or json.dumps(answer, ensure_ascii=False)
        reply = Msg(self.name, text, "assistant", metadata=answer)
        await self.memory.add(reply)
        return reply

    async def _summarising(self, structured: type[BaseModel] | None) -> Msg:
        await self.memory.delete_by_mark(_HINT)
        hint = Msg("user", _SUMMARY_HINT, "user")
        try:
            msg = await self._call_model(hint=hint, structured_model=structured)
        except (UnsupportedOptionError, StructuredOutputError, ValueError):
            if structured is None:
                raise
            msg = await self._call_model(hint=hint)
        msg.content = [b for b in msg.get_content_blocks() if not isinstance(b, ToolUseBlock)]
        if structured is None:
            msg.metadata = None
        await self.memory.add(msg)
        self._partial = None
        return _without_thinking(msg)

    # -- interruption -------------------------------------------------------------------------

    async def handle_interrupt(self, *args: Any, **kwargs: Any) -> Msg:
        """Close every pending tool call with an "interrupted" result and say so."""
        partial, self._partial = self._partial, None
        if partial is not None:
            partial.content = [b for b in partial.get_content_blocks()
                               if not isinstance(b, ToolUseBlock)]
            if partial.content:
                await self.print(partial, True)
                await self.memory.add(partial)
        for call in self._calls:
            done = self._results.get(call.id)
            if done is None:
                done = Msg("system", [ToolResultBlock(id=call.id, name=call.name,
                                                      output=_INTERRUPTED, is_error=True)],
                           "system", metadata={"interrupted": True})
            await self.memory.add(done)
        pending = [c.name for c in self._calls if c.id not in self._results]
        self._calls, self._results = [], {}
        text = "I was interrupted"
        text += f" while running {', '.join(pending)}." if pending else "."
        reply = Msg(self.name, text + " What would you like me to do?", "assistant",
                    metadata={"interrupted": True})
        await self.print(reply, True)
        await self.memory.add(reply)
        return reply

    def _print_console(self, msg: Msg, last: bool) -> None:
        """Show tool calls and results on the console too, not only text."""
        super()._print_console(msg.model_copy(update={"content": _console_text(msg, last)}),
                               last)

    def __repr__(self) -> str:
        return f"ReActAgent(name={self.name!r}, tools={list(self.toolkit.tools)})"



def _console_text(msg: Msg, last: bool) -> str:
    """Text plus one line per finished tool call and per tool result (grows as it streams)."""
    lines = [msg.get_text_content() or ""] if msg.has_content_blocks("text") else []
    for block in msg.get_content_blocks():
        if isinstance(block, ToolResultBlock):
            output = block.output if isinstance(block.output, str) else " ".join(
                b.text if isinstance(b, TextBlock) else f"[{b.type}]" for b in block.output)
            lines.append(f"{'✗' if block.is_error else '←'} {block.name}: {output}")
        elif isinstance(block, ToolUseBlock) and last:
            lines.append(f"→ {block.name}({json.dumps(block.input, ensure_ascii=False)})")
    return "\n".join(lines)
