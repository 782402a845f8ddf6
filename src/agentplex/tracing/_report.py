"""Reading run folders back: listing runs, span trees, and a self-contained HTML page."""

from __future__ import annotations

import fnmatch
import html
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ._html import html_page
from ._summary import GroupStats, RunSummary, SampledTrace, summarize_run

__all__ = ["SpanNode", "find_run", "list_runs", "load_spans", "page_html", "render_html",
           "run_param", "select_runs", "span_tree"]


SWEEP_RECORD = "sweep.json"
"""The file that makes a folder a sweep (``agentplex sweep``): its runs are in ``runs/``."""


def list_runs(runs_dir: str | Path = "runs", *, sweeps: bool = True) -> list[dict[str, Any]]:
    """Manifests of the runs under ``runs_dir``, oldest first; with ``sweeps``, also the
    runs of the sweeps there (``runs_dir/SWEEP/runs/RUN``), each with ``_sweep``, its
    sweep's id. ``_dir`` is each run's folder."""
    root = Path(runs_dir)
    found: list[tuple[Path, str | None]] = [(p, None) for p in root.glob("*/manifest.json")]
    if sweeps:
        found += [(path, path.parents[2].name) for path in root.glob("*/runs/*/manifest.json")
                  if (path.parents[2] / SWEEP_RECORD).is_file()]
    manifests = []
    for path, sweep in sorted(found):
        try:
            manifest = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        manifest["_dir"] = str(path.parent)
        if sweep is not None:
            manifest["_sweep"] = sweep
        manifests.append(manifest)
    return sorted(manifests, key=lambda m: m.get("started_at") or "")


def run_param(manifest: Mapping[str, Any], key: str) -> Any:
    """A run's parameter ``key``: a simulation's scenario parameter (``config.params``),
    else a key of its ``config`` (``agents``, ``rounds``, ``seed``...); ``None`` if neither."""
    config = manifest.get("config") or {}
    params = config.get("params") if isinstance(config, dict) else None
    if isinstance(params, dict) and key in params:
        return params[key]
    return config.get(key) if isinstance(config, dict) else None


def _same(value: Any, wanted: str) -> bool:
    """Whether a parameter's ``value`` is what ``wanted`` (JSON, or plain text) says."""
    try:
        parsed = json.loads(wanted)
    except ValueError:
        parsed = wanted
    if value is None:
        return wanted in ("null", "None")
    return bool(parsed == value) or str(value) == wanted


def select_runs(manifests: Iterable[dict[str, Any]], *, name: str | None = None,
                status: Iterable[str] = (), params: Mapping[str, str] | None = None
                ) -> list[dict[str, Any]]:
    """The manifests whose run name matches ``name`` (a shell pattern: ``opinion*``),
    whose status is one of ``status`` (any if empty) and whose parameters have the
    values in ``params`` (see :func:`run_param`; a value as JSON or plain text)."""
    wanted = set(status)
    out = []
    for m in manifests:
        if name is not None and not fnmatch.fnmatchcase(str(m.get("name", "")), name):
            continue
        if wanted and str(m.get("status", "")) not in wanted:
            continue
        if params and not all(_same(run_param(m, k), v) for k, v in params.items()):
            continue
        out.append(m)
    return out


def find_run(run: str | Path, runs_dir: str | Path = "runs") -> Path:
    """The folder of ``run``: a path, a run id, a unique id prefix, or ``latest``."""
    path = Path(run)
    if (path / "manifest.json").exists():
        return path
    runs = list_runs(runs_dir)
    if str(run) == "latest" and runs:
        return Path(runs[-1]["_dir"])
    matches = [m for m in runs if m["run_id"].startswith(str(run)) or str(run) in m["run_id"]]
    if len(matches) == 1:
        return Path(matches[0]["_dir"])
    if not matches:
        raise FileNotFoundError(f"no run {str(run)!r} in {runs_dir}")
    raise LookupError(f"{str(run)!r} matches {len(matches)} runs; give more of the id")


def load_spans(run_dir: Path) -> list[dict[str, Any]]:
    """The spans of a run, skipping lines that are not valid JSON."""
    spans = []
    path = run_dir / "trace.jsonl"
    if not path.exists():
        return []
    for line in path.read_text().splitlines():
        try:
            spans.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return spans


