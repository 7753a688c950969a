"""The container and the compose stack, which cannot be built or started here (no Docker
engine): docker-compose.yml against the compose-spec schema that check-jsonschema ships and
against the configs it mounts; the Dockerfile's structure and build context; the entry point's
behaviour with a stand-in ``anomaly`` command. test_stack.py runs the entry point for real.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from service.config import load_config
from tests.deploy.conftest import (
    DEPLOY,
    alerts_job,
    dockerfile_instructions,
    dockerfile_user,
    final_stage,
    load_yaml,
)

COMPOSE = DEPLOY / "docker-compose.yml"


def test_compose_file_matches_the_compose_spec() -> None:
    checker = Path(sys.executable).with_name("check-jsonschema")
    done = subprocess.run(
        [str(checker), "--builtin-schema", "vendor.compose-spec", str(COMPOSE)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def interpolate(value: str) -> str:
    """Compose's ${NAME:-default}, with nothing set in the environment."""
    return re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", value)


def test_compose_services_fit_together() -> None:
    compose = load_yaml(COMPOSE)
    services = compose["services"]
    assert set(services) == {"anomaly", "prometheus", "alertmanager", "alert-receiver", "grafana"}

    build = services["anomaly"]["build"]
    assert (COMPOSE.parent / build["context"] / build["dockerfile"]).resolve() == (
        DEPLOY / "Dockerfile"
    )
    for name, service in services.items():
        if "image" in service and name != "anomaly":
            assert re.search(r":v?\d+\.\d+", service["image"]), f"{name}: pin the image version"
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (COMPOSE.parent / source).exists(), f"{name} mounts missing {source}"
            else:
                assert source in compose["volumes"], f"{name}: undeclared volume {source}"

    # Prometheus scrapes the compose services where they listen, and alerts the Alertmanager.
    prometheus = load_yaml(DEPLOY / "prometheus" / "prometheus.yml")
    jobs = {
        job["job_name"]: job["static_configs"][0]["targets"] for job in prometheus["scrape_configs"]
    }
    environment = services["anomaly"]["environment"]
    assert jobs[alerts_job()] == [f"anomaly:{environment.get('PORT', '8000')}"]
    assert jobs["alertmanager"] == ["alertmanager:9093"]
    [managers] = prometheus["alerting"]["alertmanagers"]
    assert managers["static_configs"] == [{"targets": ["alertmanager:9093"]}]
    assert environment["ANOMALY_ALERTMANAGER_URL"] == "http://alertmanager:9093"
    assert services["anomaly"]["ports"] == ["8000:8000"]

    # Alertmanager's webhooks reach the example receiver on the port it listens on.
    receiver = services["alert-receiver"]
    port = receiver["command"][receiver["command"].index("--port") + 1]
    am = load_yaml(DEPLOY / "alertmanager" / "alertmanager.yml")
    for hook in (h for r in am["receivers"] for h in r["webhook_configs"]):
        assert hook["url"].startswith(f"http://alert-receiver:{port}/")
    script = receiver["volumes"][0].split(":")[1]
    assert receiver["command"][1] == script

    # Its ANOMALY_* settings are settings the service knows.
    settings = {k: interpolate(str(v)) for k, v in environment.items() if k.startswith("ANOMALY_")}
    config = load_config(env=settings)
    assert config.alerts.group_by == ("host",) and config.admin_token is None
    assert "/models" in [v.split(":")[1] for v in services["anomaly"]["volumes"]]
    assert environment["TRAIN_DATA"] == "/app/data/train.csv"  # shipped in the image


