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

With ``restart="on-failure"`` Ray restarts a worker process that dies (``max_restarts``)
and the head hosts every agent it held there again, from the agents' last checkpoint
(:meth:`RayCluster.checkpoint`, also taken every ``checkpoint_interval`` seconds).
Agents of a worker Ray does not restart are lost; :meth:`RayCluster.respawn` starts them
again, as created, in a new worker (what a simulation's driver does before it restores
them from its own checkpoint). Either way the calls waiting on a dead worker fail as soon
as Ray reports its death.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import Mapping, Sequence
from typing import Any

from ..bus import connect
from ..runtime import Actor, ActorExists, ActorRef, Runtime
from ._bus_node import tell_bus_dead
from ._errors import NodesMissing, NotSupported, Unschedulable
from ._node import target_path
from ._options import BatchOptions, SpawnOptions, split_options
from ._ray_host import RayHost, RayWorker
from ._refs import ActorRefs
from ._resources import NodeSpec, Resources
from ._rounds import RoundResult, call_round
from ._scheduler import Placement
from ._served_model import ServedChatModel
from ._shares import batch_args, batch_names, names_from_wire, names_to_wire, position_runs

__all__ = ["RayCluster", "label_resource"]

log = logging.getLogger("agentplex.cluster")


def label_resource(key: str, value: str) -> str:
    """The Ray custom resource standing for node label ``key=value``."""
    return f"label:{key}={value}"


