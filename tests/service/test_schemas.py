"""The typed service (#19): the OpenAPI document is generated from the pydantic models, the
answers are what it documents, and the models validate envelopes without taking over the
per-record checks or copying what a request sent."""

from __future__ import annotations

import json
from typing import Any

import jsonschema
import pytest

from service import schemas
from service.openapi import OPERATIONS, openapi_document
from tests.conftest import broken, normal_records
from tests.service.conftest import ADMIN, make_app

NORMAL = normal_records(3)
AUTH = {"Authorization": f"Bearer {ADMIN}"}
TENSOR = {"name": "cpu_pct", "shape": [1], "datatype": "FP64", "data": [1.0]}


def test_every_body_in_the_document_is_a_models_schema() -> None:
    document = openapi_document()
    components = document["components"]["schemas"]
    for (path, method), operation in OPERATIONS.items():
        described = document["paths"][path][method]
        for status, model in operation.answers.items():
            schema = described["responses"][str(status)]["content"]["application/json"]
            assert schema["schema"] == {"$ref": f"#/components/schemas/{model.__name__}"}
            documented = components[model.__name__]["properties"]
            assert set(documented) == {f.alias or n for n, f in model.model_fields.items()}
        if operation.body is not None:
            body = described["requestBody"]["content"]["application/json"]["schema"]
            assert set(body["properties"]) == set(operation.body.model_fields)


def test_the_served_document_is_the_generated_one(client) -> None:
    assert client.get("/openapi.json").json == openapi_document()


def _validator(document: dict[str, Any], path: str, method: str, status: int) -> Any:
    """A validator of one answer's schema, whose references resolve in the document."""
    answer = document["paths"][path][method]["responses"][str(status)]
    schema = answer["content"]["application/json"]["schema"]
    return jsonschema.Draft202012Validator({"components": document["components"], **schema})


@pytest.mark.parametrize(
    ("method", "path", "route", "body"),
    [
        ("get", "/healthz", "/healthz", None),
        ("get", "/readyz", "/readyz", None),
        ("get", "/v1/models", "/v1/models", None),
        ("get", "/v1/models/tiny", "/v1/models/{name}", None),
        ("post", "/v1/models/tiny/score", "/v1/models/{name}/score", "records"),
        ("get", "/v1/alerts", "/v1/alerts", None),
        ("get", "/v2/models/tiny", "/v2/models/{name}", None),
        ("get", "/v2/models/tiny/ready", "/v2/models/{name}/ready", None),
        ("post", "/v2/models/tiny/infer", "/v2/models/{name}/infer", "inputs"),
        ("post", "/v1/models/tiny/score", "/v1/models/{name}/score", "broken"),
    ],
)
def test_answers_are_what_the_document_says(client, method, path, route, body) -> None:
    document = openapi_document()
    if body == "records":
        response = client.post(path, json={"records": [*NORMAL, "not a record"]})
    elif body == "inputs":
        columns = {c: [r[c] for r in NORMAL] for c in NORMAL[0]}
        inputs = [
            {
                "name": c,
                "shape": [len(v)],
                "datatype": "BYTES" if isinstance(v[0], str) else "FP64",
                "data": v,
            }
            for c, v in columns.items()
        ]
        response = client.post(path, json={"inputs": inputs, "id": "r1"})
    elif body == "broken":
        response = client.post(path, json={"records": [{"nope": 1}]})
    else:
        response = client.open(path, method=method.upper(), headers=AUTH)
    status = response.status_code
    assert status in (200, 422), response.json
    _validator(document, route, method, status).validate(response.json)


def test_results_keep_their_shape_and_passthrough_fields(client) -> None:
    records = [{**NORMAL[0], "id": "a-1"}, {**NORMAL[1], "id": None}, 7]
    body = client.post("/v1/models/tiny/score", json={"records": records}).json
    assert [list(r) for r in body["results"]] == [
        ["index", "anomaly_score", "p_value", "is_anomaly", "severity", "top_features", "id"]
    ] * 2
    assert [r["id"] for r in body["results"]] == ["a-1", None]
    assert body["rejected"] == [
        {"index": 2, "code": "malformed", "reasons": ["record is not a JSON object"]}
    ]


