"""A run folder summarised in bounded memory: per round, node, agent class and model, and a
bounded sample of span trees to drill into.

Everything streams over the run folder's files (``trace.jsonl``, ``transcript.jsonl``, the
manifest), a few times over ``trace.jsonl``: memory grows with the number of rounds, nodes,
agent classes and models, never with the number of spans or messages.
"""

from __future__ import annotations

import hashlib
import heapq
import json
import math
import random
import re
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["DistinctCount", "GroupStats", "LatencySketch", "RunSummary", "SampledTrace",
           "summarize_run"]

RUN_GROUP = "run"
"""The one group of a run whose spans and transcript lines carry no round."""

ROUND_ATTRIBUTES = ("agentplex.round", "agentplex.sim.round")
"""Span attributes that name a span's round: the first is any code's, the second the one
``agentplex.sim`` puts on its ``round N``, ``checkpoint N``, intervention and survey
spans."""

DRIVER = "driver"
"""The node of spans recorded outside any node process (the driver's own process)."""

FAILED_TRACES = 10
SLOWEST_TRACES = 10
RANDOM_TRACES = 20
SPANS_PER_TRACE = 200
_DEPTH = 8  # extra passes to collect the descendants of the sampled roots, at most
_EXACT = 4096  # latencies kept exactly before switching to a log-bucket histogram
_GROWTH = 1.01  # bucket width of the histogram: percentiles within 1 %
_HANDLERS = 1 << 17  # message handlers' nodes remembered
_KMV = 4096  # smallest hashes kept to count distinct agents (1.6 % standard error beyond)


class LatencySketch:
    """Latencies (ns) and their percentiles: exact up to 4,096 values, then a histogram
    with buckets 1 % wide (so a percentile is within 1 % of the true one)."""

    __slots__ = ("_buckets", "_values", "count", "total")

    def __init__(self) -> None:
        self._values: list[int] | None = []
        self._buckets: dict[int, int] = {}
        self.count = 0
        self.total = 0

    def add(self, ns: int) -> None:
        ns = max(ns, 1)
        self.count += 1
        self.total += ns
        if self._values is not None:
            self._values.append(ns)
            if len(self._values) > _EXACT:
                for v in self._values:
                    self._bucket(v)
                self._values = None
        else:
            self._bucket(ns)

    def _bucket(self, ns: int) -> None:
        key = int(math.log(ns, _GROWTH))
        self._buckets[key] = self._buckets.get(key, 0) + 1

    @property
    def exact(self) -> bool:
        return self._values is not None

    def percentile(self, q: float) -> float | None:
        """The ``q``-th percentile (nearest rank) in milliseconds; ``None`` when empty."""
        if not self.count:
            return None
        rank = max(1, math.ceil(q / 100 * self.count))
        if self._values is not None:
            return sorted(self._values)[rank - 1] / 1e6
        seen = 0
        for key in sorted(self._buckets):
            seen += self._buckets[key]
            if seen >= rank:
                return float(_GROWTH ** (key + 0.5)) / 1e6
        return None  # pragma: no cover - ranks never pass the count


class DistinctCount:
    """How many distinct strings were added: exact up to 4,096, then estimated from the
    4,096 smallest hashes (k minimum values; a standard error of 1.6 %)."""

    __slots__ = ("_heap", "_kept")

    def __init__(self) -> None:
        self._heap: list[int] = []  # negated: the largest kept hash on top
        self._kept: set[int] = set()

    def add(self, item: str) -> None:
        h = int.from_bytes(hashlib.blake2b(item.encode(), digest_size=8).digest(), "big")
        if h in self._kept:
            return
        if len(self._heap) < _KMV:
            heapq.heappush(self._heap, -h)
            self._kept.add(h)
        elif h < -self._heap[0]:
            self._kept.discard(-heapq.heappushpop(self._heap, -h))
            self._kept.add(h)

    @property
    def exact(self) -> bool:
        return len(self._heap) < _KMV

    def __len__(self) -> int:
        if self.exact:
            return len(self._heap)
        return round((_KMV - 1) / (-self._heap[0] / 2**64))


