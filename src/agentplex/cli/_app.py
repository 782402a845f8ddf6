"""``agentplex`` command-line interface (typer)."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from ._cluster import AllowOpt, HeadKeyOpt, KeysOpt, head, node, security, status
from ._compare import compare
from ._export import runs_export
from ._keys import app as keys_app
from ._run import run
from ._runs import runs_app, trace_app
from ._serve import serve
from ._sweep import sweep

if TYPE_CHECKING:
    from ..sim import RunResult
    from ..sim.scenarios._crowd import DemoOptions

app = typer.Typer(help="agentplex: an async actor-based multi-agent runtime.",
                  no_args_is_help=True, add_completion=False)

DEFAULT_DEMO_MODEL = "transformers:default"

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
        help="End with one sentence from some players (see --speakers).")] = True,
    speakers: Annotated[int | None, typer.Option(
        min=0, help="Players who speak at the end, all at once (default: up to 8).")] = None,
    nodes: Annotated[int, typer.Option(
        min=0, help="Node processes to start on this machine (0: play in this process).")] = 0,
    address: Annotated[str | None, typer.Option(
        help="Join the cluster whose head listens here instead of starting nodes.")] = None,
    replicas: Annotated[int, typer.Option(
        min=1, help="Model actors serving the players (with --nodes or --address).")] = 1,
    rate: Annotated[float | None, typer.Option(
        min=0.001, help="Requests per second allowed to the model, shared by all players.")
    ] = None,
    sample: Annotated[float | None, typer.Option(
        min=0.0, max=1.0,
        help="Share of traces kept (default: all up to 1,000 players, then 1,000 / N).")
    ] = None,
    timeout: Annotated[float, typer.Option(
        min=1.0, help="Seconds a player may take to answer a round.")] = 600.0,
    runs_dir: Annotated[Path, typer.Option(help="Where runs are written.")] = Path("runs"),
    seed: Annotated[int, typer.Option(help="Seed of the run.")] = 0,
    replay: Annotated[Path | None, typer.Option(
        help="A run folder whose recorded model answers replace the model.")] = None,
    option: Annotated[list[str] | None, typer.Option(
        "--option", "-o", help="KEY=VALUE for the model (a JSON value or a string), e.g. "
        "-o max_batch_size=256 -o temperature=0.7; repeatable.")] = None,
    keys: KeysOpt = None,
    head_key: HeadKeyOpt = None,
    allow_key: AllowOpt = [],  # noqa: B006 - typer reads the default
) -> None:
    """Run the main job: a multi-agent 'two thirds of the average' game.

    By default the players live in this process. With --nodes K (or --address) they are
    placed in batches on node processes and asked each round with one fan-out. To join a
    cluster with CURVE keys, give --keys, --head-key and the nodes' keys (--allow-key: the
    players on them answer this process directly).
    """
    from ..bus import SpawnRefused
    from ..cluster import NodeFailed, Unschedulable
    from ..runtime import ActorError
    from ..sim import SimError
    from ..sim.scenarios._crowd import DemoOptions
    from ._serve import parse_options

    options = DemoOptions(
        agents=agents, rounds=rounds, model=model, nodes=nodes, address=address,
        replicas=replicas, rate=rate, timeout=timeout, runs_dir=runs_dir, seed=seed,
        replay=replay, speakers=0 if not discussion else speakers,
        sample=sample if sample is not None else min(1.0, 1000 / agents),
        model_options=_model_defaults(model, parse_options(option or [])))
    try:
        if address is None and (keys or head_key or allow_key):
            raise typer.BadParameter("--keys, --head-key and --allow-key join a cluster: "
                                     "give them with --address")
        bus_options = security(keys, head_key, allow_key) if address is not None else {}
        asyncio.run(_demo(options) if nodes == 0 and address is None
                    else _demo_across_nodes(options, bus_options))
    except KeyboardInterrupt:
        Console(stderr=True).print("[red]interrupted[/]: node processes stopped")
        raise typer.Exit(130) from None
    except asyncio.CancelledError:  # SIGTERM
        Console(stderr=True).print("[red]terminated[/]: node processes stopped")
        raise typer.Exit(143) from None
    except (ActorError, SimError, NodeFailed, Unschedulable, SpawnRefused) as exc:
        Console(stderr=True).print(f"[red]the demo failed[/]: {escape(str(exc))}")
        raise typer.Exit(1) from None


def _model_defaults(spec: str, options: dict[str, Any]) -> dict[str, Any]:
    """The local model's settings for a game, unless given: a round is one burst of
    requests whose prompts share most of their tokens, so prompts join the running batch
    whole, as a group (not one chunk a step); the prefix cache keeps blocks of 4 tokens,
    so the players' shared prompt is reused up to its last token, not its last 32-token
    block; 128 rows decode at once on the CPU (a 1,000-player round took 12% less CPU
    than with 64), 256 on a GPU."""
    if not spec.startswith("transformers"):
        return options
    out = {"prefill_chunk": 4096, "prefix_block": 4, **options}
    if "max_batch_size" not in out:
        import torch

        gpu = str(out.get("device", "")) != "cpu" and torch.cuda.is_available()
        out["max_batch_size"] = 256 if gpu else 128
    return out


def _load_model(console: Console, spec: str, seed: int, options: dict[str, Any]) -> object:
    from ..sim.scenarios._game import scripted_players_model
    from ._serve import load_chat_model, quiet_transformers

    loading = time.perf_counter()
    if spec.startswith("transformers"):
        quiet_transformers()
        console.print("loading the local model (the first run converts its GGUF file once, "
                      "about 20 s)")
    model = (scripted_players_model(seed) if spec == "scripted"
             else load_chat_model(spec, **options))
    console.print(f"model ready in {time.perf_counter() - loading:.1f}s")
    return model


async def _demo(o: DemoOptions) -> None:
    from ..model import ChatModelBase
    from ..orchestration import stream_printing_messages
    from ..runtime import Runtime
    from ..sim.scenarios._game import GameResult, GameStats, make_players, play
    from ..tracing import experiment

    console = Console()
    console.print(f"[bold]agentplex demo[/]: {o.agents} players, {o.rounds} "
                  f"round{'s' * (o.rounds > 1)}, model [cyan]{o.model}[/]")
    model = _load_model(console, o.model, o.seed, o.model_options)
    assert isinstance(model, ChatModelBase)
    if o.rate:
        from ..model.wrappers import RateLimitedModel, RateLimiter

        model = RateLimitedModel(model, RateLimiter(o.rate))

    progress = Progress(TextColumn("{task.description}"), BarColumn(),
                        TextColumn("{task.completed}/{task.total} rounds"), TimeElapsedColumn(),
                        console=console)
    bar = progress.add_task("playing", total=o.rounds)
    stats = GameStats()
    results: list[GameResult] = []

    async def run() -> None:
        results.append(await play(players, rounds=o.rounds, speakers=o.speakers, seed=o.seed,
                                  on_round=lambda r: progress.update(bar, completed=r)))

    async with experiment("demo", seed=o.seed, config=o.config(), runs_dir=o.runs_dir,
                          replay=o.replay, sampling=o.sample) as record, Runtime():
        players = make_players(model, o.agents, stats, seed=o.seed)
        for player in players:
            player.set_console_output_enabled(False)
            player.timeout = o.timeout  # a round's answers, not the runtime's default call
        with progress:
            async for msg, last in stream_printing_messages(players, run()):
                if last:
                    progress.console.print(
                        f"[bold]{msg.name}[/]: {escape(msg.get_text_content() or '')}")
    _summary(console, results[0], o.agents, record.dir)
    _engine_summary(console, model)


async def _demo_across_nodes(o: DemoOptions, bus_options: dict[str, Any]) -> None:
    """The game across nodes: a run of the guessing scenario (``agentplex.sim``)."""
    import signal

    from ..sim import RunOptions, run_scenario
    from ..sim.scenarios._game import DEFAULT_SPEAKERS

    console = Console()
    where = o.address or f"{o.nodes} node processes on this machine"
    console.print(f"[bold]agentplex demo[/]: {o.agents:,} players on {where}, {o.rounds} "
                  f"round{'s' * (o.rounds > 1)}, model [cyan]{o.model}[/]"
                  + (f" ({o.replicas} replica{'s' * (o.replicas > 1)})"
                     if o.model != "scripted" else ""))
    task = asyncio.current_task()
    assert task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    options = RunOptions(
        scenario=GUESSING, name="demo", agents=o.agents, rounds=o.rounds, seed=o.seed,
        nodes=o.nodes, address=o.address, timeout=o.timeout, sampling=o.sample,
        runs_dir=o.runs_dir, replay=o.replay,
        params={"model": o.model, "replicas": o.replicas, "rate": o.rate,
                "options": o.model_options,
                "speakers": DEFAULT_SPEAKERS if o.speakers is None else o.speakers})
    if o.model != "scripted":
        console.print(f"placing {o.replicas} model replica(s) of {o.model}")
    result = await run_scenario(
        options, bus_options=bus_options, log=lambda line: console.print(escape(line)),
        on_round=lambda row, took: console.print(
            f"round {row['round']}: {row['answered']:,}/{o.agents:,} answered in "
            f"{took:.2f}s; target {row['target']}"))
    _crowd_summary(console, result, o)


GUESSING = "agentplex.sim.scenarios.guessing:Guessing"
"""The game as a scenario: what ``agentplex demo --nodes`` runs."""


def _summary(console: Console, result: object, agents: int, run_dir: Path) -> None:
    from ..sim.scenarios._game import GameResult

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


def _engine_summary(console: Console, model: object) -> None:
    """Where a local model's time went: prompts, decode steps, choosing tokens."""
    counts = getattr(getattr(model, "engine", None), "counters", None)
    if counts is None or not getattr(counts, "steps", 0):
        return
    decode = counts.forward_seconds - counts.prefill_seconds
    console.print(f"local model: prefill {counts.prefill_seconds:.1f}s "
                  f"({counts.prefill_tokens:,} prompt tokens), decode {decode:.1f}s "
                  f"({counts.steps:,} forward passes, up to {counts.max_rows_seen} rows; "
                  f"{counts.chunks:,} prompt chunks), "
                  f"choosing tokens {counts.select_seconds:.1f}s")


