"""Batch placement: ``spawn_many`` against one spawn at a time, in the same run.

Prints JSON lines (``benchmarks/_benchlib.py``):

- the scheduler alone placing one batch on 100 nodes (``place_many``: cost per node)
  against placing the same actors one ``place`` at a time;
- a head and four node processes (``agentplex head`` / ``agentplex node``): agents placed
  per second of critical-path CPU time (the head's, the busiest node's and the client's;
  the wall-clock rate on the shared machine rides along as ``wall_rate``) with ``spawn_many``,
  against the old path (one ``spawn`` request at a time), and the resident memory of
  each node process afterwards (``VmRSS`` from ``/proc``);
- Ray as the peer: Ray actors created one per agent (each a process), and our
  ``RayCluster.spawn_many`` hosting a batch in one Ray worker;
- ``--ray-restart N``: that worker, hosting N agents, killed; the time until Ray restarted
  it and every agent is back from its checkpoint, against the batch's first start.

    python benchmarks/bench_placement.py [--agents 100000] [--million] [--ray-actors 100]
        [--ray-restart 10000]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # tests.support (the actors and the daemon helper)
sys.path.insert(0, str(ROOT / "benchmarks"))

from tests.support.daemons import Daemons  # noqa: E402

from _benchlib import emit  # noqa: E402
from agentplex import connect  # noqa: E402
from agentplex.cluster import ClusterClient, NodeSpec, Resources, Scheduler  # noqa: E402

ACTOR = "tests.support.actors:Counter"
NODES = ["n0", "n1", "n2", "n3"]
SMALL = Resources(cpus=0.001)


def rss_of(pid: int) -> int:
    """Resident memory of process ``pid`` in bytes (``VmRSS`` in ``/proc/PID/status``)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for {pid}")


_TICK = os.sysconf("SC_CLK_TCK")


