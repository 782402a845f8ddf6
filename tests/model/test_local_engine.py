"""The local engine's prefix reuse, chunked prefill, log-probabilities and GPU options.

A small randomly initialised Llama stands for a real model: what is checked is that reusing
cached prefixes and prefilling in chunks give exactly the tokens computing everything at once
gives (greedy), never how fast (that is ``benchmarks/bench_local_model.py``'s job).
"""

from __future__ import annotations

import inspect
import math
import threading
from typing import Any

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from agentplex.model import ChatResponse, TransformersChatModel  # noqa: E402
from agentplex.model.local import (  # noqa: E402
    BatchEngine,
    GenerationEvent,
    GenerationRequest,
)
from agentplex.model.local._loading import cuda_options  # noqa: E402
from agentplex.model.local._prefix import PrefixCache  # noqa: E402
from tests.support.results import as_response, as_stream  # noqa: E402
from tests.support.tiny_llama import build_tokenizer  # noqa: E402

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def pair() -> tuple[Any, Any]:
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = build_tokenizer()
    torch.manual_seed(1)
    config = LlamaConfig(
        vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
        eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, bos_token_id=None,
        initializer_range=0.3)
    return LlamaForCausalLM(config).eval(), tok  # type: ignore[no-untyped-call]


def engine(pair: tuple[Any, Any], **options: Any) -> BatchEngine:
    model, tok = pair
    return BatchEngine(model, tok, eos_ids={-1}, batch_wait=0.05, **options)


def prompts(n: int, shared: int, own: int, seed: int = 0) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    head = torch.randint(10, 400, (shared,), generator=g).tolist()
    return [head + torch.randint(10, 400, (own,), generator=g).tolist() for _ in range(n)]


def run(eng: BatchEngine, batch: list[list[int]], tokens: int,
        late: list[list[int]] | None = None, logprobs: int | None = None
        ) -> list[GenerationRequest]:
    """Submit ``batch`` (then ``late`` once the batch decodes); wait for all to finish."""
    finished = threading.Semaphore(0)
    decoding = threading.Event()

    def emit(event: GenerationEvent) -> None:
        if event.output_tokens >= 2:
            decoding.set()
        if event.finish_reason is not None:
            assert event.error is None, event.error
            finished.release()

    reqs = [GenerationRequest(prompt_ids=p, max_new_tokens=tokens, emit=emit,
                              logprobs=logprobs) for p in batch]
    for r in reqs:
        eng.submit(r)
    extra = []
    if late:
        assert decoding.wait(60)
        extra = [GenerationRequest(prompt_ids=p, max_new_tokens=tokens, emit=emit)
                 for p in late]
        for r in extra:
            eng.submit(r)
    for _ in reqs + extra:
        assert finished.acquire(timeout=120)
    return reqs + extra


def test_prefix_reuse_gives_the_same_tokens(pair: tuple[Any, Any]) -> None:
    batch = prompts(6, shared=200, own=20)
    plain = engine(pair, prefix_cache_bytes=0)
    reused = engine(pair)
    try:
        expected = [r.generated for r in run(plain, batch, 12)]
        got = run(reused, batch, 12)
        assert [r.generated for r in got] == expected
        # the shared 192 tokens (6 blocks of 32) were computed once, not six times
        assert reused.prefill_tokens <= plain.prefill_tokens - 5 * 192
        assert reused.prefix is not None and reused.prefix.hit_tokens >= 6 * 192
        # next turn: each history grows; its own earlier prompt is reused too
        turn = [p + r.generated + [11, 12, 13] for p, r in zip(batch, got, strict=True)]
        before = reused.prefill_tokens
        again = run(reused, turn, 8)
        assert [r.generated for r in again] == [r.generated for r in run(plain, turn, 8)]
        assert reused.prefill_tokens - before < sum(len(t) for t in turn) // 4
    finally:
        plain.close()
        reused.close()


@pytest.mark.parametrize(("cached", "mixed"), [(False, True), (True, True), (False, False),
                                               (True, False)])
