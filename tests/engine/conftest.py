"""Fixtures of the engine tests (they skip without the ``local`` extra)."""

from __future__ import annotations

from typing import Any

import pytest


@pytest.fixture(scope="module")
def pair() -> tuple[Any, Any]:
    """A 2-layer Llama with random weights and the tiny tokenizer."""
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from tests.support.engine_runs import random_llama
    from tests.support.tiny_llama import build_tokenizer

    tok = build_tokenizer()
    return random_llama(tok), tok
