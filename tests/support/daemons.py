"""A head and node processes started through the ``agentplex`` command, as users run them
(used by tests and benchmarks). Each writes to a log file: a pipe nobody drains would block
it once full."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from agentplex.sim.lowlevel import wait_for_line
from tests.support import ROOT, pythonpath

__all__ = ["Daemons"]


class Daemons:
    """Start ``agentplex head`` / ``agentplex node`` processes; :meth:`close` stops them
    all (SIGTERM, then SIGKILL after 10 s)."""

    def __init__(self) -> None:
        self.logs = Path(tempfile.mkdtemp(prefix="agentplex-daemons-"))
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.env = {**os.environ, "PYTHONPATH": pythonpath(), "PYTHONUNBUFFERED": "1"}

    def start(self, name: str, *args: str, cwd: Path = ROOT, prefix: Sequence[str] = ()
              ) -> subprocess.Popen[bytes]:
        """Start ``agentplex ARGS`` as ``name`` in ``cwd`` (default: the repository root),
        behind ``prefix`` (``ip netns exec NS``, say)."""
        with (self.logs / f"{name}.log").open("w") as log:
            proc = subprocess.Popen([*prefix, sys.executable, "-m", "agentplex", *args],
                                    cwd=cwd, env=self.env, stdout=log,
                                    stderr=subprocess.STDOUT)
        self.procs[name] = proc
        return proc

    def wait_for(self, name: str, needle: str, timeout: float = 60) -> str:
        """The first line of ``name``'s log containing ``needle``."""
        return wait_for_line(self.logs / f"{name}.log", self.procs[name], needle, timeout)

    def head(self, *args: str) -> str:
        """Start the head; its endpoint."""
        self.start("head", "head", "--bind", "tcp://127.0.0.1:0", *args)
        return self.wait_for("head", "listening on").split()[-1]

    def nodes(self, endpoint: str, ids: list[str], *args: str) -> None:
        """Start node processes and wait until each has joined."""
        for node_id in ids:
            self.start(node_id, "node", "--head", endpoint, "--id", node_id, *args)
        for node_id in ids:
            self.wait_for(node_id, f"node {node_id} joined")

    def pid(self, name: str) -> int:
        return self.procs[name].pid

    def close(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        shutil.rmtree(self.logs, ignore_errors=True)
