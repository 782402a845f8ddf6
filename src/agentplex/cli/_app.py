"""``agentplex`` command-line interface (typer)."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

app = typer.Typer(help="agentplex: an async actor-based multi-agent runtime.",
                  no_args_is_help=True, add_completion=False)

DEFAULT_DEMO_MODEL = "scripted"


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
) -> None:
    """Run the main job: a multi-agent 'two thirds of the average' game."""
    asyncio.run(_demo(agents, rounds, model, discussion, runs_dir))


async def _demo(agents: int, rounds: int, model_spec: str, discussion: bool,
                runs_dir: Path) -> None:
    from ..model import ChatModelBase, init_chat_model
    from ..orchestration import stream_printing_messages
    from ..runtime import Runtime
    from ..tracing import configure_local_tracing
    from ._game import GameResult, GameStats, make_players, play, scripted_players_model

    console = Console()
    run_id = time.strftime("demo-%Y%m%d-%H%M%S") + f"-{os.getpid()}"
    trace_path = runs_dir / run_id / "trace.jsonl"
    provider = configure_local_tracing(trace_path)
    console.print(f"[bold]agentplex demo[/]: {agents} players, {rounds} rounds, "
                  f"model [cyan]{model_spec}[/]")
    loading = time.perf_counter()
    model: ChatModelBase = (scripted_players_model() if model_spec == "scripted"
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

    async with Runtime():
        players = make_players(model, agents, stats)
        for player in players:
            player.set_console_output_enabled(False)
        with progress:
            async for msg, last in stream_printing_messages(players, run()):
                if last:
                    progress.console.print(f"[bold]{msg.name}[/]: {msg.get_text_content()}")
    provider.shutdown()
    _summary(console, results[0], agents, trace_path)


def _summary(console: Console, result: object, agents: int, trace_path: Path) -> None:
    from ._game import GameResult

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
    console.print(f"trace: {trace_path}")
