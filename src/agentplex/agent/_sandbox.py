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
import logging
import os
import shutil
import signal
import struct
import sys
import warnings
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
_MAX_OUTPUT = 20_000  # the worker's cap on printed output (it adds a marker past it)
_FILTERS = {"seccomp": "no program may be started (execve)",
            "landlock": "files may be written only in the worker's scratch space"}
log = logging.getLogger(__name__)
_warned: set[str] = set()
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
        confinement: the kernel filters (seccomp: no program can be started; Landlock:
            files are written only in the scratch space) are applied whenever the kernel
            has them; ``"require"`` refuses to start a worker without both, ``"auto"``
            warns once and goes on (:attr:`missing_filters` says what is missing).
        scratch: bytes the code may write in all, in its own ``/tmp`` (a tmpfs in the
            worker's mount namespace; with ``isolation="process"`` there is no scratch
            space and nothing may be written).
        max_value: characters of a last value, final answer or error message that come
            back; longer ones come back cut, with a ``[truncated: ...]`` marker.
        max_frame: bytes of one message from the worker; a larger one (or any message out
            of protocol) kills the worker, which is restarted and the run reported.

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
        confinement: Literal["auto", "require"] = "auto",
        scratch: int = 16 * 2**20,
        max_value: int = 20_000,
        max_frame: int = 4 * 2**20,
    ) -> None:
        if timeout <= 0 or start_timeout <= 0:
            raise ValueError("timeouts must be positive")
        if confinement not in ("auto", "require"):
            raise ValueError(f"confinement must be 'auto' or 'require', not {confinement!r}")
        if max_value < 100 or max_frame < 64 * 1024 or scratch < 0:
            raise ValueError("max_value must be at least 100, max_frame at least 64 KiB, "
                             "scratch at least 0")
        self.confinement = confinement
        self.scratch = scratch
        self.max_value = max_value
        self.max_frame = max_frame
        self.missing_filters: dict[str, str] = {}
        """Kernel filters the running worker could not apply, with the reason."""
        self.scratch_path: str | None = None
        """Where the running worker may write (``None``: nowhere)."""
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
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.start_timeout
        try:
            await self._send({
                "op": "init", "tools": self._tools, "variables": self._variables,
                "authorized_imports": self.authorized_imports, "max_value": self.max_value,
                "max_frame": self.max_frame,
                "limits": {"memory": self.memory, "cpu_seconds": self.cpu_seconds,
                           "drop_root": os.geteuid() == 0, "scratch": self.scratch,
                           "mount_scratch": isolation == "namespaces",
                           "preload": [m for m in self.authorized_imports if m != "*"]}},
                deadline)
            async with asyncio.timeout_at(deadline):
                ready = _checked_ready(await self._receive())
        except (TimeoutError, asyncio.IncompleteReadError, ConnectionError,
                SandboxError) as exc:
            detail = await self._death_notice()
            await self.close()
            raise SandboxError(f"the sandbox worker did not start: {detail or exc!r}") from None
        self.worker_uid = ready["uid"]
        self.scratch_path = ready["scratch"]
        self.missing_filters = ready["missing"]
        if self.missing_filters:
            what = "; ".join(f"{name} ({_FILTERS.get(name, name)}): {why}"
                             for name, why in sorted(self.missing_filters.items()))
            if self.confinement == "require":
                await self.close()
                raise SandboxError(f"the sandbox worker could not apply kernel filters: {what}")
            message = f"the sandbox worker runs without kernel filters: {what}"
            if message not in _warned:  # once per process and reason, not at every restart
                _warned.add(message)
                log.warning(message)
                warnings.warn(message, RuntimeWarning, stacklevel=2)

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
                deadline = asyncio.get_running_loop().time() + self.start_timeout
                try:
                    await self._send({"op": "set", "variables": values}, deadline)
                    async with asyncio.timeout_at(deadline):
                        _checked(await self._receive(), {"op"}, set(), "ok")
                except (TimeoutError, asyncio.IncompleteReadError, ConnectionError,
                        SandboxError) as exc:  # the next run starts a fresh worker with them
                    log.warning("the sandbox worker failed to take variables: %r", exc)
                    await self.close()

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
                await self._send({"op": "run", "code": code}, deadline)
                while True:
                    async with asyncio.timeout_at(deadline):
                        frame = await self._receive()
                    if frame.get("op") == "tool_call":
                        call = _checked_tool_call(frame, names)
                        async with asyncio.timeout_at(deadline):
                            reply = await self._tool_reply(call, call_tool)
                        await self._send(reply, deadline)
                        continue
                    result = self._checked_done(frame)
                    finished = True
                    result.restarted = restarted
                    return result
            except TimeoutError:
                finished = True
                await self.close()
                return SandboxResult(restarted=True, error=(
                    f"TimeoutError: the code ran longer than {self.timeout:g}s and was stopped. "
                    "The sandbox was restarted: variables from earlier steps are gone."))
            except _ProtocolError as exc:
                finished = True
                log.warning("killed the sandbox worker: %s", exc)
                await self.close()
                return SandboxResult(restarted=True, error=(
                    f"SandboxProtocolError: the worker sent something out of protocol ({exc}) "
                    "and was killed. The sandbox was restarted: variables from earlier steps "
                    "are gone."))
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

    def _checked_done(self, frame: dict[str, Any]) -> SandboxResult:
        """The result a ``done`` frame carries, checked field by field and cut to size."""
        _checked(frame, {"op", "output", "error", "final"}, {"value", "answer"}, "done")
        output, error, final = frame["output"], frame["error"], frame["final"]
        if not isinstance(output, str) or not isinstance(final, bool) or not (
                error is None or isinstance(error, str)):
            raise _ProtocolError("a done frame with fields of the wrong type")
        return SandboxResult(
            output=_cut(output, _MAX_OUTPUT + 100), error=None if error is None else _cut(
                error, self.max_value + 100),
            final=final, value=_capped(frame.get("value"), self.max_value + 100),
            answer=_capped(frame.get("answer"), self.max_value + 100))

    async def _tool_reply(self, call: tuple[str, list[Any], dict[str, Any]],
                          call_tool: ToolCaller | None) -> dict[str, Any]:
        name, args, kwargs = call
        if call_tool is None:
            return {"op": "tool_result", "ok": False, "error": f"no tool {name!r} here"}
        try:
            value = await call_tool(name, args, kwargs)
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

    async def _send(self, frame: dict[str, Any], deadline: float) -> None:
        """Write ``frame``; a worker that does not read it by ``deadline`` (loop time)
        raises :class:`TimeoutError`."""
        proc = self._proc
        if proc is None or proc.stdin is None:
            raise SandboxError("the worker is not running")
        body = json.dumps(frame, default=repr).encode()
        proc.stdin.write(_HEADER.pack(len(body)) + body)
        async with asyncio.timeout_at(deadline):
            await proc.stdin.drain()

    async def _receive(self) -> dict[str, Any]:
        proc = self._proc
        if proc is None or proc.stdout is None:
            raise SandboxError("the worker is not running")
        (size,) = _HEADER.unpack(await proc.stdout.readexactly(_HEADER.size))
        if size > self.max_frame:
            raise _ProtocolError(f"a frame of {size} bytes, over the limit of {self.max_frame}")
        data = await proc.stdout.readexactly(size)
        try:
            frame = json.loads(data)
        except (ValueError, RecursionError) as exc:
            raise _ProtocolError(f"an unreadable frame ({type(exc).__name__})") from None
        if not isinstance(frame, dict):
            raise _ProtocolError("a frame that is not an object")
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


