"""Node processes a command starts on this machine (a head and K nodes) and always stops,
and how a node finds the user's code.

Each process writes to a log file in ``logs`` (a pipe nobody drains would block it once
full). :meth:`LocalNodes.close` stops every process it started — SIGTERM, then SIGKILL
after ``grace`` seconds — and is safe to call twice, from ``finally`` on an error or a
Ctrl-C alike.

A node imports actor classes from its import path: its working directory, the folders
given with ``--path`` and ``PYTHONPATH`` (:func:`use_import_path`). A command that runs
the user's file on nodes it starts (:func:`user_code`) gives them the file's folder with
``--path`` and allows exactly the file's module.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, NamedTuple

from ._errors import NodesFailed, NotUserCode

log = logging.getLogger(__name__)

__all__ = ["LocalNodes", "NodesFailed", "UserCode", "class_code", "use_import_path",
           "user_code", "wait_for_line"]


def wait_for_line(log: Path, proc: subprocess.Popen[bytes], needle: str,
                  timeout: float = 60.0) -> str:
    """The first line of the log file ``log`` (written by ``proc``) that contains
    ``needle``, once there is one; :class:`NodesFailed` (with the log's end) if ``proc``
    ends or ``timeout`` seconds pass first. It blocks: from a coroutine, run it in a
    thread (``asyncio.to_thread``)."""
    deadline = time.monotonic() + timeout
    while True:
        if log.exists():
            for line in log.read_text(errors="replace").splitlines():
                if needle in line:
                    return line
        if proc.poll() is not None or time.monotonic() >= deadline:
            break
        time.sleep(0.05)
    tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
    raise NodesFailed(f"{log.stem} did not print {needle!r} within {timeout:g}s "
                      f"(exit code {proc.poll()}); its log {log}:\n{tail}")


class UserCode(NamedTuple):
    """Where a node finds the user's code: the ``module`` to import (and allow) and the
    ``folder`` to put on its import path (``None``: an installed or importable module)."""

    module: str
    folder: Path | None


def user_code(target: str) -> UserCode:
    """The module and folder of ``target``: ``"path/to/file.py[:Class]"`` (the file's
    stem, imported from its folder: ``user_code("sims/opsim.py:Opinion")`` is module
    ``opsim`` from ``sims/``) or ``"package.module[:Class]"`` (imported as it is).
    :class:`NotUserCode` for anything else."""
    spec = target.partition(":")[0]
    if spec.endswith(".py") or os.sep in spec or "/" in spec:
        path = Path(spec).expanduser().resolve()
        if path.suffix != ".py":
            raise NotUserCode(f"{target!r}: a scenario file ends in .py")
        if not path.stem.isidentifier():
            raise NotUserCode(f"{target!r}: {path.stem!r} is not a module name "
                             "(rename the file so it can be imported)")
        return UserCode(path.stem, path.parent)
    if not all(part.isidentifier() for part in spec.split(".")):
        raise NotUserCode(f"{target!r} is neither a .py file nor a module name")
    return UserCode(spec, None)


def class_code(cls: type) -> UserCode:
    """Where a node finds ``cls``: its module, and for a top-level module loaded from a
    file (a scenario's own file), that file's folder."""
    module = cls.__module__
    path = getattr(sys.modules.get(module), "__file__", None)
    folder = Path(path).resolve().parent if path is not None and "." not in module \
        and Path(path).name != "__init__.py" else None
    return UserCode(module, folder)


def use_import_path(folders: list[Path], *, working_dir: bool = True) -> list[str]:
    """Put ``folders`` (and, first, the working directory) at the front of this process's
    import path, and of ``PYTHONPATH`` so the processes it starts (a node's GPU workers)
    find the same code; returns the folders added. The ``agentplex`` script, unlike
    ``python -m``, does not put the working directory on the path by itself."""
    wanted = ([Path.cwd()] if working_dir else []) + list(folders)
    added: list[str] = []
    for folder in wanted:
        entry = str(folder.expanduser().resolve())
        if entry not in added:
            added.append(entry)
    sys.path[:0] = [e for e in added if e not in sys.path]
    old = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join([*added, *([old] if old else [])])
    return added


class LocalNodes:
    """A head and ``count`` node processes of ``agentplex`` on this machine; ``allow``:
    the modules they may spawn actors from; ``path``: folders on their import path."""

    def __init__(self, logs: Path, *, allow: list[str], path: list[Path] | None = None,
                 grace: float = 10.0) -> None:
        self.logs = logs
        self.allow = allow
        self.path = list(path or [])
        self.grace = grace
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.endpoint = ""

    @property
    def pids(self) -> dict[str, int]:
        """The process id of each process started, by name (``head``, ``node-0``, ...)."""
        return {name: p.pid for name, p in self.procs.items()}

    def cpu_seconds(self) -> dict[str, float]:
        """CPU seconds (user and system, with the children it waited for) each process
        started here has used so far, by name; read from ``/proc`` (empty where there is
        none, or for a process that has exited)."""
        out: dict[str, float] = {}
        tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
        for name, proc in self.procs.items():
            try:
                stat = Path(f"/proc/{proc.pid}/stat").read_text()
                fields = stat.rsplit(")", 1)[1].split()
                out[name] = round(sum(int(f) for f in fields[11:15]) / tick, 2)
            except (OSError, IndexError, ValueError):
                continue
        return out

    def _start(self, name: str, *args: str) -> None:
        self.logs.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        with (self.logs / f"{name}.log").open("w") as log:
            self.procs[name] = subprocess.Popen(
                [sys.executable, "-m", "agentplex", *args], env=env, stdout=log,
                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True)  # a terminal's Ctrl-C reaches only the demo

    async def _wait_for(self, name: str, needle: str, timeout: float) -> str:
        return await asyncio.to_thread(wait_for_line, self.logs / f"{name}.log",
                                       self.procs[name], needle, timeout)

    async def start(self, count: int, *, heartbeat: float = 60.0, timeout: float = 120.0
                    ) -> str:
        """Start the head and ``count`` nodes; wait until all have joined; the head's
        endpoint. ``heartbeat``: seconds a busy process (head or node) may stay silent
        before the others count it as lost (a node holding a million players pauses for
        seconds in a full garbage collection on a loaded machine)."""
        silence = f"{heartbeat:g}"
        owner = ("--exit-with", str(os.getpid()))  # they end with this process, however
        self._start("head", "head", "--bind", "tcp://127.0.0.1:0", "--dead-after", silence,
                    "--heartbeat-timeout", silence, *owner)
        self.endpoint = (await self._wait_for("head", "listening on", timeout)).split()[-1]
        allow = [a for module in self.allow for a in ("--allow", module)]
        allow += [a for folder in self.path for a in ("--path", str(folder.resolve()))]
        for k in range(count):
            self._start(f"node-{k}", "node", "--head", self.endpoint, "--id", f"node-{k}",
                        "--heartbeat-timeout", silence, *owner, *allow)
        for k in range(count):
            await self._wait_for(f"node-{k}", f"node node-{k} joined", timeout)
        return self.endpoint

    async def watch(self, exited: Callable[[str, str], Awaitable[Any]], *,
                    interval: float = 0.25) -> None:
        """Until cancelled: call ``exited(node, reason)`` once for each node process that
        ends (checked every ``interval`` seconds; the head is not a node). A failing
        ``exited`` is logged, not raised."""
        told: set[str] = set()
        while True:
            await asyncio.sleep(interval)
            for name, proc in self.procs.items():
                code = proc.poll()
                if name == "head" or code is None or name in told:
                    continue
                told.add(name)
                how = (f"killed by {signal.Signals(-code).name}" if code < 0
                       and -code in signal.valid_signals() else f"exit status {code}")
                try:
                    await exited(name, f"node {name!r}'s process ended ({how})")
                except Exception as exc:  # the bus's heartbeat still finds it
                    log.warning("could not report node %r's end: %s", name, exc)

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
