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
    functions that add it) instead of booleans (SDPA's). ``shared``: in a decode step (one
    token a row), the fewest leading blocks all rows must hold in common for the step to
    attend to them once (:attr:`cascade`); 0: never. ``packed``: the model's input is the
    rows' new tokens one after the other, ``[1, sum(counts)]``, no padding (a prefill whose
    rows differ in length: the layers' matrix products see no padding), and only
    :meth:`attend` lays them out by row. ``windows``: sliding windows (in tokens) to build a
    mask for besides the full one (:attr:`window_masks`; not with ``shared`` or ``packed``).
    """

    def __init__(self, pool: KVPool, seqs: list[Seq], counts: list[int], *,
                 additive: bool = False, shared: int = 0, packed: bool = False,
                 windows: tuple[int, ...] = ()) -> None:
        import torch

        self.pool = pool
        device = pool.kv.device
        size = pool.block_size
        self.rows = rows = len(seqs)
        past_lengths = [s.length for s in seqs]
        for s, n in zip(seqs, counts, strict=True):
            s.grow(pool, n)
            s.length += n
        common = _common_blocks(seqs, min(past_lengths) // size) if (
            shared and rows > 1 and max(counts) == 1) else 0
        self.cascade = common >= shared > 0
        """Whether this step attends to the rows' common blocks once (:meth:`attend`)."""
        skip = common if self.cascade else 0
        self.shared_slots: Any = None
        if self.cascade:
            first = seqs[0].blocks[:skip]
            if first == list(range(first[0], first[0] + skip)):  # consecutive: a view
                self.shared_slots = slice(first[0] * size, (first[0] + skip) * size)
            else:
                self.shared_slots = (torch.tensor(first, device=device)[:, None] * size
                                     + torch.arange(size, device=device)).reshape(-1)
        past, width = max(past_lengths) - skip * size, max(counts)
        self.width, self.past = width, past
        pages = max(len(s.blocks) for s in seqs) - skip
        table = torch.tensor([s.blocks[skip:] + [0] * (pages + skip - len(s.blocks))
                              for s in seqs], dtype=torch.long).to(device)
        p = torch.tensor(past_lengths, dtype=torch.long).to(device)[:, None] - skip * size
        q = torch.tensor(counts, dtype=torch.long).to(device)[:, None]
        columns = torch.arange(past + width, device=device)[None]
        # each column's token position in its row (after the skipped blocks): the past
        # right-aligned before column ``past``, the new tokens right-aligned before the end
        position = torch.where(columns < past, columns - (past - p),
                               p + columns - past - (width - q))
        valid = (position >= 0) & ((columns < past) | (columns - past >= width - q))
        position = position.clamp(min=0)
        slots = table.gather(1, position // size) * size + position % size
        self.index = torch.where(valid, slots, 0)
        """``[rows, past + width]``: the pool slot of each key column (0: padding)."""
        new = valid[:, past:]
        self.positions = (position[:, past:] + skip * size) * new
        """``[rows, width]``: the new tokens' positions (0 for padding)."""
        self._new: Any = new.reshape(-1).nonzero().squeeze(1)
        self._write = self.index[:, past:].reshape(-1)[self._new]
        queries = torch.arange(width, device=device)[:, None]
        seen = valid[:, None, :] & ((columns < past) | (columns - past <= queries))[None]
        # a padding query sees its own (zero) column: no row of the mask is empty
        pad_query = ~new[:, :, None] & (columns - past == queries)[None]
        if additive:
            zero = torch.zeros((), dtype=pool.kv.dtype, device=device)
            low = torch.tensor(torch.finfo(pool.kv.dtype).min, dtype=pool.kv.dtype,
                               device=device)

        def as_mask(allowed: Any) -> Any:
            return torch.where(allowed[:, None], zero, low) if additive else allowed[:, None]

        self.mask: Any = as_mask(seen | pad_query)
        """``[rows, 1, width, past + width]``: which key columns each new token sees (after
        the common blocks, in a cascade)."""
        self.window_masks: dict[int, Any] = {}
        """Per sliding window ``w`` of ``windows``: :attr:`mask`, each new token seeing only
        the keys less than ``w`` positions before it (Transformers' sliding window)."""
        if windows and (self.cascade or packed):
            raise ValueError("sliding windows are masked in padded passes only")
        for w in windows:
            near = position[:, past:, None] - position[:, None, :] < w  # [rows, width, cols]
            self.window_masks[w] = as_mask((seen & near) | pad_query)
        self.packed = packed
        self.full = (not self.cascade and width == 1 and min(counts) == 1
                     and min(past_lengths) == max(past_lengths) and not windows)
        """Whether every new token sees every key column: a decode step whose rows hold
        as many tokens each (one row, say), with no padding to hide. Its attention needs
        no mask (:attr:`mask` is all true), which SDPA computes to the same bits."""
        self._flat = self.index.reshape(-1)
        self._current: tuple[Any, Any, int] | None = None

    @classmethod
    def decode(cls, pool: KVPool, index: Any, write: Any, mask: Any) -> PagedStep:
        """A decode step laid out by the caller (:mod:`._static`'s static-shape step): each
        row's one new token goes to its slot ``write[row]``, and row ``row`` reads the
        slots ``index[row]`` (``[rows, columns]``, the new token's among them) as ``mask``
        allows. Tensors only: nothing is read back to the host."""
        step = cls.__new__(cls)
        step.pool, step.index, step.mask = pool, index, mask
        step.rows, step.width = int(index.shape[0]), 1
        step.past = int(index.shape[1]) - 1
        step.cascade, step.packed, step.shared_slots = False, False, None
        step._new, step._write, step._current = None, write, None
        step.full, step._flat = False, index.reshape(-1)
        return step

    def update(self, key_states: Any, value_states: Any, layer_idx: int, *args: Any,
               **kwargs: Any) -> tuple[Any, Any]:
        """Write the new keys and values (``[rows, heads, width, head_dim]``) into the pool;
        the layer's keys and values to attend to (in a cascade, ``None``: :meth:`attend`
        reads them)."""
        kv = self.pool.kv[layer_idx]
        heads, dim = key_states.shape[1], key_states.shape[3]
        for part, states in enumerate((key_states, value_states)):
            if self.packed:  # [1, heads, tokens, dim]: already the new tokens, in order
                fresh = states[0].transpose(0, 1)
            elif self._new is None:  # one new token a row, none of them padding
                fresh = states[:, :, 0]
            else:
                fresh = states.transpose(1, 2).reshape(-1, heads, dim).index_select(
                    0, self._new)
            kv[part].index_copy_(0, self._write, fresh.to(kv.dtype))
        return self._read(layer_idx, key_states.dtype)

    def update_decode(self, new: Any, layer_idx: int) -> tuple[Any, Any]:
        """As :meth:`update`, in a decode step whose rows all have their one new token
        (no padding): ``new`` holds the keys and the values, ``[2, rows, heads, head_dim]``,
        written in one copy; the keys and values to attend to stay in the pool's dtype."""
        kv = self.pool.kv[layer_idx]
        kv.index_copy_(1, self._write, new if new.dtype == kv.dtype else new.to(kv.dtype))
        return self._read(layer_idx, kv.dtype, kv)

    def _read(self, layer_idx: int, dtype: Any, kv: Any = None) -> tuple[Any, Any]:
        """The layer's keys and values to attend to, ``[rows, heads, columns, head_dim]``
        each (gathered in one copy), or ``None`` and kept for :meth:`attend`."""
        if kv is None:
            kv = self.pool.kv[layer_idx]
        shape = (2, self.rows, self.past + self.width, *kv.shape[2:])
        keys, values = kv.index_select(1, self._flat).view(shape).transpose(2, 3).unbind(0)
        if keys.dtype != dtype:
            keys, values = keys.to(dtype), values.to(dtype)
        if self.cascade or self.packed:
            self._current = (keys, values, layer_idx)
            return None, None  # only ``attend`` uses them: any other attention fails loudly
        return keys, values

    def attend(self, module: Any, query: Any, sdpa: Any, **kwargs: Any) -> tuple[Any, None]:
        """The layer's attention, by ``sdpa`` or as a cascade; ``[rows or 1, tokens,
        query_heads, dim]`` as Transformers' attention functions give."""
        if self._current is None:
            raise RuntimeError("a paged step attended before its cache was updated")
        if not self.packed:
            return self._cascade(query, **kwargs)
        import torch

        keys, values, _ = self._current
        self._current = None
        heads, dim = query.shape[1], query.shape[3]
        rows, width = self.rows, self.width
        laid = query.new_zeros((rows * width, heads, dim))  # padding queries: zeros
        laid[self._new] = query[0].transpose(0, 1)
        laid = laid.view(rows, width, heads, dim).transpose(1, 2)
        out, _ = sdpa(module, laid, keys, values, self.mask, **kwargs)
        out = out.reshape(rows * width, heads, dim).index_select(0, self._new)
        return torch.unsqueeze(out, 0), None

    def _cascade(self, query: Any, **kwargs: Any) -> tuple[Any, None]:
        """A cascade's attention of each row's one query (``[rows, query_heads, 1, dim]``):
        over the common blocks, all rows' queries at once against one copy of their keys,
        and over each row's own keys; the two parts joined by their softmax normalizers.
        ``[rows, 1, query_heads, dim]``, as Transformers' attention functions give."""
        import torch

        assert self._current is not None
        keys, values, layer = self._current
        self._current = None
        kv = self.pool.kv[layer]
        # in float32 (no-ops for a float32 model): the softmax parts are joined by hand
        shared_k = kv[0][self.shared_slots].float()
        shared_v = kv[1][self.shared_slots].float()
        keys, values = keys.float(), values.float()
        rows, heads, dim = self.rows, keys.shape[1], keys.shape[3]
        groups = query.shape[1] // heads
        scaling = kwargs.get("scaling") or dim ** -0.5
        q = query.reshape(rows, heads, groups, dim).float()
        # the common blocks: [heads, rows * groups, tokens]
        qs = q.permute(1, 0, 2, 3).reshape(heads, rows * groups, dim)
        scores = torch.matmul(qs, shared_k.permute(1, 2, 0)) * scaling
        top_s = scores.amax(dim=-1, keepdim=True)
        weights = torch.exp(scores - top_s)
        sum_s = weights.sum(dim=-1, keepdim=True)
        out_s = torch.matmul(weights, shared_v.transpose(0, 1))

        def back(x: Any) -> Any:  # [heads, rows * groups, n] -> [rows, heads, groups, n]
            return x.reshape(heads, rows, groups, -1).permute(1, 0, 2, 3)

        top_s, sum_s, out_s = back(top_s), back(sum_s), back(out_s)
        # each row's own keys: [rows, heads, groups, columns]
        own = torch.matmul(q, keys.transpose(-1, -2)) * scaling
        own = own.masked_fill(~self.mask[:, :, -1:, :], float("-inf"))
        top_o = own.amax(dim=-1, keepdim=True)
        weights_o = torch.exp(own - top_o)
        sum_o = weights_o.sum(dim=-1, keepdim=True)
        out_o = torch.matmul(weights_o, values)
        top = torch.maximum(top_s, top_o)
        a_s, a_o = torch.exp(top_s - top), torch.exp(top_o - top)
        out = (out_s * a_s + out_o * a_o) / (sum_s * a_s + sum_o * a_o)
        return out.reshape(rows, 1, heads * groups, dim).to(query.dtype), None


def _common_blocks(seqs: list[Seq], limit: int) -> int:
    """How many leading blocks (at most ``limit``) every row of ``seqs`` holds in common."""
    first = seqs[0].blocks
    n = min(limit, len(first))
    for s in seqs[1:]:
        blocks = s.blocks
        i = 0
        while i < n and blocks[i] == first[i]:
            i += 1
        n = i
        if not n:
            break
    return n
