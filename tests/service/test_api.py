"""The HTTP API through Flask's test client: scoring, strict validation, auth, reload, KServe."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from detector.series.windows import SERIES_REJECTION_CODES
from service.alert_policy import AlertPolicy
from tests.conftest import DATA, TINY, broken, normal_records
from tests.service.conftest import ADMIN, ScoringThread, fill, make_app

NORMAL = normal_records(40)


def post(client, body: Any, name: str = "tiny", **kwargs):  # type: ignore[no-untyped-def]
    return client.post(f"/v1/models/{name}/score", json=body, **kwargs)


def test_health_and_readiness(client) -> None:
    assert client.get("/healthz").json == {"status": "alive"}
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json["ready"] is True
    assert client.get("/v2/health/ready").json == {"ready": True}


def test_readiness_says_when_the_series_states_disk_is_full(bundle_dir, small_disk, caplog):
    # /readyz answered ready with nothing else while every series request got 503 and alerts
    # stopped, the state's disk full (measured under anomaly serve on a filled tmpfs). The
    # server stays ready (the other models score, and a load balancer would take every replica
    # whose disk filled alike out at once); the body says what fails, without the file's path.
    app, _ = make_app(bundle_dir, series_state=str(small_disk / "state.sqlite"))
    try:
        client = app.test_client()
        ready = client.get("/readyz")
        assert ready.status_code == 200 and ready.json["degraded"] == {}
        fill(small_disk)
        ready = client.get("/readyz")
        assert ready.status_code == 200 and ready.json["ready"] is True
        said = ready.json["degraded"]["series_state"]
        assert "disk is (nearly) full" in said and "503" in said and "freed" in said, said
        assert str(small_disk) not in ready.get_data(as_text=True)
        assert f"series state file {small_disk / 'state.sqlite'}: its disk" in caplog.text
        assert post(client, {"records": [NORMAL[0]]}).status_code == 200  # scored, unalerted
    finally:
        app.extensions["anomaly"].dispatcher.stop()


def app_with_a_broken_model(bundle_dir: Path, tmp_path: Path, **settings: Any) -> Any:
    """An app serving the tiny model as 'tiny' and, as 'other', a bundle whose manifest is
    not JSON (stop its dispatcher after)."""
    from prometheus_client import CollectorRegistry

    from service.app import create_app
    from service.config import ServiceConfig

    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "manifest.json").write_text("{broken")
    models = {"tiny": str(bundle_dir), "other": str(tmp_path / "broken")}
    config = ServiceConfig(models=models, **settings)
    return create_app(config, metrics_registry=CollectorRegistry(), sinks=[])


@pytest.mark.parametrize(("needs", "status"), [("all", 503), ("any", 200)])
def test_readiness_with_one_broken_model_follows_ready_needs(bundle_dir, tmp_path, needs, status):
    # One team's broken bundle took a server of 30 teams' models out of rotation, with no
    # setting to say otherwise (found by a helper).
    app = app_with_a_broken_model(bundle_dir, tmp_path, ready_needs=needs)
    try:
        client = app.test_client()
        ready = client.get("/readyz")
        assert ready.status_code == status and ready.json["errors"] == {
            "other": "not loaded; see the server log"
        }
        assert client.get("/v2/health/ready").status_code == status
        # KServe's per-model answer: not ready, in its own shape (not an error body).
        other = client.get("/v2/models/other/ready")
        assert (other.status_code, other.json) == (503, {"name": "other", "ready": False})
        assert client.get("/v2/models/tiny/ready").json == {"name": "tiny", "ready": True}
        assert post(client, {"records": [NORMAL[0]]}).status_code == 200  # the others score
    finally:
        app.extensions["anomaly"].dispatcher.stop()


def test_scoring_returns_per_record_results_in_the_product_direction(client) -> None:
    response = post(client, {"records": [NORMAL[0], broken(NORMAL[1]), NORMAL[2]]})
    assert response.status_code == 200
    body = response.json
    assert body["model"] == "tiny" and len(body["version"]) == 12
    assert body["counts"] == {"received": 3, "scored": 3, "rejected": 0}
    scores = [r["anomaly_score"] for r in body["results"]]
    assert scores[1] > max(scores[0], scores[2])
    assert body["results"][1]["is_anomaly"] is True
    assert body["results"][1]["severity"] in {"warning", "critical"}
    assert body["results"][0]["severity"] == "none" or body["results"][0]["is_anomaly"]
    top = body["results"][1]["top_features"]
    assert len(top) == 3 and {"column", "contribution"} <= set(top[0])


def test_a_batch_with_invalid_records_scores_the_rest_and_explains(client) -> None:
    records = [
        NORMAL[0],
        "not an object",
        {**NORMAL[1], "cpu_pct": "lots"},
        {**NORMAL[2], "mem_pct": None},
        {**NORMAL[3], "host": {"nested": 1}},
        {**NORMAL[4], "id": "r-5"},
    ]
    body = post(client, {"records": records}).json
    assert body["counts"] == {"received": 6, "scored": 2, "rejected": 4}
    assert [r["index"] for r in body["results"]] == [0, 5]
    assert body["results"][1]["id"] == "r-5"
    reasons = {r["index"]: " ".join(r["reasons"]) for r in body["rejected"]}
    assert "not a JSON object" in reasons[1]
    assert "'lots' is not a number" in reasons[2]
    assert "mem_pct" in reasons[3] and "empty" in reasons[3]
    assert "objects or lists" in reasons[4]
    # The code each metric's reason label counts it under, as the offline rejects file has.
    codes = {r["index"]: r["code"] for r in body["rejected"]}
    assert codes == {1: "malformed", 2: "not_a_number", 3: "missing_value", 4: "malformed"}


def test_csv_bodies_are_scored_too(client) -> None:
    csv = pd.DataFrame(NORMAL[:5]).to_csv(index=False)
    response = client.post("/v1/models/tiny/score", data=csv, content_type="text/csv")
    assert response.status_code == 200
    assert response.json["counts"]["scored"] == 5


def test_a_csv_bodys_echoed_field_comes_back_as_it_was_sent(client) -> None:
    # An id 'NA' or 'None' (or empty) came back null: read as a missing value, as the model's
    # own columns read such text (2026-12-07; files' kept columns had the same slip).
    ids = ["NA", "None", "", "r-4"]
    frame = pd.DataFrame(NORMAL[: len(ids)]).assign(id=ids)
    response = client.post("/v1/models/tiny/score", data=frame.to_csv(index=False),
                           content_type="text/csv")  # fmt: skip
    assert response.status_code == 200, response.json
    assert [r["id"] for r in response.json["results"]] == ids


def test_a_csv_body_reads_its_header_names_as_a_file_does(client) -> None:
    """Spaces around the names, which training and file scoring strip: the body's were kept,
    so the same CSV scored as a file was "missing ... unknown ' region '" over HTTP."""
    csv = pd.DataFrame(NORMAL[:5]).to_csv(index=False)
    header, rest = csv.split("\n", 1)
    spaced = " , ".join(header.split(",")) + " \n" + rest
    plain = client.post("/v1/models/tiny/score", data=csv, content_type="text/csv")
    response = client.post("/v1/models/tiny/score", data=spaced, content_type="text/csv")
    assert response.status_code == 200, response.json
    assert response.json["results"] == plain.json["results"]


def test_a_csv_body_with_lone_carriage_returns_reads_as_lines(client) -> None:
    """An old Mac export's line ends ("\r" alone): the body was one line, so no records."""
    csv = pd.DataFrame(NORMAL[:5]).to_csv(index=False)
    plain = client.post("/v1/models/tiny/score", data=csv, content_type="text/csv")
    mac = csv.replace("\n", "\r")
    response = client.post("/v1/models/tiny/score", data=mac, content_type="text/csv")
    assert response.status_code == 200, response.json
    assert response.json["results"] == plain.json["results"]


