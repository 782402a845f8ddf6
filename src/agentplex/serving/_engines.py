"""Inference engines' own OpenAI-compatible servers: their command lines, built from one
set of arguments, and :class:`EngineProcess`, which runs one, waits until it answers its
health check, restarts it when it crashes and stops it on request.

Engines: ``agentplex`` (``agentplex serve``, any ``init_chat_model`` string), ``vllm``,
``sglang`` and ``llama.cpp`` (the native ``llama-server``, else llama-cpp-python's
``llama_cpp.server``). vLLM, SGLang and llama.cpp are optional installs; building their
command lines needs none of them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import socket
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ._errors import ServerFailed

__all__ = [
    "ENGINES",
    "EngineConfig",
    "EngineName",
    "EngineProcess",
    "engine_command",
    "free_port",
    "health_path",
    "python_variable",
]

log = logging.getLogger("agentplex.serving")

EngineName = Literal["agentplex", "vllm", "sglang", "llama.cpp"]
ENGINES: tuple[str, ...] = ("agentplex", "vllm", "sglang", "llama.cpp")


class EngineConfig(BaseModel):
    """What every engine is started from: the model, where to listen, and its share of the
    machine. ``gpus`` is the tensor-parallel degree; ``gpu_memory_fraction`` the share of
    each GPU's memory the engine may take (from the ``gpu_memory`` it was placed with)."""

    model_config = ConfigDict(extra="forbid")

    engine: EngineName = "agentplex"
    model: str
    served_name: str
    host: str = "127.0.0.1"
    port: int = Field(ge=1, le=65535)
    gpus: int = Field(default=0, ge=0)
    gpu_memory_fraction: float | None = Field(default=None, gt=0, le=1)
    dtype: str | None = None
    max_model_len: int | None = Field(default=None, ge=1)
    api_key: str | None = None
    model_options: dict[str, Any] = Field(default_factory=dict)
    """Arguments for ``init_chat_model`` (agentplex engine only)."""
    extra_args: list[str] = Field(default_factory=list)
    """Appended to the command line as they are."""


def python_variable(engine: str) -> str:
    """The environment variable naming the interpreter that runs ``engine``'s server
    (``AGENTPLEX_VLLM_PYTHON``, ``AGENTPLEX_SGLANG_PYTHON``, ``AGENTPLEX_LLAMA_CPP_PYTHON``):
    an engine is often installed in a virtual environment of its own."""
    return f"AGENTPLEX_{engine.upper().replace('.', '_')}_PYTHON"


def _python_module(module: str, engine: str = "agentplex") -> list[str]:
    python = os.environ.get(python_variable(engine)) if engine != "agentplex" else None
    return [python or sys.executable, "-m", module]


def _agentplex(c: EngineConfig) -> list[str]:
    import json

    cmd = [*_python_module("agentplex"), "serve", c.model, "--host", c.host, "--port",
           str(c.port), "--served-model-name", c.served_name, "--log-level", "warning"]
    options = dict(c.model_options)
    if c.model.startswith("transformers"):
        if c.dtype is not None:
            options.setdefault("torch_dtype", c.dtype)
        if c.gpus:
            options.setdefault("device_map", "cuda" if c.gpus == 1 else "auto")
    for key, value in options.items():
        cmd += ["--option", f"{key}={json.dumps(value)}"]
    if c.api_key:
        cmd += ["--api-key", c.api_key]
    return cmd


@dataclass(frozen=True)
class _GpuServerFlags:
    """How a GPU engine's server (vLLM, SGLang) spells the arguments they share."""

    engine: str
    module: str
    model: str
    tensor_parallel: str
    max_model_len: str
    memory_fraction: str


_VLLM = _GpuServerFlags("vllm", "vllm.entrypoints.openai.api_server", "--model",
                        "--tensor-parallel-size", "--max-model-len", "--gpu-memory-utilization")
_SGLANG = _GpuServerFlags("sglang", "sglang.launch_server", "--model-path", "--tp-size",
                          "--context-length", "--mem-fraction-static")


def _gpu_server(c: EngineConfig, flags: _GpuServerFlags) -> list[str]:
    cmd = [*_python_module(flags.module, flags.engine), flags.model, c.model,
           "--served-model-name", c.served_name, "--host", c.host, "--port", str(c.port),
           flags.tensor_parallel, str(max(c.gpus, 1))]
    if c.dtype:
        cmd += ["--dtype", c.dtype]
    if c.max_model_len:
        cmd += [flags.max_model_len, str(c.max_model_len)]
    if c.gpu_memory_fraction:
        cmd += [flags.memory_fraction, f"{c.gpu_memory_fraction:.3f}"]
    if c.api_key:
        cmd += ["--api-key", c.api_key]
    return cmd


