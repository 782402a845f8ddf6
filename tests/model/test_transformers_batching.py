"""Dynamic batching: concurrent callers share forward passes yet get what they would alone."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from agentplex.model import ChatResponse, ModelError, TransformersChatModel
from tests.support.results import as_response, as_stream
from tests.support.tiny_llama import EXAMPLES

pytestmark = pytest.mark.anyio

PROMPTS = [
    [{"role": "user", "content": text}]
    for text in ["Count to ten.", "Say hi.", "Tell me about Paris and London.", "x",
                 "What is the weather?", "abc def ghi jkl mno pqr stu vwx yz",
                 "Please think first.", "0123456789 true false null"]
]


async def _alone(model: TransformersChatModel, prompts: list[Any], **kw: Any) -> list[str]:
    return [as_response(await model(p, **kw)).text for p in prompts]


async def test_batched_greedy_equals_alone(tiny: TransformersChatModel) -> None:
    alone = await _alone(tiny, PROMPTS, max_tokens=24)
    rows_before = tiny.engine.counters.max_rows_seen
    batched = await asyncio.wait_for(
        asyncio.gather(*(tiny(p, max_tokens=24) for p in PROMPTS)), timeout=120
    )
    assert [as_response(r).text for r in batched] == alone
    assert tiny.engine.counters.max_rows_seen >= max(rows_before, 4)


async def test_late_arrivals_join_a_running_batch(tiny: TransformersChatModel) -> None:
    alone = await _alone(tiny, PROMPTS, max_tokens=30)

    async def late(i: int, prompt: Any) -> ChatResponse:
        for _ in range(i * 3):  # let the earlier ones start decoding first
            await asyncio.sleep(0.002)
        return await tiny(prompt, max_tokens=30)  # type: ignore[return-value]

    batched = await asyncio.wait_for(
        asyncio.gather(*(late(i, p) for i, p in enumerate(PROMPTS))), timeout=120
    )
    assert [r.text for r in batched] == alone


async def test_per_request_options_in_one_batch(tiny: TransformersChatModel) -> None:
    count = EXAMPLES[2][0]
    calls = [
        tiny(count),
        tiny(count, stop_sequences=["four"]),
        tiny(count, max_tokens=2),
        tiny(count, temperature=2.0, seed=3, max_tokens=10),
        tiny(count, grammar={"type": "regex", "value": "[a-z]{3} [0-9]{2}"}),
    ]
    results = await asyncio.wait_for(asyncio.gather(*calls), timeout=120)
    full, stopped, short, sampled, constrained = map(as_response, results)
    assert full.text == "one two three four five six seven eight nine ten"
    assert stopped.text == "one two three "
    assert short.finish_reason == "length"
    again = as_response(await tiny(count, temperature=2.0, seed=3, max_tokens=10))
    assert sampled.text == again.text
    assert constrained.text[:3].isalpha() and constrained.text[4:].isdigit()
    assert len(constrained.text) == 6


async def test_cancelling_one_request_leaves_the_others(tiny: TransformersChatModel) -> None:
    others = PROMPTS[:4]
    alone = await _alone(tiny, others, max_tokens=12)
    # Requests that could only finish after 300+ tokens: a grammar forces 300 letters, each
    # followed by a space, so no token can hold more than two of its characters.
    long_kw: dict[str, Any] = {"grammar": {"type": "regex", "value": "([a-z] ){300}"},
                               "max_tokens": 700}
    steps = tiny.engine.counters.steps
    victim = asyncio.ensure_future(tiny(PROMPTS[4], **long_kw))
    stream = as_stream(await tiny(PROMPTS[5], stream=True, **long_kw))
    first = await asyncio.wait_for(stream.__anext__(), timeout=60)
    assert not first.is_last
    results = asyncio.gather(*(tiny(p, max_tokens=12) for p in others))
    await asyncio.sleep(0.05)
    victim.cancel()
    await stream.aclose()
    with pytest.raises(asyncio.CancelledError):
        await victim
    assert [as_response(r).text for r in await asyncio.wait_for(results, timeout=120)] == alone
    # Both long requests left the batch early: far fewer forward passes than 300.
    probe = await tiny(PROMPTS[0], max_tokens=2)
    assert isinstance(probe, ChatResponse)
    assert probe.text
    assert tiny.engine.counters.steps - steps < 150


async def test_max_batch_size_queues_the_rest(tiny_pair: tuple[Any, Any]) -> None:
    model = TransformersChatModel("tiny", model=tiny_pair, max_batch_size=3)
    alone = await _alone(model, PROMPTS, max_tokens=8)
    batched = await asyncio.wait_for(
        asyncio.gather(*(model(p, max_tokens=8) for p in PROMPTS)), timeout=120
    )
    assert [as_response(r).text for r in batched] == alone
    assert model.engine.counters.max_rows_seen == 3


async def test_closed_engine_refuses_calls(tiny_pair: tuple[Any, Any]) -> None:
    model = TransformersChatModel("tiny", model=tiny_pair)
    assert as_response(await model(PROMPTS[1], max_tokens=4)).text == "hi"
    model.engine.close()
    with pytest.raises(ModelError, match="closed"):
        await model(PROMPTS[1], max_tokens=4)


async def test_a_model_actor_says_where_its_engine_spent_its_time(
        tiny: TransformersChatModel) -> None:
    from agentplex import Runtime
    from agentplex.cluster import ModelActor, RemoteChatModel

    async with Runtime() as rt:
        ref = await rt.spawn(ModelActor(tiny), "llm")
        before = (await ref.call("describe", timeout=30))["engine"]
        remote = RemoteChatModel(ref)
        await asyncio.gather(*(remote(p, max_tokens=8) for p in PROMPTS[:4]))
        after = (await ref.call("describe", timeout=30))["engine"]
    assert after["steps"] > before["steps"]
    assert after["prefill_tokens"] > before["prefill_tokens"]
    assert after["prefill_s"] > before["prefill_s"] and after["decode_s"] > before["decode_s"]
    assert after["forward_s"] >= after["prefill_s"] + after["decode_s"] - 1e-9
