"""The cost ledger: every model call's usage, per model, per round and per agent class.

A run keeps one (``run.ledger``); a node process following the run keeps its own part and
journals it to the driver, where the parts add up (``a + b``). Rounds are set by whoever
drives the run (:func:`set_round`, :func:`in_round`) and travel with every message, so a
model call made by an agent on another node counts in the round that asked for it.

What it costs where prices come from is in :mod:`agentplex.tracing._prices`; a ceiling on
it is a :class:`~agentplex.tracing.Budget`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, MutableMapping
from contextlib import contextmanager
from typing import Any, TypeVar

from opentelemetry import context as otel_context
from pydantic import BaseModel, ConfigDict

from ._context import attach, current_context, detach

__all__ = [
    "DeviceClock",
    "Ledger",
    "LedgerEntry",
    "Tally",
    "Usage",
    "current_round",
    "in_round",
    "round_from_headers",
    "round_to_headers",
    "set_round",
]

_ROUND_KEY = otel_context.create_key("agentplex-round")
_ROUND_HEADER = "agentplex-round"


# -- rounds --------------------------------------------------------------------------------

def current_round() -> int | None:
    """The round the running code belongs to (``None``: outside any round)."""
    value = current_context().get(_ROUND_KEY)
    return value if isinstance(value, int) else None


def set_round(n: int | None) -> None:
    """Count what this task does from now on in round ``n`` (``None``: in no round), and
    what every message it sends causes, in this process or another."""
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 0):
        raise ValueError(f"a round is a whole number >= 0, not {n!r}")
    attach(otel_context.set_value(_ROUND_KEY, n, current_context()))


@contextmanager
def in_round(n: int | None) -> Iterator[None]:
    """:func:`set_round` for the body only."""
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 0):
        raise ValueError(f"a round is a whole number >= 0, not {n!r}")
    token = attach(otel_context.set_value(_ROUND_KEY, n, current_context()))
    try:
        yield
    finally:
        detach(token)


def round_to_headers(headers: MutableMapping[str, str],
                     context: otel_context.Context | None = None) -> None:
    """Add the round of ``context`` (default: the current one), if any, to the headers of
    a message leaving the process."""
    n = (current_context() if context is None else context).get(_ROUND_KEY)
    if isinstance(n, int):
        headers[_ROUND_HEADER] = str(n)


def round_from_headers(headers: Mapping[str, str], context: otel_context.Context
                       ) -> otel_context.Context:
    """``context`` carrying the round a message from another process was sent in."""
    value = headers.get(_ROUND_HEADER)
    if value is None or not value.isdigit():
        return context
    return otel_context.set_value(_ROUND_KEY, int(value), context)


# -- the ledger (values) -------------------------------------------------------------------

_FIELDS = ("calls", "input_tokens", "output_tokens", "cached_tokens",
           "cache_creation_tokens", "cpu_s", "gpu_s")


class Usage(BaseModel):
    """What some model calls used. ``input_tokens`` counts every prompt token; of those,
    ``cached_tokens`` were read from a provider's prompt cache and ``cache_creation_tokens``
    written to it. ``cpu_s`` / ``gpu_s``: the device time local models spent on the calls
    (a batch's time shared among the calls in it)."""

    model_config = ConfigDict(extra="forbid")

    calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0
    cache_creation_tokens: int = 0
    cpu_s: float = 0.0
    gpu_s: float = 0.0

    @property
    def tokens(self) -> int:
        """Input and output tokens together."""
        return self.input_tokens + self.output_tokens

    def __add__(self, other: Usage) -> Usage:
        return Usage(**{f: getattr(self, f) + getattr(other, f) for f in _FIELDS})


class LedgerEntry(Usage):
    """The usage of one model's calls in one round by one agent class (``None``: outside
    any round / outside any actor — the program driving the run)."""

    provider: str
    model: str
    round: int | None = None
    agent_class: str | None = None


_Key = tuple[str, str, int | None, str | None]
_K = TypeVar("_K")


def _key(entry: LedgerEntry) -> _Key:
    return (entry.provider, entry.model, entry.round, entry.agent_class)


class Ledger(BaseModel):
    """A run's model usage, one entry per (model, round, agent class). Ledgers add up:
    ``a + b`` (or ``Ledger.merge(a, b, ...)``) is the ledger of both runs' parts; they
    travel as JSON (``model_dump_json`` / ``model_validate_json``)."""

    model_config = ConfigDict(extra="forbid")

    entries: list[LedgerEntry] = []

    def __add__(self, other: Ledger) -> Ledger:
        return Ledger.merge(self, other)

    def __bool__(self) -> bool:
        return bool(self.entries)

    @classmethod
    def merge(cls, *ledgers: Ledger) -> Ledger:
        """The sum of ``ledgers``."""
        tally = Tally()
        for ledger in ledgers:
            tally.merge(ledger)
        return tally.ledger()

    def total(self) -> Usage:
        """Every call together."""
        return _sum(self.entries)

    def by_model(self) -> dict[tuple[str, str], Usage]:
        """Usage per ``(provider, model)``."""
        return _group(self.entries, lambda e: (e.provider, e.model))

    def by_round(self) -> dict[int | None, Usage]:
        """Usage per round (``None``: calls outside any round)."""
        return _group(self.entries, lambda e: e.round)

    def by_agent_class(self) -> dict[str | None, Usage]:
        """Usage per agent class (``None``: calls made outside any actor)."""
        return _group(self.entries, lambda e: e.agent_class)


def _sum(entries: Iterable[Usage]) -> Usage:
    totals = dict.fromkeys(_FIELDS, 0)
    for e in entries:
        for f in _FIELDS:
            totals[f] += getattr(e, f)
    return Usage(**totals)


def _group(entries: list[LedgerEntry], key: Callable[[LedgerEntry], _K]) -> dict[_K, Usage]:
    groups: dict[_K, list[LedgerEntry]] = {}
    for e in entries:
        groups.setdefault(key(e), []).append(e)
    return {k: _sum(v) for k, v in groups.items()}


# -- the hot path --------------------------------------------------------------------------

class Tally:
    """Where a process adds up its model calls as they end (plain lists, no validation:
    a :class:`Ledger` is made from it on demand). Not thread-safe: its owner locks."""

    __slots__ = ("_cells",)

    def __init__(self) -> None:
        self._cells: dict[_Key, list[Any]] = {}

    def __bool__(self) -> bool:
        return bool(self._cells)

    def add(self, provider: str, model: str, round_: int | None, agent_class: str | None,
            input_tokens: int, output_tokens: int, cached_tokens: int = 0,
            cache_creation_tokens: int = 0, cpu_s: float = 0.0, gpu_s: float = 0.0) -> None:
        """Count one call."""
        key = (provider, model, round_, agent_class)
        cell = self._cells.get(key)
        if cell is None:
            cell = self._cells[key] = [0, 0, 0, 0, 0, 0.0, 0.0]
        cell[0] += 1
        cell[1] += input_tokens
        cell[2] += output_tokens
        cell[3] += cached_tokens
        cell[4] += cache_creation_tokens
        cell[5] += cpu_s
        cell[6] += gpu_s

    def merge(self, ledger: Ledger) -> None:
        """Add every entry of ``ledger``."""
        for e in ledger.entries:
            key = _key(e)
            cell = self._cells.get(key)
            if cell is None:
                cell = self._cells[key] = [0, 0, 0, 0, 0, 0.0, 0.0]
            for i, f in enumerate(_FIELDS):
                cell[i] += getattr(e, f)

    def ledger(self) -> Ledger:
        """What was counted, as a :class:`Ledger` (entries in a stable order)."""
        def order(key: _Key) -> tuple[Any, ...]:
            return (key[0], key[1], key[2] is not None, key[2] or 0, key[3] or "")
        return Ledger(entries=[
            LedgerEntry(provider=k[0], model=k[1], round=k[2], agent_class=k[3],
                        **dict(zip(_FIELDS, self._cells[k], strict=True)))
            for k in sorted(self._cells, key=order)])

    def take(self) -> Ledger:
        """:meth:`ledger`, then start again from nothing (a node's part since its last
        journal write)."""
        ledger = self.ledger()
        self._cells = {}
        return ledger


class DeviceClock:
    """Device time for the calls of one local model, shared among the calls in flight at
    each moment (processor sharing): 16 calls batched together for 2 s get 0.125 s each, so
    the calls' shares add up to the time the model was busy, not 16 times it."""

    __slots__ = ("_busy", "_last", "_lock", "_virtual")

    def __init__(self) -> None:
        self._busy = 0
        self._last = 0.0
        self._virtual = 0.0
        self._lock = threading.Lock()

    def _advance(self, now: float) -> None:
        if self._busy:
            self._virtual += (now - self._last) / self._busy
        self._last = now

    def start(self) -> float:
        """A call begins; keep what this returns for :meth:`stop`."""
        with self._lock:
            self._advance(time.perf_counter())
            self._busy += 1
            return self._virtual

    def stop(self, started: float) -> float:
        """A call ends: its share of the device's time, in seconds."""
        with self._lock:
            self._advance(time.perf_counter())
            self._busy -= 1
            return self._virtual - started
