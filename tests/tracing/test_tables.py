"""A run's data as tables: transcript.parquet beside transcript.jsonl, and the DuckDB
one-liners of docs/from-runs-to-answers.md run as written on real runs."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from agentplex.sim import Plan, RunOptions, Survey, read_metrics, run_scenario
from agentplex.tracing.lowlevel import TranscriptTable
from tests.support import ROOT

OPINION = "agentplex.sim.scenarios.opinion:Opinion"
PAGE = ROOT / "docs" / "from-runs-to-answers.md"


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two opinion runs (eps 0.1 and 0.3, the second with a survey) under ``runs/``."""
    root = tmp_path_factory.mktemp("tables")
    for eps, plan in ((0.1, Plan()),
                      (0.3, Plan(surveys=[Survey(round=2, to="all", question="Where?")]))):
        asyncio.run(run_scenario(RunOptions(scenario=OPINION, agents=40, rounds=3, seed=2,
                                            params={"eps": eps}, plan=plan,
                                            runs_dir=root / "runs")))
    return root


def folders(root: Path) -> list[Path]:
    """The run folders, by eps."""
    found = [p for p in (root / "runs").iterdir() if p.is_dir()]
    return sorted(found, key=lambda p: json.loads((p / "manifest.json").read_text())
                  ["config"]["params"]["eps"])


def test_transcript_parquet_holds_the_transcript_in_order(runs: Path) -> None:
    for folder in folders(runs):
        lines = [json.loads(x) for x in
                 (folder / "transcript.jsonl").read_text().splitlines()]
        rows = pq.read_table(folder / "transcript.parquet").to_pylist()
        assert len(rows) == len(lines) > 0
        for row, line in zip(rows, lines, strict=True):
            assert (row["round"], row["clock"], row["name"], row["role"], row["text"]) == (
                line.get("round"), line["clock"], line["name"], line["role"], line["content"])
            assert row["content"] is None  # plain text: in ``text`` alone
            assert json.loads(row["metadata"]) == line["metadata"]


def test_the_table_is_written_in_row_groups_with_blocks_as_json(tmp_path: Path) -> None:
    path = tmp_path / "t.parquet"
    table = TranscriptTable(path, row_group=5)
    blocks = [{"type": "text", "text": "a"}, {"type": "thinking", "thinking": "hm"},
              {"type": "text", "text": "b"}]
    for i in range(12):
        table.add(json.dumps({"clock": i, "name": f"n{i}", "role": "assistant",
                              "content": blocks if i == 3 else f"say {i}",
                              **({"round": 1} if i else {}),
                              "metadata": {"i": i} if i % 2 else {}}))
    assert not path.exists()  # the file appears whole, at the end
    table.close()
    read = pq.ParquetFile(path)
    assert read.metadata.num_row_groups == 3
    rows = read.read().to_pylist()
    assert [r["clock"] for r in rows] == list(range(12))
    assert rows[0]["round"] is None and rows[1]["round"] == 1
    assert rows[3]["text"] == "ab" and json.loads(rows[3]["content"]) == blocks
    assert rows[2]["metadata"] is None and json.loads(rows[1]["metadata"]) == {"i": 1}


def documented_queries() -> list[str]:
    """The SQL of each ``duckdb -c "..."`` line of the page's section on tables."""
    page = PAGE.read_text()
    section = page[page.index("## Tables, DuckDB and export"):]
    return re.findall(r'^duckdb -c "(.+)"$', section.split("\n### ")[0], re.MULTILINE)


def query(sql: str) -> list[tuple[Any, ...]]:
    duckdb = pytest.importorskip("duckdb")
    rows: list[tuple[Any, ...]] = duckdb.sql(sql).fetchall()
    return rows


def test_the_documented_duckdb_queries_answer_from_the_run_folders(
        runs: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sqls = documented_queries()
    assert len(sqls) == 5
    monkeypatch.chdir(runs)
    per_round, per_eps, per_role, said, surveys = (query(sql) for sql in sqls)
    metrics = [read_metrics(f) for f in folders(runs)]
    assert per_round == [(r, pytest.approx(sum(m[r - 1]["mean"] for m in metrics) / 2), 2)
                         for r in (1, 2, 3)]
    assert per_eps == [(eps, r, pytest.approx(m[r - 1]["mean"]), 1)
                       for eps, m in zip((0.1, 0.3), metrics, strict=True) for r in (1, 2, 3)]
    lines = [json.loads(x) for f in folders(runs)
             for x in (f / "transcript.jsonl").read_text().splitlines()]
    assert sum(n for *_, n in per_role) == len(lines)
    assert {(r, role) for r, role, _ in per_role} == {(r, role) for r in (1, 2, 3)
                                                      for role in ("user", "assistant")}
    for number, opinion, replies in said:
        mine = [m["metadata"]["opinion"] for m in lines
                if m["role"] == "assistant" and m.get("round") == number]
        assert replies == len(mine) and opinion == pytest.approx(sum(mine) / len(mine))
    assert surveys == [(2, "Where?", 40, 0)]


def test_chunks_converted_as_they_spill_come_out_in_the_transcripts_order(
        tmp_path: Path) -> None:
    import random

    from agentplex.tracing.lowlevel import SortedSpool

    table = TranscriptTable(tmp_path / "t.parquet", row_group=6)
    spool = SortedSpool(tmp_path / "t.jsonl", chunk=7, on_spill=table.add_piece)
    keys = [(c, f"n{c % 5}", s) for c in range(40) for s in range(2)]
    random.Random(3).shuffle(keys)  # lines arrive out of order, as journals do
    for key in keys:
        content: Any = [{"type": "text", "text": f"{key}"}] if key[0] % 3 == 0 else f"{key}"
        spool.add(key, json.dumps({"clock": key[0], "name": key[1], "role": "assistant",
                                   "content": content, "metadata": {"s": key[2]}}))
    assert len(list(tmp_path.glob(".t.parquet.*.arrow"))) == len(keys) // 7  # converted
    spool.close(table.add, sourced=table.take_from)
    table.close()
    lines = [json.loads(x) for x in (tmp_path / "t.jsonl").read_text().splitlines()]
    assert [(x["clock"], x["name"]) for x in lines] == [(k[0], k[1]) for k in sorted(keys)]
    read = pq.ParquetFile(tmp_path / "t.parquet")
    assert read.metadata.num_row_groups == -(-len(keys) // 6)
    rows = read.read().to_pylist()
    assert [(r["clock"], r["name"], json.loads(r["metadata"])["s"]) for r in rows] == \
        sorted(keys)
    assert all(r["text"] == str(tuple(k)) for r, k in zip(rows, sorted(keys), strict=True))
    assert not list(tmp_path.glob(".t.parquet.*"))  # the pieces and the tmp file are gone


def test_a_spool_that_converted_nothing_hands_over_lines_even_when_asked_for_chunks(
        tmp_path: Path) -> None:
    from agentplex.tracing.lowlevel import SortedSpool

    table = TranscriptTable(tmp_path / "t.parquet", row_group=4)
    spool = SortedSpool(tmp_path / "t.jsonl", chunk=3)  # spills, converts nothing
    for c in (5, 1, 4, 2, 3, 0, 6):
        spool.add((c, "n", 0), json.dumps({"clock": c, "name": "n", "role": "user",
                                           "content": str(c)}))
    spool.close(table.add, sourced=table.take_from)
    table.close()
    assert [r["clock"] for r in pq.read_table(tmp_path / "t.parquet").to_pylist()] == \
        list(range(7))
