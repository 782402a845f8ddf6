"""The Ray backend: Ray places the worker processes on logical GPUs; the actors talk over
our bus."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Iterator

import pytest

from agentplex import connect
from agentplex.cluster import (
    ClusterClient,
    ClusterManager,
    RayCluster,
    Resources,
    Unschedulable,
    init,
)
from agentplex.cluster.lowlevel import MANAGER
from agentplex.runtime import ActorError, PeerLost
from tests.support import pythonpath

ray = pytest.importorskip("ray", reason="the Ray backend needs the 'ray' extra")

COUNTER = "tests.support.actors:Counter"
pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    """One local Ray for the module: 2 CPUs, 4 logical GPUs, a node label."""
    ray.init(num_cpus=2, num_gpus=4, resources={"label:kind=gpu": 100},
             include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": pythonpath()}})
    yield
    ray.shutdown()


async def test_ray_places_actors_on_logical_gpus_and_refuses_what_cannot_fit(
    local_ray: None,
) -> None:
    cluster = await init(backend="ray", shutdown_ray=False)
    assert isinstance(cluster, RayCluster)
    try:
        first = await cluster.spawn(COUNTER, name="pair", labels={"kind": "gpu"},
                                    resources=Resources(cpus=0.1, gpus=2))
        where = cluster.where("pair")
        assert where is not None and len(where["gpu_ids"]) == 2
        # Ray gave the worker process exactly its GPUs; the actor answers over our bus.
        assert where["cuda_visible_devices"] == ",".join(map(str, where["gpu_ids"]))
        assert await first.call("env", timeout=30) == where["cuda_visible_devices"]
        assert await first.call(3, timeout=30) == 3

        await cluster.spawn(COUNTER, name="other", resources=Resources(cpus=0.1, gpus=2),
                            placement="spread")
        other = cluster.where("other")
        assert other is not None and not set(other["gpu_ids"]) & set(where["gpu_ids"])

        with pytest.raises(Unschedulable, match="can ever hold"):
            await cluster.spawn(COUNTER, resources=Resources(gpus=8))
        with pytest.raises(Unschedulable, match="can ever hold"):
            await cluster.spawn(COUNTER, labels={"kind": "tpu"})
        with pytest.raises(Unschedulable, match="did not place"):
            await cluster.spawn(COUNTER, resources=Resources(cpus=0.1, gpus=1), wait=3)
        (node,) = await cluster.status()
        assert node["actors"] == ["other", "pair"] and node["labels"] == {"kind": "gpu"}
        assert sorted(g["share"] for g in node["gpus"]) == [1.0] * 4
    finally:
        await cluster.close()


async def test_a_ray_backed_head_serves_the_same_client_api(local_ray: None) -> None:
    async with connect() as head:
        await head.spawn(ClusterManager(backend="ray"), MANAGER)
        client = ClusterClient(head, timeout=60)
        ref = await client.spawn(COUNTER, 10, name="via-head",
                                 resources=Resources(cpus=0.1, gpus=1))
        assert await ref.call(5, timeout=30) == 15
        placement = await client.placement_of("via-head")
        assert placement is not None and len(placement.gpu_indices) == 1
        with pytest.raises(Unschedulable, match="can ever hold"):
            await client.spawn(COUNTER, resources=Resources(gpus=9))
        assert await client.served_status() == []  # what `agentplex status` asks too
        await client.stop("via-head")

        # An actor spawned alone comes back from its checkpoint too, through the head.
        solo = await client.spawn(COUNTER, 1, name="solo", resources=Resources(cpus=0.01),
                                  restart="on-failure")
        assert await solo.call(1, timeout=30) == 2
        await client.checkpoint("solo")
        pid = await solo.call("pid", timeout=30)
        os.kill(pid, signal.SIGKILL)
        assert await client.recover(["solo", "nobody"]) == {
            "running": ["solo"], "lost": [], "unknown": ["nobody"]}
        assert await solo.call(0, timeout=30) == 2
        assert await solo.call("pid", timeout=30) != pid
        await client.stop("solo")


async def test_spawn_many_on_ray_hosts_many_agents_in_one_ray_worker(local_ray: None) -> None:
    cluster = await RayCluster.start(shutdown_ray=False)
    try:
        refs = await cluster.spawn_many(COUNTER, [[i] for i in range(200)], names="r-",
                                        resources=Resources(cpus=0.001), placement="pack")
        assert len(refs) == 200
        assert await asyncio.gather(*(r.call(1, timeout=30) for r in refs)) == [
            i + 1 for i in range(200)]
        pids = await asyncio.gather(*(r.call("pid", timeout=30) for r in refs))
        assert len(set(pids)) == 1  # one Ray worker process hosts all 200
        two = await cluster.spawn_many(COUNTER, 50, resources=Resources(cpus=0.001),
                                       workers=2)
        assert len({await r.call("pid", timeout=30) for r in two}) == 2
        with pytest.raises(Unschedulable, match="can ever hold"):
            await cluster.spawn_many(COUNTER, 100, resources=Resources(cpus=0.1))
        await cluster.stop_batch(refs)
        with pytest.raises(ActorError):
            await refs[0].call(1, timeout=5)
    finally:
        await cluster.close()


async def test_a_worker_ray_restarts_hosts_its_agents_again_from_their_checkpoint(
    local_ray: None,
) -> None:
    cluster = await RayCluster.start(checkpoint_interval=None, shutdown_ray=False)
    assert isinstance(cluster, RayCluster)
    small = Resources(cpus=0.001)
    try:
        kept = await cluster.spawn_many(COUNTER, [[10 * i] for i in range(3)], names="kept-",
                                        resources=small, placement="pack",
                                        restart="on-failure", max_restarts=2)
        gone = await cluster.spawn_many(COUNTER, 2, names="gone-", resources=small,
                                        placement="pack")
        assert await asyncio.gather(*(r.call(1, timeout=30) for r in kept)) == [1, 11, 21]
        await cluster.checkpoint()
        assert await kept[0].call(5, timeout=30) == 6  # after the checkpoint: dies with it
        pid = await kept[0].call("pid", timeout=30)

        # SIGKILL the worker with a call in flight: the call fails, typed, without hanging.
        in_flight = asyncio.ensure_future(kept[1].call({"sleep": 60, "add": 1}, timeout=45))
        await asyncio.sleep(0.5)
        os.kill(pid, signal.SIGKILL)
        with pytest.raises(PeerLost):
            await in_flight
        assert await cluster.recover(kept.names) == {
            "running": list(kept.names), "lost": [], "unknown": []}
        assert await kept[0].call("pid", timeout=30) != pid  # Ray's new process
        assert await asyncio.gather(*(r.call(0, timeout=30) for r in kept)) == [1, 11, 21]

        # A round in flight when the worker dies again is asked again once it is back.
        await cluster.checkpoint(kept.names[2])
        pid = await kept[0].call("pid", timeout=30)
        round_ = asyncio.ensure_future(cluster.call_round(
            kept, {"sleep": 5, "add": 100}, timeout=45, attempts=2))
        await asyncio.sleep(1)
        os.kill(pid, signal.SIGKILL)
        result = await round_
        assert result.replies == {"kept-0": 101, "kept-1": 111, "kept-2": 121}
        assert result.asked_again == 3 and not result.lost and not result.errors

        # restart="never": Ray leaves the worker dead and its agents are reported lost.
        os.kill(await gone[0].call("pid", timeout=30), signal.SIGKILL)
        assert await cluster.recover(gone.names) == {
            "running": [], "lost": list(gone.names), "unknown": []}
        assert (await cluster.call_round(gone, 1, timeout=30)).lost == list(gone.names)
        (node,) = await cluster.status()
        assert node["batches"] == {"1": 3}

        # respawn: lost agents named start again as created, each dead worker's in a new
        # one; those not named stay lost, those not lost are refused
        got = await cluster.respawn(["gone-1", "kept-0", "nobody"])
        assert got == {"restarted": ["gone-1"], "nodes": [node["node"][:12]],
                       "failed": ["kept-0", "nobody"]}
        assert await gone[1].call(2, timeout=30) == 2  # as created: from 0
        assert await cluster.recover(gone.names) == {
            "running": ["gone-1"], "lost": ["gone-0"], "unknown": []}
        assert (await cluster.respawn(["gone-0"]))["restarted"] == ["gone-0"]
        assert await gone[0].call(3, timeout=30) == 3
        (node,) = await cluster.status()
        assert node["batches"] == {"1": 3, "2": 2}
    finally:
        await cluster.close()
