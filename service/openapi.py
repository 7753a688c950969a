"""The OpenAPI 3.1 document served at ``/openapi.json``, generated from the pydantic models of
``service.schemas``; a test keeps its operations in step with the app's routes.

Request bodies are written inline (generators and the fuzz test read a route's body where it
is) and responses refer to ``#/components/schemas``, where every model's schema is.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import GenerateJsonSchema, JsonSchemaMode, models_json_schema

from service import schemas
from service.config import MODEL_NAME
from service.schemas import (
    AlertList,
    Health,
    InferRequest,
    InferResponse,
    Live,
    ModelDetail,
    ModelList,
    ModelMetadata,
    ModelReady,
    Readiness,
    Ready,
    ReloadRequest,
    ReloadSummary,
    ScoreRequest,
    ScoreResponse,
    ServerMetadata,
)

#: What each error status means on the routes that can answer it; the body is ``Error``.
ERRORS = {
    400: "Malformed request",
    401: "Missing or wrong bearer token",
    403: "Admin routes disabled",
    404: "Unknown model",
    413: "Body or batch too large",
    415: "Unsupported content type",
    422: "Valid JSON that cannot be scored (unknown/missing columns, empty batch)",
    503: "Model not loaded; or, with Retry-After, a worker busy (server_busy) or out of open files",
}


@dataclass(frozen=True)
class Operation:
    """One route and method: what it answers (status -> model), and what it takes."""

    summary: str
    answers: dict[int, type[BaseModel]]
    errors: tuple[int, ...] = ()
    body: type[BaseModel] | None = None
    #: Other media types the body may have (the score route takes CSV too).
    also: dict[str, Any] = field(default_factory=dict)
    #: "open", "scoring" (a token when ``scoring_token`` is set) or "admin".
    access: str = "open"


OPERATIONS: dict[tuple[str, str], Operation] = {
    ("/healthz", "get"): Operation("Liveness", {200: Health}),
    ("/readyz", "get"): Operation(
        "Readiness: every configured model loaded", {200: Readiness, 503: Readiness}
    ),
    ("/metrics", "get"): Operation("Prometheus metrics (text exposition)", {}),
    ("/openapi.json", "get"): Operation("This document", {}),
    ("/v1/models", "get"): Operation("Served models", {200: ModelList}, (401,), access="scoring"),
    ("/v1/models/{name}", "get"): Operation(
        "A model's columns, threshold, target FPR, training metrics, version",
        {200: ModelDetail},
        (401, 404, 503),
        access="scoring",
    ),
    ("/v1/models/{name}/score", "post"): Operation(
        "Score records; invalid records come back with reasons",
        {200: ScoreResponse},
        (400, 401, 404, 413, 415, 422, 503),
        body=ScoreRequest,
        also={
            "text/csv": {"schema": {"type": "string"}},
            "application/x-ndjson": {"schema": {"type": "string"}},
        },
        access="scoring",
    ),
    ("/v1/models/{name}/reload", "post"): Operation(
        "Admin: load the bundle from disk (or 'path') and swap atomically",
        {200: ReloadSummary},
        (400, 401, 403, 404, 413, 415, 422),
        body=ReloadRequest,
        access="admin",
    ),
    ("/v1/alerts", "get"): Operation(
        "Recent alerts of the server, every worker's (bounded); ?model=NAME: that model's",
        {200: AlertList},
        (400, 401, 404),
        access="scoring",
    ),
    ("/v2", "get"): Operation("KServe V2 server metadata", {200: ServerMetadata}),
    ("/v2/health/live", "get"): Operation("KServe V2 liveness", {200: Live}),
    ("/v2/health/ready", "get"): Operation("KServe V2 readiness", {200: Ready, 503: Ready}),
    ("/v2/models/{name}", "get"): Operation(
        "KServe V2 model metadata", {200: ModelMetadata}, (401, 404, 503), access="scoring"
    ),
    ("/v2/models/{name}/ready", "get"): Operation(
        "KServe V2 model readiness",
        {200: ModelReady, 503: ModelReady},
        (401, 404),
        access="scoring",
    ),
    ("/v2/models/{name}/infer", "post"): Operation(
        "KServe V2 inference: one input tensor per column",
        {200: InferResponse},
        (400, 401, 404, 413, 415, 422, 503),
        body=InferRequest,
        access="scoring",
    ),
}
# The same of the version a model serves (its metadata's ``versions``; another is a 404).
OPERATIONS |= {
    (path.replace("{name}", "{name}/versions/{version}"), method): operation
    for (path, method), operation in list(OPERATIONS.items())
    if path.startswith("/v2/models/{name}")
}

#: Non-JSON answers.
_PLAIN = {
    "/metrics": {"200": {"description": "Text exposition", "content": {"text/plain": {}}}},
    "/openapi.json": {
        "200": {
            "description": "OpenAPI 3 document",
            "content": {"application/json": {"schema": {"type": "object"}}},
        }
    },
}
_NAME = {
    "name": "name",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "pattern": MODEL_NAME.pattern},
}
_VERSION = {"name": "version", "in": "path", "required": True, "schema": {"type": "string"}}
_SECURITY: dict[str, list[dict[str, list[str]]]] = {
    "scoring": [{"bearer": []}, {}],  # open unless scoring_token is set
    "admin": [{"bearer": []}],
}


class _Schemas(GenerateJsonSchema):
    """Without the titles pydantic makes of field names ("Anomaly Score"): they say nothing
    the name does not, and would double the document."""

    def field_title_should_be_set(self, schema: Any) -> bool:
        return False


@cache
def _generated() -> dict[str, Any]:
    models: list[tuple[type[BaseModel], JsonSchemaMode]] = [(schemas.Error, "serialization")]
    for operation in OPERATIONS.values():
        models += [(model, "serialization") for model in operation.answers.values()]
        if operation.body is not None:
            models.append((operation.body, "validation"))
    _, top = models_json_schema(
        list(dict.fromkeys(models)),
        ref_template="#/components/schemas/{model}",
        schema_generator=_Schemas,
    )
    components = top["$defs"]
    paths: dict[str, dict[str, Any]] = {}
    for (path, method), operation in OPERATIONS.items():
        paths.setdefault(path, {})[method] = _operation(path, operation, components)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "anomaly-detector scoring service",
            "version": "1",
            "description": "Scores records with VAE anomaly detectors; higher anomaly_score = "
            "more anomalous. Also speaks the Open Inference Protocol (KServe V2) under /v2.",
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": components,
        },
        "paths": paths,
    }


def _operation(path: str, operation: Operation, components: dict[str, Any]) -> dict[str, Any]:
    responses = {
        str(status): _json(_ref(model), model.__doc__ or model.__name__)
        for status, model in operation.answers.items()
    }
    responses |= {str(c): _json(_ref(schemas.Error), ERRORS[c]) for c in operation.errors}
    described: dict[str, Any] = {
        "summary": operation.summary,
        "responses": responses or _PLAIN[path],
    }
    if "{name}" in path:
        described["parameters"] = [_NAME, *([_VERSION] if "{version}" in path else [])]
    if path == "/v1/alerts":
        described["parameters"] = [{**_NAME, "name": "model", "in": "query", "required": False}]
    if operation.access in _SECURITY:
        described["security"] = _SECURITY[operation.access]
    if operation.body is not None:
        fields = operation.body.model_fields.values()
        schema = components[operation.body.__name__]
        described["requestBody"] = {
            "required": any(f.is_required() for f in fields),
            "content": {"application/json": {"schema": schema}, **operation.also},
        }
    return described


def _ref(model: type[BaseModel]) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{model.__name__}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def openapi_document() -> dict[str, Any]:
    """The document, generated once per process (a copy: callers may change theirs)."""
    return copy.deepcopy(_generated())
