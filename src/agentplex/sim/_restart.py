"""What a run does when a node process dies with some of its agents (the run's restart
policy): after the round in which their calls failed, the driver asks the cluster's head
which of them are lost; under ``on-failure`` it has the head start them again on the
nodes left (as created) and restores each from the latest checkpoint that holds it;
under ``never`` the run ends there. Either way the manifest (``incidents``), the
transcript (an operator's line) and the trace (a ``restore`` or ``lost`` span) say so."""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..cluster import ClusterAPI, NotSupported
from ..message import Msg
from ..tracing import Run
from ..tracing.lowlevel import index_ranges, sim_span, transcribe
from ._calls import load_states
from ._sim import OPERATOR, Sim
from ._store import Checkpoint, checkpoints

__all__ = ["Lost", "Told", "restart_lost"]

BATCH = 20_000
"""Agent states loaded per window."""


@dataclass
class Lost:
    """The agents found lost after a round, and what became of them."""

    agents: int
    """Found lost (their node died)."""
    restored: dict[int, list[str]] = field(default_factory=dict)
    """Started again, by the round they were restored to (0: as created)."""
    left: list[str] = field(default_factory=list)
    """Still lost: the policy is ``never``, or the nodes left had no room for them."""
    reason: str = ""
    """Why the run cannot go on (when ``left``)."""


@dataclass
class Told:
    """An intervention's message of the round: what a restored agent no longer has."""

    label: str
    """``"intervention 1 of round 4"``."""
    text: str
    to: Collection[int]
    """The indexes of the agents it was told to."""


async def restart_lost(run: Run, sim: Sim, cluster: ClusterAPI, policy: str,
                       number: int, prefix: str, starts: Sequence[Checkpoint],
                       log: Callable[[str], None], told: Sequence[Told] = ()
                       ) -> Lost | None:
    """After round ``number``: the agents of ``sim.unreachable`` that the head reports
    lost with their node, started again and restored (``policy == "on-failure"``) or
    left lost; ``None`` when none was lost. Once one is lost, every agent of the run is
    asked about (a survey of a sample, say, met only some of a dead node's agents).
    ``starts``: the checkpoint the run started from, if any (a resumed or forked run's
    agents are also held there). ``told``: the round's interventions, which restored
    agents no longer have (the record says so)."""
    suspects = sorted(sim.unreachable)
    sim.unreachable.clear()
    lost = (await cluster.recover(suspects))["lost"]
    if not lost:
        return None
    if len(suspects) < len(sim.agents):
        lost = (await cluster.recover(sim.names))["lost"]
    index = {name: int(name[len(prefix):]) for name in lost}
    out = Lost(len(lost))
    if policy == "never":
        out.left = lost
    else:
        try:
            got = await cluster.respawn(lost)
        except NotSupported as exc:  # a head that places agents through Ray
            log(f"the cluster cannot start lost agents again: {exc}")
            got = {"restarted": [], "nodes": [], "failed": lost}
        out.left = [n for n in got["failed"] if n in index]
        if got["restarted"]:
            out.restored = await _restore(sim, got["restarted"],
                                          [*checkpoints(run.dir), *starts])
        for to, names in sorted(out.restored.items()):
            event: dict[str, Any] = {
                "noticed": number, "round": to, "agents": len(names),
                "indexes": index_ranges(sorted(index[n] for n in names)),
                "to_nodes": got["nodes"]}
            missed = [t.label for t in told if any(index[n] in t.to for n in names)]
            if missed:
                event["missed"] = missed
            text = (f"{len(names)} agents ({event['indexes']}) were lost with their node "
                    f"in round {number}; started again on {', '.join(got['nodes'])}, "
                    + (f"restored to round {to}'s checkpoint" if to else
                       "as created (no checkpoint held them)"))
            _say(run, "restore", text, event)  # the manifest's incidents log it
        back = sorted(index[n] for names in out.restored.values() for n in names)
        for t in told:
            who = [i for i in back if i in t.to]
            if who:
                ranges = index_ranges(who)
                _say(run, "missed", f"{len(who)} agents ({ranges}) do not have "
                     f"{t.label} ({t.text!r}): lost with their node, they were restored "
                     "to an older state", {"noticed": number, "agents": len(who),
                                           "indexes": ranges, "intervention": t.label})
    if out.left:
        ranges = index_ranges(sorted(index[n] for n in out.left))
        why = ("the restart policy is 'never'" if policy == "never"
               else "the nodes left could not take them")
        out.reason = (f"{len(out.left)} agents ({ranges}) were lost with their node in "
                      f"round {number} and not started again ({why})")
        _say(run, "lost", out.reason, {"noticed": number, "agents": len(out.left),
                                       "indexes": ranges})
    return out


def _say(run: Run, kind: str, text: str, event: dict[str, Any]) -> None:
    """The incident in the trace (a span of its own) and the transcript (an operator's
    line); a ``restore`` also in the manifest (the head reported the loss itself)."""
    named = {"noticed": "round", "round": "restored_to"}  # a span's round: when it was
    attributes = {f"agentplex.sim.{named.get(k, k)}": ",".join(v) if isinstance(v, list)
                  else v for k, v in event.items()}
    with sim_span(kind, **attributes):
        transcribe(Msg(OPERATOR, text, "system", metadata={"incident": kind, **event}), None)
    if kind == "restore":
        run.note_event(kind, event)


async def _restore(sim: Sim, names: list[str], held: Sequence[Checkpoint]
                   ) -> dict[int, list[str]]:
    """Load into the agents ``names`` their state in the latest of the checkpoints
    ``held``; by round restored to (0: none held them: they stay as created)."""
    wanted = set(names)
    found: list[str] = []
    if held:
        latest = max(held, key=lambda c: c.round)
        states: list[Any] = []
        for name, state in latest.states():
            if name in wanted:
                found.append(name)
                states.append(state)
                if len(states) == BATCH:
                    await load_states(sim.runtime, found[-BATCH:], states, sim.timeout)
                    states = []
        if states:
            await load_states(sim.runtime, found[-len(states):], states, sim.timeout)
    out: dict[int, list[str]] = {}
    if found:
        out[latest.round] = found
    rest = sorted(wanted.difference(found))
    if rest:
        out[0] = rest
    return out
