"""Bus node processes for the tests (``node.py`` started as a subprocess)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

HERE = Path(__file__).parent


class Node:
    """A node process; ``endpoint`` is where it listens."""

    def __init__(self, proc: subprocess.Popen[str], endpoint: str) -> None:
        self.proc = proc
        self.endpoint = endpoint

    def stop(self) -> None:
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def start_node(head: str, *actors: str, node_id: str | None = None,
               env: dict[str, str] | None = None, curve: bool = False,
               bind: str | None = None, netns: str | None = None) -> Node:
    """Start ``node.py`` (in network namespace ``netns``, if given) and wait (at most
    30 s) for its READY line."""
    args = [sys.executable, str(HERE / "node.py"), head, *actors]
    if netns:
        args = ["ip", "netns", "exec", netns, *args]
    if bind:
        args += ["--bind", bind]
    if node_id:
        args += ["--id", node_id]
    if curve:
        args.append("--curve")
    full_env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(HERE), os.environ.get("PYTHONPATH", "")]), **(env or {})}
    proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                            env=full_env)
    line: list[str] = []
    assert proc.stdout is not None
    reader = threading.Thread(target=lambda: line.append(proc.stdout.readline()),  # type: ignore[union-attr]
                              daemon=True)
    reader.start()
    reader.join(30)
    if not line or not line[0].startswith("READY "):
        proc.kill()
        raise RuntimeError(f"node did not start: {line!r}")
    return Node(proc, line[0].split()[1])
