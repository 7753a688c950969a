"""One scoring request, whatever its wire format: records -> scores -> decisions -> alerts and
metrics. Both the v1 JSON/CSV routes and the KServe V2 route call ``score_request``, which
scores JSON records with ``detector.features.records.score_records`` and tables with
``detector.scoring.scores.score_frame`` (the function the batch scorer calls), which give the same
result for the same records.
"""

from __future__ import annotations

import hmac
import logging
import sqlite3
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
from flask import request

from detector.bundles.bundle import Bundle
from detector.errors import SchemaError
from detector.features.encode import check_columns, listed
from detector.features.records import score_records, score_windowed
from detector.features.schema import Schema, respelled_values
from detector.io.json_lines import record_problem
from detector.scoring.output_columns import ANSWER_FIELDS, RENAME_ANSWER_FIELDS
from detector.scoring.scores import Runner, ScoreResult, here, score_frame
from detector.series.levels import Level
from detector.series.stream import ahead_of_clock, parse_time, series_key
from detector.series.values import ValueCheck
from detector.series.windows import SeriesRejection, SeriesSpec
from service.alerts import key_text
from service.registry import LoadedModel
from service.series_store import SeriesStore, StoredLevels
from service.state import ApiError, ServiceState
from service.throttled_log import ThrottledLog
from service.turns import off_the_loop

log = logging.getLogger(__name__)

TOP_FEATURES = 3


@dataclass(frozen=True)
class Rejected:
    """A record not scored: its 0-based index in the request, reasons and a metrics code, and
    its ``passthrough_fields`` where it held them (a rejection named by index alone left a
    client of 10,000 payments a request to find which transaction it was)."""

    index: int
    reasons: tuple[str, ...]
    code: str
    fields: Mapping[str, Any] = field(default_factory=dict)


def echoed(record: object, names: Sequence[str]) -> dict[str, Any]:
    """The ``names`` a record holds as plain values (a malformed record: what it can give)."""
    if not isinstance(record, Mapping):
        return {}
    return {
        name: record[name]
        for name in names
        if name in record and (record[name] is None or isinstance(record[name], str | int | float))
    }


@dataclass(frozen=True, eq=False)
class ScoredRequest:
    """The outcome of one request, in request order of the scored records."""

    model: LoadedModel
    result: ScoreResult
    indices: np.ndarray  # request index of each scored record
    severity: list[str]
    rejected: list[Rejected]
    received: int
    #: ``(n_scored, TOP_FEATURES)``: the columns most to blame for each scored record, as
    #: positions in ``result.columns``; found once, for the alerts and the answer alike.
    top: np.ndarray


@dataclass(frozen=True, eq=False)
class Records:
    """The well-formed records of one request: JSON objects as they came (scored without a
    DataFrame, ``detector.features.records``: a frame costs more than the model for a few
    records), or a table (CSV and KServe bodies arrive as columns)."""

    rows: Sequence[Mapping[str, Any]] | pd.DataFrame
    columns: frozenset[str]
    #: A CSV body's fields as written (a table of text, the frame's rows), which its alert
    #: keys are: the frame reads a field of numbers as floats, so rack 7 was 'rack=7.0'.
    written: pa.Table | None = None

    @classmethod
    def of_frame(cls, frame: pd.DataFrame, written: pa.Table | None = None) -> Records:
        return cls(frame, frozenset(map(str, frame.columns)), written)

    def __len__(self) -> int:
        return len(self.rows)

    def score(self, bundle: Bundle, passthrough: Sequence[str]) -> ScoreResult:
        if isinstance(self.rows, pd.DataFrame):
            return score_frame(bundle, self.rows, passthrough=passthrough)
        return score_records(bundle, self.rows, passthrough=passthrough)

    def score_in_series(
        self,
        model: LoadedModel,
        store: SeriesStore,
        max_ahead: float | None = None,
        runner: Runner = here,
    ) -> ScoreResult:
        """A series model's records, each with the rows its key sent before (in this request
        or an earlier one, to any worker: ``store`` holds them), then stored for the next.
        A record more than ``max_ahead`` seconds ahead of this server's clock is rejected.
        ``runner`` runs what is pure (checking the values, windowing, encoding, the model
        call); ``store`` is used where this runs."""
        bundle = model.bundle
        assert bundle.series is not None
        spec, check = bundle.series, ValueCheck(bundle.schema)
        rows, bad = runner(_unplaceable, spec, check, self.rows, max_ahead, time.time())
        kept = np.setdiff1d(np.arange(len(rows)), [r.row for r in bad])
        placed = [rows[i] for i in kept] if bad else rows
        known: dict[str, Level] = {}
        windows = store.window(model.name, spec, check.columns, placed, levels=known, runner=runner)
        if bad:
            windows = windows.at_positions(kept, bad)
        levels = StoredLevels(store, model.name, spec, check.columns, known)
        return score_windowed(bundle, windows, n_input=len(rows), levels=levels, runner=runner)

    def values(self, field: str, rows: np.ndarray) -> list[Any]:
        """``field``'s value in each of ``rows`` (positions), ``None`` where a record lacks it."""
        if isinstance(self.rows, pd.DataFrame):
            return self.rows.loc[rows, field].tolist()  # type: ignore[no-any-return]
        return [self.rows[i].get(field) for i in rows.tolist()]

    def keyed(self, fields: Sequence[str], rows: np.ndarray) -> list[Mapping[str, object]]:
        """The records at ``rows`` with the ``fields`` an alert key is formed from: a CSV
        body's text as written, as a series key is ('7' and '7.0' apart); a table's values
        otherwise (KServe's numbers, keyed as JSON's by ``alerts.label_value``: 7.0 is 7)."""
        if not isinstance(self.rows, pd.DataFrame):
            return [self.rows[i] for i in rows.tolist()]
        if not fields:
            return [{}] * len(rows)
        if self.written is not None:
            return self.written.select(list(fields)).take(rows).to_pylist()  # type: ignore[no-any-return]
        return self.rows.loc[rows, list(fields)].to_dict("records")  # type: ignore[return-value]