def test_dockerfile_runs_gunicorn_as_a_non_root_user_with_a_health_check() -> None:
    stage = final_stage()
    ops = [op for op, _ in stage]
    user = dockerfile_user()
    uid, _, gid = user.partition(":")
    assert uid.isdigit() and int(uid) > 0 and (not gid or int(gid) > 0), user
    assert ops.index("USER") < ops.index("ENTRYPOINT")
    [healthcheck] = [arg for op, arg in stage if op == "HEALTHCHECK"]
    assert "/readyz" in healthcheck and "--timeout" in healthcheck
    assert ("EXPOSE", "8000") in stage
    [entrypoint] = [json.loads(arg) for op, arg in stage if op == "ENTRYPOINT"]
    assert entrypoint == ["anomaly-entrypoint"]
    copies = " ".join(arg for op, arg in stage if op == "COPY")
    assert "deploy/docker/entrypoint.sh /usr/local/bin/anomaly-entrypoint" in copies
    # Small: a slim base, and the build stage's tools left behind.
    args = dict(
        arg.split("=", 1) for op, arg in dockerfile_instructions() if op == "ARG" and "=" in arg
    )
    froms = [arg for op, arg in dockerfile_instructions() if op == "FROM"]
    assert len(froms) == 2 and "--from=build" in copies
    for image in froms:
        image = image.split()[0].replace("${PYTHON_IMAGE}", args["PYTHON_IMAGE"])
        assert re.fullmatch(r"python:3\.11-slim-\w+", image), image