class _ProtocolError(SandboxError):
    """A frame from the worker that is not what the protocol allows at that point."""


def _checked(frame: dict[str, Any], required: set[str], optional: set[str],
             op: str | None = None) -> dict[str, Any]:
    keys = set(frame)
    if (op is not None and frame.get("op") != op) or not required <= keys or not (
            keys <= required | optional):
        shown = ", ".join(sorted(repr(k)[:40] for k in keys)[:10])
        raise _ProtocolError(f"a frame with op {str(frame.get('op'))[:40]!r} and keys {shown}")
    return frame


def _checked_ready(frame: dict[str, Any]) -> dict[str, Any]:
    _checked(frame, {"op", "uid", "pid", "missing", "scratch"}, set(), "ready")
    missing, scratch = frame["missing"], frame["scratch"]
    if not isinstance(frame["uid"], int) or not isinstance(frame["pid"], int) or not (
            isinstance(missing, dict) and all(
                isinstance(k, str) and isinstance(v, str) for k, v in missing.items())) or not (
            scratch is None or isinstance(scratch, str)):
        raise _ProtocolError("a ready frame with fields of the wrong type")
    return frame


def _checked_tool_call(frame: dict[str, Any], names: list[str]
                       ) -> tuple[str, list[Any], dict[str, Any]]:
    _checked(frame, {"op", "name", "args", "kwargs"}, set(), "tool_call")
    name, args, kwargs = frame["name"], frame["args"], frame["kwargs"]
    if not isinstance(name, str) or name not in names:
        raise _ProtocolError(f"a call of {str(name)[:80]!r}, not one of this run's tools")
    if not isinstance(args, list) or not isinstance(kwargs, dict):
        raise _ProtocolError("a tool call whose arguments are not a list and an object")
    return name, args, kwargs


def _cut(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... [truncated: {len(text)} characters in all]"


def _capped(value: Any, limit: int) -> Any:
    """``value``, or its text cut to ``limit`` characters when its JSON is longer."""
    if value is None or isinstance(value, (bool, int, float)):
        return value
    text = value if isinstance(value, str) else json.dumps(value)
    if len(text) <= limit:
        return value
    return _cut(text, limit)


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
