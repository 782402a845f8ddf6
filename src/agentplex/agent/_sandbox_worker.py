"""The sandbox worker: runs a code agent's Python in its own process.

Started by :class:`agentplex.agent.PythonSandbox` as ``python -I <this file>``; it imports
nothing from agentplex (the standard library only). It talks to its parent over its
standard input and output in frames: a 4-byte big-endian length, then UTF-8 JSON.

On start it reads an ``init`` frame and, before running any submitted code, applies the
resource limits (address space, CPU time, file size, no new processes, no core dumps),
drops root privileges to ``nobody`` and forbids regaining them. Submitted code then runs
with restricted builtins, an import hook that admits only the allow-listed modules, and
attribute access that refuses private names and modules outside the allow-list. Those
in-process restrictions make escapes harder; the process boundary and the OS limits are
what the parent relies on.
"""

from __future__ import annotations

import ast
import builtins
import contextlib
import ctypes
import io
import json
import os
import re
import resource
import string
import struct
import sys
import traceback
import types
from typing import Any

_HEADER = struct.Struct(">I")
_MAX_OUTPUT = 20_000
_FRAME_FIELDS = {"f_globals", "f_locals", "f_back", "f_builtins", "f_code", "gi_frame",
                 "gi_code", "cr_frame", "cr_code", "ag_frame", "ag_code", "tb_frame",
                 "tb_next", "mro", "format_map"}
_REMOVED = {"open", "exec", "eval", "compile", "input", "breakpoint", "globals", "locals",
            "vars", "help", "exit", "quit", "memoryview", "__loader__", "__spec__"}


class _Channel:
    def __init__(self) -> None:
        self._in = os.fdopen(os.dup(0), "rb", buffering=0)
        self._out = os.fdopen(os.dup(1), "wb", buffering=0)
        devnull = os.open(os.devnull, os.O_RDWR)
        os.dup2(devnull, 0)  # stray writes to fd 1 cannot corrupt the frames
        os.dup2(devnull, 1)
        os.close(devnull)

    def send(self, frame: dict[str, Any]) -> None:
        body = json.dumps(frame, default=repr).encode()
        self._out.write(_HEADER.pack(len(body)) + body)

    def receive(self) -> dict[str, Any]:
        header = self._read(_HEADER.size)
        frame: dict[str, Any] = json.loads(self._read(_HEADER.unpack(header)[0]))
        return frame

    def _read(self, size: int) -> bytes:
        data = b""
        while len(data) < size:
            chunk = self._in.read(size - len(data))
            if not chunk:
                raise SystemExit(0)  # the parent went away
            data += chunk
        return data


def _limit(limits: dict[str, Any]) -> None:
    def cap(which: int, value: int) -> None:
        resource.setrlimit(which, (value, value))  # hard limit too: cannot be raised back

    if limits.get("memory"):
        cap(resource.RLIMIT_AS, int(limits["memory"]))
    if limits.get("cpu_seconds"):
        cap(resource.RLIMIT_CPU, int(limits["cpu_seconds"]))
    cap(resource.RLIMIT_FSIZE, int(limits.get("file_size", 16 * 2**20)))
    cap(resource.RLIMIT_CORE, 0)
    for module in limits.get("preload", []):  # imported while the files are readable
        with contextlib.suppress(Exception):
            __import__(module)
    if os.geteuid() == 0 and limits.get("drop_root", True):
        os.setgroups([])
        os.setgid(65534)
        os.setuid(65534)
    if not limits.get("processes"):
        cap(resource.RLIMIT_NPROC, 0)  # no fork, no subprocess (not enforced for root)
    with contextlib.suppress(OSError, AttributeError):  # PR_SET_NO_NEW_PRIVS: no setuid
        ctypes.CDLL(None, use_errno=True).prctl(38, 1, 0, 0, 0)  # binary gives privileges back
    os.environ.clear()


class _FinalAnswer(BaseException):
    def __init__(self, value: Any) -> None:
        self.value = value


