"""Sweeps: every arm (one point of a parameter grid) of a scenario for every seed, each run
an ``agentplex run`` child process of its own (one crash never takes the others), and the
metrics summarised across seeds.

A sweep folder ``D/<sweep-id>/`` holds ``sweep.json`` (the definition, and each arm's
runs: seed, run id, status), ``runs/<run-id>/`` (ordinary run folders), ``logs/`` (each
child's output) and ``summary.csv`` (arm, round, metric, mean, ci_low, ci_high, n: a 95%
Student-t interval across seeds). Started again under the same name, a sweep runs only
what did not finish.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
import itertools
import json
import math
import os
import re
import signal
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

from pydantic import BaseModel

from ._errors import SweepError
from ._scenario import load_scenario, parse_sets
from ._stats import mean_ci
from ._store import read_metrics

__all__ = ["FINISHED", "SUMMARY_COLUMNS", "SummaryRow", "Sweep", "SweepArm", "SweepOptions",
           "SweepRun", "parse_grid", "parse_seeds", "read_sweep", "run_sweep",
           "summarize_sweep", "write_summary"]

FINISHED = ("completed", "budget")
"""Run statuses a restarted sweep does not run again (``budget``: stopped cleanly at its
limit, which a rerun would reach again)."""
SUMMARY_COLUMNS = ("arm", "round", "metric", "mean", "ci_low", "ci_high", "n")
STOP_GRACE = 15.0
"""Seconds a run has to stop after SIGTERM (timeout, Ctrl-C) before it is killed."""
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


class SweepRun(BaseModel):
    """One seed of one arm: its run id once known, and how it ended."""

    seed: int
    run: str | None = None
    status: str = "pending"
    """``pending``, ``running``, then the run's own status (``completed``, ``failed``,
    ``interrupted``, ``budget``), or ``timeout`` (stopped after ``--run-timeout``)."""
    error: str | None = None
    seconds: float | None = None


class SweepArm(BaseModel):
    """One point of the grid: its name (``eps=0.1 mu=0.5``), its parameters, its runs."""

    name: str
    params: dict[str, Any]
    runs: list[SweepRun]


class Sweep(BaseModel):
    """What ``sweep.json`` holds."""

    id: str
    scenario: str
    grid: dict[str, list[Any]]
    seeds: list[int]
    agents: int
    rounds: int
    params: dict[str, Any] = {}
    """The ``--set`` values every arm shares."""
    arms: list[SweepArm] = []
    status: str = "running"
    """``running``, ``completed`` (every run finished), ``failed`` (some did not) or
    ``interrupted``."""

    def definition(self) -> dict[str, Any]:
        """What must match for a restart to continue this sweep."""
        return self.model_dump(mode="json", include={"scenario", "grid", "seeds", "agents",
                                                     "rounds", "params"})

    def failed(self) -> list[tuple[SweepArm, SweepRun]]:
        """The runs that did not finish."""
        return [(a, r) for a in self.arms for r in a.runs if r.status not in FINISHED]


class SweepOptions(BaseModel):
    """Everything ``agentplex sweep`` takes."""

    scenario: str
    grid: dict[str, list[str]] = {}
    """Each parameter's values as typed (read as JSON when they are JSON)."""
    seeds: list[int] = [0]
    agents: int = 10
    rounds: int = 3
    params: dict[str, Any] = {}
    nodes: int = 0
    address: str | None = None
    parallel: int = 1
    run_timeout: float = 3600.0
    runs_dir: Path = Path("runs")
    name: str | None = None
    recording: bool = False
    """Whether each run records its model answers (``recording.jsonl``) so that it can be
    replayed; off unless asked (a sweep's runs are many, and each its own recording)."""
    cluster_args: list[str] = []
    """With ``address``: more options of each run's ``agentplex run`` that reach the
    cluster (``--ship-code``, ``--ship-folder``, ``--bind``, ``--keys``, ``--head-key``,
    ``--allow-key``), as the command line gives them."""


class SummaryRow(NamedTuple):
    """One line of ``summary.csv``."""

    arm: str
    round: int
    metric: str
    mean: float | None
    ci_low: float | None
    ci_high: float | None
    n: int


def parse_grid(items: Sequence[str]) -> dict[str, list[str]]:
    """``["eps=0.1,0.3", "mu=0.5"]`` as ``{"eps": ["0.1", "0.3"], "mu": ["0.5"]}``."""
    grid: dict[str, list[str]] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip()
        values = [v.strip() for v in raw.split(",")]
        if not sep or not key or not all(values):
            raise SweepError(f"--grid takes key=v1,v2,..., not {item!r}")
        if key in grid:
            raise SweepError(f"--grid names {key!r} twice")
        if len(set(values)) != len(values):
            raise SweepError(f"--grid {key} repeats a value: {raw!r}")
        grid[key] = values
    return grid


