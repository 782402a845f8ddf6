"""The main job: a "guess two thirds of the average" simulation, then a short discussion.

Every player is an agent in one :class:`MsgHub`; all of them share one model instance, so a
local model batches their concurrent requests. Each round the players guess at once
(fan-out), the host announces the winner, and at the end some players (all of a small
game) say one sentence each, all at once.
"""

from __future__ import annotations

import asyncio
import json
import random
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, Field

from ...agent import AgentBase, TruncationPolicy
from ...message import Msg
from ...model import ChatModelBase, ChatResponse, ScriptedChatModel, collect
from ...orchestration import MsgHub, fanout_pipeline

__all__ = [
    "GameResult",
    "GameStats",
    "Guess",
    "Player",
    "make_players",
    "play",
    "scripted_players_model",
]


class Guess(BaseModel):
    """A player's move."""

    number: int = Field(ge=0, le=100, description="your guess, an integer from 0 to 100")


@dataclass
class GameStats:
    """What the game counted while it ran."""

    model_calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    model_seconds: float = 0.0
    messages: int = 0

    def record(self, response: ChatResponse, seconds: float) -> None:
        self.model_calls += 1
        self.model_seconds += seconds
        if response.usage is not None:
            self.input_tokens += response.usage.input_tokens
            self.output_tokens += response.usage.output_tokens


@dataclass
class GameResult:
    """Rounds played: each round's guesses, target and winners; plus the counters."""

    rounds: list[dict[str, Any]] = field(default_factory=list)
    discussion: list[Msg] = field(default_factory=list)
    stats: GameStats = field(default_factory=GameStats)
    seconds: float = 0.0


RULES = (
    "We play 'guess two thirds of the average'. Every player picks an integer from 0 to 100. "
    "Whoever is closest to two thirds of the average of all guesses wins the round."
)

DEFAULT_SPEAKERS = 8
"""Players who speak at the end of a game unless told otherwise."""

_NUMBER = re.compile(r"-?\d+")

PERSONAS = (
    "You like low numbers.",
    "You expect the others to guess high.",
    "You are cautious and stay near the middle.",
    "You are bold and like surprising numbers.",
    "You reason step by step about what the others will do.",
    "You trust your gut.",
)


class Player(AgentBase):
    """A game player: remembers what it hears and asks the shared model for its moves."""

    def __init__(self, name: str, model: ChatModelBase, stats: GameStats,
                 persona: str = "", seed: int = 0, max_tokens: int = 48,
                 max_input_tokens: int = 320) -> None:
        super().__init__(name)
        self.model = model
        self.context = TruncationPolicy(max_input_tokens)
        """Keeps the prompt within the model's budget: the newest things heard win."""
        self.stats = stats
        self.persona = persona
        self.seed = seed
        self.max_tokens = max_tokens
        self.memory: list[Msg] = []
        self.register_state("memory", _msgs_to_json, _msgs_from_json)

    async def observe(self, msg: Msg | list[Msg] | None) -> None:
        for m in [msg] if isinstance(msg, Msg) else (msg or []):
            self.memory.append(m)

    async def _prompt(self, instruction: str, history: bool = True) -> list[dict[str, str]]:
        # what every player shares first (the rules, then what all heard), who this player
        # is last: the prompts of a round then share most of their tokens, whose keys and
        # values a local engine computes once (its prefix cache)
        system = RULES
        instruction = f"You are {self.name}. {self.persona} {instruction}"
        lines = self._heard() if history else []
        if not self.context.fits_as_text(self.model, [("system", system),
                                                      *(("user", line) for line in lines),
                                                      ("user", instruction)]):
            kept = await self.context.fit(self.model, [
                Msg("system", system, "system"), *(Msg("user", line, "user") for line in lines),
                Msg("user", instruction, "user")], agent_name=self.name)
            lines = [m.get_text_content() or "" for m in kept[1:-1]]
        history_text = "\n".join(lines)
        return [
            {"role": "system", "content": system},
            {"role": "user", "content": f"{history_text}\n\n{instruction}".strip()},
        ]

    def _heard(self) -> list[str]:
        """What this player remembers hearing, one line each (oldest first)."""
        return [f"{m.name}: {m.get_text_content() or ''}" for m in self.memory]

    def _remembered(self) -> int:
        """How many messages this player remembers."""
        return len(self.memory)

    def _sampling(self, temperature: float) -> dict[str, Any]:
        """Sample (so players differ) yet reproducibly: a seed per player and call."""
        options: dict[str, Any] = {"temperature": temperature}
        if self.model.provider in ("transformers", "scripted"):
            options["seed"] = self.seed * 1000 + self._remembered()
        return options

    async def _ask(self, instruction: str, structured: bool, history: bool = True
                   ) -> ChatResponse:
        started = time.perf_counter()
        response = await collect(await self.model(
            await self._prompt(instruction, history),
            structured_model=Guess if structured else None,
            max_new_tokens=self.max_tokens,
            **self._sampling(0.8 if structured else 0.4),
        ))
        self.stats.record(response, time.perf_counter() - started)
        return response

    async def reply(self, msg: Msg | None = None, *, mode: str = "guess",
                    summary: str = "") -> Msg:
        if msg is not None:
            await self.observe(msg)
        if mode == "guess":
            response = await self._ask("Reply with your guess as JSON.", structured=True)
            number = _guess_of(response)
            out = Msg(self.name, f"I guess {number}.", "assistant",
                      metadata={"guess": number})
        else:
            response = await self._ask(
                f"{summary} The game is over. In one short sentence, say how you will guess "
                "next time and why.", structured=False, history=False)
            text = " ".join(response.text.split())[:200] or "(no comment)"
            out = Msg(self.name, text, "assistant")
        self.memory.append(out)
        self.stats.messages += 1
        await self.print(out)
        return out


