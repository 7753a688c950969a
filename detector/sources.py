"""Streaming one input file for batch scoring, with bounded memory and a ledger.

``open_source`` opens a CSV (plain or gzip, or stdin) or Parquet file; its ``chunks`` give
every data record either as a row of an Arrow table (all CSV fields as text, so nothing is
guessed and a bad value is rejected by the scorer with its reason) or as a ``ParseReject`` (a
ragged row, undecodable bytes, a stray quote) with its row number, physical line number and
raw text. Line numbers stay right across quoted fields that hold newlines. A stray quote costs
the line it opened on, not the rest of the file (``CsvSource``). Every read error becomes a
``DataError`` naming the file and the fix.
"""

from __future__ import annotations

import codecs
import csv
import gzip
import io
import json
import os
import sys
import zlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv

from detector.errors import DataError
from detector.tables import NULL_VALUES, check_names, csv_delimiter, input_format

#: Bytes read at a time before the block size adapts to ``chunk_rows``.
_FIRST_READ = 1 << 20
#: Bytes parsed at a time at most (fewer where ``chunk_rows`` rows take fewer): the text and
#: columns of a block in flight, times the few blocks the batch pipeline overlaps, must stay
#: small (``detector.batch.MAX_CHUNK_CELLS`` bounds what a chunk's rows cost after parsing).
MAX_BLOCK_BYTES = 2 << 20
#: A quoted field may hold line breaks, but a record spans at most this many lines and bytes
#: (its first line whatever its length): a quote still open past them is a stray quote, not
#: data, and costs the line it opened on, not the rest of the file.
MAX_RECORD_LINES = 100
MAX_RECORD_BYTES = 1 << 20
#: A line longer than this is not CSV (a binary file, or one without line breaks).
MAX_LINE_BYTES = 64 << 20
_NULL_SET = pa.array(NULL_VALUES, pa.string())


@dataclass(frozen=True)
class ParseReject:
    """A data record that could not be made into a row: ``row`` is its 1-based data row number
    in its source (the header not counted), ``line`` the physical line it starts on (1-based,
    ``None`` where a format has no lines), ``code`` one of ``ragged``, ``encoding``,
    ``malformed``, ``unbalanced_quote`` (a quote opened on the line is never closed, or closes
    lines later into a record of the wrong width: that line alone is rejected)."""

    source: str
    row: int
    line: int | None
    code: str
    reason: str
    raw: str


@dataclass(frozen=True, eq=False)
class SourceChunk:
    """Consecutive records of one source.

    ``table`` holds the records that parsed, in file order, ``rows`` ``(n,)`` their 1-based
    data row numbers and ``lines`` ``(n,)`` the physical line each starts on (``None`` for
    Parquet). ``rejects`` are the records of the same stretch that could not be parsed;
    ``n_read = table.num_rows + len(rejects)``. ``position`` is how far into the source (in
    bytes of the file as stored) reading has got, for a progress bar.

    ``records``, where a CSV block went through Arrow's parser, is each row's record exactly as
    in the file without its line ending (a text array aligned with ``table``): a CSV writer with
    the same delimiter can copy the input's fields from it instead of formatting them again.
    """

    source: str
    table: pa.Table
    rows: np.ndarray
    lines: np.ndarray | None
    rejects: tuple[ParseReject, ...]
    position: int
    raw_text: Callable[[int], str]
    records: pa.Array | None = None

    @property
    def n_read(self) -> int:
        return self.table.num_rows + len(self.rejects)


