"""Attacks on the code sandbox: rails that every way Python reads an attribute goes through,
forged frames from an escaped worker, oversized and deeply nested values, writes that the
worker does not read, and the kernel filters (no programs, bounded writes)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agentplex.agent import PythonSandbox, SandboxError
from tests.support import ROOT
from tests.support.loop_thread import LoopThread, loop_thread

pytestmark = pytest.mark.anyio

ESCAPES = {
    "match_self": "match final_answer:\n    case object(__self__=sb):\n        pass\nsb",
    "match_import": ("match final_answer:\n    case object(__self__=sb):\n        pass\n"
                     "match sb:\n    case object(_real_import=ri):\n        pass\nri('os')"),
    "match_subclasses": "match type:\n    case object(__subclasses__=s):\n        pass\ns()",
    "match_frame": ("g = (x for x in [1])\nmatch g:\n    case object(gi_frame=f):\n"
                    "        pass\nf"),
    "match_traceback": ("try:\n    1/0\nexcept Exception as e:\n    match e:\n"
                        "        case object(__traceback__=tb):\n            pass\ntb"),
    "match_positional": ("M = type('M', (type,), {'__instancecheck__': lambda c, o: True})\n"
                         "X = M('X', (), {'__match_args__': ('__self__',)})\n"
                         "match final_answer:\n    case X(sb):\n        pass\nsb"),
    "match_shadowed_builtin": ("str = type('S', (), {'__match_args__': ('__self__',)})\n"
                               "match final_answer:\n    case str(sb):\n        pass\nsb"),
    "match_value_eq": ("import json\nleak = []\n"
                       "class Spy:\n    def __eq__(self, other):\n"
                       "        leak.append(other)\n        return False\n"
                       "match Spy():\n    case json.codecs.sys:\n        pass\nleak"),
    "match_capture_builtins": "match {}:\n    case __builtins__:\n        pass",
    "str_subclass_format": ("class S(str):\n    pass\n"
                            "S.format('{0.__func__.__globals__[os]}', final_answer)"),
    "str_subclass_instance": ("class S(str):\n    pass\n"
                              "S('{0.__func__.__globals__}').format(final_answer)"),
    "type_of_str_format": "type('').format('{0.__globals__}', final_answer)",
    "gi_yieldfrom": "(x for x in [1]).gi_yieldfrom",
    "coroutine_frame": "async def f():\n    pass\nc = f()\nc.cr_frame",
    "code_object": "(lambda: 0).co_consts",
    "rebind_guard": "def __sandbox_getattr__(o, n):\n    return o\n1",
    "import_as_reserved": "import json as __sandbox_types__",
}
SUBSTITUTES = {
    "attrgetter": "import operator\noperator.attrgetter('__class__')(1)",
    "attrgetter_from": "from operator import attrgetter\nattrgetter('__class__.__base__')(1)",
    "attrgetter_dotted": "import operator\noperator.attrgetter('real.__class__')(1)",
    "methodcaller": "import operator\noperator.methodcaller('__reduce_ex__', 2)(1)",
    "methodcaller_format": ("import operator\n"
                            "operator.methodcaller('format', final_answer)('{0.__globals__}')"),
    "formatter": "import string\nstring.Formatter().format('{0.__globals__}', final_answer)",
    "formatter_from": ("from string import Formatter\n"
                       "Formatter().format('{0.__globals__}', final_answer)"),
}


@pytest.fixture
async def box() -> AsyncIterator[PythonSandbox]:
    sandbox = PythonSandbox(["json", "operator", "string"], timeout=20)
    yield sandbox
    await sandbox.close()


@pytest.mark.parametrize("name", [*ESCAPES, *SUBSTITUTES])
async def test_every_attribute_read_goes_through_the_rails(box: PythonSandbox,
                                                           name: str) -> None:
    result = await box.run({**ESCAPES, **SUBSTITUTES}[name])
    assert result.error is not None, (name, result)
    if name == "match_shadowed_builtin":  # the real str is matched, the capture never binds
        assert result.error.startswith("NameError: name 'sb'"), result.error
    else:
        assert "not allowed" in result.error or result.error.startswith("Refused"), (
            name, result.error)
    assert not result.restarted
    assert result.value is None


async def test_the_patterns_code_really_writes_still_work(box: PythonSandbox) -> None:
    code = ("class Color:\n    RED = 1\n    GREEN = 2\n"
            "class Point:\n    def __init__(self, x, y):\n        self.x, self.y = x, y\n"
            "out = []\n"
            "for subject in [3, 'a', Point(1, 2), 2, {'k': 5}, [1, 2, 3]]:\n"
            "    match subject:\n"
            "        case int(n) if n > 2:\n            out.append(('int', n))\n"
            "        case str(s):\n            out.append(('str', s))\n"
            "        case Point(x=a, y=b):\n            out.append(('point', a, b))\n"
            "        case Color.GREEN:\n            out.append('green')\n"
            "        case {'k': v, **rest}:\n            out.append(('map', v))\n"
            "        case [first, *others]:\n            out.append(('seq', first, others))\n"
            "import operator, string\n"
            "out.append(operator.attrgetter('real')(4))\n"
            "out.append(operator.methodcaller('upper')('x'))\n"
            "out.append(string.Formatter().format('{0.real}', 6))\n"
            "class S(str):\n    pass\n"
            "out.append(S('{0}!').format(7))\n"
            "out")
    result = await box.run(code)
    assert result.error is None, result.error
    assert result.value == [["int", 3], ["str", "a"], ["point", 1, 2], "green", ["map", 5],
                            ["seq", 1, [2, 3]], 4, "X", "6", "7!"]


# -- escape routes composed: every way to read an attribute, from every entry object, of
#    every name an escape needs ---------------------------------------------------------------

ENTRIES = ["final_answer", "(x for x in [1])", "json", "print", "json.dumps", "(lambda: 0)",
           "type", "object", "''", "Exception()", "string.Formatter()", "operator"]
DANGEROUS = ["__self__", "__globals__", "__func__", "__class__", "__subclasses__", "gi_frame",
             "tb_frame", "f_back", "f_globals", "_real_import", "__dict__", "__code__",
             "__builtins__", "__closure__", "cr_frame", "__init__", "__base__", "__mro__",
             "__traceback__", "__reduce_ex__", "__loader__", "__spec__", "gi_code", "f_locals",
             "__getattribute__", "__wrapped__", "_channel", "mro", "__call__"]
ROUTES: dict[str, Callable[[str, list[str]], str]] = {
    "direct": lambda e, chain: f"{e}.{'.'.join(chain)}",
    "getattr": lambda e, chain: _nest("getattr({}, {!r})", e, chain),
    "match": lambda e, chain: "v0 = " + e + "\n" + "".join(
        f"match v{i}:\n    case object({name}=v{i + 1}):\n        pass\n"
        for i, name in enumerate(chain)) + f"v{len(chain)}",
    "format": lambda e, chain: f"'{{0.{'.'.join(chain)}}}'.format({e})",
    "str_subclass": lambda e, chain: ("class S(str):\n    pass\n"
                                      f"S('{{0.{'.'.join(chain)}}}').format({e})"),
    "str_subclass_unbound": lambda e, chain: ("class S(str):\n    pass\n"
                                              f"S.format('{{0.{'.'.join(chain)}}}', {e})"),
    "formatter": lambda e, chain: f"string.Formatter().format('{{0.{'.'.join(chain)}}}', {e})",
    "format_map": lambda e, chain: f"'{{x.{'.'.join(chain)}}}'.format_map({{'x': {e}}})",
    "attrgetter": lambda e, chain: f"operator.attrgetter({'.'.join(chain)!r})({e})",
    "methodcaller": lambda e, chain: _nest("operator.methodcaller('__getattribute__', {1!r})"
                                           "({0})", e, chain),
}


def _nest(template: str, entry: str, chain: list[str]) -> str:
    code = entry
    for name in chain:
        code = template.format(code, name)
    return code


@pytest.fixture(scope="module")
def sync_box() -> Iterator[tuple[LoopThread, PythonSandbox]]:
    with loop_thread() as loop:
        sandbox = PythonSandbox(["json", "operator", "string"], timeout=20)
        try:
            yield loop, sandbox
        finally:
            loop.run(sandbox.close())


@settings(max_examples=120, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(route=st.sampled_from(sorted(ROUTES)), entry=st.sampled_from(ENTRIES),
       chain=st.lists(st.sampled_from(DANGEROUS), min_size=1, max_size=3))
def test_composed_escape_routes_are_all_refused(
        sync_box: tuple[LoopThread, PythonSandbox], route: str, entry: str,
        chain: list[str]) -> None:
    """Whatever the route, entry object and chain of names: an error, no value, and the
    worker unharmed (no restart)."""
    loop, sandbox = sync_box
    code = "import json, operator, string\n" + ROUTES[route](entry, chain)
    result = loop.run(sandbox.run(code))
    assert result.error is not None, (code, result)
    assert result.value is None and not result.restarted, (code, result)


# -- an escaped worker: frames forged on the worker's real channel ----------------------------

FORGE = """import os, json, struct, stat
def channel():
    for fd in range(3, 64):
        try:
            info = os.fstat(fd)
            flags = open_flags(fd)
        except OSError:
            continue
        if stat.S_ISFIFO(info.st_mode) and flags & os.O_WRONLY:
            return fd
