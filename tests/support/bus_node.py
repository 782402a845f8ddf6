"""A bus node in its own OS process: hosts actors until its stdin closes.

Tests start it with :func:`start_node`, which runs ``python -m tests.support.bus_node``
from the repository root::

    python -m tests.support.bus_node HEAD_ENDPOINT|- [--curve] [--id NODE] [--bind ADDR]
                                     [Class:name[:arg] ...]

``Class`` is one of :mod:`tests.support.actors`; the node prints ``READY <endpoint>``
once its actors are registered, and lets heads spawn from :mod:`tests.support.actors` (and
the modules named, comma-separated, in ``SPAWN_ALLOW``).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import threading

from agentplex import Runtime
from agentplex.bus import KeyPair, ZmqTransport, keypair_from_env
from tests.support import ROOT, actors


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


def start_node(head: str, *specs: str, node_id: str | None = None,
               env: dict[str, str] | None = None, curve: bool = False,
               bind: str | None = None, netns: str | None = None) -> Node:
    """Start a node process (in network namespace ``netns``, if given) and wait (at most
    30 s) for its READY line."""
    args = [sys.executable, "-m", "tests.support.bus_node", head, *specs]
    if netns:
        args = ["ip", "netns", "exec", netns, *args]
    if bind:
        args += ["--bind", bind]
    if node_id:
        args += ["--id", node_id]
    if curve:
        args.append("--curve")
    proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                            cwd=ROOT, env={**os.environ, **(env or {})})
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


async def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("head")
    p.add_argument("actors", nargs="*")
    p.add_argument("--id", default=None)
    p.add_argument("--curve", action="store_true")
    p.add_argument("--bind", default="tcp://127.0.0.1:0")
    a = p.parse_args()
    keys: KeyPair | None = keypair_from_env() if a.curve else None
    t = ZmqTransport(
        a.bind,
        head=None if a.head == "-" else a.head,
        head_key=os.environ.get("HEAD_KEY"),
        node_id=a.id,
        keys=keys,
        allow=[k for k in os.environ.get("ALLOW_KEYS", "").split(",") if k],
        heartbeat_interval=0.2,
        heartbeat_timeout=1.5,
        spawn_allow=[actors.__name__,
                     *[m for m in os.environ.get("SPAWN_ALLOW", "").split(",") if m]],
    )
    mailbox = int(os.environ.get("MAILBOX", "1024"))
    async with Runtime(t, default_timeout=30, mailbox_size=mailbox) as rt:
        for spec in a.actors:
            cls, name, *arg = spec.split(":")
            actor = getattr(actors, cls)(*arg) if arg else (
                getattr(actors, cls)(name) if cls == "Talker" else getattr(actors, cls)())
            await rt.spawn(actor, name)
        print("READY", t.endpoint, flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)


if __name__ == "__main__":
    asyncio.run(main())