def parse_seeds(text: str) -> list[int]:
    """``"N"``: seeds 0 to N-1; ``"3,7,11"`` (a comma): those seeds."""
    try:
        if "," in text:
            seeds = [int(s) for s in text.split(",") if s.strip()]
            if seeds and len(set(seeds)) == len(seeds):
                return seeds
        elif int(text) >= 1:
            return list(range(int(text)))
    except ValueError:
        pass
    raise SweepError(f"--seeds takes a count N (seeds 0..N-1) or a list like 3,7,11 "
                     f"(no repeats), not {text!r}")


def _arms(grid: dict[str, list[str]]) -> list[tuple[str, dict[str, Any]]]:
    """The grid's points in order: (name, parameters)."""
    if not grid:
        return [("default", {})]
    keys = list(grid)
    return [(" ".join(f"{k}={v}" for k, v in zip(keys, point, strict=True)),
             parse_sets([f"{k}={v}" for k, v in zip(keys, point, strict=True)]))
            for point in itertools.product(*grid.values())]


def read_sweep(folder: Path) -> Sweep:
    """The ``sweep.json`` of a sweep folder."""
    path = folder / "sweep.json"
    if not path.is_file():
        raise SweepError(f"{folder} is not a sweep folder (no sweep.json)")
    return Sweep.model_validate_json(path.read_text())


def _write(folder: Path, sweep: Sweep) -> None:
    tmp = folder / ".sweep.json.tmp"
    tmp.write_text(sweep.model_dump_json(indent=2) + "\n")
    os.replace(tmp, folder / "sweep.json")


def _check_names(options: SweepOptions) -> None:
    """A grid or ``--set`` name the scenario's Params do not declare, or one given both
    ways, is refused before anything runs (every arm would fail the same way)."""
    both = sorted(set(options.grid) & set(options.params))
    if both:
        raise SweepError(f"{', '.join(both)}: given by --grid and --set; give it once")
    cls = load_scenario(options.scenario)
    fields = cls.Params.model_fields
    unknown = sorted((set(options.grid) | set(options.params)) - set(fields))
    if unknown and cls.Params.model_config.get("extra") != "allow":
        raise SweepError(f"{cls.__name__} has no parameter {', '.join(map(repr, unknown))} "
                         f"(known: {', '.join(fields) or 'none'})")


def _open(options: SweepOptions) -> tuple[Path, Sweep]:
    """The sweep's folder and record: a new one, or the one of the same name (which
    must define the same sweep)."""
    if options.name is not None and not _NAME.fullmatch(options.name):
        raise SweepError(f"--name takes letters, digits, '.', '_' and '-', not "
                         f"{options.name!r}")
    cls = load_scenario(options.scenario)
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    sweep_id = options.name or f"{stamp}-sweep-{cls.__name__.lower()}-{uuid.uuid4().hex[:6]}"
    arms = _arms(options.grid)
    fresh = Sweep(id=sweep_id, scenario=options.scenario,
                  grid={k: [parse_sets([f"{k}={v}"])[k] for v in values]
                        for k, values in options.grid.items()},
                  seeds=options.seeds, agents=options.agents, rounds=options.rounds,
                  params=options.params,
                  arms=[SweepArm(name=n, params=p, runs=[SweepRun(seed=s)
                                                         for s in options.seeds])
                        for n, p in arms])
    folder = options.runs_dir / sweep_id
    if (folder / "sweep.json").exists():
        old = read_sweep(folder)
        if old.definition() != fresh.definition():
            raise SweepError(f"the sweep {sweep_id!r} in {options.runs_dir} was started with "
                             f"another definition ({json.dumps(old.definition())}); "
                             "give another --name")
        old.status = "running"
        return folder, old
    if folder.exists():
        raise SweepError(f"{folder} exists and is not a sweep folder")
    (folder / "runs").mkdir(parents=True)
    return folder, fresh


def _manifests(runs: Path) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for path in runs.glob("*/manifest.json"):
        try:
            out[path.parent.name] = json.loads(path.read_text())
        except (OSError, ValueError):
            continue  # being written
    return out


def _match(sweep: Sweep, arm: SweepArm, seed: int, manifests: dict[str, dict[str, Any]],
           taken: set[str], since: float | None = None) -> tuple[str, dict[str, Any]] | None:
    """The newest run folder that is this arm's seed (by its manifest's config), that no
    other entry claims, and (``since``) that started after that time."""
    want = json.loads(json.dumps({**sweep.params, **arm.params}))
    best: tuple[str, dict[str, Any]] | None = None
    for run_id, m in manifests.items():
        config = m.get("config") or {}
        if (run_id in taken or config.get("seed") != seed or config.get("params") != want
                or config.get("scenario") != sweep.scenario
                or config.get("agents") != sweep.agents or config.get("rounds") != sweep.rounds):
            continue
        started = _timestamp(m.get("started_at"))
        if since is not None and started < since:
            continue
        if best is None or started >= _timestamp(best[1].get("started_at")):
            best = (run_id, m)
    return best


