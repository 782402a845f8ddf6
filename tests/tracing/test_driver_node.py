"""The process that runs an experiment across processes is its trace page's "driver", not
the random id it had on the bus: the manifest keeps that id as ``driver_node``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agentplex import connect
from agentplex.cluster import ClusterClient, Resources
from agentplex.tracing import experiment, summarize_run
from tests.support.daemons import Daemons

pytestmark = pytest.mark.anyio


async def test_the_driver_of_a_run_on_nodes_is_named_driver_on_its_page(
        tmp_path: Path) -> None:
    daemons = Daemons()
    try:
        endpoint = daemons.head()
        daemons.nodes(endpoint, ["n0"], "--cpus", "4", "--allow", "tests.support")
        async with experiment("lab", runs_dir=tmp_path, sampling=1.0) as run, \
                connect(endpoint, node_id="lab-driver", heartbeat_timeout=30) as rt:
            client = ClusterClient(rt, timeout=60)
            refs = await client.spawn_many("tests.support.actors:Counter", 4, names="c-",
                                           resources=Resources(cpus=0.001))
            for _ in range(2):
                await client.call_round(refs, 1, timeout=30)
            await client.close()
    finally:
        daemons.close()
    manifest = json.loads((run.dir / "manifest.json").read_text())
    assert manifest["driver_node"] == "lab-driver"
    nodes = summarize_run(run.dir).nodes
    assert "lab-driver" not in nodes
    assert nodes["driver"].sent > 0 and nodes["n0"].received > 0, nodes
