"""The main job across node processes: players placed in batches on many nodes, asked
each round with one fan-out, and a model shared by all of them.

The players (:class:`CrowdPlayer`) are the game's players, built on a node from a count
and a few settings (``spawn_many`` sends one request per node, whatever the count); each
knows its number from its name. Their model is either a scripted stand-in in each node
process (guesses deterministic per seed and player) or ``model-0`` … ``model-{R-1}``,
:class:`GameModelActor` replicas placed on the nodes (the embedded local model, or a
hosted model behind one shared rate limiter). Each round's question carries the previous
round's outcome, so nothing else has to reach a million players between rounds.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from ..cluster import ModelActor, RemoteChatModel, Resources
from ..message import Msg, TextBlock
from ..model import (
    ChatModelBase,
    ChatResponse,
    ChatResult,
    ChatUsage,
    Messages,
    ToolChoice,
    init_chat_model,
)
from ..model.wrappers import RateLimitedModel, RateLimiter
from ..runtime import ActorError, HandlerError, Runtime
from ..tracing.lowlevel import transcribe
from ._demo import PERSONAS, GameStats, Player, _guess_of

__all__ = [
    "CrowdPlayer",
    "CrowdResult",
    "DemoOptions",
    "GameModelActor",
    "PLAYER_PREFIX",
    "RoundReport",
    "SeededPlayersModel",
    "crowd_model",
    "place_players",
    "play_crowd",
]

PLAYER_PREFIX = "player-"
MODEL_PREFIX = "model-"
MEMORY = 6
"""Messages a crowd player keeps (a million players cannot each keep the whole game)."""

_SAYINGS = (
    "Guessing lower than everyone else pays off.",
    "The average keeps falling, so I will aim lower next time.",
    "Two thirds of a small number is even smaller.",
)


class SeededPlayersModel(ChatModelBase):
    """The scripted stand-in of a crowd: each answer depends only on the call's ``seed``
    (the player's seed and its memory's length), so a run is the same on any number of
    nodes. Keeps nothing per call (a node answers a million calls a round)."""

    provider = "scripted"

    def __init__(self) -> None:
        super().__init__("scripted-players", False)

    async def _call(self, messages: Messages, tools: list[dict[str, Any]] | None,
                    tool_choice: ToolChoice | None, structured_model: type[BaseModel] | None,
                    **kwargs: Any) -> ChatResult:
        rng = random.Random(kwargs.get("seed", 0))
        if structured_model is not None:
            number = rng.randint(0, 66)
            text, metadata = json.dumps({"number": number}), {"number": number}
        else:
            text, metadata = rng.choice(_SAYINGS), None
        words = sum(len(str(m.get("content", "")).split()) for m in messages
                    if isinstance(m, dict))
        return ChatResponse(id=f"scripted-{rng.getrandbits(32):08x}",
                            content=[TextBlock(text=text)], metadata=metadata,
                            usage=ChatUsage(input_tokens=words,
                                            output_tokens=len(text.split())),
                            finish_reason="stop")


_models: dict[tuple[str, int], ChatModelBase] = {}


def crowd_model(model: str, replicas: int) -> ChatModelBase:
    """The model of this process's players: one per process, shared by all of them."""
    key = (model, replicas)
    if key not in _models:
        _models[key] = (SeededPlayersModel() if model == "scripted" else RemoteChatModel(
            [f"{MODEL_PREFIX}{i}" for i in range(replicas)], model_name=model, timeout=600))
    return _models[key]


class GameModelActor(ModelActor):
    """A model replica of the game: ``model`` built when it starts, behind a rate limiter
    of ``requests_per_second`` when given (one replica: one limit for every player)."""

    def __init__(self, model: str, requests_per_second: float | None = None) -> None:
        super().__init__(model)
        self.requests_per_second = requests_per_second

    async def on_start(self) -> None:
        built = init_chat_model(self._spec or "")
        if self.requests_per_second:
            built = RateLimitedModel(built, RateLimiter(self.requests_per_second))
        self.model = built


