"""Simulations at scale: N agents over K node processes — placement, memory, rounds and a
broadcast — with Ray actors and autogen-core's gRPC runtime as the peers, in one run.

For each N in ``--agents`` and K in ``--nodes`` a head and K node processes start on this
machine (``agentplex head`` / ``agentplex node``); one batch of N model-less voters
(``tests.support.actors:Voter``) is placed with ``spawn_many``; each round asks every voter
with one fan-out (``Runtime.call_many``); a broadcast is one ``publish`` to a topic all
voters subscribe to, timed until every voter confirms it heard it. Figures (wall clock):

- ``scale_place``: agents placed per second (one ``spawn_many``);
- ``scale_rss_per_node``: the largest node process's RSS after the rounds (MiB; the
  node's RSS before placement in ``idle_mib``, the growth per agent in ``bytes_per_agent``);
- ``scale_round``: seconds per round, with ``messages_per_s`` (a question and a reply each);
- ``scale_broadcast``: seconds from the publish until all N confirmed (the confirming
  round's own time is in ``confirm_s``).

Peers (same machine, same run): Ray actors (one Ray actor per agent, ``--ray-agents``) and
autogen-core's gRPC worker runtime (``benchmarks/peers/autogen_grpc_scale.py`` in its own
venv, ``--autogen-agents`` over 2 worker processes).

    python benchmarks/bench_scale.py [--agents 10000,100000,1000000] [--nodes 1,2,4]
        [--rounds 3] [--ray-agents 1000] [--autogen-agents 10000] [--quick] [--no-peers]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from _benchlib import emit
from agentplex import connect
from agentplex.cluster import ClusterClient, Resources

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the voters and the daemons helper live in tests/support

from tests.support.daemons import Daemons  # noqa: E402

IMPL = "agentplex"
VOTER = "tests.support.actors:Voter"
TOPIC = "everyone"
CHUNK = 100_000
"""Voters asked per fan-out (bounds the driver's memory on a million-agent round)."""


def _rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


async def _ask(rt: object, names: object, message: object, timeout: float) -> list[object]:
    out: list[object] = []
    for i in range(0, len(names), CHUNK):  # type: ignore[arg-type]
        out += await rt.call_many(names[i:i + CHUNK], message,  # type: ignore[attr-defined,index]
                                  timeout=timeout)
    return out


async def measure(endpoint: str, pids: list[int], agents: int, nodes: int, rounds: int,
                  broadcast: bool) -> None:
    timeout = max(120.0, agents / 2_000)
    async with connect(endpoint, heartbeat_timeout=timeout) as rt:
        client = ClusterClient(rt, timeout=timeout)
        idle = [_rss_mib(p) for p in pids]
        began = time.perf_counter()
        refs = await client.spawn_many(VOTER, agents, names="v-",
                                       resources=Resources(cpus=0),
                                       topic=TOPIC if broadcast else "")
        placed = time.perf_counter() - began
        emit("scale_place", IMPL, agents, agents / placed, "agents/s", nodes=nodes,
             seconds=round(placed, 3))
        names = refs.names
        for r in range(1, rounds + 1):
            began = time.perf_counter()
            replies = await _ask(rt, names, r, timeout)
            took = time.perf_counter() - began
            assert len(replies) == agents
            emit("scale_round", IMPL, agents, took, "s", nodes=nodes, round=r,
                 messages_per_s=round(2 * agents / took, 1))
        if broadcast:
            began = time.perf_counter()
            try:
                await asyncio.wait_for(rt.publish(TOPIC, "the mean was 33", timeout=timeout),
                                       timeout)
            except TimeoutError:
                emit("scale_broadcast", IMPL, agents, None, "s", nodes=nodes,
                     skipped=f"publish did not return within {timeout:g}s")
                return
            published = time.perf_counter() - began
            heard = await _ask(rt, names, "heard", timeout)
            took = time.perf_counter() - began
            confirm_began = time.perf_counter()
            await _ask(rt, names, "heard", timeout)
            confirm = time.perf_counter() - confirm_began
            emit("scale_broadcast", IMPL, agents, took, "s", nodes=nodes,
                 publish_s=round(published, 3), confirm_s=round(confirm, 3),
                 all_heard=sum(heard) == agents)  # type: ignore[arg-type]
        rss = [_rss_mib(p) for p in pids]
        emit("scale_rss_per_node", IMPL, agents, max(rss), "MiB", nodes=nodes,
             per_node=[round(x, 1) for x in rss], idle_mib=round(max(idle), 1),
             bytes_per_agent=round((sum(rss) - sum(idle)) * 2**20 / agents))


def run_ours(agents: int, nodes: int, rounds: int, broadcast: bool) -> None:
    daemons = Daemons()
    try:
        endpoint = daemons.head("--dead-after", "600")
        ids = [f"n{k}" for k in range(nodes)]
        daemons.nodes(endpoint, ids, "--allow", "tests.support")
        asyncio.run(measure(endpoint, [daemons.pid(i) for i in ids], agents, nodes, rounds,
                            broadcast))
    finally:
        daemons.close()


def run_ray(agents: int, rounds: int) -> None:
    """One Ray actor per agent (Ray's own way), on a local Ray with this machine's CPUs."""
    try:
        import ray
    except ImportError:
        emit("scale_place", "ray-actor", agents, None, "agents/s", skipped="ray not installed")
        return
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    ray.init(include_dashboard=False, logging_level=logging.ERROR, log_to_driver=False)
    try:
        @ray.remote(num_cpus=0)
        class Voter:
            def vote(self, r: int) -> int:
                return (hash(r) + id(self)) % 101

            def pid(self) -> int:
                return os.getpid()

        began = time.perf_counter()
        actors = [Voter.remote() for _ in range(agents)]  # type: ignore[attr-defined]
        pids = ray.get([a.pid.remote() for a in actors], timeout=1800)
        placed = time.perf_counter() - began
        emit("scale_place", "ray-actor", agents, agents / placed, "agents/s", nodes=1,
             seconds=round(placed, 3))
        for r in range(1, rounds + 1):
            began = time.perf_counter()
            ray.get([a.vote.remote(r) for a in actors], timeout=600)
            took = time.perf_counter() - began
            emit("scale_round", "ray-actor", agents, took, "s", nodes=1, round=r,
                 messages_per_s=round(2 * agents / took, 1))
        total = sum(_rss_mib(p) for p in set(pids))
        emit("scale_rss_per_agent", "ray-actor", agents, total / agents, "MiB",
             processes=len(set(pids)), total_mib=round(total, 1))
    finally:
        ray.shutdown()


def run_autogen(python: str, agents: int, rounds: int) -> None:
    script = Path(__file__).resolve().parent / "peers" / "autogen_grpc_scale.py"
    out = subprocess.run([python, str(script), "--agents", str(agents), "--nodes", "2",
                          "--rounds", str(rounds)], capture_output=True, text=True,
                         timeout=3600)
    if out.returncode != 0:
        emit("scale_round", "autogen-core-grpc", agents, None, "s",
             skipped=f"failed: {out.stderr.strip().splitlines()[-1:]}")
        return
    print(out.stdout, end="", flush=True)


def _ints(text: str) -> list[int]:
    return [int(x.replace("_", "")) for x in text.split(",") if x]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--agents", type=_ints, default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--nodes", type=_ints, default=[1, 2, 4])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--no-broadcast", action="store_true")
    parser.add_argument("--ray-agents", type=int, default=1_000)
    parser.add_argument("--autogen-agents", type=int, default=10_000)
    default_peers = ROOT / ".venvs" / "autogen" / "bin" / "python"
    parser.add_argument("--peers-python", default=str(default_peers),
                        help="autogen's venv (benchmarks/setup_peers.sh)")
    parser.add_argument("--no-peers", action="store_true")
    parser.add_argument("--quick", action="store_true",
                        help="a smoke run: 2,000 agents on 1 and 2 nodes, small peers")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop the node processes too
    if args.quick:
        args.agents, args.nodes, args.rounds = [2_000], [1, 2], 2
        args.ray_agents, args.autogen_agents = 20, 2_000
    for agents in args.agents:
        for nodes in args.nodes:
            run_ours(agents, nodes, args.rounds, not args.no_broadcast)
    if args.no_peers:
        return
    run_ray(args.ray_agents, args.rounds)
    if Path(args.peers_python).exists():
        run_autogen(args.peers_python, args.autogen_agents, args.rounds)
    else:
        emit("scale_round", "autogen-core-grpc", args.autogen_agents, None, "s",
             skipped="no autogen venv: run benchmarks/setup_peers.sh")


if __name__ == "__main__":
    main()
