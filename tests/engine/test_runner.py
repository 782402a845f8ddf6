"""The model runner: greedy tokens are plain Transformers' (batched, with cached prefixes or
not), and the passes go by what the installed model and Transformers allow."""

from __future__ import annotations

import inspect
import time
from typing import Any

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from agentplex.engine import BatchEngine  # noqa: E402
from tests.support.engine_runs import generated_alone, make_engine, prompts, run  # noqa: E402


def joined_in_chunks(eng: BatchEngine, batch: list[list[int]], late: list[list[int]],
                     tokens: int, expected: list[list[int]], cached: int) -> None:
    """Run ``batch`` with ``late`` joining it: each gives its ``expected`` tokens, the late
    prompt joined in chunks, and at least ``cached`` prompt tokens came from the prefix
    cache."""
    got = run(eng, batch, tokens, late=late)
    assert [r.generated for r in got] == expected
    assert eng.counters.chunks >= 2  # the late prompt joined in chunks
    assert eng.prefix is not None and eng.prefix.hit_tokens >= cached


def test_greedy_tokens_are_those_of_transformers_generate(pair: tuple[Any, Any]) -> None:
    """Prompts of different lengths decoded together (left-padded, sharing a cached head,
    one joining while the others decode) give the tokens ``model.generate`` gives each
    alone, up to and including the end-of-sequence token."""
    model, tok = pair
    eos = tok.eos_token_id
    batch = [p[:n] for p, n in zip(prompts(5, shared=70, own=30, seed=7),
                                   (100, 95, 80, 77, 71), strict=True)]
    late = prompts(1, shared=0, own=150, seed=8)
    expected = generated_alone(model, tok, batch + late, 24)
    eng = BatchEngine(model, tok, eos_ids={eos}, batch_wait=0.05, prefill_chunk=64)
    try:
        joined_in_chunks(eng, batch, late, 24, expected, cached=4 * 64)
    finally:
        eng.close()


@pytest.mark.parametrize("mixed", [False, True], ids=["every-layer", "one-layer-of-two"])
def test_sliding_window_models_give_the_tokens_of_transformers_generate(
        pair: tuple[Any, Any], mixed: bool) -> None:
    """A model whose layers (all, or some) attend to the last 8 tokens only: prompts longer
    than the window, decoded together past it, sharing a cached head, one joining while the
    others decode, give the tokens ``model.generate`` gives each alone."""
    from tests.support.engine_runs import random_windowed

    tok = pair[1]
    model = random_windowed(tok, window=8, mixed=mixed)
    eos = tok.eos_token_id
    batch = [p[:n] for p, n in zip(prompts(4, shared=40, own=20, seed=5),
                                   (60, 52, 47, 41), strict=True)]
    late = prompts(1, shared=0, own=30, seed=6)
    expected = generated_alone(model, tok, batch + late, 20)
    eng = BatchEngine(model, tok, eos_ids={eos}, batch_wait=0.05, prefill_chunk=16,
                      static_decode=True)  # asked for, and not taken: its mask has no window
    try:
        assert not eng.static_decode
        assert eng.runner.windows == ({"full_attention": None, "sliding_attention": 8}
                                      if mixed else {"sliding_attention": 8})
        run(eng, [batch[0][:33]], 1)  # the shared head: cached, then reused by every row
        joined_in_chunks(eng, batch, late, 20, expected, cached=4 * 32)
    finally:
        eng.close()


def test_prefix_reuse_gives_the_same_tokens(pair: tuple[Any, Any]) -> None:
    batch = prompts(6, shared=200, own=20)
    plain = make_engine(pair, prefix_cache_bytes=0)
    reused = make_engine(pair)
    try:
        expected = [r.generated for r in run(plain, batch, 12)]
        got = run(reused, batch, 12)
        assert [r.generated for r in got] == expected
        # the shared 192 tokens (6 blocks of 32) were computed once, not six times
        assert reused.counters.prefill_tokens <= plain.counters.prefill_tokens - 5 * 192
        assert reused.prefix is not None and reused.prefix.hit_tokens >= 6 * 192
        # next turn: each history grows; its own earlier prompt is reused too
        turn = [p + r.generated + [11, 12, 13] for p, r in zip(batch, got, strict=True)]
        before = reused.counters.prefill_tokens
        again = run(reused, turn, 8)
        assert [r.generated for r in again] == [r.generated for r in run(plain, turn, 8)]
        assert reused.counters.prefill_tokens - before < sum(len(t) for t in turn) // 4
    finally:
        plain.close()
        reused.close()


