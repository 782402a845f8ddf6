""":class:`Cluster`, the cluster as its head's process holds it: spawn actors by declared
resources onto nodes, and bring them back when a node dies; :func:`init` starts one in this
process."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import logging
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from ..runtime import (
    Actor,
    ActorExists,
    ActorRef,
    InProcessNetwork,
    InProcessTransport,
    Runtime,
)
from ..runtime.lowlevel import split_name
from ._batch import (
    ActorRefs,
    BatchSpec,
    RoundResult,
    Share,
    batch_names,
    share_request,
)
from ._detect import detect_node
from ._errors import NodeFailed, Unschedulable
from ._node import ActorSpec, LocalNode, NodeHandle, RestartPolicy, batch_args, target_path
from ._resources import NodeSpec, Resources
from ._rounds import call_round
from ._scheduler import Placement, PlacementPolicy, Scheduler
from ._serve import ServedChatModel, serve_model, served_status, unserve_model

__all__ = ["Cluster", "init"]

log = logging.getLogger("agentplex.cluster")
_P = TypeVar("_P")


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
        self.batches: dict[int, BatchSpec] = {}
        self._batch_ids = itertools.count(1)
        self._prefixes: dict[str, list[tuple[int, int, int]]] = {}
        self._listed: dict[str, tuple[int, int]] = {}
        self._node_changed = asyncio.Event()
        self.node_timeout = 10.0
        """Seconds a node may stay silent before :meth:`recover` stops waiting for it."""
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
        for batch in list(self.batches.values()):
            await self._batch_node_failed(batch, lost, node_id)
        self._node_changed.set()
        self._node_changed = asyncio.Event()
        return restarted

    async def _batch_node_failed(self, batch: BatchSpec, lost: set[int], node_id: str
                                 ) -> None:
        """Restart a batch's share on a dead node elsewhere, as one batch (one request per
        node that takes part), from the last checkpoint; or record it as lost."""
        dead = [s for s in batch.shares if s.placement.id in lost]
        if not dead:
            return
        batch.shares = [s for s in batch.shares if s.placement.id not in lost]
        ranges = [(s.start, s.stop) for s in dead]
        count = sum(b - a for a, b in ranges)
        if batch.restart != "on-failure" or batch.restarts >= batch.max_restarts:
            log.warning("%d actors of batch %d died with node %r and are not restarted",
                        count, batch.id, node_id)
            batch.lost.extend(ranges)
            return
        batch.restarts += 1
        if batch.node == node_id:
            batch.node = None
        try:
            placements = self.scheduler.place_many(batch.resources, count,
                                                   policy=batch.policy, labels=batch.labels,
                                                   node_id=batch.node)
            await self._start_shares(batch, placements, ranges)
        except (Unschedulable, NodeFailed) as exc:
            log.error("%d actors of batch %d could not be restarted: %s", count, batch.id,
                      exc)
            batch.lost.extend(ranges)
            return
        log.info("restarted %d actors of batch %d after losing %r", count, batch.id, node_id)

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
        path = target_path(target)
        name = name or f"{path.rpartition(':')[2].lower()}-{len(self.actors) + 1}"
        if self._taken(name):
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
        **kwargs: Any,
    ) -> ActorRefs:
        """Place and start many actors of one class at once; return their refs.

        ``args`` is the positional arguments of each actor (a list of lists), or how many
        actors to start without any; ``kwargs`` go to every actor. ``names`` is a prefix
        (``"player-"`` names them ``player-0``, ``player-1`` …; the default prefix is the
        class name and the batch number), or one name per actor. ``resources`` is what
        *each* actor needs. The scheduler places the whole batch at once (``spread``
        levels the load over the nodes, ``pack`` fills the fullest first), and each node
        gets one request for its share. A batch that does not fit is refused whole with
        the scheduler's reasons (:class:`Unschedulable`); a node failing while it starts
        its share raises :class:`NodeFailed` and leaves nothing of the batch running.
        With ``restart="on-failure"`` the share of a node that dies is restarted on the
        others as one batch, from the last :meth:`checkpoint`.
        """
        path = target_path(target)
        per_agent, count = batch_args(args)
        batch_id = next(self._batch_ids)
        default = f"{path.rpartition(':')[2].lower()}-{batch_id}-"
        listed = batch_names(names, count, default)
        self._check_free(listed)
        batch = BatchSpec(id=batch_id, target=path, names=listed, args=per_agent,
                          kwargs=kwargs, resources=resources or Resources(),
                          policy=placement, labels=labels, node=node, restart=restart,
                          max_restarts=max_restarts)
        placements = await self._place_batch(batch, count, wait)
        self._claim(batch)
        try:
            await self._start_shares(batch, placements, [(0, count)])
        except BaseException:
            self._unclaim(batch)
            raise
        return ActorRefs(self.runtime, listed)

    async def _place_batch(self, batch: BatchSpec, count: int, wait: float | None
                           ) -> list[Placement]:
        return await self._placing(functools.partial(
            self.scheduler.place_many, batch.resources, count, policy=batch.policy,
            labels=batch.labels, node_id=batch.node), wait)

    async def _placing(self, place: Callable[[], _P], wait: float | None) -> _P:
        """``place()``, tried again each time resources are freed while it raises a
        retryable :class:`Unschedulable`, for up to ``wait`` seconds (``None``: once)."""
        loop = asyncio.get_running_loop()
        deadline = None if wait is None else loop.time() + wait
        while True:
            try:
                return place()
            except Unschedulable as exc:
                remaining = None if deadline is None else deadline - loop.time()
                if not exc.retryable or remaining is None or remaining <= 0:
                    raise
                async with self._freed:
                    try:
                        await asyncio.wait_for(self._freed.wait(), remaining)
                    except TimeoutError:
                        raise exc from None

    async def _start_shares(self, batch: BatchSpec, placements: list[Placement],
                            ranges: list[tuple[int, int]]) -> None:
        """Lay the positions ``ranges`` over ``placements`` in order, and send each node
        one request for its shares. If any node fails, the others' new shares are stopped,
        every placement is released and :class:`NodeFailed` is raised."""
        shares: list[Share] = []
        todo = [list(r) for r in ranges]
        for p in placements:
            need = p.count
            while need:
                a, b = todo[0]
                take = min(need, b - a)
                shares.append(Share(p, a, a + take))
                need -= take
                if a + take == b:
                    todo.pop(0)
                else:
                    todo[0][0] = a + take
        per_node: dict[str, list[Share]] = {}
        for share in shares:
            per_node.setdefault(share.placement.node_id, []).append(share)
        nodes = list(per_node)
        handles = {n: self.nodes[n] for n in nodes}  # a node may be dropped meanwhile
        results = await asyncio.gather(
            *(handles[n].start_many(share_request(batch, per_node[n])) for n in nodes),
            return_exceptions=True)
        failed = [(n, r) for n, r in zip(nodes, results, strict=True)
                  if isinstance(r, BaseException)]
        if failed:
            for n, r in zip(nodes, results, strict=True):
                handle = handles[n]
                if not isinstance(r, BaseException) and handle is not None and handle.alive:
                    try:
                        await handle.stop_batch(batch.id)
                    except Exception as exc:
                        log.warning("could not undo batch %d on %r: %s", batch.id, n, exc)
            for p in placements:
                self.scheduler.release(p)
            await self._notify_freed()
            detail = "; ".join(f"{n}: {type(r).__name__}: {r}" for n, r in failed)
            count = sum(s.stop - s.start for s in shares)
            raise NodeFailed(f"{count} {batch.target} actors of batch {batch.id} not "
                             f"started: {detail}") from failed[0][1]
        batch.shares = sorted([*batch.shares, *shares], key=lambda s: s.start)

    def _check_free(self, names: Sequence[str]) -> None:
        """Raise :class:`ActorExists` when a name of ``names`` is taken."""
        from ..runtime import NameRange

        if isinstance(names, NameRange):
            for a, b, _ in self._prefixes.get(names.prefix, ()):
                if a < names.stop and names.start < b:
                    raise ActorExists(f"names {names.prefix}{max(a, names.start)}… are taken",
                                      actor=names[0])
            clash = next((n for n in self.actors if n in names), None)
            clash = clash or next((n for n in self._listed if n in names), None)
        else:
            clash = next((n for n in names if self._taken(n)), None)
        if clash is not None:
            raise ActorExists(f"an actor named {clash!r} already runs", actor=clash)

    def _claim(self, batch: BatchSpec) -> None:
        from ..runtime import NameRange

        self.batches[batch.id] = batch
        names = batch.names
        if isinstance(names, NameRange):
            self._prefixes.setdefault(names.prefix, []).append(
                (names.start, names.stop, batch.id))
        else:
            for i, n in enumerate(names):
                self._listed[n] = (batch.id, i)

    def _unclaim(self, batch: BatchSpec) -> None:
        from ..runtime import NameRange

        self.batches.pop(batch.id, None)
        names = batch.names
        if isinstance(names, NameRange):
            left = [r for r in self._prefixes.get(names.prefix, []) if r[2] != batch.id]
            if left:
                self._prefixes[names.prefix] = left
            else:
                self._prefixes.pop(names.prefix, None)
        else:
            for n in names:
                self._listed.pop(n, None)

    def _taken(self, name: str) -> bool:
        member = self._member(name)
        return name in self.actors or (member is not None and member[1] not in member[0].stopped)

    def _member(self, name: str) -> tuple[BatchSpec, int] | None:
        """The batch and position of ``name``, if a batch holds it."""
        hit = self._listed.get(name)
        if hit is not None:
            return self.batches[hit[0]], hit[1]
        parts = split_name(name) if self._prefixes else None
        if parts is None:
            return None
        for a, b, batch_id in self._prefixes.get(parts[0], ()):
            if a <= parts[1] < b:
                batch = self.batches[batch_id]
                return batch, parts[1] - a
        return None

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
        return await self._placing(functools.partial(
            self.scheduler.place, spec.resources, policy=spec.policy, labels=spec.labels,
            node_id=spec.node), wait)

    async def stop(self, name: str) -> None:
        """Stop an actor (one spawned alone or a member of a batch) and free its
        resources."""
        member = self._member(name) if name not in self.actors else None
        if member is not None:
            await self._stop_member(*member)
            return
        spec = self.actors.pop(name, None)
        if spec is None or spec.placement is None:
            return
        node = self.nodes.get(spec.placement.node_id)
        if node is not None and node.alive:
            await node.stop_actor(name)
        self.scheduler.release(spec.placement)
        await self._notify_freed()

    async def _stop_member(self, batch: BatchSpec, i: int) -> None:
        share = batch.share_of(i)
        if i in batch.stopped or share is None:
            return
        batch.stopped.add(i)
        node = self.nodes.get(share.placement.node_id)
        if node is not None and node.alive:
            await node.stop_actor(batch.names[i])
        self.scheduler.release(share.placement, 1)
        await self._notify_freed()

    async def stop_batch(self, refs: ActorRefs | Sequence[str]) -> None:
        """Stop every actor of the batch ``refs`` came from (one request per node)."""
        names = refs.names if isinstance(refs, ActorRefs) else refs
        member = self._member(names[0]) if len(names) else None
        if member is None:
            return
        batch = member[0]
        for node_id in {s.placement.node_id for s in batch.shares}:
            node = self.nodes.get(node_id)
            if node is not None and node.alive:
                await node.stop_batch(batch.id)
        for share in batch.shares:
            self.scheduler.release(share.placement)
        self._unclaim(batch)
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
        """Save the ``state_dict()`` of restartable actors (or of ``name``) at the head;
        a batch is checkpointed with one request per node."""
        if name is None or self._member(name) is not None:
            member = self._member(name) if name is not None else None
            batches = [member[0]] if member is not None else [
                b for b in self.batches.values() if b.restart == "on-failure"]
            await asyncio.gather(*(self._checkpoint_batch(b, timeout) for b in batches))
            if name is not None:
                return
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

    async def _checkpoint_batch(self, batch: BatchSpec, timeout: float) -> None:
        for node_id in {s.placement.node_id for s in batch.shares}:
            node = self.nodes.get(node_id)
            if node is None or not node.alive:
                continue
            try:
                for index, states in await node.batch_states(batch.id, timeout):
                    for k, state in enumerate(states):
                        if state is not None:
                            batch.states[index + k] = state
            except Exception as exc:
                log.warning("checkpoint of batch %d on %r failed: %s", batch.id, node_id, exc)

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
                "batches": {str(b.id): k for b in self.batches.values()
                            if (k := b.live_count(node_id))},
            })
        return out

    async def recover(self, names: Sequence[str]) -> dict[str, list[str]]:
        """Where actors whose calls failed stand now: ``running`` (on a node that answers:
        ask again; restarted ones included), ``lost`` (died with their node and not
        restarted) or ``unknown`` (no such actor). A node that does not answer is waited
        for until the cluster declares it dead and restarts its actors, at most about
        :attr:`node_timeout` seconds (a node still not declared dead then is only slow:
        its actors are reported ``running``)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.node_timeout + 5
        while True:
            changed = self._node_changed  # taken first: a death while we ping must wake us
            where: dict[str, list[str]] = {}
            out: dict[str, list[str]] = {"running": [], "lost": [], "unknown": []}
            for name in names:
                node = self._node_of(name)
                if node is None:
                    out["unknown"].append(name)
                elif node == "":
                    out["lost"].append(name)
                else:
                    where.setdefault(node, []).append(name)
            checks = {n: self.nodes[n].ping(min(5.0, self.node_timeout))
                      for n in where if n in self.nodes}
            answers = dict(zip(checks, await asyncio.gather(*checks.values()), strict=True))
            silent = [n for n in where if not answers.get(n)]
            for n, members in where.items():
                if answers.get(n):
                    out["running"].extend(members)
            if not silent or loop.time() >= deadline:
                for n in silent:  # slow, but not declared dead: their actors still run
                    out["running"].extend(where[n])
                return out
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), max(0.0, deadline - loop.time()))

    def _node_of(self, name: str) -> str | None:
        """The node of actor ``name``: ``""`` when lost with its node, ``None`` when no
        such actor."""
        spec = self.actors.get(name)
        if spec is not None:
            return spec.placement.node_id if spec.placement is not None else ""
        member = self._member(name)
        if member is None:
            return None
        batch, i = member
        if i in batch.stopped:
            return None
        share = batch.share_of(i)
        return share.placement.node_id if share is not None else ""

    async def call_round(self, refs: Sequence[ActorRef] | Sequence[str], message: Any, *,
                         timeout: float = 60.0, attempts: int = 3) -> RoundResult:
        """Call every actor of ``refs`` with ``message`` and gather the replies; actors
        whose node died meanwhile are asked again once restarted elsewhere, and those not
        restarted are reported by name in ``lost``. Never waits longer than ``attempts``
        rounds of ``timeout`` plus the time to declare a silent node dead."""
        return await call_round(self.runtime, self.recover, refs, message, timeout=timeout,
                                attempts=attempts)

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
        return await RayCluster.start(checkpoint_interval=checkpoint_interval, **ray_init)
    if backend != "local":
        raise ValueError(f"unknown cluster backend {backend!r} (use 'local' or 'ray')")
    cluster = await Cluster(checkpoint_interval=checkpoint_interval).start()
    await cluster.add_node(detect_node("local", gpus=gpus, gpu_memory=gpu_memory,
                                       labels=labels))
    return cluster
