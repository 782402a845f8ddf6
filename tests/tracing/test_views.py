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
    assert "run demo" in tree and "invoke_agent Player1" in tree and "tokens" in tree


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
    assert first["name"] in dom and "invoke_agent Player1" in dom


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
