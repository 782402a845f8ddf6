"""``agentplex`` command-line interface (typer)."""

from __future__ import annotations

import typer

from ._cluster import head, node, status
from ._compare import compare
from ._demo import demo
from ._export import runs_export
from ._keys import app as keys_app
from ._run import run
from ._runs import runs_app, trace_app
from ._serve import serve
from ._sweep import sweep

app = typer.Typer(help="agentplex: an async actor-based multi-agent runtime.",
                  no_args_is_help=True, add_completion=False)

app.add_typer(runs_app, name="runs")
runs_app.command("export")(runs_export)
runs_app.command("compare")(compare)
app.add_typer(trace_app, name="trace")
app.add_typer(keys_app, name="keys")
app.command()(head)
app.command()(node)
app.command()(status)
app.command()(serve)
app.command()(run)
app.command()(sweep)
app.command()(demo)


def main() -> None:
    """Entry point of the ``agentplex`` script."""
    app()


@app.callback()
def _root() -> None:
    """agentplex: an async actor-based multi-agent runtime."""