def test_an_answer_and_a_partial_block_are_reused_too(pair: tuple[Any, Any]) -> None:
    """Past a prompt's whole cached blocks: the same prompt again computes only its last
    token (the rest lent by a cached block's leading tokens, copied into the row's own
    block); and a finished row's prompt and generated tokens are cached, so a next turn
    that holds the answer computes only what follows it. Every time the tokens are those
    of an engine without a prefix cache."""
    plain = make_engine(pair, prefix_cache_bytes=0)
    reused = make_engine(pair)
    try:
        first = prompts(2, shared=0, own=45, seed=21)  # a block of 32, then 13 tokens
        expected = [r.generated for r in run(plain, first, 30)]
        assert [r.generated for r in run(reused, first, 30)] == expected
        before = reused.counters.prefill_tokens
        assert [r.generated for r in run(reused, first, 30)] == expected
        assert reused.counters.prefill_tokens - before == 2  # the last token of each
        # the next turn: each prompt, its answer (its keys and values as decoded), more
        turn = [p + r + [11, 12, 13] for p, r in zip(first, expected, strict=True)]
        want = [r.generated for r in run(plain, turn, 8)]
        before = reused.counters.prefill_tokens
        assert [r.generated for r in run(reused, turn, 8)] == want
        # 45 + 30 + 3 = 78 tokens; the answer's keys and values (all but its last
        # token's) came back: at most 3 + 1 computed per row
        assert reused.counters.prefill_tokens - before <= 2 * 4
        pool, prefix = reused.runner.pool, reused.prefix
        assert prefix is not None

        def only_the_cache_holds() -> bool:  # the ended rows' blocks given back
            try:
                return all(pool.refs(b.page) == 1 for b in list(prefix._blocks.values()))
            except RuntimeError:  # the engine's thread is still at it
                return False

        deadline = time.monotonic() + 10  # the engine prunes just after its last events
        while not only_the_cache_holds() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert only_the_cache_holds()  # the cache's own reference only
        prefix.clear()
        assert pool.used == 0  # every block back, the lent copies' included
    finally:
        plain.close()
        reused.close()


def test_prefixes_shared_by_groups_of_a_burst_are_computed_once(
        pair: tuple[Any, Any]) -> None:
    """Prompts arriving together: a head all share, then one of two heads each group shares
    (the players of one persona), then their own tokens. Each head is computed once, and
    the tokens are those of computing everything."""
    common = prompts(1, shared=64, own=0, seed=11)[0]
    groups = [prompts(1, shared=64, own=0, seed=s)[0] for s in (12, 13)]
    own = prompts(6, shared=0, own=5, seed=14)
    batch = [common + groups[i % 2] + own[i] for i in range(6)]
    plain = make_engine(pair, prefix_cache_bytes=0)
    shared = make_engine(pair)
    try:
        expected = [r.generated for r in run(plain, batch, 8)]
        assert [r.generated for r in run(shared, batch, 8)] == expected
        # 64 + 2 * 64 + 6 * 5 tokens, give or take the last block of each prompt
        assert shared.counters.prefill_tokens <= 64 + 2 * 64 + 6 * (5 + 32)
        assert plain.counters.prefill_tokens == 6 * 133
    finally:
        plain.close()
        shared.close()


def test_mixed_steps_only_for_models_that_allow_them(pair: tuple[Any, Any]) -> None:
    from transformers import LlamaConfig, LlamaForCausalLM, MistralConfig, MistralForCausalLM

    from agentplex.engine._mixed import supports_mixed_steps

    assert supports_mixed_steps(pair[0])  # a Llama, SDPA attention
    small: dict[str, Any] = {"vocab_size": 64, "hidden_size": 16, "intermediate_size": 32,
             "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 1}
    eager = LlamaForCausalLM(LlamaConfig(**small, attn_implementation="eager"))  # type: ignore[call-arg]
    assert not supports_mixed_steps(eager)
    sliding = MistralForCausalLM(MistralConfig(**small, sliding_window=8))
    assert not supports_mixed_steps(sliding)
    assert supports_mixed_steps(MistralForCausalLM(MistralConfig(**small, sliding_window=None)))


def test_the_cache_goes_by_the_name_the_installed_transformers_uses(
        pair: tuple[Any, Any]) -> None:
    from types import SimpleNamespace

    from agentplex.engine._compat import cache_keyword, returned_cache

    class Old:
        def forward(self, input_ids: Any = None, past_key_values: Any = None) -> None: ...

    class New:
        def forward(self, input_ids: Any = None, cache: Any = None) -> None: ...

    assert cache_keyword(Old()) == "past_key_values" and cache_keyword(New()) == "cache"
    model = pair[0]  # the installed transformers' own Llama
    assert cache_keyword(model) in inspect.signature(model.forward).parameters
    assert returned_cache(SimpleNamespace(cache="c", past_key_values=None)) == "c"
    assert returned_cache(SimpleNamespace(past_key_values="p")) == "p"
