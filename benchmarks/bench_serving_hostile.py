"""Hostile-clients benchmark: does ``agentplex serve`` stay responsive while many slow or
hostile clients are connected? (issue: ``/health`` p99 at most 100 ms with 1,000 of them,
and the server's memory back within 10% once they leave.)

The server runs in its own process on loopback (a scripted model, default limits), and so
does the probe that measures ``/health`` latency from one keep-alive client (the hostile
clients' own busy event loop would otherwise count as the server's latency): first alone
(the baseline, after one request of each kind has warmed the server up), then while
``--clients`` hostile connections are held open for ``--seconds``:
a mix of slowloris clients (headers sent a byte at a time), slow bodies (headers, then a
body that trickles), idle connections (nothing sent), and a few clients posting bodies of
``--big-messages`` messages over and over (refused as too many once the first
thousands of messages are in, the connection closed). A
hostile client whose connection the server closes (time-outs, refusals) reconnects.

Prints one JSON line per figure (``_benchlib.emit``): ``hostile_health_latency`` (p50 and
p99, ms, baseline and hostile), ``hostile_server_rss`` (MB: before, peak, after) and
``hostile_connections`` (connections held at the end of the hostile phase); "after" is
taken 12 s after the last hostile client left.

Usage: ``python benchmarks/bench_serving_hostile.py [--quick] [--clients 1000]
[--seconds 20]``; loopback only, at most 2,000 clients and 120 s.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time

from _benchlib import emit

_PAGE = os.sysconf("SC_PAGE_SIZE")


def run_server() -> None:
    from agentplex.model import ScriptedChatModel
    from agentplex.serving import run_server as run

    model = ScriptedChatModel(["hello"], cycle=True)
    run({"bench": model}, host="127.0.0.1", port=0, log_level="error",
        ready=lambda url: print(url, flush=True))


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/statm") as f:
        return int(f.read().split()[1]) * _PAGE / 2**20


async def health_probe(port: int, seconds: float, interval: float) -> list[float]:
    """``/health`` latencies (ms) from one keep-alive connection for ``seconds``."""
    request = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    got: list[float] = []
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline:
            start = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
            await reader.readexactly(length)
            got.append((time.perf_counter() - start) * 1000)
            await asyncio.sleep(interval)
    finally:
        writer.close()
    return got


async def hostile(kind: str, port: int, stop: asyncio.Event, big: bytes,
                  held: list[int]) -> None:
    """One hostile client of ``kind``, reconnecting whenever the server closes it."""
    while not stop.is_set():
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            await asyncio.sleep(0.5)
            continue
        held[0] += 1
        try:
            if kind == "slowloris":
                for byte in b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nX-A: ":
                    if stop.is_set() or reader.at_eof():
                        break
                    writer.write(bytes([byte]))
                    await writer.drain()
                    await asyncio.sleep(1.0)
            elif kind == "slow-body":
                writer.write(b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                             b"Content-Type: application/json\r\nContent-Length: 100000\r\n\r\n")
                while not stop.is_set() and not reader.at_eof():
                    writer.write(b" ")
                    await writer.drain()
                    await asyncio.sleep(1.0)
            elif kind == "big":
                while not stop.is_set():
                    writer.write(b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                                 b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n"
                                 % len(big) + big)
                    await writer.drain()
                    head = await reader.readuntil(b"\r\n\r\n")
                    length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
                    await reader.readexactly(length)
            else:  # idle: connect and send nothing
                while not stop.is_set() and not reader.at_eof():
                    await asyncio.wait([asyncio.ensure_future(reader.read(1)),
                                        asyncio.ensure_future(stop.wait())],
                                       return_when=asyncio.FIRST_COMPLETED)
        except (OSError, asyncio.IncompleteReadError, ValueError, IndexError):
            pass
        finally:
            held[0] -= 1
            writer.close()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def probe_process(port: int, seconds: float, interval: float) -> list[float]:
    """The ``/health`` latencies measured by a process of its own (so that the hostile
    clients' event loop, busy in this one, does not count as the server's latency)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, __file__, "--probe", str(port), "--seconds", str(seconds),
        "--interval", str(interval), stdout=asyncio.subprocess.PIPE)
    out, _ = await proc.communicate()
    return [float(v) for v in json.loads(out)]


