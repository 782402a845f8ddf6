"""A player of the "guess two thirds of the average" game: its rules, its personas, how
it prompts its model and reads a guess. The game itself is the scenario
:mod:`.guessing`; its players are :class:`~._crowd.CrowdPlayer`, built on this class.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, Field

from ...agent import AgentBase, TruncationPolicy
from ...message import Msg
from ...model import ChatModelBase, ChatResponse, collect

__all__ = ["PERSONAS", "RULES", "GameStats", "Guess", "Player"]


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


RULES = (
    "We play 'guess two thirds of the average'. Every player picks an integer from 0 to 100. "
    "Whoever is closest to two thirds of the average of all guesses wins the round."
)

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
        # what every player shares first (the rules, then what all heard, the persona that a
        # sixth of the players share, the instruction), who this player is last: the prompts
        # of a round then share all but their last few tokens (about 10 of 90 on the embedded
        # model, where naming the player first left 27), whose keys and values a local engine
        # computes once (its prefix cache)
        system = RULES
        instruction = f"{self.persona} {instruction} You are {self.name}.".strip()
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


def _guess_of(response: ChatResponse) -> int:
    """The guess in a response: the validated structured output, else the first number."""
    if response.metadata and "number" in response.metadata:
        return int(response.metadata["number"])
    match = _NUMBER.search(response.text)
    return max(0, min(100, int(match.group()))) if match else 50
