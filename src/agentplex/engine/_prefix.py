"""Prefix reuse: prompt prefixes' blocks of the paged cache, shared across requests.

Prompts are cut into blocks of ``block_size`` tokens (the paged cache's blocks); a block is
keyed by its tokens and the block before it, so a block stands for one exact prefix (a trie
stored in a dict). A request whose prompt starts with cached blocks — the same system prompt
as other agents, or its own history from the previous turn — holds those very blocks of the
pool (by reference, nothing is copied) and only computes the rest. Past the last whole
block, a cached block that begins with the prompt's next tokens lends them too
(:meth:`PrefixCache.partial`): the caller copies their keys and values into a block of its
own, which it goes on writing. The engine caches prompts as it computes them and, when a
request ends, its prompt and generated tokens together: the next turn of a conversation,
whose prompt holds the last one's answer, finds it. The cache is bounded in
bytes and evicts the least recently used block that no other block extends (found through a
heap of those blocks, so an eviction costs the same however many blocks are cached); an
evicted block goes back to the pool once no row holds it either.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

__all__ = ["PrefixCache"]

_PARTIAL_CANDIDATES = 8
"""Most blocks :meth:`PrefixCache.partial` compares (those under the same parent starting
with the same token, most recently cached last)."""


@dataclass(eq=False)
class _Block:
    id: int
    key: tuple[int, tuple[int, ...]]
    parent: _Block | None
    page: int
    """The pool block holding this block's keys and values."""
    used: int = 0
    children: int = 0


@dataclass
class PrefixCache:
    """Cached prompt blocks, at most ``max_bytes`` of keys and values in all.

    ``block_bytes``: the keys and values of one block (set by the engine from its pool);
    ``release``: called with the pool blocks of evicted blocks (the pool's ``release``).
    """

    block_size: int = 32
    max_bytes: int = 512 * 2**20
    block_bytes: int = 1
    release: Callable[[list[int]], None] = field(default=lambda pages: None, repr=False)
    bytes: int = 0
    hit_tokens: int = 0
    """Prompt tokens served from the cache so far."""
    _blocks: dict[tuple[int, tuple[int, ...]], _Block] = field(default_factory=dict)
    _by_first: dict[tuple[int, int], list[_Block]] = field(default_factory=dict)
    """The blocks under each parent id (0: none) by their first token, for :meth:`partial`."""
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

    def partial(self, ids: Sequence[int], chain: Sequence[_Block], limit: int
                ) -> tuple[_Block, int] | None:
        """After ``chain`` (what :meth:`match` gave for ``ids``), the cached block that
        shares the most leading tokens with ``ids``' next ones (at most ``limit`` in all),
        and how many it shares (at least one; fewer than a block); ``None`` if none does.
        Of blocks starting with the same token, the :data:`_PARTIAL_CANDIDATES` most
        recently cached are compared."""
        start = len(chain) * self.block_size
        rest = ids[start:limit]
        if not rest:
            return None
        parent = chain[-1].id if chain else 0
        best: tuple[_Block, int] | None = None
        for block in self._by_first.get((parent, rest[0]), ())[-_PARTIAL_CANDIDATES:]:
            tokens = block.key[1]  # a whole block's, or a tail's (fewer)
            most = min(len(rest), len(tokens))
            shared = 1
            while shared < most and tokens[shared] == rest[shared]:
                shared += 1
            if best is None or shared > best[1]:
                best = (block, shared)
        if best is not None:
            self._use(best[0])
        return best

    def insert(self, ids: Sequence[int], upto: int,
               pages_of: Callable[[int, int], list[int]]) -> None:
        """Cache the full blocks of ``ids[:upto]``; ``pages_of(start, end)`` gives the pool
        blocks holding tokens ``start:end``, one more reference each now held by the cache
        (asked once, for the blocks not cached yet)."""
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
            pages = pages_of(start, end)
            for offset, page in zip(range(0, end - start, size), pages, strict=True):
                parent = self._add(tuple(ids[start + offset:start + offset + size]),
                                   parent, page)
        self._evict()

    def insert_tail(self, ids: Sequence[int], upto: int, page: int) -> bool:
        """Cache the tokens of ``ids[:upto]`` after its last whole block — a tail, fewer
        than a block — held in pool block ``page`` (a reference the cache now holds; the
        caller took it), once the whole blocks before it are cached. Only
        :meth:`partial` lends a tail, never :meth:`match`. Whether it was cached
        (``False``: no whole blocks before it, no tail, or this tail already is)."""
        size = self.block_size
        start = upto - upto % size
        if start == upto:
            return False
        parent: _Block | None = None
        for at in range(0, start, size):
            parent = self._blocks.get((parent.id if parent else 0, tuple(ids[at:at + size])))
            if parent is None:
                return False
        key = (parent.id if parent else 0, tuple(ids[start:upto]))
        if key in self._blocks:
            self._use(self._blocks[key])
            return False
        self._add(key[1], parent, page)
        self._evict()
        return True

    def _add(self, tokens: tuple[int, ...], parent: _Block | None, page: int) -> _Block:
        """A new block of ``tokens`` after ``parent``, held in pool block ``page``."""
        key = (parent.id if parent else 0, tokens)
        block = _Block(next(self._ids), key, parent, page)
        self._blocks[key] = block
        self._by_first.setdefault((key[0], tokens[0]), []).append(block)
        self.bytes += self.block_bytes
        if parent is not None:
            parent.children += 1
        self._use(block)
        return block

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
            siblings = self._by_first[victim.key[0], victim.key[1][0]]
            siblings.remove(victim)
            if not siblings:
                del self._by_first[victim.key[0], victim.key[1][0]]
            self.bytes -= self.block_bytes
            self.release([victim.page])
            parent = victim.parent
            if parent is not None:
                parent.children -= 1
                if parent.children == 0:
                    self._push_leaf(parent)

    def clear(self) -> None:
        """Forget every block (giving them back)."""
        self.release([b.page for b in self._blocks.values()])
        self._blocks.clear()
        self._by_first.clear()
        self._leaves.clear()
        self.bytes = 0
