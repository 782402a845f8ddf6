"""Reading run folders back: listing runs, span trees, and a self-contained HTML page."""

from __future__ import annotations

import html
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["SpanNode", "find_run", "list_runs", "load_spans", "render_html", "span_tree"]


def list_runs(runs_dir: str | Path = "runs") -> list[dict[str, Any]]:
    """Manifests of the runs under ``runs_dir``, oldest first."""
    root = Path(runs_dir)
    manifests = []
    for path in sorted(root.glob("*/manifest.json")):
        try:
            manifest = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        manifest["_dir"] = str(path.parent)
        manifests.append(manifest)
    return sorted(manifests, key=lambda m: m.get("started_at") or "")


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


def render_html(run_dir: Path) -> str:
    """One self-contained HTML page: a timeline of the run's spans beside its transcript."""
    manifest = json.loads((run_dir / "manifest.json").read_text())
    transcript_path = run_dir / "transcript.jsonl"
    transcript = ([json.loads(line) for line in transcript_path.read_text().splitlines()]
                  if transcript_path.exists() else [])
    data = json.dumps({"manifest": manifest, "spans": load_spans(run_dir),
                       "transcript": transcript}, default=str)
    title = html.escape(f"agentplex run {manifest.get('run_id', '')}")
    return _PAGE.replace("__TITLE__", title).replace("__DATA__", data.replace("</", "<\\/"))


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>__TITLE__</title>
<style>
body{font:13px/1.4 system-ui,sans-serif;margin:0;display:flex;height:100vh;color:#222}
#left{flex:3;overflow:auto;padding:12px;border-right:1px solid #ddd}
#right{flex:2;overflow:auto;padding:12px;background:#fafafa}
h1{font-size:16px;margin:0 0 4px} .meta{color:#666;margin-bottom:10px}
.row{display:flex;align-items:center;height:20px}
.label{width:260px;box-sizing:border-box;flex:none;white-space:nowrap;overflow:hidden;
text-overflow:ellipsis}
.lane{position:relative;flex:1;height:14px;background:#f1f1f1}
.bar{position:absolute;height:14px;border-radius:2px;min-width:2px}
.invoke_agent{background:#4c78a8}.chat{background:#f58518}.execute_tool{background:#54a24b}
.other{background:#999}.error{outline:2px solid #d62728}
.msg{margin:0 0 8px;padding:6px 8px;background:#fff;border:1px solid #e3e3e3;border-radius:4px}
.who{font-weight:600}.clock{color:#999;float:right}
#detail{white-space:pre-wrap;font:12px monospace;background:#fff;border:1px solid #ddd;
padding:6px;margin-top:8px;min-height:3em}
</style></head><body>
<div id="left"><h1 id="title"></h1><div class="meta" id="meta"></div>
<div id="timeline"></div><div id="detail">click a span for its attributes</div></div>
<div id="right"><h1>Transcript</h1><div id="transcript"></div></div>
<script id="run-data" type="application/json">__DATA__</script>
<script>
const run = JSON.parse(document.getElementById('run-data').textContent);
const m = run.manifest, spans = run.spans;
document.getElementById('title').textContent = 'Run ' + m.run_id;
const t = m.totals || {};
document.getElementById('meta').textContent = `${m.name} · ${spans.length} spans · ` +
  `${t.model_calls||0} model calls · ${t.input_tokens||0} tokens in / ${t.output_tokens||0} out` +
  ` · ${t.messages||0} messages`;
const byId = {}; spans.forEach(s => { byId[s.span_id] = s; s.children = []; });
const roots = [];
spans.forEach(s => (byId[s.parent_id] ? byId[s.parent_id].children : roots).push(s));
const t0 = Math.min(...spans.map(s => s.start)), t1 = Math.max(...spans.map(s => s.end));
const span = Math.max(t1 - t0, 1);
const tl = document.getElementById('timeline');
function add(s, depth) {
  const row = document.createElement('div'); row.className = 'row span-row';
  const label = document.createElement('div'); label.className = 'label';
  label.style.paddingLeft = (depth * 12) + 'px';
  const ms = ((s.end - s.start) / 1e6).toFixed(1);
  label.textContent = `${s.name} (${ms} ms)`; label.title = s.name;
  const lane = document.createElement('div'); lane.className = 'lane';
  const bar = document.createElement('div');
  const op = (s.attributes || {})['gen_ai.operation.name'] || 'other';
  bar.className = 'bar ' + op + (s.status === 'ERROR' ? ' error' : '');
  bar.style.left = (100 * (s.start - t0) / span) + '%';
  bar.style.width = (100 * (s.end - s.start) / span) + '%';
  row.onclick = () => { document.getElementById('detail').textContent =
    s.name + '\\n' + JSON.stringify(s.attributes, null, 2); };
  lane.appendChild(bar); row.appendChild(label); row.appendChild(lane); tl.appendChild(row);
  s.children.sort((a, b) => a.start - b.start).forEach(c => add(c, depth + 1));
}
roots.sort((a, b) => a.start - b.start).forEach(r => add(r, 0));
const tr = document.getElementById('transcript');
run.transcript.forEach(e => {
  const d = document.createElement('div'); d.className = 'msg';
  const text = typeof e.content === 'string' ? e.content :
    e.content.map(b => b.text || b.thinking || ('[' + b.type + ']')).join(' ');
  d.innerHTML = '<span class="clock"></span><span class="who"></span>: <span class="text"></span>';
  d.querySelector('.clock').textContent = '#' + e.clock;
  d.querySelector('.who').textContent = e.name;
  d.querySelector('.text').textContent = text;
  tr.appendChild(d);
});
</script></body></html>
"""
