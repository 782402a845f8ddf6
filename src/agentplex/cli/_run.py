"""``agentplex run``: a scenario (``agentplex.sim``) from the command line."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path
from typing import Annotated, Any, Literal

import typer
from rich.console import Console
from rich.markup import escape

from ._cluster import (
    AllowOpt,
    BindOpt,
    HeadKeyOpt,
    KeysOpt,
    ShipCodeOpt,
    ShipFolderOpt,
    security,
)

__all__ = ["BackendOpt", "metric_text", "run"]

BackendOpt = Annotated[Literal["local", "ray"], typer.Option(
    help="local: in this process, --nodes K or --address; ray: the agents in Ray worker "
    "processes (a local Ray, or --address, e.g. auto; --nodes K: K workers).")]


def metric_text(row: dict[str, Any]) -> str:
    """One metrics row as a line: ``round 3: mean=0.41 clusters=4``."""
    values = " ".join(f"{k}={_short(v)}" for k, v in row.items() if k != "round")
    return f"round {row.get('round')}: {values}"


def _short(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def run(
    scenario: Annotated[str | None, typer.Argument(
        help="FILE.py:Class or module:Class (a Scenario subclass); not with --resume/--fork."
    )] = None,
    agents: Annotated[int, typer.Option("--agents", "-n", min=1, help="Agents.")] = 10,
    rounds: Annotated[int | None, typer.Option("--rounds", "-r", min=1,
                                               help="Rounds (default 3).")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the run.")] = 0,
    set_: Annotated[list[str] | None, typer.Option(
        "--set", help="key=value for the scenario's Params (a JSON value or a string); "
        "repeatable.")] = None,
    runs_dir: Annotated[Path, typer.Option(help="Where runs are written.")] = Path("runs"),
    nodes: Annotated[int | None, typer.Option(
        min=0, help="Node processes to start on this machine (0, the default: agents in "
        "this process). With --resume or --fork: where the continued run goes.")] = None,
    address: Annotated[str | None, typer.Option(
        help="Place the agents on the cluster whose head listens here (with --backend "
        "ray: the Ray cluster at this address, e.g. auto).")] = None,
    backend: BackendOpt = "local",
    timeout: Annotated[float, typer.Option(
        min=0.1, help="Seconds an agent may take to answer.")] = 600.0,
    checkpoint_every: Annotated[int, typer.Option(
        min=0, help="Checkpoint every R rounds (and after the last); 0: never.")] = 0,
    resume: Annotated[str | None, typer.Option(
        help="Continue this run (its driver died, or it failed) from its latest "
        "checkpoint, as it was (changes: --fork).")] = None,
    fork: Annotated[str | None, typer.Option(
        help="RUN@R: a new run from round R's checkpoint of RUN (with --set changes).")
    ] = None,
    plan: Annotated[Path | None, typer.Option(
        help="Interventions and surveys in a .toml, .yaml or .json file.")] = None,
    intervene: Annotated[list[str] | None, typer.Option(
        help="ROUND:TARGET:TEXT: the operator says TEXT to all, sample=K, sample=SHARE or "
        "group=NAME before round ROUND; repeatable.")] = None,
    change: Annotated[list[str] | None, typer.Option(
        help="ROUND:key=value: change a parameter from round ROUND on; repeatable.")] = None,
    survey: Annotated[list[str] | None, typer.Option(
        help="ROUND:TARGET:QUESTION: ask after round ROUND (answers in surveys.parquet); "
        "repeatable.")] = None,
    max_cost: Annotated[float | None, typer.Option(
        "--max-cost", min=0.0, help="USD: stop cleanly after the round in which the priced "
        "models' usage reached it (status budget; prices: docs/tracing.md, Costs).")] = None,
    max_tokens: Annotated[int | None, typer.Option(
        "--max-tokens", min=0, help="Stop cleanly after the round in which the models used "
        "this many tokens, input and output (status budget).")] = None,
    restart: Annotated[str | None, typer.Option(
        help="When a node dies with agents of the run: on-failure (start them again on the "
        "nodes left, restored to the latest checkpoint that holds them; the manifest says "
        "which, to which round) or never (the run ends, failed). Default: the scenario's "
        "restart (on-failure unless it says).")] = None,
    lost_after: Annotated[float | None, typer.Option(
        min=0.1, help="Seconds of silence after which the run's head, nodes and driver "
        "count one of them lost (default 30).")] = None,
    sample: Annotated[float | None, typer.Option(
        min=0.0, max=1.0, help="Share of traces kept (default: all up to 1,000 agents).")
    ] = None,
    recording: Annotated[bool, typer.Option(
        "--recording/--no-recording", help="Record the model answers (recording.jsonl) so "
        "that the run can be replayed; --no-recording for a rule-based run.")] = True,
    bind: BindOpt = None,
    ship_code: ShipCodeOpt = False,
    ship_folder: ShipFolderOpt = None,
    recording_limit: Annotated[float | None, typer.Option(
        min=0.0, help="The most MB the recording may reach (default 256); past it the "
        "recording is dropped (said here and in the manifest: recording_dropped) and the "
        "run goes on without one. 0: any size.")] = None,
    keys: KeysOpt = None,
    head_key: HeadKeyOpt = None,
    allow_key: AllowOpt = [],  # noqa: B006 - typer reads the default
) -> None:
    """Run a simulation scenario: its rounds, metrics per round (metrics.parquet),
    checkpoints, interventions and surveys, in this process or on node processes."""
    from ..bus import InsecureBindError
    from ..cluster import CodeRefused, CodeRejected
    from ..runtime import ActorError
    from ..sim import RunOptions, SimError, load_plan, run_scenario
    from ..sim.lowlevel import fork_options, parse_sets, resume_options
    from ..tracing import InvalidBudget

    console = Console(emoji=False)  # 'file.py:X' is a scenario, not the ':x:' emoji
    err = Console(stderr=True, emoji=False)
    try:
        if sum(x is not None for x in (scenario, resume, fork)) != 1:
            raise typer.BadParameter("give a SCENARIO, or --resume RUN, or --fork RUN@R")
        if nodes and address is not None and backend == "local":
            raise typer.BadParameter("--nodes starts nodes here; --address joins a cluster: "
                                     "give one")
        if bind is not None and address is None:
            raise typer.BadParameter("--bind goes with --address")
        if (ship_code or ship_folder) and address is None:
            raise typer.BadParameter("--ship-code sends the code to a running cluster's "
                                     "nodes: give --address")
        if address is None and (keys or head_key or allow_key):
            raise typer.BadParameter("--keys, --head-key and --allow-key go with --address")
        declared = load_plan(plan, intervene=intervene or (), change=change or (),
                             survey=survey or ())
        given = bool(plan or intervene or change or survey)
        sets = parse_sets(set_ or [])
        start = None
        if resume is not None:
            if sets or given or rounds is not None:  # else silently not taken
                raise typer.BadParameter("--resume continues a run as it was: --set, "
                                         "--rounds and the plan are not taken (start an "
                                         "arm with changes from a checkpoint: --fork "
                                         "RUN@ROUND)")
            options, start = resume_options(resume, runs_dir)
        elif fork is not None:
            options, start = fork_options(fork, runs_dir, sets, rounds,
                                          declared if given else None)
        else:
            assert scenario is not None
            options = RunOptions(scenario=scenario, agents=agents, rounds=rounds or 3,
                                 seed=seed, params=sets, runs_dir=runs_dir, nodes=nodes or 0,
                                 address=address, backend=backend, timeout=timeout,
                                 checkpoint_every=checkpoint_every, plan=declared,
                                 sampling=sample if sample is not None
                                 else min(1.0, 1000 / agents))
        if start is not None and (nodes is not None or address is not None
                                  or backend != "local"):
            options.nodes, options.address = nodes or 0, address  # elsewhere this time
            options.backend = backend
        if max_cost is not None:  # also a resumed or forked run's new limit
            options.max_cost = max_cost
        if max_tokens is not None:
            options.max_tokens = max_tokens
        if not recording:
            options.recording = False
        if recording_limit is not None:
            options.recording_limit_mb = recording_limit
        if restart is not None:
            if restart not in ("on-failure", "never"):
                raise typer.BadParameter(f"--restart is on-failure or never, not {restart!r}")
            options.restart = restart  # type: ignore[assignment]
        if lost_after is not None:
            options.lost_after = lost_after
        if ship_code or ship_folder:
            options.ship_code, options.ship_folder = True, ship_folder
        options.budget()  # a bad limit is refused before anything starts
        bus_options = (security(keys, head_key, allow_key)
                       if address is not None and options.backend == "local" else {})
        if bind is not None and options.backend == "local":
            bus_options["bind"] = bind
        console.print(f"[bold]agentplex run[/] {escape(options.scenario)}: "
                      f"{options.agents:,} agents, {options.rounds} rounds, seed {options.seed}"
                      + (f", params {options.params}" if options.params else ""))

        async def main() -> Any:
            task = asyncio.current_task()
            assert task is not None
            asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
            return await run_scenario(
                options, start=start, bus_options=bus_options,
                on_round=lambda row, took: console.print(
                    f"{metric_text(row)} [dim]({took:.2f}s)[/]"),
                log=lambda line: console.print(f"[dim]{escape(line)}[/]"))

        result = asyncio.run(main())
    except KeyboardInterrupt:
        err.print("[red]interrupted[/]: the run's agents and nodes stopped")
        raise typer.Exit(130) from None
    except asyncio.CancelledError:
        err.print("[red]terminated[/]: the run's agents and nodes stopped")
        raise typer.Exit(143) from None
    except (SimError, ActorError, InvalidBudget, CodeRefused, CodeRejected,
            InsecureBindError) as exc:
        err.print(f"[red]the run failed[/]: {escape(str(exc))}")
        raise typer.Exit(1) from None
    if result.status == "budget":
        console.print(f"[yellow]stopped by the budget[/]: {escape(result.reason or '')}")
    if result.restarts:
        console.print(f"[yellow]{result.restarts:,} agents were started again after their "
                      "node was lost[/] (rolled back: the manifest's incidents.restored "
                      "says which, to which round)")
    console.print(f"run folder: {result.dir}")
    console.print(f"metrics: {result.dir / 'metrics.parquet'}"
                  + (f"; [yellow]{result.timeouts:,} timeouts, {result.errors:,} errors[/]"
                     if result.timeouts or result.errors else ""))
    if result.status == "failed":
        err.print(f"[red]the run failed[/]: {escape(result.reason or '')}")
        raise typer.Exit(1)
