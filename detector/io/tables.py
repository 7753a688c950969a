"""Tables in files: CSV (plain, gzip, TSV), JSON Lines and Parquet, read whole or in chunks as
pandas frames, and the names and paths the other readers and writers share.

``read_table``/``iter_table`` give pandas frames with pandas' type inference, for training and
evaluation. Streaming a file for batch scoring, with a ledger of every record, is
``detector.io.sources``; writing outputs atomically is ``detector.io.writers``. Every read error
becomes a ``DataError`` naming the file and the fix.
"""

from __future__ import annotations

import contextlib
import glob
import io
import os
import re
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from detector.errors import DataError

#: Rows per chunk when streaming: big enough to score at full speed, small enough that memory
#: does not depend on the file's size.
DEFAULT_CHUNK_ROWS = 65_536


#: The names a directory's files are picked up by (``expand_inputs``) and told apart by
#: (``table_format``): one list, so a file picked up is never refused for its name.
CSV_SUFFIXES = (".csv", ".csv.gz", ".tsv", ".tsv.gz", ".txt", ".txt.gz")
PARQUET_SUFFIXES = (".parquet", ".pq")
#: JSON Lines, one JSON object a line.
JSON_LINES_SUFFIXES = (".jsonl", ".jsonl.gz", ".ndjson", ".ndjson.gz")
#: CSV names whose fields are separated by tabs.
TAB_SUFFIXES = (".tsv", ".tsv.gz")


def table_format(path: str | os.PathLike[str]) -> str:
    """The format a file's name says (for outputs, which do not exist yet): ``csv``, ``jsonl``
    or ``parquet``. An input that exists is told by its content instead (``input_format``)."""
    name = str(path).lower()
    if name.endswith(PARQUET_SUFFIXES):
        return "parquet"
    if name.endswith(JSON_LINES_SUFFIXES):
        return "jsonl"
    if name.endswith(CSV_SUFFIXES) or name == "-":
        return "csv"
    raise DataError(
        f"cannot tell the format of {path}: name it .csv, .csv.gz, .tsv, .jsonl or .parquet"
    )


def csv_delimiter(path: str | os.PathLike[str]) -> str:
    """A tab for ``.tsv`` and ``.tsv.gz`` files, else a comma (stdin, '-', included)."""
    return "\t" if str(path).lower().endswith(TAB_SUFFIXES) else ","


GZIP_MAGIC = b"\x1f\x8b"
PARQUET_MAGIC = b"PAR1"
#: Bytes of a file looked at to tell text from binary.
_SNIFF_BYTES = 4096


def input_format(path: str | os.PathLike[str]) -> str:
    """The format of an input file, ``csv``, ``jsonl`` (JSON Lines) or ``parquet``, told by its
    first bytes before its name, so ``x.data.gz`` or a gzip file of any name reads as (gzip)
    CSV: Parquet starts with ``PAR1``, JSON Lines (plain or gzip) with ``{``, gzip with
    ``1f 8b``; then a known suffix decides (``table_format``, ``JSON_LINES_SUFFIXES``), and text
    under any other name is CSV. '-' (stdin) is told by ``open_source``. Anything else is a
    ``DataError`` naming the formats read."""
    if str(path) == "-":
        return "csv"
    try:
        with open(path, "rb") as handle:
            head = handle.read(_SNIFF_BYTES)
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc}") from None
    if head.startswith(PARQUET_MAGIC):
        return "parquet"
    # Imported here: json_lines reads values as detector.features does, which imports this.
    from detector.io.json_lines import looks_like_json

    if looks_like_json(head, gzipped=True) or str(path).lower().endswith(JSON_LINES_SUFFIXES):
        return "jsonl"
    if head.startswith(GZIP_MAGIC):
        return "csv"
    with contextlib.suppress(DataError):
        # A named format stands even where the content is damaged (a stray Latin-1 byte in a
        # .csv is one rejected record, a truncated .parquet a Parquet error), so say it.
        return table_format(path)
    if _is_text(head):
        return "csv"
    raise DataError(
        f"cannot read {path}: it is neither CSV text nor JSON Lines (plain or gzip) nor "
        "Parquet; give a .csv, .csv.gz, .jsonl or .parquet file"
    )


