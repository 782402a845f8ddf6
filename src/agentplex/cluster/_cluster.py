""":class:`Cluster`, the cluster as its head's process holds it: spawn actors by declared
resources onto nodes, and bring them back when a node dies."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import logging
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

from ..bus import SpawnRefused
from ..runtime import (
    Actor,
    ActorExists,
    ActorRef,
    InProcessNetwork,
    InProcessTransport,
    NameRange,
    Runtime,
)
from ..runtime.lowlevel import split_name
from ..tracing.lowlevel import names_of, run_event
from ._bus_node import BusNode, tell_bus_dead
from ._errors import NodeFailed, NodesMissing, Unschedulable
from ._node import ActorSpec, LocalNode, NodeHandle, target_path
from ._options import BatchOptions, SpawnOptions, split_options
from ._refs import ActorRefs
from ._resources import NodeSpec, Resources
from ._rounds import RoundResult, call_round
from ._scheduler import Placement, Scheduler
from ._serve import ServedChatModel, ServedModels
from ._shares import (
    BatchSpec,
    Share,
    batch_args,
    batch_names,
    position_runs,
    share_request,
)

__all__ = ["Cluster"]

log = logging.getLogger("agentplex.cluster")
_P = TypeVar("_P")


class Cluster:
    """The head's view of the cluster: nodes, placement and the actors placed on them.

    Spawning goes through the :class:`Scheduler`; an actor whose request cannot fit now is
    queued (up to ``wait`` seconds) or refused with the scheduler's reason. Actors spawned
    with ``restart="on-failure"`` come back on another node when theirs dies, from their
    last checkpoint (:meth:`checkpoint`, also taken every ``checkpoint_interval`` seconds).

    Nodes in other processes :meth:`join` over the bus; each is pinged every
    ``ping_interval`` seconds and declared dead after ``dead_after`` seconds of silence.
    Use :func:`~agentplex.cluster.init` for a one-machine cluster in this process.
    """

    def __init__(self, runtime: Runtime | None = None, *,
                 network: InProcessNetwork | None = None,
                 checkpoint_interval: float | None = 5.0, ping_interval: float = 1.0,
                 dead_after: float = 10.0) -> None:
        self.network = network or InProcessNetwork()
        self._owns_runtime = runtime is None
        self.runtime = runtime or Runtime(InProcessTransport(self.network))
        self.scheduler = Scheduler()
        self.nodes: dict[str, NodeHandle] = {}
        self.actors: dict[str, ActorSpec] = {}
        self.served = ServedModels(self, self._gpu_totals)
        """The served models (:meth:`serve`)."""
        self.batches: dict[int, BatchSpec] = {}
        self._batch_ids = itertools.count(1)
        self._prefixes: dict[str, list[tuple[int, int, int]]] = {}
        self._listed: dict[str, tuple[int, int]] = {}
        self._node_changed = asyncio.Event()
        self.ping_interval = ping_interval
        self.dead_after = dead_after
        self.node_timeout = dead_after + 2 * ping_interval
        """Seconds a node may stay silent before :meth:`recover` stops waiting for it."""
        self._freed = asyncio.Condition()
        self._interval = checkpoint_interval
        self._checkpointer: asyncio.Task[None] | None = None
        self._watcher: asyncio.Task[None] | None = None

    # -- lifecycle ---------------------------------------------------------------------

    async def start(self) -> Cluster:
        await self.runtime.start()
        if self._interval and self._checkpointer is None:
            self._checkpointer = asyncio.ensure_future(self._checkpoint_every(self._interval))
        return self

    async def close(self) -> None:
        """Stop checkpoints and node checks, close the nodes in this process, and shut
        down the runtime if this cluster made it (a head's manager keeps its own)."""
        for task in (self._checkpointer, self._watcher):
            if task is not None:
                task.cancel()
        self._checkpointer = self._watcher = None
        for node in list(self.nodes.values()):
            if isinstance(node, LocalNode) and node.alive:
                await node.close()
        if self._owns_runtime:
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
        self._nodes_changed()
        return handle

    async def join(self, spec: NodeSpec) -> None:
        """Add the node ``spec`` of another process (its agent answers on the bus at
        ``node:<id>``), and check on it from now on."""
        await self.add_node(BusNode(spec, self.runtime))
        if self._watcher is None:
            self._watcher = asyncio.ensure_future(self._watch_nodes())

    async def wait_for_nodes(self, count: int, *, timeout: float = 60.0) -> int:
        """Wait until at least ``count`` nodes are alive; return how many are. Raises
        :class:`NodesMissing` after ``timeout`` seconds."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            changed = self._node_changed
            alive = sum(1 for n in self.nodes.values() if n.alive)
            if alive >= count:
                return alive
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise NodesMissing(f"{alive} of {count} nodes joined within {timeout:g}s",
                                   joined=alive)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), remaining)

    def _nodes_changed(self) -> None:
        self._node_changed.set()
        self._node_changed = asyncio.Event()

    def _gpu_totals(self) -> dict[str, int]:
        return {f"{n.id}:{g.index}": g.total_memory
                for n in self.nodes.values() for g in n.spec.gpus}

    async def _watch_nodes(self) -> None:
        """Ping every node each interval; one that answered none of the pings sent in the
        last ``dead_after`` seconds is dead. A node's silence counts from its last answer,
        or from the first ping it was sent: one killed before it ever answered is declared
        as soon as any other (counting from its first failed ping instead took up to twice
        ``dead_after``). Each ping waits up to ``dead_after``: a node slow to answer under
        load, but answering, lives."""
        loop = asyncio.get_running_loop()
        last_ok: dict[str, float] = {}
        while True:
            await asyncio.sleep(self.ping_interval)
            nodes = [n for n in self.nodes.values() if isinstance(n, BusNode)]
            for gone in last_ok.keys() - {n.id for n in nodes}:
                del last_ok[gone]  # a node that leaves and joins again starts afresh
            sent = loop.time()
            answers = await asyncio.gather(*(n.ping(self.dead_after) for n in nodes))
            now = loop.time()
            for node, ok in zip(nodes, answers, strict=True):
                if ok or node.busy:
                    last_ok[node.id] = now
                    continue
                silent = now - last_ok.setdefault(node.id, sent)
                if silent < self.dead_after:
                    continue
                del last_ok[node.id]
                await self._declare_dead(node, f"node {node.id!r} did not answer the "
                                               f"cluster's pings for {silent:.1f}s")

    async def node_exited(self, node_id: str, reason: str) -> bool:
        """What launched node ``node_id`` says its process ended (``reason``): once it
        does not answer a ping either (within a second), it is dead now, as after
        ``dead_after`` seconds of silence. Whether it was declared dead (``False``: no
        such node alive here, or it answered)."""
        node = self.nodes.get(node_id)
        if not isinstance(node, BusNode) or not node.alive or await node.ping(1.0):
            return False
        await self._declare_dead(node, reason)
        return True

    async def _declare_dead(self, node: BusNode, reason: str) -> None:
        """Node ``node`` is dead: its actors restarted elsewhere or recorded lost, and the
        bus told — its heartbeat may wait longer (a run's ``--lost-after``), and until it
        does, calls would still go to the dead node, and to its actors' names once they
        run elsewhere."""
        if not node.alive:  # already declared (the pings and its launcher at once)
            return
        log.warning("%s; restarting its actors", reason)
        node.mark_dead()
        tell_bus_dead(self.runtime, node.id, reason)
        restarted = await self.node_failed(node.id)
        log.info("restarted %s after losing %r", restarted, node.id)

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
            options = spec.options
            if options.restart != "on-failure" or spec.restarts >= options.max_restarts:
                log.warning("actor %r died with node %r and is not restarted", spec.name,
                            node_id)
                del self.actors[spec.name]
                continue
            spec.restarts += 1
            if options.node == node_id:  # pinned to the dead node: labels still apply
                spec.options = options.model_copy(update={"node": None})
            try:
                await self._place_and_start(spec, wait=None)
            except Unschedulable as exc:
                log.error("actor %r could not be restarted: %s", spec.name, exc.reason)
                del self.actors[spec.name]
                continue
            restarted.append(spec.name)
            run_event("rollback", node=node_id, agents=1, names=[spec.name],
                      checkpoint=spec.checkpoints or None,
                      checkpointed_at=spec.checkpointed_at,
                      to_nodes=[spec.placement.node_id] if spec.placement else [])
        for batch in list(self.batches.values()):
            await self._batch_node_failed(batch, lost, node_id)
        self._nodes_changed()
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
        options = batch.options
        if options.restart != "on-failure" or batch.restarts >= options.max_restarts:
            log.warning("%d actors of batch %d died with node %r and are not restarted",
                        count, batch.id, node_id)
            batch.lost.extend(ranges)
            run_event("lost", node=node_id, agents=count, batch=batch.id,
                      names=names_of(batch.names, ranges))
            return
        batch.restarts += 1
        if options.node == node_id:
            batch.options = options = options.model_copy(update={"node": None})
        try:
            placements = self.scheduler.place_many(options.resources, count,
                                                   policy=options.placement,
                                                   labels=options.labels,
                                                   node_id=options.node)
            await self._start_shares(batch, placements, ranges)
        except (Unschedulable, NodeFailed) as exc:
            log.error("%d actors of batch %d could not be restarted: %s", count, batch.id,
                      exc)
            batch.lost.extend(ranges)
            run_event("lost", node=node_id, agents=count, batch=batch.id,
                      names=names_of(batch.names, ranges))
            return
        log.info("restarted %d actors of batch %d after losing %r", count, batch.id, node_id)
        run_event("rollback", node=node_id, agents=count, batch=batch.id,
                  names=names_of(batch.names, ranges),
                  checkpoint=batch.checkpoints or None, checkpointed_at=batch.checkpointed_at,
                  to_nodes=sorted({p.node_id for p in placements}))

    # -- actors --------------------------------------------------------------------------

    async def spawn(self, target: type[Actor] | str, *args: Any, name: str | None = None,
                    options: SpawnOptions | None = None,
                    kwargs: Mapping[str, Any] | None = None, **loose: Any) -> ActorRef:
        """Place and start an actor; return its ref (reachable by name from anywhere).

        ``target`` is an actor class or its import path; ``args`` / ``kwargs`` must be
        msgpack-able so the actor can be created on any node. Spawn options
        (:class:`SpawnOptions`: ``resources``, ``placement``, ``labels``, ``node``,
        ``restart``, ``max_restarts``, ``wait``, ...) come as ``options``, the actor's
        keyword arguments as ``kwargs`` (any names). Loose keywords are split: one naming
        an option is an option, the others go to the actor (see
        :func:`~agentplex.cluster.lowlevel.split_options`; an ambiguous one is refused).
        """
        opts, kwargs = split_options(SpawnOptions, options, loose, kwargs=kwargs,
                                     target=target)
        path = target_path(target)
        name = name or f"{path.rpartition(':')[2].lower()}-{len(self.actors) + 1}"
        if self._taken(name):
            raise ActorExists(f"an actor named {name!r} already runs", actor=name)
        spec = ActorSpec(name=name, target=path, args=args, kwargs=kwargs, options=opts)
        self.actors[name] = spec
        try:
            await self._place_and_start(spec, wait=opts.wait)
        except BaseException:
            self.actors.pop(name, None)
            raise
        return self.runtime.ref(name)

    async def spawn_many(self, target: type[Actor] | str,
                         args: Sequence[Sequence[Any]] | int, *,
                         names: str | Sequence[str] | None = None,
                         options: SpawnOptions | None = None,
                         kwargs: Mapping[str, Any] | None = None, **loose: Any
                         ) -> ActorRefs:
        """Place and start many actors of one class at once; return their refs.

        ``args`` is the positional arguments of each actor (a list of lists), or how many
        actors to start without any; ``kwargs`` (a dict) go to every actor's constructor
        whatever their names (loose keywords not naming an option do too). ``names`` is a prefix
        (``"player-"`` names them ``player-0``, ``player-1`` …; the default prefix is the
        class name and the batch number), or one name per actor. Options are
        :class:`BatchOptions` (as ``options`` or loose keywords); ``resources`` is what *each*
        actor needs. The scheduler places the whole batch at once (``spread``
        levels the load over the nodes, ``pack`` fills the fullest first), and each node
        gets one request for its share. A batch that does not fit is refused whole with
        the scheduler's reasons (:class:`Unschedulable`); a node failing while it starts
        its share raises :class:`NodeFailed` and leaves nothing of the batch running.
        With ``restart="on-failure"`` the share of a node that dies is restarted on the
        others as one batch, from the last :meth:`checkpoint`.
        """
        opts, kwargs = split_options(BatchOptions, options, loose, kwargs=kwargs,
                                     target=target)
        path = target_path(target)
        per_agent, count = batch_args(args)
        batch_id = next(self._batch_ids)
        default = f"{path.rpartition(':')[2].lower()}-{batch_id}-"
        listed = batch_names(names, count, default)
        self._check_free(listed)
        batch = BatchSpec(id=batch_id, target=path, names=listed, args=per_agent,
                          kwargs=kwargs, options=opts)
        placements = await self._place_batch(batch, count, opts.wait)
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
            self.scheduler.place_many, batch.options.resources, count,
            policy=batch.options.placement, labels=batch.options.labels,
            node_id=batch.options.node), wait)

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
                            ranges: list[tuple[int, int]], *, states: bool = True) -> None:
        """Lay the positions ``ranges`` over ``placements`` in order, and send each node
        one request for its shares (with the batch's checkpointed states, unless not
        ``states``). If any node fails, the others' new shares are stopped, every
        placement is released and :class:`NodeFailed` is raised."""
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
            *(handles[n].start_many(share_request(batch, per_node[n], states=states))
              for n in nodes),
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
            if all(isinstance(r, SpawnRefused) for _, r in failed):  # no node failed
                raise SpawnRefused(f"{count} {batch.target} actors of batch {batch.id} "
                                   f"refused: {detail}") from failed[0][1]
            raise NodeFailed(f"{count} {batch.target} actors of batch {batch.id} not "
                             f"started: {detail}") from failed[0][1]
        batch.shares = sorted([*batch.shares, *shares], key=lambda s: s.start)

    def _check_free(self, names: Sequence[str]) -> None:
        """Raise :class:`ActorExists` when a name of ``names`` is taken."""
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
        self.batches[batch.id] = batch
        names = batch.names
        if isinstance(names, NameRange):
            self._prefixes.setdefault(names.prefix, []).append(
                (names.start, names.stop, batch.id))
        else:
            for i, n in enumerate(names):
                self._listed[n] = (batch.id, i)

    def _unclaim(self, batch: BatchSpec) -> None:
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
            self.scheduler.place, spec.options.resources, policy=spec.options.placement,
            labels=spec.options.labels, node_id=spec.options.node), wait)

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
        ``sglang`` or ``llama.cpp``), each placed by ``resources`` (default one CPU) and
        supervised on its node, and return a chat model that spreads calls over them.

        ``resources.gpus`` is the tensor-parallel degree and ``gpu_memory`` / the GPU's
        memory the engine's memory share. Options: ``name`` (default ``served-<model>``),
        ``dtype``, ``max_model_len``, ``api_key``, ``model_options`` (agentplex engine),
        ``engine_args``, ``host``, ``placement`` (default ``spread``), ``labels``,
        ``ready_timeout``, ``max_restarts``, ``wait``. Clients name the model as ``model``.
        Release with :meth:`unserve`.
        """
        return await self.served.serve(model, engine=engine, resources=resources,
                                       replicas=replicas, stream=stream, **options)

    async def unserve(self, name: str) -> None:
        """Stop every replica of the served model ``name``."""
        await self.served.unserve(name)

    async def served_status(self) -> list[dict[str, Any]]:
        """The served models and the node, GPUs, URL and state of each replica."""
        return await self.served.status()

    # -- state -----------------------------------------------------------------------------

    async def checkpoint(self, name: str | None = None, *, timeout: float = 10.0) -> None:
        """Save the ``state_dict()`` of restartable actors (or of ``name``) at the head;
        a batch is checkpointed with one request per node."""
        if name is None or self._member(name) is not None:
            member = self._member(name) if name is not None else None
            batches = [member[0]] if member is not None else [
                b for b in self.batches.values() if b.options.restart == "on-failure"]
            await asyncio.gather(*(self._checkpoint_batch(b, timeout) for b in batches))
            if name is not None:
                return
        names = [name] if name is not None else [
            n for n, s in self.actors.items() if s.options.restart == "on-failure"]
        for n in names:
            spec = self.actors.get(n)
            if spec is None or spec.placement is None:
                continue
            node = self.nodes.get(spec.placement.node_id)
            if node is None or not node.alive:
                continue
            try:
                spec.state = await self.runtime.state_of(n, timeout=timeout)
                spec.checkpoints += 1
                spec.checkpointed_at = datetime.now(UTC).isoformat()
            except Exception as exc:
                log.warning("checkpoint of %r failed: %s", n, exc)

    async def _checkpoint_batch(self, batch: BatchSpec, timeout: float) -> None:
        taken = datetime.now(UTC).isoformat()
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
        if batch.states:
            batch.checkpoints += 1
            batch.checkpointed_at = taken

    async def _checkpoint_every(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            await self.checkpoint()

    # -- status ------------------------------------------------------------------------------

    async def status(self) -> list[dict[str, Any]]:
        """One entry per node: capacity, allocations per GPU, the actors spawned alone on
        it, the batches' actors on it (``batches``: batch id → count) and the run of each
        batch spawned for one (``runs``: batch id → run)."""
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
                "runs": {str(b.id): b.options.run for b in self.batches.values()
                         if b.options.run is not None and b.live_count(node_id)},
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

    async def respawn(self, names: Sequence[str]) -> dict[str, list[str]]:
        """Start again, on the nodes alive now, the actors of ``names`` that died with
        their node and were not restarted (members of a batch; one request per node and
        batch), as they were created: from their arguments, with no checkpointed state
        (the caller restores what it keeps, a simulation its round's checkpoint).
        Returns ``restarted`` (their names), ``nodes`` (where they run now) and
        ``failed`` (not lost, not in a batch, or no room for them now)."""
        out: dict[str, list[str]] = {"restarted": [], "nodes": [], "failed": []}
        wanted: dict[int, set[int]] = {}
        for name in names:
            member = self._member(name) if name not in self.actors else None
            if member is None or not member[0].is_lost(member[1]):
                out["failed"].append(name)
            else:
                wanted.setdefault(member[0].id, set()).add(member[1])
        nodes: set[str] = set()
        for batch_id, positions in wanted.items():
            batch = self.batches[batch_id]
            ranges = position_runs(sorted(positions))
            options = batch.options
            if options.node is not None and options.node not in self.nodes:
                batch.options = options = options.model_copy(update={"node": None})
            try:
                placements = self.scheduler.place_many(
                    options.resources, len(positions), policy=options.placement,
                    labels=options.labels, node_id=options.node)
                await self._start_shares(batch, placements, ranges, states=False)
            except (Unschedulable, NodeFailed) as exc:
                log.error("%d lost actors of batch %d could not be started again: %s",
                          len(positions), batch_id, exc)
                out["failed"].extend(batch.names[i] for i in sorted(positions))
                continue
            left = {i for a, b in batch.lost for i in range(a, b)} - positions
            batch.lost = position_runs(sorted(left))
            batch.restarts += 1
            nodes.update(p.node_id for p in placements)
            out["restarted"].extend(batch.names[i] for i in sorted(positions))
            log.info("started %d lost actors of batch %d again on %s", len(positions),
                     batch_id, ", ".join(sorted(nodes)))
        out["nodes"] = sorted(nodes)
        return out

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

    async def placement_of(self, name: str) -> Placement | None:
        """Where the actor ``name`` runs (its :class:`Placement`), or ``None``."""
        spec = self.actors.get(name)
        if spec is not None:
            return spec.placement
        member = self._member(name)
        if member is None or member[1] in member[0].stopped:
            return None
        share = member[0].share_of(member[1])
        return share.placement if share is not None else None

