"""Sessions: save the state of agents (and other state modules) to a JSON file and back."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Protocol

__all__ = ["SESSION_FORMAT", "load_session", "save_session"]

SESSION_FORMAT = 1


class _Stateful(Protocol):
    def state_dict(self) -> dict[str, Any]: ...
    def load_state_dict(self, state: dict[str, Any], strict: bool = True) -> None: ...


def _named(modules: tuple[_Stateful, ...], named: dict[str, _Stateful]) -> dict[str, _Stateful]:
    out: dict[str, _Stateful] = {}
    for module in modules:
        key = getattr(module, "name", None)
        if not isinstance(key, str):
            raise TypeError(f"{module!r} has no name; pass it as a keyword argument")
        if key in out:
            raise ValueError(f"two modules are named {key!r}; pass them as keyword arguments")
        out[key] = module
    for key, module in named.items():
        if key in out:
            raise ValueError(f"two modules are named {key!r}")
        out[key] = module
    return out


def save_session(path: str | os.PathLike[str], *agents: _Stateful,
                 metadata: dict[str, Any] | None = None, **modules: _Stateful) -> Path:
    """Write the state of ``agents`` (keyed by their names) and of keyword ``modules`` to
    the JSON file ``path``, atomically. Returns the path.

    Anything with ``state_dict()`` / ``load_state_dict()`` can be saved: agents (with
    their memory and toolkit), memories, toolkits.
    """
    target = Path(path)
    state = {
        "format": SESSION_FORMAT,
        "metadata": metadata or {},
        "modules": {key: m.state_dict() for key, m in _named(agents, modules).items()},
    }
    text = json.dumps(state, ensure_ascii=False, indent=1)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def load_session(path: str | os.PathLike[str], *agents: _Stateful, strict: bool = True,
                 **modules: _Stateful) -> dict[str, Any]:
    """Restore ``agents`` and ``modules`` from a file written by :func:`save_session`.

    With ``strict``, a module missing from the file raises ``KeyError``; modules in the
    file that are not passed are ignored. Returns the session's ``metadata``.
    """
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    if data.get("format") != SESSION_FORMAT:
        raise ValueError(f"{path} is not a session file of format {SESSION_FORMAT}")
    saved: dict[str, Any] = data["modules"]
    for key, module in _named(agents, modules).items():
        if key not in saved:
            if strict:
                raise KeyError(f"session {path} has no state for {key!r}")
            continue
        module.load_state_dict(saved[key], strict=strict)
    return dict(data.get("metadata") or {})
