"""Looking at runs: the CLI listings and the HTML page rendered in headless Chromium."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.chromium import dump_dom, needs_chromium


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    runs = tmp_path_factory.mktemp("runs")
    # the scripted model: what is looked at is the run folder, not the model's answers
    subprocess.run([sys.executable, "-m", "agentplex", "demo", "-n", "3", "-r", "1",
                    "--model", "scripted", "--runs-dir", str(runs)], check=True,
                   capture_output=True, timeout=120)
    (folder,) = [p for p in runs.iterdir() if p.is_dir()]
    return folder


def cli(*args: str) -> str:
    proc = subprocess.run([sys.executable, "-m", "agentplex", *args], capture_output=True,
                          text=True, timeout=60, env={"COLUMNS": "200", "PATH": "/usr/bin", **{
                              k: v for k, v in os.environ.items() if k == "PYTHONPATH"}})
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_runs_list_show_and_trace_show(run_dir: Path) -> None:
    runs = str(run_dir.parent)
    assert run_dir.name in cli("runs", "list", "--runs-dir", runs)
    shown = cli("runs", "show", "latest", "--runs-dir", runs)
    assert run_dir.name in shown and "transcript.jsonl" in shown
    assert "transcript.parquet" in shown
    tree = cli("trace", "show", run_dir.name[:15], "--runs-dir", runs)
    assert "run demo" in tree and "invoke_agent player-1" in tree and "tokens" in tree


def test_unknown_run_is_a_clear_error(run_dir: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "agentplex", "trace", "show", "nope",
                           "--runs-dir", str(run_dir.parent)], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode != 0 and "no run 'nope'" in proc.stderr


@needs_chromium
def test_html_page_renders_summary_traces_and_transcript_in_chromium(run_dir: Path) -> None:
    cli("trace", "html", str(run_dir))
    page = run_dir / "trace.html"
    assert "http://" not in page.read_text() and "https://" not in page.read_text()
    spans = [json.loads(line) for line in (run_dir / "trace.jsonl").read_text().splitlines()]
    replies = [s for s in spans if s["name"].startswith("invoke_agent")]
    transcript = (run_dir / "transcript.jsonl").read_text().splitlines()
    dom = dump_dom(page)
    for title in ("Per round", "Per node", "Per agent class", "Per model", "Sampled traces"):
        assert f"<h2>{title}" in dom
    # fewer replies than the drill-down holds: each one is there, with its model call
    assert dom.count('<details class="trace"') == len(replies)
    assert dom.count('class="row span-row"') == 2 * len(replies)
    assert dom.count('class="msg"') == min(40, len(transcript))
    first = json.loads(transcript[0])
    assert first["name"] in dom and "invoke_agent player-1" in dom


@needs_chromium
def test_html_page_of_a_big_run_on_nodes_renders_in_chromium(tmp_path: Path) -> None:
    from tests.tracing.test_summary import make_run_folder

    folder = make_run_folder.write_run_folder(tmp_path / "run", agents=5000, nodes=4,
                                              rounds=3, failure_rate=0.01)
    cli("trace", "html", str(folder))
    dom = dump_dom(folder / "trace.html")
    assert dom.count('<details class="trace"') == 40
    for node in ("node-1", "node-2", "node-3", "node-4"):
        assert f"<td>{node}</td>" in dom
    assert "<td>3</td>" in dom and "<svg" in dom and "≈ marks" in dom


@pytest.fixture(scope="module")
def sim_on_nodes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A scenario run with a (scripted) model on 2 node processes: the players, their
    model calls and their spans are on the nodes."""
    from tests.support.sweep_folder import run_once

    return run_once(tmp_path_factory.mktemp("sim"), "agentplex.sim.scenarios.guessing:Guessing",
                    "--agents", "12", "--rounds", "2", "--nodes", "2", "--seed", "4")


