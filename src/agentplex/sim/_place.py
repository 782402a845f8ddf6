"""Where a run's agents live: in this process, on node processes started on this machine
(``--nodes K``), or on a running cluster (``--address``). :func:`placement` is the one
place that knows; everything else talks to the agents through the runtime it yields."""

from __future__ import annotations

import asyncio
import inspect
import os
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..cluster import ActorRefs, ClusterAPI, ClusterClient
from ..runtime import Actor, ActorRef, NameRange, Runtime
from ._errors import ScenarioError
from ._nodes import LocalNodes, UserCode, class_code
from ._ship import Shipped

__all__ = ["Placement", "node_allow_list", "placement", "start_local_nodes"]


HEARTBEAT = 30.0
"""Seconds a run's head, nodes and driver may stay silent before the others count them as
lost. Heartbeats come from a thread of their own, so a busy event loop does not silence a
process; what can is a long full garbage collection on a loaded machine (seconds with a
million agents in a node). A killed node's agents then fail within this time, not after
the call timeout of every round."""


@dataclass
class Placement:
    """Agents' home for one run: the driver's runtime and how to spawn a batch there."""

    runtime: Runtime
    where: str
    spawn: Callable[[type[Actor], Sequence[str], Sequence[dict[str, Any]]],
                    Any] = field(repr=False)
    nodes: LocalNodes | None = None
    """The node processes started for the run, if any."""
    cluster: ClusterAPI | None = None
    """The run's cluster (a :class:`~agentplex.cluster.ClusterClient` on nodes, the
    :class:`~agentplex.cluster.RayCluster` on Ray; ``None`` in this process): what it
    asks about lost agents and how it starts them again."""
    driver_node: str | None = None
    """The driver's id on the bus (``driver-RUN``; ``None`` in this process): the manifest
    keeps it as ``driver_node``, and the trace page shows it as ``driver``."""


def node_allow_list(agent: type[Actor], extra: Sequence[str] = ()) -> list[str]:
    """The modules nodes may import for a run: the agent class's, and ``extra``."""
    return sorted({agent.__module__, *extra})


async def start_local_nodes(count: int, logs: Path, agent: type[Actor], *,
                            heartbeat: float, extra_allow: Sequence[str] = (),
                            code: Sequence[UserCode] = ()) -> LocalNodes:
    """Start a head and ``count`` node processes on this machine that may import
    ``agent``'s module, ``extra_allow`` and the user's ``code`` (each module allowed, each
    folder on the nodes' import path; see :func:`user_code`): the ``LocalNodes``, started;
    its ``endpoint`` is the head's. The one function that launches a run's nodes."""
    codes = [*code, class_code(agent)]
    folders = list(dict.fromkeys(c.folder for c in codes if c.folder is not None))
    local = LocalNodes(logs, allow=node_allow_list(agent, [*extra_allow,
                                                           *(c.module for c in codes)]),
                       path=folders)
    try:
        await local.start(count, heartbeat=heartbeat)
    except BaseException:
        local.close()
        raise
    return local


def _positional(cls: type[Actor], kwargs: dict[str, Any]) -> list[Any]:
    """``kwargs`` as ``cls``'s positional arguments (defaults filled in): what a batch
    spawned on nodes carries per agent."""
    try:
        bound = inspect.signature(cls).bind(**kwargs)
    except TypeError as exc:
        raise ScenarioError(f"{cls.__name__}({', '.join(kwargs)}): {exc}") from None
    bound.apply_defaults()
    if bound.kwargs:
        raise ScenarioError(f"{cls.__name__} takes keyword-only arguments "
                            f"({', '.join(bound.kwargs)}), which agents on nodes cannot get "
                            "one by one")
    return list(bound.args)


RAY_CPUS = 2
"""CPUs a local Ray started for a run declares (its agents ask for none; Ray's own
processes are what this bounds)."""


