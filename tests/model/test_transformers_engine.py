"""TransformersChatModel over the engine: log-probabilities on responses, the loading
options on CUDA, and the prefix cache's share of a GPU memory budget."""

from __future__ import annotations

import math
from typing import Any

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from agentplex.model import ChatResponse, TransformersChatModel  # noqa: E402
from agentplex.model.local._loading import cuda_options  # noqa: E402
from tests.support.engine_runs import random_llama  # noqa: E402
from tests.support.results import as_response, as_stream  # noqa: E402
from tests.support.tiny_llama import build_tokenizer  # noqa: E402

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def pair() -> tuple[Any, Any]:
    """A 2-layer Llama with random weights and the tiny tokenizer."""
    tok = build_tokenizer()
    return random_llama(tok), tok


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
    # the same prompt again: all but its last token lent by the prefix cache, which that
    # token's pass of one attends to (the first call's prefill computed it among the
    # prompt's): the same tokens, log-probabilities within float32's rounding
    again = streamed[-1].logprobs or []
    assert [e.token for e in again] == [e.token for e in got.logprobs]
    assert all(math.isclose(a.logprob, b.logprob, rel_tol=1e-5, abs_tol=1e-6)
               for a, b in zip(again, got.logprobs, strict=True))
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
