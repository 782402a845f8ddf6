"""``agentplex sweep``: a scenario over a grid of parameters for several seeds (``agentplex.sim``),
summarised across seeds."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from ._cluster import AllowOpt, BindOpt, HeadKeyOpt, KeysOpt, ShipCodeOpt, ShipFolderOpt

if TYPE_CHECKING:
    from ..sim import SummaryRow, Sweep

__all__ = ["sweep"]


def sweep(
    scenario: Annotated[str, typer.Argument(
        help="FILE.py:Class or module:Class (a Scenario subclass).")],
    seeds: Annotated[str, typer.Option(
        help="N: seeds 0..N-1; or a list with commas, like 3,7,11.")],
    grid: Annotated[list[str] | None, typer.Option(
        "--grid", help="key=v1,v2,...: the values of one parameter (JSON or strings); "
        "repeatable, the arms are every combination.")] = None,
    agents: Annotated[int, typer.Option("--agents", "-n", min=1, help="Agents.")] = 10,
    rounds: Annotated[int, typer.Option("--rounds", "-r", min=1, help="Rounds.")] = 3,
    set_: Annotated[list[str] | None, typer.Option(
        "--set", help="key=value for every arm (a JSON value or a string); repeatable.")
    ] = None,
    nodes: Annotated[int, typer.Option(
        min=0, help="Node processes each run starts on this machine (0: in its process).")
    ] = 0,
    address: Annotated[str | None, typer.Option(
        help="Place each run's agents on the cluster whose head listens here.")] = None,
    parallel: Annotated[int, typer.Option(
        "--parallel", "-p", min=1, help="Runs at once (each its own process).")] = 1,
    run_timeout: Annotated[float, typer.Option(
        min=1.0, help="Seconds a run may take; then it is stopped (status timeout).")
    ] = 3600.0,
    runs_dir: Annotated[Path, typer.Option(
        help="Where the sweep folder is written.")] = Path("runs"),
    name: Annotated[str | None, typer.Option(
        help="The sweep's id (default: time, scenario and a random suffix). Run the same "
        "command with the same --name again to finish a sweep: finished runs are skipped.")
    ] = None,
    show_round: Annotated[int | None, typer.Option(
        min=1, help="The round shown in the table (default: each arm's last).")] = None,
    recording: Annotated[bool, typer.Option(
        "--recording/--no-recording", help="Record each run's model answers "
        "(recording.jsonl, as agentplex run does) so that it can be replayed; off unless "
        "asked: a sweep's runs are many.")] = False,
    bind: BindOpt = None,
    ship_code: ShipCodeOpt = False,
    ship_folder: ShipFolderOpt = None,
    keys: KeysOpt = None,
    head_key: HeadKeyOpt = None,
    allow_key: AllowOpt = [],  # noqa: B006 - typer reads the default
) -> None:
    """Run a scenario for every arm (combination of --grid values) and seed, one
    `agentplex run` process per run, at most --parallel at once; write the sweep folder
    (sweep.json, runs/, summary.csv: mean and 95% Student-t interval across seeds per arm,
    round and metric) and print the summary. Exit code 1 if any run did not finish."""
    from ..sim import SimError, SweepOptions, run_sweep
    from ..sim.lowlevel import parse_grid, parse_seeds, parse_sets

    console = Console(emoji=False)  # 'file.py:X' is a scenario, not the ':x:' emoji
    err = Console(stderr=True, emoji=False)
    try:
        options = SweepOptions(
            scenario=scenario, grid=parse_grid(grid or []), seeds=parse_seeds(seeds),
            agents=agents, rounds=rounds, params=parse_sets(set_ or []), nodes=nodes,
            address=address, parallel=parallel, run_timeout=run_timeout, runs_dir=runs_dir,
            name=name, recording=recording, cluster_args=_cluster_args(
                bind, ship_code, ship_folder, keys, head_key, allow_key))

        async def main() -> Sweep:
            task = asyncio.current_task()
            assert task is not None
            asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
            return await run_sweep(options, log=lambda line: console.print(escape(line)))

        done = asyncio.run(main())
    except KeyboardInterrupt:
        err.print("[red]interrupted[/]: the running runs were stopped; run the same command "
                  "with the same --name to finish the sweep")
        raise typer.Exit(130) from None
    except asyncio.CancelledError:
        err.print("[red]terminated[/]: the running runs were stopped")
        raise typer.Exit(143) from None
    except SimError as exc:
        err.print(f"[red]the sweep failed[/]: {escape(str(exc))}")
        raise typer.Exit(1) from None
    folder = runs_dir / done.id
    summary_table(console, done, folder, show_round)
    failed = done.failed()
    for arm, entry in failed:
        console.print(f"[red]{escape(arm.name)} seed {entry.seed}: {entry.status}[/]"
                      + (f" ({entry.run})" if entry.run else "")
                      + (f": {escape(entry.error)}" if entry.error else ""))
    console.print(f"sweep folder: {folder}")
    console.print(f"summary: {folder / 'summary.csv'}")
    if failed:
        console.print(f"[red]{len(failed)} of {sum(len(a.runs) for a in done.arms)} runs "
                      "did not finish[/]; the same command with --name "
                      f"{escape(done.id)} runs them again")
        raise typer.Exit(1)


def summary_table(console: Console, done: Sweep, folder: Path, round_: int | None) -> None:
    """Per arm: its runs and, per metric, ``mean [ci_low, ci_high] n`` at one round."""
    from ..sim import summarize_sweep
    from ..sim.lowlevel import FINISHED

    rows = summarize_sweep(folder, done)
    metrics = list(dict.fromkeys(r.metric for r in rows))
    table = Table(title=f"sweep {done.id}: "
                  + (f"round {round_}" if round_ else "last round")
                  + ", mean [95% interval] n across seeds")
    table.add_column("arm")
    table.add_column("runs", justify="right")
    for metric in metrics:
        table.add_column(metric, justify="right")
    for arm in done.arms:
        ok = sum(r.status in FINISHED for r in arm.runs)
        runs = f"{ok}/{len(arm.runs)}"
        mine = [r for r in rows if r.arm == arm.name]
        shown = round_ if round_ is not None else max((r.round for r in mine), default=None)
        cells = {r.metric: _cell(r) for r in mine if r.round == shown}
        table.add_row(escape(arm.name), runs if ok == len(arm.runs) else f"[red]{runs}[/]",
                      *(cells.get(m, "-") for m in metrics))
    console.print(table)
    if any(r.n == 1 for r in rows):
        console.print("[dim]n=1: one seed gives no interval[/]")


def _cell(row: SummaryRow) -> str:
    if row.mean is None:
        return "-"
    if row.ci_low is None or row.ci_high is None:
        return f"{row.mean:.4g} (no interval) n={row.n}"
    return escape(f"{row.mean:.4g} [{row.ci_low:.4g}, {row.ci_high:.4g}] n={row.n}")


def _cluster_args(bind: str | None, ship_code: bool, ship_folder: Path | None,
                  keys: Path | None, head_key: Path | None, allow_key: list[Path]) -> list[str]:
    """The options each run's ``agentplex run`` gets to reach the cluster (paths made
    absolute: the runs start in their own folders)."""
    args = ["--bind", bind] if bind is not None else []
    if ship_code or ship_folder is not None:
        args.append("--ship-code")
    if ship_folder is not None:
        args += ["--ship-folder", str(ship_folder.resolve())]
    for flag, path in (("--keys", keys), ("--head-key", head_key),
                       *(("--allow-key", p) for p in allow_key)):
        if path is not None:
            args += [flag, str(path.resolve())]
    return args
