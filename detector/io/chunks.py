"""What a table source yields: chunks of parsed records and the records that could not be
parsed, and the interface every source (``detector.io.sources``) implements."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import pyarrow as pa


@dataclass(frozen=True)
class ParseReject:
    """A data record that could not be made into a row: ``row_number`` is its 1-based data row
    in its source (the header not counted), ``line`` the physical line it starts on (1-based,
    ``None`` where a format has no lines), ``code`` one of ``ragged``, ``encoding``,
    ``malformed``, ``unbalanced_quote`` (a quote opened on the line is never closed, or closes
    lines later into a record of the wrong width: that line alone is rejected)."""

    source: str
    row_number: int
    line: int | None
    code: str
    reason: str
    raw: str


@dataclass(frozen=True, eq=False)
class SourceChunk:
    """Consecutive records of one source.

    ``table`` holds the records that parsed, in file order, ``row_numbers`` ``(n,)`` their
    1-based data row numbers and ``lines`` ``(n,)`` the physical line each starts on (``None`` for
    Parquet). ``rejects`` are the records of the same stretch that could not be parsed;
    ``n_read = table.num_rows + len(rejects)``. ``position`` is how far into the source (in
    bytes of the file as stored) reading has got, for a progress bar.

    ``records``, where a CSV block went through Arrow's parser, is each row's record exactly as
    in the file without its line ending (a text array aligned with ``table``): a CSV writer with
    the same delimiter can copy the input's fields from it instead of formatting them again.
    """

    source: str
    table: pa.Table
    row_numbers: np.ndarray
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


def split_chunk(parsed: SourceChunk, chunk_rows: int, position: int) -> Iterator[SourceChunk]:
    """A parsed block as chunks of at most ``chunk_rows`` rows (its parse rejects go with the
    first); each keeps its own row numbering."""
    n = parsed.table.num_rows
    if n <= chunk_rows:
        yield _with(parsed, 0, n, parsed.rejects, position)
        return
    lower = -1
    for begin in range(0, n, chunk_rows):
        end = min(n, begin + chunk_rows)
        # Each piece takes the rejects among its rows (up to the next piece's first row), so
        # that rejects are written in the input's order however small the pieces.
        upper = int(parsed.row_numbers[end]) if end < n else None
        mine = tuple(
            r
            for r in parsed.rejects
            if r.row_number > lower and (upper is None or r.row_number < upper)
        )
        lower = upper - 1 if upper is not None else lower
        yield _with(parsed, begin, end, mine, position)


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
        row_numbers=parsed.row_numbers[begin:end],
        lines=None if lines is None else lines[begin:end],
        rejects=rejects,
        position=position,
        raw_text=lambda i: parsed.raw_text(begin + i),
        records=None if parsed.records is None else parsed.records.slice(begin, end - begin),
    )
