"""Actors the tests host in node processes and spawn by import path
(``tests.support.actors:Name``): an echoing actor, a MsgHub participant, a counter, a
tool actor, one that keeps and marks the messages it gets, an actor that always fails, one
that answers late, and a model-less voter for scale runs."""

from __future__ import annotations

import asyncio
import os
import zlib
from collections.abc import AsyncIterator
from typing import Any

import numpy as np

from agentplex import Actor, AgentBase, Msg, TextBlock
from agentplex.agent import StateModule
from agentplex.cluster import ToolActor
from agentplex.tool import AgentImage


class Echo(Actor):
    """Echoes calls, records tells, streams chunks, raises on request."""

    def __init__(self, tag: str = "") -> None:
        self.tag = tag
        self.told: list[Any] = []

    async def handle_call(self, message: Any) -> Any:
        if message == "boom":
            raise ValueError("boom requested")
        if message == "told":
            return self.told
        if message == "where":
            return self.tag
        if message == "traceid":  # the trace this handler runs in (propagated by the bus)
            from opentelemetry import trace

            return format(trace.get_current_span().get_span_context().trace_id, "032x")
        if message == "leave":  # stop after answering (the actor "moves away")
            asyncio.get_running_loop().call_soon(
                lambda: asyncio.ensure_future(self.runtime.stop(self.ref.name)))
            return "bye"
        if isinstance(message, str) and message.startswith("blob:"):
            return bytes(int(message[5:]))
        if message == "hang":
            await asyncio.sleep(3600)
        if isinstance(message, dict) and "sleep" in message:
            await asyncio.sleep(message["sleep"])
        if isinstance(message, (bytes, bytearray)):
            return len(message)
        return message

    async def handle_tell(self, message: Any) -> None:
        if isinstance(message, dict) and "sleep" in message:
            await asyncio.sleep(message["sleep"])
        self.told.append(message)

    async def handle_stream(self, message: Any) -> AsyncIterator[Any]:
        for i in range(int(message)):
            yield f"chunk-{i}"
        if message == 0:
            raise RuntimeError("empty stream")


class Talker(AgentBase):
    """A MsgHub participant: answers with what it has observed so far."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.seen: list[str] = []

    async def reply(self, msg: Msg | None = None) -> Msg:
        if msg is not None and msg.content == "memory":
            return Msg(self.name, "|".join(self.seen), "assistant")
        return Msg(self.name, f"{self.name} spoke after {len(self.seen)}", "assistant")

    async def observe(self, msg: Msg | list[Msg] | None) -> None:
        for m in msg if isinstance(msg, list) else [msg] if msg is not None else []:
            self.seen.append(f"{m.name}:{m.content}")


class Counter(StateModule, Actor):
    """Counts; its count survives a restart through ``state_dict``."""

    def __init__(self, start: int = 0) -> None:
        self.count = start
        self.register_state("count")

    async def handle_call(self, message: Any) -> Any:
        if message == "where":
            placement = getattr(self, "placement", None)
            return placement.node_id if placement is not None else None
        if message == "gpus":
            placement = getattr(self, "placement", None)
            return placement.cuda_visible_devices() if placement is not None else None
        if message == "env":
            return os.environ.get("CUDA_VISIBLE_DEVICES")
        if message == "pid":
            return os.getpid()
        if isinstance(message, dict):  # {"sleep": seconds, "add": n}: a slow step
            await asyncio.sleep(message.get("sleep", 0))
            message = message.get("add", 0)
        self.count += int(message)
        return self.count


def paint(shade: int, width: int = 64) -> AgentImage:
    """Paint a grey square.

    Args:
        shade: the grey level, 0 to 255.
        width: the side in pixels.
    """
    return AgentImage(np.full((width, width, 3), shade, dtype=np.uint8))


class Painter(ToolActor):
    """A tool actor built on its node (its tools are made there, not sent)."""

    def make_tools(self) -> list[Any]:
        return [paint]


class Keeper(Actor):
    """Keeps every ``Msg`` it is called with and marks it as its own (its ``name`` and a
    ``metadata["kept_by"]`` entry, a content block appended when the content is a list): a
    message it shared with another actor would carry that actor's marks too. A call
    ``"kept"`` answers ``[name, metadata, content]`` of each message kept."""

    def __init__(self) -> None:
        self.kept: list[Msg] = []

    async def handle_call(self, message: Any) -> Any:
        if message == "kept":
            return [[m.name, m.metadata, m.content] for m in self.kept]
        assert isinstance(message, Msg), message
        me = self.ref.name
        message.name = me
        if message.metadata is None:
            message.metadata = {}
        message.metadata.setdefault("kept_by", []).append(me)
        if isinstance(message.content, list):
            message.content.append(TextBlock(text=f"seen by {me}"))
        self.kept.append(message)
        return Msg(me, f"kept {len(self.kept)}", "assistant")


class Failing(Actor):
    """Raises on every call."""

    async def handle_call(self, message: Any) -> Any:
        raise ValueError(f"cannot handle {message!r}")


class Slow(Actor):
    """Answers every call after ``seconds``."""

    def __init__(self, seconds: str = "3600") -> None:
        self.seconds = float(seconds)

    async def handle_call(self, message: Any) -> Any:
        await asyncio.sleep(self.seconds)
        return message
class Voter(Actor):
    """A simulation agent without a model, for scale runs: a call ``r`` (a round number)
    draws its guess from its name and ``r``; it counts the broadcasts it hears (after
    subscribing to ``topic``, when given) and a call ``"heard"`` returns that count."""

    def __init__(self, topic: str = "") -> None:
        self.topic = topic
        self.heard = 0

    async def on_start(self) -> None:
        if self.topic:
            await self.runtime.subscribe(self.topic, self.ref.name)

    async def handle_call(self, message: Any) -> Any:
        if message == "heard":
            return self.heard
        return zlib.crc32(f"{self.ref.name}:{message}".encode()) % 101

    async def handle_publish(self, topic: str, message: Any) -> None:
        self.heard += 1


class Booked(Actor):
    """An actor whose constructor takes arguments named like spawn options (``run``,
    ``resources``): they reach it only as ``kwargs=``."""

    def __init__(self, run: str = "", resources: str = "") -> None:
        self.booked = (run, resources)

    async def handle_call(self, message: Any) -> Any:
        return list(self.booked)
