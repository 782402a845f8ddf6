"""The two sides of one Ray worker of the Ray backend.

:class:`RayHost` is the body of the Ray actor: a process that joins our bus and hosts one
start request's agents (one agent spawned alone, or a worker's share of a batch), as a
node would. :class:`RayWorker` is what the head keeps of it: the request, the agents'
last checkpoint, and a watch that re-hosts the agents from that checkpoint when Ray
restarts the process (``max_restarts``).
"""

from __future__ import annotations

import asyncio
import copy
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from ..bus import connect
from ..runtime import Runtime
from ..tracing.lowlevel import names_of, run_event
from ._node import actor_class
from ._shares import NodeShares, names_from_wire

__all__ = ["RayHost", "RayWorker"]

log = logging.getLogger("agentplex.cluster")


class RayHost:
    """The body of the Ray actor that hosts agentplex actors on the bus."""

    def __init__(self, head: str, label: str) -> None:
        self.head = head
        self.label = label
        self.runtime: Runtime | None = None
        self.shares: NodeShares | None = None
        self.where: dict[str, Any] = {}

    async def host(self, request: dict[str, Any]) -> dict[str, Any]:
        """Join the bus (once) and start the actors of ``request`` (a
        :func:`~agentplex.cluster._shares.share_request`, checkpoints included), unless this
        process hosts them already; report where they landed."""
        import ray

        if self.shares is not None and request["batch"] in self.shares.batches:
            return self.where
        node_id = f"ray-{self.label}-{os.getpid()}"
        if self.runtime is None:
            self.runtime = connect(self.head, node_id=node_id)
            await self.runtime.start()
            self.shares = NodeShares(self.runtime)
        assert self.shares is not None
        node = ray.get_runtime_context().get_node_id()
        gpus = [int(g) for g in ray.get_gpu_ids()]
        for seg in request["segments"]:
            seg["placement"].update(node_id=node, gpu_indices=gpus)
        count = await self.shares.start(request, actor_class(request["target"]))
        self.where = {"node": node, "gpu_ids": gpus, "pid": os.getpid(), "actors": count,
                      "bus_node": node_id,
                      "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES")}
        return self.where

    async def states(self, batch: int, timeout: float) -> list[list[Any]]:
        """``[[position, [state, ...]], ...]`` of the actors hosted here (none in a process
        Ray has just restarted)."""
        return [] if self.shares is None else await self.shares.states(batch, timeout)

    async def pid(self) -> int | None:
        """This process's id while it hosts actors (``None`` once Ray restarted it)."""
        return os.getpid() if self.shares is not None else None

    async def watch(self) -> None:
        """Return only when this process dies (the head learns of it as an error)."""
        await asyncio.Event().wait()

    async def stop(self) -> None:
        if self.runtime is not None:
            await self.runtime.shutdown()
            self.runtime = self.shares = None


@dataclass
class RayWorker:
    """The head's record of one Ray worker: how to host its agents again, and their last
    checkpoint (``states``: position in the batch → ``state_dict()``)."""

    handle: Any
    batch: int
    names: Sequence[str]
    request: dict[str, Any]
    restartable: bool
    where: dict[str, Any] = field(default_factory=dict)
    states: dict[int, Any] = field(default_factory=dict)
    checkpoints: int = 0
    """How many checkpoints ``states`` has been taken by (counted from 1)."""
    checkpointed_at: str | None = None
    """When the last one was (UTC, ISO 8601)."""
    restarts: int = 0
    lost: bool = False
    hosting: asyncio.Event = field(default_factory=asyncio.Event)
    """Set while the agents run; cleared from the process's death until they are back."""
    watcher: asyncio.Task[None] | None = None

    def restore_request(self) -> dict[str, Any]:
        """The start request again, each position carrying its last checkpoint."""
        request = copy.deepcopy(self.request)
        if self.states:
            for seg in request["segments"]:
                start = seg["index"]
                count = len(names_from_wire(seg["names"]))
                seg["states"] = [self.states.get(start + i) for i in range(count)]
        return request

    async def checkpoint(self, timeout: float) -> None:
        """Take the ``state_dict()`` of every agent here, in one request to the worker."""
        call = self.handle.states.remote(self.batch, timeout)
        for index, states in await asyncio.wait_for(asyncio.wrap_future(call.future()),
                                                    timeout + 5):
            for k, state in enumerate(states):
                if state is not None:
                    self.states[index + k] = state
        self.checkpoints += 1
        self.checkpointed_at = datetime.now(UTC).isoformat()

    def watch(self, restart_timeout: float, on_change: Callable[[], None],
              on_death: Callable[[RayWorker, str], None] = lambda w, why: None) -> None:
        """Start watching the process; ``on_change()`` is called after each death and
        each return, ``on_death(self, why)`` first at each death."""
        self.hosting.set()
        self.watcher = asyncio.ensure_future(self._watch(restart_timeout, on_change,
                                                         on_death))

    async def _watch(self, restart_timeout: float, on_change: Callable[[], None],
                     on_death: Callable[[RayWorker, str], None]) -> None:
        import ray

        while not self.lost:
            try:
                await asyncio.wrap_future(
                    self.handle.watch.options(max_task_retries=0).remote().future())
                return
            except ray.exceptions.RayError as exc:
                death = exc
            self.hosting.clear()
            on_death(self, type(death).__name__)
            on_change()
            log.warning("Ray worker hosting %d agents (%s…) died: %s", len(self.names),
                        self.names[0], type(death).__name__)
            if not self.restartable:
                self._lose()
            else:
                await self._rehost(restart_timeout)
            on_change()

    @property
    def label(self) -> str:
        """The worker as incidents name it: ``ray-worker-PID``."""
        return f"ray-worker-{self.where.get('pid', '?')}"

    def _lose(self) -> None:
        """Its agents are lost: the running experiment's incidents count them."""
        self.lost = True
        run_event("lost", node=self.label, agents=len(self.names), batch=self.batch,
                  names=names_of(self.names, [(0, len(self.names))]))

    async def _rehost(self, restart_timeout: float) -> None:
        """Ray restarts the process (if it still may); host the agents there again."""
        import ray

        call = self.handle.host.options(max_task_retries=-1).remote(self.restore_request())
        try:
            self.where = await asyncio.wait_for(asyncio.wrap_future(call.future()),
                                                restart_timeout)
        except (TimeoutError, ray.exceptions.RayError) as exc:
            log.error("%d agents (%s…) not restarted: %s", len(self.names), self.names[0],
                      exc)
            self._lose()
            ray.kill(self.handle)  # given up on: it must not come back later, unknown
            return
        dead = self.label
        self.restarts += 1
        self.hosting.set()
        run_event("rollback", node=dead, agents=len(self.names), batch=self.batch,
                  names=names_of(self.names, [(0, len(self.names))]),
                  checkpoint=self.checkpoints or None, checkpointed_at=self.checkpointed_at,
                  to_nodes=[self.label])
        log.info("restarted %d agents (%s…) from their checkpoint in Ray worker %d",
                 len(self.names), self.names[0], self.where["pid"])
