""":class:`Cluster`, the cluster as its head's process holds it: spawn actors by declared
resources onto nodes, and bring them back when a node dies; :func:`init` starts one in this
process."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from ..runtime import Actor, ActorExists, ActorRef, InProcessNetwork, InProcessTransport, Runtime
from ._detect import detect_node
from ._errors import Unschedulable
from ._node import ActorSpec, LocalNode, NodeHandle, RestartPolicy, class_path
from ._resources import NodeSpec, Resources
from ._scheduler import Placement, PlacementPolicy, Scheduler
from ._serve import ServedChatModel, serve_model, served_status, unserve_model

__all__ = ["Cluster", "init"]

log = logging.getLogger("agentplex.cluster")


class Cluster:
    """The head's view of the cluster: nodes, placement and the actors placed on them.

    Spawning goes through the :class:`Scheduler`; an actor whose request cannot fit now is
    queued (up to ``wait`` seconds) or refused with the scheduler's reason. Actors spawned
    with ``restart="on-failure"`` come back on another node when theirs dies, from their
    last checkpoint (:meth:`checkpoint`, also taken every ``checkpoint_interval`` seconds).

    Use :func:`init` for a one-machine cluster in this process.
    """

    def __init__(self, runtime: Runtime | None = None, *,
                 network: InProcessNetwork | None = None,
                 checkpoint_interval: float | None = 5.0) -> None:
        self.network = network or InProcessNetwork()
        self.runtime = runtime or Runtime(InProcessTransport(self.network))
        self.scheduler = Scheduler()
        self.nodes: dict[str, NodeHandle] = {}
        self.actors: dict[str, ActorSpec] = {}
        self.served: dict[str, dict[str, Any]] = {}
        """Served models by name: model, engine and replica actor names."""
        self._freed = asyncio.Condition()
        self._interval = checkpoint_interval
        self._checkpointer: asyncio.Task[None] | None = None

    # -- lifecycle ---------------------------------------------------------------------

    async def start(self) -> Cluster:
        await self.runtime.start()
        if self._interval and self._checkpointer is None:
            self._checkpointer = asyncio.ensure_future(self._checkpoint_every(self._interval))
        return self

    async def close(self) -> None:
        """Stop every actor and node."""
        if self._checkpointer is not None:
            self._checkpointer.cancel()
            self._checkpointer = None
        for node in list(self.nodes.values()):
            if isinstance(node, LocalNode) and node.alive:
                await node.close()
        await self.runtime.shutdown()

    async def __aenter__(self) -> Cluster:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- nodes ---------------------------------------------------------------------------

    async def add_node(self, node: NodeHandle | NodeSpec) -> NodeHandle:
        """Add a node (a :class:`NodeSpec` becomes a :class:`LocalNode` in this process)."""
        handle = LocalNode(node, self.network) if isinstance(node, NodeSpec) else node
        if isinstance(handle, LocalNode):
            await handle.runtime.start()
        self.nodes[handle.id] = handle
        self.scheduler.add_node(handle.spec)
        await self._notify_freed()
        return handle

    async def node_failed(self, node_id: str) -> list[str]:
        """Forget a dead node; restart its ``on-failure`` actors elsewhere (keeping their
        labels; a pin to the dead node is dropped). Returns the names restarted."""
        self.nodes.pop(node_id, None)
        lost = {p.id for p in self.scheduler.remove_node(node_id)}
        restarted = []
        for spec in list(self.actors.values()):
            if spec.placement is None or spec.placement.id not in lost:
                continue
            spec.placement = None
            if spec.restart != "on-failure" or spec.restarts >= spec.max_restarts:
                log.warning("actor %r died with node %r and is not restarted", spec.name,
                            node_id)
                del self.actors[spec.name]
                continue
            spec.restarts += 1
            if spec.node == node_id:  # pinned to the dead node: labels still apply
                spec.node = None
            try:
                await self._place_and_start(spec, wait=None)
            except Unschedulable as exc:
                log.error("actor %r could not be restarted: %s", spec.name, exc.reason)
                del self.actors[spec.name]
                continue
            restarted.append(spec.name)
        return restarted

    # -- actors --------------------------------------------------------------------------

    async def spawn(
        self,
        target: type[Actor] | str,
        *args: Any,
        name: str | None = None,
        resources: Resources | None = None,
        placement: PlacementPolicy = "pack",
        labels: dict[str, str] | None = None,
        node: str | None = None,
        restart: RestartPolicy = "never",
        max_restarts: int = 3,
        wait: float | None = None,
        **kwargs: Any,
    ) -> ActorRef:
        """Place and start an actor; return its ref (reachable by name from anywhere).

        ``target`` is an actor class or its import path; ``args`` / ``kwargs`` must be
        msgpack-able so the actor can be created on any node. ``wait`` seconds to queue a
        request that does not fit now (default: refuse at once).
        """
        path = target if isinstance(target, str) else class_path(target)
        name = name or f"{path.rpartition(':')[2].lower()}-{len(self.actors) + 1}"
        if name in self.actors:
            raise ActorExists(f"an actor named {name!r} already runs", actor=name)
        spec = ActorSpec(name=name, target=path, args=args, kwargs=kwargs,
                         resources=resources or Resources(), policy=placement, labels=labels,
                         node=node, restart=restart, max_restarts=max_restarts)
        self.actors[name] = spec
        try:
            await self._place_and_start(spec, wait=wait)
        except BaseException:
            self.actors.pop(name, None)
            raise
        return self.runtime.ref(name)

    async def _place_and_start(self, spec: ActorSpec, *, wait: float | None) -> None:
        placement = await self._place(spec, wait)
        spec.placement = placement
        try:
            await self.nodes[placement.node_id].start_actor(spec)
        except BaseException:
            self.scheduler.release(placement)
            spec.placement = None
            raise

    async def _place(self, spec: ActorSpec, wait: float | None) -> Placement:
        loop = asyncio.get_running_loop()
        deadline = None if wait is None else loop.time() + wait
        while True:
            try:
                return self.scheduler.place(spec.resources, policy=spec.policy,
                                            labels=spec.labels, node_id=spec.node)
            except Unschedulable as exc:
                remaining = None if deadline is None else deadline - loop.time()
                if not exc.retryable or remaining is None or remaining <= 0:
                    raise
                async with self._freed:
                    try:
                        await asyncio.wait_for(self._freed.wait(), remaining)
                    except TimeoutError:
                        raise exc from None

    async def stop(self, name: str) -> None:
        """Stop an actor and free its resources."""
        spec = self.actors.pop(name, None)
        if spec is None or spec.placement is None:
            return
        node = self.nodes.get(spec.placement.node_id)
        if node is not None and node.alive:
            await node.stop_actor(name)
        self.scheduler.release(spec.placement)
        await self._notify_freed()

    async def _notify_freed(self) -> None:
        async with self._freed:
            self._freed.notify_all()

    # -- served models ---------------------------------------------------------------------

    async def serve(self, model: str, *, engine: str = "agentplex",
                    resources: Resources | None = None, replicas: int = 1,
                    stream: bool = False, **options: Any) -> ServedChatModel:
        """Start ``replicas`` servers of ``model`` on ``engine`` (``agentplex``, ``vllm``,
        ``sglang`` or ``llama.cpp``), each placed by ``resources`` and supervised on its
        node, and return a chat model that spreads calls over them.

        ``resources.gpus`` is the tensor-parallel degree and ``gpu_memory`` / the GPU's
        memory the engine's memory share. Options: ``name`` (default ``served-<model>``),
        ``dtype``, ``max_model_len``, ``api_key``, ``model_options`` (agentplex engine),
        ``engine_args``, ``host``, ``placement`` (default ``spread``), ``labels``,
        ``ready_timeout``, ``max_restarts``, ``wait``. Clients name the model as ``model``.
        Release with :meth:`unserve`.
        """
        served = await serve_model(self, model, engine=engine, resources=resources,
                                   replicas=replicas, **options)
        return ServedChatModel(served["urls"], model_name=served["served_name"],
                               stream=stream, api_key=options.get("api_key"))

    async def unserve(self, name: str) -> None:
        """Stop every replica of the served model ``name``."""
        await unserve_model(self, name)

    async def served_status(self) -> list[dict[str, Any]]:
        """The served models and the node, GPUs, URL and state of each replica."""
        return await served_status(self)

    # -- state -----------------------------------------------------------------------------

    async def checkpoint(self, name: str | None = None, *, timeout: float = 10.0) -> None:
        """Save the ``state_dict()`` of restartable actors (or of ``name``) at the head."""
        names = [name] if name is not None else [
            n for n, s in self.actors.items() if s.restart == "on-failure"]
        for n in names:
            spec = self.actors.get(n)
            if spec is None or spec.placement is None:
                continue
            node = self.nodes.get(spec.placement.node_id)
            if node is None or not node.alive:
                continue
            try:
                spec.state = await self.runtime.state_of(n, timeout=timeout)
            except Exception as exc:
                log.warning("checkpoint of %r failed: %s", n, exc)

    async def _checkpoint_every(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            await self.checkpoint()

    # -- status ------------------------------------------------------------------------------

    def status(self) -> list[dict[str, Any]]:
        """One entry per node: capacity, allocations per GPU, and the actors on it."""
        out = []
        for node_id, node in self.nodes.items():
            usage = self.scheduler.usage(node_id)
            out.append({
                "node": node_id,
                "alive": node.alive,
                "cpus": f"{usage['cpus']:g}/{node.spec.cpus:g}",
                "gpus": [{"index": g.index, "name": g.name, "total": g.total_memory, **u}
                         for g, u in zip(node.spec.gpus, usage["gpus"], strict=False)],
                "labels": node.spec.labels,
                "actors": sorted(n for n, s in self.actors.items()
                                 if s.placement and s.placement.node_id == node_id),
            })
        return out

    def placement_of(self, name: str) -> Placement | None:
        """Where the actor ``name`` runs (its :class:`Placement`), or ``None``."""
        spec = self.actors.get(name)
        return spec.placement if spec is not None else None


async def init(*, backend: str = "local", gpus: int | None = None,
               gpu_memory: str | int | None = None, labels: dict[str, str] | None = None,
               checkpoint_interval: float | None = 5.0, **ray_init: Any) -> Any:
    """A cluster to spawn actors on, with nothing to set up.

    ``backend="local"`` (default): this machine alone, in this process, no daemons;
    ``gpus`` / ``gpu_memory`` declare GPUs instead of detecting them. ``backend="ray"``: a
    :class:`RayCluster` (``ray_init`` goes to ``ray.init``, e.g. ``address="auto"`` or
    ``num_gpus=4`` for logical GPUs).
    """
    if backend == "ray":
        from ._ray import RayCluster

        if gpus is not None:
            ray_init.setdefault("num_gpus", gpus)
        return await RayCluster.start(**ray_init)
    if backend != "local":
        raise ValueError(f"unknown cluster backend {backend!r} (use 'local' or 'ray')")
    cluster = await Cluster(checkpoint_interval=checkpoint_interval).start()
    await cluster.add_node(detect_node("local", gpus=gpus, gpu_memory=gpu_memory,
                                       labels=labels))
    return cluster