class CrowdPlayer(Player):
    """A player built on its node: its number comes from its name (``player-17``)."""

    def __init__(self, seed: int = 0, model: str = "scripted", replicas: int = 1,
                 max_tokens: int = 48) -> None:
        super().__init__(PLAYER_PREFIX, crowd_model(model, replicas), GameStats(),
                         max_tokens=max_tokens)
        self.base_seed = seed

    async def on_start(self) -> None:
        self.name = self.ref.name
        index = int(self.name.rpartition("-")[2] or 0)
        self.persona = PERSONAS[index % len(PERSONAS)]
        self.seed = self.base_seed * 1_000_003 + index

    async def observe(self, msg: Msg | list[Msg] | None) -> None:
        await super().observe(msg)
        del self.memory[:-MEMORY]

    async def reply(self, msg: Msg | None = None, *, mode: str = "guess",
                    summary: str = "") -> Msg:
        meta = (msg.metadata if msg is not None else None) or {}
        mode = meta.get("mode", mode)
        if msg is not None and mode == "guess":
            await self.observe(msg)
        if mode == "guess":
            response = await self._ask("Reply with your guess as JSON.", structured=True)
            number = _guess_of(response)
            out = Msg(self.name, f"I guess {number}.", "assistant", metadata={"guess": number})
        else:
            response = await self._ask(
                f"{meta.get('summary', summary)} The game is over. In one short sentence, "
                "say how you will guess next time and why.", structured=False, history=False)
            out = Msg(self.name, " ".join(response.text.split())[:200] or "(no comment)",
                      "assistant")
        usage = response.usage
        out.metadata = {**(out.metadata or {}),
                        "tokens_in": usage.input_tokens if usage else 0,
                        "tokens_out": usage.output_tokens if usage else 0}
        self.memory.append(out)
        del self.memory[:-MEMORY]
        return out


@dataclass
class DemoOptions:
    """The settings of one ``agentplex demo`` run."""

    agents: int
    rounds: int
    model: str
    nodes: int = 0
    address: str | None = None
    replicas: int = 1
    rate: float | None = None
    timeout: float = 600.0
    runs_dir: Path = Path("runs")
    seed: int = 0
    replay: Path | None = None
    speakers: int | None = None
    sample: float = 1.0
    model_options: dict[str, Any] = field(default_factory=dict)
    """Arguments for ``init_chat_model`` (a model in this process only)."""

    def config(self) -> dict[str, Any]:
        """What the manifest records of these settings."""
        out = {"agents": self.agents, "rounds": self.rounds, "model": self.model,
               "nodes": self.nodes, "address": self.address, "replicas": self.replicas,
               "rate": self.rate, "speakers": self.speakers, "sample": self.sample}
        if self.model_options:
            out["model_options"] = self.model_options
        return out


@dataclass
class RoundReport:
    """One round across the nodes."""

    round: int
    answered: int
    seconds: float
    target: float
    winners: list[str]
    tokens_out: int


@dataclass
class CrowdResult:
    """What a game across nodes did: each round, the discussion and the counters."""

    rounds: list[RoundReport] = field(default_factory=list)
    discussion: list[Msg] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    stats: GameStats = field(default_factory=GameStats)
    seconds: float = 0.0
    placement_seconds: float = 0.0


Progress = Callable[[int, int, int, int, float], None]
"""Called as answers arrive: (round, answered, total, tokens out, seconds)."""

CHUNK = 50_000
"""Players asked per fan-out (bounds the caller's memory, and lets progress move)."""


async def _ask_all(rt: Runtime, names: Sequence[str], question: Msg, timeout: float,
                   progress: Callable[[int, int], None]) -> tuple[list[Msg], dict[str, str]]:
    replies: list[Msg] = []
    failed: dict[str, str] = {}
    tokens = 0
    for i in range(0, len(names), CHUNK):
        chunk = names[i:i + CHUNK]
        got = await rt.call_many(chunk, question, timeout=timeout, return_exceptions=True)
        for name, value in zip(chunk, got, strict=True):
            if isinstance(value, Msg):
                replies.append(value)
                tokens += int((value.metadata or {}).get("tokens_out", 0))
            elif isinstance(value, (ActorError, HandlerError)):
                failed[name] = f"{type(value).__name__}: {value}"
            else:
                failed[name] = repr(value)
        progress(len(replies), tokens)
    return replies, failed


