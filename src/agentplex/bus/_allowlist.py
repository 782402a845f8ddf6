"""The spawn allow-list: which actor classes a remote peer may have this node spawn.

Actors cross the wire as an import path plus msgpack-able arguments; a module is imported
only when the allow-list admits it."""

from __future__ import annotations

import importlib
from collections.abc import Iterable
from typing import Any

from ..runtime import Actor
from ._errors import SpawnRefused

__all__ = [
    "build_actor",
    "import_actor_class",
    "module_allowed",
    "resolve_actor_class",
]


def module_allowed(module: str, allow: Iterable[str]) -> bool:
    """Whether ``module`` is one of ``allow`` or inside one of those packages."""
    return any(module == a or module.startswith(a + ".") for a in allow)


def import_actor_class(path: str) -> type[Actor]:
    """Import the actor class named ``"package.module:Class"`` (no allow-list: for code
    spawning its own actors; remote requests go through :func:`resolve_actor_class`)."""
    module, sep, qualname = path.partition(":")
    if not sep or not module or not qualname:
        raise SpawnRefused(f"expected 'package.module:Class', got {path!r}")
    obj: Any = importlib.import_module(module)
    for part in qualname.split("."):
        obj = getattr(obj, part, None)
    if not (isinstance(obj, type) and issubclass(obj, Actor)):
        raise SpawnRefused(f"{path!r} is not an actor class")
    return obj


def resolve_actor_class(path: str, allow: Iterable[str]) -> type[Actor]:
    """Import the actor class named ``"package.module:Class"`` if ``allow`` admits it.

    The allow-list is checked *before* anything is imported, and again on the class found:
    ``Class`` must be a top-level name of the module (no dotted walk through attributes), and
    the class must be *defined* in an allowed module (its own ``__module__``), so a class an
    allowed module merely imports or re-exports is refused.
    """
    module, sep, qualname = path.partition(":")
    if not sep or not module or not qualname:
        raise SpawnRefused(f"expected 'package.module:Class', got {path!r}")
    if not module_allowed(module, allow):
        raise SpawnRefused(f"module {module!r} is not on this node's spawn allow-list")
    if not qualname.isidentifier():
        raise SpawnRefused(f"{path!r}: remote spawns name a top-level class of the module, "
                           "not a dotted path")
    try:
        imported = importlib.import_module(module)
    except ImportError as exc:
        raise SpawnRefused(f"{path!r}: cannot import {module!r} ({exc})") from exc
    obj = getattr(imported, qualname, None)
    if not (isinstance(obj, type) and issubclass(obj, Actor)):
        raise SpawnRefused(f"{path!r} is not an actor class")
    if not module_allowed(obj.__module__, allow):
        raise SpawnRefused(f"{path!r} is {obj.__module__}:{obj.__qualname__}, which is not "
                           "defined in a module on this node's spawn allow-list")
    return obj


def build_actor(spec: Any, allow: Iterable[str]) -> tuple[Actor, str | None]:
    """Instantiate the actor a SPAWN request describes: ``{cls, args, kwargs, name}``."""
    if not isinstance(spec, dict) or not isinstance(spec.get("cls"), str):
        raise SpawnRefused("malformed spawn request")
    args, kwargs, name = spec.get("args", []), spec.get("kwargs", {}), spec.get("name")
    if not isinstance(args, list) or not isinstance(kwargs, dict) or not (
        name is None or isinstance(name, str)
    ):
        raise SpawnRefused("malformed spawn request")
    cls = resolve_actor_class(spec["cls"], allow)
    return cls(*args, **kwargs), name
