"""The running batch and its key/value cache: rows join (left padding) and leave.

A :class:`Batch` is the requests decoding together, one row each, with a Transformers
``DynamicCache`` of their keys and values left-padded to the longest row, the attention
mask that hides the padding, and each row's next input token. Joining two batches stacks
their caches along the batch axis (:func:`merge`); finished rows leave, and columns that are
padding in every row left, at each step (:func:`prune`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ._request import GenerationRequest

__all__ = ["Batch", "ChunkedPrompt", "merge", "prune"]


@dataclass
class Batch:
    """Requests decoding together: their cache, attention mask and next input tokens."""

    reqs: list[GenerationRequest]
    cache: Any
    mask: Any
    next_ids: Any


@dataclass
class ChunkedPrompt:
    """A long prompt being prefilled chunk by chunk while a batch decodes."""

    req: GenerationRequest
    done: int = 0
    cache: Any = None
    """The keys and values of the prompt so far (a ``DynamicCache`` of one row, ``done``
    tokens, no padding), extended in place by the next chunk; ``None`` before the first."""


def merge(old: Batch | None, new: Batch) -> Batch:
    """Join two batches: left-pad the shorter cache and stack them along the batch axis."""
    import torch
    from transformers import DynamicCache

    if old is None:
        return new
    if all(r.finish_reason is not None for r in new.reqs):
        return old  # done at their first token (or cancelled): nothing to decode
    width = max(old.mask.shape[1], new.mask.shape[1])
    layers = [(stack(a.keys, b.keys, 2, width), stack(a.values, b.values, 2, width))
              for a, b in zip(old.cache.layers, new.cache.layers, strict=True)]
    return Batch(old.reqs + new.reqs, DynamicCache(layers),
                 stack(old.mask, new.mask, 1, width),
                 torch.cat([old.next_ids, new.next_ids]))


def prune(batch: Batch | None) -> Batch | None:
    """Drop finished rows (``None`` when none is left), and columns that are padding in
    every row. Cancelled rows must have been finished first."""
    import torch

    if batch is None:
        return None
    keep = [i for i, r in enumerate(batch.reqs) if r.finish_reason is None]
    if not keep:
        return None
    if len(keep) < len(batch.reqs):
        index = torch.tensor(keep, device=batch.mask.device)
        batch.cache.batch_select_indices(index)
        batch.mask = batch.mask[index]
        batch.next_ids = batch.next_ids[index]
        batch.reqs = [batch.reqs[i] for i in keep]
        first = int(batch.mask.any(dim=0).nonzero()[0])
        if first > 0:
            batch.mask = batch.mask[:, first:]
            for layer in batch.cache.layers:
                layer.keys = layer.keys[:, :, first:, :]
                layer.values = layer.values[:, :, first:, :]
    return batch


def stack(a: Any, b: Any, dim: int, width: int) -> Any:
    """``a``'s rows, then ``b``'s, each left-padded with zeros to ``width`` along ``dim``:
    one copy of each (padding one first and concatenating after would copy it twice)."""
    shape = list(a.shape)
    shape[0], shape[dim] = a.shape[0] + b.shape[0], width
    out = a.new_empty(shape)
    start = 0
    for part in (a, b):
        rows = out.narrow(0, start, part.shape[0])
        missing = width - part.shape[dim]
        rows.narrow(dim, 0, missing).zero_()
        rows.narrow(dim, missing, part.shape[dim]).copy_(part)
        start += part.shape[0]
    return out
