"""The shipped container setups listen on every address, so each must hand the service a
scoring token, from a Secret or the deployer's environment, and never start open."""

from __future__ import annotations

import re

import pytest

from detector.errors import ConfigError
from service.config import load_config
from tests.deploy.conftest import DEPLOY, load_yaml, load_yaml_all

ENTRYPOINT_HOST = "0.0.0.0"


def test_the_entrypoint_binds_every_address_so_the_token_matters() -> None:
    script = (DEPLOY / "docker" / "entrypoint.sh").read_text()
    assert f'--host "${{HOST:-{ENTRYPOINT_HOST}}}"' in script


def test_kubernetes_takes_the_scoring_token_from_a_required_secret() -> None:
    [deployment] = load_yaml_all(DEPLOY / "k8s" / "deployment.yaml")
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e for e in container.get("env", [])}
    reference = env["ANOMALY_SCORING_TOKEN"]["valueFrom"]["secretKeyRef"]
    assert reference["name"] and reference["key"]
    # Optional would start the pod without it, serving open (or refusing to start, unclearly).
    assert reference.get("optional", False) is False
    configmap = load_yaml(DEPLOY / "k8s" / "configmap.yaml")
    assert "ANOMALY_ALLOW_OPEN_SCORING" not in configmap["data"]


def test_compose_refuses_to_start_without_a_scoring_token() -> None:
    compose = load_yaml(DEPLOY / "docker-compose.yml")
    environment = compose["services"]["anomaly"]["environment"]
    # ${NAME:?message}: compose stops with the message when NAME is unset or empty.
    required = r"\$\{ANOMALY_SCORING_TOKEN:\?[^}]+\}"
    assert re.fullmatch(required, environment["ANOMALY_SCORING_TOKEN"])
    assert "ANOMALY_ALLOW_OPEN_SCORING" not in environment


def test_the_service_refuses_the_entrypoint_address_without_a_token() -> None:
    from service.config import check_exposure

    with pytest.raises(ConfigError, match="without a scoring token"):
        check_exposure(load_config(env={}), ENTRYPOINT_HOST)
    check_exposure(load_config(env={"ANOMALY_SCORING_TOKEN": "t"}), ENTRYPOINT_HOST)
