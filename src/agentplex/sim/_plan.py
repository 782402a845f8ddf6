"""Interventions and surveys, declared on the command line or in a config file, applied by
the runner without touching the scenario."""

from __future__ import annotations

import json
import random
import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, ValidationError, field_validator

from ._errors import PlanError
from ._scenario import parse_sets

__all__ = ["Intervention", "Plan", "Survey", "choose", "load_plan", "parse_target"]


def parse_target(to: str) -> tuple[str, str]:
    """``all``, ``sample=K`` (K agents) or ``sample=0.1`` (a share), ``group=NAME``."""
    kind, _, arg = to.partition("=")
    kind = kind.strip()
    if kind == "all" and not arg:
        return kind, ""
    if kind == "sample":
        try:
            value = float(arg)
        except ValueError:
            raise PlanError(f"sample=K takes a count or a share, not {to!r}") from None
        if value <= 0 or (value != int(value) and value >= 1):
            raise PlanError(f"a sample is a count ≥ 1 or a share in (0, 1), not {to!r}")
        return kind, arg
    if kind == "group" and arg:
        return kind, arg
    raise PlanError(f"a target is all, sample=K, sample=SHARE or group=NAME, not {to!r}")


class _Step(BaseModel):
    round: int = Field(ge=1)
    to: str = "all"

    @field_validator("to")
    @classmethod
    def _target(cls, value: str) -> str:
        parse_target(value)
        return value


class Intervention(_Step):
    """At round ``round`` (before its step): ``message`` to the agents ``to`` (they hear
    it: their ``observe``), and/or parameters changed (``set``)."""

    message: str | None = None
    set: dict[str, Any] = Field(default_factory=dict)


class Survey(_Step):
    """At the end of round ``round``: ask the agents ``to`` the ``question``; the answers
    go to ``surveys.parquet``. Unless ``memory``, each agent's state is as before."""

    question: str
    memory: bool = False


class Plan(BaseModel):
    """What the operator does during a run."""

    interventions: list[Intervention] = Field(default_factory=list)
    surveys: list[Survey] = Field(default_factory=list)
    groups: dict[str, list[int]] = Field(default_factory=dict)
    """Named groups of agent indices (beside the scenario's own ``groups``)."""

    def at(self, number: int) -> tuple[list[Intervention], list[Survey]]:
        """The interventions and surveys of round ``number``, in declaration order."""
        return ([i for i in self.interventions if i.round == number],
                [s for s in self.surveys if s.round == number])

    def merged(self, other: Plan) -> Plan:
        return Plan(interventions=[*self.interventions, *other.interventions],
                    surveys=[*self.surveys, *other.surveys],
                    groups={**self.groups, **other.groups})


def _split_step(text: str, what: str) -> tuple[int, str, str]:
    head, sep, rest = text.partition(":")
    to, sep2, body = rest.partition(":")
    if not sep or not sep2 or not head.strip().isdigit() or not body:
        raise PlanError(f"{what} takes ROUND:TARGET:TEXT (e.g. 3:all:..., 3:sample=10:...,"
                        f" 3:group=NAME:...), not {text!r}")
    return int(head), to.strip(), body


def load_plan(path: Path | None = None, *, intervene: Sequence[str] = (),
              change: Sequence[str] = (), survey: Sequence[str] = ()) -> Plan:
    """The plan of a config file (``.toml``, ``.yaml``/``.yml`` or ``.json``: lists
    ``intervention`` and ``survey``, table ``groups``) plus the command line's
    ``--intervene ROUND:TARGET:TEXT``, ``--change ROUND:key=value`` and
    ``--survey ROUND:TARGET:QUESTION``."""
    data: Mapping[str, Any] = {}
    if path is not None:
        data = _read(path)
    try:
        plan = Plan(interventions=data.get("intervention", data.get("interventions", [])),
                    surveys=data.get("survey", data.get("surveys", [])),
                    groups=data.get("groups", {}))
        extra = Plan(
            interventions=[*({"round": r, "to": to, "message": text}
                             for r, to, text in (_split_step(t, "--intervene")
                                                 for t in intervene)),
                           *({"round": int(r), "set": parse_sets([kv])}
                             for r, kv in (_change(c) for c in change))],
            surveys=[{"round": r, "to": to, "question": text}
                     for r, to, text in (_split_step(t, "--survey") for t in survey)])
    except ValidationError as exc:
        raise PlanError(f"bad plan: {exc}") from None
    return plan.merged(extra)


def _change(text: str) -> tuple[str, str]:
    head, sep, kv = text.partition(":")
    if not sep or not head.strip().isdigit() or "=" not in kv:
        raise PlanError(f"--change takes ROUND:key=value, not {text!r}")
    return head.strip(), kv


def _read(path: Path) -> Mapping[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise PlanError(f"cannot read the plan {path}: {exc}") from None
    try:
        if path.suffix == ".toml":
            return tomllib.loads(text)
        if path.suffix in (".yaml", ".yml"):
            try:
                import yaml
            except ImportError:
                raise PlanError("a YAML plan needs PyYAML (pip install pyyaml)") from None
            try:
                loaded = yaml.safe_load(text)
            except yaml.YAMLError as exc:
                raise PlanError(f"cannot parse {path}: {exc}") from None
        elif path.suffix == ".json":
            loaded = json.loads(text)
        else:
            raise PlanError(f"a plan is .toml, .yaml or .json, not {path.name!r}")
    except (tomllib.TOMLDecodeError, json.JSONDecodeError, ValueError) as exc:
        raise PlanError(f"cannot parse {path}: {exc}") from None
    if not isinstance(loaded, Mapping):
        raise PlanError(f"{path} does not hold a table")
    return loaded


def choose(to: str, count: int, groups: Mapping[str, Sequence[int]], rng: random.Random
           ) -> list[int]:
    """The agent indices that target ``to`` names among ``count`` agents (sorted)."""
    kind, arg = parse_target(to)
    if kind == "all":
        return list(range(count))
    if kind == "group":
        if arg not in groups:
            raise PlanError(f"no group {arg!r} (known: {', '.join(sorted(groups)) or 'none'})")
        bad = [i for i in groups[arg] if not 0 <= int(i) < count]
        if bad:
            raise PlanError(f"group {arg!r} names agents beyond {count - 1}: {bad[:5]}")
        return sorted({int(i) for i in groups[arg]})
    value = float(arg)
    k = int(value) if value >= 1 else max(1, round(value * count))
    return sorted(rng.sample(range(count), min(k, count)))
