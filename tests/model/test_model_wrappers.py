"""RetryingModel, RateLimiter / RateLimitedModel and FallbackModel over scripted models."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from agentplex.errors import AgentplexError
from agentplex.message import Msg
from agentplex.model import (
    ChatResponse,
    FallbackError,
    FallbackModel,
    ModelError,
    ModelTimeoutError,
    ProviderError,
    RateLimitedModel,
    RateLimiter,
    RateLimitError,
    RetryingModel,
    RetryPolicy,
    ScriptedChatModel,
    StructuredOutputError,
    collect,
)
from agentplex.model.lowlevel import estimate_tokens
from tests.support.model_inputs import Sleeps

pytestmark = pytest.mark.anyio

HISTORY = [Msg("user", "hello there", "user")]


def flaky(*errors: BaseException, reply: str = "ok", stream: bool = False) -> ScriptedChatModel:
    """A scripted model that raises ``errors`` in turn, then answers ``reply``."""
    pending = list(errors)

    def script(messages: Any, **_: Any) -> str:
        if pending:
            raise pending.pop(0)
        return reply

    return ScriptedChatModel(script, stream=stream, model_name="flaky")


def retrying(model: ScriptedChatModel, retries: int = 3) -> tuple[RetryingModel, Sleeps]:
    sleeps = Sleeps()
    return RetryingModel(model, policy=RetryPolicy(retries, base_delay=1.0, max_delay=10,
                                                   sleep=sleeps)), sleeps


async def test_retrying_model_backs_off_exponentially_with_jitter() -> None:
    model, sleeps = retrying(flaky(ProviderError("x", retryable=True),
                                   ModelTimeoutError("t"), ProviderError("y", retryable=True)))
    assert (await collect(await model(HISTORY))).text == "ok"
    assert len(sleeps.delays) == 3
    for attempt, delay in enumerate(sleeps.delays):
        assert 0.5 * 2**attempt <= delay <= 2**attempt


async def test_retrying_model_honours_retry_after_capped() -> None:
    model, sleeps = retrying(flaky(RateLimitError("slow", retry_after=2.5),
                                   RateLimitError("slow", retry_after=99)))
    await model(HISTORY)
    assert sleeps.delays == [2.5, 10]


async def test_retrying_model_gives_up_and_skips_permanent_errors() -> None:
    model, sleeps = retrying(flaky(*[RateLimitError("slow")] * 3), retries=2)
    with pytest.raises(RateLimitError):
        await model(HISTORY)
    assert len(sleeps.delays) == 2
    model, sleeps = retrying(flaky(ProviderError("bad request", status_code=400)))
    with pytest.raises(ProviderError, match="bad request"):
        await model(HISTORY)
    assert sleeps.delays == []


async def test_retrying_model_retries_a_stream_until_its_first_chunk() -> None:
    model, sleeps = retrying(flaky(ProviderError("dropped", retryable=True), stream=True,
                                   reply="one two"))
    chunks = [c async for c in await model(HISTORY)]  # type: ignore[union-attr]
    assert chunks[-1].text == "one two" and chunks[-1].is_last
    assert len(sleeps.delays) == 1


def test_retry_policy_rejects_bad_settings() -> None:
    with pytest.raises(ValueError, match="max_retries"):
        RetryPolicy(max_retries=-1)


class Clock:
    """A fake monotonic clock that the limiter's sleep advances."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        await asyncio.sleep(0)


async def test_rate_limiter_requests_per_second() -> None:
    clock = Clock()
    limiter = RateLimiter(requests_per_second=2, clock=clock, sleep=clock.sleep)
    for _ in range(6):
        await limiter.acquire()
    assert clock.now == pytest.approx(2.0)  # a burst of 2, then one every half second


async def test_rate_limiter_tokens_per_minute_with_settlement() -> None:
    clock = Clock()
    limiter = RateLimiter(tokens_per_minute=600, clock=clock, sleep=clock.sleep)
    reserved = await limiter.acquire(500)
    limiter.settle(reserved, 700)  # used more than reserved: 100 tokens overdrawn
    await limiter.acquire(100)
    assert clock.now == pytest.approx(20.0)  # 200 tokens at 10 tokens/second


