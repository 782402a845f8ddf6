"""A run across three processes yields one trace, with the right parent for every span."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

from tests.support import ROOT

DRIVER = textwrap.dedent('''
    import asyncio, subprocess, sys, signal
    from agentplex import Msg, connect
    from agentplex.tracing import configure_tracing, dispatcher
    from opentelemetry import trace

    async def main(out_dir):
        configure_tracing(file=f"{out_dir}/head.jsonl", batch=False, from_env=False)
        async with connect() as rt:
            head = rt.transport.endpoint
            nodes = [subprocess.Popen([sys.executable, "-m", "tests.support.traced_node", head,
                                       f"node-{role}", role, f"{out_dir}/{role}.jsonl"],
                                      stdout=subprocess.PIPE, text=True)
                     for role in ("relay", "worker")]
            try:
                for node in nodes:  # in a thread: this loop is the bus head they join
                    line = await asyncio.to_thread(node.stdout.readline)
                    assert line.strip() == "ready", line
                with trace.get_tracer("driver").start_as_current_span("driver"):
                    answer = await rt.ref("relay").call(Msg("user", "meaning?", "user"),
                                                        timeout=30)
                print(answer.get_text_content(), flush=True)
            finally:
                for node in nodes:
                    node.send_signal(signal.SIGTERM)
                for node in nodes:
                    await asyncio.to_thread(node.wait, 20)
        dispatcher().shutdown()

    asyncio.run(main(sys.argv[1]))
''')


def test_one_trace_with_correct_parents_across_three_processes(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-c", DRIVER, str(tmp_path)], capture_output=True,
                          text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "relayed: forty-two"
    spans = {}
    for name in ("head", "relay", "worker"):
        for line in (tmp_path / f"{name}.jsonl").read_text().splitlines():
            span = json.loads(line)
            span["process"] = name
            spans[span["span_id"]] = span
    by_name = {s["name"]: s for s in spans.values()}
    assert len({s["trace_id"] for s in spans.values()}) == 1

    def parent(name: str) -> str:
        parent_name: str = spans[by_name[name]["parent_id"]]["name"]
        return parent_name

    chain = [("send relay", "driver"), ("process relay", "send relay"),
             ("invoke_agent relay", "process relay"), ("send worker", "invoke_agent relay"),
             ("process worker", "send worker"), ("invoke_agent worker", "process worker"),
             ("chat oracle", "invoke_agent worker")]
    for child, expected in chain:
        assert parent(child) == expected, (child, parent(child))
    assert by_name["send relay"]["process"] == "head"
    assert by_name["process relay"]["process"] == "relay"
    assert by_name["invoke_agent worker"]["process"] == "worker"
    assert by_name["send relay"]["kind"] == "PRODUCER"
    assert by_name["process worker"]["kind"] == "CONSUMER"
    assert by_name["process worker"]["attributes"]["messaging.system"] == "agentplex"
    assert by_name["process worker"]["attributes"]["messaging.destination.name"] == "worker"
