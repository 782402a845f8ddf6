"""Scenarios at scale through ``agentplex run``: the guessing game (scripted players) and the
opinion model (each agent its own message) on K node processes, in one run.

Each scenario runs as a user runs it, ``agentplex run SCENARIO --agents N --rounds R
--nodes K``, in a child process; this script reads the run's progress lines and, at each,
samples the whole process tree (the driver and the nodes it started) from ``/proc``: CPU
seconds (user + system) and resident memory. Figures:

- ``sim_place``: seconds to place the N agents;
- ``sim_total``: seconds from the command's start to its exit (nodes started, agents
  placed, rounds, the run folder finished);
- ``sim_round``: seconds per round (``value``: the mean; ``rounds``: each), with the tree's
  CPU per agent-round in ``cpu_us_per_agent_round`` and the peak RSS of the tree
  (``peak_rss_mib``).

The baseline (same run) is the guessing game: the opinion scenario's CPU per agent-round
is printed against it as ``x_game``.

    python benchmarks/bench_sim.py [--agents 1000000] [--nodes 4] [--rounds 3]
        [--scenarios guessing,opinion] [--runs-dir DIR] [--quick]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from _benchlib import emit

SCENARIOS = {
    "guessing": "agentplex.sim.scenarios.guessing:Guessing",
    "opinion": "agentplex.sim.scenarios.opinion:Opinion",
}
_TICK = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")
_ROUND = re.compile(r"^round (\d+): .*\(([\d.]+)s\)")
_PLACED = re.compile(r"^placed [\d,]+ \w+ in ([\d.]+)s")


def _tree(root: int) -> list[int]:
    """``root`` and every process below it."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, ()))
    return out


def _sample(root: int) -> tuple[float, int]:
    """CPU seconds and resident bytes of the tree under ``root`` now."""
    cpu, rss = 0.0, 0
    for pid in _tree(root):
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            with open(f"/proc/{pid}/statm") as f:
                rss += int(f.read().split()[1]) * _PAGE
        except (OSError, IndexError, ValueError):
            continue
        cpu += (int(fields[11]) + int(fields[12])) / _TICK  # utime, stime
    return cpu, rss


@dataclass
class Outcome:
    """What one ``agentplex run`` gave."""

    place_s: float | None = None
    rounds: list[float] = field(default_factory=list)
    round_cpu: list[float] = field(default_factory=list)
    peak_rss: int = 0
    rc: int | None = None
    wall: float = 0.0
    """Seconds from start to exit: placement, rounds and writing the run folder."""
    tail: list[str] = field(default_factory=list)


def run_one(scenario: str, agents: int, rounds: int, nodes: int, runs_dir: Path,
            timeout: float) -> Outcome:
    """Run ``scenario`` once in a child process, sampling its tree at each progress line."""
    cmd = [sys.executable, "-m", "agentplex", "run", SCENARIOS[scenario], "--agents",
           str(agents), "--rounds", str(rounds), "--seed", "0", "--runs-dir", str(runs_dir),
           "--timeout", str(timeout)]
    if nodes:
        cmd += ["--nodes", str(nodes)]
    out = Outcome()
    began = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "COLUMNS": "200"})
    stop = threading.Event()

    def watch_memory() -> None:
        while not stop.wait(0.5):
            out.peak_rss = max(out.peak_rss, _sample(proc.pid)[1])

    watcher = threading.Thread(target=watch_memory, daemon=True)
    watcher.start()
    last_cpu = None
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout * (rounds + 2)
    try:
        for line in proc.stdout:
            line = line.strip()
            out.tail = [*out.tail, line][-20:]
            if (m := _PLACED.match(line)) is not None:
                out.place_s = float(m.group(1))
                last_cpu = _sample(proc.pid)[0]
            elif (m := _ROUND.match(line)) is not None:
                cpu = _sample(proc.pid)[0]
                out.rounds.append(float(m.group(2)))
                if last_cpu is not None:
                    out.round_cpu.append(cpu - last_cpu)
                last_cpu = cpu
            if time.monotonic() > deadline:
                proc.kill()
                break
        out.rc = proc.wait(600)
        out.wall = time.monotonic() - began
    finally:
        stop.set()
        if proc.poll() is None:
            proc.kill()
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--agents", type=int, default=1_000_000)
    p.add_argument("--nodes", type=int, default=4)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--scenarios", default="guessing,opinion")
    p.add_argument("--timeout", type=float, default=600.0, help="seconds a round may take")
    p.add_argument("--runs-dir", type=Path, default=None,
                   help="keep the run folders here (default: a temporary folder, removed)")
    p.add_argument("--quick", action="store_true", help="2,000 agents on 2 nodes, 2 rounds")
    a = p.parse_args()
    if a.quick:
        a.agents, a.nodes, a.rounds = 2_000, 2, 2
    runs_dir = a.runs_dir or Path(tempfile.mkdtemp(prefix="bench_sim-"))
    per_agent_round: dict[str, float] = {}
    try:
        for name in a.scenarios.split(","):
            o = run_one(name, a.agents, a.rounds, a.nodes, runs_dir, a.timeout)
            where = {"agents": a.agents, "nodes": a.nodes, "rc": o.rc}
            if o.rc != 0 or len(o.rounds) < a.rounds:
                emit("sim_round", name, a.agents, None, "s", **where,
                     skipped="the run failed: " + " | ".join(o.tail[-5:]))
                continue
            emit("sim_place", name, a.agents, o.place_s, "s", **where)
            cpu_us = 1e6 * sum(o.round_cpu) / (a.agents * len(o.round_cpu))
            per_agent_round[name] = cpu_us
            extra = {}
            if name != "guessing" and "guessing" in per_agent_round:
                extra["x_game"] = round(cpu_us / per_agent_round["guessing"], 3)
            emit("sim_round", name, a.agents, sum(o.rounds) / len(o.rounds), "s", **where,
                 rounds=o.rounds, cpu_us_per_agent_round=round(cpu_us, 2),
                 peak_rss_mib=round(o.peak_rss / 2**20), load=round(os.getloadavg()[0], 1),
                 **extra)
            emit("sim_total", name, a.agents, o.wall, "s", **where,
                 note="start to exit: nodes, placement, rounds, the run folder finished")
    finally:
        if a.runs_dir is None:
            shutil.rmtree(runs_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
