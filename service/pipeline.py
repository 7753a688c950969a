"""One scoring request, whatever its wire format: records -> scores -> decisions -> alerts and
metrics. Both the v1 JSON/CSV routes and the KServe V2 route call ``score_request``, which
calls ``detector.scoring.score_frame``, the function the batch scorer calls too.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from flask import request

from detector.scoring import ScoreResult, score_frame
from service.app import ApiError, ServiceState
from service.registry import LoadedModel

TOP_FEATURES = 3


@dataclass(frozen=True)
class Rejected:
    """A record not scored: its 0-based index in the request, reasons and a metrics code."""

    index: int
    reasons: tuple[str, ...]
    code: str


@dataclass(frozen=True, eq=False)
class ScoredRequest:
    """The outcome of one request, in request order of the scored records."""

    model: LoadedModel
    result: ScoreResult
    indices: np.ndarray  # request index of each scored record
    severity: list[str]
    rejected: list[Rejected]
    received: int


def require_token(expected: str | None, *, admin: bool) -> None:
    """Bearer-token check in constant time. Admin routes are closed when no token is set."""
    if expected is None:
        if admin:
            raise ApiError(
                403, "forbidden", "admin routes are disabled; set admin_token to enable them"
            )
        return
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(
        token.strip().encode(), expected.encode()
    ):
        raise ApiError(401, "unauthorized", "send 'Authorization: Bearer <token>'")


def records_frame(
    records: Any, state: ServiceState
) -> tuple[pd.DataFrame, np.ndarray, list[Rejected]]:
    """Validate a JSON ``records`` list. Returns the frame of well-formed records, their request
    indices, and the malformed ones (not an object, nested values) with reasons."""
    if not isinstance(records, list):
        raise ApiError(400, "bad_request", "'records' must be a list of objects")
    if not records:
        raise ApiError(422, "invalid_input", "'records' is empty; send at least one record")
    check_batch_size(len(records), state)
    good: list[Mapping[str, Any]] = []
    indices: list[int] = []
    rejected: list[Rejected] = []
    for i, record in enumerate(records):
        if not isinstance(record, dict):
            rejected.append(Rejected(i, ("record is not a JSON object",), "malformed"))
            continue
        nested = [k for k, v in record.items() if isinstance(v, dict | list)]
        if nested:
            reason = f"field(s) {nested} hold objects or lists; values must be numbers or text"
            rejected.append(Rejected(i, (reason,), "malformed"))
            continue
        good.append(record)
        indices.append(i)
    return pd.DataFrame.from_records(good), np.asarray(indices, dtype=np.int64), rejected


def check_batch_size(n: int, state: ServiceState) -> None:
    limit = state.config.max_batch_records
    if n > limit:
        raise ApiError(
            413,
            "batch_too_large",
            f"{n} records in one request; the limit is {limit}: split the batch or raise "
            "max_batch_records",
        )


def score_request(
    state: ServiceState,
    model: LoadedModel,
    frame: pd.DataFrame,
    indices: np.ndarray,
    rejected: Sequence[Rejected] = (),
) -> ScoredRequest:
    """Score, decide severities, count metrics and feed the alert tracker."""
    passthrough = [c for c in state.config.passthrough_fields if c in frame.columns]
    all_rejected = list(rejected)
    if len(frame):
        result = score_frame(model.bundle, frame, passthrough=passthrough)
        all_rejected += [
            Rejected(int(indices[r.row]), r.reasons, r.code) for r in result.rejections
        ]
    else:
        result = score_frame(model.bundle, _empty_frame(model), passthrough=())
    policy = state.trackers[model.name].policy
    severity = [
        policy.severity(float(p), bool(a))
        for p, a in zip(result.p_value, result.is_anomaly, strict=True)
    ]
    scored = ScoredRequest(
        model=model,
        result=result,
        indices=indices[result.rows] if len(frame) else np.zeros(0, dtype=np.int64),
        severity=severity,
        rejected=sorted(all_rejected, key=lambda r: r.index),
        received=len(frame) + len(rejected),
    )
    _count(state, scored)
    _count_keys(state, scored, frame)
    _alert(state, scored, frame)
    return scored


def _empty_frame(model: LoadedModel) -> pd.DataFrame:
    return pd.DataFrame(columns=list(model.bundle.schema.column_order))


def _count(state: ServiceState, scored: ScoredRequest) -> None:
    metrics = state.metrics
    name = scored.model.name
    metrics.records_scored.labels(name).inc(scored.result.n_scored)
    for level in set(scored.severity) - {"none"}:
        metrics.anomalies.labels(name, level).inc(scored.severity.count(level))
    for rejection in scored.rejected:
        metrics.records_rejected.labels(name, rejection.code).inc()
    histogram = metrics.p_values.labels(name)
    for p in scored.result.p_value.tolist():
        histogram.observe(p)


def _count_keys(state: ServiceState, scored: ScoredRequest, frame: pd.DataFrame) -> None:
    """Anomalies per alert key, for the dashboard's top anomalous keys; keys are formed as the
    alert tracker forms them, so a key here matches the labels of its alerts."""
    tracker = state.trackers[scored.model.name]
    if not tracker.policy.group_by or not scored.result.is_anomaly.any():
        return
    fields = [f for f in tracker.policy.group_by if f in frame.columns]
    rows = scored.result.rows[scored.result.is_anomaly]
    records = frame.loc[rows, fields].astype(str).to_dict("records") if fields else [{}] * len(rows)
    counts: dict[str, int] = {}
    for record in records:
        key = ",".join(f"{name}={value}" for name, value in tracker.key_of(record))
        counts[key] = counts.get(key, 0) + 1
    state.metrics.count_key_anomalies(scored.model.name, counts)


def _alert(state: ServiceState, scored: ScoredRequest, frame: pd.DataFrame) -> None:
    tracker = state.trackers[scored.model.name]
    fields = [f for f in tracker.policy.group_by if f in frame.columns]
    result = scored.result
    keys = frame.loc[result.rows, fields].astype(str).to_dict("records") if fields else None
    top = result.top_features(TOP_FEATURES)
    alerts = []
    for i in range(result.n_scored):
        alerts += tracker.observe(
            keys[i] if keys is not None else {},
            is_anomaly=bool(result.is_anomaly[i]),
            p_value=float(result.p_value[i]),
            anomaly_score=float(result.anomaly_score[i]),
            top_features=top[i],
            model_version=scored.model.bundle.version,
        )
    if alerts:
        state.dispatcher.submit(alerts)


def per_record(scored: ScoredRequest, frame: pd.DataFrame, passthrough: Sequence[str]) -> list:
    """The JSON results list: one object per scored record, in request order."""
    result = scored.result
    order = result.top_indices(TOP_FEATURES)
    columns = np.asarray(result.columns, dtype=object)
    top_names = columns[order].tolist()
    top_values = np.take_along_axis(result.contributions, order, axis=1).tolist()
    echo = {f: frame.loc[result.rows, f].tolist() for f in passthrough if f in frame.columns}
    unseen = None if result.context_unseen is None else result.context_unseen.tolist()
    out = []
    for i, (index, score, p, flag) in enumerate(
        zip(
            scored.indices.tolist(),
            result.anomaly_score.tolist(),
            result.p_value.tolist(),
            result.is_anomaly.tolist(),
            strict=True,
        )
    ):
        item: dict[str, Any] = {
            "index": index,
            "anomaly_score": score,
            "p_value": p,
            "is_anomaly": flag,
            "severity": scored.severity[i],
            # Conditional models only: scored without its context, never seen in training.
            **({} if unseen is None else {"context_unseen": unseen[i]}),
            "top_features": [
                {"column": c, "contribution": v}
                for c, v in zip(top_names[i], top_values[i], strict=True)
            ],
        }
        for f, values in echo.items():
            item[f] = values[i]
        out.append(item)
    return out
