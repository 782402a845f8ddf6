"""Experiments: every run leaves a folder with a manifest, its trace and its transcript.

::

    async with agentplex.experiment("two-thirds", seed=7, config={"agents": 8}) as run:
        ...  # agents and models used here are traced, recorded and transcribed
    print(run.dir)

The folder holds ``manifest.json`` (run id, times, git commit, package versions, config,
seed, models, exact totals), ``trace.jsonl`` (one span per line, of the traces sampling
kept), ``transcript.jsonl`` (every message, in a deterministic causal order) and
``recording.jsonl`` (every model response, so that ``experiment(..., replay=run.dir)``
reproduces the run without any model). Spans, messages and responses stream to disk as
the run goes: memory stays flat however long it runs.

Other processes (node processes, on this machine or others) follow the run through the
messages they receive: their part of it (a :class:`RunPart`) is a journal that travels
back to the run's process over the bus, and only the run's process writes the folder.
"""

from __future__ import annotations

import asyncio
import contextlib
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
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from pydantic import BaseModel, ConfigDict

from ..message import Msg
from ._content import ContentCapture, set_content_capture
from ._context import current_context
from ._errors import NoRecording, ReplayMissing
from ._exporters import BufferedSpanProcessor, JsonLinesSpanExporter, span_line
from ._incidents import RunIncidents
from ._json import dumper
from ._ledger import Ledger, Tally, current_round
from ._prices import cost_totals
from ._recorder import RunAnchor
from ._sampling import TraceSampler
from ._setup import dispatcher, recorder, sampler
from ._spool import SortedSpool, read_chunks
from ._tables import TRANSCRIPT_TABLE, TranscriptTable

__all__ = [
    "RUN_HEADER",
    "Run",
    "RunOutcome",
    "RunPart",
    "active_run",
    "add_run_drain",
    "answer_headers",
    "answer_received",
    "collect_parts",
    "count_tool_call",
    "driving_run",
    "experiment",
    "join_run",
    "outgoing_run",
    "record_received",
    "remove_run_drain",
    "request_digest",
    "request_json",
    "request_key",
    "run_event",
    "set_journal_shipper",
    "transcribe",
    "transcript_until",
]

_PACKAGES = ("agentplex", "pydantic", "msgpack", "pyzmq", "anyio", "opentelemetry-sdk",
             "torch", "transformers", "openai", "anthropic", "google-genai", "dashscope",
             "ollama", "huggingface-hub", "ray")

_active: Run | None = None
RUN_HEADER = "agentplex-run"
"""The header that carries an experiment's identity (its locator) in a message."""
_CLOCK_HEADER = "agentplex-clock"
_CLOCK_KEY = otel_context.create_key("agentplex-clock")


def active_run() -> Run | None:
    """The experiment running in this process, if any."""
    return _active


def request_key(model: str, payload: Any) -> str:
    """A stable digest of one model request (the model and its JSON-able arguments)."""
    return request_digest(request_json([model, payload]))


def request_json(value: Any) -> str:
    """``value`` as the JSON text a request key digests (nested values encode alike, so a
    part known in advance may be spliced in)."""
    return _request_json(value)


_request_json = dumper(sort_keys=True, ensure_ascii=False, default=str)
_response_json = dumper(default=str, compact=True)
_said_json = dumper(sort_keys=True, ensure_ascii=False)


def _recording_line(key: str, response: str) -> str:
    """A line of ``recording.jsonl``: the request key and the response's JSON text."""
    return f'{{"key":{json.encoder.encode_basestring_ascii(key)},"response":{response}}}'


def request_digest(text: str) -> str:
    """The request key of the JSON text of ``[model, payload]``."""
    return hashlib.sha256(text.encode()).hexdigest()[:32]


class RunOutcome(BaseModel):
    """How a run ended and what it counted, in the manifest beside the totals. A pydantic
    model that others extend: whatever field is set here lands in ``manifest.json``."""

    model_config = ConfigDict(extra="allow")

    status: str = "running"
    """``running`` (while it runs, or its driver died), ``completed``, ``failed``,
    ``interrupted`` (Ctrl-C, SIGTERM) or ``budget`` (stopped cleanly at a limit of its
    :class:`~agentplex.tracing.Budget`)."""
    error: str | None = None
    reason: str | None = None
    """Why a run stopped before its end without failing (the budget limit it reached)."""
    timeouts: int = 0
    """Calls that got no answer in time."""
    errors: int = 0
    """Calls whose agent raised, or that failed for another reason."""


