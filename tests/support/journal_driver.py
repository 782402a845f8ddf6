"""The program of a game whose players live on ``agentplex node`` processes, as one
experiment: the run folder is written here, whatever the nodes can reach.

    python -m tests.support.journal_driver CONFIG.json

``CONFIG``: ``runs`` (the runs folder), ``bind`` (this process's and the head's address,
e.g. ``tcp://127.0.0.1:0``), ``keys`` (a folder with ``cluster.key`` and
``cluster.key_secret``, one pair for all, or ``null``), ``nodes`` (each ``{"id", "cwd",
"bind", "prefix"}``: the node's working directory, its address and what its command line
starts with, e.g. ``ip netns exec NS``), ``agents``, ``rounds``, ``logs``. The nodes are
``agentplex node --allow players`` started in their own working directory, which holds
``players.py`` (:mod:`tests.support.journal_players`); the head is ``agentplex head``.
Each round is a span ``round R`` around one call to every player. Prints the run folder.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from opentelemetry import trace

from agentplex import Msg, connect
from agentplex.bus import load_keypair
from agentplex.sim.lowlevel import wait_for_line
from agentplex.tracing import experiment
from agentplex.tracing.lowlevel import transcribe

AGENTPLEX = str(Path(sys.executable).with_name("agentplex"))
"""The ``agentplex`` script (which, unlike ``python -m``, puts no folder on the path)."""


def start(args: list[str], cwd: str, log: Path) -> subprocess.Popen[bytes]:
    with log.open("w") as out:
        return subprocess.Popen(args, cwd=cwd, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)


def main(cfg: dict[str, Any]) -> None:
    keys = cfg["keys"]
    key_args = ["--keys", f"{keys}/cluster.key_secret"] if keys else []
    head_args = [*key_args, "--head-key", f"{keys}/cluster.key"] if keys else []
    logs = Path(cfg["logs"])
    logs.mkdir(parents=True, exist_ok=True)
    procs: list[subprocess.Popen[bytes]] = []
    try:
        head = start([*cfg.get("head_prefix", []), AGENTPLEX, "head", "--bind", cfg["bind"],
                      "--heartbeat-timeout", "60", *key_args], ".", logs / "head.log")
        procs.append(head)
        endpoint = (wait_for_line(logs / "head.log", head, "listening on")).split()[-1]
        for n in cfg["nodes"]:
            log = logs / f"{n['id']}.log"
            procs.append(start([*n["prefix"], AGENTPLEX, "node", "--head", endpoint,
                                "--id", n["id"], "--bind", n["bind"], "--allow", "players",
                                "--heartbeat-timeout", "60", *head_args], n["cwd"], log))
            wait_for_line(log, procs[-1], "joined")
        asyncio.run(play(cfg, endpoint))
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(30)


async def play(cfg: dict[str, Any], endpoint: str) -> None:
    keys = cfg["keys"]
    security: dict[str, Any] = {}
    if keys:
        pair = load_keypair(Path(keys) / "cluster.key_secret")
        security = {"keys": pair, "head_key": pair.public}
    nodes = [n["id"] for n in cfg["nodes"]]
    tracer = trace.get_tracer("driver")
    async with experiment("journal", runs_dir=cfg["runs"], seed=7,
                          config={"agents": cfg["agents"]}) as run, \
            connect(endpoint, bind=cfg["bind"], heartbeat_timeout=60, **security) as rt:
        # (the transport closes first: it collects what the nodes still hold of the run)
        transport: Any = rt.transport
        names = [f"p{i:03d}" for i in range(cfg["agents"])]
        for i, name in enumerate(names):
            await transport.spawn(nodes[i % len(nodes)], "players:Player", name,
                                  name=name, timeout=30)
        text = "guess a number from 0 to 100"
        for r in range(cfg["rounds"]):
            with tracer.start_as_current_span(f"round {r}"):
                question = Msg("host", f"round {r}: {text}", "user")
                transcribe(question, None)
                replies = await asyncio.gather(*(rt.ref(n).call(question, timeout=60)
                                                 for n in names))
            mean = sum(int(m.get_text_content() or 0) for m in replies) / len(replies)
            text = f"the mean was {mean:.2f}; guess again"
    print(run.dir, flush=True)


if __name__ == "__main__":
    main(json.loads(Path(sys.argv[1]).read_text()))
