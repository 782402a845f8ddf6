"""int8 and int4 weights on the CPU (``quantize="int8"`` / ``"int4"``): the quality floor on a
fixed text, a row's output independent of the rows batched with it (in one layer and in the
embedded model's greedy answers), fused layers (``concat``), and bad options refused before
anything loads."""

from __future__ import annotations

import asyncio
import copy
from pathlib import Path
from typing import Any

import pytest

from agentplex.model import ChatResponse, TransformersChatModel, UnsupportedOptionError
from agentplex.model.local import load_local_model, quantize_model
from tests.support.model_quality import decode_perplexity, demo_prompts, perplexity

pytestmark = pytest.mark.anyio

PERPLEXITY_FACTOR = 1.03
"""The most the quantized perplexity may exceed float32's on the fixed text (measured: int8
1.005, int4 1.008)."""

LAYERS = {"Linear", "Int8Linear", "Int4Linear"}


def _linears(model: Any) -> dict[str, str]:
    return {name: type(m).__name__ for name, m in model.named_modules()
            if type(m).__name__ in LAYERS}


@pytest.mark.timeout(600)  # converts the GGUF file when run alone
@pytest.mark.parametrize("scheme", ["int8", "int4"])
def test_quality_floor_on_the_fixed_text(scheme: str, smol: TransformersChatModel,
                                         model_cache: Path) -> None:
    loaded = load_local_model("default", cache_dir=model_cache, quantize=scheme)
    assert loaded.quantize == scheme
    kinds = _linears(loaded.model)
    assert kinds.pop("lm_head") == "Int8Linear"  # the output layer is int8 in both
    assert set(kinds.values()) == {"Int8Linear" if scheme == "int8" else "Int4Linear"}
    float32 = perplexity(smol.model, smol.tokenizer)
    quantized = perplexity(loaded.model, loaded.tokenizer)
    assert float32 < 15  # the float path itself knows the text (measured: 9.6)
    assert quantized <= PERPLEXITY_FACTOR * float32, (quantized, float32)
    # and one token a pass, as an agent decodes: the kernels for a row alone (measured on
    # the first 160 tokens: float32 14.20; int8 1.025x, int4 1.017x; every int8 layer
    # through FBGEMM's 7-bit rows, as for a while, 1.165x)
    float32 = decode_perplexity(smol.model, smol.tokenizer)
    quantized = decode_perplexity(loaded.model, loaded.tokenizer)
    assert quantized <= PERPLEXITY_FACTOR * float32, (quantized, float32)


@pytest.mark.timeout(600)  # converts the GGUF file when run alone
@pytest.mark.parametrize("scheme", ["int8", "int4"])
async def test_the_embedded_model_answers_quantized(scheme: str, model_cache: Path) -> None:
    from agentplex.sim.scenarios._game import Guess

    model = TransformersChatModel("default", cache_dir=model_cache, quantize=scheme,
                                  max_new_tokens=24, prefix_cache_bytes=0)
    try:
        assert model.quantize == scheme
        assert model.settings == {"weights": scheme}  # what a run's manifest records
        assert str(model.engine.runner.pool.kv.dtype) == "torch.bfloat16"  # under float32
        asks = demo_prompts(4)
        first = [await model(p) for p in asks]
        again = await asyncio.wait_for(asyncio.gather(*(model(p) for p in asks)), 300)
        same = 0
        for one, batched in zip(first, again, strict=True):
            assert isinstance(one, ChatResponse) and isinstance(batched, ChatResponse)
            assert one.usage is not None and one.usage.output_tokens > 0
            same += batched.text == one.text
        # Four rows decode through the quantized kernels, as one alone does, and each row's
        # output there is the same bits whatever rows share the call. But the prompts'
        # prefill (many rows: the dense matmul, whose blocking follows the batch's size)
        # and the attention over a batch differ from alone in float32's last bits, which
        # a rounding of a layer's input can turn into a step of its own (to bf16; the
        # output layer's to 7 bits, a coarser step): with no prefix cache (what batching
        # alone does), two of these four prompts give the same tokens with either weights.
        # (With one, the batch reuses the prompts the calls alone computed, all but their
        # last token, which a pass of four rows then computes: another comparison.)
        assert same >= 2, (first, again)
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
    assert str(smol.engine.runner.pool.kv.dtype) == "torch.float32"


@pytest.mark.timeout(600)  # trains the tiny model when run alone
@pytest.mark.parametrize("scheme", ["int8", "int4"])
def test_quantize_model_on_a_given_pair(scheme: str, tiny_pair: tuple[Any, Any]) -> None:
    import torch

    model = copy.deepcopy(tiny_pair[0])
    ids = torch.tensor([[1, 2, 3, 4, 5]])
    with torch.inference_mode():
        before = model(ids).logits
    assert quantize_model(model, scheme) == len(_linears(model))
    with torch.inference_mode():
        after = model(ids).logits
    assert not torch.equal(before, after)  # the weights changed ...
    if scheme == "int8":  # ... not what they predict
        assert torch.equal(before.argmax(-1), after.argmax(-1))
    else:  # ... not by much (the tiny model's weights are not ready for 4 bits, as a GGUF
        # file's are: 3 of its 5 predictions stay; the logits 0.20 away, relatively)
        assert float((after - before).norm()) < 0.3 * float(before.norm())
    wrapped = TransformersChatModel(f"tiny-{scheme}", model=(model, tiny_pair[1]))
    assert wrapped.quantize == scheme


