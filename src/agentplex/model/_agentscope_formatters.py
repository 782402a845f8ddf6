"""AgentScope-compatible formatter objects over our per-provider formatting.

``OpenAIChatFormatter`` and friends are thin: ``await formatter.format(msgs)`` returns the
provider's wire messages (what AgentScope code inspects), made by the provider module's own
formatter; ``formatter.layout(msgs, agent_name)`` is what an agent applies before calling
its model. The *multi-agent* formatters put other agents' turns on the user side, named,
instead of letting the model take them for its own assistant turns (AgentScope's
multi-agent layout). ``max_tokens`` makes an agent that uses the formatter truncate its
prompt to that many tokens (AgentScope's truncated formatters).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

from ..message import Msg, TextBlock
from ._formatting import label_speakers

__all__ = [
    "AnthropicChatFormatter",
    "AnthropicMultiAgentFormatter",
    "DashScopeChatFormatter",
    "DashScopeMultiAgentFormatter",
    "FormatterBase",
    "GeminiChatFormatter",
    "GeminiMultiAgentFormatter",
    "OllamaChatFormatter",
    "OllamaMultiAgentFormatter",
    "OpenAIChatFormatter",
    "OpenAIMultiAgentFormatter",
    "multi_agent_layout",
]


def multi_agent_layout(messages: Sequence[Msg | dict[str, Any]], agent_name: str | None
                       ) -> list[Msg | dict[str, Any]]:
    """Other agents' assistant turns as named user turns (their text only: their tool calls
    and results are not this agent's), this agent's own turns unchanged."""
    out: list[Msg | dict[str, Any]] = []
    for msg in messages:
        if not isinstance(msg, Msg) or msg.role != "assistant" or msg.name == agent_name:
            out.append(msg)
            continue
        text = [b for b in msg.get_content_blocks() if isinstance(b, TextBlock)]
        if text:
            out.append(Msg(msg.name, [TextBlock(text="\n".join(b.text for b in text))],
                           "user", metadata=msg.metadata))
    return out


class FormatterBase:
    """One provider's formatting as an object (see the module docstring)."""

    provider: ClassVar[str] = "openai"
    multi_agent: ClassVar[bool] = False

    def __init__(self, *, max_tokens: int | None = None) -> None:
        self.max_tokens = max_tokens
        """The prompt budget an agent using this formatter truncates to (None: none)."""

    def layout(self, messages: Sequence[Msg | dict[str, Any]], agent_name: str | None = None
               ) -> list[Msg | dict[str, Any]]:
        """The history as the agent's model should see it."""
        if self.multi_agent:
            return multi_agent_layout(messages, agent_name)
        return list(messages)

    async def format(self, msgs: Sequence[Msg | dict[str, Any]],
                     agent_name: str | None = None) -> list[dict[str, Any]]:
        """The provider's wire messages for ``msgs`` (a leading system prompt included as
        a ``{"role": "system", ...}`` entry where the wire keeps it apart)."""
        return self._wire(label_speakers(self.layout(msgs, agent_name)))

    def _wire(self, messages: list[Msg | dict[str, Any]]) -> list[dict[str, Any]]:
        from .openai import format_openai_messages

        return format_openai_messages(messages, provider=self.provider)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(max_tokens={self.max_tokens})"


class OpenAIChatFormatter(FormatterBase):
    """OpenAI chat completions (and compatible servers)."""


class OpenAIMultiAgentFormatter(OpenAIChatFormatter):
    """OpenAI chat completions, other agents' turns on the user side."""

    multi_agent = True


class AnthropicChatFormatter(FormatterBase):
    """Anthropic's Messages API."""

    provider = "anthropic"

    def _wire(self, messages: list[Msg | dict[str, Any]]) -> list[dict[str, Any]]:
        from .anthropic import format_anthropic_messages

        system, rest = format_anthropic_messages(messages)
        return [{"role": "system", "content": system}, *rest] if system else rest


class AnthropicMultiAgentFormatter(AnthropicChatFormatter):
    """Anthropic, other agents' turns on the user side."""

    multi_agent = True


class GeminiChatFormatter(FormatterBase):
    """Gemini's ``contents``."""

    provider = "gemini"

    def _wire(self, messages: list[Msg | dict[str, Any]]) -> list[dict[str, Any]]:
        from .gemini import format_gemini_contents

        system, contents = format_gemini_contents(messages)
        return [{"role": "system", "parts": [{"text": system}]}, *contents] if system \
            else contents


class GeminiMultiAgentFormatter(GeminiChatFormatter):
    """Gemini, other agents' turns on the user side."""

    multi_agent = True


class DashScopeChatFormatter(FormatterBase):
    """DashScope (Qwen) messages (the multimodal form when the history holds media)."""

    provider = "dashscope"

    def _wire(self, messages: list[Msg | dict[str, Any]]) -> list[dict[str, Any]]:
        from .dashscope import _MEDIA, format_dashscope_messages

        media = any(isinstance(m, Msg) and any(isinstance(b, _MEDIA)
                                               for b in m.get_content_blocks())
                    for m in messages)
        return format_dashscope_messages(messages, media)


class DashScopeMultiAgentFormatter(DashScopeChatFormatter):
    """DashScope, other agents' turns on the user side."""

    multi_agent = True


class OllamaChatFormatter(FormatterBase):
    """Ollama's ``/api/chat`` messages."""

    provider = "ollama"

    def _wire(self, messages: list[Msg | dict[str, Any]]) -> list[dict[str, Any]]:
        from .ollama import format_ollama_messages

        return format_ollama_messages(messages)


class OllamaMultiAgentFormatter(OllamaChatFormatter):
    """Ollama, other agents' turns on the user side."""

    multi_agent = True

