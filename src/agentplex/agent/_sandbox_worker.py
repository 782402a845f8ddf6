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
import operator
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
_FRAME_FIELDS = {"f_globals", "f_locals", "f_back", "f_builtins", "f_code", "f_trace",
                 "f_generator", "mro", "format_map"}
_FRAME_PREFIXES = ("gi_", "cr_", "ag_", "tb_", "co_")  # generators, coroutines, tracebacks
_SELF_MATCHING = ("bool", "bytearray", "bytes", "dict", "float", "frozenset", "int", "list",
                  "set", "str", "tuple")
"""Builtin types whose one positional class pattern (``case int(n)``) is the subject."""
_RESERVED = ("__builtins__", "__sandbox")  # names code may never bind
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


def _limit(limits: dict[str, Any]) -> dict[str, Any]:
    """Apply the OS limits and kernel filters; say which filters hold."""
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
    libc = ctypes.CDLL(None, use_errno=True)
    scratch = _mount_scratch(libc, int(limits.get("scratch") or 0)) if limits.get(
        "mount_scratch") else None
    if os.geteuid() == 0 and limits.get("drop_root", True):
        os.setgroups([])
        os.setgid(65534)
        os.setuid(65534)
    if not limits.get("processes"):
        cap(resource.RLIMIT_NPROC, 0)  # no fork, no subprocess (not enforced for root)
    with contextlib.suppress(OSError, AttributeError):  # PR_SET_NO_NEW_PRIVS: no setuid
        libc.prctl(38, 1, 0, 0, 0)  # binary gives privileges back
    missing: dict[str, str] = {}
    if not sys.platform.startswith("linux"):
        missing = {"landlock": f"a Linux feature ({sys.platform})",
                   "seccomp": f"a Linux feature ({sys.platform})"}
    else:
        if (why := _restrict_writes(libc, scratch)) is not None:
            missing["landlock"] = why
        if (why := _deny_exec(libc)) is not None:
            missing["seccomp"] = why
    os.environ.clear()
    if scratch is not None:
        os.chdir(scratch)
        os.environ["TMPDIR"] = scratch
    return {"missing": missing, "scratch": scratch}


# -- kernel filters (Linux): raw syscalls through ctypes, so the worker needs no package ------

_SECCOMP = {  # machine: (AUDIT_ARCH_*, execve, execveat, seccomp)
    "x86_64": (0xC000003E, 59, 322, 317),
    "aarch64": (0xC00000B7, 221, 281, 277),
}
_LANDLOCK_CREATE, _LANDLOCK_ADD_RULE, _LANDLOCK_RESTRICT = 444, 445, 446  # every arch


def seccomp_program(deny: dict[int, int]) -> bytes | None:
    """A classic-BPF seccomp program that fails the syscalls ``deny`` maps (number → errno)
    with that errno, kills the process on any other architecture or ABI (x32, i386), and
    allows the rest; ``None`` on a machine this does not know."""
    known = _SECCOMP.get(os.uname().machine)
    if known is None:
        return None
    ld_abs, jeq, jge, ret = 0x20, 0x15, 0x35, 0x06
    kill, errno_, allow = 0x80000000, 0x00050000, 0x7FFF0000
    insns = [(ld_abs, 0, 0, 4), (jeq, 1, 0, known[0]), (ret, 0, 0, kill), (ld_abs, 0, 0, 0)]
    if known[0] == 0xC000003E:  # x32 system calls carry bit 30: refuse them all
        insns += [(jge, 0, 1, 0x40000000), (ret, 0, 0, kill)]
    for number, err in deny.items():
        insns += [(jeq, 0, 1, number), (ret, 0, 0, errno_ | err)]
    insns.append((ret, 0, 0, allow))
    return b"".join(struct.pack("=HBBI", *i) for i in insns)


