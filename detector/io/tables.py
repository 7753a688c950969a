"""Tables in files: the formats (CSV plain, gzip or TSV, JSON Lines, Parquet), told apart by
content and name, and the names and paths every reader and writer shares.

Whole tables as pandas frames, for training and evaluation, are ``detector.io.frames``;
streaming a file for batch scoring, with a ledger of every record, is ``detector.io.sources``;
writing outputs atomically is ``detector.io.writers``. Every read error becomes a ``DataError``
naming the file and the fix.
"""

from __future__ import annotations

import codecs
import contextlib
import glob
import gzip
import os
import re
import zlib
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from detector.errors import DataError
from detector.io.transcode import as_utf8, encoding_fix

#: Rows per chunk when streaming: big enough to score at full speed, small enough that memory
#: does not depend on the file's size.
DEFAULT_CHUNK_ROWS = 65_536
#: The rows ``anomaly train`` keeps of a table at most (``--max-rows``; ``frames.sample_table``):
#: a uniform sample of a longer one, whose other rows are read and let go.
DEFAULT_MAX_ROWS = 1_000_000


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


def input_format(path: str | os.PathLike[str], encoding: str | None = None) -> str:
    """The format of an input file, ``csv``, ``jsonl`` (JSON Lines) or ``parquet``, told by its
    first bytes before its name, so ``x.data.gz`` or a gzip file of any name reads as (gzip)
    CSV: Parquet starts with ``PAR1``, JSON Lines (plain or gzip) with ``{``, gzip with
    ``1f 8b``; then a known suffix decides (``table_format``, ``JSON_LINES_SUFFIXES``), and text
    under any other name is CSV. '-' (stdin) is told by ``open_source``. Anything else is a
    ``DataError`` naming the formats read. ``encoding``: the text's, where not UTF-8."""
    if str(path) == "-":
        return "csv"
    try:
        with open(path, "rb") as handle:
            head = handle.read(_SNIFF_BYTES)
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc}") from None
    if head.startswith(PARQUET_MAGIC):
        return "parquet"
    if looks_like_json(head, gzipped=True, encoding=encoding) or str(path).lower().endswith(
        JSON_LINES_SUFFIXES
    ):
        return "jsonl"
    if head.startswith(GZIP_MAGIC):
        return "csv"
    head = as_utf8(head, encoding)
    with contextlib.suppress(DataError):
        # A named format stands even where the content is damaged (a stray Latin-1 byte in a
        # .csv is one rejected record, a truncated .parquet a Parquet error), so say it.
        return table_format(path)
    if _is_text(head):
        return "csv"
    if problem := archive_problem(str(path), head):  # named: a .csv.bz2, an .xlsx, a .feather
        raise DataError(problem)
    raise DataError(
        f"cannot read {path}: it is neither CSV text nor JSON Lines (plain or gzip) nor "
        "Parquet; give a .csv, .csv.gz, .jsonl or .parquet file"
    )


#: What a JSON Lines text starts with (after a byte-order mark and white space): an object,
#: or a JSON array of objects (refused with the way to make JSON Lines of it).
_JSON_START = re.compile(rb"\s*(\{|\[\s*[{\]])")


def looks_like_json(head: bytes, *, gzipped: bool = False, encoding: str | None = None) -> bool:
    """Whether text starting with ``head`` is JSON Lines (or a JSON array) rather than CSV;
    ``gzipped``: a head of gzip bytes is looked at inside; ``encoding``: the text's, where not
    UTF-8."""
    if gzipped and head.startswith(b"\x1f\x8b"):
        try:
            head = zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(head, 256)
        except zlib.error:
            return False
    head = as_utf8(head, encoding)
    if head.startswith(codecs.BOM_UTF8):
        head = head[len(codecs.BOM_UTF8) :]
    return _JSON_START.match(head) is not None


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


#: Compressed or archive formats a table is not read from, by their first bytes (gzip is).
_ARCHIVES = {
    b"PK\x03\x04": "ZIP",
    b"BZh": "bzip2",
    b"\xfd7zXZ\x00": "xz",
    b"\x28\xb5\x2f\xfd": "zstd",
    b"7z\xbc\xaf\x27\x1c": "7-Zip",
}


