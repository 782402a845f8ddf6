"""``agentplex head`` / ``node`` / ``status`` with CURVE keys, each process its own pair, as a
user sets them up from ``agentplex keys generate``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from agentplex.bus import generate_keys
from tests.support import ROOT, pythonpath
from tests.support.daemons import Daemons


def test_a_cluster_with_a_key_pair_per_process(tmp_path: Path) -> None:
    for name in ("head", "node", "client", "stranger"):
        generate_keys(tmp_path, name)
    keys = {name: str(tmp_path / f"{name}.key_secret") for name in ("head", "node", "client",
                                                                      "stranger")}
    head_key = str(tmp_path / "head.key")
    daemons = Daemons()
    try:
        endpoint = daemons.head("--keys", keys["head"], "--allow-key", str(tmp_path / "node.key"),
                                "--allow-key", str(tmp_path / "client.key"))
        # the node admits the head's key without being told: the head calls it back
        daemons.nodes(endpoint, ["n0"], "--keys", keys["node"], "--head-key", head_key)

        def status(key: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [sys.executable, "-m", "agentplex", "status", "--head", endpoint,
                 "--keys", key, "--head-key", head_key], capture_output=True, text=True,
                timeout=60, cwd=ROOT, env={**os.environ, "PYTHONPATH": pythonpath(),
                                           "COLUMNS": "200"})

        shown = status(keys["client"])
        assert shown.returncode == 0, shown.stderr[-2000:]
        assert "n0" in shown.stdout and "yes" in shown.stdout
        refused = status(keys["stranger"])
        assert refused.returncode == 1
        assert "Traceback" not in refused.stderr and "cannot reach" in refused.stderr
    finally:
        daemons.close()
