"""A CSV file (plain or gzip, or stdin) streamed in blocks of whole records, each parsed by
Arrow where it can be and record by record where it cannot (``CsvSource``)."""

from __future__ import annotations

import codecs
import gzip
import io
import os
import re
import select
import stat
import sys
import time
import zlib
from collections.abc import Collection, Iterator
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv

from detector.errors import DataError, NotTextError
from detector.io.chunks import ParseReject, SourceChunk, TableSource, split_chunk
from detector.io.csv_lines import (
    MAX_RECORD_BYTES,
    MAX_RECORD_LINES,
    Lines,
    block_text,
    last_record_end,
    megabytes,
    missing_as_null,
    record_texts,
    strict_error,
    text_array,
)
from detector.io.tables import (
    NULL_VALUES,
    PARQUET_MAGIC,
    archive_problem,
    check_names,
    csv_delimiter,
    parquet_on_a_pipe,
)
from detector.io.transcode import encoding_fix, read_as, transcoded

#: Bytes read at a time before the block size adapts to ``chunk_rows``.
_FIRST_READ = 1 << 20
#: Bytes parsed at a time at most (fewer where ``chunk_rows`` rows take fewer): the text and
#: columns of a block in flight, times the few blocks the batch pipeline overlaps, must stay
#: small (``detector.batch.scored_chunks.MAX_CHUNK_CELLS`` bounds what a chunk's rows cost
#: after parsing).
#: Only rows of thousands of columns reach it: at 2 MB a 2,000-column file was parsed 50 rows
#: at a time, and each block's per-column costs made it 204 rows/s; at 8 MB, 588 rows/s for
#: 146 MB more peak memory (20,000 rows, 785 MB of CSV). Narrower rows never fill 1 MB a chunk.
MAX_BLOCK_BYTES = 8 << 20
#: The record-by-record path reads at least this many lines at once (a tiny ``chunk_rows``
#: would otherwise have Arrow try the rest of a block again after every few lines).
_FEWEST_LINES = 8192
#: Lines of nothing but spaces and tabs, at the start of a text.
_BLANK_LINES = re.compile(rb"(?:[ \t]*\r?\n)*")
#: A line longer than this is not CSV (a binary file, or one without line breaks).
MAX_LINE_BYTES = 64 << 20
#: A pipe that stays quiet this long hands on the whole records read so far, so that rows fed
#: slowly (``tail -f metrics.csv | anomaly score MODEL - --output -``) are scored as they
#: come rather than when a block of a megabyte fills, or never.
LINGER_SECONDS = 0.5


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

    def __init__(
        self,
        path: str,
        *,
        stdin: Any = None,
        exact: Collection[str] = (),
        encoding: str | None = None,
    ) -> None:
        """``stdin``, for '-': a ``stdin_reader`` already peeked at (``open_source``).
        ``exact``: columns whose text is kept as it is, markers of missing values ('NA',
        'null', an empty field) included: a caller's passthrough columns, written back out.
        Elsewhere such text is read as a missing value (``NULL_VALUES``). ``encoding``: the
        text's (``transcode.encoding_name``), ``None`` for UTF-8."""
        self._exact = frozenset(exact)
        self._encoding = encoding
        if path == "-":
            reader = stdin if stdin is not None else stdin_reader()
            self._open("<stdin>", csv_delimiter(path), reader, None, owned=False)
        else:
            binary = open(path, "rb")  # noqa: SIM115 - closed by close()
            size = None if is_live(binary) else os.path.getsize(path)
            self._open(path, csv_delimiter(path), binary, size, owned=True)

    @classmethod
    def of_bytes(cls, data: bytes, name: str, *, exact: Collection[str] = ()) -> CsvSource:
        """Comma-separated text already in memory (an HTTP body), named ``name`` in messages,
        read as a file is: the same records, the same rejects (``exact``: as for a file)."""
        source = cls.__new__(cls)
        source._exact = frozenset(exact)
        source._encoding = None
        source._open(name, ",", io.BufferedReader(io.BytesIO(data)), len(data), owned=True)
        return source

    def _open(
        self, name: str, delimiter: str, binary: Any, size: int | None, *, owned: bool
    ) -> None:
        self.name, self.delimiter, self.size = name, delimiter, size
        self._binary, self._owned = binary, owned
        self._stream: Any = binary
        self._lone_cr = False  # lines end in "\r" alone (classic Mac): read as "\n"
        self._live = False  # a pipe read as its bytes come (gzip waits for whole blocks)
        try:
            if binary.peek(2)[:2] == b"\x1f\x8b":
                self._stream = gzip.GzipFile(fileobj=binary, mode="rb")
            else:
                self._live = is_live(binary)
            if self._encoding is not None:
                self._stream = transcoded(self._stream, self._encoding)
            self._pending, self._first_line = self._read_header()
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        if not self._owned:
            return  # descriptor 0 is not ours to close (see __init__)
        if self._stream is not self._binary:
            self._stream.close()
        self._binary.close()

    # -- reading bytes -------------------------------------------------------------------

    def _read(self, n: int) -> bytes:
        try:
            # A pipe gives what it holds (one system call), a file the ``n`` bytes asked for.
            data: bytes = self._stream.read1(n) if self._live else self._stream.read(n)
            return data.replace(b"\r", b"\n") if self._lone_cr else data
        except (OSError, EOFError, zlib.error) as exc:
            raise DataError(
                f"cannot read {self.name}: {exc} (a truncated or corrupt gzip file?)"
            ) from None

    def _due(self, since: float) -> bool:
        """Whether a pipe's records gathered since ``since`` are to be handed on now
        (``pipe_is_quiet``)."""
        return self._live and pipe_is_quiet(self._binary, since)

    def _position(self) -> int:
        try:
            return int(self._binary.tell())
        except OSError:
            return 0

    def _read_header(self) -> tuple[bytes, int]:
        buffer = self._read(_FIRST_READ)
        if buffer.startswith(codecs.BOM_UTF8):
            buffer = buffer[len(codecs.BOM_UTF8) :]
        if b"\r" in buffer and b"\n" not in buffer:
            # Every line ends in a lone carriage return (an old Mac export): pandas, which
            # trains, reads those as lines, so scoring does too, rather than one long line.
            self._lone_cr = True
            buffer = buffer.replace(b"\r", b"\n")
        if buffer.startswith(PARQUET_MAGIC):  # a file is told by content; a pipe cannot seek
            if isinstance(self._stream, gzip.GzipFile):  # "give the file's path" to a path
                raise DataError(
                    f"{self.name} is gzip-compressed Parquet: gunzip it (Parquet compresses "
                    "inside itself) and give the .parquet file"
                )
            raise DataError(parquet_on_a_pipe(self.name))
        problem = archive_problem(self.name, buffer)
        if problem is not None:
            raise DataError(problem)
        eof = False
        # Blank lines above the header are no records: pandas, which trains, skips them.
        skipped = 0
        while blank := _blank_prefix(buffer):
            skipped += buffer.count(b"\n", 0, blank)
            buffer = buffer[blank:]
            if buffer:
                break
            buffer = self._read(_FIRST_READ)
        while True:
            data = buffer if buffer.endswith(b"\n") or not eof else buffer + b"\n"
            lines = Lines(data, self.delimiter)
            record = lines.record(0, final=eof) if lines.count else None
            if record is not None and not record.incomplete:
                break
            if len(buffer) > MAX_LINE_BYTES:
                raise DataError(
                    f"{self.name}: the header row is longer than {megabytes(MAX_LINE_BYTES)}"
                )
            more = self._read(_FIRST_READ)
            eof = not more
            buffer += more
            if eof and not buffer.strip():
                break
        if (record is None or not record.fields) and buffer.strip():
            raise DataError(
                f"cannot read a header row in {self.name}: it does not start with a line of "
                "CSV text; give a CSV with a header row and data rows"
            )
        if record is None or not record.fields:
            raise DataError(f"{self.name} is empty: give a CSV with a header row and data rows")
        if lines.undecodable:
            raise NotTextError(
                f"the header of {self.name} is not {read_as(self._encoding)} text; "
                f"{encoding_fix(self._encoding)}"
            )
        if record.open:
            raise DataError(
                f"{self.name}: the header row has an unbalanced quote ({record.problem}); fix "
                "the file's quoting"
            )
        if record.error is not None:
            raise DataError(f"cannot parse the header of {self.name}: {record.error}")
        self.columns = tuple(n.strip() for n in record.fields)
        check_names(self.columns, self.name)
        return data[lines.offset(record.end) :], 1 + skipped + record.end

    # -- blocks of records ---------------------------------------------------------------

    def chunks(self, chunk_rows: int) -> Iterator[SourceChunk]:
        pending, self._pending = self._pending, b""
        line = self._first_line
        row = 0
        target = _FIRST_READ
        eof = False
        since = time.monotonic()
        stuck = False  # what was read finishes no record: read more before parsing again
        while True:
            if not eof and len(pending) < target:
                if pending and not stuck and self._due(since):
                    pass  # a pipe: hand on the records it gave, rather than wait for more
                else:
                    more = self._read(target - len(pending))
                    eof, stuck = not more, False
                    pending += more
                    if not eof and len(pending) < target:
                        continue
                if eof:
                    # Blank lines at the very end are not records; the last may lack "\n".
                    pending = pending.rstrip(b"\r\n")
                    pending += b"\n" if pending else b""
            if not pending:
                return
            parsed, used = self._next_block(pending, line, row, eof, most_lines=chunk_rows)
            if parsed is None:  # the first record is longer than what has been read
                if len(pending) > MAX_LINE_BYTES:
                    # Within its bounds yet unfinished: one of its lines is this long.
                    raise DataError(
                        f"{self.name}: a line at or after line {line} is longer than "
                        f"{megabytes(MAX_LINE_BYTES)}; is this a CSV file?"
                    )
                target = 2 * len(pending)
                stuck = True
                continue
            line += pending.count(b"\n", 0, used)
            pending = pending[used:]
            row += parsed.n_read
            if parsed.n_read:
                per_chunk = used * chunk_rows // parsed.n_read
                target = min(MAX_BLOCK_BYTES, max(_FIRST_READ, per_chunk))
            yield from split_chunk(parsed, chunk_rows, self._position())
            since = time.monotonic()

    def _next_block(
        self, pending: bytes, line: int, row: int, eof: bool, *, most_lines: int
    ) -> tuple[SourceChunk | None, int]:
        """The next records of ``pending`` (which starts at a record) and the bytes they took;
        ``(None, 0)`` where more must be read to tell where the first record ends. Record by
        record, at most ``most_lines`` lines are read at once: a block of a million broken
        one-field lines would otherwise become a million rejects before anyone could stop."""
        cut = last_record_end(pending)
        if cut is not None:
            fast = self._parse_arrow(pending[:cut], line, row)
            if fast is not None:
                return fast, cut
            until = min(pending.count(b"\n", 0, cut), max(most_lines, _FEWEST_LINES))
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
        if not block.isascii():
            # Arrow decodes a short line's text before it calls ``on_invalid``: a byte from
            # another encoding raised inside Arrow there and printed a traceback.
            try:
                block.decode("utf-8")
            except UnicodeDecodeError:
                return None
        invalid: list[object] = []

        def on_invalid(bad: object) -> str:
            # One is enough to hand the block to the Python path, which names each bad record;
            # skipping them all first held every one (a block of a million one-field lines).
            invalid.append(bad)
            return "error"

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
                    strings_can_be_null=not self._exact,
                ),
            )
        except pa.ArrowInvalid:
            return None  # invalid UTF-8 or a quote open at the block's end: the Python path
        if invalid:
            return None
        if self._exact:  # Arrow's null values hold for every column or none
            table = pa.Table.from_arrays(
                [
                    column if name in self._exact else missing_as_null(column)
                    for name, column in zip(table.column_names, table.columns, strict=True)
                ],
                names=table.column_names,
            )
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
        records = record_texts(block, bounds)
        if quoted and n and extra.max() > 0:
            spans = np.flatnonzero(extra)
            lengths = np.diff(bounds)[spans]
            if extra.max() >= MAX_RECORD_LINES or lengths.max() > MAX_RECORD_BYTES:
                return None  # a quote open past the bounds: a stray quote, for the Python path
            for i in spans.tolist():
                lines = [piece + "\n" for piece in records[i].as_py().split("\n")]
                if strict_error(lines, self.delimiter) is not None:
                    return None  # a stray quote "closed" by another: the Python path says
        starts = line + np.arange(n, dtype=np.int64)
        if n:
            starts[1:] += np.cumsum(extra)[:-1]
        return SourceChunk(
            source=self.name,
            table=table,
            row_numbers=np.arange(row + 1, row + n + 1, dtype=np.int64),
            lines=starts,
            rejects=(),
            position=0,
            raw_text=block_text(block, starts - line, extra, ends),
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
        lines = Lines(data, self.delimiter, line)
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
            if lines.blank(k):
                k += 1
                continue  # a blank line is not a record
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
                    f"not {read_as(self._encoding)} text; {encoding_fix(self._encoding)} (bytes "
                    "shown as \\x.. escapes)",
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
        arrays = [
            text_array(list(column), missing=name not in self._exact)
            for name, column in zip(self.columns, zip(*good, strict=True), strict=False)
        ] or [pa.array([], pa.string()) for _ in self.columns]

        def raw_text(i: int) -> str:
            return lines.raw(*spans[i])

        chunk = SourceChunk(
            source=self.name,
            table=pa.Table.from_arrays(arrays, names=list(self.columns)),
            row_numbers=np.asarray(rows, dtype=np.int64),
            lines=line + np.asarray([first for first, _ in spans], dtype=np.int64),
            rejects=tuple(rejects),
            position=0,
            raw_text=raw_text,
        )
        return chunk, lines.offset(k)


def is_live(binary: Any) -> bool:
    """Whether ``binary`` is a pipe, socket or terminal, whose bytes come as they are written
    (a regular file's are all there)."""
    try:
        mode = os.fstat(binary.fileno()).st_mode
    except (OSError, ValueError, io.UnsupportedOperation):
        return False  # in memory (an HTTP body)
    return stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode) or stat.S_ISCHR(mode)


def _blank_prefix(text: bytes) -> int:
    """The length of the blank lines ``text`` starts with."""
    found = _BLANK_LINES.match(text)
    return found.end() if found else 0


def stdin_reader() -> io.BufferedReader:
    """A reader of its own over descriptor 0, never to be closed: a read blocked on a pipe that
    stays open then holds no lock that closing, or the interpreter's exit, would wait for
    (Ctrl-C or SIGTERM while the writer of the pipe is still there)."""
    return io.BufferedReader(io.FileIO(sys.stdin.fileno(), "rb", closefd=False))


def pipe_is_quiet(binary: Any, since: float) -> bool:
    """Whether a pipe's records gathered since ``since`` are to be handed on now:
    ``LINGER_SECONDS`` have passed (a slow, steady writer), or nothing more comes before they
    do. (A reader takes all its buffer whenever it returns less than asked, so the descriptor
    is all there is left to ask.)"""
    left = since + LINGER_SECONDS - time.monotonic()
    if left <= 0:
        return True
    ready, _, _ = select.select([binary.fileno()], [], [], left)
    return not ready