def test_a_number_of_thousands_of_digits_is_named_in_a_clients_words(client) -> None:
    # The answer was Python's advice: "use sys.set_int_max_str_digits() to increase the limit".
    body = '{"records": [{"cpu_pct": ' + "9" * 5000 + "}]}"
    response = client.post("/v1/models/tiny/score", data=body, content_type="application/json")
    assert response.status_code == 400
    assert "a number of more than 4300 digits" in response.json["detail"]
    assert "sys." not in response.json["detail"]
    lines = client.post(
        "/v1/models/tiny/score", data='{"cpu_pct": ' + "9" * 5000 + "}\n",
        content_type="application/x-ndjson",
    )  # fmt: skip
    assert "a number of more than 4300 digits" in str(lines.json)


def test_a_csv_body_in_another_charset_or_below_blank_lines_reads_as_utf8(client) -> None:
    """A Latin-1 body that said so was read as UTF-8 ("'utf-8' codec can't decode byte
    0xe9"); blank lines above the header made the body "empty"."""
    frame = pd.DataFrame(NORMAL[:5]).assign(host="wéb-01")  # unseen, scored all the same
    csv = frame.to_csv(index=False)
    plain = client.post("/v1/models/tiny/score", data=csv.encode(), content_type="text/csv")
    assert plain.status_code == 200, plain.json
    for data, kind in [
        (csv.encode("latin-1"), "text/csv; charset=ISO-8859-1"),
        (csv.encode("utf-16"), "text/csv; charset=utf-16"),
        (("\n \n" + csv).encode(), "text/csv"),
    ]:
        response = client.post("/v1/models/tiny/score", data=data, content_type=kind)
        assert response.status_code == 200, (kind, response.json)
        assert response.json["results"] == plain.json["results"]
    for charset, status in [("klingon", 415), ("base64", 415)]:
        kind = f"text/csv; charset={charset}"
        response = client.post("/v1/models/tiny/score", data=csv, content_type=kind)
        assert response.status_code == status and "send UTF-8" in response.json["detail"]


@pytest.mark.parametrize("column", ["region", "cpu_pct"])
@pytest.mark.parametrize("text", ["NA", " null ", "None", ""])
def test_text_a_file_reads_as_missing_is_missing_in_json_too(client, column, text) -> None:
    """Found by trying: {"region": "NA"} in JSON was scored as an unseen region (an anomaly)
    and "NA" for a number was "not a number", where the same record in a CSV body or file was
    rejected as empty."""
    record = {**NORMAL[0], column: text}
    as_json = post(client, {"records": [record]}).json
    csv = pd.DataFrame([record]).to_csv(index=False)
    as_csv = client.post("/v1/models/tiny/score", data=csv, content_type="text/csv").json
    assert as_json["rejected"] == as_csv["rejected"]
    assert as_json["rejected"][0]["reasons"] == [f"column '{column}' is empty (fill it)"]


def test_json_lines_bodies_score_as_records_and_reject_a_bad_line_alone(client) -> None:
    """Log shippers send one JSON object a line (Vector's newline-delimited framing, Fluent
    Bit's json_lines): that was a 415. A line that is not JSON is rejected as its record, with
    its line number; blank lines are skipped; the other lines score as a JSON body's records."""
    records = [NORMAL[0], broken(NORMAL[1]), NORMAL[2]]
    lines = [
        json.dumps(records[0]),
        "{oops",
        "",
        json.dumps(records[1]),
        '{"host": "a", "host": "b"}',
        "[1]",
        json.dumps(records[2]),
    ]
    body = "\n".join(lines) + "\n"
    response = client.post("/v1/models/tiny/score", data=body, content_type="application/x-ndjson")
    assert response.status_code == 200, response.json
    answer = response.json
    assert answer["counts"] == {"received": 6, "scored": 3, "rejected": 3}
    as_json = post(client, {"records": records}).json["results"]
    assert [r["anomaly_score"] for r in answer["results"]] == [r["anomaly_score"] for r in as_json]
    assert [r["index"] for r in answer["results"]] == [0, 2, 5]
    reasons = {r["index"]: " ".join(r["reasons"]) for r in answer["rejected"]}
    assert reasons[1].startswith("line 2 is not JSON (")
    assert "['host'] given more than once" in reasons[3]
    assert "not a JSON object" in reasons[4]
    empty = client.post("/v1/models/tiny/score", data="\n\n", content_type="application/jsonl")
    assert empty.status_code == 422 and "no line" in empty.json["detail"]
    other = client.post("/v1/models/tiny/score", data="x", content_type="application/xml")
    assert other.status_code == 415 and "application/x-ndjson" in other.json["detail"]


def test_json_csv_and_kserve_bodies_score_the_same_records_alike(client) -> None:
    """JSON records are scored without a DataFrame (detector.features.records), CSV and KServe
    bodies as tables: the same records must come back with the same numbers either way."""
    records = [NORMAL[0], broken(NORMAL[1]), {**NORMAL[2], "host": "never-seen"}, NORMAL[3]]
    as_json = post(client, {"records": records}).json["results"]
    csv = pd.DataFrame(records).to_csv(index=False)
    as_csv = client.post("/v1/models/tiny/score", data=csv, content_type="text/csv").json
    assert as_json == as_csv["results"]
    columns = pd.DataFrame(records)
    inputs = [
        {
            "name": name,
            "shape": [len(records)],
            "datatype": "FP64" if pd.api.types.is_numeric_dtype(columns[name]) else "BYTES",
            "data": columns[name].tolist(),
        }
        for name in columns.columns
    ]
    outputs = client.post("/v2/models/tiny/infer", json={"inputs": inputs}).json["outputs"]
    by_name = {o["name"]: o["data"] for o in outputs}
    assert by_name["anomaly_score"] == [r["anomaly_score"] for r in as_json]
    assert by_name["p_value"] == [r["p_value"] for r in as_json]


def test_a_label_in_another_case_is_named_in_the_answer_with_trainings_spelling(client) -> None:
    # 'US-EAST' where training saw 'us-east' scored as a region never seen, silently. It stays
    # unseen (a changed label may be the anomaly); its record says training's spelling, in
    # JSON and CSV bodies alike, and a record spelled as in training says nothing.
    upper = {**NORMAL[0], "region": NORMAL[0]["region"].upper(), "host": " " + NORMAL[0]["host"]}
    records = [NORMAL[0], upper, {**NORMAL[0], "region": "mars"}]
    answered = post(client, {"records": records}).json
    as_json = answered["results"]
    assert [r.get("training_spelling") for r in as_json] == [
        None, {"region": NORMAL[0]["region"]}, None
    ]  # fmt: skip
    assert as_json[1]["anomaly_score"] > as_json[0]["anomaly_score"]
    csv = pd.DataFrame(records).to_csv(index=False)
    as_csv = client.post("/v1/models/tiny/score", data=csv, content_type="text/csv").json
    assert as_json == as_csv["results"]
    # The answer says it in a sentence too, as the V2 answer's parameters do; none where
    # nothing differs only in case.
    trained = NORMAL[0]["region"]
    said = answered["category_spelling"]
    assert f"column 'region': 1 value ({trained.upper()!r} for {trained!r})" in said
    assert as_csv["category_spelling"] == said
    v2 = client.post("/v2/models/tiny/infer", json={"inputs": _tensors(records)}).json
    assert v2["parameters"]["category_spelling"] == said
    assert "category_spelling" not in post(client, {"records": NORMAL[:2]}).json


