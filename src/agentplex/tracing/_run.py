"""Experiments: every run leaves a folder with a manifest, its trace and its transcript.

::

    async with agentplex.experiment("two-thirds", seed=7, config={"agents": 8}) as run:
        ...  # agents and models used here are traced, recorded and transcribed
    print(run.dir)

The folder holds ``manifest.json`` (run id, times, git commit, package versions, config,
seed, models, totals), ``trace.jsonl`` (one span per line), ``transcript.jsonl`` (every
message, in a deterministic causal order) and ``recording.json`` (every model response,
so that ``experiment(..., replay=run.dir)`` reproduces the run without any model).
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import random
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from ..message import Msg
from ._content import ContentCapture, set_content_capture
from ._exporters import BufferedSpanProcessor, JsonLinesSpanExporter
from ._setup import dispatcher
from ._spans import _tracer

__all__ = [
    "ReplayMissing",
    "Run",
    "active_run",
    "experiment",
    "record_received",
    "request_key",
    "transcribe",
]

_PACKAGES = ("agentplex", "pydantic", "msgpack", "pyzmq", "anyio", "opentelemetry-sdk",
             "torch", "transformers", "openai", "anthropic", "google-genai", "dashscope",
             "ollama", "huggingface-hub", "ray")

_active: Run | None = None


def active_run() -> Run | None:
    """The experiment running in this process, if any."""
    return _active


class ReplayMissing(LookupError):
    """Replay met a model request the recorded run never made."""


def request_key(model: str, payload: Any) -> str:
    """A stable digest of one model request (the model and its JSON-able arguments)."""
    text = json.dumps([model, payload], sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


class Run:
    """One experiment run: its folder, counters, transcript and model recording."""

    def __init__(self, name: str, runs_dir: Path, seed: int | None, config: dict[str, Any],
                 replay: Path | None) -> None:
        stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
        self.id = f"{stamp}-{name}-{uuid.uuid4().hex[:6]}"
        self.name = name
        self.dir = runs_dir / self.id
        self.seed = seed
        self.config = config
        self.replay_of = replay
        self.started_at = datetime.now(UTC).isoformat()
        self.ended_at: str | None = None
        self.duration_s: float | None = None
        self.models: dict[str, dict[str, str]] = {}
        self.model_calls = 0
        self.input_tokens = 0
        self.output_tokens = 0
        self._lock = threading.Lock()
        self._recording: dict[str, list[Any]] = {}
        self._replay: dict[str, list[Any]] = {}
        self._replay_seen: dict[str, int] = {}
        self._seen: dict[str, int] = {}
        self._transcript: list[tuple[int, str, int, dict[str, Any]]] = []
        self._clock_of: dict[str, int] = {}
        self._agent_clock: dict[str, int] = {}
        self._max_clock = 0
        if replay is not None:
            path = replay / "recording.json"
            if not path.exists():
                raise FileNotFoundError(f"no recording to replay at {path}")
            self._replay = json.loads(path.read_text())

    @property
    def replaying(self) -> bool:
        """Whether model responses come from a recorded run instead of the models."""
        return self.replay_of is not None

    # -- models ---------------------------------------------------------------------------

    def model_used(self, provider: str, model: str) -> None:
        """Note that a model was called in this run."""
        self.models.setdefault(f"{provider}:{model}", {"provider": provider, "model": model})

    def count(self, input_tokens: int, output_tokens: int) -> None:
        """Add one model call's usage to the totals."""
        with self._lock:
            self.model_calls += 1
            self.input_tokens += input_tokens
            self.output_tokens += output_tokens

    def record_response(self, key: str, response: Any) -> None:
        """Keep ``response`` (JSON-able) as the answer to request ``key``."""
        with self._lock:
            self._recording.setdefault(key, []).append(response)

    def replayed_response(self, key: str) -> Any:
        """The recorded answer to the next occurrence of request ``key``."""
        with self._lock:
            n = self._replay_seen.get(key, 0)
            answers = self._replay.get(key, [])
            if n >= len(answers):
                raise ReplayMissing(
                    f"the recorded run made no request like this one (occurrence {n + 1}); "
                    "the run being replayed must make the same model calls"
                )
            self._replay_seen[key] = n + 1
            return answers[n]

    # -- transcript (Lamport-ordered, so concurrent runs replay byte-identically) ----------

    def received(self, agent: str, msg_id: str) -> None:
        """``agent`` took in message ``msg_id``: its clock moves past that message's."""
        with self._lock:
            clock = self._clock_of.get(msg_id, 0)
            if clock > self._agent_clock.get(agent, 0):
                self._agent_clock[agent] = clock

    def said(self, speaker: str | None, msg_id: str, entry: dict[str, Any]) -> None:
        """Add a message to the transcript. ``speaker`` is the agent that made it, or
        ``None`` for messages from outside any agent (the program driving the run)."""
        with self._lock:
            if msg_id in self._clock_of:
                return
            if speaker is None:
                clock = self._max_clock + 1
            else:
                clock = self._agent_clock.get(speaker, 0) + 1
                self._agent_clock[speaker] = clock
            self._clock_of[msg_id] = clock
            self._max_clock = max(self._max_clock, clock)
            seq = self._seen.get(entry.get("name", ""), 0)
            self._seen[entry.get("name", "")] = seq + 1
            self._transcript.append((clock, str(entry.get("name", "")), seq, entry))

    def transcript(self) -> list[dict[str, Any]]:
        """Every message so far, in causal (Lamport) order, ties broken by speaker name."""
        with self._lock:
            ordered = sorted(self._transcript, key=lambda t: (t[0], t[1], t[2]))
        return [{"clock": c, **e} for c, _, _, e in ordered]

    # -- files ----------------------------------------------------------------------------

    def manifest(self) -> dict[str, Any]:
        """What the run was: identity, times, code, environment, config and totals."""
        return {
            "run_id": self.id,
            "name": self.name,
            "started_at": self.started_at,
            "ended_at": self.ended_at,
            "duration_s": self.duration_s,
            "git_commit": _git_commit(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "argv": sys.argv,
            "packages": _versions(),
            "config": self.config,
            "seed": self.seed,
            "replay_of": str(self.replay_of) if self.replay_of else None,
            "models": sorted(self.models.values(), key=lambda m: (m["provider"], m["model"])),
            "totals": {
                "model_calls": self.model_calls,
                "input_tokens": self.input_tokens,
                "output_tokens": self.output_tokens,
                "messages": len(self._transcript),
            },
        }

    def write(self) -> None:
        """Write the manifest, transcript and recording into the run folder."""
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "manifest.json").write_text(json.dumps(self.manifest(), indent=2,
                                                           default=str) + "\n")
        with (self.dir / "transcript.jsonl").open("w", encoding="utf-8") as out:
            for entry in self.transcript():
                out.write(json.dumps(entry, ensure_ascii=False, sort_keys=True) + "\n")
        if not self.replaying:
            (self.dir / "recording.json").write_text(json.dumps(self._recording, default=str))


