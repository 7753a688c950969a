"""Records as mappings encoded straight from their values, without a DataFrame (see
``detector.features.records`` for when a record is plain enough for this path)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from functools import lru_cache
from typing import Any

import numpy as np

from detector.features.encoded import (
    EncodedBatch,
    NumberCount,
    PastClip,
    Respelling,
    overflow_of,
    respelling,
)
from detector.features.schema import Schema, label_lookup, same_letters, signed_log
from detector.io.tables import MISSING_TEXT

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
        # (name, {label: slot}, slot of an unseen label or None for "no context", offset,
        # the labels)
        self.labelled: list[tuple[str, dict[str, int], int | None, int, tuple[str, ...]]] = []
        offset = schema.n_numeric
        for cat in schema.categorical:
            # A rare training label's slot is the one after the slotted labels.
            lookup = {k: min(i, len(cat.categories)) for k, i in label_lookup(cat.labels).items()}
            self.labelled.append((cat.name, lookup, cat.width - 1, offset, cat.labels))
            offset += cat.width
        self.context_start = offset
        for ctx in schema.context:
            lookup = label_lookup(ctx.categories)
            self.labelled.append((ctx.name, lookup, None, offset, ctx.categories))
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
        overflow = None
        if self.numeric:
            given = np.array(numbers, dtype=np.float64)
            for j in self.schema.logged:
                given[:, j] = signed_log(given[:, j])
            scaled = (given - self.means) / self.scales
            clip = self.schema.clip
            overflow = overflow_of(scaled, clip)
            values[:, : len(self.numeric)] = np.clip(scaled, -clip, clip, out=scaled)
        unseen = np.zeros(n, dtype=bool) if self.schema.context else None
        respelled: list[Respelling] = []
        for name, lookup, unseen_slot, offset, labels in self.labelled:
            new: list[str] = []
            for i, record in enumerate(records):
                label = record[name]
                if type(label) is not str:
                    return None
                slot = lookup.get(label)
                if slot is None:
                    # The table path's second look: the label without surrounding spaces; an
                    # empty one is a missing value, for the table path to reject or impute.
                    stripped = label.strip()
                    if stripped in MISSING_TEXT:  # '' or 'NA', 'null'...
                        return None
                    slot = lookup.get(same_letters(stripped))
                    if slot is None:
                        new.append(label)
                        slot = unseen_slot
                if slot is not None:
                    values[i, offset + slot] = 1.0
                elif unseen is not None:
                    unseen[i] = True
            if new and (found := respelling(name, labels, new)):
                respelled.append(found)
        return EncodedBatch(
            values=values,
            accepted=np.ones(n, dtype=bool),
            context_unseen=unseen,
            numbers=_all_numbers(self.numeric, n),
            past_clip=PastClip.of(overflow),
            respelled=tuple(respelled),
        )


@lru_cache(maxsize=64)
def _all_numbers(columns: tuple[str, ...], n: int) -> tuple[NumberCount, ...]:
    return tuple(NumberCount(name, n, 0) for name in columns)
