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

from ...cluster import ModelActor, RemoteChatModel, Resources
from ...message import Msg, TextBlock
from ...model import (
    ChatModelBase,
    ChatResponse,
    ChatResult,
    ChatUsage,
    Messages,
    ToolChoice,
    init_chat_model,
)
from ...model.wrappers import RateLimitedModel, RateLimiter
from ...runtime import ActorError, HandlerError, Runtime
from ...tracing.lowlevel import transcribe
from ._game import PERSONAS, GameStats, Player, _guess_of

__all__ = [
    "CrowdPlayer",
    "CrowdResult",
    "DemoOptions",
    "GameModelActor",
    "Answers",
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

    def __init__(self, model: str, requests_per_second: float | None = None,
                 options: dict[str, Any] | None = None) -> None:
        super().__init__(model)
        self.requests_per_second = requests_per_second
        self.options = options or {}

    async def on_start(self) -> None:
        built = init_chat_model(self._spec or "", **self.options)
        if self.requests_per_second:
            built = RateLimitedModel(built, RateLimiter(self.requests_per_second))
        self.model = built


class CrowdPlayer(Player):
    """A player built on its node: its number comes from its name (``player-17``).

    It remembers its last :data:`MEMORY` messages as ``(speaker, text)`` pairs, not as
    messages: a question's text is one string shared by every player of a node, so a
    node's million players each keep a few hundred bytes, not a few kilobytes."""

    def __init__(self, seed: int = 0, model: str = "scripted", replicas: int = 1,
                 max_tokens: int = 48) -> None:
        super().__init__(PLAYER_PREFIX, crowd_model(model, replicas), _STATS,
                         max_tokens=max_tokens)
        self.base_seed = seed
        self.lines: list[tuple[str, str]] = []
        self.register_state("lines", None, _pairs)

    async def on_start(self) -> None:
        self.name = self.ref.name
        index = int(self.name.rpartition("-")[2] or 0)
        self.persona = PERSONAS[index % len(PERSONAS)]
        self.seed = self.base_seed * 1_000_003 + index

    def _keep(self, speaker: str, text: str) -> None:
        self.lines.append((speaker, text))
        del self.lines[:-MEMORY]

    def _heard(self) -> list[str]:
        return [f"{speaker}: {text}" for speaker, text in self.lines]

    def _remembered(self) -> int:
        return len(self.lines)

    async def observe(self, msg: Msg | list[Msg] | None) -> None:
        for m in [msg] if isinstance(msg, Msg) else (msg or []):
            self._keep(m.name, m.get_text_content() or "")

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
        self._keep(self.name, out.get_text_content() or "")
        return out


_STATS = GameStats()
"""What a node's crowd players count (the game counts their answers' metadata instead)."""


def _pairs(data: list[list[str]]) -> list[tuple[str, str]]:
    return [(str(speaker), str(text)) for speaker, text in data]


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
    """Keyword arguments for ``init_chat_model`` (``--option KEY=VALUE``)."""

    def config(self) -> dict[str, Any]:
        """What the manifest records of these settings."""
        return {"agents": self.agents, "rounds": self.rounds, "model": self.model,
                "nodes": self.nodes, "address": self.address, "replicas": self.replicas,
                "rate": self.rate, "speakers": self.speakers, "sample": self.sample,
                "model_options": self.model_options}


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

IN_FLIGHT = 2
"""Fan-outs of a round in flight at once (the nodes answer one while the next travels)."""

_NO_GUESS = 255


@dataclass
class Answers:
    """One round's answers, tallied as they come: a byte per player for its guess
    (:data:`_NO_GUESS` where none came), counters, and who failed and why."""

    guesses: bytearray
    answered: int = 0
    total: int = 0
    tokens_in: int = 0
    tokens_out: int = 0
    failed: dict[str, str] = field(default_factory=dict)

    def take(self, index: int, name: str, value: Any) -> None:
        """The outcome of asking player ``name`` (at ``index``)."""
        if isinstance(value, Msg):
            meta = value.metadata or {}
            self.guesses[index] = max(0, min(100, int(meta["guess"])))
            self.answered += 1
            self.total += self.guesses[index]
            self.tokens_in += int(meta.get("tokens_in", 0))
            self.tokens_out += int(meta.get("tokens_out", 0))
        elif isinstance(value, (ActorError, HandlerError)):
            self.failed[name] = f"{type(value).__name__}: {value}"
        else:
            self.failed[name] = repr(value)

    def winners(self, names: Sequence[str]) -> tuple[float, list[str]]:
        """Two thirds of the mean guess, and the players closest to it (sorted)."""
        target = 2 / 3 * self.total / max(1, self.answered)
        present = [v for v in range(101) if self.guesses.count(v)]
        if not present:
            return target, []
        best = min(abs(v - target) for v in present)
        closest = {v for v in present if abs(v - target) == best}
        return target, sorted(names[i] for i, g in enumerate(self.guesses) if g in closest)


async def _ask_all(rt: Runtime, names: Sequence[str], question: Msg, timeout: float,
                   progress: Callable[[int, int], None]) -> Answers:
    """Ask every player, :data:`CHUNK` at a time and :data:`IN_FLIGHT` chunks at once;
    each chunk takes every k-th player, so that every node has its share of each chunk
    (players are placed in ranges: a chunk of neighbours would keep one node busy)."""
    n = len(names)
    chunks = max(1, -(-n // CHUNK))
    answers = Answers(bytearray([_NO_GUESS]) * n)
    todo = iter(range(chunks))

    async def asker() -> None:
        for j in todo:
            indices = range(j, n, chunks)
            chunk = [names[i] for i in indices]
            got = await rt.call_many(chunk, question, timeout=timeout, return_exceptions=True)
            for i, name, value in zip(indices, chunk, got, strict=True):
                answers.take(i, name, value)
            del got
            progress(answers.answered, answers.tokens_out)

    await asyncio.gather(*(asker() for _ in range(min(IN_FLIGHT, chunks))))
    return answers


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

    Each round is a few fan-outs (:meth:`Runtime.call_many`: one frame per node each); a
    player that fails or does not answer in ``timeout`` seconds is reported in ``failed``
    and the game goes on. The game keeps one byte per player of a round, not its answer.
    The transcript gets the host's questions and announcements here, and every player's
    answer from the node that hosts it.
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

        answers = await _ask_all(rt, names, question, timeout, moved)
        result.failed.update(answers.failed)
        target, winners = answers.winners(names)
        shown = ", ".join(winners[:5]) + (f" and {len(winners) - 5} more"
                                          if len(winners) > 5 else "")
        outcome = (f"Round {r}: {answers.answered} players guessed; the mean was "
                   f"{answers.total / max(1, answers.answered):.2f}, two thirds of it "
                   f"{target:.1f}; winner: {shown}.")
        transcribe(Msg("host", outcome, "user"), None)
        stats = result.stats
        stats.model_calls += answers.answered
        stats.input_tokens += answers.tokens_in
        stats.output_tokens += answers.tokens_out
        stats.messages += 2 * answers.answered
        result.rounds.append(RoundReport(r, answers.answered, time.perf_counter() - began,
                                         round(target, 2), winners, answers.tokens_out))
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
                        requests_per_second: float | None,
                        model_options: dict[str, Any] | None = None,
                        placed: list[Sequence[str]] | None = None,
                        run: str | None = None,
                        ) -> tuple[Sequence[str], float]:
    """Place the model replicas (unless scripted), then ``count`` players in one batch;
    the players' names and the seconds their placement took. Each batch's names are
    appended to ``placed`` as soon as it stands (for whoever stops them afterwards).
    ``run``: the run that owns them (they stop when this driver ends or is lost)."""
    batches = placed if placed is not None else []
    if model != "scripted":
        args = [model, requests_per_second, model_options or {}]
        batches.append((await client.spawn_many(
            GameModelActor, [args] * replicas, names=MODEL_PREFIX, placement="spread",
            resources=Resources(cpus=1), run=run)).names)
        await asyncio.gather(*(client.runtime.ref(f"{MODEL_PREFIX}{i}").call(
            "describe", timeout=600) for i in range(replicas)))
    began = time.perf_counter()
    refs = await client.spawn_many(CrowdPlayer, count, names=PLAYER_PREFIX,
                                   placement="spread", seed=seed, model=model,
                                   replicas=replicas, run=run)
    batches.append(refs.names)
    return refs.names, time.perf_counter() - began
