"""The Open Inference Protocol (KServe V2) routes, so KServe and Seldon can call the service.

A tabular request sends one input tensor per column, each of shape ``[n]`` (``[n, 1]`` is
accepted too), numeric columns as FP32/FP64/INT*, categorical ones as BYTES. The response holds
``anomaly_score``, ``p_value`` (FP64, null for rejected rows), ``is_anomaly`` (BOOL),
``context_unseen`` (BOOL, conditional models only), ``warming_up`` (BOOL, series models
only), ``severity`` and ``rejected_reason``
(BYTES, "" for scored rows), and ``training_spelling`` (BYTES, models with text columns: each
record's text values that differ from a training label only in case, as a JSON object of
column -> training's label, "" for none), all of shape ``[n]``; the request's ``outputs``
picks some of them. Where any record's text differs so, the response's ``parameters`` hold
``category_spelling``, the sentence ``anomaly score`` warns with. Each tensor's values must be
of its declared datatype.
Errors follow the protocol's ``{"error": "..."}`` form.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pandas as pd
from flask import Blueprint, Response
from flask import request as flask_request
from pydantic import ValidationError

from detector import __version__
from detector.features.encode import check_columns, shortened
from service import schemas
from service.bodies import answer, explained, read_json
from service.registry import LoadedModel
from service.scoring import (
    Records,
    check_batch_size,
    require_token,
    score_request,
    spelled_in_training,
)
from service.state import ApiError, ServiceState, state

kserve = Blueprint("kserve", __name__, url_prefix="/v2")

INFER_SHAPE = '{"inputs": [{"name", "shape", "datatype", "data"}, ...]}'
#: What one tensor element may be: KServe tensors hold numbers (FP*, INT*, BOOL) or text (BYTES).
SCALARS = (int, float, str, bool, type(None))


@kserve.get("")
def server_metadata() -> Response:
    metadata = schemas.ServerMetadata(name="anomaly-detector", version=__version__, extensions=[])
    return answer(metadata)


@kserve.get("/health/live")
def live() -> Response:
    return answer(schemas.Live(live=True))


@kserve.get("/health/ready")
def ready() -> Response:
    app_state = state()
    is_ready = app_state.models.ready(app_state.config.ready_needs)
    return answer(schemas.Ready(ready=is_ready), 200 if is_ready else 503)


def _served(app_state: ServiceState, name: str, version: str | None) -> LoadedModel:
    """The model ``name``; with ``version`` (a ``/versions/{version}/`` route), the one it
    serves must be that version (``versions`` in its metadata): 404 otherwise."""
    loaded = app_state.model(name)
    if version is not None and version != loaded.bundle.version:
        raise ApiError(
            404,
            "unknown_version",
            f"model '{name}' serves version {loaded.bundle.version}, not {shortened(version)}; "
            f"call /v2/models/{name}/versions/{loaded.bundle.version}/..., or leave the "
            "version out",
        )
    return loaded


@kserve.get("/models/<name>", defaults={"version": None})
@kserve.get("/models/<name>/versions/<version>")
def metadata(name: str, version: str | None) -> Response:
    app_state = state()
    require_token(app_state.config.scoring_token, admin=False)
    loaded = _served(app_state, name, version)
    schema = loaded.bundle.schema
    kinds = {c.name: "FP64" for c in schema.numeric} | dict.fromkeys(schema.text_columns, "BYTES")
    series = loaded.bundle.series
    if series is not None:  # the time as ISO-8601 text (epoch seconds as numbers work too)
        kinds |= dict.fromkeys((series.time_column, *series.key_columns), "BYTES")
    outputs = [
        ("anomaly_score", "FP64"),
        ("p_value", "FP64"),
        ("is_anomaly", "BOOL"),
        *([("context_unseen", "BOOL")] if schema.context else []),
        *([("warming_up", "BOOL")] if series is not None else []),
        ("severity", "BYTES"),
        ("rejected_reason", "BYTES"),
        *([("training_spelling", "BYTES")] if _has_labels(loaded) else []),
    ]
    return answer(
        schemas.ModelMetadata(
            name=name,
            versions=[loaded.bundle.version],
            platform="tensorflow",
            inputs=[_any_length(c, kinds[c]) for c in loaded.bundle.input_columns],
            outputs=[_any_length(o, t) for o, t in outputs],
        )
    )


def _any_length(name: str, datatype: str) -> schemas.TensorMetadata:
    return schemas.TensorMetadata(name=name, datatype=datatype, shape=[-1])


@kserve.get("/models/<name>/ready", defaults={"version": None})
@kserve.get("/models/<name>/versions/<version>/ready")
def model_ready(name: str, version: str | None) -> Response:
    # Per-model, like metadata: it confirms which model names exist. Probes use /v2/health/*.
    app_state = state()
    require_token(app_state.config.scoring_token, admin=False)
    try:
        _served(app_state, name, version)
    except ApiError as error:
        if error.status != 503:
            raise
        # Configured but not loaded: KServe's answer, {name, ready: false}, which clients
        # read, not an error body without "ready" (the reason is in the server log).
        return answer(schemas.ModelReady(name=name, ready=False), 503)
    return answer(schemas.ModelReady(name=name, ready=True))


@kserve.post("/models/<name>/infer", defaults={"version": None})
@kserve.post("/models/<name>/versions/<version>/infer")
def infer(name: str, version: str | None) -> Response:
    app_state = state()
    require_token(app_state.config.scoring_token, admin=False)
    loaded = _served(app_state, name, version)
    if flask_request.headers.get("Inference-Header-Content-Length") is not None:
        # Triton's binary tensor extension: its body is a JSON header and raw bytes, which
        # read as JSON was "not valid JSON" (or "send application/json" to a 400).
        raise ApiError(
            415,
            "unsupported_media_type",
            "the binary tensor data extension is not supported; send the tensors as JSON "
            "(tritonclient: binary_data=False on each input and requested output)",
        )
    body = read_json(app_state, INFER_SHAPE)
    request = _infer_request(body)
    if request.parameters is not None and not isinstance(request.parameters, dict):
        raise ApiError(400, "bad_request", "'parameters' must be an object")
    bundle = loaded.bundle
    offered = [
        "anomaly_score", "p_value", "is_anomaly",
        *(["context_unseen"] if bundle.schema.context else []),
        *(["warming_up"] if bundle.series is not None else []),
        "severity", "rejected_reason",
        *(["training_spelling"] if _has_labels(loaded) else []),
    ]  # fmt: skip
    wanted = _requested(offered, request.outputs)  # before scoring, which moves series on
    frame = _inputs_frame(request, loaded, app_state)
    indices = np.arange(len(frame))
    records = Records.of_frame(frame)
    scored = score_request(app_state, loaded, records, indices)
    n = len(frame)
    score: list[float | None] = [None] * n
    p_value: list[float | None] = [None] * n
    flag = [False] * n
    unseen = [False] * n
    warming = [False] * n
    severity = ["none"] * n
    reason = [""] * n
    result = scored.result
    for j, i in enumerate(scored.indices.tolist()):
        score[i] = float(result.anomaly_score[j])
        p_value[i] = float(result.p_value[j])
        flag[i] = bool(result.is_anomaly[j])
        if result.context_unseen is not None:
            unseen[i] = bool(result.context_unseen[j])
        if result.warming_up is not None:
            warming[i] = bool(result.warming_up[j])
        severity[i] = scored.severity[j]
    for rejected in scored.rejected:
        reason[rejected.index] = "; ".join(rejected.reasons)
    spelled = [""] * n
    if "training_spelling" in wanted:
        found = spelled_in_training(bundle.schema, records, result.rows)
        for j, i in enumerate(scored.indices.tolist()):
            spelled[i] = json.dumps(found[j]) if j in found else ""
    warning = result.category_spelling
    outputs: list[tuple[str, str, list[Any]]] = [
        ("anomaly_score", "FP64", score),
        ("p_value", "FP64", p_value),
        ("is_anomaly", "BOOL", flag),
        *([("context_unseen", "BOOL", unseen)] if result.context_unseen is not None else []),
        *([("warming_up", "BOOL", warming)] if result.warming_up is not None else []),
        ("severity", "BYTES", severity),
        ("rejected_reason", "BYTES", reason),
        ("training_spelling", "BYTES", spelled),
    ]
    given = {o[0]: o for o in outputs}
    chosen = [given[o] for o in wanted if o in given]
    return answer(
        schemas.InferResponse(
            model_name=name,
            model_version=loaded.bundle.version,
            outputs=[
                schemas.InferOutput(name=o, datatype=t, shape=[n], data=d) for o, t, d in chosen
            ],
            id=request.id,
            # The protocol's parameters hold strings, numbers or booleans: the sentence.
            parameters=None if warning is None else {"category_spelling": warning},
        )
    )


def _has_labels(loaded: LoadedModel) -> bool:
    """Whether the model reads text labels (its ``training_spelling`` output's columns)."""
    schema = loaded.bundle.schema
    return bool(schema.categorical or schema.context)


def _infer_request(body: Any) -> schemas.InferRequest:
    """The request's envelope and each tensor's name, shape, datatype and length, validated by
    the model (which does not walk the values); 400 naming the first problem."""
    try:
        return schemas.InferRequest.model_validate(body)
    except ValidationError as exc:
        errors = exc.errors()
    first = errors[0]
    loc = first["loc"]
    # The envelope's problems, and a whole tensor's (its length), say what is wrong themselves.
    if loc[:1] != ("inputs",) or len(loc) < 2 or (first["type"] == "value_error" and len(loc) == 2):
        raise ApiError(400, "bad_request", explained(first, INFER_SHAPE))
    # A field of the first tensor at fault: its problems in the order a client fixes them.
    tensor = body["inputs"][loc[1]]
    faults = {e["loc"][2] for e in errors if e["loc"][:2] == loc[:2] and len(e["loc"]) > 2}
    name = tensor.get("name") if isinstance(tensor, dict) else None
    if not isinstance(name, str):
        detail = "each input needs a 'name', 'shape', 'datatype' and 'data'"
    elif faults & {"shape", "data"}:
        label = repr(shortened(name))
        detail = f"input {label} needs 'shape' [n] or [n, 1] (n >= 0) and a list 'data'"
    else:
        detail = (
            f"input {shortened(name)!r} has datatype {shortened(tensor.get('datatype'))!r}; use "
            f"one of {', '.join(sorted(schemas.NUMERIC_TYPES))} or BYTES"
        )
    raise ApiError(400, "bad_request", detail)


def _inputs_frame(
    request: schemas.InferRequest, loaded: LoadedModel, app_state: ServiceState
) -> pd.DataFrame:
    """One column per input tensor, checked before the frame is built: the batch limit, the
    column names, and that every element is one number or text.

    An element that is a list or an object is a malformed tensor, so the request is refused
    (400) naming the input and the position, rather than the row rejected: the datatype and
    shape are declared per tensor, and a tensor that breaks them is the client's protocol error,
    not a record with a bad value: so is a value not of its tensor's declared datatype (INT64
    holding 1.5, FP64 holding text). Text in a BYTES tensor that is no number is still a per-row
    rejection.
    """
    columns: dict[str, list[Any]] = {}
    numeric = {c.name for c in loaded.bundle.schema.numeric}
    length = None
    for tensor in request.inputs:
        label = repr(shortened(tensor.name))
        if tensor.name in columns:
            raise ApiError(400, "bad_request", f"input {label} is given twice")
        n = tensor.shape[0]
        if length is not None and n != length:
            raise ApiError(400, "bad_request", "every input must have the same length")
        check_batch_size(n, app_state)
        length = n
        flat = [v[0] if isinstance(v, list) and len(v) == 1 else v for v in tensor.data]
        for i, value in enumerate(flat):
            if not isinstance(value, SCALARS):
                kind = "a list" if isinstance(value, list) else "an object"
                raise ApiError(
                    400,
                    "bad_request",
                    f"input {label} holds {kind} at position {i}; each element must be one "
                    "number (FP*, INT*, BOOL) or text (BYTES)",
                )
            if value is not None and not _fits(value, tensor.datatype):
                raise ApiError(
                    400,
                    "bad_request",
                    f"input {label} declares {tensor.datatype} but holds "
                    f"{shortened(json.dumps(value))} at position {i}; declare the datatype its "
                    f"values have ({_datatype_of(value)}), or send {tensor.datatype} values",
                )
        if tensor.datatype == "BOOL" and tensor.name in numeric:
            # Scored, every row came back rejected ("True is not a number") inside a 200.
            raise ApiError(
                400,
                "bad_request",
                f"input {label} is a numeric column of the model, declared BOOL; send its "
                "values as FP64 or INT64 (a flag as 1 and 0)",
            )
        columns[tensor.name] = flat
    passthrough = (*app_state.config.passthrough_fields, *loaded.bundle.ignored_columns)
    check_columns(
        loaded.bundle.schema,
        list(columns),
        passthrough=passthrough,
        expected=loaded.bundle.input_columns,
    )
    return pd.DataFrame(columns)


#: The values each integer datatype holds.
_INT_RANGES = {
    f"{'U' if unsigned else ''}INT{bits}": (0, 2**bits - 1)
    if unsigned
    else (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1)
    for bits in (8, 16, 32, 64)
    for unsigned in (False, True)
}


def _fits(value: Any, datatype: str) -> bool:
    """Whether one JSON value is of the tensor's declared datatype (null aside: a missing
    value, rejected with the record). It was not checked: INT64 held 1.5, UINT8 held -1."""
    if datatype == "BYTES":
        return isinstance(value, str)
    if datatype == "BOOL":
        return isinstance(value, bool)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    if datatype.startswith("FP"):
        return True
    low, high = _INT_RANGES[datatype]
    return isinstance(value, int) and low <= value <= high


def _datatype_of(value: Any) -> str:
    if isinstance(value, bool):
        return "BOOL"
    if isinstance(value, int):
        return "INT64"
    return "FP64" if isinstance(value, float) else "BYTES"


def _requested(offered: list[str], wanted: Any) -> list[str]:
    """The outputs a request's ``outputs`` names, in its order (all ``offered`` where it
    names none); 400 for a malformed list or a name the model does not give. They were all
    sent, whatever was asked."""
    if wanted is None:
        return offered
    if not isinstance(wanted, list) or not all(
        isinstance(o, dict) and isinstance(o.get("name"), str) for o in wanted
    ):
        raise ApiError(
            400, "bad_request", "'outputs' must be a list of objects, each with a 'name'"
        )
    unknown = [o["name"] for o in wanted if o["name"] not in offered]
    if unknown:
        raise ApiError(
            400,
            "bad_request",
            f"no output named {shortened(unknown[0])!r}; this model gives {', '.join(offered)}",
        )
    return [o["name"] for o in wanted]
