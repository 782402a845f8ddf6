"""Retrying a model call: exponential backoff with jitter, honouring ``Retry-After``."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

from ._errors import ModelError, ModelTimeoutError, ProviderError, RateLimitError
from ._response import ChatResponse

__all__ = ["RetryPolicy", "is_retryable"]

T = TypeVar("T")


def is_retryable(exc: BaseException) -> bool:
    """429s, 5xx answers, timeouts and dropped connections are worth another try."""
    if isinstance(exc, (RateLimitError, ModelTimeoutError)):
        return True
    return isinstance(exc, ProviderError) and exc.retryable


@dataclass
class RetryPolicy:
    """How often and how patiently to retry.

    The delay before retry ``n`` (0-based) is the server's ``Retry-After`` when it sent one
    (capped at ``max_delay``), else ``base_delay * 2**n`` scaled by a random factor in
    ``[0.5, 1]`` (jitter), capped at ``max_delay``. ``sleep`` is how the policy waits.
    """

    max_retries: int = 2
    base_delay: float = 0.5
    max_delay: float = 30.0
    sleep: Callable[[float], Awaitable[None]] = field(default=asyncio.sleep, repr=False)

    def __post_init__(self) -> None:
        if self.max_retries < 0:
            raise ValueError("max_retries must be at least 0")
        if self.base_delay < 0 or self.max_delay < 0:
            raise ValueError("retry delays must not be negative")

    def delay(self, attempt: int, exc: BaseException) -> float:
        """Seconds to wait before retry number ``attempt`` (0-based) after ``exc``."""
        hint: float | None = exc.retry_after if isinstance(exc, RateLimitError) else None
        if hint is not None:
            return min(max(hint, 0.0), self.max_delay)
        return min(self.base_delay * (2.0**attempt) * random.uniform(0.5, 1.0), self.max_delay)

    async def call(self, attempt_once: Callable[[], Awaitable[T]]) -> T:
        """Await ``attempt_once()`` until it succeeds or fails for good."""
        attempt = 0
        while True:
            try:
                return await attempt_once()
            except ModelError as exc:
                if attempt >= self.max_retries or not is_retryable(exc):
                    raise
                await self.sleep(self.delay(attempt, exc))
                attempt += 1

    async def stream(
        self, start: Callable[[], Awaitable[AsyncGenerator[ChatResponse, None]]]
    ) -> AsyncGenerator[ChatResponse, None]:
        """Start a stream, retrying until its first chunk arrives; later errors propagate.

        Once a chunk was delivered a retry would repeat content, so it is not attempted.
        """

        async def first() -> tuple[AsyncGenerator[ChatResponse, None], ChatResponse | None]:
            gen = await start()
            try:
                return gen, await gen.__anext__()
            except StopAsyncIteration:
                return gen, None
            except BaseException:
                await gen.aclose()
                raise

        gen, head = await self.call(first)
        return _chain(gen, head)


async def _chain(
    gen: AsyncGenerator[ChatResponse, None], head: ChatResponse | None
) -> AsyncGenerator[ChatResponse, None]:
    try:
        if head is None:
            return
        yield head
        async for chunk in gen:
            yield chunk
    finally:
        await gen.aclose()
