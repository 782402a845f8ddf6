"""int8 weights on the CPU (``quantize="int8"``): the quality floor on a fixed text, the
embedded model answering through them, and bad options refused before anything loads."""

from __future__ import annotations

import asyncio
import copy
from pathlib import Path
from typing import Any

import pytest

from agentplex.model import ChatResponse, TransformersChatModel, UnsupportedOptionError
from agentplex.model.local import FLOAT_LAYERS, load_local_model, quantize_model
from tests.support.model_quality import demo_prompts, perplexity

pytestmark = pytest.mark.anyio

PERPLEXITY_FACTOR = 1.2
"""The most the int8 perplexity may exceed float32's on the fixed text (measured: 1.09)."""


def _linears(model: Any) -> dict[str, str]:
    import torch

    return {name: type(m).__name__ for name, m in model.named_modules()
            if isinstance(m, torch.nn.Linear) or type(m).__name__ == "Int8Linear"}


@pytest.mark.timeout(600)  # converts the GGUF file when run alone
def test_quality_floor_on_the_fixed_text(smol: TransformersChatModel,
                                         model_cache: Path) -> None:
    int8 = load_local_model("default", cache_dir=model_cache, quantize="int8")
    assert int8.quantize == "int8"
    kinds = _linears(int8.model)
    assert kinds["lm_head"] == "Int8Linear"
    assert {k for n, k in kinds.items() if n.rsplit(".", 1)[-1] in FLOAT_LAYERS} == {"Linear"}
    float32 = perplexity(smol.model, smol.tokenizer)
    quantized = perplexity(int8.model, int8.tokenizer)
    assert float32 < 15  # the float path itself knows the text (measured: 9.6)
    assert quantized <= PERPLEXITY_FACTOR * float32, (quantized, float32)


@pytest.mark.timeout(600)  # converts the GGUF file when run alone
async def test_the_embedded_model_answers_in_int8(model_cache: Path) -> None:
    from agentplex.sim.scenarios._game import Guess

    model = TransformersChatModel("default", cache_dir=model_cache, quantize="int8",
                                  max_new_tokens=24)
    try:
        assert model.quantize == "int8"
        asks = demo_prompts(4)
        first = [await model(p) for p in asks]
        again = await asyncio.wait_for(asyncio.gather(*(model(p) for p in asks)), 300)
        for one, batched in zip(first, again, strict=True):
            assert isinstance(one, ChatResponse) and isinstance(batched, ChatResponse)
            assert one.usage is not None and one.usage.output_tokens > 0
        guesses = await asyncio.wait_for(asyncio.gather(*(
            model(p, structured_model=Guess, temperature=0.8, seed=i)
            for i, p in enumerate(asks))), 300)
        for guess in guesses:
            assert isinstance(guess, ChatResponse) and guess.metadata is not None
            assert 0 <= guess.metadata["number"] <= 100
    finally:
        await model.aclose()


def test_the_float_path_stays_float(smol: TransformersChatModel) -> None:
    assert smol.quantize is None
    assert set(_linears(smol.model).values()) == {"Linear"}


@pytest.mark.timeout(600)  # trains the tiny model when run alone
def test_quantize_model_on_a_given_pair(tiny_pair: tuple[Any, Any]) -> None:
    import torch

    model = copy.deepcopy(tiny_pair[0])
    ids = torch.tensor([[1, 2, 3, 4, 5]])
    with torch.inference_mode():
        before = model(ids).logits
    assert quantize_model(model) == len(_linears(model)) - sum(
        1 for n in _linears(model) if n.rsplit(".", 1)[-1] in FLOAT_LAYERS)
    with torch.inference_mode():
        after = model(ids).logits
    assert not torch.equal(before, after)  # the weights changed ...
    assert torch.equal(before.argmax(-1), after.argmax(-1))  # ... not what they predict
    wrapped = TransformersChatModel("tiny-int8", model=(model, tiny_pair[1]))
    assert wrapped.quantize == "int8"


@pytest.mark.parametrize(("options", "says"), [
    ({"quantize": "int4"}, "unknown quantize='int4'"),
    ({"quantize": "int8", "torch_dtype": "bfloat16"}, "float32"),
    ({"quantize": "int8", "device": "cuda"}, "CPU only"),
])
def test_bad_options_are_refused_before_loading(options: dict[str, Any], says: str,
                                                tmp_path: Path) -> None:
    pytest.importorskip("torch")
    empty = tmp_path / "empty-cache"
    with pytest.raises(UnsupportedOptionError, match=says):
        TransformersChatModel("default", cache_dir=empty, **options)
    assert not empty.exists()  # nothing was converted or loaded