async def warm_up(port: int, big: bytes) -> None:
    """One request of each kind the hostile phase sends (an answer, a refused big body),
    so that the memory measured before it includes what the first of each costs once."""
    for body in (json.dumps({"model": "bench", "messages": [
            {"role": "user", "content": "hi"}]}).encode(), big):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            writer.write(b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                         b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n"
                         % len(body) + body)
            await writer.drain()
            await reader.read()
        except OSError:  # a refused big body closes the connection before it is all sent
            pass
        finally:
            writer.close()


async def main(args: argparse.Namespace, proc: subprocess.Popen[str], port: int) -> None:
    await asyncio.sleep(0.5)
    big = json.dumps({"model": "bench", "messages": [
        {"role": "user", "content": "x"}] * args.big_messages}).encode()
    await warm_up(port, big)
    baseline = await probe_process(port, min(5.0, args.seconds / 2), args.interval)
    await asyncio.sleep(1.0)
    before = rss_mb(proc.pid)

    kinds = ["slowloris", "slow-body", "idle"]
    stop = asyncio.Event()
    held = [0]
    clients = [asyncio.ensure_future(hostile(kinds[i % 3], port, stop, big, held))
               for i in range(args.clients)]
    clients += [asyncio.ensure_future(hostile("big", port, stop, big, held))
                for _ in range(args.big_clients)]
    await asyncio.sleep(2.0)  # let them connect
    probe = asyncio.ensure_future(probe_process(port, args.seconds, args.interval))
    peak = before
    deadline = time.monotonic() + args.seconds
    while time.monotonic() < deadline:
        await asyncio.sleep(0.5)
        peak = max(peak, rss_mb(proc.pid))
    attacked = await probe  # (the hostile clients stay until the probe is done)
    connected = held[0]
    stop.set()
    await asyncio.wait(clients, timeout=30)
    await asyncio.sleep(12.0)  # the server trims after a burst (collecting at most every 10 s)
    after = rss_mb(proc.pid)
    load = os.getloadavg()[0]
    for impl, values in (("baseline", baseline), ("hostile", attacked)):
        emit("hostile_health_latency", impl, len(values), percentile(values, 0.99), "ms",
             p50=round(statistics.median(values), 3), max=round(max(values), 3),
             clients=0 if impl == "baseline" else args.clients + args.big_clients,
             loadavg=round(load, 2))
    emit("hostile_server_rss", "agentplex", args.clients, after, "MB",
         before=round(before, 1), peak=round(peak, 1),
         back_within=round((after - before) / before, 3))
    emit("hostile_connections", "agentplex", args.clients, connected, "connections")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--server", action="store_true")
    parser.add_argument("--probe", type=int, metavar="PORT")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--big-clients", type=int, default=4)
    parser.add_argument("--big-messages", type=int, default=300_000)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--interval", type=float, default=0.02)
    a = parser.parse_args()
    if a.server:
        run_server()
    elif a.probe:
        print(json.dumps(asyncio.run(health_probe(a.probe, a.seconds, a.interval))))
    else:
        if a.quick:
            a.clients, a.seconds, a.big_clients, a.big_messages = 200, 10.0, 2, 50_000
        a.clients = min(a.clients, 2000)
        a.seconds = min(a.seconds, 120.0)
        server = subprocess.Popen([sys.executable, __file__, "--server"],
                                  stdout=subprocess.PIPE, text=True)
        try:
            assert server.stdout is not None
            url = server.stdout.readline().strip()
            asyncio.run(main(a, server, int(url.rsplit(":", 1)[1].split("/")[0])))
        finally:
            server.terminate()
            server.wait(30)