class Run:
    """One experiment run: its folder, counters, transcript and model recording.

    The transcript and the recording go to disk as they grow (bounded buffers); the
    totals count every model call, token, tool call and message, sampled or not.
    """

    _replay: dict[str, list[Any]]

    def __init__(self, name: str, runs_dir: Path, seed: int | None, config: dict[str, Any],
                 replay: Path | None, *, buffer: int = 20_000, recording: bool = True,
                 recording_limit: int | None = None) -> None:
        stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
        self.id = f"{stamp}-{name}-{uuid.uuid4().hex[:6]}"
        self.name = name
        self.dir = runs_dir / self.id
        self.seed = seed
        self.config = config
        self.replay_of = replay
        self.sampling: float | None = None
        self.trace_id: str | None = None
        self.started_at = datetime.now(UTC).isoformat()
        self.ended_at: str | None = None
        self.duration_s: float | None = None
        self.spans: BufferedSpanProcessor | None = None
        self.outcome = RunOutcome()
        self.recording = recording and replay is None
        """Whether model responses are recorded (not when replaying, nor when turned off:
        such a run cannot be replayed)."""
        self.locator = json.dumps([str(self.dir), str(replay) if replay is not None else None,
                                   self.recording])
        self._init_state()
        self.recording_limit: int | None = recording_limit if recording_limit else None
        """The most bytes ``recording.jsonl`` may reach (``None``: any): past it the file
        is dropped and the run goes on without one (see :attr:`recording_dropped`)."""
        self._buffer = buffer
        self.dir.mkdir(parents=True, exist_ok=True)
        # the table's rows are read from each chunk as it spills: the end only merges
        self._table = TranscriptTable(self.dir / TRANSCRIPT_TABLE)
        self._transcript = SortedSpool(self.dir / "transcript.jsonl", chunk=buffer,
                                       on_spill=self._table.add_piece)
        self._recording: list[str] = []
        self._recording_file: Any = None if not self.recording else \
            (self.dir / "recording.jsonl").open("w", encoding="utf-8")
        if replay is not None:
            self._replay = load_recording(replay)

    def _init_state(self) -> None:
        self.models: dict[str, dict[str, str]] = {}
        """The models called, by :func:`_model_key`: provider, name and settings."""
        self.model_calls = 0
        self.input_tokens = 0
        self.output_tokens = 0
        self.tool_calls = 0
        self._tally = Tally()
        self._lock = threading.Lock()
        self._replay = {}
        self._replay_seen: dict[str, int] = {}
        self._seen: dict[str, int] = {}
        # a message's clock, kept while the message object lives (nobody can take in a
        # message that no longer exists), so memory follows the live messages, not the run
        self._clock_of: dict[str, tuple[int, Any]] = {}
        self._agent_clock: dict[str, int] = {}
        self._max_clock = 0
        self.incidents = RunIncidents()
        self.driver_node: str | None = None
        """This process's id on the bus, when the run crossed one (a transport that
        collects the run's parts says it; a scenario run names it ``driver-RUN_ID``): in
        the manifest as ``driver_node``, which the trace page calls "driver"."""
        self.recording_limit = None
        self.recording_dropped: str | None = None
        """Why the run has no recording although it was asked for one (it passed
        :attr:`recording_limit`), in the manifest as ``recording_dropped``."""
        self._recorded_bytes = 0
        self._floor = 0
        self._last_round = 0
        """The highest round said so far: a line said outside any round after it (a
        closing discussion) comes after that round's lines."""

    @property
    def replaying(self) -> bool:
        """Whether model responses come from a recorded run instead of the models."""
        return self.replay_of is not None

    def heard(self, agent: str | None, clock: int) -> None:
        """``agent`` (``None``: the program) heard from someone whose clock was ``clock``."""
        with self._lock:
            if agent is not None and clock > self._agent_clock.get(agent, 0):
                self._agent_clock[agent] = clock
            if clock > self._max_clock:
                self._max_clock = clock

    def clock(self, agent: str | None) -> int:
        """``agent``'s causal clock now (the run's highest for the program itself)."""
        with self._lock:
            return self._max_clock if agent is None else self._agent_clock.get(agent, 0)

    @property
    def messages(self) -> int:
        """Messages transcribed so far."""
        return self._transcript.count

    @property
    def buffered(self) -> dict[str, int]:
        """What the run holds in memory now: lines waiting per file (each below the run's
        ``buffer``) and ``clocks``, the causal clocks of messages still alive."""
        return {"trace": self.spans.buffered if self.spans is not None else 0,
                "transcript": self._transcript.buffered, "recording": len(self._recording),
                "clocks": len(self._clock_of)}

    # -- models and tools -----------------------------------------------------------------

    def model_used(self, provider: str, model: str,
                   settings: Mapping[str, str] | None = None) -> None:
        """Note that a model was called in this run (with ``settings``, what of its make
        changes its answers: one entry per provider, name and settings)."""
        self.models.setdefault(_model_key(provider, model, settings),
                               {"provider": provider, "model": model, **(settings or {})})

    def count(self, input_tokens: int, output_tokens: int) -> None:
        """Add one model call's usage to the totals."""
        with self._lock:
            self.model_calls += 1
            self.input_tokens += input_tokens
            self.output_tokens += output_tokens

    def charge(self, provider: str, model: str, round_: int | None, agent_class: str | None,
               *usage: Any) -> None:
        """Add one model call to the cost ledger (``usage``: as :meth:`Tally.add` takes it)."""
        with self._lock:
            self._tally.add(provider, model, round_, agent_class, *usage)

    def merge_ledger(self, ledger: Ledger) -> None:
        """Add ``ledger`` to the run's (another process's part, or a resumed run's past)."""
        with self._lock:
            self._tally.merge(ledger)

    @property
    def ledger(self) -> Ledger:
        """The run's model usage so far, per model, round and agent class (with the parts
        of other processes once they are taken in)."""
        with self._lock:
            return self._tally.ledger()

    def count_tool_call(self) -> None:
        """Add one tool call to the totals."""
        with self._lock:
            self.tool_calls += 1

    def note_event(self, kind: str, event: dict[str, Any]) -> None:
        """An incident of the run (see :func:`run_event`)."""
        with self._lock:
            self.incidents.note(kind, event)

    def record_response(self, key: str, response: Any) -> None:
        """Keep ``response`` (JSON-able) as the next answer to request ``key``."""
        self.record_response_json(key, _response_json(response))

    def record_response_json(self, key: str, response: str) -> None:
        """:meth:`record_response` for a response already encoded as JSON text."""
        self._record_line(_recording_line(key, response))

    def _record_line(self, line: str) -> None:
        if not self.recording:
            return
        with self._lock:
            if not self.recording:
                return
            self._recorded_bytes += len(line) + 1
            if self.recording_limit is not None and self._recorded_bytes > self.recording_limit:
                self._drop_recording()
                return
            self._recording.append(line)
            if len(self._recording) < self._buffer or self._recording_file is None:
                return
            batch, self._recording = self._recording, []
            self._recording_file.write("\n".join(batch) + "\n")

    def _drop_recording(self) -> None:
        """The recording passed its limit: remove it and record no more (lock held)."""
        self.recording = False
        self._recording = []
        if self._recording_file is not None:
            self._recording_file.close()
            self._recording_file = None
        (self.dir / "recording.jsonl").unlink(missing_ok=True)
        limit = self.recording_limit or 0
        where = f" in round {self._last_round}" if self._last_round else ""
        self.recording_dropped = (
            f"the recording of the model answers passed {_size(limit)}{where} and was "
            "dropped: this run cannot be replayed (a limit of 0 keeps a recording of any "
            "size: agentplex run --recording-limit 0)")

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
        """``agent`` took in message ``msg_id``: its clock moves past that message's (or,
        for a message from another process, past its sender's clock when it was sent)."""
        sent = current_context().get(_CLOCK_KEY)
        with self._lock:
            known = self._clock_of.get(msg_id)
            clock = max(known[0] if known is not None else 0,
                        sent if isinstance(sent, int) else 0)
            if clock > self._agent_clock.get(agent, 0):
                self._agent_clock[agent] = clock
            if clock > self._max_clock:
                self._max_clock = clock

    def said(self, speaker: str | None, msg_id: str, entry: dict[str, Any],
             msg: object | None = None) -> None:
        """Add a message to the transcript. ``speaker`` is the agent that made it, or
        ``None`` for messages from outside any agent (the program driving the run);
        ``msg``, the message object, bounds how long its clock is remembered."""
        with self._lock:
            if msg_id in self._clock_of:
                return
            if speaker is None:
                clock = self._max_clock + 1
            else:
                clock = max(self._agent_clock.get(speaker, 0), self._floor) + 1
                self._agent_clock[speaker] = clock
            self._clock_of[msg_id] = (clock, _forget(self._clock_of, msg_id, msg))
            self._max_clock = max(self._max_clock, clock)
            name = str(entry.get("name", ""))
            seq = self._seen.get(name, 0)
            self._seen[name] = seq + 1
            number = current_round()
            if number is not None:
                entry = {"round": number, **entry}
                self._last_round = max(self._last_round, number)
            line = _said_json({"clock": clock, **entry})
            self._add_line((_order(self._last_round if number is None else number, clock),
                            name, seq), line)

    def _add_line(self, key: tuple[int, str, int], line: str) -> None:
        self._transcript.add(key, line)

    # -- rounds (simulations: see agentplex.sim) ------------------------------------------

    def begin_round(self, number: int) -> None:
        """Round ``number`` starts (the driver says so; what is said in it carries the round
        of the context it is said in: see :func:`~agentplex.tracing.in_round`): from now on
        it comes after everything said before (each speaker's clock starts past the run's
        highest)."""
        with self._lock:
            self._last_round = max(self._last_round, number)
            self._floor = self._max_clock

    def clock_state(self) -> dict[str, Any]:
        """What a checkpoint keeps of the transcript's clocks and the totals, so that a
        run resumed from it goes on exactly as the original did."""
        with self._lock:
            return {"max": self._max_clock, "floor": self._floor, "round": self._last_round,
                    "agents": dict(self._agent_clock), "seen": dict(self._seen),
                    "totals": [self.model_calls, self.input_tokens, self.output_tokens,
                               self.tool_calls], "models": list(self.models.values()),
                    "ledger": self._tally.ledger().model_dump(mode="json")}

    def restore_clock_state(self, state: dict[str, Any]) -> None:
        """Take back what :meth:`clock_state` returned."""
        with self._lock:
            self._max_clock = int(state["max"])
            self._floor = int(state["floor"])
            self._last_round = int(state.get("round", 0))
            self._agent_clock = {str(k): int(v) for k, v in state["agents"].items()}
            self._seen = {str(k): int(v) for k, v in state["seen"].items()}
            (self.model_calls, self.input_tokens, self.output_tokens,
             self.tool_calls) = (int(v) for v in state["totals"])
        if "ledger" in state:
            self.merge_ledger(Ledger.model_validate(state["ledger"]))
        for m in state.get("models", ()):
            self.model_used(m["provider"], m["model"],
                            {k: v for k, v in m.items() if k not in ("provider", "model")})

    def adopt_transcript(self, lines: Any) -> None:
        """Add ``(key, line)`` pairs another run wrote (see :func:`transcript_until`)."""
        with self._lock:
            for key, line in lines:
                self._transcript.add(key, line)

    def sync(self) -> None:
        """Put everything said so far on disk (the transcript's buffer as a sorted chunk,
        the recording), so a process killed from now on loses none of it."""
        with self._lock:
            self._transcript.spill()
            if self._recording_file is not None and self._recording:
                self._recording_file.write("\n".join(self._recording) + "\n")
                self._recording_file.flush()
                self._recording = []

    def write_manifest(self) -> None:
        """Write ``manifest.json`` as things stand (atomically)."""
        tmp = self.dir / ".manifest.json.tmp"
        tmp.write_text(json.dumps(self.manifest(), indent=2, default=str) + "\n")
        os.replace(tmp, self.dir / "manifest.json")

    def transcript(self) -> list[dict[str, Any]]:
        """Every message of a finished run, in causal (Lamport) order, ties broken by
        speaker name (read back from ``transcript.jsonl``)."""
        path = self.dir / "transcript.jsonl"
        with path.open(encoding="utf-8") as f:
            return [json.loads(line) for line in f]

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
            **({"driver_node": self.driver_node} if self.driver_node is not None else {}),
            "recording": self.recording,
            **({"recording_dropped": self.recording_dropped}
               if self.recording_dropped is not None else {}),
            "sampling": self.sampling,
            "trace_id": self.trace_id,
            "models": sorted(self.models.values(), key=lambda m: (m["provider"], m["model"])),
            "totals": {
                "model_calls": self.model_calls,
                "input_tokens": self.input_tokens,
                "output_tokens": self.output_tokens,
                "tool_calls": self.tool_calls,
                "messages": self.messages,
                **cost_totals(self.ledger),
            },
            "incidents": self.incidents.model_dump(mode="json"),
            **self.outcome.model_dump(),
        }

    def write(self) -> None:
        """Finish the run folder: the transcript in order (also as a table), the recording,
        the manifest."""
        table = self._table
        try:
            self._transcript.close(table.add, sourced=table.take_from)
        except BaseException:
            table.abort()
            raise
        table.close()
        with self._lock:
            if self._recording_file is not None:
                if self._recording:
                    self._recording_file.write("\n".join(self._recording) + "\n")
                self._recording_file.close()
                self._recording_file = None
            self._recording = []
        self.write_manifest()

    def take_in(self, text: str) -> None:
        """Take in a journal another process sent (lines in the formats :class:`RunPart`
        writes): its agents' messages, model responses, counts and spans."""
        for raw in text.split("\n"):
            if raw:
                self._take_in(raw)

    def _take_in(self, raw: str) -> None:
        """One line of a journal."""
        kind, _, rest = raw.partition("\t")
        if kind == "S":
            clock, seq, name, line = rest.split("\t", 3)
            self._transcript.add((int(clock), json.loads(name), int(seq)), line)
        elif kind == "R":
            key, _, response = rest.partition("\t")
            self._record_line(_recording_line(key, response))
        elif kind == "T":
            if self.spans is not None:
                self.spans.add_line(rest)
        elif kind == "C":
            calls, inputs, outputs, tools = (int(v) for v in rest.split("\t"))
            with self._lock:
                self.model_calls += calls
                self.input_tokens += inputs
                self.output_tokens += outputs
                self.tool_calls += tools
        elif kind == "U":
            provider, model, *settings = json.loads(rest)  # settings: since 2026-12
            self.model_used(provider, model, settings[0] if settings else None)
        elif kind == "L":
            self.merge_ledger(Ledger.model_validate_json(rest))
        elif kind == "E":
            event = json.loads(rest)
            self.note_event(str(event.pop("kind", "")), event)


