"""Smoke test of the runtime benchmark: it runs and prints well-formed JSON lines.

Timing never decides a test: only the shape of the output is checked here.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "bench_runtime.py"

EXPECTED = {
    ("roundtrip", "asyncio"),
    ("roundtrip", "agentplex-agent"),
    ("roundtrip", "agentplex-driver"),
    ("roundtrip", "agentplex-actor"),
    ("concurrent", "asyncio"),
    ("concurrent", "agentplex-agent"),
    ("broadcast", "asyncio"),
    ("broadcast", "agentplex-publish"),
    ("broadcast", "agentplex-msghub"),
    ("spawn", "agentplex-agent"),
    ("spawn_memory", "agentplex-agent"),
    ("spawn", "agentplex-actor"),
    ("spawn", "asyncio"),
}


def test_quick_run_prints_json_lines() -> None:
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick"],
        capture_output=True, text=True, timeout=60, check=False, cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(raw) for raw in proc.stdout.splitlines()]
    assert lines, "the benchmark printed nothing"
    for line in lines:
        assert set(line) >= {"bench", "impl", "n", "value", "unit"}, line
        assert isinstance(line["bench"], str) and isinstance(line["impl"], str)
        assert isinstance(line["unit"], str) and line["unit"]
        assert isinstance(line["n"], int) and line["n"] > 0
        value = line["value"]
        assert isinstance(value, (int, float)) and math.isfinite(value) and value > 0, line
    assert {(line["bench"], line["impl"]) for line in lines} >= EXPECTED
