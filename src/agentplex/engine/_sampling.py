"""Choosing each row's next token: grammar masks, greedy or seeded sampling, log-probabilities.

One call per forward pass for the whole batch (:meth:`Sampler.choose`): constrained rows
have the tokens their grammar forbids masked (and, near their budget, closing tokens
favoured), greedy rows take the most likely token, sampled rows draw theirs in one batched
inverse-CDF search, and rows that asked for log-probabilities keep the chosen token's (with
the most likely ones) for their next event. What the chosen tokens do to each request — text,
stops, events — is :mod:`._stopping`'s.
"""

from __future__ import annotations

import random
from typing import Any

from ._request import GenerationRequest

__all__ = ["Sampler", "argmax", "draw", "sample", "seed_request", "uniforms"]

_U32 = 2**32
_MASK = _U32 - 1


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


def seed_request(request: GenerationRequest) -> None:
    """Give a request the seed of its draws: its own, else a random one. A draw depends on
    the seed and the token's position only (:func:`uniforms`), so a row draws the same
    tokens whichever rows it is decoded with, on the host or in a device step."""
    seed = request.sampling.seed
    request._seed = (seed if seed is not None else random.getrandbits(32)) % _U32


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
    """Draw a token for each of ``reqs`` (a row of ``logits`` each) by :func:`draw`: each
    row's uniform number comes from its seed and the position of the token it draws (the
    tokens it generated so far), so a seeded row draws the same tokens whichever rows it is
    decoded with, and whichever pass (host or device step) draws them."""
    import torch

    device = logits.device
    params = torch.tensor([[r.sampling.temperature, r.sampling.top_p, r.sampling.top_k]
                           for r in reqs], dtype=torch.float64)
    counters = torch.tensor([[r._seed, len(r.generated)] for r in reqs], dtype=torch.long)
    truncate = any(r.sampling.top_k > 0 or r.sampling.top_p < 1.0 for r in reqs)
    tokens = draw(logits, params[:, 0].to(device, logits.dtype),
                  params[:, 1].to(device, logits.dtype), params[:, 2].long().to(device),
                  counters[:, 0].to(device), counters[:, 1].to(device), truncate=truncate,
                  greedy=False)
    return list(tokens.tolist())


def uniforms(seeds: Any, counts: Any) -> Any:
    """One uniform number in (0, 1) per row, from its seed and a count (the position of the
    token drawn; tensors of integers below 2**32): a counter-based hash, tensor operations
    only (no generator state, no host sync), so a row's numbers do not depend on its batch
    and a CUDA graph can replay the draw."""
    x = _mix(_mix(seeds & _MASK) ^ (counts & _MASK))
    return (x.double() + 0.5) / _U32


def _mix(x: Any) -> Any:
    """A 32-bit integer hash (two multiply-xorshift rounds), kept below 2**32 in int64."""
    x = (((x >> 16) ^ x) * 0x45D9F3B) & _MASK
    x = (((x >> 16) ^ x) * 0x45D9F3B) & _MASK
    return (x >> 16) ^ x


def draw(logits: Any, temperature: Any, top_p: Any, top_k: Any, seeds: Any, counts: Any,
         *, truncate: bool, greedy: bool = True) -> Any:
    """The batch's next tokens as tensor operations on the logits' device: greedy rows
    (``temperature`` 0) their most likely token, the others one draw each (one softmax and
    one inverse-CDF search for all rows, their uniform numbers from :func:`uniforms`).
    ``truncate``: apply the rows' ``top_k`` (0: all) and ``top_p`` (1: all), sorting once
    for all rows; ``greedy``: whether some rows may be greedy (``False``: none is). No host
    sync: a decode step's graph holds it (:mod:`._static`)."""
    import torch

    hot = temperature > 0
    scores = logits / (torch.where(hot, temperature, 1.0) if greedy else temperature)[:, None]
    if truncate:
        scores = _truncate_rows(scores, top_p, top_k)
    cdf = scores.softmax(dim=-1).cumsum(dim=-1)
    total = cdf[:, -1:]
    u = uniforms(seeds, counts).to(cdf.dtype)[:, None]
    # the first token whose CDF passes the draw has a probability above 0; the draw is kept
    # below the total, so that a rounding at the top still finds one
    below = torch.minimum(u * total, torch.nextafter(total, torch.zeros_like(total)))
    tokens = torch.searchsorted(cdf, below, right=True).squeeze(1)
    return torch.where(hot, tokens, logits.argmax(dim=-1)) if greedy else tokens


def _truncate_rows(scores: Any, top_p: Any, top_k: Any) -> Any:
    """``scores`` with each row's tokens outside its ``top_k`` and ``top_p`` set to minus
    infinity (one stable sort for all rows; a row with neither keeps all its tokens)."""
    import torch

    ordered, order = torch.sort(scores, dim=-1, descending=True, stable=True)
    k = top_k.clamp(min=1, max=scores.shape[-1]) - 1
    kth = ordered.gather(1, k[:, None])
    ordered = torch.where((top_k[:, None] > 0) & (ordered < kth), float("-inf"), ordered)
    probs = ordered.softmax(dim=-1)
    drop = (probs.cumsum(dim=-1) - probs > top_p[:, None]) & (top_p[:, None] < 1.0)
    ordered = ordered.masked_fill(drop, float("-inf"))
    return torch.empty_like(scores).scatter_(1, order, ordered)
