"""A small scenario loaded from its file (``tests/support/sim_scenario.py:Tally``), as
``agentplex run`` loads a user's: each agent adds the numbers it is told to its total."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel

from agentplex import AgentBase, Msg
from agentplex.sim import Scenario, Sim


class Counter(AgentBase):
    """Adds up what it is asked; remembers what it heard (interventions, questions)."""

    def __init__(self, name: str, start: int = 0) -> None:
        super().__init__(name)
        self.total = start
        self.heard: list[str] = []
        self.register_state("total")
        self.register_state("heard")
        self.set_console_output_enabled(False)

    async def observe(self, msg: Msg | list[Msg] | None) -> None:
        for m in [msg] if isinstance(msg, Msg) else (msg or []):
            self.heard.append(m.get_text_content() or "")

    async def reply(self, msg: Msg | None = None) -> Msg:
        meta = (msg.metadata if msg is not None else None) or {}
        if "survey" in meta:
            self.heard.append(msg.get_text_content() or "" if msg else "")
            await _wait_at_gate(os.environ.get("TALLY_SURVEY_GATE"), "surveyed")
            return Msg(self.name, f"{self.name} has {self.total}", "assistant")
        if meta.get("fail") == self.name:
            raise RuntimeError("asked to fail")
        if meta.get("slow") == self.name:
            await asyncio.sleep(30)  # past the run's --timeout
        if meta.get("hold"):
            await asyncio.sleep(float(meta["hold"]))  # a round long enough to kill a node
        self.total += int(meta["add"]) * int(meta.get("scale", 1))
        return Msg(self.name, f"total {self.total}", "assistant",
                   metadata={"total": self.total, "heard": len(self.heard)})


def _at_gate(folder: str | None, what: str) -> Path | None:
    """With a ``folder`` that exists (a test's gate): say ``what-PID`` there; the gate."""
    if not folder or not os.path.isdir(folder):
        return None
    (Path(folder) / f"{what}-{os.getpid()}").touch()
    return Path(folder)


async def _wait_at_gate(folder: str | None, what: str) -> None:
    """At a test's gate (see :func:`_at_gate`), wait (120 s at most) for ``go`` (a test
    kills a node meanwhile)."""
    gate = _at_gate(folder, what)
    if gate is None:
        return
    for _ in range(2400):
        if (gate / "go").exists():
            return
        await asyncio.sleep(0.05)


class Tally(Scenario):
    """Each round every agent gets its own number (from ``sim.rng``) times ``scale``."""

    agent = Counter
    name_prefix = "counter-"
    groups: ClassVar[dict[str, list[int]]] = {"firsts": [0, 1]}

    class Params(BaseModel):
        scale: int = 1
        pause: float = 0.0
        fail: str = ""
        slow: str = ""
        hold: float = 0.0
        """Seconds every agent takes to answer in round ``hold_at``."""
        hold_at: int = 0
        gate: str = ""
        """A folder: in round ``hold_at``, once its calls are answered, ``step`` writes
        ``called`` there and waits (120 s at most) for ``go`` (a test kills a node)."""

    def agent_args(self, index: int) -> dict[str, Any]:
        return {"start": index}

    async def start(self, sim: Sim) -> None:
        sim.log(f"start at round {sim.round}: history {sim.state.get('history')}, "
                f"scale {sim.params.scale}")

    async def setup(self, sim: Sim) -> None:
        sim.state["history"] = []

    async def step(self, sim: Sim) -> None:
        held = {"hold": self.params.hold} if sim.round == self.params.hold_at else {}
        messages = [sim.say("add", add=sim.rng.randint(0, 9), scale=self.params.scale,
                            fail=self.params.fail, slow=self.params.slow, **held)
                    for _ in sim.agents]
        replies = await sim.call_many(sim.agents, messages)
        totals = [int((r.metadata or {})["total"]) for r in replies if isinstance(r, Msg)]
        sim.state["history"].append(sum(totals))
        sim.record(total=sum(totals), answered=len(totals),
                   heard=sum(int((r.metadata or {})["heard"]) for r in replies
                             if isinstance(r, Msg)))
        if self.params.pause:
            await asyncio.sleep(self.params.pause)
        if self.params.gate and sim.round == self.params.hold_at:
            gate = Path(self.params.gate)
            (gate / "called").touch()
            for _ in range(2400):
                if (gate / "go").exists():
                    break
                await asyncio.sleep(0.05)
        if str(sim.round) == os.environ.get("TALLY_HANG_AT"):  # a driver to kill -9 here
            await asyncio.Event().wait()