def test_kserve_names_a_label_in_another_case_as_the_json_answer_does(client) -> None:
    # The V1 answer named training's spelling of 'US-EAST'; the V2 answer to the same records
    # said nothing. Now a BYTES output holds each record's, as JSON text ("" for none), and
    # the response's parameters say what `anomaly score` warns.
    trained = NORMAL[0]["region"]
    records = [NORMAL[0], {**NORMAL[0], "region": trained.upper()}, broken(NORMAL[1])]
    body = client.post("/v2/models/tiny/infer", json={"inputs": _tensors(records)}).json
    outputs = {o["name"]: o for o in body["outputs"]}
    spelled = outputs["training_spelling"]
    assert (spelled["datatype"], spelled["shape"]) == ("BYTES", [3])
    assert [json.loads(s) if s else None for s in spelled["data"]] == [
        None, {"region": trained}, None
    ]  # fmt: skip
    said = body["parameters"]["category_spelling"]
    assert f"column 'region': 1 value ({trained.upper()!r} for {trained!r})" in said
    assert "write it as training did" in said
    metadata = client.get("/v2/models/tiny").json
    assert {"name": "training_spelling", "datatype": "BYTES", "shape": [-1]} in metadata["outputs"]
    plain = client.post("/v2/models/tiny/infer", json={"inputs": _tensors(NORMAL[:2])}).json
    assert "parameters" not in plain
    assert {o["name"]: o["data"] for o in plain["outputs"]}["training_spelling"] == ["", ""]


def test_each_record_of_a_batch_names_its_own_respelled_labels(client) -> None:
    # Decided once per column from its distinct values: a value respelled in several records
    # is named in each, in both columns, past a record rejected before scoring.
    upper = {**NORMAL[0], "region": NORMAL[0]["region"].upper()}
    both = {**NORMAL[3], "host": NORMAL[3]["host"].upper(), "region": NORMAL[3]["region"].title()}
    records = [upper, NORMAL[1], {**NORMAL[2], "host": ["not", "text"]}, both, upper, NORMAL[4]]
    answer = post(client, {"records": records}).json
    assert [r["index"] for r in answer["rejected"]] == [2]
    assert [(r["index"], r.get("training_spelling")) for r in answer["results"]] == [
        (0, {"region": NORMAL[0]["region"]}),
        (1, None),
        (3, {"host": NORMAL[3]["host"], "region": NORMAL[3]["region"]}),
        (4, {"region": NORMAL[0]["region"]}),
        (5, None),
    ]


@pytest.mark.parametrize(
    ("body", "status", "needle"),
    [
        ({"records": [{**NORMAL[0], "bogus": 1}]}, 422, "unknown column(s) ['bogus']"),
        (
            {"records": [{k: v for k, v in NORMAL[0].items() if k != "cpu_pct"}]},
            422,
            "missing column(s) ['cpu_pct']",
        ),
        ({"records": []}, 422, "empty"),
        ({"records": {"a": 1}}, 400, "list of objects"),
        ({"rows": []}, 400, '{"records"'),
        ({"records": [NORMAL[0]] * 501}, 413, "limit is 500"),
    ],
)
def test_strict_validation_with_json_errors(client, body, status, needle) -> None:
    response = post(client, body)
    assert response.status_code == status
    assert set(response.json) == {"error", "detail"}
    assert needle in response.json["detail"]


def test_wrong_content_type_and_broken_json(client) -> None:
    response = client.post("/v1/models/tiny/score", data="x=1", content_type="text/plain")
    assert response.status_code == 415
    response = client.post(
        "/v1/models/tiny/score", data="{not json", content_type="application/json"
    )
    assert response.status_code == 400


def test_unknown_model_and_route(client) -> None:
    assert post(client, {"records": [NORMAL[0]]}, name="nope").status_code == 404
    missing = client.get("/v1/nothing")
    assert missing.status_code == 404 and missing.json["error"] == "not_found"


def test_malformed_requests_never_get_a_5xx(client) -> None:
    rng = np.random.default_rng(0)
    shapes: list[Any] = [
        None,
        1,
        "x",
        [],
        [1],
        {"records": None},
        {"records": [None]},
        {"records": [[1, 2]]},
        {"records": [{"cpu_pct": float("1e308")}]},
        {"records": [{**NORMAL[0], "cpu_pct": True}]},
        {"records": [{**NORMAL[0], "host": 12}]},
        {"records": [{**NORMAL[0], "hour": "7"}]},
    ]
    for _ in range(30):
        record = dict(NORMAL[0])
        for key in rng.choice(list(record), size=3, replace=False):
            record[key] = [None, "", "abc", -1e300, 1e300, [], {}, 0][rng.integers(8)]
        shapes.append({"records": [record]})
    for body in shapes:
        response = client.post(
            "/v1/models/tiny/score", data=json.dumps(body), content_type="application/json"
        )
        assert response.status_code < 500, (body, response.json)
        assert "Traceback" not in response.get_data(as_text=True)


def test_body_size_limit_is_413(bundle_dir) -> None:
    app, _ = make_app(bundle_dir, max_body_bytes=1_000)
    try:
        response = app.test_client().post("/v1/models/tiny/score", json={"records": NORMAL * 3})
        assert response.status_code == 413
        assert "max_body_bytes" in response.json["detail"]
    finally:
        app.extensions["anomaly"].dispatcher.stop()


