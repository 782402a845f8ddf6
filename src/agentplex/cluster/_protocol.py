"""What a cluster offers, as one protocol (:class:`ClusterAPI`).

:class:`~agentplex.cluster.Cluster` (the head's own, or one machine in this process),
:class:`~agentplex.cluster.ClusterClient` (any process on the bus, answered by the head)
and :class:`~agentplex.cluster.RayCluster` (Ray places the worker processes) implement it,
and :func:`~agentplex.cluster.init` returns it: code written against it runs unchanged on
each. Spawn options are one model (:class:`~agentplex.cluster.SpawnOptions`), given as
``options=`` or as keywords of the same names.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

from ..runtime import Actor, ActorRef, Runtime
from ._options import SpawnOptions
from ._refs import ActorRefs
from ._resources import NodeSpec, Resources
from ._rounds import RoundResult
from ._scheduler import Placement
from ._served_model import ServedChatModel

__all__ = ["ClusterAPI"]


@runtime_checkable
class ClusterAPI(Protocol):
    """A cluster to place actors on, whichever backend holds it.

    Errors are the same on every face: :class:`~agentplex.cluster.Unschedulable`,
    :class:`~agentplex.cluster.NodeFailed`, :class:`~agentplex.runtime.ActorExists`,
    :class:`~agentplex.bus.SpawnRefused`, :class:`~agentplex.cluster.NodesMissing`,
    :class:`~agentplex.cluster.NotSupported` and ``ValueError`` for bad options.
    """

    runtime: Runtime
    """The runtime of this process: refs made here call the actors wherever they run."""

    async def spawn(self, target: type[Actor] | str, *args: Any, name: str | None = None,
                    options: SpawnOptions | None = None,
                    kwargs: Mapping[str, Any] | None = None, **loose: Any) -> ActorRef:
        """Place and start one actor (class or import path; msgpack-able ``args`` and
        ``kwargs``, a dict for the constructor); return its ref. Options come as
        ``options``; a loose keyword naming a spawn option is an option, another goes to
        the actor, and one naming both is refused (``TypeError``)."""
        ...

    async def spawn_many(self, target: type[Actor] | str,
                         args: Sequence[Sequence[Any]] | int, *,
                         names: str | Sequence[str] | None = None,
                         options: SpawnOptions | None = None,
                         kwargs: Mapping[str, Any] | None = None, **loose: Any
                         ) -> ActorRefs:
        """Place and start many actors of one class at once (one request per node);
        ``args`` is each actor's positional arguments or a count, ``names`` a prefix or
        one name per actor, ``kwargs`` every actor's keyword arguments (as for
        :meth:`spawn`). The batch is placed whole or refused whole."""
        ...

    async def stop(self, name: str) -> None:
        """Stop an actor (spawned alone or a member of a batch) and free its resources."""
        ...

    async def stop_batch(self, refs: ActorRefs | Sequence[str]) -> None:
        """Stop every actor of the batch ``refs`` came from."""
        ...

    async def recover(self, names: Sequence[str]) -> dict[str, list[str]]:
        """Where actors whose calls failed stand now: ``running``, ``lost`` or
        ``unknown``."""
        ...

    async def respawn(self, names: Sequence[str]) -> dict[str, list[str]]:
        """Start the lost actors of ``names`` again as they were created (no state):
        ``restarted``, ``nodes`` (where they run now) and ``failed``."""
        ...

    async def call_round(self, refs: Sequence[ActorRef] | Sequence[str], message: Any, *,
                         timeout: float = 60.0, attempts: int = 3) -> RoundResult:
        """Call every actor of ``refs`` with ``message``; ask again those restarted
        elsewhere meanwhile, report the lost by name."""
        ...

    async def checkpoint(self, name: str | None = None, *, timeout: float = 10.0) -> None:
        """Save the ``state_dict()`` of restartable actors (or of ``name``)."""
        ...

    async def status(self) -> list[dict[str, Any]]:
        """One entry per node: capacity, GPU allocations, actors and batches on it."""
        ...

    async def placement_of(self, name: str) -> Placement | None:
        """Where the actor ``name`` runs, or ``None``."""
        ...

    async def wait_for_nodes(self, count: int, *, timeout: float = 60.0) -> int:
        """Wait until at least ``count`` nodes are alive; return how many are.
        Raises :class:`~agentplex.cluster.NodesMissing` after ``timeout`` seconds."""
        ...

    async def join(self, spec: NodeSpec) -> None:
        """Add the node ``spec`` whose agent answers on the bus at ``node:<id>``."""
        ...

    async def serve(self, model: str, *, engine: str = "agentplex",
                    resources: Resources | None = None, replicas: int = 1,
                    stream: bool = False, **options: Any) -> ServedChatModel:
        """Start ``replicas`` engine servers of ``model``; a chat model over them."""
        ...

    async def unserve(self, name: str) -> None:
        """Stop every replica of the served model ``name``."""
        ...

    async def served_status(self) -> list[dict[str, Any]]:
        """The served models and each replica's node, GPUs, URL and state."""
        ...

    async def close(self) -> None:
        """Release what this face holds (what it started; a client ends its driver)."""
        ...
