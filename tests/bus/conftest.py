"""Fixtures of the bus tests: node processes on loopback."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import anyio.to_thread
import pytest

from tests.support.bus_node import Node, start_node


@pytest.fixture
def nodes() -> Iterator[Any]:
    started: list[Node] = []

    async def start(*args: Any, **kwargs: Any) -> Node:
        """Start a node without blocking the event loop (the head must answer its hello)."""
        node = await anyio.to_thread.run_sync(lambda: start_node(*args, **kwargs))
        started.append(node)
        return node

    yield start
    for node in started:
        node.stop()