@dataclass
class GroupStats:
    """Counts of one group (a round, a node, an agent class or a model)."""

    answers: int = 0        # transcript replies (rounds), replies (nodes, classes), calls
    failures: int = 0       # spans with status ERROR
    spans: int = 0          # traced replies or calls
    input_tokens: int = 0
    output_tokens: int = 0
    latency: LatencySketch = field(default_factory=LatencySketch)
    agents: DistinctCount = field(default_factory=DistinctCount)
    cpu_s: float | None = None
    sent: int = 0           # messages a node sent (its ``send`` spans)
    received: int = 0       # messages a node took in (its ``process`` spans)
    calls: int = 0          # traced model calls (rounds)
    ledger: dict[str, Any] | None = None  # the manifest's exact row, where it has one

    def usage(self) -> tuple[int, int, int] | None:
        """Model calls, tokens in and out: the manifest's exact figures where it has
        them, else the traced ``chat`` spans' (``None``: neither)."""
        if self.ledger is not None:
            return (int(self.ledger.get("calls") or 0), int(self.ledger.get("input_tokens") or 0),
                    int(self.ledger.get("output_tokens") or 0))
        if self.calls:
            return self.calls, self.input_tokens, self.output_tokens
        return None

    def cost_usd(self) -> float | None:
        """The manifest's price of this group's calls, where it has one."""
        cost = None if self.ledger is None else self.ledger.get("cost_usd")
        return float(cost) if isinstance(cost, int | float) else None

    def device_s(self) -> float | None:
        """CPU and GPU seconds local models spent, from the manifest."""
        if self.ledger is None:
            return None
        return float(self.ledger.get("cpu_s") or 0) + float(self.ledger.get("gpu_s") or 0)

    def percentiles(self) -> tuple[float | None, float | None, float | None]:
        return (self.latency.percentile(50), self.latency.percentile(95),
                self.latency.percentile(99))


@dataclass
class SampledTrace:
    """One span tree chosen for the drill-down, and why."""

    reason: str            # "failed", "slowest" or "sample"
    root: dict[str, Any]
    spans: list[dict[str, Any]] = field(default_factory=list)  # the root first
    round: str = RUN_GROUP
    node: str = DRIVER
    truncated: bool = False


@dataclass
class RunSummary:
    """What :func:`summarize_run` found in a run folder."""

    manifest: dict[str, Any]
    spans: int = 0
    trace_bytes: int = 0
    messages: int = 0
    rounds: dict[str, GroupStats] = field(default_factory=dict)
    nodes: dict[str, GroupStats] = field(default_factory=dict)
    agent_classes: dict[str, GroupStats] = field(default_factory=dict)
    models: dict[str, GroupStats] = field(default_factory=dict)
    rounds_from_transcript: bool = False
    traces: list[SampledTrace] = field(default_factory=list)
    candidates: int = 0
    transcript_head: list[dict[str, Any]] = field(default_factory=list)


def _lines(path: Path) -> Iterator[str]:
    if not path.exists():
        return
    with path.open(encoding="utf-8", errors="replace") as f:
        yield from f


def _spans(path: Path) -> Iterator[dict[str, Any]]:
    for line in _lines(path):
        try:
            span = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(span, dict) and "span_id" in span:
            yield span


def _round_key(value: Any) -> str:
    return RUN_GROUP if value is None else str(value)


