"""The run summary behind ``agentplex trace html``: its figures against the run folder's
raw files, rounds and nodes, the drill-down's rule, and a page that stays bounded."""

from __future__ import annotations

import importlib.util
import json
import math
import random
import subprocess
import sys
from collections import Counter
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from agentplex.tracing import render_html, summarize_run
from agentplex.tracing._summary import DistinctCount, LatencySketch
from tests.support import ROOT


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "make_run_folder", ROOT / "benchmarks" / "make_run_folder.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


make_run_folder = _generator()


def _lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _nearest_rank(values: list[int], q: float) -> float:
    return sorted(values)[max(1, math.ceil(q / 100 * len(values))) - 1] / 1e6


def _dur(span: dict[str, Any]) -> int:
    return int(span["end"]) - int(span["start"])


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    runs = tmp_path_factory.mktemp("runs")
    subprocess.run([sys.executable, "-m", "agentplex", "demo", "--agents", "8", "--rounds",
                    "2", "--model", "scripted", "--runs-dir", str(runs)], check=True,
                   capture_output=True, timeout=120)
    (folder,) = [p for p in runs.iterdir() if p.is_dir()]
    return folder


@pytest.fixture(scope="module")
def synthetic_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder: Path = make_run_folder.write_run_folder(
        tmp_path_factory.mktemp("synthetic") / "run", agents=2000, nodes=4, rounds=3, seed=5,
        failure_rate=0.01)
    return folder


def test_demo_summary_matches_the_run_folder(demo_run: Path) -> None:
    manifest = json.loads((demo_run / "manifest.json").read_text())
    spans = _lines(demo_run / "trace.jsonl")
    transcript = _lines(demo_run / "transcript.jsonl")
    invokes = [s for s in spans if s["attributes"].get("gen_ai.operation.name") == "invoke_agent"]
    chats = [s for s in spans if s["attributes"].get("gen_ai.operation.name") == "chat"]
    summary = summarize_run(demo_run)

    assert summary.spans == len(spans) and summary.messages == len(transcript)
    # the demo is a scenario run: its rounds' spans carry their round; the closing
    # discussion (the scenario's finish) is outside every round: the group "run"
    assert list(summary.rounds) == ["1", "2", "run"]
    by_round = {s["name"].split()[1]: s for s in spans if s["name"].startswith("round ")}

    def group(span: dict[str, Any]) -> str:
        return next((r for r, w in by_round.items()
                     if int(w["start"]) <= int(span["start"]) <= int(w["end"])), "run")

    for name, got in summary.rounds.items():
        mine = [s for s in invokes if group(s) == name]
        assert got.answers == len(mine) == sum(
            e["role"] == "assistant" and str(e.get("round") or "run") == name
            for e in transcript)
        assert got.failures == 0
        durations = [_dur(s) for s in mine]
        assert got.percentiles() == tuple(_nearest_rank(durations, q) for q in (50, 95, 99))
    assert sum(r.input_tokens for r in summary.rounds.values()) == (
        manifest["totals"]["input_tokens"])
    assert sum(r.output_tokens for r in summary.rounds.values()) == (
        manifest["totals"]["output_tokens"])

    assert list(summary.nodes) == ["driver"]
    assert summary.nodes["driver"].answers == len(invokes)
    assert len(summary.nodes["driver"].agents) == 8
    (cls,) = summary.agent_classes.items()
    assert cls[0] == "CrowdPlayer" and cls[1].answers == len(invokes)
    (model,) = summary.models.items()
    assert model[0] == "scripted:scripted-players"
    assert model[1].answers == manifest["totals"]["model_calls"] == len(chats)
    assert model[1].percentiles()[0] == _nearest_rank([_dur(s) for s in chats], 50)

    # every reply is a candidate; fewer than 40 of them: all are drilled into, with children
    assert len(summary.traces) == len(invokes)
    for trace in summary.traces:
        assert [s["span_id"] for s in trace.spans[1:]] == [
            s["span_id"] for s in chats if s["parent_id"] == trace.root["span_id"]]


