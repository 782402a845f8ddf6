"""Trace context crosses the bus; the three-process example runs."""

from __future__ import annotations

import subprocess
import sys

from tests.support import ROOT


def test_trace_context_crosses_processes() -> None:
    out = subprocess.run([sys.executable, "-m", "tests.support.traced_caller"],
                         capture_output=True, text=True, timeout=60, cwd=ROOT, check=True)
    local, remote = out.stdout.split()
    assert local == remote
    assert local != "0" * 32


def test_three_process_example_runs() -> None:
    out = subprocess.run([sys.executable, str(ROOT / "examples" / "bus_three_processes.py")],
                         capture_output=True, text=True, timeout=60, check=True)
    assert "alice> I think actors make concurrency easy." in out.stdout
    assert "bob> Then we agree." in out.stdout
