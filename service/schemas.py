"""The JSON the service takes and gives, as pydantic models: ``service.openapi`` generates the
OpenAPI document from them, and the routes validate request envelopes and serialise responses
with them, so what is documented is what is served.

What a model validates is chosen so the hardening stays as it was (test_hostile.py): records
are described, not validated (``ScoreRequest.records``; ``service.scoring.read_records``
rejects a malformed record on its own, not the request), and a tensor's ``data`` is checked to
be a list but neither copied nor walked, so the batch limit is counted before any value is.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainValidator,
    SkipValidation,
    field_validator,
    model_validator,
)
from pydantic.json_schema import SkipJsonSchema
from typing_extensions import TypeAliasType

from detector.features.encode import shortened

#: One value of a record or of a tensor: a number, text, a boolean, or null.
Scalar = float | str | bool | None
Record = dict[str, Scalar]
#: The protocol's tensor data: values, or nested lists of them in row-major order. The service
#: takes shape [n] or [n, 1]: one value (or [value]) per row.
TensorData = TypeAliasType("TensorData", "list[Scalar | TensorData]")  # type: ignore[misc]

NUMERIC_TYPES = frozenset(
    {"FP16", "FP32", "FP64", "INT8", "INT16", "INT32", "INT64"}
    | {"UINT8", "UINT16", "UINT32", "UINT64", "BOOL"}
)
#: Every datatype an input tensor may declare.
TENSOR_TYPES = frozenset(NUMERIC_TYPES | {"BYTES"})


class ResponseBody(BaseModel):
    """A response body. Non-finite numbers are written as ``NaN``/``Infinity``, as Flask's
    ``jsonify`` wrote them before these models."""

    model_config = ConfigDict(
        ser_json_inf_nan="constants", serialize_by_alias=True, validate_by_name=True
    )


class Error(ResponseBody):
    """Every error: a short code and a detail that names the fix; on ``/v2`` routes ``error`` is
    the message, as the Open Inference Protocol has it, and ``code`` the short code."""

    error: str
    detail: str
    code: str | SkipJsonSchema[None] = Field(
        None, description="/v2 routes only: the short code ('error' holds the message there)"
    )


# The v1 API.


class Health(ResponseBody):
    status: Literal["alive"]


class Readiness(ResponseBody):
    ready: bool = Field(description="the configured models loaded, as ready_needs asks")
    models: list[str]
    errors: dict[str, str] = Field(description="model name -> why it is not loaded")
    degraded: dict[str, str] = Field(
        default_factory=dict,
        description="what fails while the server stays ready, and why: 'series_state' when "
        "its disk is full (series requests answer 503 with Retry-After)",
    )


class ModelSummary(ResponseBody):
    name: str
    loaded: Literal[True]
    version: str
    model_type: str
    created_at: str
    score: str = Field(description="the kind of anomaly_score")
    samples: int = Field(description="latent samples a record is scored with (--samples)")
    threshold: float = Field(description="anomaly_score above this is an anomaly")
    target_fpr: float
    generation: int = Field(description="counts reloads")


class ReloadSummary(ModelSummary):
    columns_added: list[str] = Field(
        description="input columns the new bundle takes that the one before did not: records "
        "without them are refused until their producers send them"
    )
    columns_removed: list[str] = Field(
        description="input columns the one before took that the new bundle does not: records "
        "holding them are refused until their producers drop them"
    )


class ModelNotLoaded(ResponseBody):
    name: str
    loaded: Literal[False]
    error: str


class ModelList(ResponseBody):
    models: list[ModelSummary | ModelNotLoaded]


class ModelColumns(ResponseBody):
    """Names and kinds only: values seen in training are facts about the training data."""

    columns: list[str]
    numeric: list[str]
    categorical: list[str]
    context: list[str]
    inputs: list[str] = Field(
        description="the fields a record must hold: the columns, or for a series model its "
        "time and key columns and the columns whose windows it reads"
    )


class SeriesInfo(ResponseBody):
    """How a series model (trained with --time-column) judges a record with its series."""

    time_column: str
    key_columns: list[str]
    window: int = Field(description="rows a record is judged with, itself included")
    max_gap_seconds: float | None
    calendar: bool
    description: str


class ModelDetail(ModelSummary):
    columns: ModelColumns = Field(alias="schema")
    series: SeriesInfo | SkipJsonSchema[None] = Field(
        None, exclude_if=lambda series: series is None, description="series models only"
    )
    training: dict[str, Any] = Field(description="training metrics, without the history")
    alert_policy: dict[str, Any] = Field(description="the policy, in the settings' form")


class ScoreRequest(BaseModel):
    """A JSON scoring request. Extra keys are ignored."""

    records: SkipValidation[list[Record]] = Field(
        description="records with the model's columns; one that is not an object or holds "
        "objects or lists is answered in 'rejected', and the others are scored"
    )


class Contribution(ResponseBody):
    column: str
    contribution: float = Field(description="how much more this column costs than usual")


class RecordResult(ResponseBody):
    """One scored record, with its passthrough fields (settings) added."""

    model_config = ConfigDict(extra="allow")

    index: int = Field(description="position in the request")
    anomaly_score: float = Field(description="higher = more anomalous")
    p_value: float = Field(description="P(score this high | normal)")
    is_anomaly: bool
    severity: str = Field(description="'none' or a policy level")
    context_unseen: bool | SkipJsonSchema[None] = Field(
        None,
        exclude_if=lambda unseen: unseen is None,
        description="conditional (cvae) models only: a context value was never seen in "
        "training, so the record was scored without its context",
    )
    warming_up: bool | SkipJsonSchema[None] = Field(
        None,
        exclude_if=lambda warming: warming is None,
        description="series models only: fewer of its series' rows came before it than the "
        "window holds, so it was judged with what was known",
    )
    training_spelling: dict[str, str] | SkipJsonSchema[None] = Field(
        None,
        exclude_if=lambda spelled: spelled is None,
        description="only where a text value differs from a training value only in case "
        "('tcp' for 'TCP'): that column's training spelling. The value was scored as one "
        "training never saw; send it as training spelled it where it means that value",
    )
    top_features: list[Contribution]


class Counts(ResponseBody):
    received: int
    scored: int
    rejected: int


class RejectedRecord(ResponseBody):
    """A record not scored, with the passthrough fields (settings) it held."""

    model_config = ConfigDict(extra="allow")

    index: int = Field(description="position in the request")
    code: str = Field(
        description="the first problem as a fixed code, the reason label of "
        "anomaly_records_rejected_total (missing_value, not_a_number, out_of_order, ...)"
    )
    reasons: list[str]


class ScoreResponse(ResponseBody):
    model: str
    version: str
    threshold: float
    target_fpr: float
    counts: Counts
    results: list[RecordResult]
    rejected: list[RejectedRecord]
    category_spelling: str | SkipJsonSchema[None] = Field(
        None,
        exclude_if=lambda said: said is None,
        description="only where text values differ from a training value only in case: what "
        "anomaly score warns of them (the columns, how many values, a few with training's "
        "spelling), as the KServe V2 answer's parameters.category_spelling; each record's is "
        "its training_spelling",
    )


#: Longest reload path accepted (Linux PATH_MAX, NAME_MAX); longer ones cannot name a bundle.
MAX_PATH_BYTES = 4096
MAX_NAME_BYTES = 255


class ReloadRequest(BaseModel):
    """An empty body reloads the model's directory. Other fields are refused: a mistyped
    ``{"dir": ...}`` reloaded the old directory and answered 200."""

    model_config = ConfigDict(extra="forbid")

    path: str | SkipJsonSchema[None] = Field(None, description="a bundle directory on the server")

    @field_validator("path", mode="before")
    @classmethod
    def _a_path(cls, path: Any) -> Any:
        if path is None:
            return None
        if not isinstance(path, str) or not path:
            raise ValueError("'path' must be a non-empty string")
        encoded = path.encode()  # read_json refused lone surrogates, the text UTF-8 cannot take
        if b"\0" in encoded:
            raise ValueError("'path' holds a NUL character")
        if len(encoded) >= MAX_PATH_BYTES or any(
            len(part) > MAX_NAME_BYTES for part in encoded.split(b"/")
        ):
            raise ValueError(
                f"'path' is longer than a bundle directory's path can be ({MAX_PATH_BYTES} "
                f"bytes, {MAX_NAME_BYTES} per name)"
            )
        return path


class AlertList(ResponseBody):
    alerts: list[dict[str, Any]] = Field(
        description="the server's recent alerts (every worker's), oldest first"
    )


# The Open Inference Protocol (KServe V2).


def _a_list(data: Any) -> Any:
    # Neither copied nor walked: a 1M-value tensor over the batch limit is refused before it is.
    if not isinstance(data, list):
        raise ValueError("data is not a list")
    return data


class InferInput(BaseModel):
    """One tensor per column of the model, of shape [n] or [n, 1]."""

    model_config = ConfigDict(strict=True)

    name: str = Field(description="a column of the model")
    shape: list[Annotated[int, Field(ge=0)]] = Field(
        min_length=1, max_length=2, description="[n] or [n, 1]"
    )
    datatype: Literal[tuple(sorted(TENSOR_TYPES))]  # type: ignore[valid-type]
    parameters: SkipValidation[dict[str, Any] | None] = None
    data: Annotated[TensorData, PlainValidator(_a_list, json_schema_input_type=TensorData)]

    @field_validator("datatype", mode="before")
    @classmethod
    def _any_case(cls, datatype: Any) -> Any:
        return datatype.upper() if isinstance(datatype, str) else datatype

    @model_validator(mode="after")
    def _one_value_per_row(self) -> InferInput:
        label = repr(shortened(self.name))
        if len(self.shape) == 2 and self.shape[1] != 1:
            raise ValueError(f"input {label} must have shape [n] or [n, 1], one tensor per column")
        if len(self.data) != self.shape[0]:
            raise ValueError(f"input {label} has {len(self.data)} values for shape {self.shape}")
        return self


class InferRequest(BaseModel):
    inputs: list[InferInput] = Field(
        min_length=1, description="one tensor per column, all of the same length"
    )
    id: str | SkipJsonSchema[None] = Field(None, description="echoed in the response")
    parameters: SkipValidation[dict[str, Any] | None] = None
    outputs: SkipValidation[list[dict[str, Any]] | None] = None

    @field_validator("id", mode="before")
    @classmethod
    def _text(cls, value: Any) -> Any:
        if not isinstance(value, str):
            raise ValueError("'id' must be a string")
        return value


class InferOutput(ResponseBody):
    name: str
    datatype: str
    shape: list[int]
    data: list[Scalar] = Field(description="null for a rejected row")


class InferResponse(ResponseBody):
    model_name: str
    model_version: str
    outputs: list[InferOutput]
    id: str | SkipJsonSchema[None] = Field(
        None, exclude_if=lambda id: id is None, description="the request's, when it had one"
    )
    parameters: dict[str, str] | SkipJsonSchema[None] = Field(
        None,
        exclude_if=lambda p: p is None,
        description=(
            "the protocol's response parameters, where there is something to say: "
            "category_spelling, where text values differ from a training value only in case "
            "(each record's in the training_spelling output)"
        ),
    )


class TensorMetadata(ResponseBody):
    name: str
    datatype: str
    shape: list[int]


class ModelMetadata(ResponseBody):
    name: str
    versions: list[str]
    platform: str
    inputs: list[TensorMetadata]
    outputs: list[TensorMetadata]


class ServerMetadata(ResponseBody):
    """The Open Inference Protocol's server metadata."""

    name: str
    version: str
    extensions: list[str]


class Live(ResponseBody):
    live: bool


class Ready(ResponseBody):
    ready: bool


class ModelReady(ResponseBody):
    name: str
    ready: bool
