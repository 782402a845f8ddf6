"""One forward pass over the paged cache: where new keys go, which keys each row reads.

A :class:`PagedStep` stands for the model's cache during one pass of some rows
(:class:`._kvcache.Seq`), each with some new tokens: a decode step (one each), a prefill
(each prompt's uncached part) or a chunk of a long prompt (one row). The model's input is
``[rows, width]``, each row's new tokens right-aligned (padding in front). Each attention
layer calls :meth:`PagedStep.update` with the new keys and values: they are written into
their rows' slots of the pool, and the keys and values the layer attends to are gathered
from the pool through a table of slots, ``[rows, heads, past + width, head_dim]``: each
row's past right-aligned before its new tokens, padding (the pool's zero block, masked)
elsewhere. That gather is the step's only copy of the cache, made per layer and dropped
after it; nothing stays padded. :attr:`PagedStep.mask` is the 4-D mask the model is given
(ready-made, so the model builds none): causal, and hiding the padding.

Transformers' own continuous batching addresses its paged cache the same way (read and
write indices, through ``cache.update``); what differs is that here the rows keep a batch
axis, so on a CPU attention is one batched SDPA call over the rows' own keys.
"""

from __future__ import annotations

from typing import Any

from ._kvcache import KVPool, Seq

__all__ = ["PagedStep"]


class PagedStep:
    """The cache of one pass: ``seqs`` get ``counts[i]`` new tokens each (room for them is
    taken from ``pool`` now; their lengths grow by them).

    ``additive``: give the mask as additive floats (0 or the dtype's minimum, for attention
    functions that add it) instead of booleans (SDPA's).
    """

    def __init__(self, pool: KVPool, seqs: list[Seq], counts: list[int], *,
                 additive: bool = False) -> None:
        import torch

        self.pool = pool
        device = pool.kv.device
        rows = len(seqs)
        past_lengths = [s.length for s in seqs]
        for s, n in zip(seqs, counts, strict=True):
            s.grow(pool, n)
            s.length += n
        past, width = max(past_lengths), max(counts)
        self.rows, self.width, self.past = rows, width, past
        size = pool.block_size
        pages = max(len(s.blocks) for s in seqs)
        table = torch.tensor([s.blocks + [0] * (pages - len(s.blocks)) for s in seqs],
                             dtype=torch.long).to(device)
        p = torch.tensor(past_lengths, dtype=torch.long).to(device)[:, None]
        q = torch.tensor(counts, dtype=torch.long).to(device)[:, None]
        columns = torch.arange(past + width, device=device)[None]
        # each column's token position in its row: the past right-aligned before column
        # ``past``, the new tokens right-aligned before the end
        position = torch.where(columns < past, columns - (past - p),
                               p + columns - past - (width - q))
        valid = (position >= 0) & ((columns < past) | (columns - past >= width - q))
        position = position.clamp(min=0)
        slots = table.gather(1, position // size) * size + position % size
        self.index = torch.where(valid, slots, 0)
        """``[rows, past + width]``: the pool slot of each key column (0: padding)."""
        new = valid[:, past:]
        self.positions = position[:, past:] * new
        """``[rows, width]``: the new tokens' positions (0 for padding)."""
        self._new = new.reshape(-1).nonzero().squeeze(1)
        self._write = self.index[:, past:].reshape(-1)[self._new]
        queries = torch.arange(width, device=device)[:, None]
        seen = valid[:, None, :] & ((columns < past) | (columns - past <= queries))[None]
        # a padding query sees its own (zero) column: no row of the mask is empty
        pad_query = ~new[:, :, None] & (columns - past == queries)[None]
        allowed = (seen | pad_query)[:, None]
        if additive:
            zero = torch.zeros((), dtype=pool.kv.dtype, device=device)
            low = torch.tensor(torch.finfo(pool.kv.dtype).min, dtype=pool.kv.dtype,
                               device=device)
            self.mask: Any = torch.where(allowed, zero, low)
        else:
            self.mask = allowed
        """``[rows, 1, width, past + width]``: which key columns each new token sees."""

    def update(self, key_states: Any, value_states: Any, layer_idx: int, *args: Any,
               **kwargs: Any) -> tuple[Any, Any]:
        """Write the new keys and values (``[rows, heads, width, head_dim]``) into the pool;
        the layer's keys and values to attend to."""
        kv = self.pool.kv[layer_idx]
        heads, dim = key_states.shape[1], key_states.shape[3]
        for part, states in enumerate((key_states, value_states)):
            fresh = states.transpose(1, 2).reshape(-1, heads, dim).index_select(0, self._new)
            kv[part].index_copy_(0, self._write, fresh.to(kv.dtype))
        flat = self.index.reshape(-1)
        shape = (self.rows, self.past + self.width, heads, dim)
        keys = kv[0].index_select(0, flat).view(shape).transpose(1, 2)
        values = kv[1].index_select(0, flat).view(shape).transpose(1, 2)
        return keys.to(key_states.dtype), values.to(value_states.dtype)
