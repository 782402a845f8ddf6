"""Helpers shared by every benchmark script; stdlib only, so that the peers' scripts, which
run in their own virtual environments without agentplex, import it too (by path).

Every figure is printed as one JSON line, by :func:`emit` and nothing else::

    {"bench": "roundtrip", "impl": "asyncio", "n": 20000, "value": 251234.5, "unit": "calls/s"}

Extra keys may follow: ``wall`` (the rate by wall-clock time), ``callers``, ``rounds``,
``seconds``, ``added_mib``, or ``skipped`` (why; such a figure has ``"value": null``).
"""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "SPAWN_LIMITS",
    "Case",
    "Sizes",
    "bench_main",
    "emit",
    "measure_spawn",
    "rss_bytes",
    "run_cases",
    "run_spawn_children",
    "sizes",
]

_PAGE = os.sysconf("SC_PAGE_SIZE")


def emit(bench: str, impl: str, n: int, value: float | None, unit: str, **extra: Any) -> None:
    """Print one figure as a JSON line (and flush, so a parent reading us sees it at once)."""
    line: dict[str, Any] = {"bench": bench, "impl": impl, "n": n,
                            "value": None if value is None else round(value, 3), "unit": unit}
    line.update(extra)
    print(json.dumps(line), flush=True)


def rss_bytes() -> int:
    """Resident set size of this process, from ``/proc/self/statm``."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * _PAGE


class Sizes:
    """Problem sizes for one run (full or ``--quick``)."""

    def __init__(self, quick: bool) -> None:
        self.quick = quick
        self.roundtrip = 500 if quick else 20_000
        self.callers = 10 if quick else 100
        self.calls_per_caller = 20 if quick else 200
        self.subscribers = 1_000
        self.broadcast_rounds = 2 if quick else 20
        self.spawn_ns: tuple[int, ...] = (1_000,) if quick else (10_000, 100_000, 1_000_000)
        self.repeats = 1 if quick else 5


def sizes(argv: Sequence[str]) -> Sizes:
    """Sizes chosen by the command line (``--quick`` for a smoke run)."""
    return Sizes("--quick" in argv)


@dataclass
class Case:
    """One figure to measure: ``run(k)`` performs ``k`` operations of ``bench``."""

    bench: str
    impl: str
    n: int
    run: Callable[[int], Awaitable[None]]
    unit: str
    extra: dict[str, Any] = field(default_factory=dict)


async def run_cases(cases: Sequence[Case], repeats: int) -> None:
    """Measure every case ``repeats`` times, round robin, and print the best rate of each.

    Rates are operations per second of the process's CPU time (``time.process_time``):
    every benchmark is one single-threaded event loop that never sleeps, so its CPU time
    is its cost, and other load on a shared machine barely moves it (wall-clock rates
    are kept as ``wall``). Round robin puts a baseline and ours under the same
    conditions, and the best of several runs is the least disturbed one.
    """
    for case in cases:
        await case.run(max(1, case.n // 20))  # warm up
    cpu = dict.fromkeys(range(len(cases)), 0.0)
    wall = dict.fromkeys(range(len(cases)), 0.0)
    for _ in range(repeats):
        for i, case in enumerate(cases):
            gc.collect()
            w0, c0 = time.perf_counter(), time.process_time()
            await case.run(case.n)
            c1, w1 = time.process_time(), time.perf_counter()
            cpu[i] = max(cpu[i], case.n / max(c1 - c0, 1e-9))
            wall[i] = max(wall[i], case.n / max(w1 - w0, 1e-9))
    for i, case in enumerate(cases):
        emit(case.bench, case.impl, case.n, cpu[i], case.unit, wall=round(wall[i], 1),
             **case.extra)


SPAWN_LIMITS = {"seconds": 60.0, "bytes": 3 * 2**30}
"""A spawn size is skipped when the previous size's rate or memory per agent projects it
past these limits (so slow peers stay within the benchmark's time budget)."""


def run_spawn_children(script: str, impls: Sequence[str], ns: Sequence[int]) -> None:
    """Run ``script --spawn-child IMPL N`` in a fresh interpreter for each implementation
    and size, re-printing its JSON lines; sizes projected past :data:`SPAWN_LIMITS` from
    the previous size's figures are reported as skipped instead."""
    for impl in impls:
        rate: float | None = None
        per_agent: float | None = None
        for n in ns:
            reason = None
            if rate is not None and n / rate > SPAWN_LIMITS["seconds"]:
                reason = (f"projected {n / rate:.0f} s from the previous size's rate, "
                          f"over the {SPAWN_LIMITS['seconds']:.0f} s cap")
            elif per_agent is not None and n * per_agent > SPAWN_LIMITS["bytes"]:
                reason = (f"projected {n * per_agent / 2**30:.1f} GiB from the previous "
                          f"size, over the {SPAWN_LIMITS['bytes'] / 2**30:.0f} GiB cap")
            if reason is not None:
                emit("spawn", impl, n, None, "agents/s", skipped=reason)
                emit("spawn_memory", impl, n, None, "bytes/agent", skipped=reason)
                continue
            proc = subprocess.run(
                [sys.executable, script, "--spawn-child", impl, str(n)],
                capture_output=True, text=True, check=False,
            )
            if proc.returncode != 0:
                sys.stderr.write(proc.stderr)
                emit("spawn", impl, n, None, "agents/s",
                     skipped=f"child failed with exit code {proc.returncode}")
                continue
            for raw in proc.stdout.splitlines():
                line = json.loads(raw)
                if line["bench"] == "spawn":
                    rate = line["value"]
                elif line["bench"] == "spawn_memory":
                    per_agent = line["value"]
                print(raw, flush=True)


async def measure_spawn(impl: str, n: int, spawn: Callable[[int], Awaitable[Any]]) -> Any:
    """Time ``spawn(n)`` (CPU time, as :func:`run_cases`) and the resident memory it adds;
    print both figures.

    ``spawn`` must keep what it creates alive (it returns it)."""
    gc.collect()
    rss0 = rss_bytes()
    w0, c0 = time.perf_counter(), time.process_time()
    keep = await spawn(n)
    cpu, wall = time.process_time() - c0, time.perf_counter() - w0
    gc.collect()
    added = rss_bytes() - rss0
    emit("spawn", impl, n, n / cpu, "agents/s", wall=round(n / wall, 1),
         seconds=round(wall, 3))
    emit("spawn_memory", impl, n, added / n, "bytes/agent",
         added_mib=round(added / 2**20, 1))
    return keep


async def bench_main(
    argv: Sequence[str],
    script: str,
    impls: Sequence[str],
    bench: Callable[[Sizes], Awaitable[None]],
    spawn_child: Callable[[str, int], Awaitable[Any]],
) -> None:
    """The command line every benchmark script shares: ``--spawn-child IMPL N`` (one spawn
    measurement in a fresh process), ``--no-spawn``, and the sizes :func:`sizes` reads."""
    if "--spawn-child" in argv:
        i = list(argv).index("--spawn-child")
        await spawn_child(argv[i + 1], int(argv[i + 2]))
        return
    sz = sizes(argv)
    await bench(sz)
    if "--no-spawn" not in argv:
        run_spawn_children(script, impls, sz.spawn_ns)

