"""Whether message content is recorded in spans: off (the default), on, or redacted.

Set it with :func:`set_content_capture` or the environment variable
``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT=true``. When off, no message text is
ever written into a span.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Any, Literal, TypeAlias

__all__ = ["ContentCapture", "content_attribute", "content_capture", "set_content_capture"]

Redactor: TypeAlias = Callable[[str], str]
ContentCapture: TypeAlias = Literal["off", "on"] | Redactor
"""``"off"``, ``"on"``, or a function given the serialised content that returns what to
record (for example with personal data masked)."""

_ENV = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"
_mode: ContentCapture | None = None


def _from_env() -> ContentCapture:
    return "on" if os.environ.get(_ENV, "").strip().lower() in ("1", "true", "yes") else "off"


def set_content_capture(mode: ContentCapture | None) -> None:
    """Choose how span content is captured; ``None`` returns to the environment default
    (read again now)."""
    if mode is not None and mode not in ("off", "on") and not callable(mode):
        raise ValueError(f"content capture must be 'off', 'on' or a function, not {mode!r}")
    global _mode
    _mode = mode if mode is not None else _from_env()


def content_capture() -> ContentCapture:
    """The capture mode in force (the environment is read once, on first use: this is
    asked on every model call)."""
    global _mode
    if _mode is None:
        _mode = _from_env()
    return _mode


def content_attribute(value: Any) -> str | None:
    """``value`` serialised for a span attribute under the capture mode, or ``None`` (off)."""
    mode = content_capture()
    if mode == "off":
        return None
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False,
                                                           default=str)
    if mode == "on":
        return text
    assert callable(mode)
    return mode(text)
