"""Write a synthetic run folder of any size, in the formats a real run writes.

    python benchmarks/make_run_folder.py OUT_DIR --agents 100000 --nodes 4 --rounds 3

The folder holds ``manifest.json``, ``trace.jsonl`` and ``transcript.jsonl`` (and, with
``--recording``, ``recording.jsonl``) shaped as a simulation on node processes leaves them:
per round a driver span ``round R`` (attribute ``agentplex.sim.round``, as a scenario run
writes it), one ``send`` span per node from the driver (its node id ``head``), and on each
node one ``process`` span whose children are the node's agents' ``invoke_agent`` spans
(their ids counted per node, as a node process counts them), each with one ``chat`` span
(tokens); transcript lines carry their ``round``. Spans are written in the order a real
run writes them (a span when it ends: children before their parents). Latencies are
lognormal, about one reply in 1,000 fails; a tenth of the agents are ``Pundit``s on a
second model.
The manifest has the totals a run's cost ledger writes (per model, round and agent class)
and lists the nodes' CPU seconds under ``nodes``. Stdlib only, seeded.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
from pathlib import Path
from typing import Any

__all__ = ["write_run_folder"]

_T0 = 1_796_600_000_000_000_000


def _span(name: str, trace_id: str, span_id: str, parent: str | None, kind: str, start: int,
          end: int, attrs: dict[str, object], status: str = "UNSET") -> str:
    return json.dumps({"name": name, "trace_id": trace_id, "span_id": span_id,
                       "parent_id": parent, "kind": kind, "start": start, "end": end,
                       "status": status, "attributes": attrs, "service": "agentplex"}) + "\n"


def _usage(**key: object) -> dict[str, Any]:
    """One row of the manifest's usage breakdowns (``by_model``, ``by_round``, ...)."""
    return {**key, "calls": 0, "input_tokens": 0, "output_tokens": 0, "cached_tokens": 0,
            "cache_creation_tokens": 0, "cpu_s": 0.0, "gpu_s": 0.0, "cost_usd": None,
            "unpriced_calls": 0}


