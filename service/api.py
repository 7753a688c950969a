"""The v1 JSON API, health checks and metrics. The OpenAPI document is ``service.openapi``."""

from __future__ import annotations

import io
from typing import Any

import pandas as pd
from flask import Blueprint, Response, jsonify, request

from detector.errors import BundleError
from service.app import ApiError, state
from service.openapi import openapi_document
from service.pipeline import (
    check_batch_size,
    per_record,
    records_frame,
    require_token,
    score_request,
)
from service.registry import LoadedModel

api = Blueprint("api", __name__)


@api.get("/healthz")
def healthz() -> Any:
    return jsonify({"status": "alive"})


@api.get("/readyz")
def readyz() -> Any:
    models = state().models
    body = {"ready": models.ready(), "models": models.names(), "errors": models.errors()}
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
        except BundleError as exc:
            models.append({"name": name, "loaded": False, "error": str(exc)})
    return jsonify({"models": models})


@api.get("/v1/models/<name>")
def describe_model(name: str) -> Any:
    app_state = state()
    require_token(app_state.config.scoring_token, admin=False)
    loaded = app_state.model(name)
    schema = loaded.bundle.schema
    detail = _summary(loaded)
    detail["schema"] = {
        "columns": list(schema.column_order),
        "numeric": [
            {"name": c.name, "min": c.minimum, "max": c.maximum, "median": c.median}
            for c in schema.numeric
        ],
        "categorical": [
            {"name": c.name, "categories": list(c.categories)} for c in schema.categorical
        ],
        "context": [{"name": c.name, "categories": list(c.categories)} for c in schema.context],
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
        "path": loaded.path,
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
    frame, indices, rejected = _read_records(loaded, app_state)
    scored = score_request(app_state, loaded, frame, indices, rejected)
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
            "results": per_record(scored, frame, app_state.config.passthrough_fields),
            "rejected": [{"index": r.index, "reasons": list(r.reasons)} for r in scored.rejected],
        }
    )


def _read_records(loaded: LoadedModel, app_state: Any) -> tuple[pd.DataFrame, Any, list]:
    mimetype = request.mimetype
    if mimetype in ("text/csv", "application/csv"):
        text_columns = {name: "string" for name in loaded.bundle.schema.text_columns}
        try:
            frame = pd.read_csv(io.BytesIO(request.get_data()), dtype=text_columns)
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
            raise ApiError(400, "bad_request", f"the CSV body cannot be parsed: {exc}") from None
        if frame.empty:
            raise ApiError(422, "invalid_input", "the CSV body has no data rows")
        check_batch_size(len(frame), app_state)
        return frame, pd.RangeIndex(len(frame)).to_numpy(), []
    if mimetype != "application/json":
        raise ApiError(
            415,
            "unsupported_media_type",
            'send application/json ({"records": [...]}) or text/csv',
        )
    body = request.get_json(silent=True)
    if not isinstance(body, dict) or "records" not in body:
        raise ApiError(
            400, "bad_request", 'the body must be a JSON object {"records": [{...}, ...]}'
        )
    return records_frame(body["records"], app_state)


@api.post("/v1/models/<name>/reload")
def reload(name: str) -> Any:
    app_state = state()
    require_token(app_state.config.admin_token, admin=True)
    body = request.get_json(silent=True) if request.data else {}
    if body is None or not isinstance(body, dict):
        raise ApiError(400, "bad_request", 'the body must be empty or {"path": "..."}')
    path = body.get("path")
    if path is not None and not isinstance(path, str):
        raise ApiError(400, "bad_request", "'path' must be a string")
    if name not in app_state.models.names():
        raise ApiError(404, "unknown_model", f"no model named '{name}'")
    try:
        loaded = app_state.models.reload(name, path)
    except BundleError as exc:
        raise ApiError(
            422, "reload_failed", f"{exc}; the previous model is still serving"
        ) from None
    return jsonify(_summary(loaded))


@api.get("/v1/alerts")
def alerts() -> Any:
    app_state = state()
    require_token(app_state.config.scoring_token, admin=False)
    return jsonify({"alerts": app_state.dispatcher.recent()})
