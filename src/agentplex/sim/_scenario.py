"""What a user writes: a :class:`Scenario` (its agent class, each agent's arguments, what
a round does), and how ``agentplex run`` finds it (``FILE.py:Class`` or ``module:Class``)."""

from __future__ import annotations

import importlib
import inspect
import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import BaseModel, ValidationError

from ..runtime import Actor
from ..tool.lowlevel import import_file
from ._errors import ParamsError, ScenarioError

if TYPE_CHECKING:
    from ._sim import Sim

__all__ = ["NoParams", "Scenario", "load_scenario", "parse_sets", "resolve_class"]


class NoParams(BaseModel):
    """The parameters of a scenario that declares none."""


class Scenario:
    """A simulation: subclass it, set :attr:`agent`, and write :meth:`step`.

    ::

        class Opinion(Scenario):
            agent = Voter                      # or "module:Class"
            class Params(BaseModel):           # filled from --set key=value: self.params
                eps: float = 0.2
            def agent_args(self, index): return {"opinion": index / self.agents}
            async def step(self, sim): ...     # one round

    The runner makes one instance per run: ``self.params`` (a ``Params``), ``self.agents``
    (how many), ``self.seed``, ``self.timeout`` (the run's ``--timeout``: seconds a call may
    take, for the calls agents make themselves). Agent ``index`` is named
    ``f"{name_prefix}{index}"``; the name is passed as ``name=`` when the agent's
    constructor takes one.
    """

    agent: ClassVar[type[Actor] | str]
    """The agent class (any actor; its ``state_dict()`` is what a checkpoint keeps), or its
    import path ``"module:Class"``."""

    Params: ClassVar[type[BaseModel]] = NoParams
    """The scenario's parameters (a pydantic model); ``--set key=value`` fills them."""

    name_prefix: ClassVar[str] = "agent-"
    """Agent ``i`` is named ``name_prefix + str(i)``."""

    noun: ClassVar[str] = "agents"
    """What the runner calls the agents when it reports (``players``, ``voters``)."""

    restart: ClassVar[Literal["on-failure", "never"]] = "on-failure"
    """What the run does when a node process dies with some of its agents (``agentplex
    run --restart`` overrides it): ``on-failure`` starts them again on the nodes left,
    restored to the latest checkpoint that holds them (or as created), and says so in the
    manifest, transcript and trace; ``never`` ends the run, ``failed``, after the round in
    which they were lost."""

    groups: ClassVar[Mapping[str, Sequence[int]]] = {}
    """Named groups of agent indices that interventions and surveys may address (a plan
    file may add more)."""

    def __init__(self, params: BaseModel | None = None, *, agents: int = 1, seed: int = 0,
                 timeout: float = 600.0) -> None:
        self.params: Any = params if params is not None else self.Params()
        self.agents = agents
        self.seed = seed
        self.timeout = timeout

    def agent_args(self, index: int) -> dict[str, Any]:
        """The constructor's keyword arguments of agent ``index`` (msgpack-able when agents
        run on nodes). Default: none."""
        return {}

    async def setup(self, sim: Sim) -> None:
        """Before round 1 (not again on a resume or fork), after :meth:`start`: fill
        ``sim.state``."""

    async def start(self, sim: Sim) -> None:
        """Once the agents stand, on every start (fresh, resumed or forked): what the run
        needs beside its agents and its state (model actors, say), made from what the run
        continues with. On a fresh start it runs before :meth:`setup` (``sim.state`` is
        empty, ``sim.round`` 0); on a resume or fork after the checkpoint is restored
        (``sim.state``, ``sim.params`` and the agents' states are the checkpoint's,
        ``sim.round`` its round)."""

    async def step(self, sim: Sim) -> None:
        """One round: ask agents (``sim.call_many``), update ``sim.state``, and record
        the round's metrics (``sim.record``)."""
        raise NotImplementedError(f"{type(self).__name__} does not define step()")

    async def finish(self, sim: Sim) -> None:
        """After the last round (a closing question, say; what it leaves in
        ``sim.state`` is the run result's ``state``)."""

    # -- used by the runner -------------------------------------------------------------

    def name_of(self, index: int) -> str:
        """The actor name of agent ``index``."""
        return f"{self.name_prefix}{index}"

    @classmethod
    def make_params(cls, values: Mapping[str, Any]) -> BaseModel:
        """``Params`` from ``values`` (raw ``--set`` strings are parsed as JSON first).

        A name ``Params`` does not declare is refused (a typo in ``--set`` would otherwise
        run the default silently), unless ``Params`` allows extra fields.
        """
        fields = cls.Params.model_fields
        unknown = sorted(set(values) - set(fields))
        if unknown and cls.Params.model_config.get("extra") != "allow":
            known = ", ".join(fields) or "none"
            raise ParamsError(f"{cls.__name__} has no parameter "
                              f"{', '.join(map(repr, unknown))} (known: {known})")
        try:
            return cls.Params(**dict(values))
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(map(str, e['loc'])) or 'params'}: {e['msg']} (got {e['input']!r})"
                for e in exc.errors())
            raise ParamsError(f"{cls.__name__}: bad parameters: {problems}") from None


