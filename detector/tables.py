"""Reading and writing tables: CSV (plain or gzip) and Parquet, whole or in chunks.

Every read error becomes a ``DataError`` naming the file and the fix. Writes are atomic: the
output goes to a temporary file beside the target and is renamed into place at the end, so a
crash or Ctrl-C never leaves a half-written file at the output path.
"""

from __future__ import annotations

import csv
import os
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from detector.errors import DataError

#: Rows per chunk when streaming: big enough to score at full speed, small enough that memory
#: does not depend on the file's size.
DEFAULT_CHUNK_ROWS = 65_536


def table_format(path: str | os.PathLike[str]) -> str:
    name = str(path).lower()
    if name.endswith((".parquet", ".pq")):
        return "parquet"
    if name.endswith((".csv", ".csv.gz", ".txt", ".tsv")) or name == "-":
        return "csv"
    raise DataError(f"cannot tell the format of {path}: name it .csv, .csv.gz or .parquet")


def read_table(path: str | os.PathLike[str], *, text_columns: Sequence[str] = ()) -> pd.DataFrame:
    """The whole table. ``text_columns`` are read as strings (category labels such as '01')."""
    chunks = list(iter_table(path, text_columns=text_columns, chunk_rows=None))
    return chunks[0] if len(chunks) == 1 else pd.concat(chunks, ignore_index=True)


def iter_table(
    path: str | os.PathLike[str],
    *,
    text_columns: Sequence[str] = (),
    chunk_rows: int | None = DEFAULT_CHUNK_ROWS,
) -> Iterator[pd.DataFrame]:
    """Chunks of at most ``chunk_rows`` rows (all rows at once when ``None``)."""
    source = Path(path)
    if str(path) != "-" and not source.is_file():
        raise DataError(f"input file {path} does not exist")
    fmt = table_format(path)
    if fmt == "parquet":
        yield from _iter_parquet(source, chunk_rows)
    else:
        yield from _iter_csv(path, text_columns, chunk_rows)


def _iter_parquet(path: Path, chunk_rows: int | None) -> Iterator[pd.DataFrame]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        handle = pq.ParquetFile(path)
        if chunk_rows is None:
            yield handle.read().to_pandas()
            return
        for batch in handle.iter_batches(batch_size=chunk_rows):
            yield batch.to_pandas()
    except (pa.ArrowException, OSError) as exc:
        raise DataError(f"cannot read {path} as Parquet: {exc}") from None


def _iter_csv(
    path: str | os.PathLike[str], text_columns: Sequence[str], chunk_rows: int | None
) -> Iterator[pd.DataFrame]:
    source: Any = "/dev/stdin" if str(path) == "-" else path
    try:
        if chunk_rows is None:
            frame = pd.read_csv(
                source,
                compression="infer",
                skipinitialspace=True,
                dtype={c: "string" for c in text_columns},
            )
            _check_header(frame, path)
            yield frame
            return
        with pd.read_csv(
            source,
            dtype={c: "string" for c in text_columns},
            chunksize=chunk_rows,
            compression="infer",
            skipinitialspace=True,
        ) as reader:
            first = True
            for chunk in reader:
                if first:
                    _check_header(chunk, path)
                    first = False
                yield chunk
    except pd.errors.EmptyDataError:
        raise DataError(f"{path} is empty: give a CSV with a header row and data rows") from None
    except pd.errors.ParserError as exc:
        raise DataError(
            f"{path} is not valid CSV ({exc}); check the delimiter and quoting"
        ) from None
    except UnicodeDecodeError as exc:
        raise DataError(f"{path} is not UTF-8 text ({exc}); re-save it as UTF-8") from None
    except (OSError, EOFError) as exc:
        raise DataError(f"cannot read {path}: {exc}") from None


def _check_header(frame: pd.DataFrame, path: str | os.PathLike[str]) -> None:
    # pandas renames a repeated header 'a' to 'a.1'; a repeated column is the file's mistake.
    names = [str(c) for c in frame.columns]
    dupes = [
        n
        for n in names
        if "." in n and n.rsplit(".", 1)[0] in names and n.rsplit(".", 1)[1].isdigit()
    ]
    if dupes:
        raise DataError(f"{path} repeats column name(s) {sorted(dupes)} in its header; rename them")


def partial_path(path: str | os.PathLike[str]) -> Path:
    """A unique temporary name beside ``path``, for writing before an atomic rename."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    return target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.partial")


class TableWriter:
    """Appends frames to one CSV or Parquet file; ``close`` renames it into place atomically,
    ``abort`` removes it. Until then nothing exists at the target path."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.format = table_format(path)
        self.target = Path(path)
        self._partial = partial_path(path)
        self._parquet: Any = None
        self._started = False

    def write(self, frame: pd.DataFrame) -> None:
        if self.format == "parquet":
            import pyarrow as pa
            import pyarrow.parquet as pq

            table = pa.Table.from_pandas(frame, preserve_index=False)
            if self._parquet is None:
                self._parquet = pq.ParquetWriter(self._partial, table.schema)
            self._parquet.write_table(table.cast(self._parquet.schema))
        else:
            frame.to_csv(
                self._partial,
                mode="a" if self._started else "w",
                header=not self._started,
                index=False,
                lineterminator="\n",
                quoting=csv.QUOTE_MINIMAL,
            )
        self._started = True

    def close(self) -> None:
        if self._parquet is not None:
            self._parquet.close()
        if not self._partial.exists():
            self._partial.touch()
        os.replace(self._partial, self.target)

    def abort(self) -> None:
        if self._parquet is not None:
            self._parquet.close()
        self._partial.unlink(missing_ok=True)
