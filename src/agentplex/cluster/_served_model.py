"""The chat model a caller gets for a served model (:class:`ServedChatModel`): the OpenAI
provider pointed at every replica, spreading calls by requests outstanding."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Sequence
from contextlib import aclosing
from typing import Any

from pydantic import BaseModel

from ..model import ChatResponse, ChatResult, Messages, ToolChoice, WrapperModel, chunks_of
from ._balance import LeastOutstanding

__all__ = ["ServedChatModel"]


class ServedChatModel(WrapperModel):
    """A chat model served by engine replicas over the OpenAI wire.

    Each call goes to the replica with the fewest requests outstanding (a stream counts
    until it ends); the replica's OpenAI model traces it. Arguments are those of
    :class:`~agentplex.model.OpenAIChatModel`.
    """

    def __init__(self, urls: Sequence[str], *, model_name: str, stream: bool = False,
                 api_key: str | None = None, timeout: float | None = 600.0,
                 **openai_options: Any) -> None:
        from ..model.openai import OpenAIChatModel

        if not urls:
            raise ValueError("ServedChatModel needs at least one replica URL")
        self.urls = list(urls)
        self.replicas = [OpenAIChatModel(model_name, api_key=api_key or "not-needed",
                                         base_url=url, stream=stream, timeout=timeout,
                                         **openai_options) for url in self.urls]
        super().__init__(self.replicas[0])
        self.balancer = LeastOutstanding(len(self.replicas))

    async def _call(self, messages: Messages, tools: list[dict[str, Any]] | None = None,
                    tool_choice: ToolChoice | None = None,
                    structured_model: type[BaseModel] | None = None,
                    **kwargs: Any) -> ChatResult:
        index = self.balancer.pick()
        replica = self.replicas[index]
        if not self.stream:
            with self.balancer.holding(index):
                return await replica(messages, tools, tool_choice, structured_model, **kwargs)
        return self._stream(index, messages, tools, tool_choice, structured_model, kwargs)

    async def _stream(self, index: int, messages: Messages,
                      tools: list[dict[str, Any]] | None, tool_choice: ToolChoice | None,
                      structured_model: type[BaseModel] | None, kwargs: dict[str, Any]
                      ) -> AsyncGenerator[ChatResponse, None]:
        with self.balancer.holding(index):
            result = await self.replicas[index](messages, tools, tool_choice,
                                                structured_model, **kwargs)
            async with aclosing(chunks_of(result)) as chunks:  # closes the model's stream
                async for chunk in chunks:
                    yield chunk

    async def aclose(self) -> None:
        """Close the HTTP clients (the engines keep running until released)."""
        for replica in self.replicas:
            await replica.aclose()