def _msgs_to_json(msgs: list[Msg]) -> list[dict[str, Any]]:
    return [m.to_dict() for m in msgs]


def _msgs_from_json(data: list[dict[str, Any]]) -> list[Msg]:
    return [Msg.from_dict(d) for d in data]


def _summary_for(agent: Player, result: GameResult) -> str:
    """What ``agent`` should remember of the game, in words a small model can use."""
    parts = []
    for r in result.rounds:
        won = "you won" if agent.name in r["winners"] else f"{', '.join(r['winners'])} won"
        parts.append(f"In round {r['round']} you guessed {r['guesses'][agent.name]}, "
                     f"two thirds of the average was {r['target']}, and {won}.")
    return " ".join(parts)


def _guess_of(response: ChatResponse) -> int:
    """The guess in a response: the validated structured output, else the first number."""
    if response.metadata and "number" in response.metadata:
        return int(response.metadata["number"])
    match = _NUMBER.search(response.text)
    return max(0, min(100, int(match.group()))) if match else 50


def _speakers(agents: Sequence[Player], speakers: int | None, seed: int) -> list[Player]:
    count = min(len(agents), DEFAULT_SPEAKERS if speakers is None else speakers)
    if count >= len(agents):
        return list(agents)
    return [agents[i] for i in sorted(random.Random(seed).sample(range(len(agents)), count))]


def scripted_players_model(seed: int = 0) -> ScriptedChatModel:
    """A scripted stand-in model: plausible, deterministic moves without a language model."""
    rng = random.Random(seed)

    def answer(messages: Sequence[Any], *, structured_model: Any = None, **_: Any) -> str:
        if structured_model is not None:
            return json.dumps({"number": rng.randint(0, 66)})
        return rng.choice([
            "Guessing lower than everyone else pays off.",
            "The average keeps falling, so I will aim lower next time.",
            "Two thirds of a small number is even smaller.",
        ])

    return ScriptedChatModel(answer, model_name="scripted-players")


def make_players(model: ChatModelBase, count: int, stats: GameStats,
                 seed: int = 0) -> list[Player]:
    """``count`` players sharing ``model`` and counting into ``stats``."""
    return [Player(f"Player{i + 1}", model, stats, persona=PERSONAS[i % len(PERSONAS)],
                   seed=seed * 10_000 + i) for i in range(count)]


async def play(
    agents: Sequence[Player],
    *,
    rounds: int = 2,
    speakers: int | None = None,
    seed: int = 0,
    on_round: Callable[[int], None] | None = None,
) -> GameResult:
    """Play ``rounds`` rounds with ``agents`` (see :func:`make_players`), then let
    ``speakers`` of them (default: up to 8, a sample drawn with ``seed``; 0: none) each
    say one sentence, all at once."""
    if not agents:
        raise ValueError("the game needs at least one player")
    result = GameResult(stats=agents[0].stats)
    started = time.perf_counter()
    host = Msg("host", RULES, "system")
    async with MsgHub(agents, announcement=host, enable_auto_broadcast=False) as hub:
        result.stats.messages += 1  # the rules (the players count what they say)
        for r in range(1, rounds + 1):
            call = Msg("host", f"Round {r}: make your guess.", "user")
            replies = await fanout_pipeline(agents, call)
            guesses = {m.name: int((m.metadata or {})["guess"]) for m in replies}
            target = 2 / 3 * sum(guesses.values()) / len(guesses)
            best = min(abs(g - target) for g in guesses.values())
            winners = sorted(n for n, g in guesses.items() if abs(g - target) == best)
            result.rounds.append({"round": r, "guesses": guesses, "target": round(target, 2),
                                  "winners": winners})
            await hub.broadcast(Msg(
                "host",
                f"Round {r}: guesses {guesses}; two thirds of the average is {target:.1f}; "
                f"winner: {', '.join(winners)}.",
                "user",
            ))
            result.stats.messages += 2  # the host's call and the round's result
            if on_round is not None:
                on_round(r)
        chosen = _speakers(agents, speakers, seed)
        if chosen:  # all at once: a big game's discussion must not go one by one
            said = await asyncio.gather(*(
                agent(None, mode="discuss", summary=_summary_for(agent, result))
                for agent in chosen))
            for agent, msg in zip(chosen, said, strict=True):
                await hub.broadcast(msg, exclude=[agent])
            result.discussion.extend(said)
    result.seconds = time.perf_counter() - started
    return result