def _unplaceable(
    spec: SeriesSpec,
    check: ValueCheck,
    given: Sequence[Mapping[str, Any]] | pd.DataFrame,
    max_ahead: float | None,
    now: float,
) -> tuple[Sequence[Mapping[str, Any]], list[SeriesRejection]]:
    """The records ``given`` as mappings, and those rejected before they join their series:
    values that cannot be scored, or a time more than ``max_ahead`` seconds after ``now``; an
    unreadable time or a missing key is the reason given first (``window_records``'), as in a
    file."""
    rows = given
    if isinstance(rows, pd.DataFrame):
        rows = rows.astype(object).where(rows.notna(), None).to_dict("records")
    ahead = [] if max_ahead is None else ahead_of_clock(spec, rows, now=now, limit=max_ahead)
    too_far = {r.row for r in ahead}
    return rows, ahead + [
        r
        for r in check.records(rows)
        if r.row not in too_far
        and parse_time(rows[r.row].get(spec.time_column)) is not None
        and series_key(spec, rows[r.row]) is not None
    ]


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


def read_records(
    records: Any, model: LoadedModel, state: ServiceState
) -> tuple[Records, np.ndarray, list[Rejected]]:
    """Validate a JSON ``records`` list. Returns the well-formed records, their request
    indices, and the malformed ones (not an object, nested values) with reasons.

    The batch limit and the columns are checked before anything is scored, in time linear in
    the number of keys: a record with 40,000 unknown keys is a 422 in milliseconds."""
    if not isinstance(records, list):
        raise ApiError(400, "bad_request", "'records' must be a list of objects")
    if not records:
        raise ApiError(422, "invalid_input", "'records' is empty; send at least one record")
    check_batch_size(len(records), state)
    good: list[Mapping[str, Any]] = []
    indices: list[int] = []
    rejected: list[Rejected] = []
    columns: dict[str, None] = {}
    for i, record in enumerate(records):
        problem = record_problem(record)
        if problem is not None:
            fields = echoed(record, state.config.passthrough_fields)
            rejected.append(Rejected(i, (problem,), "malformed", fields))
            continue
        good.append(record)
        indices.append(i)
        columns.update(dict.fromkeys(record))
    if good:
        # The columns training was told to ignore are taken, as batch scoring takes them: a
        # full transaction (its id, its time) was a 422 over HTTP and scored in a file.
        passthrough = (*state.config.passthrough_fields, *model.bundle.ignored_columns)
        try:
            check_columns(
                model.bundle.schema,
                list(columns),
                passthrough=passthrough,
                expected=model.bundle.input_columns,
            )
        except SchemaError:
            # Every record holding a field the model does not know: the request is refused
            # whole (a 4xx, counted by the AnomalyRequestsRefused alert). Some of them: those
            # are rejected with the reason, and the others scored (one odd record failed them
            # all, found by a helper).
            known = {*model.bundle.input_columns, *passthrough}
            odd = {j for j, record in enumerate(good) if not known.issuperset(record)}
            if not 0 < len(odd) < len(good):
                raise
            for j in sorted(odd):
                unknown = [f for f in good[j] if f not in known]
                kept = (
                    f" ({RENAME_ANSWER_FIELDS})"
                    if any(f in ANSWER_FIELDS for f in unknown)
                    else ", or list them in passthrough_fields"
                )
                reason = (
                    f"unknown field(s) {listed(unknown)}: the model's are "
                    f"{listed(list(model.bundle.input_columns))}; drop them{kept}"
                )
                fields = echoed(good[j], state.config.passthrough_fields)
                rejected.append(Rejected(indices[j], (reason,), "malformed", fields))
            indices = [i for j, i in enumerate(indices) if j not in odd]
            good = [record for j, record in enumerate(good) if j not in odd]
            columns = {c: None for record in good for c in record}
    rejected.sort(key=lambda r: r.index)
    return Records(good, frozenset(columns)), np.asarray(indices, dtype=np.int64), rejected


