"""The Ray backend: Ray places the worker processes on logical GPUs; the actors talk over
our bus."""

from __future__ import annotations

import asyncio
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
from agentplex.runtime import ActorError, HandlerError
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
    cluster = await init(backend="ray")
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
        (node,) = cluster.status()
        assert node["actors"] == ["other", "pair"] and node["labels"] == {"kind": "gpu"}
        assert sorted(g["share"] for g in node["gpus"]) == [1.0] * 4
    finally:
        await cluster.close(shutdown_ray=False)


async def test_a_ray_backed_head_serves_the_same_client_api(local_ray: None) -> None:
    async with connect() as head:
        await head.spawn(ClusterManager(backend="ray"), MANAGER)
        client = ClusterClient(head, timeout=60)
        ref = await client.spawn(COUNTER, 10, name="via-head",
                                 resources=Resources(cpus=0.1, gpus=1))
        assert await ref.call(5, timeout=30) == 15
        placement = await client.placement_of("via-head")
        assert placement is not None and len(placement["gpu_indices"]) == 1
        with pytest.raises(HandlerError, match="Unschedulable"):
            await client.spawn(COUNTER, resources=Resources(gpus=9))
        await client.stop("via-head")


async def test_spawn_many_on_ray_hosts_many_agents_in_one_ray_worker(local_ray: None) -> None:
    cluster = await init(backend="ray")
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
        await cluster.close(shutdown_ray=False)
