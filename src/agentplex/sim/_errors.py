"""Errors of ``agentplex.sim``::

    AgentplexError
    └── SimError
        ├── ScenarioError (also ValueError)    a scenario that cannot be loaded or used
        ├── ParamsError (also ValueError)      a --set that the scenario's Params refuse
        ├── PlanError (also ValueError)        an intervention or survey badly declared
        ├── CheckpointError (also LookupError) no checkpoint where --resume / --fork look
        ├── NodesFailed (also RuntimeError)    a head or node process a run started did
        │                                      not come up
        ├── RoundFailed (also RuntimeError)    a round a scenario cannot complete (the
        │                                      guessing game: no player answered)
        ├── NotUserCode (also ValueError)      a target names neither a ``.py`` file nor
        │                                      a module
        ├── SweepError (also ValueError)       a sweep that cannot run as given (a bad
        │                                      --grid or --seeds, a folder of another sweep),
        │                                      or whose sweep.json / summary.csv is unreadable
        ├── StatsError (also ValueError)       a confidence level or quantile out of range
        ├── RunNotFound (also LookupError)     no run or sweep folder by that name (or
        │                                      several)
        └── UnknownMetric (also ValueError)    a metric no run or arm compared recorded
"""

from __future__ import annotations

from ..errors import AgentplexError

__all__ = ["CheckpointError", "NodesFailed", "NotUserCode", "ParamsError", "PlanError",
           "RoundFailed", "RunNotFound", "ScenarioError", "SimError", "StatsError",
           "SweepError", "UnknownMetric"]


class SimError(AgentplexError):
    """Base of the errors a simulation run raises on purpose."""


class ScenarioError(SimError, ValueError):
    """The scenario cannot be loaded (a bad ``FILE.py:Class``) or is not a Scenario."""


class ParamsError(SimError, ValueError):
    """A parameter (``--set key=value``) that the scenario's ``Params`` refuse."""


class PlanError(SimError, ValueError):
    """An intervention or survey that cannot be read (command line or config file)."""


class CheckpointError(SimError, LookupError):
    """The run to resume or fork has no (such) checkpoint."""


class NodesFailed(SimError, RuntimeError):
    """A head or node process did not start (its log's tail is in the message)."""


class RoundFailed(SimError, RuntimeError):
    """A round that a scenario cannot complete (raised from its ``step``; the run ends
    ``failed``): the guessing game's round in which no player answered."""


class NotUserCode(SimError, ValueError):
    """A scenario or actor target names neither a ``.py`` file that can be imported as a
    module nor a module name."""


class SweepError(SimError, ValueError):
    """A sweep that cannot run as given: a bad ``--grid`` or ``--seeds``, a parameter the
    scenario does not declare, or a ``--name`` whose folder holds a different sweep."""


class StatsError(SimError, ValueError):
    """A confidence level, quantile or degrees of freedom out of range."""


class RunNotFound(SimError, LookupError):
    """No run or sweep folder answers to the name given, or several do."""


class UnknownMetric(SimError, ValueError):
    """A metric that none of the runs or sweep arms compared recorded; ``known``: the
    metrics they did record."""

    def __init__(self, message: str, *, known: list[str]) -> None:
        super().__init__(message)
        self.known = known
