"""Decode steps of static shape: preallocated buffers, and on CUDA a graph per bucket.

A decode step of the running batch is the same computation every time, only its sizes
change. :class:`StaticDecode` keeps everything a step reads in buffers allocated once —
input tokens, positions (the rows' lengths), the block table, each row's sampling arguments
(temperature, top-p, top-k, seed), tokens generated and allowed — and the step derives the
rest with tensor operations: the slot of each row's new key (the slot mapping), the slots
each row reads and its mask, the forward pass through a :class:`._paged.PagedStep` laid out
from them, the next tokens (:func:`._sampling.draw`: greedy, temperature, top-k/top-p, each
row's draw from its seed and position) and which rows end (:func:`._stopping.ends`).
Nothing in a step reads a value back to the host until its end, where one copy brings the
tokens and the ended mask together.

Shapes are bucketed: rows up to the next bucket (padding rows read and write block 0, which
only padding reads), table columns up to the next power of two. On CUDA each bucket's step
is captured once with ``torch.cuda.CUDAGraph`` and replayed after (the pool's tensor and the
buffers must stay where they are: when either moves, the graphs are dropped and captured
again). On the CPU the very same step runs eagerly (no bucket padding unless asked: padding
would only cost there). Between two steps of an unchanged batch the host grows the rows'
blocks and writes the few new table entries; a batch that changed (rows joining, leaving,
a chunk riding in a step) is loaded again, row by row.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ._kvcache import Batch, KVPool
from ._paged import PagedStep
from ._sampling import draw
from ._stopping import ends

__all__ = ["StaticDecode", "bucket"]

_ROW_BUCKETS = (1, 2, 4, 8, 16, 24, 32, 48, 64)
"""Row buckets up to 64; above, multiples of 32."""


def bucket(n: int, *, rows: bool) -> int:
    """The static size that holds ``n``: rows (1, 2, 4, 8, 16, 24, 32, 48, 64, then
    multiples of 32) or table columns (powers of two, at least 4)."""
    if not rows:
        return max(4, 1 << (n - 1).bit_length())
    for size in _ROW_BUCKETS:
        if n <= size:
            return size
    return -(-n // 32) * 32


@dataclass
class _Buffers:
    """The step's inputs and outputs, ``rows`` by ``pages`` at most (one row each, unless
    said)."""

    ids: Any
    lengths: Any
    """Tokens each row holds before the step: the new token's position."""
    table: Any
    """``[rows, pages]``: each row's blocks (0 past its last)."""
    produced: Any
    """Tokens generated so far (the position of the token drawn)."""
    limit: Any
    temperature: Any
    top_p: Any
    top_k: Any
    seeds: Any
    tokens: Any
    ended: Any
    columns: Any
    """``arange(pages * block_size)``."""

    @classmethod
    def allocate(cls, rows: int, pages: int, block_size: int, device: Any,
                 dtype: Any) -> _Buffers:
        import torch

        def longs(*shape: int) -> Any:
            return torch.zeros(shape, dtype=torch.long, device=device)

        return cls(ids=longs(rows), lengths=longs(rows), table=longs(rows, pages),
                   produced=longs(rows), limit=longs(rows),
                   temperature=torch.zeros(rows, device=device),
                   top_p=torch.ones(rows, device=device), top_k=longs(rows),
                   seeds=longs(rows), tokens=longs(rows),
                   ended=torch.zeros(rows, dtype=torch.bool, device=device),
                   columns=torch.arange(pages * block_size, device=device))

    @property
    def rows(self) -> int:
        return int(self.ids.shape[0])

    @property
    def pages(self) -> int:
        return int(self.table.shape[1])


@dataclass(frozen=True)
class _Loaded:
    """What the buffers hold: whose rows, and what their steps need to know."""

    seqs: list[Any]
    next_ids: Any
    mode: tuple[bool, bool, bool]
    """Whether some rows sample, some are greedy, some truncate (top-k, top-p)."""