JOURNAL_BATCH = 4_096
"""Lines a :class:`RunPart` holds before it sends them on, whatever else is due."""


class RunPart(Run):
    """This process's part of an experiment another process runs: the run's identity came
    with a message (see :func:`join_run`). Its agents' messages, model responses, spans
    (of the traces sampling keeps) and the counts of model and tool calls are journaled,
    and the journal travels back over the bus to the process that runs the experiment,
    which alone writes the run folder; when the run replays, model calls here are answered
    from its recording (read from the run folder's path).

    Nothing is written here. The bus takes the journal (:func:`journal_out`) just before
    each answer it sends and sends it to that answer's caller first, on the same link:
    whoever has an answer has what caused it (a caller that is itself a part passes it on,
    toward the run). Lines also go on, to the last process that sent this one a message of
    the run, once :data:`JOURNAL_BATCH` of them wait; the run's process asks for what is
    left when the run ends (and a closing transport sends it). So a part holds at most
    what its work since its last answer made.

    Its lines, tab-separated: ``S clock seq name line`` (a transcript line), ``R key
    response`` (a recorded response), ``T span`` (a span's JSON line), ``C calls input
    output tools`` (counts since the previous batch), ``U [provider, model]`` (a model
    used), ``E {event}`` (an incident: see :func:`run_event`), ``L ledger`` (the cost
    ledger's entries since the previous batch, as JSON).
    """

    def __init__(self, locator: str) -> None:
        run_dir, replay, *more = json.loads(locator)
        self.locator = locator
        self.dir = Path(run_dir)
        self.replay_of = Path(replay) if replay is not None else None
        self.recording = replay is None and (not more or bool(more[0]))
        self.spans = None
        self.outcome = RunOutcome()
        self._init_state()
        if self.replay_of is not None:
            self._replay = load_recording(self.replay_of)
        self._pending: list[str] = []
        self._counts = [0, 0, 0, 0]  # model calls, input and output tokens, tool calls
        self._due = False
        self._span_feed = _SpanJournal(self)
        dispatcher().attach(self._span_feed)  # type: ignore[arg-type]  # (on_record)

    def _write(self, line: str) -> None:
        """Journal ``line`` (the caller holds the lock)."""
        self._pending.append(line)
        if len(self._pending) >= JOURNAL_BATCH:
            self._soon()

    def _soon(self) -> None:
        """Send what waits on, in the event loop's next turn."""
        if self._due:
            return
        self._due = True
        try:
            asyncio.get_running_loop().call_soon(self.flush)
        except RuntimeError:  # no event loop in this thread: the next answer takes it
            self._due = False

    def flush(self) -> None:
        """Send what waits to the process that sent the run here last (when the bus
        registered a way to: see :func:`set_journal_shipper`)."""
        self._due = False
        ship = _shipper
        if ship is None:
            return
        text = self.take()
        if text is not None:
            ship(text)

    def take(self) -> str | None:
        """What waits, as one text (``None`` when nothing does); it is no longer held."""
        with self._lock:
            if any(self._counts):
                self._pending.append("C\t" + "\t".join(map(str, self._counts)))
                self._counts = [0, 0, 0, 0]
            if self._tally:
                self._pending.append("L\t" + self._tally.take().model_dump_json())
            if not self._pending:
                return None
            batch, self._pending = self._pending, []
        return "\n".join(batch)

    @property
    def held(self) -> int:
        """Journal lines held here now, waiting to be sent."""
        return len(self._pending)

    def take_in(self, text: str) -> None:
        """A journal from a process this one called: it goes on with this one's."""
        lines = [raw for raw in text.split("\n") if raw]
        with self._lock:
            self._pending.extend(lines)
            if len(self._pending) >= JOURNAL_BATCH:
                self._soon()

    def add_span(self, record: Any) -> None:
        """Journal a finished span of this process."""
        line = span_line(record)
        with self._lock:
            self._write("T\t" + line[:-1])

    def _add_line(self, key: tuple[int, str, int], line: str) -> None:
        self._write(f"S\t{key[0]}\t{key[2]}\t{json.dumps(key[1])}\t{line}")

    def model_used(self, provider: str, model: str,
                   settings: Mapping[str, str] | None = None) -> None:
        key = _model_key(provider, model, settings)
        if key not in self.models:
            self.models[key] = {"provider": provider, "model": model, **(settings or {})}
            with self._lock:
                self._write("U\t" + json.dumps([provider, model, dict(settings or {})]))

    def count(self, input_tokens: int, output_tokens: int) -> None:
        with self._lock:
            counts = self._counts
            counts[0] += 1
            counts[1] += input_tokens
            counts[2] += output_tokens

    def count_tool_call(self) -> None:
        with self._lock:
            self._counts[3] += 1

    def note_event(self, kind: str, event: dict[str, Any]) -> None:
        line = "E\t" + json.dumps({"kind": kind, **event}, default=str)
        with self._lock:
            self._write(line)
            self._soon()  # news for the run: on its way at once

    def charge(self, provider: str, model: str, round_: int | None, agent_class: str | None,
               *usage: Any) -> None:
        with self._lock:
            self._tally.add(provider, model, round_, agent_class, *usage)

    def record_response_json(self, key: str, response: str) -> None:
        if not self.recording:
            return
        line = f"R\t{key}\t{response}"
        with self._lock:
            self._write(line)

    @property
    def messages(self) -> int:
        return sum(self._seen.values())

    def write(self) -> None:
        """Stop following the run: this process's spans no longer join its journal (what
        waits is sent on, if the bus can)."""
        dispatcher().detach(self._span_feed)  # type: ignore[arg-type]
        self.flush()


