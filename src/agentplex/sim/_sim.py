"""What a scenario's ``step`` sees: :class:`Sim`."""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from ..message import Msg
from ..runtime import (
    Actor,
    ActorNotFound,
    ActorRef,
    ActorStopped,
    CallTimeout,
    PeerLost,
    PerActor,
    Runtime,
)
from ..tracing.lowlevel import transcribe
from ._calls import ask_all, ask_each, tell_all

__all__ = ["OPERATOR", "Sim"]

OPERATOR = "operator"
"""The name the driver's own messages carry when the runner makes them."""


UNREACHABLE = (CallTimeout, PeerLost, ActorNotFound, ActorStopped)
"""What a call to an agent whose node died meets."""


def round_rng(seed: int, number: int) -> random.Random:
    """The random generator of round ``number`` of a run seeded ``seed``."""
    return random.Random(seed * 1_000_003 + number)


class Sim:
    """A run as its scenario's ``step`` sees it.

    Attributes:
        round: the round now running (1, 2, ...).
        agents: the agents' refs, in index order.
        rng: a ``random.Random`` seeded from the run's seed and the round.
        state: the environment (a JSON-able dict) that checkpoints keep.
        params: the scenario's parameters now (an intervention may change them).
        runtime: the runtime the driver calls through.
    """

    def __init__(self, runtime: Runtime, agents: Sequence[ActorRef], *, seed: int,
                 params: Any, timeout: float,
                 spawner: Callable[[type[Actor], Sequence[str], Sequence[dict[str, Any]]],
                                   Awaitable[Sequence[ActorRef]]] | None = None,
                 log: Callable[[str], None] | None = None) -> None:
        self.runtime = runtime
        self._spawner = spawner
        self._log = log
        self.agents = agents
        self.seed = seed
        self.params = params
        self.timeout = timeout
        self.round = 0
        self.rng = round_rng(seed, 0)
        self.state: dict[str, Any] = {}
        self.metrics: dict[str, Any] = {}
        self.timeouts = 0
        self.errors = 0
        self.first_error: str | None = None
        """The first failure of the round now running (reported with its counts)."""
        self.unreachable: set[str] = set()
        """Agents whose calls failed as if their node were gone (timed out, lost, not
        found): the runner asks the cluster about them after the round."""

    @property
    def names(self) -> Sequence[str]:
        """The agents' names, in index order (made on access for a big run)."""
        names = getattr(self.agents, "names", None)
        return names if names is not None else [r.name for r in self.agents]

    def _open_round(self, number: int) -> None:
        self.round = number
        self.rng = round_rng(self.seed, number)
        self.metrics = {}
        self.first_error = None
        self.unreachable = set()

    def _count(self, values: Sequence[Any], refs: Sequence[ActorRef | str]) -> None:
        for i, v in enumerate(values):
            if not isinstance(v, BaseException):
                continue
            if isinstance(v, UNREACHABLE):
                ref = refs[i]
                self.unreachable.add(ref.name if isinstance(ref, ActorRef) else ref)
            if isinstance(v, CallTimeout):
                self.timeouts += 1
            else:
                self.errors += 1
            if self.first_error is None:
                self.first_error = f"{type(v).__name__}: {v}"[:300]

    async def call_many(self, refs: Sequence[ActorRef | str], message: Any,
                        *, timeout: float | None = None) -> list[Any]:
        """Ask every agent of ``refs``: ``message`` is one message for all, or a list,
        tuple or ``PerActor`` of one message per ref (one fan-out either way). A list in
        ``refs`` order of each agent's reply, or the exception it raised or met (a
        ``CallTimeout`` after ``timeout`` seconds, default: the run's ``--timeout``).
        The driver's messages enter the transcript."""
        wait = self.timeout if timeout is None else timeout
        if isinstance(message, (list, tuple, PerActor)):
            seen: set[int] = set()
            for m in message:
                if id(m) not in seen:
                    seen.add(id(m))
                    transcribe(m, None)
            got = await ask_each(self.runtime, refs, message, wait)
        else:
            transcribe(message, None)
            got = await ask_all(self.runtime, refs, message, wait)
        self._count(got, refs)
        return got

    async def tell_many(self, refs: Sequence[ActorRef | str], message: Any, *,
                        timeout: float | None = None) -> None:
        """Let every agent of ``refs`` hear ``message`` (their ``observe``; no reply)."""
        transcribe(message, None)
        got = await tell_all(self.runtime, refs, message,
                             self.timeout if timeout is None else timeout)
        self._count(got, refs)

    def say(self, text: str, **metadata: Any) -> Msg:
        """A message from the operator (what ``call_many`` or ``tell_many`` then send)."""
        return Msg(OPERATOR, text, "user", metadata=metadata or None)

    async def spawn(self, cls: type[Actor], names: Sequence[str],
                    args: Sequence[dict[str, Any]]) -> Sequence[ActorRef]:
        """More actors where the run's agents live (in this process, or spread over the
        nodes): ``cls(**args[i])`` named ``names[i]``; stopped with the run. For what the
        agents use besides themselves (model actors, say), from :meth:`Scenario.start`."""
        if self._spawner is None:
            raise RuntimeError("this Sim cannot spawn (it was made outside a run)")
        return await self._spawner(cls, names, args)

    def log(self, text: str) -> None:
        """A line for whoever watches the run (``agentplex run`` prints it as the run
        goes); it is not recorded: use :meth:`note` for the transcript."""
        if self._log is not None:
            self._log(text)

    def note(self, text: str, **metadata: Any) -> Msg:
        """An operator's message for the transcript only (a round's outcome, say)."""
        msg = self.say(text, **metadata)
        transcribe(msg, None)
        return msg

    def record(self, **values: Any) -> None:
        """This round's metrics (numbers or short strings): one row per round, one
        column per name, in ``metrics.parquet``. Calling it again adds or replaces names."""
        for key, value in values.items():
            if key == "round":
                raise ValueError("'round' is the metrics' own column")
            self.metrics[key] = value
