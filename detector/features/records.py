"""Records as mappings (JSON objects, Python dicts) -> scores, without building a DataFrame.

For one record, pandas costs far more than the model: building a frame and reading its columns
was ~1 ms of a ~1.1 ms score, the distance search 0.03 ms. ``score_records`` encodes plain
records straight from their values, and hands anything unusual to the table path
(``detector.scoring.scores.score_frame``), so both give the same scores, rejections and reasons by
construction: the fast path only takes records whose encoding has no decision to make.

A record is plain when it has every column the model expects (plus, optionally, columns named
in ``passthrough``), every numeric value is a finite ``int`` or ``float`` (not ``bool``), and
every categorical or context value is text. Anything else (a missing or empty value, text in
a numeric column, a ``None``, a number where a label is expected, unknown columns) goes the
table way, where it is rejected or refused with its reason exactly as ``score_frame`` does.

The HTTP service's JSON route and ``VAEDetector.score_records`` with mappings both call
``score_records``; the batch scorer reads files as tables and calls ``score_frame``. A series
model's records reach the service a few at a time: ``score_windowed`` scores them once
``detector.series.stream`` has given each its window.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import pandas as pd

from detector.features.encode import Imputation, encode
from detector.features.encoded import EncodedBatch
from detector.scoring.scores import (
    Levels,
    Runner,
    ScoreResult,
    against_levels,
    here,
    in_input_rows,
    score_batch,
    score_frame,
)

if TYPE_CHECKING:
    from detector.bundles.bundle import Bundle
    from detector.series.stream import StreamWindows


def score_records(
    bundle: Bundle,
    records: Sequence[Mapping[str, Any]],
    *,
    impute: Imputation = None,
    passthrough: Iterable[str] = (),
) -> ScoreResult:
    """Score records given as mappings of column -> value; the same result as
    ``score_frame(bundle, pandas.DataFrame.from_records(records), ...)``, which it calls for
    records that are not plain. ``SchemaError`` for missing or unknown columns."""
    passthrough = tuple(passthrough)
    # A series model windows its records first, which needs the frame.
    encoder = None if bundle.series else bundle.record_encoder
    batch = None if encoder is None else encoder.encode(records, passthrough=passthrough)
    if batch is None:
        frame = pd.DataFrame.from_records(list(records))
        return score_frame(bundle, frame, impute=impute, passthrough=passthrough)
    return score_batch(bundle, batch, n_input=len(records))


def score_windowed(
    bundle: Bundle,
    windows: StreamWindows,
    *,
    n_input: int,
    levels: Levels,
    runner: Runner = here,
) -> ScoreResult:
    """Score a series model's records windowed by ``detector.series.stream.window_records``
    (the service's path: a few records at a time, each key's last rows kept between requests),
    each against its series' level kept in ``levels``, as a result on the ``n_input`` records
    they came from. ``runner`` runs the encoding and the model call (pure computations);
    ``levels`` is read and added to where this runs."""
    batch = runner(_encoded_windows, bundle, windows.records)
    adjust = against_levels(bundle, windows, levels)
    result = score_batch(bundle, batch, n_input=len(windows.records), adjust=adjust, runner=runner)
    return in_input_rows(result, windows, n_input=n_input)


def _encoded_windows(bundle: Bundle, records: list[dict[str, Any]]) -> EncodedBatch:
    batch = bundle.record_encoder.encode(records) if records else None
    if batch is None:
        frame = pd.DataFrame.from_records(records, columns=bundle.schema.column_order)
        batch = encode(bundle.schema, frame)
    return batch