class _Refused(Exception):
    """Code the sandbox does not run."""


class _Guard(ast.NodeTransformer):
    """Refuse private names; route attribute reads through the guarded ``getattr``."""

    def visit_Name(self, node: ast.Name) -> ast.AST:
        if node.id.startswith("__") and node.id != "__name__":
            raise _Refused(f"the name {node.id!r} is not allowed")
        return node

    def visit_Attribute(self, node: ast.Attribute) -> ast.AST:
        _check_attribute(node.attr)
        self.generic_visit(node)
        if isinstance(node.ctx, ast.Load):
            call = ast.Call(func=ast.Name(id="__sandbox_getattr__", ctx=ast.Load()),
                            args=[node.value, ast.Constant(node.attr)], keywords=[])
            return ast.copy_location(call, node)
        return node

    def visit_ImportFrom(self, node: ast.ImportFrom) -> ast.AST:
        for alias in node.names:
            if alias.name == "*":
                raise _Refused("'from ... import *' is not allowed")
            _check_attribute(alias.name)
        return node


def _check_attribute(name: str) -> None:
    if name.startswith("_") or name in _FRAME_FIELDS:
        raise _Refused(f"access to the attribute {name!r} is not allowed")


class _SafeFormatter(string.Formatter):
    def get_field(self, field_name: str, args: Any, kwargs: Any) -> Any:
        for part in re.split(r"[.\[\]]", field_name):
            if part.startswith("_") or part in _FRAME_FIELDS:
                raise AttributeError(f"access to the attribute {part!r} is not allowed")
        return super().get_field(field_name, args, kwargs)


