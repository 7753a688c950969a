"""The v1 JSON API, health checks and metrics. Bodies are the models of ``service.schemas``;
the OpenAPI document (``service.openapi``) is generated from them."""

from __future__ import annotations

import csv
import io
import logging
import os
import sqlite3
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pydantic_core
from flask import Blueprint, Response, jsonify, request

from detector.batch.scored_tables import number_column
from detector.errors import BundleError, DataError
from detector.features.encode import check_columns, listed, shortened
from detector.io.csv_source import CsvSource
from detector.io.tables import check_header_row
from service import schemas
from service.bodies import (
    JSON_LINES,
    answer,
    json_lines,
    json_type,
    parse_json,
    parse_json_lines,
    read_body,
    read_json,
    validated,
)
from service.openapi import openapi_document
from service.registry import LoadedModel
from service.scoring import (
    Records,
    Rejected,
    ScoredRequest,
    check_batch_size,
    per_record,
    read_records,
    require_token,
    score_request,
)
from service.series_store import state_disk_low
from service.state import ApiError, state, unknown_model_detail
from service.throttled_log import ThrottledLog
from service.turns import HEAVY_BODY_BYTES as HEAVY
from service.turns import off_the_loop

log = logging.getLogger(__name__)

api = Blueprint("api", __name__)


@api.get("/healthz")
def healthz() -> Response:
    return answer(schemas.Health(status="alive"))


#: What an open route says of a model that failed to load; the reason, which names files and
#: quotes Keras, is in the server log (the registry logs it when the load fails).
NOT_LOADED = "not loaded; see the server log"
#: What ``/readyz`` (no token) says of a full state disk: the file's path is in the log alone.
STATE_DISK_FULL = (
    "its disk is (nearly) full: series requests answer 503 with Retry-After, and alerts stop, "
    "until space is freed there (the server log names the file)"
)
_state_disk_said = ThrottledLog(log, "readiness checks on a full state disk")


@api.get("/readyz")
def readyz() -> Response:
    app_state = state()
    models = app_state.models
    errors = dict.fromkeys(models.errors(), NOT_LOADED)
    ready = models.ready(app_state.config.ready_needs)
    # A full state disk leaves the server ready, and the body says so: only series requests
    # fail (503, Retry-After) and alerts stop, while the other models score. Not ready, a load
    # balancer would take out every replica whose disk filled alike (a volume they share, the
    # same growth), with all they still serve; a series' key belongs to one replica anyway,
    # and freeing the disk is the fix wherever traffic goes.
    degraded = {}
    if state_disk_low(app_state.config.series_state):
        degraded["series_state"] = STATE_DISK_FULL
        _state_disk_said.error(
            "series state file %s: its disk is (nearly) full; free space there",
            app_state.config.series_state,
        )
    body = schemas.Readiness(ready=ready, models=models.names(), errors=errors, degraded=degraded)
    return answer(body, 200 if body.ready else 503)


@api.get("/metrics")
def metrics() -> Response:
    from prometheus_client import CONTENT_TYPE_LATEST

    return Response(state().metrics.exposition(), content_type=CONTENT_TYPE_LATEST)


@api.get("/openapi.json")
def openapi() -> Any:
    return jsonify(openapi_document())


@api.get("/v1/models")
def list_models() -> Response:
    app_state = state()
    require_token(app_state.config.scoring_token, admin=False)
    models: list[schemas.ModelSummary | schemas.ModelNotLoaded] = []
    for name in app_state.models.names():
        try:
            models.append(_summary(app_state.models.get(name)))
        except BundleError:
            models.append(schemas.ModelNotLoaded(name=name, loaded=False, error=NOT_LOADED))
    return answer(schemas.ModelList(models=models))


@api.get("/v1/models/<name>")
def describe_model(name: str) -> Response:
    app_state = state()
    require_token(app_state.config.scoring_token, admin=False)
    loaded = app_state.model(name)
    schema = loaded.bundle.schema
    # Names and kinds only: a column's range and median and every category value are facts
    # about the training data, which a scoring client has no need of (`anomaly info` shows
    # them to whoever can read the bundle).
    columns = schemas.ModelColumns(
        columns=list(schema.column_order),
        numeric=[c.name for c in schema.numeric],
        categorical=[c.name for c in schema.categorical],
        context=[c.name for c in schema.context],
        inputs=list(loaded.bundle.input_columns),
    )
    spec = loaded.bundle.series
    series = None
    if spec is not None:
        series = schemas.SeriesInfo(
            time_column=spec.time_column,
            key_columns=list(spec.key_columns),
            window=spec.window,
            max_gap_seconds=spec.max_gap_seconds,
            calendar=spec.calendar,
            description=spec.describe(),
        )
    detail = schemas.ModelDetail(
        **_summary(loaded).model_dump(),
        series=series,
        schema=columns,
        training={k: v for k, v in loaded.bundle.training.items() if k != "history"},
        alert_policy=app_state.trackers[name].policy.to_dict(),
    )
    return answer(detail)


