"""The driver of a run: spawn the scenario's agents, play its rounds, apply the plan,
record metrics, write checkpoints; resume and fork from them."""

from __future__ import annotations

import asyncio
import copy
import random
import time
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

from ..cluster import ActorRefs
from ..message import Msg
from ..runtime import ActorRef, NameRange
from ..tracing import Budget, Run, experiment, find_run, in_round
from ..tracing.lowlevel import (
    DRIVER,
    collect_parts,
    sim_span,
    transcribe,
    transcript_until,
)
from ._calls import load_states, states_of
from ._errors import CheckpointError, ScenarioError
from ._nodes import user_code
from ._place import HEARTBEAT, placement
from ._plan import Intervention, Plan, Survey, choose
from ._restart import Lost, Told, restart_lost
from ._scenario import Scenario, load_scenario, resolve_class, takes_name
from ._ship import ship_scenario
from ._sim import OPERATOR, UNREACHABLE, Sim
from ._store import Checkpoint, SurveyTables, checkpoint_at, write_table

__all__ = ["RunOptions", "RunResult", "run_scenario"]

SPAWN_WINDOW = 100_000
"""Agents spawned per batch (bounds the driver's memory while it builds arguments)."""
RECORDING_LIMIT_MB = 256.0
"""The default of :attr:`RunOptions.recording_limit_mb` (a million scripted players'
answers over three rounds are about 840 MB of recording that nobody replays)."""


class RunOptions(BaseModel):
    """Everything ``agentplex run`` takes (what the manifest's ``config`` keeps)."""

    scenario: str
    agents: int = 10
    rounds: int = 3
    seed: int = 0
    params: dict[str, Any] = {}
    runs_dir: Path = Path("runs")
    nodes: int = 0
    address: str | None = None
    backend: Literal["local", "ray"] = "local"
    """``ray``: the agents live in Ray worker processes (a local Ray, or the Ray cluster
    at ``address``; ``nodes``: how many workers)."""
    timeout: float = 600.0
    checkpoint_every: int = 0
    plan: Plan = Plan()
    name: str | None = None
    sampling: float | None = None
    replay: Path | None = None
    """A run folder whose recorded model answers replace the models."""
    recording: bool = True
    """``False``: no ``recording.jsonl`` (rule-based runs have nothing worth replaying;
    such a run cannot be replayed)."""
    recording_limit_mb: float = Field(default=RECORDING_LIMIT_MB, ge=0)
    """The most megabytes ``recording.jsonl`` may reach; past it the recording is dropped,
    said in the output and the manifest (``recording_dropped``), and the run goes on
    without one (it cannot be replayed). ``0``: any size."""
    max_cost: float | None = None
    """Stop cleanly after the round in which the run's priced model usage reached this
    many USD (see :class:`~agentplex.tracing.Budget`)."""
    max_tokens: int | None = None
    """Stop cleanly after the round in which the run's models used this many tokens
    (input and output)."""
    restart: Literal["on-failure", "never"] | None = None
    """When a node dies with agents of the run: ``on-failure`` starts them again on the
    nodes left, restored to the latest checkpoint that holds them; ``never`` ends the
    run as ``failed``. ``None``: the scenario's :attr:`~Scenario.restart`."""
    ship_code: bool = False
    """Ship the scenario's file (or ``ship_folder``) over the bus to the nodes of the
    cluster at ``address`` (started with ``--accept-code``) before spawning (without
    ``address``: nothing to ship)."""
    ship_folder: Path | None = None
    """A folder of ``.py`` files holding the scenario's file, shipped whole."""
    lost_after: float = Field(default=HEARTBEAT, gt=0)
    """Seconds of silence after which the run's head, nodes and driver count one of them
    lost (nodes started with ``nodes``; the driver's side on a cluster)."""

    def budget(self) -> Budget:
        """The run's :class:`~agentplex.tracing.Budget` (``InvalidBudget`` for a bad one)."""
        return Budget(max_cost_usd=self.max_cost, max_tokens=self.max_tokens)

    def config(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude={"runs_dir", "replay"})


@dataclass
class RunResult:
    """What a finished run left: its folder, its metrics, its counts."""

    dir: Path
    run_id: str
    metrics: list[dict[str, Any]] = field(default_factory=list)
    timeouts: int = 0
    errors: int = 0
    status: str = "completed"
    """``completed``, ``budget`` when a limit stopped it, or ``failed`` when agents were
    lost with their node under ``restart="never"`` (``reason`` says which)."""
    reason: str | None = None
    state: dict[str, Any] = field(default_factory=dict)
    """``sim.state`` when the run ended."""
    placement_seconds: float = 0.0
    seconds: list[float] = field(default_factory=list)
    """Each round's wall time in this run (not in the metrics: they are reproducible)."""
    restarts: int = 0
    """Agents started again after their node was lost (see the manifest's
    ``incidents.restored`` for which, restored to which round)."""
    lost_agents: int = 0
    """Agents lost with their node and not started again."""


