"""CodeAgent: model-written code runs in a sandbox process; escapes fail and it keeps working."""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
import pytest

from agentplex.agent import CodeAgent, PythonSandbox
from agentplex.message import Msg
from agentplex.model import ScriptedChatModel
from agentplex.tool import AgentImage, Toolkit

pytestmark = pytest.mark.anyio

SECRET = "agentplex-test-secret-4f1c"


def add(a: int, b: int) -> int:
    """Add two numbers.

    Args:
        a: the first number.
        b: the second number.
    """
    return a + b


def weather(city: str) -> dict[str, Any]:
    """The weather in a city.

    Args:
        city: the city.
    """
    return {"city": city, "temp": 21}


def fail(reason: str) -> str:
    """Always fails.

    Args:
        reason: why.
    """
    raise ValueError(f"failed because {reason}")


def picture() -> AgentImage:
    """Draw a picture."""
    return AgentImage(np.full((2, 2, 3), 200, dtype=np.uint8))


def code(body: str) -> str:
    return f"Thought: next step.\n```py\n{body}\n```"


def observations(agent: CodeAgent, memory: list[Msg]) -> list[str]:
    return [m.get_text_content() or "" for m in memory if m.name == "sandbox"]


@pytest.fixture
async def sandbox() -> AsyncIterator[PythonSandbox]:
    box = PythonSandbox(timeout=20)
    yield box
    await box.close()


async def test_tools_are_called_from_code_and_the_answer_returns(sandbox: PythonSandbox) -> None:
    model = ScriptedChatModel([
        code("x = add(2, 3)\nw = weather(city='Paris')\nprint('x =', x, w['temp'])"),
        code("final_answer({'sum': x, 'temp': w['temp']})"),
    ])
    agent = CodeAgent(model, [add, weather], sandbox=sandbox)
    agent.set_console_output_enabled(False)
    assert await agent.run("add and look up") == {"sum": 5, "temp": 21}
    memory = await agent.memory.get_memory()
    assert observations(agent, memory) == ["Observation:\nx = 5 21\n"]
    prompt = model.calls[0]["messages"][0].get_text_content()
    assert "def add(a: int, b: int):" in prompt and "the first number." in prompt
    assert "def weather(city: str):" in prompt


async def test_chat_keeps_variables_and_run_starts_afresh(sandbox: PythonSandbox) -> None:
    model = ScriptedChatModel([
        code("total = add(1, 1)\nfinal_answer(total)"),
        code("final_answer(total + n)"),
        code("final_answer('total' in dir())"),
    ])
    agent = CodeAgent(model, [add], sandbox=sandbox)
    agent.set_console_output_enabled(False)
    assert await agent.chat("start") == 2
    assert await agent.chat("add n", n=40) == 42  # variables from earlier and from kwargs
    assert await agent.run("fresh?") is False
    assert await agent.memory.size() == 3  # the task, the code, the final answer


async def test_return_code_does_not_run_it(sandbox: PythonSandbox) -> None:
    model = ScriptedChatModel([code("final_answer(add(1, 2))")])
    agent = CodeAgent(model, [add], sandbox=sandbox)
    agent.set_console_output_enabled(False)
    assert await agent.run("sum", return_code=True) == "final_answer(add(1, 2))"
    assert not sandbox.running


async def test_tool_errors_and_bad_answers_reach_the_model(sandbox: PythonSandbox) -> None:
    model = ScriptedChatModel([
        "I think the answer is 4.",  # no code block
        code("fail('it rains')"),
        code("add(1, 2, 3)"),
        code("nope(1)"),
        code("final_answer(add(2, 2))"),
    ])
    agent = CodeAgent(model, [add, fail], sandbox=sandbox)
    agent.set_console_output_enabled(False)
    assert await agent.run("try") == 4
    seen = observations(agent, await agent.memory.get_memory())
    assert "no code block found" in seen[0]
    assert "ValueError: failed because it rains" in seen[1]
    assert "add() takes 2 arguments, 3 given" in seen[2]
    assert "NameError: name 'nope' is not defined" in seen[3]


