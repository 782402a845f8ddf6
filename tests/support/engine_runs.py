"""Driving an engine from a test: a small random Llama, random prompts, run to the end.

A randomly initialised Llama stands for a real model: what the engine tests check is that
its batching, prefix reuse and chunking give exactly the tokens computing everything at once
gives (greedy), never how fast.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Any

import torch

from agentplex.engine import BatchEngine, GenerationEvent, GenerationRequest


def _shape(tok: Any, **more: Any) -> dict[str, Any]:
    """The configuration of the engine tests' small models: 2 layers, 4 query heads on 2
    key/value heads, random weights varied enough to give varied tokens."""
    return dict(
        vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
        eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, bos_token_id=None,
        initializer_range=0.3, **more)


def random_llama(tok: Any, seed: int = 1) -> Any:
    """A 2-layer Llama with random weights (varied enough tokens) for ``tok``'s vocabulary."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    return LlamaForCausalLM(LlamaConfig(**_shape(tok))).eval()  # type: ignore[no-untyped-call]


def random_qwen2(tok: Any, seed: int = 3) -> Any:
    """A 2-layer Qwen2 with random weights: biases on q, k and v, no sliding window."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(seed)
    return Qwen2ForCausalLM(Qwen2Config(**_shape(tok))).eval()  # type: ignore[no-untyped-call]


def random_windowed(tok: Any, window: int, mixed: bool, seed: int = 1) -> Any:
    """A 2-layer model with random weights whose attention has a sliding window of
    ``window`` tokens: a Mistral (every layer), or with ``mixed`` a Qwen2 whose second layer
    only has it (its first is full attention)."""
    from transformers import MistralConfig, MistralForCausalLM, Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(seed)
    shape = _shape(tok, sliding_window=window)
    if mixed:
        config = Qwen2Config(**shape, use_sliding_window=True, max_window_layers=1)
        return Qwen2ForCausalLM(config).eval()  # type: ignore[no-untyped-call]
    return MistralForCausalLM(MistralConfig(**shape)).eval()  # type: ignore[no-untyped-call]


def make_engine(pair: tuple[Any, Any], **options: Any) -> BatchEngine:
    """An engine of ``pair`` that never meets an end-of-sequence token."""
    model, tok = pair
    return BatchEngine(model, tok, eos_ids={-1}, batch_wait=0.05, **options)


@contextlib.contextmanager
def engines_with_and_without(pair: tuple[Any, Any], without: dict[str, Any],
                             **options: Any) -> Iterator[tuple[BatchEngine, BatchEngine]]:
    """Two engines of ``pair`` made alike (``options``), the second with its runner's
    attributes ``without`` set (a feature turned off, to compare the tokens with); both
    closed on the way out."""
    with_it, without_it = make_engine(pair, **options), make_engine(pair, **options)
    for name, value in without.items():
        setattr(without_it.runner, name, value)
    try:
        yield with_it, without_it
    finally:
        with_it.close()
        without_it.close()


def prompts(n: int, shared: int, own: int, seed: int = 0) -> list[list[int]]:
    """``n`` prompts of random tokens: a ``shared`` head, then ``own`` tokens each."""
    g = torch.Generator().manual_seed(seed)
    head = torch.randint(10, 400, (shared,), generator=g).tolist()
    return [head + torch.randint(10, 400, (own,), generator=g).tolist() for _ in range(n)]


def generated_alone(model: Any, tok: Any, batch: list[list[int]], tokens: int
                    ) -> list[list[int]]:
    """What ``model.generate`` gives each prompt of ``batch`` alone, greedy: up to
    ``tokens`` new tokens, up to and including the end-of-sequence token."""
    eos = tok.eos_token_id
    expected = []
    for ids in batch:
        out = model.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids),
                             dtype=torch.long), max_new_tokens=tokens, do_sample=False,
                             pad_token_id=tok.pad_token_id, eos_token_id=eos)
        new = out[0, len(ids):].tolist()
        expected.append(new[:new.index(eos) + 1] if eos in new else new)
    return expected


def run(eng: BatchEngine, batch: list[list[int]], tokens: int,
        late: list[list[int]] | None = None, logprobs: int | None = None,
        each: list[dict[str, Any]] | None = None,
        scores: list[list[Any]] | None = None) -> list[GenerationRequest]:
    """Submit ``batch`` (then ``late`` once the batch decodes); wait for all to finish.
    ``each``: more fields of each of ``batch``'s requests (``sampling``, ``max_new_tokens``);
    ``scores``: filled with each of ``batch``'s requests' log-probabilities, as emitted."""
    finished = threading.Semaphore(0)
    decoding = threading.Event()
    if scores is not None:
        scores[:] = [[] for _ in batch]

    def emitter(i: int | None) -> Any:
        def emit(event: GenerationEvent) -> None:
            if scores is not None and i is not None:
                scores[i].extend(event.logprobs)
            if event.output_tokens >= 2:
                decoding.set()
            if event.finish_reason is not None:
                assert event.error is None, event.error
                finished.release()
        return emit

    emit = emitter(None)
    fields: list[dict[str, Any]] = each or [{} for _ in batch]
    reqs = [GenerationRequest(prompt_ids=p, emit=emitter(i), **{
        "max_new_tokens": tokens, "logprobs": logprobs, **more})
        for i, (p, more) in enumerate(zip(batch, fields, strict=True))]
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
