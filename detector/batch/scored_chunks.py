"""A chunk of a source made ready for the model and scored: one path for ``anomaly score``
(``detector.batch.files``) and ``anomaly evaluate`` (``iter_scored``), so both read a file
with the same reader, reject the same rows for the same reasons, and give the same scores."""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa

from detector.batch.scored_tables import model_frame, series_frame
from detector.bundles.bundle import Bundle
from detector.features.encode import Imputation, check_columns, encode
from detector.features.encoded import EncodedBatch, NumberTally, Respelling
from detector.io.chunks import ParseReject, SourceChunk
from detector.io.sources import open_source
from detector.io.tables import DEFAULT_CHUNK_ROWS, expand_inputs
from detector.scoring.scores import ScoreResult, against_levels, in_input_rows, score_batch
from detector.series.values import ValueCheck
from detector.series.windows import (
    DEFAULT_MAX_AHEAD_SECONDS,
    DEFAULT_MAX_SERIES,
    SeriesState,
    Windows,
)

#: Encoded values (rows x features) in one chunk at most: a chunk's features, distances and
#: contributions are a few float64 copies of them, and the pipeline holds a few chunks at once,
#: so wide encodings get fewer rows: 12,288 rows of the default model's 38 features. Peak RSS
#: of ``anomaly score`` on 2M rows, measured: data/'s 13 columns (88 bytes a row), 489-497 MB
#: with ~47k rows a chunk, 350-382 MB with 16,384, 345-359 MB with these, 298 MB with 8,192
#: (5% slower); 38 numeric columns (320 bytes a row, so 2 MB blocks of ~6.5k rows decide),
#: 401-411 MB with 4 MB blocks, 315-331 MB now.
MAX_CHUNK_CELLS = 12_288 * 38