#: Table formats this tool does not read, by their first bytes, with how to convert each.
_OTHER_TABLES = {
    b"ARROW1": (
        "an Arrow IPC (Feather) file",
        "write it as Parquet: pyarrow.parquet.write_table(pyarrow.feather.read_table(path), "
        "'out.parquet')",
    ),
    b"ORC": (
        "an ORC file",
        "write it as Parquet: pyarrow.parquet.write_table(pyarrow.orc.read_table(path), "
        "'out.parquet')",
    ),
}


def archive_problem(name: str, head: bytes) -> str | None:
    """Why ``name``, starting with ``head``, cannot be read as a table: it is an archive or
    compressed in a format other than gzip (told "not UTF-8" or "not CSV text" before), a
    table format this tool does not read (Excel, Arrow, ORC), or UTF-16 text; ``None`` where
    it is none of these."""
    if head[:2] in (b"\xff\xfe", b"\xfe\xff"):
        return f"{name} is not UTF-8 text (it looks like UTF-16): {encoding_fix(None, 'utf-16')}"
    if head.startswith(b"PK\x03\x04") and (
        b"[Content_Types].xml" in head[:2048] or str(name).lower().endswith((".xlsx", ".xlsm"))
    ):
        # "a ZIP file: unpack it first" gave a workbook's XML.
        return f"{name} is an Excel workbook: save it as CSV UTF-8 (File > Save As) or Parquet"
    if head[257:262] == b"ustar":  # a tar header's magic; gzip's is unpacked before this
        return f"{name} is a tar archive: extract it (tar -xf) and give its files or folder"
    for magic, (kind, fix) in _OTHER_TABLES.items():
        if head.startswith(magic):
            return f"{name} is {kind}, which this tool does not read; {fix}"
    for magic, kind in _ARCHIVES.items():
        if head.startswith(magic):
            return (
                f"{name} is a {kind} file, not a table's text: unpack it first, or compress it "
                "with gzip, which is read as it is"
            )
    return None


def parquet_on_a_pipe(name: str) -> str:
    """Why Parquet on stdin is refused, and what to do instead."""
    return (
        f"{name} holds Parquet, which is read from its end (its footer), so it cannot be "
        "streamed: give the file's path instead of piping it"
    )


#: ``NULL_VALUES`` for a lookup: text that is missing wherever it comes from.
MISSING_TEXT = frozenset(NULL_VALUES)


def expand_inputs(inputs: Sequence[str | os.PathLike[str]]) -> list[str]:
    """Files, directories (their files named as ``CSV_SUFFIXES``, ``PARQUET_SUFFIXES`` or
    ``JSON_LINES_SUFFIXES`` say, in their subfolders too, as Spark writes partitions:
    ``date=2026-11-11/part-0.parquet``; sorted by path; names starting with '.' or '_', such as
    Spark's ``_SUCCESS`` and ``_temporary``, left out), glob patterns (of either, empty files
    left out), or '-' for CSV on stdin -> the list of files to read, in order."""
    files: list[str] = []
    for item in map(str, inputs):
        path = Path(item)
        if item == "-" or path.is_file():
            files.append(item)
        elif path.is_dir():
            found = _table_files(path)
            if found and not (found := _with_bytes(found)):
                raise DataError(f"directory {item} holds only empty files; nothing to read")
            if not found:
                raise DataError(
                    f"directory {item} holds no files to read, in it or its subfolders (files "
                    f"named {', '.join(CSV_SUFFIXES + PARQUET_SUFFIXES + JSON_LINES_SUFFIXES)})"
                )
            files.extend(found)
        elif glob.has_magic(item):
            found = sorted(p for p in _globbed(item) if Path(p).is_file())
            if not found:
                raise DataError(f"no file matches {item}; check the pattern")
            if not (found := _with_bytes(found)):
                raise DataError(f"every file {item} matches is empty; nothing to read")
            files.extend(found)
        else:
            raise DataError(f"input file {item} does not exist")
    if files.count("-") > 1:
        raise DataError("'-' (stdin) can be given once only")
    # Each file once, however many inputs name it (a folder and a file in it) and through
    # whatever links ('**' follows them, around loops): read twice, its rows would count twice.
    seen: set[str] = set()
    unique = []
    for name in files:
        real = name if name == "-" else os.path.realpath(name)
        if real not in seen:
            seen.add(real)
            unique.append(name)
    return unique


