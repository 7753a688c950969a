"""A file scored chunk by chunk into pandas frames (``anomaly evaluate``'s reader), the
same scores as ``score_file`` writes, with memory bounded by the chunk."""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import pandas as pd

from detector.bundles.bundle import Bundle
from detector.features.encode import Imputation, check_columns, encode
from detector.features.encoded import NumberTally
from detector.io.tables import DEFAULT_CHUNK_ROWS, iter_table
from detector.scoring.scores import ScoreResult, against_levels, in_input_rows, score_batch
from detector.series.values import ValueCheck
from detector.series.windows import DEFAULT_MAX_AHEAD_SECONDS, SeriesState


@dataclass(frozen=True, eq=False)
class ScoredChunk:
    """One input chunk, its scores, and the 0-based row number of its first row in the file."""

    frame: pd.DataFrame
    result: ScoreResult
    first_row: int


def iter_scored(
    bundle: Bundle,
    path: str | os.PathLike[str],
    *,
    passthrough: Sequence[str] = (),
    impute: Imputation = None,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    max_ahead_seconds: float | None = DEFAULT_MAX_AHEAD_SECONDS,
) -> Iterator[ScoredChunk]:
    """Score a file into pandas chunks (``anomaly evaluate``'s reader); memory stays bounded
    by ``chunk_rows``; ``max_ahead_seconds`` as for ``score_file``. A numeric column with no
    number in the whole file raises ``SchemaError`` after the last chunk (``NumberTally``)."""
    text_columns = list(bundle.schema.text_columns)
    if bundle.series is not None:
        text_columns += [bundle.series.time_column, *bundle.series.key_columns]
    series = bundle.series
    state = None if series is None else SeriesState(series, max_ahead_seconds=max_ahead_seconds)
    first_row = 0
    tally = NumberTally()
    for chunk in iter_table(path, text_columns=text_columns, chunk_rows=chunk_rows):
        chunk = chunk.reset_index(drop=True)
        if state is not None:
            # Each series in time order across the file, as score_file requires.
            check_columns(
                bundle.schema, chunk.columns, passthrough=passthrough, expected=bundle.input_columns
            )
            check = ValueCheck(bundle.schema, impute)
            windows = state.window(
                chunk.drop(columns=[c for c in passthrough if c in chunk]), check=check
            )
            encoded = encode(bundle.schema, windows.frame, impute=impute)
            tally.add(encoded)
            if check.last is not None:
                tally.add(check.last)
            adjust = against_levels(bundle, windows, state.levels)
            result = score_batch(bundle, encoded, n_input=len(windows.frame), adjust=adjust)
            result = in_input_rows(result, windows, n_input=len(chunk))
            yield ScoredChunk(frame=chunk, result=result, first_row=first_row)
            first_row += len(chunk)
            continue
        encoded = encode(bundle.schema, chunk, impute=impute, passthrough=passthrough)
        tally.add(encoded)
        result = score_batch(bundle, encoded, n_input=len(chunk))
        yield ScoredChunk(frame=chunk, result=result, first_row=first_row)
        first_row += len(chunk)
    tally.check(str(path))