def test_chunked_prefill_joins_without_changing_tokens(pair: tuple[Any, Any], cached: bool,
                                                       mixed: bool) -> None:
    """A long prompt prefilled in chunks — in the running batch's decode passes (mixed) or
    in passes of its own — gives the tokens it gives alone, and so do the running rows."""
    running = prompts(4, shared=0, own=30, seed=2)
    long = prompts(1, shared=0, own=600, seed=3)
    alone = engine(pair, prefix_cache_bytes=0)
    chunked = engine(pair, prefix_cache_bytes=64 * 2**20 if cached else 0, prefill_chunk=64,
                     mix_chunks=mixed)
    try:
        expected = [r.generated for r in run(alone, running, 40)]
        expected += [r.generated for r in run(alone, long, 40)]
        if cached:  # the long prompt's first 288 tokens (9 blocks) are in the cache
            run(chunked, [long[0][:300]], 1)
        got = run(chunked, running, 40, late=long)
        assert [r.generated for r in got] == expected
        assert chunked.chunks >= (600 - 288 * cached) // 64
        # mixed: every chunk but those run before the batch decodes shares a decode pass
        assert (chunked.mixed_steps >= chunked.chunks - 2) if mixed else (
            chunked.mixed_steps == 0)
        if cached:
            assert chunked.prefix is not None and chunked.prefix.hit_tokens >= 288
        # the forward time splits into prompts (chunks included) and decode steps
        assert 0 < chunked.prefill_seconds < chunked.forward_seconds
        assert chunked.prefill_tokens >= 4 * 30 + 600 - 288 * cached
    finally:
        alone.close()
        chunked.close()


def test_a_long_prompt_mostly_cached_joins_whole(pair: tuple[Any, Any]) -> None:
    """Whether a joining prompt is chunked goes by its uncached tokens: prompts sharing a
    cached 288-token head and 20 tokens of their own join in one pass, unchunked."""
    running = prompts(4, shared=0, own=30, seed=2)
    late = prompts(3, shared=300, own=20, seed=4)
    alone = engine(pair, prefix_cache_bytes=0)
    cached = engine(pair, prefill_chunk=64)
    try:
        expected = [r.generated for r in run(alone, running + late, 24)]
        run(cached, [late[0][:300]], 1)  # the shared head, 9 blocks of 32
        got = run(cached, running, 24, late=late)
        assert [r.generated for r in got] == expected
        assert cached.chunks == 0
        assert cached.prefix is not None and cached.prefix.hit_tokens >= 3 * 288
    finally:
        alone.close()
        cached.close()


def test_cancelling_a_prompt_between_mixed_chunks(pair: tuple[Any, Any]) -> None:
    running = prompts(3, shared=0, own=30, seed=4)
    long = GenerationRequest(prompt_ids=prompts(1, shared=0, own=600, seed=5)[0],
                             max_new_tokens=8, emit=lambda event: None)
    alone = engine(pair, prefix_cache_bytes=0)
    mixed = engine(pair, prefix_cache_bytes=0, prefill_chunk=64)
    finished = threading.Semaphore(0)
    submitted = threading.Event()

    def emit(event: GenerationEvent) -> None:  # the worker thread, between two steps
        if event.output_tokens == 2 and not submitted.is_set():
            submitted.set()
            mixed.submit(long)
        if mixed.mixed_steps >= 2:
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
        assert 2 <= mixed.chunks < 10
    finally:
        alone.close()
        mixed.close()


