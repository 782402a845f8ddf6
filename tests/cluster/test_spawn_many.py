"""Batch placement: ``spawn_many`` places a whole batch at once, each node gets one
request for its share, and a node dying mid-round loses nothing silently."""

from __future__ import annotations

import asyncio

import pytest

from agentplex.cluster import (
    GPU,
    ActorRefs,
    Cluster,
    LocalNode,
    NodeFailed,
    NodeSpec,
    Resources,
    Scheduler,
    Unschedulable,
)
from agentplex.runtime import ActorExists, NameRange

COUNTER = "tests.support.actors:Counter"
GIB = 2**30


def scheduler(*cpus: float) -> Scheduler:
    s = Scheduler()
    for i, c in enumerate(cpus):
        s.add_node(NodeSpec(id=f"n{i}", cpus=c, memory=64 * GIB))
    return s


def counts(placements: list) -> dict[str, int]:  # type: ignore[type-arg]
    out: dict[str, int] = {}
    for p in placements:
        out[p.node_id] = out.get(p.node_id, 0) + p.count
    return out


def test_a_batch_is_split_by_what_fits_on_each_node() -> None:
    s = scheduler(8, 8, 4)
    spread = s.place_many(Resources(cpus=0.5), 20, policy="spread")
    assert counts(spread) == {"n0": 8, "n1": 8, "n2": 4}  # load levelled: half of each
    assert len(spread) == 3  # one placement per node, not per actor
    s = scheduler(8, 8, 4)
    s.place(Resources(cpus=1), node_id="n1")  # n1 is the fullest: pack fills it first
    pack = s.place_many(Resources(cpus=0.5), 20, policy="pack")
    assert counts(pack) == {"n1": 14, "n2": 6}  # then as place() breaks ties
    # Spread levels the load starting from what is there.
    s = scheduler(8, 8)
    s.place(Resources(cpus=4), node_id="n0")
    assert counts(s.place_many(Resources(cpus=1), 6, policy="spread")) == {"n0": 1, "n1": 5}


def test_memory_and_gpu_shares_bound_a_batch() -> None:
    s = Scheduler()
    s.add_node(NodeSpec(id="g", cpus=64, memory=64 * GIB,
                        gpus=[GPU(index=i, total_memory="24GiB") for i in range(2)]))
    got = s.place_many(Resources(cpus=0.1, gpus=0.25, gpu_memory="5GiB"), 8)
    assert sorted((p.gpu_indices, p.count) for p in got) == [((0,), 4), ((1,), 4)]
    with pytest.raises(Unschedulable, match=r"only 0 fit now"):
        s.place_many(Resources(cpus=0.1, gpus=0.25), 1)
    m = scheduler(64)
    assert counts(m.place_many(Resources(cpus=0.01, memory="16GiB"), 4)) == {"n0": 4}
    with pytest.raises(Unschedulable, match=r"n0: .*memory free"):
        m.place_many(Resources(cpus=0.01, memory="16GiB"), 1)


def test_a_batch_that_does_not_fit_is_refused_whole_with_reasons() -> None:
    s = scheduler(4, 4)
    s.add_node(NodeSpec(id="tagged", cpus=100, labels={"kind": "big"}))
    before = [s.usage(n.id) for n in s.nodes()]
    with pytest.raises(Unschedulable) as info:
        s.place_many(Resources(cpus=1), 10, labels={"kind": "small"})
    assert "only 0 fit now" in info.value.reason and "labels" in info.value.reason
    with pytest.raises(Unschedulable) as info:
        s.place_many(Resources(cpus=1), 9, node_id="n0")
    assert "only 4 fit now" in info.value.reason and not info.value.retryable
    s.place_many(Resources(cpus=1), 3, node_id="n1")
    with pytest.raises(Unschedulable) as info:
        s.place_many(Resources(cpus=1), 2, node_id="n1")
    assert info.value.retryable and "n1: 1 fit" in info.value.reason  # may fit later
    assert [s.usage("n0"), s.usage("tagged")] == [before[0], before[2]]  # nothing taken


def test_releasing_part_of_a_batch_frees_exactly_that_part() -> None:
    s = scheduler(4)
    (p,) = s.place_many(Resources(cpus=1), 4)
    s.release(p, 1)
    assert s.usage("n0")["cpus"] == 3
    assert counts(s.place_many(Resources(cpus=1), 1)) == {"n0": 1}
    s.release(p)
    assert s.usage("n0")["cpus"] == 1


def test_a_million_on_a_hundred_nodes_costs_per_node() -> None:
    s = Scheduler()
    for i in range(100):
        s.add_node(NodeSpec(id=f"n{i:02}", cpus=10_000))
    got = s.place_many(Resources(cpus=1), 1_000_000, policy="spread")
    assert len(got) == 100 and set(counts(got).values()) == {10_000}


