"""Whole tables as pandas frames, with pandas' type inference, for training and evaluation:
``read_table`` and ``iter_table`` read a CSV (plain, gzip, TSV), JSON Lines or Parquet file, or
a directory's or glob's files, as ``anomaly score`` takes them (``detector.io.tables`` tells
formats and names apart; ``detector.io.sources`` streams files for batch scoring). Every read
error becomes a ``DataError`` naming the file and the fix.
"""

from __future__ import annotations

import io
import os
import re
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from detector.errors import DataError
from detector.io.json_lines import json_lines_tables
from detector.io.tables import (
    DEFAULT_CHUNK_ROWS,
    PARQUET_MAGIC,
    archive_problem,
    check_header_row,
    check_named,
    csv_delimiter,
    expand_inputs,
    input_format,
    is_gzip,
    parquet_on_a_pipe,
)
from detector.io.transcode import encoding_fix, read_as
from detector.io.writers import csv_bytes


def read_table(
    path: str | os.PathLike[str],
    *,
    text_columns: Sequence[str] = (),
    encoding: str | None = None,
    key_columns: Sequence[str] = (),
) -> pd.DataFrame:
    """The whole table: of a file, or of a directory's or glob's files (as ``anomaly score``
    takes them), one after the other, each with the first one's columns. ``text_columns`` are
    read as strings (category labels such as '01'); ``encoding``: a CSV or JSON Lines text's
    (``transcode.encoding_name``; ``None``: UTF-8). ``key_columns``: a series model's, whose
    JSON Lines numbers are the series an HTTP body's are (``json_lines.key_texts``)."""
    frames: list[pd.DataFrame] = []
    for name in expand_inputs([path]):
        for frame in iter_table(
            name,
            text_columns=text_columns,
            chunk_rows=None,
            encoding=encoding,
            key_columns=key_columns,
        ):
            if frames and set(frame.columns) != set(frames[0].columns):
                raise DataError(
                    f"{name} has columns {list(frame.columns)}, unlike the first file's "
                    f"{list(frames[0].columns)}; give files of the same columns"
                )
            frames.append(frame[frames[0].columns] if frames else frame)
    return frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True)


def sample_table(
    path: str | os.PathLike[str],
    *,
    max_rows: int,
    seed: int = 0,
    text_columns: Sequence[str] = (),
    encoding: str | None = None,
    key_columns: Sequence[str] = (),
) -> tuple[pd.DataFrame, int]:
    """At most ``max_rows`` rows of the table ``read_table`` reads, in file order, and how
    many rows it has. A table of no more rows is ``read_table``'s frame itself; of more, a
    uniform sample without replacement (every row equally likely, the same rows for the same
    ``seed``), read ``max_rows`` rows at a time: the rows left out are never held together,
    so memory is the sample's and a chunk's, whatever the table's length. ``max_rows`` 0:
    every row (``read_table``).

    Each row draws a key from ``seed``'s generator, in file order, and the ``max_rows``
    smallest keys are kept (bottom-k sampling: a reservoir whose rows do not depend on how the
    file is chunked)."""
    if max_rows <= 0:
        frame = read_table(
            path, text_columns=text_columns, encoding=encoding, key_columns=key_columns
        )
        return frame, len(frame)
    generator = np.random.default_rng(seed)
    held: list[pd.DataFrame] = []  # in file order; every row read while they fit
    keys = np.empty(0)
    read = 0
    for chunk in table_chunks(
        path,
        chunk_rows=max_rows,
        text_columns=text_columns,
        encoding=encoding,
        key_columns=key_columns,
    ):
        read += len(chunk)
        held.append(chunk)
        keys = np.concatenate([keys, generator.random(len(chunk))])
        if len(keys) > max_rows:
            kept = np.zeros(len(keys), dtype=bool)
            kept[np.argpartition(keys, max_rows - 1)[:max_rows]] = True
            held, keys = [rows_kept(held, kept)], keys[kept]
    if not held:  # an empty file is read_table's to name
        frame = read_table(
            path, text_columns=text_columns, encoding=encoding, key_columns=key_columns
        )
        return frame, len(frame)
    frame = held[0] if len(held) == 1 else pd.concat(held, ignore_index=True)
    return (frame.reset_index(drop=True) if read > max_rows else frame), read


def table_chunks(
    path: str | os.PathLike[str],
    *,
    chunk_rows: int,
    text_columns: Sequence[str] = (),
    encoding: str | None = None,
    key_columns: Sequence[str] = (),
) -> Iterator[pd.DataFrame]:
    """The table ``read_table`` reads, in chunks of at most ``chunk_rows`` rows, each file's
    columns in the first one's order. A file of no more rows is one chunk, read as
    ``read_table`` reads it."""
    columns: pd.Index | None = None
    for name in expand_inputs([path]):
        for chunk in iter_table(
            name,
            text_columns=text_columns,
            chunk_rows=chunk_rows,
            encoding=encoding,
            key_columns=key_columns,
        ):
            if columns is not None and set(chunk.columns) != set(columns):
                raise DataError(
                    f"{name} has columns {list(chunk.columns)}, unlike the first file's "
                    f"{list(columns)}; give files of the same columns"
                )
            chunk = chunk if columns is None else chunk[columns]
            columns = chunk.columns if columns is None else columns
            yield chunk


