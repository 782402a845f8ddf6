"""Bus benchmark: two processes on loopback.

Figures (one JSON line each): sequential call round trips per second, pipelined messages
per second (tells, and calls with many in flight), with and without CURVE, against raw
pyzmq + msgpack on asyncio measured in the same run. Sequential calls are also given as
CPU time per call (``sequential_call_cpu``: caller's and server's CPU seconds together,
in microseconds per call), which a shared machine's load skews far less than wall time.
The implementations run in interleaved rounds and each figure is the best round, so load
from other processes on a shared machine skews the comparison less.

    python benchmarks/bench_bus.py [--n 2000] [--rounds 5] [--peers-python PATH]

The peer baselines (autogen-core gRPC host + two workers, Ray actors) run from
``bench_bus_peers.py`` in their own environment, by default ``.venvs/peers`` when it exists:
``python3 -m venv .venvs/peers && .venvs/peers/bin/pip install "autogen-ext[grpc]==0.7.5"
ray``. Ratio lines (unit ``x``) close the run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from typing import Any

import msgpack
import zmq
import zmq.asyncio

from _benchlib import emit
from agentplex import Actor, Runtime
from agentplex.bus import KeyPair, ZmqTransport


class Sink(Actor):
    def __init__(self) -> None:
        self.count = 0

    async def handle_call(self, message: Any) -> Any:
        if message == "cpu":
            return time.process_time()
        return message

    async def handle_tell(self, message: Any) -> None:
        self.count += 1


RESULTS: dict[tuple[str, str, str], tuple[int, float]] = {}
LOWER_IS_BETTER = frozenset({"us/call"})


def record(bench: str, impl: str, n: int, value: float, unit: str) -> None:
    """Keep the best value of each figure over the rounds (others share this machine)."""
    key = (bench, impl, unit)
    old = RESULTS.get(key)
    if old is None or (value < old[1] if unit in LOWER_IS_BETTER else value > old[1]):
        RESULTS[key] = (n, value)


def print_results() -> None:
    for (bench, impl, unit), (n, value) in RESULTS.items():
        emit(bench, impl, n, value, unit)
    best = {(b, i): v for (b, i, _), (_, v) in RESULTS.items()}
    ratios = [
        ("sequential_call", "agentplex-zmq", "raw-pyzmq-msgpack-asyncio"),
        ("sequential_call", "agentplex-zmq", "autogen-core-grpc"),
        ("sequential_call", "agentplex-zmq", "ray-actor"),
        ("sequential_call", "agentplex-zmq-curve", "agentplex-zmq"),
        ("pipelined_tell", "agentplex-zmq-curve", "agentplex-zmq"),
        ("pipelined_call", "agentplex-zmq", "autogen-core-grpc"),
        ("pipelined_call", "agentplex-zmq", "ray-actor"),
    ]
    for bench, ours, base in ratios:
        if (bench, ours) in best and (bench, base) in best:
            emit(f"{bench}_ratio", f"{ours}/{base}", 1, best[bench, ours] / best[bench, base],
                 "x")
    cpu = best.get(("sequential_call_cpu", "agentplex-zmq"))
    raw = best.get(("sequential_call_cpu", "raw-pyzmq-msgpack-asyncio"))
    curve = best.get(("sequential_call_cpu", "agentplex-zmq-curve"))
    if cpu and raw:  # speed by CPU time: raw's CPU per call over ours (≥ 0.9 is the target)
        emit("sequential_call_cpu_ratio", "agentplex-zmq/raw-pyzmq-msgpack-asyncio", 1,
             raw / cpu, "x")
    if cpu and curve:  # CURVE's extra CPU per call (≤ 0.15 is the target)
        emit("sequential_call_cpu_overhead", "agentplex-zmq-curve/agentplex-zmq", 1,
             curve / cpu - 1, "x")


def run_peers(python: str, n: int) -> None:
    """The peer baselines, in their own environment; their figures join ours."""
    out = subprocess.run([python, os.path.join(os.path.dirname(__file__), "bench_bus_peers.py"),
                          "--n", str(n)], capture_output=True, text=True, timeout=600)
    for line in out.stdout.splitlines():
        if line.startswith("{"):
            r = json.loads(line)
            record(r["bench"], r["impl"], r["n"], r["value"], r["unit"])
    if out.returncode:
        print(f"peer baselines failed: {out.stderr[-500:]}", file=sys.stderr)


# -- servers (run in a child process) ----------------------------------------------------------

async def serve_agentplex(curve: bool) -> None:
    keys = KeyPair(os.environ["BENCH_PUB"], os.environ["BENCH_SEC"]) if curve else None
    async with Runtime(ZmqTransport(keys=keys), default_timeout=60) as rt:
        await rt.spawn(Sink(), "sink")
        print(rt.transport.endpoint, flush=True)  # type: ignore[attr-defined]
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)


async def serve_raw() -> None:
    ctx = zmq.asyncio.Context()
    sock = ctx.socket(zmq.ROUTER)
    sock.bind("tcp://127.0.0.1:0")
    print(sock.getsockopt_string(zmq.LAST_ENDPOINT), flush=True)
    while True:
        ident, data = await sock.recv_multipart()
        msg = msgpack.unpackb(data)
        if msg[0] == "call":
            await sock.send_multipart([ident, msgpack.packb(["reply", msg[1]])])
        elif msg[0] == "cpu":
            await sock.send_multipart([ident, msgpack.packb(["reply", time.process_time()])])


# -- clients -----------------------------------------------------------------------------------

async def bench_agentplex(endpoint: str, n: int, impl: str, keys: KeyPair | None) -> None:
    t = ZmqTransport(head=endpoint, keys=keys, head_key=keys.public if keys else None)
    async with Runtime(t, default_timeout=60) as rt:
        sink = rt.ref("sink")
        payload = {"text": "hello", "i": 1}
        for _ in range(200):
            await sink.call(payload)
        s0 = await sink.call("cpu")
        t0, c0 = time.perf_counter(), time.process_time()
        for _ in range(n):
            await sink.call(payload)
        t1, c1 = time.perf_counter(), time.process_time()
        s1 = await sink.call("cpu")
        record("sequential_call", impl, n, n / (t1 - t0), "calls/s")
        record("sequential_call_cpu", impl, n, (c1 - c0 + s1 - s0) / n * 1e6, "us/call")
        m = n * 4
        t0 = time.perf_counter()
        for _ in range(m):
            await sink.tell(payload)
        await sink.call(payload)  # mailbox order: every tell was handled before this reply
        record("pipelined_tell", impl, m, m / (time.perf_counter() - t0), "msgs/s")
        t0 = time.perf_counter()
        window = 256
        for _ in range(m // window):
            await asyncio.gather(*(sink.call(payload) for _ in range(window)))
        done = (m // window) * window
        record("pipelined_call", impl, done, done / (time.perf_counter() - t0), "calls/s")


async def bench_raw(endpoint: str, n: int) -> None:
    ctx = zmq.asyncio.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.connect(endpoint)
    payload = {"text": "hello", "i": 1}
    for _ in range(200):
        await sock.send(msgpack.packb(["call", payload]))
        await sock.recv()
    await sock.send(msgpack.packb(["cpu", None]))
    s0 = msgpack.unpackb(await sock.recv())[1]
    t0, c0 = time.perf_counter(), time.process_time()
    for _ in range(n):
        await sock.send(msgpack.packb(["call", payload]))
        msgpack.unpackb(await sock.recv())
    t1, c1 = time.perf_counter(), time.process_time()
    await sock.send(msgpack.packb(["cpu", None]))
    s1 = msgpack.unpackb(await sock.recv())[1]
    record("sequential_call", "raw-pyzmq-msgpack-asyncio", n, n / (t1 - t0), "calls/s")
    record("sequential_call_cpu", "raw-pyzmq-msgpack-asyncio", n, (c1 - c0 + s1 - s0) / n * 1e6,
         "us/call")
    m = n * 4
    t0 = time.perf_counter()
    for _ in range(m):
        await sock.send(msgpack.packb(["tell", payload]))
    await sock.send(msgpack.packb(["call", payload]))
    await sock.recv()
    record("pipelined_tell", "raw-pyzmq-msgpack-asyncio", m, m / (time.perf_counter() - t0),
         "msgs/s")
    ctx.destroy(linger=0)


def start_server(mode: str, env: dict[str, str]) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen([sys.executable, __file__, "--serve", mode], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, env={**os.environ, **env})
    assert proc.stdout is not None
    return proc, proc.stdout.readline().strip()


def stop_server(proc: subprocess.Popen[str]) -> None:
    if proc.stdin is not None:
        proc.stdin.close()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, default=2000)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--serve", choices=["plain", "curve", "raw"])
    default_peers = os.path.join(os.path.dirname(__file__), "..", ".venvs", "peers", "bin",
                                 "python")
    p.add_argument("--peers-python", default=default_peers if os.path.exists(default_peers)
                   else None)
    a = p.parse_args()
    if a.serve == "raw":
        asyncio.run(serve_raw())
        return
    if a.serve:
        asyncio.run(serve_agentplex(a.serve == "curve"))
        return
    keys = KeyPair.generate()  # one pair for both ends keeps the benchmark self-contained
    raw, raw_ep = start_server("raw", {})
    plain, plain_ep = start_server("plain", {})
    curve, curve_ep = start_server("curve", {"BENCH_PUB": keys.public, "BENCH_SEC": keys.secret})
    try:
        for _ in range(a.rounds):  # interleaved rounds, best of each: fair under shared load
            asyncio.run(bench_raw(raw_ep, a.n))
            asyncio.run(bench_agentplex(plain_ep, a.n, "agentplex-zmq", None))
            asyncio.run(bench_agentplex(curve_ep, a.n, "agentplex-zmq-curve", keys))
    finally:
        raw.kill()
        stop_server(plain)
        stop_server(curve)
    if a.peers_python:
        run_peers(a.peers_python, a.n)
    else:
        print("peer baselines skipped: no --peers-python environment", file=sys.stderr)
    print_results()


if __name__ == "__main__":
    main()