class _SpanJournal:
    """A span processor that journals a part's spans (agentplex's records come to
    ``on_record`` as they are, SDK spans to ``on_end``)."""

    def __init__(self, part: RunPart) -> None:
        self.part = part

    def on_record(self, span: Any) -> None:
        self.part.add_span(span)

    def on_start(self, span: Any, parent_context: Any = None) -> None:
        pass

    def on_end(self, span: Any) -> None:
        if span.context is not None and span.context.trace_flags.sampled:
            self.part.add_span(span)

    def shutdown(self) -> None:
        pass

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


_shipper: Callable[[str], None] | None = None
_drains: list[Callable[[Run], Awaitable[None]]] = []


def set_journal_shipper(ship: Callable[[str], None] | None) -> Callable[[str], None] | None:
    """How this process's journal of another process's run goes on when enough of it
    waits (the bus sends it to the process that sent the run here last); ``None``: no
    way (it waits for the next answer). Returns the one set before."""
    global _shipper
    before, _shipper = _shipper, ship
    return before


def add_run_drain(drain: Callable[[Run], Awaitable[None]]) -> None:
    """Await ``drain(run)`` when an experiment of this process ends, before its folder is
    written: the bus collects there what other processes still hold of the run."""
    _drains.append(drain)


def remove_run_drain(drain: Callable[[Run], Awaitable[None]]) -> None:
    """Undo :func:`add_run_drain`."""
    with contextlib.suppress(ValueError):
        _drains.remove(drain)