@dataclass
class _Start:
    """Where a run starts: nothing (round 1), or a checkpoint of another run."""

    checkpoint: Checkpoint | None = None
    parent: Path | None = None
    how: str = ""


def resume_options(run: str, runs_dir: Path) -> tuple[RunOptions, _Start]:
    """The options of the run ``run`` (whose driver died) and its latest checkpoint."""
    folder = _find(run, runs_dir)
    options = _options_of(folder, runs_dir)
    return options, _Start(checkpoint_at(folder, None), folder, "resume")


def fork_options(spec: str, runs_dir: Path, params: dict[str, Any],
                 rounds: int | None, plan: Plan | None) -> tuple[RunOptions, _Start]:
    """``RUN@R`` with changed ``params`` (and rounds, plan): a new arm from round R."""
    run, sep, number = spec.rpartition("@")
    if not sep or not number.isdigit():
        raise CheckpointError(f"--fork takes RUN@ROUND, not {spec!r}")
    folder = _find(run, runs_dir)
    options = _options_of(folder, runs_dir)
    ck = checkpoint_at(folder, int(number))
    options.params = {**ck.meta()["params"], **params}
    options.rounds = rounds if rounds is not None else options.rounds
    options.plan = plan if plan is not None else options.plan
    return options, _Start(ck, folder, "fork")


def _find(run: str, runs_dir: Path) -> Path:
    try:
        return find_run(run, runs_dir)
    except (FileNotFoundError, LookupError) as exc:
        raise CheckpointError(str(exc)) from None


def _options_of(folder: Path, runs_dir: Path) -> RunOptions:
    import json

    manifest = json.loads((folder / "manifest.json").read_text())
    config = manifest.get("config", {})
    if "scenario" not in config:
        raise CheckpointError(f"{folder.name} is not a simulation run")
    return RunOptions(**{**config, "runs_dir": runs_dir})


Report = Callable[[str], None]


