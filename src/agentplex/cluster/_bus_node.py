"""A node in another process, as the head drives it over the bus (:class:`BusNode`), and
the actor names of the head's manager and of each node's agent."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any

from ..runtime import ActorError, Runtime
from ._node import ActorSpec, NodeHandle
from ._ops import ask
from ._resources import NodeSpec
from ._shares import names_from_wire

__all__ = ["MANAGER", "BusNode", "node_agent_name", "spec_to_wire", "tell_bus_dead"]

MANAGER = "cluster"
"""The actor name of the cluster manager on the head."""


def node_agent_name(node_id: str) -> str:
    """The actor name of a node's agent."""
    return f"node:{node_id}"


def spec_to_wire(spec: ActorSpec) -> dict[str, Any]:
    """An :class:`ActorSpec` as msgpack-able data for a node agent: what it needs to
    create the actor (class, arguments, placement and checkpoint)."""
    data: dict[str, Any] = {
        "name": spec.name, "target": spec.target, "args": list(spec.args),
        "kwargs": spec.kwargs, "options": spec.options.model_dump(),
        "state": spec.state, "placement": None}
    if spec.placement is not None:
        data["placement"] = {"id": spec.placement.id, "node_id": spec.placement.node_id,
                             "gpu_indices": list(spec.placement.gpu_indices)}
    return data


class BusNode(NodeHandle):
    """A node in another process, driven through its node agent over the bus. A node's
    refusal (:class:`~agentplex.bus.SpawnRefused`, ...) is raised here as its own type."""

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
        await ask(self.agent, {"op": "start", "spec": spec_to_wire(actor)},
                  timeout=self.timeout)

    async def stop_actor(self, name: str) -> None:
        await ask(self.agent, {"op": "stop", "name": name}, timeout=self.timeout)

    async def start_many(self, request: dict[str, Any]) -> None:
        count = sum(len(seg["args"] or ()) or len(names_from_wire(seg["names"]))
                    for seg in request["segments"])
        await self._busy(ask(self.agent, request, timeout=self.timeout + count / 10_000))

    async def stop_batch(self, batch: int) -> None:
        await self._busy(ask(self.agent, {"op": "stop_batch", "batch": batch},
                             timeout=self.timeout))

    async def batch_states(self, batch: int, timeout: float) -> list[list[Any]]:
        got = await self._busy(ask(self.agent, {"op": "states", "batch": batch,
                                                "timeout": timeout},
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
            return bool(await ask(self.agent, {"op": "ping"}, timeout=timeout))
        except ActorError:
            return False


def tell_bus_dead(runtime: Runtime, node: str, reason: str) -> None:
    """Tell this process's bus that bus node ``node``'s process is dead (where its transport
    hears of deaths: ZeroMQ's): the calls waiting on it fail now with ``PeerLost(reason)``,
    not after the bus's own heartbeat silence, and the head drops its names from the
    directory and tells every node, so that no call goes there any more."""
    died = getattr(runtime.transport, "peer_died", None)
    if callable(died):
        died(node, reason)
