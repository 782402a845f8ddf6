"""Prefix reuse: the key/value cache of prompt prefixes, shared across requests.

Prompts are cut into blocks of ``block_size`` tokens; a block is keyed by its tokens and the
block before it, so a block stands for one exact prefix (a trie stored in a dict). A request
whose prompt starts with cached blocks — the same system prompt as other agents, or its own
history from the previous turn — only computes the rest. The cache is bounded in bytes and
evicts the least recently used block that no other block extends.
"""

from __future__ import annotations

import itertools
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["PrefixCache"]

KV = list[tuple[Any, Any]]
"""Per layer, keys and values of shape ``[heads, tokens, head_dim]``."""


@dataclass(eq=False)
class _Block:
    id: int
    key: tuple[int, tuple[int, ...]]
    parent: _Block | None
    kv: KV
    nbytes: int
    children: int = 0


@dataclass
class PrefixCache:
    """Cached prompt blocks, at most ``max_bytes`` of keys and values in all."""

    block_size: int = 32
    max_bytes: int = 512 * 2**20
    bytes: int = 0
    hit_tokens: int = 0
    """Prompt tokens served from the cache so far."""
    _blocks: OrderedDict[tuple[int, tuple[int, ...]], _Block] = field(
        default_factory=OrderedDict)
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

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
            self._blocks.move_to_end(key)
            chain.append(block)
            parent = block.id
        return chain

    @staticmethod
    def assemble(chain: list[_Block]) -> KV:
        """The keys and values of a chain, joined along the token axis."""
        import torch

        layers = len(chain[0].kv)
        return [(torch.cat([b.kv[i][0] for b in chain], dim=1),
                 torch.cat([b.kv[i][1] for b in chain], dim=1)) for i in range(layers)]

    def insert(self, ids: Sequence[int], upto: int,
               kv_of: Callable[[int, int], KV]) -> None:
        """Cache the full blocks of ``ids[:upto]``; ``kv_of(start, end)`` gives the keys and
        values of tokens ``start:end`` (asked only for blocks not cached yet)."""
        parent: _Block | None = None
        size = self.block_size
        for start in range(0, upto - size + 1, size):
            key = (parent.id if parent else 0, tuple(ids[start:start + size]))
            block = self._blocks.get(key)
            if block is None:
                kv = [(k.clone(), v.clone()) for k, v in kv_of(start, start + size)]
                nbytes = sum(k.numel() * k.element_size() + v.numel() * v.element_size()
                             for k, v in kv)
                block = _Block(next(self._ids), key, parent, kv, nbytes)
                self._blocks[key] = block
                self.bytes += nbytes
                if parent is not None:
                    parent.children += 1
            else:
                self._blocks.move_to_end(key)
            parent = block
        self._evict()

    def _evict(self) -> None:
        while self.bytes > self.max_bytes and self._blocks:
            victim = next((b for b in self._blocks.values() if b.children == 0), None)
            if victim is None:  # cannot happen in a trie, but never loop forever
                return
            del self._blocks[victim.key]
            self.bytes -= victim.nbytes
            if victim.parent is not None:
                victim.parent.children -= 1

    def clear(self) -> None:
        self._blocks.clear()
        self.bytes = 0
