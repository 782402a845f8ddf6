"""``agentplex demo``: the main job, a front over one scenario run.

The game is the bundled scenario :mod:`agentplex.sim.scenarios.guessing`, run by the same
runner as ``agentplex run`` (in this process, on ``--nodes K``, on a cluster at
``--address``, or on Ray); this module only turns the demo's options into a run and
prints what the run reports.
"""

from __future__ import annotations

import asyncio
import json
import signal
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from ._cluster import AllowOpt, HeadKeyOpt, KeysOpt, security
from ._run import BackendOpt

if TYPE_CHECKING:
    from ..sim import RunOptions, RunResult

__all__ = ["DEFAULT_DEMO_MODEL", "GUESSING", "demo", "rate_text"]

DEFAULT_DEMO_MODEL = "transformers:default"

GUESSING = "agentplex.sim.scenarios.guessing:Guessing"
"""The game as a scenario: what ``agentplex demo`` runs."""


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
        min=0, help="Node processes to start on this machine (0: play in this process); "
        "with --backend ray, Ray worker processes.")] = 0,
    address: Annotated[str | None, typer.Option(
        help="Join the cluster whose head listens here instead of starting nodes (with "
        "--backend ray: a Ray address, e.g. auto).")] = None,
    backend: BackendOpt = "local",
    replicas: Annotated[int, typer.Option(
        min=1, help="Model actors serving the players.")] = 1,
    rate: Annotated[float | None, typer.Option(
        min=0.001, help="Requests per second allowed to the model, shared by all players "
        "of a replica.")] = None,
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

    It is one run of the bundled scenario agentplex.sim.scenarios.guessing:Guessing (what
    `agentplex run` runs too). By default the players live in this process; with --nodes
    K (or --address) they are placed in batches on node processes, with --backend ray on
    Ray, and asked each round with one fan-out. To join a cluster with CURVE keys, give
    --keys, --head-key and the nodes' keys (--allow-key: the players on them answer this
    process directly).
    """
    from ..bus import SpawnRefused
    from ..cluster import NodeFailed, Unschedulable
    from ..runtime import ActorError
    from ..sim import RunOptions, SimError
    from ..sim.scenarios.guessing import DEFAULT_SPEAKERS
    from ._serve import parse_options

    model_options = _model_defaults(model, parse_options(option or []))
    if address is None and (keys or head_key or allow_key):
        raise typer.BadParameter("--keys, --head-key and --allow-key join a cluster: "
                                 "give them with --address")
    if nodes and address is not None and backend == "local":
        raise typer.BadParameter("--nodes starts nodes here; --address joins a cluster: "
                                 "give one")
    if not (model == "scripted" or model.startswith("transformers")):
        _check_model(model, model_options)  # a missing key is one line, before anything
    options = RunOptions(
        scenario=GUESSING, name="demo", agents=agents, rounds=rounds, seed=seed,
        nodes=nodes, address=address, backend=backend, timeout=timeout,
        sampling=sample if sample is not None else min(1.0, 1000 / agents),
        runs_dir=runs_dir, replay=replay,
        params={"model": model, "replicas": replicas, "rate": rate,
                "options": model_options,
                "speakers": 0 if not discussion else
                DEFAULT_SPEAKERS if speakers is None else speakers})
    try:
        bus_options = security(keys, head_key, allow_key) if address is not None else {}
        asyncio.run(_play(options, bus_options))
    except KeyboardInterrupt:
        Console(stderr=True).print("[red]interrupted[/]: node processes stopped")
        raise typer.Exit(130) from None
    except asyncio.CancelledError:  # SIGTERM
        Console(stderr=True).print("[red]terminated[/]: node processes stopped")
        raise typer.Exit(143) from None
    except (ActorError, SimError, NodeFailed, Unschedulable, SpawnRefused) as exc:
        Console(stderr=True).print(f"[red]the demo failed[/]: {escape(str(exc))}")
        raise typer.Exit(1) from None


def _check_model(spec: str, options: dict[str, Any]) -> None:
    """Build a hosted model's client here once (cheap: no weights), so that a missing key
    or a bad option ends the command on one line (exit 2) before any player stands."""
    from ._serve import load_chat_model

    load_chat_model(spec, **options)


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


async def _play(o: RunOptions, bus_options: dict[str, Any]) -> None:
    from ..sim import run_scenario
    from ._serve import quiet_transformers

    console = Console(emoji=False)
    p = o.params
    where = (o.address if o.address is not None else
             f"{o.nodes} node processes on this machine" if o.nodes else "this process")
    if o.backend == "ray":
        where = f"Ray ({o.address or 'a local Ray'})"
    console.print(f"[bold]agentplex demo[/]: {o.agents:,} players in {where}, {o.rounds} "
                  f"round{'s' * (o.rounds > 1)}, model [cyan]{p['model']}[/]"
                  + (f" ({p['replicas']} replica{'s' * (p['replicas'] > 1)})"
                     if p["model"] != "scripted" else ""))
    if str(p["model"]).startswith("transformers"):
        quiet_transformers()
        console.print("loading the local model (the first run converts its GGUF file once, "
                      "about 20 s)")
    task = asyncio.current_task()
    assert task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    result = await run_scenario(
        o, bus_options=bus_options, log=lambda line: console.print(escape(line)),
        on_round=lambda row, took: console.print(
            f"round {row['round']}: {row['answered']:,}/{o.agents:,} answered in "
            f"{took:.2f}s; target {row['target']}"))
    _summary(console, result, o)


def rate_text(per_second: float) -> str:
    """A rate for the tables: whole numbers from 10 on, two digits below (a round of a few
    players on a local model answers 0.37/s, not 0/s)."""
    return f"{per_second:,.0f}" if per_second >= 10 else f"{per_second:.2g}"


def _summary(console: Console, result: RunResult, o: RunOptions) -> None:
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
    for column in ("agents", "messages", "model calls", "tokens in", "tokens out",
                   "time (s)", "tokens/s out", "nodes", "placed/s"):
        table.add_column(column, justify="right")
    out = int(totals.get("output_tokens", 0))
    table.add_row(f"{o.agents:,}", f"{totals.get('messages', 0):,}",
                  f"{totals.get('model_calls', 0):,}",
                  f"{totals.get('input_tokens', 0):,}", f"{out:,}", f"{seconds:.1f}",
                  f"{out / seconds if seconds else 0.0:.1f}",
                  o.address or (f"ray {o.nodes or ''}".strip() if o.backend == "ray"
                                else str(o.nodes)),
                  f"{o.agents / result.placement_seconds:,.0f}"
                  if result.placement_seconds else "-")
    console.print(table)
    for counts in result.state.get("engine", []):
        _engine_summary(console, counts)
    console.print(f"run folder: {result.dir}")
    console.print(f"trace: {result.dir / 'trace.jsonl'}")


def _engine_summary(console: Console, counts: dict[str, Any]) -> None:
    """Where a local model replica's time went (its ``describe``'s ``engine``): prompts,
    decode steps, choosing tokens."""
    if not counts.get("steps"):
        return
    console.print(f"local model: prefill {counts['prefill_s']:.1f}s "
                  f"({counts['prefill_tokens']:,} prompt tokens), decode "
                  f"{counts['decode_s']:.1f}s ({counts['steps']:,} forward passes, up to "
                  f"{counts['max_rows']} rows), choosing tokens {counts['select_s']:.1f}s")
