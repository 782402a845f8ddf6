"""One contract for the cluster's three faces: the protocol, the spawn options, the head's
table of operations and the errors that cross it."""

from __future__ import annotations

import inspect
from typing import Any

import pytest

from agentplex.bus import SpawnRefused
from agentplex.cluster import (
    BatchOptions,
    Cluster,
    ClusterAPI,
    ClusterClient,
    ClusterManager,
    NodeFailed,
    NodesMissing,
    NodeSpec,
    NotSupported,
    RayCluster,
    Resources,
    SpawnOptions,
    Unschedulable,
    init,
)
from agentplex.cluster.lowlevel import REQUESTS, error_from_wire, error_to_wire, split_options
from agentplex.runtime import Actor, ActorExists
from tests.support.actors import Booked

COUNTER = "tests.support.actors:Counter"
pytestmark = pytest.mark.anyio
FACES = [Cluster, ClusterClient, RayCluster]


def faces_as_the_protocol(a: Cluster, b: ClusterClient, c: RayCluster) -> list[ClusterAPI]:
    """The type checker's half of the contract: each face is a ClusterAPI."""
    return [a, b, c]


def protocol_methods() -> list[str]:
    return sorted(n for n, v in vars(ClusterAPI).items()
                  if inspect.iscoroutinefunction(v) and not n.startswith("_"))


