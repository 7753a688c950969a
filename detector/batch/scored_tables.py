"""Arrow tables in, scored tables out: the model's frame of a table, its scores and the score
columns appended. The file scorer (``detector.batch.files``) and Spark
(``detector.batch.spark``) share it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from detector.bundles.bundle import Bundle
from detector.features.encode import Imputation
from detector.features.schema import Schema
from detector.scoring.output_columns import CONTEXT_COLUMN, SCORE_COLUMNS, WARMING_COLUMN
from detector.scoring.scores import ScoreResult, score_frame


@dataclass(frozen=True, eq=False)
class ScoredTable:
    """A table's scored rows (its columns followed by the score columns) and the result.

    ``leading_text``, when the input's records were given, is the scored rows' records as
    read: the CSV text of the table's first ``leading_columns`` columns."""

    table: pa.Table
    result: ScoreResult
    leading_text: pa.Array | None = None
    leading_columns: int = 0


def series_frame(bundle: Bundle, table: pa.Table) -> pd.DataFrame:
    """A series model's input columns of an Arrow table (time, keys, the scored columns' own
    values), numbers read as ``model_frame`` reads them, ready for windowing."""
    numeric = {c.name for c in bundle.schema.numeric}
    columns: dict[str, Any] = {}
    for name in bundle.input_columns:
        values = table.column(name)
        if name in numeric:
            columns[name] = number_column(values)
        elif bundle.series is not None and name == bundle.series.time_column:
            columns[name] = pd.Series(values.to_numpy(zero_copy_only=False), dtype=object)
        else:
            columns[name] = label_column(values)
    return pd.DataFrame(columns, copy=False)


def number_column(values: Any) -> Any:
    """A numeric column as float64, or as text where a value does not parse (so ``encode``
    rejects that row with its reason)."""
    if pa.types.is_string(values.type) or pa.types.is_large_string(values.type):
        try:
            values = pc.cast(values, pa.float64())
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            return pd.Series(values.to_numpy(zero_copy_only=False), dtype=object)
    if pa.types.is_integer(values.type) or pa.types.is_floating(values.type):
        # Unsafe: an integer past 2**53 (a uint64 counter) becomes its nearest float, as
        # pandas makes it, where Arrow's checked cast refused the whole chunk.
        return pc.cast(values, pa.float64(), safe=False).to_numpy(zero_copy_only=False)
    return pd.Series(values.to_numpy(zero_copy_only=False), dtype=object)


def label_column(values: Any) -> pd.Series:
    """A label column as objects. Parquet's dates and times come as training's reader gives
    them (``datetime.date``, ``datetime.time``: '2026-01-01', '01:00:00'): numpy's would read
    '2026-01-01 00:00:00' and '01:00:00.000000', labels the model never saw."""
    if pa.types.is_temporal(values.type):
        return values.to_pandas().astype(object)  # type: ignore[no-any-return]
    return pd.Series(values.to_numpy(zero_copy_only=False), dtype=object)


def model_frame(schema: Schema, table: pa.Table) -> pd.DataFrame:
    """The model's columns of an Arrow table as the pandas frame ``score_frame`` takes.

    Text numeric columns (CSV is read as text) become float64 in one Arrow cast when every
    value parses; otherwise they stay text, so that ``encode`` rejects each bad row with its
    reason ("'oops' is not a number") instead of a whole chunk failing.
    """
    columns: dict[str, Any] = {}
    for col in schema.numeric:
        columns[col.name] = number_column(table.column(col.name))
    for name in schema.text_columns:
        columns[name] = label_column(table.column(name))
    return pd.DataFrame({name: columns[name] for name in schema.column_order}, copy=False)


def score_table(
    bundle: Bundle,
    table: pa.Table,
    *,
    impute: Imputation = None,
    top_k: int = 3,
    typed_numbers: bool = False,
    frame: pd.DataFrame | None = None,
    records: pa.Array | None = None,
) -> ScoredTable:
    """Score an Arrow table whose columns were checked with ``check_columns``.

    The scored rows keep every input column as read (CSV fields as their original text), or,
    with ``typed_numbers``, the model's numeric columns as float64 (for Parquet output).
    ``records`` (``SourceChunk.records``) are the table's rows as CSV text, to be copied to a
    CSV output as they are.
    """
    if frame is None:
        frame = model_frame(bundle.schema, table)
    result = score_frame(bundle, frame, impute=impute)
    return scored_rows(
        bundle, table, result, top_k=top_k, typed_numbers=typed_numbers, frame=frame,
        records=records,
    )  # fmt: skip


def scored_rows(
    bundle: Bundle,
    table: pa.Table,
    result: ScoreResult,
    *,
    top_k: int,
    typed_numbers: bool,
    frame: pd.DataFrame,
    records: pa.Array | None,
) -> ScoredTable:
    """``score_table``'s second half: the scored rows of ``table`` with the score columns
    appended, from ``result`` (``frame`` is the model's frame the result came from)."""
    rows = result.rows
    kept = table.take(pa.array(rows, pa.int64())) if len(rows) != table.num_rows else table
    if typed_numbers:
        for col in bundle.schema.numeric:
            if col.name not in frame.columns:
                continue  # a series model's window column: not in the input
            if pa.types.is_string(kept.column(col.name).type):
                kept = kept.set_column(
                    kept.column_names.index(col.name),
                    col.name,
                    pa.array(_as_numbers(frame[col.name], rows), pa.float64()),
                )
    scores = [
        pa.array(result.anomaly_score, pa.float64()),
        pa.array(result.p_value, pa.float64()),
        pa.array(result.is_anomaly, pa.bool_()),
    ]
    names = list(SCORE_COLUMNS)
    if result.context_unseen is not None:
        scores.append(pa.array(result.context_unseen, pa.bool_()))
        names.append(CONTEXT_COLUMN)
    if result.warming_up is not None:
        scores.append(pa.array(result.warming_up, pa.bool_()))
        names.append(WARMING_COLUMN)
    for j, column in enumerate(top_columns(result, top_k)):
        scores.append(column)
        names.append(f"top_feature_{j + 1}")
    leading_columns = kept.num_columns
    for name, values in zip(names, scores, strict=True):
        kept = kept.append_column(name, values)
    if records is None:
        return ScoredTable(table=kept, result=result)
    if len(rows) != len(records):
        records = records.take(pa.array(rows, pa.int64()))
    return ScoredTable(kept, result, leading_text=records, leading_columns=leading_columns)


def _as_numbers(values: Any, rows: np.ndarray) -> np.ndarray:
    series = pd.Series(values)
    if series.dtype == object:
        texts = series.iloc[rows].astype("string").str.strip()
        return pd.to_numeric(texts, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    return series.to_numpy(dtype=np.float64)[rows]


def top_columns(result: ScoreResult, k: int) -> list[pa.Array]:
    """``top_feature_1..k`` as text columns: the order of ``ScoreResult.top_features`` (most to
    blame first, ties in column order), computed without a Python object per row."""
    k = min(k, len(result.columns))
    if k <= 0:
        return []
    order = result.top_indices(k).astype(np.int32)
    names = pa.array(result.columns, pa.string())
    return [
        pc.cast(pa.DictionaryArray.from_arrays(order[:, j], names), pa.string()) for j in range(k)
    ]
