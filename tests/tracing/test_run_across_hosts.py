"""A run whose agents live on other hosts: nodes in their own network namespaces and
their own working directories (no shared file system, no shared code folder) send their
part of the run over the bus, and the run's process writes the same folder a single
machine would — with the nodes' spans in ``trace.jsonl``, under the driver's round spans.

The namespaces need root and iproute2 (skipped otherwise); the same game on loopback
runs everywhere and is the reference.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agentplex.bus import generate_keys
from tests.support import ROOT

AGENTS, ROUNDS = 40, 3
SUFFIX = f"{os.getpid() % 100000}"
HOST, NODES = f"apr{SUFFIX}h", [f"apr{SUFFIX}n{k}" for k in (1, 2)]
PLAYERS = ROOT / "tests" / "support" / "journal_players.py"


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=10)


@pytest.fixture(scope="module")
def hosts() -> Iterator[None]:
    """A host namespace with a bridge (10.79.0.1) and two node namespaces on it."""
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("network namespaces need root and iproute2")
    try:
        _ip("netns", "add", HOST)
    except (subprocess.CalledProcessError, OSError) as exc:
        pytest.skip(f"cannot create network namespaces here: {exc}")
    try:
        _ip("-n", HOST, "link", "add", "br0", "type", "bridge")
        _ip("-n", HOST, "addr", "add", "10.79.0.1/24", "dev", "br0")
        for dev in ("br0", "lo"):
            _ip("-n", HOST, "link", "set", dev, "up")
        for k, ns in enumerate(NODES, 1):
            _ip("netns", "add", ns)
            here, there = f"apr{SUFFIX}h{k}", f"apr{SUFFIX}v{k}"
            _ip("link", "add", here, "type", "veth", "peer", "name", there)
            _ip("link", "set", here, "netns", HOST)
            _ip("link", "set", there, "netns", ns)
            _ip("-n", HOST, "link", "set", here, "master", "br0")
            _ip("-n", HOST, "link", "set", here, "up")
            _ip("-n", ns, "addr", "add", f"10.79.0.{1 + k}/24", "dev", there)
            _ip("-n", ns, "link", "set", there, "up")
            _ip("-n", ns, "link", "set", "lo", "up")
        yield
    finally:
        for ns in (HOST, *NODES):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=10)


def play(tmp: Path, *, netns: bool) -> Path:
    """The game on two nodes, each started in a working directory of its own that holds
    the players' module; returns the run folder."""
    nodes: list[dict[str, Any]] = []
    for k in (1, 2):
        cwd = tmp / f"node-{k}"
        cwd.mkdir(parents=True)
        shutil.copy(PLAYERS, cwd / "players.py")
        nodes.append({"id": f"node-{k}", "cwd": str(cwd),
                      "bind": f"tcp://10.79.0.{1 + k}:0" if netns else "tcp://127.0.0.1:0",
                      "prefix": ["ip", "netns", "exec", NODES[k - 1]] if netns else []})
    keys = None
    if netns:  # off loopback the bus runs with CURVE: one key pair for the whole cluster
        generate_keys(tmp / "keys", "cluster")
        keys = str(tmp / "keys")
    config = {"runs": str(tmp / "runs"), "bind": "tcp://10.79.0.1:0" if netns
              else "tcp://127.0.0.1:0", "keys": keys, "nodes": nodes, "agents": AGENTS,
              "rounds": ROUNDS, "logs": str(tmp / "logs"),
              "head_prefix": ["ip", "netns", "exec", HOST] if netns else []}
    (tmp / "config.json").write_text(json.dumps(config))
    command = [sys.executable, "-m", "tests.support.journal_driver", str(tmp / "config.json")]
    if netns:
        command = ["ip", "netns", "exec", HOST, *command]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=240, cwd=ROOT)
    logs = "".join(f"\n--- {p.name}\n{p.read_text()[-1500:]}"
                   for p in sorted((tmp / "logs").glob("*.log")))
    assert proc.returncode == 0, proc.stderr[-3000:] + logs
    for node in nodes:  # the nodes wrote nothing where they ran
        assert sorted(p.name for p in Path(node["cwd"]).iterdir()
                      if p.name != "__pycache__") == ["players.py"]
    return Path(proc.stdout.strip().splitlines()[-1])