def group_order(name: str) -> tuple[int, float, list[Any]]:
    """Sort key of a group's name: numbers by value, then names with their numbers
    compared as numbers (``node-2`` before ``node-10``)."""
    try:
        return (0, float(name), [])
    except ValueError:
        return (1, 0.0, [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", name)])


_TRAILING_NUMBER = re.compile(r"[-_ ]?\d+$")


def agent_class(attrs: dict[str, Any], only: str | None = None) -> str:
    """The class of the agent of an ``invoke_agent`` span: its ``agentplex.agent.class``
    attribute, else ``only`` (the one class the run's cost ledger names), else its name
    without a trailing number (``Player17`` → ``Player``)."""
    cls = attrs.get("agentplex.agent.class")
    if cls:
        return str(cls).rsplit(".", 1)[-1].rsplit(":", 1)[-1]
    if only is not None:
        return only
    name = str(attrs.get("gen_ai.agent.name") or "?")
    return _TRAILING_NUMBER.sub("", name) or name


def _op(span: dict[str, Any]) -> str:
    return str((span.get("attributes") or {}).get("gen_ai.operation.name") or "")


def _duration(span: dict[str, Any]) -> int:
    return max(0, int(span.get("end") or 0) - int(span.get("start") or 0))


def _round_attr(span: dict[str, Any]) -> Any:
    attrs = span.get("attributes") or {}
    return next((attrs[a] for a in ROUND_ATTRIBUTES if attrs.get(a) is not None), None)


class _Rounds:
    """Round of a span: its round attribute (:data:`ROUND_ATTRIBUTES`), else the round
    whose time holds its start. A round's time is that of its round spans (spans with the
    attribute that are not an agent's, model's or tool's), else of all spans with the
    attribute; a span outside every round is in the single ``run`` group."""

    def __init__(self) -> None:
        self.structural: dict[str, list[int]] = {}
        self.any: dict[str, list[int]] = {}

    def see(self, span: dict[str, Any]) -> None:
        value = _round_attr(span)
        if value is None:
            return
        tables = [self.any] if _op(span) else [self.any, self.structural]
        for table in tables:
            window = table.setdefault(str(value), [span["start"], span["end"]])
            window[0] = min(window[0], span["start"])
            window[1] = max(window[1], span["end"])

    def of(self, span: dict[str, Any]) -> str:
        value = _round_attr(span)
        if value is not None:
            return str(value)
        start = span.get("start") or 0
        best: tuple[int, str] | None = None
        for name, (lo, hi) in (self.structural or self.any).items():
            if lo <= start <= hi and (best is None or lo > best[0]):
                best = (lo, name)
        return RUN_GROUP if best is None else best[1]


class _Picker:
    """Chooses the span trees to drill into: the slowest failed ones, then the slowest,
    then a seeded uniform sample of the rest (reservoir sampling, one pass)."""

    def __init__(self, seed: int, failed: int, slowest: int, sample: int) -> None:
        self.failed: list[tuple[int, str]] = []
        self.slowest: list[tuple[int, str]] = []
        self.sample: list[str] = []
        self.limits = (failed, slowest, sample)
        self.rng = random.Random(seed)
        self.seen = 0

    def offer(self, span: dict[str, Any]) -> None:
        sid, dur = span["span_id"], _duration(span)
        self.seen += 1
        if span.get("status") == "ERROR":
            _keep_top(self.failed, (dur, sid), self.limits[0])
        _keep_top(self.slowest, (dur, sid), self.limits[1] + self.limits[0])
        # a reservoir big enough that, whatever the first two lists took, ``sample`` of
        # the rest are left in it
        if len(self.sample) < sum(self.limits):
            self.sample.append(sid)
        else:
            j = self.rng.randrange(self.seen)
            if j < len(self.sample):
                self.sample[j] = sid

    def chosen(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for _, sid in sorted(self.failed, reverse=True):
            out.setdefault(sid, "failed")
        slow = 0
        for _, sid in sorted(self.slowest, reverse=True):
            if slow < self.limits[1] and sid not in out:
                out[sid] = "slowest"
                slow += 1
        rest = [sid for sid in self.sample if sid not in out]
        self.rng.shuffle(rest)
        for sid in rest[:self.limits[2]]:
            out[sid] = "sample"
        return out


def _keep_top(heap: list[tuple[int, str]], item: tuple[int, str], k: int) -> None:
    if k <= 0:
        return
    if len(heap) < k:
        heapq.heappush(heap, item)
    elif item > heap[0]:
        heapq.heapreplace(heap, item)


_PARENT = re.compile(r'"parent_id":\s*"([0-9a-f]+)"')


def _parent_of(line: str) -> str | None:
    found = _PARENT.search(line)
    return None if found is None else found.group(1)


def summarize_run(run_dir: str | Path, *, failed: int = FAILED_TRACES,
                  slowest: int = SLOWEST_TRACES, sample: int = RANDOM_TRACES,
                  spans_per_trace: int = SPANS_PER_TRACE, transcript_head: int = 40,
                  seed: int | None = None) -> RunSummary:
    """Summarise the run in ``run_dir`` by streaming over its files.

    Drill-down traces are trees rooted at ``invoke_agent`` spans: the ``failed`` slowest
    failed replies, then the ``slowest`` slowest replies, then ``sample`` replies drawn
    uniformly (seeded with ``seed``, by default the run's seed), each cut at
    ``spans_per_trace`` spans."""
    run_dir = Path(run_dir)
    manifest = json.loads((run_dir / "manifest.json").read_text())
    summary = RunSummary(manifest=manifest)
    trace_path = run_dir / "trace.jsonl"
    summary.trace_bytes = trace_path.stat().st_size if trace_path.exists() else 0
    picker = _Picker(int(manifest.get("seed") or 0) if seed is None else seed,
                     failed, slowest, sample)

    # pass 1: round windows and the drill-down's roots (only lines that can matter parsed)
    rounds = _Rounds()
    for line in _lines(trace_path):
        if "invoke_agent" not in line and not any(a in line for a in ROUND_ATTRIBUTES):
            continue
        try:
            span = json.loads(line)
        except json.JSONDecodeError:
            continue
        if not isinstance(span, dict) or "span_id" not in span:
            continue
        rounds.see(span)
        if _op(span) == "invoke_agent":
            picker.offer(span)
    chosen = picker.chosen()
    summary.candidates = picker.seen

    # pass 2: the figures, and the chosen roots with their children
    driver_node = manifest.get("driver_node")  # the driver's id on the bus: "driver" here

    def node_of(value: Any) -> str:
        return DRIVER if value == driver_node else str(value)

    def group(table: dict[str, GroupStats], key: str) -> GroupStats:
        stats = table.get(key)
        if stats is None:
            stats = table[key] = GroupStats()
        return stats

    ledger_classes = {str(row.get("agent_class"))
                      for row in (manifest.get("totals") or {}).get("by_agent_class") or []
                      if isinstance(row, dict) and row.get("agent_class") is not None}
    only_class = next(iter(ledger_classes)) if len(ledger_classes) == 1 else None
    collected: dict[str, list[dict[str, Any]]] = {sid: [] for sid in chosen}
    roots: dict[str, dict[str, Any]] = {}
    # the node of each message handler (a ``process`` span, ended as the message arrives,
    # so written before the spans of its handling): the most recent ones
    node_of_handler: OrderedDict[str, str] = OrderedDict()
    for span in _spans(trace_path):
        summary.spans += 1
        attrs = span.get("attributes") or {}
        if span.get("kind") == "CONSUMER" and "agentplex.node" in attrs:
            node_of_handler[span["span_id"]] = node_of(attrs["agentplex.node"])
            if len(node_of_handler) > _HANDLERS:
                node_of_handler.popitem(last=False)
        op = _op(span)
        failed_span = span.get("status") == "ERROR"
        rnd = rounds.of(span)
        if op == "invoke_agent":
            node = node_of(attrs.get("agentplex.node")
                           or node_of_handler.get(span.get("parent_id") or "", DRIVER))
            # by name: an agent's id is only unique in its process (``player-1`` on each)
            name = str(attrs.get("gen_ai.agent.name") or attrs.get("gen_ai.agent.id") or "?")
            for stats in (group(summary.rounds, rnd), group(summary.nodes, node),
                          group(summary.agent_classes, agent_class(attrs, only_class))):
                stats.spans += 1
                stats.answers += 1
                stats.failures += failed_span
                stats.latency.add(_duration(span))
                stats.agents.add(name)
            if span["span_id"] in chosen:
                roots[span["span_id"]] = span
                span["_round"], span["_node"] = rnd, node
        elif op == "chat":
            model = str(attrs.get("gen_ai.request.model") or attrs.get("gen_ai.response.model")
                        or "?")
            provider = attrs.get("gen_ai.provider.name")
            key = f"{provider}:{model}" if provider else model
            tin = int(attrs.get("gen_ai.usage.input_tokens") or 0)
            tout = int(attrs.get("gen_ai.usage.output_tokens") or 0)
            m = group(summary.models, key)
            m.spans += 1
            m.answers += 1
            m.calls += 1
            m.failures += failed_span
            m.input_tokens += tin
            m.output_tokens += tout
            m.latency.add(_duration(span))
            r = group(summary.rounds, rnd)
            r.calls += 1
            r.input_tokens += tin
            r.output_tokens += tout
        elif span.get("kind") == "PRODUCER" and "agentplex.node" in attrs:
            group(summary.nodes, node_of(attrs["agentplex.node"])).sent += 1
        if span.get("kind") == "CONSUMER" and "agentplex.node" in attrs:
            group(summary.nodes, node_of(attrs["agentplex.node"])).received += 1
        parent = span.get("parent_id") or ""
        if parent in collected and len(collected[parent]) < spans_per_trace:
            collected[parent].append(span)
    # the chosen roots' children are in; their grandchildren need more passes (a child is
    # written when it ends, before its parent, so one pass cannot follow a tree down)
    members = {root_id: {s["span_id"] for s in children}
               for root_id, children in collected.items()}
    frontier: dict[str, list[str]] = {}
    for root_id, children in collected.items():
        for child in children:
            frontier.setdefault(child["span_id"], []).append(root_id)
    for _ in range(_DEPTH):
        if not frontier:
            break
        found: dict[str, list[str]] = {}
        for line in _lines(trace_path):
            parent = _parent_of(line)
            if parent is None or parent not in frontier:
                continue
            try:
                span = json.loads(line)
            except json.JSONDecodeError:
                continue
            for root_id in frontier[parent]:
                if (len(collected[root_id]) < spans_per_trace
                        and span["span_id"] not in members[root_id]):
                    collected[root_id].append(span)
                    members[root_id].add(span["span_id"])
                    found.setdefault(span["span_id"], []).append(root_id)
        frontier = found

    for sid, reason in chosen.items():
        root = roots.get(sid)
        if root is None:
            continue
        spans = collected[sid]
        summary.traces.append(SampledTrace(
            reason=reason, root=root, spans=[root, *sorted(spans, key=lambda s: s["start"])],
            round=root.pop("_round"), node=root.pop("_node"),
            truncated=len(spans) >= spans_per_trace))

    # the transcript: answers per round (complete whatever sampling kept), and its head
    answers: dict[str, int] = {}
    for line in _lines(run_dir / "transcript.jsonl"):
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue
        if not isinstance(entry, dict):
            continue
        summary.messages += 1
        if "round" in entry and entry["round"] is not None:
            summary.rounds_from_transcript = True
        if entry.get("role") == "assistant":
            key = _round_key(entry.get("round"))
            answers[key] = answers.get(key, 0) + 1
        if len(summary.transcript_head) < transcript_head:
            summary.transcript_head.append(entry)
    if summary.rounds_from_transcript or set(summary.rounds) <= {RUN_GROUP}:
        for stats in summary.rounds.values():
            stats.answers = 0
        for key, count in answers.items():
            group(summary.rounds, key).answers = count
    # the manifest's exact usage per round, model and agent class (whatever sampling kept)
    totals = manifest.get("totals") or {}
    for table, rows, name in ((summary.rounds, "by_round", "round"),
                              (summary.agent_classes, "by_agent_class", "agent_class")):
        for row in totals.get(rows) or []:
            if isinstance(row, dict):
                value = row.get(name)
                group(table, RUN_GROUP if value is None and name == "round"
                      else str(value)).ledger = row
    for row in totals.get("by_model") or []:
        if isinstance(row, dict):
            prov, mdl = row.get("provider"), row.get("model")
            group(summary.models, f"{prov}:{mdl}" if prov else str(mdl)).ledger = row
    summary.rounds = dict(sorted(summary.rounds.items(), key=lambda kv: group_order(kv[0])))

    # per node CPU, where the run folder has it
    for entry in manifest.get("nodes") or []:
        if isinstance(entry, dict):
            node = node_of(entry.get("node") or entry.get("id") or entry.get("name") or "?")
            cpu = entry.get("cpu_s", entry.get("cpu_seconds"))
            if isinstance(cpu, int | float):
                group(summary.nodes, node).cpu_s = float(cpu)
    summary.nodes = dict(sorted(summary.nodes.items(), key=lambda kv: group_order(kv[0])))
    return summary
