"""Batch scoring of files, chunk by chunk, with a ledger of every row.

Each chunk goes through ``detector.scoring.scores.score_frame``, the same function the HTTP service
calls. Rows read = rows scored + rows rejected, always and per file; rejected rows go to a
rejects file with their source file, row and line numbers, reason and raw text.

Memory is bounded by the chunk size, not the file size: a source is read in blocks of whole
records (``detector.io.sources.open_source``), scored, written and let go before the next block.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pyarrow as pa
from tqdm.auto import tqdm

from detector.batch.ledger import (
    BatchReport,
    RejectRateExceeded,
    SourceLedger,
    check_reject_rate,
)
from detector.batch.scored_chunks import (
    PreparedChunk,
    chunk_rows_for,
    prepare,
    score_prepared,
)
from detector.batch.scored_tables import scored_rows
from detector.bundles.bundle import Bundle
from detector.errors import ConfigError, DataError, SchemaError
from detector.features.encode import Imputation, check_columns
from detector.features.encoded import NumberTally, SpellingTally
from detector.io.chunks import ParseReject, SourceChunk, TableSource
from detector.io.sources import open_source
from detector.io.tables import DEFAULT_CHUNK_ROWS, expand_inputs, table_format
from detector.io.temporaries import (
    check_not_an_input,
    check_not_read_back,
    check_rejects_target,
)
from detector.io.threads import BackgroundSink, prefetched
from detector.io.transcode import encoding_name
from detector.io.writers import TableWriter
from detector.scoring.neighbours import fewer_search_threads
from detector.scoring.output_columns import names_taken
from detector.scoring.scores import ScoreResult
from detector.series.windows import (
    DEFAULT_MAX_AHEAD_SECONDS,
    DEFAULT_MAX_SERIES,
    SeriesState,
    key_spelling_warning,
)
from detector.wording import option


def score_file(
    bundle: Bundle,
    input_path: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    output_path: str | os.PathLike[str],
    *,
    keep_columns: Sequence[str] = (),
    impute: Imputation = None,
    rejects_path: str | os.PathLike[str] | None = None,
    top_k: int = 3,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    progress: bool = False,
    max_reject_rate: float | None = None,
    max_ahead_seconds: float | None = DEFAULT_MAX_AHEAD_SECONDS,
    stream_format: str | None = None,
    max_series: int = DEFAULT_MAX_SERIES,
    escape_formulas: bool = False,
    encoding: str | None = None,
) -> BatchReport:
    """Score one or more files (or '-', directories, glob patterns) into ``output_path``.

    The output holds the input's columns followed by ``anomaly_score`` (higher = more
    anomalous), ``p_value``, ``is_anomaly``, ``context_unseen`` (conditional models only) and
    ``top_feature_1..k``; rejected rows go to
    ``rejects_path`` (default: beside the output, ``<output>.rejects.csv``). Both are written
    atomically. An ``output_path`` of '-' is CSV on standard output, written chunk by chunk,
    and the rejected rows then go to standard error unless ``rejects_path`` is given. With
    ``max_reject_rate``, a run that rejects a larger share of its rows raises
    ``RejectRateExceeded`` and writes no output (the rejects file is still written).
    ``stream_format`` (``csv``, the default, or ``jsonl``) is the format of what goes to
    standard output or error; a file's name says its own. A series
    model's row stamped more than ``max_ahead_seconds`` after this machine's clock is rejected
    (``None``: never), so that one wrong clock does not make its series' later rows late.
    At most ``max_series`` series are kept; past it the least recently seen is evicted, and
    warms up again if it comes back (``BatchReport.series_evicted`` counts them).
    A CSV text cell that a spreadsheet would run as a formula (``=HYPERLINK(...)``) is written
    as it was read, and counted (``BatchReport.formula_cells``), or, with ``escape_formulas``,
    written with a leading ``'``. ``encoding``: the CSV and JSON Lines inputs' text encoding
    ('cp1252', 'utf-16'), where not UTF-8; a row that does not decode in it is rejected.
    """
    started = time.perf_counter()
    encoding = encoding_name(encoding)
    inputs = [input_path] if isinstance(input_path, str | os.PathLike) else list(input_path)
    files = expand_inputs(inputs)
    if rejects_path is not None or output_path != "-":
        rejects = rejects_path or f"{output_path}.rejects.csv"
        check_rejects_target(rejects, output_path, [f for f in files if f != "-"])
        if output_path != "-":
            check_not_an_input(output_path, [f for f in files if f != "-"], "--output")
        check_not_read_back([t for t in (output_path, rejects) if t != "-"], inputs)
    if chunk_rows < 1:
        raise DataError(f"{option('chunk_rows')} must be at least 1, not {chunk_rows}")
    streamed_as = check_stream_format(stream_format, output_path, rejects_path)
    check_max_series(max_series)
    run = _Run(
        bundle, output_path, rejects_path, keep_columns, impute, top_k, progress, files,
        max_ahead_seconds, streamed_as, max_series, escape_formulas, encoding,
    )  # fmt: skip
    # A series' windows are made in the reading thread while the search runs: a core left to
    # it scores 1.3x more rows a second on 2 cores (a table's reading is light: all cores).
    sharing = bundle.series is not None and bundle.neighbours is not None
    try:
        with fewer_search_threads(1 if sharing else 0):
            for path in files:
                run.score_source(path, chunk_rows)
        run.finish()
    except BaseException:
        run.abort()
        raise
    report = run.report(inputs, time.perf_counter() - started)
    if report.rows_read == 0:
        run.discard()
        raise DataError(
            f"{' '.join(map(str, inputs))} has a header but no data rows; nothing to score"
        )
    try:
        check_reject_rate(report, max_reject_rate)
    except RejectRateExceeded:
        run.discard()
        raise
    try:
        run.commit()
    except BaseException:
        run.abort()  # a full disk at the last rows: no partial file left beside the output
        raise
    return report


STREAM_FORMATS = ("csv", "jsonl")


def check_stream_format(
    stream_format: str | None,
    output_path: str | os.PathLike[str],
    rejects_path: str | os.PathLike[str] | None,
) -> str:
    """The format written to standard output or error: ``stream_format``, CSV where none is
    given. A file's format is its name's: one given that contradicts the output's name is
    refused (it was ignored)."""
    if stream_format is None:
        return "csv"
    if stream_format not in STREAM_FORMATS:
        raise ConfigError(
            f"{option('stream_format')} {stream_format!r} is not a format for standard output; "
            f"give one of {', '.join(STREAM_FORMATS)}"
        )
    if str(output_path) != "-" and table_format(output_path) != stream_format:
        raise ConfigError(
            f"{option('stream_format')} {stream_format} contradicts the output {output_path}, "
            "whose name says its format; leave the option out (it is the format of standard "
            "output, '-'), or name the file for the format you want"
        )
    return stream_format


def check_max_series(max_series: int) -> None:
    if isinstance(max_series, bool) or not isinstance(max_series, int) or max_series < 1:
        raise ConfigError(
            f"{option('max_series')} {max_series!r} must be a whole number of series, 1 or more"
        )


@dataclass(eq=False)
class _Run:
    """The state of one ``score_file`` call: writers, the ledger so far, the progress bar."""

    bundle: Bundle
    output_path: str | os.PathLike[str]
    rejects_path: str | os.PathLike[str] | None
    keep_columns: Sequence[str]
    impute: Imputation
    top_k: int
    progress: bool
    files: list[str]
    max_ahead_seconds: float | None
    stream_format: str
    max_series: int
    escape_formulas: bool
    encoding: str | None
    ledgers: list[SourceLedger] = field(default_factory=list)
    anomalies: int = 0
    columns: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        escape = self.escape_formulas
        self.writer = TableWriter(
            self.output_path, stream_format=self.stream_format, escape_formulas=escape
        )
        # Written in a background thread while the next chunk scores.
        self.sink: BackgroundSink[tuple[PreparedChunk, ScoreResult]] = BackgroundSink(self._write)
        if self.rejects_path is None and self.output_path == "-":
            # The scores fill standard output: the rejected rows, as CSV, go to standard error
            # with the summary, rather than to a file the user did not name.
            self.rejects_target = "<stderr>"
            self.rejects_writer = TableWriter(
                self.rejects_target,
                stream=sys.stderr.buffer,
                stream_format=self.stream_format,
                escape_formulas=escape,
            )
        else:
            self.rejects_target = str(self.rejects_path or f"{self.output_path}.rejects.csv")
            self.rejects_writer = TableWriter(
                self.rejects_target, stream_format=self.stream_format, escape_formulas=escape
            )
        self.n_rejects = 0
        self.codes: Counter[str] = Counter()
        self.spellings = SpellingTally()
        self.typed_numbers = self.writer.format in ("parquet", "jsonl")
        sizes = [None if f == "-" else os.path.getsize(f) for f in self.files]
        total = None if None in sizes else sum(s or 0 for s in sizes)
        self.bar = tqdm(
            total=total,
            unit="B",
            unit_scale=True,
            unit_divisor=1024,
            desc="scoring",
            disable=not self.progress,
            dynamic_ncols=True,
        )
        self.rows_done = 0
        self.started = time.perf_counter()
        # A series model's rows of each series so far, across chunks and files: each series
        # must come in time order (any order within a chunk).
        series = self.bundle.series
        ahead = self.max_ahead_seconds
        self.state = (
            None
            if series is None
            else SeriesState(series, max_keys=self.max_series, max_ahead_seconds=ahead)
        )

    def score_source(self, path: str, chunk_rows: int) -> None:
        read = scored = rejected = 0
        tally = NumberTally()
        chunk_rows = chunk_rows_for(self.bundle, chunk_rows)
        expected = (*self.bundle.input_columns, *self.keep_columns)
        series = self.bundle.series
        with open_source(
            path,
            expected=expected,
            exact=self._passthrough,
            encoding=self.encoding,
            keys=() if series is None else series.key_columns,
        ) as source:
            columns = self._check(source.columns, source.name)
            seen = 0
            # Three threads, each on its own chunk: the next chunk is read, parsed and encoded
            # in one, this one goes through the model in this one, and the one before is
            # formatted and written in a third.
            for item in prefetched(self._prepared(source, columns, chunk_rows)):
                chunk = item.chunk
                if item.encoded is not None:
                    tally.add(item.encoded)
                    if item.checked is not None:
                        tally.add(item.checked)
                    if item.own is not None:
                        self.spellings.add(item.own)
                    result = self._scored(item)
                    self.sink.put((item, result))
                    scored += result.n_scored
                    self.anomalies += int(result.is_anomaly.sum())
                    value_rejects = _value_rejects(chunk, result)
                else:
                    value_rejects = []
                # In the input's order, as its rows are: a reader matches them by eye.
                rejects = sorted([*chunk.rejects, *value_rejects], key=lambda r: r.row_number)
                self._write_rejects(rejects)
                rejected += len(chunk.rejects) + len(value_rejects)
                read += chunk.n_read
                self._advance(chunk, seen, chunk.n_read)
                seen = max(seen, chunk.position)
        # Over the whole file, so that the outcome cannot depend on where chunks fall.
        tally.check(source.name)
        self.ledgers.append(SourceLedger(source.name, read, scored, rejected))

    def _scored(self, item: PreparedChunk) -> ScoreResult:
        return score_prepared(self.bundle, item, self.state)

    def _prepared(
        self, source: TableSource, columns: tuple[str, ...], chunk_rows: int
    ) -> Iterator[PreparedChunk]:
        """Each chunk with its output columns selected and the model's frame made and encoded.

        A CSV output copies the input's records as they were read where it can (same
        delimiter, same column order) instead of formatting every field again.
        """
        same_order = tuple(source.columns) == columns
        copy_records = (
            self.writer.format == "csv" and source.delimiter == self.writer.delimiter and same_order
        )
        for chunk in source.chunks(chunk_rows):
            table = chunk.table
            if not same_order:
                table = table.select(list(columns))
            if not copy_records and chunk.records is not None:
                chunk = replace(chunk, records=None)
            yield prepare(self.bundle, chunk, table, self.state, self.impute)

    def _write(self, scored: tuple[PreparedChunk, ScoreResult]) -> None:
        item, result = scored
        assert item.frame is not None  # only chunks with rows are scored
        part = scored_rows(
            self.bundle,
            item.table,
            result,
            top_k=self.top_k,
            typed_numbers=self.typed_numbers,
            frame=item.frame,
            records=item.chunk.records,
        )
        self.writer.write(
            part.table, leading_text=part.leading_text, leading_columns=part.leading_columns
        )

    @property
    def _passthrough(self) -> list[str]:
        """The kept columns the model does not read: their text is written as it came ('NA'
        may be a country), where the model's columns read such text as missing."""
        return [c for c in self.keep_columns if c not in self.bundle.input_columns]

    def _check(self, columns: tuple[str, ...], source: str) -> tuple[str, ...]:
        keep = list(self.keep_columns)
        absent = [c for c in keep if c not in columns]
        if absent:
            raise SchemaError(
                f"{option('keep_columns')} {absent} not in {source}; its columns are "
                f"{list(columns)}"
            )
        context, series = bool(self.bundle.schema.context), self.bundle.series is not None
        clash = names_taken(columns, context=context, series=series, spark=False)
        if clash:
            raise SchemaError(
                f"{source} already has column(s) {clash}, which scoring adds; drop or rename them"
            )
        try:
            check_columns(
                self.bundle.schema, columns, passthrough=keep, expected=self.bundle.input_columns
            )
        except SchemaError as exc:  # of a directory's files, name the one to fix
            raise SchemaError(f"{source}: {exc}") from None
        if self.columns is None:
            self.columns = columns
        elif set(columns) != set(self.columns):
            raise SchemaError(
                f"{source} has columns {list(columns)}, unlike the first input's "
                f"{list(self.columns)}; score files with different columns separately"
            )
        return self.columns

    def _write_rejects(self, rejects: Sequence[ParseReject]) -> None:
        if not rejects:
            return
        self.n_rejects += len(rejects)
        self.codes.update(r.code for r in rejects)
        self.rejects_writer.write(
            pa.table(
                {
                    "row": pa.array([r.row_number for r in rejects], pa.int64()),
                    "source": pa.array([r.source for r in rejects], pa.string()),
                    "line": pa.array([r.line for r in rejects], pa.int64()),
                    "code": pa.array([r.code for r in rejects], pa.string()),
                    "reason": pa.array([r.reason for r in rejects], pa.string()),
                    "raw": pa.array([r.raw for r in rejects], pa.string()),
                }
            )
        )

    def _advance(self, chunk: SourceChunk, seen: int, rows: int) -> None:
        self.rows_done += rows
        if chunk.position > seen:
            self.bar.update(chunk.position - seen)
        elapsed = time.perf_counter() - self.started
        if elapsed > 0:
            self.bar.set_postfix_str(
                f"{self.rows_done:,} rows, {self.rows_done / elapsed:,.0f} rows/s", refresh=False
            )

    def finish(self) -> None:
        self.sink.close()
        self.bar.close()
        if self.columns is None:  # every input was empty of rows; still a well-formed output
            self.columns = ()

    def report(self, inputs: Sequence[Any], seconds: float) -> BatchReport:
        read = sum(s.rows_read for s in self.ledgers)
        scored = sum(s.rows_scored for s in self.ledgers)
        rejected = sum(s.rows_rejected for s in self.ledgers)
        return BatchReport(
            input=" ".join(map(str, inputs)),
            output=str(self.output_path),
            rejects=self.rejects_target if rejected else None,
            rows_read=read,
            rows_scored=scored,
            rows_rejected=rejected,
            anomalies=self.anomalies,
            threshold=self.bundle.calibrator.threshold,
            model_version=self.bundle.version,
            files=tuple(self.ledgers),
            seconds=seconds,
            rejected_by_code=dict(self.codes.most_common()),
            series_evicted=0 if self.state is None else self.state.evicted,
            # Training warns of 'web-01' beside 'WEB-01 '; a scored file holding them split a
            # host's rows into two series, each warming up, without a word.
            series_key_spelling=(
                None
                if self.state is None
                else key_spelling_warning(self.state.keys(), self.state.spec)
            ),
            category_spelling=self.spellings.warning(),
            formula_cells=dict(self.writer.formula_cells),
            rejects_formula_cells=dict(self.rejects_writer.formula_cells),
            encoding=self.encoding,
        )

    def commit(self) -> None:
        # Both written out before either is renamed into place: a full disk that refused the
        # rejects' last rows had the scores in place, and the rows it rejected nowhere.
        self.writer.finish()
        if self.n_rejects:
            self.rejects_writer.finish()
        self.writer.publish()
        self._close_rejects()

    def discard(self) -> None:
        """Keep the rejects (they explain the failure), drop the output."""
        self.writer.abort()
        self._close_rejects()

    def _close_rejects(self) -> None:
        if self.n_rejects:
            self.rejects_writer.close()
            return
        self.rejects_writer.abort()
        if self.rejects_writer.stream is None:
            # An earlier run's rejects there would pass for this run's, which rejected none.
            Path(self.rejects_target).unlink(missing_ok=True)

    def abort(self) -> None:
        self.bar.close()
        with contextlib.suppress(BaseException):  # the error being handled is the one to raise
            self.sink.close()
        self.writer.abort()
        self.rejects_writer.abort()


def _value_rejects(chunk: SourceChunk, result: ScoreResult) -> list[ParseReject]:
    """The rows ``score_frame`` rejected (missing, unparseable or infinite values)."""
    lines = chunk.lines
    return [
        ParseReject(
            source=chunk.source,
            row_number=int(chunk.row_numbers[r.row]),
            line=None if lines is None else int(lines[r.row]),
            code=r.code,
            reason=r.reason,
            raw=chunk.raw_text(r.row),
        )
        for r in result.rejections
    ]
