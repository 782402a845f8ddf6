"""``agentplex runs compare``: metrics per round of runs and sweep arms, side by side (in
the terminal, a PNG or an HTML page); and what ``agentplex runs show`` prints of a sweep."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

if TYPE_CHECKING:
    from ..sim import Series, SummaryRow

__all__ = ["compare", "show_sweep"]


def compare(
    targets: Annotated[list[str], typer.Argument(
        metavar="RUN_OR_SWEEP",
        help="Run or sweep folders: a path, an id (or unique part) or 'latest'.")],
    metric: Annotated[list[str] | None, typer.Option(
        "--metric", "-m", help="A metric to draw (repeatable; default: every numeric one).")
    ] = None,
    output: Annotated[Path | None, typer.Option(
        "--output", "-o", help="Write the charts to this PNG (matplotlib).")] = None,
    html_out: Annotated[Path | None, typer.Option(
        "--html", help="Write one self-contained HTML page (charts and tables).")] = None,
    runs_dir: Annotated[Path, typer.Option(
        help="The folder holding run and sweep folders.")] = Path("runs"),
) -> None:
    """Draw each metric per round for each run, or each arm of a sweep (its mean across
    seeds, with the 95 % interval as a band), and print the values per round."""
    from ..sim import (
        RunNotFound,
        SweepError,
        UnknownMetric,
        comparison_html,
        find_target,
        write_png,
    )
    from ..sim import compare as compare_folders

    try:
        folders = [find_target(t, runs_dir) for t in targets]
        comparison = compare_folders(folders, metric or [])
    except (RunNotFound, SweepError, UnknownMetric) as exc:
        raise typer.BadParameter(str(exc)) from None
    console = Console()
    for name, series in comparison.metrics.items():
        table = Table(title=name)
        table.add_column("round", justify="right")
        for s in series:
            table.add_column(escape(s.label), justify="right")
        index = [dict(zip(s.rounds, range(len(s.rounds)), strict=True)) for s in series]
        for r in comparison.rounds(name):
            table.add_row(str(r), *(_value(s, at.get(r)) for s, at in zip(series, index,
                                                                          strict=True)))
        console.print(table)
    if output is not None:
        console.print(f"wrote {write_png(comparison, output)}")
    if html_out is not None:
        html_out.write_text(comparison_html(comparison), encoding="utf-8")
        console.print(f"wrote {html_out}")


def _value(series: Series, k: int | None) -> str:
    if k is None:
        return "-"
    text = f"{series.values[k]:.6g}"
    if series.low is not None and series.high is not None:
        lo, hi = series.low[k], series.high[k]
        if lo is not None and hi is not None:
            text += f" [{lo:.4g}, {hi:.4g}]"
    return text


def show_sweep(console: Console, folder: Path) -> None:
    """A sweep: what it varied, its arms and their runs, and its summary per metric (a
    row per round, a column per arm: mean [95 % interval] n)."""
    from ..sim import read_sweep, sweep_summary
    from ..sim.lowlevel import FINISHED

    try:
        sweep = read_sweep(folder)
        summary = sweep_summary(folder, sweep)
    except ValueError as exc:  # SweepError, or a sweep.json that does not validate
        raise typer.BadParameter(str(exc)) from None
    console.print(f"[bold]sweep {escape(sweep.id)}[/] ({escape(sweep.status)}): "
                  f"{escape(sweep.scenario)}, {sweep.agents} agents, {sweep.rounds} rounds, "
                  f"seeds {', '.join(str(s) for s in sweep.seeds)}")
    for key, values in sweep.grid.items():
        console.print(f"  {escape(str(key))}: {', '.join(escape(str(v)) for v in values)}")
    arms = Table(title="arms")
    for col in ("arm", "params", "runs", "finished", "not finished"):
        arms.add_column(col)
    for arm in sweep.arms:
        done = sum(r.status in FINISHED for r in arm.runs)
        other = [f"{r.run or '-'} ({r.status}, seed {r.seed})" for r in arm.runs
                 if r.status not in FINISHED]
        params = ", ".join(f"{k}={v}" for k, v in arm.params.items())
        arms.add_row(escape(arm.name), escape(params), str(len(arm.runs)), str(done),
                     escape("; ".join(other)) or "-")
    console.print(arms)
    if not summary:
        console.print("no summary yet: no arm has a finished run with metrics")
        return
    source = "its summary.csv" if (folder / "summary.csv").is_file() else \
        "its finished runs (it has no summary.csv)"
    console.print(f"per round and arm: mean across seeds [95 % interval] n seeds; "
                  f"from {source}")
    names = list(dict.fromkeys(a.name for a in sweep.arms))
    names += [n for n in dict.fromkeys(r.arm for r in summary) if n not in names]
    for metric in dict.fromkeys(r.metric for r in summary):
        table = Table(title=f"{metric} per round")
        table.add_column("round", justify="right")
        for name in names:
            table.add_column(escape(name), justify="right")
        cells = {(r.round, r.arm): r for r in summary if r.metric == metric}
        for rnd in sorted({r for r, _ in cells}):
            table.add_row(str(rnd), *(_summary_cell(cells.get((rnd, n))) for n in names))
        console.print(table)


def _summary_cell(row: SummaryRow | None) -> str:
    if row is None or row.mean is None:
        return "-"
    text = f"{row.mean:.6g}"
    if row.ci_low is not None and row.ci_high is not None:
        text += f" [{row.ci_low:.4g}, {row.ci_high:.4g}]"
    return f"{text} n={row.n}"
