"""What differs between the transformers versions we support (5.0 and later).

transformers 5.25 renamed a model's ``past_key_values`` argument and output to ``cache`` (the
old name warns, and goes in 5.40); earlier 5.x releases know only ``past_key_values``.
"""

from __future__ import annotations

import inspect
from typing import Any

__all__ = ["cache_keyword", "returned_cache"]


def cache_keyword(model: Any) -> str:
    """The name under which ``model``'s forward pass takes a key/value cache."""
    try:
        parameters = inspect.signature(model.forward).parameters
    except (TypeError, ValueError):  # no signature to read: the long-standing name
        return "past_key_values"
    return "cache" if "cache" in parameters else "past_key_values"


def returned_cache(out: Any) -> Any:
    """The key/value cache a forward pass returned, under either name."""
    cache = getattr(out, "cache", None)
    return cache if cache is not None else out.past_key_values
