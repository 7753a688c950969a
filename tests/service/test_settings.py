"""Settings as a pydantic-settings model (#19): the same keys, variables and layering as
before, strict types from files, and errors that name the setting and the fix."""

from __future__ import annotations

import json

import pytest

from detector.errors import ConfigError
from service.alert_policy import AlertPolicy
from service.config import ServiceConfig, load_config


def test_a_config_built_in_code_ignores_the_environment(monkeypatch) -> None:
    monkeypatch.setenv("ANOMALY_SCORING_TOKEN", "from-the-environment")
    monkeypatch.setenv("ANOMALY_MAX_BATCH_RECORDS", "3")
    config = ServiceConfig(max_batch_records=50)
    assert config.scoring_token is None and config.max_batch_records == 50
    assert load_config(env=None).scoring_token == "from-the-environment"


def test_tables_and_lists_from_variables() -> None:
    config = load_config(
        env={
            "ANOMALY_MODELS__DEFAULT": "m/default",
            "ANOMALY_ALERTS__GROUP_BY": '["host"]',
            "ANOMALY_ALERTS__SEVERITIES": '{"warning": 0.01, "critical": 1e-4}',
            "ANOMALY_MODEL_ALERTS__DEFAULT__FIRE_AFTER": "2",
            "ANOMALY_PASSTHROUGH_FIELDS": '["id", "ts"]',
            "ANOMALY_ADMIN_TOKEN": "",
            "ANOMALY_TF_THREADS": "2",
        }
    )
    assert config.models == {"default": "m/default"}
    assert config.alerts.group_by == ("host",)
    assert config.alerts.severities == (("critical", 1e-4), ("warning", 0.01))
    assert config.policy_for("default").fire_after == 2
    assert config.passthrough_fields == ("id", "ts")
    assert config.admin_token is None and config.tf_threads == 2


def test_a_json_file_and_policies_built_in_code(tmp_path) -> None:
    path = tmp_path / "service.json"
    path.write_text(json.dumps({"models": {"a": "m/a"}, "alerts": {"fire_after": 2}}))
    assert load_config(path, env={}).alerts.fire_after == 2
    policy = AlertPolicy(group_by=("host",))
    assert ServiceConfig(alerts=policy).alerts is policy
    path.write_text("[1, 2]")
    with pytest.raises(ConfigError, match="must hold a JSON object"):
        load_config(path, env={})


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("alert_log = 1", "alert_log must be true or false, got 1"),
        ("max_batch_records = true", "max_batch_records must be a whole number"),
        ("request_read_timeout = 4000", "request_read_timeout must be at most 3600"),
        ("alert_retries = -1", "alert_retries must be at least 0"),
        ('typo = 1\n[models]\na = "x"', "unknown setting(s) ['typo']; the settings are: "),
        ("[alerts]\nwindow = 0", "alerts: alert policy 'window' must be a positive integer"),
        ("[model_alerts.b]\nwindow = 2", "model_alerts names 'b', which is not a configured"),
        ("models = 3\nalert_queue_size = 0", "models must be a table, got 3; alert_queue_size"),
    ],
)
def test_file_values_are_strict_and_errors_name_the_setting(tmp_path, text, needle) -> None:
    path = tmp_path / "service.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_config(path, env={})
    assert needle in str(err.value)


def test_command_line_flags_win_and_are_checked_too() -> None:
    config = load_config(env={"ANOMALY_MODELS": '{"a": "x"}'}, overrides={"models": {"b": "y"}})
    assert config.models == {"a": "x", "b": "y"}
    with pytest.raises(ConfigError, match=r"unknown setting\(s\) \['bogus'\]"):
        load_config(env={}, overrides={"bogus": 1})


def test_settings_are_described_by_their_docstrings() -> None:
    fields = ServiceConfig.model_fields
    assert "413" in (fields["max_batch_records"].description or "")
    assert ServiceConfig.model_config["env_prefix"] == "ANOMALY_"
    assert ServiceConfig.model_config["env_nested_delimiter"] == "__"
