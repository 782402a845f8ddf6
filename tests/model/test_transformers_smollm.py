"""The embedded SmolLM2-135M-Instruct: GGUF load and cache, and the contract on a real model."""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import MappingProxyType
from typing import Annotated, Literal

import pytest
from pydantic import BaseModel, Field

from agentplex.model import ChatResponse, TransformersChatModel, init_chat_model
from agentplex.model.local import load_local_model
from tests.support.results import as_response, as_stream

pytestmark = pytest.mark.anyio

CAPITAL = [{"role": "user", "content": "What is the capital of France?"}]


def _converted_folders(root: Path) -> list[str]:
    folders = [p for p in root.iterdir() if not p.name.startswith(".")]
    return [f.name for folder in folders for f in folder.glob("*.safetensors")]


async def test_gguf_then_cache(smol: TransformersChatModel, model_cache: Path) -> None:
    assert smol.source == "gguf"
    assert smol.model_name == "SmolLM2-135M-Instruct"
    assert _converted_folders(model_cache) == ["model.safetensors"]
    cached = load_local_model("default", cache_dir=model_cache)
    assert cached.source == "cache"
    again = TransformersChatModel("cached", model=(cached.model, cached.tokenizer),
                                  max_new_tokens=12)
    expected = await smol(CAPITAL, max_tokens=12)
    assert isinstance(expected, ChatResponse)
    assert "Paris" in expected.text
    assert as_response(await again(CAPITAL)).text == expected.text


async def test_init_chat_model_shares_the_loaded_model(
    smol: TransformersChatModel, model_cache: Path
) -> None:
    model = init_chat_model("transformers:default", cache_dir=model_cache, quantize=None)
    assert isinstance(model, TransformersChatModel)
    assert model.engine is smol.engine
    # the embedded model by any of its names, as docs/local-models.md shows them; by
    # default its int4 weights on a CPU, one engine for both
    default = init_chat_model("transformers:default", cache_dir=model_cache)
    assert isinstance(default, TransformersChatModel) and default.quantize == "int4"
    assert TransformersChatModel(cache_dir=model_cache).engine is default.engine
    assert default.engine is not smol.engine


async def test_stream_and_stop(smol: TransformersChatModel) -> None:
    full = await smol([{"role": "user", "content": "List the numbers 1 to 9."}], max_tokens=40)
    assert isinstance(full, ChatResponse)
    assert "4" in full.text
    cut = full.text.index("4")
    stream = as_stream(await smol([{"role": "user", "content": "List the numbers 1 to 9."}],
                                  stream=True, stop_sequences=["4"], max_tokens=40))
    chunks = [c async for c in stream]
    assert chunks[-1].is_last and chunks[-1].text == full.text[:cut]
    assert chunks[-1].usage is not None and full.usage is not None
    assert chunks[-1].usage.output_tokens < full.usage.output_tokens


async def test_batched_equals_alone(smol: TransformersChatModel) -> None:
    prompts = [[{"role": "user", "content": q}] for q in
               ["Name a fruit.", "What is 2+2?", "Say hello in French.", "Name a color."]]
    alone = [as_response(await smol(p, max_tokens=10)).text for p in prompts]
    batched = await asyncio.wait_for(
        asyncio.gather(*(smol(p, max_tokens=10) for p in prompts)), timeout=120
    )
    assert [as_response(r).text for r in batched] == alone


class Person(BaseModel):
    name: Annotated[str, Field(max_length=30)]
    age: Annotated[int, Field(ge=0, le=130)]
    role: Literal["engineer", "doctor", "artist"]


class Order(BaseModel):
    items: Annotated[list[Annotated[str, Field(max_length=20)]], Field(min_length=1,
                                                                      max_length=3)]
    total: float
    paid: bool


async def test_structured_output_and_tool_calls(smol: TransformersChatModel) -> None:
    tools = [{"type": "function", "function": {
        "name": "get_weather", "description": "Current weather in a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string",
                                                                 "maxLength": 40}},
                       "required": ["city"]}}}]
    person, order, call = map(as_response, await asyncio.wait_for(asyncio.gather(
        smol([{"role": "user", "content": "Describe Ada, a 36 year old engineer."}],
             structured_model=Person, max_tokens=60),
        smol([{"role": "user", "content": "I bought two apples for 3 dollars."}],
             structured_model=Order, max_tokens=60),
        smol([{"role": "user", "content": "What's the weather in Paris?"}], tools=tools,
             tool_choice="required", max_tokens=40),
    ), timeout=180))
    assert Person.model_validate(person.metadata)
    assert Order.model_validate(order.metadata)
    assert [c.name for c in call.tool_calls] == ["get_weather"]
    assert isinstance(call.tool_calls[0].input["city"], str)


async def test_every_end_of_generation_token_ends_an_answer(
        smol: TransformersChatModel) -> None:
    """The embedded model's tokenizer ends sequences with ``<|im_end|>``, but the model also
    writes ``<|endoftext|>`` (a special token of its vocabulary) where it has finished:
    both end its answers, as llama.cpp's end-of-generation set does."""
    tok = smol.tokenizer
    ends = {tok.convert_tokens_to_ids(t) for t in ("<|im_end|>", "<|endoftext|>")}
    assert ends <= smol.engine.eos_ids
    assert tok.convert_tokens_to_ids("<|im_start|>") not in smol.engine.eos_ids


def test_an_ordinary_token_that_reads_like_an_end_does_not_end() -> None:
    from agentplex.model.local._chat_format import end_of_generation_ids

    class Tokenizer:  # "</s>" is a plain token of this vocabulary, "<|eot_id|>" a special one
        eos_token_id, unk_token_id = 7, None
        all_special_tokens = ("<|eot_id|>", "<pad>")
        vocab = MappingProxyType({"</s>": 3, "<|eot_id|>": 9, "<pad>": 1})

        def get_added_vocab(self) -> dict[str, int]:
            return {"<|eot_id|>": 9, "<pad>": 1}

        def convert_tokens_to_ids(self, text: str) -> int:
            return self.vocab[text]

    assert end_of_generation_ids(Tokenizer(), [7, 8]) == {7, 8, 9}
    assert end_of_generation_ids(Tokenizer(), 5) == {5, 7, 9}