def answers(run: Path) -> list[tuple[str, str]]:
    """The recorded responses: request key and text (not their times)."""
    out = []
    for line in (run / "recording.jsonl").read_text().splitlines():
        item = json.loads(line)
        out.append((item["key"], json.dumps([r["content"] for r in item["response"]])))
    return sorted(out)


def spans_of(run: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run / "trace.jsonl").read_text().splitlines()]


def shape(run: Path) -> Counter[tuple[str, str | None]]:
    """Each span's name with its parent's (span ids differ from run to run)."""
    spans = spans_of(run)
    by_id = {s["span_id"]: s for s in spans}
    return Counter((s["name"], by_id[s["parent_id"]]["name"] if s["parent_id"] in by_id
                    else None) for s in spans)


def counted(value: Any) -> Any:
    """``value`` without its device seconds (``cpu_s``, ``gpu_s``: they differ run to run)."""
    if isinstance(value, dict):
        return {k: counted(v) for k, v in value.items() if not k.endswith("_s")}
    if isinstance(value, list):
        return [counted(v) for v in value]
    return value


def check_folder(run: Path) -> None:
    """The nodes' part is in: every answer, response, count and span."""
    lines = (run / "transcript.jsonl").read_text().splitlines()
    assert len(lines) == ROUNDS * (1 + AGENTS)
    manifest = json.loads((run / "manifest.json").read_text())
    totals = manifest["totals"]
    assert {k: totals[k] for k in ("model_calls", "output_tokens", "tool_calls", "messages")
            } == {"model_calls": ROUNDS * AGENTS, "output_tokens": ROUNDS * AGENTS,
                  "tool_calls": ROUNDS * AGENTS, "messages": ROUNDS * (1 + AGENTS)}
    # the nodes' cost ledgers came in with their journals
    assert [(r["agent_class"], r["calls"]) for r in totals["by_agent_class"]] == [
        ("Player", ROUNDS * AGENTS)]
    assert manifest["models"] == [{"provider": "scripted", "model": "guesser"}]
    assert len((run / "recording.jsonl").read_text().splitlines()) == ROUNDS * AGENTS
    assert sorted(p.name for p in run.iterdir()) == [
        "manifest.json", "recording.jsonl", "trace.jsonl", "transcript.jsonl",
        "transcript.parquet"]
    spans = spans_of(run)
    assert len({s["trace_id"] for s in spans}) == 1
    by_id = {s["span_id"]: s for s in spans}

    def ancestors(span: dict[str, Any]) -> list[str]:
        out = []
        while span["parent_id"] in by_id:
            span = by_id[span["parent_id"]]
            out.append(span["name"])
        return out

    orphans = [s["name"] for s in spans if s["parent_id"] not in by_id]
    assert orphans == ["run journal"]  # every span's parent is in the trace
    names = Counter(s["name"].split()[0] for s in spans)
    assert names["invoke_agent"] == names["chat"] == names["execute_tool"] == ROUNDS * AGENTS
    assert names["send"] == names["process"] == ROUNDS * AGENTS
    for s in spans:  # the nodes' spans hang under the driver's round spans
        if s["name"].split()[0] in ("invoke_agent", "chat", "execute_tool"):
            above = ancestors(s)
            assert any(a.startswith("round ") for a in above), (s["name"], above)
            assert above[-1] == "run journal"
    chat = next(s for s in spans if s["name"].startswith("chat"))
    assert by_id[chat["parent_id"]]["name"].startswith("invoke_agent p")


def test_a_run_on_nodes_of_this_machine_writes_the_whole_folder(tmp_path: Path) -> None:
    check_folder(play(tmp_path, netns=False))


def test_a_run_on_other_hosts_writes_what_one_machine_writes(hosts: None,
                                                             tmp_path: Path) -> None:
    far = play(tmp_path / "far", netns=True)
    near = play(tmp_path / "near", netns=False)
    check_folder(far)
    assert (far / "transcript.jsonl").read_bytes() == (near / "transcript.jsonl").read_bytes()
    assert answers(far) == answers(near)
    manifests = [json.loads((run / "manifest.json").read_text()) for run in (far, near)]
    assert counted(manifests[0]["totals"]) == counted(manifests[1]["totals"])
    assert shape(far) == shape(near)