class RayCluster:
    """A cluster whose actors Ray places. Same ``spawn`` / ``spawn_many`` / ``stop`` /
    ``status`` / ``checkpoint`` / ``recover`` / ``call_round`` as :class:`Cluster`; this
    process is the head of the bus the actors join.

    Use :meth:`start` (``agentplex.cluster.init(backend="ray")`` calls it).
    """

    def __init__(self, runtime: Runtime, *, checkpoint_interval: float | None = 5.0,
                 owns_runtime: bool = False, shutdown_ray: bool = True) -> None:
        self.runtime = runtime
        self._owns_runtime = owns_runtime
        self._shutdown_ray = shutdown_ray
        self.workers: dict[int, list[RayWorker]] = {}
        """The Ray workers of each batch (an actor spawned alone is a batch of one)."""
        self._singles: dict[str, int] = {}
        self._runs: dict[int, str] = {}
        """The run of each batch spawned for one."""
        self._batch_ids = itertools.count(1)
        self._respawned = itertools.count(1)
        """Numbers the workers :meth:`respawn` starts (their bus labels)."""
        self._host_cls: Any = None
        self._interval = checkpoint_interval
        self._checkpointer: asyncio.Task[None] | None = None
        self._changed = asyncio.Event()
        self.restart_timeout = 60.0
        """Seconds to wait for Ray to restart a dead worker before its agents are lost."""

    @classmethod
    async def start(cls, *, address: str | None = None, bind: str = "tcp://127.0.0.1:0",
                    runtime: Runtime | None = None, checkpoint_interval: float | None = 5.0,
                    shutdown_ray: bool = True, **ray_init: Any) -> RayCluster:
        """Connect to Ray (``address``, or a local Ray started with ``ray_init`` arguments
        such as ``num_cpus``, ``num_gpus``, ``resources``) and open the bus head (or use
        ``runtime``, already the head of a bus, which :meth:`close` then leaves running).
        ``shutdown_ray``: whether :meth:`close` shuts Ray down."""
        try:
            import ray
        except ImportError as exc:
            raise ImportError("the Ray backend needs Ray: pip install 'agentplex[ray]'") from exc
        if not ray.is_initialized():
            ray_init.setdefault("include_dashboard", False)
            ray_init.setdefault("log_to_driver", False)
            ray.init(address=address, **ray_init)
        owns = runtime is None
        if runtime is None:
            runtime = connect(bind=bind)
        await runtime.start()
        self = cls(runtime, checkpoint_interval=checkpoint_interval, owns_runtime=owns,
                   shutdown_ray=shutdown_ray)
        self._host_cls = ray.remote(RayHost)
        if checkpoint_interval:
            self._checkpointer = asyncio.ensure_future(self._checkpoint_every(checkpoint_interval))
        return self

    @property
    def endpoint(self) -> str:
        return self.runtime.transport.endpoint  # type: ignore[attr-defined,no-any-return]

    # -- spawning ----------------------------------------------------------------------------

    async def spawn(self, target: type[Actor] | str, *args: Any, name: str | None = None,
                    options: SpawnOptions | None = None,
                    kwargs: Mapping[str, Any] | None = None, **loose: Any) -> ActorRef:
        """See :meth:`Cluster.spawn`; ``node`` is a Ray node id. A request no Ray node can
        ever hold is refused at once; one that cannot be placed within ``wait`` seconds
        (default 60) is refused then."""
        opts, kwargs = split_options(SpawnOptions, options, loose, kwargs=kwargs,
                                     target=target)
        path = target_path(target)
        name = name or f"{path.rpartition(':')[2].lower()}-{len(self._singles) + 1}"
        if self._owner(name) is not None:
            raise ActorExists(f"an actor named {name!r} already runs", actor=name)
        request = opts.resources
        custom = {label_resource(k, v): 0.001 for k, v in (opts.labels or {}).items()}
        self._check_feasible(request, custom)
        batch_id = next(self._batch_ids)
        await self._launch(batch_id, path, [name], [list(args)], kwargs, opts,
                           [(0, 1, self._options(opts, 1, custom))],
                           opts.wait if opts.wait is not None else 60.0,
                           f"{name!r} ({request})")
        self._singles[name] = batch_id
        return self.runtime.ref(name)

    async def spawn_many(self, target: type[Actor] | str,
                         args: Sequence[Sequence[Any]] | int, *,
                         names: str | Sequence[str] | None = None,
                         options: SpawnOptions | None = None,
                         kwargs: Mapping[str, Any] | None = None, **loose: Any
                         ) -> ActorRefs:
        """See :meth:`Cluster.spawn_many`. The batch is split over ``workers`` Ray actor
        processes (default: one per alive Ray node with ``spread``, one with ``pack``),
        each asking Ray for its actors' resources together and hosting them all; each
        worker gets one request. With ``restart="on-failure"`` Ray restarts a worker that
        dies and every agent it hosted comes back from its last :meth:`checkpoint`."""
        import ray

        opts, kwargs = split_options(BatchOptions, options, loose, kwargs=kwargs,
                                     target=target)
        path = target_path(target)
        per_agent, count = batch_args(args)
        batch_id = next(self._batch_ids)
        listed = batch_names(names, count, f"{path.rpartition(':')[2].lower()}-b{batch_id}-")
        taken = next((n for n in self._singles if n in listed), None) or next(
            (n for n in listed[:1] if self._owner(n) is not None), None)
        if taken is not None:
            raise ActorExists(f"an actor named {taken!r} already runs", actor=taken)
        nodes: list[dict[str, Any]] = ray.nodes()  # type: ignore[no-untyped-call]
        alive = len([n for n in nodes if n.get("Alive")])
        spread = alive if opts.placement == "spread" else 1
        n_workers = max(1, min(count, opts.workers or spread))
        request = opts.resources
        custom = {label_resource(k, v): 0.001 for k, v in (opts.labels or {}).items()}
        bounds = [count * w // n_workers for w in range(n_workers + 1)]
        biggest = max(b - a for a, b in itertools.pairwise(bounds))
        self._check_feasible(request.model_copy(update={
            "cpus": request.cpus * biggest, "gpus": request.gpus * biggest,
            "gpu_memory": 0}), custom)
        parts = [(a, b, self._options(opts, b - a, custom))
                 for a, b in itertools.pairwise(bounds)]
        await self._launch(batch_id, path, listed, per_agent, kwargs, opts, parts,
                           opts.wait if opts.wait is not None else 60.0 + count / 10_000,
                           f"{n_workers} workers for {count} actors")
        return ActorRefs(self.runtime, listed)

    async def _launch(self, batch_id: int, path: str, listed: Sequence[str],
                      per_agent: list[list[Any]] | None, kwargs: dict[str, Any],
                      opts: SpawnOptions, parts: list[tuple[int, int, dict[str, Any]]],
                      limit: float, what: str) -> None:
        """Start one Ray worker per ``(start, stop, options)`` of ``parts``, each hosting
        positions ``start:stop`` of the batch; all or nothing within ``limit`` seconds."""
        import ray

        made = []
        for k, (a, b, options) in enumerate(parts):
            handle = self._host_cls.options(**options).remote(self.endpoint,
                                                              f"{batch_id}-{k}")
            start = {"batch": batch_id, "target": path, "kwargs": kwargs,
                     "options": opts.model_dump(),
                     "segments": [{"index": a, "names": names_to_wire(listed[a:b]),
                                   "args": per_agent[a:b] if per_agent is not None else None,
                                   "states": None,
                                   "placement": {"id": 0, "node_id": "", "gpu_indices": []}}]}
            made.append(RayWorker(handle, batch_id, listed[a:b], start,
                                  restartable=opts.restart == "on-failure"))
        calls = [asyncio.wrap_future(w.handle.host.remote(w.request).future()) for w in made]
        try:  # awaited, not ray.wait(): the hosts join the bus this very loop serves
            wheres = await asyncio.wait_for(asyncio.gather(*calls), limit)
        except BaseException as exc:
            for w in made:
                ray.kill(w.handle)
            if isinstance(exc, TimeoutError):
                raise Unschedulable(f"Ray did not place {what} within {limit:g}s",
                                    retryable=True) from None
            raise
        for w, where in zip(made, wheres, strict=True):
            w.where = where
            w.watch(self.restart_timeout, self._note_change, self._worker_died)
        self.workers[batch_id] = made
        if opts.run is not None:
            self._runs[batch_id] = opts.run

    def _options(self, opts: SpawnOptions, k: int, custom: dict[str, float]
                 ) -> dict[str, Any]:
        """Ray actor options for a worker holding ``k`` actors of ``opts`` each."""
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        request = opts.resources
        options: dict[str, Any] = {"num_cpus": request.cpus * k, "num_gpus": request.gpus * k,
                                   "max_restarts": opts.max_restarts
                                   if opts.restart == "on-failure" else 0}
        if request.memory:
            options["memory"] = request.memory * k
        if custom:
            options["resources"] = custom
        if opts.node is not None:
            options["scheduling_strategy"] = NodeAffinitySchedulingStrategy(opts.node,
                                                                            soft=False)
        elif opts.placement == "spread":
            options["scheduling_strategy"] = "SPREAD"
        return options

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

    # -- where actors are --------------------------------------------------------------------

    def _owner(self, name: str) -> RayWorker | None:
        """The Ray worker hosting ``name`` (alive, restarting or lost), or ``None``."""
        batch_id = self._singles.get(name)
        if batch_id is not None:
            return self.workers[batch_id][0]
        return next((w for ws in self.workers.values() for w in ws if name in w.names), None)

    def where(self, name: str) -> dict[str, Any] | None:
        """The Ray node, GPU ids, ``CUDA_VISIBLE_DEVICES`` and process id of the worker
        hosting ``name``."""
        worker = self._owner(name)
        return worker.where if worker is not None and not worker.lost else None

    async def placement_of(self, name: str) -> Placement | None:
        """Where Ray put ``name``, as a :class:`Placement` (node id and GPU ids)."""
        where = self.where(name)
        if where is None:
            return None
        return Placement(0, where["node"], tuple(where["gpu_ids"]), Resources())

    async def status(self) -> list[dict[str, Any]]:
        """One entry per Ray node, in the shape of :meth:`Cluster.status`: CPUs, the GPUs
        (a share of 1 where one of our actors holds it), labels, actors spawned alone and
        the batches' agents."""
        import ray

        out = []
        live = [w for ws in self.workers.values() for w in ws if not w.lost]
        for n in ray.nodes():  # type: ignore[no-untyped-call]
            here = [w for w in live if w.where.get("node") == n["NodeID"]]
            held = {g for w in here for g in w.where["gpu_ids"]}
            have = n.get("Resources", {})
            batches: dict[str, int] = {}
            for w in here:
                if w.names[0] not in self._singles:
                    batches[str(w.batch)] = batches.get(str(w.batch), 0) + len(w.names)
            out.append({
                "node": n["NodeID"], "alive": n.get("Alive", False),
                "cpus": f"{have.get('CPU', 0):g}",
                "gpus": [{"index": i, "name": "GPU (Ray)", "share": 1.0 if i in held else 0.0,
                          "memory": 0, "total": 0} for i in range(int(have.get("GPU", 0)))],
                "labels": dict(k.removeprefix("label:").split("=", 1) for k in have
                               if k.startswith("label:") and "=" in k),
                "actors": sorted(w.names[0] for w in here if w.names[0] in self._singles),
                "batches": batches,
                "runs": {b: self._runs[int(b)] for b in batches if int(b) in self._runs},
            })
        return out

    # -- state and failures ------------------------------------------------------------------

    async def checkpoint(self, name: str | None = None, *, timeout: float = 10.0) -> None:
        """Save the ``state_dict()`` of every restartable agent (or of ``name``'s worker)
        at the head: one request per Ray worker. A worker Ray restarts hosts its agents
        again from these."""
        if name is not None:
            owner = self._owner(name)
            todo = [owner] if owner is not None else []
        else:
            todo = [w for ws in self.workers.values() for w in ws if w.restartable]
        todo = [w for w in todo if not w.lost and w.hosting.is_set()]
        results = await asyncio.gather(*(w.checkpoint(timeout) for w in todo),
                                       return_exceptions=True)
        for w, r in zip(todo, results, strict=True):
            if isinstance(r, Exception):
                log.warning("checkpoint of %d agents (%s…) failed: %s", len(w.names),
                            w.names[0], r)

    async def _checkpoint_every(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            await self.checkpoint()

    def _worker_died(self, worker: RayWorker, why: str) -> None:
        """Ray says ``worker``'s process died: the calls waiting on its agents fail now,
        not after the bus's heartbeat silence."""
        node = worker.where.get("bus_node")
        if node:
            tell_bus_dead(self.runtime, node, f"Ray worker {worker.where.get('pid')} hosting "
                                              f"{len(worker.names)} agents died ({why})")

    def _note_change(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def recover(self, names: Sequence[str], *, timeout: float | None = None
                      ) -> dict[str, list[str]]:  # one more keyword than ClusterAPI
        """Where actors whose calls failed stand now: ``running`` (ask again; those Ray
        restarted included), ``lost`` (their worker died and was not restarted) or
        ``unknown``. A worker that does not answer Ray is waited for while Ray restarts it
        and the head hosts its agents again, at most ``timeout`` seconds (default
        :attr:`restart_timeout` plus 10)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (self.restart_timeout + 10 if timeout is None else timeout)
        while True:
            changed = self._changed  # taken first: a change while we ask must wake us
            out: dict[str, list[str]] = {"running": [], "lost": [], "unknown": []}
            groups: dict[int, tuple[RayWorker, list[str]]] = {}
            for name in names:
                worker = self._owner(name)
                if worker is None:
                    out["unknown"].append(name)
                elif worker.lost:
                    out["lost"].append(name)
                else:
                    groups.setdefault(id(worker), (worker, []))[1].append(name)
            answers = await asyncio.gather(*(self._answers(w, deadline - loop.time())
                                             for w, _ in groups.values()))
            pending = [m for (_, m), ok in zip(groups.values(), answers, strict=True)
                       if not ok]
            for (_, members), ok in zip(groups.values(), answers, strict=True):
                if ok:
                    out["running"].extend(members)
            if not pending or loop.time() >= deadline:
                for members in pending:  # still restarting at the deadline: not lost yet
                    out["running"].extend(members)
                return out
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), max(0.0, deadline - loop.time()))

    async def _answers(self, worker: RayWorker, limit: float) -> bool:
        """Whether ``worker`` hosts its agents now in the process the head knows."""
        import ray

        if not worker.hosting.is_set():
            return False
        call = worker.handle.pid.options(max_task_retries=0).remote()
        try:
            pid = await asyncio.wait_for(asyncio.wrap_future(call.future()),
                                         max(0.1, min(5.0, limit)))
        except (TimeoutError, ray.exceptions.RayError):
            return False
        return bool(pid == worker.where.get("pid"))

    async def call_round(self, refs: Sequence[ActorRef] | Sequence[str], message: Any, *,
                         timeout: float = 60.0, attempts: int = 3) -> RoundResult:
        """See :meth:`Cluster.call_round`: agents whose Ray worker died meanwhile are asked
        again once Ray restarted it and they are back from their checkpoint."""
        return await call_round(self.runtime, self.recover, refs, message, timeout=timeout,
                                attempts=attempts)

    async def respawn(self, names: Sequence[str]) -> dict[str, list[str]]:
        """See :meth:`Cluster.respawn`: the lost agents of ``names`` (members of a batch
        whose Ray worker died and was not restarted by Ray) started again as created, in
        a new Ray worker per dead one (placed by Ray as the batch was; at most
        :attr:`restart_timeout` seconds). ``nodes``: the Ray nodes (first 12 characters
        of their ids) they run on now."""
        out: dict[str, list[str]] = {"restarted": [], "nodes": [], "failed": []}
        wanted: dict[int, tuple[RayWorker, set[str]]] = {}
        for name in names:
            worker = self._owner(name)
            if worker is None or not worker.lost or name in self._singles:
                out["failed"].append(name)
            else:
                wanted.setdefault(id(worker), (worker, set()))[1].add(name)
        nodes: set[str] = set()
        for dead, chosen in wanted.values():
            try:
                worker = await self._rehost_lost(dead, chosen)
            except Exception as exc:
                log.error("%d lost agents of batch %d (%s…) could not be started again: %s",
                          len(chosen), dead.batch, min(chosen), exc)
                out["failed"].extend(n for n in dead.names if n in chosen)
                continue
            nodes.add(str(worker.where["node"])[:12])
            out["restarted"].extend(worker.names)
        out["nodes"] = sorted(nodes)
        return out

    async def _rehost_lost(self, dead: RayWorker, chosen: set[str]) -> RayWorker:
        """A new Ray worker hosting the agents ``chosen`` of the lost worker ``dead``,
        as created; ``dead`` keeps the others (still lost)."""
        import ray

        segments = []
        for seg in dead.request["segments"]:
            seg_names = names_from_wire(seg["names"])
            picks = [k for k in range(len(seg_names)) if seg_names[k] in chosen]
            for a, b in position_runs(picks):
                segments.append({**seg, "index": seg["index"] + a,
                                 "names": names_to_wire(seg_names[a:b]),
                                 "args": seg["args"][a:b] if seg.get("args") else None,
                                 "states": None,
                                 "placement": {"id": 0, "node_id": "", "gpu_indices": []}})
        # a whole range (a worker's agents all lost: the usual case) stays one
        picked: Sequence[str] = (names_from_wire(segments[0]["names"]) if len(segments) == 1
                                 else [n for seg in segments
                                       for n in names_from_wire(seg["names"])])
        request = {**dead.request, "segments": segments}
        opts = BatchOptions.model_validate(request["options"])
        if opts.node is not None and opts.node not in {
                n["NodeID"] for n in ray.nodes() if n.get("Alive")}:  # type: ignore[no-untyped-call]
            opts = opts.model_copy(update={"node": None})
        custom = {label_resource(k, v): 0.001 for k, v in (opts.labels or {}).items()}
        handle = self._host_cls.options(**self._options(opts, len(picked), custom)).remote(
            self.endpoint, f"{dead.batch}-r{next(self._respawned)}")
        worker = RayWorker(handle, dead.batch, picked, request, restartable=dead.restartable)
        try:
            worker.where = await asyncio.wait_for(
                asyncio.wrap_future(handle.host.remote(request).future()),
                self.restart_timeout)
        except BaseException:
            ray.kill(handle)
            raise
        worker.watch(self.restart_timeout, self._note_change, self._worker_died)
        workers = self.workers.setdefault(dead.batch, [])
        if len(picked) == len(dead.names):
            if dead in workers:
                workers.remove(dead)
        else:
            dead.names = [n for n in dead.names if n not in chosen]
        workers.append(worker)
        return worker

    # -- stopping ----------------------------------------------------------------------------

    async def _stop_workers(self, batch_id: int) -> None:
        import ray

        self._runs.pop(batch_id, None)
        for worker in self.workers.pop(batch_id, ()):
            if worker.watcher is not None:
                worker.watcher.cancel()
            try:
                if not worker.lost:
                    await asyncio.wait_for(
                        asyncio.wrap_future(worker.handle.stop.remote().future()), 30)
            except Exception as exc:
                log.warning("Ray worker of batch %d did not stop cleanly: %s", batch_id, exc)
            finally:
                ray.kill(worker.handle)

    async def stop_batch(self, refs: ActorRefs | Sequence[str]) -> None:
        """Stop every actor of the batch ``refs`` came from (and its Ray workers)."""
        names = refs.names if isinstance(refs, ActorRefs) else refs
        owner = self._owner(names[0]) if len(names) else None
        if owner is not None:
            await self._stop_workers(owner.batch)

    async def stop(self, name: str) -> None:
        """Stop an actor spawned alone (and its Ray worker)."""
        batch_id = self._singles.pop(name, None)
        if batch_id is not None:
            await self._stop_workers(batch_id)

    async def wait_for_nodes(self, count: int, *, timeout: float = 60.0) -> int:
        """Wait until Ray counts at least ``count`` alive nodes; return how many."""
        import ray

        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            nodes: list[dict[str, Any]] = ray.nodes()  # type: ignore[no-untyped-call]
            alive = len([n for n in nodes if n.get("Alive")])
            if alive >= count:
                return alive
            if loop.time() >= deadline:
                raise NodesMissing(f"{alive} of {count} Ray nodes alive within {timeout:g}s",
                                   joined=alive)
            await asyncio.sleep(min(0.5, max(0.0, deadline - loop.time())))

    async def join(self, spec: NodeSpec) -> None:
        """Refused: on this backend machines join Ray, not the head."""
        raise NotSupported(f"node {spec.id!r}: this head places actors through Ray; "
                           "start the machine as a Ray node instead")

    async def serve(self, model: str, *, engine: str = "agentplex",
                    resources: Resources | None = None, replicas: int = 1,
                    stream: bool = False, **options: Any) -> ServedChatModel:
        """Refused: serving engines needs the agentplex backend."""
        raise NotSupported("serving engines needs the agentplex backend, not Ray")

    async def unserve(self, name: str) -> None:
        """Nothing is served on Ray, so there is nothing to stop."""

    async def served_status(self) -> list[dict[str, Any]]:
        """Nothing is served on Ray: always empty."""
        return []

    async def close(self) -> None:
        """Stop every batch's Ray workers; shut down the bus runtime if this cluster
        opened it, and Ray unless started with ``shutdown_ray=False``."""
        import ray

        if self._checkpointer is not None:
            self._checkpointer.cancel()
            self._checkpointer = None
        for batch_id in list(self.workers):
            await self._stop_workers(batch_id)
        self._singles.clear()
        if self._owns_runtime:
            await self.runtime.shutdown()
        if self._shutdown_ray:
            ray.shutdown()
