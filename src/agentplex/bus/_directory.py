"""The name directory kept by the head process, and the liveness bookkeeping of peers."""

from __future__ import annotations

import bisect
import time
from collections.abc import Iterable, Sequence
from typing import Any

from ..runtime import NameRange
from ..runtime.lowlevel import split_name

__all__ = ["HEAD", "Directory", "Liveness", "names_from_wire", "names_to_wire",
           "parse_snapshot"]

MAX_NAMES_PER_FRAME = 100_000
"""Explicit names announced in one directory message (ranges are one entry each)."""


def names_to_wire(names: Sequence[str]) -> list[list[Any]]:
    """``names`` as directory messages' payloads: a :class:`NameRange` is one entry
    ``[prefix, start, stop]``; other names go as lists of strings, at most
    :data:`MAX_NAMES_PER_FRAME` per message."""
    if isinstance(names, NameRange):
        return [[names.to_wire()]]
    names = list(names)
    return [names[i:i + MAX_NAMES_PER_FRAME]
            for i in range(0, len(names), MAX_NAMES_PER_FRAME)]


def names_from_wire(data: Any) -> list[str | NameRange]:
    """Parse a directory message's names; ``ValueError`` when malformed."""
    if not isinstance(data, list):
        raise ValueError("malformed name list")
    out: list[str | NameRange] = []
    for entry in data:
        if isinstance(entry, str):
            out.append(entry)
        elif (isinstance(entry, list) and len(entry) == 3 and isinstance(entry[0], str)
              and type(entry[1]) is int and type(entry[2]) is int):
            out.append(NameRange(entry[0], entry[1], entry[2]))
        else:
            raise ValueError("malformed name entry")
    return out

HEAD = "head"
"""The node id of the head process."""


class Directory:
    """Which node hosts which actor, where each node listens, and who subscribes to what.

    Kept by the head. Nodes and topics are small and pushed to every node as a snapshot;
    actor names (possibly millions) are looked up on demand and cached by peers. A batch of
    generated names (:class:`NameRange`) is one entry per node, however many actors:
    ``ranges`` maps a prefix to sorted, disjoint ``[start, stop, node]`` segments, and
    ``holes`` holds the names of stopped actors inside them.
    """

    def __init__(self) -> None:
        self.nodes: dict[str, tuple[str, str]] = {}
        self.names: dict[str, str] = {}
        self.ranges: dict[str, list[list[Any]]] = {}
        self.holes: set[str] = set()
        self.topics: dict[str, set[str]] = {}
        self.version = 0

    def add_node(self, node: str, endpoint: str, public_key: str) -> None:
        self.nodes[node] = (endpoint, public_key)
        self.version += 1

    def remove_node(self, node: str) -> bool:
        """Forget ``node``, its actors and its subscriptions; whether it was known."""
        if self.nodes.pop(node, None) is None:
            return False
        self.names = {n: h for n, h in self.names.items() if h != node}
        for prefix in list(self.ranges):
            kept = [seg for seg in self.ranges[prefix] if seg[2] != node]
            if kept:
                self.ranges[prefix] = kept
            else:
                del self.ranges[prefix]
        for topic in list(self.topics):
            self.topics[topic].discard(node)
            if not self.topics[topic]:
                del self.topics[topic]
        self.version += 1
        return True

    def register(self, name: str, node: str) -> None:
        """``node`` now hosts ``name`` (a later registration wins: the actor moved)."""
        self.names[name] = node
        self.holes.discard(name)

    def unregister(self, name: str, node: str) -> None:
        if self.names.get(name) == node:
            del self.names[name]
        elif self._in_range(name) == node:
            self.holes.add(name)

    def register_many(self, names: Iterable[str | NameRange], node: str) -> None:
        """``node`` now hosts all of ``names``; a range is kept as one entry (replacing
        what overlapped it: those actors moved)."""
        for entry in names:
            if isinstance(entry, str):
                self.register(entry, node)
                continue
            if not len(entry):
                continue
            kept = _cut(self.ranges.get(entry.prefix, ()), entry.start, entry.stop)
            kept.append([entry.start, entry.stop, node])
            kept.sort(key=lambda seg: seg[0])
            self.ranges[entry.prefix] = kept
            if self.holes:
                self.holes = {h for h in self.holes if h not in entry}
            for name in [n for n in self.names if n in entry] if self.names else ():
                del self.names[name]

    def unregister_many(self, names: Iterable[str | NameRange], node: str) -> None:
        """``node`` no longer hosts ``names``."""
        for entry in names:
            if isinstance(entry, str):
                self.unregister(entry, node)
                continue
            segs = self.ranges.get(entry.prefix)
            if not segs:
                continue
            kept = _cut(segs, entry.start, entry.stop, node)
            if kept:
                self.ranges[entry.prefix] = kept
            else:
                del self.ranges[entry.prefix]

    def _in_range(self, name: str) -> str | None:
        """The node of the range holding ``name``, if any."""
        if not self.ranges:
            return None
        parts = split_name(name)
        segs = self.ranges.get(parts[0]) if parts is not None else None
        if not segs or parts is None:
            return None
        i = bisect.bisect_right(segs, parts[1], key=lambda seg: seg[0]) - 1
        if i >= 0 and segs[i][0] <= parts[1] < segs[i][1]:
            return segs[i][2]  # type: ignore[no-any-return]
        return None

    def lookup(self, name: str) -> str | None:
        node = self.names.get(name)
        if node is not None or name in self.holes:
            return node
        return self._in_range(name)

    def count(self) -> int:
        """How many actor names the directory holds."""
        ranged: int = sum(b - a for segs in self.ranges.values() for a, b, _ in segs)
        return len(self.names) + ranged - len(self.holes)

    def subscribe(self, topic: str, node: str) -> None:
        self.topics.setdefault(topic, set()).add(node)
        self.version += 1

    def unsubscribe(self, topic: str, node: str) -> None:
        nodes = self.topics.get(topic)
        if nodes is not None:
            nodes.discard(node)
            if not nodes:
                del self.topics[topic]
        self.version += 1

    def snapshot(self) -> dict[str, Any]:
        """Nodes and topics as a msgpack-able map (what the head pushes to every node)."""
        return {
            "version": self.version,
            "nodes": {n: list(v) for n, v in self.nodes.items()},
            "topics": {t: sorted(v) for t, v in self.topics.items()},
        }


