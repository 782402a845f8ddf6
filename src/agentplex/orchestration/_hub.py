""":class:`MsgHub`: participants observe each other's replies."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from typing import Any

from ..agent import AgentBase
from ..agent.lowlevel import HUB_TOPIC_PREFIX
from ..message import Msg
from ..runtime import ActorRef, Runtime, get_runtime
from ..runtime.lowlevel import current_cell
from ..tracing.lowlevel import transcribe

__all__ = ["MsgHub", "Participant"]

Participant = AgentBase | ActorRef
"""A hub member: a local agent or a ref to an agent anywhere."""

_QUIET_PREFIX = "msghub-manual:"


async def _ref(participant: Participant) -> ActorRef:
    if isinstance(participant, ActorRef):
        return participant
    return await participant.ensure_spawned()


class MsgHub:
    """Within ``async with MsgHub(participants):`` every participant's reply is observed by
    all the other participants, in the order the replies were made.

    Built on runtime topics: each participant subscribes to the hub's topic and publishes
    its replies there, so a hub works unchanged when participants live in other processes.

    Args:
        participants: agents (or refs to agents) taking part.
        announcement: message(s) every participant observes on entry.
        enable_auto_broadcast: when false, replies are not shared; only :meth:`broadcast`.
        name: the hub's name (default: random); the topic is derived from it.
    """

    def __init__(
        self,
        participants: Sequence[Participant],
        announcement: Msg | Sequence[Msg] | None = None,
        enable_auto_broadcast: bool = True,
        name: str | None = None,
    ) -> None:
        self.name = name or uuid.uuid4().hex[:12]
        prefix = HUB_TOPIC_PREFIX if enable_auto_broadcast else _QUIET_PREFIX
        self.topic = f"{prefix}{self.name}"
        self.participants: list[Participant] = list(participants)
        self.announcement = announcement
        self._runtime: Runtime | None = None
        self._refs: dict[str, ActorRef] = {}

    @property
    def runtime(self) -> Runtime:
        if self._runtime is None:
            self._runtime = get_runtime()
        return self._runtime

    async def __aenter__(self) -> MsgHub:
        await self._join(self.participants)
        if self.announcement is not None:
            await self.broadcast(self.announcement)
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        refs = list(self._refs.values())
        self._refs.clear()
        await self.runtime.unsubscribe_many(self.topic, refs)

    async def _join(self, participants: Sequence[Participant]) -> None:
        await AgentBase.ensure_spawned_many(
            p for p in participants if isinstance(p, AgentBase))
        new: dict[str, ActorRef] = {}
        for participant in participants:
            ref = await _ref(participant)
            if ref.name not in self._refs:
                new[ref.name] = ref
        self._refs.update(new)
        await self.runtime.subscribe_many(self.topic, new.values())

    async def add(self, new_participant: Participant | Sequence[Participant]) -> None:
        """Add participants; they observe replies made from now on."""
        new = [new_participant] if isinstance(new_participant, (AgentBase, ActorRef)) else list(
            new_participant)
        for p in new:
            if p not in self.participants:
                self.participants.append(p)
        await self._join(new)

    async def delete(self, participant: Participant | Sequence[Participant]) -> None:
        """Remove participants; they stop observing and sharing replies."""
        gone = [participant] if isinstance(participant, (AgentBase, ActorRef)) else list(
            participant)
        for p in gone:
            ref = await _ref(p)
            if ref.name in self._refs:
                await self.runtime.unsubscribe(self.topic, ref)
                del self._refs[ref.name]
            if p in self.participants:
                self.participants.remove(p)

    async def broadcast(
        self, msg: Msg | Sequence[Msg], *, exclude: Sequence[Participant] = ()
    ) -> None:
        """Make every participant (but those in ``exclude``) observe ``msg``: one message
        or several, in order."""
        skip = [(await _ref(p)).name for p in exclude]
        cell = current_cell.get()
        for m in [msg] if isinstance(msg, Msg) else list(msg):
            transcribe(m, getattr(cell.actor, "name", cell.name) if cell is not None else None)
            await self.runtime.publish(self.topic, m, exclude=skip)

    def set_auto_broadcast(self, enable: bool) -> asyncio.Task[None]:
        """Start or stop sharing replies automatically (``broadcast`` works either way).

        The switch moves every participant to the hub's other topic (the topic tells
        agents whether to publish their replies): ``await hub.set_auto_broadcast(False)``.
        It starts at once and returns its task, so AgentScope code that calls it without
        ``await`` still switches, a moment later (replies already under way when it
        completes follow the old setting).
        """
        prefix = HUB_TOPIC_PREFIX if enable else _QUIET_PREFIX
        return asyncio.ensure_future(self._move_to(f"{prefix}{self.name}"))

    async def _move_to(self, topic: str) -> None:
        if topic == self.topic:
            return
        old, self.topic = self.topic, topic
        for ref in list(self._refs.values()):
            await self.runtime.subscribe(topic, ref)
            await self.runtime.unsubscribe(old, ref)
