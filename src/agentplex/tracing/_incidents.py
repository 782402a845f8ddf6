"""What went wrong in a run and what was done about it: agents lost with their node,
agents restarted, and which of them were rolled back to which checkpoint.

The cluster's head reports each incident (:func:`~agentplex.tracing.lowlevel.run_event`)
where it happens; it reaches the run's process like the rest of a node's journal, is
logged there and counted in the manifest's ``incidents``. A simulation's driver reports
the agents it started again itself (``"restore"``: :class:`Restore`).
"""

from __future__ import annotations

import logging
from typing import Any, Literal

from pydantic import BaseModel, Field

__all__ = ["Restore", "Rollback", "RunIncidents", "index_ranges"]

log = logging.getLogger("agentplex.tracing")


class Rollback(BaseModel):
    """Agents restarted elsewhere after their node was lost, with the state of a
    checkpoint (or, with none taken, as they were created)."""

    node: str
    """The node that was lost."""
    agents: int
    """How many agents were restored."""
    names: list[str]
    """Their names (the first 20 and the last when there are more)."""
    batch: int | None = None
    """The batch they belong to (``None``: an actor spawned alone)."""
    checkpoint: int | None = None
    """The checkpoint they were restored from, counted from 1 per batch (``None``: none
    had been taken: they restarted from their constructor arguments)."""
    checkpointed_at: str | None = None
    """When that checkpoint was taken (UTC, ISO 8601)."""
    to_nodes: list[str] = Field(default_factory=list)
    """Where they run now."""


class Restore(BaseModel):
    """Agents of a simulation whose node was lost, started again by the run's driver on
    the nodes left and brought back to the state of a round's checkpoint (or, with none,
    as they were created)."""

    noticed: int
    """The round in which they were found lost (their answers in it are errors)."""
    round: int
    """The round whose checkpoint they were restored from: they play the next round as
    they were after it (0: no checkpoint held them; they start again as created)."""
    agents: int
    """How many."""
    indexes: str
    """Their agent indexes as ranges, ``"0-99,200-299"``."""
    to_nodes: list[str] = Field(default_factory=list)
    """Where they run now."""
    missed: list[str] = Field(default_factory=list)
    """The operator's interventions of round ``noticed`` that some of them no longer
    have (``"intervention 1 of round 4"``): they were told before the restore brought
    them back to an older state (the transcript's ``missed`` lines say which agents)."""


class RunIncidents(BaseModel):
    """The manifest's ``incidents``: losses, restarts and rollbacks during the run,
    collected from the head and the nodes."""

    lost_agents: int = 0
    """Agents that died with their node and were not restarted (neither by the head nor
    by a simulation's driver)."""
    restarts: int = 0
    """Agents restarted after their node was lost."""
    rolled_back: int = 0
    """Agents a simulation's driver restored from an earlier round's checkpoint (their
    rounds since then are lost: see ``restored``)."""
    restored: list[Restore] = Field(default_factory=list)
    """What a simulation's driver started again: which agents, restored to which
    round."""
    rollbacks: list[Rollback] = Field(default_factory=list)
    """Each group of restarted agents and the checkpoint it was restored from."""
    lost: list[dict[str, Any]] = Field(default_factory=list)
    """Each loss: ``node``, ``agents``, ``names`` (as in a rollback) and ``batch``."""

    def note(self, kind: Literal["rollback", "lost"] | str, event: dict[str, Any]) -> None:
        """Count one incident the head reported, and log it."""
        if kind == "rollback":
            rollback = Rollback.model_validate(event)
            self.restarts += rollback.agents
            self.rollbacks.append(rollback)
            where = (f"checkpoint {rollback.checkpoint} (taken {rollback.checkpointed_at})"
                     if rollback.checkpoint is not None
                     else "no checkpoint (restarted as created)")
            log.warning("node %s was lost: %d agent(s) %s restored from %s on %s",
                        rollback.node, rollback.agents, _shown(rollback.names), where,
                        ", ".join(rollback.to_nodes) or "another node")
        elif kind == "restore":
            restore = Restore.model_validate(event)
            self.restarts += restore.agents
            self.lost_agents -= restore.agents  # the head reported them lost
            if restore.round:
                self.rolled_back += restore.agents
            self.restored.append(restore)
            where = (f"restored to round {restore.round}'s checkpoint" if restore.round
                     else "started again as created (no checkpoint held them)")
            log.warning("round %d: %d agent(s) %s lost with their node, %s on %s",
                        restore.noticed, restore.agents, restore.indexes, where,
                        ", ".join(restore.to_nodes) or "another node")
        elif kind == "lost":
            agents = int(event.get("agents", 0))
            self.lost_agents += agents
            self.lost.append(event)
            log.warning("node %s was lost: %d agent(s) %s lost with it (the cluster "
                        "did not restart them)",
                        event.get("node"), agents, _shown(event.get("names", [])))


def _shown(names: list[str]) -> str:
    return ", ".join(names[:5]) + (" ..." if len(names) > 5 else "")


def names_of(names: Any, ranges: list[tuple[int, int]], most: int = 20) -> list[str]:
    """The names at positions ``ranges`` of ``names`` (a sequence): the first ``most``,
    then the last."""
    out: list[str] = []
    total = sum(b - a for a, b in ranges)
    for a, b in ranges:
        for i in range(a, b):
            if len(out) >= most:
                break
            out.append(str(names[i]))
    if total > most and ranges:
        out.append(str(names[ranges[-1][1] - 1]))
    return out


def index_ranges(indexes: list[int]) -> str:
    """Sorted agent indexes as ranges: ``[0, 1, 2, 7]`` is ``"0-2,7"``."""
    parts: list[str] = []
    start = prev = None
    for i in indexes:
        if prev is not None and i == prev + 1:
            prev = i
            continue
        if start is not None:
            parts.append(f"{start}-{prev}" if prev != start else f"{start}")
        start = prev = i
    if start is not None:
        parts.append(f"{start}-{prev}" if prev != start else f"{start}")
    return ",".join(parts)
