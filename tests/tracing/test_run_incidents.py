"""A node killed (SIGKILL) during a run: the run's manifest and log say which agents were
restored from which checkpoint, and which were lost — reported by the head, carried to
the run over the bus."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from agentplex import connect
from agentplex.cluster import ClusterClient, Resources
from agentplex.tracing import experiment
from tests.support.daemons import Daemons

COUNTER = "tests.support.actors:Counter"
pytestmark = pytest.mark.anyio


@pytest.fixture
def cluster() -> Iterator[tuple[str, Daemons]]:
    daemons = Daemons()
    try:
        endpoint = daemons.head("--ping-interval", "0.5", "--dead-after", "4")
        daemons.nodes(endpoint, ["n0", "n1"], "--cpus", "4", "--allow", "tests.support")
        yield endpoint, daemons
    finally:
        daemons.close()


async def test_a_killed_node_s_rollback_is_in_the_manifest_and_the_log(
    cluster: tuple[str, Daemons], tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    endpoint, daemons = cluster
    caplog.set_level(logging.WARNING, "agentplex.tracing")
    async with experiment("incidents", runs_dir=tmp_path) as run, \
            connect(endpoint, heartbeat_timeout=8) as rt:
        client = ClusterClient(rt, timeout=60)
        keep = await client.spawn_many(COUNTER, 40, names="keep-", restart="on-failure",
                                       resources=Resources(cpus=0.001), placement="spread")
        drop = await client.spawn_many(COUNTER, 40, names="drop-",
                                       resources=Resources(cpus=0.001), placement="spread")
        everyone = [*keep, *drop]
        await client.call_round(everyone, 1, timeout=30)
        await client.checkpoint()
        where = dict(zip((r.name for r in everyone), await asyncio.gather(
            *(r.call("where", timeout=30) for r in everyone)), strict=True))
        victims = sorted(n for n, w in where.items() if w == "n1")
        assert victims
        os.kill(daemons.pid("n1"), signal.SIGKILL)
        result = await asyncio.wait_for(client.call_round(everyone, 1, timeout=60), 120)
        assert sorted(result.lost) == [n for n in victims if n.startswith("drop-")]
    manifest = json.loads((run.dir / "manifest.json").read_text())
    incidents = manifest["incidents"]
    restored = [n for n in victims if n.startswith("keep-")]
    assert incidents["restarts"] == len(restored)
    assert incidents["lost_agents"] == len(victims) - len(restored)
    [rollback] = incidents["rollbacks"]
    assert rollback["node"] == "n1" and rollback["agents"] == len(restored)
    assert rollback["checkpoint"] >= 1 and rollback["checkpointed_at"]  # (one ours, others
    # the head's own every few seconds)
    assert rollback["to_nodes"] == ["n0"]
    assert set(rollback["names"]) <= set(restored) and rollback["names"][0] == restored[0]
    [lost] = incidents["lost"]
    assert lost["node"] == "n1" and lost["agents"] == len(victims) - len(restored)
    said = caplog.text
    assert f"{len(restored)} agent(s) {restored[0]}" in said
    assert f"restored from checkpoint {rollback['checkpoint']} (taken " in said
    assert "lost with it" in said
