import asyncio

import pytest

from agentplex.cluster import GPU, Cluster, LocalNode, NodeSpec, Resources, Unschedulable, init
from agentplex.cluster.lowlevel import node_agent_name
from agentplex.runtime import ActorExists, ActorNotFound, ActorStopped
from tests.support.actors import Slow

pytestmark = pytest.mark.anyio

COUNTER = "tests.support.actors:Counter"


async def four_nodes(checkpoint_interval: float | None = None) -> Cluster:
    """Two nodes with two declared 24 GiB GPUs each and two CPU-only nodes."""
    cluster = await Cluster(checkpoint_interval=checkpoint_interval).start()
    for name in ("gpu-a", "gpu-b"):
        await cluster.add_node(NodeSpec(id=name, cpus=8, labels={"kind": "gpu"},
                                        gpus=[GPU(index=i, total_memory="24GiB")
                                              for i in range(2)]))
    for name in ("cpu-a", "cpu-b"):
        await cluster.add_node(NodeSpec(id=name, cpus=8, labels={"kind": "cpu"}))
    return cluster


async def test_spawn_places_by_resources_and_the_ref_works() -> None:
    async with await four_nodes() as cluster:
        model = await cluster.spawn(COUNTER, name="llm",
                                    resources=Resources(gpus=1, gpu_memory="8GiB"))
        assert await model.call("where", timeout=5) in ("gpu-a", "gpu-b")
        assert await model.call("gpus", timeout=5) in ("0", "1")
        worker = await cluster.spawn(COUNTER, 10, name="w", labels={"kind": "cpu"})
        assert await worker.call(5, timeout=5) == 15
        assert await worker.call("where", timeout=5) in ("cpu-a", "cpu-b")
        with pytest.raises(ActorExists):
            await cluster.spawn(COUNTER, name="w")


async def test_spawning_many_small_actors_over_four_nodes_spreads_them() -> None:
    async with await four_nodes() as cluster:
        refs = [await cluster.spawn(COUNTER, name=f"a{i}", resources=Resources(cpus=0.01),
                                    placement="spread") for i in range(200)]
        assert await asyncio.gather(*(r.call(1, timeout=5) for r in refs)) == [1] * 200
        per_node = [len(n["actors"]) for n in await cluster.status()]
        assert per_node == [50, 50, 50, 50]


async def test_what_cannot_fit_is_refused_or_queued_with_its_reason() -> None:
    async with await four_nodes() as cluster:
        with pytest.raises(Unschedulable, match=r"no 1 GPU.*with 40\.0GiB") as info:
            await cluster.spawn(COUNTER, resources=Resources(gpus=1, gpu_memory="40GiB"))
        assert not info.value.retryable
        hogs = [await cluster.spawn(COUNTER, name=f"hog{i}", resources=Resources(gpus=1))
                for i in range(4)]
        with pytest.raises(Unschedulable):
            await cluster.spawn(COUNTER, name="late", resources=Resources(gpus=1))
        queued = asyncio.ensure_future(
            cluster.spawn(COUNTER, name="late", resources=Resources(gpus=1), wait=10))
        await asyncio.sleep(0.05)
        assert not queued.done()
        await cluster.stop(hogs[0].name)
        late = await asyncio.wait_for(queued, 10)
        assert await late.call(1, timeout=5) == 1
        assert await cluster.placement_of("late") is not None


async def test_a_dead_node_s_actors_restart_elsewhere_from_their_checkpoint() -> None:
    async with await four_nodes() as cluster:
        keeper = await cluster.spawn(COUNTER, name="keeper", restart="on-failure",
                                     labels={"kind": "cpu"}, node="cpu-a")
        mortal = await cluster.spawn(COUNTER, name="mortal", node="cpu-a")
        for _ in range(3):
            await keeper.call(1, timeout=5)
        await cluster.checkpoint()
        await keeper.call(100, timeout=5)  # after the checkpoint: lost with the node
        node = cluster.nodes["cpu-a"]
        assert isinstance(node, LocalNode)
        await node.kill()
        with pytest.raises(ActorStopped):  # a call in flight or racing the death fails
            await node.runtime.ref("keeper").call(1, timeout=5)
        assert await cluster.node_failed("cpu-a") == ["keeper"]
        assert await keeper.call("where", timeout=5) == "cpu-b"  # same name, new home
        assert await keeper.call(1, timeout=5) == 4  # the count came from the checkpoint
        assert "mortal" not in cluster.actors  # restart="never"
        with pytest.raises(ActorNotFound):
            await mortal.call(1, timeout=5)


async def test_a_node_that_never_answers_is_declared_dead_within_dead_after() -> None:
    """Its silence counts from the first ping it was sent, not from the first ping that
    failed (a node killed just after it joined, whose first ping waits in vain)."""
    cluster = await Cluster(checkpoint_interval=None, ping_interval=0.05,
                            dead_after=2.0).start()
    async with cluster:
        await cluster.runtime.spawn(Slow(), node_agent_name("mute"))  # hears, never answers
        await cluster.join(NodeSpec(id="mute", cpus=1))
        assert await cluster.wait_for_nodes(1, timeout=1) == 1
        await asyncio.sleep(3.2)
        # 2 s of silence and a little; counting from the first failure took 4 s or more
        assert "mute" not in cluster.nodes


async def test_periodic_checkpoints_happen_by_themselves() -> None:
    async with await four_nodes(checkpoint_interval=0.05) as cluster:
        ref = await cluster.spawn(COUNTER, name="c", restart="on-failure")
        await ref.call(7, timeout=5)
        await asyncio.sleep(0.3)
        assert cluster.actors["c"].state == {"count": 7}


async def test_init_starts_a_one_machine_cluster_without_daemons() -> None:
    cluster = await init(gpus=2, gpu_memory="16GiB", checkpoint_interval=None)
    try:
        ref = await cluster.spawn(COUNTER, name="solo", resources=Resources(gpus=2))
        assert await ref.call("gpus", timeout=5) == "0,1"
        (node,) = await cluster.status()
        assert node["node"] == "local" and node["actors"] == ["solo"]
        assert [g["share"] for g in node["gpus"]] == [1.0, 1.0]
    finally:
        await cluster.close()


async def test_classes_defined_in_functions_are_refused() -> None:
    from agentplex.runtime import Actor

    class Local(Actor):
        pass

    async with await four_nodes() as cluster:
        with pytest.raises(ValueError, match="importable by path"):
            await cluster.spawn(Local)
