"""The paged key/value cache: one pool of fixed-size blocks, rows holding lists of blocks.

Every key and value the engine keeps lives in one :class:`KVPool`: a tensor of
``blocks * block_size`` token slots per layer. A row of the batch (:class:`Seq`) holds the
list of its blocks and its length; it gets a new block when its last one is full. Rows
joining the batch (:func:`merge`) and leaving it (:func:`prune`) move no key or value: the
batch is a list of rows, and a finished row's blocks go back to the pool. A block is
reference-counted: the prefix cache (:mod:`._prefix`) holds its blocks by reference, and a
row whose prompt starts with cached blocks holds the same blocks, so a shared system prompt
is stored once however many rows use it. Block 0 is never handed out: its zeros stand for
the padding a step's gathered keys need (:mod:`._paged`).

On a CPU the pool reserves address space for 8 GiB of blocks (on Linux a ``MAP_NORESERVE``
mapping, which the kernel does not count as committed: a small machine can map it and a
process holding engines can still fork) and the operating system backs a block with memory
when it is first written: the process holds what the most tokens held
at once needed, and growing copies nothing. Elsewhere (CUDA) it grows by half when no block
is free (one copy, rare). It never shrinks.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ._errors import EngineError
from ._request import GenerationRequest

__all__ = ["Batch", "ChunkedPrompt", "KVPool", "Seq", "merge", "prune"]


_MAP_NORESERVE = 0x4000
"""Linux's ``MAP_NORESERVE`` (Python's ``mmap`` module does not name it)."""


def _unreserved(shape: tuple[int, ...], dtype: Any) -> Any:
    """Room for a tensor of ``shape`` as address space the kernel does not count as
    committed memory (an anonymous ``MAP_NORESERVE`` mapping, Linux): pages get memory when
    first written, and neither the mapping nor a ``fork`` of the process (a node process,
    a tool's subprocess) is refused under the default heuristic overcommit, as an 8 GiB
    ``torch.empty`` is on a machine with less memory (or with a few engines, on a fork).
    ``None`` elsewhere (the caller then allocates with ``torch.empty``)."""
    import mmap
    import sys

    import torch

    if sys.platform != "linux":
        return None
    size = torch.empty((), dtype=dtype).element_size()
    for n in shape:
        size *= n
    return mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | _MAP_NORESERVE)


class KVPool:
    """Blocks of ``block_size`` token slots for the keys and values of every layer.

    ``kv`` is one tensor ``[layers, 2, slots, heads, head_dim]`` (index 0 of the second
    axis: keys, 1: values); slot ``b * block_size + i`` is token ``i`` of block ``b``.
    ``blocks``: the blocks it has room for. On a CPU that room is address space reserved
    (``reserve_bytes``; on Linux not counted as committed memory): the operating system
    gives a block memory when it is first written, so the process holds what the most
    tokens held at once needed,
    and growing never copies. Free blocks are handed out lowest first, those given back
    before those never used.
    """

    def __init__(self, layers: int, heads: int, head_dim: int, *, block_size: int = 32,
                 dtype: Any = None, device: Any = None, blocks: int = 64,
                 reserve_bytes: int = 0) -> None:
        import torch

        self.layers, self.heads, self.head_dim = layers, heads, head_dim
        self.block_size = block_size
        dtype = dtype or torch.float32
        self.block_bytes = (2 * layers * block_size * heads * head_dim
                            * torch.empty((), dtype=dtype).element_size())
        """Bytes of keys and values one block holds (all layers)."""
        blocks = max(2, blocks, reserve_bytes // self.block_bytes)
        shape = (layers, 2, blocks * block_size, heads, head_dim)
        self._mapping = _unreserved(shape, dtype) if reserve_bytes else None
        """The anonymous mapping the reserved room lives in (kept alive with ``kv``)."""
        self.kv = (torch.empty(shape, dtype=dtype, device=device) if self._mapping is None
                   else torch.frombuffer(self._mapping, dtype=dtype).view(shape))
        self.kv[:, :, :block_size].zero_()  # block 0: the padding's keys
        self._refs = [0] * blocks
        self._free: list[int] = []
        """Blocks given back (taken first, the latest first)."""
        self._fresh = 1
        """The first block never handed out."""
        self.grown = 0
        """How many times the pool grew (copying what it held)."""

    @classmethod
    def for_model(cls, model: Any, block_size: int, dtype: Any = None) -> KVPool:
        """A pool shaped for ``model``'s attention layers (its config), on its device: on a
        CPU with room reserved for 8 GiB (taken as used), elsewhere grown as needed;
        ``dtype``: of the keys and values (default: the model's first parameter's)."""
        config = model.config
        config = getattr(config, "get_text_config", lambda: config)()
        heads = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
        head_dim = (getattr(config, "head_dim", None)
                    or config.hidden_size // config.num_attention_heads)
        dtype = dtype or next(model.parameters()).dtype
        reserve = 8 * 2**30 if model.device.type == "cpu" else 0
        return cls(config.num_hidden_layers, heads, head_dim, block_size=block_size,
                   dtype=dtype, device=model.device, reserve_bytes=reserve)

    @property
    def blocks(self) -> int:
        """Blocks the pool has room for (block 0 included)."""
        return int(self.kv.shape[2]) // self.block_size

    @property
    def used(self) -> int:
        """Blocks held by rows or the prefix cache."""
        return self._fresh - 1 - len(self._free)

    @property
    def touched(self) -> int:
        """Blocks ever handed out (block 0 included): what the pool holds in memory."""
        return self._fresh

    @property
    def nbytes(self) -> int:
        """Bytes of the blocks ever handed out."""
        return self._fresh * self.block_bytes

    def allocate(self, n: int) -> list[int]:
        """``n`` free blocks, each referenced once (the pool grows when too few are free)."""
        recycled = min(n, len(self._free))
        taken = [self._free.pop() for _ in range(recycled)]
        fresh = n - recycled
        if self._fresh + fresh > self.blocks:
            self._grow(self._fresh + fresh - self.blocks)
        taken.extend(range(self._fresh, self._fresh + fresh))
        self._fresh += fresh
        for b in taken:
            self._refs[b] = 1
        return taken

    def ref(self, blocks: list[int]) -> None:
        """One more holder of each of ``blocks``."""
        for b in blocks:
            self._refs[b] += 1

    def release(self, blocks: list[int]) -> None:
        """One holder less of each of ``blocks``; those nobody holds become free."""
        refs = self._refs
        for b in blocks:
            if refs[b] <= 0:
                raise EngineError(f"key/value block {b} released more often than held")
            refs[b] -= 1
            if refs[b] == 0:
                self._free.append(b)

    def refs(self, block: int) -> int:
        """How many holders ``block`` has."""
        return self._refs[block]

    def _grow(self, need: int) -> None:
        import torch

        old = self.blocks
        new = max(old + need, old + old // 2)
        kv = torch.empty((*self.kv.shape[:2], new * self.block_size, *self.kv.shape[3:]),
                         dtype=self.kv.dtype, device=self.kv.device)
        kv[:, :, :self._fresh * self.block_size] = self.kv[:, :, :self._fresh * self.block_size]
        self.kv = kv
        self._mapping = None  # (the reserved room, if any, goes with the old tensor)
        self._refs.extend([0] * (new - old))
        self.grown += 1


@dataclass
class Seq:
    """One row's keys and values: its blocks in order and how many tokens they hold."""

    blocks: list[int] = field(default_factory=list)
    length: int = 0

    def grow(self, pool: KVPool, tokens: int) -> None:
        """Make room for ``tokens`` more tokens (new blocks from ``pool``)."""
        size = pool.block_size
        missing = -(-(self.length + tokens) // size) - len(self.blocks)
        if missing > 0:
            self.blocks.extend(pool.allocate(missing))

    def free(self, pool: KVPool) -> None:
        """Give the blocks back (idempotent)."""
        if self.blocks:
            pool.release(self.blocks)
        self.blocks, self.length = [], 0


@dataclass
class Batch:
    """Requests decoding together: their rows of the cache and next input tokens."""

    reqs: list[GenerationRequest]
    seqs: list[Seq]
    next_ids: Any


@dataclass
class ChunkedPrompt:
    """A long prompt being prefilled chunk by chunk while a batch decodes."""

    req: GenerationRequest
    done: int = 0
    seq: Seq | None = None
    """The keys and values of the prompt so far (``done`` tokens), extended by the next
    chunk; ``None`` before the first."""


def merge(old: Batch | None, new: Batch) -> Batch:
    """Join two batches: their rows one after the other (no key or value moves)."""
    import torch

    if old is None:
        return new
    return Batch(old.reqs + new.reqs, old.seqs + new.seqs,
                 torch.cat([old.next_ids, new.next_ids]))


def prune(batch: Batch | None, pool: KVPool) -> Batch | None:
    """Drop finished rows, giving their blocks back (``None`` when none is left).
    Cancelled rows must have been finished first."""
    if batch is None:
        return None
    keep = [i for i, r in enumerate(batch.reqs) if r.finish_reason is None]
    if len(keep) < len(batch.reqs):
        for r, s in zip(batch.reqs, batch.seqs, strict=True):
            if r.finish_reason is not None:
                s.free(pool)
        if not keep:
            return None
        import torch

        batch.next_ids = batch.next_ids[torch.tensor(keep, device=batch.next_ids.device)]
        batch.reqs = [batch.reqs[i] for i in keep]
        batch.seqs = [batch.seqs[i] for i in keep]
    return batch
