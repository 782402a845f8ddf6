"""A fast deep copy, for giving each receiver of one value its own."""

from __future__ import annotations

import copy
from typing import Any

__all__ = ["deep_copy"]

_IMMUTABLE = frozenset({str, bytes, int, float, bool, complex, type(None)})
"""Types whose values ``copy.deepcopy`` returns as they are."""


def deep_copy(value: Any) -> Any:
    """``copy.deepcopy(value)``, calling a ``__deepcopy__`` directly (a message's own is
    much cheaper than the generic walk and its memo bookkeeping); an immutable scalar is
    returned at once."""
    if type(value) in _IMMUTABLE:
        return value
    method = None if isinstance(value, type) else getattr(value, "__deepcopy__", None)
    return method({}) if method is not None else copy.deepcopy(value)