def dockerignore_allows(path: str) -> bool:
    """Whether deploy/Dockerfile.dockerignore (a deny-all list with exceptions) lets ``path``
    into the build context."""
    allowed = False
    for line in (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negate, pattern = line.startswith("!"), line.lstrip("!").rstrip("/")
        matches = pattern == "*" or path == pattern or path.startswith(pattern + "/")
        if matches:
            allowed = negate
    return allowed


def test_dockerfile_copies_only_what_exists_and_the_context_keeps() -> None:
    repo = DEPLOY.parent
    for op, arg in dockerfile_instructions():
        if op != "COPY" or "--from=" in arg:
            continue
        *sources, _destination = [a for a in arg.split() if not a.startswith("--")]
        for source in sources:
            assert (repo / source).exists(), source
            assert dockerignore_allows(source), f"{source} is excluded from the build context"
    assert not dockerignore_allows(".venv") and not dockerignore_allows("data/models")
    assert not dockerignore_allows("tests")


@pytest.fixture
def stub_anomaly(tmp_path: Path) -> tuple[dict[str, str], Path]:
    """An ``anomaly`` on PATH that records its arguments; ``train`` writes a manifest."""
    bin_dir, calls = tmp_path / "bin", tmp_path / "calls.txt"
    bin_dir.mkdir()
    stub = bin_dir / "anomaly"
    stub.write_text(
        "#!/bin/sh\n"
        'echo "$*" >> "$STUB_CALLS"\n'
        'if [ "$1" = train ]; then mkdir -p "$4" && echo {} > "$4/manifest.json"; fi\n'
    )
    stub.chmod(0o755)
    env = {
        "PATH": f"{bin_dir}:/usr/bin:/bin",
        "STUB_CALLS": str(calls),
        "MODEL_DIR": str(tmp_path / "models" / "default"),
    }
    return env, calls


def entrypoint(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    script = DEPLOY / "docker" / "entrypoint.sh"
    assert os.access(script, os.X_OK), "entrypoint.sh must be executable"
    return subprocess.run(
        [str(script), *args], env=env, capture_output=True, text=True, timeout=30, check=False
    )


def test_entrypoint_without_a_model_or_data_says_what_to_do(stub_anomaly: Any) -> None:
    env, calls = stub_anomaly
    done = entrypoint(env)
    assert done.returncode == 2
    assert "mount one there, or set TRAIN_DATA" in done.stderr
    assert not calls.exists()


def test_entrypoint_trains_when_there_is_no_model_then_serves(stub_anomaly: Any) -> None:
    env, calls = stub_anomaly
    env = {**env, "TRAIN_DATA": "/data/train.csv", "TRAIN_ARGS": "--epochs 3 --quiet"}
    assert entrypoint(env, "--connections", "200").returncode == 0
    model = env["MODEL_DIR"]
    assert calls.read_text().splitlines() == [
        f"train /data/train.csv --out {model} --epochs 3 --quiet",
        f"serve --model default={model} --host 0.0.0.0 --port 8000 --workers 2 --connections 200",
    ]
    calls.unlink()
    # The second start finds the bundle and only serves.
    assert entrypoint({**env, "MODEL_NAME": "m", "PORT": "9000", "WORKERS": "3"}).returncode == 0
    assert calls.read_text().splitlines() == [
        f"serve --model m={model} --host 0.0.0.0 --port 9000 --workers 3"
    ]


def test_the_image_finds_a_model_named_by_model_name_alone(stub_anomaly: Any) -> None:
    # The image's ENV set MODEL_DIR=/models/default, so MODEL_NAME=payments with a bundle
    # mounted at /models/payments (as the entry point documents) looked in /models/default.
    image_env: dict[str, str] = {}
    for op, arg in final_stage():
        if op == "ENV":
            image_env.update(item.split("=", 1) for item in shlex.split(arg))
    env = {k: v for k, v in stub_anomaly[0].items() if k != "MODEL_DIR"}
    done = entrypoint({**image_env, **env, "MODEL_NAME": "payments"})
    assert done.returncode == 2 and "no model bundle in /models/payments" in done.stderr


@pytest.mark.parametrize(
    ("settings", "args"),
    [
        ({"ANOMALY_CONFIG": "/etc/anomaly/service.toml"}, ()),
        ({"ANOMALY_MODELS": '{"a": "/models/a", "b": "/models/b"}'}, ()),
        ({"ANOMALY_MODELS__A": "/models/a"}, ()),
        ({}, ("--config", "/etc/anomaly/service.toml")),
    ],
)
def test_the_image_serves_a_fleet_its_settings_name(
    stub_anomaly: Any, settings: dict[str, str], args: tuple[str, ...]
) -> None:
    # A fleet's models in ANOMALY_CONFIG's file, with no /models/default: the entry point
    # refused to start ("no model bundle in /models/default: mount one there") (a fleet helper).
    env, calls = stub_anomaly
    env = {k: v for k, v in env.items() if k != "MODEL_DIR"}
    done = entrypoint({**env, **settings}, *args)
    assert done.returncode == 0, done.stderr
    served = " ".join(["serve --host 0.0.0.0 --port 8000 --workers 2", *args])
    assert calls.read_text().splitlines() == [served]


def test_a_default_bundle_is_still_served_beside_the_settings_models(stub_anomaly: Any) -> None:
    env, calls = stub_anomaly
    Path(env["MODEL_DIR"]).mkdir(parents=True)
    (Path(env["MODEL_DIR"]) / "manifest.json").write_text("{}")
    assert entrypoint({**env, "ANOMALY_CONFIG": "/etc/anomaly/service.toml"}).returncode == 0
    assert calls.read_text().startswith(f"serve --model default={env['MODEL_DIR']} ")


def test_entrypoint_runs_another_command_instead(stub_anomaly: Any) -> None:
    env, calls = stub_anomaly
    assert entrypoint(env, "anomaly", "info", "/models/x").returncode == 0
    assert calls.read_text().splitlines() == ["info /models/x"]
    assert entrypoint(env, "echo", "hello").stdout == "hello\n"


def test_compose_gives_the_service_its_graceful_timeout_to_stop() -> None:
    """docker compose stops a container with SIGTERM, then SIGKILL after 10 s unless told: the
    server gives its workers 30 s to finish their requests and send their queued alerts (half
    of it), so a stop (``docker compose down``, a redeploy) cut a slow batch and the alerts
    owed (found by a helper probing restarts)."""
    from service.cli import GRACEFUL_TIMEOUT_S

    service = load_yaml(COMPOSE)["services"]["anomaly"]
    grace = service.get("stop_grace_period", "10s")
    assert re.fullmatch(r"\d+s", grace), grace
    assert int(grace[:-1]) > GRACEFUL_TIMEOUT_S
