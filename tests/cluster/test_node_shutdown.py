"""A node told to stop (SIGTERM) while one of its actors has a long backlog exits once its
drain timeout has passed, instead of working through the backlog first: real head and node
processes started through the CLI."""

from __future__ import annotations

import asyncio
import signal
import subprocess

import pytest

from agentplex import connect
from agentplex.cluster import ClusterClient
from agentplex.runtime import CallTimeout
from tests.support.daemons import Daemons

pytestmark = pytest.mark.anyio


async def test_sigterm_ends_a_node_whose_actor_has_a_backlog() -> None:
    daemons = Daemons()
    try:
        endpoint = daemons.head()
        daemons.nodes(endpoint, ["n0"], "--allow", "tests.support", "--drain-timeout", "1")
        async with connect(endpoint) as rt:
            client = ClusterClient(rt, timeout=60)
            slow = await client.spawn("tests.support.actors:Echo", name="slow", detach=True)
            for _ in range(300):  # five minutes of work, more than any default drain allows
                await slow.tell({"sleep": 1})
            with pytest.raises(CallTimeout):  # queued behind the tells: they all arrived
                await slow.call("where", timeout=2)

            node = daemons.procs["n0"]
            node.send_signal(signal.SIGTERM)
            try:
                code = await asyncio.to_thread(node.wait, 90)
            except subprocess.TimeoutExpired:
                pytest.fail("the node still runs 90 s after SIGTERM: it drains its backlog")
            assert code == 0
            daemons.wait_for("n0", "draining for up to 1s")
    finally:
        daemons.close()
