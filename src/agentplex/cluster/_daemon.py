"""The head and node processes of a cluster on the ZeroMQ bus, and GPU worker processes.

``agentplex head`` runs :func:`run_head`; ``agentplex node --head ADDRESS`` runs
:func:`run_node`. A node hosts CPU actors in its own process; each actor that holds GPUs
runs in a worker process of its own (:func:`run_worker`) whose ``CUDA_VISIBLE_DEVICES``
names only its GPUs, and which exits when its node does.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

from ..bus import InsecureBindError, KeyPair, connect, keypair_from_env
from ..bus.lowlevel import is_loopback
from ..runtime import Actor, ActorError, Runtime
from ._build import build_actor
from ._bus_node import MANAGER, node_agent_name
from ._client import ClusterClient
from ._code import CodeCache
from ._detect import worker_environment
from ._errors import CodeRefused
from ._manager import ClusterManager
from ._node import actor_class
from ._ops import answer
from ._options import SpawnOptions
from ._resources import NodeSpec
from ._scheduler import Placement
from ._shares import NodeShares

__all__ = ["NodeAgent", "run_head", "run_node", "run_worker"]

log = logging.getLogger("agentplex.cluster")


async def _wait_ready(runtime: Runtime, name: str, timeout: float) -> None:
    """Wait until actor ``name`` answers anywhere on the bus (any actor answers a state
    request)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        try:
            await runtime.state_of(name, timeout=max(0.5, deadline - loop.time()))
            return
        except ActorError:
            if loop.time() >= deadline:
                raise
            await asyncio.sleep(0.1)


