"""The Grafana dashboard and provisioning, which cannot run here: checked against a schema and
against the rest of the project (the metrics the service exports, the recording rules, the
compose stack's mounts). test_stack.py runs every panel's query against a real Prometheus.

Grafana publishes no maintained JSON Schema for dashboards (its own schema is CUE), so
tests/deploy/schemas/grafana-dashboard.schema.json is a minimal one written from Grafana 10's
dashboard model.
"""

from __future__ import annotations

import json
import re
from typing import Any

from prometheus_client import CollectorRegistry

from service.metrics import ServiceMetrics
from tests.deploy.conftest import DEPLOY, load_yaml, schema_check

DASHBOARD = DEPLOY / "grafana" / "dashboards" / "anomaly-detector.json"
COMPOSE = DEPLOY / "docker-compose.yml"


def exported_names() -> set[str]:
    """Every series name the service exports, and every recording rule's name."""
    names = set()
    for family in ServiceMetrics(CollectorRegistry()).registry.collect():
        if family.type == "counter":
            names.add(family.name + "_total")
        elif family.type == "histogram":
            names |= {family.name + suffix for suffix in ("_bucket", "_count", "_sum")}
        else:
            names.add(family.name)
    for group in load_yaml(DEPLOY / "prometheus" / "rules" / "recording.yml")["groups"]:
        names |= {rule["record"] for rule in group["rules"]}
    return names


def dashboard() -> dict[str, Any]:
    return dict(json.loads(DASHBOARD.read_text()))


def panels() -> list[dict[str, Any]]:
    return [p for p in dashboard()["panels"] if p["type"] != "row"]


def test_dashboard_matches_its_schema() -> None:
    schema_check(dashboard(), "grafana-dashboard.schema.json")


def test_dashboard_layout_ids_and_datasources() -> None:
    board = dashboard()
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    cells: set[tuple[int, int]] = set()
    for panel in board["panels"]:
        pos = panel["gridPos"]
        assert pos["x"] + pos["w"] <= 24, panel["title"]
        mine = {
            (x, y)
            for x in range(pos["x"], pos["x"] + pos["w"])
            for y in range(pos["y"], pos["y"] + pos["h"])
        }
        assert not cells & mine, f"{panel['title']} overlaps another panel"
        cells |= mine
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    ref = {"type": "prometheus", "uid": "${datasource}"}
    assert variables["model"]["datasource"] == ref
    for panel in panels():
        assert panel["datasource"] == ref, panel["title"]
        refs = [t["refId"] for t in panel["targets"]]
        assert len(refs) == len(set(refs)), panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == ref, panel["title"]
            assert target["range"] != target["instant"], panel["title"]


def test_dashboard_queries_use_known_variables_and_metrics() -> None:
    known_variables = {"$model", "$__rate_interval", "$__range", "$__interval"}
    names = exported_names() | {"ALERTS"}
    for panel in panels():
        for target in panel["targets"]:
            expr = target["expr"]
            assert set(re.findall(r"\$\w+", expr)) <= known_variables, expr
            used = set(re.findall(r"\b((?:[a-z_]+:)?anomaly_[a-z_:0-9]+|ALERTS)\b", expr))
            assert used and used <= names, f"{panel['title']}: unknown metric in {used - names}"
            if "$model" in expr:
                assert 'model=~"$model"' in expr, "a multi-value variable needs =~"


def seconds(duration: str) -> int:
    value, unit = re.fullmatch(r"(\d+)([smh])", duration).groups()  # type: ignore[union-attr]
    return int(value) * {"s": 1, "m": 60, "h": 3600}[unit]


def test_counts_per_interval_do_not_overlap_and_span_several_scrapes() -> None:
    # increase() over $__rate_interval (4 scrapes) at every step (1 scrape) counted each event
    # in ~4 points: the p-value heatmap showed 3.7x the records scored.
    [source] = load_yaml(DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yml")[
        "datasources"
    ]
    scrape = seconds(source["jsonData"]["timeInterval"])
    for panel in panels():
        for target in panel["targets"]:
            for window in re.findall(r"increase\([^\[]*\[(\$\w+)\]", target["expr"]):
                assert window in {"$__interval", "$__range"}, (panel["title"], target["expr"])
                if window == "$__interval":
                    assert seconds(panel.get("interval", "0s")) >= 4 * scrape, panel["title"]


def test_the_model_variable_lists_every_configured_model() -> None:
    # From anomaly_records_scored_total it left out a model that never loaded, the one
    # AnomalyModelNotLoaded fires for.
    [variable] = [v for v in dashboard()["templating"]["list"] if v["name"] == "model"]
    assert variable["query"]["query"] == "label_values(anomaly_model_loaded, model)"
    assert variable["definition"] == variable["query"]["query"]


def test_dashboard_has_the_panels_the_issue_asks_for() -> None:
    titles = {p["title"] for p in panels()}
    for wanted in (
        "Records scored per second",
        "Anomaly rate vs expected",
        "p-value distribution",
        "Top anomalous keys",
        "Scoring latency: median and p99",
        "Rejected records by reason",
        "Alert deliveries by outcome",
        "Model versions",
        "Model reloads",
    ):
        assert wanted in titles
    heatmap = next(p for p in panels() if p["type"] == "heatmap")
    assert heatmap["targets"][0]["format"] == "heatmap"
    assert "anomaly_p_value_bucket" in heatmap["targets"][0]["expr"]


def test_grafana_provisioning_points_at_the_stack() -> None:
    [source] = load_yaml(DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yml")[
        "datasources"
    ]
    assert source["type"] == "prometheus" and source["isDefault"] is True
    assert source["url"] == "http://prometheus:9090"
    [provider] = load_yaml(
        DEPLOY / "grafana" / "provisioning" / "dashboards" / "anomaly-detector.yml"
    )["providers"]
    grafana = load_yaml(COMPOSE)["services"]["grafana"]
    mounts = dict(volume.rsplit(":", 1)[0].split(":", 1) for volume in grafana["volumes"])
    assert mounts["./grafana/dashboards"] == provider["options"]["path"]
    assert mounts["./grafana/provisioning"] == "/etc/grafana/provisioning"
    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home == f"{provider['options']['path']}/{DASHBOARD.name}"