def rows_kept(frames: list[pd.DataFrame], kept: np.ndarray) -> pd.DataFrame:
    """The rows of ``frames`` (one after the other) where ``kept`` ``(sum of their lengths,)``
    is true, in their order, as one frame."""
    parts, at = [], 0
    for frame in frames:
        parts.append(frame.iloc[np.flatnonzero(kept[at : at + len(frame)])])
        at += len(frame)
    return parts[0] if len(parts) == 1 else pd.concat(parts, ignore_index=True)


def iter_table(
    path: str | os.PathLike[str],
    *,
    text_columns: Sequence[str] = (),
    chunk_rows: int | None = DEFAULT_CHUNK_ROWS,
    encoding: str | None = None,
    key_columns: Sequence[str] = (),
) -> Iterator[pd.DataFrame]:
    """Chunks of at most ``chunk_rows`` rows (all rows at once when ``None``)."""
    source = Path(path)
    if str(path) != "-" and not source.is_file():
        raise DataError(f"input file {path} does not exist")
    fmt = input_format(path, encoding)
    if fmt == "parquet":
        yield from _iter_parquet(source, chunk_rows)
    elif fmt == "jsonl":
        yield from _iter_json_lines(str(path), text_columns, chunk_rows, encoding, key_columns)
    else:
        yield from _iter_csv(path, text_columns, chunk_rows, encoding)


#: The name pandas gives an index without a name when it saves it as a Parquet column.
PANDAS_INDEX = re.compile(r"__index_level_\d+__")


def _iter_parquet(path: Path, chunk_rows: int | None) -> Iterator[pd.DataFrame]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        handle = pq.ParquetFile(path)
        index = [n for n in handle.schema_arrow.names if PANDAS_INDEX.fullmatch(n)]
        if index:
            raise DataError(
                f"{path} holds {index}, pandas' index saved beside the data, not a column of "
                "it; save the frame with to_parquet(index=False), or reset_index() first "
                "where the index is data"
            )
        # The columns as they are stored, as scoring reads them: pandas' metadata would make a
        # saved index (frame.set_index('host')) the frame's index, and no column to train on.
        if chunk_rows is None or handle.metadata.num_rows <= chunk_rows:
            # One chunk is the whole file, read as a whole: batches stop at row groups, and a
            # chunked read of a file that fits would not be the frame a whole read gives.
            yield handle.read().to_pandas(ignore_metadata=True)
            return
        for batch in handle.iter_batches(batch_size=chunk_rows):
            yield batch.to_pandas(ignore_metadata=True)
    except (pa.ArrowException, OSError) as exc:
        raise DataError(f"cannot read {path} as Parquet: {exc}") from None


def _iter_csv(
    path: str | os.PathLike[str],
    text_columns: Sequence[str],
    chunk_rows: int | None,
    encoding: str | None = None,
) -> Iterator[pd.DataFrame]:
    source: Any = "/dev/stdin" if str(path) == "-" else path
    try:
        # By content, not name: a gzip file named x.data.gz or x.log is still gzip.
        compression = "infer" if source == "/dev/stdin" else ("gzip" if is_gzip(path) else None)
        # The header as the file gives it: pandas renames a repeated 'a' to 'a.1', which a
        # file may also name a column of its own (stdin cannot be read twice: told by names).
        header = None if source == "/dev/stdin" else _raw_header(path, compression, encoding)
        if chunk_rows is None:
            frame = pd.read_csv(
                source,
                sep=csv_delimiter(path),
                compression=compression,
                skipinitialspace=True,
                dtype={c: "string" for c in text_columns},
                encoding=encoding,
            )
            yield _check_header(frame, path, header)
            return
        with pd.read_csv(
            source,
            sep=csv_delimiter(path),
            dtype={c: "string" for c in text_columns},
            chunksize=chunk_rows,
            compression=compression,
            skipinitialspace=True,
            encoding=encoding,
        ) as reader:
            for chunk in reader:
                yield _check_header(chunk, path, header)
    except pd.errors.EmptyDataError:
        raise DataError(f"{path} is empty: give a CSV with a header row and data rows") from None
    except pd.errors.ParserError as exc:
        raise DataError(
            f"{path} is not valid CSV ({exc}); check the delimiter and quoting"
        ) from None
    except UnicodeDecodeError as exc:
        # The error holds the slice that failed, not the file's start: a ZIP was named one only
        # where its first undecodable byte fell in the first slice (a header's time decided).
        head = bytes(exc.object[:8]) if source == "/dev/stdin" else _first_bytes(path)
        if head.startswith(PARQUET_MAGIC):
            raise DataError(parquet_on_a_pipe("<stdin>")) from None
        problem = None if encoding else archive_problem(str(path), head)
        raise DataError(
            problem or f"{path} is not {read_as(encoding)} text ({exc}); {encoding_fix(encoding)}"
        ) from None
    except (OSError, EOFError) as exc:
        raise DataError(f"cannot read {path}: {exc}") from None