async def collect_parts(run: Run) -> None:
    """Take in now what other processes still hold of ``run`` (the bus asks each node it
    knows): before the run's folder is written, and before a checkpoint puts what was said
    on disk."""
    for drain in list(_drains):
        await drain(run)


def driving_run() -> Run | None:
    """The experiment this process runs (not one it follows), if any."""
    run = _active
    return None if run is None or isinstance(run, RunPart) else run


def outgoing_run(headers: dict[str, str], actor: str | None) -> None:
    """Add the running experiment (if any) and the sending ``actor``'s causal clock to the
    headers of a message leaving this process."""
    run = _active
    if run is not None:
        headers[RUN_HEADER] = run.locator
        headers[_CLOCK_HEADER] = str(run.clock(actor))


def answer_headers(actor: str | None) -> dict[str, str] | None:
    """Headers for the answer ``actor`` sends back to a caller in another process: its
    causal clock, so what the caller says next comes after the answer (``None`` outside
    experiments)."""
    run = _active
    if run is None:
        return None
    return {_CLOCK_HEADER: str(run.clock(actor))}


def answer_received(headers: Mapping[str, str], actor: str | None) -> None:
    """An answer from another process reached ``actor`` (``None``: the program): its
    clock moves past the answerer's."""
    run = _active
    value = headers.get(_CLOCK_HEADER)
    if run is not None and value is not None and value.isdigit():
        run.heard(actor, int(value))


