"""The simulation round both sides of ``bench_round.py`` run; stdlib only.

N agents in one hub; a round is a fan-out of ``round {r}`` to all of them (each reply
draws a number, no model) followed by one broadcast of the mean, complete once every agent
has observed it (the workload of ``examples/simulation.py``). Each implementation supplies
``create_and_join(n)`` and ``play_round(r)``; :func:`run` times them and prints the figures.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Awaitable, Callable
from typing import Any

from _benchlib import emit, rss_bytes

__all__ = ["HEARD", "run"]

HEARD = 4
"""How many of the last messages an agent keeps (its own state)."""


async def run(impl: str, n: int, rounds: int,
              create_and_join: Callable[[int], Awaitable[Any]],
              play_round: Callable[[Any, int], Awaitable[float]],
              bare: Callable[[int], Any]) -> None:
    """Print ``round_own_memory`` (``bare(n)``: the agents alone, not joined to anything),
    then ``round_create`` (create N agents and join them to one hub), ``round`` (the best
    of ``rounds`` rounds, agents/s of CPU time; every round in ``rounds_cpu``) and
    ``round_memory`` (resident bytes per agent after the last round, everything
    included). ``play_round`` returns the mean it broadcast."""
    gc.collect()
    rss0 = rss_bytes()
    own = bare(n)
    gc.collect()
    emit("round_own_memory", impl, n, (rss_bytes() - rss0) / n, "bytes/agent")
    del own
    gc.collect()
    rss0 = rss_bytes()
    c0 = time.process_time()
    hub = await create_and_join(n)
    cpu = time.process_time() - c0
    emit("round_create", impl, n, n / cpu, "agents/s", seconds=round(cpu, 3))
    per_round: list[float] = []
    for r in range(rounds):
        gc.collect()
        c0 = time.process_time()
        mean = await play_round(hub, r)
        per_round.append(time.process_time() - c0)
        if not 0 <= mean <= 100:
            raise RuntimeError(f"round {r}: mean {mean} out of range")
    emit("round", impl, n, n / min(per_round), "agents/s",
         rounds_cpu=[round(s, 3) for s in per_round])
    gc.collect()
    emit("round_memory", impl, n, (rss_bytes() - rss0) / n, "bytes/agent")
