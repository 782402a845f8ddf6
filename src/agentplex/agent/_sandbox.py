""":class:`PythonSandbox`: runs model-written Python in a separate, limited worker process.

The worker (``_sandbox_worker.py``, standard library only) starts with a scrubbed
environment, applies its resource limits before it runs anything submitted, and sends tool
calls back over its pipes, where they run in the parent (the agent's :class:`Toolkit`). The
parent enforces the wall-clock limit: a worker that runs past it, crashes or exhausts a
limit is killed with its process group and started afresh for the next run.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import struct
import sys
from collections.abc import Awaitable, Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from ._errors import SandboxError

__all__ = ["DEFAULT_IMPORTS", "PythonSandbox", "SandboxResult"]

DEFAULT_IMPORTS = ("collections", "datetime", "decimal", "fractions", "functools", "itertools",
                   "json", "math", "queue", "random", "re", "stat", "statistics", "textwrap",
                   "time", "unicodedata")
"""Modules code may import unless told otherwise: pure computation, no I/O, and none that
reaches private attributes (``operator.attrgetter``, ``string.Formatter`` would)."""

_WORKER = Path(__file__).with_name("_sandbox_worker.py")
_HEADER = struct.Struct(">I")
_MAX_FRAME = 64 * 2**20
_BASE_ENV = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "OPENBLAS_NUM_THREADS": "1",
             "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
_namespaces_work: dict[tuple[str, ...], bool] = {}

ToolCaller = Callable[[str, list[Any], dict[str, Any]], Awaitable[Any]]
"""Runs one tool call from the code: ``(name, args, kwargs)`` → its value."""


class SandboxResult(BaseModel):
    """What one run of code gave: its printed output, the value of its last expression,
    its error, and its final answer when it called ``final_answer``."""

    model_config = ConfigDict(extra="forbid")

    output: str = ""
    value: Any = None
    error: str | None = None
    final: bool = False
    answer: Any = None
    restarted: bool = False
    """The worker was killed (time limit, crash) and earlier variables are gone."""


class PythonSandbox:
    """A worker process that runs Python code for a code agent.

    Args:
        authorized_imports: modules (and their submodules) the code may import;
            ``"*"`` admits all. They are imported when the worker starts, before it gives
            up root (when the agent runs as root, the worker continues as ``nobody``, who
            may not be able to read the Python installation).
        timeout: wall-clock seconds one run may take, tool calls included.
        memory: the worker's address-space limit in bytes (``RLIMIT_AS``).
        cpu_seconds: the worker's total CPU-time limit (``RLIMIT_CPU``), a backstop for
            the wall-clock limit.
        isolation: ``"namespaces"`` also gives the worker no network and its own process
            and ``/proc`` view (Linux ``unshare``); ``"process"`` only a separate process;
            ``"auto"`` uses namespaces when this machine allows them.
        env: extra environment variables for the worker (nothing is inherited).
        start_timeout: seconds the worker may take to start.

    What it protects against and what it does not is in ``docs/agents.md``.
    """

    def __init__(
        self,
        authorized_imports: Iterable[str] = DEFAULT_IMPORTS,
        *,
        timeout: float = 30.0,
        memory: int = 512 * 2**20,
        cpu_seconds: int | None = 600,
        isolation: Literal["auto", "namespaces", "process"] = "auto",
        env: Mapping[str, str] | None = None,
        start_timeout: float = 30.0,
    ) -> None:
        if timeout <= 0 or start_timeout <= 0:
            raise ValueError("timeouts must be positive")
        self.authorized_imports = sorted(set(authorized_imports))
        self.timeout = timeout
        self.memory = memory
        self.cpu_seconds = cpu_seconds
        self.isolation_requested = isolation
        self.isolation: str | None = None
        """The isolation the running worker got (``namespaces`` or ``process``)."""
        self.env = dict(env or {})
        self.start_timeout = start_timeout
        self.worker_uid: int | None = None
        self._proc: asyncio.subprocess.Process | None = None
        self._stderr: bytearray = bytearray()
        self._stderr_task: asyncio.Task[None] | None = None
        self._tools: list[str] = []
        self._variables: dict[str, Any] = {}
        self._lock = asyncio.Lock()

    # -- lifecycle ----------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.returncode is None

    async def start(self, tools: Iterable[str] = (),
                    variables: Mapping[str, Any] | None = None) -> None:
        """(Re)start the worker with functions for ``tools`` and ``variables`` defined."""
        await self.close()
        self._tools = list(tools)
        self._variables = _json_only(dict(variables or {}))
        command, isolation = await self._command()
        self._stderr = bytearray()
        self._proc = await asyncio.create_subprocess_exec(
            *command, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, env={**_BASE_ENV, **self.env}, cwd="/",
            start_new_session=True)
        self.isolation = isolation
        self._stderr_task = asyncio.ensure_future(self._drain_stderr(self._proc))
        await self._send({"op": "init", "tools": self._tools, "variables": self._variables,
                          "authorized_imports": self.authorized_imports,
                          "limits": {"memory": self.memory, "cpu_seconds": self.cpu_seconds,
                                     "drop_root": os.geteuid() == 0,
                                     "preload": [m for m in self.authorized_imports
                                                 if m != "*"]}})
        try:
            ready = await asyncio.wait_for(self._receive(), self.start_timeout)
        except (TimeoutError, asyncio.IncompleteReadError, SandboxError) as exc:
            detail = await self._death_notice()
            await self.close()
            raise SandboxError(f"the sandbox worker did not start: {detail or exc!r}") from None
        if ready.get("op") != "ready":
            await self.close()
            raise SandboxError(f"the sandbox worker answered {ready!r} instead of ready")
        self.worker_uid = ready.get("uid")

    def _kill_now(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
        if self._stderr_task is not None:
            self._stderr_task.cancel()
            self._stderr_task = None

    async def close(self) -> None:
        """Kill the worker (and anything it started) if it runs."""
        proc, self._proc = self._proc, None
        if proc is not None:
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
            with contextlib.suppress(TimeoutError):  # SIGKILL does not fail
                await asyncio.wait_for(proc.wait(), 10)
        if self._stderr_task is not None:
            self._stderr_task.cancel()
            self._stderr_task = None

    async def __aenter__(self) -> PythonSandbox:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- running ------------------------------------------------------------------------

    async def set_variables(self, variables: Mapping[str, Any]) -> None:
        """Define ``variables`` (JSON values) in the code's namespace."""
        values = _json_only(dict(variables))
        self._variables.update(values)
        if self.running:
            async with self._lock:
                await self._send({"op": "set", "variables": values})
                await asyncio.wait_for(self._receive(), self.start_timeout)

    async def run(self, code: str, call_tool: ToolCaller | None = None,
                  tools: Iterable[str] | None = None) -> SandboxResult:
        """Run ``code``; its tool calls go to ``call_tool``. Never raises for what the code
        does: errors, time-outs and crashes come back in :attr:`SandboxResult.error`."""
        async with self._lock:
            names = list(tools) if tools is not None else self._tools
            restarted = False
            if not self.running or names != self._tools:
                restarted = self._proc is not None
                await self.start(names, self._variables)
            loop = asyncio.get_running_loop()
            deadline = loop.time() + self.timeout
            finished = False
            try:
                await self._send({"op": "run", "code": code})
                while True:
                    async with asyncio.timeout_at(deadline):
                        frame = await self._receive()
                    if frame.get("op") == "tool_call":
                        async with asyncio.timeout_at(deadline):
                            reply = await self._tool_reply(frame, call_tool)
                        await self._send(reply)
                        continue
                    if frame.get("op") != "done":
                        raise SandboxError(f"unexpected frame {frame.get('op')!r}")
                    frame.pop("op")
                    finished = True
                    return SandboxResult(**frame, restarted=restarted)
            except TimeoutError:
                finished = True
                await self.close()
                return SandboxResult(restarted=True, error=(
                    f"TimeoutError: the code ran longer than {self.timeout:g}s and was stopped. "
                    "The sandbox was restarted: variables from earlier steps are gone."))
            except (asyncio.IncompleteReadError, ConnectionError, SandboxError) as exc:
                finished = True
                notice = await self._death_notice() or f"it broke the protocol ({exc})"
                await self.close()
                return SandboxResult(restarted=True, error=(
                    f"SandboxCrash: the worker running the code died: {notice}. The sandbox "
                    "was restarted: variables from earlier steps are gone."))
            finally:
                if not finished:  # cancelled mid-run: the worker is mid-protocol, end it
                    self._kill_now()

    async def _tool_reply(self, frame: dict[str, Any], call_tool: ToolCaller | None
                          ) -> dict[str, Any]:
        name = str(frame.get("name"))
        if call_tool is None:
            return {"op": "tool_result", "ok": False, "error": f"no tool {name!r} here"}
        args, kwargs = frame.get("args") or [], frame.get("kwargs") or {}
        try:
            value = await call_tool(name, list(args), dict(kwargs))
        except Exception as exc:
            return {"op": "tool_result", "ok": False, "error": f"{type(exc).__name__}: {exc}"}
        return {"op": "tool_result", "ok": True, "value": _json_value(value)}

    # -- plumbing -------------------------------------------------------------------------

    async def _command(self) -> tuple[list[str], str]:
        python = [sys.executable, "-I", "-X", "utf8", str(_WORKER)]
        if self.isolation_requested == "process":
            return python, "process"
        prefix = _unshare_prefix()
        if prefix is not None and await _namespaces_available(prefix):
            # a shell is the namespace's PID 1, so the worker gets signals as usual
            return [*prefix, *python], "namespaces"
        if self.isolation_requested == "namespaces":
            raise SandboxError("Linux namespaces (unshare) are not available on this machine")
        return python, "process"

    async def _send(self, frame: dict[str, Any]) -> None:
        proc = self._proc
        if proc is None or proc.stdin is None:
            raise SandboxError("the worker is not running")
        body = json.dumps(frame, default=repr).encode()
        proc.stdin.write(_HEADER.pack(len(body)) + body)
        await asyncio.wait_for(proc.stdin.drain(), self.start_timeout)

    async def _receive(self) -> dict[str, Any]:
        proc = self._proc
        if proc is None or proc.stdout is None:
            raise SandboxError("the worker is not running")
        (size,) = _HEADER.unpack(await proc.stdout.readexactly(_HEADER.size))
        if size > _MAX_FRAME:
            raise SandboxError(f"a frame of {size} bytes is over the limit")
        try:
            frame = json.loads(await proc.stdout.readexactly(size))
        except ValueError as exc:
            raise SandboxError(f"unreadable frame: {exc}") from None
        if not isinstance(frame, dict):
            raise SandboxError("a frame is not an object")
        return frame

    async def _drain_stderr(self, proc: asyncio.subprocess.Process) -> None:
        assert proc.stderr is not None
        while chunk := await proc.stderr.read(4096):
            self._stderr += chunk
            del self._stderr[:-4096]

    async def _death_notice(self) -> str:
        proc = self._proc
        if proc is None:
            return ""
        try:
            code = await asyncio.wait_for(proc.wait(), 5)
        except TimeoutError:
            return ""
        await asyncio.sleep(0)
        if code < 0:
            how = f"killed by {signal.Signals(-code).name}"
        elif code > 128 and self.isolation == "namespaces":  # unshare reports the signal
            how = f"killed by {signal.Signals(code - 128).name}"
        else:
            how = f"exited with code {code}"
        tail = self._stderr.decode(errors="replace").strip().splitlines()[-3:]
        return how + (f" ({' / '.join(tail)})" if tail else "")


