"""The Ray backend: the same ``spawn`` API, with Ray placing the worker processes.

Users who already run Ray keep one cluster manager. Each actor spawned alone gets a Ray
actor process of its own; a batch (:meth:`RayCluster.spawn_many`) shares a few Ray actor
processes (one per Ray node by default), each hosting many of our actors, so Ray's
per-actor cost is paid per worker, not per agent. A worker is placed by Ray from the
declared resources of the actors it hosts (``num_cpus``, ``num_gpus`` — Ray sets
``CUDA_VISIBLE_DEVICES`` — ``memory``, the ``SPREAD`` strategy for spread, and labels as
custom resources ``label:KEY=VALUE``). That process joins our ZeroMQ bus and hosts the
actors there, so messages never go through Ray: only placement does. Install with
``pip install 'agentplex[ray]'``.
"""

from __future__ import annotations

import asyncio
import itertools
import os
from collections.abc import Sequence
from typing import Any

from ..bus import connect
from ..bus.lowlevel import import_actor_class
from ..runtime import Actor, ActorExists, ActorRef, Runtime
from ._batch import ActorRefs, NodeShares, batch_names, names_to_wire
from ._errors import Unschedulable
from ._node import RestartPolicy, class_path
from ._resources import Resources
from ._scheduler import Placement, PlacementPolicy

__all__ = ["RayCluster", "label_resource"]


def label_resource(key: str, value: str) -> str:
    """The Ray custom resource standing for node label ``key=value``."""
    return f"label:{key}={value}"


class _Host:
    """The body of the Ray actor that hosts one agentplex actor on the bus."""

    def __init__(self, head: str, spec: dict[str, Any]) -> None:
        self.head = head
        self.spec = spec
        self.runtime: Runtime | None = None

    async def ready(self) -> dict[str, Any]:
        """Join the bus and start the actor (once); report where it landed."""
        import ray

        if self.runtime is None:
            spec = self.spec
            ctx = ray.get_runtime_context()
            self.runtime = connect(self.head, node_id=f"ray-{spec['name']}-{os.getpid()}")
            await self.runtime.start()
            actor: Actor = import_actor_class(spec["target"])(*spec["args"], **spec["kwargs"])
            gpus = tuple(int(g) for g in ray.get_gpu_ids())
            actor.placement = Placement(0, ctx.get_node_id(), gpus,  # type: ignore[attr-defined]
                                        Resources.model_validate(spec["resources"]))
            await self.runtime.spawn(actor, spec["name"])
        return {"node": ray.get_runtime_context().get_node_id(),
                "gpu_ids": [int(g) for g in ray.get_gpu_ids()],
                "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES")}

    async def start_many(self, request: dict[str, Any]) -> dict[str, Any]:
        """Join the bus (once) and start a share of a batch here, as a node would."""
        import ray

        node = ray.get_runtime_context().get_node_id()
        if self.runtime is None:
            self.runtime = connect(self.head, node_id=f"ray-{self.spec['name']}-{os.getpid()}")
            await self.runtime.start()
        for seg in request["segments"]:
            seg["placement"]["node_id"] = node
        shares = NodeShares(self.runtime)
        count = await shares.start(request, import_actor_class(request["target"]))
        return {"node": node, "pid": os.getpid(), "actors": count}

    async def stop(self) -> None:
        if self.runtime is not None:
            await self.runtime.shutdown()
            self.runtime = None


