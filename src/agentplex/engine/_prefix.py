"""Prefix reuse: the key/value cache of prompt prefixes, shared across requests.

Prompts are cut into blocks of ``block_size`` tokens; a block is keyed by its tokens and the
block before it, so a block stands for one exact prefix (a trie stored in a dict). A request
whose prompt starts with cached blocks — the same system prompt as other agents, or its own
history from the previous turn — only computes the rest. The cache is bounded in bytes and
evicts the least recently used block that no other block extends (found through a heap of
those blocks, so an eviction costs the same however many blocks are cached).

A block's keys and values are one tensor for all layers, so that caching a prompt, joining a
chain of blocks and copying it into a batch's cache are each a handful of tensor operations
whatever the number of layers and blocks: on a GPU every operation is a kernel launch, and
for a small model the launches, not the arithmetic, are what a prompt costs.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["PrefixCache"]

KV = Any
"""Keys and values of every layer, one tensor of shape ``[layers, 2, heads, tokens, head_dim]``
(index 0 of the second axis: keys, 1: values)."""


@dataclass(eq=False)
class _Block:
    id: int
    key: tuple[int, tuple[int, ...]]
    parent: _Block | None
    kv: KV
    nbytes: int
    used: int = 0
    children: int = 0


@dataclass
class PrefixCache:
    """Cached prompt blocks, at most ``max_bytes`` of keys and values in all."""

    block_size: int = 32
    max_bytes: int = 512 * 2**20
    bytes: int = 0
    hit_tokens: int = 0
    """Prompt tokens served from the cache so far."""
    _blocks: dict[tuple[int, tuple[int, ...]], _Block] = field(default_factory=dict)
    _leaves: list[tuple[int, int, _Block]] = field(default_factory=list)
    """A heap of ``(used, id, block)`` for blocks that no other block extends; an entry whose
    block was used again, extended or evicted since is stale and skipped."""
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    _clock: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def __len__(self) -> int:
        return len(self._blocks)

    def match(self, ids: Sequence[int], limit: int) -> list[_Block]:
        """The longest chain of cached blocks starting ``ids``, covering at most ``limit``
        tokens (marked as recently used)."""
        chain: list[_Block] = []
        parent = 0
        size = self.block_size
        for start in range(0, limit - size + 1, size):
            key = (parent, tuple(ids[start:start + size]))
            block = self._blocks.get(key)
            if block is None:
                break
            self._use(block)
            chain.append(block)
            parent = block.id
        return chain

    @staticmethod
    def assemble(chain: list[_Block]) -> KV:
        """The keys and values of a chain, joined along the token axis (one operation)."""
        import torch

        return chain[0].kv if len(chain) == 1 else torch.cat([b.kv for b in chain], dim=3)

    def insert(self, ids: Sequence[int], upto: int,
               kv_of: Callable[[int, int], KV]) -> None:
        """Cache the full blocks of ``ids[:upto]``; ``kv_of(start, end)`` gives the keys and
        values of tokens ``start:end`` (asked once, for the blocks not cached yet)."""
        parent: _Block | None = None
        size = self.block_size
        end = upto - upto % size
        start = 0
        for start in range(0, end, size):  # the cached part: walk it
            key = (parent.id if parent else 0, tuple(ids[start:start + size]))
            block = self._blocks.get(key)
            if block is None:
                break
            self._use(block)
            parent = block
        else:
            start = end
        if start < end:
            fresh = kv_of(start, end)
            for offset in range(0, end - start, size):  # one copy each: evicted one by one
                kv = fresh[:, :, :, offset:offset + size].clone()
                key = (parent.id if parent else 0,
                       tuple(ids[start + offset:start + offset + size]))
                block = _Block(next(self._ids), key, parent, kv, kv.numel() * kv.element_size())
                self._blocks[key] = block
                self.bytes += block.nbytes
                if parent is not None:
                    parent.children += 1
                self._use(block)
                parent = block
        self._evict()

    def _use(self, block: _Block) -> None:
        """Mark ``block`` as used now."""
        block.used = next(self._clock)
        if block.children == 0:
            self._push_leaf(block)

    def _push_leaf(self, block: _Block) -> None:
        heapq.heappush(self._leaves, (block.used, block.id, block))
        if len(self._leaves) > 2 * len(self._blocks) + 64:  # mostly stale: rebuild
            self._leaves = [(b.used, b.id, b) for b in self._blocks.values() if b.children == 0]
            heapq.heapify(self._leaves)

    def _evict(self) -> None:
        while self.bytes > self.max_bytes and self._leaves:
            used, _, victim = heapq.heappop(self._leaves)
            if (victim.children or used != victim.used
                    or self._blocks.get(victim.key) is not victim):
                continue  # stale
            del self._blocks[victim.key]
            self.bytes -= victim.nbytes
            parent = victim.parent
            if parent is not None:
                parent.children -= 1
                if parent.children == 0:
                    self._push_leaf(parent)

    def clear(self) -> None:
        self._blocks.clear()
        self._leaves.clear()
        self.bytes = 0