def join_run(headers: Mapping[str, str], context: otel_context.Context
             ) -> otel_context.Context:
    """For a message from another process: follow the experiment it belongs to (this
    process's part of it, a :class:`RunPart`) and return ``context`` carrying its sender's
    causal clock."""
    global _active
    locator = headers.get(RUN_HEADER)
    if locator is None:
        return context
    run = _active
    if run is None or (run.locator != locator and isinstance(run, RunPart)):
        if run is not None:
            run.write()
        _active = RunPart(locator)
    try:
        clock = int(headers.get(_CLOCK_HEADER, "0"))
    except ValueError:
        return context
    return otel_context.set_value(_CLOCK_KEY, clock, context)


ROUND_SPAN = 10**12
"""A simulation's transcript is ordered by round, then causal clock: a line's place is
``round * ROUND_SPAN + clock`` (its ``clock`` field stays the Lamport clock)."""


def _order(number: int | None, clock: int) -> int:
    return clock if number is None else number * ROUND_SPAN + clock


def transcript_until(run_dir: Path, number: int) -> Iterator[tuple[tuple[int, str, int], str]]:
    """The transcript lines of the simulation run in ``run_dir`` up to the end of round
    ``number`` (what was said before round 1, and in rounds 1 to ``number``; not what was
    said outside any round after them), as ``(key, line)`` pairs in order: from its
    ``transcript.jsonl`` if it finished, else from the sorted chunks its process left on
    disk (see :meth:`Run.sync`: node processes' lines are among them, as their journals
    reached the run's process over the bus)."""
    bound = _order(number + 1, 0) - 1
    path = run_dir / "transcript.jsonl"
    if not path.exists():
        for key, line in read_chunks(path):
            if key[0] > bound:
                return
            if key[0] < ROUND_SPAN or "round" in json.loads(line):
                yield key, line
        return
    seen: dict[str, int] = {}
    last = 0
    with path.open(encoding="utf-8") as f:
        for line in f:
            entry = json.loads(line)
            number_ = entry.get("round")
            last = number_ if number_ is not None else last
            order = _order(last, int(entry["clock"]))
            if order > bound:
                return
            name = str(entry.get("name", ""))
            seq = seen.get(name, 0)
            seen[name] = seq + 1
            if number_ is not None or last == 0:
                yield (order, name, seq), line.rstrip("\n")


