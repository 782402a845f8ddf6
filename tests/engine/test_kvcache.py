"""The paged key/value cache: blocks held by reference, rows joining and leaving without
moving keys, prefixes shared, every block given back once nobody holds it."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from agentplex.engine import (  # noqa: E402
    EngineError,
    GenerationEvent,
    GenerationRequest,
    UnsupportedModel,
)
from agentplex.engine._kvcache import KVPool, Seq  # noqa: E402
from agentplex.engine._paged import PagedStep  # noqa: E402
from tests.support.engine_runs import (  # noqa: E402
    engines_with_and_without,
    make_engine,
    prompts,
    run,
)


def settles(check: Callable[[], bool], timeout: float = 30.0) -> bool:
    """Whether ``check()`` holds within ``timeout`` seconds (polled)."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def test_blocks_are_counted_and_the_pool_grows_keeping_what_it_holds() -> None:
    pool = KVPool(1, 1, 2, block_size=4, blocks=3)
    seq = Seq()
    seq.grow(pool, 5)  # two blocks for five tokens
    seq.length = 5
    assert len(seq.blocks) == 2 and 0 not in seq.blocks and pool.used == 2
    pool.kv[0, 0, seq.blocks[0] * 4] = 7.0
    shared = seq.blocks[:1]
    pool.ref(shared)
    seq.grow(pool, 20)  # 25 tokens: the pool grows (one copy), held blocks keep their keys
    assert pool.grown == 1 and pool.blocks >= 8 and pool.touched == 8  # 7 blocks and block 0
    assert float(pool.kv[0, 0, shared[0] * 4, 0, 0]) == 7.0
    seq.free(pool)
    assert pool.used == 1 and pool.refs(shared[0]) == 1  # still held by the other holder
    pool.release(shared)
    assert pool.used == 0
    with pytest.raises(EngineError):
        pool.release(shared)


def test_a_step_writes_new_keys_and_reads_each_rows_own() -> None:
    """Two rows of different lengths: the keys gathered for a layer are each row's past
    then its new tokens, right-aligned; the mask hides the padding and is causal."""
    pool = KVPool(1, 1, 1, block_size=2, blocks=8)
    a, b = Seq(), Seq()
    first = PagedStep(pool, [a, b], [3, 1])
    keys = torch.tensor([[0.0, 1, 2], [0, 0, 5]]).view(2, 1, 3, 1)  # [rows, heads, width, dim]
    first.update(keys, keys + 100, 0)
    second = PagedStep(pool, [a, b], [1, 2])
    new = torch.tensor([[0.0, 3], [6, 7]]).view(2, 1, 2, 1)
    got, values = second.update(new, new + 100, 0)
    assert got[:, 0, :, 0].tolist() == [[0, 1, 2, 0, 3], [0, 0, 5, 6, 7]]
    assert torch.equal(values - got, torch.full_like(got, 100) * (second.index != 0)[:, None,
                                                                                    :, None])
    assert second.positions.tolist() == [[0, 3], [1, 2]]
    mask = second.mask[:, 0].int().tolist()
    assert mask[0][1] == [1, 1, 1, 0, 1]  # a's past, then its one new token
    assert mask[1] == [[0, 0, 1, 1, 0], [0, 0, 1, 1, 1]]  # b's past is one token: causal
    assert a.length == 4 and b.length == 3


def test_a_window_mask_shows_each_token_only_its_last_keys() -> None:
    """Beside the full mask, a step builds one per sliding window: a new token sees the
    keys less than ``window`` positions before it (Transformers' sliding window)."""
    pool = KVPool(1, 1, 1, block_size=2, blocks=8)
    a, b = Seq(), Seq()
    PagedStep(pool, [a, b], [3, 1])  # a holds positions 0-2, b position 0
    step = PagedStep(pool, [a, b], [1, 2], windows=(2,))
    full, near = step.mask[:, 0].int().tolist(), step.window_masks[2][:, 0].int().tolist()
    assert full[0][1] == [1, 1, 1, 0, 1] and near[0][1] == [0, 0, 1, 0, 1]  # a: 2 and 3
    assert full[1] == [[0, 0, 1, 1, 0], [0, 0, 1, 1, 1]]
    assert near[1] == [[0, 0, 1, 1, 0], [0, 0, 0, 1, 1]]  # b's position 2 no longer sees 0
    with pytest.raises(ValueError):
        PagedStep(pool, [a, b], [2, 1], windows=(2,), packed=True)


def test_rows_join_finish_and_share_prefixes_giving_every_block_back(
        pair: tuple[Any, Any]) -> None:
    """Rows sharing a cached head hold its blocks (not copies); rows of different lengths
    and budgets finish at different steps while others join; once all are done only the
    prefix cache holds blocks, and with it cleared the pool is empty."""
    eng = make_engine(pair, prefix_cache_bytes=64 * 2**20)
    plain = make_engine(pair, prefix_cache_bytes=0)
    batch = prompts(6, shared=96, own=10, seed=3)
    late = prompts(2, shared=0, own=40, seed=4)
    try:
        run(eng, [batch[0][:97]], 1)  # the shared head: three blocks of 32
        head = eng.prefix.match(batch[0], 96) if eng.prefix else []
        pages = [b.page for b in head]
        assert len(pages) == 3
        holders: list[int] = []
        done = threading.Semaphore(0)
        reqs: list[GenerationRequest] = []

        def emit(event: GenerationEvent) -> None:
            if event.output_tokens == 1:  # on the worker, after the prefill
                holders.append(eng.runner.pool.refs(pages[0]))
            if event.finish_reason is not None:
                done.release()

        for i, ids in enumerate(batch):
            reqs.append(GenerationRequest(prompt_ids=ids, max_new_tokens=4 + 3 * i, emit=emit))
            eng.submit(reqs[-1])
        for _ in batch:
            assert done.acquire(timeout=120)
        assert max(holders) == 1 + 6  # the prefix cache and the six rows: one block, no copies
        expected = [r.generated for r in run(plain, batch + late, 12)]
        got = run(eng, batch, 12, late=late)
        assert [r.generated for r in got] == expected
        pool = eng.runner.pool
        assert eng.prefix is not None
        prefix = eng.prefix
        # a row's last event reaches its caller before the worker frees the row's blocks
        assert settles(lambda: pool.used == len(prefix)), (pool.used, len(prefix))
        eng.prefix.clear()
        assert pool.used == 0
        assert settles(lambda: plain.runner.pool.used == 0)
    finally:
        eng.close()
        plain.close()