async def run_scenario(options: RunOptions, *, start: _Start | None = None,
                       on_round: Callable[[dict[str, Any], float], None] | None = None,
                       log: Report = lambda _: None,
                       bus_options: dict[str, Any] | None = None) -> RunResult:
    """Run ``options.scenario`` (see ``agentplex run``); ``on_round`` gets each round's
    metrics row as it is recorded, and the seconds the round took."""
    start = start or _Start()
    if options.ship_code and options.backend != "local":
        raise ScenarioError("--ship-code sends the code to agentplex nodes, not to Ray")
    # on a cluster (--address) the nodes get the code over the bus; nodes started here
    # and this process import the file itself (a resumed run may go either way)
    shipped = ship_scenario(options.scenario, options.ship_folder) \
        if options.ship_code and options.address is not None else None
    cls = load_scenario(shipped.scenario if shipped else options.scenario)
    agent_cls = resolve_class(shipped.rename(cls.agent) if shipped else cls.agent)
    params = cls.make_params(options.params)
    scenario = cls(params, agents=options.agents, seed=options.seed)
    scenario.timeout = options.timeout
    if not cls.name_prefix or cls.name_prefix[-1].isdigit():
        raise ScenarioError(f"{cls.__name__}.name_prefix must not be empty nor end in a "
                            f"digit: {cls.name_prefix!r}")
    names = NameRange(cls.name_prefix, 0, options.agents)
    named = takes_name(agent_cls)
    first = 1 if start.checkpoint is None else start.checkpoint.round + 1
    if start.checkpoint is not None and first > options.rounds + 1:
        raise CheckpointError(f"round {start.checkpoint.round}'s checkpoint is past the run's "
                              f"{options.rounds} rounds")
    groups = {**scenario.groups, **options.plan.groups}
    for step in [*options.plan.interventions, *options.plan.surveys]:
        choose(step.to, options.agents, groups, random.Random(0))  # a bad target fails now
    # nodes started here import the scenario's file from its folder (and only its module)
    code = [user_code(options.scenario)] if options.backend == "ray" or (
        options.nodes and options.address is None) else []
    budget = options.budget()
    policy = options.restart or cls.restart
    if policy not in ("on-failure", "never"):
        raise ScenarioError(f"{cls.__name__}.restart is 'on-failure' or 'never', not "
                            f"{policy!r}")
    name = options.name or cls.__name__.lower()
    async with experiment(name, seed=options.seed, config=options.config(),
                          runs_dir=options.runs_dir, sampling=options.sampling,
                          replay=options.replay, recording=options.recording,
                          recording_limit=int(options.recording_limit_mb * 1e6)) as run:
        run.outcome.scenario = options.scenario  # type: ignore[attr-defined]
        run.outcome.restart = policy  # type: ignore[attr-defined]
        if start.parent is not None and start.checkpoint is not None:
            link = {"run": start.parent.name, "round": start.checkpoint.round}
            setattr(run.outcome, "parent" if start.how == "fork" else "resumed_from", link)
        run.write_manifest()
        result = RunResult(run.dir, run.id)
        surveys = SurveyTables(run.dir)
        cpu_began = time.process_time()
        try:
            async with placement(nodes=options.nodes, address=options.address,
                                 backend=options.backend, agent=agent_cls,
                                 logs=run.dir / "nodes", run=run.id, code=code,
                                 heartbeat=options.lost_after, ship=shipped,
                                 timeout=options.timeout, bus_options=bus_options,
                                 log=log) as home:
                log(f"{cls.__name__}: {options.agents:,} {cls.noun} in {home.where}")
                if home.driver_node is not None:
                    run.driver_node = home.driver_node
                began = time.perf_counter()
                for i in range(0, len(names), SPAWN_WINDOW):
                    window = names[i:i + SPAWN_WINDOW]
                    args = [_args(scenario, i + j, n, named) for j, n in enumerate(window)]
                    await home.spawn(agent_cls, window, args)
                    del args
                refs = ActorRefs(home.runtime, names)
                placed = result.placement_seconds = time.perf_counter() - began
                log(f"placed {options.agents:,} {cls.noun} in {placed:.2f}s "
                    f"({options.agents / max(placed, 1e-9):,.0f}/s)")
                sim = Sim(home.runtime, refs, seed=options.seed, params=params,
                          timeout=options.timeout, spawner=home.spawn, log=log)
                if start.checkpoint is None:
                    await scenario.start(sim)  # what setup may use (model actors, say)
                    await scenario.setup(sim)
                else:  # start sees the run as it continues: state, params, round restored
                    await _restore(run, sim, scenario, start, surveys, result)
                    log(f"{start.how} from {start.parent.name if start.parent else '?'} "
                        f"at round {start.checkpoint.round}")
                    await scenario.start(sim)
                said_dropped = False
                for number in range(first, options.rounds + 1):
                    failed = sim.timeouts + sim.errors
                    began = time.perf_counter()
                    await _round(run, scenario, sim, options, number, surveys)
                    took = time.perf_counter() - began
                    if sim.timeouts + sim.errors > failed:
                        log(f"round {number}: {sim.timeouts + sim.errors - failed:,} calls "
                            f"failed; the first: {sim.first_error}")
                    held = [start.checkpoint] if start.checkpoint is not None else []
                    told = _told(sim, options.plan, groups, number)
                    lost: Lost | None = None
                    if home.cluster is not None and sim.unreachable:
                        with in_round(number):
                            lost = await restart_lost(run, sim, home.cluster, policy, number,
                                                      cls.name_prefix, held, log, told)
                    row = {"round": number, **sim.metrics}
                    result.metrics.append(row)
                    write_table(run.dir / "metrics.parquet", result.metrics, ["round"])
                    result.seconds.append(took)
                    if on_round is not None:
                        on_round(row, took)
                    if run.recording_dropped is not None and not said_dropped:
                        said_dropped = True
                        log(run.recording_dropped)
                    # what the nodes spent came with their answers: the ledger is whole
                    reason = budget.exceeded(run.ledger) if budget.limited else None
                    every = options.checkpoint_every
                    if (lost is None or not lost.left) and every and (
                            number % every == 0 or number == options.rounds
                            or reason is not None):
                        with sim_span(f"checkpoint {number}", **{"agentplex.sim.round": number}):
                            try:
                                await _checkpoint(run, sim, refs, result.metrics, number)
                            except UNREACHABLE:
                                if home.cluster is None:
                                    raise
                                # a node died after the round's calls: which agents with it?
                                sim.unreachable.update(sim.names)
                                with in_round(number):
                                    lost = await restart_lost(run, sim, home.cluster, policy,
                                                              number, cls.name_prefix, held,
                                                              log, told)
                                if lost is None:
                                    raise
                                if not lost.left:  # all back: this round's checkpoint now
                                    await _checkpoint(run, sim, refs, result.metrics, number)
                    if lost is not None and lost.left:  # a run that lost agents stops here
                        result.status = run.outcome.status = "failed"
                        result.reason = run.outcome.reason = lost.reason
                        run.outcome.timeouts, run.outcome.errors = sim.timeouts, sim.errors
                        log(f"the run failed after round {number}: {lost.reason}")
                        break
                    run.outcome.timeouts = sim.timeouts
                    run.outcome.errors = sim.errors
                    if reason is not None:  # a clean stop: no more rounds, no finish
                        result.status = run.outcome.status = "budget"
                        result.reason = run.outcome.reason = reason
                        log(f"stopped after round {number} of {options.rounds}: the budget "
                            f"is reached ({reason})")
                        break
                else:
                    await scenario.finish(sim)
                result.state = sim.state
                # CPU per process, for the trace page's nodes (nodes started here only)
                cpu = home.nodes.cpu_seconds() if home.nodes is not None else {
                    DRIVER: round(time.process_time() - cpu_began, 2)} \
                    if options.address is None else {}
                run.outcome.nodes = [  # type: ignore[attr-defined]
                    {"node": name, "cpu_s": seconds} for name, seconds in cpu.items()]
        finally:
            surveys.finish()
        result.timeouts, result.errors = sim.timeouts, sim.errors
    result.restarts = run.incidents.restarts
    result.lost_agents = run.incidents.lost_agents
    return result


