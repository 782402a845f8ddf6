"""The cluster over the bus: the head's manager actor, node handles and the client.

The head process hosts :class:`ClusterManager` (actor name ``"cluster"``), which owns a
:class:`Cluster`. Each node process hosts a node agent (``"node:<id>"``, see
:mod:`._daemon`) that starts and stops actors on request. The manager pings every node
agent; a node that stops answering is declared dead and its ``on-failure`` actors are
restarted elsewhere. :class:`ClusterClient` gives any process on the bus the same
``spawn`` API as :class:`Cluster`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Sequence
from dataclasses import asdict
from typing import Any

from ..runtime import Actor, ActorError, ActorRef, Runtime
from ._batch import ActorRefs, RoundResult, batch_names, names_from_wire, names_to_wire
from ._inprocess import Cluster
from ._node import ActorSpec, NodeHandle, RestartPolicy, batch_args, target_path
from ._resources import NodeSpec, Resources
from ._rounds import call_round
from ._scheduler import PlacementPolicy
from ._serve import ServedChatModel, serve_model

__all__ = ["MANAGER", "BusNode", "ClusterClient", "ClusterManager", "node_agent_name"]

MANAGER = "cluster"
"""The actor name of the cluster manager on the head."""

log = logging.getLogger("agentplex.cluster")


def node_agent_name(node_id: str) -> str:
    """The actor name of a node's agent."""
    return f"node:{node_id}"


def spec_to_wire(spec: ActorSpec) -> dict[str, Any]:
    """An :class:`ActorSpec` as msgpack-able data for a node agent."""
    data = asdict(spec)
    data["args"] = list(spec.args)
    data["resources"] = spec.resources.model_dump()
    if spec.placement is not None:
        data["placement"] = {"id": spec.placement.id, "node_id": spec.placement.node_id,
                             "gpu_indices": list(spec.placement.gpu_indices)}
    return data


class BusNode(NodeHandle):
    """A node in another process, driven through its node agent over the bus."""

    def __init__(self, spec: NodeSpec, runtime: Runtime, timeout: float = 30.0) -> None:
        self.spec = spec
        self.agent = runtime.ref(node_agent_name(spec.id))
        self.timeout = timeout
        self.busy = 0
        """Long requests (a batch to start, stop or checkpoint) under way."""
        self._alive = True

    @property
    def alive(self) -> bool:
        return self._alive

    def mark_dead(self) -> None:
        self._alive = False

    async def start_actor(self, actor: ActorSpec) -> None:
        await self.agent.call({"op": "start", "spec": spec_to_wire(actor)},
                              timeout=self.timeout)

    async def stop_actor(self, name: str) -> None:
        await self.agent.call({"op": "stop", "name": name}, timeout=self.timeout)

    async def start_many(self, request: dict[str, Any]) -> None:
        count = sum(len(seg["args"] or ()) or _count(seg["names"])
                    for seg in request["segments"])
        await self._busy(self.agent.call(request, timeout=self.timeout + count / 10_000))

    async def stop_batch(self, batch: int) -> None:
        await self._busy(self.agent.call({"op": "stop_batch", "batch": batch},
                                         timeout=self.timeout))

    async def batch_states(self, batch: int, timeout: float) -> list[list[Any]]:
        got = await self._busy(self.agent.call(
            {"op": "states", "batch": batch, "timeout": timeout},
            timeout=timeout + self.timeout))
        return got  # type: ignore[no-any-return]

    async def _busy(self, request: Awaitable[Any]) -> Any:
        """Await a long request to the node agent: meanwhile its pings may wait behind
        it, and the bus itself tells whether the node lives (a dead node fails the
        request with ``PeerLost``)."""
        self.busy += 1
        try:
            return await request
        finally:
            self.busy -= 1

    async def ping(self, timeout: float) -> bool:
        try:
            return bool(await self.agent.call({"op": "ping"}, timeout=timeout))
        except ActorError:
            return False


def _count(names: Any) -> int:
    return len(names_from_wire(names))


def _names_arg(message: dict[str, Any]) -> str | Sequence[str] | None:
    """A spawn_many request's names: a prefix, a list or range, or none."""
    if isinstance(message.get("prefix"), str):
        return message["prefix"]  # type: ignore[no-any-return]
    names = message.get("names")
    return None if names is None else names_from_wire(names)


