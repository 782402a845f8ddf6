"""Cross-cutting model wrappers: retries, a shared rate limiter, fallbacks.

Each wrapper is a :class:`WrapperModel` around another model, so they compose:
``RateLimitedModel(RetryingModel(model), limiter)``; only the models doing the work are
traced and counted (see :class:`WrapperModel`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from typing import Any

from pydantic import BaseModel

from ..message import Msg
from ._base import ChatModelBase, ChatResult, Messages, ToolChoice, chunks_of
from ._errors import FallbackError, ModelTimeoutError, ProviderError
from ._response import ChatResponse
from ._retry import RetryPolicy
from ._tokens import estimate_tokens

__all__ = [
    "FallbackModel",
    "RateLimitedModel",
    "RateLimiter",
    "RetryingModel",
    "WrapperModel",
]


class WrapperModel(ChatModelBase):
    """A model that delegates to ``model``: the base of retries, rate limits, fallbacks.

    Its ``__call__`` runs :meth:`_call` without instrumentation: the wrapped model's own
    ``__call__`` opens the ``chat`` span and does the experiment's accounting, so wrappers
    stack in any order and each call of the model doing the work is traced and counted
    exactly once. A subclass implements ``_call`` and calls ``self.model(...)`` in it.
    """

    def __init__(self, model: ChatModelBase) -> None:
        super().__init__(model.model_name, model.stream)
        self.model = model
        self.provider = model.provider

    async def __call__(
        self,
        messages: Messages,
        tools: list[dict[str, Any]] | None = None,
        tool_choice: ToolChoice | None = None,
        structured_model: type[BaseModel] | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        """Answer through :meth:`_call`; the wrapped models trace their own calls."""
        return await self._call(messages, tools, tool_choice, structured_model, **kwargs)

    async def count_tokens(self, messages: Sequence[Msg | dict[str, Any]],
                           tools: Sequence[dict[str, Any]] | None = None) -> int:
        """The wrapped model's count."""
        return await self.model.count_tokens(messages, tools)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.model!r})"


class RetryingModel(WrapperModel):
    """Retries ``model`` on 429, 5xx, timeouts and dropped connections.

    Backoff is exponential with jitter and honours the server's ``Retry-After``; a stream
    is retried only until its first chunk arrived. Give ``policy`` for full control.
    """

    def __init__(
        self,
        model: ChatModelBase,
        max_retries: int = 3,
        *,
        base_delay: float = 0.5,
        max_delay: float = 30.0,
        policy: RetryPolicy | None = None,
    ) -> None:
        super().__init__(model)
        self.policy = policy or RetryPolicy(max_retries, base_delay, max_delay)

    async def _call(
        self,
        messages: Messages,
        tools: list[dict[str, Any]] | None,
        tool_choice: ToolChoice | None,
        structured_model: type[BaseModel] | None,
        **kwargs: Any,
    ) -> ChatResult:
        async def once() -> ChatResult:
            return await self.model(messages, tools, tool_choice, structured_model, **kwargs)

        async def opened() -> AsyncGenerator[ChatResponse, None]:
            return chunks_of(await once())

        if self.model.stream:
            return await self.policy.stream(opened)
        return await self.policy.call(lambda: _as_response(once()))


async def _as_response(result: Awaitable[ChatResult]) -> ChatResponse:
    value = await result
    if not isinstance(value, ChatResponse):
        raise TypeError("expected a ChatResponse from a non-streaming model")
    return value