def _first_bytes(path: str | os.PathLike[str], n: int = 8) -> bytes:
    """A file's first ``n`` bytes (none if it cannot be read again)."""
    try:
        with open(path, "rb") as handle:
            return handle.read(n)
    except OSError:
        return b""


def _iter_json_lines(
    path: str,
    text_columns: Sequence[str],
    chunk_rows: int | None,
    encoding: str | None = None,
    key_columns: Sequence[str] = (),
) -> Iterator[pd.DataFrame]:
    """A JSON Lines file read as the CSV of the same values would be (its records' text,
    ``json_lines.as_text``, through pandas' CSV reader): a model trained on either is the same
    model, and scores its JSON Lines as its CSV. Read ``chunk_rows`` records at a time
    (``json_lines_tables``): a file of no more is one chunk, the frame a whole read gives."""
    for table in json_lines_tables(
        path, encoding=encoding, chunk_rows=chunk_rows, keys=key_columns
    ):
        header = ",".join(_csv_name(n) for n in table.column_names) + "\n"
        text = io.BytesIO(header.encode() + csv_bytes(table))
        frame = pd.read_csv(text, skipinitialspace=True, dtype={c: "string" for c in text_columns})
        yield _check_header(frame, path, table.column_names)


def _csv_name(name: str) -> str:
    return '"' + name.replace('"', '""') + '"' if any(c in name for c in ',"\r\n') else name


def _raw_header(
    path: str | os.PathLike[str], compression: str | None, encoding: str | None = None
) -> list[str]:
    first = pd.read_csv(
        path,
        encoding=encoding,
        sep=csv_delimiter(path),
        compression=compression,
        header=None,
        nrows=1,
        dtype=str,
        keep_default_na=False,
        skipinitialspace=True,
    )
    return [str(v) for v in first.iloc[0]] if len(first) else []


def _check_header(
    frame: pd.DataFrame, path: str | os.PathLike[str], header: Sequence[str] | None = None
) -> pd.DataFrame:
    """``frame`` with its column names stripped of spaces, as the batch and HTTP readers
    strip them (``CsvSource``): a model trained on 'cpu ' could not score its own file.
    A header that is no header, or repeats a name, is a ``DataError``; so are data rows of
    one field more than the header, which pandas reads by taking the first column for the
    index and shifting every other one left (a trailing delimiter on each data line)."""
    if not isinstance(frame.index, pd.RangeIndex):
        # A header of one name holding ';' (Excel's CSV where the comma is the decimal mark:
        # '145,6' splits the data rows) is a file of another separator: say that first.
        check_header_row([str(c).strip() for c in frame.columns], str(path))
        raise DataError(
            f"{path}: its data rows have more fields than its header ({len(frame.columns)} "
            "names), so every value would land under the wrong column; remove the delimiter "
            "that ends each data line, or name the extra column in the header"
        )
    # pandas names a column with no name 'Unnamed: N' (N its 0-based place): trained on, it
    # would be a column no file could give, since scoring's reader refuses a nameless one.
    check_named([i for i, c in enumerate(frame.columns) if str(c) == f"Unnamed: {i}"], str(path))
    frame = frame.rename(columns=lambda c: str(c).strip())
    names = [str(c) for c in frame.columns]
    if header is not None and len(header) == len(names):
        given = [h.strip() for h in header]
        repeated = sorted(n for n, count in Counter(given).items() if count > 1)
        if not repeated:
            # pandas' names are the file's but for a 'a.1' of a header 'a', 'a ', 'a.1'.
            frame.columns = pd.Index(given)
    else:
        # pandas renames a repeated header 'a' to 'a.1' (told here by the names alone).
        present = set(names)  # a set: a list's `in` made a 50,000-column header take 80 s
        dupes = [
            n
            for n in names
            if "." in n and n.rsplit(".", 1)[0] in present and n.rsplit(".", 1)[1].isdigit()
        ]
        # The names as the file gives them, so a message quotes 'a', never pandas' 'a.1'.
        renamed = set(dupes)
        given = [n.rsplit(".", 1)[0] if n in renamed else n for n in names]
        repeated = sorted(  # 'a' and 'a ' are one name once stripped
            {n.rsplit(".", 1)[0] for n in dupes}
            | {n for n, count in Counter(names).items() if count > 1}
        )
    check_header_row(given, str(path))
    if repeated:
        raise DataError(f"{path} repeats column name(s) {repeated} in its header; rename them")
    return frame
