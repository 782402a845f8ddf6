"""Serving benchmark: what ``agentplex serve`` adds over calling the model in-process.

Prints one JSON line per figure (``benchmarks/_benchlib.py``'s ``emit``):

* ``serve_latency``: median wall time of one request, one client after another, to a scripted
  model that answers at once — ``in-process`` (``await model(...)``) against ``http`` (the
  server in its own process, driven by a minimal keep-alive HTTP/1.1 client, as ``wrk``
  would, so that the figure is the server's and not a client library's).
  ``serve_added_latency`` is the difference (target: at most 1 ms).
  On a shared machine the wall figure mostly measures waiting for a core, so the same
  difference is also given in CPU time (``http-cpu``: the server's CPU per request, read
  from ``/proc``, plus the client's, less the in-process call's).
* ``serve_throughput``: requests per second with 16 concurrent clients, to a scripted model
  that takes ``--service-ms`` per call (as a real model does), in-process against over HTTP;
  ``serve_throughput_ratio`` is HTTP / in-process (target: at least 0.9): the two run
  ``--repeats`` times alternately (each run's figures in ``runs``), and the ratio is the
  median of the runs' ratios.

Usage: ``python benchmarks/bench_serving.py [--quick] [--service-ms 50] [--repeats 5]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import statistics
import subprocess
import sys
import time
from typing import Any

from _benchlib import emit

BODY = json.dumps({"model": "bench", "messages": [{"role": "user", "content": "Say hello."}]})


class Connection:
    """One keep-alive HTTP/1.1 connection posting chat requests (a load generator)."""

    def __init__(self, url: str) -> None:
        match = re.match(r"http://([^:/]+):(\d+)(/.*)", url)
        assert match, url
        self.host, self.port, self.path = match.group(1), int(match.group(2)), match.group(3)
        self.request = (f"POST {self.path}/chat/completions HTTP/1.1\r\nHost: {self.host}\r\n"
                        f"Content-Type: application/json\r\nContent-Length: {len(BODY)}\r\n"
                        f"\r\n{BODY}").encode()
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def post(self) -> dict[str, Any]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        self.writer.write(self.request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 200"):
            raise RuntimeError(f"the server answered {head[:40]!r}")
        length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-length"))
        answer: dict[str, Any] = json.loads(await self.reader.readexactly(length))
        return answer

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            await self.writer.wait_closed()


def model(service_ms: float) -> Any:
    from agentplex.model import ScriptedChatModel

    async def answer(messages: Any, **call: Any) -> str:
        if service_ms:
            await asyncio.sleep(service_ms / 1000)
        return "Hello there."

    return ScriptedChatModel(answer, model_name="bench")


def run_server(service_ms: float) -> None:
    from agentplex.serving import run_server as run

    run(model(service_ms), port=0, log_level="warning",
        ready=lambda url: print(url, flush=True))


def start_server(service_ms: float) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen([sys.executable, __file__, "--server", str(service_ms)],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    if not re.match(r"http://", line):
        proc.kill()
        raise RuntimeError(f"the server did not start: {line!r}")
    return proc, line


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def in_process_latency(n: int) -> list[float]:
    from agentplex.message import Msg
    from agentplex.model import collect

    m = model(0)
    history = [Msg("user", "Say hello.", "user")]
    out = []
    for _ in range(n):
        t = time.perf_counter()
        await collect(await m(history))
        out.append(time.perf_counter() - t)
    return out


async def http_latency(connection: Connection, n: int) -> list[float]:
    out = []
    for _ in range(n):
        t = time.perf_counter()
        await connection.post()
        out.append(time.perf_counter() - t)
    return out


async def throughput(call: Any, clients: int, per_client: int) -> float:
    async def one() -> None:
        for _ in range(per_client):
            await call()

    t = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(clients)))
    return clients * per_client / (time.perf_counter() - t)


async def throughput_over(connections: list[Connection], per_client: int) -> float:
    async def one(connection: Connection) -> None:
        for _ in range(per_client):
            await connection.post()

    t = time.perf_counter()
    await asyncio.gather(*(one(c) for c in connections))
    return len(connections) * per_client / (time.perf_counter() - t)


async def main(args: argparse.Namespace) -> None:
    from agentplex.message import Msg
    from agentplex.model import collect

    n = 200 if args.quick else 2000
    # -- latency, instant model ------------------------------------------------------------
    proc, url = start_server(0)
    connection = Connection(url)
    try:
        await http_latency(connection, 50)  # warm up
        await in_process_latency(50)
        c0 = time.process_time()
        local = statistics.median(await in_process_latency(n))
        local_cpu = (time.process_time() - c0) / n
        before, c0 = cpu_seconds(proc.pid), time.process_time()
        remote = statistics.median(await http_latency(connection, n))
        client_cpu = (time.process_time() - c0) / n
        server_cpu = (cpu_seconds(proc.pid) - before) / n
    finally:
        await connection.close()
        proc.terminate()
        proc.wait(10)
    emit("serve_latency", "in-process", n, local * 1e6, "us")
    emit("serve_latency", "http", n, remote * 1e6, "us")
    emit("serve_added_latency", "http", n, (remote - local) * 1e3, "ms", target="<= 1",
         clock="wall")
    # CPU time is what a loaded machine cannot distort: the server's and the client's CPU
    # per request, less the in-process call's, is the latency HTTP adds on idle cores.
    emit("serve_added_latency", "http-cpu", n, (server_cpu + client_cpu - local_cpu) * 1e3,
         "ms", target="<= 1", clock="cpu", server_ms=round(server_cpu * 1e3, 3),
         client_ms=round(client_cpu * 1e3, 3), in_process_ms=round(local_cpu * 1e3, 4))

    # -- throughput, 16 clients, a model that takes service_ms per call ---------------------
    clients, per_client = 16, (10 if args.quick else 40)
    m = model(args.service_ms)
    history = [Msg("user", "Say hello.", "user")]

    async def in_process() -> None:
        await collect(await m(history))

    proc, url = start_server(args.service_ms)
    connections = [Connection(url) for _ in range(clients)]
    local_rates: list[float] = []
    remote_rates: list[float] = []
    try:
        await throughput(in_process, clients, 2)  # warm up
        await asyncio.gather(*(c.post() for c in connections))
        # alternate, so that the load of a shared machine weighs on both alike
        for _ in range(args.repeats):
            local_rates.append(await throughput(in_process, clients, per_client))
            remote_rates.append(await throughput_over(connections, per_client))
    finally:
        for c in connections:
            await c.close()
        proc.terminate()
        proc.wait(10)
    total = clients * per_client
    ratios = [r / local for r, local in zip(remote_rates, local_rates, strict=True)]
    extra = {"clients": clients, "service_ms": args.service_ms, "repeats": args.repeats}
    emit("serve_throughput", "in-process", total, statistics.median(local_rates),
         "requests/s", runs=[round(x, 1) for x in local_rates], **extra)
    emit("serve_throughput", "http", total, statistics.median(remote_rates), "requests/s",
         runs=[round(x, 1) for x in remote_rates], **extra)
    emit("serve_throughput_ratio", "http", total, statistics.median(ratios), "ratio",
         target=">= 0.9", runs=[round(x, 3) for x in ratios], **extra)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a short smoke run")
    parser.add_argument("--service-ms", type=float, default=50.0,
                        help="milliseconds the scripted model takes per call (throughput)")
    parser.add_argument("--repeats", type=int, default=5,
                        help="throughput runs, in-process and HTTP alternately")
    parser.add_argument("--server", type=float, default=None, help=argparse.SUPPRESS)
    parsed = parser.parse_args()
    if parsed.server is not None:
        run_server(parsed.server)
    else:
        asyncio.run(main(parsed))