class NodeAgent(Actor):
    """Starts and stops actors on this node for the head's cluster manager; answers in
    the head's envelope (:func:`~._ops.answer`), so a refusal reaches the head typed."""

    max_concurrency = 16

    def __init__(self, spec: NodeSpec, head: str, spawn_allow: Sequence[str],
                 worker_timeout: float = 60.0, accept_code: bool = False) -> None:
        self.spec = spec
        self.code = CodeCache() if accept_code else None
        """Code packages shipped over the bus (``None``: this node accepts none)."""
        self.head = head
        self.spawn_allow = list(spawn_allow)
        self.worker_timeout = worker_timeout
        self.workers: dict[str, asyncio.subprocess.Process] = {}
        self.requests: Counter[str] = Counter()
        """Requests handled, by operation (``status`` reports them, not counting pings
        and itself)."""
        self.shares: NodeShares | None = None

    async def on_start(self) -> None:
        self.shares = NodeShares(self.runtime)

    async def handle_call(self, message: Any) -> Any:
        return await answer(self._handle(message))

    async def _handle(self, message: Any) -> Any:
        op = message.get("op") if isinstance(message, dict) else None
        if op == "ping":
            return True
        assert self.shares is not None
        if op == "status":
            return {"node": self.spec.id, "actors": len(self.runtime),
                    "requests": dict(self.requests)}
        self.requests[str(op)] += 1
        if op == "start_many":
            if any(seg["placement"].get("gpu_indices") for seg in message["segments"]):
                raise ValueError("actors holding GPUs run in worker processes of their own; "
                                 "spawn them one by one")
            cls = actor_class(message["target"], self.spawn_allow)
            return await self.shares.start(message, cls)
        if op == "stop_batch":
            await self.shares.stop(message["batch"])
            return True
        if op == "states":
            return await self.shares.states(message["batch"], message.get("timeout", 10.0))
        if op == "code":
            return self._install(message)
        if op == "start":
            await self._start(message["spec"])
            return True
        if op == "stop":
            await self._stop(message["name"])
            return True
        raise ValueError(f"unknown node request {message!r:.200}")

    def _install(self, message: dict[str, Any]) -> list[str]:
        """Import a code package shipped over the bus and allow the modules it names."""
        if self.code is None:
            raise CodeRefused(f"node {self.spec.id} does not accept code over the bus "
                              "(start it with --accept-code)")
        allowed = self.code.install(message.get("sha256"),  # type: ignore[arg-type]
                                    message.get("archive"),  # type: ignore[arg-type]
                                    message.get("modules") or [])
        self.spawn_allow.extend(m for m in allowed if m not in self.spawn_allow)
        log.warning("node %s: imported code package %s; allowed %s", self.spec.id,
                    message.get("sha256"), ", ".join(allowed))
        return allowed

    async def _start(self, spec: dict[str, Any]) -> None:
        placement = spec.get("placement") or {}
        if placement.get("gpu_indices"):
            await self._start_worker(spec, placement)
            return
        cls = actor_class(spec["target"], self.spawn_allow)
        options = SpawnOptions.model_validate(spec.get("options") or {})
        actor = build_actor(cls, spec["name"], spec.get("args", ()), spec.get("kwargs", {}),
                            options, _placement(placement, options) if placement else None)
        await self.runtime.spawn(actor, spec["name"])
        if spec.get("state") is not None:
            await self.runtime.load_state(spec["name"], spec["state"])

    async def _start_worker(self, spec: dict[str, Any], placement: dict[str, Any]) -> None:
        actor_class(spec["target"], self.spawn_allow)  # refuse before starting
        options = SpawnOptions.model_validate(spec.get("options") or {})
        env = worker_environment(_placement(placement, options))
        env["AGENTPLEX_WORKER_SPEC"] = json.dumps(spec)
        for name in ("AGENTPLEX_PUBLIC_KEY", "AGENTPLEX_SECRET_KEY", _WORKER_BUS):
            env.pop(name, None)  # the worker joins as this node did, whatever it inherited
        env.update(_worker_security(self.runtime.transport))
        cmd = [sys.executable, "-m", "agentplex.cluster.worker", "--head", self.head,
               "--node-id", f"{self.spec.id}-{spec['name']}"]
        for module in self.spawn_allow:
            cmd += ["--allow", module]
        proc = await asyncio.create_subprocess_exec(*cmd, env=env)
        self.workers[spec["name"]] = proc
        try:
            await _wait_ready(self.runtime, spec["name"], self.worker_timeout)
        except BaseException:
            proc.kill()
            self.workers.pop(spec["name"], None)
            raise

    async def _stop(self, name: str) -> None:
        proc = self.workers.pop(name, None)
        if proc is not None:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), 10)
            except TimeoutError:
                proc.kill()
        elif name in self.runtime:
            await self.runtime.stop(name)

    async def on_stop(self) -> None:
        for proc in self.workers.values():
            if proc.returncode is None:
                proc.terminate()
        if self.code is not None:
            self.code.close()


def _worker_security(transport: Any) -> dict[str, str]:
    """What a worker needs to join a CURVE bus as its node did (nothing without keys): the
    node's key pair, the head's key and the keys the node admits."""
    keys: KeyPair | None = getattr(transport, "keys", None)
    if keys is None:
        return {}
    return {"AGENTPLEX_PUBLIC_KEY": keys.public, "AGENTPLEX_SECRET_KEY": keys.secret,
            _WORKER_BUS: json.dumps({"head_key": transport.head_key,
                                     "allow": sorted(transport.allow.keys)})}


_WORKER_BUS = "AGENTPLEX_WORKER_BUS"


def _placement(data: dict[str, Any], options: SpawnOptions) -> Placement:
    return Placement(data.get("id", 0), data["node_id"], tuple(data.get("gpu_indices", ())),
                     options.resources)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, under another user
        return True
    return True