class RateLimiter:
    """Requests-per-second and tokens-per-minute budgets, shared by any number of models.

    Both are token buckets: requests refill at ``requests_per_second`` (bursts up to
    ``max(1, requests_per_second)``), tokens at ``tokens_per_minute / 60`` per second up
    to ``tokens_per_minute``. A call reserves an estimate of its tokens up front and
    :meth:`settle` corrects it with the real usage; an overdraft makes later callers wait.
    Waiters are served in arrival order. ``clock`` and ``sleep`` are injectable.
    """

    def __init__(
        self,
        requests_per_second: float | None = None,
        tokens_per_minute: float | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if requests_per_second is not None and requests_per_second <= 0:
            raise ValueError("requests_per_second must be positive")
        if tokens_per_minute is not None and tokens_per_minute <= 0:
            raise ValueError("tokens_per_minute must be positive")
        self.requests_per_second = requests_per_second
        self.tokens_per_minute = tokens_per_minute
        self._clock = clock
        self._sleep = sleep
        self._request_cap = max(1.0, requests_per_second or 1.0)
        self._requests = self._request_cap
        self._tokens = float(tokens_per_minute or 0)
        self._stamp = clock()
        self._lock = asyncio.Lock()

    def _refill(self) -> None:
        now = self._clock()
        elapsed, self._stamp = max(now - self._stamp, 0.0), now
        if self.requests_per_second:
            self._requests = min(self._request_cap,
                                 self._requests + elapsed * self.requests_per_second)
        if self.tokens_per_minute:
            self._tokens = min(float(self.tokens_per_minute),
                               self._tokens + elapsed * self.tokens_per_minute / 60)

    def _wait_time(self, tokens: float) -> float:
        wait = 0.0
        if self.requests_per_second and self._requests < 1:
            wait = (1 - self._requests) / self.requests_per_second
        if self.tokens_per_minute and self._tokens < tokens:
            wait = max(wait, (tokens - self._tokens) * 60 / self.tokens_per_minute)
        return wait

    async def acquire(self, tokens: int = 0) -> int:
        """Wait for one request slot and ``tokens`` tokens; return the tokens reserved."""
        if self.tokens_per_minute:
            tokens = min(tokens, int(self.tokens_per_minute))
        async with self._lock:
            while True:
                self._refill()
                wait = self._wait_time(tokens)
                if wait <= 0:
                    break
                await self._sleep(wait)
            if self.requests_per_second:
                self._requests -= 1
            if self.tokens_per_minute:
                self._tokens -= tokens
        return tokens

    def settle(self, reserved: int, used: int) -> None:
        """Correct a reservation of ``reserved`` tokens with the ``used`` count."""
        if self.tokens_per_minute:
            self._refill()
            self._tokens = min(float(self.tokens_per_minute), self._tokens + reserved - used)


class RateLimitedModel(WrapperModel):
    """Calls ``model`` only when ``limiter`` (which many models may share) allows it."""

    def __init__(self, model: ChatModelBase, limiter: RateLimiter) -> None:
        super().__init__(model)
        self.limiter = limiter

    async def _call(
        self,
        messages: Messages,
        tools: list[dict[str, Any]] | None,
        tool_choice: ToolChoice | None,
        structured_model: type[BaseModel] | None,
        **kwargs: Any,
    ) -> ChatResult:
        reserved = await self.limiter.acquire(estimate_tokens(messages))
        try:
            result = await self.model(messages, tools, tool_choice, structured_model, **kwargs)
        except BaseException:
            self.limiter.settle(reserved, 0)
            raise
        if isinstance(result, ChatResponse):
            self.limiter.settle(reserved, _used(result))
            return result
        return self._settling(result, reserved)

    async def _settling(
        self, stream: AsyncGenerator[ChatResponse, None], reserved: int
    ) -> AsyncGenerator[ChatResponse, None]:
        used = reserved
        try:
            async for chunk in stream:
                if chunk.is_last:
                    used = _used(chunk)
                yield chunk
        finally:
            self.limiter.settle(reserved, used)
            await stream.aclose()


def _used(response: ChatResponse) -> int:
    usage = response.usage
    return usage.input_tokens + usage.output_tokens if usage else 0


class FallbackModel(WrapperModel):
    """Tries ``models`` in order, moving on when one fails with a ``fallback_on`` error.

    A stream falls back only until its first chunk arrived. When every model failed, raises
    :class:`FallbackError`: an exception group of what each one raised.
    """

    def __init__(
        self,
        model: ChatModelBase,
        *fallbacks: ChatModelBase,
        fallback_on: tuple[type[Exception], ...] = (ProviderError, ModelTimeoutError),
    ) -> None:
        super().__init__(model)
        self.models = [model, *fallbacks]
        self.fallback_on = fallback_on

    async def _call(
        self,
        messages: Messages,
        tools: list[dict[str, Any]] | None,
        tool_choice: ToolChoice | None,
        structured_model: type[BaseModel] | None,
        **kwargs: Any,
    ) -> ChatResult:
        errors: list[Exception] = []
        for model in self.models:
            try:
                result = await model(messages, tools, tool_choice, structured_model, **kwargs)
                if isinstance(result, ChatResponse):
                    return result
                return await _started(result)
            except self.fallback_on as exc:
                errors.append(exc)
        shown = "; ".join(str(e) for e in errors)
        raise FallbackError(f"all {len(errors)} models failed: {shown}", errors,
                            provider="fallback", model=",".join(m.model_name for m in self.models))


async def _started(
    stream: AsyncGenerator[ChatResponse, None],
) -> AsyncGenerator[ChatResponse, None]:
    """Pull the first chunk now (so failures surface here), then deliver the whole stream."""
    try:
        head = await stream.__anext__()
    except StopAsyncIteration:
        await stream.aclose()
        return _empty()
    except BaseException:
        await stream.aclose()
        raise

    async def chained() -> AsyncGenerator[ChatResponse, None]:
        try:
            yield head
            async for chunk in stream:
                yield chunk
        finally:
            await stream.aclose()

    return chained()


async def _empty() -> AsyncGenerator[ChatResponse, None]:
    return
    yield