def test_auto_is_int4_for_the_embedded_model_on_a_cpu_only() -> None:
    pytest.importorskip("torch")
    from agentplex.model.local._loading import quantize_for
    from agentplex.model.local._quantize import has_int4_kernel

    assert has_int4_kernel()  # the pinned torch has it
    assert quantize_for("default", "auto", "cpu") == "int4"
    assert quantize_for("smollm2", "auto", "cpu") == "int4"
    assert quantize_for("some/other-model", "auto", "cpu") is None
    assert quantize_for("default", "auto", "cpu", "bfloat16") is None
    assert quantize_for("default", "auto", "cuda") is None
    assert quantize_for("default", None, "cpu") is None


@pytest.mark.parametrize(("options", "says"), [
    ({"quantize": "int3"}, "unknown quantize='int3'"),
    ({"quantize": "int8", "torch_dtype": "bfloat16"}, "float32"),
    ({"quantize": "int8", "device": "cuda"}, "CPU only"),
    ({"quantize": "int4", "torch_dtype": "bfloat16"}, "float32"),
    ({"quantize": "int4", "device": "cuda"}, "CPU only"),
])
def test_bad_options_are_refused_before_loading(options: dict[str, Any], says: str,
                                                tmp_path: Path) -> None:
    pytest.importorskip("torch")
    empty = tmp_path / "empty-cache"
    with pytest.raises(UnsupportedOptionError, match=says):
        TransformersChatModel("default", cache_dir=empty, **options)
    assert not empty.exists()  # nothing was converted or loaded


