"""``cluster.serve``: engine servers placed by the scheduler, supervised, balanced.

The agentplex engine runs for real (a process per replica); vLLM, SGLang and llama.cpp are
checked by the command lines built for them (they are optional GPU installs).
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import httpx
import pytest

from agentplex.cluster import Resources, init
from agentplex.serving import EngineConfig, engine_command
from tests.support.results import as_response, as_stream

pytestmark = pytest.mark.anyio
pytest.importorskip("openai")
pytest.importorskip("uvicorn")

HI = [{"role": "user", "content": "hi"}]


def config(engine: str, **kw: object) -> EngineConfig:
    return EngineConfig.model_validate({
        "engine": engine, "model": "Qwen/Qwen2.5-7B-Instruct", "served_name": "qwen",
        "port": 8123, "gpus": 2, "gpu_memory_fraction": 0.25, "dtype": "bfloat16",
        "max_model_len": 8192, "api_key": "k", **kw})


def test_vllm_command() -> None:
    cmd = engine_command(config("vllm"))
    assert cmd[1:3] == ["-m", "vllm.entrypoints.openai.api_server"]
    assert cmd[3:] == ["--model", "Qwen/Qwen2.5-7B-Instruct", "--served-model-name", "qwen",
                       "--host", "127.0.0.1", "--port", "8123", "--tensor-parallel-size", "2",
                       "--dtype", "bfloat16", "--max-model-len", "8192",
                       "--gpu-memory-utilization", "0.250", "--api-key", "k"]


def test_sglang_command() -> None:
    cmd = engine_command(config("sglang", extra_args=["--enable-metrics"]))
    assert cmd[1:3] == ["-m", "sglang.launch_server"]
    assert cmd[3:] == ["--model-path", "Qwen/Qwen2.5-7B-Instruct", "--served-model-name",
                       "qwen", "--host", "127.0.0.1", "--port", "8123", "--tp-size", "2",
                       "--dtype", "bfloat16", "--context-length", "8192",
                       "--mem-fraction-static", "0.250", "--api-key", "k",
                       "--enable-metrics"]


def test_llama_cpp_commands() -> None:
    gguf = config("llama.cpp", model="/models/smol.gguf", gpus=0, gpu_memory_fraction=None)
    native = engine_command(gguf, llama_server="/usr/bin/llama-server")
    assert native == ["/usr/bin/llama-server", "--model", "/models/smol.gguf", "--alias",
                      "qwen", "--host", "127.0.0.1", "--port", "8123", "--n-gpu-layers", "0",
                      "--ctx-size", "8192", "--api-key", "k"]
    if not any(Path(p, "llama-server").exists() for p in os.get_exec_path()):
        module = engine_command(gguf)
        assert module[1:3] == ["-m", "llama_cpp.server"]
        assert module[3:] == ["--model", "/models/smol.gguf", "--model_alias", "qwen",
                              "--host", "127.0.0.1", "--port", "8123", "--n_gpu_layers", "0",
                              "--n_ctx", "8192", "--api_key", "k"]


def test_engines_run_on_the_interpreter_named_for_them(monkeypatch: pytest.MonkeyPatch
                                                       ) -> None:
    monkeypatch.setenv("AGENTPLEX_VLLM_PYTHON", "/opt/vllm/bin/python")
    monkeypatch.setenv("AGENTPLEX_LLAMA_CPP_PYTHON", "/opt/llama/bin/python")
    assert engine_command(config("vllm"))[0] == "/opt/vllm/bin/python"
    llama = config("llama.cpp", model="/models/smol.gguf", gpus=0, gpu_memory_fraction=None)
    if not any(Path(p, "llama-server").exists() for p in os.get_exec_path()):
        assert engine_command(llama)[:3] == ["/opt/llama/bin/python", "-m", "llama_cpp.server"]
    assert engine_command(config("sglang"))[0] == sys.executable  # not set: this one
    assert engine_command(config("agentplex"))[0] == sys.executable


def test_agentplex_command() -> None:
    cmd = engine_command(config("agentplex", model="transformers:default", gpus=1,
                                model_options={"max_new_tokens": 64}))
    assert cmd[1:4] == ["-m", "agentplex", "serve"]
    assert cmd[4:] == ["transformers:default", "--host", "127.0.0.1", "--port", "8123",
                       "--served-model-name", "qwen", "--log-level", "warning",
                       "--option", "max_new_tokens=64", "--option", 'torch_dtype="bfloat16"',
                       "--option", 'device_map="cuda"', "--api-key", "k"]


def test_bad_engine_arguments_are_refused() -> None:
    with pytest.raises(ValueError):
        config("tgi")
    with pytest.raises(ValueError):
        config("vllm", gpu_memory_fraction=1.5)


async def requests_per_replica(urls: list[str]) -> list[float]:
    counts = []
    async with httpx.AsyncClient(timeout=10) as http:
        for url in urls:
            text = (await http.get(url.removesuffix("/v1") + "/metrics")).text
            line = next((x for x in text.splitlines()
                         if x.startswith('agentplex_requests_total{model="scripted:hi",'
                                         'status="200"}')), "x 0")
            counts.append(float(line.split()[-1]))
    return counts


def environ_of(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(item.decode().partition("=")[::2] for item in raw if item)


@pytest.mark.timeout(300)
async def test_served_replicas_on_declared_gpus() -> None:
    cluster = await init(gpus=2, gpu_memory="16GiB", checkpoint_interval=None)
    try:
        model = await cluster.serve("scripted:hi", engine="agentplex", replicas=2,
                                    resources=Resources(cpus=0.5, gpus=1, gpu_memory="4GiB"),
                                    ready_timeout=120)
        status = await cluster.served_status()
        replicas = status[0]["replicas"]
        assert [r["state"] for r in replicas] == ["ready", "ready"]
        assert sorted(r["cuda_visible_devices"] for r in replicas) == ["0", "1"]
        assert {r["gpu_memory_fraction"] for r in replicas} == {0.25}
        for r in replicas:  # the engine process itself sees only its GPU
            assert environ_of(r["pid"])["CUDA_VISIBLE_DEVICES"] == r["cuda_visible_devices"]

        for _ in range(6):
            assert as_response(await model(HI)).text == "Hello from hi."
        assert await requests_per_replica(model.urls) == [3.0, 3.0]

        streaming = await cluster.serve("scripted:hi", name="streamed", ready_timeout=120,
                                        resources=Resources(cpus=0.5), stream=True)
        chunks = [c async for c in as_stream(await streaming(HI))]
        assert chunks[-1].is_last and chunks[-1].text == "Hello from hi."
        assert len(chunks) > 2
        await streaming.aclose()
        await cluster.unserve("streamed")

        # crash: the replica's engine comes back on the same port
        crashed = replicas[0]
        os.kill(crashed["pid"], signal.SIGKILL)
        ref = cluster.runtime.ref(crashed["actor"])
        for _ in range(100):
            info = await ref.call({"op": "info"}, timeout=10)
            if info["restarts"] == 1:
                break
            await asyncio.sleep(0.1)
        info = await ref.call({"op": "ready", "timeout": 120}, timeout=150)
        assert info["restarts"] == 1 and info["pid"] != crashed["pid"]
        for _ in range(4):
            assert as_response(await model(HI)).text == "Hello from hi."

        # release: the engines stop and the GPUs are free again
        pids = [info["pid"], replicas[1]["pid"]]
        await model.aclose()
        await cluster.unserve("served-scripted-hi")
        assert await cluster.served_status() == []
        for pid in pids:
            with pytest.raises(ProcessLookupError):
                os.kill(pid, 0)
        assert all(g["share"] == 0 for g in (await cluster.status())[0]["gpus"])
    finally:
        await cluster.close()