async def _serve_until_signalled(ready: Callable[[], None] | None = None, *,
                                 exit_with: int | None = None) -> None:
    """Return on SIGINT / SIGTERM, or once process ``exit_with`` has ended."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    if ready is not None:
        ready()
    while not stop.is_set():
        if exit_with is not None and not _alive(exit_with):
            log.warning("process %d ended: stopping with it", exit_with)
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.5)


async def run_head(bind: str = "tcp://127.0.0.1:5555", *, ping_interval: float = 1.0,
                   dead_after: float = 10.0, backend: str = "local",
                   ray_address: str | None = None, exit_with: int | None = None,
                   **options: Any) -> None:
    """Be the head: the bus directory plus the cluster manager, until SIGINT / SIGTERM
    (or until process ``exit_with`` ends: a head started for one program's run).

    With ``backend="ray"`` Ray places the actors (``ray_address``: an existing Ray
    cluster, e.g. ``"auto"``; default: a local Ray).
    """
    async with connect(bind=bind, **options) as runtime:
        await runtime.spawn(ClusterManager(ping_interval=ping_interval, dead_after=dead_after,
                                           backend=backend, ray_address=ray_address), MANAGER)
        endpoint = runtime.transport.endpoint  # type: ignore[attr-defined]
        await _serve_until_signalled(lambda: print(f"agentplex head listening on {endpoint}",
                                                   flush=True), exit_with=exit_with)


async def run_node(head: str, spec: NodeSpec, *, bind: str = "tcp://127.0.0.1:0",
                   spawn_allow: Sequence[str] = (), drain_timeout: float = 10.0,
                   exit_with: int | None = None, accept_code: bool = False,
                   **options: Any) -> None:
    """Join the cluster at ``head`` as node ``spec.id``, until SIGINT / SIGTERM (or until
    process ``exit_with`` ends: a node started for one program's run).

    On the signal the node's actors get ``drain_timeout`` seconds to handle what their
    mailboxes hold; what is left then fails with ``ActorStopped`` and the node exits (a
    backlog never keeps a stopped node alive).

    ``accept_code``: import code packages that peers ship over the bus
    (:func:`~._code.ship_code`); only on an authenticated bus (CURVE ``keys``) or one that
    never leaves this machine (loopback ``bind`` and ``head``), else
    :class:`~agentplex.bus.InsecureBindError` before anything starts.
    """
    if accept_code and options.get("keys") is None and not (
            is_loopback(bind) and is_loopback(head)):
        raise InsecureBindError(
            f"refusing to accept code over an unauthenticated bus ({bind}, head {head}): "
            "give the node CURVE keys (--keys, --head-key), or drop --accept-code")
    async with connect(head, bind=bind, node_id=spec.id, spawn_allow=spawn_allow,
                       **options) as runtime:
        await runtime.spawn(NodeAgent(spec, head, spawn_allow, accept_code=accept_code),
                            node_agent_name(spec.id))
        await ClusterClient(runtime, timeout=30).join(spec)
        await _serve_until_signalled(lambda: print(f"agentplex node {spec.id} joined {head}",
                                                   flush=True), exit_with=exit_with)
        print(f"agentplex node {spec.id} stopping (draining for up to {drain_timeout:g}s)",
              flush=True)
        await runtime.shutdown(timeout=drain_timeout)


_WORKER_DRAIN = 10.0
"""Seconds a GPU worker's actor gets to empty its mailbox when the worker stops."""


async def run_worker(head: str, node_id: str, spawn_allow: Sequence[str]) -> None:
    """Host one actor (described by ``AGENTPLEX_WORKER_SPEC``) until the node goes away."""
    spec = json.loads(os.environ["AGENTPLEX_WORKER_SPEC"])
    parent = os.getppid()
    keys = keypair_from_env()
    security = {"keys": keys, **json.loads(os.environ.get(_WORKER_BUS, "{}"))} if keys else {}
    async with connect(head, node_id=node_id, spawn_allow=spawn_allow, **security) as runtime:
        cls = actor_class(spec["target"], spawn_allow)
        options = SpawnOptions.model_validate(spec.get("options") or {})
        actor = build_actor(cls, spec["name"], spec.get("args", ()), spec.get("kwargs", {}),
                            options, _placement(spec["placement"], options))
        await runtime.spawn(actor, spec["name"])
        if spec.get("state") is not None:
            await runtime.load_state(spec["name"], spec["state"])
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        while not stop.is_set() and os.getppid() == parent:  # die with the node
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.5)
        await runtime.shutdown(timeout=_WORKER_DRAIN)
