"""Schema-driven requests against the real server (issue #18, "keep it found"): schemathesis
generates requests from the OpenAPI document, valid and invalid ones, and sends them to
``anomaly serve`` under gunicorn. Every answer must be documented, with the documented media
type and body, and none may be a 5xx.

The run is bounded (a fixed number of examples per operation, derandomized, no example
database) and takes about a minute on 2 cores. The hand-written hostile inputs the fuzzer does
not reach (10,000-deep nesting, 16 MiB bodies, chunked bodies) are in test_hostile.py.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from service.openapi import openapi_document
from tests.conftest import DATA
from tests.processes import serving
from tests.service.conftest import ADMIN

pytestmark = pytest.mark.slow

#: Examples per operation in the fuzzing phase, on top of schemathesis's examples and coverage
#: phases.
EXAMPLES = 100
#: Rows per generated KServe request: every input holds this many values, so the inputs agree in
#: length and the generated values reach the server's checks of each value.
ROWS = 2
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


def model_document(columns: list[str]) -> dict[str, Any]:
    """The served OpenAPI document, with the request bodies narrowed to one model's columns:
    a record holds every column (and maybe others), and a KServe request one input per
    column, in order, of ``ROWS`` values each. Generated requests then get past the column
    checks to the values, where scoring happens and where lists and objects hide."""
    document = openapi_document()
    scalar = {"type": ["number", "string", "boolean", "null"]}
    record = {
        "type": "object",
        "properties": dict.fromkeys(columns, scalar),
        "required": columns,
        "additionalProperties": scalar,
    }
    score = document["paths"]["/v1/models/{name}/score"]["post"]["requestBody"]["content"]
    score["application/json"]["schema"]["properties"]["records"]["items"] = record
    tensor = document["components"]["schemas"]["InferInput"]
    values = {"anyOf": [scalar, {"$ref": "#/components/schemas/TensorData"}]}
    data = {"type": "array", "items": values, "minItems": ROWS, "maxItems": ROWS}
    per_column = [
        {**tensor, "properties": {**tensor["properties"], "name": {"const": c}, "data": data}}
        for c in columns
    ]
    infer = document["paths"]["/v2/models/{name}/infer"]["post"]["requestBody"]["content"]
    infer["application/json"]["schema"]["properties"]["inputs"] = {
        "type": "array",
        "prefixItems": per_column,
        "minItems": len(columns),
        "items": False,
    }
    return document


@schemathesis.serializer("application/x-ndjson")
def _json_lines(ctx: Any, value: Any) -> bytes:
    """A generated JSON Lines body: generated text as it is (mostly no JSON: each line a
    rejected record), a generated list as one JSON value a line, anything else as one line."""
    if isinstance(value, str):
        return value.encode("utf-8", "surrogatepass")
    lines = value if isinstance(value, list) else [value]
    return "\n".join(json.dumps(v) for v in lines).encode()


#: The columns of the session's tiny model: those of the data it is trained on (a fixture
#: would be too late: schemathesis builds one test per operation as the module is collected).
COLUMNS = list(pd.read_csv(DATA / "train.csv", nrows=0).columns)
schema = schemathesis.openapi.from_dict(
    model_document(COLUMNS),
    config=schemathesis.Config.from_dict({"generation": {"mode": "all"}}),
)


@pytest.fixture(scope="module")
def server(bundle_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``anomaly serve`` with 2 workers, as a user starts it, with an admin token so that the
    fuzzer reaches the reload route's body."""
    from detector.bundles.bundle import load_bundle

    assert list(load_bundle(bundle_dir).schema.column_order) == COLUMNS
    env = {"ANOMALY_ADMIN_TOKEN": ADMIN}
    with serving({"tiny": bundle_dir}, tmp_path_factory.mktemp("fuzz"), env=env) as running:
        yield running.base
        log = running.log_path.read_text()
    # A 5xx is logged with its traceback: say which, should the checks above have missed it.
    assert "Traceback" not in log, log[-4000:]


def _consistent_tensors(body: Any) -> None:
    """Give each generated KServe input the shape of its data (shape [n] or [n, 1], n random
    otherwise), so that the generated values reach the server's checks of each value."""
    inputs = body.get("inputs") if isinstance(body, dict) else None
    for tensor in inputs if isinstance(inputs, list) else []:
        if isinstance(tensor, dict) and isinstance(tensor.get("data"), list):
            shape = tensor.get("shape")
            if isinstance(shape, list) and shape and isinstance(shape[0], int):
                shape[0] = len(tensor["data"])


@schema.parametrize()
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
def test_every_answer_is_documented_and_none_is_a_5xx(case: schemathesis.Case, server: str) -> None:
    if case.path_parameters and "name" in case.path_parameters:
        case.path_parameters["name"] = "tiny"  # the served model: past the 404, into its checks
    _consistent_tensors(case.body)
    case.call_and_validate(
        base_url=server,
        headers={"Authorization": f"Bearer {ADMIN}"},
        checks=CHECKS,
        timeout=30,
    )
