"""JSON Lines: one JSON object a line, as log shippers (Vector, Fluent Bit), ``jq -c`` and
most event exports write records.

One set of rules for a line, whether it comes in a file (``JsonLinesSource``, for batch
scoring, evaluation and training) or in an HTTP body (``service.bodies``): a line that is not
JSON, not an object, names a key twice, or holds an object or list as a value is rejected on
its own, with its line number and why; the other lines are scored.

In a file, each record's values become text, as a CSV file would hold them (a number in its
shortest round-trip form, ``true``/``false``, ``null`` or an absent key as missing), so a
JSON Lines file scores exactly as the CSV of the same values does. Its columns are the keys of
its first records (up to ``COLUMNS_FROM_BYTES`` of them), in the order first seen, and those
the caller reads (a model's, the kept ones) where the first records leave them out: a later
record with a key outside them is rejected, naming the key, rather than scored without it.
A series key column (``keys``) is the one exception: a JSON number there is the series an HTTP
body's is (7.0 and 1e3 are the series '7' and '1000', ``key_texts``), its string as written.
"""

from __future__ import annotations

import codecs
import gzip
import io
import json
import math
import os
import re
import sys
import threading
import time
import zlib
from collections import Counter
from collections.abc import Iterator, Sequence
from functools import partial
from operator import itemgetter
from typing import Any

import numpy as np
import pyarrow as pa

from detector.errors import DataError
from detector.features.encode import listed
from detector.io.chunks import ParseReject, SourceChunk, TableSource
from detector.io.csv_lines import megabytes
from detector.io.csv_source import is_live, pipe_is_quiet
from detector.io.transcode import encoding_fix, read_as, transcoded

#: The first records' bytes whose keys make a file's columns: records that leave out a key
#: whose value is null (as many serialisers do) still give the file every column, however few
#: of them the very first record holds.
COLUMNS_FROM_BYTES = 1 << 20
#: A line longer than this is not a record (a JSON document without line breaks).
MAX_LINE_BYTES = 64 << 20
_READ_BYTES = 1 << 20
#: A \uD800-\uDFFF escape: the one way JSON text carries a surrogate. Paired, json decodes it
#: to one character; alone, it becomes a string no UTF-8 (nor pandas' Arrow strings) takes.
SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


class RepeatedKeys(dict[str, Any]):
    """A JSON object that named a key more than once. ``json`` keeps the last value without a
    word, so ``{"cpu": 1, "cpu": 99}`` would be scored as 99; this keeps which keys repeated,
    for the caller to refuse the object (a record alone, or a request)."""

    repeated: tuple[str, ...] = ()


