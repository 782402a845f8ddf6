"""Shared fixtures of the model tests: the loopback fake provider server."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from .provider_fakes import FakeServer


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def server() -> AsyncIterator[FakeServer]:
    fake = FakeServer()
    await fake.start()
    try:
        yield fake
    finally:
        await fake.stop()