def test_a_score_answer_is_the_bytes_its_model_writes(bundle_dir) -> None:
    # The answer is written without validating it (service.api._score_response): for a batch
    # of every kind (scored, anomalous, a label in another case, malformed, a missing value,
    # passthrough fields), its bytes are what ScoreResponse, validated from the same answer,
    # writes: the same fields, values and order.
    app, _ = make_app(bundle_dir, passthrough_fields=("id", "tag"))
    try:
        region = NORMAL[0]["region"]
        records = [
            {**NORMAL[0], "id": "a-1", "tag": "mine"},
            {**broken(NORMAL[1]), "id": 2, "tag": 3.5},
            {**NORMAL[2], "region": region.upper(), "id": None},
            {**NORMAL[0], "cpu_pct": None, "id": "no-cpu", "tag": 9},
            {"id": "nested", "tag": True, "cpu_pct": [1]},
            "not a record",
            *[{**r, "id": f"n-{i}"} for i, r in enumerate(normal_records(40))],
        ]
        for body in ({"records": records}, {"records": records[:3]}):
            response = app.test_client().post("/v1/models/tiny/score", json=body)
            assert response.status_code == 200, response.json
            answer = json.loads(response.data)
            assert answer["counts"]["rejected"] == (3 if len(body["records"]) > 3 else 0)
            remade = schemas.ScoreResponse.model_validate(answer).model_dump_json()
            assert response.data == remade.encode()
        assert "category_spelling" in answer and answer["results"][0]["index"] == 0
    finally:
        app.extensions["anomaly"].dispatcher.stop()


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        # A JSON object was told it must be one.
        ({"record": []}, "the body has no field 'records': it must be a JSON object"),
        ({"records": 5}, "'records' must be a list of objects"),
        ([NORMAL[0]], "the body must be a JSON object"),
    ],
)
def test_a_score_body_of_the_wrong_shape_names_what_is_wrong(client, body, needle) -> None:
    response = client.post("/v1/models/tiny/score", json=body)
    assert response.status_code == 400 and needle in response.json["detail"], response.json


def test_the_request_models_do_not_copy_what_was_sent() -> None:
    # One record stays fast and a 1M-value tensor is counted before it is walked: the models
    # hand over the very lists the JSON parser built.
    records: list[Any] = [{"a": 1}, "not a record", {"b": [1, 2]}]
    assert schemas.ScoreRequest.model_validate({"records": records}).records is records
    data = [1.0] * 1000
    tensor = {"name": "a", "shape": [1000], "datatype": "fp64", "data": data}
    request = schemas.InferRequest.model_validate({"inputs": [tensor]})
    assert request.inputs[0].data is data and request.inputs[0].datatype == "FP64"


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ({"inputs": []}, "the body must be"),
        ({"inputs": [1]}, "each input needs a 'name'"),
        ({"inputs": [{**TENSOR, "shape": [-1]}]}, "needs 'shape'"),
        ({"inputs": [{**TENSOR, "data": 5}]}, "a list 'data'"),
        ({"inputs": [{**TENSOR, "datatype": "FP9"}]}, "'FP9'; use one"),
        ({"inputs": [{**TENSOR, "shape": [True]}]}, "needs 'shape'"),
        ({"inputs": [{**TENSOR, "shape": [2]}]}, "has 1 values for shape [2]"),
        ({"inputs": [TENSOR], "id": 5}, "'id' must be a string"),
    ],
)
def test_kserve_envelope_problems_name_the_fix(client, body, needle) -> None:
    response = client.post("/v2/models/tiny/infer", json=body)
    assert response.status_code == 400 and needle in response.json["detail"], response.json


def test_reload_takes_an_empty_body_or_null_path(client) -> None:
    for body in (None, {"path": None}):
        response = client.post("/v1/models/tiny/reload", json=body, headers=AUTH)
        assert response.status_code == 200, response.json
        assert response.json["loaded"] is True and response.json["name"] == "tiny"
    response = client.post("/v1/models/tiny/reload", json=[], headers=AUTH)
    assert response.status_code == 400 and "the body must be" in response.json["detail"]
