"""Shared test configuration: async tests run on asyncio through anyio's pytest plugin."""

import os

import pytest

# huggingface_hub fetches a registry from the Hub on a process's first request (to name the
# calling agent in its User-Agent), even against a loopback server: point it at a closed
# loopback port, so that no test reaches the internet.
os.environ.setdefault("HF_ENDPOINT", "http://127.0.0.1:9")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
