"""A sweep of the opinion scenario: ``agentplex sweep --parallel 2`` against the same runs
one after another (``agentplex run`` in a loop, what a user scripted before sweeps).

    python benchmarks/bench_sweep.py            # 2 arms x 10 seeds, 10,000 agents x 10 rounds
    python benchmarks/bench_sweep.py --quick    # 2 arms x 2 seeds, 1,000 agents x 3 rounds

Prints one JSON line per figure (wall seconds), with the load average before and after
each (the machine is shared: figures taken under load are noisy).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _benchlib import emit

SCENARIO = "agentplex.sim.scenarios.opinion:Opinion"
ARMS = ("0.1", "0.3")


def _agentplex(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "agentplex", *args], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--agents", type=int)
    parser.add_argument("--rounds", type=int)
    parser.add_argument("--seeds", type=int)
    parser.add_argument("--parallel", type=int, default=2)
    args = parser.parse_args()
    agents = args.agents or (1_000 if args.quick else 10_000)
    rounds = args.rounds or (3 if args.quick else 10)
    seeds = args.seeds or (2 if args.quick else 10)
    runs = len(ARMS) * seeds
    size = ["--agents", str(agents), "--rounds", str(rounds)]
    with tempfile.TemporaryDirectory(prefix="bench-sweep-") as tmp:
        before, began = _load(), time.perf_counter()
        for seed in range(seeds):
            for eps in ARMS:
                _agentplex("run", SCENARIO, *size, "--seed", str(seed), "--set", f"eps={eps}",
                           "--runs-dir", str(Path(tmp) / "loop"))
        alone = time.perf_counter() - began
        emit("sweep", "agentplex run, one after another", runs, alone, "s", agents=agents,
             rounds=rounds, load_before=before, load_after=_load(), cpus=os.cpu_count())
        before, began = _load(), time.perf_counter()
        _agentplex("sweep", SCENARIO, *size, "--grid", f"eps={','.join(ARMS)}",
                   "--seeds", str(seeds), "--parallel", str(args.parallel),
                   "--runs-dir", str(Path(tmp) / "sweep"), "--name", "bench")
        swept = time.perf_counter() - began
        emit("sweep", f"agentplex sweep --parallel {args.parallel}", runs, swept, "s",
             agents=agents, rounds=rounds, x=round(alone / swept, 3), load_before=before,
             load_after=_load(), cpus=os.cpu_count())


if __name__ == "__main__":
    main()