@asynccontextmanager
async def placement(*, nodes: int, address: str | None, agent: type[Actor],
                    logs: Path, timeout: float, run: str | None = None,
                    backend: str = "local", code: Sequence[UserCode] = (),
                    heartbeat: float = HEARTBEAT, ship: Shipped | None = None,
                    bus_options: dict[str, Any] | None = None,
                    log: Callable[[str], None] = lambda _: None) -> AsyncIterator[Placement]:
    """The runtime the run's driver uses, and how agents are spawned (on a cluster, for
    the run ``run``; nodes started here import the user's ``code``; ``heartbeat``: the
    seconds of silence after which the run's processes count one lost; ``backend="ray"``:
    in Ray worker processes; ``ship``: a code package sent to the cluster's nodes first).
    Leaving it stops the agents it spawned (and the node processes or the local Ray it
    started)."""
    if backend == "ray":
        async with _on_ray(nodes=nodes, address=address, agent=agent, run=run, code=code,
                           heartbeat=heartbeat, log=log) as home:
            yield home
        return
    if backend != "local":
        raise ScenarioError(f"unknown backend {backend!r} (use 'local' or 'ray')")
    if nodes == 0 and address is None:
        async with Runtime(default_timeout=timeout) as rt:
            async def spawn_here(cls: type[Actor], names: Sequence[str],
                                 args: Sequence[dict[str, Any]]) -> Sequence[ActorRef]:
                await rt.spawn_many([cls(**kw) for kw in args], names)
                return ActorRefs(rt, names)

            yield Placement(rt, "this process", spawn_here)
        return

    from ..bus import connect
    from ..cluster import BatchOptions, Resources

    async with AsyncExitStack() as stack:
        endpoint = address
        local = None
        if endpoint is None:
            began = time.perf_counter()
            local = await start_local_nodes(nodes, logs, agent, heartbeat=heartbeat,
                                            code=code)
            stack.callback(local.close)
            endpoint = local.endpoint
            log(f"head and {nodes} nodes up in {time.perf_counter() - began:.1f}s (pids "
                f"{', '.join(str(p) for p in local.pids.values())}); logs in {local.logs}")
        # named for the run (its logs, the head's and the trace say whose driver it is)
        driver_node = f"driver-{run}" if run is not None else None
        named = {"node_id": driver_node} if driver_node is not None else {}
        rt = await stack.enter_async_context(
            connect(endpoint, heartbeat_timeout=heartbeat, **{**named, **(bus_options or {})}))
        driver_node = getattr(rt.transport, "node_id", driver_node)
        # the run's driver: what it spawns stops when the run ends, however it ends (the
        # head notices a driver whose process died)
        client = ClusterClient(rt, timeout=120.0)

        async def end_driver() -> None:
            try:
                await client.close()
            except Exception as exc:  # the run is over either way
                log(f"could not stop the run's agents on the cluster: {exc}")

        stack.push_async_callback(end_driver)
        if local is not None:  # a node process that ends is dead now, not after silence
            watcher = asyncio.ensure_future(local.watch(client.node_exited))
            stack.callback(watcher.cancel)
        if ship is not None:
            await ship.send(rt, client, agent, log)

        async def spawn_nodes(cls: type[Actor], names: Sequence[str],
                              args: Sequence[dict[str, Any]]) -> Sequence[ActorRef]:
            client.timeout = max(120.0, len(names) / 5_000)
            shared = args[0] if all(kw == args[0] for kw in args) else None
            wired = names if isinstance(names, NameRange) else list(names)
            options = BatchOptions(placement="spread", resources=Resources(cpus=0), run=run)
            if shared is not None:  # one set of arguments for the whole batch: a count
                return await client.spawn_many(cls, len(names), names=wired,
                                               options=options, kwargs=shared)
            return await client.spawn_many(cls, [_positional(cls, kw) for kw in args],
                                           names=wired, options=options)

        yield Placement(rt, address or f"{nodes} node processes", spawn_nodes, local, client,
                        driver_node)


@asynccontextmanager
async def _on_ray(*, nodes: int, address: str | None, agent: type[Actor], run: str | None,
                  code: Sequence[UserCode], heartbeat: float, log: Callable[[str], None]
                  ) -> AsyncIterator[Placement]:
    """Agents in Ray worker processes: a local Ray started here (:data:`RAY_CPUS`, no
    dashboard; its workers import the user's ``code`` from its folders), or the Ray
    cluster at ``address`` (whose workers must find the code themselves), or the Ray
    this process has already initialised. ``nodes``: workers per batch (default: one per
    Ray node). Messages travel on our bus, whose head (this process) counts a worker
    silent for ``heartbeat`` seconds lost; Ray only places the workers. A worker that
    dies is not restarted by Ray: the run's restart policy starts its agents again
    (:meth:`~agentplex.cluster.RayCluster.respawn`) and restores them."""
    try:
        import ray
    except ImportError:
        raise ScenarioError("--backend ray needs Ray: pip install 'agentplex[ray]'") from None
    from ..cluster import BatchOptions, RayCluster, Resources

    began = time.perf_counter()
    started = not ray.is_initialized()
    if started:
        folders = [str(c.folder) for c in [*code, class_code(agent)] if c.folder is not None]
        path = os.pathsep.join(dict.fromkeys(
            [*folders, *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]))
        init: dict[str, Any] = {"runtime_env": {"env_vars": {"PYTHONPATH": path}}}
        if address is None:
            init["num_cpus"] = RAY_CPUS
        ray.init(address=address, include_dashboard=False, log_to_driver=False,
                 **init)
    from ..bus import connect

    head = connect(bind="tcp://127.0.0.1:0", heartbeat_timeout=heartbeat)
    try:
        cluster = await RayCluster.start(checkpoint_interval=None, shutdown_ray=started,
                                         runtime=head)
    except BaseException:
        await head.shutdown()
        if started:
            ray.shutdown()
        raise
    which = (f"the Ray cluster at {address}" if address is not None else
             "a local Ray" if started else "the Ray this process had started")
    log(f"{which}: up in {time.perf_counter() - began:.1f}s")
    try:
        async def spawn_ray(cls: type[Actor], names: Sequence[str],
                            args: Sequence[dict[str, Any]]) -> Sequence[ActorRef]:
            shared = args[0] if all(kw == args[0] for kw in args) else None
            # a range stays one: the cluster finds an agent's worker without a scan
            wired = names if isinstance(names, NameRange) else list(names)
            options = BatchOptions(placement="spread", resources=Resources(cpus=0), run=run,
                                   workers=nodes or None)
            if shared is not None:
                return await cluster.spawn_many(cls, len(names), names=wired,
                                                options=options, kwargs=shared)
            return await cluster.spawn_many(cls, [_positional(cls, kw) for kw in args],
                                            names=wired, options=options)

        workers = nodes or "one per Ray node"
        yield Placement(cluster.runtime, f"Ray worker processes ({workers})", spawn_ray,
                        cluster=cluster)
    finally:
        try:
            await cluster.close()
        finally:
            await head.shutdown()
