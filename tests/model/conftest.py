"""Fixtures of the model tests: the loopback fake provider server; a tiny Llama
trained here and the embedded model (those two skip without the ``local`` extra)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.provider_server import FakeServer


@pytest.fixture
async def server() -> AsyncIterator[FakeServer]:
    fake = FakeServer()
    await fake.start()
    try:
        yield fake
    finally:
        await fake.stop()


TRAINING_TIMEOUT = 900
"""Seconds allowed to the first test that needs the tiny Llama: its setup trains it (about
20 s on an idle 2-core machine, 90 s at a load of 6), beyond the suite's 120 s per test."""


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests that need the trained tiny Llama get :data:`TRAINING_TIMEOUT` (whichever runs
    first pays for the training; a test's own wait stays bounded by its own timeouts)."""
    for item in items:
        if "tiny_pair" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.timeout(TRAINING_TIMEOUT))


@pytest.fixture(scope="session")
def tiny_pair() -> tuple[Any, Any]:
    """A 2-layer Llama and its tokenizer, trained to memorise the local tests' examples."""
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from tests.support.tiny_llama import build_tokenizer, train_model

    tok = build_tokenizer()
    return train_model(tok), tok


@pytest.fixture(scope="session")
def tiny(tiny_pair: tuple[Any, Any]) -> Any:
    from agentplex.model import TransformersChatModel

    return TransformersChatModel("tiny", model=tiny_pair, max_new_tokens=64)


@pytest.fixture(scope="session")
def tiny_folder(tiny_pair: tuple[Any, Any], tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("tiny-llama")
    tiny_pair[0].save_pretrained(str(path))
    tiny_pair[1].save_pretrained(str(path))
    return path


@pytest.fixture(scope="session")
def model_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    yield tmp_path_factory.mktemp("agentplex-models")


@pytest.fixture(scope="session")
def smol(model_cache: Path) -> Any:
    """The embedded SmolLM2-135M-Instruct with its float32 weights (``quantize=None``; the
    default is int4 on a CPU), converted from its GGUF file into ``model_cache``."""
    pytest.importorskip("torch")
    from agentplex.model import TransformersChatModel
    from agentplex.model.local import embedded_gguf

    try:
        embedded_gguf()
    except FileNotFoundError as exc:
        pytest.skip(str(exc))
    return TransformersChatModel("default", cache_dir=model_cache, max_new_tokens=48,
                                 quantize=None)
