"""Sampling: a seeded row draws the same token whichever rows it is decoded with, and draws
follow the distribution without ever taking a masked token."""

from __future__ import annotations

import math
from typing import Any

import pytest

torch = pytest.importorskip("torch")

from agentplex.engine import GenerationRequest, Sampling  # noqa: E402
from agentplex.engine._sampling import sample, seed_request  # noqa: E402


def _seeded(seed: int, temperature: float = 0.8, top_k: int = 0,
            top_p: float = 1.0) -> GenerationRequest:
    req = GenerationRequest(prompt_ids=[1], max_new_tokens=8, emit=lambda event: None,
                            sampling=Sampling(temperature, top_p, top_k, seed))
    seed_request(req)
    return req


def test_rows_sampled_together_draw_what_each_draws_alone() -> None:
    logits = torch.randn(6, 500, generator=torch.Generator().manual_seed(5)) * 3
    logits[2, 7:] = float("-inf")  # a grammar allowing seven tokens
    settings = [{}, {"temperature": 1.5}, {}, {"top_k": 5}, {"top_p": 0.5}, {"temperature": 0.3}]
    together = [_seeded(i, **kw) for i, kw in enumerate(settings)]  # type: ignore[arg-type]
    alone = [_seeded(i, **kw) for i, kw in enumerate(settings)]  # type: ignore[arg-type]
    for _ in range(20):
        drawn = sample(together, logits.clone())
        assert drawn == [sample([r], logits[i:i + 1].clone())[0] for i, r in enumerate(alone)]
        assert drawn[2] < 7 and drawn[3] in logits[3].topk(5).indices.tolist()
        for r, a, token in zip(together, alone, drawn, strict=True):
            r.generated.append(token)
            a.generated.append(token)


def test_sampling_follows_the_distribution_and_never_draws_a_masked_token() -> None:
    logits = torch.full((1, 300), float("-inf"))
    logits[0, 10], logits[0, 250] = 0.0, math.log(4.0)  # probabilities 0.2 and 0.8
    req = _seeded(1, temperature=1.0)
    drawn = []
    for _ in range(2000):  # each draw the row's next token: its next position
        drawn += sample([req], logits)
        req.generated.append(drawn[-1])
    assert set(drawn) == {10, 250}
    assert 0.75 < drawn.count(250) / len(drawn) < 0.85
    hot = torch.full((3, 300), float("-inf"))
    hot[:, -1] = 0.0  # only the last token allowed: the top of the CDF
    assert sample([_seeded(s) for s in range(3)], hot) == [299, 299, 299]


@pytest.mark.parametrize("rows", [None, [0, 2, 3]], ids=["every-row", "some-rows"])
def test_masks_applied_on_a_cpu_are_xgrammars(pair: tuple[Any, Any],
                                              rows: list[int] | None) -> None:
    """Float32 logits on a CPU get their masks through NumPy: exactly what xgrammar's own
    kernel gives (minus infinity where a token is forbidden, nothing else touched)."""
    xgr = pytest.importorskip("xgrammar")
    from agentplex.engine import GrammarFactory

    tok = pair[1]
    factory = GrammarFactory(tok, len(tok) + 5, [tok.eos_token_id])  # wider than the logits
    g = torch.Generator().manual_seed(4)
    logits = torch.randn(5, len(tok) + 3, generator=g)
    bitmask = factory.allocate_bitmask(5)
    bitmask.copy_(torch.randint(-2**31, 2**31 - 1, bitmask.shape, generator=g,
                                dtype=torch.int64).to(torch.int32))
    indices = rows if rows is not None else list(range(5))
    ours, theirs = logits.clone(), logits.clone()
    factory.apply_bitmask(ours, bitmask, indices)
    xgr.apply_token_bitmask_inplace(theirs, bitmask, indices=indices)
    assert torch.equal(ours, theirs)
    assert ours.isinf().any() and not ours[[i for i in range(5) if i not in indices]].isinf().any()
