"""Scoring a Spark DataFrame with a bundle (``pip install 'anomaly-detector[spark]'``); the
file-level run, ``anomaly score --engine spark``, is ``detector.batch.spark``.

``score_dataframe`` scores a Spark DataFrame with a bundle through ``mapInPandas``: every row
comes back, with ``anomaly_score`` (higher = more anomalous), ``p_value``, ``is_anomaly`` and
``top_feature_1..k`` where it was scored, or ``reject_code``/``reject_reason`` where it was
not. Each batch of rows goes through ``detector.scoring.scores.score_frame``, as in the streaming
scorer and the HTTP service.

The bundle travels as its two files' bytes in a broadcast (a model is a few hundred KB), never
as a pickled object: each Python worker writes them to a private directory once, loads them
with ``load_bundle`` (checksum verified, Keras safe mode) and keeps the bundle for the
worker's life. With ``shared=True`` nothing is shipped and every executor loads the bundle
from the same path on shared storage.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import threading
import warnings
from collections.abc import Iterator, Sequence
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyarrow as pa

from detector.batch.scored_tables import CONTEXT_COLUMN, model_frame, top_columns
from detector.bundles.bundle import Bundle, load_bundle
from detector.bundles.format import MANIFEST_FILE, MODEL_FILE, OPTIONAL_FILES
from detector.errors import ConfigError, SchemaError
from detector.features.encode import Imputation, check_columns
from detector.scoring.scores import score_frame

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

#: Columns ``score_dataframe`` adds for rows it could not score (null where it scored them).
REJECT_CODE = "reject_code"
REJECT_REASON = "reject_reason"
#: Spark's own columns for a CSV record that does not fit the header, and a row's file.
CORRUPT_RECORD = "_corrupt_record"
SOURCE_FILE = "_source_file"
#: pyspark 4 warns on every pandas >= 3 import; the features this module uses work (tested).
PANDAS_WARNING = "PySpark does not yet fully support pandas"


def bundle_files(path: str | os.PathLike[str]) -> dict[str, bytes]:
    """A bundle's files as bytes, to ship to executors (``load_bundle`` checks them there)."""
    root = Path(path)
    try:
        files = {name: (root / name).read_bytes() for name in (MANIFEST_FILE, MODEL_FILE)}
        for name in OPTIONAL_FILES:  # each is in the bundles that need it
            if (root / name).is_file():
                files[name] = (root / name).read_bytes()
        return files
    except OSError:
        raise ConfigError(
            f"no model bundle at {root}; train one with `anomaly train DATA --out {root}`"
        ) from None


class _WorkerBundles:
    """Bundles loaded in this Python worker, by content digest.

    Module-level on purpose: Spark reuses a Python worker for many tasks, and loading a bundle
    (reading and checking its files, starting the LiteRT interpreter) costs
    time, so each worker loads each bundle once.
    """

    def __init__(self) -> None:
        self._loaded: dict[str, Bundle] = {}
        self._lock = threading.Lock()

    def get(self, digest: str, files: dict[str, bytes] | None, path: str) -> Bundle:
        with self._lock:
            if digest not in self._loaded:
                if files is None:
                    self._loaded[digest] = load_bundle(path)
                else:
                    directory = Path(tempfile.mkdtemp(prefix="anomaly-bundle-"))
                    for name, data in files.items():
                        (directory / name).write_bytes(data)
                    self._loaded[digest] = load_bundle(directory)
            return self._loaded[digest]


_WORKER_BUNDLES = _WorkerBundles()


