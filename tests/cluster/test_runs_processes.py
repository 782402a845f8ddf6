"""A run's agents stop when its driver ends, however it ends, unless detached: real head,
node and driver processes, and a ``kill -9`` of the driver."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import Iterator

import pytest

from agentplex import connect
from agentplex.cluster import ClusterClient
from agentplex.runtime import ActorError
from tests.support import ROOT, pythonpath
from tests.support.daemons import Daemons

pytestmark = pytest.mark.anyio


@pytest.fixture
def cluster() -> Iterator[str]:
    daemons = Daemons()
    try:
        endpoint = daemons.head("--ping-interval", "0.5", "--dead-after", "8")
        daemons.nodes(endpoint, ["n0", "n1"], "--cpus", "2", "--allow", "tests.support")
        yield endpoint
    finally:
        daemons.close()


async def start_driver(endpoint: str, run: str, *flags: str) -> asyncio.subprocess.Process:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.support.cluster_driver", endpoint, run, *flags,
        cwd=ROOT, env={**os.environ, "PYTHONPATH": pythonpath()},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL)
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), 120)
    assert line.strip() == b"ready", line
    return proc


async def runs(client: ClusterClient) -> dict[str, int]:
    """Actors of each run, over every node."""
    out: dict[str, int] = {}
    for node in await client.status():
        for batch, count in node["batches"].items():
            run = node["runs"].get(batch, "-")
            out[run] = out.get(run, 0) + count
    return out


async def wait_until_gone(client: ClusterClient, run: str, timeout: float = 90) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while run in await runs(client):
        assert loop.time() < deadline, f"run {run!r} still placed after {timeout:g}s"
        await asyncio.sleep(0.5)


async def test_the_head_stops_a_killed_drivers_run_but_keeps_what_it_detached(
    cluster: str,
) -> None:
    async with connect(cluster) as rt:
        client = ClusterClient(rt, timeout=60)
        driver = await start_driver(cluster, "r1")
        assert await runs(client) == {"r1": 30, "r1-kept": 20}
        status = await asyncio.create_subprocess_exec(  # what a user sees: batches by run
            sys.executable, "-m", "agentplex", "status", "--head", cluster, cwd=ROOT,
            env={**os.environ, "PYTHONPATH": pythonpath(), "COLUMNS": "200"},
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        shown = (await asyncio.wait_for(status.communicate(), 120))[0].decode()
        assert "batches by run" in shown and "r1-kept" in shown, shown

        driver.send_signal(signal.SIGKILL)
        await driver.wait()
        await wait_until_gone(client, "r1")
        assert await runs(client) == {"r1-kept": 20}
        with pytest.raises(ActorError):
            await rt.ref("r1-0").call(1, timeout=10)
        assert await rt.ref("r1-kept-19").call(1, timeout=30) == 1
        # The names are free again: a rerun of the run does not meet ActorExists.
        again = await client.spawn_many("tests.support.actors:Counter", 30, names="r1-",
                                        run="r1", detach=True)
        assert await again[29].call(2, timeout=30) == 2


async def test_a_driver_that_fails_stops_its_run_as_it_exits(cluster: str) -> None:
    async with connect(cluster) as rt:
        client = ClusterClient(rt, timeout=60)
        driver = await start_driver(cluster, "r2", "--raise")
        assert await asyncio.wait_for(driver.wait(), 120) != 0
        # Ended by the driver itself on its way out: no heartbeat to wait for.
        assert "r2" not in await runs(client)
        assert await runs(client) == {"r2-kept": 20}