def _layer(out_features: int, in_features: int = 576, bias: bool = False,
           seed: int = 0) -> Any:
    """A float32 ``torch.nn.Linear`` with random weights of about the embedded model's size."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    linear = torch.nn.Linear(in_features, out_features, bias=bias)
    with torch.no_grad():
        linear.weight.copy_(torch.randn(out_features, in_features, generator=gen) * 0.05)
        if linear.bias is not None:
            linear.bias.copy_(torch.randn(out_features, generator=gen))
    return linear


def _quantized(name: str) -> Any:
    from agentplex.model.local import _int4, _int8

    return {"Int8Linear": _int8.Int8Linear, "Int4Linear": _int4.Int4Linear}[name]


@pytest.mark.parametrize("kind", ["Int8Linear", "Int4Linear"])
def test_a_rows_output_does_not_depend_on_the_rows_batched_with_it(kind: str) -> None:
    torch = pytest.importorskip("torch")
    cls = _quantized(kind)
    layer = cls(_layer(1536))
    gen = torch.Generator().manual_seed(1)

    def others(count: int) -> Any:
        return torch.randn(count, 576, generator=gen) * 4  # louder than the row

    row = torch.randn(1, 576, generator=gen)
    rows = cls.kernel_rows
    with torch.inference_mode():
        alone = layer(row)[0]
        few = [layer(torch.cat([others(m - 1), row]))[m - 1] for m in range(2, rows + 1)]
        many = [layer(torch.cat([others(k), row, others(m - 1 - k)]))[k]
                for m, k in ((rows + 1, 0), (16, 7), (33, 32), (64, 21))]
    assert rows == {"Int8Linear": 4, "Int4Linear": 8}[kind]
    for out in few:  # the quantized kernel: the same bits, whoever shares the batch
        assert torch.equal(out, alone)
    # the bf16 kernel (and oneDNN's blocking, which changes with the batch's size): the same
    # bits in nearly all outputs whoever shares the batch ...
    for out in many[1:]:
        assert int((out != many[0]).sum()) <= 0.005 * alone.numel()
    if kind == "Int8Linear":  # ... and at most one bf16 step from ATen's int8 kernel's,
        # as float32's own kernels differ in the last bit between one row and many
        step = torch.exp2(torch.floor(torch.log2(alone.abs().clamp(min=1e-30))) - 7)
        for out in many:
            assert int((out != alone).sum()) <= 0.005 * alone.numel()
            assert bool(((out - alone).abs() <= step).all())
    else:  # ... and within the bf16 rounding of its dequantized weights of the int4 kernel's
        # (which dequantizes them in float32)
        weights = layer.dense.float().abs()
        bound = (row.abs().to(torch.bfloat16).float() @ weights.t())[0] * 2.0 ** -8
        for out in many:
            assert bool(((out - alone).abs() <= bound).all())


def test_an_output_layer_rounding_its_input_keeps_rows_apart_and_close() -> None:
    """``round_input`` (a model's output layer): up to 4 rows through FBGEMM one row a
    call, each rounded to 7 bits with its own scale: a row's output is the same bits
    whoever shares the call, within half a 7-bit step of the row (plus a bf16 step of the
    sums) of ATen's kernel's, and the dense matmul beyond."""
    torch = pytest.importorskip("torch")
    int8 = _int8()
    if not int8.has_fbgemm():
        pytest.skip("FBGEMM: x86 builds of torch")
    linear = _layer(1536)
    rounded, plain = int8.Int8Linear(linear, round_input=True), int8.Int8Linear(linear)
    assert rounded.round_input and not plain.round_input and rounded.kernel_rows == 4
    gen = torch.Generator().manual_seed(3)
    row = torch.randn(1, 576, generator=gen)
    with torch.inference_mode():
        alone = rounded(row)[0]
        for m in range(2, 5):
            assert torch.equal(rounded(torch.cat([torch.randn(m - 1, 576) * 4, row]))[-1],
                               alone)
        kernel = plain(row)[0]
    weights = rounded.qweight.float().abs() * rounded.scales[:, None]
    half_step = float(row.max() - row.min()) / 127 / 2
    bound = weights.sum(dim=1) * half_step * 1.01 + kernel.abs() * 2.0 ** -7
    assert bool(((alone - kernel).abs() <= bound).all()) and not torch.equal(alone, kernel)
    with pytest.raises(ValueError, match="round their input"):
        int8.Int8Linear.concat([rounded, plain])


def _int8() -> Any:
    from agentplex.model.local import _int8

    return _int8


@pytest.mark.parametrize(("kind", "sizes"), [
    ("Int8Linear", (576, 192, 192)),  # q, k and v of the embedded model
    ("Int8Linear", (48, 80)),
    ("Int4Linear", (1536, 1536)),  # gate and up
    ("Int4Linear", (576, 192, 192)),
    ("Int4Linear", (48, 80, 16)),  # not whole blocks of 64 rows: packed again
])
@pytest.mark.parametrize("bias", [False, True])
def test_concat_computes_the_pieces_outputs_concatenated(kind: str, sizes: tuple[int, ...],
                                                         bias: bool) -> None:
    torch = pytest.importorskip("torch")
    cls = _quantized(kind)
    pieces = [cls(_layer(n, bias=bias, seed=i)) for i, n in enumerate(sizes)]
    alone = [cls(_layer(n, bias=bias, seed=i)) for i, n in enumerate(sizes)]  # never fused
    fused = cls.concat(pieces)
    assert (fused.in_features, fused.out_features) == (576, sum(sizes))
    gen = torch.Generator().manual_seed(2)
    for rows in (1, 16):  # the quantized kernel; the dense matmul
        x = torch.randn(rows, 576, generator=gen)
        with torch.inference_mode():
            whole = fused(x)
            assert torch.equal(whole, torch.cat([p(x) for p in alone], dim=-1))
            assert torch.equal(whole, torch.cat([p(x) for p in pieces], dim=-1))

    def shares(name: str) -> bool:  # every piece's buffer is a view of the fused one's
        whole = getattr(fused, name)
        return all(getattr(p, name).untyped_storage().data_ptr()
                   == whole.untyped_storage().data_ptr() for p in pieces)

    assert shares("dense")
    assert shares("bias") if bias else fused.bias is None
    if kind == "Int8Linear":
        assert shares("qweight")
    else:
        assert shares("packed") == all(n % 64 == 0 for n in sizes)


def test_concat_refuses_layers_that_do_not_stack() -> None:
    pytest.importorskip("torch")
    int8, int4 = _quantized("Int8Linear"), _quantized("Int4Linear")
    with pytest.raises(ValueError, match="in_features"):
        int8.concat([int8(_layer(64)), int8(_layer(64, in_features=128))])
    with pytest.raises(TypeError):
        int4.concat([int4(_layer(64)), int8(_layer(64))])
    with pytest.raises(TypeError):
        int4.concat([])


def test_int4_keeps_a_layer_the_kernel_cannot_take_int8() -> None:
    torch = pytest.importorskip("torch")
    int4 = _quantized("Int4Linear")
    model = torch.nn.Sequential(_layer(64, in_features=40), torch.nn.ReLU(), _layer(48, 64),
                                _layer(40, 48))  # in 40, not a multiple of 32; out 40 of 16
    # 3 rows: what the quantized kernels take (the int8 one crashes or returns garbage with
    # 40 input features: that layer multiplies by its dense copy)
    x = torch.randn(3, 40, generator=torch.Generator().manual_seed(3))
    with torch.inference_mode():
        before = model(x)
    assert quantize_model(model, "int4") == 3
    assert [type(m).__name__ for m in model if type(m).__name__ in LAYERS] == [
        "Int8Linear", "Int4Linear", "Int8Linear"]
    with torch.inference_mode():
        after = model(x)
    assert after.shape == before.shape
    assert float((after - before).norm()) < 0.2 * float(before.norm())  # measured: 0.08
    with pytest.raises(UnsupportedOptionError, match="multiple of 32"):
        int4(_layer(64, in_features=40))