class StaticDecode:
    """Decode steps of a batch through preallocated buffers (see the module).

    ``model``'s forward pass takes its cache as ``cache_kw``; ``additive``: give the mask
    as additive floats (attention functions that add it) rather than booleans; ``eos``:
    the end-of-sequence ids (a tensor on the model's device); ``max_rows``: the most rows
    a step has. ``graphs``: capture each bucket's step as a CUDA graph and replay it (CUDA
    only); ``padded``: pad rows and columns to their buckets (always with ``graphs``; on a
    CPU only to test the padding).
    """

    def __init__(self, model: Any, *, cache_kw: str, additive: bool, eos: Any,
                 max_rows: int, graphs: bool = False, padded: bool | None = None) -> None:
        self.model = model
        self.cache_kw = cache_kw
        self.additive = additive
        self.eos = eos
        self.max_rows = max_rows
        self.graphs = graphs
        self.padded = graphs if padded is None else padded or graphs
        self.steps = 0
        """Steps run (eager or replayed)."""
        self.loads = 0
        """Times a batch was loaded into the buffers (it changed since the last step)."""
        self.captures = 0
        """CUDA graphs captured (one per bucket in use, again after the buffers moved)."""
        self._buffers: _Buffers | None = None
        self._loaded: _Loaded | None = None
        self._kv: Any = None
        self._graphs: dict[tuple[int, int, tuple[bool, bool, bool]], Any] = {}
        self._graph_pool: Any = None

    def serves(self, batch: Batch) -> bool:
        """Whether ``batch``'s decode step can be this static one: no row needs host work
        between its logits and its token (a grammar's mask, log-probabilities)."""
        loaded = self._loaded
        if loaded is not None and loaded.seqs is batch.seqs and loaded.next_ids is batch.next_ids:
            return True
        return len(batch.reqs) <= self.max_rows and all(
            r.matcher is None and r.logprobs is None for r in batch.reqs)

    def step(self, pool: KVPool, batch: Batch) -> tuple[list[int], list[bool]]:
        """Run one decode step of ``batch`` (its rows get their next token's room in
        ``pool``); each row's token and whether it ended (its one host sync). The batch's
        ``next_ids`` become the tokens."""
        import torch

        seqs, rows = batch.seqs, len(batch.seqs)
        grown: list[tuple[int, int, int]] = []  # (row, table column, block)
        for i, s in enumerate(seqs):
            before = len(s.blocks)
            s.grow(pool, 1)
            s.length += 1
            if len(s.blocks) > before:
                grown.append((i, before, s.blocks[before]))
        pages = max(len(s.blocks) for s in seqs)
        size = pool.block_size
        if self.padded:
            n, width = bucket(rows, rows=True), bucket(pages, rows=False)
            columns = width * size
        else:  # eager: exactly the rows, and the columns up to the longest row
            n, width, columns = rows, pages, max(s.length for s in seqs)
        if pool.kv is not self._kv:  # a new pool, or it grew: its old tensor is gone
            self._kv, self._loaded = pool.kv, None
            self._graphs.clear()
        buffers = self._room(max(n, bucket(self.max_rows, rows=True)), width, pool)
        loaded = self._loaded
        if loaded is None or loaded.seqs is not seqs or loaded.next_ids is not batch.next_ids:
            loaded = self._load(buffers, batch)
        elif grown:
            at = torch.tensor(grown, dtype=torch.long).to(buffers.table.device)
            buffers.table.index_put_((at[:, 0], at[:, 1]), at[:, 2])
        key = (n, columns, loaded.mode)
        if self.graphs:
            self._replay(key, pool)
        else:
            self._forward(pool, *key)
        self.steps += 1
        # the next step's inputs: advanced on the device, not reloaded
        buffers.ids[:rows].copy_(buffers.tokens[:rows])
        buffers.lengths[:rows] += 1
        buffers.produced[:rows] += 1
        both = torch.stack([buffers.tokens[:rows], buffers.ended[:rows].long()]).tolist()
        batch.next_ids = buffers.tokens[:rows].clone()
        self._loaded = _Loaded(seqs, batch.next_ids, loaded.mode)
        return both[0], [bool(x) for x in both[1]]

    def _room(self, rows: int, pages: int, pool: KVPool) -> _Buffers:
        """Buffers of at least ``rows`` by ``pages`` (new ones, when larger: the graphs
        captured over the old ones are dropped, and the batch loaded again)."""
        buffers = self._buffers
        if buffers is not None and buffers.rows >= rows and buffers.pages >= pages:
            return buffers
        if buffers is not None:
            rows, pages = max(rows, buffers.rows), max(pages, 2 * buffers.pages)
        self._buffers = buffers = _Buffers.allocate(rows, pages, pool.block_size,
                                                    pool.kv.device, pool.kv.dtype)
        self._loaded = None
        self._graphs.clear()
        return buffers

    def _load(self, buffers: _Buffers, batch: Batch) -> _Loaded:
        """Write ``batch``'s rows into the buffers (their room for this step's token taken
        already); rows after them become padding (block 0, greedy, no limit)."""
        import torch

        reqs, rows = batch.reqs, len(batch.reqs)
        self.loads += 1
        device = buffers.ids.device
        pages = buffers.pages
        table = torch.tensor([s.blocks + [0] * (pages - len(s.blocks)) for s in batch.seqs],
                             dtype=torch.long)
        longs = torch.tensor([[len(r.generated), r.max_new_tokens, r.sampling.top_k, r._seed]
                              for r in reqs], dtype=torch.long)
        floats = torch.tensor([[r.sampling.temperature, r.sampling.top_p] for r in reqs])
        for buffer in (buffers.table, buffers.lengths, buffers.produced, buffers.temperature,
                       buffers.top_k, buffers.seeds, buffers.ids):
            buffer[rows:] = 0
        buffers.limit[rows:] = 2**62
        buffers.top_p[rows:] = 1.0
        buffers.table[:rows].copy_(table.to(device))
        past = [s.length - 1 for s in batch.seqs]  # before this step's token
        buffers.lengths[:rows].copy_(torch.tensor(past, dtype=torch.long).to(device))
        buffers.ids[:rows].copy_(batch.next_ids.reshape(-1))
        longs, floats = longs.to(device), floats.to(device)
        buffers.produced[:rows].copy_(longs[:, 0])
        buffers.limit[:rows].copy_(longs[:, 1])
        buffers.top_k[:rows].copy_(longs[:, 2])
        buffers.seeds[:rows].copy_(longs[:, 3])
        buffers.temperature[:rows].copy_(floats[:, 0])
        buffers.top_p[:rows].copy_(floats[:, 1])
        hot = [r.sampling.temperature > 0 for r in reqs]
        truncate = any(h and (r.sampling.top_k > 0 or r.sampling.top_p < 1.0)
                       for h, r in zip(hot, reqs, strict=True))
        padding = self.padded and bucket(rows, rows=True) > rows
        return _Loaded(batch.seqs, batch.next_ids,
                       (any(hot), padding or not all(hot), truncate))

    def _forward(self, pool: KVPool, n: int, width: int,
                 mode: tuple[bool, bool, bool]) -> None:
        """The step of the first ``n`` rows over ``width`` key columns (token positions):
        tensor operations only, reading the buffers and writing ``tokens`` and ``ended``
        (what a CUDA graph captures)."""
        import torch

        b = self._buffers
        assert b is not None
        size = pool.block_size
        lengths, table = b.lengths[:n], b.table[:n, :-(-width // size)]
        columns = b.columns[:width]
        index = table[:, columns // size] * size + columns % size
        write = index.gather(1, lengths[:, None]).squeeze(1)  # the slot mapping
        allowed = (columns[None] <= lengths[:, None])[:, None, None, :]
        mask: Any = allowed
        if self.additive:
            low = torch.finfo(pool.kv.dtype).min
            mask = torch.zeros(allowed.shape, dtype=pool.kv.dtype,
                               device=allowed.device).masked_fill(~allowed, low)
        step = PagedStep.decode(pool, index, write, mask)
        out = self.model(input_ids=b.ids[:n, None], attention_mask=mask,
                         position_ids=lengths[:, None], use_cache=True,
                         **{self.cache_kw: step})
        logits = out.logits[:, -1, :].float()
        sampled, greedy, truncate = mode
        if sampled:
            tokens = draw(logits, b.temperature[:n], b.top_p[:n], b.top_k[:n], b.seeds[:n],
                          b.produced[:n], truncate=truncate, greedy=greedy)
        else:
            tokens = logits.argmax(dim=-1)
        b.tokens[:n].copy_(tokens)
        b.ended[:n].copy_(ends(tokens, self.eos, b.produced[:n], b.limit[:n]))

    def _replay(self, key: tuple[int, int, tuple[bool, bool, bool]], pool: KVPool) -> None:
        """Run ``key``'s step as a CUDA graph: captured the first time (after one eager run
        on a side stream, which computes this step), replayed after."""
        import torch

        graph = self._graphs.get(key)
        if graph is None:
            run: Callable[[], None] = lambda: self._forward(pool, *key)  # noqa: E731
            side = torch.cuda.Stream()  # type: ignore[no-untyped-call]
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                run()  # warm-up: this step's own results
            torch.cuda.current_stream().wait_stream(side)
            if self._graph_pool is None:
                self._graph_pool = torch.cuda.graph_pool_handle()
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, pool=self._graph_pool):
                run()
            self._graphs[key] = graph
            self.captures += 1
        graph.replay()