def open_flags(fd):
    fd_info = os.open(f'/proc/self/fdinfo/{fd}', os.O_RDONLY)
    try:
        text = os.read(fd_info, 4096).decode()
    finally:
        os.close(fd_info)
    for line in text.splitlines():
        if line.startswith('flags:'):
            return int(line.split()[1], 8)
    return 0
def forge(body):
    os.write(channel(), struct.pack('>I', len(body)) + body)
"""
FORGED = {
    "extra_key": b'{"op": "done", "output": "forged", "error": null, "final": false, "bogus": 1}',
    "restarted_key": (b'{"op": "done", "output": "forged", "error": null, "final": true, '
                      b'"answer": 1, "restarted": "yes"}'),
    "wrong_types": b'{"op": "done", "output": 5, "error": [], "final": "no"}',
    "foreign_tool": b'{"op": "tool_call", "name": "rm_rf", "args": [], "kwargs": {}}',
    "tool_args": b'{"op": "tool_call", "name": "add", "args": 1, "kwargs": {}}',
    "unknown_op": b'{"op": "ready", "uid": 0, "pid": 1, "missing": {}, "scratch": null}',
    "not_json": b"\xff\xfe not json",
    "not_object": b"[1, 2, 3]",
    "nested": b"[" * 100_000 + b"]" * 100_000,
}


@pytest.mark.parametrize("name", FORGED)
async def test_forged_frames_kill_and_restart_the_worker(name: str) -> None:
    calls: list[str] = []

    async def call_tool(tool: str, args: list[Any], kwargs: dict[str, Any]) -> Any:
        calls.append(tool)
        return 0

    box = PythonSandbox(["os", "json", "struct", "stat"], timeout=30)
    try:
        code = f"{FORGE}\nforge({FORGED[name]!r})\nimport time\ntime.sleep(30)"
        result = await box.run(code, call_tool, tools=["add"])
        assert result.error is not None and result.error.startswith("SandboxProtocolError"), (
            result)
        assert result.restarted and result.output == "" and result.answer is None
        assert calls == []
        assert not box.running
        again = await box.run("21 * 2", call_tool, tools=["add"])  # a fresh worker answers
        assert again.error is None and again.value == 42
    finally:
        await box.close()


async def test_an_oversized_frame_is_refused_before_it_is_read() -> None:
    box = PythonSandbox(["os", "json", "struct", "stat"], timeout=30, max_frame=64 * 1024)
    try:
        code = f"{FORGE}\nos.write(channel(), struct.pack('>I', 2**31))\nimport time\n" \
               "time.sleep(30)"
        result = await box.run(code)
        assert result.error is not None and "over the limit" in result.error
        assert (await box.run("1 + 1")).value == 2
    finally:
        await box.close()


async def test_a_reply_the_worker_never_reads_is_bounded_by_the_run_deadline() -> None:
    async def big(tool: str, args: list[Any], kwargs: dict[str, Any]) -> Any:
        return "x" * (20 * 2**20)

    # start_timeout is long: the write must be bounded by the run's own deadline
    box = PythonSandbox(["os", "json", "struct", "stat", "time"], timeout=3,
                        start_timeout=600)
    try:
        await box.start(["big"])
        code = (f"{FORGE}\nforge(json.dumps({{'op': 'tool_call', 'name': 'big', 'args': [], "
                "'kwargs': {}}).encode())\nimport time\ntime.sleep(3600)")
        result = await asyncio.wait_for(box.run(code, big, tools=["big"]), 120)
        assert result.error is not None and result.error.startswith("TimeoutError")
    finally:
        await box.close()


# -- sizes and nesting -----------------------------------------------------------------------

async def test_values_errors_and_answers_come_back_capped(box: PythonSandbox) -> None:
    big = await box.run("'y' * (30 * 2**20)")
    assert isinstance(big.value, str) and len(big.value) < 21_000
    assert "[truncated: " in big.value
    err = await box.run("raise ValueError('e' * (30 * 2**20))")
    assert err.error is not None and len(err.error) < 21_000 and "[truncated: " in err.error
    answer = await box.run("final_answer(list(range(10**6)))")
    assert answer.final and isinstance(answer.answer, str) and "[truncated: " in answer.answer
    custom = await box.run("class E(Exception):\n    def __str__(self):\n"
                           "        raise RuntimeError('no')\nraise E()")
    assert custom.error is not None and custom.error.startswith("E: <unprintable")
    assert not (big.restarted or err.restarted or answer.restarted or custom.restarted)


async def test_deep_nesting_does_not_kill_the_worker(box: PythonSandbox) -> None:
    await box.run("x = 1")
    deep = "v = []\nfor _ in range(100000):\n    v = [v]\n"
    answer = await box.run(deep + "final_answer(v)")
    assert answer.final and not answer.restarted
    assert isinstance(answer.answer, str) and "nested too deeply" in answer.answer
    value = await box.run(deep + "v")
    assert not value.restarted and "nested too deeply" in str(value.value)
    assert (await box.run("x")).value == 1  # the same worker, variables kept


# -- the kernel filters ------------------------------------------------------------------------

EXEC = ("import os\ntry:\n    os.execv('/bin/sh', ['sh', '-c', 'echo escaped'])\n"
        "except PermissionError as e:\n    print('refused', e.errno)")
WRITE = """import os
total = 0
for i in range(8):
    try:
        fd = os.open(f'/tmp/agentplex-sandbox-probe-{i}', os.O_WRONLY | os.O_CREAT)
        try:
            for _ in range(8):
                total += os.write(fd, b'x' * 2**20)
        finally:
            os.close(fd)
    except OSError as e:
        print('stopped', e.errno)
        break
