"""``agentplex runs export``: a finished run sent to a tracker (mlflow)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from ._runs import RunArg, RunsDir, _locate

__all__ = ["runs_export"]


def runs_export(
    run: RunArg,
    uri: Annotated[str | None, typer.Argument(
        help="The tracking URI (default: MLFLOW_TRACKING_URI, else ./mlruns).")] = None,
    mlflow: Annotated[bool, typer.Option(
        "--mlflow", help="Export to mlflow (needs the 'mlflow' extra).")] = False,
    experiment: Annotated[str | None, typer.Option(
        help="The mlflow experiment (default: the run's name).")] = None,
    runs_dir: RunsDir = Path("runs"),
) -> None:
    """Log a run's parameters, per-round metrics (step = round), totals and files (as
    artifacts) to a tracker: agentplex runs export RUN --mlflow [URI]."""
    from ..tracing import ExportFailed, export_mlflow

    if not mlflow:
        raise typer.BadParameter("say where to export: --mlflow [URI]")
    folder = _locate(run, runs_dir)
    try:
        exported = export_mlflow(folder, uri, experiment=experiment)
    except ExportFailed as exc:
        Console(stderr=True).print(f"[red]export failed[/]: {escape(str(exc))}")
        raise typer.Exit(1) from None
    Console().print(f"exported {folder.name} to mlflow: run {exported}")
