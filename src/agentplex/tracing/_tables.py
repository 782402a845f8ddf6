"""A run's transcript as a table: ``transcript.parquet``, one row per message, written in
row groups as the transcript's lines come out in order (never all in memory), for DuckDB,
pandas or Polars to query without loading the whole run.

Columns: ``round`` (null outside rounds), ``clock`` (the Lamport clock), ``name``,
``role``, ``text`` (the message's text: its content when that is a string, else its text
blocks joined), ``content`` (the content blocks as JSON text; null when the content is a
plain string, which ``text`` holds) and ``metadata`` (JSON text, null when empty).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

__all__ = ["TRANSCRIPT_TABLE", "TranscriptTable"]

TRANSCRIPT_TABLE = "transcript.parquet"
ROW_GROUP = 20_000
"""Messages per row group (and the most held in memory)."""


def _schema() -> Any:
    import pyarrow as pa

    return pa.schema([("round", pa.int64()), ("clock", pa.int64()), ("name", pa.string()),
                      ("role", pa.string()), ("text", pa.string()), ("content", pa.string()),
                      ("metadata", pa.string())])


class TranscriptTable:
    """Writes transcript lines (the JSON text of ``transcript.jsonl``) to a Parquet file,
    a row group per ``row_group`` lines; the file appears whole at :meth:`close`."""

    def __init__(self, path: Path, row_group: int = ROW_GROUP) -> None:
        import pyarrow.parquet as pq

        self.path = path
        self.row_group = max(1, row_group)
        self.rows = 0
        self._tmp = path.with_name(f".{path.name}.tmp")
        self._schema = _schema()
        self._writer = pq.ParquetWriter(self._tmp, self._schema, compression="zstd")
        self._columns: list[list[Any]] = [[] for _ in self._schema.names]

    def add(self, line: str) -> None:
        """One transcript line."""
        entry = json.loads(line)
        content = entry.get("content")
        if isinstance(content, str):
            text, blocks = content, None
        else:
            parts = content if isinstance(content, list) else []
            text = "".join(str(b.get("text", "")) for b in parts
                           if isinstance(b, dict) and b.get("type") == "text")
            blocks = json.dumps(content, ensure_ascii=False)
        metadata = entry.get("metadata")
        values = (entry.get("round"), entry.get("clock"), entry.get("name"),
                  entry.get("role"), text, blocks,
                  json.dumps(metadata, ensure_ascii=False) if metadata else None)
        for column, value in zip(self._columns, values, strict=True):
            column.append(value)
        self.rows += 1
        if len(self._columns[0]) >= self.row_group:
            self._flush()

    def _flush(self) -> None:
        import pyarrow as pa

        if not self._columns[0]:
            return
        arrays = [pa.array(c, f.type) for c, f in zip(self._columns, self._schema, strict=True)]
        self._writer.write_table(pa.Table.from_arrays(arrays, schema=self._schema))
        self._columns = [[] for _ in self._schema.names]

    def close(self) -> None:
        """Write what is held and put the file in place."""
        self._flush()
        self._writer.close()
        os.replace(self._tmp, self.path)

    def abort(self) -> None:
        """Drop the file being written."""
        self._writer.close()
        self._tmp.unlink(missing_ok=True)
