"""Writing tables atomically: CSV (minimal quoting), JSON Lines (either optionally gzip) or
Parquet; or CSV to standard output ('-'), which a pipe reads as it comes.

A CSV text cell that a spreadsheet would run as a formula (``=HYPERLINK(...)``, ``@SUM(A1)``)
is written as it is, since pipelines read these files back, and counted; with
``escape_formulas`` it is written with a leading ``'`` (OWASP's "CSV injection").

The output goes to a temporary file beside the target and is renamed into place at the end,
so a crash or Ctrl-C never leaves a half-written file at the output path. The temporary file
is removed when writing fails or is interrupted; one left by a run killed outright is removed
by the next writer of the same target (``detector.io.temporaries.remove_stale_temporaries``).
"""

from __future__ import annotations

import contextlib
import csv
import gzip
import io
import json
import math
import os
import re
import sys
from collections import Counter
from collections.abc import Sequence
from typing import Any, BinaryIO

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from detector.errors import DataError
from detector.io.tables import csv_delimiter, table_format
from detector.io.temporaries import (
    check_writable,
    partial_path,
    remove_stale_temporaries,
    told_as,
    written_path,
)

#: What a spreadsheet (Excel, LibreOffice) reads a cell starting with as a formula: '=', '+',
#: '-', '@', and a tab or carriage return, which some strip before looking. A cell of that one
#: character alone (a '-' for none) is left as it is: nothing follows it to run.
FORMULA_START = r"^[=+\-@\t\r](?s:.)"
#: A number ('-5', '+3.2', '-1e3', '-inf') is one to a spreadsheet too, and never escaped.
NUMBER = r"(?i)^\s*[+-]?(?:(?:\d+\.?\d*|\.\d+)(?:e[+-]?\d+)?|inf|infinity|nan)\s*$"


