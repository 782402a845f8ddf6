"""``agentplex run FILE.py:Class --address URL --ship-code``: the scenario's file travels
over an authenticated bus (CURVE keys) to node processes that have never seen it (each in
a working directory of its own, and, as root, in a network namespace of its own), which
accept code only when started with ``--accept-code``, check it against its SHA-256 and
import it under that name."""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
import re
import subprocess
import sys
import zipfile
from collections.abc import Sequence
from pathlib import Path

import pytest

from agentplex import Runtime
from agentplex.bus import ZmqTransport, generate_keys, load_keypair, load_public_key
from agentplex.cluster import CodePackage, CodeRefused, CodeRejected, pack_code
from agentplex.cluster.lowlevel import ask, node_agent_name, ship_code
from agentplex.sim import ScenarioError, read_metrics
from tests.support import pythonpath
from tests.support.daemons import Daemons
from tests.tracing import test_run_across_hosts as across

hosts = across.hosts
"""Network namespaces for a head and two nodes on a bridge (root only; skipped otherwise)."""

SCENARIO = '''
import os

from agentplex import AgentBase, Msg
from agentplex.sim import Scenario


class Adder(AgentBase):
    def __init__(self, name: str, start: int = 0) -> None:
        super().__init__(name)
        self.total = start
        self.register_state("total")
        self.set_console_output_enabled(False)

    async def reply(self, msg=None):
        self.total += int(msg.metadata["add"])
        return Msg(self.name, str(self.total), "assistant",
                   metadata={"total": self.total, "module": __name__,
                             "cwd": os.path.basename(os.getcwd())})


class Sums(Scenario):
    agent = "sums:Adder"  # as a string: the driver finds it in the shipped package too
    name_prefix = "adder-"

    def agent_args(self, index):
        return {"start": index}

    async def step(self, sim):
        asks = [Msg("driver", "add", "user", metadata={"add": sim.rng.randint(1, 9)})
                for _ in range(len(sim.agents))]
        got = await sim.call_many(sim.agents, asks)
        sim.record(total=sum(m.metadata["total"] for m in got),
                   module=",".join(sorted({m.metadata["module"] for m in got})),
                   where=",".join(sorted({m.metadata["cwd"] for m in got})))
'''


def _keys(folder: Path) -> dict[str, str]:
    for name in ("head", "node", "driver"):
        generate_keys(folder, name)
    return {name: str(folder / name) for name in ("head", "node", "driver")}


def _cluster(daemons: Daemons, keys: dict[str, str], nodes: dict[str, Path],
             accept: set[str], *, hosts: bool = False) -> str:
    """A head and ``nodes`` (each in its own working directory; with ``hosts``, each in
    a network namespace of its own, the head in the hosts' one), every process with its
    CURVE keys; the nodes in ``accept`` accept code. The head's endpoint."""
    daemons.start("head", "head", "--bind", f"tcp://{_address(hosts, 0)}:0",
                  "--keys", f"{keys['head']}.key_secret",
                  "--allow-key", f"{keys['node']}.key", "--allow-key", f"{keys['driver']}.key",
                  prefix=_netns(hosts, across.HOST))
    endpoint = daemons.wait_for("head", "listening on").split()[-1]
    common = ["--keys", f"{keys['node']}.key_secret", "--head-key", f"{keys['head']}.key",
              "--allow-key", f"{keys['driver']}.key"]
    for k, (node_id, folder) in enumerate(nodes.items()):
        folder.mkdir(parents=True, exist_ok=True)
        extra = ["--accept-code"] if node_id in accept else []
        daemons.start(node_id, "node", "--head", endpoint, "--id", node_id,
                      "--bind", f"tcp://{_address(hosts, k + 1)}:0", *common, *extra,
                      cwd=folder, prefix=_netns(hosts, across.NODES[k]))
    for node_id in nodes:
        daemons.wait_for(node_id, f"node {node_id} joined")
    return endpoint


def _address(hosts: bool, k: int) -> str:
    """The head's (0) or node k's address: on the hosts' bridge, or loopback."""
    return f"10.79.0.{1 + k}" if hosts else "127.0.0.1"