def load_recording(run_dir: Path) -> dict[str, list[Any]]:
    """The responses a run recorded, per request key, in the order they were given."""
    path = run_dir / "recording.jsonl"
    if path.exists():
        answers: dict[str, list[Any]] = {}
        with path.open(encoding="utf-8") as f:
            for line in f:
                if line.strip():
                    item = json.loads(line)
                    answers.setdefault(item["key"], []).append(item["response"])
        return answers
    legacy = run_dir / "recording.json"  # run folders written before the recording streamed
    if legacy.exists():
        loaded: dict[str, list[Any]] = json.loads(legacy.read_text())
        return loaded
    dropped = _manifest_value(run_dir, "recording_dropped")
    if isinstance(dropped, str):
        raise NoRecording(f"the run {run_dir.name} has no recording: {dropped}")
    if _recorded(run_dir) is False:
        raise NoRecording(f"the run {run_dir.name} was made without a recording "
                          "(--no-recording): it cannot be replayed")
    raise NoRecording(f"no recording to replay at {path}")


def _recorded(run_dir: Path) -> bool | None:
    """The manifest's ``recording`` (``None``: no manifest, or written before it said)."""
    value = _manifest_value(run_dir, "recording")
    return value if isinstance(value, bool) else None


def _manifest_value(run_dir: Path, key: str) -> Any:
    """The manifest's ``key`` (``None``: no manifest, or no such key)."""
    try:
        return json.loads((run_dir / "manifest.json").read_text()).get(key)
    except (OSError, ValueError, AttributeError):
        return None


def _size(n: int) -> str:
    """``n`` bytes for a person (``256 MB``)."""
    return f"{n / 1e9:.3g} GB" if n >= 1e9 else f"{n / 1e6:.3g} MB"


def _forget(table: dict[str, tuple[int, Any]], key: str, owner: object | None) -> Any:
    """A weak reference to ``owner`` that drops ``table[key]`` when ``owner`` goes."""
    if owner is None:
        return None

    def gone(ref: Any) -> None:
        entry = table.get(key)
        if entry is not None and entry[1] is ref:
            table.pop(key, None)

    try:
        return weakref.ref(owner, gone)
    except TypeError:  # not weakly referable: remembered for the run
        return None


def run_event(kind: str, **event: Any) -> None:
    """Report an incident of the running experiment (the cluster's head: ``"rollback"``
    or ``"lost"``, with the fields of :class:`~agentplex.tracing.Rollback`): counted in
    the manifest's ``incidents`` and logged by the run's process (no-op outside runs)."""
    run = _active
    if run is not None:
        run.note_event(kind, event)