class TableWriter:
    """Appends tables (Arrow or pandas) to one CSV, JSON Lines or Parquet file; ``close``
    renames it into place atomically, ``abort`` removes it. Until then nothing exists at the
    target path.

    CSV is written with minimal quoting (only fields holding a delimiter, quote or newline),
    floats in their shortest round-trip form and booleans as True/False, as pandas writes them;
    JSON Lines as ``json_lines_bytes``; a name ending in ``.gz`` is gzip-compressed.

    ``formula_cells`` counts, by column, the CSV text cells (the header's names too) that a
    spreadsheet would run as a formula; with ``escape_formulas`` they are written with a
    leading ``'``. JSON Lines and Parquet, which no spreadsheet opens so, are written as
    they are.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        stream: BinaryIO | None = None,
        stream_format: str = "csv",
        escape_formulas: bool = False,
    ) -> None:
        #: Standard output for '-', or ``stream`` when given, in ``stream_format`` (``csv`` or
        #: ``jsonl``): written as it comes and flushed after every part, so a pipe sees each
        #: chunk's rows as they are scored. Nothing there can be taken back: a run that fails
        #: has written what it wrote.
        self.stream = stream if stream is not None else (sys.stdout.buffer if path == "-" else None)
        self.format = stream_format if self.stream is not None else table_format(path)
        #: A tab for a ``.tsv``/``.tsv.gz`` name, as the same name is read.
        self.delimiter = csv_delimiter(path)
        self.target = written_path(path)
        if self.stream is None:
            check_writable(path)
            self._partial = partial_path(self.target)
            # A run killed outright (SIGKILL, power loss) cannot remove its partial file; the
            # next writer of the same target does, once that run's process is gone.
            remove_stale_temporaries(self.target)
        self._parquet: Any = None
        self._text: Any = None
        self._raw: Any = None  # the file under a gzip stream, which does not close it
        self._columns: list[str] | None = None
        self.escape_formulas = escape_formulas
        #: CSV text cells a spreadsheet runs as a formula, by column, escaped or not.
        self.formula_cells: Counter[str] = Counter()

    def write(
        self,
        table: pa.Table | pd.DataFrame,
        *,
        leading_text: pa.Array | None = None,
        leading_columns: int = 0,
    ) -> None:
        """Append ``table``'s rows. ``leading_text``, for CSV, is the text of the table's first
        ``leading_columns`` columns separated by ``delimiter``, one record per row
        (``SourceChunk.records``): it is written as it is, then the other columns."""
        if isinstance(table, pd.DataFrame):
            table = pa.Table.from_pandas(table, preserve_index=False)
        with told_as(self.target) if self.stream is None else contextlib.nullcontext():
            self._write(table, leading_text, leading_columns)

    def _write(self, table: pa.Table, leading_text: pa.Array | None, leading_columns: int) -> None:
        if self._columns is None:
            self._columns = list(table.column_names)
        elif list(table.column_names) != self._columns:
            table = table.select(self._columns)
            leading_text = None  # it holds the columns in another order
        if self.format == "parquet":
            self._write_parquet(table)
        elif self.format == "jsonl":
            self._write_json_lines(table)
        else:
            self._write_csv(table, leading_text, leading_columns)

    def _write_parquet(self, table: pa.Table) -> None:
        import pyarrow.parquet as pq

        if self._parquet is None:
            self._parquet = pq.ParquetWriter(self._partial, table.schema)
        elif table.schema != self._parquet.schema:
            try:
                table = table.cast(self._parquet.schema)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError, ValueError) as exc:
                raise DataError(
                    f"cannot append to {self.target}: column types differ from the first part "
                    f"written ({exc}); score inputs of different types into separate outputs"
                ) from None
        self._parquet.write_table(table)

    def _open_text(self) -> Any:
        """The text output (CSV or JSON Lines), gzip-compressed for a ``.gz`` name, opened."""
        if self.stream is not None:
            self._text = self.stream
        elif self.target.name.lower().endswith(".gz"):
            # Level 1: several times faster than the default, most of the size saving. The
            # header names the target, not the temporary (`gunzip -N` restores that name).
            raw = open(self._partial, "wb")  # noqa: SIM115 - closed with the gzip stream
            name = self.target.name[: -len(".gz")]
            self._text = gzip.GzipFile(name, "wb", compresslevel=1, fileobj=raw)
            self._raw = raw
        else:
            self._text = open(self._partial, "wb")  # noqa: SIM115 - closed by close()/abort()
        return self._text

    def _write_json_lines(self, table: pa.Table) -> None:
        text = self._text if self._text is not None else self._open_text()
        if table.num_rows:
            _write_all(text, json_lines_bytes(table))
        if self.stream is not None:
            self.stream.flush()

    def _write_csv(
        self, table: pa.Table, leading_text: pa.Array | None, leading_columns: int
    ) -> None:
        if self._text is None:
            names = [self._header_name(name) for name in table.column_names]
            header = io.StringIO()
            csv.writer(header, delimiter=self.delimiter, lineterminator="\n").writerow(names)
            _write_all(self._open_text(), header.getvalue().encode())
        table, found = self._formulas(table)
        if self.escape_formulas and any(i < leading_columns for i in found):
            leading_text = None  # the records' text holds those cells unescaped
        if table.num_rows:
            # An Arrow buffer: written without a copy.
            _write_all(
                self._text,
                csv_buffer(
                    table,
                    self.delimiter,
                    leading_text=leading_text,
                    leading_columns=leading_columns,
                ),
            )
        if self.stream is not None:
            self.stream.flush()

    def _header_name(self, name: str) -> str:
        if not re.match(FORMULA_START, name) or re.match(NUMBER, name):
            return name
        self.formula_cells[name] += 1
        return "'" + name if self.escape_formulas else name

    def _formulas(self, table: pa.Table) -> tuple[pa.Table, list[int]]:
        """``table`` with its text cells that a spreadsheet runs as a formula escaped (where
        asked), counted in ``formula_cells``; and the places of the columns holding any."""
        found = []
        for i, name in enumerate(table.column_names):
            column = table.column(i)
            if pa.types.is_dictionary(column.type):
                column = pc.cast(column, column.type.value_type)
            if not (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)):
                continue  # numbers, times, flags: written as no spreadsheet formula reads
            cells = formula_cells(column)
            if cells is None:
                continue
            found.append(i)
            self.formula_cells[name] += pc.sum(cells).as_py()
            if self.escape_formulas:
                escaped = pc.binary_join_element_wise("'", column, "")
                table = table.set_column(i, name, pc.if_else(cells, escaped, column))
        return table, found

    def close(self) -> None:
        """``finish``, then ``publish``."""
        self.finish()
        self.publish()

    def finish(self) -> None:
        """Write out what is buffered and close the file, not yet renamed into place: a full
        disk fails here, and the partial file is removed."""
        if self.stream is not None:
            self.stream.flush()
            return
        try:
            with told_as(self.target):
                self._close()
        except BaseException:
            self.abort()
            raise

    def publish(self) -> None:
        """Rename the finished file into place."""
        if self.stream is not None:
            return
        if not self._partial.exists():
            self._partial.touch()
        os.replace(self._partial, self.target)

    def abort(self) -> None:
        if self.stream is not None:
            return  # what was written is the reader's; the exit status says the run failed
        # Closing writes out what was buffered, which fails again on a full disk: the partial
        # file (20 KiB of a .csv.gz) was left beside the output.
        with contextlib.suppress(Exception):
            self._close()
        self._partial.unlink(missing_ok=True)

    def _close(self) -> None:
        """Close each part (a gzip stream before the file under it), all of them even where
        one fails, raising the first failure."""
        parts = [p for p in (self._parquet, self._text, self._raw) if p is not None]
        self._parquet = self._text = self._raw = None
        failed: BaseException | None = None
        for part in parts:
            try:
                part.close()
            except Exception as exc:
                failed = failed or exc
        if failed is not None:
            raise failed


def formula_cells(column: pa.ChunkedArray | pa.Array) -> pa.ChunkedArray | pa.Array | None:
    """Which cells of a text column a spreadsheet runs as a formula (``FORMULA_START``, and not
    a ``NUMBER``), or ``None`` where none does: an anchored scan of each cell (~25 ms a million
    cells), and a second, for numbers, only of a column where some cell starts so."""
    starts = pc.match_substring_regex(column, FORMULA_START)
    if not pc.any(starts).as_py():
        return None
    cells = pc.and_(starts, pc.invert(pc.match_substring_regex(column, NUMBER)))
    return cells if pc.any(cells).as_py() else None


def json_lines_bytes(table: pa.Table) -> bytes:
    """The rows of ``table`` as JSON Lines: an object a row, keyed by column, values typed as
    the table holds them (a missing or not-a-number value as null, a time as its ISO 8601 text)."""
    lines = []
    for row in table.to_pylist():
        try:
            lines.append(json.dumps(row, ensure_ascii=False, allow_nan=False, default=_json_text))
        except ValueError:  # NaN or infinity, which JSON has no word for
            clean = {k: None if isinstance(v, float) and not math.isfinite(v) else v
                     for k, v in row.items()}  # fmt: skip
            lines.append(json.dumps(clean, ensure_ascii=False, default=_json_text))
    return ("\n".join(lines) + "\n").encode()


def _json_text(value: Any) -> str:
    """A value JSON has no type for, as text: a time (Parquet's) in ISO 8601."""
    isoformat = getattr(value, "isoformat", None)
    return str(isoformat()) if callable(isoformat) else str(value)


def csv_bytes(table: pa.Table, delimiter: str = ",") -> bytes:
    """The rows of ``table`` as CSV text (no header), built column-wise by Arrow kernels."""
    return csv_buffer(table, delimiter).to_pybytes()


def csv_buffer(
    table: pa.Table,
    delimiter: str = ",",
    *,
    leading_text: pa.Array | None = None,
    leading_columns: int = 0,
) -> pa.Buffer:
    """``csv_bytes`` as an Arrow buffer, without copying the text once more. With
    ``leading_text`` (see ``TableWriter.write``), each row starts with it in place of the
    table's first ``leading_columns`` columns."""
    if not table.num_rows:
        return pa.py_buffer(b"")
    if leading_text is None:
        columns = [_csv_field(column, delimiter) for column in table.columns]
    else:
        if len(leading_text) != table.num_rows or not 0 < leading_columns < table.num_columns:
            raise ValueError(
                f"leading text of {len(leading_text)} rows for {leading_columns} of "
                f"{table.num_columns} columns of a {table.num_rows}-row table"
            )
        rest = table.columns[leading_columns:]
        columns = [leading_text, *(_csv_field(column, delimiter) for column in rest)]
    # "\n" goes on the end of the last field, so the joined values, back to back, are the text.
    columns[-1] = pc.binary_join_element_wise(
        columns[-1], "", "\n", null_handling="replace", null_replacement=""
    )
    lines = pc.binary_join_element_wise(
        *columns, delimiter, null_handling="replace", null_replacement=""
    )
    if isinstance(lines, pa.ChunkedArray):
        lines = lines.combine_chunks()
    _, offsets, data = lines.buffers()
    bounds = np.frombuffer(offsets, dtype=np.int32)[lines.offset : lines.offset + len(lines) + 1]
    return data.slice(int(bounds[0]), int(bounds[-1] - bounds[0]))


def _csv_field(column: pa.ChunkedArray, delimiter: str) -> pa.ChunkedArray:
    """One column as CSV fields: text, quoted only where it holds a delimiter, quote or
    newline."""
    kind = column.type
    if pa.types.is_boolean(kind):
        return pc.if_else(column, "True", "False")
    if pa.types.is_dictionary(kind):
        column = pc.cast(column, kind.value_type)
        kind = column.type
    if pa.types.is_large_string(kind):
        # pandas 3's text columns arrive as large_string; the row join takes one string type,
        # and csv_buffer reads the joined rows' offsets as int32.
        return _csv_field(pc.cast(column, pa.string()), delimiter)
    if not pa.types.is_string(kind):
        try:
            return pc.cast(column, pa.string())
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            texts = [None if v is None else str(v) for v in column.to_pylist()]
            column = pa.chunked_array([pa.array(texts, pa.string())])
    # Scanning the raw bytes first is ~50x cheaper than a per-value regex, and almost always
    # finds nothing to quote.
    if not _holds_any(column, (delimiter.encode(), b'"', b"\r", b"\n")):
        return column
    pattern = "[" + ("\\t" if delimiter == "\t" else delimiter) + '"\r\n]'
    needs = pc.match_substring_regex(column, pattern)
    quoted = pc.binary_join_element_wise('"', pc.replace_substring(column, '"', '""'), '"', "")
    return pc.if_else(needs, quoted, column)


def _holds_any(column: pa.ChunkedArray, needles: Sequence[bytes]) -> bool:
    """Whether a text column's bytes contain any of ``needles`` (its whole data buffers: a
    sliced column may answer yes for bytes outside the slice, never no wrongly)."""
    for chunk in column.chunks:
        data = chunk.buffers()[2]
        if data is not None:
            text = data.to_pybytes()
            if any(needle in text for needle in needles):
                return True
    return False


def _write_all(stream: Any, data: Any) -> None:
    """Write all of ``data``. A buffered writer over a pipe whose reader left mid-write
    (``anomaly score ... --output - | head``) returns the part written instead of raising:
    the rest was lost and the run said it wrote everything, exit 0. Writing the rest raises
    ``BrokenPipeError``, which the command line turns into exit 141."""
    view = memoryview(data).cast("B")
    while view:
        written = stream.write(view)
        view = view[written if written is not None else len(view) :]
