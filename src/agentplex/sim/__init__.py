"""Simulations as users write them: a :class:`Scenario` run by ``agentplex run``.

::

    from agentplex.sim import Scenario

    class Opinion(Scenario):
        agent = Voter
        class Params(BaseModel):
            eps: float = 0.2
        def agent_args(self, index): ...
        async def step(self, sim): ...   # sim.round, sim.agents, sim.rng, sim.state,
                                         # await sim.call_many(refs, msg), sim.record(...)

The same scenario runs in one process, on node processes (``--nodes K``) or on a running
cluster (``--address``); per-round metrics land in ``metrics.parquet``; checkpoints allow
``--resume`` and ``--fork``; interventions and surveys come from the command line or a
plan file; ``agentplex sweep`` (:func:`run_sweep`) runs a grid of parameters for several
seeds and summarises each metric across seeds with :func:`mean_ci`; runs and sweep
arms are compared per round with :func:`compare`, drawn by :func:`write_png` or
:func:`comparison_html`. See
``docs/write-your-own-simulation.md`` and ``docs/from-runs-to-answers.md``.
"""

from ._charts import comparison_html, write_png
from ._compare import Comparison, Series, compare, find_target, is_sweep, sweep_summary
from ._errors import (
    CheckpointError,
    NodesFailed,
    NotUserCode,
    ParamsError,
    PlanError,
    RoundFailed,
    RunNotFound,
    ScenarioError,
    SimError,
    StatsError,
    SweepError,
    UnknownMetric,
)
from ._plan import Intervention, Plan, Survey, load_plan
from ._runner import RunOptions, RunResult, run_scenario
from ._scenario import NoParams, Scenario, load_scenario
from ._sim import OPERATOR, Sim
from ._stats import MeanCI, mean_ci, t_quantile
from ._store import checkpoints, read_metrics
from ._sweep import (
    SummaryRow,
    Sweep,
    SweepArm,
    SweepOptions,
    SweepRun,
    read_sweep,
    run_sweep,
    summarize_sweep,
)

__all__ = [
    "CheckpointError",
    "Comparison",
    "Intervention",
    "MeanCI",
    "NoParams",
    "NodesFailed",
    "NotUserCode",
    "OPERATOR",
    "ParamsError",
    "Plan",
    "PlanError",
    "RoundFailed",
    "RunNotFound",
    "RunOptions",
    "RunResult",
    "Scenario",
    "ScenarioError",
    "Series",
    "Sim",
    "SimError",
    "StatsError",
    "SummaryRow",
    "Survey",
    "Sweep",
    "SweepArm",
    "SweepError",
    "SweepOptions",
    "SweepRun",
    "UnknownMetric",
    "checkpoints",
    "compare",
    "comparison_html",
    "find_target",
    "is_sweep",
    "load_plan",
    "load_scenario",
    "mean_ci",
    "read_metrics",
    "read_sweep",
    "run_scenario",
    "run_sweep",
    "summarize_sweep",
    "sweep_summary",
    "t_quantile",
    "write_png",
]