async def test_rate_limited_models_share_one_limiter() -> None:
    clock = Clock()
    limiter = RateLimiter(requests_per_second=1, clock=clock, sleep=clock.sleep)
    models = [RateLimitedModel(ScriptedChatModel(["hi"], cycle=True), limiter)
              for _ in range(3)]
    results = await asyncio.gather(*(m(HISTORY) for m in models for _ in range(2)))
    assert all(isinstance(r, ChatResponse) and r.text == "hi" for r in results)
    assert clock.now == pytest.approx(5.0)  # six requests at one per second, one free


async def test_rate_limited_stream_settles_real_usage() -> None:
    clock = Clock()
    limiter = RateLimiter(tokens_per_minute=60, clock=clock, sleep=clock.sleep)
    model = RateLimitedModel(ScriptedChatModel(["a b c d"], stream=True), limiter)
    chunks = [c async for c in await model(HISTORY)]  # type: ignore[union-attr]
    assert chunks[-1].usage is not None
    await limiter.acquire(60)
    # the stream used 2 input + 4 output words: 6 tokens to win back at 1 token/second
    assert clock.now == pytest.approx(6.0)


async def test_rate_limited_model_reserves_the_model_layers_token_estimate() -> None:
    clock = Clock()
    limiter = RateLimiter(tokens_per_minute=600, clock=clock, sleep=clock.sleep)
    await limiter.acquire(600)  # the bucket is empty: the call waits for its reservation
    await RateLimitedModel(ScriptedChatModel(["hi"]), limiter)(HISTORY)
    assert clock.sleeps == [pytest.approx(estimate_tokens(HISTORY) / 10)]  # 10 tokens/second


def test_rate_limiter_rejects_bad_settings() -> None:
    with pytest.raises(ValueError, match="requests_per_second"):
        RateLimiter(requests_per_second=0)


async def test_fallback_model_moves_on_after_provider_errors() -> None:
    first = flaky(ProviderError("down", status_code=503, retryable=True))
    second = ScriptedChatModel(["from backup"], model_name="backup")
    model = FallbackModel(first, second)
    assert (await collect(await model(HISTORY))).text == "from backup"


async def test_fallback_model_raises_a_group_of_every_failure() -> None:
    first, second = ProviderError("a"), ModelTimeoutError("b")
    model = FallbackModel(flaky(first), flaky(second))
    with pytest.raises(FallbackError) as info:
        await model(HISTORY)
    group = info.value
    assert isinstance(group, ExceptionGroup)
    assert isinstance(group, ModelError) and isinstance(group, AgentplexError)
    assert list(group.exceptions) == [first, second]  # the very errors, in the order tried
    assert (group.provider, group.model) == ("fallback", "flaky,flaky")
    assert str(group) == ("[fallback:flaky,flaky] all 2 models failed: [unknown:unknown] a; "
                          "[unknown:unknown] b (2 sub-exceptions)")


async def test_fallback_error_splits_by_type_with_except_star() -> None:
    model = FallbackModel(flaky(RateLimitError("slow down")), flaky(ProviderError("down")),
                          flaky(ModelTimeoutError("late")))
    timeouts: list[ExceptionGroup[ModelTimeoutError]] = []
    providers: list[ExceptionGroup[ProviderError]] = []
    try:
        await model(HISTORY)
    except* ModelTimeoutError as group:
        timeouts.append(group)
    except* ProviderError as group:
        providers.append(group)
    [late], [down] = timeouts, providers
    assert isinstance(late, FallbackError) and isinstance(down, FallbackError)
    assert [type(e) for e in late.exceptions] == [ModelTimeoutError]
    assert [type(e) for e in down.exceptions] == [RateLimitError, ProviderError]
    assert down.model == late.model == "flaky,flaky,flaky"


async def test_fallback_model_does_not_hide_other_errors() -> None:
    model = FallbackModel(flaky(StructuredOutputError("bad", raw="{}")), flaky())
    with pytest.raises(StructuredOutputError):
        await model(HISTORY)


async def test_fallback_model_streams_from_the_model_that_answered() -> None:
    first = flaky(ProviderError("down"), stream=True)
    model = FallbackModel(first, ScriptedChatModel(["x y"], stream=True))
    chunks = [c async for c in await model(HISTORY)]  # type: ignore[union-attr]
    assert chunks[-1].text == "x y"
