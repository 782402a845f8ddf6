"""Fixtures of the bus tests: node processes on loopback."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio.to_thread
import pytest

sys.path.insert(0, str(Path(__file__).parent))

from bus_nodes import Node, start_node


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


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
