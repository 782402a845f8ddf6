"""Run every runtime benchmark in one go and print the ratio table; stdlib only.

    python3 benchmarks/run_runtime.py            # full run (a few minutes)
    python3 benchmarks/run_runtime.py --quick    # smoke run
    python3 benchmarks/run_runtime.py --table runs/bench_runtime.jsonl  # table only

Sets up the peers' venvs first (``benchmarks/setup_peers.sh``, skipped with
``--no-setup``), then runs ``bench_runtime.py`` in the project's ``.venv`` and each peer's
script in its own venv, echoing their JSON lines as they arrive (and writing them all to
``--out``, default ``runs/bench_runtime.jsonl``). At the end it prints a table of ratios,
ours against raw asyncio, autogen-core and AgentScope, with the targets of issue 2 marked
met or missed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "benchmarks"

RUNS = (
    # (label, python, script, package whose version is shown)
    ("agentplex", ROOT / ".venv/bin/python", BENCH / "bench_runtime.py", "agentplex"),
    ("autogen-core", ROOT / ".venvs/autogen/bin/python", BENCH / "peers/autogen_bench.py",
     "autogen-core"),
    ("agentscope", ROOT / ".venvs/agentscope/bin/python", BENCH / "peers/agentscope_bench.py",
     "agentscope"),
)

Figures = dict[tuple[str, str, int], dict[str, Any]]


@dataclass(frozen=True)
class Row:
    """One comparison: ``ours`` against ``base`` on ``bench`` at size ``n``.

    ``kind`` is ``"rate"`` (ours ÷ base, higher is better), ``"time"`` (base ÷ ours,
    i.e. our time per operation over theirs, lower is better) or ``"cost"`` (figures that
    are costs, such as bytes per agent: ours ÷ base, lower is better). ``target`` is the bound
    on that ratio (``None``: shown for information only).
    """

    bench: str
    n: int
    ours: str
    base: str
    kind: str = "rate"
    target: float | None = None


def rows(quick: bool) -> list[Row]:
    """The comparisons in the table, the issue's targets attached where it sets them."""
    rt_n = 500 if quick else 20_000
    cc_n = 200 if quick else 20_000
    out: list[Row] = []
    for ours, scope in (("agentplex-agent", "agentscope-agent"),
                        ("agentplex-driver", "agentscope-driver")):
        out += [
            Row("roundtrip", rt_n, ours, "asyncio", "time", 2.5),
            Row("roundtrip", rt_n, ours, "autogen-core", "rate", 6.0),
            Row("roundtrip", rt_n, ours, scope, "rate", 2.0),
        ]
    out += [
        Row("roundtrip", rt_n, "agentplex-actor", "asyncio", "time"),
        Row("concurrent", cc_n, "agentplex-agent", "asyncio"),
        Row("concurrent", cc_n, "agentplex-agent", "autogen-core"),
        Row("concurrent", cc_n, "agentplex-agent", "agentscope"),
    ]
    for ours in ("agentplex-publish", "agentplex-msghub"):
        out += [
            Row("broadcast", 1000, ours, "asyncio", "rate", 0.5),
            Row("broadcast", 1000, ours, "autogen-core"),
            Row("broadcast", 1000, ours, "agentscope-msghub"),
        ]
    for n in (1_000,) if quick else (10_000, 100_000, 1_000_000):
        for base in ("asyncio", "autogen-core", "agentscope"):
            out.append(Row("spawn", n, "agentplex-agent", base))
        for base in ("asyncio", "autogen-core", "agentscope"):
            out.append(Row("spawn_memory", n, "agentplex-agent", base, "cost"))
    return out


def _fmt(value: float | None, unit: str = "") -> str:
    if value is None:
        return "-"
    text = f"{value:,.0f}" if value >= 100 else f"{value:.2f}"
    return f"{text} {unit}".strip()


