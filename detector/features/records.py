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

import math
from collections.abc import Iterable, Mapping, Sequence
from functools import lru_cache
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from detector.features.encode import Imputation, encode
from detector.features.encoded import EncodedBatch, NumberCount
from detector.features.schema import Schema
from detector.scoring.scores import ScoreResult, in_input_rows, score_batch, score_frame

if TYPE_CHECKING:
    from detector.bundles.bundle import Bundle
    from detector.series.stream import StreamWindows

#: Integers outside int64 are read by pandas as objects and parsed as text; the fast path
#: leaves them to it rather than guess how.
_INT64 = (-(2**63), 2**63)


class RecordEncoder:
    """A schema's encoding for mappings: ``encode`` gives the ``EncodedBatch`` that
    ``detector.features.encode.encode`` gives for the same records as a table, or ``None`` when a
    record is not plain (see the module docstring) and the table path must decide."""

    def __init__(self, schema: Schema) -> None:
        self.schema = schema
        self.expected = frozenset(schema.column_order)
        self.numeric = tuple(c.name for c in schema.numeric)
        self.means = np.array([c.mean for c in schema.numeric], dtype=np.float64)
        self.scales = np.array([c.scale for c in schema.numeric], dtype=np.float64)
        # (name, {label: slot}, slot of an unseen label or None for "no context", offset)
        self.labelled: list[tuple[str, dict[str, int], int | None, int]] = []
        offset = schema.n_numeric
        for cat in schema.categorical:
            lookup = {label: i for i, label in enumerate(cat.categories)}
            self.labelled.append((cat.name, lookup, len(cat.categories), offset))
            offset += cat.width
        self.context_start = offset
        for ctx in schema.context:
            lookup = {label: i for i, label in enumerate(ctx.categories)}
            self.labelled.append((ctx.name, lookup, None, offset))
            offset += ctx.width
        self.width = offset

    def encode(
        self, records: Sequence[Mapping[str, Any]], *, passthrough: Iterable[str] = ()
    ) -> EncodedBatch | None:
        """The records encoded, or ``None`` if any is not plain."""
        n = len(records)
        kept: frozenset[str] | None = None
        numbers: list[list[Any]] = []
        for record in records:
            if record.keys() != self.expected:
                kept = frozenset(passthrough) if kept is None else kept
                keys = record.keys()
                if not (self.expected <= keys and keys - self.expected <= kept):
                    return None
            row = [record[name] for name in self.numeric]
            for value in row:
                kind = type(value)
                if kind is float:
                    if not math.isfinite(value):
                        return None
                elif kind is not int or not _INT64[0] <= value < _INT64[1]:
                    return None
            numbers.append(row)
        # float32 as encode gives it; the arithmetic in float64, as encode does it
        values = np.zeros((n, self.width), dtype=np.float32)
        if self.numeric:
            scaled = (np.array(numbers, dtype=np.float64) - self.means) / self.scales
            clip = self.schema.clip
            values[:, : len(self.numeric)] = np.clip(scaled, -clip, clip, out=scaled)
        unseen = np.zeros(n, dtype=bool) if self.schema.context else None
        for name, lookup, unseen_slot, offset in self.labelled:
            for i, record in enumerate(records):
                label = record[name]
                if type(label) is not str:
                    return None
                slot = lookup.get(label)
                if slot is None:
                    # The table path's second look: the label without surrounding spaces; an
                    # empty one is a missing value, for the table path to reject or impute.
                    stripped = label.strip()
                    if not stripped:
                        return None
                    slot = lookup.get(stripped, unseen_slot)
                if slot is not None:
                    values[i, offset + slot] = 1.0
                elif unseen is not None:
                    unseen[i] = True
        return EncodedBatch(
            values=values,
            accepted=np.ones(n, dtype=bool),
            context_unseen=unseen,
            numbers=_all_numbers(self.numeric, n),
        )


@lru_cache(maxsize=64)
def _all_numbers(columns: tuple[str, ...], n: int) -> tuple[NumberCount, ...]:
    return tuple(NumberCount(name, n, 0) for name in columns)


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


def score_windowed(bundle: Bundle, windows: StreamWindows, *, n_input: int) -> ScoreResult:
    """Score a series model's records windowed by ``detector.series.stream.window_records``
    (the service's path: a few records at a time, each key's last rows kept between requests),
    as a result on the ``n_input`` records they came from."""
    batch = bundle.record_encoder.encode(windows.records) if windows.records else None
    if batch is None:
        frame = pd.DataFrame.from_records(windows.records, columns=bundle.schema.column_order)
        batch = encode(bundle.schema, frame)
    result = score_batch(bundle, batch, n_input=len(windows.records))
    return in_input_rows(result, windows, n_input=n_input)
