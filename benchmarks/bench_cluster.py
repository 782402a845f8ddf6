"""Cluster spawn and placement timings.

Prints JSON lines: the scheduler's placement rate alone; spawning 1,000 small actors over
four nodes in this process (``LocalNode``); and the same over the ZeroMQ bus with a head and
four node processes (``agentplex head`` / ``agentplex node``), as users run it.

    python benchmarks/bench_cluster.py [--actors 1000] [--no-processes]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _benchlib import emit
from agentplex import connect
from agentplex.cluster import GPU, Cluster, ClusterClient, NodeSpec, Resources, Scheduler

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the actor spawned by path lives in tests/support/actors.py
ACTOR = "tests.support.actors:Counter"


def nodes() -> list[NodeSpec]:
    gpu = [NodeSpec(id=f"gpu-{i}", cpus=16, labels={"kind": "gpu"},
                    gpus=[GPU(index=g, total_memory="24GiB") for g in range(2)])
           for i in range(2)]
    return gpu + [NodeSpec(id=f"cpu-{i}", cpus=16, labels={"kind": "cpu"}) for i in range(2)]


def bench_scheduler(requests: int) -> None:
    s = Scheduler()
    for i in range(100):
        s.add_node(NodeSpec(id=f"n{i}", cpus=64, gpus=[GPU(index=g, total_memory="80GiB")
                                                       for g in range(8)]))
    start = time.perf_counter()
    for i in range(requests):
        s.place(Resources(cpus=0.1, gpus=0.25 if i % 4 == 0 else 0.0,
                          gpu_memory="1GiB" if i % 4 == 0 else 0),
                policy="spread" if i % 2 else "pack")
    emit("place", "scheduler (100 nodes)", requests, requests / (time.perf_counter() - start),
         "placements/s")


async def bench_in_process(actors: int) -> None:
    async with Cluster(checkpoint_interval=None) as cluster:
        for spec in nodes():
            await cluster.add_node(spec)
        start = time.perf_counter()
        refs = [await cluster.spawn(ACTOR, name=f"a{i}", resources=Resources(cpus=0.01),
                                    placement="spread") for i in range(actors)]
        spawned = time.perf_counter() - start
        await asyncio.gather(*(r.call(1, timeout=60) for r in refs))
        emit("spawn", "agentplex cluster, 4 in-process nodes", actors, actors / spawned,
             "actors/s", seconds=round(spawned, 3))


async def bench_processes(actors: int) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)}
    logs = Path(tempfile.mkdtemp(prefix="agentplex-bench-"))
    procs: list[subprocess.Popen[bytes]] = []

    def start(name: str, *args: str) -> subprocess.Popen[bytes]:
        with (logs / f"{name}.log").open("w") as log:
            proc = subprocess.Popen([sys.executable, "-m", "agentplex", *args], cwd=ROOT,
                                    env=env, stdout=log, stderr=subprocess.STDOUT)
        procs.append(proc)
        return proc

    def wait_for(name: str, needle: str) -> str:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            for line in (logs / f"{name}.log").read_text().splitlines():
                if needle in line:
                    return line
            time.sleep(0.05)
        raise RuntimeError(f"{name} never printed {needle!r}")

    try:
        start("head", "head", "--bind", "tcp://127.0.0.1:0")
        endpoint = wait_for("head", "listening on").split()[-1]
        for spec in nodes():
            extra = ["--gpus", "2", "--gpu-memory", "24GiB"] if spec.gpus else []
            start(spec.id, "node", "--head", endpoint, "--id", spec.id, "--cpus", "16",
                  "--allow", "tests.support", *extra)
        for spec in nodes():
            wait_for(spec.id, "joined")
        async with connect(endpoint) as rt:
            client = ClusterClient(rt, timeout=120)
            start_t = time.perf_counter()
            refs = [await client.spawn(ACTOR, name=f"a{i}", resources=Resources(cpus=0.01),
                                       placement="spread") for i in range(actors)]
            spawned = time.perf_counter() - start_t
            t = time.perf_counter()
            await asyncio.gather(*(r.call(1, timeout=120) for r in refs))
            first_calls = time.perf_counter() - t
        emit("spawn", "agentplex cluster, head + 4 node processes", actors, actors / spawned,
             "actors/s", seconds=round(spawned, 3))
        emit("first_call", "agentplex cluster, head + 4 node processes", actors,
             actors / first_calls, "calls/s", seconds=round(first_calls, 3))
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--actors", type=int, default=1000)
    parser.add_argument("--no-processes", action="store_true")
    args = parser.parse_args()
    bench_scheduler(10_000)
    asyncio.run(bench_in_process(args.actors))
    if not args.no_processes:
        asyncio.run(bench_processes(args.actors))


if __name__ == "__main__":
    main()
