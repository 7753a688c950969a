"""Record boundaries in CSV text: where a record ends, what Python's csv module makes of one
line by line (a quoted field may hold line breaks, within bounds), and each record's raw text.
``detector.io.csv_source`` reads blocks with them."""

from __future__ import annotations

import csv
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from detector.io.tables import NULL_VALUES

#: A quoted field may hold line breaks, but a record spans at most this many lines and bytes
#: (its first line whatever its length): a quote still open past them is a stray quote, not
#: data, and costs the line it opened on, not the rest of the file.
MAX_RECORD_LINES = 100
MAX_RECORD_BYTES = 1 << 20
NULL_SET = pa.array(NULL_VALUES, pa.string())


@dataclass(frozen=True)
class Record:
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


class _Feed:
    """Lines of a buffer, decoded as Python's csv module asks for them, up to a stop. Apart
    from ``Lines`` so that the reader that holds it holds no ``Lines``: a cycle between the
    two left each block (and its index of line ends) for the garbage collector's rare full
    sweeps, and a file of blank lines grew by ~18 MB a block."""

    def __init__(self, data: bytes, ends: np.ndarray) -> None:
        self.data = data
        self.ends = ends
        self.undecodable: set[int] = set()
        self.next = 0
        self.stop = 0
        self.ran_out = False

    def __iter__(self) -> _Feed:
        return self

    def __next__(self) -> str:
        if self.next >= self.stop:
            self.ran_out = True
            raise StopIteration
        self.next += 1
        return self.text(self.next - 1) + "\n"

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


class Lines:
    """The complete lines of a buffer, decoded when read, fed to Python's csv module one at a
    time so that a record can be stopped at the bounds (``record``)."""

    def __init__(self, data: bytes, delimiter: str, first_line: int = 1) -> None:
        self.data = data
        self.first_line = first_line
        self.ends = np.flatnonzero(np.frombuffer(data, dtype=np.uint8) == 10)
        self.count = len(self.ends)
        self._feed = _Feed(data, self.ends)
        self.undecodable = self._feed.undecodable
        self.offset = self._feed.offset
        self.text = self._feed.text
        self._reader = csv.reader(self._feed, delimiter=delimiter)

    def blank(self, k: int) -> bool:
        """Whether line ``k`` is empty (or a lone carriage return): no record, and cheaper
        to tell than reading it as one (a file of a million blank lines)."""
        length = int(self.ends[k]) - self.offset(k)
        return length == 0 or (length == 1 and self.data[int(self.ends[k]) - 1] == 13)

    def raw(self, begin: int, end: int) -> str:
        """Lines ``begin .. end - 1`` as they read, without line endings."""
        return "\n".join(self.text(k).rstrip("\r") for k in range(begin, end))

    def record(self, k: int, *, final: bool) -> Record:
        """Read the record starting on line ``k``: at most ``MAX_RECORD_LINES`` lines and
        ``MAX_RECORD_BYTES`` (its first line whatever its length)."""
        beyond = int(np.searchsorted(self.ends, self.offset(k) + MAX_RECORD_BYTES, side="left"))
        limit = k + MAX_RECORD_LINES
        if beyond < self.count:  # the byte bound falls within what has been read
            limit = min(limit, beyond)
        limit = max(limit, k + 1)
        feed = self._feed
        feed.next, feed.stop, feed.ran_out = k, min(limit, self.count), False
        error = None
        try:
            fields: list[str] | None = next(self._reader)
        except StopIteration:
            fields = []
        except csv.Error as exc:
            fields, error = None, str(exc)
        end = feed.next
        if not feed.ran_out or fields == []:
            if error is None and end - k > 1:
                error = strict_error(
                    [self.text(i) + "\n" for i in range(k, end)], self._reader.dialect.delimiter
                )
            return Record(k, end, fields, error)
        # The reader asked for a line past the stop: a quote opened in the record is open.
        if limit > self.count and not final:
            return Record(k, end, fields, error, incomplete=True)
        where = (
            "the file ends first"
            if limit > self.count
            else f"not within {MAX_RECORD_LINES} lines or {megabytes(MAX_RECORD_BYTES)}"
        )
        opened = self.first_line + k
        problem = f"a quoted field opened on line {opened} is never closed ({where})"
        return Record(k, end, fields, error, open=True, problem=problem)


def text_array(values: list[str], *, missing: bool = True) -> pa.Array:
    """``values`` as an Arrow text array; with ``missing``, ``NULL_VALUES`` as nulls."""
    array = pa.array(values, pa.string())
    return missing_as_null(array) if missing else array


def missing_as_null(array: pa.Array | pa.ChunkedArray) -> pa.Array | pa.ChunkedArray:
    """Text ``array`` with its ``NULL_VALUES`` (as Arrow's CSV reader reads them) as nulls."""
    return pc.if_else(pc.is_in(array, value_set=NULL_SET), pa.scalar(None, pa.string()), array)


def block_text(
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


def record_texts(block: bytes, bounds: np.ndarray) -> pa.Array:
    """Each record of a block (record ``i`` is ``block[bounds[i]:bounds[i + 1]]``) as text
    without its line ending, sharing the block's bytes until trimmed."""
    n = len(bounds) - 1
    whole = pa.StringArray.from_buffers(n, pa.py_buffer(bounds), pa.py_buffer(block))
    return pc.ascii_rtrim(whole, "\r\n")


def strict_error(lines: list[str], delimiter: str) -> str | None:
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


def megabytes(n: int) -> str:
    return f"{n / (1 << 20):g} MB"


def last_record_end(buffer: bytes) -> int | None:
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
