"""Choosing each row's next token: grammar masks, greedy or seeded sampling, log-probabilities.

One call per forward pass for the whole batch (:meth:`Sampler.choose`): constrained rows
have the tokens their grammar forbids masked (and, near their budget, closing tokens
favoured), greedy rows take the most likely token, sampled rows draw theirs in one batched
inverse-CDF search, and rows that asked for log-probabilities keep the chosen token's (with
the most likely ones) for their next event. What the chosen tokens do to each request — text,
stops, events — is :mod:`._stopping`'s.
"""

from __future__ import annotations

from typing import Any

from ._request import GenerationRequest, Sampling

__all__ = ["Sampler", "argmax", "sample", "seed_generator"]


class Sampler:
    """Chooses the next token of each row of a batch.

    ``grammar`` is a :class:`GrammarFactory` (or anything with its ``allocate_bitmask``,
    ``prefer_closing`` and ``apply_bitmask``), needed once a request carries a matcher.
    """

    def __init__(self, tokenizer: Any, eos_ids: set[int], grammar: Any = None) -> None:
        self.tokenizer = tokenizer
        self.eos_ids = eos_ids
        self.grammar = grammar

    def choose(self, reqs: list[GenerationRequest], logits: Any) -> list[int]:
        """The next token of each of ``reqs`` (a row of ``logits`` each); the scored rows'
        log-probabilities are kept on them."""
        logits = logits.float()
        scored = [i for i, r in enumerate(reqs) if r.logprobs is not None]
        logprobs = logits[scored].log_softmax(dim=-1) if scored else None
        constrained = [i for i, r in enumerate(reqs) if r.matcher is not None]
        if constrained and self.grammar is not None:
            bitmask = self.grammar.allocate_bitmask(len(reqs))
            for i in constrained:
                reqs[i].matcher.fill_next_token_bitmask(bitmask, i)
            closing = [i for i in constrained if _near_budget(reqs[i])]
            self.grammar.prefer_closing(logits, closing)
            self.grammar.apply_bitmask(logits, bitmask, constrained)
        sampled = [i for i, r in enumerate(reqs) if r.sampling.temperature > 0]
        chosen = argmax(logits) if len(sampled) < len(reqs) else [0] * len(reqs)
        if sampled:
            rows = logits if len(sampled) == len(reqs) else logits[sampled]
            drawn = sample([reqs[i] for i in sampled], rows)
            for i, token in zip(sampled, drawn, strict=True):
                chosen[i] = token
        if logprobs is not None:
            for row, i in enumerate(scored):
                self._score(reqs[i], logprobs[row], int(chosen[i]))
        return chosen

    def _score(self, req: GenerationRequest, logprobs: Any, token: int) -> None:
        """Keep the chosen token's log-probability (and the top ones) for the next event."""
        if req.finish_reason is not None or token in self.eos_ids:
            return
        decode = self.tokenizer.decode
        top: list[tuple[str, float]] = []
        if req.logprobs:
            values, indices = logprobs.topk(req.logprobs)
            top = [(decode([int(t)]), float(v))
                   for v, t in zip(values.tolist(), indices.tolist(), strict=True)]
        req._scores.append((decode([token]), float(logprobs[token]), top))


def seed_generator(request: GenerationRequest) -> None:
    """Give a seeded request its own random generator (its draws then do not depend on the
    rows it is decoded with)."""
    if request.sampling.seed is not None:
        import torch

        request._generator = torch.Generator().manual_seed(request.sampling.seed)


def argmax(logits: Any) -> list[int]:
    """Each row's most likely token (the first of equals). On a CPU through NumPy, whose
    argmax is several times faster there than torch's (SIMD): 10 ms against 2 for 256 rows
    of a 49k vocabulary."""
    if logits.device.type == "cpu":
        return list(logits.numpy().argmax(axis=-1).tolist())
    return list(logits.argmax(dim=-1).tolist())


def _near_budget(req: GenerationRequest) -> bool:
    """Whether a constrained request should start closing its structure to end valid."""
    remaining = req.max_new_tokens - len(req.generated)
    return remaining <= max(8, req.max_new_tokens // 4)


def sample(reqs: list[GenerationRequest], logits: Any) -> list[int]:
    """Draw a token for each of ``reqs`` (a row of ``logits`` each): one softmax and one
    inverse-CDF search for all rows; per row only a uniform number from its generator, so a
    seeded row draws the same token whichever rows it is decoded with."""
    import torch

    temperatures = logits.new_tensor([r.sampling.temperature for r in reqs])
    scores = logits / temperatures[:, None]
    for row, r in enumerate(reqs):  # the rare top-k / top-p rows, one at a time
        if r.sampling.top_k > 0 or r.sampling.top_p < 1.0:
            scores[row] = _truncate(scores[row], r.sampling)
    cdf = scores.softmax(dim=-1).cumsum(dim=-1)
    uniform = torch.cat([torch.rand(1, generator=r._generator) for r in reqs]).to(cdf.device)
    total = cdf[:, -1:]
    tokens = torch.searchsorted(cdf, uniform[:, None] * total, right=True).squeeze(1).tolist()
    # the first token whose CDF passes the draw has a probability above 0; a rounding at the
    # top may pass none: then the last token that has one (where the CDF reaches its total)
    return [t if t < cdf.shape[1] else int((cdf[row] < total[row]).sum())
            for row, t in enumerate(tokens)]


def _truncate(scores: Any, sampling: Sampling) -> Any:
    """``scores`` with the tokens outside ``top_k`` and ``top_p`` set to minus infinity."""
    import torch

    if sampling.top_k > 0:
        kth = torch.topk(scores, min(sampling.top_k, scores.shape[-1])).values[-1]
        scores = scores.masked_fill(scores < kth, float("-inf"))
    if sampling.top_p < 1.0:
        ordered, order = torch.sort(scores, descending=True)
        cumulative = ordered.softmax(dim=-1).cumsum(dim=-1)
        drop = cumulative - ordered.softmax(dim=-1) > sampling.top_p
        scores = scores.clone()
        scores[order[drop]] = float("-inf")
    return scores