def score_dataframe(
    df: DataFrame,
    bundle_path: str | os.PathLike[str],
    *,
    keep_columns: Sequence[str] = (),
    impute: Imputation = None,
    top_k: int = 3,
    shared: bool = False,
) -> DataFrame:
    """Score every row of ``df`` with the bundle at ``bundle_path``.

    ``df`` must hold the model's columns (any Spark types; text is parsed as the streaming
    scorer parses it) plus ``keep_columns`` and, optionally, ``_corrupt_record`` (rows where
    it is set are rejected as malformed) and ``_source_file``. The result has ``df``'s columns
    followed by ``anomaly_score``, ``p_value``, ``is_anomaly``, ``context_unseen`` (conditional
    models), ``top_feature_1..k``,
    ``reject_code`` and ``reject_reason``; its row count equals ``df``'s.
    """
    from pyspark.sql import types as T

    bundle = load_bundle(bundle_path)
    refuse_series(bundle)
    extra = [*keep_columns, *(c for c in (CORRUPT_RECORD, SOURCE_FILE) if c in df.columns)]
    check_columns(bundle.schema, df.columns, passthrough=extra)
    k = min(top_k, len(bundle.schema.scored_columns))
    files = None if shared else bundle_files(bundle_path)
    digest = hashlib.sha256(b"".join((files or {}).values()) or str(bundle_path).encode())
    key = digest.hexdigest()
    shipped = None if files is None else df.sparkSession.sparkContext.broadcast(files)
    path = str(bundle_path)
    fields = [
        T.StructField("anomaly_score", T.DoubleType()),
        T.StructField("p_value", T.DoubleType()),
        T.StructField("is_anomaly", T.BooleanType()),
        *([T.StructField(CONTEXT_COLUMN, T.BooleanType())] if bundle.schema.context else []),
        *(T.StructField(f"top_feature_{j + 1}", T.StringType()) for j in range(k)),
        T.StructField(REJECT_CODE, T.StringType()),
        T.StructField(REJECT_REASON, T.StringType()),
    ]
    schema = T.StructType([*df.schema.fields, *fields])

    # A module-level function and plain values: Spark pickles this by reference, never the
    # driver's bundle.
    score_batches = partial(
        _score_batches, key=key, shipped=shipped, path=path, impute=impute, top_k=k
    )
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", PANDAS_WARNING, FutureWarning)
        return df.mapInPandas(score_batches, schema=schema)


def _score_batches(
    batches: Iterator[pd.DataFrame],
    *,
    key: str,
    shipped: Any,
    path: str,
    impute: Imputation,
    top_k: int,
) -> Iterator[pd.DataFrame]:
    """Runs on the executors: the worker's bundle, then each Arrow batch of rows."""
    bundle = _WORKER_BUNDLES.get(key, None if shipped is None else shipped.value, path)
    for batch in batches:
        yield score_pandas(bundle, batch, impute=impute, top_k=top_k)


def score_pandas(
    bundle: Bundle, batch: pd.DataFrame, *, impute: Imputation = None, top_k: int = 3
) -> pd.DataFrame:
    """One Spark batch: every row back, scored or with its reject code and reason."""
    n = len(batch)
    out = batch.reset_index(drop=True)
    scores = np.full(n, np.nan)
    p_values = np.full(n, np.nan)
    flags = np.full(n, None, dtype=object)
    unseen = np.full(n, None, dtype=object)
    tops = [np.full(n, None, dtype=object) for _ in range(top_k)]
    codes = np.full(n, None, dtype=object)
    reasons = np.full(n, None, dtype=object)
    usable = np.ones(n, dtype=bool)
    if CORRUPT_RECORD in out.columns:
        corrupt = out[CORRUPT_RECORD].notna().to_numpy()
        codes[corrupt] = "malformed"
        reasons[corrupt] = "the record does not fit the header (ragged row or broken quoting)"
        usable &= ~corrupt
    positions = np.flatnonzero(usable)
    if len(positions):
        columns = list(bundle.schema.column_order)
        table = pa.Table.from_pandas(out.loc[positions, columns], preserve_index=False)
        result = score_frame(bundle, model_frame(bundle.schema, table), impute=impute)
        scored = positions[result.rows]
        scores[scored] = result.anomaly_score
        p_values[scored] = result.p_value
        flags[scored] = result.is_anomaly
        if result.context_unseen is not None:
            unseen[scored] = result.context_unseen
        for j, column in enumerate(top_columns(result, top_k)):
            tops[j][scored] = column.to_numpy(zero_copy_only=False)
        for rejection in result.rejections:
            codes[positions[rejection.row]] = rejection.code
            reasons[positions[rejection.row]] = rejection.reason
    added = {
        "anomaly_score": scores,
        "p_value": p_values,
        "is_anomaly": pd.Series(flags, dtype=object),
        **({CONTEXT_COLUMN: pd.Series(unseen, dtype=object)} if bundle.schema.context else {}),
        **{f"top_feature_{j + 1}": pd.Series(t, dtype=object) for j, t in enumerate(tops)},
        REJECT_CODE: pd.Series(codes, dtype=object),
        REJECT_REASON: pd.Series(reasons, dtype=object),
    }
    return pd.concat([out, pd.DataFrame(added)], axis=1)


def refuse_series(bundle: Bundle) -> None:
    """Spark scores rows in any order across executors: a series model's windows need each
    series in time order, which it does not keep yet."""
    if bundle.series is not None:
        raise SchemaError(
            f"this model judges each record with the rows before it ({bundle.series.describe()}); "
            "Spark does not window series yet: score with `anomaly score` (--engine local)"
        )
