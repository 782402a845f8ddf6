"""Head-based sampling across real processes: the root decides, every process follows.

A driver traces a share of its calls; each call crosses two node processes (relay, then
worker, then a model). Whatever the nodes' own sampler says, every trace the driver kept
is complete in all three processes, and the traces it dropped leave no span anywhere.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections import defaultdict
from pathlib import Path
from typing import Any

from tests.support import ROOT

CALLS = 60
RATIO = 0.3

DRIVER = textwrap.dedent('''
    import asyncio, subprocess, sys, signal
    from agentplex import Msg, connect
    from agentplex.tracing import configure_tracing, dispatcher

    async def main(out_dir, calls, ratio):
        configure_tracing(file=f"{out_dir}/head.jsonl", from_env=False, sampling=float(ratio))
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
                for i in range(int(calls)):
                    answer = await rt.ref("relay").call(Msg("user", f"q{i}", "user"),
                                                        timeout=30)
                    assert answer.get_text_content() == "relayed: forty-two"
                print("done", flush=True)
            finally:
                for node in nodes:
                    node.send_signal(signal.SIGTERM)
                for node in nodes:
                    await asyncio.to_thread(node.wait, 20)
        dispatcher().shutdown()

    asyncio.run(main(*sys.argv[1:4]))
''')

CHAIN = [("process relay", "send relay"), ("invoke_agent relay", "process relay"),
         ("send worker", "invoke_agent relay"), ("process worker", "send worker"),
         ("invoke_agent worker", "process worker"), ("chat oracle", "invoke_agent worker")]


def test_sampled_traces_are_whole_across_processes(tmp_path: Path) -> None:
    # The nodes' own sampler would keep a different half of traces: parent-based, it must
    # follow the sampled flag the driver's trace context carries instead.
    env = {**os.environ, "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
           "OTEL_TRACES_SAMPLER_ARG": "0.5"}
    proc = subprocess.run([sys.executable, "-c", DRIVER, str(tmp_path), str(CALLS), str(RATIO)],
                          capture_output=True, text=True, timeout=180, env=env, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "done"
    traces: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)
    processes: dict[str, set[str]] = defaultdict(set)
    for name in ("head", "relay", "worker"):
        for line in (tmp_path / f"{name}.jsonl").read_text().splitlines():
            span = json.loads(line)
            traces[span["trace_id"]][span["span_id"]] = span
            processes[span["trace_id"]].add(name)
    roots = {tid for tid, spans in traces.items()
             if any(s["name"] == "send relay" and s["parent_id"] is None
                    for s in spans.values())}
    # some kept, some dropped (0.3 of 60: all or none would be a 1e-9 chance)
    assert 0 < len(roots) < CALLS
    # nothing outside a kept trace: a dropped root left no span in any process
    assert set(traces) == roots
    bound = round(RATIO * 2**64)
    for tid, spans in traces.items():
        assert int(tid, 16) & (2**64 - 1) < bound  # the root's decision, by its trace id
        assert processes[tid] == {"head", "relay", "worker"}
        by_name = {s["name"]: s for s in spans.values()}
        assert len(by_name) == len(spans) == 7, sorted(by_name)
        for span in spans.values():  # complete: every parent is there
            assert span["parent_id"] is None or span["parent_id"] in spans
        for child, parent in CHAIN:
            assert spans[by_name[child]["parent_id"]]["name"] == parent, (child, parent)
