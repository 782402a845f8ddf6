"""The simulation round, agentplex against AgentScope 1.0, side by side; prints JSON lines.

    .venv/bin/python benchmarks/bench_round.py                 # 10k and 100k agents
    .venv/bin/python benchmarks/bench_round.py --agents 10000 --rounds 2
    .venv/bin/python benchmarks/bench_round.py --agentscope-python PATH

N agents join one hub; a round is ``fanout_pipeline`` to all of them (each reply draws a
number, no model) and one ``hub.broadcast`` of the mean, done once every agent has
observed it — the workload of ``examples/simulation.py``. Figures (each size and
implementation in a fresh interpreter, one after another, so both run in the same
conditions): ``round_create`` (create N agents and join them to the hub, agents/s),
``round`` (the best round, agents/s), ``round_memory`` (resident bytes per agent after
the last round, all included) and ``round_own_memory`` (the same agents alone, created
but neither spawned nor joined: the agents' own state). Rates are per second of CPU time.

AgentScope runs in its own venv: ``--agentscope-python``, else ``$AGENTSCOPE_PYTHON``,
else ``.venvs/agentscope/bin/python`` (``benchmarks/setup_peers.sh`` builds it); without
one its figures are reported as skipped.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _benchlib import emit
from _round import HEARD, run

ROOT = Path(__file__).resolve().parent.parent
PEER = Path(__file__).resolve().parent / "peers" / "agentscope_round.py"


async def child(n: int, rounds: int) -> None:
    from agentplex import AgentBase, Msg, MsgHub, Runtime, fanout_pipeline

    class Villager(AgentBase):
        """Draws a number when asked; keeps the last few messages it observed."""

        def __init__(self, name: str, rng: random.Random) -> None:
            super().__init__(name)
            self.rng = rng
            self.heard: list[str] = []
            self.set_console_output_enabled(False)

        async def reply(self, msg: Msg | None = None) -> Msg:
            return Msg(self.name, str(self.rng.randint(0, 100)), "assistant")

        async def observe(self, msg: Msg | list[Msg] | None) -> None:
            if isinstance(msg, Msg):
                self.heard = [*self.heard[-(HEARD - 1):], msg.get_text_content() or ""]

    rng = random.Random(0)
    async with Runtime() as rt:

        async def create_and_join(count: int) -> tuple[MsgHub, list[Villager]]:
            agents = [Villager(f"villager-{i}", rng) for i in range(count)]
            hub = MsgHub(agents, enable_auto_broadcast=False)
            await hub.__aenter__()
            return hub, agents

        async def play_round(state: tuple[MsgHub, list[Villager]], r: int) -> float:
            hub, agents = state
            replies = await fanout_pipeline(agents, Msg("mayor", f"round {r}", "user"))
            mean = sum(int(m.get_text_content() or 0) for m in replies) / len(replies)
            await hub.broadcast(Msg("mayor", f"round {r} mean {mean:.2f}", "user"))
            await rt.idle()  # every agent has observed it, as AgentScope's broadcast waits
            return mean

        await run("agentplex", n, rounds, create_and_join, play_round,
                  lambda count: [Villager(f"villager-{i}", rng) for i in range(count)])


def peer_python(given: str | None) -> Path | None:
    for candidate in (given, os.environ.get("AGENTSCOPE_PYTHON"),
                      str(ROOT / ".venvs/agentscope/bin/python")):
        if candidate and Path(candidate).exists():
            return Path(candidate)
    return None


def measure(cmd: list[str], impl: str, n: int) -> dict[str, float]:
    """Run one child, echo its lines; the figures by bench name."""
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, cwd=ROOT)
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr)
        emit("round", impl, n, None, "agents/s",
             skipped=f"child failed with exit code {proc.returncode}")
        return {}
    figures = {}
    for raw in proc.stdout.splitlines():
        line = json.loads(raw)
        figures[line["bench"]] = line["value"]
        print(raw, flush=True)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", default="10000,100000",
                        help="comma-separated sizes (default: 10000,100000)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--agentscope-python", help="the AgentScope venv's python")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        asyncio.run(child(args.child, args.rounds))
        return
    peer = peer_python(args.agentscope_python)
    for n in (int(x) for x in args.agents.split(",")):
        ours = measure([sys.executable, __file__, "--child", str(n), "--rounds",
                        str(args.rounds)], "agentplex", n)
        if peer is None:
            emit("round", "agentscope", n, None, "agents/s",
                 skipped="no AgentScope venv (benchmarks/setup_peers.sh)")
            continue
        theirs = measure([str(peer), str(PEER), str(n), str(args.rounds)], "agentscope", n)
        for bench in ("round_create", "round"):
            if ours.get(bench) and theirs.get(bench):
                emit(f"{bench}_ratio", "agentplex/agentscope", n,
                     ours[bench] / theirs[bench], "x")
        if ours.get("round_memory") is not None and ours.get("round_own_memory") is not None:
            emit("round_runtime_memory", "agentplex", n,
                 ours["round_memory"] - ours["round_own_memory"], "bytes/agent")
        if theirs.get("round_memory") is not None and theirs.get("round_own_memory") is not None:
            emit("round_runtime_memory", "agentscope", n,
                 theirs["round_memory"] - theirs["round_own_memory"], "bytes/agent")


if __name__ == "__main__":
    main()
