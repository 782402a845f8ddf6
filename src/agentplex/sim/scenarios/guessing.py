"""The guessing game ("guess two thirds of the average") as a scenario: what ``agentplex
demo`` plays, written against ``agentplex.sim`` as a user would.

Every player is a :class:`~agentplex.sim.scenarios._crowd.CrowdPlayer`; each round they
are all asked at once, with the previous round's outcome in the question (so nothing else
has to reach a million players between rounds). With ``--set model=scripted`` (default)
each player's answers come from a seeded stand-in model in its own process; with another
model (``--set model=transformers:default``) ``replicas`` model actors serve all players.

    agentplex run agentplex.sim.scenarios.guessing:Guessing --agents 1000 --rounds 3
    agentplex run agentplex.sim.scenarios.guessing:Guessing --agents 100000 --nodes 2
"""

from __future__ import annotations

import asyncio
import random
from typing import Any

from pydantic import BaseModel, Field

from agentplex import Msg
from agentplex.sim import Scenario, Sim

from ._crowd import MODEL_PREFIX, PLAYER_PREFIX, Answers, CrowdPlayer, GameModelActor

__all__ = ["Guessing"]

_NO_GUESS = 255
CHUNK = 50_000
"""Players asked per fan-out."""


class Guessing(Scenario):
    """Two thirds of the average: metrics per round are how many answered, the mean guess,
    the target, how many won and the tokens the model wrote."""

    agent = CrowdPlayer
    name_prefix = PLAYER_PREFIX
    noun = "players"

    class Params(BaseModel):
        model: str = Field("scripted", description="init_chat_model string, or scripted")
        replicas: int = Field(1, ge=1, description="model actors (not scripted)")
        max_tokens: int = Field(48, ge=1)
        rate: float | None = Field(None, gt=0, description="requests/s for all players")
        options: dict[str, Any] = Field(default_factory=dict,
                                        description="init_chat_model keyword arguments")
        speakers: int = Field(0, ge=0, description="players who speak after the game")

    def agent_args(self, index: int) -> dict[str, Any]:
        p = self.params
        return {"seed": self.seed, "model": p.model, "replicas": p.replicas,
                "max_tokens": p.max_tokens}

    async def start(self, sim: Sim) -> None:
        p = self.params
        if p.model != "scripted":  # the replicas, spread where the players are
            names = [f"{MODEL_PREFIX}{i}" for i in range(p.replicas)]
            await sim.spawn(GameModelActor, names, [{
                "model": p.model, "requests_per_second": p.rate, "options": p.options,
            }] * p.replicas)
            await sim.runtime.call_many(names, "describe", timeout=600)  # loaded

    async def setup(self, sim: Sim) -> None:
        sim.state["outcome"] = ""

    async def step(self, sim: Sim) -> None:
        outcome = sim.state["outcome"]
        question = Msg("host", f"{outcome} Round {sim.round}: make your guess.".strip(),
                       "user", metadata={"mode": "guess"})
        names = sim.names
        n = len(names)
        answers = Answers(bytearray([_NO_GUESS]) * n)
        # a part of the players at a time, each part every k-th player (every node has its
        # share of each), two parts in flight: the driver holds one byte per player, not
        # a million answers
        parts = iter(range(max(1, -(-n // CHUNK))))
        count = max(1, -(-n // CHUNK))

        async def ask() -> None:
            for j in parts:
                got = await sim.call_many(sim.agents[j::count], question)
                for i, value in zip(range(j, n, count), got, strict=True):
                    answers.take(i, names[i], value)

        await asyncio.gather(ask(), ask())
        target, winners = answers.winners(names)
        mean = answers.total / max(1, answers.answered)
        shown = ", ".join(winners[:5]) + (f" and {len(winners) - 5} more"
                                          if len(winners) > 5 else "")
        outcome = (f"Round {sim.round}: {answers.answered} players guessed; the mean was "
                   f"{mean:.2f}, two thirds of it {target:.1f}; winner: {shown}.")
        sim.state["outcome"] = outcome
        sim.note(outcome)
        sim.record(answered=answers.answered, mean=round(mean, 4), target=round(target, 2),
                   winners=len(winners), tokens_out=answers.tokens_out)

    async def finish(self, sim: Sim) -> None:
        """``speakers`` players (a sample drawn with the seed) say one sentence each, all
        at once; ``sim.state["discussion"]`` holds ``[name, text]`` pairs."""
        n = len(sim.agents)
        count = min(self.params.speakers, n)
        if not count:
            return
        chosen = sorted(random.Random(self.seed).sample(range(n), count))
        outcome = sim.state["outcome"]
        ask = Msg("host", f"{outcome} The game is over.", "user",
                  metadata={"mode": "discuss", "summary": outcome})
        said = await sim.call_many([sim.agents[i] for i in chosen], ask)
        sim.state["discussion"] = [[m.name, m.get_text_content() or ""] for m in said
                                   if isinstance(m, Msg)]