def _timestamp(text: Any) -> float:
    try:
        return datetime.fromisoformat(str(text)).timestamp()
    except ValueError:
        return 0.0


def _child_command(sweep: Sweep, options: SweepOptions, arm: SweepArm, seed: int,
                   runs: Path) -> list[str]:
    cmd = [sys.executable, "-m", "agentplex", "run", sweep.scenario,
           "--agents", str(sweep.agents), "--rounds", str(sweep.rounds), "--seed", str(seed),
           "--runs-dir", str(runs)]
    for key, value in {**sweep.params, **arm.params}.items():
        cmd += ["--set", f"{key}={json.dumps(value)}"]
    if not options.recording:
        cmd.append("--no-recording")
    if options.address is not None:
        cmd += ["--address", options.address, *options.cluster_args]
    elif options.nodes:
        cmd += ["--nodes", str(options.nodes)]
    return cmd


def _last_line(log: Path) -> str | None:
    """The last line a child wrote (its error, when it failed)."""
    try:
        with log.open("rb") as f:
            f.seek(max(0, log.stat().st_size - 8192))
            lines = [ln.strip() for ln in f.read().decode("utf-8", "replace").splitlines()]
    except OSError:
        return None
    lines = [ln for ln in lines if ln]
    return lines[-1][:500] if lines else None


async def _stop(proc: asyncio.subprocess.Process) -> None:
    """SIGTERM (the run stops its agents and nodes and writes its manifest), then, after
    :data:`STOP_GRACE` seconds, SIGKILL to its whole process group."""
    if proc.returncode is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        await asyncio.wait_for(proc.wait(), STOP_GRACE)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        await proc.wait()


Report = Callable[[str], None]


async def run_sweep(options: SweepOptions, *, log: Report = lambda _: None) -> Sweep:
    """Run ``options``' sweep (see ``agentplex sweep``): at most ``options.parallel`` runs
    at once, each an ``agentplex run`` child process stopped after ``run_timeout``
    seconds; runs finished by an earlier start of the same sweep (same ``name``) are not
    run again. Returns the record also written to ``sweep.json``; ``summary.csv`` is
    written at the end (also when interrupted)."""
    if options.parallel < 1:
        raise SweepError(f"--parallel is at least 1, not {options.parallel}")
    if options.nodes and options.address is not None:
        raise SweepError("--nodes starts nodes here; --address joins a cluster: give one")
    if options.cluster_args and options.address is None:
        raise SweepError(f"{options.cluster_args[0]} goes with --address (a running "
                         "cluster)")
    _check_names(options)
    folder, sweep = _open(options)
    runs, logs = folder / "runs", folder / "logs"
    logs.mkdir(exist_ok=True)
    manifests = _manifests(runs)
    taken = {r.run for a in sweep.arms for r in a.runs if r.run}
    todo: list[tuple[int, SweepArm, SweepRun]] = []
    for arm, entry in ((a, a.runs[k]) for k in range(len(sweep.seeds)) for a in sweep.arms):
        known = manifests.get(entry.run or "")
        if known is not None and known.get("status") in FINISHED:
            entry.status = str(known["status"])
            log(f"{arm.name} seed {entry.seed}: {entry.run} already {entry.status}")
            continue
        # a run the last start did not hear of (it was killed while the run went on)
        found = _match(sweep, arm, entry.seed, manifests, taken - {entry.run or ""})
        if found is not None and found[1].get("status") in FINISHED:
            taken.add(found[0])
            entry.run, entry.status, entry.error = found[0], str(found[1]["status"]), None
            log(f"{arm.name} seed {entry.seed}: {entry.run} already {entry.status}")
            continue
        todo.append((sweep.arms.index(arm), arm, entry))
    _write(folder, sweep)
    log(f"sweep {sweep.id}: {len(sweep.arms)} arm(s) x {len(sweep.seeds)} seed(s); "
        f"{len(todo)} run(s) to go, {options.parallel} at once, in {folder}")
    limit = asyncio.Semaphore(options.parallel)

    async def one(index: int, arm: SweepArm, entry: SweepRun) -> None:
        async with limit:
            try:
                await _run_one(options, sweep, folder, index, arm, entry, taken, log)
            except OSError as exc:  # the child could not start: this run fails, not all
                entry.status, entry.error = "failed", f"{type(exc).__name__}: {exc}"
                log(f"{arm.name} seed {entry.seed}: failed: {entry.error}")

    try:
        async with asyncio.TaskGroup() as group:
            for index, arm, entry in todo:
                group.create_task(one(index, arm, entry))
        sweep.status = "failed" if sweep.failed() else "completed"
    except asyncio.CancelledError:
        sweep.status = "interrupted"
        raise
    finally:
        _write(folder, sweep)
        write_summary(folder, summarize_sweep(folder, sweep))
    return sweep


