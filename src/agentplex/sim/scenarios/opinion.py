"""Bounded-confidence opinion dynamics (Deffuant et al.) on a seeded small-world network.

Each agent holds an opinion in [0, 1]. Each round every agent hears the opinions of a few
of its neighbours (each agent its own message) and moves towards those within ``eps`` of
its own, by ``mu`` of the difference. Rule based; with ``--set model=SPEC`` (any
``init_chat_model`` string, e.g. ``transformers:default``) each agent also has the model
state its opinion in one sentence, through structured output.

    agentplex run agentplex.sim.scenarios.opinion:Opinion --agents 1000 --rounds 10 \\
        --set eps=0.3

Copy this file to start your own scenario: ``agentplex run my_opinion.py:Opinion``.
"""

from __future__ import annotations

import itertools
from typing import Any

from pydantic import BaseModel, Field

from agentplex import AgentBase, Msg
from agentplex.model import ChatModelBase, collect, init_chat_model
from agentplex.sim import Scenario, Sim

MEMORY = 5
"""What a voter keeps of what it heard from outside (interventions), newest last."""


class Statement(BaseModel):
    """What a voter says of its opinion (the model's structured output)."""

    opinion: float = Field(ge=0.0, le=1.0, description="your opinion, from 0 to 1")
    statement: str = Field(description="one short sentence saying what you think")


_models: dict[str, ChatModelBase] = {}


def _model(spec: str) -> ChatModelBase:
    """One model per process and spec, shared by all voters there (a local model then
    batches their requests)."""
    if spec not in _models:
        _models[spec] = init_chat_model(spec)
    return _models[spec]


class Voter(AgentBase):
    """An agent with an opinion; it moves towards the opinions it hears that are close
    enough to its own."""

    def __init__(self, name: str, opinion: float = 0.5, model: str = "") -> None:
        super().__init__(name)
        self.opinion = opinion
        self.model = model
        self.heard: list[str] = []
        self.register_state("opinion")
        self.register_state("heard")
        self.set_console_output_enabled(False)

    async def observe(self, msg: Msg | list[Msg] | None) -> None:
        for m in [msg] if isinstance(msg, Msg) else (msg or []):
            self.heard = [*self.heard, m.get_text_content() or ""][-MEMORY:]
            pushed = (m.metadata or {}).get("opinion")
            if isinstance(pushed, (int, float)):  # an intervention that argues a position
                self.opinion = 0.5 * (self.opinion + float(pushed))

    async def reply(self, msg: Msg | None = None) -> Msg:
        meta = (msg.metadata if msg is not None else None) or {}
        if "survey" in meta:  # a question from the operator: answer it, remember it
            self.heard = [*self.heard, msg.get_text_content() or "" if msg else ""][-MEMORY:]
            return Msg(self.name, f"My opinion is {self.opinion:.3f}.", "assistant",
                       metadata={"opinion": self.opinion})
        eps, mu = float(meta.get("eps", 0.2)), float(meta.get("mu", 0.5))
        for other in meta.get("heard", ()):
            if abs(other - self.opinion) < eps:
                self.opinion += mu * (other - self.opinion)
        text = f"My opinion is {self.opinion:.3f}."
        if self.model:
            text = await self._state_opinion()
        return Msg(self.name, text, "assistant", metadata={"opinion": self.opinion})

    async def _state_opinion(self) -> str:
        """The model states this voter's opinion (the rule decided it)."""
        response = await collect(await _model(self.model)(
            [{"role": "system", "content": "You take part in a debate on a scale from 0 "
              "(fully against) to 1 (fully for)."},
             {"role": "user", "content": f"Your opinion is {self.opinion:.2f}. "
              f"Recently you heard: {' | '.join(self.heard) or 'nothing'}. Say it as JSON."}],
            structured_model=Statement, max_new_tokens=64, temperature=0.0))
        said = (response.metadata or {}).get("statement")
        return str(said) if said else " ".join(response.text.split())[:200]


def neighbours(index: int, count: int, degree: int, rewire: float, seed: int) -> list[int]:
    """Agent ``index``'s neighbours on a ring lattice of ``degree`` whose edges are each
    rewired to a random agent with probability ``rewire`` (Watts-Strogatz), computed
    on the spot from ``seed`` (a million agents' network is never stored)."""
    out = []
    for d in range(1, degree // 2 + 1):
        for j in ((index + d) % count, (index - d) % count):
            h = _mix(seed, index, j)
            if h % 10_000 < rewire * 10_000:
                j = (h >> 16) % count
            if j != index:
                out.append(j)
    return out


def _mix(seed: int, a: int, b: int) -> int:
    """A fast, well-spread 64-bit hash of three integers (splitmix64's finalizer)."""
    x = (seed * 0x9E3779B97F4A7C15 + min(a, b) * 0xBF58476D1CE4E5B9
         + max(a, b) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
    return x ^ (x >> 31)


def clusters(opinions: list[float], eps: float) -> int:
    """Groups of opinions: sorted, a gap of ``eps`` or more starts a new group."""
    ordered = sorted(opinions)
    return 1 + sum(1 for a, b in itertools.pairwise(ordered) if b - a >= eps) \
        if ordered else 0


class Opinion(Scenario):
    """Bounded confidence on a small-world network; metrics: mean, spread, clusters."""

    agent = Voter
    name_prefix = "voter-"

    class Params(BaseModel):
        eps: float = Field(0.2, gt=0, le=1, description="confidence bound")
        mu: float = Field(0.5, gt=0, le=1, description="how far a voter moves")
        degree: int = Field(6, ge=2, description="neighbours on the network")
        rewire: float = Field(0.1, ge=0, le=1, description="share of edges rewired")
        listen: int = Field(2, ge=1, description="neighbours heard per round")
        model: str = Field("", description="a model that states each opinion (optional)")

    def agent_args(self, index: int) -> dict[str, Any]:
        rng = _mix(self.seed, index, -1)
        return {"opinion": (rng % 1_000_000) / 1_000_000, "model": self.params.model}

    async def setup(self, sim: Sim) -> None:
        sim.state["opinions"] = [self.agent_args(i)["opinion"] for i in range(self.agents)]

    async def step(self, sim: Sim) -> None:
        p = self.params
        opinions: list[float] = sim.state["opinions"]
        n = len(opinions)
        messages = []
        for i in range(n):
            near = neighbours(i, n, p.degree, p.rewire, self.seed)
            heard = [opinions[j] for j in sim.rng.sample(near, min(p.listen, len(near)))]
            messages.append(Msg("operator", "Your neighbours' opinions.", "user",
                                metadata={"heard": heard, "eps": p.eps, "mu": p.mu}))
        replies = await sim.call_many(sim.agents, messages)
        answered = 0
        for i, reply in enumerate(replies):
            if isinstance(reply, Msg):
                opinions[i] = float((reply.metadata or {})["opinion"])
                answered += 1
        mean = sum(opinions) / n
        spread = (sum((o - mean) ** 2 for o in opinions) / n) ** 0.5
        sim.record(mean=round(mean, 6), spread=round(spread, 6),
                   clusters=clusters(opinions, p.eps), answered=answered)
