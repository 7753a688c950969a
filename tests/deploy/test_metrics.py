"""The metrics the dashboard and alerts need beyond the service's own: anomalies per alert key
(bounded) for "top anomalous keys", and whether each model is loaded, for AnomalyModelNotLoaded."""

from __future__ import annotations

from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from service.alert_policy import AlertPolicy
from service.metrics import MAX_KEY_SERIES, OTHER_KEYS, ServiceMetrics
from tests.conftest import broken, normal_records
from tests.service.conftest import make_app

NORMAL = normal_records(20)


def samples(registry: CollectorRegistry, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    found = {}
    for metric in registry.collect():
        for sample in metric.samples:
            if sample.name == name:
                found[tuple(sorted(sample.labels.items()))] = sample.value
    return found


def test_key_anomalies_are_counted_per_key_in_the_alerts_format(bundle_dir: Path) -> None:
    app, _ = make_app(bundle_dir, alerts=AlertPolicy(group_by=("host", "region")))
    state = app.extensions["anomaly"]
    try:
        region = NORMAL[0]["region"]
        records = [broken({**NORMAL[i], "host": "web-07", "region": region}) for i in range(3)]
        records += [broken({**NORMAL[3], "host": "web-09", "region": region})]
        records += [{**NORMAL[4], "host": "web-11"}]
        body = app.test_client().post("/v1/models/tiny/score", json={"records": records}).json
        flagged = [r["index"] for r in body["results"] if r["is_anomaly"]]
        assert {0, 1, 2, 3} <= set(flagged)
        counted = samples(state.metrics.registry, "anomaly_key_anomalies_total")
        assert counted[(("key", f"host=web-07,region={region}"), ("model", "tiny"))] == 3
        assert counted[(("key", f"host=web-09,region={region}"), ("model", "tiny"))] == 1
        assert sum(counted.values()) == len(flagged)  # only anomalies, each once
    finally:
        state.dispatcher.stop()


def test_no_key_series_where_the_keys_are_not_to_be_published(bundle_dir: Path) -> None:
    # /metrics takes no token: a bank grouping alerts by card_id published every card number.
    policy = AlertPolicy(group_by=("host",))
    app, _ = make_app(bundle_dir, alerts=policy, key_metrics=False)
    state = app.extensions["anomaly"]
    try:
        records = [broken({**NORMAL[i], "host": "4111111111111111"}) for i in range(3)]
        app.test_client().post("/v1/models/tiny/score", json={"records": records})
        assert samples(state.metrics.registry, "anomaly_key_anomalies_total") == {}
        assert "4111111111111111" not in app.test_client().get("/metrics").get_data(as_text=True)
        alerts = app.test_client().get("/v1/alerts").get_json()["alerts"]
        assert alerts and alerts[0]["key"] == {"host": "4111111111111111"}  # alerts still key
    finally:
        state.dispatcher.stop()


def test_no_key_series_without_group_by(bundle_dir: Path) -> None:
    app, _ = make_app(bundle_dir)  # the default policy groups by nothing
    state = app.extensions["anomaly"]
    try:
        app.test_client().post("/v1/models/tiny/score", json={"records": [broken(NORMAL[0])]})
        assert samples(state.metrics.registry, "anomaly_key_anomalies_total") == {}
    finally:
        state.dispatcher.stop()


def test_key_series_are_bounded_and_the_rest_is_other() -> None:
    metrics = ServiceMetrics(CollectorRegistry())
    metrics.count_key_anomalies("m", {f"host=h{i}": 1 for i in range(MAX_KEY_SERIES)})
    metrics.count_key_anomalies("m", {"host=late": 2, "host=h0": 1, "host=later": 3})
    metrics.count_key_anomalies("other-model", {"host=late": 1})  # a bound per model
    counted = samples(metrics.registry, "anomaly_key_anomalies_total")
    keys_of_m = {dict(labels)["key"] for labels in counted if dict(labels)["model"] == "m"}
    assert len(keys_of_m) == MAX_KEY_SERIES + 1
    assert counted[(("key", OTHER_KEYS), ("model", "m"))] == 5
    assert counted[(("key", "host=h0"), ("model", "m"))] == 2
    assert counted[(("key", "host=late"), ("model", "other-model"))] == 1


def test_model_loaded_is_one_for_a_served_model_and_zero_for_a_broken_one(
    bundle_dir: Path, tmp_path: Path
) -> None:
    from service.app import create_app
    from service.config import ServiceConfig

    config = ServiceConfig(models={"tiny": str(bundle_dir), "gone": str(tmp_path / "missing")})
    app = create_app(config, metrics_registry=CollectorRegistry(), sinks=[])
    state = app.extensions["anomaly"]
    try:
        loaded = samples(state.metrics.registry, "anomaly_model_loaded")
        assert loaded == {(("model", "gone"),): 0.0, (("model", "tiny"),): 1.0}
        # Loading it later, as a worker following another's reload does, sets it to 1.
        state.models.reload("gone", str(bundle_dir))
        assert samples(state.metrics.registry, "anomaly_model_loaded")[(("model", "gone"),)] == 1
    finally:
        state.dispatcher.stop()


def test_records_left_out_of_alerting_by_an_unusable_alert_state_are_counted(
    bundle_dir: Path, monkeypatch
) -> None:
    # A full disk under the alert state stopped every alert while /readyz said ready; only a
    # log line told, and no Prometheus rule could see it (an on-call helper's probe).
    import sqlite3

    from service.alerts import AlertTracker

    app, _ = make_app(bundle_dir, alerts=AlertPolicy(group_by=("host",)))
    state = app.extensions["anomaly"]
    counted = samples(state.metrics.registry, "anomaly_records_unalerted_total")
    assert counted == {(("model", "tiny"),): 0.0}  # declared at 0 for increase() to see a first

    def full(self, record, **kwargs):  # type: ignore[no-untyped-def]
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(AlertTracker, "observe", full)
    try:
        records = [broken(NORMAL[i]) for i in range(3)]
        answer = app.test_client().post("/v1/models/tiny/score", json={"records": records})
        assert answer.status_code == 200  # scored and answered; only their alerts are lost
    finally:
        state.dispatcher.stop()
    counted = samples(state.metrics.registry, "anomaly_records_unalerted_total")
    assert counted == {(("model", "tiny"),): 3.0}


def test_an_alert_state_on_a_full_disk_is_logged_naming_the_file(
    bundle_dir: Path, monkeypatch, caplog, tmp_path: Path
) -> None:
    # SQLite's 'database or disk is full' was logged as it came: no file, nothing to do.
    import math
    import sqlite3

    from service import scoring
    from service.alerts import AlertTracker

    db = sqlite3.connect(":memory:")
    db.execute("CREATE TABLE t (x BLOB)")
    db.execute("PRAGMA max_page_count = 2")  # a file that may not grow: SQLITE_FULL
    with pytest.raises(sqlite3.OperationalError) as refused:
        db.execute("INSERT INTO t VALUES (zeroblob(100000))")
    assert refused.value.sqlite_errorname == "SQLITE_FULL"

    def full(self, record, **kwargs):  # type: ignore[no-untyped-def]
        raise refused.value

    state_file = str(tmp_path / "state.sqlite")
    app, _ = make_app(bundle_dir, alerts=AlertPolicy(group_by=("host",)), series_state=state_file)
    monkeypatch.setattr(AlertTracker, "observe", full)
    monkeypatch.setattr(scoring._unusable, "logged_at", -math.inf)
    state = app.extensions["anomaly"]
    try:
        records = [broken(NORMAL[i]) for i in range(3)]
        answer = app.test_client().post("/v1/models/tiny/score", json={"records": records})
    finally:
        state.dispatcher.stop()
    assert answer.status_code == 200
    said = [r.getMessage() for r in caplog.records if "alert state unusable" in r.getMessage()]
    assert said and f"the state file {state_file} is on a full disk; free space there" in said[0]