def write_run_folder(out: str | Path, *, agents: int = 1000, nodes: int = 4, rounds: int = 3,
                     seed: int = 0, recording: bool = False, failure_rate: float = 0.001
                     ) -> Path:
    """Write a synthetic run folder into ``out`` (created) and return its path."""
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    ids = iter(range(1, 1 << 62))

    def sid() -> str:
        return f"{next(ids) * 0x9E3779B97F4A7C15 % (1 << 64):016x}"

    trace_id = f"{rng.getrandbits(128):032x}"
    run_span = sid()
    run_id = f"20261207-000000-synthetic-{seed:06x}"
    now = _T0 + 10_000_000
    totals: dict[str, Any] = {"model_calls": 0, "input_tokens": 0, "output_tokens": 0,
                              "tool_calls": 0, "messages": 0}
    cpu = [0.0] * nodes
    by_round: dict[int, dict[str, Any]] = {}
    by_model = {False: _usage(provider="scripted", model="scripted-players"),
                True: _usage(provider="transformers", model="SmolLM2-135M-Instruct")}
    by_class = {False: _usage(agent_class="Voter"), True: _usage(agent_class="Pundit")}
    clock = 0
    with contextlib.ExitStack() as files:
        trace = files.enter_context((folder / "trace.jsonl").open("w"))
        transcript = files.enter_context((folder / "transcript.jsonl").open("w"))
        record = (files.enter_context((folder / "recording.jsonl").open("w")) if recording
                  else None)
        for r in range(1, rounds + 1):
            round_span, round_start = sid(), now
            clock += 1
            transcript.write(json.dumps({"clock": clock, "content": f"Round {r}: your move.",
                                         "metadata": None, "name": "host", "role": "user",
                                         "round": r}, sort_keys=True) + "\n")
            totals["messages"] += 1
            clock += 1
            round_end = now
            for n in range(nodes):
                node = f"node-{n + 1}"
                send, process = sid(), sid()
                t = now + 200_000
                trace.write(_span(f"send {node}", trace_id, send, round_span, "PRODUCER",
                                  now, now + 50_000,
                                  {"messaging.system": "agentplex",
                                   "messaging.operation.type": "send",
                                   "messaging.destination.name": node,
                                   "agentplex.node": "head"}))
                trace.write(_span("process call_many", trace_id, process, send, "CONSUMER", t,
                                  t + 20_000, {"messaging.system": "agentplex",
                                               "messaging.operation.type": "process",
                                               "messaging.destination.name": "call_many",
                                               "agentplex.node": node}))
                for i in range(n, agents, nodes):
                    pundit = i % 10 == 9
                    name = f"Pundit{i + 1}" if pundit else f"Voter{i + 1}"
                    model = "SmolLM2-135M-Instruct" if pundit else "scripted-players"
                    provider = "transformers" if pundit else "scripted"
                    start = t + rng.randrange(0, 2_000_000_000)  # the node works 2 s a round
                    chat_ns = int(rng.lognormvariate(13.0 if pundit else 11.5, 0.6))
                    invoke, chat = sid(), sid()
                    tin, tout = rng.randrange(60, 140), rng.randrange(2, 40 if pundit else 4)
                    failed = rng.random() < failure_rate
                    end = start + chat_ns + rng.randrange(20_000, 80_000)
                    cpu[n] += (end - start) / 1e9 * 0.3
                    trace.write(_span(
                        f"chat {model}", trace_id, chat, invoke, "CLIENT", start + 10_000,
                        start + 10_000 + chat_ns,
                        {"gen_ai.operation.name": "chat", "gen_ai.provider.name": provider,
                         "gen_ai.request.model": model, "gen_ai.request.temperature": 0.8,
                         "gen_ai.response.id": f"{model}-{i}-{r}",
                         "gen_ai.response.finish_reasons": ["stop"],
                         "gen_ai.usage.input_tokens": tin, "gen_ai.usage.output_tokens": tout},
                        "ERROR" if failed else "UNSET"))
                    trace.write(_span(
                        f"invoke_agent {name}", trace_id, invoke, process, "INTERNAL", start,
                        end, {"gen_ai.operation.name": "invoke_agent",
                              "gen_ai.agent.name": name,
                              "gen_ai.agent.id": f"player-{i // nodes + 1}"},
                        "ERROR" if failed else "UNSET"))
                    for row in (totals, by_round.setdefault(r, _usage(round=r)),
                                by_model[pundit], by_class[pundit]):
                        row["calls" if row is not totals else "model_calls"] += 1
                        row["input_tokens"] += tin
                        row["output_tokens"] += tout
                    round_end = max(round_end, end)
                    if not failed:
                        guess = rng.randrange(0, 101)
                        transcript.write(json.dumps(
                            {"clock": clock, "content": f"I guess {guess}.",
                             "metadata": {"guess": guess}, "name": name, "role": "assistant",
                             "round": r}, sort_keys=True) + "\n")
                        totals["messages"] += 1
                    if record is not None:
                        record.write(json.dumps({"agent": name, "key": f"{i:016x}{r:08x}",
                                                 "response": {"content": [
                                                     {"type": "text", "text": "I guess 1."}]}})
                                     + "\n")
            now = round_end + 1_000_000
            trace.write(_span(f"round {r}", trace_id, round_span, run_span, "INTERNAL",
                              round_start, now, {"agentplex.sim.round": r}))
        trace.write(_span("run synthetic", trace_id, run_span, None, "INTERNAL", _T0, now,
                          {"agentplex.run.id": run_id, "agentplex.run.name": "synthetic",
                           "agentplex.run.seed": seed, "agentplex.run.sampling": 1.0}))
    for row in [*by_round.values(), *by_model.values(), *by_class.values()]:
        row["unpriced_calls"] = row["calls"]
    manifest = {
        "run_id": run_id, "name": "synthetic", "started_at": "2026-12-07T00:00:00+00:00",
        "ended_at": "2026-12-07T00:00:00+00:00", "duration_s": round((now - _T0) / 1e9, 2),
        "config": {"agents": agents, "nodes": nodes, "rounds": rounds}, "seed": seed,
        "sampling": 1.0, "trace_id": trace_id, "status": "completed",
        "models": [{"provider": "scripted", "model": "scripted-players"},
                   {"provider": "transformers", "model": "SmolLM2-135M-Instruct"}],
        "totals": {**totals, "cached_tokens": 0, "cache_creation_tokens": 0, "cpu_s": 0.0,
                   "gpu_s": 0.0, "cost_usd": None, "unpriced_calls": totals["model_calls"],
                   "by_model": list(by_model.values()), "by_round": list(by_round.values()),
                   "by_agent_class": list(by_class.values())},
        "nodes": [{"node": f"node-{n + 1}", "cpu_s": round(c, 2)} for n, c in enumerate(cpu)],
    }
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out")
    parser.add_argument("--agents", type=int, default=100_000)
    parser.add_argument("--nodes", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--recording", action="store_true")
    args = parser.parse_args()
    print(write_run_folder(args.out, agents=args.agents, nodes=args.nodes, rounds=args.rounds,
                           seed=args.seed, recording=args.recording))


if __name__ == "__main__":
    main()
