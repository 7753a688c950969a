"""Settings: file, then ANOMALY_* environment variables, then flags; typos are errors."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

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


def test_a_json_file_naming_a_key_twice_is_refused_as_toml_is(tmp_path) -> None:
    # JSON kept the last without a word: model "a" was served from the other bundle.
    path = tmp_path / "service.json"
    path.write_text('{"models": {"a": "m/one", "a": "m/two"}, "alerts": {"window": 3}}')
    with pytest.raises(ConfigError, match=r"names \['a'\] more than once"):
        load_config(path, env={})


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
        # Were the sinks' own checks: one traceback per gunicorn worker as it booted.
        ({"ANOMALY_WEBHOOK_URL": "hooks.example.com/x"}, "webhook_url: 'hooks.example.com/x' is"),
        ({"ANOMALY_ALERTMANAGER_URL": "ftp://am:9093"}, "alertmanager_url: 'ftp://am:9093' is"),
        ({"ANOMALY_EXTERNAL_URL": "http://"}, "external_url: 'http://' is not an http"),
    ],
)
def test_bad_settings_name_the_problem(env, needle) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(env=env)
    assert needle in str(err.value)


def test_missing_or_broken_files(tmp_path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.toml", env={})
    with pytest.raises(ConfigError, match="is not a regular file"):  # it was 'does not exist'
        load_config(Path(os.devnull), env={})
    broken = tmp_path / "bad.toml"
    broken.write_text("a = [")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(broken, env={})


def test_anomaly_config_names_the_settings_file(tmp_path) -> None:
    # The README documents ANOMALY_CONFIG; it was read as a setting named 'config' and refused.
    path = tmp_path / "service.toml"
    path.write_text('max_batch_records = 7\n[models]\ndefault = "m/default"\n')
    config = load_config(env={"ANOMALY_CONFIG": str(path), "ANOMALY_ADMIN_TOKEN": "t"})
    assert config.max_batch_records == 7
    assert config.models == {"default": "m/default"}
    assert config.admin_token == "t"


def test_anomaly_config_reaches_anomaly_serve(tmp_path, monkeypatch, capsys) -> None:
    # `anomaly serve` with no --config reads the file too: a problem in it is reported as the
    # file's (before any server starts), not as an unknown setting.
    from service.cli import main

    path = tmp_path / "service.toml"
    path.write_text('[models]\n"Bad Name" = "m/default"\n')
    monkeypatch.setenv("ANOMALY_CONFIG", str(path))
    assert main(["serve"]) == 2
    error = capsys.readouterr().err
    assert "'Bad Name' must match" in error
    assert "unknown setting" not in error


def test_a_model_name_given_twice_is_refused(tmp_path, capsys) -> None:
    """``--model x=a --model x=b`` served b alone, and said nothing of a."""
    from service.cli import main

    argv = ["serve", "--model", f"x={tmp_path}/a", "--model", f"x={tmp_path}/b"]
    assert main(argv) == 2
    assert f"--model names 'x' twice ({tmp_path}/a and {tmp_path}/b)" in capsys.readouterr().err


def test_a_model_with_an_empty_path_is_refused(tmp_path) -> None:
    # It was the working directory: "no model bundle at ." in every worker's log.
    path = tmp_path / "service.toml"
    path.write_text('[models]\na = "/m/a"\nb = ""\nc = " "\n')
    with pytest.raises(ConfigError, match=r"model 'b' has an empty path.*model 'c' has an empty"):
        load_config(path, env={})


def test_anomaly_serve_names_a_relative_model_path_whole(tmp_path, monkeypatch, capsys) -> None:
    # A config file's `models = {a = "models/a"}` is read from the working directory (under
    # systemd: /), and the log said "no model bundle at models/a": the folder beside the file,
    # to whoever wrote it, which was there.
    from service.cli import main
    from service.server import GunicornServer

    (tmp_path / "etc").mkdir()
    path = tmp_path / "etc" / "service.toml"
    path.write_text('[models]\na = "models/a"\n')
    monkeypatch.chdir(tmp_path)
    served: dict[str, str] = {}
    monkeypatch.setattr(
        GunicornServer, "run", lambda self: served.update(self.service_config.models)
    )
    assert main(["serve", "--config", str(path), "--port", "0", "--model", "b=m/b"]) == 0
    assert served == {"a": str(tmp_path / "models" / "a"), "b": str(tmp_path / "m" / "b")}
    assert f"serving a={tmp_path}/models/a, b={tmp_path}/m/b on" in capsys.readouterr().out


def test_the_server_deletes_only_metric_files(tmp_path, monkeypatch) -> None:
    # PROMETHEUS_MULTIPROC_DIR may name a directory that holds more than metrics: the server
    # used to rmtree it at start.
    from service.server import _on_starting

    directory = tmp_path / "shared"
    (directory / "keep").mkdir(parents=True)
    (directory / "notes.txt").write_text("not ours")
    (directory / "keep" / "counter_1.db").write_text("a subdirectory is not ours either")
    stale = ["counter_123.db", "gauge_livesum_123.db", "histogram_9.db", "gauge_mostrecent_4.db"]
    for name in stale:
        (directory / name).write_bytes(b"\0" * 8)
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(directory))
    _on_starting(None)  # gunicorn's hook, as the master runs it
    assert sorted(p.name for p in directory.iterdir()) == ["keep", "notes.txt"]
    assert (directory / "keep" / "counter_1.db").exists()
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path / "new"))
    _on_starting(None)  # a directory that does not exist yet is created
    assert (tmp_path / "new").is_dir()


def test_anomaly_serve_refuses_an_open_public_bind(tmp_path, monkeypatch, capsys) -> None:
    # Scoring is open without a token; on 0.0.0.0 that is open to the network.
    from service.cli import main

    monkeypatch.delenv("ANOMALY_SCORING_TOKEN", raising=False)
    monkeypatch.delenv("ANOMALY_ALLOW_OPEN_SCORING", raising=False)
    assert main(["serve", "--model", f"m={tmp_path}", "--host", "0.0.0.0"]) == 2
    assert "without a scoring token" in capsys.readouterr().err


def test_anomaly_serve_refuses_a_model_sync_dir_it_cannot_write(tmp_path, monkeypatch, capsys):
    # It started, and each worker logged that its reloads would reach no other worker.
    from service.cli import main

    (tmp_path / "a-file").write_text("")
    monkeypatch.setenv("ANOMALY_MODEL_SYNC_DIR", str(tmp_path / "a-file" / "sync"))
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    assert main(["serve", "--model", f"m={tmp_path}"]) == 2
    assert "model_sync_dir " in capsys.readouterr().err
    # The run's metrics folder, removed, was left named in this process's environment: every
    # later service started here failed to open its metric files.
    assert "PROMETHEUS_MULTIPROC_DIR" not in os.environ


def test_anomaly_serve_refuses_a_metrics_dir_it_cannot_use(tmp_path, monkeypatch, capsys):
    # Workers died with SIGBUS in a loop on a full one (gunicorn replaced them for good), and a
    # read-only one gave a traceback per worker before "Worker failed to boot".
    from service import metric_files
    from service.cli import main

    (tmp_path / "a-file").write_text("")
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path / "a-file" / "metrics"))
    assert main(["serve", "--model", f"m={tmp_path}"]) == 2
    err = capsys.readouterr().err
    assert "the metrics directory" in err and "point PROMETHEUS_MULTIPROC_DIR at a folder" in err
    # A read-only or unwritable one (a pod's readOnly mount) was told to "free space there".
    assert "free space" not in err, err

    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path / "metrics"))
    free = shutil.disk_usage(tmp_path).free
    monkeypatch.setattr(metric_files, "MIN_FREE_BYTES", free + 2**40)  # a disk this full
    assert main(["serve", "--model", f"m={tmp_path}"]) == 2
    err = capsys.readouterr().err
    assert "MiB free, under the" in err and "(free space there); point PROMETHEUS_MULTI" in err


def test_a_config_file_that_is_a_directory_says_so(tmp_path) -> None:
    with pytest.raises(ConfigError, match="is a directory; name the"):
        load_config(tmp_path, env={})


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--workers", "0"], "argument --workers: 0 is not in 1-1024"),
        (["--workers", "two"], "argument --workers: 'two' is not a whole number"),
        (["--port", "70000"], "argument --port: 70000 is not in 0-65535"),
        (["--timeout", "-5"], "argument --timeout: -5 is not in 1-86400"),
    ],
)
def test_anomaly_serve_refuses_counts_gunicorn_cannot_use(tmp_path, capsys, argv, message) -> None:
    # 0 workers started a server that answered nothing; port 70000 was an internal error.
    from service.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(["serve", "--model", f"m={tmp_path}", *argv])
    assert exit_.value.code == 2 and message in capsys.readouterr().err


def test_anomaly_serve_says_what_became_of_the_threads_option(tmp_path, capsys) -> None:
    # 2026-12-07 (a helper, upgrading): a unit file kept from the releases before gevent
    # workers, with `--threads 4`, got only "unrecognized arguments: --threads 4".
    from service.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(["serve", "--model", f"m={tmp_path}", "--threads", "4"])
    error = capsys.readouterr().err
    assert exit_.value.code == 2 and "--threads was removed" in error and "--workers" in error


def test_anomaly_serve_refuses_double_dash_as_an_options_value(tmp_path, capsys) -> None:
    # `--port=--` reached the command as an empty list (Python 3.11's argparse).
    from service.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(["serve", "--model", f"m={tmp_path}", "--port=--"])
    assert exit_.value.code == 2
    assert "argument --port: '--' is not a value" in capsys.readouterr().err


def test_anomaly_serve_refuses_an_address_it_cannot_listen_on(tmp_path, monkeypatch, capsys):
    """A port in use was found by gunicorn after the banner said "serving", then retried for
    five seconds and ended "Can't connect"; so was an address of another machine."""
    import socket

    from service.cli import main

    monkeypatch.setenv("ANOMALY_SCORING_TOKEN", "t")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        assert main(["serve", "--model", f"m={tmp_path}", "--port", port]) == 2
    out, err = capsys.readouterr()
    assert f"cannot listen on 127.0.0.1:{port}: Address already in use" in err
    assert "serving" not in out
    # 192.0.2.1 is TEST-NET-1 (RFC 5737): no machine's own address.
    assert main(["serve", "--model", f"m={tmp_path}", "--host", "192.0.2.1"]) == 2
    assert "no interface of this machine has that address" in capsys.readouterr().err


def test_an_ipv6_address_is_bracketed_before_its_port() -> None:
    # gunicorn read ::1:8000 as the host "::1:8000" and an empty port.
    from service.cli import bind_address

    assert bind_address("::1", 8000) == "[::1]:8000"
    assert bind_address("[::1]", 8000) == "[::1]:8000"
    assert bind_address("127.0.0.1", 8000) == "127.0.0.1:8000"
    assert bind_address("unix:/run/anomaly.sock", 8000) == "unix:/run/anomaly.sock"


def _answer_fields() -> list[str]:
    from service.schemas import RecordResult, RejectedRecord

    return list(dict.fromkeys([*RecordResult.model_fields, *RejectedRecord.model_fields]))


@pytest.mark.parametrize("name", _answer_fields())
def test_a_passthrough_field_named_like_a_field_of_the_answer_is_refused(name) -> None:
    # Echoed beside the answer's own field, a record's value was dropped where the model set
    # that field ('severity', 'index'; a rejected record's 'code'), and went out as the
    # answer's where it did not ('warming_up': 'yes' from a model that has no series, a
    # rejected record's 'anomaly_score'). Any model the server loads may set it.
    with pytest.raises(ConfigError) as err:
        load_config(env={"ANOMALY_PASSTHROUGH_FIELDS": f"id,{name}"})
    said = str(err.value)
    assert f"passthrough_fields: [{name!r}]" in said
    assert "rename" in said


def test_a_passthrough_field_spelt_unlike_the_answer_fields_is_echoed() -> None:
    # JSON tells keys apart by case and by every character: these hide nothing.
    names = ("Severity", "anomaly\u2010score", "record_index")
    config = load_config(env={"ANOMALY_PASSTHROUGH_FIELDS": ",".join(names)})
    assert config.passthrough_fields == names
