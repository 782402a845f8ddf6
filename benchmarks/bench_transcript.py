"""The end of a run with a long transcript: ``transcript.jsonl`` merged from its sorted
chunks and ``transcript.parquet`` written beside it.

N transcript lines (a scripted game's answers: three rounds, keys out of order as node
journals deliver them) go through the transcript's spool and table as a run does, in two
modes, alternating, best of ``--repeat``:

- ``as-spilled`` (what runs do): each sorted chunk is converted to the table's columns
  as it spills during the run; the end merges the chunks and interleaves rows already
  converted;
- ``at-end`` (the baseline, how runs did it before): every line is parsed and converted
  at the end, as the merge hands it over;
- ``jsonl-only`` (the floor): no table, the merge alone.

Figures: ``transcript_end`` (CPU seconds of the end), ``transcript_total`` (CPU seconds
of adding the lines and the end), each with ``x`` = the mode against ``at-end``.

    python benchmarks/bench_transcript.py [--messages 300000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import tempfile
import time
from pathlib import Path

from _benchlib import emit
from agentplex.tracing.lowlevel import SortedSpool, TranscriptTable


def _lines(n: int) -> list[tuple[tuple[int, str, int], str]]:
    rng = random.Random(1)
    out = []
    for i in range(n):
        number = i * 3 // n + 1
        name = f"player-{i % 100_000}"
        out.append(((number * 10**9 + i, name, 0), json.dumps(
            {"clock": i, "content": str(rng.randint(0, 100)), "id": f"{i:032x}",
             "metadata": {"guess": i % 100}, "name": name, "role": "assistant",
             "round": number, "timestamp": "2026-12-07 10:00:00.000"}, sort_keys=True)))
    rng.shuffle(out)
    return out


def _once(mode: str, lines: list[tuple[tuple[int, str, int], str]], folder: Path
          ) -> tuple[float, float]:
    table = TranscriptTable(folder / "transcript.parquet")
    spool = SortedSpool(folder / "transcript.jsonl",
                        on_spill=table.add_piece if mode == "as-spilled" else None)
    began = time.process_time()
    for key, line in lines:
        spool.add(key, line)
    ending = time.process_time()
    if mode == "jsonl-only":
        spool.close()
    else:
        spool.close(table.add, sourced=table.take_from if mode == "as-spilled" else None)
        table.close()
    ended = time.process_time()
    return ended - ending, ended - began


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--messages", type=int, default=300_000)
    p.add_argument("--repeat", type=int, default=3)
    args = p.parse_args()
    lines = _lines(args.messages)
    best: dict[str, tuple[float, float]] = {}
    for _ in range(args.repeat):
        for mode in ("at-end", "as-spilled", "jsonl-only"):
            folder = Path(tempfile.mkdtemp(prefix="bench-transcript-"))
            try:
                end, total = _once(mode, lines, folder)
            finally:
                shutil.rmtree(folder, ignore_errors=True)
            old = best.get(mode)
            best[mode] = (min(end, old[0]), min(total, old[1])) if old else (end, total)
    base = best["at-end"]
    for mode, (end, total) in best.items():
        emit("transcript_end", mode, args.messages, end, "s", x=round(end / base[0], 3))
        emit("transcript_total", mode, args.messages, total, "s",
             x=round(total / base[1], 3))


if __name__ == "__main__":
    main()
