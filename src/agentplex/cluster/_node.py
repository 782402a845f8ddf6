"""Nodes as the cluster sees them: something that can start and stop actors.

:class:`LocalNode` is a node in this process (a runtime of its own on the shared in-process
network): what ``agentplex.init()`` starts, and what tests use to stand for machines.
Nodes reached over the ZeroMQ bus implement the same :class:`NodeHandle` interface.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from ..bus import SpawnRefused
from ..bus.lowlevel import import_actor_class, resolve_actor_class
from ..runtime import Actor, InProcessNetwork, InProcessTransport, Runtime
from ._build import build_actor
from ._options import SpawnOptions
from ._resources import NodeSpec
from ._scheduler import Placement
from ._shares import NodeShares

__all__ = ["ActorSpec", "LocalNode", "NodeHandle", "actor_class", "class_path",
           "target_path"]


def class_path(cls: type[Actor]) -> str:
    """The import path of an actor class, as :func:`import_actor_class` reads it."""
    if "<locals>" in cls.__qualname__:
        raise ValueError(f"{cls.__qualname__} is defined inside a function; actors spawned "
                         "on a cluster must be importable by path")
    return f"{cls.__module__}:{cls.__qualname__}"


def target_path(target: type[Actor] | str) -> str:
    """What ``spawn`` takes as ``target``, as an import path (a path is kept as is)."""
    return target if isinstance(target, str) else class_path(target)


def actor_class(path: str, allow: Iterable[str] | None = None) -> type[Actor]:
    """The actor class at ``path`` (``"package.module:Class"``), admitted by ``allow`` when
    given. A path that does not import or names no actor class is refused
    (:class:`~agentplex.bus.SpawnRefused`), never mistaken for a failing node."""
    try:
        if allow is None:
            return import_actor_class(path)
        return resolve_actor_class(path, allow)
    except ImportError as exc:
        raise SpawnRefused(f"cannot import {path!r}: {exc}") from exc


@dataclass
class ActorSpec:
    """How to (re)create an actor anywhere: its class by import path and msgpack-able
    arguments, plus where it may run and what to do when its node dies."""

    name: str
    target: str
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)
    options: SpawnOptions = field(default_factory=SpawnOptions)
    restarts: int = 0
    placement: Placement | None = None
    state: Any = None
    """The last checkpoint of the actor's ``state_dict()``, restored on restart."""
    checkpoints: int = 0
    """Checkpoints taken of the actor (the last one's number)."""
    checkpointed_at: str | None = None
    """When the last checkpoint was taken (UTC, ISO 8601)."""


class NodeHandle(ABC):
    """A node the cluster may place actors on."""

    spec: NodeSpec

    @property
    def id(self) -> str:
        return self.spec.id

    @abstractmethod
    async def start_actor(self, actor: ActorSpec) -> None:
        """Create the actor (restoring ``actor.state`` when set) and register its name."""

    @abstractmethod
    async def stop_actor(self, name: str) -> None:
        """Stop the actor (its accepted messages are handled first)."""

    @abstractmethod
    async def start_many(self, request: dict[str, Any]) -> None:
        """Create and start a node's share of a batch, all or nothing, from one request
        (:func:`~agentplex.cluster._shares.share_request`)."""

    @abstractmethod
    async def stop_batch(self, batch: int) -> None:
        """Stop every actor of ``batch`` on this node."""

    @abstractmethod
    async def batch_states(self, batch: int, timeout: float) -> list[list[Any]]:
        """The ``state_dict()`` of each actor of ``batch`` here, as
        ``[[position, [state, ...]], ...]``."""

    async def ping(self, timeout: float) -> bool:
        """Whether the node answers now."""
        return self.alive

    @property
    @abstractmethod
    def alive(self) -> bool:
        """Whether the node still answers."""


class LocalNode(NodeHandle):
    """A node inside this process: its own :class:`Runtime` on a shared in-process network."""

    def __init__(self, spec: NodeSpec, network: InProcessNetwork) -> None:
        self.spec = spec
        self.runtime = Runtime(InProcessTransport(network))
        self.shares = NodeShares(self.runtime)
        self._alive = True

    @property
    def alive(self) -> bool:
        return self._alive

    async def start_actor(self, actor: ActorSpec) -> None:
        instance = build_actor(actor_class(actor.target), actor.name, actor.args,
                               actor.kwargs, actor.options, actor.placement)
        await self.runtime.spawn(instance, actor.name)
        if actor.state is not None:
            await self.runtime.load_state(actor.name, actor.state)

    async def stop_actor(self, name: str) -> None:
        if name in self.runtime:
            await self.runtime.stop(name)

    async def start_many(self, request: dict[str, Any]) -> None:
        await self.shares.start(request, actor_class(request["target"]))

    async def stop_batch(self, batch: int) -> None:
        await self.shares.stop(batch)

    async def batch_states(self, batch: int, timeout: float) -> list[list[Any]]:
        return await self.shares.states(batch, timeout)

    async def kill(self) -> None:
        """Die as a machine dies: every actor stops at once, nothing is drained."""
        self._alive = False
        await self.runtime.shutdown(drain=False)

    async def close(self) -> None:
        """Shut down cleanly (drain, then stop)."""
        self._alive = False
        await self.runtime.shutdown()
