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
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from pydantic import BaseModel, Field

from agentplex import Msg
from agentplex.runtime import ActorRef
from agentplex.sim import RoundFailed, Scenario, Sim

from ._crowd import MODEL_PREFIX, PLAYER_PREFIX, Answers, CrowdPlayer, GameModelActor

__all__ = [
    "DEFAULT_SPEAKERS",
    "MODEL_PREFIX",
    "PLAYER_PREFIX",
    "CrowdPlayer",
    "Guessing",
    "ask_players",
    "outcome_text",
    "question",
]

_NO_GUESS = 255
CHUNK = 50_000
"""Players asked per fan-out (bounds the driver's memory, and lets progress move)."""
IN_FLIGHT = 2
"""Fan-outs of a round in flight at once (the nodes answer one while the next travels)."""
SHOWN = 16
"""Up to this many players, each answer is a line of the run's log (``sim.log``)."""
DEFAULT_SPEAKERS = 8
"""Players who speak at the end of ``agentplex demo`` unless told otherwise."""

Ask = Callable[[Sequence[ActorRef], Msg], Awaitable[list[Any]]]


def question(outcome: str, number: int) -> Msg:
    """Round ``number``'s question, after the last round's ``outcome`` ("" before)."""
    return Msg("host", f"{outcome} Round {number}: make your guess.".strip(), "user",
               metadata={"mode": "guess"})


def outcome_text(number: int, answered: int, mean: float, target: float,
                 winners: Sequence[str]) -> str:
    """What the players hear of round ``number`` (the first five winners by name)."""
    shown = ", ".join(winners[:5]) + (f" and {len(winners) - 5} more"
                                      if len(winners) > 5 else "")
    return (f"Round {number}: {answered} players guessed; the mean was {mean:.2f}, two "
            f"thirds of it {target:.1f}; winner: {shown}.")


async def ask_players(ask: Ask, refs: Sequence[ActorRef], names: Sequence[str],
                      msg: Msg, *, shown: list[Msg] | None = None) -> Answers:
    """Ask every player ``msg`` (``ask`` is ``sim.call_many``) :data:`CHUNK` at a time,
    :data:`IN_FLIGHT` chunks at once; each chunk takes every k-th player, so that every
    node has its share of each chunk (players are placed in ranges: a chunk of neighbours
    would keep one node busy). The driver keeps one byte per player, not its answer;
    ``shown`` (if given) gets the answers themselves, for a small game's log."""
    n = len(names)
    count = max(1, -(-n // CHUNK))
    answers = Answers(bytearray([_NO_GUESS]) * n)
    parts = iter(range(count))

    async def asker() -> None:
        for j in parts:
            got = await ask(refs[j::count], msg)
            for i, value in zip(range(j, n, count), got, strict=True):
                answers.take(i, names[i], value)
                if shown is not None and isinstance(value, Msg):
                    shown.append(value)

    await asyncio.gather(*(asker() for _ in range(min(IN_FLIGHT, count))))
    return answers


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
                "max_tokens": p.max_tokens, "timeout": self.timeout}

    def _models(self) -> list[str]:
        p = self.params
        return [] if p.model == "scripted" else [f"{MODEL_PREFIX}{i}"
                                                 for i in range(p.replicas)]

    async def start(self, sim: Sim) -> None:
        names = self._models()
        if names:  # the replicas, spread where the players are
            p = self.params
            sim.log(f"placing {p.replicas} model replica(s) of {p.model}")
            loop = asyncio.get_running_loop()
            began = loop.time()
            await sim.spawn(GameModelActor, names, [{
                "model": p.model, "requests_per_second": p.rate, "options": p.options,
            }] * p.replicas)
            await sim.runtime.call_many(names, "describe", timeout=600)  # loaded
            sim.log(f"model ready in {loop.time() - began:.1f}s")

    async def setup(self, sim: Sim) -> None:
        sim.state["outcome"] = ""

    async def step(self, sim: Sim) -> None:
        names = sim.names
        shown: list[Msg] | None = [] if len(names) <= SHOWN else None
        answers = await ask_players(sim.call_many, sim.agents, names,
                                    question(sim.state["outcome"], sim.round), shown=shown)
        for m in shown or ():
            sim.log(f"{m.name}: {m.get_text_content()}")
        if not answers.answered:
            raise RoundFailed(f"round {sim.round}: no player answered; the first failure: "
                              f"{sim.first_error}")
        target, winners = answers.winners(names)
        mean = answers.total / answers.answered
        outcome = outcome_text(sim.round, answers.answered, mean, target, winners)
        sim.state["outcome"] = outcome
        sim.note(outcome)
        sim.log(outcome)
        sim.record(answered=answers.answered, mean=round(mean, 4), target=round(target, 2),
                   winners=len(winners), tokens_out=answers.tokens_out)

    async def finish(self, sim: Sim) -> None:
        """``speakers`` players (a sample drawn with the seed) say one sentence each, all
        at once; ``sim.state["discussion"]`` holds ``[name, text]`` pairs, and
        ``sim.state["engine"]`` what each local model replica's engine counted."""
        n = len(sim.agents)
        count = min(self.params.speakers, n)
        if count:
            chosen = sorted(random.Random(self.seed).sample(range(n), count))
            outcome = sim.state["outcome"]
            ask = Msg("host", f"{outcome} The game is over.", "user",
                      metadata={"mode": "discuss", "summary": outcome})
            said = await sim.call_many([sim.agents[i] for i in chosen], ask)
            sim.state["discussion"] = [[m.name, m.get_text_content() or ""] for m in said
                                       if isinstance(m, Msg)]
        names = self._models()
        if names:
            described = await sim.runtime.call_many(names, "describe", timeout=60,
                                                    return_exceptions=True)
            sim.state["engine"] = [d["engine"] for d in described
                                   if isinstance(d, dict) and d.get("engine")]