def is_gzip(path: str | os.PathLike[str]) -> bool:
    """Whether a file starts with gzip's magic bytes (whatever it is named)."""
    with open(path, "rb") as handle:
        return handle.read(2) == GZIP_MAGIC


def _is_text(head: bytes) -> bool:
    # A NUL byte never occurs in UTF-8 text; the cut at _SNIFF_BYTES may split a character.
    if b"\0" in head:
        return False
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:
        return exc.start >= len(head) - 3
    return True


def read_table(path: str | os.PathLike[str], *, text_columns: Sequence[str] = ()) -> pd.DataFrame:
    """The whole table: of a file, or of a directory's or glob's files (as ``anomaly score``
    takes them), one after the other, each with the first one's columns. ``text_columns`` are
    read as strings (category labels such as '01')."""
    frames: list[pd.DataFrame] = []
    for name in expand_inputs([path]):
        for frame in iter_table(name, text_columns=text_columns, chunk_rows=None):
            if frames and set(frame.columns) != set(frames[0].columns):
                raise DataError(
                    f"{name} has columns {list(frame.columns)}, unlike the first file's "
                    f"{list(frames[0].columns)}; give files of the same columns"
                )
            frames.append(frame[frames[0].columns] if frames else frame)
    return frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True)


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
    fmt = input_format(path)
    if fmt == "parquet":
        yield from _iter_parquet(source, chunk_rows)
    elif fmt == "jsonl":
        yield from _iter_json_lines(str(path), text_columns, chunk_rows)
    else:
        yield from _iter_csv(path, text_columns, chunk_rows)


#: The name pandas gives an index without a name when it saves it as a Parquet column.
_PANDAS_INDEX = re.compile(r"__index_level_\d+__")


def _iter_parquet(path: Path, chunk_rows: int | None) -> Iterator[pd.DataFrame]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        handle = pq.ParquetFile(path)
        index = [n for n in handle.schema_arrow.names if _PANDAS_INDEX.fullmatch(n)]
        if index:
            raise DataError(
                f"{path} holds {index}, pandas' index saved beside the data, not a column of "
                "it; save the frame with to_parquet(index=False), or reset_index() first "
                "where the index is data"
            )
        # The columns as they are stored, as scoring reads them: pandas' metadata would make a
        # saved index (frame.set_index('host')) the frame's index, and no column to train on.
        if chunk_rows is None:
            yield handle.read().to_pandas(ignore_metadata=True)
            return
        for batch in handle.iter_batches(batch_size=chunk_rows):
            yield batch.to_pandas(ignore_metadata=True)
    except (pa.ArrowException, OSError) as exc:
        raise DataError(f"cannot read {path} as Parquet: {exc}") from None