def _summary(loaded: LoadedModel) -> schemas.ModelSummary:
    bundle = loaded.bundle
    return schemas.ModelSummary(
        name=loaded.name,
        loaded=True,
        version=bundle.version,
        model_type=bundle.model_type,
        created_at=bundle.created_at,
        score=bundle.score_kind,
        samples=bundle.n_samples,
        threshold=bundle.calibrator.threshold,
        target_fpr=bundle.calibrator.target_fpr,
        generation=loaded.generation,
    )


@api.post("/v1/models/<name>/score")
def score(name: str) -> Response:
    app_state = state()
    require_token(app_state.config.scoring_token, admin=False)
    loaded = app_state.model(name)
    records, indices, rejected = _read_records(loaded, app_state)
    scored = score_request(app_state, loaded, records, indices, rejected)
    passthrough = app_state.config.passthrough_fields
    return answer(off_the_loop(_score_response, name, scored, records, passthrough, at_least=HEAVY))


def _score_response(
    name: str, scored: ScoredRequest, records: Records, passthrough: tuple[str, ...]
) -> bytes:
    """The answer's JSON, as ``schemas.ScoreResponse`` writes it, written without validating
    it first. The code built every value from the scores (plain ints, floats, bools and
    strings) and read_records took the echoed fields as JSON scalars, so validation proved
    nothing, and for 1,000 records it built 4,000 objects only to write them out again: 1.6 ms
    and, with its garbage, the collector's passes over a heap of TensorFlow's objects. The
    dicts hold the fields in the model's order, extra fields last and an optional one only
    when set, so ``pydantic_core.to_json`` (the writer ``model_dump_json`` calls) writes the
    same bytes (test_a_score_answer_is_the_bytes_its_model_writes); test_schemas.py checks
    answers against the OpenAPI document."""
    bundle = scored.model.bundle
    body: dict[str, Any] = {
        "model": name,
        "version": bundle.version,
        "threshold": bundle.calibrator.threshold,
        "target_fpr": bundle.calibrator.target_fpr,
        "counts": {
            "received": scored.received,
            "scored": scored.result.n_scored,
            "rejected": len(scored.rejected),
        },
        "results": per_record(scored, records, passthrough),
        "rejected": [
            {
                "index": r.index,
                "code": r.code,
                "reasons": list(r.reasons),
                **{f: v for f, v in r.fields.items() if f not in _REJECTED_FIELDS},
            }
            for r in scored.rejected
        ],
    }
    # The sentence anomaly score warns with, as the V2 answer's parameters hold it.
    if scored.result.category_spelling is not None:
        body["category_spelling"] = scored.result.category_spelling
    return pydantic_core.to_json(body, inf_nan_mode="constants")


#: A rejected record's own fields, which config refuses as passthrough names: never hidden.
_REJECTED_FIELDS = frozenset(schemas.RejectedRecord.model_fields)


def _read_records(loaded: LoadedModel, app_state: Any) -> tuple[Records, Any, list]:
    mimetype = request.mimetype
    if mimetype in ("text/csv", "application/csv"):
        return _read_csv(loaded, app_state)
    if mimetype in JSON_LINES:
        body = read_body(app_state)
        return off_the_loop(_json_lines_records, body, loaded, app_state, at_least=HEAVY)
    if mimetype != "application/json":
        raise ApiError(
            415,
            "unsupported_media_type",
            'send application/json ({"records": [...]}), application/x-ndjson (one record '
            "a line) or text/csv",
        )
    shape = 'a JSON object {"records": [{...}, ...]}'
    body = read_body(app_state)
    json_type(shape)
    return off_the_loop(_json_records, body, shape, loaded, app_state, at_least=HEAVY)