def test_rounds_nodes_and_cpu_of_a_run_on_nodes(synthetic_run: Path) -> None:
    spans = _lines(synthetic_run / "trace.jsonl")
    transcript = _lines(synthetic_run / "transcript.jsonl")
    manifest = json.loads((synthetic_run / "manifest.json").read_text())
    summary = summarize_run(synthetic_run)

    assert list(summary.rounds) == ["1", "2", "3"] and summary.rounds_from_transcript
    answers = Counter(e["round"] for e in transcript if e["role"] == "assistant")
    failed = [s for s in spans if s["status"] == "ERROR" and s["name"].startswith("invoke")]
    assert failed and sum(r.failures for r in summary.rounds.values()) == len(failed)
    for name, stats in summary.rounds.items():
        assert stats.answers == answers[int(name)]
        # the invoke spans carry no round: each found its round by its time, so every
        # agent either answered or failed in each round
        assert stats.answers + stats.failures == 2000
        assert stats.spans == 2000
    chats = [s for s in spans if s["name"].startswith("chat")]
    assert sum(r.input_tokens for r in summary.rounds.values()) == sum(
        s["attributes"]["gen_ai.usage.input_tokens"] for s in chats)

    assert list(summary.nodes) == ["head", "node-1", "node-2", "node-3", "node-4"]
    head = summary.nodes.pop("head")  # the driver: one fan-out frame per node and round
    assert (head.sent, head.received, head.spans) == (12, 0, 0)
    cpu = {n["node"]: n["cpu_s"] for n in manifest["nodes"]}
    for name, stats in summary.nodes.items():
        assert stats.answers == 1500 and len(stats.agents) == 500 and stats.agents.exact
        assert (stats.sent, stats.received) == (0, 3)
        assert stats.cpu_s == cpu[name]
    assert {k: v.answers for k, v in summary.agent_classes.items()} == {
        "Voter": 5400, "Pundit": 600}
    # agents counted by name: their ids repeat from node to node
    assert {k: len(v.agents) for k, v in summary.agent_classes.items()} == {
        "Voter": 1800, "Pundit": 200}
    assert {k: v.answers for k, v in summary.models.items()} == {
        "scripted:scripted-players": 5400, "transformers:SmolLM2-135M-Instruct": 600}


def test_tokens_per_round_model_and_class_come_exact_from_the_manifest(
        synthetic_run: Path) -> None:
    manifest = json.loads((synthetic_run / "manifest.json").read_text())
    chats = [s for s in _lines(synthetic_run / "trace.jsonl") if s["name"].startswith("chat")]
    summary = summarize_run(synthetic_run)
    for stats in summary.rounds.values():
        assert stats.ledger is not None and stats.usage() == (
            stats.ledger["calls"], stats.ledger["input_tokens"], stats.ledger["output_tokens"])
    # the manifest's rows and the spans agree where every trace was kept
    assert sum((s.usage() or (0,))[0] for s in summary.rounds.values()) == len(chats) == \
        manifest["totals"]["model_calls"]
    for stats in (*summary.rounds.values(), *summary.models.values()):
        assert stats.usage() == (stats.calls, stats.input_tokens, stats.output_tokens)
    assert {k: (v.usage() or (0,))[0] for k, v in summary.agent_classes.items()} == {
        "Voter": 5400, "Pundit": 600}


