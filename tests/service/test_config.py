"""Settings: file, then ANOMALY_* environment variables, then flags; typos are errors."""

from __future__ import annotations

import pytest

from detector.errors import ConfigError
from service.config import load_config


def test_file_then_environment_then_overrides(tmp_path) -> None:
    path = tmp_path / "service.toml"
    path.write_text(
        'max_batch_records = 100\nadmin_token = "from-file"\n'
        '[models]\ndefault = "m/default"\n[alerts]\nfire_after = 4\ngroup_by = ["host"]\n'
    )
    env = {
        "ANOMALY_ADMIN_TOKEN": "from-env",
        "ANOMALY_ALERTS__WINDOW": "20",
        "ANOMALY_PASSTHROUGH_FIELDS": "id,ts",
        "HOME": "/root",
    }
    config = load_config(path, env=env, overrides={"max_batch_records": 50})
    assert config.admin_token == "from-env"
    assert config.max_batch_records == 50
    assert config.models == {"default": "m/default"}
    assert config.alerts.fire_after == 4 and config.alerts.window == 20
    assert config.alerts.group_by == ("host",)
    assert config.passthrough_fields == ("id", "ts")


def test_json_values_in_environment(tmp_path) -> None:
    config = load_config(
        env={"ANOMALY_MODELS": '{"a": "x", "b-2": "y"}', "ANOMALY_ALERT_LOG": "false"}
    )
    assert config.models == {"a": "x", "b-2": "y"} and config.alert_log is False


@pytest.mark.parametrize(
    ("env", "needle"),
    [
        ({"ANOMALY_MAX_BATCH": "5"}, "unknown setting(s) ['max_batch']"),
        ({"ANOMALY_MODELS": '{"Bad Name": "x"}'}, "must match [a-z0-9_-]"),
        ({"ANOMALY_MAX_BATCH_RECORDS": "0"}, "at least 1"),
        ({"ANOMALY_ALERT_LOG": "maybe"}, "true or false"),
        ({"ANOMALY_ALERTS__FIRE_AFTER": "50"}, "alerts"),
    ],
)
def test_bad_settings_name_the_problem(env, needle) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(env=env)
    assert needle in str(err.value)


def test_missing_or_broken_files(tmp_path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.toml", env={})
    broken = tmp_path / "bad.toml"
    broken.write_text("a = [")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(broken, env={})