def table(figures: Figures, quick: bool) -> list[str]:
    """The ratio table (lines of text), followed by the absolute spawn targets."""
    head = f"{'bench':<12} {'n':>9}  {'ours':<17} {'vs':<18} {'ours':>13} {'theirs':>13}" \
           f"  {'ratio':<18} {'target':<10} status"
    lines = ["rates are per second of the benchmark process's CPU time (see _benchlib.run_cases)",
             head, "-" * len(head)]
    for row in rows(quick):
        a = figures.get((row.bench, row.ours, row.n), {}).get("value")
        theirs = figures.get((row.bench, row.base, row.n), {})
        b = theirs.get("value")
        ratio: float | None = None
        if a and b:
            ratio = b / a if row.kind == "time" else a / b
        what = {"rate": "rate", "time": "time", "cost": "bytes"}[row.kind]
        if "skipped" in theirs:
            ratio_text = "skipped"
        else:
            ratio_text = "-" if ratio is None else f"{ratio:.2f}x the {what}"
        target_text, status = "", ""
        if row.target is not None:
            higher_is_better = row.kind == "rate"
            target_text = f"{'>=' if higher_is_better else '<='} {row.target:g}x"
            if ratio is None:
                status = "n/a"
            else:
                ok = ratio >= row.target if higher_is_better else ratio <= row.target
                status = "MET" if ok else "MISSED"
        lines.append(f"{row.bench:<12} {row.n:>9,}  {row.ours:<17} {row.base:<18} "
                     f"{_fmt(a):>13} {_fmt(b):>13}  {ratio_text:<18} {target_text:<10} "
                     f"{status}")
    n = 1_000 if quick else 1_000_000
    rate = figures.get(("spawn", "agentplex-agent", n), {}).get("value")
    per = figures.get(("spawn_memory", "agentplex-agent", n), {}).get("value")
    lines.append("")
    lines.append(f"absolute targets for {n:,} idle agentplex agents in one process:")
    if rate is not None:
        ok = rate >= 100_000
        lines.append(f"  spawn rate      {_fmt(rate, 'agents/s'):>22}   target >= 100,000/s"
                     f"       {'MET' if ok else 'MISSED'}")
    if per is not None:
        added = per * n / 2**20
        ok = added <= 1024
        lines.append(f"  added memory    {added:>15,.1f} MiB   target <= 1,024 MiB "
                     f"({per:,.0f} B/agent)  {'MET' if ok else 'MISSED'}")
    return lines


def print_skipped(lines: list[dict[str, Any]]) -> None:
    """List the figures that were skipped, with the reason."""
    for line in lines:
        if "skipped" in line and line["bench"] == "spawn":
            print(f"skipped: {line['bench']} {line['impl']} n={line['n']:,}: {line['skipped']}")


def version(python: Path, package: str) -> str:
    """The installed version of ``package`` in the venv of ``python``."""
    code = f"import importlib.metadata as m; print(m.version({package!r}))"
    proc = subprocess.run([str(python), "-c", code], capture_output=True, text=True,
                          check=False)
    return proc.stdout.strip() or "?"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke run with tiny sizes")
    parser.add_argument("--no-setup", action="store_true", help="don't run setup_peers.sh")
    parser.add_argument("--out", type=Path, default=ROOT / "runs/bench_runtime.jsonl",
                        help="where to write every JSON line")
    parser.add_argument("--table", type=Path, metavar="JSONL",
                        help="only print the table for the JSON lines of an earlier run")
    args = parser.parse_args()

    if args.table is not None:
        lines = [json.loads(raw) for raw in args.table.read_text().splitlines() if raw]
        quick = any(line["bench"] == "roundtrip" and line["n"] == 500 for line in lines)
        print("\n".join(table({(x["bench"], x["impl"], x["n"]): x for x in lines}, quick)))
        print_skipped(lines)
        return 0
    if not args.no_setup:
        subprocess.run(["bash", str(BENCH / "setup_peers.sh")], check=True)
    extra = ["--quick"] if args.quick else []
    figures: Figures = {}
    collected: list[str] = []
    failed = []
    print(f"# python {platform.python_version()} on {platform.machine()}, "
          f"{len(os.sched_getaffinity(0))} cores", flush=True)
    for label, python, script, package in RUNS:
        if not python.exists():
            print(f"# {label}: {python} is missing (run benchmarks/setup_peers.sh or "
                  "create .venv)", file=sys.stderr)
            failed.append(label)
            continue
        print(f"# {label} {version(python, package)}", flush=True)
        with subprocess.Popen([str(python), str(script), *extra], stdout=subprocess.PIPE,
                              text=True, cwd=ROOT) as proc:
            assert proc.stdout is not None
            for raw in proc.stdout:
                print(raw, end="", flush=True)
                collected.append(raw)
                line = json.loads(raw)
                figures[(line["bench"], line["impl"], line["n"])] = line
        if proc.returncode != 0:
            print(f"# {label}: exited with {proc.returncode}", file=sys.stderr)
            failed.append(label)

    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("".join(collected))
    print()
    print("\n".join(table(figures, args.quick)))
    print_skipped(list(figures.values()))
    print(f"\n# all JSON lines written to {args.out}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
