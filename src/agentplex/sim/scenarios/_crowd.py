"""The players of the guessing game (:mod:`.guessing`, what ``agentplex demo`` plays),
built to be placed in batches anywhere: in the driver's process, on node processes or on
Ray, and asked each round with one fan-out.

The players (:class:`CrowdPlayer`) are the game's players, built on a node from a count
and a few settings (``spawn_many`` sends one request per node, whatever the count); each
knows its number from its name. Their model is either a scripted stand-in in each node
process (guesses deterministic per seed and player) or ``model-0`` … ``model-{R-1}``,
:class:`GameModelActor` replicas placed on the nodes (the embedded local model, or a
hosted model behind one shared rate limiter). Each round's question carries the previous
round's outcome, so nothing else has to reach a million players between rounds.
"""

from __future__ import annotations

import json
import random
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from ...cluster import ModelActor, RemoteChatModel
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
from ...runtime import ActorError, HandlerError, Runtime, get_runtime
from ._game import PERSONAS, GameStats, Player, _guess_of

__all__ = [
    "MODEL_PREFIX",
    "PLAYER_PREFIX",
    "Answers",
    "CrowdPlayer",
    "GameModelActor",
    "SeededPlayersModel",
    "crowd_model",
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


_SCRIPTED = SeededPlayersModel()
_models: weakref.WeakKeyDictionary[Runtime, dict[tuple[str, int, float], ChatModelBase]] = \
    weakref.WeakKeyDictionary()


def crowd_model(model: str, replicas: int, runtime: Runtime | None = None,
                timeout: float = 600.0) -> ChatModelBase:
    """The model of the players of ``runtime`` (default: :func:`get_runtime`): one per
    runtime, shared by all of them — the scripted stand-in, or a ``RemoteChatModel`` over
    the replicas whose calls wait up to ``timeout`` seconds (its refs belong to one
    runtime: a second run in the same process gets its own)."""
    if model == "scripted":
        return _SCRIPTED
    per = _models.setdefault(runtime or get_runtime(), {})
    key = (model, replicas, timeout)
    if key not in per:
        per[key] = RemoteChatModel([f"{MODEL_PREFIX}{i}" for i in range(replicas)],
                                   model_name=model, timeout=timeout)
    return per[key]


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
                 max_tokens: int = 48, timeout: float = 600.0) -> None:
        super().__init__(PLAYER_PREFIX, crowd_model(model, replicas, timeout=timeout),
                         _STATS, max_tokens=max_tokens)
        self.model_spec = (model, replicas, timeout)
        self.base_seed = seed
        self.lines: list[tuple[str, str]] = []
        self.register_state("lines", None, _pairs)

    async def on_start(self) -> None:
        assert self._cell is not None  # the model of the runtime it joined
        model, replicas, timeout = self.model_spec
        self.model = crowd_model(model, replicas, self._cell.runtime, timeout)
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
