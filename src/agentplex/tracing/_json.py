"""``json.dumps`` for the per-message paths: the same text, with the encoder built once.

``json.dumps`` with any option builds a ``JSONEncoder`` and its C encoder on every call;
the run's transcript, recording and request keys and every span line encode per message,
so each keeps one (without circular-reference checks: what they encode is plain data).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

__all__ = ["dumper"]


def dumper(*, sort_keys: bool = False, ensure_ascii: bool = True,
           default: Callable[[Any], Any] | None = None, compact: bool = False
           ) -> Callable[[Any], str]:
    """A function giving ``json.dumps(value, sort_keys=..., ensure_ascii=...,
    default=...)`` (``compact``: with ``separators=(",", ":")``)."""
    item, key = (",", ":") if compact else (", ", ": ")
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:  # no C accelerator: the pure-Python encoder, built once all the same
        return json.JSONEncoder(sort_keys=sort_keys, ensure_ascii=ensure_ascii,
                                default=default, separators=(item, key)).encode
    string = json.encoder.encode_basestring_ascii if ensure_ascii else \
        json.encoder.encode_basestring
    encode = make(None, default, string, None, key, item, sort_keys, False, True)
    join = "".join

    def dumps(value: Any) -> str:
        return join(encode(value, 0))

    return dumps
