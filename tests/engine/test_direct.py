"""Decode steps computed straight over a Llama-family model's weights (``engine._direct``)
give the model's own logits, bitwise, and only models laid out as Llama's take them."""

from __future__ import annotations

from typing import Any

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from agentplex.engine._direct import DirectDecode, direct_decode  # noqa: E402
from tests.support.engine_runs import (  # noqa: E402
    engines_with_and_without,
    prompts,
    random_llama,
    random_qwen2,
    random_windowed,
    run,
)


def quantized(model: Any, scheme: str) -> Any:
    """``model`` with its linear layers quantized (their q/k/v and gate/up fuse through
    the quantized layers' ``concat``)."""
    from agentplex.model.local import quantize_model

    quantize_model(model, scheme)
    return model


@pytest.mark.parametrize("kind", ["llama", "llama-bf16", "qwen2", "llama-int8", "llama-int4"])
@pytest.mark.parametrize("shared", [0, 80], ids=["own-prompts", "common-head"])
def test_direct_steps_give_the_forward_passes_logits(pair: tuple[Any, Any], kind: str,
                                                     shared: int) -> None:
    """Rows decoded together (with a head of 80 common tokens: attending to it once for
    all rows, as a cascade) choose the same tokens with the same log-probabilities, to the
    last bit, as the same engine decoding through the model's ``forward``: float weights,
    and quantized ones whose q/k/v and gate/up run as one fused layer each."""
    tok = pair[1]
    model = {"llama": lambda: pair[0], "qwen2": lambda: random_qwen2(tok),
             "llama-bf16": lambda: random_llama(tok, seed=4).to(torch.bfloat16),
             "llama-int8": lambda: quantized(random_llama(tok, seed=5), "int8"),
             "llama-int4": lambda: quantized(random_llama(tok, seed=6), "int4")}[kind]()
    batch = prompts(4, shared=shared, own=12, seed=11)
    with engines_with_and_without((model, tok), {"direct": None}) as (direct, forward):
        assert direct.runner.direct is not None
        got_scores: list[list[Any]] = []
        expected_scores: list[list[Any]] = []
        got = run(direct, batch, 12, logprobs=3, scores=got_scores)
        expected = run(forward, batch, 12, logprobs=3, scores=expected_scores)
        assert [r.generated for r in got] == [r.generated for r in expected]
        assert [len(s) for s in got_scores] == [12] * 4
        assert got_scores == expected_scores  # each token's and the 3 likeliest, exactly
        assert direct.runner.direct.steps > 0
        if "int" in kind:  # one quantized layer, of the model's own kind, for q/k/v
            qkv = direct.runner.direct.layers[0].qkv
            q_proj = model.model.layers[0].self_attn.q_proj
            assert type(qkv) is type(q_proj) and qkv.out_features == 64 + 2 * 32
        assert (direct.counters.shared_steps > 0) == (shared > 0)


@pytest.mark.parametrize("kind", ["llama", "llama-int4"])
def test_prompts_cached_but_their_last_token_prefill_as_one_direct_step(
        pair: tuple[Any, Any], kind: str) -> None:
    """The same prompts again (a repeated question, a chat's next turn): the prefix cache
    holds all but their last tokens, and their prefill is one direct step for all rows —
    the forward's tokens and log-probabilities, to the last bit."""
    model = pair[0] if kind == "llama" else quantized(random_llama(pair[1], seed=9), "int4")
    batch = prompts(3, shared=0, own=40, seed=12)  # a whole block and a part-block each
    with engines_with_and_without((model, pair[1]), {"direct": None}) as (direct, forward):
        for engine in (direct, forward):
            run(engine, batch, 4)  # now cached: each prompt and what it generated
        assert direct.runner.direct is not None
        passes, direct_steps = direct.counters.steps, direct.runner.direct.steps
        computed = direct.counters.prefill_tokens
        got_scores: list[list[Any]] = []
        expected_scores: list[list[Any]] = []
        got = run(direct, batch, 6, logprobs=2, scores=got_scores)
        expected = run(forward, batch, 6, logprobs=2, scores=expected_scores)
        assert [r.generated for r in got] == [r.generated for r in expected]
        assert got_scores == expected_scores
        assert direct.counters.prefill_tokens - computed == 3  # the last token of each
        # every pass of the second run was direct: the prefill too
        assert direct.runner.direct.steps - direct_steps == direct.counters.steps - passes