class ClusterManager(Actor):
    """The head's cluster: nodes register here, and every spawn is placed here.

    Handles requests concurrently (a spawn that waits for room must not block the stop
    that makes room); the scheduler itself is only touched between awaits.
    """

    max_concurrency = 64

    def __init__(self, *, ping_interval: float = 1.0, dead_after: float = 10.0,
                 checkpoint_interval: float | None = 5.0, backend: str = "local",
                 ray_address: str | None = None) -> None:
        self.ping_interval = ping_interval
        self.dead_after = dead_after
        self.checkpoint_interval = checkpoint_interval
        self.backend = backend
        self.ray_address = ray_address
        self.cluster: Any = None
        """A :class:`Cluster`, or a :class:`RayCluster` with ``backend="ray"``."""
        self._watch: asyncio.Task[None] | None = None

    async def on_start(self) -> None:
        if self.backend == "ray":
            from ._ray import RayCluster

            self.cluster = await RayCluster.start(
                address=self.ray_address, runtime=self.runtime,
                checkpoint_interval=self.checkpoint_interval)
            return
        self.cluster = await Cluster(self.runtime,
                                     checkpoint_interval=self.checkpoint_interval).start()
        self._watch = asyncio.ensure_future(self._watch_nodes())

    async def on_stop(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
        if isinstance(self.cluster, Cluster) and self.cluster._checkpointer is not None:
            self.cluster._checkpointer.cancel()
        elif self.cluster is not None:
            await self.cluster.close(keep_runtime=True)

    async def _watch_nodes(self) -> None:
        """Ping every node each interval; one silent for ``dead_after`` seconds is dead."""
        assert isinstance(self.cluster, Cluster)
        self.cluster.node_timeout = self.dead_after + 2 * self.ping_interval
        loop = asyncio.get_running_loop()
        last_ok: dict[str, float] = {}
        while True:
            await asyncio.sleep(self.ping_interval)
            nodes = [n for n in self.cluster.nodes.values() if isinstance(n, BusNode)]
            answers = await asyncio.gather(*(n.ping(self.dead_after) for n in nodes))
            now = loop.time()
            for node, ok in zip(nodes, answers, strict=True):
                if ok or node.busy:
                    last_ok[node.id] = now
                    continue
                if now - last_ok.setdefault(node.id, now) < self.dead_after:
                    continue
                log.warning("node %r silent for %.1fs; restarting its actors", node.id,
                            now - last_ok.pop(node.id))
                node.mark_dead()
                restarted = await self.cluster.node_failed(node.id)
                log.info("restarted %s after losing %r", restarted, node.id)

    async def handle_call(self, message: Any) -> Any:
        cluster = self.cluster
        assert cluster is not None
        op = message.get("op") if isinstance(message, dict) else None
        if op == "register":
            if not isinstance(cluster, Cluster):
                raise ValueError("this head places actors through Ray: nodes join Ray")
            spec = NodeSpec.model_validate(message["spec"])
            await cluster.add_node(BusNode(spec, self.runtime))
            return spec.id
        if op == "spawn":
            ref = await cluster.spawn(
                message["target"], *message.get("args", ()), name=message.get("name"),
                resources=Resources.model_validate(message.get("resources") or {}),
                placement=message.get("placement", "pack"), labels=message.get("labels"),
                node=message.get("node"), restart=message.get("restart", "never"),
                max_restarts=message.get("max_restarts", 3), wait=message.get("wait"),
                **(message.get("kwargs") or {}))
            return ref.name
        if op == "spawn_many":
            args = message["args"]
            refs = await cluster.spawn_many(
                message["target"], args if isinstance(args, int) else list(args),
                names=_names_arg(message),
                resources=Resources.model_validate(message.get("resources") or {}),
                placement=message.get("placement", "spread"), labels=message.get("labels"),
                node=message.get("node"), restart=message.get("restart", "never"),
                max_restarts=message.get("max_restarts", 3), wait=message.get("wait"),
                **(message.get("kwargs") or {}))
            return names_to_wire(refs.names)
        if op == "recover":
            return await cluster.recover(message["names"])
        if op == "stop_batch":
            await cluster.stop_batch(names_from_wire(message["names"]))
            return None
        if op == "stop":
            await cluster.stop(message["name"])
            return None
        if op == "checkpoint":
            await cluster.checkpoint(message.get("name"))
            return None
        if op == "status":
            return cluster.status()
        if op in ("serve", "unserve", "served"):
            return await self._serving(cluster, op, message)
        if op == "placement":
            placement = cluster.placement_of(message["name"])
            return None if placement is None else {
                "node_id": placement.node_id, "gpu_indices": list(placement.gpu_indices)}
        raise ValueError(f"unknown cluster request {message!r:.200}")


    async def _serving(self, cluster: Any, op: str, message: dict[str, Any]) -> Any:
        if not isinstance(cluster, Cluster):
            if op == "served":  # nothing can be served on Ray, so nothing is
                return []
            raise ValueError("serving engines needs the agentplex backend, not Ray")
        if op == "served":
            return await cluster.served_status()
        if op == "unserve":
            await cluster.unserve(message["name"])
            return None
        options = dict(message.get("options") or {})
        resources = Resources.model_validate(options.pop("resources", None) or {})
        return await serve_model(cluster, message["model"],
                                 engine=message.get("engine", "agentplex"),
                                 resources=resources, replicas=message.get("replicas", 1),
                                 **options)


class ClusterClient:
    """The cluster seen from any process on the bus: the same ``spawn`` as
    :meth:`Cluster.spawn`, answered by the head's manager."""

    def __init__(self, runtime: Runtime, timeout: float = 60.0) -> None:
        self.runtime = runtime
        self.manager = runtime.ref(MANAGER)
        self.timeout = timeout

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
        """See :meth:`Cluster.spawn`. Refusals arrive as ``HandlerError`` naming
        ``Unschedulable`` and the scheduler's reason."""
        request = {
            "op": "spawn", "target": target_path(target),
            "args": list(args), "kwargs": kwargs, "name": name,
            "resources": (resources or Resources()).model_dump(), "placement": placement,
            "labels": labels, "node": node, "restart": restart, "max_restarts": max_restarts,
            "wait": wait,
        }
        got = await self.manager.call(request, timeout=self.timeout + (wait or 0))
        return self.runtime.ref(got)

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
        """See :meth:`Cluster.spawn_many`: one request to the head, which sends one to
        each node taking part. Refusals arrive as ``HandlerError`` naming
        ``Unschedulable`` or ``NodeFailed`` and the reason."""
        per_agent, count = batch_args(args)
        if names is not None and not isinstance(names, str):
            names = batch_names(names, count, "")
        request = {
            "op": "spawn_many", "target": target_path(target),
            "args": count if per_agent is None else per_agent,
            "kwargs": kwargs, "names": None if names is None or isinstance(names, str)
            else names_to_wire(names), "prefix": names if isinstance(names, str) else None,
            "resources": (resources or Resources()).model_dump(), "placement": placement,
            "labels": labels, "node": node, "restart": restart, "max_restarts": max_restarts,
            "wait": wait,
        }
        got = await self.manager.call(request, timeout=self.timeout + (wait or 0)
                                      + count / 10_000)
        return ActorRefs(self.runtime, names_from_wire(got))

    async def stop_batch(self, refs: ActorRefs | Sequence[str]) -> None:
        """Stop every actor of the batch ``refs`` came from."""
        names = refs.names if isinstance(refs, ActorRefs) else refs
        await self.manager.call({"op": "stop_batch", "names": names_to_wire(names[:1])},
                                timeout=self.timeout)

    async def recover(self, names: Sequence[str]) -> dict[str, list[str]]:
        """See :meth:`Cluster.recover`."""
        return await self.manager.call(  # type: ignore[no-any-return]
            {"op": "recover", "names": list(names)}, timeout=self.timeout + 60)

    async def call_round(self, refs: Sequence[ActorRef] | Sequence[str], message: Any, *,
                         timeout: float = 60.0, attempts: int = 3) -> RoundResult:
        """See :meth:`Cluster.call_round`."""
        return await call_round(self.runtime, self.recover, refs, message, timeout=timeout,
                                attempts=attempts)

    async def stop(self, name: str) -> None:
        await self.manager.call({"op": "stop", "name": name}, timeout=self.timeout)

    async def checkpoint(self, name: str | None = None) -> None:
        await self.manager.call({"op": "checkpoint", "name": name}, timeout=self.timeout)

    async def status(self) -> list[dict[str, Any]]:
        return await self.manager.call({"op": "status"}, timeout=self.timeout)  # type: ignore[no-any-return]

    async def serve(self, model: str, *, engine: str = "agentplex",
                    resources: Resources | None = None, replicas: int = 1,
                    stream: bool = False, **options: Any) -> ServedChatModel:
        """See :meth:`Cluster.serve`; the head places the engines, this process calls them."""
        ready = float(options.get("ready_timeout", 600.0))
        request = {"op": "serve", "model": model, "engine": engine, "replicas": replicas,
                   "options": {**options,
                               "resources": (resources or Resources()).model_dump()}}
        served = await self.manager.call(request, timeout=self.timeout + ready)
        return ServedChatModel(served["urls"], model_name=served["served_name"],
                               stream=stream, api_key=options.get("api_key"))

    async def unserve(self, name: str) -> None:
        await self.manager.call({"op": "unserve", "name": name}, timeout=self.timeout)

    async def served_status(self) -> list[dict[str, Any]]:
        return await self.manager.call({"op": "served"}, timeout=self.timeout)  # type: ignore[no-any-return]

    async def placement_of(self, name: str) -> dict[str, Any] | None:
        return await self.manager.call({"op": "placement", "name": name},  # type: ignore[no-any-return]
                                       timeout=self.timeout)

