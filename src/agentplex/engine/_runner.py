"""The model runner: every forward pass of the engine, and the prompts' prefix cache.

Four kinds of pass: a prefill of new prompts (after their cached prefixes, right-aligned,
padding in front of each part), a decode step of the running batch (one token a row), a
chunk of a long prompt on its own, and a decode step with a chunk riding in it
(:mod:`._mixed`, where the model allows). Prompts just computed go into the prefix cache
(:mod:`._prefix`); requests arriving together that share a long uncached prefix compute it
once. Each pass is timed and counted (:class:`EngineCounters`), and its logits go to
``select``, which chooses the rows' next tokens and applies them (the engine's
:mod:`._sampling` and :mod:`._stopping`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from ._compat import cache_keyword, returned_cache
from ._counters import EngineCounters
from ._kvcache import Batch, ChunkedPrompt
from ._mixed import MixedStep, mixed_forward, supports_mixed_steps
from ._prefix import KV, PrefixCache
from ._request import GenerationRequest

__all__ = ["ModelRunner", "Select"]

Select = Callable[[list[GenerationRequest], Any], Any]
"""Choose and apply the next token of each request from its row of logits; the tokens, as a
tensor on the logits' device."""


class ModelRunner:
    """Runs ``model``'s forward passes for an engine.

    ``pad_id`` fills the padding of prompts; ``prefix`` is the prefix cache (``None``:
    none); ``counters`` counts each pass; ``select`` chooses each pass's tokens.
    """

    def __init__(self, model: Any, *, pad_id: int, prefix: PrefixCache | None,
                 counters: EngineCounters, select: Select) -> None:
        self.model = model
        self.pad_id = pad_id
        self.prefix = prefix
        self.counters = counters
        self.select = select
        self.mixes = supports_mixed_steps(model)
        """Whether a chunk can ride in a decode pass of this model."""
        self._cache_kw = cache_keyword(model)
        device = getattr(model, "device", None)
        self._cuda = getattr(device, "type", None) == "cuda"

    # -- prompts ---------------------------------------------------------------------------

    def prefill(self, reqs: list[GenerationRequest]) -> Batch:
        """Compute the prompts of ``reqs`` (reusing cached prefixes) and their first tokens."""
        if self.prefix is not None:
            self._share_prefix(reqs)
        pasts: list[KV | None] = []
        done: list[int] = []
        for r in reqs:
            chain = self.prefix.match(r.prompt_ids, len(r.prompt_ids) - 1) if self.prefix else []
            pasts.append(PrefixCache.assemble(chain) if chain else None)
            done.append(len(chain) * (self.prefix.block_size if self.prefix else 0))
        if self.prefix is not None:
            self.prefix.hit_tokens += sum(done)
        batch, logits = self._forward(reqs, pasts, done,
                                      [r.prompt_ids[d:] for r, d in zip(reqs, done, strict=True)])
        self._remember(batch)
        batch.next_ids = self.select(reqs, logits)
        return batch

    def uncached(self, ids: list[int]) -> int:
        """Tokens of a prompt that its prefill computes: those after its cached prefix."""
        if self.prefix is None:
            return len(ids)
        return len(ids) - len(self.prefix.match(ids, len(ids) - 1)) * self.prefix.block_size

    def _share_prefix(self, reqs: list[GenerationRequest]) -> None:
        """When requests arriving together share a long uncached prefix, compute it once."""
        assert self.prefix is not None
        size = self.prefix.block_size
        first = reqs[0].prompt_ids
        common = len(first) - 1
        sharing = 0
        for r in reqs[1:]:
            n = _common_length(first, r.prompt_ids, len(r.prompt_ids) - 1)
            if n >= size:
                sharing += 1
                common = min(common, n)
        common -= common % size
        if not sharing or common < size:
            return
        cached = len(self.prefix.match(first, common)) * size
        if common - cached < size:
            return
        past = PrefixCache.assemble(self.prefix.match(first, cached)) if cached else None
        shared = GenerationRequest(prompt_ids=list(first[:common]), max_new_tokens=0,
                                   emit=lambda event: None)
        batch, _ = self._forward([shared], [past], [cached], [shared.prompt_ids[cached:]])
        self._remember(batch)

    def _forward(self, reqs: list[GenerationRequest], pasts: list[KV | None], done: list[int],
                 new_ids: list[list[int]]) -> tuple[Batch, Any]:
        """One forward pass of ``new_ids`` for each row, after its cached ``pasts`` (``done``
        tokens each): rows are right-aligned, padding goes in front of each part."""
        import torch
        from transformers import DynamicCache

        device = self.model.device
        rows, width_past, width_new = len(reqs), max(done), max(len(x) for x in new_ids)
        ids = torch.full((rows, width_new), self.pad_id, dtype=torch.long)
        mask = torch.zeros((rows, width_past + width_new), dtype=torch.long)
        for i, tokens in enumerate(new_ids):
            ids[i, width_new - len(tokens):] = torch.tensor(tokens)
            mask[i, width_past - done[i]:width_past] = 1
            mask[i, width_past + width_new - len(tokens):] = 1
        ids, mask = ids.to(device), mask.to(device)
        cache = DynamicCache()
        if width_past:  # one zeroed tensor for every layer, one copy per row
            template = next(p for p in pasts if p is not None)
            layers, _, heads, _, dims = template.shape
            both = template.new_zeros((layers, 2, rows, heads, width_past, dims))
            for i, past in enumerate(pasts):
                if past is not None:
                    both[:, :, i, :, width_past - done[i]:] = past
            cache = DynamicCache([(both[index, 0], both[index, 1]) for index in range(layers)])
        positions = (mask.cumsum(dim=1) - 1).clamp(min=0)[:, width_past:]
        return self._prefill_forward(reqs, ids, mask, positions, cache,
                                     sum(len(x) for x in new_ids))

    def _prefill_forward(self, reqs: list[GenerationRequest], ids: Any, mask: Any,
                         positions: Any, cache: Any, computed: int) -> tuple[Batch, Any]:
        """Run one prefill forward pass, counting its cost; the batch and last logits."""
        with self._timed(0, computed):
            out = self.model(input_ids=ids, attention_mask=mask, position_ids=positions,
                             use_cache=True, logits_to_keep=1, **{self._cache_kw: cache})
        return Batch(reqs, returned_cache(out), mask, None), out.logits[:, -1, :]

    def _remember(self, batch: Batch) -> None:
        """Put the prompts just computed into the prefix cache: the tokens not cached yet, of
        every row and layer, are copied out of the batch's cache in one operation."""
        if self.prefix is None:
            return
        import torch

        size = self.prefix.block_size
        mask = batch.mask.cpu()
        columns, spans = [], []
        for i, r in enumerate(batch.reqs):
            row = mask[i].nonzero().squeeze(1).tolist()
            start = len(self.prefix.match(r.prompt_ids, len(r.prompt_ids))) * size
            end = len(r.prompt_ids) - len(r.prompt_ids) % size
            columns.append(row)
            if start < end:
                spans.append((row[start], row[end - 1] + 1))
        if not spans:
            return
        lo, hi = min(s[0] for s in spans), max(s[1] for s in spans)
        fresh = torch.stack([t for layer in batch.cache.layers
                             for t in (layer.keys[:, :, lo:hi], layer.values[:, :, lo:hi])])
        fresh = fresh.view(-1, 2, *fresh.shape[1:])  # [layers, 2, rows, heads, tokens, dim]

        for i, r in enumerate(batch.reqs):

            def kv_of(start: int, end: int, i: int = i) -> KV:
                first, last = columns[i][start] - lo, columns[i][end - 1] + 1 - lo
                kv = fresh[:, :, i, :, first:last]
                if last - first != end - start:  # across the padding: cached | new tokens
                    index = [c - lo for c in columns[i][start:end]]
                    kv = kv.index_select(3, torch.tensor(index, device=kv.device))
                return kv

            self.prefix.insert(r.prompt_ids, len(r.prompt_ids), kv_of)

    # -- chunks of a long prompt ----------------------------------------------------------

    def prefill_chunk(self, item: ChunkedPrompt, size: int) -> Batch | None:
        """Prefill the next ``size`` tokens of a long prompt in a pass of their own; its
        batch of one once complete."""
        import torch

        req = item.req
        cache = self._chunk_cache(item)
        end = min(len(req.prompt_ids), item.done + size)
        device = self.model.device
        ids = torch.tensor([req.prompt_ids[item.done:end]], device=device)
        mask = torch.ones((1, end), dtype=torch.long, device=device)
        positions = torch.arange(item.done, end, device=device)[None]
        _, logits = self._prefill_forward([req], ids, mask, positions, cache, end - item.done)
        return self._chunk_end(item, end, logits)

    def decode_and_chunk(self, batch: Batch, item: ChunkedPrompt, size: int) -> Batch | None:
        """One decode step of ``batch`` and the next ``size`` tokens of a long prompt, in one
        forward pass; the prompt's batch of one once complete."""
        import torch

        req = item.req
        cache = self._chunk_cache(item)
        rows, past = len(batch.reqs), item.done
        end = min(len(req.prompt_ids), past + size)
        size = end - past
        device = batch.mask.device
        batch.mask = torch.cat([batch.mask, batch.mask.new_ones((rows, 1))], dim=1)
        chunk = torch.tensor(req.prompt_ids[past:end], dtype=torch.long, device=device)
        ids = torch.cat([batch.next_ids, chunk])[None]
        positions = torch.cat([batch.mask.sum(dim=1) - 1,
                               torch.arange(past, end, device=device)])[None]
        queries = torch.arange(size, device=device)[:, None]
        causal = torch.arange(end, device=device)[None] <= queries + past
        step = MixedStep(rows, batch.cache, cache, batch.mask.bool()[:, None, None, :],
                         causal[None, None])
        keep = torch.arange(rows + 1, device=device)
        keep[-1] = rows + size - 1  # the rows' tokens, and the chunk's last
        with self._timed(rows, size):
            logits = mixed_forward(self.model, ids, positions, step, keep, self._cache_kw)[0]
        batch.next_ids = self.select(batch.reqs, logits[:rows])
        return self._chunk_end(item, end, logits[rows:])

    def _chunk_cache(self, item: ChunkedPrompt) -> Any:
        """The cache a long prompt's next chunk extends: at first, its cached prefix (if
        any, counted in ``item.done``) or an empty one."""
        from transformers import DynamicCache

        prefix, ids = self.prefix, item.req.prompt_ids
        if item.cache is None:
            item.cache = DynamicCache()
            chain = prefix.match(ids, len(ids) - 1) if prefix is not None else []
            if chain and prefix is not None:
                item.cache = DynamicCache([(k[None], v[None])
                                           for k, v in PrefixCache.assemble(chain)])
                item.done = len(chain) * prefix.block_size
                prefix.hit_tokens += item.done
        return item.cache

    def _chunk_end(self, item: ChunkedPrompt, end: int, logits: Any) -> Batch | None:
        """Count a chunk computed up to ``end``; once the prompt is complete, its batch of
        one (cached for reuse, its first token chosen from ``logits``)."""
        import torch

        self.counters.chunks += 1
        item.done = end
        req = item.req
        if end < len(req.prompt_ids):
            return None
        mask = torch.ones((1, end), dtype=torch.long, device=self.model.device)
        batch = Batch([req], item.cache, mask, None)
        self._remember(batch)
        batch.next_ids = self.select([req], logits)
        return batch

    # -- decode steps ---------------------------------------------------------------------

    def decode(self, batch: Batch) -> None:
        """One decode step of ``batch``: each row's next token."""
        import torch

        ones = batch.mask.new_ones((batch.mask.shape[0], 1))
        batch.mask = torch.cat([batch.mask, ones], dim=1)
        positions = batch.mask.sum(dim=1, keepdim=True) - 1
        with self._timed(len(batch.reqs), 0):
            out = self.model(input_ids=batch.next_ids[:, None], attention_mask=batch.mask,
                             position_ids=positions, use_cache=True,
                             **{self._cache_kw: batch.cache})
        batch.cache = returned_cache(out)
        batch.next_ids = self.select(batch.reqs, out.logits[:, -1, :])

    @contextmanager
    def _timed(self, rows: int, prompt_tokens: int) -> Iterator[None]:
        """Time the forward pass run in this block (on CUDA, until the GPU finished it) and
        count it: ``rows`` decode rows (a token each) and ``prompt_tokens`` prompt tokens."""
        started = time.perf_counter()
        yield
        if self._cuda:
            import torch

            torch.cuda.synchronize()
        self.counters.count_pass(rows, prompt_tokens, time.perf_counter() - started)


def _common_length(a: list[int], b: list[int], limit: int) -> int:
    """How many leading tokens ``a`` and ``b`` share (at most ``limit``)."""
    n = min(len(a), len(b), limit)
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n