def check_batch_size(n: int, state: ServiceState, *, at_least: bool = False) -> None:
    """413 when ``n`` records are over ``max_batch_records``; ``at_least``: the count stopped
    at the first record over the limit (the body was not read further)."""
    limit = state.config.max_batch_records
    if n > limit:
        count = f"more than {limit}" if at_least else str(n)
        raise ApiError(
            413,
            "batch_too_large",
            f"{count} records in one request; the limit is {limit}: split the batch or raise "
            "max_batch_records",
        )


def score_request(
    state: ServiceState,
    model: LoadedModel,
    records: Records,
    indices: np.ndarray,
    rejected: Sequence[Rejected] = (),
) -> ScoredRequest:
    """Score, decide severities, count metrics and feed the alert tracker."""
    carried = (*state.config.passthrough_fields, *model.bundle.ignored_columns)
    passthrough = [c for c in dict.fromkeys(carried) if c in records.columns]
    all_rejected = list(rejected)
    if len(records):
        if model.bundle.series is None:
            result = off_the_loop(records.score, model.bundle, passthrough)
        else:
            # A request's windows and levels in turn with the worker's other requests for the
            # model: its model call lets the loop serve them, and a series' next records,
            # judged before these added their scores to its level, would miss them.
            with state.series_turn(model.name):
                result = records.score_in_series(
                    model, state.series, state.config.series_max_ahead_seconds, off_the_loop
                )
        echo = [f for f in state.config.passthrough_fields if f in records.columns]
        rows = np.asarray([r.row for r in result.rejections], dtype=np.int64)
        values = {f: records.values(f, rows) for f in echo}
        all_rejected += [
            Rejected(int(indices[r.row]), r.reasons, r.code, {f: values[f][k] for f in echo})
            for k, r in enumerate(result.rejections)
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
        indices=indices[result.rows] if len(records) else np.zeros(0, dtype=np.int64),
        severity=severity,
        rejected=sorted(all_rejected, key=lambda r: r.index),
        received=len(records) + len(rejected),
        top=result.top_indices(TOP_FEATURES),
    )
    _count(state, scored)
    _count_keys(state, scored, records)
    _alert(state, scored, records)
    return scored


def _empty_frame(model: LoadedModel) -> pd.DataFrame:
    return pd.DataFrame(columns=list(model.bundle.input_columns))


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


def _count_keys(state: ServiceState, scored: ScoredRequest, records: Records) -> None:
    """Anomalies per alert key, for the dashboard's top anomalous keys; keys are formed as the
    alert tracker forms them, so a key here matches the labels of its alerts."""
    tracker = state.trackers[scored.model.name]
    if not state.config.key_metrics:  # a bank's card numbers, on a page that takes no token
        return
    if not tracker.policy.group_by or not scored.result.is_anomaly.any():
        return
    policy = tracker.policy
    wanted = dict.fromkeys((*policy.group_by, *policy.record_fields))  # once each, in order
    fields = [f for f in wanted if f in records.columns]
    counts: dict[str, int] = {}
    for record in records.keyed(fields, scored.result.rows[scored.result.is_anomaly]):
        key = key_text(tracker.key_of(record))
        counts[key] = counts.get(key, 0) + 1
    state.metrics.count_key_anomalies(scored.model.name, counts)


