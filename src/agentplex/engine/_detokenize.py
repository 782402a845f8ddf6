"""Decoding many short token lists at once, as the engine does for every row at every step.

A tokenizer's ``decode`` goes through a Python wrapper (argument conversion, clean-up checks)
before its Rust backend; at 256 rows and two windows a row, that wrapper costs more than the
decoding. Where the backend's ``decode_batch`` gives exactly what ``decode`` gives (the
library's own ``decode``, no clean-up of spaces), all windows go to it in one call.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

__all__ = ["batch_decoder"]

_GENERIC = (  # the classes whose ``_decode`` calls the backend and cleans up, nothing else
    ("transformers.tokenization_utils_tokenizers", "TokenizersBackend"),
    ("transformers.tokenization_utils_fast", "PreTrainedTokenizerFast"),
)


def _generic_decoders() -> tuple[set[Any], set[Any]]:
    from transformers import PreTrainedTokenizerBase

    inner: set[Any] = set()
    for module, name in _GENERIC:
        try:
            inner.add(getattr(importlib.import_module(module), name)._decode)
        except (ImportError, AttributeError):
            continue
    return {PreTrainedTokenizerBase.decode}, inner


def batch_decoder(tokenizer: Any) -> Callable[[list[list[int]]], list[str]]:
    """A function decoding token lists (special tokens kept) as ``tokenizer.decode`` would,
    one call to the fast backend for all of them where that is the same."""
    backend = getattr(tokenizer, "_tokenizer", None)
    try:
        outer, inner = _generic_decoders()
    except ImportError:
        outer, inner = set(), set()
    kind = type(tokenizer)
    if (backend is not None and hasattr(backend, "decode_batch")
            and getattr(kind, "decode", None) in outer and getattr(kind, "_decode", None) in inner
            and getattr(tokenizer, "clean_up_tokenization_spaces", True) is False):

        def fast(windows: list[list[int]]) -> list[str]:
            return list(backend.decode_batch(windows, skip_special_tokens=False))

        return fast

    def each(windows: list[list[int]]) -> list[str]:
        return [str(tokenizer.decode(w, skip_special_tokens=False)) for w in windows]

    return each