def _netns(hosts: bool, namespace: str) -> list[str]:
    return ["ip", "netns", "exec", namespace] if hosts else []


def _run(cwd: Path, *args: str, prefix: Sequence[str] = ()
         ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*prefix, sys.executable, "-m", "agentplex", "run", *args],
                          capture_output=True, text=True, timeout=300, cwd=cwd,
                          env={**os.environ, "PYTHONPATH": pythonpath(), "COLUMNS": "300"})


def _driver_keys(keys: dict[str, str]) -> list[str]:
    return ["--keys", f"{keys['driver']}.key_secret", "--head-key", f"{keys['head']}.key",
            "--allow-key", f"{keys['node']}.key"]


@pytest.mark.parametrize("netns", [False, True], ids=["loopback", "hosts"])
def test_a_scenario_runs_on_nodes_that_never_saw_its_file(
        tmp_path: Path, netns: bool, request: pytest.FixtureRequest) -> None:
    """On loopback, and with the head, the driver and each node on hosts of their own
    (network namespaces on a bridge: root only)."""
    if netns:
        request.getfixturevalue("hosts")
    keys = _keys(tmp_path / "keys")
    driver = tmp_path / "driver"
    driver.mkdir()
    file = driver / "sums.py"
    file.write_text(SCENARIO)
    sha = pack_code(file).sha256
    args = [f"{file}:Sums", "--agents", "6", "--rounds", "2", "--seed", "4"]
    here = _run(driver, *args, "--runs-dir", str(tmp_path / "here"))
    assert here.returncode == 0, here.stderr
    daemons = Daemons()
    try:
        endpoint = _cluster(daemons, keys, {"node-a": tmp_path / "node-a",
                                            "node-b": tmp_path / "node-b"},
                            accept={"node-a", "node-b"}, hosts=netns)
        shipped = _run(driver, *args, "--address", endpoint, "--ship-code",
                       "--bind", f"tcp://{_address(netns, 0)}:0", *_driver_keys(keys),
                       "--runs-dir", str(tmp_path / "shipped"),
                       prefix=_netns(netns, across.HOST))
        assert shipped.returncode == 0, shipped.stdout[-3000:] + shipped.stderr[-3000:]
        logs = {n: (daemons.logs / f"{n}.log").read_text() for n in ("node-a", "node-b")}
    finally:
        daemons.close()
    assert "6 agents in " + endpoint in shipped.stdout
    for log in logs.values():
        assert f"imported code package {sha}; allowed agentplex_code_{sha}.sums" in log
    assert not (tmp_path / "node-a" / "sums.py").exists()
    (run_here,) = (tmp_path / "here").iterdir()
    (run_shipped,) = (tmp_path / "shipped").iterdir()
    rows = read_metrics(run_shipped)
    # the agents ran on both nodes, in their own folders, from the package of its hash
    assert [r["where"] for r in rows] == ["node-a,node-b"] * 2
    assert [r["module"] for r in rows] == [f"agentplex_code_{sha}.sums"] * 2
    assert [r["total"] for r in rows] == [r["total"] for r in read_metrics(run_here)]