def _unshare_prefix() -> list[str] | None:
    unshare = shutil.which("unshare")
    if unshare is None or not sys.platform.startswith("linux"):
        return None
    shell = shutil.which("sh")
    if shell is None:
        return None
    user = [] if os.geteuid() == 0 else ["--user", "--map-root-user"]
    return [unshare, *user, "--net", "--pid", "--fork", "--kill-child", "--mount-proc",
            shell, "-c", '"$@"; exit $?', "sh"]


async def _namespaces_available(prefix: list[str]) -> bool:
    key = tuple(prefix)
    if key not in _namespaces_work:
        try:
            proc = await asyncio.create_subprocess_exec(
                *prefix, "true", stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.DEVNULL, start_new_session=True)
            _namespaces_work[key] = await asyncio.wait_for(proc.wait(), 10) == 0
        except (OSError, TimeoutError):
            _namespaces_work[key] = False
    return _namespaces_work[key]


def _json_value(value: Any) -> Any:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return str(value)
    return value


def _json_only(variables: dict[str, Any]) -> dict[str, Any]:
    for key, value in variables.items():
        if not key.isidentifier() or key.startswith("_"):
            raise ValueError(f"{key!r} cannot be a variable name in the sandbox")
        try:
            json.dumps(value)
        except (TypeError, ValueError):
            raise TypeError(f"the variable {key!r} is not a JSON value") from None
    return variables
