"""A head and four node processes on loopback, driven through the CLI as a user would:
two nodes with two declared 24 GiB GPUs each, two CPU-only nodes."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from agentplex import Msg, connect
from agentplex.cluster import (
    ActorTool,
    ClusterClient,
    RemoteChatModel,
    Resources,
    Unschedulable,
)
from agentplex.message import ToolUseBlock, encode
from agentplex.tool import AgentImage, Toolkit
from tests.support import ROOT, pythonpath
from tests.support.results import as_response, as_stream

COUNTER = "tests.support.actors:Counter"
pytestmark = pytest.mark.anyio


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": pythonpath(), "PYTHONUNBUFFERED": "1"}


LOGS = Path(tempfile.mkdtemp(prefix="agentplex-cluster-"))
_log_of: dict[int, Path] = {}


def _start(*args: str) -> subprocess.Popen[str]:
    """A daemon writing to a log file (a pipe nobody drains would block it once full)."""
    path = LOGS / f"{args[0]}-{len(_log_of)}.log"
    with path.open("w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "agentplex", *args], cwd=ROOT,
                                env=_env(), stdout=log, stderr=subprocess.STDOUT, text=True)
    _log_of[proc.pid] = path
    return proc


def _first_line(proc: subprocess.Popen[str], needle: str, timeout: float = 60) -> str:
    log = _log_of[proc.pid]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in log.read_text().splitlines():
            if needle in line:
                return line
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    raise AssertionError(f"{proc.args!r} never printed {needle!r}:\n{log.read_text()[-2000:]}")


@pytest.fixture(scope="module")
def cluster_procs() -> Iterator[tuple[str, dict[str, subprocess.Popen[str]]]]:
    head = _start("head", "--bind", "tcp://127.0.0.1:0", "--ping-interval", "0.3",
                  "--dead-after", "4")
    endpoint = _first_line(head, "listening on").split()[-1]
    nodes: dict[str, subprocess.Popen[str]] = {}
    allow = ["--allow", "tests.support", "--allow", "agentplex.cluster", "--allow", "examples"]
    for name in ("gpu-a", "gpu-b"):
        nodes[name] = _start("node", "--head", endpoint, "--id", name, "--gpus", "2",
                             "--gpu-memory", "24GiB", "--label", "kind=gpu", *allow)
    for name in ("cpu-a", "cpu-b"):
        nodes[name] = _start("node", "--head", endpoint, "--id", name, "--cpus", "8",
                             "--label", "kind=cpu", *allow)
    try:
        for name, proc in nodes.items():
            _first_line(proc, f"node {name} joined")
        yield endpoint, nodes
    finally:
        for proc in [*nodes.values(), head]:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in [*nodes.values(), head]:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()


async def test_placement_gpu_workers_streaming_and_refusals(
    cluster_procs: tuple[str, dict[str, subprocess.Popen[str]]],
) -> None:
    endpoint, _ = cluster_procs
    async with connect(endpoint) as rt:
        cluster = ClusterClient(rt, timeout=60)
        status = await cluster.status()
        assert sorted(n["node"] for n in status) == ["cpu-a", "cpu-b", "gpu-a", "gpu-b"]

        gpu = await cluster.spawn(COUNTER, name="gpu-actor",
                                  resources=Resources(gpus=1, gpu_memory="8GiB"))
        placement = await cluster.placement_of("gpu-actor")
        assert placement is not None and placement.node_id.startswith("gpu-")
        # Its worker process sees only the GPU it was given.
        seen = await gpu.call("env", timeout=30)
        assert seen == ",".join(str(i) for i in placement.gpu_indices)

        cpu = await cluster.spawn(COUNTER, 5, name="cpu-actor", labels={"kind": "cpu"})
        assert await cpu.call(1, timeout=30) == 6
        assert await cpu.call("env", timeout=30) in (None, "")

        with pytest.raises(Unschedulable) as info:  # raised here as its own type
            await cluster.spawn(COUNTER, resources=Resources(gpus=1, gpu_memory="40GiB"))
        assert "40.0GiB" in str(info.value) and not info.value.retryable

        await cluster.spawn("agentplex.cluster:ModelActor", "scripted:shared",
                            name="llm", labels={"kind": "cpu"},
                            script=["streamed over the bus"], stream=True)
        remote = RemoteChatModel("llm", stream=True, timeout=30)
        chunks = [c async for c in as_stream(await remote([Msg("u", "hi", "user")]))]
        assert chunks[-1].is_last and chunks[-1].text == "streamed over the bus"
        assert len(chunks) > 2


async def test_a_tool_actor_on_another_process_returns_media_intact(
    cluster_procs: tuple[str, dict[str, subprocess.Popen[str]]],
) -> None:
    endpoint, _ = cluster_procs
    async with connect(endpoint) as rt:
        cluster = ClusterClient(rt, timeout=60)
        ref = await cluster.spawn("tests.support.actors:Painter", name="painter",
                                  resources=Resources(gpus=1))
        tool = await ActorTool.connect(ref, timeout=30)
        toolkit = Toolkit()
        toolkit.register_tool_function(tool)
        result = await toolkit.execute(ToolUseBlock(id="1", name="paint",
                                                    input={"shade": 77, "width": 64}))
        assert not result.is_error
        image = AgentImage(result.output[0])
        pixels = image.to_raw()
        assert pixels.size == (64, 64) and pixels.getpixel((5, 5)) == (77, 77, 77)
        assert image.data in encode(result)  # raw bytes on the wire, not base64 text
        bad = await toolkit.execute(ToolUseBlock(id="2", name="paint", input={"shade": []}))
        assert bad.is_error and "invalid arguments" in str(bad.output)
        await cluster.stop("painter")


async def test_kill_9_of_a_node_restarts_its_actors_elsewhere_with_state(
    cluster_procs: tuple[str, dict[str, subprocess.Popen[str]]],
) -> None:
    endpoint, nodes = cluster_procs
    async with connect(endpoint) as rt:
        cluster = ClusterClient(rt, timeout=60)
        ref = await cluster.spawn(COUNTER, name="survivor", node="cpu-b",
                                  restart="on-failure")
        for _ in range(3):
            await ref.call(1, timeout=30)
        await cluster.checkpoint("survivor")
        nodes["cpu-b"].kill()  # SIGKILL: no goodbye
        nodes["cpu-b"].wait(10)
        deadline = asyncio.get_running_loop().time() + 30
        while True:
            try:
                where = await ref.call("where", timeout=2)
                if where != "cpu-b":
                    break
            except Exception:
                pass
            assert asyncio.get_running_loop().time() < deadline, "never restarted"
            await asyncio.sleep(0.3)
        assert where in ("cpu-a", "gpu-a", "gpu-b")
        assert await ref.call(1, timeout=30) == 4  # restored from the checkpoint
        status = {n["node"]: n for n in await cluster.status()}
        assert "cpu-b" not in status and "survivor" in status[where]["actors"]


def test_status_command_shows_nodes_gpus_and_actors(
    cluster_procs: tuple[str, dict[str, subprocess.Popen[str]]],
) -> None:
    endpoint, _ = cluster_procs
    out = subprocess.run([sys.executable, "-m", "agentplex", "status", "--head", endpoint],
                         cwd=ROOT, env={**_env(), "COLUMNS": "200"}, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    for node in ("gpu-a", "gpu-b", "cpu-a"):
        assert node in out.stdout
    assert "declared GPU" in out.stdout and "24.0 GiB" in out.stdout
    assert "kind=gpu" in out.stdout


def test_cluster_example_runs_as_documented(
    cluster_procs: tuple[str, dict[str, subprocess.Popen[str]]],
) -> None:
    endpoint, _ = cluster_procs
    out = subprocess.run([sys.executable, str(ROOT / "examples" / "cluster.py"), "--head",
                          endpoint, "--agents", "6"], cwd=ROOT, env=_env(),
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "placed 1 model actor and 6 agents" in out.stdout
    assert "citizen-0: Hello from the shared model." in out.stdout


async def test_served_engine_over_the_bus_and_in_status(
    cluster_procs: tuple[str, dict[str, subprocess.Popen[str]]],
) -> None:
    pytest.importorskip("openai")
    endpoint, _ = cluster_procs
    async with connect(endpoint) as rt:
        cluster = ClusterClient(rt, timeout=60)
        model = await cluster.serve("scripted:bus", name="bus-llm", replicas=2,
                                    resources=Resources(cpus=0.5, gpus=1, gpu_memory="6GiB"),
                                    labels={"kind": "gpu"}, ready_timeout=120)
        try:
            assert as_response(await model([Msg("u", "hi", "user")])).text == "Hello from bus."
            served = await cluster.served_status()
            replicas = served[0]["replicas"]
            assert [r["state"] for r in replicas] == ["ready", "ready"]
            assert {r["gpu_memory_fraction"] for r in replicas} == {0.25}
            assert all(r["node"].startswith("gpu-") for r in replicas)
            out = await asyncio.to_thread(
                subprocess.run, [sys.executable, "-m", "agentplex", "status", "--head", endpoint],
                cwd=ROOT, env={**_env(), "COLUMNS": "250"}, capture_output=True, text=True,
                timeout=60)
            assert out.returncode == 0, out.stderr
            assert "served models" in out.stdout and "bus-llm/0" in out.stdout
            assert "scripted:bus" in out.stdout and "ready" in out.stdout
        finally:
            await model.aclose()
            await cluster.unserve("bus-llm")
        assert await cluster.served_status() == []


async def test_a_node_the_cluster_declares_dead_is_dropped_by_the_bus_at_once() -> None:
    """The cluster's pings declare a node dead after ``--dead-after`` (2 s here) while the
    bus's heartbeat would wait 30 s (a run's ``--lost-after``): the bus hears it from the
    cluster, so a call waiting on the node fails at once with ``PeerLost``, and a restarted
    actor's next call is not sent to the dead node."""
    from agentplex.runtime import PeerLost

    slow = ["--heartbeat-timeout", "30"]
    head = _start("head", "--bind", "tcp://127.0.0.1:0", "--ping-interval", "0.3",
                  "--dead-after", "2", *slow)
    procs = [head]
    try:
        endpoint = _first_line(head, "listening on").split()[-1]
        for name in ("stalls", "stays"):
            procs.append(_start("node", "--head", endpoint, "--id", name, "--cpus", "4",
                                "--allow", "tests.support", *slow))
            _first_line(procs[-1], f"node {name} joined")
        async with connect(endpoint, heartbeat_timeout=30) as rt:
            cluster = ClusterClient(rt, timeout=60)
            ref = await cluster.spawn("tests.support.actors:Echo", "x", name="stuck",
                                      node="stalls", restart="on-failure")
            assert await ref.call("where", timeout=30) == "x"
            # a claim that a live node's process ended (wrong, or hostile) changes nothing:
            # the head asks the node first
            assert await cluster.node_exited("stalls", "its process ended (a lie)") is False
            assert await cluster.node_exited("nobody", "no such node") is False
            assert await ref.call("where", timeout=30) == "x"
            waiting = asyncio.ensure_future(ref.call("hang", timeout=120))
            await asyncio.sleep(0.3)
            procs[1].send_signal(signal.SIGSTOP)  # silent: no socket closes, no goodbye
            started = time.monotonic()
            with pytest.raises(PeerLost):
                await asyncio.wait_for(waiting, 20)  # the bus alone: 30 s
            assert time.monotonic() - started < 20
            deadline = time.monotonic() + 30
            while True:  # started again on the node left
                try:
                    if await ref.call("where", timeout=3) == "x":
                        break
                except Exception:
                    pass
                assert time.monotonic() < deadline, "never restarted"
                await asyncio.sleep(0.3)
            status = {n["node"]: n for n in await cluster.status()}
            assert "stalls" not in status and "stuck" in status["stays"]["actors"]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                proc.wait(10)