def test_a_sampled_run_keeps_exact_usage_and_samples_the_rest(tmp_path: Path) -> None:
    subprocess.run([sys.executable, "-m", "agentplex", "demo", "--agents", "8", "--rounds",
                    "2", "--model", "scripted", "--sample", "0.3", "--runs-dir",
                    str(tmp_path)], check=True, capture_output=True, timeout=120)
    (folder,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    manifest = json.loads((folder / "manifest.json").read_text())
    chats = [s for s in _lines(folder / "trace.jsonl") if s["name"].startswith("chat")]
    summary = summarize_run(folder)
    totals = manifest["totals"]
    assert len(chats) < totals["model_calls"]  # sampling dropped some
    usages = [r.usage() for r in summary.rounds.values()]  # exact, from the ledger
    assert tuple(map(sum, zip(*usages, strict=True))) == (
        totals["model_calls"], totals["input_tokens"], totals["output_tokens"])
    assert sum(r.calls for r in summary.rounds.values()) == len(chats)
    page = render_html(folder)
    assert "only 0.3 of traces are kept" in page and "traces sampled at 0.3" in page


def test_the_one_agent_class_of_the_ledger_names_every_reply(tmp_path: Path) -> None:
    folder = make_run_folder.write_run_folder(tmp_path / "run", agents=20, nodes=2, rounds=1)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["totals"]["by_agent_class"] = [{"agent_class": "Opinion", "calls": 20}]
    (folder / "manifest.json").write_text(json.dumps(manifest))
    summary = summarize_run(folder)
    assert list(summary.agent_classes) == ["Opinion"]
    assert summary.agent_classes["Opinion"].spans == 20


def test_a_round_attribute_on_a_span_wins(tmp_path: Path) -> None:
    folder = make_run_folder.write_run_folder(tmp_path / "run", agents=8, nodes=1, rounds=2)
    lines = (folder / "trace.jsonl").read_text().splitlines()
    out = []
    for line in lines:
        span = json.loads(line)
        if span["name"] == "invoke_agent Voter1":
            span["attributes"]["agentplex.round"] = 7
        out.append(json.dumps(span))
    (folder / "trace.jsonl").write_text("\n".join(out) + "\n{not json\n")
    summary = summarize_run(folder)
    assert summary.rounds["7"].spans == 2
    assert summary.rounds["1"].spans == summary.rounds["2"].spans == 7


def test_drill_down_rule(synthetic_run: Path) -> None:
    invokes = [s for s in _lines(synthetic_run / "trace.jsonl")
               if s["name"].startswith("invoke_agent")]
    summary = summarize_run(synthetic_run)
    reasons = [t.reason for t in summary.traces]
    assert reasons == ["failed"] * 10 + ["slowest"] * 10 + ["sample"] * 20
    failed = sorted((s for s in invokes if s["status"] == "ERROR"), key=_dur, reverse=True)
    assert [t.root["span_id"] for t in summary.traces[:10]] == [s["span_id"]
                                                                for s in failed[:10]]
    chosen = {t.root["span_id"] for t in summary.traces[:10]}
    slow = sorted((s for s in invokes if s["span_id"] not in chosen), key=_dur, reverse=True)
    assert [t.root["span_id"] for t in summary.traces[10:20]] == [s["span_id"]
                                                                  for s in slow[:10]]
    assert len({t.root["span_id"] for t in summary.traces}) == 40
    for t in summary.traces:
        assert [s["name"].split()[0] for s in t.spans] == ["invoke_agent", "chat"]
        assert t.node.startswith("node-") and t.round in {"1", "2", "3"}
    # the sample is seeded: the same again, another with another seed
    again = summarize_run(synthetic_run)
    assert [t.root["span_id"] for t in again.traces] == [t.root["span_id"]
                                                          for t in summary.traces]
    other = summarize_run(synthetic_run, seed=99)
    assert ({t.root["span_id"] for t in other.traces[20:]}
            != {t.root["span_id"] for t in summary.traces[20:]})


def test_deep_trees_are_followed_down(tmp_path: Path) -> None:
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "manifest.json").write_text(json.dumps({"run_id": "deep", "seed": 0}))

    def span(sid: str, parent: str | None, op: str, start: int, end: int) -> str:
        return json.dumps({"name": f"{op} x", "trace_id": "t", "span_id": sid,
                           "parent_id": parent, "kind": "INTERNAL", "start": start,
                           "end": end, "status": "UNSET",
                           "attributes": {"gen_ai.operation.name": op}}) + "\n"

    # written as a run writes them, each span when it ends: the deepest first
    (folder / "trace.jsonl").write_text(
        span("d", "c", "chat", 4, 5) + span("c", "b", "invoke_agent", 3, 6)
        + span("b", "a", "execute_tool", 2, 7) + span("a", None, "invoke_agent", 1, 8))
    traces = {t.root["span_id"]: [s["span_id"] for s in t.spans]
              for t in summarize_run(folder).traces}
    assert traces == {"a": ["a", "b", "c", "d"], "c": ["c", "d"]}


def test_a_run_folder_with_no_trace_still_has_a_page(tmp_path: Path) -> None:
    (tmp_path / "manifest.json").write_text(json.dumps({"run_id": "empty"}))
    page = render_html(tmp_path)
    assert "No agent replies were traced" in page and "Run empty" in page


def test_the_page_stays_bounded_as_the_run_grows(tmp_path: Path) -> None:
    sizes = {}
    for agents in (200, 2000, 20000):
        folder = make_run_folder.write_run_folder(tmp_path / str(agents), agents=agents,
                                                  nodes=4, rounds=2, failure_rate=0.01)
        page = render_html(folder)
        assert "http://" not in page and "https://" not in page and "<script" not in page
        sizes[agents] = len(page.encode())
    # 10 times the spans (once the drill-down has its 40 trees): the same page but for wider
    # numbers; 100 times: under the bound
    assert sizes[200] < sizes[2000] < sizes[20000] < 1.1 * sizes[2000]
    assert sizes[20000] < 200_000


def test_latency_sketch_and_distinct_count_beyond_their_exact_range() -> None:
    rng = random.Random(3)
    values = [int(rng.lognormvariate(12, 1)) for _ in range(50_000)]
    sketch = LatencySketch()
    for v in values:
        sketch.add(v)
    assert not sketch.exact and sketch.count == len(values)
    for q in (50, 95, 99):
        got = sketch.percentile(q)
        assert got is not None and abs(got / _nearest_rank(values, q) - 1) < 0.01
    distinct = DistinctCount()
    for i in range(60_000):
        distinct.add(f"agent-{i % 30_000}")
    assert not distinct.exact and abs(len(distinct) / 30_000 - 1) < 0.06