def parse_snapshot(data: Any) -> tuple[int, dict[str, tuple[str, str]], dict[str, set[str]]]:
    """Validate a pushed snapshot; raise ``ValueError`` when malformed."""
    if not isinstance(data, dict) or type(data.get("version")) is not int:
        raise ValueError("malformed directory snapshot")
    nodes_raw, topics_raw = data.get("nodes"), data.get("topics")
    if not isinstance(nodes_raw, dict) or not isinstance(topics_raw, dict):
        raise ValueError("malformed directory snapshot")
    nodes: dict[str, tuple[str, str]] = {}
    for node, info in nodes_raw.items():
        if not (isinstance(info, list) and len(info) == 2
                and all(isinstance(x, str) for x in info)):
            raise ValueError("malformed node entry")
        nodes[node] = (info[0], info[1])
    topics: dict[str, set[str]] = {}
    for topic, members in topics_raw.items():
        if not isinstance(topic, str) or not isinstance(members, list):
            raise ValueError("malformed topic entry")
        topics[topic] = {m for m in members if isinstance(m, str)}
    return data["version"], nodes, topics


class Liveness:
    """When each peer was last heard from; which ones have gone quiet too long."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self.last_seen: dict[str, float] = {}

    def seen(self, node: str) -> None:
        self.last_seen[node] = time.monotonic()

    def forget(self, node: str) -> None:
        self.last_seen.pop(node, None)

    def stale(self) -> list[str]:
        limit = time.monotonic() - self.timeout
        return [n for n, t in self.last_seen.items() if t < limit]


def _cut(segs: Iterable[list[Any]], start: int, stop: int, node: str | None = None
         ) -> list[list[Any]]:
    """The segments ``[a, b, node]`` of ``segs`` less the span ``[start, stop)``, cut only
    from the segments of ``node`` when given."""
    kept: list[list[Any]] = []
    for a, b, n in segs:
        if b <= start or a >= stop or (node is not None and n != node):
            kept.append([a, b, n])
            continue
        if a < start:
            kept.append([a, start, n])
        if b > stop:
            kept.append([stop, b, n])
    return kept
