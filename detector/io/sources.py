"""Streaming one input file for batch scoring, with bounded memory and a ledger.

``open_source`` opens a CSV or JSON Lines (plain or gzip, or stdin) or Parquet file; its
``chunks`` give every data record either as a row of an Arrow table (all CSV fields as text, so
nothing is guessed and a bad value is rejected by the scorer with its reason) or as a
``ParseReject`` (a ragged row, undecodable bytes, a stray quote, a line that is not a JSON
object) with its row number, physical line number and raw text. Line numbers stay right
across quoted fields that hold newlines. A stray quote costs the line it opened on, not the
rest of the file (``CsvSource``). Every read error becomes a ``DataError`` naming the file and
the fix.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator, Sequence

import numpy as np
import pyarrow as pa

from detector.errors import DataError
from detector.io.chunks import SourceChunk, TableSource
from detector.io.csv_source import CsvSource, stdin_reader
from detector.io.json_lines import JsonLinesSource
from detector.io.tables import check_names, input_format, looks_like_json

#: Bytes of stdin looked at to tell JSON Lines from CSV (what a pipe holds so far, if fewer).
_SNIFF_BYTES = 4096


def open_source(
    path: str,
    *,
    expected: Sequence[str] = (),
    exact: Sequence[str] = (),
    encoding: str | None = None,
    keys: Sequence[str] = (),
) -> TableSource:
    """Open a CSV or JSON Lines (plain, gzip, or '-' for stdin) or Parquet file, told apart by
    content (``input_format``; stdin by its first bytes), not name; its header (a JSON Lines
    file's first records) is read and checked here (empty file, undecodable or duplicate or
    empty column names, a first line of values: ``DataError``). ``expected``: the columns the
    caller reads (a model's, those it keeps), which a JSON Lines file has even where its first
    records leave them out (a serialiser that drops null values). ``exact``: columns a CSV
    file's reader keeps as text as it is, 'NA' and empty fields too (passthrough columns,
    written back out as they came), where the others read them as missing values.
    ``encoding``: a CSV or JSON Lines text's (``transcode.encoding_name``; ``None``: UTF-8).
    ``keys``: a series model's key columns, whose JSON numbers are the series an HTTP body's
    are (``json_lines.key_texts``: 7.0 is '7'); a CSV's are text as written."""
    if path == "-":
        stdin = stdin_reader()
        # Blocks until the first bytes come (or the end): what a pipe holds is told by them.
        head = stdin.peek(_SNIFF_BYTES)[:_SNIFF_BYTES]
        if looks_like_json(head, gzipped=True, encoding=encoding):
            return JsonLinesSource(
                "<stdin>", stdin, owned=False, expected=expected, encoding=encoding, keys=keys
            )
        return CsvSource(path, stdin=stdin, exact=exact, encoding=encoding)
    fmt = input_format(path, encoding)
    if fmt == "parquet":
        return ParquetSource(path)
    if fmt == "jsonl":
        return JsonLinesSource.of_path(path, expected=expected, encoding=encoding, keys=keys)
    return CsvSource(path, exact=exact, encoding=encoding)


class ParquetSource(TableSource):
    """A Parquet file, read one record batch at a time."""

    def __init__(self, path: str) -> None:
        import pyarrow.parquet as pq

        self.name = path
        self.size = os.path.getsize(path)
        try:
            self._file = pq.ParquetFile(path)
        except (pa.ArrowException, OSError) as exc:
            raise DataError(f"cannot read {path} as Parquet: {exc}") from None
        self.columns = tuple(self._file.schema_arrow.names)
        check_names(self.columns, path)

    def chunks(self, chunk_rows: int) -> Iterator[SourceChunk]:
        total = max(self._file.metadata.num_rows, 1)
        done = 0
        try:
            for batch in self._file.iter_batches(batch_size=chunk_rows):
                table = _decoded(pa.Table.from_batches([batch]))
                n = table.num_rows
                yield SourceChunk(
                    source=self.name,
                    table=table,
                    row_numbers=np.arange(done + 1, done + n + 1, dtype=np.int64),
                    lines=None,
                    rejects=(),
                    position=int(self.size * min(1.0, (done + n) / total)) if self.size else 0,
                    raw_text=_json_row(table),
                )
                done += n
        except (pa.ArrowException, OSError) as exc:
            raise DataError(f"cannot read {self.name} as Parquet: {exc}") from None

    def close(self) -> None:
        self._file.close()


def _decoded(table: pa.Table) -> pa.Table:
    """``table`` with each dictionary-encoded column (pandas' categoricals, saved to Parquet)
    as its plain values: pyarrow's ``to_numpy`` of one gave a null the next row's value, so a
    row missing its host was scored as another host's instead of rejected."""
    for i, field in enumerate(table.schema):
        if pa.types.is_dictionary(field.type):
            column = table.column(i).cast(field.type.value_type)
            table = table.set_column(i, field.with_type(field.type.value_type), column)
    return table


def _json_row(table: pa.Table) -> Callable[[int], str]:
    def raw(i: int) -> str:
        return json.dumps(table.slice(i, 1).to_pylist()[0], default=str)

    return raw