def rate_text(per_second: float) -> str:
    """A rate for the tables: whole numbers from 10 on, two digits below (a round of a few
    players on a local model answers 0.37/s, not 0/s)."""
    return f"{per_second:,.0f}" if per_second >= 10 else f"{per_second:.2g}"


def _crowd_summary(console: Console, result: RunResult, o: DemoOptions) -> None:
    table = Table(title="rounds")
    for column in ("round", "answered", "time (s)", "answers/s", "tokens out", "target",
                   "winners"):
        table.add_column(column, justify="right")
    for row, seconds in zip(result.metrics, result.seconds, strict=False):
        answered = int(row["answered"])
        table.add_row(str(row["round"]), f"{answered:,}/{o.agents:,}", f"{seconds:.2f}",
                      rate_text(answered / seconds) if seconds else "-",
                      f"{row['tokens_out']:,}", f"{row['target']}", f"{row['winners']:,}")
    console.print(table)
    for name, text in result.state.get("discussion", []):
        console.print(f"[bold]{name}[/]: {escape(text)}")
    if result.timeouts or result.errors:
        console.print(f"[red]{result.timeouts + result.errors:,} answers missing[/] "
                      f"({result.timeouts:,} timeouts, {result.errors:,} errors; the first "
                      "of each round is printed above)")
    manifest = json.loads((result.dir / "manifest.json").read_text())
    totals = manifest.get("totals", {})
    seconds = sum(result.seconds)
    table = Table(title="run summary")
    for column in ("agents", "nodes", "placed/s", "messages", "model calls", "tokens in",
                   "tokens out", "time (s)", "tokens/s out"):
        table.add_column(column, justify="right")
    out = int(totals.get("output_tokens", 0))
    table.add_row(f"{o.agents:,}", o.address or str(o.nodes),
                  f"{o.agents / result.placement_seconds:,.0f}"
                  if result.placement_seconds else "-",
                  f"{totals.get('messages', 0):,}", f"{totals.get('model_calls', 0):,}",
                  f"{totals.get('input_tokens', 0):,}", f"{out:,}", f"{seconds:.1f}",
                  f"{out / seconds if seconds else 0.0:.1f}")
    console.print(table)
    console.print(f"run folder: {result.dir}")
    console.print(f"trace: {result.dir / 'trace.jsonl'}")
