"""Chat models behind the serving tests' servers: a scripted echo that calls a tool when
given tools, and a model that answers with log-probabilities."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Any

from agentplex.message import Msg, TextBlock, ToolUseBlock
from agentplex.model import (
    ChatModelBase,
    ChatResponse,
    ChatResult,
    ChatUsage,
    Messages,
    TokenLogprob,
    TopLogprob,
)


def echo_or_call(messages: list[Msg], **call: Any) -> Any:
    """Given tools (and a user turn): text and a get_weather call; otherwise an echo."""
    last = messages[-1]
    text = last.get_text_content() or ""
    if call.get("tools") and call.get("tool_choice") != "none" and last.role == "user":
        return [TextBlock(text="Let me look."),
                ToolUseBlock(id="call_1", name="get_weather", input={"city": "Paris"})]
    return f"you said {text}"


class LogprobModel(ChatModelBase):
    """Answers "a b" with a log-probability per token, streamed one token per chunk."""

    provider = "test"

    async def _call(self, messages: Messages, tools: Any = None, tool_choice: Any = None,
                    structured_model: Any = None, **kwargs: Any) -> ChatResult:
        entries = [TokenLogprob(token="a", logprob=-0.1,
                                top_logprobs=[TopLogprob(token="a", logprob=-0.1)]),
                   TokenLogprob(token=" b", logprob=-0.5)]
        if not self.stream:
            return ChatResponse(content=[TextBlock(text="a b")], logprobs=entries,
                                usage=ChatUsage(input_tokens=1, output_tokens=2))
        return self._stream(entries)

    async def _stream(self, entries: list[TokenLogprob]) -> AsyncGenerator[ChatResponse, None]:
        for i in range(len(entries)):
            text = "".join(e.token for e in entries[:i + 1])
            yield ChatResponse(content=[TextBlock(text=text)],
                               delta=[TextBlock(text=entries[i].token)],
                               logprobs=entries[:i + 1], is_last=False)
        yield ChatResponse(content=[TextBlock(text="a b")], logprobs=entries, is_last=True,
                           usage=ChatUsage(input_tokens=1, output_tokens=2),
                           finish_reason="stop")