def _json_records(
    body: bytes, shape: str, loaded: LoadedModel, app_state: Any
) -> tuple[Records, Any, list]:
    # The records as they came (the model describes them, and does not copy them): a record
    # that is not an object is rejected on its own, and one record stays fast.
    parsed = validated(schemas.ScoreRequest, parse_json(body, shape), shape)
    return read_records(parsed.records, loaded, app_state)


def _json_lines_records(
    body: bytes, loaded: LoadedModel, app_state: Any
) -> tuple[Records, Any, list]:
    lines = json_lines(body)
    if not lines:
        raise ApiError(422, "invalid_input", "the body holds no line; send one record a line")
    check_batch_size(len(lines), app_state)  # before a line is parsed
    return read_records(parse_json_lines(lines), loaded, app_state)


def _read_csv(loaded: LoadedModel, app_state: Any) -> tuple[Records, Any, list]:
    """A CSV body with a header row (a first line of values is refused as no header), read
    as the batch scorer reads a file (``CsvSource``): a ragged row, a broken quote or bad
    bytes reject that record with its reason, and the others are scored. The header is
    checked before the rows are read (a million-column header costs pandas minutes), and
    reading stops one row past the batch limit, so a 16 MiB body of one-value lines is a
    413, not an 8-million-row frame."""
    body = read_body(app_state)
    limit = app_state.config.max_batch_records
    try:
        header = _csv_header(body)
    except (pd.errors.EmptyDataError, UnicodeDecodeError, csv.Error) as exc:
        raise _unparsed(exc) from None
    # Before the columns: a body without a header row would get "missing column(s)", or with
    # one line, "no data rows", neither of which names the mistake.
    fields = len(loaded.bundle.input_columns) + len(app_state.config.passthrough_fields)
    if len(header) > fields and not any(end in body.strip() for end in (b"\n", b"\r")):
        # `curl -d @file.csv` sends the file without its newlines: header and records one line.
        raise ApiError(
            422,
            "invalid_input",
            "the CSV body is a single line; it needs a header line and a line per record "
            "(curl -d drops a file's newlines: send it with --data-binary @FILE)",
        )
    check_header_row(header, "the CSV body")
    check_columns(
        loaded.bundle.schema,
        header,
        passthrough=app_state.config.passthrough_fields,
        expected=loaded.bundle.input_columns,
    )
    tables, rows, rejected = [], [], []
    try:
        inputs = loaded.bundle.input_columns
        echoed = [f for f in app_state.config.passthrough_fields if f not in inputs]
        with CsvSource.of_bytes(body, "the CSV body", exact=echoed) as source:
            for chunk in source.chunks(limit + 1):
                tables.append(chunk.table)
                rows.append(chunk.row_numbers - 1)
                rejected += [
                    Rejected(int(r.row_number) - 1, (r.reason,), r.code) for r in chunk.rejects
                ]
                if sum(map(len, rows)) + len(rejected) > limit:
                    break
    except DataError as exc:  # what no record can be read past (bytes that are not text)
        raise _unparsed(exc) from None
    received = sum(map(len, rows)) + len(rejected)
    if not received:
        raise ApiError(422, "invalid_input", "the CSV body has no data rows")
    check_batch_size(received, app_state, at_least=True)
    table = pa.concat_tables(tables)
    frame = _csv_frame(loaded, table)
    return Records.of_frame(frame, table), np.concatenate(rows).astype(np.int64), rejected


def _unparsed(exc: Exception) -> ApiError:
    return ApiError(400, "bad_request", f"the CSV body cannot be parsed: {shortened(exc, 200)}")


def _csv_frame(loaded: LoadedModel, table: pa.Table) -> pd.DataFrame:
    """A CSV body's rows (all text) as the frame the scorer takes: the model's numbers read as
    the batch scorer reads them, its text as text, and other columns (echoed back) as numbers
    where every value is one, as a JSON client would have sent them."""
    schema = loaded.bundle.schema
    numeric = {c.name for c in schema.numeric}
    text = set(schema.text_columns)
    series = loaded.bundle.series
    if series is not None:  # a key '007' is not the series '7'; times are read as text
        text |= {series.time_column, *series.key_columns}
    columns: dict[str, Any] = {}
    for name in table.column_names:
        values = table.column(name)
        if name in numeric:
            columns[name] = number_column(values)
        elif name in text:
            columns[name] = pd.Series(values.to_numpy(zero_copy_only=False), dtype=object)
        else:
            columns[name] = _echoed(values)
    return pd.DataFrame(columns, index=pd.RangeIndex(table.num_rows), copy=False)