def _llama_cpp(c: EngineConfig, binary: str | None) -> list[str]:
    if binary is not None:  # llama.cpp's own server
        cmd = [binary, "--model", c.model, "--alias", c.served_name, "--host", c.host,
               "--port", str(c.port), "--n-gpu-layers", "999" if c.gpus else "0"]
        if c.gpus > 1:
            cmd += ["--split-mode", "layer"]
        if c.max_model_len:
            cmd += ["--ctx-size", str(c.max_model_len)]
        if c.api_key:
            cmd += ["--api-key", c.api_key]
        return cmd
    cmd = [*_python_module("llama_cpp.server", "llama.cpp"), "--model", c.model, "--model_alias",
           c.served_name, "--host", c.host, "--port", str(c.port), "--n_gpu_layers",
           "-1" if c.gpus else "0"]
    if c.max_model_len:
        cmd += ["--n_ctx", str(c.max_model_len)]
    if c.api_key:
        cmd += ["--api_key", c.api_key]
    return cmd


def engine_command(config: EngineConfig, *, llama_server: str | None = None) -> list[str]:
    """The command line that starts ``config.engine``'s server for ``config``.

    For llama.cpp, ``llama_server`` is the native binary (default: ``llama-server`` on the
    ``PATH``, else llama-cpp-python's module).
    """
    if config.engine == "agentplex":
        cmd = _agentplex(config)
    elif config.engine == "vllm":
        cmd = _gpu_server(config, _VLLM)
    elif config.engine == "sglang":
        cmd = _gpu_server(config, _SGLANG)
    else:
        cmd = _llama_cpp(config, llama_server or shutil.which("llama-server"))
    return [*cmd, *config.extra_args]


def health_path(config: EngineConfig, command: list[str] | None = None) -> str:
    """The path that answers 200 once the engine serves (llama-cpp-python has no /health)."""
    if config.engine == "llama.cpp" and command and command[1:3] == ["-m", "llama_cpp.server"]:
        return "/v1/models"
    return "/health"


