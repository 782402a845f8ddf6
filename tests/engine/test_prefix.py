"""The prefix cache: bounded in bytes, evicting the least recently used leaf block, holding
the paged cache's blocks by reference (an evicted block is given back)."""

from __future__ import annotations

import itertools

from agentplex.engine import PrefixCache


class _Pages:
    """Stands for the pool: hands out block numbers, records those given back."""

    def __init__(self) -> None:
        self.asked: list[tuple[int, int]] = []
        self.released: list[int] = []
        self._next = itertools.count(1)

    def pages_of(self, start: int, end: int) -> list[int]:
        self.asked.append((start, end))
        return [next(self._next) for _ in range(start, end, 4)]


def test_prefix_cache_is_bounded_and_evicts_leaves_first() -> None:
    pages = _Pages()
    cache = PrefixCache(block_size=4, max_bytes=10 * 256, block_bytes=256,
                        release=pages.released.extend)
    shared = list(range(16))
    for i in range(20):
        cache.insert(shared + [100 + i] * 8, 24, pages.pages_of)
        assert cache.bytes <= cache.max_bytes
    assert len(cache.match(shared + [119] * 8, 24)) == 6  # the newest is whole
    assert len(cache.match(shared + [100] * 8, 24)) == 4  # the oldest kept only the trunk
    assert len(cache.match([7] * 24, 24)) == 0
    assert len(pages.released) == 4 + 2 * 20 - 10  # every evicted block went back
    kept = {b.page for b in cache._blocks.values()}
    assert not kept & set(pages.released)
    pages.asked.clear()  # the newest prompt's cached head is not asked for again, its rest at once
    cache.insert(shared + [119] * 8 + [5] * 9, 33, pages.pages_of)
    assert pages.asked == [(24, 32)]
    assert len(cache.match(shared + [119] * 8 + [5] * 8, 32)) == 8
    cache.clear()
    assert len(cache) == 0 and cache.bytes == 0 and len(set(pages.released)) == len(
        pages.released) == 4 + 2 * 20 + 2


def test_prefix_cache_evicts_the_least_recently_used_leaf() -> None:
    pages = _Pages()
    cache = PrefixCache(block_size=4, max_bytes=9 * 32, block_bytes=32,
                        release=pages.released.extend)
    trunk, branch, other = [1] * 16, [2] * 8, [3] * 8
    cache.insert(trunk + branch, 24, pages.pages_of)  # 4 trunk blocks, then 2 of the branch
    cache.insert(other, 8, pages.pages_of)  # 2 blocks under another root
    assert len(cache.match(trunk, 16)) == 4  # the trunk is used again, its branch is not
    cache.insert([4] * 16, 16, pages.pages_of)  # 4 more blocks: 3 must go
    assert len(cache.match(trunk + branch, 24)) == 4  # the branch went, then the oldest leaf:
    assert len(cache.match(other, 8)) == 1  # the other root's, older than the trunk's end
    assert cache.bytes == 9 * 32 and len(cache) == 9
    assert sorted(pages.released) == [5, 6, 8]
    for _ in range(200):  # used again and again: stale heap entries stay bounded
        cache.match(trunk, 16)
        assert len(cache._leaves) <= 2 * len(cache) + 64


def test_a_partial_match_lends_the_leading_tokens_of_a_block_or_a_tail() -> None:
    pages = _Pages()
    cache = PrefixCache(block_size=4, max_bytes=100 * 32, block_bytes=32,
                        release=pages.released.extend)
    cache.insert([1, 2, 3, 4, 5, 6, 7, 8], 8, pages.pages_of)  # two whole blocks
    chain = cache.match([1, 2, 3, 4, 5, 6, 9, 9], 7)
    assert len(chain) == 1
    lent = cache.partial([1, 2, 3, 4, 5, 6, 9, 9], chain, 7)
    assert lent is not None and lent[0].key == (chain[0].id, (5, 6, 7, 8)) and lent[1] == 2
    assert cache.partial([1, 2, 3, 4, 7], chain, 5) is None  # no block starts with 7
    assert cache.partial([1, 2, 3, 4], chain, 4) is None  # nothing left to lend
    # a tail: fewer tokens than a block, after whole blocks that are cached
    assert cache.insert_tail([1, 2, 3, 4, 5, 6, 7, 8, 40, 41], 10, page=99)
    assert not cache.insert_tail([1, 2, 3, 4, 5, 6, 7, 8, 40, 41], 10, page=98)  # cached
    assert not cache.insert_tail([3, 3, 3, 3, 40], 5, page=97)  # its whole block is not
    whole = cache.match([1, 2, 3, 4, 5, 6, 7, 8, 40, 41, 42], 10)
    assert len(whole) == 2  # a tail is never a whole block ...
    lent = cache.partial([1, 2, 3, 4, 5, 6, 7, 8, 40, 41, 42], whole, 11)
    assert lent is not None and lent[0].page == 99 and lent[1] == 2  # ... but lends
    cache.clear()
    assert 99 in pages.released and len(cache._by_first) == 0


def test_evicted_blocks_leave_the_partial_index() -> None:
    pages = _Pages()
    cache = PrefixCache(block_size=4, max_bytes=3 * 32, block_bytes=32,
                        release=pages.released.extend)
    for i in range(10):
        cache.insert([i, 1, 2, 3], 4, pages.pages_of)
    assert len(cache) == 3
    assert sum(len(v) for v in cache._by_first.values()) == 3
    assert cache.partial([0, 1, 2, 3], [], 3) is None  # evicted: not lent
    lent = cache.partial([9, 1, 7, 7], [], 3)
    assert lent is not None and lent[1] == 2
