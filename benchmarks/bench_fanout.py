"""Node-local fan-out across node processes: a broadcast and a fan-out call (``call_many``).

A head (this process) and ``--nodes`` node processes on loopback; each node creates its
share of ``--agents`` agents locally at start-up (registered with the head in batches) and
subscribes them to one topic. Figures (JSON lines through ``_benchlib.emit``):

- ``broadcast_nodes``: one ``Runtime.publish`` from the head until every agent on every node
  has handled it (wall seconds; ``node_cpu`` is the busiest node's CPU seconds for it);
- ``fanout_call_nodes``: ``Runtime.call_many`` to ``--calls`` agents spread over the nodes,
  all replies back (replies per wall second; ``cold`` includes the head's name lookups);
- ``fanout_call_nodes`` / ``per-agent-calls``: the same agents called one envelope each
  (``asyncio.gather`` of ``ActorRef.call``), the baseline, on ``--baseline`` agents.

With ``--own-messages`` it measures instead a simulation's round where every agent gets a
message of its own: ``--agents`` agents on ``--nodes`` nodes are each sent a ``Msg`` and
answer with one; ``round_messages`` is the round's wall seconds with one shared message
(``call_many(names, msg)``), with one message per agent in one fan-out
(``call_many(names, PerActor(msgs))``: one frame per node) and, unless ``--no-per-call``,
one ``ref.call`` per agent (``asyncio.gather``), in interleaved repetitions of the same run
(``lost``: answers that were errors, with ``--heartbeat-timeout`` and ``--timeout`` as
given); ``round_messages_ratio`` is each one's median against the shared message's, by
wall and by the CPU seconds of all processes together.

Where the wall time goes, per process (the head, and the node with the most CPU): ``cpu``
(CPU seconds), ``wait`` (seconds its loop was ready to run but waited for a core, from
``/proc/self/schedstat``: the other processes' share of a loaded machine) and ``gc``
(CPU seconds in Python's cyclic collector, part of ``cpu``). ``--freeze`` moves everything
created at set-up out of the collector's sight (``gc.freeze()``), as a simulation may.

    python benchmarks/bench_fanout.py [--agents 1000000] [--calls 100000] [--nodes 4]
    python benchmarks/bench_fanout.py --quick [--freeze]
    python benchmarks/bench_fanout.py --own-messages [--agents 50000 --nodes 2 --rounds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import os
import statistics
import subprocess
import sys
import time
from typing import Any

sys.path.insert(0, os.path.dirname(__file__))

from _benchlib import emit
from agentplex import Actor, Msg, Runtime
from agentplex.bus import ZmqTransport
from agentplex.runtime import NameRange, PerActor

TOPIC = "news"
_heard = 0
_heard_changed: asyncio.Event | None = None


_gc_seconds = 0.0
_gc_began = 0.0


def _count_gc(phase: str, info: dict[str, Any]) -> None:
    global _gc_seconds, _gc_began
    if phase == "start":
        _gc_began = time.thread_time()
    else:
        _gc_seconds += time.thread_time() - _gc_began


def usage() -> list[float]:
    """This process's CPU seconds, seconds waiting for a core (main thread) and GC seconds."""
    try:
        with open("/proc/self/schedstat") as f:
            wait = int(f.read().split()[1]) / 1e9
    except OSError:  # not Linux
        wait = 0.0
    return [time.process_time(), wait, _gc_seconds]


def spent(after: list[float], before: list[float]) -> dict[str, float]:
    return {k: round(a - b, 3) for k, a, b in zip(("cpu", "wait", "gc"), after, before,
                                                   strict=True)}


def busiest(after: list[list[float]], before: list[list[float]]) -> dict[str, float]:
    """What the node with the most CPU time spent."""
    return max((spent(a, b) for a, b in zip(after, before, strict=True)),
               key=lambda d: d["cpu"])


class Member(Actor):
    """An agent of the simulation: answers a call, counts what it hears."""

    async def handle_call(self, message: Any) -> Any:
        if isinstance(message, Msg):  # a round's question: a message back, as agents answer
            return Msg("agent", f"heard {len(message.get_text_content() or '')}", "assistant")
        return message

    async def handle_publish(self, topic: str, message: Any) -> None:
        global _heard
        _heard += 1
        if _heard_changed is not None and _heard % 1024 == 0:
            _heard_changed.set()


class Probe(Actor):
    """One per node: ``"usage"`` is the node's :func:`usage`; a number waits until this
    node's agents have heard that many messages in all."""

    async def handle_call(self, message: Any) -> Any:
        if message == "usage":
            return usage()
        assert _heard_changed is not None
        while _heard < message:
            _heard_changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(_heard_changed.wait(), 0.01)
        return _heard


