"""Spawn options, defined once: how and where an actor (or each actor of a batch) is placed,
and what happens when its node dies.

Every face of the cluster (:class:`~agentplex.cluster.Cluster`,
:class:`~agentplex.cluster.ClusterClient`, :class:`~agentplex.cluster.RayCluster`), the
head's operations and the head's records of actors and batches carry one of these models.
``spawn`` / ``spawn_many`` take them as ``options=`` and the actor's keyword arguments as
``kwargs=`` (a dict: any names, ``run`` or ``resources`` included). Loose keywords still
work: one naming an option is an option, another goes to the actor's constructor, and one
naming an option that the actor's constructor also takes is refused as ambiguous.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from ._resources import Resources
from ._scheduler import PlacementPolicy

__all__ = ["BatchOptions", "RestartPolicy", "SpawnOptions", "split_options"]

RestartPolicy = Literal["never", "on-failure"]

_O = TypeVar("_O", bound="SpawnOptions")


class SpawnOptions(BaseModel):
    """How to place one actor and what to do when its node dies."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    resources: Resources = Field(default_factory=lambda: Resources(cpus=0))
    """What the actor needs (:class:`Resources`). None by default, as an agent mostly
    waits: ask for CPUs, memory or GPUs where the actor needs them (a model actor)."""
    placement: PlacementPolicy = "pack"
    """``pack`` fills the fullest node first; ``spread`` levels the load."""
    labels: dict[str, str] | None = None
    """Node labels the actor needs (``{"zone": "a"}``)."""
    node: str | None = None
    """Pin to this node id."""
    restart: RestartPolicy = "never"
    """``on-failure``: come back on another node, from the last checkpoint."""
    max_restarts: int = Field(default=3, ge=0)
    wait: float | None = Field(default=None, ge=0)
    """Seconds to queue a request that does not fit now (``None``: refuse at once)."""
    run: str | None = None
    """The run that owns the actor (``agentplex status`` lists batches by run). Spawned
    through the head, the actor stops when the driver that spawned it ends or is lost,
    unless ``detach``."""
    detach: bool = False
    """Keep the actor when its driver ends (stop it yourself)."""


class BatchOptions(SpawnOptions):
    """:class:`SpawnOptions` for ``spawn_many``: ``resources`` is what *each* actor needs,
    and a batch is spread over the nodes by default."""

    placement: PlacementPolicy = "spread"
    workers: int | None = Field(default=None, ge=1)
    """Ray backend only: how many Ray worker processes host the batch (default: one per
    alive Ray node with ``spread``, one with ``pack``)."""


def split_options(kind: type[_O], options: SpawnOptions | None, loose: dict[str, Any], *,
                  kwargs: Mapping[str, Any] | None = None, target: Any = None
                  ) -> tuple[_O, dict[str, Any]]:
    """The spawn options (``kind``) and the actor's keyword arguments of one ``spawn`` /
    ``spawn_many`` call.

    The clean form names each side: ``options=`` (a ``kind``) and ``kwargs=`` (the
    constructor's keyword arguments, passed as they are, whatever their names); loose
    keywords beside ``kwargs=`` must then name options. Without ``kwargs=`` the loose
    keywords are split: those naming an option are options, the others the actor's. A
    loose keyword naming an option that ``target``'s constructor also takes is refused
    (``TypeError``): it used to become the option silently. Raises ``ValueError``
    (pydantic's ``ValidationError``) for a bad option.
    """
    fields = kind.model_fields
    picked = {k: v for k, v in loose.items() if k in fields}
    if kwargs is not None:
        if not isinstance(kwargs, Mapping):
            raise TypeError(f"kwargs= takes the actor's keyword arguments as a mapping, not "
                            f"{type(kwargs).__name__}")
        stray = sorted(set(loose) - set(fields))
        if stray:
            raise TypeError(f"{', '.join(stray)}: not a spawn option; with kwargs= every "
                            "argument of the actor goes in kwargs")
        rest = dict(kwargs)
    else:
        rest = {k: v for k, v in loose.items() if k not in fields} if picked else loose
        both = sorted(set(picked) & _parameters(target))
        if both:
            raise TypeError(
                f"{', '.join(both)}: both a spawn option and an argument of "
                f"{getattr(target, '__name__', target)}; say which with options=... "
                "(the option) or kwargs={...} (the actor's argument)")
    if options is None and not picked:
        return kind(), rest
    if isinstance(options, kind) and not picked:
        return options, rest
    base = options.model_dump(exclude_unset=True) if options is not None else {}
    return kind.model_validate({**base, **picked}), rest


def _parameters(target: Any) -> set[str]:
    """The named parameters of ``target``'s constructor (none for an import path)."""
    if not isinstance(target, type):
        return set()
    try:
        params = inspect.signature(target).parameters.values()
    except (TypeError, ValueError):
        return set()
    return {p.name for p in params
            if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
