"""The v1 JSON API, health checks and metrics. The OpenAPI document is ``service.openapi``."""

from __future__ import annotations

import csv
import io
from typing import Any

import pandas as pd
from flask import Blueprint, Response, jsonify, request

from detector.errors import BundleError
from detector.features import check_columns, shortened
from detector.tables import check_header_row
from service.openapi import openapi_document
from service.pipeline import (
    Records,
    check_batch_size,
    per_record,
    read_body,
    read_json,
    read_records,
    require_token,
    score_request,
)
from service.registry import LoadedModel
from service.state import ApiError, state

api = Blueprint("api", __name__)


@api.get("/healthz")
def healthz() -> Any:
    return jsonify({"status": "alive"})


#: What an open route says of a model that failed to load; the reason, which names files and
#: quotes Keras, is in the server log (the registry logs it when the load fails).
NOT_LOADED = "not loaded; see the server log"


@api.get("/readyz")
def readyz() -> Any:
    models = state().models
    errors = dict.fromkeys(models.errors(), NOT_LOADED)
    body = {"ready": models.ready(), "models": models.names(), "errors": errors}
    return jsonify(body), (200 if body["ready"] else 503)


@api.get("/metrics")
def metrics() -> Response:
    from prometheus_client import CONTENT_TYPE_LATEST

    return Response(state().metrics.exposition(), mimetype=CONTENT_TYPE_LATEST)


@api.get("/openapi.json")
def openapi() -> Any:
    return jsonify(openapi_document())


@api.get("/v1/models")
def list_models() -> Any:
    app_state = state()
    require_token(app_state.config.scoring_token, admin=False)
    models = []
    for name in app_state.models.names():
        try:
            models.append(_summary(app_state.models.get(name)))
        except BundleError:
            models.append({"name": name, "loaded": False, "error": NOT_LOADED})
    return jsonify({"models": models})


@api.get("/v1/models/<name>")
def describe_model(name: str) -> Any:
    app_state = state()
    require_token(app_state.config.scoring_token, admin=False)
    loaded = app_state.model(name)
    schema = loaded.bundle.schema
    detail = _summary(loaded)
    # Names and kinds only: a column's range and median and every category value are facts
    # about the training data, which a scoring client has no need of (`anomaly info` shows
    # them to whoever can read the bundle).
    detail["schema"] = {
        "columns": list(schema.column_order),
        "numeric": [c.name for c in schema.numeric],
        "categorical": [c.name for c in schema.categorical],
        "context": [c.name for c in schema.context],
    }
    detail["training"] = {k: v for k, v in loaded.bundle.training.items() if k != "history"}
    detail["alert_policy"] = app_state.trackers[name].policy.to_dict()
    return jsonify(detail)


def _summary(loaded: LoadedModel) -> dict[str, Any]:
    bundle = loaded.bundle
    return {
        "name": loaded.name,
        "loaded": True,
        "version": bundle.version,
        "model_type": bundle.model_type,
        "created_at": bundle.created_at,
        "score": bundle.score_kind,
        "samples": bundle.n_samples,
        "threshold": bundle.calibrator.threshold,
        "target_fpr": bundle.calibrator.target_fpr,
        "generation": loaded.generation,
    }


@api.post("/v1/models/<name>/score")
def score(name: str) -> Any:
    app_state = state()
    require_token(app_state.config.scoring_token, admin=False)
    loaded = app_state.model(name)
    records, indices, rejected = _read_records(loaded, app_state)
    scored = score_request(app_state, loaded, records, indices, rejected)
    bundle = loaded.bundle
    return jsonify(
        {
            "model": name,
            "version": bundle.version,
            "threshold": bundle.calibrator.threshold,
            "target_fpr": bundle.calibrator.target_fpr,
            "counts": {
                "received": scored.received,
                "scored": scored.result.n_scored,
                "rejected": len(scored.rejected),
            },
            "results": per_record(scored, records, app_state.config.passthrough_fields),
            "rejected": [{"index": r.index, "reasons": list(r.reasons)} for r in scored.rejected],
        }
    )


