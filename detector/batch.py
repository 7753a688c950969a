"""Batch scoring of files, chunk by chunk, with a ledger of every row.

Each chunk goes through ``detector.scoring.score_frame``, the same function the HTTP service
calls. Rows read = rows scored + rows rejected, always; rejected rows go to a rejects file with
their row number, reason and raw values.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from detector.bundle import Bundle
from detector.errors import DataError
from detector.features import Imputation
from detector.scoring import ScoreResult, score_frame
from detector.tables import DEFAULT_CHUNK_ROWS, TableWriter, iter_table


@dataclass(frozen=True, eq=False)
class ScoredChunk:
    """One input chunk, its scores, and the 0-based row number of its first row in the file."""

    frame: pd.DataFrame
    result: ScoreResult
    first_row: int


@dataclass(frozen=True)
class BatchReport:
    """The ledger of a batch run: ``rows_read == rows_scored + rows_rejected``."""

    input: str
    output: str
    rejects: str | None
    rows_read: int
    rows_scored: int
    rows_rejected: int
    anomalies: int
    threshold: float
    model_version: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def iter_scored(
    bundle: Bundle,
    path: str | os.PathLike[str],
    *,
    passthrough: Sequence[str] = (),
    impute: Imputation = None,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
) -> Iterator[ScoredChunk]:
    """Score a file chunk by chunk; memory stays bounded by ``chunk_rows``."""
    text_columns = [c.name for c in bundle.schema.categorical]
    first_row = 0
    for chunk in iter_table(path, text_columns=text_columns, chunk_rows=chunk_rows):
        chunk = chunk.reset_index(drop=True)
        result = score_frame(bundle, chunk, impute=impute, passthrough=passthrough)
        yield ScoredChunk(frame=chunk, result=result, first_row=first_row)
        first_row += len(chunk)


def score_file(
    bundle: Bundle,
    input_path: str | os.PathLike[str],
    output_path: str | os.PathLike[str],
    *,
    keep_columns: Sequence[str] = (),
    impute: Imputation = None,
    rejects_path: str | os.PathLike[str] | None = None,
    top_k: int = 3,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    progress: bool = False,
) -> BatchReport:
    """Score ``input_path`` into ``output_path`` (the input's columns followed by
    ``anomaly_score``, ``p_value``, ``is_anomaly``, ``top_feature_1..k``); rejected rows go to
    ``rejects_path`` (default: beside the output, ``<output>.rejects.csv``)."""
    rejects_target = Path(rejects_path or f"{output_path}.rejects.csv")
    writer = TableWriter(output_path)
    rejects: list[dict[str, Any]] = []
    read = scored = anomalies = 0
    bar = tqdm(desc="scoring", unit=" rows", disable=not progress)
    try:
        for part in iter_scored(
            bundle, input_path, passthrough=keep_columns, impute=impute, chunk_rows=chunk_rows
        ):
            result = part.result
            scores = result.to_frame(top_k=top_k)
            writer.write(pd.concat([part.frame.loc[result.rows], scores], axis=1))
            rejects.extend(_reject_rows(part))
            read += len(part.frame)
            scored += result.n_scored
            anomalies += int(result.is_anomaly.sum())
            bar.update(len(part.frame))
        if read == 0:
            raise DataError(f"{input_path} has a header but no data rows; nothing to score")
        writer.close()
    except BaseException:
        writer.abort()
        raise
    finally:
        bar.close()
    if rejects:
        rejects_writer = TableWriter(rejects_target)
        rejects_writer.write(pd.DataFrame(rejects))
        rejects_writer.close()
    return BatchReport(
        input=str(input_path),
        output=str(output_path),
        rejects=str(rejects_target) if rejects else None,
        rows_read=read,
        rows_scored=scored,
        rows_rejected=len(rejects),
        anomalies=anomalies,
        threshold=bundle.calibrator.threshold,
        model_version=bundle.version,
    )


def _reject_rows(part: ScoredChunk) -> list[dict[str, Any]]:
    rows = []
    for rejection in part.result.rejections:
        raw = part.frame.iloc[rejection.row].to_dict()
        rows.append(
            {
                # 1-based data row number (the header is not counted), as a spreadsheet shows.
                "row": part.first_row + rejection.row + 1,
                "reason": rejection.reason,
                "raw": json.dumps({str(k): _plain(v) for k, v in raw.items()}),
            }
        )
    return rows


def _plain(value: Any) -> Any:
    if value is None or (isinstance(value, float) and np.isnan(value)) or value is pd.NA:
        return None
    if isinstance(value, np.generic):
        return value.item()
    return value
