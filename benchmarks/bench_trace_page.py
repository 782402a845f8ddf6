"""The trace page at scale: its size, the time to write it, and the time headless Chromium
takes to render it, for synthetic run folders of growing size.

Each size writes a run folder with ``make_run_folder.py`` (``--agents`` agents over
``--nodes`` node processes, ``--rounds`` rounds: the files a real run writes), writes its
page as ``agentplex trace html`` does, in a fresh process (wall and CPU time, peak RSS), and
renders the page with ``chromium --headless --screenshot`` (wall time of the whole browser
process). Baseline, same run: the same browser rendering an empty page (its start-up).

    python benchmarks/bench_trace_page.py [--agents 1000,10000,100000] [--nodes 4]
        [--rounds 3] [--keep DIR] [--quick]
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _benchlib import emit
from make_run_folder import write_run_folder

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def render(page: Path, shot: Path) -> float:
    """Seconds for headless Chromium to load ``page`` and write a screenshot of it."""
    assert CHROMIUM is not None
    with tempfile.TemporaryDirectory() as profile:
        started = time.perf_counter()
        subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu",
                        "--disable-quic", "--no-first-run", "--disable-background-networking",
                        "--disable-component-update", "--disable-sync",
                        f"--user-data-dir={profile}", "--window-size=1200,2400",
                        f"--screenshot={shot}", page.as_uri()],
                       check=True, capture_output=True, timeout=300)
        return time.perf_counter() - started


_WRITE = """
import resource, sys, time
from pathlib import Path
from agentplex.tracing import render_html
folder = Path(sys.argv[1])
(folder / "trace.html").write_text(render_html(folder), encoding="utf-8")
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
"""


def write_page(folder: Path) -> tuple[float, float, int]:
    """Wall s, CPU s and peak RSS (bytes) of writing the page of ``folder`` in a fresh
    process (what ``agentplex trace html`` does)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", _WRITE, str(folder)], check=True,
                         capture_output=True, text=True, timeout=3600)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    return wall, cpu, int(out.stdout.split()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--agents", default="1000,10000,100000")
    parser.add_argument("--nodes", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--keep", type=Path, help="write the run folders here, and keep them")
    parser.add_argument("--quick", action="store_true", help="1,000 and 5,000 agents")
    args = parser.parse_args()
    sizes = [1000, 5000] if args.quick else [int(n) for n in args.agents.split(",")]
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        root = args.keep or Path(tmp)
        if CHROMIUM is not None:
            blank = root / "blank.html"
            blank.parent.mkdir(parents=True, exist_ok=True)
            blank.write_text("<!doctype html><title>blank</title>")
            emit("trace_page_render", "chromium-blank-page", 0,
                 render(blank, root / "blank.png"), "s", load1=load)
        for agents in sizes:
            folder = root / f"run-{agents}"
            shutil.rmtree(folder, ignore_errors=True)
            write_run_folder(folder, agents=agents, nodes=args.nodes, rounds=args.rounds)
            run_bytes = sum(p.stat().st_size for p in folder.iterdir())
            spans = sum(1 for _ in (folder / "trace.jsonl").open())
            wall, cpu, rss = write_page(folder)
            page = folder / "trace.html"
            common = {"agents": agents, "nodes": args.nodes, "rounds": args.rounds,
                      "spans": spans, "run_mb": round(run_bytes / 1e6, 1), "load1": load}
            emit("trace_page_size", "agentplex", agents, page.stat().st_size / 1e6, "MB",
                 target_mb=5, **common)
            emit("trace_page_write", "agentplex", agents, wall, "s", cpu_s=round(cpu, 2),
                 peak_rss_mb=round(rss / 1e6, 1), **common)
            if CHROMIUM is None:
                emit("trace_page_render", "agentplex", agents, None, "s",
                     skipped="chromium is not installed", **common)
            else:
                emit("trace_page_render", "agentplex", agents,
                     render(page, folder / "trace.png"), "s", target_s=3, **common)


if __name__ == "__main__":
    main()