pytestmark = pytest.mark.anyio


async def three_nodes() -> Cluster:
    cluster = await Cluster(checkpoint_interval=None).start()
    for i in range(3):
        await cluster.add_node(NodeSpec(id=f"n{i}", cpus=8))
    return cluster


def requests(cluster: Cluster) -> dict[str, int]:
    return {n.id: n.shares.requests for n in cluster.nodes.values()
            if isinstance(n, LocalNode)}


async def test_spawn_many_sends_each_node_one_request_and_the_refs_work() -> None:
    async with await three_nodes() as cluster:
        refs = await cluster.spawn_many(COUNTER, [[i] for i in range(300)], names="p-",
                                        resources=Resources(cpus=0.01))
        assert isinstance(refs, ActorRefs) and len(refs) == 300
        assert refs.names == NameRange("p-", 0, 300) and refs[7].name == "p-7"
        assert requests(cluster) == {"n0": 1, "n1": 1, "n2": 1}
        assert await asyncio.gather(*(r.call(1, timeout=5) for r in refs)) == [
            i + 1 for i in range(300)]
        per_node = {n["node"]: sum(n["batches"].values()) for n in await cluster.status()}
        assert per_node == {"n0": 100, "n1": 100, "n2": 100}
        packed = await cluster.spawn_many(COUNTER, 50, placement="pack",
                                          resources=Resources(cpus=0.01))
        wheres = {await r.call("where", timeout=5) for r in packed}
        assert len(wheres) == 1
        assert sum(requests(cluster).values()) == 4
        listed = await cluster.spawn_many(COUNTER, 2, names=["ann", "bob"])
        assert [r.name for r in listed] == ["ann", "bob"]
        with pytest.raises(ActorExists):
            await cluster.spawn_many(COUNTER, 10, names="p-")
        with pytest.raises(ActorExists):
            await cluster.spawn(COUNTER, name="p-3")
        await cluster.stop("p-3")
        await cluster.spawn(COUNTER, name="p-3")  # its name is free again


async def test_a_refused_or_failed_batch_leaves_nothing_behind() -> None:
    async with await three_nodes() as cluster:
        with pytest.raises(Unschedulable, match="only 24 fit now"):
            await cluster.spawn_many(COUNTER, 25, resources=Resources(cpus=1))
        assert all(len(n.runtime) == 0 for n in cluster.nodes.values()
                   if isinstance(n, LocalNode))
        dying = cluster.nodes["n1"]
        assert isinstance(dying, LocalNode)
        await dying.kill()  # dead, but not yet declared so: the scheduler still uses it
        with pytest.raises(NodeFailed, match="n1"):
            await cluster.spawn_many(COUNTER, 30, names="q-", resources=Resources(cpus=0.1))
        assert all(len(n.runtime) == 0 for n in cluster.nodes.values()
                   if isinstance(n, LocalNode))
        assert all(cluster.scheduler.usage(n)["cpus"] == 0 for n in ("n0", "n2"))
        await cluster.node_failed("n1")
        refs = await cluster.spawn_many(COUNTER, 30, names="q-", resources=Resources(cpus=0.1))
        assert len(refs) == 30


async def test_a_node_dying_mid_round_restarts_its_batch_share_or_reports_it_lost() -> None:
    async with await three_nodes() as cluster:
        keep = await cluster.spawn_many(COUNTER, 90, names="keep-", restart="on-failure",
                                        resources=Resources(cpus=0.01))
        drop = await cluster.spawn_many(COUNTER, 90, names="drop-",
                                        resources=Resources(cpus=0.01))
        first = await cluster.call_round([*keep, *drop], 1, timeout=5)
        assert len(first.replies) == 180 and not first.lost
        await cluster.checkpoint()
        victim = cluster.nodes["n2"]
        assert isinstance(victim, LocalNode)
        on_victim = {n for n in (*keep.names, *drop.names) if n in victim.runtime}
        assert len(on_victim) == 60
        await victim.kill()
        before = requests(cluster)
        round_ = asyncio.ensure_future(cluster.call_round([*keep, *drop], 1, timeout=5))
        await asyncio.sleep(0.05)
        await cluster.node_failed("n2")
        result = await asyncio.wait_for(round_, 30)
        lost_drop = sorted(n for n in on_victim if n.startswith("drop-"))
        assert sorted(result.lost) == lost_drop
        assert len(result.replies) == 180 - 30 and not result.errors
        # Restarted from the checkpoint (count was 1): asked again, they answer 2.
        assert {result.replies[n] for n in on_victim if n.startswith("keep-")} == {2}
        after = requests(cluster)
        assert {n: after[n] - before[n] for n in after} == {"n0": 1, "n1": 1}