def _with_bytes(files: list[str]) -> list[str]:
    """``files`` less the empty ones a folder or a pattern takes in (no bytes, a gzip of
    nothing, blank lines): an export's empty shard holds no rows, and stopped the whole run
    ("is empty") where Spark's reader passes it by. A file named on its own that is empty is
    still an error."""
    return [f for f in files if not _holds_nothing(f)]


#: The bytes read of a file to tell whether it holds nothing but blank lines.
_EMPTY_PEEK = 65_536


def _holds_nothing(path: str) -> bool:
    """Whether ``path`` (gzip or not) holds no byte but white space, read up to its end within
    its first ``_EMPTY_PEEK`` bytes (a larger file holds something)."""
    if os.path.getsize(path) == 0:
        return True
    try:
        with open(path, "rb") as raw:
            gzipped = raw.read(2) == b"\x1f\x8b"
        opener = gzip.open if gzipped else open
        with opener(path, "rb") as handle:
            head = handle.read(_EMPTY_PEEK + 1)
    except (OSError, EOFError):
        return False  # unreadable: its reader says so
    return len(head) <= _EMPTY_PEEK and not head.strip()


def _globbed(pattern: str) -> list[str]:
    """``glob``'s matches, without those reached through a link to a folder above the
    pattern's fixed part ('**' walks into links, round a loop until paths get too long)."""
    matches = glob.glob(pattern, recursive=True)
    if "**" not in pattern:
        return matches
    return [m for m in matches if not _through_a_loop(Path(m))]


def _through_a_loop(path: Path) -> bool:
    """Whether some folder on ``path`` is a link to one of the folders above it."""
    above: list[str] = []
    for parent in reversed(path.parents):
        if parent.is_symlink() and os.path.realpath(parent) in above:
            return True
        above.append(os.path.realpath(parent))
    return False


def _table_files(folder: Path) -> list[str]:
    """The files of ``folder`` and its subfolders ``expand_inputs`` reads, sorted by path."""
    found = []
    for root, dirs, names in os.walk(folder):
        dirs[:] = [d for d in dirs if not d.startswith((".", "_"))]  # pruned: not walked
        found += [
            os.path.join(root, n)
            for n in names
            if not n.startswith((".", "_"))
            and _is_table_name(n)
            and os.path.isfile(os.path.join(root, n))
        ]
    return sorted(found, key=lambda p: Path(p).parts)


def picked_up_by(path: str | os.PathLike[str], item: str | os.PathLike[str]) -> bool:
    """Whether input ``item``, a directory or a glob pattern, takes in a file at ``path``
    (whether or not it exists yet), as ``expand_inputs`` would read them."""
    target, item = Path(path).resolve(), str(item)
    if Path(item).is_dir():
        folder = Path(item).resolve()
        if folder not in target.parents:
            return False
        inside = target.relative_to(folder).parts
        return not any(part.startswith((".", "_")) for part in inside) and _is_table_name(
            target.name
        )
    if glob.has_magic(item):
        return target.match(str(Path(item).resolve())) or Path(path).match(item)
    return False


def _is_table_name(name: str) -> bool:
    lower = name.lower()
    return lower.endswith(CSV_SUFFIXES + PARQUET_SUFFIXES + JSON_LINES_SUFFIXES)


def check_names(names: Sequence[str], source: str) -> None:
    if any("\x00" in n for n in names):
        # Not a name anyone gave: a binary file, or UTF-16 text without its byte-order mark.
        raise DataError(
            f"the header of {source} holds NUL bytes, so it is not CSV text (a binary file, or "
            "UTF-16 without a byte-order mark, whose encoding is utf-16-le or utf-16-be); "
            f"{encoding_fix(None, 'utf-16-le')}"
        )
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
