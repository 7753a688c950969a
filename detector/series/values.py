"""A series row whose own values cannot be scored is rejected before it joins its series.

Each row is scored with the rows before it (``detector.series.windows``). A row holding an empty
or unreadable value would be rejected with its reason, and then sit in the windows of its
series' next rows, which would be rejected in turn for a value they never held ("column
'cpu[-1]' is empty"). So the row's own columns are checked first, with the model's own encoding
(``--impute`` included), and a row that fails is rejected there, with the reason, and left out
of its series: the rows after it are windowed with the rows before it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from detector.features.encode import Imputation, encode
from detector.features.encoded import EncodedBatch
from detector.features.record_encoder import RecordEncoder
from detector.features.schema import Schema
from detector.series.windows import SeriesRejection, is_window_column


class ValueCheck:
    """Which rows of a series model's input hold values its encoding rejects (``schema``: the
    model's, window columns included; only the own columns are checked)."""

    def __init__(self, schema: Schema, impute: Imputation = None) -> None:
        self.schema = schema.subset(c for c in schema.column_order if not is_window_column(c))
        self.columns = list(self.schema.column_order)
        self.impute = impute
        self._records = RecordEncoder(self.schema)
        #: The last frame's own columns encoded: a file's ``NumberTally`` counts them, as the
        #: rows rejected here never reach the windowed encoding.
        self.last: EncodedBatch | None = None

    def __call__(self, frame: pd.DataFrame) -> list[SeriesRejection]:
        """The rows of ``frame`` (by position) that cannot be scored, with the reasons."""
        self.last = encode(self.schema, frame[self.columns], impute=self.impute)
        return [SeriesRejection(r.row, r.code, r.reason) for r in self.last.rejections]

    def records(self, records: Sequence[Mapping[str, Any]]) -> list[SeriesRejection]:
        """As for a frame, for a few records (plain ones, the usual case, without pandas)."""
        own = [{c: record.get(c) for c in self.columns} for record in records]
        if self._records.encode(own) is not None:
            return []  # every value plain: nothing to reject
        return self(pd.DataFrame.from_records(own, columns=self.columns))
