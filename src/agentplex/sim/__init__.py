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
plan file. See ``docs/write-your-own-simulation.md``.
"""

from ._errors import (
    CheckpointError,
    NodesFailed,
    NotUserCode,
    ParamsError,
    PlanError,
    ScenarioError,
    SimError,
)
from ._plan import Intervention, Plan, Survey, load_plan
from ._runner import RunOptions, RunResult, run_scenario
from ._scenario import NoParams, Scenario, load_scenario
from ._sim import OPERATOR, Sim
from ._store import checkpoints, read_metrics

__all__ = [
    "CheckpointError",
    "Intervention",
    "NoParams",
    "NodesFailed",
    "NotUserCode",
    "OPERATOR",
    "ParamsError",
    "Plan",
    "PlanError",
    "RunOptions",
    "RunResult",
    "Scenario",
    "ScenarioError",
    "Sim",
    "SimError",
    "Survey",
    "checkpoints",
    "load_plan",
    "load_scenario",
    "read_metrics",
    "run_scenario",
]
