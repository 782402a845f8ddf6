"""Sorted output in bounded memory: lines that must end up in key order, whatever order
they arrive in, written to disk in sorted chunks and merged when the run ends."""

from __future__ import annotations

import heapq
import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

__all__ = ["SortedSpool", "read_chunks"]

Key = tuple[int, str, int]


class SortedSpool:
    """Collects ``(key, line)`` pairs and writes the lines to ``path`` in key order.

    At most ``chunk`` lines are held in memory: a full buffer is sorted and spilled into a
    chunk file next to ``path``; :meth:`close` merges the chunks (one line of each open at a
    time) into ``path`` and removes them.
    """

    def __init__(self, path: Path, chunk: int = 20_000,
                 on_spill: Callable[[int, list[str]], None] | None = None) -> None:
        if chunk < 1:
            raise ValueError("a spool chunk holds at least one line")
        self.path = path
        self.chunk = chunk
        self.on_spill = on_spill
        """Called with each chunk's index and its lines, in order, as it is spilled (to
        do now what each line will need at :meth:`close`)."""
        self.count = 0
        self._buffer: list[tuple[Key, str]] = []
        self._parts: list[Path] = []

    @property
    def buffered(self) -> int:
        """How many lines are held in memory now."""
        return len(self._buffer)

    def add(self, key: Key, line: str) -> None:
        """Add one line (no newline in it) to come out at ``key``'s place."""
        self._buffer.append((key, line))
        self.count += 1
        if len(self._buffer) >= self.chunk:
            self._spill()

    def spill(self) -> None:
        """Write the lines held in memory to a chunk file now (none: nothing)."""
        if self._buffer:
            self._spill()

    def _spill(self) -> None:
        self._buffer.sort(key=_first)
        if self.on_spill is not None:
            self.on_spill(len(self._parts), [line for _, line in self._buffer])
        part = self.path.with_name(f".{self.path.name}.{len(self._parts):05d}")
        with part.open("w", encoding="utf-8") as out:
            out.writelines(f"{k[0]}\t{json.dumps(k[1])}\t{k[2]}\t{line}\n"
                           for k, line in self._buffer)
        self._parts.append(part)
        self._buffer = []

    def close(self, also: Callable[[str], None] | None = None, *,
              sourced: Callable[[int], None] | None = None) -> None:
        """Write every line, in key order, to ``path`` (and hand each to ``also``; or,
        where the lines come from chunks spilled through ``on_spill`` and ``sourced`` is
        given, hand it each line's chunk index instead)."""
        if self.on_spill is None:
            sourced = None
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        with tmp.open("w", encoding="utf-8") as out:
            if not self._parts:
                self._buffer.sort(key=_first)
                for _, line in self._buffer:
                    out.write(line + "\n")
                    if also is not None:
                        also(line)
            else:
                if self._buffer:
                    self._spill()
                files = [p.open(encoding="utf-8") for p in self._parts]
                try:
                    if sourced is not None:
                        for _, line, index in heapq.merge(
                                *(_read_from(f, i) for i, f in enumerate(files)), key=_first):
                            out.write(line + "\n")
                            sourced(index)
                    else:
                        for _, line in heapq.merge(*(_read(f) for f in files), key=_first):
                            out.write(line + "\n")
                            if also is not None:
                                also(line)
                finally:
                    for f in files:
                        f.close()
        os.replace(tmp, self.path)
        for part in self._parts:
            part.unlink(missing_ok=True)
        self._parts = []
        self._buffer = []


def _first(item: tuple[Key, str] | tuple[Key, str, int]) -> Key:
    return item[0]


def read_chunks(path: Path) -> Iterator[tuple[Key, str]]:
    """The ``(key, line)`` pairs of the chunk files a spool writing to ``path`` left
    (a process that died before :meth:`SortedSpool.close`), in key order."""
    files = [p.open(encoding="utf-8")
             for p in sorted(path.parent.glob(f".{path.name}.[0-9]*"))]
    try:
        yield from heapq.merge(*(_read(f) for f in files), key=_first)
    finally:
        for f in files:
            f.close()


def _read(f: IO[str]) -> Iterator[tuple[Key, str]]:
    for raw in f:
        clock, name, seq, line = raw.rstrip("\n").split("\t", 3)
        yield (int(clock), json.loads(name), int(seq)), line


def _read_from(f: IO[str], index: int) -> Iterator[tuple[Key, str, int]]:
    for key, line in _read(f):
        yield key, line, index
