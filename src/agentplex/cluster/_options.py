"""Spawn options, defined once: how and where an actor (or each actor of a batch) is placed,
and what happens when its node dies.

Every face of the cluster (:class:`~agentplex.cluster.Cluster`,
:class:`~agentplex.cluster.ClusterClient`, :class:`~agentplex.cluster.RayCluster`), the
head's operations and the head's records of actors and batches carry one of these models.
``spawn`` / ``spawn_many`` take them as ``options=`` or as keywords of the same names; a
keyword that is not an option goes to the actor's constructor.
"""

from __future__ import annotations

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


def split_options(kind: type[_O], options: SpawnOptions | None, kwargs: dict[str, Any]
                  ) -> tuple[_O, dict[str, Any]]:
    """``kind`` built from ``options`` (the fields it set) and the keywords of ``kwargs``
    that name an option; the other keywords are the actor's. Raises ``ValueError``
    (pydantic's ``ValidationError``) for a bad option."""
    fields = kind.model_fields
    picked = {k: v for k, v in kwargs.items() if k in fields}
    rest = {k: v for k, v in kwargs.items() if k not in fields} if picked else kwargs
    if options is None and not picked:
        return kind(), rest
    if isinstance(options, kind) and not picked:
        return options, rest
    base = options.model_dump(exclude_unset=True) if options is not None else {}
    return kind.model_validate({**base, **picked}), rest
