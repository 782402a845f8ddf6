"""``agentplex runs list`` filters and prints run ids whole; ``agentplex runs export RUN
--mlflow URI`` logs a run to an mlflow file store, read back with mlflow's own client."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from agentplex.sim import RunOptions, read_metrics, run_scenario

OPINION = "agentplex.sim.scenarios.opinion:Opinion"
GUESSING = "agentplex.sim.scenarios.guessing:Guessing"


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Four runs: opinion at eps 0.1 and 0.3, one named 'other', a guessing game stopped
    by its budget."""
    root = tmp_path_factory.mktemp("runs")
    made = {}
    for key, options in (
            ("low", RunOptions(scenario=OPINION, agents=30, params={"eps": 0.1})),
            ("high", RunOptions(scenario=OPINION, agents=30, params={"eps": 0.3})),
            ("other", RunOptions(scenario=OPINION, agents=10, name="other")),
            ("budget", RunOptions(scenario=GUESSING, agents=4, max_tokens=1,
                                  params={"model": "scripted"}))):
        options.runs_dir = root
        made[key] = asyncio.run(run_scenario(options)).dir
    return made


def agentplex(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "agentplex", *args], capture_output=True,
                          text=True, timeout=180, env={**os.environ, **env})


def listed(runs: dict[str, Path], *args: str) -> list[str]:
    """The run ids ``runs list`` prints (plain: its output is a pipe)."""
    got = agentplex("runs", "list", "--runs-dir", str(runs["low"].parent), *args,
                    COLUMNS="40")
    assert got.returncode == 0, got.stderr
    header, *lines = got.stdout.splitlines()
    assert header.split("\t")[:3] == ["run", "name", "status"]
    return sorted(line.split("\t")[0] for line in lines)


def test_runs_list_filters_by_name_status_and_parameter(runs: dict[str, Path]) -> None:
    ids = {k: p.name for k, p in runs.items()}
    assert listed(runs) == sorted(ids.values())
    assert listed(runs, "--param", "eps=0.3") == [ids["high"]]
    assert listed(runs, "--param", "eps=0.1", "--param", "agents=30") == [ids["low"]]
    assert listed(runs, "--param", "agents=10") == [ids["other"]]
    assert listed(runs, "--name", "opin*") == sorted([ids["low"], ids["high"]])
    assert listed(runs, "--name", "other") == [ids["other"]]
    assert listed(runs, "--status", "budget") == [ids["budget"]]
    assert listed(runs, "--status", "completed", "--status", "budget", "--name", "g*") == [
        ids["budget"]]
    assert listed(runs, "--param", "model=scripted") == [ids["budget"]]
    assert listed(runs, "--param", "eps=0.7") == []
    bad = agentplex("runs", "list", "--runs-dir", str(runs["low"].parent), "--param", "eps")
    assert bad.returncode != 0 and "KEY=VALUE" in bad.stderr


def test_runs_list_on_a_narrow_terminal_keeps_ids_whole(runs: dict[str, Path]) -> None:
    got = agentplex("runs", "list", "--runs-dir", str(runs["low"].parent),
                    COLUMNS="34", TTY_COMPATIBLE="1", NO_COLOR="1")
    assert got.returncode == 0, got.stderr
    assert "┃" in got.stdout  # the table, not the plain lines
    for folder in runs.values():
        assert folder.name in got.stdout


