"""The model contract: :class:`ChatModelBase`."""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import AsyncGenerator, Sequence
from typing import Any, Literal, TypeAlias

from pydantic import BaseModel

from ..message import Msg
from ..tracing import active_run
from ..tracing.lowlevel import metrics_enabled, would_record
from ._instrumentation import instrumented_call
from ._response import ChatResponse
from ._runnable import RunnableMethods
from ._tokens import TokenCounting

__all__ = ["ChatModelBase", "ChatResult", "Messages", "ToolChoice", "chunks_of", "collect"]

Messages: TypeAlias = Sequence[Msg] | Sequence[dict[str, Any]]
"""A history: ``Msg`` objects (the provider formats them) or role/content dicts (passed on)."""

ToolChoice: TypeAlias = Literal["auto", "none", "required", "any"] | str
"""``auto``, ``none``, ``required`` (``any`` is an alias), or the name of one tool."""

ChatResult: TypeAlias = ChatResponse | AsyncGenerator[ChatResponse, None]
"""What a call returns: a response, or (streaming) an async generator of chunks. Consume it
with :func:`collect` (the final response) or :func:`chunks_of` (the chunks)."""


class ChatModelBase(RunnableMethods, TokenCounting, ABC):
    """An async chat model.

    ``await model(messages, tools=None, tool_choice=None, structured_model=None, **kwargs)``
    returns a :class:`ChatResponse`, or, when ``stream`` is true, an async generator of
    :class:`ChatResponse` chunks (each with the whole response so far in ``content``, the
    new part in ``delta`` and ``is_last`` on the final one).

    A provider implements :meth:`_call`. :meth:`__call__` is the one instrumented place: it
    opens the ``chat {model_name}`` span around ``_call`` and, inside an experiment, counts
    the call's usage and records (or replays) its response. Wrappers around other models
    derive from :class:`WrapperModel`, whose ``__call__`` is not instrumented, so a stack of
    wrappers still gives exactly one span and one count per call of the model doing the work.

    The LangChain-style methods (``ainvoke``, ``astream``, ``abatch``,
    ``batch_as_completed``, ``bind_tools``, ``with_structured_output``,
    ``configurable_fields`` ...) come from :class:`RunnableMethods`, and
    ``count_tokens`` from :class:`TokenCounting`.
    """

    provider: str = "unknown"
    """The provider name used in traces and errors (``openai``, ``anthropic``, ...)."""

    def __init__(self, model_name: str, stream: bool = False) -> None:
        self.model_name = model_name
        self.stream = stream

    @property
    def settings(self) -> dict[str, str]:
        """What of this model's make changes its answers beyond its name (a local model's
        weights: ``{"weights": "int4"}``), recorded beside it in a run's manifest; empty
        for most models."""
        return {}

    async def __call__(
        self,
        messages: Messages,
        tools: list[dict[str, Any]] | None = None,
        tool_choice: ToolChoice | None = None,
        structured_model: type[BaseModel] | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        """Answer ``messages`` through :meth:`_call`, traced and (in an experiment) recorded."""
        if active_run() is None and not would_record() and not metrics_enabled():
            # untraced (or its trace dropped), no experiment, no metrics
            return await self._call(messages, tools, tool_choice, structured_model, **kwargs)
        return await instrumented_call(self, messages, tools, tool_choice, structured_model,
                                       kwargs)

    @abstractmethod
    async def _call(
        self,
        messages: Messages,
        tools: list[dict[str, Any]] | None,
        tool_choice: ToolChoice | None,
        structured_model: type[BaseModel] | None,
        **kwargs: Any,
    ) -> ChatResult:
        """The provider's call, without instrumentation: see the class docstring."""

    async def batch(
        self,
        histories: Sequence[Messages],
        *,
        max_concurrency: int = 8,
        return_exceptions: bool = False,
        **kwargs: Any,
    ) -> list[ChatResponse | BaseException]:
        """Answer several histories concurrently, at most ``max_concurrency`` at a time.

        Results come back in the order of ``histories``. Streaming models are consumed to
        their last chunk. With ``return_exceptions`` a failed history yields its exception
        instead of failing the whole batch.
        """
        if max_concurrency < 1:
            raise ValueError("max_concurrency must be at least 1")
        gate = asyncio.Semaphore(max_concurrency)

        async def one(history: Messages) -> ChatResponse:
            async with gate:
                return await collect(await self(history, **kwargs))

        return list(
            await asyncio.gather(*(one(h) for h in histories), return_exceptions=return_exceptions)
        )

    def __repr__(self) -> str:
        return f"{type(self).__name__}(model_name={self.model_name!r}, stream={self.stream})"


async def collect(result: ChatResult) -> ChatResponse:
    """Return the final response of ``result``, consuming it if it is a stream."""
    if isinstance(result, ChatResponse):
        return result
    last: ChatResponse | None = None
    async for chunk in result:
        last = chunk
    if last is None:
        raise RuntimeError("the model's stream ended without a single chunk")
    return last


async def chunks_of(result: ChatResult) -> AsyncGenerator[ChatResponse, None]:
    """The chunks of ``result``: a stream's as they come, or a single response as one final
    chunk (its whole content as the ``delta``, ``is_last`` set).

    Closing this generator (``aclose()``, or ``contextlib.aclosing`` around it) closes the
    model's stream too.
    """
    if isinstance(result, ChatResponse):
        yield result.model_copy(update={"delta": list(result.content), "is_last": True})
        return
    try:
        async for chunk in result:
            yield chunk
    finally:
        await result.aclose()