def test_a_prompt_cancelled_mid_chunk_gives_its_blocks_back(pair: tuple[Any, Any]) -> None:
    eng = make_engine(pair, prefix_cache_bytes=0, prefill_chunk=32, mix_chunks=False)
    running = prompts(2, shared=0, own=20, seed=6)
    long = GenerationRequest(prompt_ids=prompts(1, shared=0, own=400, seed=7)[0],
                             max_new_tokens=4, emit=lambda event: None)
    finished = threading.Semaphore(0)

    def emit(event: GenerationEvent) -> None:
        if event.output_tokens == 1 and not long.cancelled and eng.counters.chunks == 0:
            eng.submit(long)
        if eng.counters.chunks >= 2:
            long.cancel()
        if event.finish_reason is not None:
            finished.release()

    try:
        reqs = [GenerationRequest(prompt_ids=p, max_new_tokens=30, emit=emit) for p in running]
        for r in reqs:
            eng.submit(r)
        for _ in reqs:
            assert finished.acquire(timeout=120)
        assert long.finish_reason == "cancelled" and 2 <= eng.counters.chunks < 12
        assert settles(lambda: eng.runner.pool.used == 0)
    finally:
        eng.close()


def test_models_with_other_attention_than_full_or_a_window_are_refused(
        pair: tuple[Any, Any]) -> None:
    from transformers import LlamaConfig, LlamaForCausalLM, MistralConfig, MistralForCausalLM

    small: dict[str, Any] = {"vocab_size": 64, "hidden_size": 16, "intermediate_size": 32,
                             "num_hidden_layers": 1, "num_attention_heads": 2,
                             "num_key_value_heads": 1}
    chunked = LlamaForCausalLM(LlamaConfig(**small))
    chunked.config.layer_types = ["chunked_attention"]  # as Llama 4's layers
    with pytest.raises(UnsupportedModel, match="chunked_attention"):
        make_engine((chunked, pair[1]))
    for window in (8, None):  # a sliding window is served (tests/engine/test_runner.py)
        make_engine((MistralForCausalLM(MistralConfig(**small, sliding_window=window)),
                     pair[1])).close()


def test_rows_sharing_a_head_attend_to_it_once_with_the_same_tokens(
        pair: tuple[Any, Any]) -> None:
    """Decode steps whose rows all hold the same leading blocks attend to them once for
    all rows (a cascade); the tokens are those of attending to each row's whole past."""
    batch = prompts(6, shared=100, own=15, seed=3)
    with engines_with_and_without(pair, {"cascade_blocks": 0},
                                  prefix_cache_bytes=64 * 2**20) as (cascade, whole):
        for eng in (cascade, whole):
            run(eng, [batch[0][:101]], 1)  # the shared head: three blocks of 32
        got = [r.generated for r in run(cascade, batch, 16)]
        assert got == [r.generated for r in run(whole, batch, 16)]
        assert cascade.counters.shared_steps >= 10 and whole.counters.shared_steps == 0


def test_prompts_of_different_lengths_go_through_packed_with_the_same_tokens(
        pair: tuple[Any, Any]) -> None:
    """A prefill of prompts of different lengths runs their tokens packed, one after the
    other (no padding): the tokens are those of the padded pass."""
    batch = [p[:n] for p, n in zip(prompts(4, shared=0, own=90, seed=9), (90, 61, 33, 7),
                                   strict=True)]
    with engines_with_and_without(pair, {"packs": False},
                                  prefix_cache_bytes=0) as (packed, padded):
        got = [r.generated for r in run(packed, batch, 12)]
        assert got == [r.generated for r in run(padded, batch, 12)]
        assert packed.counters.packed_passes >= 1 and padded.counters.packed_passes == 0


def test_the_reserved_room_is_not_committed_memory_and_the_process_still_forks() -> None:
    """A CPU pool's reserved room (here 64 GiB, more than this machine has) maps and a
    process holding it still starts subprocesses: under the default heuristic overcommit a
    ``torch.empty`` that size is refused, and one per engine made every ``fork`` fail
    (``Cannot allocate memory``: the Ray tests failed so in a full suite)."""
    import subprocess
    import sys

    pool = KVPool(1, 1, 64, block_size=32, reserve_bytes=64 * 2**30)
    assert pool.blocks * pool.block_bytes >= 64 * 2**30
    seq = Seq()
    seq.grow(pool, 100)
    pool.kv[0, 0, seq.blocks[0] * 32] = 3.0
    assert float(pool.kv[0, 0, seq.blocks[0] * 32, 0, 0]) == 3.0
    done = subprocess.run([sys.executable, "-c", "print('forked')"], capture_output=True,
                          text=True, timeout=60, check=True)
    assert done.stdout.strip() == "forked"
    seq.free(pool)
    assert pool.used == 0