def test_runs_export_logs_params_metrics_totals_and_files_to_mlflow(
        runs: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    mlflow = pytest.importorskip("mlflow")
    store = tmp_path / "mlruns"
    run = runs["high"]
    got = agentplex("runs", "export", run.name, str(store), "--mlflow",
                    "--runs-dir", str(run.parent))
    assert got.returncode == 0, got.stderr
    exported = got.stdout.split()[-1]
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    client = mlflow.tracking.MlflowClient(tracking_uri=str(store))
    found = client.get_run(exported)
    assert found.info.run_name == run.name and found.info.status == "FINISHED"
    assert client.get_experiment(found.info.experiment_id).name == "opinion"
    params = found.data.params
    assert params["eps"] == "0.3" and params["agents"] == "30" and params["rounds"] == "3"
    assert params["scenario"] == OPINION and params["seed"] == "0"
    metrics = read_metrics(run)
    for name in ("mean", "spread", "clusters", "answered"):
        history = sorted(client.get_metric_history(exported, name), key=lambda m: m.step)
        assert [(m.step, m.value) for m in history] == [
            (row["round"], pytest.approx(row[name])) for row in metrics]
    totals = json.loads((run / "manifest.json").read_text())["totals"]
    assert found.data.metrics["total.messages"] == totals["messages"] > 0
    assert found.data.metrics["total.model_calls"] == 0
    artifacts = {a.path for a in client.list_artifacts(exported)}
    assert {"manifest.json", "metrics.parquet", "transcript.jsonl", "transcript.parquet",
            "trace.jsonl"} <= artifacts
    assert (Path(found.info.artifact_uri.removeprefix("file://")) / "manifest.json"
            ).read_bytes() == (run / "manifest.json").read_bytes()
    budget = agentplex("runs", "export", runs["budget"].name, str(store), "--mlflow",
                       "--experiment", "games", "--runs-dir", str(run.parent))
    assert budget.returncode == 0, budget.stderr
    game = client.get_run(budget.stdout.split()[-1])
    assert client.get_experiment(game.info.experiment_id).name == "games"
    assert game.data.params["model"] == "scripted" and game.data.params["max_tokens"] == "1"
    assert game.data.metrics["total.model_calls"] == 4
    assert game.data.tags["agentplex.status"] == "budget"


def test_runs_export_says_what_is_missing(runs: dict[str, Path], tmp_path: Path) -> None:
    where = ["--runs-dir", str(runs["low"].parent)]
    nowhere = agentplex("runs", "export", runs["low"].name, *where)
    assert nowhere.returncode != 0 and "--mlflow" in nowhere.stderr
    # a Python without mlflow: its import fails, as it does where it is not installed
    code = ("import sys; sys.modules['mlflow'] = None; sys.argv[0] = 'agentplex'; "
            "from agentplex.cli import main; main()")
    got = subprocess.run([sys.executable, "-c", code, "runs", "export", runs["low"].name,
                          str(tmp_path / "ml"), "--mlflow", *where], capture_output=True,
                         text=True, timeout=120)
    assert got.returncode == 1
    assert "needs mlflow" in got.stderr and "agentplex[mlflow]" in got.stderr
    assert not (tmp_path / "ml").exists()


def test_runs_list_shows_the_runs_of_sweeps_marked_and_runs_show_takes_them(
        tmp_path: Path) -> None:
    from tests.support.sweep_folder import make_sweep, run_once

    root = tmp_path / "runs"
    alone = run_once(root, OPINION, "--agents", "10", "--rounds", "2")
    sweep = make_sweep(root / "eps-sweep", {"eps": [0.1, 0.3]}, [1], agents=10, rounds=2)
    swept = sorted(p.name for p in (sweep / "runs").iterdir())
    got = agentplex("runs", "list", "--runs-dir", str(root), "--plain")
    assert got.returncode == 0, got.stderr
    header, *lines = got.stdout.splitlines()
    columns = header.split("\t")
    rows = {cells[0]: dict(zip(columns, cells, strict=True))
            for cells in (line.split("\t") for line in lines)}
    assert sorted(rows) == sorted([alone.name, *swept])
    assert rows[alone.name]["sweep"] == ""
    assert {rows[r]["sweep"] for r in swept} == {"eps-sweep"}
    assert rows[swept[0]]["status"] == "completed"
    only = agentplex("runs", "list", "--runs-dir", str(root), "--param", "eps=0.3")
    assert [line.split("\t")[0] for line in only.stdout.splitlines()[1:]] == [
        r for r in swept if json.loads((sweep / "runs" / r / "manifest.json").read_text())
        ["config"]["params"]["eps"] == 0.3]
    shown = agentplex("runs", "show", swept[0], "--runs-dir", str(root))
    assert shown.returncode == 0, shown.stderr
    assert swept[0] in shown.stdout and "metrics per round" in shown.stdout
