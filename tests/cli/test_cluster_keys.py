"""``agentplex head`` / ``node`` / ``status`` with CURVE keys, each process its own pair, as a
user sets them up from ``agentplex keys generate``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from agentplex import Runtime
from agentplex.bus import ZmqTransport, generate_keys, load_keypair, load_public_key
from agentplex.cluster import ClusterClient, Resources
from tests.support import ROOT, pythonpath
from tests.support.daemons import Daemons


def curve_cluster(tmp_path: Path, daemons: Daemons, node_id: str, *node_args: str) -> str:
    """A head and one node, each with its own key pair, both admitting ``client``'s key;
    the head's endpoint."""
    for name in ("head", "node", "client"):
        generate_keys(tmp_path, name)
    endpoint = daemons.head("--keys", str(tmp_path / "head.key_secret"),
                            "--allow-key", str(tmp_path / "node.key"),
                            "--allow-key", str(tmp_path / "client.key"))
    daemons.nodes(endpoint, [node_id], "--keys", str(tmp_path / "node.key_secret"),
                  "--head-key", str(tmp_path / "head.key"),
                  "--allow-key", str(tmp_path / "client.key"), *node_args)
    return endpoint


def test_a_cluster_with_a_key_pair_per_process(tmp_path: Path) -> None:
    for name in ("head", "node", "client", "stranger"):
        generate_keys(tmp_path, name)
    keys = {name: str(tmp_path / f"{name}.key_secret") for name in ("head", "node", "client",
                                                                      "stranger")}
    head_key = str(tmp_path / "head.key")
    daemons = Daemons()
    try:
        endpoint = daemons.head("--keys", keys["head"], "--allow-key", str(tmp_path / "node.key"),
                                "--allow-key", str(tmp_path / "client.key"))
        # the node admits the head's key without being told: the head calls it back
        daemons.nodes(endpoint, ["n0"], "--keys", keys["node"], "--head-key", head_key)

        def status(key: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [sys.executable, "-m", "agentplex", "status", "--head", endpoint,
                 "--keys", key, "--head-key", head_key], capture_output=True, text=True,
                timeout=60, cwd=ROOT, env={**os.environ, "PYTHONPATH": pythonpath(),
                                           "COLUMNS": "200"})

        shown = status(keys["client"])
        assert shown.returncode == 0, shown.stderr[-2000:]
        assert "n0" in shown.stdout and "yes" in shown.stdout
        refused = status(keys["stranger"])
        assert refused.returncode == 1
        assert "Traceback" not in refused.stderr and "cannot reach" in refused.stderr
    finally:
        daemons.close()


@pytest.mark.anyio
async def test_a_gpu_actor_runs_in_a_worker_on_a_curve_cluster(tmp_path: Path) -> None:
    """An actor holding a GPU runs in a worker process the node starts: the worker joins
    with the node's keys (without them it could not reach the head)."""
    daemons = Daemons()
    try:
        endpoint = curve_cluster(tmp_path, daemons, "g0", "--gpus", "1", "--gpu-memory",
                                 "24GiB", "--allow", "tests.support.actors")
        head_key = load_public_key(tmp_path / "head.key")
        transport = ZmqTransport(head=endpoint, keys=load_keypair(tmp_path / "client.key_secret"),
                                 head_key=head_key,  # answers come from head and node
                                 allow=[head_key, load_public_key(tmp_path / "node.key")])
        async with Runtime(transport, default_timeout=60) as rt:
            client = ClusterClient(rt, timeout=90)
            ref = await client.spawn("tests.support.actors:Counter", 10, name="on-gpu",
                                     resources=Resources(gpus=1, gpu_memory="1GiB"))
            assert await ref.call(5) == 15
            await client.stop("on-gpu")
    finally:
        daemons.close()


def test_the_demo_joins_a_curve_cluster(tmp_path: Path) -> None:
    """``agentplex demo --address`` with its own key pair: the head admits it, and so do the
    nodes, whose players answer it directly; the manifest keeps no key."""
    daemons = Daemons()
    try:
        endpoint = curve_cluster(tmp_path, daemons, "n0", "--allow",
                                 "agentplex.sim.scenarios._crowd")
        runs = tmp_path / "runs"
        played = subprocess.run(
            [sys.executable, "-m", "agentplex", "demo", "--runs-dir", str(runs), "--agents", "20",
             "--rounds", "1", "--speakers", "1", "--model", "scripted", "--address", endpoint,
             "--keys", str(tmp_path / "client.key_secret"),
             "--head-key", str(tmp_path / "head.key"),
             "--allow-key", str(tmp_path / "node.key")],
            capture_output=True, text=True, timeout=300, cwd=ROOT,
            env={**os.environ, "PYTHONPATH": pythonpath(), "COLUMNS": "200"})
        assert played.returncode == 0, played.stderr[-3000:]
        assert "placed 20 players" in played.stdout
        secret = load_keypair(tmp_path / "client.key_secret").secret
        manifests = list(runs.rglob("manifest.json"))
        assert manifests and all(secret not in m.read_text() for m in manifests)
    finally:
        daemons.close()


def test_demo_keys_need_an_address(tmp_path: Path) -> None:
    generate_keys(tmp_path, "client")
    refused = subprocess.run(
        [sys.executable, "-m", "agentplex", "demo", "--runs-dir", str(tmp_path), "--model",
         "scripted", "--keys", str(tmp_path / "client.key_secret")],
        capture_output=True, text=True, timeout=120, cwd=ROOT,
        env={**os.environ, "PYTHONPATH": pythonpath(), "COLUMNS": "200"})
    assert refused.returncode == 2 and "--address" in refused.stderr
