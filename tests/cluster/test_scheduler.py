import pytest
from pydantic import ValidationError

from agentplex.cluster import (
    GPU,
    NodeSpec,
    Resources,
    Scheduler,
    Unschedulable,
    detect_node,
    parse_bytes,
    worker_environment,
)

GIB = 2**30


def cluster() -> Scheduler:
    """Two GPU nodes with two 24 GiB GPUs each, two CPU-only nodes (as in the issue)."""
    s = Scheduler()
    for name in ("gpu-a", "gpu-b"):
        s.add_node(NodeSpec(id=name, cpus=16, memory=64 * GIB, labels={"kind": "gpu"},
                            gpus=[GPU(index=i, total_memory="24GiB") for i in range(2)]))
    for name in ("cpu-a", "cpu-b"):
        s.add_node(NodeSpec(id=name, cpus=8, memory=32 * GIB, labels={"kind": "cpu"}))
    return s


def test_sizes_parse_in_both_unit_systems() -> None:
    assert parse_bytes("8GiB") == 8 * GIB
    assert parse_bytes("1.5 GB") == 1_500_000_000
    assert parse_bytes(1024) == 1024
    for bad in ("eight gigs", "-1", "8XB"):
        with pytest.raises(ValueError):
            parse_bytes(bad)
    assert Resources(gpus=1, gpu_memory="8GiB").gpu_memory == 8 * GIB


def test_resource_requests_are_validated() -> None:
    with pytest.raises(ValidationError):
        Resources(gpus=1.5)
    with pytest.raises(ValidationError):
        Resources(gpu_memory="1GiB")
    with pytest.raises(ValidationError):
        Resources(cpus=-1)


def test_gpu_requests_go_to_gpu_nodes_and_never_overcommit() -> None:
    s = cluster()
    placed = [s.place(Resources(cpus=1, gpus=1, gpu_memory="20GiB")) for _ in range(4)]
    assert sorted((p.node_id, p.gpu_indices) for p in placed) == [
        ("gpu-a", (0,)), ("gpu-a", (1,)), ("gpu-b", (0,)), ("gpu-b", (1,))]
    with pytest.raises(Unschedulable) as info:
        s.place(Resources(gpus=1, gpu_memory="20GiB"))
    assert info.value.retryable  # would fit once something is released: queue it
    assert "0 GPU(s)" in info.value.reason and "cpu-a: has 0 GPUs" in info.value.reason
    s.release(placed[0])
    again = s.place(Resources(gpus=1, gpu_memory="20GiB"))
    assert (again.node_id, again.gpu_indices) == (placed[0].node_id, placed[0].gpu_indices)


def test_fractional_gpus_share_a_gpu_within_its_memory() -> None:
    s = cluster()
    a = s.place(Resources(gpus=0.5, gpu_memory="10GiB"), node_id="gpu-a")
    b = s.place(Resources(gpus=0.5, gpu_memory="10GiB"), node_id="gpu-a")
    assert a.gpu_indices == b.gpu_indices  # packed on the same GPU
    c = s.place(Resources(gpus=0.25, gpu_memory="10GiB"), node_id="gpu-a")
    assert c.gpu_indices != a.gpu_indices  # that GPU is full by share
    usage = s.usage("gpu-a")["gpus"]
    assert [g["share"] for g in usage] == [1.0, 0.25] or [g["share"] for g in usage] == [
        0.25, 1.0]


def test_releasing_fractions_leaves_exactly_nothing() -> None:
    s = cluster()
    cpu = [s.place(Resources(cpus=0.05), node_id="cpu-a") for _ in range(20)]
    gpu = [s.place(Resources(gpus=0.1, gpu_memory="1GiB"), node_id="gpu-a") for _ in range(7)]
    for p in cpu + gpu:
        s.release(p)
    assert s.usage("cpu-a")["cpus"] == 0.0
    assert s.usage("gpu-a")["cpus"] == 0.0
    assert [g["share"] for g in s.usage("gpu-a")["gpus"]] == [0.0, 0.0]


def test_requests_that_can_never_fit_are_refused_with_reasons() -> None:
    s = cluster()
    with pytest.raises(Unschedulable) as info:
        s.place(Resources(gpus=1, gpu_memory="40GiB"))
    assert not info.value.retryable
    assert "no 1 GPU(s) with 40.0GiB" in info.value.reason
    with pytest.raises(Unschedulable, match="has 2 GPUs, 4 requested"):
        s.place(Resources(gpus=4))
    with pytest.raises(Unschedulable, match="has 16 CPUs, 64 requested"):
        s.place(Resources(cpus=64))


def test_pack_fills_one_node_and_spread_balances() -> None:
    s = cluster()
    packed = {s.place(Resources(cpus=1), labels={"kind": "cpu"}).node_id for _ in range(6)}
    assert len(packed) == 1
    s2 = cluster()
    spread = [s2.place(Resources(cpus=1), policy="spread", labels={"kind": "cpu"}).node_id
              for _ in range(6)]
    assert spread.count("cpu-a") == spread.count("cpu-b") == 3


def test_labels_and_node_affinity() -> None:
    s = cluster()
    assert s.place(Resources(cpus=1), labels={"kind": "gpu"}).node_id.startswith("gpu")
    assert s.place(Resources(cpus=1), node_id="cpu-b").node_id == "cpu-b"
    with pytest.raises(Unschedulable, match="labels"):
        s.place(Resources(cpus=1), labels={"kind": "tpu"})
    with pytest.raises(Unschedulable, match="no node 'nope'"):
        s.place(Resources(cpus=1), node_id="nope")
    with pytest.raises(ValueError, match="policy"):
        s.place(Resources(), policy="random")  # type: ignore[arg-type]


def test_a_dead_node_returns_its_placements() -> None:
    s = cluster()
    mine = [s.place(Resources(gpus=1), node_id="gpu-b") for _ in range(2)]
    lost = s.remove_node("gpu-b")
    assert sorted(p.id for p in lost) == sorted(p.id for p in mine)
    assert all(p.node_id != "gpu-b" for p in s.placements())


def test_worker_sees_only_its_gpus() -> None:
    s = cluster()
    two = s.place(Resources(gpus=2))
    env = worker_environment(two, base={"PATH": "/usr/bin"})
    assert env["CUDA_VISIBLE_DEVICES"] == "0,1" and env["PATH"] == "/usr/bin"
    cpu = s.place(Resources(cpus=1), labels={"kind": "cpu"})
    assert worker_environment(cpu, base={})["CUDA_VISIBLE_DEVICES"] == ""


def test_detect_node_reads_this_machine_or_declared_gpus() -> None:
    here = detect_node("n1", labels={"zone": "a"})
    assert here.cpus >= 1 and here.memory > 0 and here.labels == {"zone": "a"}
    declared = detect_node("n2", gpus=2, gpu_memory="24GiB")
    assert [g.total_memory for g in declared.gpus] == [24 * GIB] * 2
    with pytest.raises(ValueError, match="memory"):
        detect_node("n3", gpus=1)
