"""``agentplex`` command-line interface (typer)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from ._cluster import head, node, status
from ._keys import app as keys_app
from ._runs import runs_app, trace_app
from ._serve import serve

app = typer.Typer(help="agentplex: an async actor-based multi-agent runtime.",
                  no_args_is_help=True, add_completion=False)

DEFAULT_DEMO_MODEL = "transformers:default"

app.add_typer(runs_app, name="runs")
app.add_typer(trace_app, name="trace")
app.add_typer(keys_app, name="keys")
app.command()(head)
app.command()(node)
app.command()(status)
app.command()(serve)


def main() -> None:
    """Entry point of the ``agentplex`` script."""
    app()


@app.callback()
def _root() -> None:
    """agentplex: an async actor-based multi-agent runtime."""


@app.command()
def demo(
    agents: Annotated[int, typer.Option("--agents", "-n", min=2, help="Number of players.")] = 4,
    rounds: Annotated[int, typer.Option("--rounds", "-r", min=1, help="Rounds of the game.")] = 2,
    model: Annotated[str, typer.Option(
        "--model", "-m",
        help="Any init_chat_model string, e.g. 'openai:gpt-4o-mini'; 'scripted' needs no model.",
    )] = DEFAULT_DEMO_MODEL,
    discussion: Annotated[bool, typer.Option(
        help="End with one sentence from each player.")] = True,
    runs_dir: Annotated[Path, typer.Option(help="Where runs are written.")] = Path("runs"),
    seed: Annotated[int, typer.Option(help="Seed of the run.")] = 0,
    replay: Annotated[Path | None, typer.Option(
        help="A run folder whose recorded model answers replace the model.")] = None,
) -> None:
    """Run the main job: a multi-agent 'two thirds of the average' game."""
    asyncio.run(_demo(agents, rounds, model, discussion, runs_dir, seed, replay))


async def _demo(agents: int, rounds: int, model_spec: str, discussion: bool,
                runs_dir: Path, seed: int, replay: Path | None) -> None:
    from ..model import ChatModelBase, init_chat_model
    from ..orchestration import stream_printing_messages
    from ..runtime import Runtime
    from ..tracing import experiment
    from ._demo import GameResult, GameStats, make_players, play, scripted_players_model

    console = Console()
    console.print(f"[bold]agentplex demo[/]: {agents} players, {rounds} rounds, "
                  f"model [cyan]{model_spec}[/]")
    loading = time.perf_counter()
    if model_spec.startswith("transformers"):
        _quiet_transformers()
        console.print("loading the local model (the first run converts its GGUF file once, "
                      "about 20 s)")
    model: ChatModelBase = (scripted_players_model(seed) if model_spec == "scripted"
                            else init_chat_model(model_spec))
    console.print(f"model ready in {time.perf_counter() - loading:.1f}s")

    progress = Progress(TextColumn("{task.description}"), BarColumn(),
                        TextColumn("{task.completed}/{task.total} rounds"), TimeElapsedColumn(),
                        console=console)
    bar = progress.add_task("playing", total=rounds)
    stats = GameStats()
    results: list[GameResult] = []

    async def run() -> None:
        results.append(await play(players, rounds=rounds, discussion=discussion,
                                  on_round=lambda r: progress.update(bar, completed=r)))

    config = {"agents": agents, "rounds": rounds, "model": model_spec, "discussion": discussion}
    async with experiment("demo", seed=seed, config=config, runs_dir=runs_dir,
                          replay=replay) as record, Runtime():
        players = make_players(model, agents, stats, seed=seed)
        for player in players:
            player.set_console_output_enabled(False)
        with progress:
            async for msg, last in stream_printing_messages(players, run()):
                if last:
                    progress.console.print(f"[bold]{msg.name}[/]: {msg.get_text_content()}")
    _summary(console, results[0], agents, record.dir)


def _quiet_transformers() -> None:
    """Keep Transformers' own progress bars and warnings out of the transcript."""
    try:
        from transformers.utils import logging as hf_logging
    except ImportError:
        return
    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    hf_logging.set_verbosity_error()  # type: ignore[no-untyped-call]


def _summary(console: Console, result: object, agents: int, run_dir: Path) -> None:
    from ._demo import GameResult

    assert isinstance(result, GameResult)
    for r in result.rounds:
        winners = ", ".join(r["winners"])
        console.print(f"round {r['round']}: target {r['target']}, winners {winners}")
    s = result.stats
    table = Table(title="run summary")
    for column in ("agents", "messages", "model calls", "tokens in", "tokens out", "time (s)",
                   "tokens/s out"):
        table.add_column(column, justify="right")
    rate = s.output_tokens / result.seconds if result.seconds else 0.0
    table.add_row(str(agents), str(s.messages), str(s.model_calls), str(s.input_tokens),
                  str(s.output_tokens), f"{result.seconds:.1f}", f"{rate:.1f}")
    console.print(table)
    console.print(f"run folder: {run_dir}")
    console.print(f"trace: {run_dir / 'trace.jsonl'}")
