"""The head's manager actor (:class:`ClusterManager`): the cluster's operations answered
over the bus.

The head process hosts :class:`ClusterManager` (actor name ``"cluster"``), which owns a
:class:`~agentplex.cluster.ClusterAPI`: a :class:`~agentplex.cluster.Cluster` whose nodes
join over the bus (each node process hosts a node agent, ``"node:<id>"``, see
:mod:`._daemon`), or a :class:`~agentplex.cluster.RayCluster`. Every request is one of the
operations of :data:`~._ops.REQUESTS`; the answer carries a cluster error as its own type
(:class:`~agentplex.cluster.ClusterClient` raises it).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..runtime import Actor, ActorError, CallTimeout
from . import _ops as ops
from ._cluster import Cluster
from ._errors import NotSupported
from ._protocol import ClusterAPI
from ._shares import names_from_wire, names_to_wire

__all__ = ["ClusterManager"]

log = logging.getLogger("agentplex.cluster")


@dataclass
class Driven:
    """What one driver spawned for its runs (not detached): stopped when it ends."""

    actors: list[str] = field(default_factory=list)
    batches: list[Sequence[str]] = field(default_factory=list)
    watch: asyncio.Task[None] | None = None


class ClusterManager(Actor):
    """The head's cluster: nodes register here, and every spawn is placed here.

    Handles requests concurrently (a spawn that waits for room must not block the stop
    that makes room); the scheduler itself is only touched between awaits.

    A driver (a client spawning for a ``run``, not detached) is watched: every
    ``ping_interval`` seconds its :class:`~._client.DriverAgent` is asked whether it is
    there. When it ends (:class:`~._ops.EndDriver`) or its process is gone from the bus
    (twice not found, or lost), what it spawned is stopped. A driver too busy to answer in
    time is not gone: only the bus decides that a process is lost.
    """

    max_concurrency = 64

    def __init__(self, *, ping_interval: float = 1.0, dead_after: float = 10.0,
                 checkpoint_interval: float | None = 5.0, backend: str = "local",
                 ray_address: str | None = None) -> None:
        if backend not in ("local", "ray"):
            raise ValueError(f"unknown cluster backend {backend!r} (use 'local' or 'ray')")
        self.ping_interval = ping_interval
        self.dead_after = dead_after
        self.checkpoint_interval = checkpoint_interval
        self.backend = backend
        self.ray_address = ray_address
        self.cluster: ClusterAPI | None = None
        """A :class:`Cluster`, or a :class:`RayCluster` with ``backend="ray"``."""
        self.drivers: dict[str, Driven] = {}
        """What each watched driver spawned, by driver name."""
        self.operations: dict[type[ops.Request], Callable[[Any], Awaitable[Any]]] = {
            ops.Register: self._register, ops.Spawn: self._spawn,
            ops.SpawnMany: self._spawn_many, ops.Stop: self._stop,
            ops.StopBatch: self._stop_batch, ops.Recover: self._recover,
            ops.Respawn: self._respawn,
            ops.Checkpoint: self._checkpoint, ops.Status: self._status,
            ops.PlacementOf: self._placement_of, ops.Serve: self._serve,
            ops.Unserve: self._unserve, ops.ServedStatus: self._served_status,
            ops.WaitForNodes: self._wait_for_nodes, ops.EndDriver: self._end_driver,
            ops.NodeExited: self._node_exited}
        """The operations, one handler each (every one of :data:`~._ops.REQUESTS`)."""

    async def on_start(self) -> None:
        if self.backend == "ray":
            from ._ray import RayCluster

            self.cluster = await RayCluster.start(
                address=self.ray_address, runtime=self.runtime,
                checkpoint_interval=self.checkpoint_interval)
            return
        self.cluster = await Cluster(self.runtime, checkpoint_interval=self.checkpoint_interval,
                                     ping_interval=self.ping_interval,
                                     dead_after=self.dead_after).start()

    async def on_stop(self) -> None:
        for driven in self.drivers.values():
            if driven.watch is not None:
                driven.watch.cancel()
        if self.cluster is not None:
            await self.cluster.close()

    async def handle_call(self, message: Any) -> Any:
        return await ops.answer(self._dispatch(message))

    async def _dispatch(self, message: Any) -> Any:
        request = ops.request_from_wire(message)
        return await self.operations[type(request)](request)

    @property
    def _cluster(self) -> ClusterAPI:
        assert self.cluster is not None, "the manager has not started"
        return self.cluster

    # -- the operations ------------------------------------------------------------------

    async def _register(self, r: ops.Register) -> str:
        await self._cluster.join(r.spec)
        return r.spec.id

    async def _spawn(self, r: ops.Spawn) -> str:
        ref = await self._cluster.spawn(r.target, *r.args, name=r.name, options=r.options,
                                        kwargs=r.kwargs)
        if r.driver is not None:
            self._driven(r.driver).actors.append(ref.name)
        return ref.name

    async def _spawn_many(self, r: ops.SpawnMany) -> Any:
        names = r.names if r.names is None or isinstance(r.names, str) else names_from_wire(
            r.names)
        args = r.args if isinstance(r.args, int) else list(r.args)
        refs = await self._cluster.spawn_many(r.target, args, names=names, options=r.options,
                                              kwargs=r.kwargs)
        if r.driver is not None:
            self._driven(r.driver).batches.append(refs.names[:1])
        return names_to_wire(refs.names)

    async def _stop(self, r: ops.Stop) -> None:
        await self._cluster.stop(r.name)

    async def _stop_batch(self, r: ops.StopBatch) -> None:
        await self._cluster.stop_batch(names_from_wire(r.names))

    async def _recover(self, r: ops.Recover) -> dict[str, list[str]]:
        return await self._cluster.recover(r.names)

    async def _respawn(self, r: ops.Respawn) -> dict[str, list[str]]:
        return await self._cluster.respawn(r.names)

    async def _checkpoint(self, r: ops.Checkpoint) -> None:
        await self._cluster.checkpoint(r.name, timeout=r.timeout)

    async def _status(self, r: ops.Status) -> list[dict[str, Any]]:
        return await self._cluster.status()

    async def _placement_of(self, r: ops.PlacementOf) -> dict[str, Any] | None:
        return ops.placement_to_wire(await self._cluster.placement_of(r.name))

    async def _serve(self, r: ops.Serve) -> dict[str, Any]:
        model = await self._cluster.serve(r.model, engine=r.engine, resources=r.resources,
                                          replicas=r.replicas, **r.options)
        await model.aclose()  # the caller talks to the replicas itself
        return {"served_name": model.model_name, "urls": model.urls}

    async def _unserve(self, r: ops.Unserve) -> None:
        await self._cluster.unserve(r.name)

    async def _served_status(self, r: ops.ServedStatus) -> list[dict[str, Any]]:
        return await self._cluster.served_status()

    async def _wait_for_nodes(self, r: ops.WaitForNodes) -> int:
        return await self._cluster.wait_for_nodes(r.count, timeout=r.timeout)

    async def _node_exited(self, r: ops.NodeExited) -> bool:
        exited = getattr(self._cluster, "node_exited", None)
        if exited is None:  # Ray's cluster hears of its workers' deaths from Ray
            raise NotSupported("this cluster learns of dead processes by itself")
        return bool(await exited(r.node, r.reason))

    async def _end_driver(self, r: ops.EndDriver) -> None:
        driven = self.drivers.get(r.driver)
        if driven is not None and driven.watch is not None:
            driven.watch.cancel()
        await self._stop_driven(r.driver, "ended")

    # -- drivers -------------------------------------------------------------------------

    def _driven(self, driver: str) -> Driven:
        driven = self.drivers.get(driver)
        if driven is None:
            driven = self.drivers[driver] = Driven()
            driven.watch = asyncio.ensure_future(self._watch_driver(driver))
        return driven

    async def _watch_driver(self, driver: str) -> None:
        """Ask the driver each interval whether it is there; stop what it spawned once
        the bus says its process is gone."""
        ref = self.runtime.ref(driver)
        missed = 0
        while True:
            await asyncio.sleep(self.ping_interval)
            try:
                await ref.call("ping", timeout=max(self.dead_after, 5.0))
                missed = 0
            except CallTimeout:  # busy, or slow: not gone
                continue
            except ActorError as exc:  # not found, lost with its process, stopped
                missed += 1
                if missed < 2:
                    continue
                log.warning("driver %r is gone (%s); stopping what it spawned", driver,
                            type(exc).__name__)
                await self._stop_driven(driver, "lost")
                return

    async def _stop_driven(self, driver: str, why: str) -> None:
        driven = self.drivers.pop(driver, None)
        if driven is None:
            return
        cluster = self._cluster
        for names in driven.batches:
            try:
                await cluster.stop_batch(names)
            except Exception as exc:
                log.warning("could not stop batch %s… of driver %r: %s", names[0], driver,
                            exc)
        for name in driven.actors:
            try:
                await cluster.stop(name)
            except Exception as exc:
                log.warning("could not stop %r of driver %r: %s", name, driver, exc)
        log.info("driver %r %s: stopped %d batches and %d actors", driver, why,
                 len(driven.batches), len(driven.actors))
