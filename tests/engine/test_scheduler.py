"""The scheduling loop: who joins when (whole or in chunks), chunk sizes, idle gathering,
cancelling mid-prompt, closing. Token equality is checked against the same prompts
computed at once, never how fast (that is ``benchmarks/bench_local_model.py``'s job)."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from agentplex.engine import (  # noqa: E402
    BatchEngine,
    EngineClosed,
    EngineError,
    EngineOptionError,
    GenerationEvent,
    GenerationRequest,
)
from agentplex.errors import AgentplexError  # noqa: E402
from tests.support.engine_runs import make_engine, prompts, run  # noqa: E402


@pytest.mark.parametrize(("cached", "mixed"), [(False, True), (True, True), (False, False),
                                               (True, False)])
def test_chunked_prefill_joins_without_changing_tokens(pair: tuple[Any, Any], cached: bool,
                                                       mixed: bool) -> None:
    """A long prompt prefilled in chunks — in the running batch's decode passes (mixed) or
    in passes of its own — gives the tokens it gives alone, and so do the running rows."""
    running = prompts(4, shared=0, own=30, seed=2)
    long = prompts(1, shared=0, own=600, seed=3)
    alone = make_engine(pair, prefix_cache_bytes=0)
    chunked = make_engine(pair, prefix_cache_bytes=64 * 2**20 if cached else 0,
                          prefill_chunk=64, mix_chunks=mixed)
    try:
        expected = [r.generated for r in run(alone, running, 40)]
        expected += [r.generated for r in run(alone, long, 40)]
        if cached:  # the long prompt's first 288 tokens (9 blocks) are in the cache
            run(chunked, [long[0][:300]], 1)
        got = run(chunked, running, 40, late=long)
        assert [r.generated for r in got] == expected
        counts = chunked.counters
        assert counts.chunks >= (600 - 288 * cached) // 64
        # mixed: every chunk but those run before the batch decodes shares a decode pass
        assert (counts.mixed_steps >= counts.chunks - 2) if mixed else (
            counts.mixed_steps == 0)
        if cached:
            assert chunked.prefix is not None and chunked.prefix.hit_tokens >= 288
        # the forward time splits into prompts (chunks included) and decode steps
        assert 0 < counts.prefill_seconds < counts.forward_seconds
        assert counts.prefill_tokens >= 4 * 30 + 600 - 288 * cached
    finally:
        alone.close()
        chunked.close()


def test_a_long_prompt_mostly_cached_joins_whole(pair: tuple[Any, Any]) -> None:
    """Whether a joining prompt is chunked goes by its uncached tokens: prompts sharing a
    cached 288-token head and 20 tokens of their own join in one pass, unchunked."""
    running = prompts(4, shared=0, own=30, seed=2)
    late = prompts(3, shared=300, own=20, seed=4)
    alone = make_engine(pair, prefix_cache_bytes=0)
    cached = make_engine(pair, prefill_chunk=64)
    try:
        expected = [r.generated for r in run(alone, running + late, 24)]
        run(cached, [late[0][:300]], 1)  # the shared head, 9 blocks of 32
        got = run(cached, running, 24, late=late)
        assert [r.generated for r in got] == expected
        assert cached.counters.chunks == 0
        assert cached.prefix is not None and cached.prefix.hit_tokens >= 3 * 288
    finally:
        alone.close()
        cached.close()


def test_cancelling_a_prompt_between_mixed_chunks(pair: tuple[Any, Any]) -> None:
    running = prompts(3, shared=0, own=30, seed=4)
    long = GenerationRequest(prompt_ids=prompts(1, shared=0, own=600, seed=5)[0],
                             max_new_tokens=8, emit=lambda event: None)
    alone = make_engine(pair, prefix_cache_bytes=0)
    mixed = make_engine(pair, prefix_cache_bytes=0, prefill_chunk=64)
    finished = threading.Semaphore(0)
    submitted = threading.Event()

    def emit(event: GenerationEvent) -> None:  # the worker thread, between two steps
        if event.output_tokens == 2 and not submitted.is_set():
            submitted.set()
            mixed.submit(long)
        if mixed.counters.mixed_steps >= 2:
            long.cancel()  # after its second chunk, long before its tenth and last
        if event.finish_reason is not None:
            finished.release()

    try:
        expected = [r.generated for r in run(alone, running, 30)]
        reqs = [GenerationRequest(prompt_ids=p, max_new_tokens=30, emit=emit) for p in running]
        for r in reqs:
            mixed.submit(r)
        for _ in reqs:
            assert finished.acquire(timeout=120)
        assert [r.generated for r in reqs] == expected
        assert long.finish_reason == "cancelled" and long.generated == []
        assert 2 <= mixed.counters.chunks < 10
    finally:
        alone.close()
        mixed.close()


def test_chunks_grow_when_a_pass_costs_the_same_whatever_its_size(
        pair: tuple[Any, Any]) -> None:
    eng = make_engine(pair)
    cpu = make_engine(pair)
    try:
        eng.counters.decode_cost = 0.045
        for tokens in (1, 8, 16, 64, 8):  # launch-bound passes: no marginal cost
            eng.counters.cost.observe(tokens, 0.045)
        assert eng._chunk_size() == 2048  # one pass joins them all, not 8 tokens a step
        counts = cpu.counters
        counts.decode_cost = 0.040
        for tokens in (1, 8, 16, 64, 8):
            counts.cost.observe(tokens, 0.001 * tokens)
        assert cpu._chunk_size() == 20  # half a decode step's worth of tokens
        # once chunks ride in decode passes, those passes alone size them: on a CPU a token
        # costs more in a small pass than in a long prompt's
        counts.cost.observe(1000, 1.0)
        counts.mixed_steps = 2
        for tokens in (8, 28, 8, 28):
            counts.step_cost.observe(tokens, 0.040 + 0.002 * (tokens - 8))
        assert 9 <= cpu._chunk_size() <= 10
    finally:
        eng.close()
        cpu.close()


def test_requests_sent_one_by_one_to_an_idle_engine_start_together(
        pair: tuple[Any, Any]) -> None:
    model, tok = pair
    eng = BatchEngine(model, tok, eos_ids={-1}, batch_wait=0.2, prefix_cache_bytes=0)
    done = threading.Semaphore(0)

    def emit(event: GenerationEvent) -> None:
        if event.finish_reason is not None:
            done.release()

    try:
        for ids in prompts(8, shared=0, own=10):
            eng.submit(GenerationRequest(prompt_ids=ids, max_new_tokens=4, emit=emit))
            time.sleep(0.002)  # as an event loop sends them: each wakes the worker
        for _ in range(8):
            assert done.acquire(timeout=60)
        assert eng.counters.max_rows_seen == 8
        assert eng.counters.steps == 4  # one prefill for all eight, then three decode steps
    finally:
        eng.close()


def test_a_closed_engine_refuses_and_ends_what_it_held(pair: tuple[Any, Any]) -> None:
    """Closing ends the running and waiting requests with :class:`EngineClosed` (also a
    ``RuntimeError`` and an ``AgentplexError``); later submissions raise it."""
    eng = make_engine(pair, prefix_cache_bytes=0)
    events: list[GenerationEvent] = []
    ended = threading.Event()
    started = threading.Event()

    def emit(event: GenerationEvent) -> None:
        started.set()
        if event.finish_reason is not None:
            events.append(event)
            ended.set()

    req = GenerationRequest(prompt_ids=prompts(1, shared=0, own=10)[0], max_new_tokens=10_000,
                            emit=emit)
    eng.submit(req)
    assert started.wait(60)
    eng.close()
    assert ended.wait(60)
    assert events[-1].finish_reason == "error"
    assert isinstance(events[-1].error, EngineClosed)
    with pytest.raises(EngineClosed) as refused:
        eng.submit(GenerationRequest(prompt_ids=[1, 2], max_new_tokens=1, emit=emit))
    assert isinstance(refused.value, EngineError | RuntimeError | AgentplexError)
    assert issubclass(EngineClosed, RuntimeError) and issubclass(EngineError, AgentplexError)


def test_the_engine_thread_keeps_its_own_torch_threads(pair: tuple[Any, Any]) -> None:
    """``cpu_threads`` is the engine thread's intra-op thread count (its passes run with
    it); the threads of the caller keep theirs. By default 1 on a CPU with at most 2 cores."""
    import os

    from tests.support.engine_runs import random_llama

    model, tok = random_llama(pair[1], seed=8), pair[1]
    seen: list[int] = []
    model.register_forward_pre_hook(lambda module, args: seen.append(torch.get_num_threads()))
    before = torch.get_num_threads()
    eng = make_engine((model, tok), cpu_threads=1)
    try:
        run(eng, prompts(2, shared=0, own=8, seed=1), 4)
    finally:
        eng.close()
    assert seen and set(seen) == {1}
    assert torch.get_num_threads() == before
    default = make_engine((model, tok))
    try:
        assert default.cpu_threads == (1 if (os.cpu_count() or 1) <= 2 else None)
    finally:
        default.close()
    for bad in (0, -2, 1.5, "2"):
        with pytest.raises(EngineOptionError, match="cpu_threads"):
            make_engine((model, tok), cpu_threads=bad)