def test_fused_layers_hold_no_second_copy(pair: tuple[Any, Any]) -> None:
    """q/k/v and gate/up are computed by one product each; the model's own layers then
    read views of the fused weights (same values, memory held once)."""
    model = pair[0]
    layer = model.model.layers[0]
    before = layer.self_attn.k_proj.weight.detach().clone()
    direct = direct_decode(model)
    assert isinstance(direct, DirectDecode)
    fused = direct.layers[0].qkv.weight
    k = layer.self_attn.k_proj.weight
    assert torch.equal(k, before)
    assert k.untyped_storage().data_ptr() == fused.untyped_storage().data_ptr()
    # a second engine of the same model (other batch settings) fuses nothing again
    again = direct_decode(model)
    assert again is not None and again.layers[0].qkv is direct.layers[0].qkv
    assert again.layers[1].gate_up is direct.layers[1].gate_up


def test_quantized_layers_fused_once_for_two_engines(pair: tuple[Any, Any]) -> None:
    model = quantized(random_llama(pair[1], seed=8), "int4")
    first, second = direct_decode(model), direct_decode(model)
    assert first is not None and second is not None
    assert first.layers[0].qkv is second.layers[0].qkv
    dense = first.layers[0].qkv.dense
    assert model.model.layers[0].self_attn.q_proj.dense.untyped_storage().data_ptr() == (
        dense.untyped_storage().data_ptr())


def test_only_llama_like_models_are_decoded_directly(pair: tuple[Any, Any]) -> None:
    """Sliding windows, another attention function or another architecture: the model's
    ``forward`` decodes."""
    from transformers import Qwen3Config, Qwen3ForCausalLM

    tok = pair[1]
    assert direct_decode(random_windowed(tok, window=8, mixed=False)) is None
    assert direct_decode(random_windowed(tok, window=8, mixed=True)) is None
    eager = random_qwen2(tok)
    eager.config._attn_implementation = "eager"
    assert direct_decode(eager) is None
    qwen3 = Qwen3ForCausalLM(Qwen3Config(
        vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=1,
        num_attention_heads=4, num_key_value_heads=2, head_dim=16))
    assert direct_decode(qwen3) is None
    assert direct_decode(object()) is None


def test_a_bf16_cache_is_attended_in_bf16(pair: tuple[Any, Any]) -> None:
    """With ``kv_dtype=torch.bfloat16`` (what a quantized model's engine gets) the pool holds
    bf16 keys and values, and a direct step attends in bf16 (a prefill through the model's
    forward attends in float32 over the same bf16 keys): the tokens are the forward's, the
    log-probabilities a little off."""
    batch = prompts(4, shared=0, own=12, seed=11)
    model = random_llama(pair[1], seed=6)
    with engines_with_and_without((model, pair[1]), {"direct": None},
                                  kv_dtype=torch.bfloat16) as (direct, forward):
        assert direct.runner.pool.kv.dtype == torch.bfloat16
        got_scores: list[list[Any]] = []
        expected_scores: list[list[Any]] = []
        got = run(direct, batch, 12, logprobs=1, scores=got_scores)
        expected = run(forward, batch, 12, logprobs=1, scores=expected_scores)
        assert [r.generated for r in got] == [r.generated for r in expected]
        gaps = [abs(a[1] - b[1]) for x, y in zip(got_scores, expected_scores, strict=True)
                for a, b in zip(x, y, strict=True)]
        assert 0 < max(gaps) < 0.25  # measured: 0.09
