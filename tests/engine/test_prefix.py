"""The prefix cache: bounded in bytes, evicting the least recently used leaf block."""

from __future__ import annotations

from typing import Any

import pytest

torch = pytest.importorskip("torch")

from agentplex.engine import PrefixCache  # noqa: E402


def test_prefix_cache_is_bounded_and_evicts_leaves_first() -> None:
    asked: list[tuple[int, int]] = []

    def kv_of(start: int, end: int) -> Any:
        asked.append((start, end))
        return torch.zeros(1, 2, 2, end - start, 4)  # 1 layer, keys and values, 2 heads

    block_bytes = 2 * 2 * 4 * 4 * 4  # keys and values, 2 heads, 4 tokens, 4 dims, float32
    cache = PrefixCache(block_size=4, max_bytes=10 * block_bytes)
    shared = list(range(16))
    for i in range(20):
        cache.insert(shared + [100 + i] * 8, 24, kv_of)
        assert cache.bytes <= cache.max_bytes
    assert len(cache.match(shared + [119] * 8, 24)) == 6  # the newest is whole
    assert len(cache.match(shared + [100] * 8, 24)) == 4  # the oldest kept only the trunk
    assert len(cache.match([7] * 24, 24)) == 0
    asked.clear()  # the newest prompt's cached head is not asked for again, its rest at once
    cache.insert(shared + [119] * 8 + [5] * 9, 33, kv_of)
    assert asked == [(24, 32)] and len(cache.match(shared + [119] * 8 + [5] * 8, 32)) == 8
    assert cache.assemble(cache.match(shared + [119] * 8, 24)).shape == (1, 2, 2, 24, 4)


def test_prefix_cache_evicts_the_least_recently_used_leaf() -> None:
    def kv_of(start: int, end: int) -> Any:
        return torch.zeros(1, 2, 1, end - start, 1)

    block_bytes = 2 * 4 * 4  # keys and values, 4 tokens, float32
    cache = PrefixCache(block_size=4, max_bytes=9 * block_bytes)
    trunk, branch, other = [1] * 16, [2] * 8, [3] * 8
    cache.insert(trunk + branch, 24, kv_of)  # 4 trunk blocks, then 2 of the branch
    cache.insert(other, 8, kv_of)  # 2 blocks under another root
    assert len(cache.match(trunk, 16)) == 4  # the trunk is used again, its branch is not
    cache.insert([4] * 16, 16, kv_of)  # 4 more blocks: 3 must go
    assert len(cache.match(trunk + branch, 24)) == 4  # the branch went, then the oldest leaf:
    assert len(cache.match(other, 8)) == 1  # the other root's, older than the trunk's end
    assert cache.bytes == 9 * block_bytes and len(cache) == 9
    for _ in range(200):  # used again and again: stale heap entries stay bounded
        cache.match(trunk, 16)
        assert len(cache._leaves) <= 2 * len(cache) + 64
