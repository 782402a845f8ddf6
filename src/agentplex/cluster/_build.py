"""Creating an actor on a node, the same way for one spawned alone and for each member of a
batch: its constructor gets the spawn's arguments, and its name as ``name=`` when the
constructor takes one (an agent's ``name`` is then its actor name)."""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any

from ._options import SpawnOptions
from ._scheduler import Placement

__all__ = ["build_actor", "name_slot"]

_KEYWORD = 1 << 30


_SLOTS: dict[type[Any], int | None] = {}


def name_slot(cls: type[Any]) -> int | None:
    """Where the actor class ``cls``'s constructor takes ``name``: its position (a
    keyword-only one counts as after every positional), or ``None`` when it takes no
    ``name`` by keyword. Read once per class."""
    if cls in _SLOTS:
        return _SLOTS[cls]
    slot = None
    try:
        params = list(inspect.signature(cls).parameters.values())
    except (TypeError, ValueError):
        params = []
    for i, p in enumerate(params):
        if p.name == "name":
            if p.kind is p.POSITIONAL_OR_KEYWORD:
                slot = i
            elif p.kind is p.KEYWORD_ONLY:
                slot = _KEYWORD
            break
    _SLOTS[cls] = slot
    return slot


def build_actor(cls: type[Any], name: str, args: Sequence[Any], kwargs: dict[str, Any],
                options: SpawnOptions, placement: Placement | None = None) -> Any:
    """``cls(*args, **kwargs)``, with ``name=name`` added when the constructor takes a
    ``name`` that ``args`` / ``kwargs`` leave unset, set up as the spawn's ``options``
    say; ``placement`` set on the actor. Every node creates every actor here, so a spawn
    option that acts on the actor itself acts here."""
    slot = name_slot(cls)
    if slot is not None and len(args) <= slot and "name" not in kwargs:
        actor = cls(*args, **kwargs, name=name)
    else:
        actor = cls(*args, **kwargs)
    if placement is not None:
        actor.placement = placement
    return actor
