"""The name directory kept by the head process, and the liveness bookkeeping of peers."""

from __future__ import annotations

import time
from typing import Any

__all__ = ["HEAD", "Directory", "Liveness", "parse_snapshot"]

HEAD = "head"
"""The node id of the head process."""


class Directory:
    """Which node hosts which actor, where each node listens, and who subscribes to what.

    Kept by the head. Nodes and topics are small and pushed to every node as a snapshot;
    actor names (possibly millions) are looked up on demand and cached by peers.
    """

    def __init__(self) -> None:
        self.nodes: dict[str, tuple[str, str]] = {}
        self.names: dict[str, str] = {}
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
        for topic in list(self.topics):
            self.topics[topic].discard(node)
            if not self.topics[topic]:
                del self.topics[topic]
        self.version += 1
        return True

    def register(self, name: str, node: str) -> None:
        """``node`` now hosts ``name`` (a later registration wins: the actor moved)."""
        self.names[name] = node

    def unregister(self, name: str, node: str) -> None:
        if self.names.get(name) == node:
            del self.names[name]

    def lookup(self, name: str) -> str | None:
        return self.names.get(name)

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