def _echoed(values: Any) -> Any:
    """A column the model does not read, as numbers where each value is written as that
    number prints (``7``, ``2.5``), else as the text sent: '007' or a 20-digit id stays
    what it was."""
    for kind in (pa.int64(), pa.float64()):
        try:
            numbers = pc.cast(values, kind)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            continue
        if pc.all(pc.equal(pc.cast(numbers, pa.string()), values)).as_py() is not False:
            return numbers.to_pandas()
    return pd.Series(values.to_numpy(zero_copy_only=False), dtype=object)


def _csv_header(body: bytes) -> list[str]:
    """The column names of a CSV body as ``CsvSource`` reads them (and training): the first
    non-blank row, without a byte-order mark, each name stripped of spaces."""
    text = io.TextIOWrapper(io.BytesIO(body), encoding="utf-8-sig", newline="")
    for row in csv.reader(text):
        if any(field.strip() for field in row):
            return [field.strip() for field in row]
    raise pd.errors.EmptyDataError("no header row")


@api.post("/v1/models/<name>/reload")
def reload(name: str) -> Response:
    app_state = state()
    require_token(app_state.config.admin_token, admin=True)
    shape = 'an empty body or {"path": "..."}'
    body = validated(schemas.ReloadRequest, read_json(app_state, shape, empty={}), shape)
    if name not in app_state.models.names():
        raise ApiError(404, "unknown_model", unknown_model_detail(name, app_state.models.names()))
    try:
        before = list(app_state.models.get(name).bundle.input_columns)
    except BundleError:  # not loaded: nothing served to compare with
        before = None
    # Whole, as the configured ones are: "no model bundle at models/x" left the caller, who
    # does not see the server's working directory, to guess where it looked.
    path = os.path.abspath(body.path) if body.path else None
    try:
        loaded = app_state.models.reload(name, path)
    except (BundleError, OSError) as exc:
        # The answer went to whoever asked; the log is where the on-call reads why the reload
        # alert fired (SIGHUP's failures were logged, HTTP's were not).
        # A model that never loaded serves nothing: its requests stay 503.
        outcome = (
            "it is still not loaded (its requests are answered 503)"
            if before is None
            else "the previous model is still serving"
        )
        log.error("reload of model %s failed; %s: %s", name, outcome, exc)
        raise ApiError(422, "reload_failed", f"{exc}; {outcome}") from None
    after = list(loaded.bundle.input_columns)
    added = [c for c in after if before is not None and c not in before]
    removed = [c for c in before or () if c not in after]
    if added or removed:
        # Retraining on other columns is legitimate, but every producer must change with it:
        # until then each of their requests is a 422.
        log.warning(
            "model %s reloaded with other input columns (added %s, removed %s): requests "
            "refused until their producers follow",
            name,
            added,
            removed,
        )
    summary = _summary(loaded)
    return answer(
        schemas.ReloadSummary(**summary.model_dump(), columns_added=added, columns_removed=removed)
    )


@api.get("/v1/alerts")
def alerts() -> Response:
    app_state = state()
    require_token(app_state.config.scoring_token, admin=False)
    model = _alerts_model(app_state.models.names())
    shared = app_state.shared_alerts
    if shared is None:
        listed = app_state.dispatcher.recent(model)
    else:
        try:
            listed = shared.recent(model)  # every worker's: a worker's own depended on who answered
        except sqlite3.Error as exc:
            log.error("alert state failed serving GET /v1/alerts: %s", exc)
            raise ApiError(
                503,
                "alert_state_unavailable",
                f"the alert state file cannot be used ({exc}); see the server log",
            ) from None
    return answer(schemas.AlertList(alerts=listed))


def _alerts_model(served: list[str]) -> str | None:
    """``?model=NAME`` of ``GET /v1/alerts``, a served model's; any other parameter is a 400.
    A server of many models answered ``?model=a`` (or a misspelt parameter) with every
    model's alerts, as if they were a's."""
    unknown = sorted(set(request.args) - {"model"})
    if unknown:
        raise ApiError(
            400,
            "bad_request",
            f"unknown query parameter(s) {listed(unknown)}; GET /v1/alerts takes ?model=NAME alone",
        )
    names = request.args.getlist("model")
    if not names:
        return None
    if len(names) > 1:
        raise ApiError(400, "bad_request", "?model= given more than once; ask for one model")
    if names[0] not in served:
        raise ApiError(
            404,
            "unknown_model",
            unknown_model_detail(names[0], list(served)),
        )
    return names[0]