def _args(scenario: Scenario, index: int, name: str, named: bool) -> dict[str, Any]:
    args = dict(scenario.agent_args(index))
    if named and "name" not in args:
        args["name"] = name
    return args


async def _round(run: Run, scenario: Scenario, sim: Sim, options: RunOptions, number: int,
                 surveys: SurveyTables) -> None:
    run.begin_round(number)
    sim._open_round(number)
    interventions, asked = options.plan.at(number)
    groups = {**scenario.groups, **options.plan.groups}
    with in_round(number), sim_span(f"round {number}", **{"agentplex.sim.round": number}):
        for k, item in enumerate(interventions):
            await _intervene(sim, scenario, item, groups, k)
        await scenario.step(sim)
        for k, survey in enumerate(asked):
            await _survey(sim, survey, groups, k, surveys)


def _plan_rng(sim: Sim, salt: str, k: int) -> random.Random:
    return random.Random(f"{sim.seed}/{sim.round}/{salt}/{k}")


def _told(sim: Sim, plan: Plan, groups: dict[str, Sequence[int]], number: int
          ) -> list[Told]:
    """The messages of round ``number``'s interventions, and whom each was told to."""
    interventions, _ = plan.at(number)
    return [Told(f"intervention {k + 1} of round {number}", item.message,
                 range(len(sim.agents)) if item.to == "all" else
                 set(choose(item.to, len(sim.agents), groups, _plan_rng(sim, "intervene", k))))
            for k, item in enumerate(interventions) if item.message is not None]


async def _intervene(sim: Sim, scenario: Scenario, item: Intervention,
                     groups: dict[str, Sequence[int]], k: int) -> None:
    with sim_span("intervention", **{"agentplex.sim.round": sim.round,
                                     "agentplex.sim.target": item.to}):
        if item.set:
            merged = {**sim.params.model_dump(), **item.set}
            sim.params = scenario.params = type(scenario).make_params(merged)
            transcribe(Msg(OPERATOR, f"parameters changed: {item.set}", "system",
                           metadata={"intervention": "set", "set": item.set}), None)
        if item.message is not None:
            chosen = choose(item.to, len(sim.agents), groups, _plan_rng(sim, "intervene", k))
            msg = Msg(OPERATOR, item.message, "user",
                      metadata={"intervention": item.to, "agents": len(chosen)})
            await sim.tell_many([sim.agents[i] for i in chosen], msg)


async def _survey(sim: Sim, survey: Survey, groups: dict[str, Sequence[int]], k: int,
                  tables: SurveyTables) -> None:
    chosen = choose(survey.to, len(sim.agents), groups, _plan_rng(sim, "survey", k))
    refs = [sim.agents[i] for i in chosen]
    with sim_span("survey", **{"agentplex.sim.round": sim.round,
                               "agentplex.sim.target": survey.to,
                               "agentplex.sim.asked": len(refs)}):
        before = None if survey.memory else await _states_before(sim, refs)
        question = Msg(OPERATOR, survey.question, "user",
                       metadata={"survey": survey.to, "memory": survey.memory})
        got = await sim.call_many(refs, question)  # a lost agent's answer: its error
        if before is not None:
            await _put_back(sim, refs, before)
    rows = [{"round": sim.round, "agent": r.name, "question": survey.question,
             "answer": (v.get_text_content() if isinstance(v, Msg) else
                        None if isinstance(v, BaseException) else str(v)),
             "error": f"{type(v).__name__}: {v}" if isinstance(v, BaseException) else None}
            for r, v in zip(refs, got, strict=True)]
    tables.add(sim.round, k, rows)