def cpu_of(pid: int) -> float:
    """CPU seconds (user + system) process ``pid`` has used, from ``/proc/PID/stat``."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


class CpuMeter:
    """CPU time used by the head, the nodes and this process over a span: the machine is
    shared (its load varies), so rates are given per CPU time, as the other benchmarks do.
    ``critical`` is the head's, the busiest node's and this process's CPU time added up:
    the wall time on otherwise idle cores, where the nodes work in parallel."""

    def __init__(self, daemons: Daemons, names: list[str]) -> None:
        self.pids = {n: daemons.pid(n) for n in names}

    def __enter__(self) -> CpuMeter:
        self.start = {n: cpu_of(p) for n, p in self.pids.items()}
        self.me = time.process_time()
        self.wall = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall = time.perf_counter() - self.wall
        self.used = {n: cpu_of(p) - self.start[n] for n, p in self.pids.items()}
        self.used["client"] = time.process_time() - self.me
        nodes = [v for n, v in self.used.items() if n.startswith("n")]
        self.total = sum(self.used.values())
        self.critical = self.used["head"] + max(nodes) + self.used["client"]

    def figures(self) -> dict[str, object]:
        return {"wall_s": round(self.wall, 3), "cpu_total_s": round(self.total, 3),
                "critical_cpu_s": round(self.critical, 3),
                "cpu_s": {n: round(v, 3) for n, v in self.used.items()}}


def bench_scheduler() -> None:
    for n_nodes, batch in ((100, 1_000_000), (1000, 1_000_000)):
        s = Scheduler()
        for i in range(n_nodes):
            s.add_node(NodeSpec(id=f"n{i}", cpus=100_000))
        for policy in ("spread", "pack"):
            c0 = time.process_time()
            placed = s.place_many(SMALL, batch, policy=policy)
            cpu = time.process_time() - c0
            emit("place_batch", f"scheduler.place_many {policy}", batch, batch / cpu,
                 "agents/s", nodes=n_nodes, us_per_node=round(cpu / n_nodes * 1e6, 1),
                 placements=len(placed))
            for p in placed:
                s.release(p)
    s = Scheduler()
    for i in range(100):
        s.add_node(NodeSpec(id=f"n{i}", cpus=100_000))
    n = 20_000
    c0 = time.process_time()
    for i in range(n):
        s.place(SMALL, policy="spread" if i % 2 else "pack")
    emit("place_batch", "scheduler.place one at a time (baseline)", n,
         n / (time.process_time() - c0), "agents/s", nodes=100)


async def bench_processes(agents: int, million: bool, old: int) -> None:
    daemons = Daemons()
    try:
        endpoint = daemons.head("--ping-interval", "2", "--dead-after", "60")
        daemons.nodes(endpoint, NODES, "--cpus", "100000", "--allow", "tests.support")
        async with connect(endpoint, heartbeat_timeout=60) as rt:
            client = ClusterClient(rt, timeout=600)
            names = ["head", *NODES]
            # the old path: one spawn request at a time
            with CpuMeter(daemons, names) as m:
                for i in range(old):
                    await client.spawn(ACTOR, name=f"old-{i}", resources=SMALL,
                                       placement="spread")
            emit("place_processes", "spawn one at a time (baseline)", old, old / m.critical,
                 "agents/s", wall_rate=round(old / m.wall, 1), nodes=4, **m.figures())
            base = {n: rss_of(daemons.pid(n)) for n in NODES}
            sizes = [agents] + ([1_000_000] if million and agents < 1_000_000 else [])
            total = 0
            for k, size in enumerate(sizes):
                with CpuMeter(daemons, names) as m:
                    refs = await client.spawn_many(ACTOR, size, names=f"b{k}-",
                                                   resources=SMALL)
                total += size
                emit("place_processes", "spawn_many", size, size / m.critical, "agents/s",
                     wall_rate=round(size / m.wall, 1), nodes=4, **m.figures())
                # every agent answers (found by name from this process)
                sample = refs[:: max(1, size // 2000)]
                got = await asyncio.gather(*(r.call(1, timeout=120) for r in sample))
                assert got == [1] * len(sample), "agents did not answer"
                rss = {n: rss_of(daemons.pid(n)) for n in NODES}
                emit("node_rss", "spawn_many", total, max(rss.values()) / 2**20,
                     "MiB (largest node)", per_node_mib={
                         n: round(v / 2**20, 1) for n, v in rss.items()},
                     bytes_per_agent=round(sum(rss[n] - base[n] for n in NODES) / total, 1),
                     nodes=4)
    finally:
        daemons.close()


async def bench_node_death(agents: int, dead_after: float) -> None:
    """``kill -9`` of one of four nodes during a round of ``agents`` calls: half the agents
    restart on failure (from their checkpoint, and are asked again), half are lost; the
    time from the kill to the round's end."""
    daemons = Daemons()
    try:
        beat = ("--heartbeat-timeout", f"{2 * dead_after:g}")  # a starved node is not dead
        endpoint = daemons.head("--ping-interval", "0.5", "--dead-after", f"{dead_after:g}",
                                *beat)
        daemons.nodes(endpoint, NODES, "--cpus", "100000", "--allow", "tests.support", *beat)
        async with connect(endpoint, heartbeat_timeout=dead_after) as rt:
            client = ClusterClient(rt, timeout=600)
            half = agents // 2
            keep = await client.spawn_many(ACTOR, half, names="keep-", resources=SMALL,
                                           restart="on-failure")
            drop = await client.spawn_many(ACTOR, agents - half, names="drop-",
                                           resources=SMALL)
            everyone = [*keep.names, *drop.names]
            first = await client.call_round(everyone, 1, timeout=120)
            assert len(first.replies) == agents, "the first round did not complete"
            await client.checkpoint()
            w0 = time.perf_counter()
            round_ = asyncio.ensure_future(client.call_round(
                everyone, {"sleep": 0.2, "add": 1}, timeout=120))
            await asyncio.sleep(0.5)
            killed = time.perf_counter()
            os.kill(daemons.pid("n3"), 9)
            result = await asyncio.wait_for(round_, 600)
            end = time.perf_counter()
            emit("node_death_round", "kill -9 of 1 of 4 nodes mid-round", agents,
                 end - killed, "s from kill to round end", round_s=round(end - w0, 3),
                 replies=len(result.replies), lost=len(result.lost),
                 asked_again=result.asked_again, errors=len(result.errors),
                 dead_after_s=dead_after,
                 restored=sum(1 for v in result.replies.values() if v == 2))
    finally:
        daemons.close()


def ray_share(agents: int) -> Resources:
    """Each agent's request when ``agents`` share one CPU of the bench's 2-CPU Ray (Ray
    adds a worker's agents' requests up: ``SMALL`` would ask 10 CPUs for 10,000)."""
    return Resources(cpus=min(SMALL.cpus, 1 / agents))