async def _run_one(options: SweepOptions, sweep: Sweep, folder: Path, index: int,
                   arm: SweepArm, entry: SweepRun, taken: set[str], log: Report) -> None:
    runs = folder / "runs"
    entry.status, entry.error, entry.run = "running", None, None
    _write(folder, sweep)
    out = folder / "logs" / f"arm-{index}-seed-{entry.seed}.log"
    began = time.time()
    timed_out = False
    with out.open("ab") as sink:
        proc = await asyncio.create_subprocess_exec(
            *_child_command(sweep, options, arm, entry.seed, runs),
            stdin=asyncio.subprocess.DEVNULL, stdout=sink, stderr=asyncio.subprocess.STDOUT,
            env={**os.environ, "COLUMNS": "1000"},  # one error, one line
            start_new_session=True)  # a timeout stops its group; Ctrl-C reaches us only
        try:
            await asyncio.wait_for(proc.wait(), options.run_timeout)
        except TimeoutError:
            timed_out = True
            await _stop(proc)
        except asyncio.CancelledError:
            await _stop(proc)
            _settle(sweep, arm, entry, runs, taken, began, out, "interrupted", proc.returncode)
            raise
    _settle(sweep, arm, entry, runs, taken, began, out, "timeout" if timed_out else None,
            proc.returncode)
    _write(folder, sweep)
    log(f"{arm.name} seed {entry.seed}: {entry.status}"
        + (f" ({entry.run})" if entry.run else "") + (f": {entry.error}" if entry.error else ""))


def _settle(sweep: Sweep, arm: SweepArm, entry: SweepRun, runs: Path, taken: set[str],
            began: float, out: Path, forced: str | None, code: int | None) -> None:
    """Fill ``entry`` from the run folder its child left (if any) and its exit code."""
    found = _match(sweep, arm, entry.seed, _manifests(runs), taken, since=began - 1.0)
    status = str(found[1].get("status")) if found is not None else None
    if found is not None:
        entry.run = found[0]
        taken.add(found[0])
    entry.seconds = round(time.time() - began, 3)
    if forced is not None:
        entry.status = forced
    elif code != 0:
        entry.status = status if status in ("failed", "interrupted") else "failed"
    else:
        entry.status = status or "failed"
    if entry.status not in FINISHED:
        error = found[1].get("error") if found is not None else None
        entry.error = str(error) if error else (
            f"no answer in {entry.seconds:.0f}s (--run-timeout)" if forced == "timeout"
            else _last_line(out) or f"exit code {code}")


def summarize_sweep(folder: Path, sweep: Sweep | None = None,
                    level: float = 0.95) -> list[SummaryRow]:
    """Per arm, round and metric: the mean across the arm's finished runs and its
    Student-t interval (:func:`~agentplex.sim.mean_ci`). Numeric metrics only (booleans
    count as 0 and 1); a run that failed adds nothing."""
    sweep = sweep or read_sweep(folder)
    rows: list[SummaryRow] = []
    for arm in sweep.arms:
        values: dict[tuple[int, str], list[float]] = {}
        for entry in arm.runs:
            if entry.status not in FINISHED or not entry.run:
                continue
            for row in read_metrics(folder / "runs" / entry.run):
                for name, value in row.items():
                    if name == "round" or not isinstance(value, int | float) \
                            or not math.isfinite(value):
                        continue
                    values.setdefault((int(row["round"]), name), []).append(float(value))
        order = {name: i for i, name in enumerate(dict.fromkeys(m for _, m in values))}
        for (number, name), got in sorted(values.items(),
                                          key=lambda kv: (kv[0][0], order[kv[0][1]])):
            ci = mean_ci(got, level)
            rows.append(SummaryRow(arm.name, number, name, ci.mean, ci.low, ci.high, ci.n))
    return rows


def write_summary(folder: Path, rows: Sequence[SummaryRow]) -> None:
    """``summary.csv`` (atomically); an empty cell where there is no interval (n = 1)."""
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(SUMMARY_COLUMNS)
    for row in rows:
        writer.writerow(["" if v is None else repr(v) if isinstance(v, float) else v
                         for v in row])
    tmp = folder / ".summary.csv.tmp"
    tmp.write_text(text.getvalue())
    os.replace(tmp, folder / "summary.csv")
