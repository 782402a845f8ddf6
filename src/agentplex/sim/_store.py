"""What a simulation run writes beside the experiment's files: ``metrics.parquet`` (one
row per round), ``surveys.parquet`` (one row per answer) and ``checkpoints/round-NNNNN/``
(``agents.jsonl``, one agent's state per line, and ``sim.json``)."""

from __future__ import annotations

import json
import os
import random
import shutil
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from ._errors import CheckpointError

__all__ = ["Checkpoint", "SurveyTables", "checkpoints", "read_metrics", "write_table"]

CHECKPOINTS = "checkpoints"
SURVEYS = "surveys"


def _pyarrow() -> Any:
    try:
        import pyarrow
        import pyarrow.parquet
    except ImportError as exc:  # pragma: no cover - a core dependency
        raise ImportError("agentplex.sim writes Parquet with pyarrow: pip install pyarrow"
                          ) from exc
    return pyarrow


def write_table(path: Path, rows: list[dict[str, Any]], columns: list[str]) -> None:
    """``rows`` as a Parquet file at ``path`` (atomically), columns in ``columns``' order
    then any other name in order of appearance."""
    pa = _pyarrow()
    names = list(columns)
    for row in rows:
        names.extend(k for k in row if k not in names)
    table = pa.table({n: _column(pa, [r.get(n) for r in rows]) for n in names}) if rows \
        else pa.table({n: pa.array([], pa.null()) for n in names})
    tmp = path.with_name(f".{path.name}.tmp")
    pa.parquet.write_table(table, tmp)
    os.replace(tmp, path)


def _column(pa: Any, values: list[Any]) -> Any:
    """A column of ``values``; mixed kinds (a number one round, a string the next) as
    their JSON text rather than a failed run."""
    try:
        return pa.array(values)
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError):
        return pa.array([None if v is None else v if isinstance(v, str)
                         else json.dumps(v, default=str) for v in values], pa.string())


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    """The rows of a run's ``metrics.parquet`` (none if it has none)."""
    path = run_dir / "metrics.parquet"
    if not path.exists():
        return []
    rows: list[dict[str, Any]] = _pyarrow().parquet.read_table(path).to_pylist()
    return rows


class SurveyTables:
    """Survey answers: one small Parquet file per survey while the run goes (a killed
    driver loses none it finished), gathered into ``surveys.parquet`` at the end."""

    COLUMNS = ("round", "agent", "question", "answer", "error")

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self.folder = run_dir / SURVEYS

    def add(self, number: int, index: int, rows: list[dict[str, Any]]) -> None:
        self.folder.mkdir(exist_ok=True)
        write_table(self.folder / f"round-{number:05d}-{index:03d}.parquet", rows,
                    list(self.COLUMNS))

    def adopt(self, parent: Path, until: int) -> None:
        """Take the answers of ``parent``'s surveys up to round ``until``."""
        pa = _pyarrow()
        done = parent / "surveys.parquet"
        if done.exists():
            rows = [r for r in pa.parquet.read_table(done).to_pylist() if r["round"] <= until]
            by: dict[int, list[dict[str, Any]]] = {}
            for r in rows:
                by.setdefault(int(r["round"]), []).append(r)
            for number, got in sorted(by.items()):
                self.add(number, 0, got)
            return
        for path in sorted((parent / SURVEYS).glob("round-*.parquet")):
            if int(path.name.split("-")[1]) <= until:
                self.folder.mkdir(exist_ok=True)
                shutil.copy(path, self.folder / path.name)

    def finish(self) -> None:
        """Gather the answers into ``surveys.parquet`` (if any survey ran)."""
        if not self.folder.is_dir():
            return
        pa = _pyarrow()
        parts = sorted(self.folder.glob("round-*.parquet"))
        if parts:
            tables = [pa.parquet.read_table(p) for p in parts]
            schema = pa.schema([(c, pa.int64() if c == "round" else pa.string())
                                for c in self.COLUMNS])
            merged = pa.concat_tables([t.select(list(self.COLUMNS)).cast(schema) for t in tables])
            tmp = self.run_dir / ".surveys.parquet.tmp"
            pa.parquet.write_table(merged, tmp)
            os.replace(tmp, self.run_dir / "surveys.parquet")
        shutil.rmtree(self.folder)


def _random_state() -> list[Any]:
    version, internal, gauss = random.getstate()
    return [version, list(internal), gauss]


class Checkpoint:
    """One round's checkpoint in a run folder."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.round = int(folder.name.rpartition("-")[2])

    def meta(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads((self.folder / "sim.json").read_text())
        return data

    def states(self) -> Iterator[tuple[str, Any]]:
        """``(agent name, state)`` in index order, read a line at a time."""
        with (self.folder / "agents.jsonl").open(encoding="utf-8") as f:
            for line in f:
                item = json.loads(line)
                yield item["name"], item["state"]

    @staticmethod
    async def write(run_dir: Path, number: int, meta: Callable[[], dict[str, Any]],
                    states: AsyncIterator[Iterable[tuple[str, Any]]]) -> Checkpoint:
        """Write round ``number``'s checkpoint: the agents' states, window after window as
        ``states`` yields them, then ``meta()`` (taken once the states are in, with the
        random state added); it appears whole or not at all."""
        root = run_dir / CHECKPOINTS
        final = root / f"round-{number:05d}"
        tmp = root / f".round-{number:05d}.tmp"
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
        with (tmp / "agents.jsonl").open("w", encoding="utf-8") as f:
            async for window in states:
                f.write("".join(json.dumps({"name": n, "state": s}, separators=(",", ":"))
                                + "\n" for n, s in window))
        (tmp / "sim.json").write_text(json.dumps({**meta(), "round": number,
                                                  "random": _random_state()}))
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        return Checkpoint(final)

    def restore_random(self) -> None:
        version, internal, gauss = self.meta()["random"]
        random.setstate((version, tuple(internal), gauss))


def checkpoints(run_dir: Path) -> list[Checkpoint]:
    """The finished checkpoints of a run, by round."""
    root = run_dir / CHECKPOINTS
    if not root.is_dir():
        return []
    found = [Checkpoint(p) for p in root.glob("round-*") if (p / "sim.json").exists()]
    return sorted(found, key=lambda c: c.round)


def checkpoint_at(run_dir: Path, number: int | None) -> Checkpoint:
    """Round ``number``'s checkpoint of a run (``None``: its latest)."""
    found = checkpoints(run_dir)
    if not found:
        raise CheckpointError(f"{run_dir.name} has no checkpoint (run it with "
                              "--checkpoint-every R)")
    if number is None:
        return found[-1]
    for c in found:
        if c.round == number:
            return c
    raise CheckpointError(f"{run_dir.name} has no checkpoint of round {number} (it has "
                          f"{', '.join(str(c.round) for c in found)})")