def bench_ray(actors: int, batch: int, restart: int) -> None:
    try:
        import ray
    except ImportError:
        emit("place_ray", "ray actors", actors, None, "agents/s", skipped="ray not installed")
        return
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.ERROR, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": os.pathsep.join(
                 [str(ROOT), str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}})

    @ray.remote(num_cpus=0)
    class Agent:
        def __init__(self, start: int) -> None:
            self.count = start

        def add(self, n: int) -> int:
            self.count += n
            return self.count

    try:
        w0 = time.perf_counter()
        hosts = [Agent.remote(i) for i in range(actors)]  # type: ignore[attr-defined]
        ray.get([h.add.remote(1) for h in hosts])
        wall = time.perf_counter() - w0
        emit("place_ray", "ray actors, one per agent (peer)", actors, actors / wall,
             "agents/s", seconds=round(wall, 3))
        for h in hosts:
            ray.kill(h)
        del hosts

        async def ours() -> None:
            from agentplex.cluster import RayCluster

            cluster = await RayCluster.start(shutdown_ray=False)
            try:
                w0 = time.perf_counter()
                refs = await cluster.spawn_many(ACTOR, batch, resources=ray_share(batch),
                                                workers=1)
                wall = time.perf_counter() - w0
                await asyncio.gather(*(r.call(1, timeout=60) for r in refs[:: batch // 100]))
                emit("place_ray", "agentplex RayCluster.spawn_many, 1 Ray worker", batch,
                     batch / wall, "agents/s", seconds=round(wall, 3))
            finally:
                await cluster.close()

        asyncio.run(ours())
        if restart:
            asyncio.run(ray_restart(restart))
    finally:
        ray.shutdown()


async def ray_restart(agents: int) -> None:
    """SIGKILL the Ray worker hosting ``agents`` agents (``restart="on-failure"``): seconds
    until Ray restarted it and the head hosted them again from their checkpoint, against
    the same batch's first start and its checkpoint, in the same run."""
    from agentplex.cluster import RayCluster

    cluster = await RayCluster.start(checkpoint_interval=None, shutdown_ray=False)
    try:
        head0 = time.process_time()
        w0 = time.perf_counter()
        refs = await cluster.spawn_many(ACTOR, agents, resources=ray_share(agents),
                                        workers=1, restart="on-failure")
        spawned = time.perf_counter() - w0
        await cluster.call_round(refs, 1, timeout=300)  # every agent's count is 1 now
        pid = await refs[0].call("pid", timeout=60)
        w0, worker0 = time.perf_counter(), cpu_of(pid)
        await cluster.checkpoint(timeout=300)
        saved, saved_cpu = time.perf_counter() - w0, cpu_of(pid) - worker0
        head1 = time.process_time()
        w0 = time.perf_counter()
        os.kill(pid, 9)
        where = await cluster.recover(refs.names[:1])
        back = time.perf_counter() - w0
        head_cpu = time.process_time() - head1
        new = cluster.where(refs.names[0])
        worker_cpu = cpu_of(new["pid"]) if new else None
        result = await cluster.call_round(refs, 0, timeout=300)
        restored = sum(1 for v in result.replies.values() if v == 1)
        emit("ray_restart", "agentplex RayCluster, spawn_many start (baseline)", agents,
             agents / spawned, "agents/s", seconds=round(spawned, 3),
             head_cpu_s=round(head1 - head0, 3))
        emit("ray_restart", "agentplex RayCluster, checkpoint", agents, agents / saved,
             "agents/s", seconds=round(saved, 3), worker_cpu_s=round(saved_cpu, 3))
        emit("ray_restart", "agentplex RayCluster, SIGKILL to agents back", agents,
             agents / back, "agents/s", seconds=round(back, 3), head_cpu_s=round(head_cpu, 3),
             worker_cpu_s=worker_cpu, running=len(where["running"]), restored=restored,
             errors=len(result.errors), lost=len(result.lost))
    finally:
        await cluster.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", type=int, default=100_000)
    parser.add_argument("--million", action="store_true", help="also place 1M agents")
    parser.add_argument("--old", type=int, default=1000, help="agents placed one at a time")
    parser.add_argument("--ray-actors", type=int, default=100,
                        help="Ray actors (one process each) for the peer figure; 0 skips")
    parser.add_argument("--ray-batch", type=int, default=10_000)
    parser.add_argument("--ray-restart", type=int, default=0, metavar="AGENTS",
                        help="also SIGKILL a Ray worker hosting this many agents")
    parser.add_argument("--no-processes", action="store_true")
    parser.add_argument("--node-death", type=int, default=0, metavar="AGENTS",
                        help="also kill -9 a node during a round of this many agents")
    parser.add_argument("--dead-after", type=float, default=5.0)
    args = parser.parse_args()
    bench_scheduler()
    if not args.no_processes:
        asyncio.run(bench_processes(args.agents, args.million, args.old))
    if args.node_death:
        asyncio.run(bench_node_death(args.node_death, args.dead_after))
    if args.ray_actors:
        bench_ray(args.ray_actors, args.ray_batch, args.ray_restart)


if __name__ == "__main__":
    main()
