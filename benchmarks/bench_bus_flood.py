"""A hostile peer against a node's memory: a joined peer floods tells to names that do not
exist and reads none of the answers (issue 24's bus finding).

A node (a ``Runtime`` on a ``ZmqTransport``, the directory's head) runs in a child process.
This process joins it as a raw peer (a HELLO, then a DEALER to send and a ROUTER of its own
that it never reads) and sends ``--tells`` tells of ``--size`` bytes each to a name nobody
holds. The node's resident memory is sampled from ``/proc``: idle (after the join), peak
(during the flood) and after (the flood over, the peer gone). Figures:

- ``bus_flood_rss``: the node's RSS above idle at its peak (MiB), with ``idle_mib``,
  ``peak_mib``, ``after_mib``; the target is at most 100 MiB above idle;
- ``bus_flood_rate``: tells per second the node took in.

The baseline (same run) is the same node receiving the same number of 100-byte tells.

    python benchmarks/bench_bus_flood.py [--tells 30000] [--size 60000] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import threading
import time

import zmq
import zmq.asyncio

from _benchlib import emit
from agentplex.bus.lowlevel import Header, Op, split_frames, to_frames
from agentplex.message import encode

_PAGE = os.sysconf("SC_PAGE_SIZE")
NODE = """
import asyncio, sys
from agentplex import Runtime
from agentplex.bus import ZmqTransport

async def main():
    async with Runtime(ZmqTransport(heartbeat_timeout=600.0)) as rt:
        print(rt.transport.endpoint, flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)

asyncio.run(main())
"""


def rss(pid: int) -> int:
    with open(f"/proc/{pid}/statm") as f:
        return int(f.read().split()[1]) * _PAGE


async def flood(endpoint: str, tells: int, size: int) -> float:
    """Join as a raw peer, send the tells without reading; seconds it took."""
    ctx = zmq.asyncio.Context()
    try:
        inbox = ctx.socket(zmq.ROUTER)
        inbox.setsockopt(zmq.LINGER, 0)
        inbox.setsockopt(zmq.RCVHWM, 100)
        port = inbox.bind_to_random_port("tcp://127.0.0.1")
        out = ctx.socket(zmq.DEALER)
        out.setsockopt(zmq.LINGER, 0)
        out.connect(endpoint)
        await out.send_multipart(to_frames(Header(Op.HELLO, "rogue", 1), encode(
            {"endpoint": f"tcp://127.0.0.1:{port}", "key": ""})))
        while True:  # the hello's answer (then never read again)
            frames = await asyncio.wait_for(inbox.recv_multipart(), 30)
            header, _ = split_frames(frames[1:])
            if header.corr == 1 and header.op in (Op.RESULT, Op.ERROR):
                break
        payload = encode(b"x" * size)
        began = time.perf_counter()
        for _ in range(tells):
            await asyncio.wait_for(out.send_multipart(
                to_frames(Header(Op.TELL, "rogue", None, "nobody"), payload)), 60)
        await asyncio.sleep(2.0)  # let the node take in what is queued
        return time.perf_counter() - began
    finally:
        ctx.destroy(linger=0)


def one(tells: int, size: int) -> tuple[int, int, int, float]:
    """Idle, peak and after RSS of a fresh node under one flood; the flood's seconds."""
    node = subprocess.Popen([sys.executable, "-c", NODE], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    try:
        assert node.stdout is not None
        endpoint = node.stdout.readline().strip()
        time.sleep(1.0)
        idle, peak = rss(node.pid), 0
        stop = threading.Event()

        def watch() -> None:
            nonlocal peak
            while not stop.wait(0.05):
                peak = max(peak, rss(node.pid))

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        seconds = asyncio.run(flood(endpoint, tells, size))
        time.sleep(8.0)  # the peer is gone: its link ends at the heartbeat
        stop.set()
        watcher.join(5)
        return idle, max(peak, idle), rss(node.pid), seconds
    finally:
        if node.stdin is not None:
            node.stdin.close()
        try:
            node.wait(20)
        except subprocess.TimeoutExpired:
            node.kill()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tells", type=int, default=30_000)
    p.add_argument("--size", type=int, default=60_000)
    p.add_argument("--quick", action="store_true", help="2,000 tells")
    a = p.parse_args()
    if a.quick:
        a.tells = 2_000
    mib = 2**20
    for impl, size in (("small-tells", 100), ("agentplex", a.size)):
        idle, peak, after, seconds = one(a.tells, size)
        emit("bus_flood_rss", impl, a.tells, (peak - idle) / mib, "MiB above idle",
             size=size, idle_mib=round(idle / mib, 1), peak_mib=round(peak / mib, 1),
             after_mib=round(after / mib, 1), load=round(os.getloadavg()[0], 1))
        emit("bus_flood_rate", impl, a.tells, a.tells / seconds, "tells/s", size=size)


if __name__ == "__main__":
    main()