def _read_records(loaded: LoadedModel, app_state: Any) -> tuple[Records, Any, list]:
    mimetype = request.mimetype
    if mimetype in ("text/csv", "application/csv"):
        return _read_csv(loaded, app_state)
    if mimetype != "application/json":
        raise ApiError(
            415,
            "unsupported_media_type",
            'send application/json ({"records": [...]}) or text/csv',
        )
    shape = 'a JSON object {"records": [{...}, ...]}'
    body = read_json(app_state, shape)
    if not isinstance(body, dict) or "records" not in body:
        raise ApiError(400, "bad_request", f"the body must be {shape}")
    return read_records(body["records"], loaded, app_state)


def _read_csv(loaded: LoadedModel, app_state: Any) -> tuple[Records, Any, list]:
    """A CSV body with a header row (a first line of values is refused as no header). The
    header is checked before pandas reads it (pandas takes minutes over a million-column
    header) and pandas reads at most one row past the batch limit, so a 16 MiB body of
    one-value lines is a 413, not an 8-million-row frame."""
    body = read_body(app_state)
    limit = app_state.config.max_batch_records
    try:
        header = _csv_header(body)
        # Before the columns: a body without a header row would get "missing column(s)", or
        # with one line, "no data rows", neither of which names the mistake.
        check_header_row(header, "the CSV body")
        check_columns(loaded.bundle.schema, header, passthrough=app_state.config.passthrough_fields)
        text_columns = {name: "string" for name in loaded.bundle.schema.text_columns}
        frame = pd.read_csv(io.BytesIO(body), dtype=text_columns, nrows=limit + 1)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, csv.Error) as exc:
        detail = shortened(exc, 200)
        raise ApiError(400, "bad_request", f"the CSV body cannot be parsed: {detail}") from None
    if frame.empty:
        raise ApiError(422, "invalid_input", "the CSV body has no data rows")
    check_batch_size(len(frame), app_state, at_least=True)
    return Records.of_frame(frame), pd.RangeIndex(len(frame)).to_numpy(), []


def _csv_header(body: bytes) -> list[str]:
    """The column names of a CSV body as pandas reads them: the first non-blank row, without a
    byte-order mark."""
    text = io.TextIOWrapper(io.BytesIO(body), encoding="utf-8-sig", newline="")
    for row in csv.reader(text):
        if any(field.strip() for field in row):
            return row
    raise pd.errors.EmptyDataError("no header row")


#: Longest reload path accepted (Linux PATH_MAX, NAME_MAX); longer ones cannot name a bundle.
MAX_PATH_BYTES = 4096
MAX_NAME_BYTES = 255


@api.post("/v1/models/<name>/reload")
def reload(name: str) -> Any:
    app_state = state()
    require_token(app_state.config.admin_token, admin=True)
    shape = 'an empty body or {"path": "..."}'
    body = read_json(app_state, shape, empty={})
    if not isinstance(body, dict):
        raise ApiError(400, "bad_request", f"the body must be {shape}")
    path = body.get("path")
    if path is not None:
        _check_path(path)
    if name not in app_state.models.names():
        raise ApiError(404, "unknown_model", f"no model named '{name}'")
    try:
        loaded = app_state.models.reload(name, path)
    except (BundleError, OSError) as exc:
        raise ApiError(
            422, "reload_failed", f"{exc}; the previous model is still serving"
        ) from None
    return jsonify(_summary(loaded))


def _check_path(path: Any) -> None:
    if not isinstance(path, str) or not path:
        raise ApiError(400, "bad_request", "'path' must be a non-empty string")
    encoded = path.encode()  # read_json refused lone surrogates, the text UTF-8 cannot take
    if b"\0" in encoded:
        raise ApiError(400, "bad_request", "'path' holds a NUL character")
    if len(encoded) >= MAX_PATH_BYTES or any(
        len(part) > MAX_NAME_BYTES for part in encoded.split(b"/")
    ):
        raise ApiError(
            400,
            "bad_request",
            f"'path' is longer than a bundle directory's path can be ({MAX_PATH_BYTES} bytes, "
            f"{MAX_NAME_BYTES} per name)",
        )


@api.get("/v1/alerts")
def alerts() -> Any:
    app_state = state()
    require_token(app_state.config.scoring_token, admin=False)
    return jsonify({"alerts": app_state.dispatcher.recent()})
