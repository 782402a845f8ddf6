"""Interventions and surveys, declared without touching the scenario."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from agentplex.sim import PlanError, RunOptions, load_plan, run_scenario
from agentplex.sim.lowlevel import Checkpoint, checkpoint_at

TALLY = str(Path(__file__).parents[1] / "support" / "sim_scenario.py") + ":Tally"

pytestmark = pytest.mark.anyio


def states(run_dir: Path, number: int) -> dict[str, Any]:
    ck: Checkpoint = checkpoint_at(run_dir, number)
    return dict(ck.states())


async def test_interventions_reach_all_a_sample_or_a_group_and_change_parameters(
        tmp_path: Path) -> None:
    plan = load_plan(intervene=["2:all:everyone", "2:sample=3:some", "3:group=firsts:you two",
                                "3:sample=0.5:half"],
                     change=["3:scale=100"])
    result = await run_scenario(RunOptions(scenario=TALLY, agents=10, rounds=3, seed=5,
                                           plan=plan, checkpoint_every=3, runs_dir=tmp_path))
    heard = {name: state["heard"] for name, state in
             states(result.dir, 3).items()}
    assert all("everyone" in h for h in heard.values())
    assert sum("some" in h for h in heard.values()) == 3
    assert sum("half" in h for h in heard.values()) == 5
    assert [n for n, h in heard.items() if "you two" in h] == [
        "counter-0", "counter-1"]
    step = [b["total"] - a["total"] for a, b in zip(result.metrics, result.metrics[1:],
                                                    strict=False)]
    assert step[1] > 20 * max(1, step[0])  # scale=100 from round 3 on
    lines = [json.loads(x) for x in (result.dir / "transcript.jsonl").read_text().splitlines()]
    said = [(x["round"], x["content"]) for x in lines
            if x["name"] == "operator" and (x.get("metadata") or {}).get("intervention")]
    assert said == [(2, "everyone"), (2, "some"), (3, "you two"), (3, "half"),
                    (3, "parameters changed: {'scale': 100}")]  # in declaration order
    spans = [json.loads(x)["name"] for x in (result.dir / "trace.jsonl").read_text().splitlines()]
    assert spans.count("intervention") == 5 and "round 3" in spans


async def test_surveys_store_answers_and_leave_memory_alone(tmp_path: Path) -> None:
    asked = load_plan(survey=["1:all:how much?", "2:sample=2:and now?"])
    base = RunOptions(scenario=TALLY, agents=4, rounds=3, seed=6, checkpoint_every=3,
                      runs_dir=tmp_path)
    quiet = await run_scenario(base)
    surveyed = await run_scenario(base.model_copy(update={"plan": asked}))
    assert surveyed.metrics == quiet.metrics  # nobody remembers being asked
    assert states(surveyed.dir, 3) == states(quiet.dir, 3)
    rows = pq.read_table(surveyed.dir / "surveys.parquet").to_pylist()
    assert [(r["round"], r["question"]) for r in rows] == [(1, "how much?")] * 4 + \
        [(2, "and now?")] * 2
    assert [r["agent"] for r in rows[:4]] == [f"counter-{i}" for i in range(4)]
    assert rows[0]["answer"].startswith("counter-0 has ") and rows[0]["error"] is None
    remembered = await run_scenario(base.model_copy(update={"plan": load_plan(
        tmp_path / "plan.json" if (tmp_path / "plan.json").write_text(json.dumps(
            {"survey": [{"round": 1, "to": "all", "question": "q", "memory": True}]}))
        else None)}))
    assert [r["heard"] for r in remembered.metrics][1] == 4  # each heard the question


def test_plans_come_from_toml_yaml_or_json_and_bad_ones_are_refused(tmp_path: Path) -> None:
    toml = tmp_path / "plan.toml"
    toml.write_text('[groups]\nleaders = [0, 2]\n\n[[intervention]]\nround = 2\n'
                    'to = "group=leaders"\nmessage = "hi"\n\n[[survey]]\nround = 3\n'
                    'to = "sample=0.5"\nquestion = "ok?"\n')
    yaml = tmp_path / "plan.yaml"
    yaml.write_text("groups: {leaders: [0, 2]}\nintervention:\n  - {round: 2, to: group=leaders,"
                    " message: hi}\nsurvey:\n  - {round: 3, to: sample=0.5, question: 'ok?'}\n")
    assert load_plan(toml) == load_plan(yaml)
    plan = load_plan(toml, intervene=["4:all:more"], change=["5:eps=0.1"])
    assert [i.round for i in plan.interventions] == [2, 4, 5]
    assert plan.interventions[2].set == {"eps": 0.1}
    for bad in (["x:all:text"], ["2:everyone:text"], ["2:sample=1.5:text"], ["2:all"]):
        with pytest.raises(PlanError):
            load_plan(intervene=bad)
    with pytest.raises(PlanError):
        load_plan(change=["2:eps"])
    (tmp_path / "bad.toml").write_text("[[survey]]\nround = 0\nquestion = 'q'\n")
    with pytest.raises(PlanError):
        load_plan(tmp_path / "bad.toml")
    (tmp_path / "bad.yaml").write_text("survey: [{round: 1, question: ok?}]\n")
    with pytest.raises(PlanError, match="cannot parse"):
        load_plan(tmp_path / "bad.yaml")
    with pytest.raises(PlanError, match=r"\.toml, \.yaml or \.json"):
        load_plan(tmp_path / "plan.txt" if (tmp_path / "plan.txt").write_text("x") else None)


async def test_an_unknown_group_is_refused_before_the_run_starts(tmp_path: Path) -> None:
    with pytest.raises(PlanError, match="no group 'nobody'"):
        await run_scenario(RunOptions(scenario=TALLY, agents=3, rounds=1, runs_dir=tmp_path,
                                      plan=load_plan(intervene=["1:group=nobody:hi"])))
    assert not any(tmp_path.iterdir())  # noqa: ASYNC240 - one look at an empty folder