def test_mixed_steps_only_for_models_that_allow_them(pair: tuple[Any, Any]) -> None:
    from transformers import LlamaConfig, LlamaForCausalLM, MistralConfig, MistralForCausalLM

    from agentplex.model.local._mixed import supports_mixed_steps

    assert supports_mixed_steps(pair[0])  # a Llama, SDPA attention
    small: dict[str, Any] = {"vocab_size": 64, "hidden_size": 16, "intermediate_size": 32,
             "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 1}
    eager = LlamaForCausalLM(LlamaConfig(**small, attn_implementation="eager"))  # type: ignore[call-arg]
    assert not supports_mixed_steps(eager)
    sliding = MistralForCausalLM(MistralConfig(**small, sliding_window=8))
    assert not supports_mixed_steps(sliding)
    assert supports_mixed_steps(MistralForCausalLM(MistralConfig(**small, sliding_window=None)))


def test_prefix_cache_is_bounded_and_evicts_leaves_first() -> None:
    asked: list[tuple[int, int]] = []

    def kv_of(start: int, end: int) -> Any:
        asked.append((start, end))
        return torch.zeros(1, 2, 2, end - start, 4)  # 1 layer, keys and values, 2 heads

    block_bytes = 2 * 2 * 4 * 4 * 4  # keys and values, 2 heads, 4 tokens, 4 dims, float32
    cache = PrefixCache(block_size=4, max_bytes=10 * block_bytes)
    shared = list(range(16))
    for i in range(20):
        cache.insert(shared + [100 + i] * 8, 24, kv_of)
        assert cache.bytes <= cache.max_bytes
    assert len(cache.match(shared + [119] * 8, 24)) == 6  # the newest is whole
    assert len(cache.match(shared + [100] * 8, 24)) == 4  # the oldest kept only the trunk
    assert len(cache.match([7] * 24, 24)) == 0
    asked.clear()  # the newest prompt's cached head is not asked for again, its rest at once
    cache.insert(shared + [119] * 8 + [5] * 9, 33, kv_of)
    assert asked == [(24, 32)] and len(cache.match(shared + [119] * 8 + [5] * 8, 32)) == 8
    assert cache.assemble(cache.match(shared + [119] * 8, 24)).shape == (1, 2, 2, 24, 4)


def test_prefix_cache_evicts_the_least_recently_used_leaf() -> None:
    def kv_of(start: int, end: int) -> Any:
        return torch.zeros(1, 2, 1, end - start, 1)

    block_bytes = 2 * 4 * 4  # keys and values, 4 tokens, float32
    cache = PrefixCache(block_size=4, max_bytes=9 * block_bytes)
    trunk, branch, other = [1] * 16, [2] * 8, [3] * 8
    cache.insert(trunk + branch, 24, kv_of)  # 4 trunk blocks, then 2 of the branch
    cache.insert(other, 8, kv_of)  # 2 blocks under another root
    assert len(cache.match(trunk, 16)) == 4  # the trunk is used again, its branch is not
    cache.insert([4] * 16, 16, kv_of)  # 4 more blocks: 3 must go
    assert len(cache.match(trunk + branch, 24)) == 4  # the branch went, then the oldest leaf:
    assert len(cache.match(other, 8)) == 1  # the other root's, older than the trunk's end
    assert cache.bytes == 9 * block_bytes and len(cache) == 9
    for _ in range(200):  # used again and again: stale heap entries stay bounded
        cache.match(trunk, 16)
        assert len(cache._leaves) <= 2 * len(cache) + 64


async def test_logprobs_on_chat_responses(pair: tuple[Any, Any]) -> None:
    model = TransformersChatModel("random", model=pair, max_new_tokens=6)
    asked = [{"role": "user", "content": "Say hi."}]
    got = await model(asked, logprobs=True, top_logprobs=3)
    assert isinstance(got, ChatResponse) and got.usage is not None
    assert got.logprobs is not None and len(got.logprobs) == got.usage.output_tokens
    for entry in got.logprobs:
        assert entry.logprob <= 0 and len(entry.top_logprobs) == 3
        tops = [t.logprob for t in entry.top_logprobs]
        assert tops == sorted(tops, reverse=True)
        assert math.isclose(entry.logprob, tops[0], abs_tol=1e-5)  # greedy: the top one
        assert sum(math.exp(t) for t in tops) <= 1 + 1e-5
    assert "".join(e.token for e in got.logprobs) == got.text
    streamed = [c async for c in as_stream(await model(asked, logprobs=True, stream=True))]
    assert [(e.token, e.logprob) for e in streamed[-1].logprobs or []] == [
        (e.token, e.logprob) for e in got.logprobs]
    assert all(e.top_logprobs == [] for e in streamed[-1].logprobs or [])
    assert as_response(await model(asked)).logprobs is None


def test_cuda_loading_options() -> None:
    assert cuda_options("cpu", 2**30, []) == ({}, [])
    options, fractions = cuda_options("cuda", 20 * 2**30, [80 * 2**30])
    assert options == {"attn_implementation": "sdpa"} and fractions == [0.25]
    options, fractions = cuda_options("cuda", 40 * 2**30, [80 * 2**30, 80 * 2**30])
    assert options["max_memory"] == {0: 40 * 2**30, 1: 40 * 2**30}
    assert fractions == [0.5, 0.5]
    assert cuda_options("cuda", None, [80 * 2**30]) == ({"attn_implementation": "sdpa"}, [])


def test_gpu_memory_bounds_the_prefix_cache(pair: tuple[Any, Any]) -> None:
    model = TransformersChatModel("random", model=pair, gpu_memory=64 * 2**20)
    assert model.engine.prefix is not None
    assert model.engine.prefix.max_bytes == 16 * 2**20
    model.engine.close()


def test_pass_cost_fits_the_marginal_cost_of_a_token() -> None:
    from agentplex.model.local._cost import PassCost

    linear, fixed = PassCost(), PassCost()
    assert linear.per_token() is None  # nothing seen yet
    for tokens in (8, 30, 120, 8, 500, 64):
        linear.observe(tokens, 0.002 + 0.001 * tokens)  # a CPU: time grows with tokens
        fixed.observe(tokens, 0.045)  # a GPU running a small model: launches dominate
    assert linear.per_token() == pytest.approx(0.001)
    assert fixed.per_token() == pytest.approx(0.0, abs=1e-9)
    same = PassCost()
    for _ in range(3):
        same.observe(8, 0.04)
    assert same.per_token() is None  # one size only: no slope to fit


def test_chunks_grow_when_a_pass_costs_the_same_whatever_its_size(
        pair: tuple[Any, Any]) -> None:
    eng = engine(pair)
    try:
        eng._decode_cost = 0.045
        for tokens in (1, 8, 16, 64, 8):  # launch-bound passes: no marginal cost
            eng._cost.observe(tokens, 0.045)
        assert eng._chunk_size() == 2048  # one pass joins them all, not 8 tokens a step
        cpu = engine(pair)
        cpu._decode_cost = 0.040
        for tokens in (1, 8, 16, 64, 8):
            cpu._cost.observe(tokens, 0.001 * tokens)
        assert cpu._chunk_size() == 20  # half a decode step's worth of tokens
        # once chunks ride in decode passes, those passes alone size them: on a CPU a token
        # costs more in a small pass than in a long prompt's
        cpu._cost.observe(1000, 1.0)
        cpu.mixed_steps = 2
        for tokens in (8, 28, 8, 28):
            cpu._step_cost.observe(tokens, 0.040 + 0.002 * (tokens - 8))
        assert 9 <= cpu._chunk_size() <= 10
        cpu.close()
    finally:
        eng.close()


def _seeded(seed: int, temperature: float = 0.8, top_k: int = 0,
            top_p: float = 1.0) -> GenerationRequest:
    from agentplex.model.local import Sampling

    req = GenerationRequest(prompt_ids=[1], max_new_tokens=8, emit=lambda event: None,
                            sampling=Sampling(temperature, top_p, top_k, seed))
    req._generator = torch.Generator().manual_seed(seed)
    return req


def test_rows_sampled_together_draw_what_each_draws_alone() -> None:
    from agentplex.model.local._engine import _sample

    logits = torch.randn(6, 500, generator=torch.Generator().manual_seed(5)) * 3
    logits[2, 7:] = float("-inf")  # a grammar allowing seven tokens
    settings = [{}, {"temperature": 1.5}, {}, {"top_k": 5}, {"top_p": 0.5}, {"temperature": 0.3}]
    together = [_seeded(i, **kw) for i, kw in enumerate(settings)]  # type: ignore[arg-type]
    alone = [_seeded(i, **kw) for i, kw in enumerate(settings)]  # type: ignore[arg-type]
    for _ in range(20):
        drawn = _sample(together, logits.clone())
        assert drawn == [_sample([r], logits[i:i + 1].clone())[0] for i, r in enumerate(alone)]
        assert drawn[2] < 7 and drawn[3] in logits[3].topk(5).indices.tolist()


def test_sampling_follows_the_distribution_and_never_draws_a_masked_token() -> None:
    from agentplex.model.local._engine import _sample

    logits = torch.full((1, 300), float("-inf"))
    logits[0, 10], logits[0, 250] = 0.0, math.log(4.0)  # probabilities 0.2 and 0.8
    req = _seeded(1, temperature=1.0)
    drawn = [_sample([req], logits)[0] for _ in range(2000)]
    assert set(drawn) == {10, 250}
    assert 0.75 < drawn.count(250) / len(drawn) < 0.85
    hot = torch.full((3, 300), float("-inf"))
    hot[:, -1] = 0.0  # only the last token allowed: the top of the CDF
    assert _sample([_seeded(s) for s in range(3)], hot) == [299, 299, 299]


def test_the_cache_goes_by_the_name_the_installed_transformers_uses(
        pair: tuple[Any, Any]) -> None:
    from types import SimpleNamespace

    from agentplex.model.local._compat import cache_keyword, returned_cache

    class Old:
        def forward(self, input_ids: Any = None, past_key_values: Any = None) -> None: ...

    class New:
        def forward(self, input_ids: Any = None, cache: Any = None) -> None: ...

    assert cache_keyword(Old()) == "past_key_values" and cache_keyword(New()) == "cache"
    model = pair[0]  # the installed transformers' own Llama
    assert cache_keyword(model) in inspect.signature(model.forward).parameters
    assert returned_cache(SimpleNamespace(cache="c", past_key_values=None)) == "c"
    assert returned_cache(SimpleNamespace(past_key_values="p")) == "p"


def test_windows_decoded_together_read_as_each_decoded_alone() -> None:
    import copy

    from agentplex.model.local._detokenize import batch_decoder

    tok = build_tokenizer()
    ids = tok("Hello there! {\"n\": [1, 2]} é 🎉 ok", add_special_tokens=False)["input_ids"]
    windows = [ids[:k] for k in range(len(ids) + 1)] + [ids[k:k + 2] for k in range(len(ids))]
    windows += [[tok.eos_token_id], [*ids, tok.eos_token_id]]
    alone = [tok.decode(w, skip_special_tokens=False) for w in windows]
    fast = batch_decoder(tok)
    assert fast.__name__ == "fast" and fast(windows) == alone
    cleaning = copy.deepcopy(tok)  # a clean-up the backend does not do: one decode each
    cleaning.clean_up_tokenization_spaces = True
    assert batch_decoder(cleaning).__name__ == "each"
    assert batch_decoder(cleaning)(windows) == [cleaning.decode(w) for w in windows]


def test_merged_rows_are_left_padded_copies() -> None:
    from agentplex.model.local._engine import _stack

    a, b = torch.randn(2, 3, 5, 4), torch.randn(3, 3, 2, 4)
    merged = _stack(a, b, 2, 5)
    assert merged.shape == (5, 3, 5, 4)
    assert torch.equal(merged[:2], a) and torch.equal(merged[2:, :, 3:], b)
    assert not merged[2:, :, :3].any()
    mask = _stack(torch.ones(1, 2, dtype=torch.long), torch.ones(2, 4, dtype=torch.long), 1, 4)
    assert mask.tolist() == [[0, 0, 1, 1], [1, 1, 1, 1], [1, 1, 1, 1]]


def test_a_request_not_streamed_gets_one_event_with_what_the_stream_sends() -> None:
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = build_tokenizer()
    torch.manual_seed(3)
    config = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64,
                         num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1,
                         initializer_range=1.0)  # varied tokens: stops are met mid-text
    eng = BatchEngine(LlamaForCausalLM(config).eval(),  # type: ignore[no-untyped-call]
                      tok, eos_ids={-1}, batch_wait=0.05, prefix_cache_bytes=0)
    prompt = prompts(1, shared=0, own=12)[0]
    events: dict[bool, list[GenerationEvent]] = {True: [], False: []}
    done = threading.Semaphore(0)

    def request(stream: bool, stop: tuple[str, ...]) -> GenerationRequest:
        def emit(event: GenerationEvent) -> None:
            events[stream].append(event)
            if event.finish_reason is not None:
                done.release()

        return GenerationRequest(prompt_ids=list(prompt), max_new_tokens=40, emit=emit,
                                 stop=stop, logprobs=2, stream=stream)

    try:
        full = run(eng, [prompt], 40)[0].text
        for stop in ((), (full[len(full) // 2:len(full) // 2 + 2],)):
            events[True].clear()
            events[False].clear()
            for stream in (True, False):
                eng.submit(request(stream, stop))
            assert done.acquire(timeout=60) and done.acquire(timeout=60)
            streamed, whole = events[True], events[False]
            assert len(whole) == 1 and len(streamed) > 1
            assert whole[0].text == "".join(e.text for e in streamed)
            assert whole[0].text == (full.split(stop[0])[0] if stop else full)
            scores = [s for e in streamed for s in e.logprobs]
            assert [s[0] for s in whole[0].logprobs] == [s[0] for s in scores]
            assert all(math.isclose(a[1], b[1], abs_tol=1e-4)
                       for a, b in zip(whole[0].logprobs, scores, strict=True))
            assert whole[0].finish_reason == streamed[-1].finish_reason
    finally:
        eng.close()


def test_requests_sent_one_by_one_to_an_idle_engine_start_together(
        pair: tuple[Any, Any]) -> None:
    import time

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
        assert eng.max_rows_seen == 8
        assert eng.steps == 4  # one prefill for all eight, then three decode steps
    finally:
        eng.close()