def json_object(found: list[RepeatedKeys] | None, pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """``json``'s ``object_pairs_hook``: a dict, or a ``RepeatedKeys`` (also added to
    ``found``, where given) where a key came more than once."""
    value = dict(pairs)
    if len(value) == len(pairs):
        return value
    counts = Counter(k for k, _ in pairs)
    repeated = RepeatedKeys(value)
    repeated.repeated = tuple(k for k, n in counts.items() if n > 1)
    if found is not None:
        found.append(repeated)
    return repeated


class Unparsed:
    """A line that holds no JSON value: rejected as its record, with ``reason``, while the
    other lines are scored."""

    def __init__(self, reason: str) -> None:
        self.reason = reason


#: One decoder a thread for every line (``json.loads`` with a hook makes one a call: a tenth of
#: a file's reading; a thread of its own, as the C scanner's key memo is the decoder's); a
#: line's repeated keys are told by its value's type.
_DECODERS = threading.local()


def _line_decoder() -> json.JSONDecoder:
    decoder: json.JSONDecoder | None = getattr(_DECODERS, "decoder", None)
    if decoder is None:
        decoder = json.JSONDecoder(object_pairs_hook=partial(json_object, None))
        _DECODERS.decoder = decoder
    return decoder


def parse_line(number: int, line: bytes, *, hint: str = "send one object a line") -> Any:
    """Line ``number`` (1-based) parsed, or ``Unparsed`` naming why it is not JSON (bad UTF-8
    or JSON, nested too deeply, a lone surrogate escape)."""
    try:
        text = line.decode("utf-8-sig" if number == 1 else "utf-8")
        value = _line_decoder().decode(text)
        if SURROGATE_ESCAPE.search(text):
            json.dumps(value, ensure_ascii=False).encode()  # raises on a lone surrogate
    except (ValueError, RecursionError) as exc:  # UnicodeError is a ValueError
        reason = "nested too deeply" if isinstance(exc, RecursionError) else json_error(exc)
        return Unparsed(f"line {number} is not JSON ({reason})" + (f"; {hint}" if hint else ""))
    return value


#: What a file's line that is not JSON is told to be.
_HINT = "write one object a line"


def _at_line(number: int, problem: str) -> str:
    return problem if problem.startswith("line ") else f"line {number}: {problem}"


def json_error(exc: ValueError) -> str:
    """Why JSON text did not parse, in a client's words: Python's own advice for a number of
    thousands of digits ("use sys.set_int_max_str_digits()") is none a client can take."""
    if "integer string conversion" in str(exc):
        return f"a number of more than {sys.get_int_max_str_digits()} digits"
    return str(exc)


def record_problem(record: Any) -> str | None:
    """Why a parsed JSON value is not a record to score (``None`` when it is one): not an
    object, a key given twice, a value that is an object or a list."""
    if isinstance(record, Unparsed):
        return record.reason
    if not isinstance(record, dict):
        return "record is not a JSON object"
    if isinstance(record, RepeatedKeys):
        return f"field(s) {listed(record.repeated)} given more than once; send each once"
    nested = [k for k, v in record.items() if isinstance(v, dict | list)]
    if nested:
        return f"field(s) {listed(nested)} hold objects or lists; values must be numbers or text"
    return None


def as_text(value: Any) -> str | None:
    """A JSON value as a CSV field would hold it: ``None`` (missing) for null."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value) if isinstance(value, float) else str(value)


class JsonLinesSource(TableSource):
    """A JSON Lines file (plain or gzip, or a stream such as stdin) read in blocks of lines.

    Each non-blank line is a data record: ``row_numbers`` count them, ``lines`` are physical
    line numbers. Every value is text (``as_text``), so nothing is guessed here and a bad value
    is rejected by the scorer with its reason, as a CSV file's is. A pipe hands on the records
    it has given once it has been quiet for ``csv_source.LINGER_SECONDS``, as a CSV stream does.
    """

    delimiter = None

    def __init__(
        self,
        name: str,
        binary: Any,
        *,
        owned: bool = True,
        expected: Sequence[str] = (),
        encoding: str | None = None,
        keys: Sequence[str] = (),
    ) -> None:
        """``encoding``: the text's (``transcode.encoding_name``), ``None`` for UTF-8.
        ``keys``: a series model's key columns, whose numbers are written as ``key_texts``."""
        self.name = name
        self._key_columns = frozenset(keys)
        self._encoding = encoding
        self._binary, self._owned = binary, owned
        self._stream: Any = binary
        self._live = False
        self.size = None
        try:
            if binary.peek(2)[:2] == b"\x1f\x8b":
                self._stream = gzip.GzipFile(fileobj=binary, mode="rb")
            else:
                self._live = is_live(binary)
            if not self._live:
                self.size = _size(binary)
            if encoding is not None:
                self._stream = transcoded(self._stream, encoding)
            self._lines: list[bytes] = []
            self._tail = b""
            self._eof = False
            self._first_line = 1
            self.columns = self._read_columns(expected)
        except BaseException:
            self.close()
            raise

    @classmethod
    def of_path(
        cls,
        path: str,
        *,
        expected: Sequence[str] = (),
        encoding: str | None = None,
        keys: Sequence[str] = (),
    ) -> JsonLinesSource:
        # Closed by close().
        return cls(path, open(path, "rb"), expected=expected, encoding=encoding, keys=keys)

    def close(self) -> None:
        if not self._owned:
            return  # a descriptor this source was lent (stdin)
        if self._stream is not self._binary:
            self._stream.close()
        self._binary.close()

    # -- reading lines -------------------------------------------------------------------

    def _read_more(self) -> None:
        """Read the next bytes onto ``_lines`` (whole lines) and ``_tail`` (the rest)."""
        try:
            data = self._stream.read1(_READ_BYTES) if self._live else self._stream.read(_READ_BYTES)
        except (OSError, EOFError, zlib.error) as exc:
            raise DataError(
                f"cannot read {self.name}: {exc} (a truncated or corrupt gzip file?)"
            ) from None
        if not data:
            self._eof = True
            if self._tail:
                self._lines.append(self._tail)
                self._tail = b""
            return
        data = self._tail + data
        cut = data.rfind(b"\n")
        if cut < 0:
            self._tail = data
        else:
            self._lines.extend(data[:cut].split(b"\n"))
            self._tail = data[cut + 1 :]
        if len(self._tail) > MAX_LINE_BYTES:
            line = self._first_line + len(self._lines)
            raise DataError(
                f"{self.name}: line {line} is longer than {megabytes(MAX_LINE_BYTES)}; JSON Lines "
                "hold one record a line (jq -c writes them so)"
            )

    def _read_columns(self, expected: Sequence[str]) -> tuple[str, ...]:
        """The keys of the records in the first ``COLUMNS_FROM_BYTES`` (at least one record),
        in the order first seen; lines are kept for ``chunks``. A pipe's first records give
        them as soon as they come, rather than after a megabyte."""
        keys: dict[str, None] = {}
        first_problem = None
        seen = size = 0
        while True:
            if seen == 0 and self._lines and self._lines[0].startswith(codecs.BOM_UTF8):
                self._lines[0] = self._lines[0][len(codecs.BOM_UTF8) :]
            for number, line in enumerate(self._lines[seen:], start=seen + 1):
                size += len(line)
                if not line.strip():
                    continue
                record = parse_line(number, line, hint="")  # the error says what to do
                problem = record_problem(record)
                if problem is None:
                    keys.update(dict.fromkeys(record))
                elif first_problem is None:
                    first_problem = _at_line(number, problem)
                if keys and size >= COLUMNS_FROM_BYTES:
                    break
            seen = len(self._lines)
            if self._eof or size >= COLUMNS_FROM_BYTES or (keys and self._live):
                break
            self._read_more()
        if keys:
            names = self._named(tuple(keys))
            absent = [c for c in dict.fromkeys(expected) if c not in self._keys]
            self._keys.update((c, c) for c in absent)
            return names + tuple(absent)
        if not any(line.strip() for line in self._lines) and self._eof:
            raise DataError(f"{self.name} is empty: give JSON Lines, one record (object) a line")
        whole = b"\n".join(self._lines[:2]).lstrip()
        if whole.startswith(b"["):
            raise DataError(
                f"{self.name} holds a JSON array, not JSON Lines (one object a line); write it "
                f"as JSON Lines, e.g. jq -c '.[]' {self.name} > records.jsonl"
            )
        raise DataError(
            f"{self.name} is not JSON Lines: no line of its first "
            f"{megabytes(COLUMNS_FROM_BYTES)} is a JSON object ({first_problem}); write one "
            f"object a line, e.g. jq -c . {self.name} > records.jsonl"
        )

    def _named(self, keys: tuple[str, ...]) -> tuple[str, ...]:
        """The columns: the keys stripped of spaces, as a CSV header's names are."""
        names = tuple(k.strip() for k in keys)
        problems = [
            "one is empty" if not n else f"{n!r} is named more than once"
            for n, count in Counter(names).items()
            if not n or count > 1
        ]
        if problems:
            raise DataError(
                f"{self.name}: the keys of its first records are its columns, and {problems[0]} "
                "(spaces around a key do not count); give every field a name of its own"
            )
        self._keys = dict(zip(names, keys, strict=True))
        return names

    def _due(self, since: float) -> bool:
        return self._live and pipe_is_quiet(self._binary, since)

    # -- blocks of records ---------------------------------------------------------------

    def chunks(self, chunk_rows: int) -> Iterator[SourceChunk]:
        row = 0
        since = time.monotonic()
        while True:
            while not self._eof and len(self._lines) < chunk_rows:
                if self._lines and self._due(since):
                    break  # a pipe: hand on the lines it gave, rather than wait for more
                self._read_more()
            if not self._lines:
                return
            block = self._lines[:chunk_rows]
            del self._lines[:chunk_rows]
            chunk = self._chunk(block, self._first_line, row)
            self._first_line += len(block)
            row += chunk.n_read
            if chunk.n_read:
                yield chunk
            since = time.monotonic()

    def _chunk(self, block: list[bytes], first_line: int, row: int) -> SourceChunk:
        """A block's records as a table of text columns, and the lines that are none.

        Kept to C-level steps per record where it can be (a record of the file's keys is a
        tuple by ``itemgetter``, the tuples become columns by ``zip``, a column of plain
        numbers and text becomes text by ``map(str)``): record by record in Python, 200,000
        records took 6.1 s."""
        keys = [self._keys[c] for c in self.columns]
        known = set(keys)
        get = itemgetter(*keys) if len(keys) > 1 else lambda r: (r[keys[0]],)
        records: list[tuple[Any, ...]] = []
        rows: list[int] = []
        lines: list[int] = []
        raws: list[bytes] = []
        rejects: list[ParseReject] = []
        for offset, line in enumerate(block):
            if not line.strip():
                continue
            number = first_line + offset
            row += 1
            record = parse_line(number, line, hint=_HINT)
            if type(record) is dict and record.keys() <= known:  # not RepeatedKeys
                try:
                    found = get(record)
                except KeyError:  # a key left out: missing
                    found = tuple(record.get(k) for k in keys)
                records.append(found)
                rows.append(row)
                lines.append(number)
                raws.append(line)
                continue
            problem = record_problem(record) or self._unknown(record)
            rejects.append(self._reject(row, number, line, problem))
        columns = list(zip(*records, strict=True)) if records else [() for _ in keys]
        nested = sorted(
            {i for c in columns if not _PLAIN.issuperset(map(type, c)) for i in _nested_at(c)}
        )
        if nested:  # rare: those records are rejected, the others kept
            for i in nested:
                reason = str(record_problem(parse_line(lines[i], raws[i])))
                rejects.append(self._reject(rows[i], lines[i], raws[i], reason))
            keep = np.ones(len(rows), dtype=bool)
            keep[nested] = False
            columns = [tuple(v for v, k in zip(c, keep, strict=True) if k) for c in columns]
            rows, lines = list(np.asarray(rows)[keep]), list(np.asarray(lines)[keep])
            raws = [r for r, k in zip(raws, keep, strict=True) if k]
        arrays = [
            pa.array(key_texts(c) if n in self._key_columns else _texts(c), pa.string())
            for n, c in zip(self.columns, columns, strict=True)
        ]
        table = pa.table(dict(zip(self.columns, arrays, strict=True)))

        def raw_text(i: int) -> str:
            return raws[i].decode("utf-8", errors="replace")

        return SourceChunk(
            source=self.name,
            table=table,
            row_numbers=np.asarray(rows, dtype=np.int64),
            lines=np.asarray(lines, dtype=np.int64),
            rejects=tuple(rejects),
            position=self._position(),
            raw_text=raw_text,
        )

    def _unknown(self, record: dict[str, Any]) -> str:
        known = set(self._keys.values())
        unknown = [k for k in record if k not in known]
        return (
            f"field(s) {listed(unknown)} not among the file's columns (the keys of its first "
            f"records: {listed(self.columns)}); give every record's keys in the first records, "
            "with null where a value is missing"
        )

    def _reject(self, row: int, number: int, line: bytes, problem: str) -> ParseReject:
        code = "encoding" if "codec can't decode" in problem else "malformed"
        if code == "encoding":  # the codec's words named UTF-8 where --encoding named another
            problem = f"line {number} is not {read_as(self._encoding)} text; " + encoding_fix(
                self._encoding
            )
        text = line.decode("utf-8", errors="replace")
        return ParseReject(self.name, row, number, code, problem, text)

    def _position(self) -> int:
        try:
            return int(self._binary.tell())
        except OSError:
            return 0


#: The types of JSON values that are text as ``str`` writes them (a float in its shortest
#: round-trip form, as ``repr``).
_PLAIN = frozenset({str, int, float})


def _texts(values: Sequence[Any]) -> list[str | None]:
    """A column's values as text (``as_text``)."""
    if _PLAIN.issuperset(map(type, values)):
        return list(map(str, values))
    return [as_text(v) for v in values]


def key_texts(values: Sequence[Any]) -> list[str | None]:
    """A series key column's values as text: a JSON number holding a whole number as its
    digits (7.0 and 1e3 are '7' and '1000', as ``series.windows.key_number`` keys an HTTP
    body's record), any other value as ``as_text`` (the string "7.0" stays '7.0')."""
    return [
        str(int(v)) if type(v) is float and math.isfinite(v) and v % 1 == 0 else as_text(v)
        for v in values
    ]


def _nested_at(values: Sequence[Any]) -> list[int]:
    return [i for i, v in enumerate(values) if isinstance(v, dict | list)]


def _size(binary: Any) -> int | None:
    try:
        return os.fstat(binary.fileno()).st_size
    except (OSError, ValueError, io.UnsupportedOperation):
        return None


def json_lines_table(
    path: str, *, encoding: str | None = None, keys: Sequence[str] = ()
) -> pa.Table:
    """A whole JSON Lines file (its text in ``encoding``, ``None`` for UTF-8) as a table of
    text columns, for training: a record that cannot be read is a ``DataError`` naming its
    line (a training table must be whole; scoring rejects such a record alone). ``keys``: a
    series model's key columns (``key_texts``)."""
    return pa.concat_tables(json_lines_tables(path, encoding=encoding, keys=keys))


#: Lines a block of ``json_lines_tables`` reads at most.
_BLOCK_LINES = 65_536


def json_lines_tables(
    path: str,
    *,
    encoding: str | None = None,
    chunk_rows: int | None = None,
    keys: Sequence[str] = (),
) -> Iterator[pa.Table]:
    """``json_lines_table``'s table in tables of ``chunk_rows`` records (the last fewer; a
    file of no more records is one table), read a block of lines at a time, so that a long
    file is never held whole; ``None``: one table, the whole file's."""
    held: list[pa.Table] = []
    count = 0
    told = False
    with JsonLinesSource.of_path(path, encoding=encoding, keys=keys) as source:
        block = _BLOCK_LINES if chunk_rows is None else min(chunk_rows, _BLOCK_LINES)
        for chunk in source.chunks(block):
            if chunk.rejects:
                first = chunk.rejects[0]
                raise DataError(
                    f"{path}: line {first.line}: {first.reason}; fix or remove that line "
                    "(anomaly score rejects such a line alone, but a model is trained on whole "
                    "files)"
                )
            held.append(chunk.table)
            count += chunk.table.num_rows
            while chunk_rows is not None and count > chunk_rows:
                whole = pa.concat_tables(held)
                yield whole.slice(0, chunk_rows)
                told = True
                held, count = [whole.slice(chunk_rows)], count - chunk_rows
    if not held:
        raise DataError(f"{path} has no records; give JSON Lines, one record (object) a line")
    if count or not told:
        yield held[0] if len(held) == 1 else pa.concat_tables(held)
