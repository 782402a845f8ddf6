"""``cluster.serve(..., engine="llama.cpp")`` against the real llama.cpp server on the
embedded GGUF. Skipped unless ``llama-server`` is on the ``PATH`` or llama-cpp-python's
server imports on the interpreter ``$AGENTPLEX_LLAMA_CPP_PYTHON`` names (or this one);
building it compiles llama.cpp, too slow for the test install."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from agentplex.cluster import init
from agentplex.model import collect

pytestmark = pytest.mark.anyio
pytest.importorskip("openai")


def _llama_cpp_installed() -> bool:
    if shutil.which("llama-server"):
        return True
    python = os.environ.get("AGENTPLEX_LLAMA_CPP_PYTHON") or sys.executable
    try:
        return subprocess.run([python, "-c", "import llama_cpp.server"], capture_output=True,
                              timeout=60).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@pytest.mark.skipif(not _llama_cpp_installed(), reason="llama.cpp's server is not installed")
async def test_llama_cpp_engine_answers_and_streams() -> None:
    local = pytest.importorskip("agentplex.model.local")
    gguf = str(local.embedded_gguf())
    cluster = await init(checkpoint_interval=None)
    try:
        for stream in (False, True):
            name = f"llama-{stream}"
            llm = await cluster.serve(gguf, engine="llama.cpp", stream=stream, name=name,
                                      max_model_len=2048, ready_timeout=300)
            try:
                answer = await collect(await llm(
                    [{"role": "user", "content": "What is the capital of France?"}],
                    max_tokens=16))
                assert answer.text.strip()
                assert answer.usage is not None
                if not stream:  # llama-cpp-python sends no usage in a stream
                    assert answer.usage.output_tokens > 0
            finally:
                await llm.aclose()
                await cluster.unserve(name)
    finally:
        await cluster.close()