def free_port(host: str = "127.0.0.1") -> int:
    """A port nobody listens on now (the engine binds it a moment later)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


async def _http_status(host: str, port: int, path: str, timeout: float) -> int | None:
    """The status of ``GET path``, or ``None`` when nothing answers (no client library)."""
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    except (OSError, TimeoutError):
        return None
    try:
        writer.write(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
                     .encode())
        line = await asyncio.wait_for(reader.readline(), timeout)
        parts = line.split()
        return int(parts[1]) if len(parts) >= 2 and parts[1].isdigit() else None
    except (OSError, TimeoutError, ValueError):
        return None
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


class EngineProcess:
    """One engine server process, supervised: started, checked ready, restarted on crash.

    Args:
        config: the engine and its arguments.
        env: the process's environment (e.g. its ``CUDA_VISIBLE_DEVICES``).
        ready_timeout: seconds a (re)start may take to answer its health check.
        max_restarts: crashes survived before giving up (state ``failed``).
        log_path: where the engine's output goes (default: a file in the temp folder).
    """

    def __init__(self, config: EngineConfig, *, env: dict[str, str] | None = None,
                 ready_timeout: float = 600.0, max_restarts: int = 5,
                 log_path: str | Path | None = None) -> None:
        self.config = config
        self.command = engine_command(config)
        self.env = dict(os.environ if env is None else env)
        self.ready_timeout = ready_timeout
        self.max_restarts = max_restarts
        self.log_path = Path(log_path) if log_path is not None else Path(tempfile.gettempdir()) / (
            f"agentplex-engine-{config.served_name.replace('/', '_')}-{config.port}.log")
        self.restarts = 0
        self.state = "new"
        """``new``, ``starting``, ``ready``, ``restarting``, ``failed`` or ``stopped``."""
        self.process: asyncio.subprocess.Process | None = None
        self._ready = asyncio.Event()
        self._watcher: asyncio.Task[None] | None = None
        self._error: str | None = None

    @property
    def base_url(self) -> str:
        """The URL clients use (a wildcard bind is advertised by this machine's name)."""
        host = self.config.host
        if host in ("0.0.0.0", "::", ""):
            host = socket.gethostname()
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{self.config.port}/v1"

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    async def start(self) -> None:
        """Launch the process and start watching it (does not wait until it is ready)."""
        if self._watcher is not None:
            return
        self.state = "starting"
        await self._launch()
        self._watcher = asyncio.ensure_future(self._supervise())

    async def wait_ready(self, timeout: float | None = None) -> None:
        """Wait until the engine answers its health check; raise :class:`ServerFailed` when
        it failed for good, ``TimeoutError`` after ``timeout`` seconds."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while not self._ready.is_set():
            if self.state == "failed":
                raise ServerFailed(self._error or "the engine failed")
            if self.state == "stopped":
                raise ServerFailed("the engine was stopped")
            if deadline is not None and loop.time() >= deadline:
                raise TimeoutError(f"{self.config.engine} did not get ready in {timeout} s")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._ready.wait(), 0.1)

    async def stop(self, timeout: float = 15.0) -> None:
        """Stop the engine (SIGTERM to its process group, SIGKILL after ``timeout``)."""
        self.state = "stopped"
        self._ready.clear()
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._watcher
            self._watcher = None
        await self._terminate(timeout)

    def info(self) -> dict[str, Any]:
        """What ``agentplex status`` shows about this engine."""
        return {"engine": self.config.engine, "model": self.config.model,
                "url": self.base_url, "state": self.state, "pid": self.pid,
                "restarts": self.restarts, "tensor_parallel": self.config.gpus,
                "gpu_memory_fraction": self.config.gpu_memory_fraction,
                "cuda_visible_devices": self.env.get("CUDA_VISIBLE_DEVICES")}

    # -- internals -----------------------------------------------------------------------

    async def _launch(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log_file = self.log_path.open("ab")  # a local file: opening it does not block
        try:
            self.process = await asyncio.create_subprocess_exec(
                *self.command, env=self.env, stdin=asyncio.subprocess.DEVNULL,
                stdout=log_file, stderr=asyncio.subprocess.STDOUT, start_new_session=True)
        finally:
            log_file.close()
        log.info("started %s (pid %s): %s", self.config.engine, self.process.pid,
                 " ".join(self.command))

    async def _until_healthy(self) -> None:
        assert self.process is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.ready_timeout
        path = health_path(self.config, self.command)
        host = self.config.host
        if host in ("0.0.0.0", "::", ""):
            host = "127.0.0.1" if host != "::" else "::1"
        while True:
            if self.process.returncode is not None:
                raise ServerFailed(f"{self.config.engine} exited with code "
                                  f"{self.process.returncode} before it was ready; "
                                  f"its output: {self._log_tail()}")
            if await _http_status(host, self.config.port, path, 2.0) == 200:
                return
            if loop.time() > deadline:
                raise ServerFailed(f"{self.config.engine} did not answer {path} within "
                                  f"{self.ready_timeout} s; its output: {self._log_tail()}")
            await asyncio.sleep(0.2)

    async def _supervise(self) -> None:
        try:
            while True:
                try:
                    await self._until_healthy()
                except ServerFailed as exc:
                    await self._terminate(5.0)
                    if not await self._may_restart(str(exc)):
                        return
                    continue
                self.state = "ready"
                self._ready.set()
                assert self.process is not None
                code = await self.process.wait()
                self._ready.clear()
                if not await self._may_restart(f"{self.config.engine} exited with code {code}; "
                                               f"its output: {self._log_tail()}"):
                    return
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # never leave a waiter hanging
            self.state, self._error = "failed", f"supervision failed: {exc!r}"

    async def _may_restart(self, why: str) -> bool:
        if self.restarts >= self.max_restarts:
            log.error("%s failed for good: %s", self.config.engine, why)
            self.state, self._error = "failed", why
            return False
        self.restarts += 1
        self.state = "restarting"
        log.warning("%s: %s; restart %d of %d", self.config.engine, why, self.restarts,
                    self.max_restarts)
        await asyncio.sleep(min(0.5 * 2 ** (self.restarts - 1), 10.0))
        await self._launch()
        return True

    async def _terminate(self, timeout: float) -> None:
        proc = self.process
        if proc is None or proc.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), timeout)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()

    def _log_tail(self, size: int = 2000) -> str:
        try:
            data = self.log_path.read_bytes()[-size:]
        except OSError:
            return "(no output)"
        return data.decode(errors="replace").strip() or "(no output)"