def _iter_csv(
    path: str | os.PathLike[str], text_columns: Sequence[str], chunk_rows: int | None
) -> Iterator[pd.DataFrame]:
    source: Any = "/dev/stdin" if str(path) == "-" else path
    try:
        # By content, not name: a gzip file named x.data.gz or x.log is still gzip.
        compression = "infer" if source == "/dev/stdin" else ("gzip" if is_gzip(path) else None)
        # The header as the file gives it: pandas renames a repeated 'a' to 'a.1', which a
        # file may also name a column of its own (stdin cannot be read twice: told by names).
        header = None if source == "/dev/stdin" else _raw_header(path, compression)
        if chunk_rows is None:
            frame = pd.read_csv(
                source,
                sep=csv_delimiter(path),
                compression=compression,
                skipinitialspace=True,
                dtype={c: "string" for c in text_columns},
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
        if bytes(exc.object[: len(PARQUET_MAGIC)]) == PARQUET_MAGIC:
            raise DataError(parquet_on_a_pipe("<stdin>")) from None
        raise DataError(f"{path} is not UTF-8 text ({exc}); re-save it as UTF-8") from None
    except (OSError, EOFError) as exc:
        raise DataError(f"cannot read {path}: {exc}") from None


def _iter_json_lines(
    path: str, text_columns: Sequence[str], chunk_rows: int | None
) -> Iterator[pd.DataFrame]:
    """A JSON Lines file read as the CSV of the same values would be (its records' text,
    ``json_lines.as_text``, through pandas' CSV reader): a model trained on either is the same
    model, and scores its JSON Lines as its CSV."""
    from detector.io.json_lines import json_lines_table  # see input_format
    from detector.io.writers import csv_bytes

    table = json_lines_table(path)
    header = ",".join(_csv_name(n) for n in table.column_names) + "\n"
    text = io.BytesIO(header.encode() + csv_bytes(table))
    frame = pd.read_csv(text, skipinitialspace=True, dtype={c: "string" for c in text_columns})
    frame = _check_header(frame, path, table.column_names)
    if chunk_rows is None:
        yield frame
        return
    for begin in range(0, len(frame), chunk_rows):
        yield frame.iloc[begin : begin + chunk_rows].reset_index(drop=True)


def _csv_name(name: str) -> str:
    return '"' + name.replace('"', '""') + '"' if any(c in name for c in ',"\r\n') else name


def _raw_header(path: str | os.PathLike[str], compression: str | None) -> list[str]:
    first = pd.read_csv(
        path,
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


#: Text read as a missing value: pandas' defaults, so scoring reads a file as training did.
NULL_VALUES = (
    "",
    "#N/A",
    "#N/A N/A",
    "#NA",
    "-1.#IND",
    "-1.#QNAN",
    "-NaN",
    "-nan",
    "1.#IND",
    "1.#QNAN",
    "<NA>",
    "N/A",
    "NA",
    "NULL",
    "NaN",
    "None",
    "n/a",
    "nan",
    "null",
)


def parquet_on_a_pipe(name: str) -> str:
    """Why Parquet on stdin is refused, and what to do instead."""
    return (
        f"{name} holds Parquet, which is read from its end (its footer), so it cannot be "
        "streamed: give the file's path instead of piping it"
    )


#: ``NULL_VALUES`` for a lookup: text that is missing wherever it comes from.
MISSING_TEXT = frozenset(NULL_VALUES)


def expand_inputs(inputs: Sequence[str | os.PathLike[str]]) -> list[str]:
    """Files, directories (their files named as ``CSV_SUFFIXES`` or ``PARQUET_SUFFIXES`` say,
    sorted; names starting with '.' or '_', such as Spark's ``_SUCCESS``, left out), glob
    patterns, or '-' for CSV on stdin -> the list of files to read, in order."""
    files: list[str] = []
    for item in map(str, inputs):
        path = Path(item)
        if item == "-" or path.is_file():
            files.append(item)
        elif path.is_dir():
            found = sorted(
                str(p)
                for p in path.iterdir()
                if p.is_file() and not p.name.startswith((".", "_")) and _is_table_name(p.name)
            )
            if not found:
                raise DataError(
                    f"directory {item} holds no files to read (files named "
                    f"{', '.join(CSV_SUFFIXES + PARQUET_SUFFIXES + JSON_LINES_SUFFIXES)})"
                )
            files.extend(found)
        elif glob.has_magic(item):
            found = sorted(p for p in glob.glob(item, recursive=True) if Path(p).is_file())
            if not found:
                raise DataError(f"no file matches {item}; check the pattern")
            files.extend(found)
        else:
            raise DataError(f"input file {item} does not exist")
    if files.count("-") > 1:
        raise DataError("'-' (stdin) can be given once only")
    return files


def picked_up_by(path: str | os.PathLike[str], item: str | os.PathLike[str]) -> bool:
    """Whether input ``item``, a directory or a glob pattern, takes in a file at ``path``
    (whether or not it exists yet), as ``expand_inputs`` would read them."""
    target, item = Path(path).resolve(), str(item)
    if Path(item).is_dir():
        name = target.name
        return (
            target.parent == Path(item).resolve()
            and not name.startswith((".", "_"))
            and _is_table_name(name)
        )
    if glob.has_magic(item):
        return target.match(str(Path(item).resolve())) or Path(path).match(item)
    return False


def _is_table_name(name: str) -> bool:
    lower = name.lower()
    return lower.endswith(CSV_SUFFIXES + PARQUET_SUFFIXES + JSON_LINES_SUFFIXES)


def check_names(names: Sequence[str], source: str) -> None:
    check_header_row(names, source)
    check_named([i for i, n in enumerate(names) if not n], source)
    dupes = sorted(n for n, count in Counter(names).items() if count > 1)
    if dupes:
        raise DataError(f"{source} repeats column name(s) {dupes} in its header; rename them")


def check_named(nameless: Sequence[int], source: str) -> None:
    """A ``DataError`` naming the header's columns at the 0-based places ``nameless``, which
    have no name."""
    if nameless:
        raise DataError(
            f"{source}: header column(s) {[i + 1 for i in nameless]} have no name; name every "
            "column (or remove a trailing delimiter or an unnamed index column, such as "
            "pandas' to_csv writes unless index=False)"
        )


def check_header_row(names: Sequence[str], source: str) -> None:
    """A ``DataError`` where the header row of ``source`` looks like a data record: a file
    without a header otherwise fails later with a puzzling "repeats column name(s) ['0.00',
    '0.00.1']" or "missing column(s)", far from its cause."""
    if header_looks_like_data(names):
        shown = ",".join(names[:6]) + (",..." if len(names) > 6 else "")
        raise DataError(
            f"{source}: no header row? the first line must name the columns, but it holds "
            f"values ({shown}); add a line of column names (the model's, or your data's) at "
            "the top"
        )
    if names and names[0].startswith("{"):
        raise DataError(
            f"{source}: the header reads as JSON ({shortened_text(names[0])}); JSON Lines (one "
            "object a line) are read from a file, or from stdin when its first line is an "
            "object: give them so"
        )
    # One column whose name is a list: a file separated by another character. Trained, its
    # rows would be one text column of whole lines, a model of nothing.
    separator = next((c for c in OTHER_SEPARATORS if len(names) == 1 and c in names[0]), None)
    if separator is not None:
        shown = shortened_text(names[0])
        raise DataError(
            f"{source}: the header reads as one column {shown}, whose name holds "
            f"{separator!r}: its fields look separated by {separator!r}, and this tool reads "
            "commas (tabs in a .tsv file); re-save it with commas between fields (and '.' as the "
            "decimal mark, where it was a comma)"
        )


def shortened_text(text: str, limit: int = 80) -> str:
    return repr(text if len(text) <= limit else text[:limit] + "...")


#: Field separators other than the comma and tab this tool reads, told apart in a header.
OTHER_SEPARATORS = (";", "|", "\t")


def header_looks_like_data(names: Sequence[str]) -> bool:
    """Whether a header row reads as values: a number is repeated, or half or more of the
    names are numbers and one has a fraction or exponent. Whole numbers alone (``0,1,2`` as
    pandas numbers unnamed columns, or years ``2023,2024``) are taken for names."""
    numeric = [n for n in (str(n).strip() for n in names) if _is_number(n)]
    if len(set(numeric)) < len(numeric):
        return True
    fractional = any(not n.lstrip("+-").isdigit() for n in numeric)
    return fractional and 2 * len(numeric) >= len(names)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True