async def test_media_from_tools_reaches_the_model_and_the_answer(sandbox: PythonSandbox) -> None:
    model = ScriptedChatModel([code("img = picture()\nfinal_answer(f'here it is: {img}')")])
    agent = CodeAgent(model, [picture], sandbox=sandbox)
    agent.set_console_output_enabled(False)
    reply = await agent(Msg("user", "draw", "user"))
    assert reply.get_text_content() == "here it is: <image media-1>"
    assert [b.type for b in reply.get_content_blocks()] == ["text", "image"]
    shown = [m for m in await agent.memory.get_memory() if m.has_content_blocks("image")]
    assert shown and shown[0].name == "sandbox"  # a multimodal model sees the picture


async def test_import_and_attribute_escapes_are_refused(sandbox: PythonSandbox) -> None:
    attempts = [
        "import os",
        "import subprocess",
        "import socket",
        "from importlib import import_module",
        "().__class__.__base__.__subclasses__()",
        "getattr((), '__cla' + 'ss__')",
        "import random\nrandom._os.environ",
        "'{0.__globals__}'.format(add)",
        "str.format('{0.__globals__}', add)",
        "open('/etc/hostname').read()",
        "eval('1+1')",
        "import statistics\nstatistics.sys",
        "(lambda: (yield))().gi_frame.f_back",
    ]
    model = ScriptedChatModel([*(code(a) for a in attempts), code("final_answer('still here')")])
    agent = CodeAgent(model, [add], sandbox=sandbox, max_steps=len(attempts) + 1)
    agent.set_console_output_enabled(False)
    assert await agent.run("escape") == "still here"
    seen = observations(agent, await agent.memory.get_memory())
    assert len(seen) == len(attempts)
    for attempt, text in zip(attempts, seen, strict=True):
        assert "Error:" in text, (attempt, text)
        assert "restarted" not in text, (attempt, text)  # refused, not crashed
    assert "import of 'os' is not allowed" in seen[0]
    assert "import of 'subprocess' is not allowed" in seen[1]
    assert "import of 'socket' is not allowed" in seen[2]
    assert "'__subclasses__' is not allowed" in seen[4]
    assert "NameError: name 'open' is not defined" in seen[9]
    assert "the module 'sys' is not allowed" in seen[11]