@dataclass
class SpanNode:
    """A span and its children, ordered by start time."""

    span: dict[str, Any]
    children: list[SpanNode] = field(default_factory=list)

    @property
    def duration_ms(self) -> float:
        return ((self.span.get("end") or 0) - (self.span.get("start") or 0)) / 1e6

    @property
    def tokens(self) -> tuple[int, int] | None:
        attrs = self.span.get("attributes", {})
        if "gen_ai.usage.input_tokens" not in attrs:
            return None
        return attrs["gen_ai.usage.input_tokens"], attrs.get("gen_ai.usage.output_tokens", 0)


def span_tree(spans: list[dict[str, Any]]) -> list[SpanNode]:
    """Roots of the span forest (spans whose parent is not in the file are roots)."""
    nodes = {s["span_id"]: SpanNode(s) for s in spans}
    roots: list[SpanNode] = []
    for node in nodes.values():
        parent = nodes.get(node.span.get("parent_id") or "")
        (parent.children if parent is not None else roots).append(node)
    for node in nodes.values():
        node.children.sort(key=lambda n: n.span.get("start") or 0)
    return sorted(roots, key=lambda n: n.span.get("start") or 0)


def render_html(run_dir: Path, **options: Any) -> str:
    """One self-contained HTML page (no network): a summary of the run per round, node,
    agent class and model, then a bounded sample of span trees to drill into (see
    :func:`~agentplex.tracing.summarize_run`, which takes ``options``)."""
    return page_html(summarize_run(run_dir, **options))


def _fmt_ms(value: float | None) -> str:
    if value is None:
        return "-"
    if value >= 100:
        return f"{value:,.0f}"
    return f"{value:.2f}" if value < 10 else f"{value:.1f}"


def _num(value: int | float) -> str:
    return f"{value:,}"