class Sandbox:
    """The namespace submitted code runs in, its builtins and its guards."""

    def __init__(self, channel: _Channel, init: dict[str, Any]) -> None:
        self.channel = channel
        self.allowed = [str(m) for m in init.get("authorized_imports", [])]
        self.output = io.StringIO()
        self.truncated = False
        self._real_import = builtins.__import__
        safe = {k: v for k, v in vars(builtins).items() if k not in _REMOVED}
        safe.update(__import__=self._import, getattr=self._getattr, print=self._print,
                    hasattr=self._hasattr, __sandbox_getattr__=self._getattr,
                    setattr=self._setattr, delattr=self._delattr)
        self.namespace: dict[str, Any] = {"__name__": "__sandbox__", "__builtins__": safe}
        for name in init.get("tools", []):
            self.namespace[name] = self._tool(name)
        self.namespace["final_answer"] = self._final_answer
        self.namespace.update(init.get("variables") or {})

    # -- guards ---------------------------------------------------------------------------

    def _module_allowed(self, name: str) -> bool:
        return "*" in self.allowed or any(
            name == a or name.startswith(a + ".") for a in self.allowed)

    def _import(self, name: str, globals: Any = None, locals: Any = None,
                fromlist: Any = (), level: int = 0) -> Any:
        if level:
            raise ImportError("relative imports are not allowed")
        if not self._module_allowed(name):
            raise ImportError(f"import of {name!r} is not allowed; allowed modules: "
                              f"{', '.join(sorted(self.allowed)) or 'none'}")
        module = self._real_import(name, globals, locals, fromlist, level)
        for item in fromlist or ():
            value = getattr(module, item, None)
            if isinstance(value, types.ModuleType) and not self._module_allowed(value.__name__):
                raise ImportError(f"import of {value.__name__!r} is not allowed")
        return module

    def _getattr(self, obj: Any, name: str, *default: Any) -> Any:
        if not isinstance(name, str):
            raise TypeError("attribute name must be a string")
        try:
            _check_attribute(name)
        except _Refused as exc:
            raise AttributeError(str(exc)) from None
        if name == "format" and isinstance(obj, str):
            return lambda *a, **k: _SafeFormatter().format(obj, *a, **k)
        if name == "format" and obj is str:
            return lambda text, *a, **k: _SafeFormatter().format(text, *a, **k)
        value = getattr(obj, name, *default)
        if isinstance(value, types.ModuleType) and not self._module_allowed(value.__name__):
            raise AttributeError(f"the module {value.__name__!r} is not allowed")
        return value

    def _hasattr(self, obj: Any, name: str) -> bool:
        try:
            self._getattr(obj, name)
        except AttributeError:
            return False
        return True

    def _setattr(self, obj: Any, name: str, value: Any) -> None:
        _check_attribute(name)
        setattr(obj, name, value)

    def _delattr(self, obj: Any, name: str) -> None:
        _check_attribute(name)
        delattr(obj, name)

    def _print(self, *args: Any, sep: str | None = " ", end: str | None = "\n",
               **_: Any) -> None:
        text = (sep if sep is not None else " ").join(str(a) for a in args)
        text += end if end is not None else "\n"
        room = _MAX_OUTPUT - self.output.tell()
        if room <= 0:
            self.truncated = True
            return
        self.output.write(text[:room])
        self.truncated = self.truncated or len(text) > room

    def _final_answer(self, answer: Any) -> None:
        raise _FinalAnswer(answer)

    def _tool(self, name: str) -> Any:
        def call(*args: Any, **kwargs: Any) -> Any:
            self.channel.send({"op": "tool_call", "name": name, "args": list(args),
                               "kwargs": kwargs})
            reply = self.channel.receive()
            if not reply.get("ok"):
                raise RuntimeError(reply.get("error") or f"the tool {name!r} failed")
            return reply.get("value")

        call.__name__ = call.__qualname__ = name
        return call

    # -- running ----------------------------------------------------------------------------

    def run(self, code: str) -> dict[str, Any]:
        self.output = io.StringIO()
        self.truncated = False
        result: dict[str, Any] = {"op": "done", "error": None, "final": False}
        try:
            tree = ast.parse(code, "<code>", "exec")
            tree = ast.fix_missing_locations(_Guard().visit(tree))
            last = None
            if tree.body and isinstance(tree.body[-1], ast.Expr):
                last = ast.Expression(tree.body.pop().value)
            exec(compile(tree, "<code>", "exec"), self.namespace)
            if last is not None:
                value = eval(compile(last, "<code>", "eval"), self.namespace)
                if value is not None:
                    result["value"] = _plain(value)
        except _FinalAnswer as answer:
            result.update(final=True, answer=_plain(answer.value))
        except _Refused as exc:
            result["error"] = f"Refused: {exc}"
        except SyntaxError as exc:
            result["error"] = f"SyntaxError: {exc.msg} (line {exc.lineno})"
        except SystemExit as exc:
            result["error"] = f"SystemExit: the code tried to exit ({exc.code!r})"
        except MemoryError:
            result["error"] = "MemoryError: the code ran out of its memory limit"
        except RecursionError:
            result["error"] = "RecursionError: maximum recursion depth exceeded"
        except Exception as exc:
            frames = [f for f in traceback.extract_tb(exc.__traceback__)
                      if f.filename == "<code>"]
            where = f" (line {frames[-1].lineno})" if frames else ""
            result["error"] = f"{type(exc).__name__}: {exc}{where}"
        result["output"] = self.output.getvalue() + (
            "\n[output truncated]" if self.truncated else "")
        return result


def _plain(value: Any) -> Any:
    """``value`` if JSON can carry it, else its ``repr``."""
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return repr(value)
    return value


def main() -> None:
    channel = _Channel()
    init = channel.receive()
    _limit(init.get("limits") or {})
    sandbox = Sandbox(channel, init)
    channel.send({"op": "ready", "uid": os.getuid(), "pid": os.getpid()})
    while True:
        frame = channel.receive()
        if frame.get("op") == "run":
            channel.send(sandbox.run(str(frame.get("code", ""))))
        elif frame.get("op") == "set":
            sandbox.namespace.update(frame.get("variables") or {})
            channel.send({"op": "ok"})
        elif frame.get("op") == "exit":
            return


if __name__ == "__main__":
    sys.setrecursionlimit(2000)
    main()