def parse_sets(items: Sequence[str]) -> dict[str, Any]:
    """``["k=v", ...]`` as a dict; each value read as JSON when it is JSON, else a string."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ParamsError(f"--set takes key=value, not {item!r}")
        try:
            out[key.strip()] = json.loads(raw)
        except json.JSONDecodeError:
            out[key.strip()] = raw
    return out


def _split(spec: str) -> tuple[str, str]:
    where, sep, name = spec.rpartition(":")
    if not sep or not where or not name:
        raise ScenarioError(f"a scenario is FILE.py:Class or module:Class, not {spec!r}")
    return where, name


def _import(where: str) -> Any:
    if where.endswith(".py"):
        path = Path(where).resolve()
        if not path.is_file():
            raise ScenarioError(f"no scenario file {where!r}")
        folder, module = str(path.parent), path.stem
        if folder not in sys.path:
            sys.path.insert(0, folder)  # its module is then `module` here and on nodes
        loaded = sys.modules.get(module)
        if loaded is not None and Path(getattr(loaded, "__file__", "") or "").resolve() == path:
            return loaded
        try:
            return import_file(path, module)
        except ImportError as exc:
            if exc.path != str(path):
                raise
            raise ScenarioError(f"cannot load {where!r} as Python") from None
    try:
        return importlib.import_module(where)
    except ImportError as exc:
        raise ScenarioError(f"cannot import {where!r}: {exc}") from None


def load_scenario(spec: str) -> type[Scenario]:
    """The Scenario class named by ``spec``: ``path/to/file.py:Class`` (its folder joins
    ``sys.path``, so it imports as its file's stem) or ``package.module:Class``."""
    where, name = _split(spec)
    cls = getattr(_import(where), name, None)
    if not (isinstance(cls, type) and issubclass(cls, Scenario)):
        raise ScenarioError(f"{spec!r} is not a Scenario subclass")
    if not hasattr(cls, "agent"):
        raise ScenarioError(f"{spec!r} does not say its agent class (`agent = ...`)")
    return cls


def resolve_class(agent: type[Actor] | str) -> type[Actor]:
    """An agent class from a class or ``"module:Class"``."""
    if isinstance(agent, type):
        return agent
    where, name = _split(agent)
    cls = getattr(_import(where), name, None)
    if not (isinstance(cls, type) and issubclass(cls, Actor)):
        raise ScenarioError(f"{agent!r} is not an actor class")
    return cls


def takes_name(cls: type[Actor]) -> bool:
    """Whether ``cls(...)`` takes a ``name`` argument."""
    try:
        params = inspect.signature(cls).parameters
    except (TypeError, ValueError):
        return False
    return "name" in params and params["name"].kind is not inspect.Parameter.POSITIONAL_ONLY