refused = 0
for path in ('/var/tmp/agentplex-probe', '/dev/shm/agentplex-probe', '/agentplex-probe'):
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT))
    except OSError:
        refused += 1
total, refused
"""


@pytest.mark.parametrize("isolation", ["namespaces", "process"])
async def test_an_escaped_worker_starts_no_program_and_writes_a_bounded_total(
        isolation: str) -> None:
    if isolation == "namespaces":
        probe = PythonSandbox([], isolation="auto")
        await probe.start()
        await probe.close()
        if probe.isolation != "namespaces":
            pytest.skip("Linux namespaces are not available here")
    box = PythonSandbox(["os"], timeout=60, isolation=isolation,  # type: ignore[arg-type]
                        confinement="require", scratch=4 * 2**20)
    try:
        ran = await box.run(EXEC)
        assert ran.error is None and ran.output == "refused 1\n", ran
        wrote = await box.run(WRITE)
        assert wrote.error is None, wrote
        total, refused = wrote.value
        assert refused == 3
        assert total <= 4 * 2**20
        if isolation == "namespaces":
            assert box.scratch_path == "/tmp" and total > 0
        else:
            assert box.scratch_path is None and total == 0
        assert not any(n.startswith("agentplex-sandbox-probe") for n in os.listdir("/tmp"))
    finally:
        await box.close()


def _run_without_filters(confinement: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tests.support.sandbox_without_filters", confinement],
        cwd=ROOT, capture_output=True, text=True, timeout=120)


def test_missing_kernel_filters_are_refused_or_warned_about() -> None:
    """In a process where the kernel answers ENOSYS to seccomp and Landlock, "require"
    refuses to start the worker and "auto" warns, runs, and says what is missing."""
    required = _run_without_filters("require")
    assert required.returncode == 0, required.stderr
    assert "REFUSED" in required.stdout and "seccomp" in required.stdout
    assert "landlock" in required.stdout
    auto = _run_without_filters("auto")
    assert auto.returncode == 0, auto.stderr
    assert "RAN 42" in auto.stdout and "WARNED" in auto.stdout
    assert "MISSING landlock,seccomp" in auto.stdout


def test_the_sandbox_error_is_exported() -> None:
    assert issubclass(SandboxError, Exception)
