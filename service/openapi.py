"""The OpenAPI 3 document served at ``/openapi.json``; a test keeps it in step with the routes."""

from __future__ import annotations

from typing import Any

from service.kserve import TENSOR_TYPES

_ERROR = {"$ref": "#/components/schemas/Error"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*codes: int) -> dict[str, Any]:
    words = {
        400: "Malformed request",
        401: "Missing or wrong bearer token",
        403: "Admin routes disabled",
        404: "Unknown model",
        413: "Body or batch too large",
        415: "Unsupported content type",
        422: "Valid JSON that cannot be scored (unknown/missing columns, empty batch)",
        503: "Model not loaded",
    }
    return {str(c): _json(_ERROR, words[c]) for c in codes}


_NAME = {
    "name": "name",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "pattern": "^[a-z0-9_-]+$"},
}
_SECURED: list[dict[str, list[str]]] = [{"bearer": []}, {}]


def openapi_document() -> dict[str, Any]:
    record = {
        "type": "object",
        "additionalProperties": {"type": ["number", "string", "boolean", "null"]},
    }
    result = {
        "type": "object",
        "properties": {
            "index": {"type": "integer", "description": "position in the request"},
            "anomaly_score": {"type": "number", "description": "higher = more anomalous"},
            "p_value": {"type": "number", "description": "P(score this high | normal)"},
            "is_anomaly": {"type": "boolean"},
            "context_unseen": {
                "type": "boolean",
                "description": "conditional (cvae) models only: a context value was never seen "
                "in training, so the record was scored without its context",
            },
            "severity": {"type": "string", "description": "'none' or a policy level"},
            "top_features": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "column": {"type": "string"},
                        "contribution": {"type": "number"},
                    },
                },
            },
        },
    }
    score_response = {
        "type": "object",
        "properties": {
            "model": {"type": "string"},
            "version": {"type": "string"},
            "threshold": {"type": "number"},
            "target_fpr": {"type": "number"},
            "counts": {
                "type": "object",
                "properties": {k: {"type": "integer"} for k in ("received", "scored", "rejected")},
            },
            "results": {"type": "array", "items": result},
            "rejected": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "index": {"type": "integer"},
                        "reasons": {"type": "array", "items": {"type": "string"}},
                    },
                },
            },
        },
    }
    obj = {"type": "object"}
    infer_request = {
        "type": "object",
        "required": ["inputs"],
        "properties": {
            "id": {"type": "string", "description": "echoed in the response"},
            "parameters": obj,
            "inputs": {
                "type": "array",
                "minItems": 1,
                "items": {"$ref": "#/components/schemas/InferInput"},
                "description": "one tensor per column, all of the same length",
            },
            "outputs": {"type": "array", "items": obj},
        },
    }
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
            "schemas": {
                "Error": {
                    "type": "object",
                    "required": ["error", "detail"],
                    "properties": {"error": {"type": "string"}, "detail": {"type": "string"}},
                },
                # The protocol's tensor data: values, or nested lists of them in row-major
                # order. The service takes shape [n] or [n, 1]: one value (or [value]) per row.
                "TensorData": {
                    "type": "array",
                    "items": {
                        "anyOf": [
                            {"type": ["number", "string", "boolean", "null"]},
                            {"$ref": "#/components/schemas/TensorData"},
                        ]
                    },
                },
                "InferInput": {
                    "type": "object",
                    "required": ["name", "shape", "datatype", "data"],
                    "properties": {
                        "name": {"type": "string", "description": "a column of the model"},
                        "shape": {
                            "type": "array",
                            "items": {"type": "integer", "minimum": 0},
                            "minItems": 1,
                            "maxItems": 2,
                            "description": "[n] or [n, 1]",
                        },
                        "datatype": {"type": "string", "enum": sorted(TENSOR_TYPES)},
                        "parameters": obj,
                        "data": {"$ref": "#/components/schemas/TensorData"},
                    },
                },
            },
        },
        "paths": {
            "/healthz": {"get": {"summary": "Liveness", "responses": {"200": _json(obj, "Alive")}}},
            "/readyz": {
                "get": {
                    "summary": "Readiness: every configured model loaded",
                    "responses": {"200": _json(obj, "Ready"), "503": _json(obj, "Not ready")},
                }
            },
            "/metrics": {
                "get": {
                    "summary": "Prometheus metrics",
                    "responses": {
                        "200": {"description": "Text exposition", "content": {"text/plain": {}}}
                    },
                }
            },
            "/openapi.json": {
                "get": {
                    "summary": "This document",
                    "responses": {"200": _json(obj, "OpenAPI 3 document")},
                }
            },
            "/v1/models": {
                "get": {
                    "summary": "Served models",
                    "security": _SECURED,
                    "responses": {"200": _json(obj, "Models"), **_errors(401)},
                }
            },
            "/v1/models/{name}": {
                "get": {
                    "summary": "A model's schema, threshold, target FPR, training metrics, version",
                    "parameters": [_NAME],
                    "security": _SECURED,
                    "responses": {"200": _json(obj, "Model"), **_errors(401, 404, 503)},
                }
            },
            "/v1/models/{name}/score": {
                "post": {
                    "summary": "Score records; invalid records come back with reasons",
                    "parameters": [_NAME],
                    "security": _SECURED,
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "required": ["records"],
                                    "properties": {"records": {"type": "array", "items": record}},
                                }
                            },
                            "text/csv": {"schema": {"type": "string"}},
                        },
                    },
                    "responses": {
                        "200": _json(score_response, "Scores"),
                        **_errors(400, 401, 404, 413, 415, 422, 503),
                    },
                }
            },
            "/v1/models/{name}/reload": {
                "post": {
                    "summary": "Admin: load the bundle from disk (or 'path') and swap atomically",
                    "parameters": [_NAME],
                    "security": [{"bearer": []}],
                    "requestBody": {
                        "required": False,
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "properties": {
                                        "path": {
                                            "type": "string",
                                            "description": "a bundle directory on the server",
                                        }
                                    },
                                }
                            }
                        },
                    },
                    "responses": {
                        "200": _json(obj, "Reloaded"),
                        **_errors(400, 401, 403, 404, 413, 422),
                    },
                }
            },
            "/v1/alerts": {
                "get": {
                    "summary": "Recent alerts of this worker (bounded)",
                    "security": _SECURED,
                    "responses": {"200": _json(obj, "Alerts"), **_errors(401)},
                }
            },
            "/v2/health/live": {
                "get": {"summary": "KServe V2 liveness", "responses": {"200": _json(obj, "Live")}}
            },
            "/v2/health/ready": {
                "get": {
                    "summary": "KServe V2 readiness",
                    "responses": {"200": _json(obj, "Ready"), "503": _json(obj, "Not ready")},
                }
            },
            "/v2/models/{name}": {
                "get": {
                    "summary": "KServe V2 model metadata",
                    "parameters": [_NAME],
                    "security": _SECURED,
                    "responses": {"200": _json(obj, "Metadata"), **_errors(401, 404, 503)},
                }
            },
            "/v2/models/{name}/ready": {
                "get": {
                    "summary": "KServe V2 model readiness",
                    "parameters": [_NAME],
                    "responses": {"200": _json(obj, "Ready"), **_errors(404, 503)},
                }
            },
            "/v2/models/{name}/infer": {
                "post": {
                    "summary": "KServe V2 inference: one input tensor per column",
                    "parameters": [_NAME],
                    "security": _SECURED,
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {"schema": infer_request}},
                    },
                    "responses": {
                        "200": _json(obj, "Outputs"),
                        **_errors(400, 401, 404, 413, 422, 503),
                    },
                }
            },
        },
    }
