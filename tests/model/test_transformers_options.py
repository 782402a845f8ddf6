"""TransformersChatModel: generation arguments, ``device``, and the shared engine cache."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from agentplex.engine import GenerationRequest
from agentplex.model import ChatResponse, TransformersChatModel, UnsupportedOptionError
from tests.support.model_inputs import City
from tests.support.results import as_response
from tests.support.tiny_llama import EXAMPLES

pytestmark = pytest.mark.anyio

COUNT = EXAMPLES[2][0]


def spy(model: TransformersChatModel) -> list[GenerationRequest]:
    """Record what the model submits to its engine (the engine still serves it)."""
    seen: list[GenerationRequest] = []
    submit = model.engine.submit

    def record(request: GenerationRequest) -> None:
        seen.append(request)
        submit(request)

    model.engine.submit = record  # type: ignore[method-assign]
    return seen


async def test_generation_arguments(tiny_pair: tuple[Any, Any]) -> None:
    model = TransformersChatModel("tiny", model=tiny_pair, temperature=0.7, seed=3,
                                  stop="seven", max_tokens=40)
    seen = spy(model)
    response = await model(COUNT)
    assert isinstance(response, ChatResponse)
    assert response.text == "one two three four five six "
    await model(COUNT, temperature=0.0, top_k=5, stop_sequences=["two"], max_new_tokens=9)
    first, second = seen
    assert (first.sampling.temperature, first.sampling.seed, first.max_new_tokens) == (0.7, 3, 40)
    assert first.stop == ("seven",)
    assert (second.sampling.temperature, second.sampling.top_k, second.sampling.seed) == (
        0.0, 5, 3)
    assert (second.stop, second.max_new_tokens) == (("two",), 9)
    await model.aclose()


async def test_unsupported_arguments_are_named(tiny_pair: tuple[Any, Any]) -> None:
    with pytest.raises(UnsupportedOptionError, match="presence_penalty"):
        TransformersChatModel("tiny", model=tiny_pair, presence_penalty=0.5)
    model = TransformersChatModel("tiny", model=tiny_pair)
    with pytest.raises(UnsupportedOptionError) as info:
        await model(COUNT, frequency_penalty=0.1, logit_bias={})
    assert info.value.options == ("frequency_penalty",)
    await model.aclose()


async def test_tool_choice_is_checked_beside_structured_output(tiny: TransformersChatModel
                                                               ) -> None:
    tool = {"type": "function", "function": {"name": "get_time", "parameters": {}}}
    with pytest.raises(UnsupportedOptionError, match="get_moon"):
        await tiny(COUNT, tools=[tool], tool_choice="get_moon", structured_model=City)


async def test_device_and_the_shared_engine_cache(tiny_folder: Path) -> None:
    from agentplex.model.local import _chat_model

    a = TransformersChatModel(str(tiny_folder), device="cpu", max_batch_size=4)
    b = TransformersChatModel(str(tiny_folder), device="cpu", max_batch_size=4)
    c = TransformersChatModel(str(tiny_folder), device="cpu", max_batch_size=2,
                              batch_wait=0.0)
    assert a.model.device.type == "cpu"
    assert a.engine is b.engine and a.engine is not c.engine and a.model is c.model
    assert (a.engine.max_batch_size, c.engine.max_batch_size, c.engine.batch_wait) == (4, 2, 0)
    assert as_response(await c(COUNT)).text.startswith("one two")
    await a.aclose()
    assert a._key in _chat_model._shared  # b still uses it
    await b.aclose()
    await b.aclose()  # idempotent
    assert a._key not in _chat_model._shared
    assert b.engine._closed
    await c.aclose()
    with pytest.raises(ValueError, match="device"):
        TransformersChatModel(str(tiny_folder), device="cpu", device_map="cpu")


async def test_a_call_past_its_timeout_is_cancelled_and_raises(
        tiny_pair: tuple[Any, Any]) -> None:
    import asyncio
    import time

    from agentplex.model import ModelTimeoutError

    model = TransformersChatModel("tiny", model=tiny_pair, timeout=0.2, max_tokens=8)
    assert model.settings == {"weights": "float32"}  # what a run's manifest records
    stalled: list[GenerationRequest] = []
    submit = model.engine.submit
    model.engine.submit = stalled.append  # type: ignore[method-assign,assignment]  # no answer
    started = time.perf_counter()
    with pytest.raises(ModelTimeoutError, match=r"no answer within 0\.2 s"):
        await model(COUNT)
    assert time.perf_counter() - started < 5
    with pytest.raises(ModelTimeoutError, match=r"within 0\.05 s"):  # the call's own timeout
        stream = await model(COUNT, timeout=0.05, stream=True)
        async for _ in stream:  # type: ignore[union-attr]
            pass
    assert [r.cancelled for r in stalled] == [True, True]  # the engine drops both rows
    model.engine.submit = submit  # type: ignore[method-assign]
    answer = await asyncio.wait_for(model(COUNT, timeout=60), 60)
    assert isinstance(answer, ChatResponse) and answer.text
    for bad in (0, -1, "soon", True):
        with pytest.raises(UnsupportedOptionError, match="timeout"):
            await model(COUNT, timeout=bad)
    with pytest.raises(UnsupportedOptionError, match="timeout"):
        TransformersChatModel("tiny", model=tiny_pair, timeout=0)
    await model.aclose()
