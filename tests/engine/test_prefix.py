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
