"""The ``agentplex serve`` command, as a real process answering the openai SDK."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.anyio

openai = pytest.importorskip("openai")


@pytest.fixture
def cli_server() -> Iterator[tuple[str, subprocess.Popen[str]]]:
    src = Path(__file__).resolve().parents[2] / "src"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(src), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen(
        [sys.executable, "-m", "agentplex", "serve", "scripted:hello", "--port", "0",
         "--api-key", "k", "--log-level", "warning"],
        stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()  # the process prints its URL once it listens
        found = re.search(r"at (http://\S+)", line)
        assert found, f"unexpected first line {line!r}"
        yield found.group(1), proc
    finally:
        proc.terminate()
        proc.wait(10)


async def test_the_serve_command(cli_server: tuple[str, subprocess.Popen[str]]) -> None:
    url, proc = cli_server
    async with openai.AsyncOpenAI(base_url=url, api_key="k", max_retries=0) as c:
        got = await c.chat.completions.create(
            model="scripted:hello", messages=[{"role": "user", "content": "hi"}])
        assert got.choices[0].message.content == "Hello from hello."
    proc.terminate()
    assert proc.wait(10) == 0
