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
from collections.abc import AsyncGenerator, Sequence
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from ..model import ChatResponse, ChatResult, Messages, ToolChoice, WrapperModel
from ..runtime import Actor
from ..serving import EngineConfig, EngineError, EngineProcess
from ..serving.lowlevel import free_port
from ._balance import LeastOutstanding
from ._detect import detect_gpus, worker_environment
from ._resources import Resources

if TYPE_CHECKING:
    from ._inprocess import Cluster

__all__ = ["EngineActor", "ServedChatModel", "serve_model"]

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


class ServedChatModel(WrapperModel):
    """A chat model served by engine replicas over the OpenAI wire.

    Each call goes to the replica with the fewest requests outstanding (a stream counts
    until it ends); the replica's OpenAI model traces it. Arguments are those of
    :class:`~agentplex.model.OpenAIChatModel`.
    """

    def __init__(self, urls: Sequence[str], *, model_name: str, stream: bool = False,
                 api_key: str | None = None, timeout: float | None = 600.0,
                 **openai_options: Any) -> None:
        from ..model.openai import OpenAIChatModel

        if not urls:
            raise ValueError("ServedChatModel needs at least one replica URL")
        self.urls = list(urls)
        self.replicas = [OpenAIChatModel(model_name, api_key=api_key or "not-needed",
                                         base_url=url, stream=stream, timeout=timeout,
                                         **openai_options) for url in self.urls]
        super().__init__(self.replicas[0])
        self.balancer = LeastOutstanding(len(self.replicas))

    async def _call(self, messages: Messages, tools: list[dict[str, Any]] | None = None,
                    tool_choice: ToolChoice | None = None,
                    structured_model: type[BaseModel] | None = None,
                    **kwargs: Any) -> ChatResult:
        index = self.balancer.pick()
        replica = self.replicas[index]
        if not self.stream:
            with self.balancer.holding(index):
                return await replica(messages, tools, tool_choice, structured_model, **kwargs)
        return self._stream(index, messages, tools, tool_choice, structured_model, kwargs)

    async def _stream(self, index: int, messages: Messages,
                      tools: list[dict[str, Any]] | None, tool_choice: ToolChoice | None,
                      structured_model: type[BaseModel] | None, kwargs: dict[str, Any]
                      ) -> AsyncGenerator[ChatResponse, None]:
        with self.balancer.holding(index):
            result = await self.replicas[index](messages, tools, tool_choice,
                                                structured_model, **kwargs)
            if isinstance(result, ChatResponse):
                yield result
                return
            try:
                async for chunk in result:
                    yield chunk
            finally:
                await result.aclose()

    async def aclose(self) -> None:
        """Close the HTTP clients (the engines keep running until released)."""
        for replica in self.replicas:
            await replica.aclose()


def _slug(model: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", model).strip("-") or "model"


async def serve_model(cluster: Cluster, model: str, *, engine: str = "agentplex",
                      resources: Resources | None = None, replicas: int = 1,
                      name: str | None = None, dtype: str | None = None,
                      max_model_len: int | None = None, api_key: str | None = None,
                      model_options: dict[str, Any] | None = None,
                      engine_args: Sequence[str] = (), host: str = "127.0.0.1",
                      placement: str = "spread", labels: dict[str, str] | None = None,
                      ready_timeout: float = 600.0, max_restarts: int = 5,
                      wait: float | None = None) -> dict[str, Any]:
    """Place ``replicas`` engine actors, wait until every engine serves, and return
    ``{"name", "served_name", "urls"}`` (see :meth:`Cluster.serve`)."""
    if replicas < 1:
        raise ValueError("replicas must be at least 1")
    name = name or f"served-{_slug(model)}"
    if name in cluster.served:
        raise ValueError(f"a model is already served as {name!r}")
    gpu_totals = {f"{n.id}:{g.index}": g.total_memory
                  for n in cluster.nodes.values() for g in n.spec.gpus}
    actors: list[str] = []
    cluster.served[name] = {"model": model, "engine": engine, "served_name": model,
                            "replicas": actors}
    try:
        for i in range(replicas):
            ref = await cluster.spawn(
                EngineActor, engine, model, model, name=f"{name}/{i}", resources=resources,
                placement=placement,  # type: ignore[arg-type]
                labels=labels, restart="on-failure", wait=wait, dtype=dtype,
                max_model_len=max_model_len, api_key=api_key, model_options=model_options,
                extra_args=list(engine_args), host=host, ready_timeout=ready_timeout,
                max_restarts=max_restarts, gpu_totals=gpu_totals)
            actors.append(ref.name)
        infos = await asyncio.gather(*(
            cluster.runtime.ref(a).call({"op": "ready", "timeout": ready_timeout},
                                        timeout=ready_timeout + 30) for a in actors))
    except BaseException:
        await unserve_model(cluster, name)
        raise
    for info in infos:
        if info["state"] != "ready":
            await unserve_model(cluster, name)
            raise EngineError(f"replica not ready: {info}")
    return {"name": name, "served_name": model, "urls": [i["url"] for i in infos]}


async def unserve_model(cluster: Cluster, name: str) -> None:
    """Stop every replica of the served model ``name`` (their engines stop with them)."""
    record = cluster.served.pop(name, None)
    if record is None:
        return
    for actor in record["replicas"]:
        await cluster.stop(actor)


async def served_status(cluster: Cluster, timeout: float = 5.0) -> list[dict[str, Any]]:
    """One entry per served model, with each replica's node, GPUs, URL and state."""
    out = []
    for name, record in cluster.served.items():
        replicas = []
        for actor in record["replicas"]:
            placement = cluster.placement_of(actor)
            entry: dict[str, Any] = {"actor": actor,
                                     "node": placement.node_id if placement else None,
                                     "gpus": list(placement.gpu_indices) if placement else []}
            try:
                entry.update(await cluster.runtime.ref(actor).call({"op": "info"},
                                                                  timeout=timeout))
            except Exception as exc:
                entry["state"] = f"unreachable ({type(exc).__name__})"
            replicas.append(entry)
        out.append({"name": name, "model": record["model"], "engine": record["engine"],
                    "replicas": replicas})
    return out
