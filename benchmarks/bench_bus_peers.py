"""Peer baselines for ``bench_bus.py``: autogen-core's gRPC worker runtime (a host and two
workers, each its own process) and Ray actor calls, on the same machine and payload.

Runs in its own environment (``pip install "autogen-ext[grpc]" ray``) because those
packages pin their own dependencies; ``bench_bus.py --peers-python PATH`` starts it in the
same run. Prints the same JSON lines as ``bench_bus.py``.
"""


import argparse
import asyncio
import logging
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Any

from _benchlib import emit

PAYLOAD = {"text": "hello", "i": 1}


# -- autogen-core gRPC ----------------------------------------------------------------------

@dataclass
class Ping:
    text: str
    i: int


def _sink_type() -> Any:
    from autogen_core import MessageContext, RoutedAgent, message_handler

    class Sink(RoutedAgent):
        def __init__(self) -> None:
            super().__init__("sink")

        @message_handler
        async def on_ping(self, message: Ping, ctx: MessageContext) -> Ping:
            return message

    return Sink


async def _worker(address: str) -> Any:
    from autogen_core import try_get_known_serializers_for_type
    from autogen_ext.runtimes.grpc import GrpcWorkerAgentRuntime

    runtime = GrpcWorkerAgentRuntime(host_address=address)
    await runtime.start()
    runtime.add_message_serializer(try_get_known_serializers_for_type(Ping))
    return runtime


async def serve_host(address: str) -> None:
    from autogen_ext.runtimes.grpc import GrpcWorkerAgentRuntimeHost

    host = GrpcWorkerAgentRuntimeHost(address=address)
    host.start()
    print("ready", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    await host.stop()


async def serve_sink(address: str) -> None:
    runtime = await _worker(address)
    sink_cls = _sink_type()
    await sink_cls.register(runtime, "sink", lambda: sink_cls())
    print("ready", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    await runtime.stop()


async def bench_autogen(address: str, n: int) -> None:
    from autogen_core import AgentId

    runtime = await _worker(address)
    target = AgentId("sink", "default")
    for _ in range(100):
        await runtime.send_message(Ping(**PAYLOAD), target)  # type: ignore[arg-type]
    t0 = time.perf_counter()
    for _ in range(n):
        await runtime.send_message(Ping(**PAYLOAD), target)  # type: ignore[arg-type]
    emit("sequential_call", "autogen-core-grpc", n, n / (time.perf_counter() - t0), "calls/s")
    window, rounds = 256, max(1, (n * 2) // 256)
    t0 = time.perf_counter()
    for _ in range(rounds):
        await asyncio.gather(*(runtime.send_message(Ping(**PAYLOAD), target)  # type: ignore[arg-type]
                               for _ in range(window)))
    emit("pipelined_call", "autogen-core-grpc", rounds * window,
         rounds * window / (time.perf_counter() - t0), "calls/s")
    await runtime.stop()


def run_autogen(n: int) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{s.getsockname()[1]}"
    procs = []
    try:
        for mode in ("--serve-host", "--serve-sink"):
            p = subprocess.Popen([sys.executable, __file__, mode, address], stdin=subprocess.PIPE,
                                 stdout=subprocess.PIPE, text=True)
            procs.append(p)
            assert p.stdout is not None
            p.stdout.readline()
        asyncio.run(bench_autogen(address, n))
    finally:
        for p in reversed(procs):
            p.kill()


# -- Ray ------------------------------------------------------------------------------------

def run_ray(n: int) -> None:
    import ray

    ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.ERROR, log_to_driver=False)

    @ray.remote
    class Sink:
        def call(self, message: Any) -> Any:
            return message

    sink = Sink.remote()  # type: ignore[attr-defined]
    ray.get([sink.call.remote(PAYLOAD) for _ in range(100)])
    t0 = time.perf_counter()
    for _ in range(n):
        ray.get(sink.call.remote(PAYLOAD))
    emit("sequential_call", "ray-actor", n, n / (time.perf_counter() - t0), "calls/s")
    m = n * 2
    t0 = time.perf_counter()
    ray.get([sink.call.remote(PAYLOAD) for _ in range(m)])
    emit("pipelined_call", "ray-actor", m, m / (time.perf_counter() - t0), "calls/s")
    ray.shutdown()


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, default=2000)
    p.add_argument("--serve-host")
    p.add_argument("--serve-sink")
    a = p.parse_args()
    if a.serve_host:
        asyncio.run(serve_host(a.serve_host))
    elif a.serve_sink:
        asyncio.run(serve_sink(a.serve_sink))
    else:
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        run_autogen(a.n)
        run_ray(a.n)


if __name__ == "__main__":
    main()