def test_scoring_token_when_configured(bundle_dir) -> None:
    app, _ = make_app(bundle_dir, scoring_token="score-me")
    client = app.test_client()
    try:
        assert post(client, {"records": [NORMAL[0]]}).status_code == 401
        wrong = post(client, {"records": [NORMAL[0]]}, headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401 and "Bearer" in wrong.headers["WWW-Authenticate"]
        ok = post(client, {"records": [NORMAL[0]]}, headers={"Authorization": "Bearer score-me"})
        assert ok.status_code == 200
        assert client.get("/healthz").status_code == 200  # probes stay open
    finally:
        app.extensions["anomaly"].dispatcher.stop()


def test_reload_swaps_and_a_failed_reload_keeps_the_old_model(client, bundle_dir, tmp_path, caplog):
    from detector.bundles.bundle import set_target_fpr

    stricter = tmp_path / "stricter"
    shutil.copytree(bundle_dir, stricter)
    set_target_fpr(stricter, 0.001)
    before = client.get("/v1/models/tiny").json
    auth = {"Authorization": f"Bearer {ADMIN}"}

    assert client.post("/v1/models/tiny/reload", json={"path": str(stricter)}).status_code == 401
    swapped = client.post("/v1/models/tiny/reload", json={"path": str(stricter)}, headers=auth)
    assert swapped.status_code == 200
    assert swapped.json["threshold"] > before["threshold"]

    with caplog.at_level("ERROR"):
        failed = client.post(
            "/v1/models/tiny/reload", json={"path": str(tmp_path / "nothing")}, headers=auth
        )
    assert failed.status_code == 422 and "still serving" in failed.json["detail"]
    # The on-call reads why in the log, as for a failed SIGHUP reload.
    assert "reload of model tiny failed; the previous model is still serving" in caplog.text
    assert post(client, {"records": [NORMAL[0]]}).json["threshold"] == swapped.json["threshold"]

    back = client.post("/v1/models/tiny/reload", json={"path": str(bundle_dir)}, headers=auth)
    assert back.json["threshold"] == before["threshold"]
    metrics = client.get("/metrics").get_data(as_text=True)
    assert 'anomaly_model_reloads_total{model="tiny",outcome="success"} 2.0' in metrics
    assert 'anomaly_model_reloads_total{model="tiny",outcome="failure"} 1.0' in metrics


def test_a_reload_of_a_relative_path_names_the_folder_it_looked_in(
    client, tmp_path, monkeypatch
) -> None:
    # "no model bundle at models/x": the caller does not see the server's working directory.
    monkeypatch.chdir(tmp_path)
    auth = {"Authorization": f"Bearer {ADMIN}"}
    failed = client.post("/v1/models/tiny/reload", json={"path": "models/x"}, headers=auth)
    assert failed.status_code == 422
    assert failed.json["detail"].startswith(f"no model bundle at {tmp_path}/models/x ")


def test_a_reload_with_a_mistyped_field_is_refused(client, bundle_dir) -> None:
    # {"dir": ...} reloaded the old directory and answered 200: the admin believed it live.
    auth = {"Authorization": f"Bearer {ADMIN}"}
    generation = client.get("/v1/models/tiny").json["generation"]
    answer = client.post("/v1/models/tiny/reload", json={"dir": str(bundle_dir)}, headers=auth)
    assert answer.status_code == 400, answer.json
    assert answer.json["detail"].startswith("unknown field 'dir': the body must be ")
    assert client.get("/v1/models/tiny").json["generation"] == generation


def test_admin_routes_are_closed_without_an_admin_token(bundle_dir) -> None:
    app, _ = make_app(bundle_dir, admin_token=None)
    try:
        assert app.test_client().post("/v1/models/tiny/reload").status_code == 403
    finally:
        app.extensions["anomaly"].dispatcher.stop()


def test_model_description(client) -> None:
    listing = client.get("/v1/models").json["models"]
    assert [m["name"] for m in listing] == ["tiny"]
    detail = client.get("/v1/models/tiny").json
    assert detail["target_fpr"] == pytest.approx(0.05)
    assert "cpu_pct" in detail["schema"]["columns"]
    assert detail["training"]["epochs_run"] >= 1
    assert detail["alert_policy"]["group_by"] == ["host"]


def test_alerts_fire_per_key_and_are_listed(service, client) -> None:
    app, sink = service
    records = [broken({**NORMAL[i], "host": "web-03"}) for i in range(3)]
    post(client, {"records": records})
    assert app.extensions["anomaly"].dispatcher.flush(timeout=5)
    firing = [a for a in sink.alerts if a.status == "firing" and dict(a.key)["host"] == "web-03"]
    assert len(firing) == 1
    listed = client.get("/v1/alerts").json["alerts"]
    assert any(a["status"] == "firing" for a in listed)


def test_every_worker_lists_the_servers_recent_alerts(bundle_dir, tmp_path) -> None:
    """Each worker listed the alerts it had made itself: which ones a client saw depended on
    the worker that answered."""
    policy = AlertPolicy(
        group_by=("host",), fire_after=2, window=3, resolve_after=3, min_firing_seconds=0
    )
    state = str(tmp_path / "state.sqlite")
    workers = [make_app(bundle_dir, alerts=policy, series_state=state, recent_alerts=2)[0]]
    workers.append(make_app(bundle_dir, alerts=policy, series_state=state, recent_alerts=2)[0])
    try:
        first, second = (app.test_client() for app in workers)
        assert second.get("/v1/alerts").json["alerts"] == []
        for host in ("web-07", "web-08", "web-09"):
            records = [broken({**NORMAL[i], "host": host}) for i in range(2)]
            assert post(first, {"records": records}).status_code == 200
        listed = [a["labels"]["host"] for a in second.get("/v1/alerts").json["alerts"]]
        assert listed == ["web-08", "web-09"]  # the newest 2 (recent_alerts), oldest first
        assert first.get("/v1/alerts").json == second.get("/v1/alerts").json
    finally:
        for app in workers:
            app.extensions["anomaly"].dispatcher.stop()


def test_alerts_are_listed_for_one_model_when_asked(bundle_dir, tmp_path) -> None:
    # ?model=a was ignored: a server of many models answered with every model's alerts, as
    # if they were a's, and a misspelt ?modle=a alike (a fleet helper).
    from prometheus_client import CollectorRegistry

    from service.app import create_app
    from service.config import ServiceConfig

    policy = AlertPolicy(group_by=("host",), fire_after=2, window=3, min_firing_seconds=0)
    models = {"a": str(bundle_dir), "b": str(bundle_dir)}
    config = ServiceConfig(models=models, alerts=policy, series_state=str(tmp_path / "s.sqlite"))
    app = create_app(config, metrics_registry=CollectorRegistry(), sinks=[])
    client = app.test_client()
    try:
        for name, host in (("a", "web-01"), ("b", "web-02")):
            records = [broken({**NORMAL[i], "host": host}) for i in range(2)]
            assert post(client, {"records": records}, name).status_code == 200
        assert {a["model"] for a in client.get("/v1/alerts").json["alerts"]} == {"a", "b"}
        only_b = client.get("/v1/alerts?model=b").json["alerts"]
        assert only_b and {(a["model"], a["labels"]["host"]) for a in only_b} == {("b", "web-02")}
        misspelt = client.get("/v1/alerts?modle=b")
        assert misspelt.status_code == 400 and "['modle']" in misspelt.json["detail"]
        unknown = client.get("/v1/alerts?model=c")
        assert unknown.status_code == 404 and "served models: a, b" in unknown.json["detail"]
    finally:
        app.extensions["anomaly"].dispatcher.stop()


@pytest.mark.parametrize("shared", [True, False], ids=["shared state", "in-process"])
def test_a_noisy_models_alerts_do_not_push_a_quiet_ones_out_of_its_list(
    bundle_dir, tmp_path, shared
) -> None:
    # recent_alerts was one list for all models: model a's 6 alerts left b's one out of
    # GET /v1/alerts?model=b, which answered with none.
    from prometheus_client import CollectorRegistry

    from service.app import create_app
    from service.config import ServiceConfig

    policy = AlertPolicy(group_by=("host",), fire_after=1, window=1, min_firing_seconds=0)
    config = ServiceConfig(
        models={"a": str(bundle_dir), "b": str(bundle_dir)},
        alerts=policy,
        recent_alerts=3,
        series_state=str(tmp_path / "s.sqlite") if shared else None,
    )
    app = create_app(config, metrics_registry=CollectorRegistry(), sinks=[])
    client = app.test_client()
    try:
        assert (
            post(client, {"records": [broken({**NORMAL[0], "host": "b-1"})]}, "b").status_code
            == 200
        )
        noisy = [broken({**NORMAL[i], "host": f"a-{i}"}) for i in range(6)]
        assert post(client, {"records": noisy}, "a").status_code == 200
        every = client.get("/v1/alerts").json["alerts"]
        assert [a["labels"]["host"] for a in every] == ["a-3", "a-4", "a-5"]
        only_b = client.get("/v1/alerts?model=b").json["alerts"]
        assert [(a["model"], a["labels"]["host"]) for a in only_b] == [("b", "b-1")]
        only_a = client.get("/v1/alerts?model=a").json["alerts"]
        assert [a["labels"]["host"] for a in only_a] == ["a-3", "a-4", "a-5"]
    finally:
        app.extensions["anomaly"].dispatcher.stop()


def test_an_alert_names_the_record_behind_it(bundle_dir) -> None:
    """``record_fields``: the alert carries the last anomalous record's id (a field scoring
    leaves alone), so a team can find the transaction, not only the host."""
    policy = AlertPolicy(group_by=("host",), fire_after=2, window=3, record_fields=("id",))
    app, _ = make_app(bundle_dir, alerts=policy, passthrough_fields=("id",))
    try:
        records = [broken({**NORMAL[i], "host": "pay-1", "id": f"tx-{i}"}) for i in range(2)]
        records.append({**NORMAL[2], "host": "pay-1", "id": "tx-normal"})
        assert post(app.test_client(), {"records": records}).status_code == 200
        # Listed as made (the sinks get it from their own thread).
        [fired] = app.test_client().get("/v1/alerts").json["alerts"]
        assert (fired["status"], fired["last_record"]) == ("firing", {"id": "tx-1"})
        assert "Last anomalous record: id='tx-1'." in fired["annotations"]["description"]
    finally:
        app.extensions["anomaly"].dispatcher.stop()


def test_a_rejected_record_carries_its_passthrough_fields(bundle_dir) -> None:
    # A fraud helper's rejections named an index alone: in 10,000 payments a request, finding
    # the transaction took bookkeeping.
    app, _ = make_app(bundle_dir, passthrough_fields=("id",))
    records = [
        {**NORMAL[0], "id": "tx-0"},
        {**NORMAL[1], "id": "tx-1", "cpu_pct": "lots"},  # rejected in scoring
        {**NORMAL[2], "id": "tx-2", "extra": 1},  # rejected for its fields
        {**NORMAL[3], "id": "tx-3", "mem_pct": {"nested": 1}},  # rejected as malformed
        {**NORMAL[4], "id": ["not", "plain"], "cpu_pct": None},  # no plain id to give back
    ]
    try:
        answer = post(app.test_client(), {"records": records}).json
    finally:
        app.extensions["anomaly"].dispatcher.stop()
    assert [(r["index"], r["id"]) for r in answer["results"]] == [(0, "tx-0")]
    assert [(r["index"], r.get("id")) for r in answer["rejected"]] == [
        (1, "tx-1"),
        (2, "tx-2"),
        (3, "tx-3"),
        (4, None),
    ]


def test_records_without_their_alert_key_field_are_logged(bundle_dir, caplog) -> None:
    # A fraud helper's payments sent without card_id all alerted as one card, '', unsaid.
    from service import scoring

    policy = AlertPolicy(group_by=("card",))
    app, _ = make_app(bundle_dir, alerts=policy, passthrough_fields=("card",))
    scoring._keyless.logged_at = -np.inf  # another test's line an instant ago
    try:
        with caplog.at_level("ERROR"):
            # Every record rejected (a host sent as an object): none alerted, none to log.
            rejected = [{**record, "host": {"a": 1}} for record in NORMAL[:3]]
            assert post(app.test_client(), {"records": rejected}).status_code == 200
            assert "alert key field" not in caplog.text
            assert post(app.test_client(), {"records": NORMAL[:3]}).status_code == 200
    finally:
        app.extensions["anomaly"].dispatcher.stop()
    assert "records without the alert key field(s) ['card'] are alerted together" in caplog.text


def test_a_key_gone_silent_resolves_with_no_request_to_its_model(bundle_dir) -> None:
    """Silent keys were looked for as a request came: a model whose every key went quiet (its
    one host gone) fired for good. Stale here: 4 x the 1 s floor of re-sends."""
    import time

    policy = AlertPolicy(group_by=("host",), fire_after=2, window=3, repeat_seconds=0)
    app, sink = make_app(bundle_dir, alerts=policy)
    try:
        records = [broken({**NORMAL[i], "host": "gone-01"}) for i in range(3)]
        assert post(app.test_client(), {"records": records}).status_code == 200
        deadline = time.monotonic() + 60
        while not any(a.status == "resolved" for a in sink.alerts):
            assert time.monotonic() < deadline, [(a.status, a.key) for a in sink.alerts]
            time.sleep(0.1)
        assert sink.alerts[0].status == "firing" and sink.alerts[-1].status == "resolved"
    finally:
        app.extensions["anomaly"].dispatcher.stop()


def test_a_column_training_ignored_is_taken_over_http_as_in_a_file(tmp_path) -> None:
    """A record with the transaction id and time training was told to ignore was a 422 over
    HTTP ("unknown column(s)"), and scored by `anomaly score` (found by a helper)."""
    from detector.cli.main import main

    table = pd.read_csv(DATA / "train.csv").head(300)
    table.assign(txn_id=[f"t{i}" for i in range(300)]).to_csv(tmp_path / "t.csv", index=False)
    argv = ["train", str(tmp_path / "t.csv"), "--out", str(tmp_path / "m"), "--epochs", "2"]
    assert main([*argv, "--ignore-column", "txn_id", "--hidden-units", "16,8"]) == 0
    app, _ = make_app(tmp_path / "m")
    try:
        client = app.test_client()
        records = [{**record, "txn_id": f"x{i}"} for i, record in enumerate(NORMAL[:3])]
        answer = post(client, {"records": records})
        assert answer.status_code == 200, answer.json
        assert answer.json["counts"]["scored"] == 3 and "txn_id" not in answer.json["results"][0]
        assert post(client, {"records": [{**NORMAL[0], "other": 1}]}).status_code == 422
    finally:
        app.extensions["anomaly"].dispatcher.stop()


def test_two_alert_keys_never_share_one_metric_key(bundle_dir) -> None:
    """Fields joined with ',' and '=' unescaped: host 'h1,region=x' in region 'y' and host
    'h1' in region 'x,region=y' counted as one key of anomaly_key_anomalies_total."""
    policy = AlertPolicy(
        group_by=("host", "region"), fire_after=2, window=3, resolve_after=3, min_firing_seconds=0
    )
    app, _ = make_app(bundle_dir, alerts=policy)
    try:
        client = app.test_client()
        for host, region in (("h1,region=x", "y"), ("h1", "x,region=y")):
            records = [broken({**NORMAL[i], "host": host, "region": region}) for i in range(2)]
            assert post(client, {"records": records}).status_code == 200
        text = client.get("/metrics").get_data(as_text=True)
        keys = re.findall(r'anomaly_key_anomalies_total\{key="(.*?)",model', text)
        assert sorted(keys) == [r"host=h1,region=x\\,region\\=y", r"host=h1\\,region\\=x,region=y"]
    finally:
        app.extensions["anomaly"].dispatcher.stop()


def test_a_csv_bodys_alert_key_is_its_text_as_written(bundle_dir) -> None:
    """A field the model does not read holding 7 and 7.5 in a CSV body was read as floats,
    so its anomalies counted under rack=7.0 where a JSON client's 7 counts under rack=7: one
    rack's alert short of fire_after under each. A CSV body's key is its text as written, as
    a series key is ('7.00' stays apart); a KServe tensor's number is keyed as JSON's."""
    policy = AlertPolicy(
        group_by=("rack",), fire_after=2, window=3, resolve_after=3, min_firing_seconds=0
    )
    app, sink = make_app(bundle_dir, alerts=policy, passthrough_fields=("rack",))
    try:
        client = app.test_client()
        for racks in (["7", "7.5"], ["7.00", "7.5"]):
            frame = pd.DataFrame([broken({**NORMAL[i], "rack": r}) for i, r in enumerate(racks)])
            csv = frame.to_csv(index=False)
            answer = client.post("/v1/models/tiny/score", data=csv, content_type="text/csv")
            assert answer.status_code == 200, answer.json
            assert [r["is_anomaly"] for r in answer.json["results"]] == [True, True]
        assert post(client, {"records": [broken({**NORMAL[5], "rack": 7})]}).status_code == 200
        # A V2 FP64 tensor's 7.0 is a JSON 7.0, which is 7 (its str() made it 'rack=7.0').
        inputs = _tensors([broken({**NORMAL[6], "rack": 7.0})])
        assert client.post("/v2/models/tiny/infer", json={"inputs": inputs}).status_code == 200
        text = client.get("/metrics").get_data(as_text=True)
        found = re.findall(
            r'anomaly_key_anomalies_total\{key="rack=(.*?)",model="tiny"\} (\S+)', text
        )
        assert dict(found) == {"7": "3.0", "7.5": "2.0", "7.00": "1.0"}
        assert app.extensions["anomaly"].dispatcher.flush(timeout=5)
        assert sorted(dict(a.key)["rack"] for a in sink.alerts) == ["7", "7.5"]
    finally:
        app.extensions["anomaly"].dispatcher.stop()


def test_a_huge_alert_key_value_is_cut_short_in_alerts_and_metrics(service, client) -> None:
    """A client's 2 MB host went whole into the alert labels, /v1/alerts and every scrape."""
    app, sink = service
    hosts = ["h" * 2_000_000, "h" * 1_999_999 + "i"]  # alike for their first 2 MB less one
    for host in hosts:
        post(client, {"records": [broken({**NORMAL[i], "host": host}) for i in range(3)]})
    assert app.extensions["anomaly"].dispatcher.flush(timeout=5)
    labels = {dict(a.key)["host"] for a in sink.alerts if dict(a.key)["host"].startswith("hh")}
    assert len(labels) == 2 and max(map(len, labels)) <= 200  # apart, and short
    text = client.get("/metrics").get_data(as_text=True)
    assert len(text) < 100_000 and sum(label in text for label in labels) == 2


def test_metrics_content_type_is_prometheus_own(client) -> None:
    # Flask added its own charset to a mimetype: "...; charset=utf-8; charset=utf-8", a
    # parameter twice, which Go's mime parser (Prometheus 3's scrape) refuses.
    from prometheus_client import CONTENT_TYPE_LATEST

    response = client.get("/metrics")
    assert response.headers["Content-Type"] == CONTENT_TYPE_LATEST
    assert response.headers["Content-Type"].count("charset") == 1


def test_one_records_unknown_field_rejects_that_record_and_the_others_score(client) -> None:
    # The whole request was a 422 for one odd record: the others went unscored.
    records = [NORMAL[0], {**NORMAL[1], "extra": 1}, NORMAL[2]]
    response = post(client, {"records": records})
    assert response.status_code == 200, response.json
    assert response.json["counts"] == {"received": 3, "scored": 2, "rejected": 1}
    assert [r["index"] for r in response.json["results"]] == [0, 2]
    [rejected] = response.json["rejected"]
    assert rejected["index"] == 1 and rejected["code"] == "malformed"
    assert rejected["reasons"][0].startswith("unknown field(s) ['extra']: the model's are [")
    every = post(client, {"records": [{**record, "extra": 1} for record in records]})
    assert every.status_code == 422 and "unknown column(s) ['extra']" in every.json["detail"]


def test_a_422_for_the_columns_names_the_model_and_its_version(client) -> None:
    # A client of a server of many models read "missing column(s) ... The model expects: ..."
    # of no model in particular: records for one model sent to another, or a model reloaded
    # with other columns, looked alike (a fleet helper).
    version = client.get("/v1/models/tiny").json["version"]
    meant_for_another = [{"ts": 1, "host": "web-01", "latency_ms": 3.0}]
    for response in [
        post(client, {"records": meant_for_another}),
        client.post("/v1/models/tiny/score", data="ts,host\n1,a\n", content_type="text/csv"),
        client.post("/v2/models/tiny/infer", json={"inputs": _tensors(meant_for_another)}),
    ]:
        assert response.status_code == 422, response.json
        detail = response.json["detail"]
        assert detail.startswith(f"model 'tiny' (version {version}): missing column(s)"), detail


def test_a_reload_that_changes_the_input_columns_says_which(bundle_dir, tmp_path, caplog):
    # A bundle of other columns swapped in with a bare 200: every producer's request then got
    # a 422, and nothing had said why.
    from detector import VAEDetector

    train = pd.read_csv(DATA / "train.csv").drop(columns=["disk_iops"])
    VAEDetector(**{**TINY, "epochs": 2}).fit(train).save(tmp_path / "fewer")
    app, _ = make_app(bundle_dir)
    client, auth = app.test_client(), {"Authorization": f"Bearer {ADMIN}"}
    try:
        same = client.post("/v1/models/tiny/reload", headers=auth).json
        assert same["columns_added"] == same["columns_removed"] == []
        fewer = client.post(
            "/v1/models/tiny/reload", json={"path": str(tmp_path / "fewer")}, headers=auth
        ).json
        assert fewer["columns_removed"] == ["disk_iops"] and fewer["columns_added"] == []
        assert "reloaded with other input columns" in caplog.text
        back = client.post(
            "/v1/models/tiny/reload", json={"path": str(bundle_dir)}, headers=auth
        ).json
        assert back["columns_added"] == ["disk_iops"] and back["columns_removed"] == []
    finally:
        app.extensions["anomaly"].dispatcher.stop()


@pytest.mark.parametrize(
    "path", ["/v1/models/tiny//score", "/v1//models", "/v2/models//ready", "/v2//health/live"]
)
def test_a_path_with_an_empty_segment_is_a_json_404_not_a_redirect(client, path) -> None:
    # Werkzeug answered 308 with an HTML page, to /v2/models/ready (a model named 'ready').
    response = client.post(path, json={"records": []}) if "score" in path else client.get(path)
    code = response.json["code" if path.startswith("/v2") else "error"]
    assert response.status_code == 404 and code == "not_found"


def test_a_fresh_service_exports_its_counters_at_zero(bundle_dir) -> None:
    # Prometheus takes a series' first sample as the start of increase(): a counter first
    # exported at 1 never counted, so the first failed reload after a start raised no alert.
    app, sink = make_app(bundle_dir)
    try:
        text = app.test_client().get("/metrics").get_data(as_text=True)
    finally:
        app.extensions["anomaly"].dispatcher.stop()
    for outcome in ("success", "failure"):
        assert f'anomaly_model_reloads_total{{model="tiny",outcome="{outcome}"}} 0.0' in text
    # A series model's codes too: 'long_key' and 'bad_key' were left out, so their first
    # rejection after a start was missed by increase().
    for code in ("missing_value", "not_a_number", *SERIES_REJECTION_CODES):
        assert f'anomaly_records_rejected_total{{model="tiny",reason="{code}"}} 0.0' in text
    for severity in ("critical", "warning"):
        assert f'anomaly_anomalies_total{{model="tiny",severity="{severity}"}} 0.0' in text
    for outcome in ("sent", "failed", "dropped"):
        assert f'anomaly_alerts_total{{outcome="{outcome}",sink="{sink.name}"}} 0.0' in text
    assert 'anomaly_alerts_total{outcome="dropped",sink="queue"} 0.0' in text


def test_an_unknown_route_or_method_names_the_way(client) -> None:
    # Werkzeug's stock texts: "The requested URL was not found on the server. If you entered
    # the URL manually ..." and "The method is not allowed for the requested URL."
    missing = client.get("/v1/modelz")
    assert missing.status_code == 404 and missing.json == {
        "error": "not_found",
        "detail": "no route '/v1/modelz'; GET /openapi.json lists the routes",
    }
    wrong = client.get("/v1/models/tiny/score")
    assert wrong.status_code == 405
    assert wrong.json["detail"] == "GET is not allowed on '/v1/models/tiny/score'; use POST"


def test_metrics_count_what_happened(client) -> None:
    before = _counter(client, 'anomaly_records_scored_total{model="tiny"}')
    post(client, {"records": [NORMAL[0], NORMAL[1], {**NORMAL[2], "cpu_pct": "x"}]})
    text = client.get("/metrics").get_data(as_text=True)
    assert _counter(client, 'anomaly_records_scored_total{model="tiny"}') == before + 2
    assert 'anomaly_records_rejected_total{model="tiny",reason="not_a_number"}' in text
    assert "anomaly_p_value_bucket" in text and "anomaly_request_duration_seconds" in text
    assert 'anomaly_expected_anomaly_rate{model="tiny"}' in text


def test_a_made_up_http_method_adds_no_time_series(client) -> None:
    """Each method a client invented ('ZZ1', 'ZZ2', ...) was a new series of the latency
    histogram, so any client, without a token, could grow the metrics without bound."""
    for i in range(5):
        assert client.open("/healthz", method=f"ZZ{i}").status_code == 405
    text = client.get("/metrics").get_data(as_text=True)
    assert 'method="ZZ' not in text
    assert 'method="other",route="unmatched",status="405"' in text


def _counter(client, series: str) -> float:  # type: ignore[no-untyped-def]
    for line in client.get("/metrics").get_data(as_text=True).splitlines():
        if line.startswith(series + " "):
            return float(line.split()[-1])
    return 0.0


def test_metric_names_pass_promtool(client) -> None:
    import os
    import subprocess

    promtool = shutil.which("promtool")
    if promtool is None:
        if os.environ.get("CI"):
            pytest.fail("promtool missing in CI: .ci/run installs the Debian package prometheus")
        pytest.skip("promtool not installed (Debian package prometheus)")
    post(client, {"records": [NORMAL[0]]})
    exposition = client.get("/metrics").get_data()
    done = subprocess.run(
        [promtool, "check", "metrics"],
        input=exposition,
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stdout.decode() + done.stderr.decode()


def test_openapi_document_matches_the_routes(service) -> None:
    app, _ = service
    document = app.test_client().get("/openapi.json").json
    documented = {(path, method) for path, ops in document["paths"].items() for method in ops}
    served = set()
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static":
            continue
        path = rule.rule.replace("<", "{").replace(">", "}")
        served |= {(path, m.lower()) for m in rule.methods - {"HEAD", "OPTIONS"}}
    assert documented == served


def _tensors(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {
            "name": c,
            "shape": [len(records)],
            "datatype": "BYTES" if isinstance(records[0][c], str) else "FP64",
            "data": [r[c] for r in records],
        }
        for c in records[0]
    ]


@pytest.mark.parametrize(
    ("datatype", "data", "held"),
    [("INT64", [1.5, 2.0], "1.5"), ("UINT8", [-1, 2], "-1"), ("INT8", [300, 1], "300"),
     ("FP32", ["abc", "1.5"], '"abc"'), ("BOOL", [1, 0], "1")],
)  # fmt: skip
def test_kserve_values_must_be_of_their_declared_datatype(client, datatype, data, held) -> None:
    # INT64 held 1.5 and UINT8 -1 and were scored; FP32 text was parsed.
    inputs = _tensors(NORMAL[:2])
    hour = next(i for i in inputs if i["name"] == "hour")
    hour.update(datatype=datatype, data=data)
    response = client.post("/v2/models/tiny/infer", json={"inputs": inputs})
    assert response.status_code == 400, response.json
    assert (
        f"input 'hour' declares {datatype} but holds {held} at position 0"
        in (response.json["detail"])
    )


def test_kserve_errors_are_their_message_and_a_bool_number_is_refused(client) -> None:
    # A platform helper's BOOL tensor for the numeric hour: 200, every row rejected; and the
    # protocol's error is the message (Triton's client showed "bad_request" alone).
    inputs = _tensors(NORMAL[:2])
    hour = next(i for i in inputs if i["name"] == "hour")
    hour.update(datatype="BOOL", data=[True, False])
    response = client.post("/v2/models/tiny/infer", json={"inputs": inputs})
    assert response.status_code == 400, response.json
    assert response.json["code"] == "bad_request"
    assert response.json["error"].startswith("input 'hour' is a numeric column of the model")
    v1 = client.post("/v1/models/nope/score", json={"records": NORMAL[:1]})
    assert v1.status_code == 404 and v1.json["error"] == "unknown_model"


def test_kserves_binary_extension_is_a_415_naming_the_json_form(client) -> None:
    header = json.dumps({"inputs": [{"name": "hour", "shape": [1], "datatype": "INT64"}]})
    response = client.post(
        "/v2/models/tiny/infer",
        data=header.encode() + b"\x00" * 8,
        headers={"Inference-Header-Content-Length": str(len(header))},
        content_type="application/octet-stream",
    )
    assert response.status_code == 415 and "binary_data=False" in response.json["error"]


def test_kserve_outputs_are_the_ones_asked_for(client) -> None:
    inputs = _tensors(NORMAL[:2])
    asked = {"inputs": inputs, "outputs": [{"name": "p_value"}, {"name": "anomaly_score"}]}
    body = client.post("/v2/models/tiny/infer", json=asked).json
    assert [o["name"] for o in body["outputs"]] == ["p_value", "anomaly_score"]
    for outputs, needle in (
        ([{"name": "nope"}], "no output named 'nope'; this model gives anomaly_score, p_value"),
        ("x", "'outputs' must be a list of objects"),
    ):
        response = client.post("/v2/models/tiny/infer", json={"inputs": inputs, "outputs": outputs})
        assert response.status_code == 400 and needle in response.json["detail"]
    response = client.post("/v2/models/tiny/infer", json={"inputs": inputs, "parameters": [1]})
    assert (
        response.status_code == 400 and "'parameters' must be an object" in response.json["detail"]
    )


def test_kserve_v2_infer(client) -> None:
    frame = pd.DataFrame([NORMAL[0], broken(NORMAL[1]), {**NORMAL[2], "cpu_pct": None}])
    inputs = []
    for column in frame.columns:
        numeric = pd.api.types.is_numeric_dtype(frame[column])
        inputs.append(
            {
                "name": column,
                "shape": [3],
                "datatype": "FP64" if numeric else "BYTES",
                "data": [None if pd.isna(v) else v for v in frame[column].tolist()],
            }
        )
    response = client.post("/v2/models/tiny/infer", json={"id": "req-1", "inputs": inputs})
    assert response.status_code == 200
    body = response.json
    assert body["id"] == "req-1" and body["model_name"] == "tiny"
    outputs = {o["name"]: o for o in body["outputs"]}
    assert outputs["anomaly_score"]["shape"] == [3]
    assert outputs["is_anomaly"]["data"][1] is True
    assert outputs["anomaly_score"]["data"][2] is None
    assert "cpu_pct" in outputs["rejected_reason"]["data"][2]
    metadata = client.get("/v2/models/tiny").json
    assert {i["name"] for i in metadata["inputs"]} == set(frame.columns)
    bad = client.post("/v2/models/tiny/infer", json={"inputs": [{"name": "a"}]})
    assert bad.status_code == 400

    # The version the metadata names has routes of its own (they were 404s), and the server
    # has its metadata; another version is a 404 naming the one served.
    (version,) = metadata["versions"]
    base = f"/v2/models/tiny/versions/{version}"
    again = client.post(f"{base}/infer", json={"id": "req-1", "inputs": inputs})
    assert again.status_code == 200 and again.json == body
    assert client.get(base).json == metadata
    assert client.get(f"{base}/ready").json == {"name": "tiny", "ready": True}
    other = client.post("/v2/models/tiny/versions/000000000000/infer", json={"inputs": inputs})
    assert other.status_code == 404 and f"serves version {version}" in other.json["detail"]
    server = client.get("/v2").json
    assert server["name"] == "anomaly-detector" and server["extensions"] == []


def test_an_old_bundles_warning_names_its_directory_not_the_servers_copy(
    bundle_dir, tmp_path, caplog
) -> None:
    # 2026-12-07 (a helper, upgrading): a bundle from before manifest checksums was served
    # with "/tmp/anomaly-serve-5q5nd41i/models/default/fc8fdc7a4266/manifest.json has no
    # checksum of its own ... retrain the model": a directory the user never made, which
    # says not which of their bundles to retrain.
    old = tmp_path / "old"
    shutil.copytree(bundle_dir, old)
    manifest = json.loads((old / "manifest.json").read_text())
    manifest.pop("integrity")
    (old / "manifest.json").write_text(json.dumps({**manifest, "format_version": 1}))
    app, _ = make_app(old, model_sync_dir=str(tmp_path / "sync"))  # as `anomaly serve` runs
    try:
        warned = [r.getMessage() for r in caplog.records if "no checksum" in r.getMessage()]
        assert warned and all(m.startswith(f"{old / 'manifest.json'} has no") for m in warned)
    finally:
        app.extensions["anomaly"].dispatcher.stop()


def test_a_request_finding_the_worker_out_of_open_files_gets_503_and_no_traceback(
    client, monkeypatch, caplog
) -> None:
    # A worker at its open files limit (ulimit -n 64 and a flood) failed GET /metrics, which
    # opens its metric files: 500 "the server failed", and a traceback in the log for each,
    # "OSError: [Errno 24] Too many open files: '.../metrics/.fold.lock'". The client is told
    # to retry, and the log says at most once a minute what to change, without a traceback.
    import errno
    import math

    from service import open_files
    from service.metrics import ServiceMetrics

    def out_of_files(self: ServiceMetrics) -> bytes:
        raise OSError(errno.EMFILE, "Too many open files", "/tmp/metrics/.fold.lock")

    monkeypatch.setattr(ServiceMetrics, "exposition", out_of_files)
    monkeypatch.setattr(open_files._said, "logged_at", -math.inf)  # said by an earlier test
    for _ in range(3):
        response = client.get("/metrics", headers={"Authorization": f"Bearer {ADMIN}"})
        assert response.status_code == 503 and response.headers["Retry-After"] == "1"
        assert response.json["error"] == "out_of_open_files"
        assert "retry" in response.json["detail"]
    (said,) = [r.getMessage() for r in caplog.records if "out of open files" in r.getMessage()]
    assert "open files limit" in said and "LimitNOFILE=" in said
    assert not [r for r in caplog.records if r.exc_info]


def test_a_large_json_or_json_lines_body_is_parsed_and_answered_off_the_loop(
    client: Any, scoring_thread: ScoringThread
) -> None:
    # Under gunicorn's gevent worker a large body's parsing and its answer held the worker's
    # loop (10,000 records: 0.1-0.3 s and 0.6-1.0 s), the model call alone went to the
    # scoring thread; now all three do past HEAVY_BODY_BYTES, and the answer is the same.
    from service.turns import HEAVY_BODY_BYTES

    records = normal_records(500)
    padded = [{**r, "id": "x" * (HEAVY_BODY_BYTES // len(records))} for r in records]
    answers = []
    for sent in (records, padded):  # 150 KiB: a turn, parsed on the loop; 1 MiB: all of it
        lines = "\n".join(json.dumps(r) for r in sent).encode()
        whole = json.dumps({"records": sent}).encode()
        for body, kind in [(whole, "application/json"), (lines, "application/x-ndjson")]:
            scoring_thread.ran.clear()
            response = client.post("/v1/models/tiny/score", data=body, content_type=kind)
            assert response.status_code == 200, response.json
            answers.append(response.json)
            parsed = "_json_records" if kind == "application/json" else "_json_lines_records"
            away = [parsed, "score", "_score_response"]
            assert scoring_thread.ran == (away if len(body) >= HEAVY_BODY_BYTES else ["score"])
    assert answers[0] == answers[1]
    assert answers[2] == answers[3]
    assert [r["anomaly_score"] for r in answers[2]["results"]] == [
        r["anomaly_score"] for r in answers[0]["results"]
    ]
    assert answers[2]["results"][0]["id"] == padded[0]["id"]

    # Refused there, a body gets its answer, as on the loop.
    refused = json.dumps({"records": {"not": "a list" * (HEAVY_BODY_BYTES // 6)}}).encode()
    response = client.post("/v1/models/tiny/score", data=refused, content_type="application/json")
    assert response.status_code == 400 and "must be a list" in response.json["detail"]
    blank = b"\n" * HEAVY_BODY_BYTES
    response = client.post("/v1/models/tiny/score", data=blank, content_type="application/x-ndjson")
    assert response.status_code == 422 and "no line" in response.json["detail"]
    assert scoring_thread.ran[-2:] == ["_json_records", "_json_lines_records"]


def test_a_field_named_like_the_answers_own_is_not_advised_into_passthrough(client) -> None:
    # An unknown field 'severity' was told to be kept with passthrough_fields = ['severity'],
    # a setting the service refuses (the answer has a severity of its own): told to rename it.
    alone = post(client, {"records": [{**NORMAL[0], "severity": "high"}]})
    mixed = post(client, {"records": [{**NORMAL[0], "severity": "high"}, NORMAL[1]]})
    [rejected] = mixed.json["rejected"]
    for said in (alone.json["detail"], rejected["reasons"][0]):
        assert "passthrough_fields = ['severity']" not in said
        assert "list them in passthrough_fields" not in said
        assert "the answer has its own field(s) of that name: rename them to have" in said


def test_a_failed_reload_of_a_model_never_loaded_does_not_say_one_serves(
    bundle_dir, tmp_path, caplog
):
    # One team's bundle broken at start, its reload failing too, was answered "...; the
    # previous model is still serving", where its requests were (and stay) 503: no model of
    # that name served (found probing a 20-model server).
    app = app_with_a_broken_model(bundle_dir, tmp_path, admin_token=ADMIN)
    try:
        client = app.test_client()
        auth = {"Authorization": f"Bearer {ADMIN}"}
        with caplog.at_level("ERROR"):
            failed = client.post("/v1/models/other/reload", headers=auth)
        assert failed.status_code == 422
        assert "still serving" not in failed.json["detail"]
        assert "still not loaded" in failed.json["detail"]
        assert "reload of model other failed; it is still not loaded" in caplog.text
        assert (
            client.post("/v1/models/other/score", json={"records": [NORMAL[0]]}).status_code == 503
        )
    finally:
        app.extensions["anomaly"].dispatcher.stop()


def test_a_misspelt_model_name_among_many_is_told_the_name_it_resembles(bundle_dir, tmp_path):
    # A server of 100 teams' models answered a misspelt name with every name it serves, 2.5 kB
    # ('no model named ...; served models: team-service-number-0, ...'), cut at 4,000
    # characters with more or longer names, the right one to be found by eye (found probing a
    # 100-model server). Now the close name is offered and the list is left to GET /v1/models.
    from prometheus_client import CollectorRegistry

    from service.app import create_app
    from service.config import ServiceConfig

    models = {f"payments-{i}": str(bundle_dir) for i in range(12)}
    config = ServiceConfig(models=models, admin_token=ADMIN)
    app = create_app(config, metrics_registry=CollectorRegistry(), sinks=[])
    try:
        client = app.test_client()
        auth = {"Authorization": f"Bearer {ADMIN}"}
        for answer in (
            client.post("/v1/models/paymnets-7/score", json={"records": [NORMAL[0]]}),
            client.get("/v1/models/paymnets-7"),
            client.post("/v1/models/paymnets-7/reload", headers=auth),
            client.get("/v1/alerts?model=paymnets-7"),
        ):
            detail = answer.json["detail"]
            assert answer.status_code == 404, detail
            assert "did you mean 'payments-7'?" in detail
            assert "payments-11" not in detail and "12 models are served" in detail
        few = create_app(
            ServiceConfig(models={"a": str(bundle_dir), "b": str(bundle_dir)}),
            metrics_registry=CollectorRegistry(),
            sinks=[],
        )
        try:  # a few are still listed
            detail = few.test_client().get("/v1/models/c").json["detail"]
            assert detail == "no model named 'c'; served models: a, b"
        finally:
            few.extensions["anomaly"].dispatcher.stop()
    finally:
        app.extensions["anomaly"].dispatcher.stop()
