"""The Open Inference Protocol (KServe V2) routes, so KServe and Seldon can call the service.

A tabular request sends one input tensor per column, each of shape ``[n]`` (``[n, 1]`` is
accepted too), numeric columns as FP32/FP64/INT*, categorical ones as BYTES. The response holds
``anomaly_score``, ``p_value`` (FP64, null for rejected rows), ``is_anomaly`` (BOOL),
``context_unseen`` (BOOL, conditional models only), ``severity`` and ``rejected_reason``
(BYTES, "" for scored rows), all of shape ``[n]``.
Errors follow the protocol's ``{"error": "..."}`` form.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from flask import Blueprint, jsonify

from detector.features import check_columns, shortened
from service.pipeline import (
    Records,
    check_batch_size,
    read_json,
    require_token,
    score_request,
)
from service.registry import LoadedModel
from service.state import ApiError, ServiceState, state

kserve = Blueprint("kserve", __name__, url_prefix="/v2")

NUMERIC_TYPES = {
    "FP16",
    "FP32",
    "FP64",
    "INT8",
    "INT16",
    "INT32",
    "INT64",
    "UINT8",
    "UINT16",
    "UINT32",
    "UINT64",
    "BOOL",
}
#: Every datatype an input tensor may declare.
TENSOR_TYPES = frozenset(NUMERIC_TYPES | {"BYTES"})

INFER_SHAPE = '{"inputs": [{"name", "shape", "datatype", "data"}, ...]}'
#: What one tensor element may be: KServe tensors hold numbers (FP*, INT*, BOOL) or text (BYTES).
SCALARS = (int, float, str, bool, type(None))


@kserve.get("/health/live")
def live() -> Any:
    return jsonify({"live": True})


@kserve.get("/health/ready")
def ready() -> Any:
    is_ready = state().models.ready()
    return jsonify({"ready": is_ready}), (200 if is_ready else 503)


@kserve.get("/models/<name>")
def metadata(name: str) -> Any:
    app_state = state()
    require_token(app_state.config.scoring_token, admin=False)
    loaded = app_state.model(name)
    schema = loaded.bundle.schema
    kinds = {c.name: "FP64" for c in schema.numeric} | dict.fromkeys(schema.text_columns, "BYTES")
    return jsonify(
        {
            "name": name,
            "versions": [loaded.bundle.version],
            "platform": "tensorflow",
            "inputs": [
                {"name": c, "datatype": kinds[c], "shape": [-1]} for c in schema.column_order
            ],
            "outputs": [
                {"name": "anomaly_score", "datatype": "FP64", "shape": [-1]},
                {"name": "p_value", "datatype": "FP64", "shape": [-1]},
                {"name": "is_anomaly", "datatype": "BOOL", "shape": [-1]},
                *(
                    [{"name": "context_unseen", "datatype": "BOOL", "shape": [-1]}]
                    if schema.context
                    else []
                ),
                {"name": "severity", "datatype": "BYTES", "shape": [-1]},
                {"name": "rejected_reason", "datatype": "BYTES", "shape": [-1]},
            ],
        }
    )


@kserve.get("/models/<name>/ready")
def model_ready(name: str) -> Any:
    # Per-model, like metadata: it confirms which model names exist. Probes use /v2/health/*.
    app_state = state()
    require_token(app_state.config.scoring_token, admin=False)
    app_state.model(name)
    return jsonify({"name": name, "ready": True})


@kserve.post("/models/<name>/infer")
def infer(name: str) -> Any:
    app_state = state()
    require_token(app_state.config.scoring_token, admin=False)
    loaded = app_state.model(name)
    body = read_json(app_state, INFER_SHAPE)
    frame = _inputs_frame(body, loaded, app_state)
    indices = np.arange(len(frame))
    scored = score_request(app_state, loaded, Records.of_frame(frame), indices)
    n = len(frame)
    score: list[float | None] = [None] * n
    p_value: list[float | None] = [None] * n
    flag = [False] * n
    unseen = [False] * n
    severity = ["none"] * n
    reason = [""] * n
    result = scored.result
    for j, i in enumerate(scored.indices.tolist()):
        score[i] = float(result.anomaly_score[j])
        p_value[i] = float(result.p_value[j])
        flag[i] = bool(result.is_anomaly[j])
        if result.context_unseen is not None:
            unseen[i] = bool(result.context_unseen[j])
        severity[i] = scored.severity[j]
    for rejected in scored.rejected:
        reason[rejected.index] = "; ".join(rejected.reasons)
    outputs = [
        ("anomaly_score", "FP64", score),
        ("p_value", "FP64", p_value),
        ("is_anomaly", "BOOL", flag),
        *([("context_unseen", "BOOL", unseen)] if result.context_unseen is not None else []),
        ("severity", "BYTES", severity),
        ("rejected_reason", "BYTES", reason),
    ]
    response: dict[str, Any] = {
        "model_name": name,
        "model_version": loaded.bundle.version,
        "outputs": [{"name": o, "datatype": t, "shape": [n], "data": d} for o, t, d in outputs],
    }
    if isinstance(body, dict) and "id" in body:
        response["id"] = body["id"]
    return jsonify(response)


def _inputs_frame(body: Any, loaded: LoadedModel, app_state: ServiceState) -> pd.DataFrame:
    """One column per input tensor, checked before the frame is built: the batch limit, the
    column names, and that every element is one number or text.

    An element that is a list or an object is a malformed tensor, so the request is refused
    (400) naming the input and the position, rather than the row rejected: the datatype and
    shape are declared per tensor, and a tensor that breaks them is the client's protocol error,
    not a record with a bad value (a number that does not parse is still a per-row rejection).
    """
    if not isinstance(body, dict) or not isinstance(body.get("inputs"), list) or not body["inputs"]:
        raise ApiError(400, "bad_request", f"the body must be {INFER_SHAPE}")
    if "id" in body and not isinstance(body["id"], str):
        raise ApiError(400, "bad_request", "'id' must be a string")
    columns: dict[str, list[Any]] = {}
    length = None
    for tensor in body["inputs"]:
        if not isinstance(tensor, dict) or not isinstance(tensor.get("name"), str):
            raise ApiError(
                400, "bad_request", "each input needs a 'name', 'shape', 'datatype' and 'data'"
            )
        name = tensor["name"]
        label = repr(shortened(name))
        if name in columns:
            raise ApiError(400, "bad_request", f"input {label} is given twice")
        shape = tensor.get("shape")
        data = tensor.get("data")
        datatype = tensor.get("datatype")
        if (
            not isinstance(shape, list)
            or not 1 <= len(shape) <= 2
            or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)
            or not isinstance(data, list)
        ):
            raise ApiError(
                400,
                "bad_request",
                f"input {label} needs 'shape' [n] or [n, 1] (n >= 0) and a list 'data'",
            )
        if len(shape) == 2 and shape[1] != 1:
            raise ApiError(
                400,
                "bad_request",
                f"input {label} must have shape [n] or [n, 1], one tensor per column",
            )
        if not isinstance(datatype, str) or datatype.upper() not in TENSOR_TYPES:
            raise ApiError(
                400,
                "bad_request",
                f"input {label} has datatype {shortened(datatype)!r}; use one of "
                f"{', '.join(sorted(NUMERIC_TYPES))} or BYTES",
            )
        n = shape[0]
        if len(data) != n:
            raise ApiError(
                400, "bad_request", f"input {label} has {len(data)} values for shape {shape}"
            )
        if length is not None and n != length:
            raise ApiError(400, "bad_request", "every input must have the same length")
        check_batch_size(n, app_state)
        length = n
        flat = [v[0] if isinstance(v, list) and len(v) == 1 else v for v in data]
        for i, value in enumerate(flat):
            if not isinstance(value, SCALARS):
                kind = "a list" if isinstance(value, list) else "an object"
                raise ApiError(
                    400,
                    "bad_request",
                    f"input {label} holds {kind} at position {i}; each element must be one "
                    "number (FP*, INT*, BOOL) or text (BYTES)",
                )
        columns[name] = flat
    passthrough = app_state.config.passthrough_fields
    check_columns(loaded.bundle.schema, list(columns), passthrough=passthrough)
    return pd.DataFrame(columns)