async def test_environment_secrets_do_not_reach_the_code(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENTPLEX_SECRET", SECRET)
    box = PythonSandbox(["os", "glob"], timeout=20)  # even with os allowed
    try:
        result = await box.run("import os\nprint(dict(os.environ))\nprint(os.getuid())")
        assert result.error is None and SECRET not in result.output
        probe = ("import os, glob\nfound = []\n"
                 "for path in glob.glob('/proc/*/environ'):\n"
                 "    try:\n"
                 "        fd = os.open(path, os.O_RDONLY)\n"
                 "        found.append(os.read(fd, 1 << 20))\n"
                 "    except OSError:\n"
                 "        pass\n"
                 f"print(any(b'{SECRET}' in data for data in found))")
        result = await box.run(probe)
        if box.isolation == "process" and os.geteuid() != 0:
            pytest.skip("without namespaces or root the worker can read its parent's /proc")
        assert result.error is None and result.output == "False\n"
    finally:
        await box.close()


async def test_runaway_code_is_stopped_and_the_agent_goes_on() -> None:
    box = PythonSandbox(["os", "ctypes", "sys"], timeout=4, memory=256 * 2**20)
    steps = [
        "while True:\n    pass",
        "blob = bytearray(1 << 30)",
        "hog = []\nwhile True:\n    hog.append(bytearray(1 << 20))",
        "import sys\nsys.exit(3)",
        "import os\nos.abort()",
        "import ctypes\nctypes.string_at(0)",
        "import os\nos.fork()",
        "import os\nos.kill(os.getpid(), 9)",
    ]
    model = ScriptedChatModel([*(code(s) for s in steps), code("final_answer('alive')")])
    agent = CodeAgent(model, [add], sandbox=box, max_steps=len(steps) + 1)
    agent.set_console_output_enabled(False)
    try:
        assert await agent.run("misbehave") == "alive"
    finally:
        await box.close()
    seen = observations(agent, await agent.memory.get_memory())
    assert "TimeoutError: the code ran longer than 4s" in seen[0]
    assert "MemoryError" in seen[1] and "MemoryError" in seen[2]
    assert "SystemExit: the code tried to exit (3)" in seen[3]
    assert "killed by SIGABRT" in seen[4] and "restarted" in seen[4]
    assert "killed by SIGSEGV" in seen[5]
    assert "BlockingIOError" in seen[6] or "PermissionError" in seen[6]
    assert "killed by SIGKILL" in seen[7]


async def test_the_worker_has_no_network_when_namespaces_are_available() -> None:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    port = server.getsockname()[1]
    box = PythonSandbox(["socket"], timeout=10)
    try:
        result = await box.run(f"import socket\ns = socket.socket()\n"
                               f"s.settimeout(2)\ns.connect(('127.0.0.1', {port}))")
        if box.isolation != "namespaces":
            pytest.skip("Linux namespaces are not available here")
        assert result.error is not None
        assert "Network is unreachable" in result.error or "Refused" in result.error
        server.setblocking(False)
        with pytest.raises(BlockingIOError):
            server.accept()  # nothing got through to this process's loopback
    finally:
        server.close()
        await box.close()


async def test_the_sandbox_serves_one_run_at_a_time(sandbox: PythonSandbox) -> None:
    async def slow_add(name: str, args: list[Any], kwargs: dict[str, Any]) -> int:
        await asyncio.sleep(0.05)
        return int(args[0]) + int(args[1])

    results = await asyncio.gather(*(sandbox.run(f"print(add({i}, 1))", slow_add, ["add"])
                                     for i in range(5)))
    assert [r.output for r in results] == [f"{i + 1}\n" for i in range(5)]


async def test_a_toolkit_can_be_shared(sandbox: PythonSandbox) -> None:
    toolkit = Toolkit()
    toolkit.register_tool_function(add, preset_kwargs={"b": 100})
    model = ScriptedChatModel([code("final_answer(add(1))")])
    agent = CodeAgent(model, toolkit, sandbox=sandbox)
    agent.set_console_output_enabled(False)
    assert await agent.run("preset") == 101
    assert "def add(a: int):" in model.calls[0]["messages"][0].get_text_content()


async def test_a_run_cancelled_during_a_tool_call_leaves_a_working_sandbox(
        sandbox: PythonSandbox) -> None:
    started = asyncio.Event()

    async def stuck(name: str, args: list[Any], kwargs: dict[str, Any]) -> int:
        started.set()
        await asyncio.sleep(3600)
        return 0

    run = asyncio.ensure_future(sandbox.run("add(1, 2)", stuck, ["add"]))
    await asyncio.wait_for(started.wait(), 20)
    run.cancel()
    with pytest.raises(asyncio.CancelledError):
        await run
    assert not sandbox.running
    result = await sandbox.run("print(add(1, 2))", lambda n, a, k: _sum(a), ["add"])
    assert result.output == "3\n" and result.error is None


async def _sum(args: list[Any]) -> int:
    return int(sum(args))


async def test_a_streaming_model_writes_the_code(sandbox: PythonSandbox) -> None:
    model = ScriptedChatModel([code("final_answer(add(20, 22))")], stream=True)
    agent = CodeAgent(model, [add], sandbox=sandbox)
    agent.set_console_output_enabled(False)
    assert await agent.run("sum") == 42