def _table(caption: str, note: str, head: list[str], rows: list[list[str]],
           limit: int = 1000) -> str:
    if not rows:
        return ""
    shown = rows[:limit]
    more = (f'<tr><td colspan="{len(head)}" class="more">{len(rows) - limit:,} more rows '
            f"left out</td></tr>") if len(rows) > limit else ""
    cells = "".join(f"<th>{html.escape(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in shown)
    return (f'<section><h2>{html.escape(caption)}</h2><p class="note">{note}</p>'
            f"<table><thead><tr>{cells}</tr></thead><tbody>{body}{more}</tbody></table>"
            "</section>")


def _agents(stats: GroupStats) -> str:
    n = len(stats.agents)
    return _num(n) if stats.agents.exact else f"≈{n:,}"


def _latency_cells(stats: GroupStats) -> list[str]:
    approx = "" if stats.latency.exact else "≈"
    return [approx + _fmt_ms(p) if p is not None else "-" for p in stats.percentiles()]


def _failures(stats: GroupStats) -> str:
    return f'<span class="bad">{stats.failures:,}</span>' if stats.failures else "0"


def _latency_chart(summary: RunSummary) -> str:
    """Per-round p50/p95/p99 of the replies' latency as an inline SVG line chart."""
    points = [(name, s.percentiles()) for name, s in summary.rounds.items()
              if s.latency.count]
    if len(points) < 2:
        return ""
    w, h, pad = 640, 160, 36
    top = max(p[2] or 0 for _, p in points) or 1
    x = [pad + i * (w - 2 * pad) / (len(points) - 1) for i in range(len(points))]
    lines = []
    for idx, color, label in ((0, "#4c78a8", "p50"), (1, "#f58518", "p95"),
                              (2, "#d62728", "p99")):
        pts = " ".join(f"{x[i]:.1f},{h - pad - (p[idx] or 0) / top * (h - 2 * pad):.1f}"
                       for i, (_, p) in enumerate(points))
        lines.append(f'<polyline fill="none" stroke="{color}" stroke-width="2" '
                     f'points="{pts}"/><text x="{w - pad + 4}" y="{14 + idx * 14}" '
                     f'fill="{color}">{label}</text>')
    step = max(1, len(points) // 12)
    ticks = "".join(f'<text x="{x[i]:.1f}" y="{h - pad + 14}" text-anchor="middle">'
                    f"{html.escape(points[i][0])}</text>" for i in range(0, len(points), step))
    return (f'<svg class="chart" viewBox="0 0 {w + 30} {h}" width="{w + 30}" height="{h}" '
            'role="img" aria-label="reply latency per round">'
            f'<line x1="{pad}" y1="{h - pad}" x2="{w - pad}" y2="{h - pad}" stroke="#999"/>'
            f'<text x="{pad - 4}" y="{pad}" text-anchor="end">{_fmt_ms(top)}</text>'
            f'<text x="{pad - 4}" y="{h - pad}" text-anchor="end">0</text>'
            f'<text x="4" y="12">ms</text>{"".join(lines)}{ticks}'
            f'<text x="{w / 2}" y="{h - 4}" text-anchor="middle">round</text></svg>')


_REASONS = {"failed": "failed", "slowest": "slowest", "sample": "random sample"}


def _trace_html(t: SampledTrace, first: bool = False) -> str:
    root = t.root
    t0, total = root["start"], max(_span_ns(root), 1)
    rows = []
    depth: dict[str, int] = {root["span_id"]: 0}
    for s in t.spans:
        d = depth.get(s.get("parent_id") or "", -1) + 1 if s is not root else 0
        depth[s["span_id"]] = d
        attrs = s.get("attributes") or {}
        op = attrs.get("gen_ai.operation.name") or "other"
        left = max(0.0, 100 * (s["start"] - t0) / total)
        width = max(0.3, min(100 - left, 100 * _span_ns(s) / total))
        tip = html.escape(json.dumps(attrs, default=str, indent=1)[:2000])
        err = " error" if s.get("status") == "ERROR" else ""
        tokens = ""
        if "gen_ai.usage.input_tokens" in attrs:
            tokens = (f' <span class="tok">{attrs["gen_ai.usage.input_tokens"]}→'
                      f'{attrs.get("gen_ai.usage.output_tokens", 0)} tokens</span>')
        rows.append(
            f'<div class="row span-row" title="{tip}"><div class="label" '
            f'style="padding-left:{d * 12}px">{html.escape(s["name"])} '
            f'<span class="ms">{_fmt_ms(_span_ns(s) / 1e6)} ms</span>{tokens}</div>'
            f'<div class="lane"><div class="bar {html.escape(str(op))}{err}" '
            f'style="left:{left:.2f}%;width:{width:.2f}%"></div></div></div>')
    attrs = root.get("attributes") or {}
    agent = html.escape(str(attrs.get("gen_ai.agent.name") or root["name"]))
    cut = f" (first {len(t.spans) - 1} child spans)" if t.truncated else ""
    status = '<span class="bad">failed</span>' if root.get("status") == "ERROR" else "ok"
    where = "whole run" if t.round == "run" else f"round {html.escape(t.round)}"
    opened = " open" if first else ""
    return (f'<details class="trace"{opened}><summary><span class="why {t.reason}">'
            f'{_REASONS[t.reason]}</span> {agent} · {where} · '
            f"node {html.escape(t.node)} · {_fmt_ms(_span_ns(root) / 1e6)} ms · {status} · "
            f"{len(t.spans)} spans{cut}</summary>{''.join(rows)}</details>")


def _span_ns(span: dict[str, Any]) -> int:
    return max(0, int(span.get("end") or 0) - int(span.get("start") or 0))


def _message_html(entry: dict[str, Any]) -> str:
    content = entry.get("content")
    if isinstance(content, list):
        text = " ".join(str(b.get("text") or b.get("thinking") or f"[{b.get('type')}]")
                        if isinstance(b, dict) else str(b) for b in content)
    else:
        text = "" if content is None else str(content)
    if len(text) > 300:
        text = text[:300] + "…"
    rnd = entry.get("round")
    where = f"round {rnd} · " if rnd is not None else ""
    return (f'<div class="msg"><span class="clock">{where}#{html.escape(str(entry.get("clock")))}'
            f'</span><span class="who">{html.escape(str(entry.get("name")))}</span>: '
            f"{html.escape(text)}</div>")


def page_html(summary: RunSummary) -> str:
    """The HTML page of a :class:`RunSummary`: static tables, an SVG chart, and the sampled
    span trees as collapsible timelines; no script and nothing fetched."""
    m = summary.manifest
    t = m.get("totals") or {}
    sampling = m.get("sampling", 1.0)
    run_id = str(m.get("run_id", ""))
    facts = [f"<b>{html.escape(str(m.get('name', '')))}</b>",
             f"started {html.escape(str(m.get('started_at') or '')[:19])}",
             f"{m.get('duration_s', '?')} s", f"status {html.escape(str(m.get('status')))}"
             if m.get("status") else "",
             f"{_num(int(t.get('model_calls') or 0))} model calls",
             f"{_num(int(t.get('input_tokens') or 0))} tokens in / "
             f"{_num(int(t.get('output_tokens') or 0))} out",
             f"{_num(int(t.get('tool_calls') or 0))} tool calls",
             f"{_num(summary.messages)} messages",
             f"{_num(summary.spans)} spans ({summary.trace_bytes / 1e6:,.1f} MB)",
             f"traces sampled at {sampling:g}" if sampling != 1 else "every trace kept"]
    header = " · ".join(f for f in facts if f)
    span_note = ("from the traced spans" + (f" (only {sampling:g} of traces are kept)"
                                            if sampling != 1 else ""))
    answers_from = ("the transcript (every reply)" if summary.rounds_from_transcript
                    or set(summary.rounds) <= {"run"} else "the traced replies")
    no_rounds = ("" if set(summary.rounds) - {"run"} else
                 " This run's spans and transcript carry no round, so the whole run is one "
                 "group.")
    groups = [*summary.rounds.values(), *summary.agent_classes.values(),
              *summary.models.values()]
    priced = any(g.cost_usd() is not None for g in groups)
    usage_head = ["model calls", "tokens in", "tokens out"] + (["cost USD"] if priced else [])
    usage_note = (" Model calls, tokens" + (" and cost" if priced else "") + ": the "
                  "manifest's exact totals (every call, whatever sampling kept) where it has "
                  f"them, else {span_note}.")

    def usage(stats: GroupStats) -> list[str]:
        u = stats.usage()
        cells = ["-", "-", "-"] if u is None else [_num(u[0]), _num(u[1]), _num(u[2])]
        if priced:
            cost = stats.cost_usd()
            cells.append("-" if cost is None else f"{cost:,.4f}")
        return cells

    def replies(stats: GroupStats) -> list[str]:
        if not stats.spans:
            return ["-", "-", "-"]
        return [_agents(stats), _num(stats.answers), _failures(stats)]

    rounds = _table(
        "Per round",
        f"Answers: agent replies, from {answers_from}. Failures and latency (of each agent "
        f"reply, in ms): {span_note}.{usage_note}{no_rounds}",
        ["round", "answers", "failures", "p50 ms", "p95 ms", "p99 ms", *usage_head],
        [[html.escape(k), _num(s.answers), _failures(s) if s.spans else "-",
          *_latency_cells(s), *usage(s)] for k, s in summary.rounds.items()])
    nodes = _table(
        "Per node",
        "Each process on the bus, by its node id (<i>driver</i>: replies in a process with "
        "no bus). Messages in and out: frames traced arriving at it and leaving it (one per "
        "call, or one per node for a fan-out). Agents and replies (failed ones included): "
        f"where the agents replied, {span_note}. CPU s: what each process used, start-up "
        "included, where the run folder records it (a scenario run records the processes "
        "it started, or its own when the agents lived in it). Spans "
        "recorded in node processes reach the run's trace only where the run brings them "
        "home.",
        ["node", "messages in", "messages out", "agents", "replies", "failures", "p50 ms",
         "p95 ms", "p99 ms", "CPU s"],
        [[html.escape(k), _num(s.received), _num(s.sent), *replies(s),
          *_latency_cells(s), "-" if s.cpu_s is None else f"{s.cpu_s:,.1f}"]
         for k, s in summary.nodes.items()], 200)
    classes = _table(
        "Per agent class",
        f"Agents, replies, failures and latency {span_note}; the class is the span's "
        "<code>agentplex.agent.class</code>, else the run's one agent class (where the "
        "manifest names only one), else the agent's name without its number."
        + usage_note,
        ["agent class", "agents", "replies", "failures", "p50 ms", "p95 ms", "p99 ms",
         *usage_head],
        [[html.escape(k), *replies(s), *_latency_cells(s), *usage(s)]
         for k, s in sorted(summary.agent_classes.items(),
                            key=lambda kv: -(kv[1].answers or (kv[1].usage() or (0,))[0]))],
        100)
    models = _table(
        "Per model",
        f"Failures and latency {span_note}.{usage_note} Device seconds: CPU and GPU time "
        "local models spent (from the manifest).",
        ["model", *usage_head, "device s", "failures", "p50 ms", "p95 ms", "p99 ms"],
        [[html.escape(k), *usage(s),
          "-" if s.device_s() is None else f"{s.device_s():,.2f}",
          _failures(s) if s.spans else "-", *_latency_cells(s)]
         for k, s in sorted(summary.models.items(),
                            key=lambda kv: -((kv[1].usage() or (0,))[0]))], 100)
    traces = "".join(_trace_html(tr, i == 0) for i, tr in enumerate(summary.traces))
    drill = (
        f"<section><h2>Sampled traces ({len(summary.traces)} of {summary.candidates:,} agent "
        "replies)</h2><p class=\"note\">Chosen, in this order: the slowest failed replies, "
        "then the slowest replies, then a random sample seeded with the run's seed. Click "
        "one to open its span tree; hover a span for its attributes. Every span is in "
        "<code>trace.jsonl</code> (<code>agentplex trace show</code>).</p>"
        f"{traces or '<p>No agent replies were traced.</p>'}</section>")
    head = summary.transcript_head
    transcript = (
        f"<section><h2>Transcript (first {len(head)} of {summary.messages:,} messages)</h2>"
        + "".join(_message_html(e) for e in head) + "</section>") if head else ""
    groups = [*summary.rounds.values(), *summary.nodes.values(),
              *summary.agent_classes.values(), *summary.models.values()]
    legend = "" if all(g.latency.exact and g.agents.exact for g in groups) else (
        '<p class="note">≈ marks a figure kept in bounded memory beyond 4,096 values: '
        "latency percentiles within 1 %, agent counts typically within 2 %.</p>")
    if not summary.candidates:
        legend += ('<p class="warn">This trace holds no agent replies and no figures from '
                   "them (a dash): the agents ran where their spans were not collected into "
                   "the run's trace, or sampling kept none. The header's totals and the "
                   "answers per round (from the transcript) are complete.</p>")
    body = (f"<h1>Run {html.escape(run_id)}</h1><p class=\"meta\">{header}</p>{legend}"
            f"{rounds}{_latency_chart(summary)}{nodes}{classes}{models}{drill}{transcript}")
    return html_page(f"agentplex run {run_id}", body, _CSS)


_CSS = """\
.warn{background:#fff6e0;border:1px solid #f0d48a;padding:4px 8px;border-radius:4px}
td.more{color:#888;text-align:left}.bad{color:#c62828;font-weight:600}
.trace{border:1px solid #ddd;border-radius:4px;margin:4px 0;padding:3px 8px}
.trace summary{cursor:pointer}.trace[open]{background:#fcfcfc}
.why{display:inline-block;min-width:92px;font-size:11px;font-weight:600}
.why.failed{color:#c62828}.why.slowest{color:#b26b00}.why.sample{color:#4c78a8}
.row{display:flex;align-items:center;height:20px}
.label{width:380px;box-sizing:border-box;flex:none;white-space:nowrap;overflow:hidden;
text-overflow:ellipsis}.ms{color:#777}.tok{color:#2a7f8f}
.lane{position:relative;flex:1;height:14px;background:#f1f1f1}
.bar{position:absolute;height:14px;border-radius:2px;min-width:2px}
.invoke_agent{background:#4c78a8}.chat{background:#f58518}.execute_tool{background:#54a24b}
.other{background:#999}.error{outline:2px solid #d62728}
.msg{margin:0 0 4px;padding:4px 8px;background:#fafafa;border:1px solid #eee;
border-radius:4px}.who{font-weight:600}.clock{color:#999;float:right}
"""
