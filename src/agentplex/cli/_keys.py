"""``agentplex keys ...``: CurveZMQ key pairs for the bus.

Mounted as ``agentplex keys``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..bus import generate_keys, load_public_key

__all__ = ["app", "generate"]

app = typer.Typer(help="CurveZMQ key pairs for the ZeroMQ bus.", no_args_is_help=True)


@app.command()
def generate(
    directory: Annotated[Path, typer.Argument(help="Folder for the key files.")] = Path("."),
    name: Annotated[str, typer.Option(help="Base name of the key files.")] = "agentplex",
) -> None:
    """Write NAME.key (public, share it) and NAME.key_secret (private, keep it)."""
    public, secret = generate_keys(directory, name)
    typer.echo(f"public key:  {public}  ({load_public_key(public)})")
    typer.echo(f"secret key:  {secret}  (readable by you only)")
    typer.echo("or set AGENTPLEX_PUBLIC_KEY / AGENTPLEX_SECRET_KEY in the environment")


@app.command()
def show(path: Annotated[Path, typer.Argument(help="A .key or .key_secret file.")]) -> None:
    """Print the public key held in PATH (what goes on other nodes' allow-lists)."""
    typer.echo(load_public_key(path))
