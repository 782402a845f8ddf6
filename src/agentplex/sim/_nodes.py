"""Node processes a command starts on this machine (a head and K nodes) and always stops.

Each process writes to a log file in ``logs`` (a pipe nobody drains would block it once
full). :meth:`LocalNodes.close` stops every process it started — SIGTERM, then SIGKILL
after ``grace`` seconds — and is safe to call twice, from ``finally`` on an error or a
Ctrl-C alike.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from ._errors import NodesFailed

__all__ = ["LocalNodes"]


class LocalNodes:
    """A head and ``count`` node processes of ``agentplex`` on this machine."""

    def __init__(self, logs: Path, *, allow: list[str], grace: float = 10.0,
                 env: dict[str, str] | None = None) -> None:
        self.logs = logs
        self.allow = allow
        self.env = env or {}
        """Environment variables set for every process (beside this process's own)."""
        self.grace = grace
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.endpoint = ""

    @property
    def pids(self) -> dict[str, int]:
        """The process id of each process started, by name (``head``, ``node-0``, ...)."""
        return {name: p.pid for name, p in self.procs.items()}

    def _start(self, name: str, *args: str) -> None:
        self.logs.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, **self.env, "PYTHONUNBUFFERED": "1"}
        with (self.logs / f"{name}.log").open("w") as log:
            self.procs[name] = subprocess.Popen(
                [sys.executable, "-m", "agentplex", *args], env=env, stdout=log,
                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True)  # a terminal's Ctrl-C reaches only the demo

    async def _wait_for(self, name: str, needle: str, timeout: float) -> str:
        log, proc = self.logs / f"{name}.log", self.procs[name]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in log.read_text(errors="replace").splitlines():
                if needle in line:
                    return line
            if proc.poll() is not None:
                break
            await asyncio.sleep(0.05)
        tail = log.read_text(errors="replace")[-2000:]
        raise NodesFailed(f"{name} did not print {needle!r} within {timeout:g}s "
                          f"(exit code {proc.poll()}); its log {log}:\n{tail}")

    async def start(self, count: int, *, heartbeat: float = 60.0, timeout: float = 120.0
                    ) -> str:
        """Start the head and ``count`` nodes; wait until all have joined; the head's
        endpoint. ``heartbeat``: seconds a busy process (head or node) may stay silent
        before the others count it as lost (a node holding a million players pauses for
        seconds in a full garbage collection on a loaded machine)."""
        silence = f"{heartbeat:g}"
        self._start("head", "head", "--bind", "tcp://127.0.0.1:0", "--dead-after", silence,
                    "--heartbeat-timeout", silence)
        self.endpoint = (await self._wait_for("head", "listening on", timeout)).split()[-1]
        allow = [a for module in self.allow for a in ("--allow", module)]
        for k in range(count):
            self._start(f"node-{k}", "node", "--head", self.endpoint, "--id", f"node-{k}",
                        "--heartbeat-timeout", silence, *allow)
        for k in range(count):
            await self._wait_for(f"node-{k}", f"node node-{k} joined", timeout)
        return self.endpoint

    def close(self) -> None:
        """Stop every process started (nodes first, then the head); wait for each."""
        order = sorted(self.procs, key=lambda n: n == "head")
        for name in order:
            proc = self.procs[name]
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.grace
        for name in order:
            proc = self.procs[name]
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
