"""A run's transcript as a table: ``transcript.parquet``, one row per message, written in
row groups as the transcript's lines come out in order (never all in memory), for DuckDB,
pandas or Polars to query without loading the whole run.

The work of reading the lines is done as the run goes: each sorted chunk the transcript
spills to disk is converted then (an Arrow file beside it), so that the run's end only
interleaves rows already converted, in the order the chunks merge in.

Columns: ``round`` (null outside rounds), ``clock`` (the Lamport clock), ``name``,
``role``, ``text`` (the message's text: its content when that is a string, else its text
blocks joined), ``content`` (the content blocks as JSON text; null when the content is a
plain string, which ``text`` holds) and ``metadata`` (JSON text, null when empty).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["TRANSCRIPT_TABLE", "TranscriptTable", "transcript_rows"]

TRANSCRIPT_TABLE = "transcript.parquet"
ROW_GROUP = 20_000
"""Messages per row group (and the most held in memory)."""
_dump = json.JSONEncoder(ensure_ascii=False).encode


def _schema() -> Any:
    import pyarrow as pa

    return pa.schema([("round", pa.int64()), ("clock", pa.int64()), ("name", pa.string()),
                      ("role", pa.string()), ("text", pa.string()), ("content", pa.string()),
                      ("metadata", pa.string())])


def transcript_rows(lines: Sequence[str]) -> Any:
    """Transcript lines (the JSON text of ``transcript.jsonl``) as an Arrow table of the
    transcript's columns, parsed in one go."""
    import pyarrow as pa

    entries = json.loads("[" + ",".join(lines) + "]")
    texts: list[str] = []
    blocks: list[str | None] = []
    for entry in entries:
        content = entry.get("content")
        if isinstance(content, str):
            texts.append(content)
            blocks.append(None)
        else:
            parts = content if isinstance(content, list) else []
            texts.append("".join(str(b.get("text", "")) for b in parts
                                 if isinstance(b, dict) and b.get("type") == "text"))
            blocks.append(_dump(content))
    columns = ([e.get("round") for e in entries], [e.get("clock") for e in entries],
               [e.get("name") for e in entries], [e.get("role") for e in entries],
               texts, blocks,
               [_dump(m) if (m := e.get("metadata")) else None for e in entries])
    schema = _schema()
    return pa.Table.from_arrays(
        [pa.array(c, f.type) for c, f in zip(columns, schema, strict=True)], schema=schema)


class TranscriptTable:
    """Writes transcript lines to a Parquet file, a row group per ``row_group`` rows; the
    file appears whole at :meth:`close`.

    Rows come either as lines (:meth:`add`), or from pieces converted ahead of time
    (:meth:`add_piece`, as the transcript spills a sorted chunk) and then named in their
    final order (:meth:`take_from`: the next row is the next one of that piece).
    """

    def __init__(self, path: Path, row_group: int = ROW_GROUP) -> None:
        self.path = path
        self.row_group = max(1, row_group)
        self.rows = 0
        self._tmp = path.with_name(f".{path.name}.tmp")
        self._writer: Any = None
        self._lines: list[str] = []
        self._order: list[int] = []
        self._pieces: dict[int, Any] = {}
        self._taken: dict[int, int] = {}

    def add(self, line: str) -> None:
        """One transcript line (parsed with the rest of its row group, in one go)."""
        self._lines.append(line)
        self.rows += 1
        if len(self._lines) >= self.row_group:
            self._flush()

    def add_piece(self, index: int, lines: Sequence[str]) -> None:
        """Convert piece ``index`` (lines in the order they will be taken) now, into an
        Arrow file beside the table."""
        import pyarrow as pa

        rows = transcript_rows(lines)
        with pa.OSFile(str(self._piece(index)), "wb") as sink, \
                pa.ipc.new_file(sink, rows.schema) as out:
            out.write_table(rows)

    def take_from(self, index: int) -> None:
        """The table's next row is the next row of piece ``index``."""
        self._order.append(index)
        self.rows += 1
        if len(self._order) >= self.row_group:
            self._flush_order()

    def _piece(self, index: int) -> Path:
        return self.path.with_name(f".{self.path.name}.{index:05d}.arrow")

    def _write(self, rows: Any) -> None:
        import pyarrow.parquet as pq

        if self._writer is None:
            self._writer = pq.ParquetWriter(self._tmp, _schema(), compression="zstd")
        self._writer.write_table(rows)

    def _flush(self) -> None:
        if self._lines:
            self._write(transcript_rows(self._lines))
            self._lines = []

    def _flush_order(self) -> None:
        """The rows named so far, gathered from their pieces: each piece gives a run of
        consecutive rows, interleaved by one ``take``."""
        import pyarrow as pa

        if not self._order:
            return
        counts: dict[int, int] = {}
        for index in self._order:
            counts[index] = counts.get(index, 0) + 1
        slices, start = [], {}
        offset = 0
        for index, n in counts.items():
            piece = self._pieces.get(index)
            if piece is None:
                piece = self._pieces[index] = pa.ipc.open_file(
                    pa.memory_map(str(self._piece(index)))).read_all()
            first = self._taken.get(index, 0)
            slices.append(piece.slice(first, n))
            self._taken[index] = first + n
            start[index] = offset
            offset += n
        at = []
        for index in self._order:
            at.append(start[index])
            start[index] += 1
        self._order = []
        self._write(pa.concat_tables(slices).combine_chunks().take(pa.array(at)))

    def close(self) -> None:
        """Write what is held and put the file in place."""
        self._flush()
        self._flush_order()
        if self._writer is None:
            self._write(_schema().empty_table())
        self._writer.close()
        os.replace(self._tmp, self.path)
        self._drop_pieces()

    def abort(self) -> None:
        """Drop the file being written."""
        if self._writer is not None:
            self._writer.close()
        self._tmp.unlink(missing_ok=True)
        self._drop_pieces()

    def _drop_pieces(self) -> None:
        self._pieces = {}
        for path in self.path.parent.glob(f".{self.path.name}.*.arrow"):
            path.unlink(missing_ok=True)
