""":class:`ClusterClient`: the cluster seen from any process on the bus, every operation
answered by the head's manager."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from ..runtime import Actor, ActorRef, Runtime
from . import _ops as ops
from ._bus_node import MANAGER
from ._node import target_path
from ._options import BatchOptions, SpawnOptions, split_options
from ._refs import ActorRefs
from ._resources import NodeSpec, Resources
from ._rounds import RoundResult, call_round
from ._scheduler import Placement
from ._served_model import ServedChatModel
from ._shares import batch_args, batch_names, names_from_wire, names_to_wire

__all__ = ["ClusterClient", "DriverAgent"]

log = logging.getLogger("agentplex.cluster")


class DriverAgent(Actor):
    """Stands for a driver on the bus: the head calls it to learn whether the driver's
    process is still there (it answers ``"ping"``)."""

    async def handle_call(self, message: Any) -> Any:
        if message != "ping":
            raise ValueError(f"a driver answers 'ping', not {message!r:.100}")
        return True


class ClusterClient:
    """The cluster seen from any process on the bus: the :class:`ClusterAPI` of
    :class:`Cluster`, answered by the head's manager. The head's refusals are raised here
    as their own types (:class:`Unschedulable`, :class:`NodeFailed`, ``ActorExists``,
    ``SpawnRefused``, ...). ``timeout`` bounds each request (a spawn's ``wait`` and a big
    batch's size add to it).

    A client that spawns for a ``run`` is that run's driver: what it spawned (unless
    ``detach=True``) stops when the client is closed (:meth:`close`; ``async with`` closes
    it, on an error or Ctrl-C too) and, should its process die, once the head finds it
    gone.
    """

    def __init__(self, runtime: Runtime, timeout: float = 60.0) -> None:
        self.runtime = runtime
        self.manager = runtime.ref(MANAGER)
        self.timeout = timeout
        self.driver: str | None = None
        """The name of this client's :class:`DriverAgent`, once it drives a run."""

    async def __aenter__(self) -> ClusterClient:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        if exc_type is None:
            await self.close()
            return
        driver = self.driver
        try:  # leaving on an error: end the driver, but let that error be the one raised
            await self.close()
        except Exception as close_error:
            log.warning("could not end driver %r: %s", driver, close_error)

    async def _ask(self, request: ops.Request, extra: float = 0.0) -> Any:
        return await ops.ask(self.manager, request, timeout=self.timeout + extra)

    async def _driver_for(self, options: SpawnOptions) -> str | None:
        """This client's driver name when ``options`` put the spawn under its watch."""
        if options.run is None or options.detach:
            return None
        if self.driver is None:
            name = f"driver-{uuid.uuid4().hex[:12]}"
            await self.runtime.spawn(DriverAgent(), name)
            self.driver = name
        return self.driver

    async def spawn(self, target: type[Actor] | str, *args: Any, name: str | None = None,
                    options: SpawnOptions | None = None,
                    kwargs: Mapping[str, Any] | None = None, **loose: Any) -> ActorRef:
        """See :meth:`Cluster.spawn`."""
        opts, kwargs = split_options(SpawnOptions, options, loose, kwargs=kwargs,
                                     target=target)
        got = await self._ask(ops.Spawn(target=target_path(target), args=list(args),
                                        kwargs=kwargs, name=name, options=opts,
                                        driver=await self._driver_for(opts)),
                              opts.wait or 0)
        return self.runtime.ref(got)

    async def spawn_many(self, target: type[Actor] | str,
                         args: Sequence[Sequence[Any]] | int, *,
                         names: str | Sequence[str] | None = None,
                         options: SpawnOptions | None = None,
                         kwargs: Mapping[str, Any] | None = None, **loose: Any
                         ) -> ActorRefs:
        """See :meth:`Cluster.spawn_many`: one request to the head, which sends one to
        each node taking part."""
        opts, kwargs = split_options(BatchOptions, options, loose, kwargs=kwargs,
                                     target=target)
        per_agent, count = batch_args(args)
        wire_names = names if names is None or isinstance(names, str) else names_to_wire(
            batch_names(names, count, ""))
        got = await self._ask(ops.SpawnMany(
            target=target_path(target), args=count if per_agent is None else per_agent,
            names=wire_names, kwargs=kwargs, options=opts,
            driver=await self._driver_for(opts)), (opts.wait or 0) + count / 10_000)
        return ActorRefs(self.runtime, names_from_wire(got))

    async def stop(self, name: str) -> None:
        """See :meth:`Cluster.stop`."""
        await self._ask(ops.Stop(name=name))

    async def stop_batch(self, refs: ActorRefs | Sequence[str]) -> None:
        """Stop every actor of the batch ``refs`` came from."""
        names = refs.names if isinstance(refs, ActorRefs) else refs
        await self._ask(ops.StopBatch(names=names_to_wire(names[:1])))

    async def recover(self, names: Sequence[str]) -> dict[str, list[str]]:
        """See :meth:`Cluster.recover`."""
        return await self._ask(ops.Recover(names=list(names)), 60)  # type: ignore[no-any-return]

    async def respawn(self, names: Sequence[str]) -> dict[str, list[str]]:
        """See :meth:`Cluster.respawn`."""
        return await self._ask(ops.Respawn(names=list(names)),  # type: ignore[no-any-return]
                               60 + len(names) / 10_000)

    async def call_round(self, refs: Sequence[ActorRef] | Sequence[str], message: Any, *,
                         timeout: float = 60.0, attempts: int = 3) -> RoundResult:
        """See :meth:`Cluster.call_round`."""
        return await call_round(self.runtime, self.recover, refs, message, timeout=timeout,
                                attempts=attempts)

    async def checkpoint(self, name: str | None = None, *, timeout: float = 10.0) -> None:
        """See :meth:`Cluster.checkpoint`."""
        await self._ask(ops.Checkpoint(name=name, timeout=timeout), timeout)

    async def status(self) -> list[dict[str, Any]]:
        """See :meth:`Cluster.status`."""
        return await self._ask(ops.Status())  # type: ignore[no-any-return]

    async def placement_of(self, name: str) -> Placement | None:
        """See :meth:`Cluster.placement_of`."""
        return ops.placement_from_wire(await self._ask(ops.PlacementOf(name=name)))

    async def wait_for_nodes(self, count: int, *, timeout: float = 60.0) -> int:
        """See :meth:`Cluster.wait_for_nodes`."""
        return int(await self._ask(ops.WaitForNodes(count=count, timeout=timeout), timeout))

    async def join(self, spec: NodeSpec) -> None:
        """Join the cluster as node ``spec`` (this process hosts its node agent)."""
        await self._ask(ops.Register(spec=spec))

    async def serve(self, model: str, *, engine: str = "agentplex",
                    resources: Resources | None = None, replicas: int = 1,
                    stream: bool = False, **options: Any) -> ServedChatModel:
        """See :meth:`Cluster.serve`; the head places the engines, this process calls them."""
        ready = float(options.get("ready_timeout", 600.0))
        served = await self._ask(ops.Serve(model=model, engine=engine, resources=resources,
                                           replicas=replicas, options=options), ready)
        return ServedChatModel(served["urls"], model_name=served["served_name"],
                               stream=stream, api_key=options.get("api_key"))

    async def unserve(self, name: str) -> None:
        """See :meth:`Cluster.unserve`."""
        await self._ask(ops.Unserve(name=name))

    async def served_status(self) -> list[dict[str, Any]]:
        """See :meth:`Cluster.served_status`."""
        return await self._ask(ops.ServedStatus())  # type: ignore[no-any-return]

    async def node_exited(self, node: str, reason: str) -> bool:
        """See :meth:`Cluster.node_exited` (what launched ``node`` says its process ended;
        :class:`NotSupported` from a head that places actors through Ray)."""
        return bool(await self._ask(ops.NodeExited(node=node, reason=reason)))

    async def close(self) -> None:
        """End this client's driver: the head stops what it spawned for its runs (not
        what it detached). The runtime is the caller's and stays open."""
        if self.driver is None:
            return
        driver, self.driver = self.driver, None
        await self._ask(ops.EndDriver(driver=driver))
        if driver in self.runtime:
            await self.runtime.stop(driver)