class RayCluster:
    """A cluster whose actors Ray places. Same ``spawn`` / ``stop`` / ``status`` as
    :class:`Cluster`; this process is the head of the bus the actors join.

    Use :meth:`start` (``agentplex.cluster.init(backend="ray")`` calls it).
    """

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self._hosts: dict[str, Any] = {}
        self._where: dict[str, dict[str, Any]] = {}
        self._batches: dict[int, tuple[Sequence[str], list[Any]]] = {}
        self._batch_ids = itertools.count(1)
        self._host_cls: Any = None

    @classmethod
    async def start(cls, *, address: str | None = None, bind: str = "tcp://127.0.0.1:0",
                    runtime: Runtime | None = None, **ray_init: Any) -> RayCluster:
        """Connect to Ray (``address``, or a local Ray started with ``ray_init`` arguments
        such as ``num_cpus``, ``num_gpus``, ``resources``) and open the bus head (or use
        ``runtime``, already the head of a bus)."""
        try:
            import ray
        except ImportError as exc:
            raise ImportError("the Ray backend needs Ray: pip install 'agentplex[ray]'") from exc
        if not ray.is_initialized():
            ray_init.setdefault("include_dashboard", False)
            ray_init.setdefault("log_to_driver", False)
            ray.init(address=address, **ray_init)
        if runtime is None:
            runtime = connect(bind=bind)
        await runtime.start()
        self = cls(runtime)
        self._host_cls = ray.remote(_Host)
        return self

    async def checkpoint(self, name: str | None = None) -> None:
        """Nothing to do: Ray restarts a failed actor process itself (``max_restarts``),
        and the actor starts afresh."""

    def placement_of(self, name: str) -> Placement | None:
        """Where Ray put ``name``, as a :class:`Placement` (node id and GPU ids)."""
        where = self._where.get(name)
        if where is None:
            return None
        return Placement(0, where["node"], tuple(where["gpu_ids"]), Resources())

    @property
    def endpoint(self) -> str:
        return self.runtime.transport.endpoint  # type: ignore[attr-defined,no-any-return]

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
        """See :meth:`Cluster.spawn`; ``node`` is a Ray node id. A request no Ray node can
        ever hold is refused at once; one that cannot be placed within ``wait`` seconds
        (default 60) is refused then."""
        import ray

        path = target if isinstance(target, str) else class_path(target)
        name = name or f"{path.rpartition(':')[2].lower()}-{len(self._hosts) + 1}"
        if name in self._hosts:
            raise ActorExists(f"an actor named {name!r} already runs", actor=name)
        request = resources or Resources()
        custom = {label_resource(k, v): 0.001 for k, v in (labels or {}).items()}
        self._check_feasible(request, custom)
        options = self._options(request, 1, custom, node, placement, restart, max_restarts)
        spec = {"name": name, "target": path, "args": list(args), "kwargs": kwargs,
                "resources": request.model_dump()}
        host = self._host_cls.options(**options).remote(self.endpoint, spec)
        limit = wait if wait is not None else 60.0
        try:  # awaited, not ray.wait(): the host joins the bus this very loop serves
            ready = asyncio.wrap_future(host.ready.remote().future())
            self._where[name] = await asyncio.wait_for(ready, limit)
        except TimeoutError:
            ray.kill(host)
            raise Unschedulable(f"Ray did not place {name!r} ({request}) within {limit:g}s",
                                retryable=True) from None
        except BaseException:
            ray.kill(host)
            raise
        self._hosts[name] = host
        return self.runtime.ref(name)

    async def spawn_many(
        self,
        target: type[Actor] | str,
        args: Sequence[Sequence[Any]] | int,
        *,
        names: str | Sequence[str] | None = None,
        resources: Resources | None = None,
        placement: PlacementPolicy = "spread",
        labels: dict[str, str] | None = None,
        node: str | None = None,
        restart: RestartPolicy = "never",
        max_restarts: int = 3,
        wait: float | None = None,
        workers: int | None = None,
        **kwargs: Any,
    ) -> ActorRefs:
        """See :meth:`Cluster.spawn_many`. The batch is split over ``workers`` Ray actor
        processes (default: one per alive Ray node with ``spread``, one with ``pack``),
        each asking Ray for its actors' resources together and hosting them all; each
        worker gets one request. ``restart="on-failure"`` lets Ray restart a worker, whose
        actors start afresh."""
        import ray

        path = target if isinstance(target, str) else class_path(target)
        per_agent = None if isinstance(args, int) else [list(a) for a in args]
        count = args if isinstance(args, int) else len(args)
        if count < 1:
            raise ValueError("spawn_many needs at least one actor")
        batch_id = next(self._batch_ids)
        listed = batch_names(names, count, f"{path.rpartition(':')[2].lower()}-b{batch_id}-")
        taken = next((n for n in self._hosts if n in listed), None) or next(
            (n for ns, _ in self._batches.values() for n in listed[:1] if n in ns), None)
        if taken is not None:
            raise ActorExists(f"an actor named {taken!r} already runs", actor=taken)
        nodes: list[dict[str, Any]] = ray.nodes()  # type: ignore[no-untyped-call]
        alive = len([n for n in nodes if n.get("Alive")])
        n_workers = max(1, min(count, workers or (alive if placement == "spread" else 1)))
        request = resources or Resources()
        custom = {label_resource(k, v): 0.001 for k, v in (labels or {}).items()}
        bounds = [count * w // n_workers for w in range(n_workers + 1)]
        biggest = max(b - a for a, b in itertools.pairwise(bounds))
        self._check_feasible(request.model_copy(update={
            "cpus": request.cpus * biggest, "gpus": request.gpus * biggest,
            "gpu_memory": 0}), custom)
        hosts, calls = [], []
        for w, (a, b) in enumerate(itertools.pairwise(bounds)):
            options = self._options(request, b - a, custom, node, placement, restart,
                                    max_restarts)
            host = self._host_cls.options(**options).remote(
                self.endpoint, {"name": f"batch-{batch_id}-{w}"})
            hosts.append(host)
            calls.append(asyncio.wrap_future(host.start_many.remote({
                "batch": batch_id, "target": path, "kwargs": kwargs,
                "resources": request.model_dump(),
                "segments": [{"index": a, "names": names_to_wire(listed[a:b]),
                              "args": per_agent[a:b] if per_agent is not None else None,
                              "states": None,
                              "placement": {"id": 0, "node_id": "", "gpu_indices": []}}],
            }).future()))
        limit = wait if wait is not None else 60.0 + count / 10_000
        try:
            await asyncio.wait_for(asyncio.gather(*calls), limit)
        except BaseException as exc:
            for host in hosts:
                ray.kill(host)
            if isinstance(exc, TimeoutError):
                raise Unschedulable(f"Ray did not place {n_workers} workers for {count} "
                                    f"actors within {limit:g}s", retryable=True) from None
            raise
        self._batches[batch_id] = (listed, hosts)
        return ActorRefs(self.runtime, listed)

    def _options(self, request: Resources, k: int, custom: dict[str, float],
                 node: str | None, placement: PlacementPolicy, restart: RestartPolicy,
                 max_restarts: int) -> dict[str, Any]:
        """Ray actor options for a worker holding ``k`` actors of ``request`` each."""
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        options: dict[str, Any] = {"num_cpus": request.cpus * k, "num_gpus": request.gpus * k,
                                   "max_restarts": max_restarts if restart == "on-failure"
                                   else 0}
        if request.memory:
            options["memory"] = request.memory * k
        if custom:
            options["resources"] = custom
        if node is not None:
            options["scheduling_strategy"] = NodeAffinitySchedulingStrategy(node, soft=False)
        elif placement == "spread":
            options["scheduling_strategy"] = "SPREAD"
        return options

    async def stop_batch(self, refs: ActorRefs | Sequence[str]) -> None:
        """Stop every actor of the batch ``refs`` came from (and its Ray workers)."""
        import ray

        names = refs.names if isinstance(refs, ActorRefs) else refs
        for batch_id, (listed, hosts) in list(self._batches.items()):
            if len(names) and names[0] in listed:
                del self._batches[batch_id]
                for host in hosts:
                    try:
                        await host.stop.remote()
                    finally:
                        ray.kill(host)

    def _check_feasible(self, request: Resources, custom: dict[str, float]) -> None:
        import ray

        reasons = []
        for n in ray.nodes():  # type: ignore[no-untyped-call]
            if not n.get("Alive"):
                continue
            have = n.get("Resources", {})
            missing = [f"{k}" for k in custom if have.get(k, 0) < custom[k]]
            if request.cpus > have.get("CPU", 0):
                missing.append(f"{request.cpus:g} CPUs (has {have.get('CPU', 0):g})")
            if request.gpus > have.get("GPU", 0):
                missing.append(f"{request.gpus:g} GPUs (has {have.get('GPU', 0):g})")
            if not missing:
                return
            reasons.append(f"{n['NodeID'][:12]}: lacks {', '.join(missing)}")
        raise Unschedulable("no Ray node can ever hold this: " + "; ".join(reasons),
                            retryable=False)

    def where(self, name: str) -> dict[str, Any] | None:
        """The Ray node, GPU ids and ``CUDA_VISIBLE_DEVICES`` of actor ``name``."""
        return self._where.get(name)

    async def stop(self, name: str) -> None:
        import ray

        host = self._hosts.pop(name, None)
        self._where.pop(name, None)
        if host is not None:
            try:
                await host.stop.remote()
            finally:
                ray.kill(host)

    def status(self) -> list[dict[str, Any]]:
        """One entry per Ray node, in the shape of :meth:`Cluster.status`: CPUs, the GPUs
        (a share of 1 where one of our actors holds it), labels and actors."""
        import ray

        out = []
        for n in ray.nodes():  # type: ignore[no-untyped-call]
            here = {a: w for a, w in self._where.items() if w["node"] == n["NodeID"]}
            held = {g for w in here.values() for g in w["gpu_ids"]}
            have = n.get("Resources", {})
            out.append({
                "node": n["NodeID"], "alive": n.get("Alive", False),
                "cpus": f"{have.get('CPU', 0):g}",
                "gpus": [{"index": i, "name": "GPU (Ray)", "share": 1.0 if i in held else 0.0,
                          "memory": 0, "total": 0} for i in range(int(have.get("GPU", 0)))],
                "labels": dict(k.removeprefix("label:").split("=", 1) for k in have
                               if k.startswith("label:") and "=" in k),
                "actors": sorted(here),
            })
        return out

    async def close(self, *, shutdown_ray: bool = True, keep_runtime: bool = False) -> None:
        import ray

        for name in list(self._hosts):
            await self.stop(name)
        for listed, _ in list(self._batches.values()):
            await self.stop_batch(listed)
        if not keep_runtime:
            await self.runtime.shutdown()
        if shutdown_ray:
            ray.shutdown()
