"""``spawn_many`` over a real head and three node processes: one request per node, names
found from any process, and a node killed (SIGKILL) in the middle of a round."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Iterator

import pytest

from agentplex import connect
from agentplex.bus import SpawnRefused
from agentplex.cluster import ClusterClient, NodesMissing, Resources, Unschedulable
from agentplex.cluster.lowlevel import ask, node_agent_name
from agentplex.runtime import ActorExists, Runtime
from tests.support.daemons import Daemons

COUNTER = "tests.support.actors:Counter"
NODES = ["n0", "n1", "n2"]
pytestmark = pytest.mark.anyio


@pytest.fixture
def cluster() -> Iterator[tuple[str, Daemons]]:
    daemons = Daemons()
    try:
        endpoint = daemons.head("--ping-interval", "0.5", "--dead-after", "8")
        daemons.nodes(endpoint, NODES, "--cpus", "4", "--allow", "tests.support")
        yield endpoint, daemons
    finally:
        daemons.close()


async def node_requests(rt: Runtime, node: str) -> dict[str, int]:
    status = await ask(rt.ref(node_agent_name(node)), {"op": "status"}, timeout=30)
    return status["requests"]  # type: ignore[no-any-return]


async def hosted(rt: Runtime) -> int:
    """Actors hosted by all the nodes together."""
    return sum([(await ask(rt.ref(node_agent_name(n)), {"op": "status"}, timeout=30))["actors"]
                for n in NODES])


async def test_spawn_many_over_node_processes_sends_one_request_per_node(
    cluster: tuple[str, Daemons],
) -> None:
    endpoint, _ = cluster
    async with connect(endpoint) as rt:
        client = ClusterClient(rt, timeout=60)
        refs = await client.spawn_many(COUNTER, [[i] for i in range(600)], names="a-",
                                       resources=Resources(cpus=0.001))
        assert len(refs) == 600
        for node in NODES:
            assert await node_requests(rt, node) == {"start_many": 1}
        # Found by name from this process (a range in the head's directory) and from
        # another node's actors alike.
        assert await asyncio.gather(*(r.call(1, timeout=30) for r in refs)) == [
            i + 1 for i in range(600)]
        status = {n["node"]: n for n in await client.status()}
        assert sorted(sum(n["batches"].values()) for n in status.values()) == [200] * 3
        with pytest.raises(Unschedulable):
            await client.spawn_many(COUNTER, 20, resources=Resources(cpus=1))
        for node in NODES:  # refused whole at the head: no node heard of it
            assert await node_requests(rt, node) == {"start_many": 1}
        listed = await client.spawn_many(COUNTER, 3, names=["x", "y", "z"], placement="pack")
        assert [await r.call(2, timeout=30) for r in listed] == [2, 2, 2]
        # arguments named like spawn options cross to the nodes as the actor's
        booked = await client.spawn_many("tests.support.actors:Booked", 2, names="bk-",
                                         kwargs={"run": "mine", "resources": "few"})
        assert [await r.call("?", timeout=30) for r in booked] == [["mine", "few"]] * 2


async def test_the_heads_refusals_are_raised_here_as_their_own_types(
    cluster: tuple[str, Daemons],
) -> None:
    endpoint, _ = cluster
    async with connect(endpoint) as rt:
        client = ClusterClient(rt, timeout=60)
        assert await client.wait_for_nodes(3, timeout=30) == 3
        before = await hosted(rt)
        try:  # as a user writes it: the type, across the bus
            await client.spawn_many(COUNTER, 20, resources=Resources(cpus=1))
        except Unschedulable as exc:
            assert exc.retryable is False and "cpus" in exc.reason
        else:
            raise AssertionError("20 actors of 1 CPU fit on 3 nodes of 4 CPUs")
        # A misspelt class path: the nodes refuse it; no node failed.
        with pytest.raises(SpawnRefused, match=r"tests\.support\.actorz"):
            await client.spawn_many("tests.support.actorz:Counter", 6)
        with pytest.raises(SpawnRefused, match="not an actor class"):
            await client.spawn("tests.support.actors:Countr", name="typo")
        with pytest.raises(SpawnRefused, match="allow-list"):
            await client.spawn_many("json:JSONDecoder", 3)
        assert await hosted(rt) == before  # refusals leave nothing behind
        await client.spawn(COUNTER, name="taken", resources=Resources(cpus=0.01))
        with pytest.raises(ActorExists, match="taken"):
            await client.spawn(COUNTER, name="taken")
        with pytest.raises(ValueError, match="restart"):  # a bad option, before sending
            await client.spawn(COUNTER, restart="sometimes")
        with pytest.raises(NodesMissing) as missing:
            await client.wait_for_nodes(4, timeout=1)
        assert missing.value.joined == 3


async def test_kill_9_of_a_node_mid_round_restarts_its_share_and_reports_the_lost(
    cluster: tuple[str, Daemons],
) -> None:
    endpoint, daemons = cluster
    async with connect(endpoint, heartbeat_timeout=8) as rt:
        client = ClusterClient(rt, timeout=60)
        keep = await client.spawn_many(COUNTER, 1000, names="keep-", restart="on-failure",
                                       resources=Resources(cpus=0.001))
        drop = await client.spawn_many(COUNTER, 1000, names="drop-",
                                       resources=Resources(cpus=0.001))
        everyone = [*keep, *drop]
        first = await client.call_round(everyone, 1, timeout=30)
        assert len(first.replies) == 2000
        await client.checkpoint()
        where = dict(zip((r.name for r in everyone), await asyncio.gather(
            *(r.call("where", timeout=30) for r in everyone)), strict=True))
        victims = {n for n, w in where.items() if w == "n2"}
        assert 500 < len(victims) < 800

        round_ = asyncio.ensure_future(client.call_round(
            everyone, {"sleep": 1.0, "add": 1}, timeout=20))
        await asyncio.sleep(0.3)
        os.kill(daemons.pid("n2"), signal.SIGKILL)
        result = await asyncio.wait_for(round_, 90)

        lost = sorted(n for n in victims if n.startswith("drop-"))
        assert sorted(result.lost) == lost
        assert not result.errors
        assert len(result.replies) == 2000 - len(lost)
        assert result.asked_again >= len(victims) - len(lost)
        # The restarted ones came back from the checkpoint (1) and were asked again (+1).
        assert {result.replies[n] for n in victims if n.startswith("keep-")} == {2}
        assert {result.replies[n] for n in where if n not in victims} == {2}
        # Restarted per batch: one more request to each surviving node.
        for node in ("n0", "n1"):
            assert (await node_requests(rt, node))["start_many"] == 3


async def test_respawn_starts_a_dead_node_s_lost_share_again_as_created(
    cluster: tuple[str, Daemons],
) -> None:
    """What a simulation's driver does after a node died with its agents: the lost share
    of a ``restart="never"`` batch starts again on the nodes left, from its arguments and
    not from the head's checkpoint (the driver restores its own), and only once."""
    endpoint, daemons = cluster
    async with connect(endpoint, heartbeat_timeout=8) as rt:
        client = ClusterClient(rt, timeout=60)
        refs = await client.spawn_many(COUNTER, [[7]] * 60, names="gone-",
                                       resources=Resources(cpus=0.001))
        assert set((await client.call_round(refs, 1, timeout=30)).replies.values()) == {8}
        await client.checkpoint("gone-0")  # the head now holds each one's count, 8
        where = dict(zip((r.name for r in refs), await asyncio.gather(
            *(r.call("where", timeout=30) for r in refs)), strict=True))
        victims = sorted(n for n, w in where.items() if w == "n2")
        survivor = next(n for n, w in where.items() if w != "n2")
        assert victims
        os.kill(daemons.pid("n2"), signal.SIGKILL)
        found = await asyncio.wait_for(client.recover(victims), 60)
        assert sorted(found["lost"]) == victims
        got = await client.respawn([*victims, survivor, "nobody"])
        assert sorted(got["restarted"]) == victims
        assert sorted(got["failed"]) == sorted([survivor, "nobody"])
        assert set(got["nodes"]) <= {"n0", "n1"} and got["nodes"]
        again = await asyncio.gather(*(rt.ref(n).call(0, timeout=30) for n in victims))
        assert set(again) == {7}  # as created, not the head's checkpointed 8
        assert sorted((await client.recover(victims))["running"]) == victims
        assert sorted((await client.respawn(victims))["failed"]) == victims  # not lost now