def count_tool_call() -> None:
    """Count a tool call in the running experiment (no-op outside experiments)."""
    run = _active
    if run is not None:
        run.count_tool_call()


def transcribe(msg: Msg | list[Msg] | Any, speaker: str | None) -> None:
    """Add ``msg`` to the running experiment's transcript (no-op outside experiments)."""
    run = _active
    if run is None:
        return
    for m in msg if isinstance(msg, list) else [msg]:
        if isinstance(m, Msg):
            run.said(speaker, m.id, m.model_dump(mode="json",
                                                 include={"name", "role", "content", "metadata"}),
                     m)


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
    sampling: float | None = None,
    buffer: int = 20_000,
    recording: bool = True,
    recording_limit: int | None = None,
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
        sampling: the share of traces to keep (``0.01``: one in a hundred), decided at
            each trace's root and followed by every process it reaches; default: the
            process's sampler (``OTEL_TRACES_SAMPLER``). The transcript, the recording and
            the manifest's totals are complete whatever is sampled. While sampling, each
            call the body makes from outside any agent starts a trace of its own, linked
            to the run's ``run {name}`` span, so that each is kept or dropped whole.
        buffer: how many spans, messages and responses wait in memory before they are
            written (spans: at most 512); memory stays within it whatever the run's length.
        recording: ``False``: no ``recording.jsonl`` (a rule-based run, or one whose model
            answers need not be replayed); such a run cannot be replayed.
        recording_limit: the most bytes ``recording.jsonl`` may reach (``None`` or ``0``:
            any size). A recording that passes it is removed and the run goes on without
            one: the manifest says ``"recording": false`` and why (``recording_dropped``),
            and so does ``run.recording_dropped`` as soon as it happens.
    """
    global _active
    if isinstance(_active, RunPart):  # this process was following another's run: no more
        _active.write()
        _active = None
    if _active is not None:
        raise RuntimeError(f"experiment {_active.id!r} is already running in this process")
    if sampling is not None and not 0.0 <= sampling <= 1.0:
        raise ValueError(f"sampling is a share of traces between 0 and 1, not {sampling!r}")
    run = Run(name, Path(runs_dir), seed, dict(config or {}),
              Path(replay) if replay is not None else None, buffer=buffer,
              recording=recording, recording_limit=recording_limit)
    if seed is not None:
        _seed_everything(seed)
    processor = BufferedSpanProcessor(JsonLinesSpanExporter(run.dir / "trace.jsonl"),
                                      batch_size=min(buffer, 512))
    run.spans = processor
    hub = dispatcher()
    hub.attach(processor)
    process_sampler = sampler()
    before = TraceSampler(process_sampler.ratio, parent_based=process_sampler.parent_based)
    if sampling is not None:
        process_sampler.set(sampling, parent_based=True)
    run.sampling = process_sampler.ratio
    if capture_content is not None:
        set_content_capture(capture_content)
    _active = run
    started = time.perf_counter()
    attributes: dict[str, Any] = {"agentplex.run.id": run.id, "agentplex.run.name": name,
                  "agentplex.run.seed": seed if seed is not None else -1,
                  "agentplex.run.sampling": process_sampler.ratio}
    rec = recorder()
    span = rec.start(f"run {name}", attributes=attributes, force=True) if rec is not None \
        else trace.get_tracer("agentplex").start_span(f"run {name}", attributes=attributes)
    run.trace_id = format(span.get_span_context().trace_id, "032x")
    current: trace.Span = span
    if rec is not None and process_sampler.ratio < 1.0:
        current = RunAnchor(span.get_span_context())
    token = otel_context.attach(trace.set_span_in_context(current))
    try:
        yield run
        if run.outcome.status == "running":  # not stopped cleanly on the way (budget)
            run.outcome.status = "completed"
    except (KeyboardInterrupt, asyncio.CancelledError):
        run.outcome.status = "interrupted"
        raise
    except BaseException as exc:
        run.outcome.status = "failed"
        run.outcome.error = f"{type(exc).__name__}: {exc}"[:500]
        raise
    finally:
        try:
            await collect_parts(run)
        finally:
            otel_context.detach(token)
            span.end()
            _active = None
        process_sampler.set(before.ratio, parent_based=before.parent_based)
        if capture_content is not None:
            set_content_capture(None)
        run.ended_at = datetime.now(UTC).isoformat()
        run.duration_s = round(time.perf_counter() - started, 3)
        hub.detach(processor)
        run.write()


def _model_key(provider: str, model: str, settings: Mapping[str, str] | None) -> str:
    """A run's key for a model: ``provider:model``, then its settings (sorted), if any."""
    extra = ",".join(f"{k}={v}" for k, v in sorted((settings or {}).items()))
    return f"{provider}:{model}" + (f"[{extra}]" if extra else "")