def install_seccomp(libc: Any, program: bytes) -> str | None:
    """Install ``program`` with the ``seccomp`` system call; the reason when it fails."""
    class Fprog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]

    known = _SECCOMP.get(os.uname().machine)
    if known is None:
        return f"no seccomp table for {os.uname().machine}"
    buf = ctypes.create_string_buffer(program, len(program))
    prog = Fprog(len(program) // 8, ctypes.addressof(buf))
    libc.syscall.restype = ctypes.c_long
    if libc.syscall(ctypes.c_long(known[3]), ctypes.c_long(1), ctypes.c_long(0),
                    ctypes.byref(prog)) != 0:
        return f"the seccomp system call failed ({os.strerror(ctypes.get_errno())})"
    return None


def _deny_exec(libc: Any) -> str | None:
    """Forbid starting any program (execve, execveat fail with EPERM)."""
    known = _SECCOMP.get(os.uname().machine)
    program = seccomp_program({known[1]: 1, known[2]: 1}) if known else None
    if known is None or program is None:
        return f"no seccomp table for the machine {os.uname().machine!r}"
    return install_seccomp(libc, program)


def _mount_scratch(libc: Any, size: int) -> str | None:
    """Mount a tmpfs of ``size`` bytes on /tmp (inside the worker's own mount namespace)."""
    if size <= 0:
        return None
    flags = 2 | 4 | 8  # MS_NOSUID | MS_NODEV | MS_NOEXEC
    if libc.mount(b"tmpfs", b"/tmp", b"tmpfs", ctypes.c_ulong(flags),
                  f"size={size},mode=1777".encode()) != 0:
        return None
    return "/tmp"


def _restrict_writes(libc: Any, scratch: str | None) -> str | None:
    """Landlock: writing, creating, removing or truncating files is allowed only beneath
    ``scratch`` (and to /dev/null); nowhere when it is ``None``."""
    libc.syscall.restype = ctypes.c_long
    abi = libc.syscall(ctypes.c_long(_LANDLOCK_CREATE), None, ctypes.c_long(0),
                       ctypes.c_long(1))
    if abi < 1:
        return f"Landlock is not available ({os.strerror(ctypes.get_errno())})"
    handled = sum(1 << bit for bit in (1, 4, 5, 6, 7, 8, 9, 10, 11, 12))
    handled |= (1 << 13 if abi >= 2 else 0) | (1 << 14 if abi >= 3 else 0)
    attr = ctypes.create_string_buffer(struct.pack("=Q", handled), 8)
    fd = libc.syscall(ctypes.c_long(_LANDLOCK_CREATE), attr, ctypes.c_long(8), ctypes.c_long(0))
    if fd < 0:
        return f"landlock_create_ruleset failed ({os.strerror(ctypes.get_errno())})"
    try:
        rules = [("/dev/null", (1 << 1) | (1 << 14 if abi >= 3 else 0))]
        if scratch is not None:
            rules.append((scratch, handled))
        for path, rights in rules:
            target = os.open(path, os.O_PATH | os.O_CLOEXEC)
            try:
                rule = ctypes.create_string_buffer(struct.pack("=Qi", rights, target), 12)
                if libc.syscall(ctypes.c_long(_LANDLOCK_ADD_RULE), ctypes.c_long(fd),
                                ctypes.c_long(1), rule, ctypes.c_long(0)) != 0:
                    return f"landlock_add_rule failed ({os.strerror(ctypes.get_errno())})"
            finally:
                os.close(target)
        if libc.syscall(ctypes.c_long(_LANDLOCK_RESTRICT), ctypes.c_long(fd),
                        ctypes.c_long(0)) != 0:
            return f"landlock_restrict_self failed ({os.strerror(ctypes.get_errno())})"
    finally:
        os.close(fd)
    return None


class _FinalAnswer(BaseException):
    def __init__(self, value: Any) -> None:
        self.value = value


class _Refused(Exception):
    """Code the sandbox does not run."""


class _Guard(ast.NodeTransformer):
    """Refuse private names; route every attribute read through the guarded ``getattr``.

    Python reads attributes in more places than ``a.b``: ``match`` class patterns read the
    subject's attributes by keyword name (checked here) and by ``__match_args__`` (so a
    positional class pattern is admitted only for the builtin types that match themselves,
    named through a namespace code cannot rebind), and dotted value patterns are evaluated
    by the guarded ``getattr`` before the ``match``.
    """

    def __init__(self) -> None:
        self.patterns = 0

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
            _check_binding(alias.asname)
        return node

    def visit_Import(self, node: ast.Import) -> ast.AST:
        for alias in node.names:
            _check_binding(alias.asname or alias.name.partition(".")[0])
        return node

    def visit_FunctionDef(self, node: ast.FunctionDef) -> ast.AST:
        _check_binding(node.name)
        return self.generic_visit(node)

    def visit_AsyncFunctionDef(self, node: ast.AsyncFunctionDef) -> ast.AST:
        _check_binding(node.name)
        return self.generic_visit(node)

    def visit_ClassDef(self, node: ast.ClassDef) -> ast.AST:
        _check_binding(node.name)
        return self.generic_visit(node)

    def visit_ExceptHandler(self, node: ast.ExceptHandler) -> ast.AST:
        _check_binding(node.name)
        return self.generic_visit(node)

    def visit_Global(self, node: ast.Global) -> ast.AST:
        for name in node.names:
            _check_binding(name)
        return node

    def visit_MatchAs(self, node: ast.MatchAs) -> ast.AST:
        _check_capture(node.name)
        return self.generic_visit(node)

    def visit_MatchStar(self, node: ast.MatchStar) -> ast.AST:
        _check_capture(node.name)
        return node

    def visit_MatchMapping(self, node: ast.MatchMapping) -> ast.AST:
        _check_capture(node.rest)
        return self.generic_visit(node)

    def visit_MatchClass(self, node: ast.MatchClass) -> ast.AST:
        for name in node.kwd_attrs:  # `case object(__self__=x)` reads subject.__self__
            _check_attribute(name)
        _check_dotted(node.cls)
        if node.patterns:  # positional: read through the class's __match_args__
            if not (isinstance(node.cls, ast.Name) and node.cls.id in _SELF_MATCHING):
                raise _Refused("positional class patterns are allowed only for builtin "
                               "types (case int(n)); name attributes: case C(x=a)")
            node.cls = ast.copy_location(ast.Attribute(
                value=ast.Name(id="__sandbox_types__", ctx=ast.Load()), attr=node.cls.id,
                ctx=ast.Load()), node.cls)
        node.patterns = [self.visit(p) for p in node.patterns]
        node.kwd_patterns = [self.visit(p) for p in node.kwd_patterns]
        return node

    def visit_Match(self, node: ast.Match) -> Any:
        node.subject = self.visit(node.subject)
        before: list[ast.stmt] = []
        for case in node.cases:
            for sub in ast.walk(case.pattern):
                if isinstance(sub, ast.MatchValue) and isinstance(sub.value, ast.Attribute):
                    # `case a.b:` compares the subject with a.b: read a.b through the guard
                    # first, then match against the guarded value
                    self.patterns += 1
                    slot = f"v{self.patterns}"
                    before.append(ast.Assign(
                        targets=[ast.Attribute(value=ast.Name("__sandbox_patterns__",
                                                              ast.Load()),
                                               attr=slot, ctx=ast.Store())],
                        value=self.visit(sub.value), lineno=node.lineno))
                    sub.value = ast.Attribute(value=ast.Name("__sandbox_patterns__",
                                                             ast.Load()),
                                              attr=slot, ctx=ast.Load())
            case.pattern = self.visit(case.pattern)
            if case.guard is not None:
                case.guard = self.visit(case.guard)
            case.body = [out for stmt in case.body for out in _as_list(self.visit(stmt))]
        return [*(ast.copy_location(b, node) for b in before), node]

    def visit_MatchValue(self, node: ast.MatchValue) -> ast.AST:
        if isinstance(node.value, ast.Attribute):  # rewritten by visit_Match
            return node
        return self.generic_visit(node)


def _as_list(node: Any) -> list[Any]:
    return node if isinstance(node, list) else [node]


def _check_attribute(name: str) -> None:
    if name.startswith("_") or name in _FRAME_FIELDS or name.startswith(_FRAME_PREFIXES):
        raise _Refused(f"access to the attribute {name!r} is not allowed")


def _check_binding(name: str | None) -> None:
    if name is not None and name.startswith(_RESERVED):
        raise _Refused(f"the name {name!r} is not allowed")


def _check_capture(name: str | None) -> None:
    if name is not None and name.startswith("__"):
        raise _Refused(f"the name {name!r} is not allowed")


def _check_dotted(node: ast.expr) -> None:
    while isinstance(node, ast.Attribute):
        _check_attribute(node.attr)
        node = node.value
    if isinstance(node, ast.Name) and node.id.startswith("__"):
        raise _Refused(f"the name {node.id!r} is not allowed")


def _check_field(field_name: str) -> None:
    for part in re.split(r"[.\[\]]", field_name):
        if part.startswith("_") or part in _FRAME_FIELDS or part.startswith(_FRAME_PREFIXES):
            raise AttributeError(f"access to the attribute {part!r} is not allowed")


class _SafeFormatter(string.Formatter):
    def get_field(self, field_name: str, args: Any, kwargs: Any) -> Any:
        _check_field(field_name)
        return super().get_field(field_name, args, kwargs)


def _safe_attrgetter(*names: str) -> Any:
    for name in names:
        if not isinstance(name, str):
            raise TypeError("attribute name must be a string")
        for part in name.split("."):
            _check_field(part)
    return operator.attrgetter(*names)


def _safe_methodcaller(name: str, *args: Any, **kwargs: Any) -> Any:
    if not isinstance(name, str):
        raise TypeError("method name must be a string")
    _check_field(name)
    if name in ("format", "format_map"):
        raise AttributeError(f"methodcaller({name!r}) is not allowed; call str.format")
    return operator.methodcaller(name, *args, **kwargs)


_SUBSTITUTES: dict[int, Any] = {
    id(operator.attrgetter): _safe_attrgetter,
    id(operator.methodcaller): _safe_methodcaller,
    id(string.Formatter): _SafeFormatter,
}
"""Helpers of allowed modules that read attributes by name, and their guarded twins."""


def _substitute(value: Any) -> Any:
    return _SUBSTITUTES.get(id(value), value)


class Sandbox:
    """The namespace submitted code runs in, its builtins and its guards."""

    def __init__(self, channel: _Channel, init: dict[str, Any]) -> None:
        self.channel = channel
        self.allowed = [str(m) for m in init.get("authorized_imports", [])]
        self.output = io.StringIO()
        self.truncated = False
        self.max_value = int(init.get("max_value") or _MAX_OUTPUT)
        self.max_frame = int(init.get("max_frame") or 4 * 2**20)
        self._real_import = builtins.__import__
        safe = {k: v for k, v in vars(builtins).items() if k not in _REMOVED}
        safe.update(__import__=self._import, getattr=self._getattr, print=self._print,
                    hasattr=self._hasattr, __sandbox_getattr__=self._getattr,
                    setattr=self._setattr, delattr=self._delattr,
                    __sandbox_types__=types.SimpleNamespace(
                        **{name: getattr(builtins, name) for name in _SELF_MATCHING}),
                    __sandbox_patterns__=types.SimpleNamespace())
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
        if not fromlist:
            return module
        # `from m import x` reads m.x without our getattr: hand it a view of m whose
        # attribute-reading helpers are the guarded ones
        view = types.ModuleType(module.__name__)
        for item in fromlist:
            value = getattr(module, item, None)
            if isinstance(value, types.ModuleType) and not self._module_allowed(value.__name__):
                raise ImportError(f"import of {value.__name__!r} is not allowed")
            if hasattr(module, item):  # (the real import loaded the submodules named)
                setattr(view, item, _substitute(value))
        return view

    def _getattr(self, obj: Any, name: str, *default: Any) -> Any:
        if not isinstance(name, str):
            raise TypeError("attribute name must be a string")
        try:
            _check_attribute(name)
        except _Refused as exc:
            raise AttributeError(str(exc)) from None
        if name == "format" and isinstance(obj, str):  # str and its subclasses' instances
            return lambda *a, **k: _SafeFormatter().format(obj, *a, **k)
        if name == "format" and isinstance(obj, type) and issubclass(obj, str):
            return lambda text, *a, **k: _SafeFormatter().format(text, *a, **k)
        value = getattr(obj, name, *default)
        if isinstance(value, types.ModuleType) and not self._module_allowed(value.__name__):
            raise AttributeError(f"the module {value.__name__!r} is not allowed")
        return _substitute(value)

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
            frame = {"op": "tool_call", "name": name, "args": list(args), "kwargs": kwargs}
            if len(json.dumps(frame, default=repr)) > self.max_frame - 1024:
                raise ValueError(f"the arguments of {name}() are over the sandbox's limit "
                                 f"of {self.max_frame} bytes")
            self.channel.send(frame)
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
                    result["value"] = _plain(value, self.max_value)
        except _FinalAnswer as answer:
            result.update(final=True, answer=_plain(answer.value, self.max_value))
        except _Refused as exc:
            result["error"] = f"Refused: {exc}"
        except SyntaxError as exc:
            result["error"] = f"SyntaxError: {_text(exc.msg, self.max_value)} (line {exc.lineno})"
        except SystemExit as exc:
            result["error"] = f"SystemExit: the code tried to exit ({_text(exc.code, 200)})"
        except MemoryError:
            result["error"] = "MemoryError: the code ran out of its memory limit"
        except RecursionError:
            result["error"] = "RecursionError: maximum recursion depth exceeded"
        except Exception as exc:
            try:
                frames = [f for f in traceback.extract_tb(exc.__traceback__)
                          if f.filename == "<code>"]
            except Exception:  # a traceback too deep to walk
                frames = []
            where = f" (line {frames[-1].lineno})" if frames else ""
            result["error"] = f"{type(exc).__name__}: {_text(exc, self.max_value)}{where}"
        result["output"] = self.output.getvalue() + (
            "\n[output truncated]" if self.truncated else "")
        return result


def _text(value: Any, limit: int) -> str:
    """``str(value)``, at most ``limit`` characters (a marker says what was cut), whatever
    ``value``'s ``__str__`` does."""
    try:
        text = str(value)
    except RecursionError:
        return "<nested too deeply to show>"
    except Exception as exc:
        return f"<unprintable {type(value).__name__}: {type(exc).__name__}>"
    return _cut(text, limit)


def _cut(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... [truncated: {len(text)} characters in all]"


def _plain(value: Any, limit: int) -> Any:
    """``value`` if JSON can carry it in at most ``limit`` characters, else its ``repr`` cut
    to ``limit`` characters with a marker."""
    try:
        if len(json.dumps(value)) <= limit:
            return value
    except (TypeError, ValueError, RecursionError):
        pass
    try:
        return _cut(repr(value), limit)
    except RecursionError:
        return "<a value nested too deeply to show>"
    except Exception as exc:
        return f"<unprintable {type(value).__name__}: {type(exc).__name__}>"


def main() -> None:
    channel = _Channel()
    init = channel.receive()
    confined = _limit(init.get("limits") or {})
    sandbox = Sandbox(channel, init)
    channel.send({"op": "ready", "uid": os.getuid(), "pid": os.getpid(), **confined})
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