async def node(head: str, index: int, count: int, freeze: bool,
               heartbeat_timeout: float) -> None:
    global _heard_changed
    _heard_changed = asyncio.Event()
    gc.callbacks.append(_count_gc)
    # a loaded machine can starve a loop for seconds while it creates 250k agents: patience
    transport = ZmqTransport(head=head, node_id=f"node-{index}", hwm=100_000,
                             heartbeat_timeout=heartbeat_timeout, rpc_timeout=120)
    async with Runtime(transport, default_timeout=300) as rt:
        await rt.spawn(Probe(), f"probe-{index}")
        names = NameRange(f"a{index}-", 0, count)  # one registration for the whole range
        await rt.spawn_many([Member() for _ in range(count)], names)
        await rt.subscribe_many(TOPIC, names)
        if freeze:
            gc.collect()
            gc.freeze()
        print("READY", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)


def start_nodes(head: str, nodes: int, per_node: int, freeze: bool,
                heartbeat_timeout: float = 120.0) -> list[subprocess.Popen[str]]:
    procs = [subprocess.Popen([sys.executable, __file__, "--node", head, "--index", str(i),
                               "--heartbeat-timeout", str(heartbeat_timeout),
                               "--count", str(per_node), *(["--freeze"] if freeze else [])],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
             for i in range(nodes)]
    for proc in procs:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line.startswith("READY"):
            raise RuntimeError(f"a node did not start: {line!r}")
    return procs


async def bench(a: argparse.Namespace) -> None:
    per_node = a.agents // a.nodes
    total = per_node * a.nodes
    transport = ZmqTransport(hwm=100_000, rpc_timeout=120, heartbeat_timeout=120)
    gc.callbacks.append(_count_gc)
    async with Runtime(transport, default_timeout=300) as rt:
        t0 = time.perf_counter()
        procs = await asyncio.to_thread(start_nodes, transport.endpoint, a.nodes, per_node,
                                        a.freeze)
        emit("setup_nodes", "agentplex-zmq", total, total / (time.perf_counter() - t0),
             "agents/s", nodes=a.nodes)
        try:
            probes = [f"probe-{i}" for i in range(a.nodes)]
            per = a.calls // a.nodes
            names = [f"a{i}-{k}" for k in range(per) for i in range(a.nodes)]
            if a.freeze:
                gc.collect()
                gc.freeze()
            for rnd in range(1, a.rounds + 1):
                frames = transport.stats["publish_frames"]
                node0 = await rt.call_many(probes, "usage")
                head0 = usage()
                t0 = time.perf_counter()
                await rt.publish(TOPIC, {"round": rnd})
                heard = await rt.call_many(probes, per_node * rnd)
                wall = time.perf_counter() - t0
                head1 = usage()
                node1 = await rt.call_many(probes, "usage")
                assert heard == [per_node * rnd] * a.nodes, heard
                emit("broadcast_nodes", "agentplex-zmq", total, wall, "s", nodes=a.nodes,
                     node=busiest(node1, node0), head=spent(head1, head0),
                     node_cpu=busiest(node1, node0)["cpu"], freeze=a.freeze,
                     frames=transport.stats["publish_frames"] - frames)
            for rnd in range(a.rounds + 1):
                node0 = await rt.call_many(probes, "usage")
                frames = transport.stats["call_many_frames"]
                head0 = usage()
                t0 = time.perf_counter()
                replies = await rt.call_many(names, "ping", timeout=300)
                wall = time.perf_counter() - t0
                head1 = usage()
                frames = transport.stats["call_many_frames"] - frames
                node1 = await rt.call_many(probes, "usage")
                assert replies == ["ping"] * len(names)
                del replies
                head = spent(head1, head0)
                emit("fanout_call_nodes", "agentplex-zmq-call_many", len(names),
                     len(names) / wall, "replies/s", nodes=a.nodes, cold=rnd == 0,
                     head=head, node=busiest(node1, node0), head_cpu=head["cpu"],
                     node_cpu=busiest(node1, node0)["cpu"], freeze=a.freeze, frames=frames)
            base = names[:a.baseline]
            refs = [rt.ref(n) for n in base]
            await asyncio.gather(*(r.call("ping") for r in refs))  # names cached
            for _ in range(a.rounds):
                t0, c0 = time.perf_counter(), time.process_time()
                replies = await asyncio.gather(*(r.call("ping", timeout=300) for r in refs))
                wall, cpu = time.perf_counter() - t0, time.process_time() - c0
                assert replies == ["ping"] * len(base)
                emit("fanout_call_nodes", "per-agent-calls", len(base), len(base) / wall,
                     "replies/s", nodes=a.nodes, head_cpu=round(cpu, 3))
        finally:
            stop_nodes(procs)


def stop_nodes(procs: list[subprocess.Popen[str]]) -> None:
    """End the node processes (closing stdin tells each to leave), killing any still up
    after 60 s."""
    for proc in procs:
        assert proc.stdin is not None
        proc.stdin.close()
    for proc in procs:
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()


async def bench_own_messages(a: argparse.Namespace) -> None:
    """A round where every agent gets its own message, against one shared message."""
    per_node = a.agents // a.nodes
    transport = ZmqTransport(hwm=100_000, rpc_timeout=120,
                             heartbeat_timeout=a.heartbeat_timeout)
    async with Runtime(transport, default_timeout=300) as rt:
        procs = await asyncio.to_thread(start_nodes, transport.endpoint, a.nodes, per_node,
                                        a.freeze, a.heartbeat_timeout)
        try:
            probes = [f"probe-{i}" for i in range(a.nodes)]
            names = [f"a{i}-{k}" for k in range(per_node) for i in range(a.nodes)]
            refs = [rt.ref(n) for n in names]
            await rt.call_many(names, "ping")  # names cached
            if a.freeze:
                gc.collect()
                gc.freeze()
            kinds = ["shared", "own", *([] if a.no_per_call else ["per-call"])]
            walls: dict[str, list[float]] = {k: [] for k in kinds}
            cpus: dict[str, list[float]] = {k: [] for k in kinds}
            for rnd in range(a.rounds):
                for kind in kinds:
                    made = time.perf_counter()
                    if kind == "shared":
                        message: Any = Msg("host", f"round {rnd}: the mean was 0.5", "user")
                    else:
                        message = [Msg("host", f"round {rnd}: your neighbours say "
                                               f"{(k * 7919 % 1000) / 1000:.3f}", "user")
                                   for k in range(len(names))]
                    made = time.perf_counter() - made
                    node0 = await rt.call_many(probes, "usage")
                    head0 = usage()
                    t0 = time.perf_counter()
                    if kind == "per-call":
                        replies = await asyncio.gather(*(
                            r.call(m, timeout=a.timeout) for r, m in zip(refs, message,
                                                                          strict=True)),
                            return_exceptions=True)
                    else:
                        replies = await rt.call_many(
                            names, PerActor(message) if kind == "own" else message,
                            timeout=a.timeout, return_exceptions=True)
                    wall = time.perf_counter() - t0
                    head1 = usage()
                    node1 = await rt.call_many(probes, "usage")
                    assert len(replies) == len(names)
                    lost = sum(not isinstance(r, Msg) for r in replies)
                    del replies, message
                    head = spent(head1, head0)
                    node_cpu = sum(spent(x, y)["cpu"] for x, y in zip(node1, node0,
                                                                      strict=True))
                    walls[kind].append(wall)
                    cpus[kind].append(head["cpu"] + node_cpu)
                    emit("round_messages", kind, len(names), wall, "s", nodes=a.nodes,
                         head=head, node=busiest(node1, node0), cpu=round(head["cpu"]
                                                                         + node_cpu, 3),
                         made_s=round(made, 3), lost=lost, freeze=a.freeze,
                         heartbeat_timeout=a.heartbeat_timeout)
            base_wall = statistics.median(walls["shared"])
            base_cpu = statistics.median(cpus["shared"])
            for kind in kinds[1:]:
                emit("round_messages_ratio", f"{kind}/shared", len(names),
                     statistics.median(walls[kind]) / base_wall, "x", nodes=a.nodes,
                     cpu_ratio=round(statistics.median(cpus[kind]) / base_cpu, 3),
                     rounds=a.rounds, loadavg=os.getloadavg()[0])
        finally:
            stop_nodes(procs)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--agents", type=int, default=1_000_000)
    p.add_argument("--calls", type=int, default=100_000)
    p.add_argument("--baseline", type=int, default=10_000)
    p.add_argument("--nodes", type=int, default=4)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--freeze", action="store_true",
                   help="gc.freeze() after set-up, in the head and every node")
    p.add_argument("--own-messages", action="store_true",
                   help="a round with one message per agent against one shared message")
    p.add_argument("--no-per-call", action="store_true",
                   help="with --own-messages: leave out the one-call-per-agent baseline")
    p.add_argument("--heartbeat-timeout", type=float, default=120.0,
                   help="of the head and the nodes (the bus's default is 5)")
    p.add_argument("--timeout", type=float, default=300.0,
                   help="with --own-messages: each call's timeout")
    p.add_argument("--node")
    p.add_argument("--index", type=int, default=0)
    p.add_argument("--count", type=int, default=0)
    a = p.parse_args()
    if a.node:
        asyncio.run(node(a.node, a.index, a.count, a.freeze, a.heartbeat_timeout))
        return
    if a.own_messages:
        if a.quick:
            a.agents, a.rounds = 4_000, 2
        asyncio.run(bench_own_messages(a))
        return
    if a.quick:
        a.agents, a.calls, a.baseline, a.rounds = 20_000, 10_000, 2_000, 2
    a.calls = min(a.calls, a.agents)
    a.baseline = min(a.baseline, a.calls)
    asyncio.run(bench(a))


if __name__ == "__main__":
    main()