def chunk_rows_for(bundle: Bundle, chunk_rows: int) -> int:
    """The rows a chunk holds with ``chunk_rows`` asked for: fewer where the model's encoding
    is wide (``MAX_CHUNK_CELLS`` bounds a chunk's memory)."""
    return min(chunk_rows, max(1, MAX_CHUNK_CELLS // max(bundle.schema.n_features, 1)))


@dataclass(frozen=True, eq=False)
class PreparedChunk:
    """A chunk ready for the model: what the reading thread hands the scoring thread.
    ``frame`` and ``encoded`` are ``None`` for a chunk with no parsed rows."""

    chunk: SourceChunk
    table: pa.Table
    frame: pd.DataFrame | None
    encoded: EncodedBatch | None
    #: A series model's windows of ``frame`` (``encoded`` encodes their frame), and the own
    #: columns of ``frame`` encoded (``ValueCheck.last``).
    windows: Windows | None = None
    checked: EncodedBatch | None = None

    @property
    def own(self) -> EncodedBatch | None:
        """The rows' own columns encoded (a series model's without their windows' copies of
        them, 'proto[-1]'), for what is told of their values (``SpellingTally``)."""
        return self.encoded if self.checked is None else self.checked


def prepare(
    bundle: Bundle,
    chunk: SourceChunk,
    table: pa.Table,
    state: SeriesState | None,
    impute: Imputation,
) -> PreparedChunk:
    """``table`` (``chunk``'s rows, the columns to score among them) as the model's frame,
    encoded; a series model's rows windowed with the rows before them in ``state``."""
    if not table.num_rows:
        return PreparedChunk(chunk, table, None, None)
    if state is not None:
        # Series model: each row with the rows before it, this file's and earlier ones'.
        frame = series_frame(bundle, table)
        check = ValueCheck(bundle.schema, impute)
        windows = state.window(frame, check=check)
        encoded = encode(bundle.schema, windows.frame, impute=impute)
        return PreparedChunk(chunk, table, frame, encoded, windows, check.last)
    frame = model_frame(bundle.schema, table)
    return PreparedChunk(chunk, table, frame, encode(bundle.schema, frame, impute=impute))


def score_prepared(bundle: Bundle, item: PreparedChunk, state: SeriesState | None) -> ScoreResult:
    """The scores of a prepared chunk with rows, in its input rows' order. A series model's
    levels move here, in chunk order (windowing may run a chunk ahead)."""
    assert item.encoded is not None
    n_input = item.table.num_rows
    if item.windows is None:
        return score_batch(bundle, item.encoded, n_input=n_input)
    assert state is not None
    adjust = against_levels(bundle, item.windows, state.levels)
    result = score_batch(bundle, item.encoded, n_input=len(item.windows.frame), adjust=adjust)
    return in_input_rows(result, item.windows, n_input=n_input)


@dataclass(frozen=True, eq=False)
class ScoredChunk:
    """One chunk of a source scored: ``frame`` holds the chunk's parsed rows' passthrough
    columns, indexed by each row's 0-based place in ``source`` (for messages), ``result`` their
    scores (``None`` where no row parsed) and ``rejects`` the records that did not parse;
    ``series_evicted``, a series model's evictions so far (``max_series``); ``training_rows``,
    the scored rows that are exactly rows the bundle's neighbour bank keeps from training
    (counted where ``iter_scored`` is asked to)."""

    source: str
    frame: pd.DataFrame
    result: ScoreResult | None
    rejects: tuple[ParseReject, ...]
    series_evicted: int = 0
    training_rows: int = 0
    respelled: tuple[Respelling, ...] = ()


def iter_scored(
    bundle: Bundle,
    path: str | os.PathLike[str],
    *,
    passthrough: Sequence[str] = (),
    impute: Imputation = None,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    max_ahead_seconds: float | None = DEFAULT_MAX_AHEAD_SECONDS,
    max_series: int = DEFAULT_MAX_SERIES,
    read_as_values: Sequence[str] = (),
    leave_out_unknown: bool = False,
    count_training_rows: bool = False,
    encoding: str | None = None,
) -> Iterator[ScoredChunk]:
    """Score ``path`` (a file, '-', a directory or a glob, as ``anomaly score`` takes them)
    chunk by chunk, as ``score_file`` does: the same reader and rejects, the same scores, a
    series model's series carried from one file to the next; memory bounded by the chunk. A
    numeric column with no number in a whole file raises ``SchemaError`` after its last chunk
    (``NumberTally``). ``passthrough`` columns come as they are written ('NA' is a country),
    but those in ``read_as_values`` (a label), whose markers of missing values are nulls.
    ``leave_out_unknown``: columns neither the model's nor ``passthrough`` are left out, not
    refused (``evaluate``, which writes nothing, even from stdin, whose header is read here).
    ``count_training_rows``: count each chunk's rows the bank keeps (``NeighbourBank.kept``).
    ``encoding``: a CSV or JSON Lines text's, where not UTF-8 (``transcode.encoding_name``)."""
    series = bundle.series
    state = (
        None
        if series is None
        else SeriesState(series, max_keys=max_series, max_ahead_seconds=max_ahead_seconds)
    )
    rows = chunk_rows_for(bundle, chunk_rows)
    for name in expand_inputs([path]):
        tally = NumberTally()
        # Passthrough text as it came ('NA' is a country), the model's as it reads it.
        exact = [c for c in passthrough if c not in (*bundle.input_columns, *read_as_values)]
        expected = (*bundle.input_columns, *passthrough)
        keys = () if series is None else series.key_columns
        with open_source(
            name, expected=expected, exact=exact, encoding=encoding, keys=keys
        ) as source:
            unknown = [c for c in source.columns if c not in expected] if leave_out_unknown else []
            check_columns(
                bundle.schema,
                source.columns,
                passthrough=[*passthrough, *unknown],
                expected=bundle.input_columns,
            )
            kept = [c for c in dict.fromkeys(passthrough) if c in source.columns]
            for chunk in source.chunks(rows):
                item = prepare(bundle, chunk, chunk.table, state, impute)
                frame = chunk.table.select(kept).to_pandas()
                frame.index = pd.Index(np.asarray(chunk.row_numbers, dtype=np.int64) - 1)
                if item.encoded is None:
                    yield ScoredChunk(source.name, frame, None, chunk.rejects, _evicted(state))
                    continue
                tally.add(item.encoded)
                if item.checked is not None:
                    tally.add(item.checked)
                result = score_prepared(bundle, item, state)
                bank = bundle.neighbours if count_training_rows else None
                trained = 0 if bank is None else int(bank.kept(item.encoded.values).sum())
                respelled = item.own.respelled if item.own is not None else ()
                yield ScoredChunk(
                    source.name, frame, result, chunk.rejects, _evicted(state), trained, respelled
                )
            tally.check(source.name)


def _evicted(state: SeriesState | None) -> int:
    return 0 if state is None else state.evicted
