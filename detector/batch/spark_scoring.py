"""Scoring a Spark DataFrame with a bundle (``pip install 'anomaly-detector[spark]'``); the
file-level run, ``anomaly score --engine spark``, is ``detector.batch.spark``.

``score_dataframe`` scores a Spark DataFrame with a bundle through ``mapInPandas``: every row
comes back, with ``anomaly_score`` (higher = more anomalous), ``p_value``, ``is_anomaly`` and
``top_feature_1..k`` where it was scored, or ``reject_code``/``reject_reason`` where it was
not. Each batch of rows goes through ``detector.scoring.scores.score_frame``, as in the streaming
scorer and the HTTP service.

A series model needs each series whole and in time order: ``groupBy(keys).applyInPandas`` hands
each key's rows to one call (all rows, one group, when the model names no key), where
``score_frame`` orders them by time and windows them as the local scorer does. Unlike the local
scorer, which reads files in order and rejects a row older than what it has seen, Spark sees a
key's rows from every file at once, so their order across files does not matter. Output rows
come in Spark's order, not the input's; a key's rows must fit one executor's memory.

The bundle travels as its two files' bytes in a broadcast (a model is a few hundred KB), never
as a pickled object: each Python worker writes them to a private directory once, loads them
with ``load_bundle`` (checksum verified, Keras safe mode) and keeps the bundle for the
worker's life. With ``shared=True`` nothing is shipped and every executor loads the bundle
from the same path on shared storage.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
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

from detector.batch.scored_tables import model_frame, series_frame, top_columns
from detector.bundles.bundle import Bundle, load_bundle
from detector.bundles.format import MANIFEST_FILE, MODEL_FILE, OPTIONAL_FILES
from detector.errors import ConfigError, SchemaError
from detector.features.encode import Imputation, check_columns
from detector.features.encoded import RESPELLED_EXAMPLES, Respelling, SpellingTally
from detector.io.temporaries import remove_stale_temporaries, staging_path
from detector.io.transcode import encoding_fix, read_as
from detector.scoring.output_columns import (
    CONTEXT_COLUMN,
    REJECT_CODE,
    REJECT_REASON,
    WARMING_COLUMN,
    names_taken,
)
from detector.scoring.scores import score_frame, score_series
from detector.series.windows import DEFAULT_MAX_AHEAD_SECONDS, SeriesState
from detector.wording import Surface, current_surface, speaking_to

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

#: Spark's own columns for a CSV record that does not fit the header, and a row's file.
CORRUPT_RECORD = "_corrupt_record"
SOURCE_FILE = "_source_file"
#: pyspark 4 warns on every pandas >= 3 import; the features this module uses work (tested).
PANDAS_WARNING = "PySpark does not yet fully support pandas"
#: ``score_dataframe(..., respelled=True)``'s column: on one row of each batch, that batch's
#: ``ScoreResult.respelled`` as JSON (null elsewhere), which ``category_spelling`` reads.
RESPELLED = "_anomaly_respelled"
#: ``RESPELLED``'s JSON, as Spark reads it.
_RESPELLED_TYPE = "array<struct<column:string,rows:bigint,examples:array<array<string>>>>"


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
                    self._loaded[digest] = load_bundle(unpacked_bundle(digest, files))
            return self._loaded[digest]


def unpacked_bundle(digest: str, files: dict[str, bytes]) -> Path:
    """A folder holding a shipped bundle's files, one per bundle for all workers and runs.

    A folder per worker would be left behind: Spark ends its Python workers with ``os._exit``,
    which skips every cleanup, and the bundle reads its network from the folder when needed.
    Keyed by the files' digest, the copies are bounded by the bundles scored; a copy is
    written under another name and renamed, so a worker never sees one half written, and the
    bundle's seal is checked on load as for any other folder.
    """
    root = Path(tempfile.gettempdir()) / f"anomaly-bundles-{os.getuid()}"
    root.mkdir(mode=0o700, exist_ok=True)
    if root.is_symlink() or root.stat().st_uid != os.getuid():
        # Another user made the shared name: a private folder of this worker's instead.
        root = Path(tempfile.mkdtemp(prefix="anomaly-bundles-"))
    target = root / digest
    if not target.is_dir():
        remove_stale_temporaries(target)  # copies whose worker was killed while writing
        staging = staging_path(target, "tmp")
        staging.mkdir()
        for name, data in files.items():
            (staging / name).write_bytes(data)
        try:
            staging.rename(target)
        except OSError:  # another worker renamed its copy first
            shutil.rmtree(staging, ignore_errors=True)
    return target


_WORKER_BUNDLES = _WorkerBundles()


def score_dataframe(
    df: DataFrame,
    bundle_path: str | os.PathLike[str],
    *,
    keep_columns: Sequence[str] = (),
    impute: Imputation = None,
    top_k: int = 3,
    shared: bool = False,
    max_ahead_seconds: float | None = DEFAULT_MAX_AHEAD_SECONDS,
    respelled: bool = False,
    encoding: str | None = None,
    decoded: bool = True,
) -> DataFrame:
    """Score every row of ``df`` with the bundle at ``bundle_path``.

    ``df`` must hold the model's columns (any Spark types; text is parsed as the streaming
    scorer parses it) plus ``keep_columns`` and, optionally, ``_corrupt_record`` (rows where
    it is set are rejected as malformed) and ``_source_file``. The result has ``df``'s columns
    followed by ``anomaly_score``, ``p_value``, ``is_anomaly``, ``context_unseen`` (conditional
    models), ``warming_up`` (series models), ``top_feature_1..k``,
    ``reject_code`` and ``reject_reason``; its row count equals ``df``'s. ``respelled``: a
    last column, ``RESPELLED``, for ``category_spelling`` to read (drop it after).
    ``encoding``: the text's, where it was read from another than UTF-8 (Python's name), as
    the reason of a row that did not decode says. ``decoded``: the text was decoded from bytes
    by Spark (a CSV read), which reads bytes that did not decode as U+FFFD: a row holding one
    is rejected as the default engine rejects it; ``False`` where the text was text already
    (Parquet), and a U+FFFD in it a character like any other.
    """
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    bundle = load_bundle(bundle_path)
    extra = [*keep_columns, *(c for c in (CORRUPT_RECORD, SOURCE_FILE) if c in df.columns)]
    check_columns(bundle.schema, df.columns, passthrough=extra, expected=bundle.input_columns)
    # Spark tells 'Anomaly_Score' from 'anomaly_score' only where the session is told to: else
    # the output's two columns were an AMBIGUOUS_REFERENCE, its Java stack logged.
    any_case = str(df.sparkSession.conf.get("spark.sql.caseSensitive", "false")).lower() != "true"
    context, series = bool(bundle.schema.context), bool(bundle.series)
    clash = names_taken(df.columns, context=context, series=series, any_case=any_case)
    if clash:
        exact = set(names_taken(clash))
        cased = "" if exact >= set(clash) else " (Spark compares names without regard to case)"
        raise SchemaError(
            f"the input already has column(s) {clash}, which scoring adds{cased}; drop or "
            "rename them"
        )
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
        *([T.StructField(WARMING_COLUMN, T.BooleanType())] if bundle.series else []),
        *(T.StructField(f"top_feature_{j + 1}", T.StringType()) for j in range(k)),
        T.StructField(REJECT_CODE, T.StringType()),
        T.StructField(REJECT_REASON, T.StringType()),
        *([T.StructField(RESPELLED, T.StringType())] if respelled else []),
    ]
    schema = T.StructType([*df.schema.fields, *fields])
    if bundle.series is not None and isinstance(
        df.schema[bundle.series.time_column].dataType, T.TimestampType
    ):
        # Spark hands pandas its instants as wall-clock times of the session's zone, which
        # the scorer would read as UTC (on a machine not on UTC every time shifted, and the
        # hours the levels keep with them); the instant goes beside them as epoch seconds.
        df = df.withColumn(_EPOCH, F.col(bundle.series.time_column).cast("double"))

    # A module-level function and plain values: Spark pickles this by reference, never the
    # driver's bundle.
    score_batches = partial(
        _score_batches,
        key=key,
        shipped=shipped,
        path=path,
        impute=impute,
        top_k=k,
        max_ahead_seconds=max_ahead_seconds,
        surface=current_surface(),
        respelled=respelled,
        encoding=encoding,
        decoded=decoded,
    )
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", PANDAS_WARNING, FutureWarning)
        if bundle.series is None:
            return df.mapInPandas(score_batches, schema=schema)
        keys = list(bundle.series.key_columns)
        if keys:
            return df.groupBy(*keys).applyInPandas(_one_batch(score_batches), schema=schema)
        # One series: one group, under a constant column dropped again after.
        one = T.StructType([*schema.fields, T.StructField(_ONE_SERIES, T.IntegerType())])
        whole = df.withColumn(_ONE_SERIES, F.lit(0)).groupBy(_ONE_SERIES)
        return whole.applyInPandas(_one_batch(score_batches), schema=one).drop(_ONE_SERIES)


#: The constant column a model without key columns groups its one series by.
_ONE_SERIES = "_anomaly_one_series"
#: A series' Spark timestamps as epoch seconds, read in place of the wall-clock times pandas
#: is given (``score_dataframe``), and dropped from the output.
_EPOCH = "_anomaly_epoch_seconds"


def _one_batch(score_batches: Any) -> Any:
    """``applyInPandas`` passes each group as one frame; ``score_batches`` takes an iterator.
    A plain function (pyspark reads its type hints; a ``partial`` has none), pickled with the
    plain values it holds."""

    def score_group(group: pd.DataFrame) -> pd.DataFrame:
        return next(iter(score_batches(iter([group]))))

    return score_group


def _score_batches(
    batches: Iterator[pd.DataFrame],
    *,
    key: str,
    shipped: Any,
    path: str,
    impute: Imputation,
    top_k: int,
    max_ahead_seconds: float | None,
    surface: Surface = "python",
    respelled: bool = False,
    encoding: str | None = None,
    decoded: bool = True,
) -> Iterator[pd.DataFrame]:
    """Runs on the executors: the worker's bundle, then each Arrow batch of rows. Reasons
    name options as the driver's caller spells them (``surface``: ``--impute median`` for the
    command line), which a worker process does not know on its own."""
    bundle = _WORKER_BUNDLES.get(key, None if shipped is None else shipped.value, path)
    for batch in batches:
        seconds = batch.pop(_EPOCH) if _EPOCH in batch.columns else None
        with speaking_to(surface):
            scored = score_pandas(
                bundle,
                batch,
                impute=impute,
                top_k=top_k,
                max_ahead_seconds=max_ahead_seconds,
                times=seconds,
                respelled=respelled,
                encoding=encoding,
                decoded=decoded,
            )
        yield scored


def score_pandas(
    bundle: Bundle,
    batch: pd.DataFrame,
    *,
    impute: Imputation = None,
    top_k: int = 3,
    max_ahead_seconds: float | None = DEFAULT_MAX_AHEAD_SECONDS,
    times: pd.Series | None = None,
    respelled: bool = False,
    encoding: str | None = None,
    decoded: bool = True,
) -> pd.DataFrame:
    """One Spark batch: every row back, scored or with its reject code and reason (a series
    model's rows stamped more than ``max_ahead_seconds`` after the clock rejected). A series
    model reads ``times`` (epoch seconds, one a row) for its time column where given.
    ``respelled``: the ``RESPELLED`` column added; ``encoding``: the text's (``None``: UTF-8),
    which a row that did not decode is said not to be; ``decoded``: whether Spark decoded the
    text from bytes, and a U+FFFD in it marks bytes that did not decode."""
    n = len(batch)
    out = batch.reset_index(drop=True)
    scores = np.full(n, np.nan)
    p_values = np.full(n, np.nan)
    flags = np.full(n, None, dtype=object)
    unseen = np.full(n, None, dtype=object)
    warming = np.full(n, None, dtype=object)
    tops = [np.full(n, None, dtype=object) for _ in range(top_k)]
    codes = np.full(n, None, dtype=object)
    reasons = np.full(n, None, dtype=object)
    usable = np.ones(n, dtype=bool)
    told: list[Respelling] = []
    if CORRUPT_RECORD in out.columns:
        corrupt = out[CORRUPT_RECORD].notna().to_numpy()
        codes[corrupt] = "malformed"
        reasons[corrupt] = "the record does not fit the header (ragged row or broken quoting)"
        usable &= ~corrupt
    # Spark decodes bytes that are not UTF-8 (or not the encoding given) as U+FFFD and reads
    # on; the local reader rejects such a record, whichever field holds them (an unseen host
    # 'caf\ufffd' would be scored as one, a kept column's 'n\ufffdne' written out as such).
    # Rejected alike here: the model's columns and those carried through.
    # Parquet's text is text: a U+FFFD there is the file's own, scored by the default engine.
    text = [
        c
        for c in (out.columns if decoded else ())
        if c not in (CORRUPT_RECORD, SOURCE_FILE) and not pd.api.types.is_numeric_dtype(out[c])
    ]
    if text:
        garbled = np.zeros(n, dtype=bool)
        for column in text:
            cells = out[column].astype(str)  # an empty cell reads 'None' or 'nan': no U+FFFD
            garbled |= cells.str.contains("\ufffd", regex=False).to_numpy(dtype=bool)
        garbled &= usable
        codes[garbled] = "encoding"
        reasons[garbled] = f"not {read_as(encoding)} text; {encoding_fix(encoding)}"
        usable &= ~garbled
    positions = np.flatnonzero(usable)
    if len(positions):
        columns = list(bundle.input_columns)
        rows = out.loc[positions, columns]
        if times is not None and bundle.series is not None:
            rows = rows.assign(**{bundle.series.time_column: times.to_numpy()[positions]})
        table = pa.Table.from_pandas(rows, preserve_index=False)
        if bundle.series is None:
            result = score_frame(bundle, model_frame(bundle.schema, table), impute=impute)
        else:
            state = SeriesState(bundle.series, max_ahead_seconds=max_ahead_seconds)
            frame = series_frame(bundle, table)
            result = score_series(bundle, frame, state=state, impute=impute)
        scored = positions[result.rows]
        scores[scored] = result.anomaly_score
        p_values[scored] = result.p_value
        flags[scored] = result.is_anomaly
        if result.context_unseen is not None:
            unseen[scored] = result.context_unseen
        if result.warming_up is not None:
            warming[scored] = result.warming_up
        for j, column in enumerate(top_columns(result, top_k)):
            tops[j][scored] = column.to_numpy(zero_copy_only=False)
        for rejection in result.rejections:
            codes[positions[rejection.row]] = rejection.code
            reasons[positions[rejection.row]] = rejection.reason
        told += result.respelled
    added = {
        "anomaly_score": scores,
        "p_value": p_values,
        "is_anomaly": pd.Series(flags, dtype=object),
        **({CONTEXT_COLUMN: pd.Series(unseen, dtype=object)} if bundle.schema.context else {}),
        **({WARMING_COLUMN: pd.Series(warming, dtype=object)} if bundle.series else {}),
        **{f"top_feature_{j + 1}": pd.Series(t, dtype=object) for j, t in enumerate(tops)},
        REJECT_CODE: pd.Series(codes, dtype=object),
        REJECT_REASON: pd.Series(reasons, dtype=object),
    }
    if respelled:
        # The batch's on its first row: the driver sums them (``category_spelling``).
        said = np.full(n, None, dtype=object)
        if told and n:
            said[0] = json.dumps(
                [{"column": r.name, "rows": r.rows, "examples": r.examples} for r in told]
            )
        added[RESPELLED] = pd.Series(said, dtype=object)
    return pd.concat([out, pd.DataFrame(added)], axis=1)


def category_spelling(scored: DataFrame) -> str | None:
    """What to say of the text values of ``scored`` (``score_dataframe(..., respelled=True)``)
    that differ from a training label only in case, as ``anomaly score`` says it of a file
    (``SpellingTally``), or ``None`` where none did. Summed by Spark: the driver reads one row
    per column."""
    from pyspark.sql import functions as F

    told = (
        scored.where(F.col(RESPELLED).isNotNull())
        .select(F.explode(F.from_json(F.col(RESPELLED), _RESPELLED_TYPE)).alias("r"))
        .groupBy(F.col("r.column").alias("column"))
        .agg(
            F.sum("r.rows").alias("rows"),
            # The first few in sorted order, as the default engine's warning shows them
            # (``SpellingTally``): a batch gives its first few of each column in that order.
            F.slice(
                F.array_sort(F.array_distinct(F.flatten(F.collect_list("r.examples")))),
                1,
                RESPELLED_EXAMPLES,
            ).alias("examples"),
        )
        .orderBy("column")
        .collect()
    )
    tally = SpellingTally()
    tally.add_found(
        Respelling(r["column"], int(r["rows"]), tuple((g, t) for g, t in r["examples"]))
        for r in told
    )
    return tally.warning()