def _zip(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def test_code_is_refused_without_accept_code_tampered_or_leaving_its_folder(
        tmp_path: Path) -> None:
    keys = _keys(tmp_path / "keys")
    driver = tmp_path / "driver"
    driver.mkdir()
    file = driver / "sums.py"
    file.write_text(SCENARIO)
    package = pack_code(file)
    (tmp_path / "sums.py").write_text(SCENARIO.replace("self.total +=", "self.total -="))
    tampered = pack_code(tmp_path / "sums.py")
    daemons = Daemons()
    try:
        endpoint = _cluster(daemons, keys, {"plain": tmp_path / "plain",
                                            "open": tmp_path / "open"}, accept={"open"})
        refused = _run(driver, f"{file}:Sums", "--agents", "4", "--rounds", "1",
                       "--address", endpoint, "--ship-code", *_driver_keys(keys),
                       "--runs-dir", str(tmp_path / "runs"))
        assert refused.returncode == 1
        assert "node plain does not accept code over the bus (start it with " \
            "--accept-code)" in refused.stderr
        assert "Traceback" not in refused.stderr

        asyncio.run(_send_bad_code(endpoint, keys, package, tampered))
        log = (daemons.logs / "open.log").read_text()
    finally:
        daemons.close()
    assert not list(tmp_path.rglob("escaped.py")) and not Path("/tmp/escaped.py").exists()
    # only the package itself was imported (by the run too, when it asked this node first)
    assert set(re.findall(r"imported code package (\w+)", log)) == {package.sha256}


async def _send_bad_code(endpoint: str, keys: dict[str, str], package: CodePackage,
                         tampered: CodePackage) -> None:
    """As the driver (its keys): ship to a node without --accept-code, then to one with
    it a tampered package, archives that leave their folder, and at last the package."""
    head_key, node_key = (load_public_key(f"{keys[n]}.key") for n in ("head", "node"))
    transport = ZmqTransport(head=endpoint, keys=load_keypair(f"{keys['driver']}.key_secret"),
                             head_key=head_key, allow=[head_key, node_key])
    async with Runtime(transport, default_timeout=60) as rt:
        with pytest.raises(CodeRefused, match="node plain does not accept code"):
            await ship_code(rt, ["plain"], package, ["sums"])
        node = rt.ref(node_agent_name("open"))

        async def send(sha: str, archive: bytes) -> list[str]:
            got = await ask(node, {"op": "code", "sha256": sha, "archive": archive,
                                   "modules": ["sums"]}, timeout=60)
            return list(got)

        # the code changed on its way, under the name of the original
        with pytest.raises(CodeRejected, match=r"SHA-256 is .* not the"):
            await send(package.sha256, tampered.archive)
        for name in ("../escaped.py", "/tmp/escaped.py"):
            evil = _zip({"sums.py": b"", name: b"raise SystemExit\n"})
            with pytest.raises(CodeRejected, match="not a path inside the package"):
                await send(hashlib.sha256(evil).hexdigest(), evil)
        # nothing of what was refused stuck: the real package still installs
        assert await ship_code(rt, ["open"], package, ["sums"]) == \
            {"open": [f"agentplex_code_{package.sha256}.sums"]}


def test_a_node_accepting_code_on_an_open_non_loopback_bus_refuses_to_start() -> None:
    got = subprocess.run(
        [sys.executable, "-m", "agentplex", "node", "--head", "tcp://127.0.0.1:1",
         "--bind", "tcp://0.0.0.0:0", "--insecure", "--accept-code"],
        capture_output=True, text=True, timeout=120,
        env={**os.environ, "PYTHONPATH": pythonpath()})
    assert got.returncode == 2
    assert "refusing to accept code over an unauthenticated bus" in got.stderr
    assert "Traceback" not in got.stderr


def test_a_folder_ships_whole_and_its_modules_import_each_other_relatively(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The driver's side of ``--ship-folder``: the scenario (named by its file or by its
    module in the folder) and the agent's module it imports relatively are imported from
    the package of the folder's hash, and both are what the nodes allow."""
    from agentplex.sim import _ship, load_scenario
    from agentplex.sim.lowlevel import resolve_class, ship_scenario

    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.setattr(_ship, "_cache", None)
    project = tmp_path / "project"
    (project / "opsim").mkdir(parents=True)
    (project / "opsim" / "__init__.py").write_text("")
    model, scenario = SCENARIO.split("class Sums(Scenario):")
    (project / "opsim" / "model.py").write_text(model)
    (project / "opsim" / "scenario.py").write_text(
        "from agentplex.sim import Scenario\nfrom .model import Adder\n\n\n"
        "class Sums(Scenario):" + scenario.replace('"sums:Adder"', "Adder"))
    by_file = ship_scenario(f"{project}/opsim/scenario.py:Sums", project)
    by_module = ship_scenario("opsim.scenario:Sums", project)
    assert by_file == by_module
    package = by_file.package
    assert package.modules == ("opsim", "opsim.model", "opsim.scenario")
    assert by_file.scenario == f"agentplex_code_{package.sha256}.opsim.scenario:Sums"
    cls = load_scenario(by_file.scenario)
    agent = resolve_class(by_file.rename(cls.agent))
    assert agent.__module__ == f"agentplex_code_{package.sha256}.opsim.model"
    assert by_file.modules(agent) == ["opsim.scenario", "opsim.model"]
    with pytest.raises(ScenarioError, match="does not hold"):
        ship_scenario(f"{tmp_path}/elsewhere.py:Sums", project)
    with pytest.raises(ScenarioError, match="ships a scenario file"):
        ship_scenario("opsim.scenario:Sums")
    for name in [m for m in sys.modules if m.startswith("agentplex_code_")]:
        del sys.modules[name]
    assert _ship._cache is not None
    _ship._cache.close()


def test_ship_code_and_bind_go_with_an_address(tmp_path: Path) -> None:
    (tmp_path / "sums.py").write_text(SCENARIO)
    for flag in (["--ship-code"], ["--ship-folder", str(tmp_path)],
                 ["--bind", "tcp://127.0.0.1:0"]):
        got = _run(tmp_path, f"{tmp_path}/sums.py:Sums", *flag)
        assert got.returncode == 2, got.stderr
        assert "--address" in got.stderr and "Traceback" not in got.stderr
    assert not (tmp_path / "runs").exists()


def test_a_sweep_ships_its_scenario_to_a_secured_cluster(tmp_path: Path) -> None:
    """``agentplex sweep --address ... --ship-code`` with the driver's keys: each run's
    ``agentplex run`` gets them, ships the file (kept by the nodes under its hash) and
    runs there; both seeds complete with the totals of the same runs in one process."""
    keys = _keys(tmp_path / "keys")
    driver = tmp_path / "driver"
    driver.mkdir()
    (driver / "sums.py").write_text(SCENARIO)
    sweep = [sys.executable, "-m", "agentplex", "sweep", "sums.py:Sums", "--seeds", "2",
             "--agents", "4", "--rounds", "2"]
    env = {**os.environ, "PYTHONPATH": pythonpath(), "COLUMNS": "300"}
    here = subprocess.run([*sweep, "--runs-dir", str(tmp_path / "here"), "--name", "here"],
                          capture_output=True, text=True, timeout=300, cwd=driver, env=env)
    assert here.returncode == 0, here.stdout[-2000:] + here.stderr[-2000:]
    refused = subprocess.run([*sweep, "--ship-code"], capture_output=True, text=True,
                             timeout=120, cwd=driver, env=env)
    assert refused.returncode != 0 and "--address" in refused.stdout + refused.stderr
    daemons = Daemons()
    try:
        endpoint = _cluster(daemons, keys, {"node-a": tmp_path / "node-a"}, accept={"node-a"})
        shipped = subprocess.run(
            [*sweep, "--address", endpoint, "--ship-code", "--bind", "tcp://127.0.0.1:0",
             *_driver_keys(keys), "--runs-dir", str(tmp_path / "shipped"), "--name", "away"],
            capture_output=True, text=True, timeout=300, cwd=driver, env=env)
        log = (daemons.logs / "node-a.log").read_text()
    finally:
        daemons.close()
    assert shipped.returncode == 0, shipped.stdout[-3000:] + shipped.stderr[-3000:]
    sha = pack_code(driver / "sums.py").sha256
    assert f"imported code package {sha}" in log
    assert not (tmp_path / "node-a" / "sums.py").exists()

    def totals(folder: Path) -> list[list[int]]:
        runs = sorted((folder / "runs").iterdir())
        return [[r["total"] for r in read_metrics(run)] for run in runs]

    rows = [read_metrics(run) for run in sorted((tmp_path / "shipped" / "away" / "runs")
                                                .iterdir())]
    assert len(rows) == 2 and all(r["where"] == "node-a" for run in rows for r in run)
    assert totals(tmp_path / "shipped" / "away") == totals(tmp_path / "here" / "here")
