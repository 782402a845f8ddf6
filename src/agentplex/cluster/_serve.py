"""Inference engines placed by the scheduler: ``cluster.serve(model, engine=..., replicas=N)``.

Each replica is an :class:`EngineActor` placed like any actor (declared resources, GPUs,
labels, restart when its node dies); it runs the engine's OpenAI-compatible server as a
supervised child process that sees only the replica's GPUs, on a free port. The caller gets
a :class:`ServedChatModel`: the OpenAI provider pointed at every replica, spreading calls
by the number of requests outstanding on each.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
from collections.abc import Callable, Sequence
from typing import Any

from ..runtime import Actor
from ..serving import EngineConfig, EngineProcess, ServerFailed
from ..serving.lowlevel import free_port
from ._detect import detect_gpus, worker_environment
from ._options import SpawnOptions
from ._protocol import ClusterAPI
from ._resources import Resources
from ._scheduler import PlacementPolicy
from ._served_model import ServedChatModel

__all__ = ["EngineActor", "ServedChatModel", "ServedModels"]

log = logging.getLogger("agentplex.cluster")


class EngineActor(Actor):
    """Runs one engine server on its node, with the GPUs of its placement.

    ``gpu_totals`` maps ``"node:gpu index"`` to that GPU's memory, so the engine's share
    of GPU memory is the placement's ``gpu_memory`` over the smallest of its GPUs.
    Answers ``{"op": "ready"}`` (waits until the engine serves) and ``{"op": "info"}``.
    """

    max_concurrency = 16

    def __init__(self, engine: str, model: str, served_name: str, *,
                 dtype: str | None = None, max_model_len: int | None = None,
                 api_key: str | None = None, model_options: dict[str, Any] | None = None,
                 extra_args: Sequence[str] = (), host: str = "127.0.0.1",
                 ready_timeout: float = 600.0, max_restarts: int = 5,
                 gpu_totals: dict[str, int] | None = None) -> None:
        self.options: dict[str, Any] = {
            "engine": engine, "model": model, "served_name": served_name, "dtype": dtype,
            "max_model_len": max_model_len, "api_key": api_key,
            "model_options": dict(model_options or {}), "extra_args": list(extra_args),
            "host": host}
        self.ready_timeout = ready_timeout
        self.max_restarts = max_restarts
        self.gpu_totals = dict(gpu_totals or {})
        self.process: EngineProcess | None = None

    def _memory_fraction(self, placement: Any) -> float | None:
        wanted = placement.resources.gpu_memory if placement is not None else 0
        if not wanted or not placement.gpu_indices:
            return None
        totals = [self.gpu_totals.get(f"{placement.node_id}:{i}") for i in placement.gpu_indices]
        if None in totals:  # not declared: ask the machine
            detected = {g.index: g.total_memory for g in detect_gpus()}
            totals = [detected.get(i) for i in placement.gpu_indices]
        known = [t for t in totals if t]
        return min(1.0, wanted / min(known)) if known else None

    async def on_start(self) -> None:
        placement = getattr(self, "placement", None)
        env = worker_environment(placement) if placement is not None else dict(os.environ)
        options = dict(self.options)
        if (options["engine"] == "agentplex" and str(options["model"]).startswith("transformers")
                and placement is not None and placement.resources.gpu_memory):
            options["model_options"] = {"gpu_memory": placement.resources.gpu_memory,
                                        **options["model_options"]}
        config = EngineConfig(
            port=free_port(str(self.options["host"])),
            gpus=len(placement.gpu_indices) if placement is not None else 0,
            gpu_memory_fraction=self._memory_fraction(placement), **options)
        self.process = EngineProcess(config, env=env, ready_timeout=self.ready_timeout,
                                     max_restarts=self.max_restarts)
        await self.process.start()

    async def on_stop(self) -> None:
        if self.process is not None:
            await self.process.stop()

    async def handle_call(self, message: Any) -> Any:
        assert self.process is not None
        op = message.get("op") if isinstance(message, dict) else None
        if op == "ready":
            await self.process.wait_ready(message.get("timeout"))
            return self.process.info()
        if op == "info":
            return self.process.info()
        raise ValueError(f"unknown engine request {message!r:.200}")


def _slug(model: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", model).strip("-") or "model"


class ServedModels:
    """The models a cluster serves, by name: each one's model, engine and replica actors.

    The cluster owns one (``cluster.served``) and answers ``serve`` / ``unserve`` /
    ``served_status`` through it; replicas are placed through the cluster like any actor.
    """

    def __init__(self, cluster: ClusterAPI, gpu_totals: Callable[[], dict[str, int]]
                 ) -> None:
        self.cluster = cluster
        self.gpu_totals = gpu_totals
        """``"node:gpu index"`` → that GPU's memory, for each node known now."""
        self.records: dict[str, dict[str, Any]] = {}

    def __contains__(self, name: object) -> bool:
        return name in self.records

    def __len__(self) -> int:
        return len(self.records)

    async def serve(self, model: str, *, engine: str = "agentplex",
                    resources: Resources | None = None, replicas: int = 1,
                    stream: bool = False, name: str | None = None, dtype: str | None = None,
                    max_model_len: int | None = None, api_key: str | None = None,
                    model_options: dict[str, Any] | None = None,
                    engine_args: Sequence[str] = (), host: str = "127.0.0.1",
                    placement: PlacementPolicy = "spread",
                    labels: dict[str, str] | None = None, ready_timeout: float = 600.0,
                    max_restarts: int = 5, wait: float | None = None) -> ServedChatModel:
        """Place ``replicas`` engine actors, wait until every engine serves, and return a
        chat model over them (see :meth:`Cluster.serve`)."""
        if replicas < 1:
            raise ValueError("replicas must be at least 1")
        name = name or f"served-{_slug(model)}"
        if name in self.records:
            raise ValueError(f"a model is already served as {name!r}")
        gpu_totals = self.gpu_totals()
        actors: list[str] = []
        self.records[name] = {"model": model, "engine": engine, "served_name": model,
                              "replicas": actors}
        options = SpawnOptions(resources=resources or Resources(cpus=1), placement=placement,
                               labels=labels, restart="on-failure", wait=wait)
        runtime = self.cluster.runtime
        try:
            for i in range(replicas):
                ref = await self.cluster.spawn(
                    EngineActor, engine, model, model, name=f"{name}/{i}", options=options,
                    kwargs={"dtype": dtype, "max_model_len": max_model_len,
                            "api_key": api_key, "model_options": model_options,
                            "extra_args": list(engine_args), "host": host,
                            "ready_timeout": ready_timeout, "max_restarts": max_restarts,
                            "gpu_totals": gpu_totals})
                actors.append(ref.name)
            infos = await asyncio.gather(*(
                runtime.ref(a).call({"op": "ready", "timeout": ready_timeout},
                                    timeout=ready_timeout + 30) for a in actors))
        except BaseException:
            await self.unserve(name)
            raise
        for info in infos:
            if info["state"] != "ready":
                await self.unserve(name)
                raise ServerFailed(f"replica not ready: {info}")
        return ServedChatModel([i["url"] for i in infos], model_name=model, stream=stream,
                               api_key=api_key)

    async def unserve(self, name: str) -> None:
        """Stop every replica of the served model ``name`` (their engines stop with them)."""
        record = self.records.pop(name, None)
        if record is None:
            return
        for actor in record["replicas"]:
            await self.cluster.stop(actor)

    async def status(self, timeout: float = 5.0) -> list[dict[str, Any]]:
        """One entry per served model, with each replica's node, GPUs, URL and state."""
        out = []
        for name, record in self.records.items():
            replicas = []
            for actor in record["replicas"]:
                placement = await self.cluster.placement_of(actor)
                entry: dict[str, Any] = {
                    "actor": actor, "node": placement.node_id if placement else None,
                    "gpus": list(placement.gpu_indices) if placement else []}
                try:
                    entry.update(await self.cluster.runtime.ref(actor).call(
                        {"op": "info"}, timeout=timeout))
                except Exception as exc:
                    entry["state"] = f"unreachable ({type(exc).__name__})"
                replicas.append(entry)
            out.append({"name": name, "model": record["model"], "engine": record["engine"],
                        "replicas": replicas})
        return out