def _tally(replies: Sequence[Msg], stats: GameStats) -> None:
    for m in replies:
        meta = m.metadata or {}
        stats.model_calls += 1
        stats.input_tokens += int(meta.get("tokens_in", 0))
        stats.output_tokens += int(meta.get("tokens_out", 0))
    stats.messages += 2 * len(replies)


async def play_crowd(rt: Runtime, names: Sequence[str], *, rounds: int, speakers: int,
                     seed: int, timeout: float, on_progress: Progress) -> CrowdResult:
    """Play ``rounds`` rounds with the players ``names`` (wherever they live), then let
    ``speakers`` of them (a sample drawn with ``seed``) speak at once.

    Each round is one fan-out (:meth:`Runtime.call_many`: one frame per node); a player
    that fails or does not answer in ``timeout`` seconds is reported in ``failed`` and
    the game goes on. The transcript gets the host's questions and announcements here,
    and every player's answer from the node that hosts it.
    """
    result = CrowdResult()
    started = time.perf_counter()
    outcome = ""
    for r in range(1, rounds + 1):
        began = time.perf_counter()
        question = Msg("host", f"{outcome} Round {r}: make your guess.".strip(), "user",
                       metadata={"mode": "guess"})
        transcribe(question, None)

        def moved(answered: int, tokens: int, r: int = r, began: float = began) -> None:
            on_progress(r, answered, len(names), tokens, time.perf_counter() - began)

        replies, failed = await _ask_all(rt, names, question, timeout, moved)
        result.failed.update(failed)
        guesses = [int((m.metadata or {})["guess"]) for m in replies]
        target = 2 / 3 * sum(guesses) / max(1, len(guesses))
        best = min((abs(g - target) for g in guesses), default=0.0)
        winners = sorted(m.name for m, g in zip(replies, guesses, strict=True)
                         if abs(g - target) == best)
        shown = ", ".join(winners[:5]) + (f" and {len(winners) - 5} more"
                                          if len(winners) > 5 else "")
        outcome = (f"Round {r}: {len(replies)} players guessed; the mean was "
                   f"{sum(guesses) / max(1, len(guesses)):.2f}, two thirds of it "
                   f"{target:.1f}; winner: {shown}.")
        transcribe(Msg("host", outcome, "user"), None)
        _tally(replies, result.stats)
        result.rounds.append(RoundReport(r, len(replies), time.perf_counter() - began,
                                         round(target, 2), winners,
                                         sum(int((m.metadata or {}).get("tokens_out", 0))
                                             for m in replies)))
    if speakers:
        chosen = sorted(random.Random(seed).sample(range(len(names)), min(speakers,
                                                                           len(names))))
        ask = Msg("host", f"{outcome} The game is over.", "user",
                  metadata={"mode": "discuss", "summary": outcome})
        got = await rt.call_many([names[i] for i in chosen], ask, timeout=timeout,
                                 return_exceptions=True)
        said = [m for m in got if isinstance(m, Msg)]
        _tally(said, result.stats)
        result.discussion = said
    result.seconds = time.perf_counter() - started
    return result


async def place_players(client: Any, count: int, *, seed: int, model: str, replicas: int,
                        requests_per_second: float | None) -> tuple[Sequence[str], float]:
    """Place the model replicas (unless scripted), then ``count`` players in one batch;
    the players' names and the seconds their placement took."""
    if model != "scripted":
        await client.spawn_many(GameModelActor, [[model, requests_per_second]] * replicas,
                                names=MODEL_PREFIX, placement="spread")
        await asyncio.gather(*(client.runtime.ref(f"{MODEL_PREFIX}{i}").call(
            "describe", timeout=600) for i in range(replicas)))
    began = time.perf_counter()
    refs = await client.spawn_many(CrowdPlayer, count, names=PLAYER_PREFIX,
                                   placement="spread", resources=Resources(cpus=0),
                                   seed=seed, model=model,
                                   replicas=replicas)
    return refs.names, time.perf_counter() - began
