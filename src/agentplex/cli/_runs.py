"""``agentplex runs ...`` and ``agentplex trace ...``: looking at finished runs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table
from rich.tree import Tree

from ..tracing import (
    SpanNode,
    find_run,
    list_runs,
    load_spans,
    render_html,
    select_runs,
    span_tree,
)

runs_app = typer.Typer(help="List and inspect experiment runs.", no_args_is_help=True)
trace_app = typer.Typer(help="Look at a run's trace.", no_args_is_help=True)

RunsDir = Annotated[Path, typer.Option(help="The folder holding run folders.")]
RunArg = Annotated[str, typer.Argument(help="A run id (or unique part), a path, or 'latest'.")]


def _locate(run: str, runs_dir: Path) -> Path:
    try:
        return find_run(run, runs_dir)
    except (FileNotFoundError, LookupError) as exc:
        raise typer.BadParameter(str(exc)) from None


@runs_app.command("list")
def runs_list(
    runs_dir: RunsDir = Path("runs"),
    name: Annotated[str | None, typer.Option(
        help="Only runs of this name (a shell pattern: 'opinion*').")] = None,
    status: Annotated[list[str] | None, typer.Option(
        help="Only runs with this status (completed, failed, interrupted, budget, "
        "running); repeatable.")] = None,
    param: Annotated[list[str] | None, typer.Option(
        help="KEY=VALUE: only runs whose parameter (--set) or setting (agents, rounds, "
        "seed...) has this value; repeatable.")] = None,
    plain: Annotated[bool, typer.Option(
        help="Tab-separated lines with a header, as when the output is not a terminal.")
    ] = False,
) -> None:
    """One line per run: id, name, status (with the agents restarted after their node
    died, if any), start, duration, model calls, tokens, timeouts, errors and, for a run
    of a sweep in RUNS_DIR, the sweep's id. Run ids are printed whole; `runs show` takes
    them, a sweep's runs too."""
    wanted: dict[str, str] = {}
    for item in param or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"--param takes KEY=VALUE, not {item!r}")
        wanted[key] = value
    runs = select_runs(list_runs(runs_dir), name=name, status=status or (), params=wanted)
    columns = ("run", "name", "status", "started", "seconds", "calls", "tokens in",
               "tokens out", "timeouts", "errors", "sweep")
    rows = []
    for m in runs:
        t = m.get("totals", {})
        shown = str(m.get("status", "-"))
        restarted = int((m.get("incidents") or {}).get("restarts") or 0)
        if restarted:  # agents started again after their node died: rolled back
            shown = f"{shown} ({restarted:,} restarted)"
        rows.append((m["run_id"], str(m.get("name", "")), shown,
                     (m.get("started_at") or "")[:19], str(m.get("duration_s", "") or ""),
                     str(t.get("model_calls", 0)), str(t.get("input_tokens", 0)),
                     str(t.get("output_tokens", 0)), str(m.get("timeouts", "-")),
                     str(m.get("errors", "-")), str(m.get("_sweep") or "")))
    console = Console()
    if plain or not console.is_terminal:
        print("\t".join(columns))
        for row in rows:
            print("\t".join(row))
        return
    table = Table(title=f"runs in {runs_dir}")
    widest = max((len(r[0]) for r in rows), default=3)
    for col in columns:  # the id never shrinks: other columns wrap first
        if col == "run":
            table.add_column(col, no_wrap=True, min_width=widest)
        else:
            table.add_column(col)
    for row in rows:
        color = {"completed": "green", "failed": "red", "interrupted": "yellow",
                 "budget": "yellow"}.get(row[2].split(" (")[0])
        if color == "green" and "restarted" in row[2]:
            color = "yellow"
        cells = list(row)
        cells[2] = f"[{color}]{row[2]}[/]" if color else row[2]
        table.add_row(*cells)
    console.print(table)


@runs_app.command("show")
def runs_show(run: Annotated[str, typer.Argument(
        help="A run or sweep: id (or unique part), path, or 'latest'.")],
        runs_dir: RunsDir = Path("runs")) -> None:
    """The manifest of a run, where its files are and its metrics per round; of a sweep,
    its arms and its summary per round."""
    from ..sim import RunNotFound, find_target, is_sweep
    from ._compare import show_sweep

    try:
        folder = find_target(run, runs_dir)
    except RunNotFound as exc:
        raise typer.BadParameter(str(exc)) from None
    console = Console()
    if is_sweep(folder):
        show_sweep(console, folder)
        return
    console.print_json(json.dumps(json.loads((folder / "manifest.json").read_text())))
    for name in ("trace.jsonl", "transcript.jsonl", "transcript.parquet", "recording.jsonl",
                 "metrics.parquet", "surveys.parquet"):
        if (folder / name).exists():
            console.print(f"{name}: {folder / name}")
    _metrics_table(console, folder)


def _metrics_table(console: Console, folder: Path) -> None:
    """A simulation run's metrics, one row per round."""
    from ..sim import checkpoints, read_metrics

    rows = read_metrics(folder)
    if rows:
        table = Table(title="metrics per round")
        columns = list(dict.fromkeys(k for row in rows for k in row))
        for col in columns:
            table.add_column(col, justify="right")
        for row in rows:
            table.add_row(*(_cell(row.get(c)) for c in columns))
        console.print(table)
    saved = checkpoints(folder)
    if saved:
        console.print(f"checkpoints: rounds {', '.join(str(c.round) for c in saved)}")


def _cell(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return "" if value is None else str(value)


def _label(node: SpanNode) -> str:
    text = f"{node.span['name']} [dim]{node.duration_ms:.1f} ms[/]"
    tokens = node.tokens
    if tokens is not None:
        text += f" [cyan]{tokens[0]}→{tokens[1]} tokens[/]"
    if node.span.get("status") == "ERROR":
        text += " [red]error[/]"
    return text


@trace_app.command("show")
def trace_show(run: RunArg, runs_dir: RunsDir = Path("runs")) -> None:
    """Draw the run's span tree with durations and tokens."""
    folder = _locate(run, runs_dir)
    spans = load_spans(folder)
    tree = Tree(f"[bold]{folder.name}[/] ({len(spans)} spans)")

    def add(branch: Tree, node: SpanNode) -> None:
        sub = branch.add(_label(node))
        for child in node.children:
            add(sub, child)

    for root in span_tree(spans):
        add(tree, root)
    Console().print(tree)


@trace_app.command("html")
def trace_html(
    run: RunArg,
    runs_dir: RunsDir = Path("runs"),
    output: Annotated[Path | None, typer.Option("--output", "-o",
                                                help="Default: trace.html in the run.")] = None,
) -> None:
    """Write one self-contained HTML page: the run summarised per round, node, agent class
    and model, and a bounded sample of span trees (failed, slowest, seeded random)."""
    folder = _locate(run, runs_dir)
    target = output or folder / "trace.html"
    target.write_text(render_html(folder), encoding="utf-8")
    Console().print(f"wrote {target}")