class TableSource(ABC):
    """One input file opened for streaming: ``columns`` is known on opening, ``chunks``
    yields ``SourceChunk``s of at most ``chunk_rows`` rows, ``size`` is the stored size in
    bytes (``None`` for stdin), ``delimiter`` the field delimiter of a CSV source (``None``
    for Parquet). Use as a context manager."""

    name: str
    columns: tuple[str, ...]
    size: int | None
    delimiter: str | None = None

    @abstractmethod
    def chunks(self, chunk_rows: int) -> Iterator[SourceChunk]: ...

    @abstractmethod
    def close(self) -> None: ...

    def __enter__(self) -> TableSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_source(path: str) -> TableSource:
    """Open a CSV (plain, gzip, or '-' for stdin) or Parquet file, told apart by content
    (``input_format``), not name; its header is read and checked here (empty file, undecodable
    or duplicate or empty column names, a first line of values: ``DataError``)."""
    if input_format(path) == "parquet":
        return ParquetSource(path)
    return CsvSource(path)


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
                table = pa.Table.from_batches([batch])
                n = table.num_rows
                yield SourceChunk(
                    source=self.name,
                    table=table,
                    rows=np.arange(done + 1, done + n + 1, dtype=np.int64),
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


def _json_row(table: pa.Table) -> Callable[[int], str]:
    def raw(i: int) -> str:
        return json.dumps(table.slice(i, 1).to_pylist()[0], default=str)

    return raw


class CsvSource(TableSource):
    """A CSV file (plain or gzip, or stdin) read in blocks of whole records.

    A record is one line, or several where a quoted field holds line breaks (RFC 4180: a
    field holding a delimiter, quote or newline is quoted, quotes doubled), up to
    ``MAX_RECORD_LINES`` lines and ``MAX_RECORD_BYTES``. A quote still open past that, or at the
    end of the file, or one "closed" on a later line by a quote that text follows (the opening
    quote of a field there) or into a record of the wrong width, is taken for a stray quote:
    the line it opened on is rejected ("unbalanced quote") and reading resumes on the next
    line, so a broken quote costs the records it breaks, never the rest of the file, and
    memory stays bounded. (Two stray quotes that happen to make a well-formed record of the
    right width within the bounds cannot be told from a quoted field holding line breaks.)

    A block ends at the last newline outside quotes, counting quotes (exact for well-formed
    files; a stray quote can only make it cut too early). Each block is parsed by Arrow's CSV
    reader into text columns when it can be (no ragged rows, valid UTF-8, no blank lines, no
    record over the bounds), and by Python's csv module, record by record, otherwise; both give
    the same rows, and the slow path also names each bad record. The rare slow path is what
    keeps the fast one exact.
    """

    delimiter: str

    def __init__(self, path: str) -> None:
        self.name = "<stdin>" if path == "-" else path
        self.delimiter = csv_delimiter(path)
        self._stdin = path == "-"
        if self._stdin:
            # A reader of its own over descriptor 0, never closed: a read blocked on a pipe
            # that stays open then holds no lock that closing, or the interpreter's exit,
            # would wait for (Ctrl-C or SIGTERM while the writer of the pipe is still there).
            self._binary: Any = io.BufferedReader(
                io.FileIO(sys.stdin.fileno(), "rb", closefd=False)
            )
            self.size = None
        else:
            self._binary = open(path, "rb")  # noqa: SIM115 - closed by close()
            self.size = os.path.getsize(path)
        self._stream: Any = self._binary
        try:
            if self._binary.peek(2)[:2] == b"\x1f\x8b":
                self._stream = gzip.GzipFile(fileobj=self._binary, mode="rb")
            self._pending, self._first_line = self._read_header()
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        if self._stdin:
            return  # descriptor 0 is not ours to close (see __init__)
        if self._stream is not self._binary:
            self._stream.close()
        self._binary.close()

    # -- reading bytes -------------------------------------------------------------------

    def _read(self, n: int) -> bytes:
        try:
            return self._stream.read(n)
        except (OSError, EOFError, zlib.error) as exc:
            raise DataError(
                f"cannot read {self.name}: {exc} (a truncated or corrupt gzip file?)"
            ) from None

    def _position(self) -> int:
        try:
            return int(self._binary.tell())
        except OSError:
            return 0

    def _read_header(self) -> tuple[bytes, int]:
        buffer = self._read(_FIRST_READ)
        if buffer.startswith(codecs.BOM_UTF8):
            buffer = buffer[len(codecs.BOM_UTF8) :]
        if buffer[:2] in (b"\xff\xfe", b"\xfe\xff"):
            raise DataError(
                f"the header of {self.name} is not UTF-8 text (it looks like UTF-16); re-save "
                "the file as UTF-8"
            )
        eof = False
        while True:
            data = buffer if buffer.endswith(b"\n") or not eof else buffer + b"\n"
            lines = _Lines(data, self.delimiter)
            record = lines.record(0, final=eof) if lines.count else None
            if record is not None and not record.incomplete:
                break
            if len(buffer) > MAX_LINE_BYTES:
                raise DataError(f"{self.name}: the header row is longer than {_mb(MAX_LINE_BYTES)}")
            more = self._read(_FIRST_READ)
            eof = not more
            buffer += more
            if eof and not buffer.strip():
                break
        if record is None or not record.fields:
            raise DataError(f"{self.name} is empty: give a CSV with a header row and data rows")
        if lines.undecodable:
            raise DataError(f"the header of {self.name} is not UTF-8 text; re-save it as UTF-8")
        if record.open:
            raise DataError(
                f"{self.name}: the header row has an unbalanced quote ({record.problem}); fix "
                "the file's quoting"
            )
        if record.error is not None:
            raise DataError(f"cannot parse the header of {self.name}: {record.error}")
        self.columns = tuple(n.strip() for n in record.fields)
        check_names(self.columns, self.name)
        return data[lines.offset(record.end) :], 1 + record.end

    # -- blocks of records ---------------------------------------------------------------

    def chunks(self, chunk_rows: int) -> Iterator[SourceChunk]:
        pending, self._pending = self._pending, b""
        line = self._first_line
        row = 0
        target = _FIRST_READ
        eof = False
        while True:
            if not eof and len(pending) < target:
                more = self._read(target - len(pending))
                eof = not more
                pending += more
                if not eof and len(pending) < target:
                    continue
                if eof:
                    # Blank lines at the very end are not records; the last may lack "\n".
                    pending = pending.rstrip(b"\r\n")
                    pending += b"\n" if pending else b""
            if not pending:
                return
            parsed, used = self._next_block(pending, line, row, eof)
            if parsed is None:  # the first record is longer than what has been read
                if len(pending) > MAX_LINE_BYTES:
                    # Within its bounds yet unfinished: one of its lines is this long.
                    raise DataError(
                        f"{self.name}: a line at or after line {line} is longer than "
                        f"{_mb(MAX_LINE_BYTES)}; is this a CSV file?"
                    )
                target = 2 * len(pending)
                continue
            line += pending.count(b"\n", 0, used)
            pending = pending[used:]
            row += parsed.n_read
            if parsed.n_read:
                per_chunk = used * chunk_rows // parsed.n_read
                target = min(MAX_BLOCK_BYTES, max(_FIRST_READ, per_chunk))
            yield from _split(parsed, chunk_rows, self._position())

    def _next_block(
        self, pending: bytes, line: int, row: int, eof: bool
    ) -> tuple[SourceChunk | None, int]:
        """The next records of ``pending`` (which starts at a record) and the bytes they took;
        ``(None, 0)`` where more must be read to tell where the first record ends."""
        cut = _last_record_end(pending)
        if cut is not None:
            fast = self._parse_arrow(pending[:cut], line, row)
            if fast is not None:
                return fast, cut
            until = pending.count(b"\n", 0, cut)
        else:
            # A quote opened on the first line is open at every line end read so far (or a
            # quote stands inside a field, where it is text): only the first record is in
            # question, and Python's csv module tells where it ends.
            until = 1
        parsed = self._parse_python(pending, line, row, until=until, final=eof)
        return parsed if parsed is not None else (None, 0)

    def _parse_arrow(self, block: bytes, line: int, row: int) -> SourceChunk | None:
        """Arrow's parse of a block ending in a newline, or ``None`` where only the record-by-
        record path can name what is wrong (invalid UTF-8, ragged rows, a quote open past the
        bounds) or number the lines (Arrow skips blank lines, which the ledger must count).

        Every column stays text: the output copies the input's fields as they were, and
        Arrow parses text then casts it to numbers faster than it parses numbers directly
        (measured: 3.1 + 1.3 us per 38-column row against 4.0 + 0.3).
        """
        invalid: list[object] = []

        def on_invalid(bad: object) -> str:
            invalid.append(bad)
            return "skip"

        quoted = b'"' in block
        try:
            table = pa_csv.read_csv(
                pa.py_buffer(block),
                # One thread: the batch scorer already parses in a thread of its own beside
                # the scoring, and Arrow's thread pool cost ~30% more CPU per row here.
                read_options=pa_csv.ReadOptions(column_names=list(self.columns), use_threads=False),
                parse_options=pa_csv.ParseOptions(
                    delimiter=self.delimiter,
                    newlines_in_values=quoted,
                    invalid_row_handler=on_invalid,
                ),
                convert_options=pa_csv.ConvertOptions(
                    column_types={c: pa.string() for c in self.columns},
                    null_values=list(NULL_VALUES),
                    strings_can_be_null=True,
                ),
            )
        except pa.ArrowInvalid:
            return None  # invalid UTF-8 or a quote open at the block's end: the Python path
        if invalid:
            return None
        n = table.num_rows
        extra = np.zeros(n, dtype=np.int64)
        if quoted:
            # A record spans 1 + (newlines inside its quoted fields) physical lines.
            for column in table.columns:
                counts = pc.fill_null(pc.count_substring(column, "\n"), 0)
                extra += counts.to_numpy().astype(np.int64)
        if n + int(extra.sum()) != block.count(b"\n"):
            return None  # Arrow skipped blank lines: the physical lines are not all records
        ends = np.flatnonzero(np.frombuffer(block, dtype=np.uint8) == 10)
        bounds = np.zeros(n + 1, dtype=np.int32)  # a block is < 2 GB (MAX_BLOCK_BYTES)
        bounds[1:] = ends[np.cumsum(extra + 1) - 1] + 1
        records = _records(block, bounds)
        if quoted and n and extra.max() > 0:
            spans = np.flatnonzero(extra)
            lengths = np.diff(bounds)[spans]
            if extra.max() >= MAX_RECORD_LINES or lengths.max() > MAX_RECORD_BYTES:
                return None  # a quote open past the bounds: a stray quote, for the Python path
            for i in spans.tolist():
                lines = [piece + "\n" for piece in records[i].as_py().split("\n")]
                if _strict_error(lines, self.delimiter) is not None:
                    return None  # a stray quote "closed" by another: the Python path says
        starts = line + np.arange(n, dtype=np.int64)
        if n:
            starts[1:] += np.cumsum(extra)[:-1]
        return SourceChunk(
            source=self.name,
            table=table,
            rows=np.arange(row + 1, row + n + 1, dtype=np.int64),
            lines=starts,
            rejects=(),
            position=0,
            raw_text=_block_text(block, starts - line, extra, ends),
            records=records,
        )

    def _parse_python(
        self, data: bytes, line: int, row: int, *, until: int, final: bool
    ) -> tuple[SourceChunk, int] | None:
        """The records of ``data`` (which starts at a record, on physical line ``line``) as
        Python's csv module reads them, bounded, and the bytes they took.

        Stops before the first record that starts on or after line ``until`` (0-based, counted
        from ``data``'s start), and before a record still open at the end of ``data`` within
        the bounds unless ``final`` (the end of the file). ``None`` where no record is done.
        """
        lines = _Lines(data, self.delimiter, line)
        width = len(self.columns)
        good: list[list[str]] = []
        rows: list[int] = []
        spans: list[tuple[int, int]] = []
        rejects: list[ParseReject] = []

        def reject(begin: int, end: int, code: str, reason: str) -> None:
            rejects.append(
                ParseReject(self.name, row, line + begin, code, reason, lines.raw(begin, end))
            )

        k = 0
        while k < min(until, lines.count):
            record = lines.record(k, final=final)
            if record.incomplete:
                break  # its end is not read yet
            if record.fields == []:
                k = record.end
                continue  # a blank line is not a record
            row += 1
            multiline = record.end - k > 1
            if record.open or (
                multiline and (record.error is not None or len(record.fields or ()) != width)
            ):
                # A stray quote: the line it opened on is the broken record; the lines it
                # would have swallowed are read again as records of their own.
                if record.open:
                    problem = record.problem
                elif record.error is not None:
                    problem = (
                        f"a quote opened on line {line + k} joins lines {line + k}-"
                        f"{line + record.end - 1} into one invalid record ({record.error})"
                    )
                else:
                    problem = (
                        f"a quote opened on line {line + k} closes on line "
                        f"{line + record.end - 1}, making one record of "
                        f"{len(record.fields or ())} fields where the header has {width}"
                    )
                reject(k, k + 1, "unbalanced_quote", f"not valid CSV: unbalanced quote: {problem}")
                k += 1
                continue
            if record.error is not None:
                reject(k, record.end, "malformed", f"not valid CSV: {record.error}")
            elif lines.undecodable.intersection(range(k, record.end)):
                reject(
                    k,
                    record.end,
                    "encoding",
                    "not UTF-8 text; re-save the file as UTF-8 (bytes shown as \\x.. escapes)",
                )
            elif len(record.fields or ()) != width:
                reject(
                    k,
                    record.end,
                    "ragged",
                    f"{len(record.fields or ())} fields where the header has {width}",
                )
            else:
                good.append(record.fields or [])
                rows.append(row)
                spans.append((k, record.end))
            k = record.end
        if k == 0:
            return None
        arrays = [_text_array(list(column)) for column in zip(*good, strict=True)] or [
            pa.array([], pa.string()) for _ in self.columns
        ]

        def raw_text(i: int) -> str:
            return lines.raw(*spans[i])

        chunk = SourceChunk(
            source=self.name,
            table=pa.Table.from_arrays(arrays, names=list(self.columns)),
            rows=np.asarray(rows, dtype=np.int64),
            lines=line + np.asarray([first for first, _ in spans], dtype=np.int64),
            rejects=tuple(rejects),
            position=0,
            raw_text=raw_text,
        )
        return chunk, lines.offset(k)


@dataclass(frozen=True)
class _Record:
    """One record as Python's csv module read it from line ``start``: ``fields`` (``None``
    with ``error``), ``end`` the line after it. ``open``: a quote opened in it is still open at
    the bounds or the end of the file (``problem`` says which); ``incomplete``: it is open at
    the end of what has been read, within the bounds, and more must be read."""

    start: int
    end: int
    fields: list[str] | None
    error: str | None = None
    open: bool = False
    incomplete: bool = False
    problem: str = ""


class _Lines:
    """The complete lines of a buffer, decoded when read, fed to Python's csv module one at a
    time so that a record can be stopped at the bounds (``record``)."""

    def __init__(self, data: bytes, delimiter: str, first_line: int = 1) -> None:
        self.data = data
        self.first_line = first_line
        self.ends = np.flatnonzero(np.frombuffer(data, dtype=np.uint8) == 10)
        self.count = len(self.ends)
        self.undecodable: set[int] = set()
        self._next = 0
        self._stop = 0
        self._ran_out = False
        self._reader = csv.reader(self, delimiter=delimiter)

    def __iter__(self) -> _Lines:
        return self

    def __next__(self) -> str:
        if self._next >= self._stop:
            self._ran_out = True
            raise StopIteration
        self._next += 1
        return self.text(self._next - 1) + "\n"

    def offset(self, k: int) -> int:
        """The byte offset of line ``k`` (``len(data)`` for ``k == count``)."""
        return 0 if k == 0 else int(self.ends[k - 1]) + 1

    def text(self, k: int) -> str:
        piece = self.data[self.offset(k) : int(self.ends[k])]
        try:
            return piece.decode("utf-8")
        except UnicodeDecodeError:
            self.undecodable.add(k)
            return piece.decode("utf-8", "backslashreplace")

    def raw(self, begin: int, end: int) -> str:
        """Lines ``begin .. end - 1`` as they read, without line endings."""
        return "\n".join(self.text(k).rstrip("\r") for k in range(begin, end))

    def record(self, k: int, *, final: bool) -> _Record:
        """Read the record starting on line ``k``: at most ``MAX_RECORD_LINES`` lines and
        ``MAX_RECORD_BYTES`` (its first line whatever its length)."""
        beyond = int(np.searchsorted(self.ends, self.offset(k) + MAX_RECORD_BYTES, side="left"))
        limit = k + MAX_RECORD_LINES
        if beyond < self.count:  # the byte bound falls within what has been read
            limit = min(limit, beyond)
        limit = max(limit, k + 1)
        self._next, self._stop, self._ran_out = k, min(limit, self.count), False
        error = None
        try:
            fields: list[str] | None = next(self._reader)
        except StopIteration:
            fields = []
        except csv.Error as exc:
            fields, error = None, str(exc)
        end = self._next
        if not self._ran_out or fields == []:
            if error is None and end - k > 1:
                error = _strict_error(
                    [self.text(i) + "\n" for i in range(k, end)], self._reader.dialect.delimiter
                )
            return _Record(k, end, fields, error)
        # The reader asked for a line past the stop: a quote opened in the record is open.
        if limit > self.count and not final:
            return _Record(k, end, fields, error, incomplete=True)
        where = (
            "the file ends first"
            if limit > self.count
            else f"not within {MAX_RECORD_LINES} lines or {_mb(MAX_RECORD_BYTES)}"
        )
        opened = self.first_line + k
        problem = f"a quoted field opened on line {opened} is never closed ({where})"
        return _Record(k, end, fields, error, open=True, problem=problem)


def _text_array(values: list[str]) -> pa.Array:
    array = pa.array(values, pa.string())
    return pc.if_else(pc.is_in(array, value_set=_NULL_SET), pa.scalar(None, pa.string()), array)


def _block_text(
    block: bytes, offsets: np.ndarray, extra: np.ndarray, ends: np.ndarray
) -> Callable[[int], str]:
    """Raw text of record ``i`` of a block: lines ``offsets[i] .. offsets[i] + extra[i]``
    (``ends``: the index of each newline in the block)."""

    def raw_text(i: int) -> str:
        first, last = int(offsets[i]), int(offsets[i] + extra[i])
        begin = 0 if first == 0 else int(ends[first - 1]) + 1
        text = block[begin : int(ends[last])].decode("utf-8", "replace")
        return text.replace("\r\n", "\n").rstrip("\r")

    return raw_text


def _records(block: bytes, bounds: np.ndarray) -> pa.Array:
    """Each record of a block (record ``i`` is ``block[bounds[i]:bounds[i + 1]]``) as text
    without its line ending, sharing the block's bytes until trimmed."""
    n = len(bounds) - 1
    whole = pa.StringArray.from_buffers(n, pa.py_buffer(bounds), pa.py_buffer(block))
    return pc.ascii_rtrim(whole, "\r\n")


def _strict_error(lines: list[str], delimiter: str) -> str | None:
    """Why a record spanning ``lines`` (each ending in a newline) is not RFC 4180 CSV, or
    ``None``. A record spans lines only through a quoted field, whose closing quote is followed
    by a delimiter or the line's end: where text follows, the "closing" quote was the opening
    quote of a field on a later line, and the record is two records joined by a stray quote."""
    try:
        for _ in csv.reader(lines, delimiter=delimiter, strict=True):
            pass
    except csv.Error as exc:
        return str(exc)
    return None


def _mb(n: int) -> str:
    return f"{n / (1 << 20):g} MB"


def _split(parsed: SourceChunk, chunk_rows: int, position: int) -> Iterator[SourceChunk]:
    """A parsed block as chunks of at most ``chunk_rows`` rows (its parse rejects go with the
    first); each keeps its own row numbering."""
    n = parsed.table.num_rows
    if n <= chunk_rows:
        yield _with(parsed, 0, n, parsed.rejects, position)
        return
    for begin in range(0, n, chunk_rows):
        end = min(n, begin + chunk_rows)
        yield _with(parsed, begin, end, parsed.rejects if begin == 0 else (), position)


def _with(
    parsed: SourceChunk, begin: int, end: int, rejects: tuple[ParseReject, ...], position: int
) -> SourceChunk:
    whole = parsed.table.num_rows
    lines = parsed.lines
    return SourceChunk(
        source=parsed.source,
        table=parsed.table
        if (begin, end) == (0, whole)
        else parsed.table.slice(begin, end - begin),
        rows=parsed.rows[begin:end],
        lines=None if lines is None else lines[begin:end],
        rejects=rejects,
        position=position,
        raw_text=lambda i: parsed.raw_text(begin + i),
        records=None if parsed.records is None else parsed.records.slice(begin, end - begin),
    )


def _last_record_end(buffer: bytes) -> int | None:
    """The index just past the last newline outside quotes, or ``None``."""
    end = buffer.rfind(b"\n")
    if end < 0:
        return None
    if b'"' not in buffer:
        return end + 1
    quotes = buffer.count(b'"', 0, end)
    while quotes % 2:
        previous = buffer.rfind(b"\n", 0, end)
        if previous < 0:
            return None
        quotes -= buffer.count(b'"', previous, end)
        end = previous
    return end + 1