def test_the_summary_of_a_scenario_run_on_two_nodes(sim_on_nodes: Path) -> None:
    """Per round (its replies found by the round spans agentplex.sim writes), per node
    (agents, replies and CPU of the processes the run started), per agent class and model,
    and the drill-down into traces whose spans were recorded on the nodes."""
    from agentplex.tracing import summarize_run

    manifest = json.loads((sim_on_nodes / "manifest.json").read_text())
    spans = [json.loads(line) for line in (sim_on_nodes / "trace.jsonl").open()]
    summary = summarize_run(sim_on_nodes)

    assert list(summary.rounds) == ["1", "2"]  # no reply left outside a round
    by_round = {r["round"]: r for r in manifest["totals"]["by_round"]}
    for name, stats in summary.rounds.items():
        assert stats.answers == stats.spans == 12 and stats.failures == 0
        assert all(p is not None for p in stats.percentiles())
        row = by_round[int(name)]
        assert stats.usage() == (row["calls"], row["input_tokens"], row["output_tokens"])
        assert row["calls"] == 12 and row["input_tokens"] > 0 and row["output_tokens"] > 0

    cpu = {n["node"]: n["cpu_s"] for n in manifest["nodes"]}
    assert set(cpu) == {"head", "node-0", "node-1"} and all(c > 0 for c in cpu.values())
    for node in ("node-0", "node-1"):
        stats = summary.nodes[node]
        assert (len(stats.agents), stats.answers, stats.failures) == (6, 12, 0)
        assert stats.cpu_s == cpu[node]
    assert summary.nodes["head"].cpu_s == cpu["head"]

    (cls,) = summary.agent_classes.items()
    assert cls[0] == "CrowdPlayer" and cls[1].answers == 24 and len(cls[1].agents) == 12
    (model,) = summary.models.items()
    assert model[0] == "scripted:scripted-players"
    assert model[1].usage() == (manifest["totals"]["model_calls"],
                                manifest["totals"]["input_tokens"],
                                manifest["totals"]["output_tokens"]) and model[1].calls == 24

    # the drill-down: every reply (fewer than it holds), each with its model call, both
    # recorded in the node process that hosts the player
    assert len(summary.traces) == summary.candidates == 24
    node_of = {s["span_id"]: s["attributes"].get("agentplex.node") for s in spans}
    for trace in summary.traces:
        assert trace.node in ("node-0", "node-1") and trace.round in ("1", "2")
        ops = [s["attributes"].get("gen_ai.operation.name") for s in trace.spans]
        assert ops == ["invoke_agent", "chat"]
        assert node_of[trace.root["parent_id"]] == trace.node  # the node's process span


def test_the_page_of_an_in_process_scenario_run_has_its_rounds(tmp_path: Path) -> None:
    from agentplex.tracing import summarize_run
    from tests.support.sweep_folder import OPINION, run_once

    folder = run_once(tmp_path, OPINION, "--agents", "30", "--rounds", "3")
    summary = summarize_run(folder)
    assert list(summary.rounds) == ["1", "2", "3"]
    assert [s.spans for s in summary.rounds.values()] == [30, 30, 30]
    (cpu,) = json.loads((folder / "manifest.json").read_text())["nodes"]
    assert cpu["node"] == "driver" and summary.nodes["driver"].cpu_s == cpu["cpu_s"]


@needs_chromium
def test_the_page_of_a_scenario_run_on_two_nodes_in_chromium(sim_on_nodes: Path) -> None:
    cli("trace", "html", str(sim_on_nodes))
    dom = dump_dom(sim_on_nodes / "trace.html")
    for title in ("Per round", "Per node", "Per agent class", "Per model", "Sampled traces"):
        assert f"<h2>{title}" in dom
    cpu = {n["node"]: n["cpu_s"] for n in
           json.loads((sim_on_nodes / "manifest.json").read_text())["nodes"]}
    for node in ("node-0", "node-1"):
        # node, messages in and out, agents, replies, failures, 3 percentiles, CPU
        row = dom.split(f"<tr><td>{node}</td>", 1)[1].split("</tr>", 1)[0]
        cells = row.replace("</td>", "").split("<td>")[1:]
        assert cells[2:5] == ["6", "12", "0"] and cells[-1] == f"{cpu[node]:,.1f}"
    assert dom.count('<details class="trace"') == 24
    assert dom.count("node node-0 ·") + dom.count("node node-1 ·") == 24
    assert "<td>CrowdPlayer</td>" in dom and "<td>scripted:scripted-players</td>" in dom
    round_rows = [dom.split(f"<tr><td>{r}</td>", 1)[1].split("</tr>", 1)[0] for r in "12"]
    assert all(row.startswith("<td>12</td><td>0</td>") for row in round_rows)