def _alert(state: ServiceState, scored: ScoredRequest, records: Records) -> None:
    tracker = state.trackers[scored.model.name]
    policy = tracker.policy
    # A series model's alert says when its last anomaly happened by the record's own time:
    # the server's clock (starts_at) misplaced a late or replayed one.
    series = scored.model.bundle.series
    shown = (series.time_column,) if series is not None else ()
    wanted = dict.fromkeys((*policy.group_by, *policy.record_fields, *shown))  # once each
    fields = [f for f in wanted if f in records.columns]
    result = scored.result
    # Only scored records are alerted: a request whose every record was rejected (a host
    # sent as an object) logged keyless records that did not exist.
    absent = [f for f in policy.group_by if f not in records.columns] if result.n_scored else []
    if absent:
        # Every such record counts towards one key, '': a fraud helper's cards sent without
        # card_id alerted as one card, without a word.
        _keyless.error(
            "model %s: records without the alert key field(s) %s are alerted together under "
            "the key ''; send them, or change alerts.group_by",
            tracker.model,
            absent,
            count=result.n_scored,
        )
    keys = records.keyed(fields, result.rows) if fields else None
    names = np.asarray(result.columns, dtype=object)
    top = names[scored.top].tolist()
    alerts: list = []
    try:
        _observe(tracker, alerts, scored, keys, top, shown)
    except sqlite3.Error as exc:  # the records are scored and answered; their alerts are not
        full = getattr(exc, "sqlite_errorname", None) == "SQLITE_FULL"
        _unusable.error(
            "model %s: alert state unusable, records scored without alerts: %s",
            tracker.model,
            # 'database or disk is full' named neither the file nor what to do.
            f"the state file {state.config.series_state} is on a full disk; free space there"
            if full
            else exc,
            count=result.n_scored,
        )
        # A log line alone left alerting off while /readyz said ready: a full disk stopped
        # every alert of an on-call helper's service, and no rule could see it.
        state.metrics.records_unalerted.labels(tracker.model).inc(result.n_scored)
        alerts = []
    if alerts:
        state.dispatcher.submit(alerts)


#: The alert state failing: the records it left out of alerting, counted between log lines.
_unusable = ThrottledLog(log, "records left out of alerting")
#: Requests whose records lack a group_by field, counted alike.
_keyless = ThrottledLog(log, "records under the key ''")


def _observe(
    tracker: Any, alerts: list, scored: ScoredRequest, keys: Any, top: Any, shown: Sequence[str]
) -> None:
    result = scored.result
    # With state the workers share: one transaction for the request.
    with tracker.batch(list(keys) if keys is not None else [{}]):
        for i in range(result.n_scored):
            alerts += tracker.observe(
                keys[i] if keys is not None else {},
                is_anomaly=bool(result.is_anomaly[i]),
                p_value=float(result.p_value[i]),
                anomaly_score=float(result.anomaly_score[i]),
                top_features=top[i],
                model_version=scored.model.bundle.version,
                shown=shown,
            )
        alerts += tracker.resolve_silent()  # keys gone quiet while firing


def per_record(scored: ScoredRequest, records: Records, passthrough: Sequence[str]) -> list:
    """The JSON results list: one object per scored record, in request order."""
    result = scored.result
    columns = np.asarray(result.columns, dtype=object)
    top_names = columns[scored.top].tolist()
    top_values = np.take_along_axis(result.contributions, scored.top, axis=1).tolist()
    echo = {f: records.values(f, result.rows) for f in passthrough if f in records.columns}
    unseen = None if result.context_unseen is None else result.context_unseen.tolist()
    warming = None if result.warming_up is None else result.warming_up.tolist()
    spelled = spelled_in_training(scored.model.bundle.schema, records, result.rows)
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
            # Series models only: judged with fewer of its series' rows than the window holds.
            **({} if warming is None else {"warming_up": warming[i]}),
            # Scored as a label never seen, where the client likely meant training's.
            **({"training_spelling": spelled[i]} if i in spelled else {}),
            "top_features": [
                {"column": c, "contribution": v}
                for c, v in zip(top_names[i], top_values[i], strict=True)
            ],
        }
        for f, values in echo.items():
            # Never an answer's field (config refuses such names): never hides one either.
            item.setdefault(f, values[i])
        out.append(item)
    return out


def spelled_in_training(
    schema: Schema, records: Records, rows: np.ndarray
) -> dict[int, dict[str, str]]:
    """For the scored records (``rows``) with text values that differ from a training label only
    in case, by position among them: those values by column, with that label. Scored as labels
    never seen, which a file's summary warns of, and the client is told in its answer (V1 and
    V2), with no log line per request. Most requests have none, found from each column's
    distinct values."""
    found: dict[int, dict[str, str]] = {}
    labelled = [(c.name, c.labels) for c in schema.categorical]
    labelled += [(c.name, c.labels) for c in schema.context]
    for name, categories in labelled:
        if name not in records.columns:  # a series model's 'proto[-1]' is no field
            continue
        given = records.values(name, rows)
        respelled = respelled_values(categories, given)
        if not respelled:
            continue
        for i, value in enumerate(given):
            if isinstance(value, str) and value in respelled:
                found.setdefault(i, {})[name] = respelled[value]
    return found