def transcribe(msg: Msg | list[Msg] | Any, speaker: str | None) -> None:
    """Add ``msg`` to the running experiment's transcript (no-op outside experiments)."""
    run = _active
    if run is None:
        return
    for m in msg if isinstance(msg, list) else [msg]:
        if isinstance(m, Msg):
            run.said(speaker, m.id, m.model_dump(mode="json",
                                                 include={"name", "role", "content", "metadata"}))


def record_received(msg: Msg | list[Msg] | Any, agent: str) -> None:
    """Note that ``agent`` took in ``msg`` (for the transcript's causal order)."""
    run = _active
    if run is None:
        return
    for m in msg if isinstance(msg, list) else [msg]:
        if isinstance(m, Msg):
            run.received(agent, m.id)


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=5, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def _versions() -> dict[str, str]:
    found: dict[str, str] = {}
    for name in _PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return found


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    os.environ.setdefault("PYTHONHASHSEED", str(seed))
    for module, call in (("numpy", "random.seed"), ("torch", "manual_seed")):
        mod = sys.modules.get(module)
        if mod is not None:
            target: Any = mod
            for part in call.split("."):
                target = getattr(target, part)
            target(seed)


@asynccontextmanager
async def experiment(
    name: str,
    *,
    seed: int | None = None,
    config: dict[str, Any] | None = None,
    runs_dir: str | Path = "runs",
    replay: str | Path | None = None,
    capture_content: ContentCapture | None = None,
) -> AsyncIterator[Run]:
    """Run the body as one traced, recorded experiment (see the module docstring).

    Args:
        name: a short name; the run id adds a time stamp and a random suffix.
        seed: seeds ``random`` (and NumPy and torch when loaded) on entry.
        config: anything JSON-able describing the run; saved in the manifest.
        runs_dir: the parent folder of run folders.
        replay: a run folder whose recorded model responses answer every model call.
        capture_content: message content in spans for this run (``"off"`` / ``"on"`` / a
            redaction function); default: the process setting.
    """
    global _active
    if _active is not None:
        raise RuntimeError(f"experiment {_active.id!r} is already running in this process")
    run = Run(name, Path(runs_dir), seed, dict(config or {}),
              Path(replay) if replay is not None else None)
    run.dir.mkdir(parents=True, exist_ok=True)
    if seed is not None:
        _seed_everything(seed)
    processor = BufferedSpanProcessor(JsonLinesSpanExporter(run.dir / "trace.jsonl"))
    hub = dispatcher()
    hub.attach(processor)
    if capture_content is not None:
        set_content_capture(capture_content)
    _active = run
    started = time.perf_counter()
    try:
        with _tracer().start_as_current_span(f"run {name}", attributes={
            "agentplex.run.id": run.id, "agentplex.run.name": name,
            "agentplex.run.seed": seed if seed is not None else -1,
        }):
            yield run
    finally:
        _active = None
        if capture_content is not None:
            set_content_capture(None)
        run.ended_at = datetime.now(UTC).isoformat()
        run.duration_s = round(time.perf_counter() - started, 3)
        hub.detach(processor)
        run.write()