@pytest.mark.parametrize("face", FACES, ids=lambda f: f.__name__)
def test_each_face_offers_every_operation_with_the_protocols_signature(face: type) -> None:
    assert "spawn_many" in protocol_methods() and "wait_for_nodes" in protocol_methods()
    for name in protocol_methods():
        want = inspect.signature(getattr(ClusterAPI, name))
        method = getattr(face, name, None)
        assert method is not None and inspect.iscoroutinefunction(method), (face, name)
        have = inspect.signature(method).parameters
        for param in want.parameters.values():
            if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
                assert any(p.kind == param.kind for p in have.values()), (face, name, param)
                continue
            got = have.get(param.name)
            assert got is not None, f"{face.__name__}.{name} lacks {param.name}"
            assert got.kind == param.kind and got.default == param.default, (
                face, name, param, got)
        extra = [p for p in have.values() if p.name not in want.parameters
                 and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
        assert all(p.default is not p.empty for p in extra), (face, name, extra)


async def test_init_returns_the_protocol_and_the_in_process_cluster_is_one() -> None:
    cluster = await init(checkpoint_interval=None)
    try:
        assert isinstance(cluster, ClusterAPI) and isinstance(cluster, Cluster)
        assert await cluster.wait_for_nodes(1, timeout=5) == 1
        with pytest.raises(NodesMissing) as info:
            await cluster.wait_for_nodes(2, timeout=0.2)
        assert info.value.joined == 1
    finally:
        await cluster.close()


def test_the_manager_answers_every_operation_of_the_table() -> None:
    manager = ClusterManager()
    assert set(manager.operations) == set(REQUESTS.values())
    assert {r.op for r in REQUESTS.values()} >= {
        "spawn", "spawn_many", "stop", "stop_batch", "recover", "checkpoint", "status",
        "placement_of", "serve", "unserve", "served_status", "wait_for_nodes", "register"}


def test_spawn_options_have_their_defaults_in_one_place() -> None:
    assert SpawnOptions().placement == "pack" and BatchOptions().placement == "spread"
    assert set(SpawnOptions.model_fields) <= set(BatchOptions.model_fields)
    with pytest.raises(ValueError):
        SpawnOptions.model_validate({"restart": "sometimes"})
    with pytest.raises(ValueError):
        SpawnOptions(max_restarts=-1)


def test_options_come_as_a_model_or_as_keywords_and_the_rest_goes_to_the_actor() -> None:
    opts, rest = split_options(SpawnOptions, None, {"restart": "on-failure", "start": 3})
    assert opts.restart == "on-failure" and rest == {"start": 3}
    given = SpawnOptions(labels={"zone": "a"}, resources=Resources(cpus=2))
    opts, rest = split_options(BatchOptions, given, {"wait": 5, "seed": 1})
    # What the model set stays; a batch keeps its own default placement; keywords win.
    assert (opts.labels, opts.resources.cpus, opts.placement, opts.wait) == (
        {"zone": "a"}, 2, "spread", 5)
    assert isinstance(opts, BatchOptions) and rest == {"seed": 1}


async def test_a_misspelt_class_path_is_refused_not_a_node_failure() -> None:
    cluster = await init(checkpoint_interval=None)
    try:
        with pytest.raises(SpawnRefused, match="cannot import"):
            await cluster.spawn("tests.support.actorz:Counter")
        with pytest.raises(SpawnRefused, match="not an actor class"):
            await cluster.spawn_many("tests.support.actors:Countr", 3,
                                     resources=Resources(cpus=0.1))
        with pytest.raises(SpawnRefused):
            await cluster.spawn_many("tests.support.actorz:Counter", 3,
                                     resources=Resources(cpus=0.1))
        # Nothing was left placed: the whole machine is free again.
        (node,) = await cluster.status()
        assert node["cpus"].startswith("0/") and node["actors"] == [] and not node["batches"]
        ref = await cluster.spawn(COUNTER, 1, name="fine")
        assert await ref.call(1, timeout=10) == 2
    finally:
        await cluster.close()


@pytest.mark.parametrize("error", [
    Unschedulable("no room on n1", retryable=True), NodeFailed("n2 died"),
    ActorExists("an actor named 'a' already runs", actor="a"), SpawnRefused("no such class"),
    NodesMissing("1 of 2 nodes", joined=1), NotSupported("not on Ray"), ValueError("bad"),
], ids=lambda e: type(e).__name__)
def test_a_cluster_error_crosses_the_envelope_as_its_own_type(error: Exception) -> None:
    wire = error_to_wire(error)
    assert wire is not None
    back = error_from_wire(wire)
    assert type(back) is type(error) and str(back) == str(error)
    for attr in ("retryable", "actor", "joined"):
        assert getattr(back, attr, None) == getattr(error, attr, None)
    assert error_to_wire(RuntimeError("not ours")) is None


async def test_the_ray_backend_refuses_what_it_does_not_offer_with_a_typed_error() -> None:
    # No Ray needed: these refusals come before any Ray call.
    from agentplex.runtime import Runtime

    ray_cluster = RayCluster(Runtime(), checkpoint_interval=None)
    with pytest.raises(NotSupported, match="agentplex backend"):
        await ray_cluster.serve("some-model")
    with pytest.raises(NotSupported, match="Ray node"):
        await ray_cluster.join(NodeSpec(id="n1", cpus=1))
    assert await ray_cluster.served_status() == []


class Named(Actor):
    """Answers with the name its constructor got."""

    def __init__(self, greeting: str = "hi", *, name: str | None = None) -> None:
        self.greeting = greeting
        self.name = name

    async def handle_call(self, message: Any) -> Any:
        return f"{self.greeting} from {self.name}"


async def test_agents_ask_for_no_cpu_by_default_so_a_laptop_takes_twenty_thousand() -> None:
    cluster = await init(checkpoint_interval=None)
    try:
        refs = await cluster.spawn_many(COUNTER, 20_000)
        assert len(refs) == 20_000 and await refs[-1].call(1, timeout=30) == 1
        (node,) = await cluster.status()
        assert node["cpus"].startswith("0/") and sum(node["batches"].values()) == 20_000
        await cluster.stop_batch(refs)
    finally:
        await cluster.close()


async def test_spawn_many_passes_each_agent_its_name_when_its_constructor_takes_one() -> None:
    cluster = await init(checkpoint_interval=None)
    try:
        refs = await cluster.spawn_many(Named, 3, names="ann-")
        assert [await r.call("?", timeout=10) for r in refs] == [
            "hi from ann-0", "hi from ann-1", "hi from ann-2"]
        # A name given by the caller, or filled positionally, is left as given.
        given = await cluster.spawn_many(Named, [["hello"]], names=["bob"], name="robert")
        assert await given[0].call("?", timeout=10) == "hello from robert"
        alone = await cluster.spawn(Named, "hey", name="carl")
        assert await alone.call("?", timeout=10) == "hey from carl"
        counters = await cluster.spawn_many(COUNTER, [[5]])  # takes no name: none given
        assert await counters[0].call(1, timeout=10) == 6
    finally:
        await cluster.close()


def test_kwargs_name_the_actors_arguments_and_an_ambiguous_keyword_is_refused() -> None:
    opts, rest = split_options(BatchOptions, BatchOptions(run="r1"), {"wait": 2},
                               kwargs={"run": "mine", "resources": "few"}, target=Booked)
    assert (opts.run, opts.wait, rest) == ("r1", 2, {"run": "mine", "resources": "few"})
    with pytest.raises(TypeError, match="run: both a spawn option and an argument of Booked"):
        split_options(BatchOptions, None, {"run": "mine"}, target=Booked)
    with pytest.raises(TypeError, match="seed: not a spawn option"):
        split_options(BatchOptions, None, {"seed": 1}, kwargs={"run": "x"}, target=Booked)
    # an import path is not inspected: a loose keyword naming an option stays an option
    single, rest = split_options(SpawnOptions, None, {"run": "r2", "start": 1}, target=COUNTER)
    assert single.run == "r2" and rest == {"start": 1}


async def test_an_actor_argument_named_like_an_option_reaches_the_actor() -> None:
    cluster = await init(checkpoint_interval=None)
    try:
        refs = await cluster.spawn_many(Booked, 2, names="bk-", options=BatchOptions(
            run="the-run"), kwargs={"run": "mine", "resources": "few"})
        assert [await r.call("?", timeout=10) for r in refs] == [["mine", "few"]] * 2
        alone = await cluster.spawn(Booked, name="bk-x", kwargs={"run": "solo"})
        assert await alone.call("?", timeout=10) == ["solo", ""]
        with pytest.raises(TypeError, match="kwargs"):
            await cluster.spawn_many(Booked, 1, names="bk-y-", run="mine")
    finally:
        await cluster.close()
