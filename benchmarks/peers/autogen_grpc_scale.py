"""autogen-core's gRPC worker runtime at scale: a host, K worker processes hosting N agents
between them, and a driver that asks every agent each round; prints JSON lines.

Run by the peer's own venv (see ``benchmarks/setup_peers.sh``); ``bench_scale.py`` starts it::

    .venvs/autogen/bin/python benchmarks/peers/autogen_grpc_scale.py --agents 10000 --nodes 2

autogen creates an agent on its first message, so the first round includes creating
every agent (reported as the placement); the next rounds are plain rounds. A topic in
autogen reaches one agent per topic source, so a broadcast to N agents is N publishes:
no broadcast figure is reported.
"""

import argparse
import asyncio
import os
import socket
import subprocess
import sys
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from autogen_core import AgentId, MessageContext, RoutedAgent, message_handler

from _benchlib import emit

IMPL = "autogen-core-grpc"
WINDOW = 2_000


@dataclass
class Ask:
    round: int


@dataclass
class Guess:
    number: int


class Voter(RoutedAgent):
    def __init__(self) -> None:
        super().__init__("voter")

    @message_handler
    async def on_ask(self, message: Ask, ctx: MessageContext) -> Guess:
        return Guess(zlib.crc32(f"{self.id.key}:{message.round}".encode()) % 101)


async def _worker(address: str) -> Any:
    from autogen_core import try_get_known_serializers_for_type
    from autogen_ext.runtimes.grpc import GrpcWorkerAgentRuntime

    runtime = GrpcWorkerAgentRuntime(host_address=address)
    await runtime.start()
    runtime.add_message_serializer(try_get_known_serializers_for_type(Ask))
    runtime.add_message_serializer(try_get_known_serializers_for_type(Guess))
    return runtime


async def serve_host(address: str) -> None:
    from autogen_ext.runtimes.grpc import GrpcWorkerAgentRuntimeHost

    host = GrpcWorkerAgentRuntimeHost(address=address)
    host.start()
    print("ready", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    await host.stop()


async def serve_worker(address: str, kind: str) -> None:
    runtime = await _worker(address)
    await Voter.register(runtime, kind, lambda: Voter())
    print("ready", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    await runtime.stop()


def _rss(pid: int) -> int:
    with open(f"/proc/{pid}/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


async def drive(address: str, agents: int, nodes: int, rounds: int, pids: list[int]) -> None:
    runtime = await _worker(address)
    targets = [AgentId(f"voter{i % nodes}", str(i)) for i in range(agents)]
    times = []
    for r in range(rounds + 1):
        began = time.perf_counter()
        got = 0
        for i in range(0, agents, WINDOW):
            replies = await asyncio.gather(*(runtime.send_message(Ask(r), t)
                                             for t in targets[i:i + WINDOW]))
            got += len(replies)
        assert got == agents
        times.append(time.perf_counter() - began)
    emit("scale_place", IMPL, agents, agents / times[0], "agents/s", nodes=nodes,
         note="autogen creates agents on their first message: the first round")
    rss = [_rss(p) / 2**20 for p in pids]
    emit("scale_rss_per_node", IMPL, agents, max(rss), "MiB", nodes=nodes,
         per_node=[round(x, 1) for x in rss])
    for r, took in enumerate(times[1:], 1):
        emit("scale_round", IMPL, agents, took, "s", nodes=nodes, round=r,
             messages_per_s=round(2 * agents / took, 1))
    emit("scale_broadcast", IMPL, agents, None, "s", nodes=nodes,
         skipped="a topic reaches one agent per source: N publishes, not a broadcast")
    await runtime.stop()


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--agents", type=int, default=10_000)
    p.add_argument("--nodes", type=int, default=2)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--serve-host")
    p.add_argument("--serve-worker", nargs=2)
    a = p.parse_args()
    if a.serve_host:
        asyncio.run(serve_host(a.serve_host))
        return
    if a.serve_worker:
        asyncio.run(serve_worker(*a.serve_worker))
        return
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{s.getsockname()[1]}"
    procs: list[subprocess.Popen[str]] = []
    try:
        for args in (["--serve-host", address],
                     *(["--serve-worker", address, f"voter{k}"] for k in range(a.nodes))):
            proc = subprocess.Popen([sys.executable, __file__, *args], stdin=subprocess.PIPE,
                                    stdout=subprocess.PIPE, text=True)
            procs.append(proc)
            assert proc.stdout is not None
            if proc.stdout.readline().strip() != "ready":
                raise SystemExit(f"autogen {args[0]} did not start")
        asyncio.run(drive(address, a.agents, a.nodes, a.rounds, [p.pid for p in procs[1:]]))
    finally:
        for proc in reversed(procs):
            proc.kill()
            proc.wait()


if __name__ == "__main__":
    main()
