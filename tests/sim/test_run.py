"""A scenario run in this process: rounds, metrics per round, the transcript's rounds and
the operator's messages, the manifest's status and counts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from agentplex.sim import RunOptions, ScenarioError, load_scenario, run_scenario
from agentplex.sim.lowlevel import parse_sets
from agentplex.sim.scenarios.opinion import Opinion

TALLY = str(Path(__file__).parents[1] / "support" / "sim_scenario.py") + ":Tally"
OPINION = "agentplex.sim.scenarios.opinion:Opinion"

pytestmark = pytest.mark.anyio


def manifests(folder: Path) -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in folder.glob("*/manifest.json")]


def transcript(run_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in (run_dir / "transcript.jsonl").read_text().splitlines()]


def options(tmp_path: Path, **kw: object) -> RunOptions:
    base: dict[str, object] = {"scenario": TALLY, "agents": 5, "rounds": 3, "seed": 1,
                               "runs_dir": tmp_path}
    return RunOptions(**{**base, **kw})


async def test_metrics_land_in_parquet_one_row_per_round(tmp_path: Path) -> None:
    printed: list[dict[str, object]] = []
    result = await run_scenario(options(tmp_path),
                                on_round=lambda row, _: printed.append(row))
    rows = pq.read_table(result.dir / "metrics.parquet").to_pylist()
    assert [r["round"] for r in rows] == [1, 2, 3] and rows == printed == result.metrics
    assert pq.read_table(result.dir / "metrics.parquet").column_names == [
        "round", "total", "answered", "heard"]
    assert all(r["answered"] == 5 for r in rows)
    # the totals grow by what the agents were told: start values 0..4 plus the numbers
    assert rows[0]["total"] >= sum(range(5)) and rows[2]["total"] > rows[0]["total"]
    manifest = json.loads((result.dir / "manifest.json").read_text())
    assert manifest["status"] == "completed" and manifest["timeouts"] == 0
    assert manifest["errors"] == 0 and manifest["config"]["scenario"] == TALLY


async def test_transcript_lines_carry_their_round_and_the_operators_messages(
        tmp_path: Path) -> None:
    result = await run_scenario(options(tmp_path))
    lines = transcript(result.dir)
    assert [line["round"] for line in lines] == sorted(line["round"] for line in lines)
    operator = [x for x in lines if x["name"] == "operator"]
    agents = [x for x in lines if x["name"].startswith("counter-")]
    assert len(operator) == len(agents) == 5 * 3
    assert {x["round"] for x in operator} == {1, 2, 3}


async def test_the_same_seed_gives_the_same_metrics_and_another_seed_others(
        tmp_path: Path) -> None:
    a = await run_scenario(options(tmp_path / "a"))
    b = await run_scenario(options(tmp_path / "b"))
    c = await run_scenario(options(tmp_path / "c", seed=2))
    assert a.metrics == b.metrics != c.metrics
    assert (a.dir / "transcript.jsonl").read_bytes() == (b.dir / "transcript.jsonl").read_bytes()


async def test_agents_errors_are_counted_and_the_run_goes_on(tmp_path: Path) -> None:
    result = await run_scenario(options(tmp_path, params={"fail": "counter-3"}))
    assert [r["answered"] for r in result.metrics] == [4, 4, 4] and result.errors == 3
    manifest = json.loads((result.dir / "manifest.json").read_text())
    assert manifest["errors"] == 3 and manifest["status"] == "completed"


async def test_agents_that_do_not_answer_in_time_are_counted(tmp_path: Path) -> None:
    result = await run_scenario(options(tmp_path, rounds=2, timeout=0.5,
                                        params={"slow": "counter-1"}))
    assert [r["answered"] for r in result.metrics] == [4, 4]
    assert result.timeouts == 2 and result.errors == 0
    (manifest,) = manifests(tmp_path)
    assert manifest["timeouts"] == 2


async def test_a_step_that_raises_marks_the_run_failed(tmp_path: Path) -> None:
    with pytest.raises(Exception, match=r"bad parameters: scale: .*got 'many'"):
        await run_scenario(options(tmp_path, params={"scale": "many"}))
    with pytest.raises(Exception, match="no parameter 'scael'"):  # a typo is not ignored
        await run_scenario(options(tmp_path, params={"scael": 2}))
    assert not manifests(tmp_path)  # refused before anything ran
    with pytest.raises(ZeroDivisionError):
        await run_scenario(RunOptions(scenario=f"{__name__}:Broken", agents=2, rounds=2,
                                      runs_dir=tmp_path))
    (manifest,) = manifests(tmp_path)
    assert manifest["status"] == "failed" and "ZeroDivisionError" in manifest["error"]


async def test_opinion_scenario_converges_when_voters_listen_widely(tmp_path: Path) -> None:
    narrow = await run_scenario(RunOptions(scenario=OPINION, agents=300, rounds=10, seed=3,
                                           params={"eps": 0.1}, runs_dir=tmp_path))
    wide = await run_scenario(RunOptions(scenario=OPINION, agents=300, rounds=10, seed=3,
                                         params={"eps": 0.5}, runs_dir=tmp_path))
    assert wide.metrics[-1]["spread"] < 0.5 * wide.metrics[0]["spread"]
    assert narrow.metrics[-1]["spread"] > 0.8 * narrow.metrics[0]["spread"]


def test_scenarios_load_from_a_file_or_a_module_and_bad_ones_are_refused() -> None:
    assert load_scenario(TALLY).__name__ == "Tally"
    assert load_scenario(OPINION) is Opinion
    for bad in ("nocolon", "no/such/file.py:X", "agentplex.sim:Nothing",
                "agentplex.sim:Sim", "no_such_module_xyz:X"):
        with pytest.raises(ScenarioError):
            load_scenario(bad)
    assert parse_sets(["eps=0.3", "name=abc", "flag=true"]) == {
        "eps": 0.3, "name": "abc", "flag": True}
    with pytest.raises(ValueError, match="key=value"):
        parse_sets(["eps"])


from agentplex.sim import Scenario, Sim  # noqa: E402 - the scenario the failing test runs
from tests.support.sim_scenario import Counter  # noqa: E402


class Broken(Scenario):
    agent = Counter

    async def step(self, sim: Sim) -> None:
        if sim.round == 2:
            raise ZeroDivisionError("the step's own error")
        await sim.call_many(sim.agents, sim.say("add", add=1))


async def test_voters_can_have_a_model_state_their_opinion(tmp_path: Path) -> None:
    from agentplex.model import ScriptedChatModel
    from agentplex.sim.scenarios import opinion

    said = json.dumps({"opinion": 0.5, "statement": "I am somewhere in the middle."})
    opinion._models["scripted-statements"] = ScriptedChatModel([said], cycle=True)
    ruled = await run_scenario(RunOptions(scenario=OPINION, agents=6, rounds=2, seed=1,
                                          runs_dir=tmp_path))
    stated = await run_scenario(RunOptions(scenario=OPINION, agents=6, rounds=2, seed=1,
                                           params={"model": "scripted-statements"},
                                           runs_dir=tmp_path))
    assert stated.metrics == ruled.metrics and stated.errors == 0  # the rule decides
    lines = transcript(stated.dir)
    assert sum("somewhere in the middle" in line["content"] for line in lines) == 12
    (manifest,) = [m for m in manifests(tmp_path) if m["run_id"] == stated.run_id]
    assert manifest["totals"]["model_calls"] == 12


async def test_a_fork_keeps_the_model_usage_of_its_rounds_before(tmp_path: Path) -> None:
    from agentplex.sim.lowlevel import fork_options

    game = "agentplex.sim.scenarios.guessing:Guessing"
    parent = await run_scenario(RunOptions(scenario=game, agents=10, rounds=4, seed=2,
                                           checkpoint_every=2, runs_dir=tmp_path))
    options, start = fork_options(f"{parent.run_id}@2", tmp_path, {}, None, None)
    arm = await run_scenario(options, start=start)
    totals = {m["run_id"]: m["totals"] for m in manifests(tmp_path)}
    assert totals[arm.run_id]["model_calls"] == totals[parent.run_id]["model_calls"] == 40
    def counted(run_id: str) -> list[dict[str, Any]]:  # device seconds are measured
        return [{k: v for k, v in r.items() if not k.endswith("_s")}
                for r in totals[run_id]["by_round"]]

    assert counted(arm.run_id) == counted(parent.run_id)
    assert [r["round"] for r in counted(arm.run_id)] == [1, 2, 3, 4]


async def test_the_guessing_game_is_a_scenario(tmp_path: Path) -> None:
    game = "agentplex.sim.scenarios.guessing:Guessing"
    a = await run_scenario(RunOptions(scenario=game, agents=40, rounds=3, seed=9,
                                      runs_dir=tmp_path))
    b = await run_scenario(RunOptions(scenario=game, agents=40, rounds=3, seed=9,
                                      runs_dir=tmp_path))
    assert a.metrics == b.metrics and [r["answered"] for r in a.metrics] == [40] * 3
    for row in a.metrics:
        assert abs(row["target"] - 2 / 3 * row["mean"]) < 0.01 and row["winners"] >= 1
    outcomes = [x for x in transcript(a.dir) if x["name"] == "operator"]
    assert [x["round"] for x in outcomes] == [1, 2, 3]  # each round's outcome, noted
    assert outcomes[0]["content"].startswith("Round 1: 40 players guessed")


def test_a_metric_whose_kind_changes_is_kept_as_text(tmp_path: Path) -> None:
    from agentplex.sim.lowlevel import write_table

    path = tmp_path / "metrics.parquet"
    write_table(path, [{"round": 1, "label": 3, "sizes": [1, 2]},
                       {"round": 2, "label": "tie", "sizes": [3]}], ["round"])
    assert pq.read_table(path).to_pylist() == [
        {"round": 1, "label": "3", "sizes": [1, 2]},
        {"round": 2, "label": "tie", "sizes": [3]}]


async def test_a_run_without_recording_plays_the_same_and_records_no_answers(
        tmp_path: Path) -> None:
    game = "agentplex.sim.scenarios.guessing:Guessing"
    kept = await run_scenario(options(tmp_path / "a", scenario=game, agents=6, rounds=2))
    none = await run_scenario(options(tmp_path / "b", scenario=game, agents=6, rounds=2,
                                      recording=False))
    assert kept.metrics == none.metrics
    assert (kept.dir / "recording.jsonl").read_text().count("\n") == 12
    assert not (none.dir / "recording.jsonl").exists()
    manifest = json.loads((none.dir / "manifest.json").read_text())
    assert manifest["recording"] is False and manifest["config"]["recording"] is False
    assert manifest["totals"]["model_calls"] == 12
    assert (none.dir / "transcript.jsonl").read_bytes() == \
        (kept.dir / "transcript.jsonl").read_bytes()


async def test_the_guessing_game_with_model_replicas_runs_twice_in_one_process(
        tmp_path: Path) -> None:
    """The players reach the replicas of their own run's runtime: a second run in the
    same process (a notebook, a sweep) does not call the first run's, long stopped."""
    opts = RunOptions(scenario="agentplex.sim.scenarios.guessing:Guessing", agents=6,
                      rounds=2, seed=1, runs_dir=tmp_path,
                      params={"model": "scripted:thirty", "replicas": 2,
                              "options": {"script": ['{"number": 30}'], "cycle": True}})
    a = await run_scenario(opts)
    b = await run_scenario(opts)
    assert [r["answered"] for r in a.metrics] == [6, 6] and b.metrics == a.metrics
    assert a.metrics[0]["mean"] == 30 and a.errors == b.errors == 0