async def _states_before(sim: Sim, refs: Sequence[ActorRef]) -> list[Any]:
    """The states of a survey's agents before its question: a copy of each (an agent in
    this process hands out its live lists and dicts), or the error of an agent out of
    reach (its node died: it is left to the restart policy, like its answer)."""
    got = await states_of(sim.runtime, refs, sim.timeout, return_exceptions=True)
    for value in got:
        if isinstance(value, BaseException) and not isinstance(value, UNREACHABLE):
            raise value
    return [v if isinstance(v, BaseException) else copy.deepcopy(v) for v in got]


async def _put_back(sim: Sim, refs: Sequence[ActorRef], states: list[Any]) -> None:
    """Each surveyed agent's state as before the question; an agent whose state was not
    read or cannot be loaded because it is out of reach is one the restart policy sees
    after the round (it restores it from a checkpoint, or the run stops)."""
    kept = [i for i, s in enumerate(states) if not isinstance(s, BaseException)]
    failed = await load_states(sim.runtime, [refs[i] for i in kept],
                               [states[i] for i in kept], sim.timeout,
                               return_exceptions=True)
    out = [i for i, s in enumerate(states) if isinstance(s, BaseException)]
    for i, error in zip(kept, failed, strict=True):
        if error is not None:
            if not isinstance(error, UNREACHABLE):
                raise error
            out.append(i)
    sim.unreachable.update(refs[i].name for i in out)


async def _windows(sim: Sim, refs: Sequence[ActorRef]
                   ) -> AsyncIterator[Iterable[tuple[str, Any]]]:
    step = 20_000
    for i in range(0, len(refs), step):
        part = refs[i:i + step]
        yield zip((r.name for r in part), await states_of(sim.runtime, part, sim.timeout),
                  strict=True)


async def _checkpoint(run: Run, sim: Sim, refs: Sequence[ActorRef],
                      metrics: list[dict[str, Any]], number: int) -> None:
    await collect_parts(run)  # what the nodes said up to now, then all of it on disk
    run.sync()

    def meta() -> dict[str, Any]:  # after the states: their answers move the clocks
        return {"params": sim.params.model_dump(mode="json"), "state": sim.state,
                "metrics": metrics, "clock": run.clock_state(),
                "counts": {"timeouts": sim.timeouts, "errors": sim.errors}}

    await Checkpoint.write(run.dir, number, meta, _windows(sim, refs))
    run.write_manifest()


async def _restore(run: Run, sim: Sim, scenario: Scenario, start: _Start,
                   surveys: SurveyTables, result: RunResult) -> None:
    ck = start.checkpoint
    assert ck is not None and start.parent is not None
    meta = ck.meta()
    names = [r.name for r in sim.agents]
    batch: list[Any] = []
    got = 0
    for name, state in ck.states():
        if got >= len(names) or name != names[got]:
            raise ScenarioError(f"the checkpoint's agent {name!r} is not agent {got} of "
                                "this run (were --agents or the scenario changed?)")
        batch.append(state)
        got += 1
        if len(batch) == 20_000:
            await load_states(sim.runtime, names[got - len(batch):got], batch, sim.timeout)
            batch = []
    if batch:
        await load_states(sim.runtime, names[got - len(batch):got], batch, sim.timeout)
    if got != len(names):
        raise ScenarioError(f"the checkpoint holds {got} agents, this run {len(names)}")
    sim.state = meta["state"]
    sim.round = ck.round
    sim.timeouts = int(meta["counts"]["timeouts"])
    sim.errors = int(meta["counts"]["errors"])
    if start.how == "resume":  # a fork's parameters are the checkpoint's and its changes
        sim.params = scenario.params = type(scenario).make_params(meta["params"])
    result.metrics.extend(meta["metrics"])
    write_table(run.dir / "metrics.parquet", result.metrics, ["round"])
    ck.restore_random()
    clock = meta["clock"]
    run.restore_clock_state(clock)
    run.adopt_transcript(transcript_until(start.parent, ck.round))
    surveys.adopt(start.parent, ck.round)
    await asyncio.sleep(0)
