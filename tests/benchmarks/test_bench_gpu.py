"""The GPU benchmark's small mode (what CI runs, on the CPU): it runs end to end and prints
well-formed figures for the decode steps (static and paged), ours, ``generate_batch`` and the
round (through the static step). Timing decides nothing."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest

from tests.support import ROOT

pytest.importorskip("torch")
pytest.importorskip("transformers")


@pytest.mark.timeout(600)  # loads the embedded model's tokenizer and config
def test_small_mode_prints_every_figure() -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_gpu.py"), "--small"],
        capture_output=True, text=True, timeout=540, check=False, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-4000:]
    lines = [json.loads(raw) for raw in proc.stdout.splitlines()]
    seen = {(line["bench"], line["impl"], line["n"]) for line in lines}
    for n in (1, 4):
        assert {("gpu_throughput", "agentplex-engine", n),
                ("gpu_throughput", "transformers-generate-batch", n),
                ("gpu_ratio", "agentplex-engine", n),
                ("gpu_decode_step", "static", n), ("gpu_decode_step", "paged", n),
                ("gpu_step_ratio", "paged/static", n)} <= seen
    assert ("gpu_round", "agentplex-engine", 8) in seen
    for line in lines:
        assert isinstance(line["value"], int | float) and math.isfinite(line["value"])
        assert line["value"] > 0, line
    (round_,) = [line for line in lines if line["bench"] == "gpu_round"]
    assert round_["steps"] > 0 and round_["max_rows"] >= 2 and round_["peak_mib"] > 0
    assert round_["static"] is True  # CI covers the static decode step
