"""int8 weights on the CPU (``quantize="int8"``): the quality floor on a fixed text, a row's
output independent of the rows batched with it (in one layer and in the embedded model's
greedy answers), and bad options refused before anything loads."""

from __future__ import annotations

import asyncio
import copy
from pathlib import Path
from typing import Any

import pytest

from agentplex.model import ChatResponse, TransformersChatModel, UnsupportedOptionError
from agentplex.model.local import load_local_model, quantize_model
from tests.support.model_quality import demo_prompts, perplexity

pytestmark = pytest.mark.anyio

PERPLEXITY_FACTOR = 1.03
"""The most the int8 perplexity may exceed float32's on the fixed text (measured: 1.00)."""


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
    assert set(kinds.values()) == {"Int8Linear"}  # every linear layer, the output layer too
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
            # four rows decode through the int8 kernel, as one alone does: the same tokens
            assert batched.text == one.text
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
    assert quantize_model(model) == len(_linears(model))
    with torch.inference_mode():
        after = model(ids).logits
    assert not torch.equal(before, after)  # the weights changed ...
    assert torch.equal(before.argmax(-1), after.argmax(-1))  # ... not what they predict
    wrapped = TransformersChatModel("tiny-int8", model=(model, tiny_pair[1]))
    assert wrapped.quantize == "int8"


def test_auto_is_int8_for_the_embedded_model_on_a_cpu_only() -> None:
    pytest.importorskip("torch")
    from agentplex.model.local._loading import quantize_for

    assert quantize_for("default", "auto", "cpu") == "int8"
    assert quantize_for("smollm2", "auto", "cpu") == "int8"
    assert quantize_for("some/other-model", "auto", "cpu") is None
    assert quantize_for("default", "auto", "cpu", "bfloat16") is None
    assert quantize_for("default", "auto", "cuda") is None
    assert quantize_for("default", None, "cpu") is None


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


def test_a_rows_output_does_not_depend_on_the_rows_batched_with_it() -> None:
    torch = pytest.importorskip("torch")
    from agentplex.model.local._int8 import INT8_ROWS, Int8Linear

    gen = torch.Generator().manual_seed(0)
    linear = torch.nn.Linear(576, 1536, bias=False)
    with torch.no_grad():
        linear.weight.copy_(torch.randn(1536, 576, generator=gen) * 0.05)
    layer = Int8Linear(linear)

    def others(count: int) -> Any:
        return torch.randn(count, 576, generator=gen) * 4  # louder than the row

    row = torch.randn(1, 576, generator=gen)
    with torch.inference_mode():
        alone = layer(row)[0]
        few = [layer(torch.cat([others(m - 1), row]))[m - 1] for m in range(2, INT8_ROWS + 1)]
        many = [layer(torch.cat([others(k), row, others(m - 1 - k)]))[k]
                for m, k in ((INT8_ROWS + 1, 0), (16, 7), (33, 32), (64, 21))]
    for out in few:  # the int8 kernel: the same bits, whoever shares the batch
        assert torch.equal(out, alone)
    # the bf16 kernel (and oneDNN's blocking, which changes with the batch's size): the same
    # bits in nearly all outputs, the rest one bf16 step apart, as float32's own kernels
    # differ in the last bit between one row and many
    step = torch.exp2(torch.floor(torch.log2(alone.abs().clamp(min=1e-30))) - 7)
    for out in many:
        assert int((out != alone).sum()) <= 0.005 * alone.numel()
        assert bool(((out - alone).abs() <= step).all())
