"""The shipped Prometheus and Alertmanager configuration, checked by their own tools.

promtool checks the scrape config and the rule files and runs the rules' unit tests; amtool
checks the Alertmanager config and walks its routing tree. No server is started here
(test_stack.py runs them for real).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.deploy.conftest import DEPLOY, load_yaml, require

PROMETHEUS = DEPLOY / "prometheus"
RULE_FILES = [PROMETHEUS / "rules" / "recording.yml", PROMETHEUS / "rules" / "alerts.yml"]
RULE_TESTS = sorted((PROMETHEUS / "tests").glob("*.yml"))
ALERTMANAGER_CONFIG = DEPLOY / "alertmanager" / "alertmanager.yml"


def run(argv: list[str]) -> str:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, f"{' '.join(argv)} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def test_promtool_check_config() -> None:
    promtool = require("promtool", "prometheus")
    out = run([promtool, "check", "config", str(PROMETHEUS / "prometheus.yml")])
    assert "2 rule files found" in out  # the config finds both rule files


def test_promtool_check_rules() -> None:
    promtool = require("promtool", "prometheus")
    run([promtool, "check", "rules", *map(str, RULE_FILES)])


def test_promtool_test_rules() -> None:
    promtool = require("promtool", "prometheus")
    assert RULE_TESTS, "deploy/prometheus/tests/ holds the rules' unit tests"
    run([promtool, "test", "rules", *map(str, RULE_TESTS)])


def alert_names() -> set[str]:
    groups = load_yaml(PROMETHEUS / "rules" / "alerts.yml")["groups"]
    return {rule["alert"] for group in groups for rule in group["rules"] if "alert" in rule}


def test_every_alert_has_a_firing_and_a_quiet_unit_test() -> None:
    fires: dict[str, set[str]] = {}
    quiet: set[str] = set()
    for path in RULE_TESTS:
        for case in load_yaml(path)["tests"]:
            for check in case.get("alert_rule_test", []):
                expected = check.get("exp_alerts") or []
                if expected:
                    levels = {alert["exp_labels"]["severity"] for alert in expected}
                    fires.setdefault(check["alertname"], set()).update(levels)
                else:
                    quiet.add(check["alertname"])
    names = alert_names()
    assert set(fires) == names, f"alerts with no firing unit test: {names - set(fires)}"
    assert quiet >= names, f"alerts with no must-not-fire unit test: {names - quiet}"
    # An alert defined at two severities is tested at both.
    groups = load_yaml(PROMETHEUS / "rules" / "alerts.yml")["groups"]
    for group in groups:
        for rule in group["rules"]:
            if "alert" in rule:
                assert rule["labels"]["severity"] in fires[rule["alert"]], rule["alert"]


def test_every_alert_says_what_it_means_and_what_to_do() -> None:
    groups = load_yaml(PROMETHEUS / "rules" / "alerts.yml")["groups"]
    for rule in (r for g in groups for r in g["rules"] if "alert" in r):
        assert rule["labels"]["severity"] in {"critical", "warning"}, rule["alert"]
        assert set(rule["annotations"]) == {"summary", "description", "runbook"}, rule["alert"]


def test_the_readme_describes_every_alert() -> None:
    readme = (DEPLOY.parent / "README.md").read_text()
    missing = sorted(name for name in alert_names() if name not in readme)
    assert not missing, f"the README's Monitoring section does not describe {missing}"


def test_amtool_check_config() -> None:
    amtool = require("amtool", "prometheus-alertmanager")
    out = run([amtool, "check-config", str(ALERTMANAGER_CONFIG)])
    assert "SUCCESS" in out


@pytest.mark.parametrize(
    ("labels", "receiver"),
    [
        (["alertname=AnomalyRateAboveExpected", "model=m", "severity=critical"], "pager"),
        (["alertname=AnomalyRateAboveExpected", "model=m", "severity=warning"], "tickets"),
        (["alertname=AnomalyDetected", "model=m", "host=web-01", "severity=critical"], "pager"),
        (["alertname=AnomalyDetected", "model=m", "host=web-01", "severity=warning"], "tickets"),
        (["alertname=SomethingElse"], "default"),
    ],
)
def test_alertmanager_routes_by_severity(labels: list[str], receiver: str) -> None:
    amtool = require("amtool", "prometheus-alertmanager")
    argv = [amtool, "config", "routes", "test", f"--config.file={ALERTMANAGER_CONFIG}", *labels]
    assert run(argv).strip() == receiver


def test_alertmanager_groups_per_model_and_key_and_inhibits_warnings() -> None:
    config = load_yaml(ALERTMANAGER_CONFIG)
    route = config["route"]
    assert route["group_by"] == ["alertname", "model"]
    for child in route["routes"]:
        [per_key] = child["routes"]
        assert per_key["matchers"] == ['alertname="AnomalyDetected"']
        assert per_key["group_by"] == ["alertname", "model", "host"]
    by_source = {tuple(rule["source_matchers"]): rule for rule in config["inhibit_rules"]}
    criticals = by_source[('severity="critical"',)]
    assert criticals["target_matchers"][0] == 'severity="warning"'
    assert criticals["equal"] == ["alertname", "model"]
    receivers = {r["name"]: r for r in config["receivers"]}
    assert set(receivers) == {"default", "pager", "tickets"}
    for name, receiver in receivers.items():
        [hook] = receiver["webhook_configs"]
        assert hook["url"].endswith("/" + name) and hook["send_resolved"] is True


def test_rule_tests_reference_the_shipped_rule_files() -> None:
    for path in RULE_TESTS:
        referenced = {(path.parent / f).resolve() for f in load_yaml(path)["rule_files"]}
        assert referenced == {Path(f).resolve() for f in RULE_FILES}, path
