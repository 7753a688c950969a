"""The Kubernetes manifests, which cannot be applied here: Deployment, Service, HPA, PDB and
ConfigMap against the official JSON schemas that kubernetes-validate ships (generated from
Kubernetes' OpenAPI; strict, so an unknown or misspelt field fails), the Prometheus Operator's
ServiceMonitor and PrometheusRule against minimal schemas in tests/deploy/schemas/ (the
operator publishes its schemas only inside its CRDs), and all of them against each other and
the service.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest

from service.cli import GRACEFUL_TIMEOUT_S
from service.config import load_config
from service.openapi import openapi_document
from tests.deploy.conftest import (
    DEPLOY,
    alerts_job,
    dockerfile_user,
    load_yaml,
    load_yaml_all,
    schema_check,
)

K8S = DEPLOY / "k8s"
OPERATOR = K8S / "prometheus-operator"
#: The oldest Kubernetes the manifests promise to work on, and the newest schema shipped.
K8S_VERSIONS = ("1.27.0", kubernetes_validate.utils.latest_version())


def k8s_objects(directory: Path) -> dict[str, dict[str, Any]]:
    objects = {}
    for path in sorted(directory.glob("*.yaml")):
        if path.name != "kustomization.yaml":
            for doc in load_yaml_all(path):
                objects[doc["kind"]] = doc
    return objects


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_k8s_manifests_match_the_kubernetes_schemas(version: str) -> None:
    objects = k8s_objects(K8S)
    assert set(objects) == {
        "ConfigMap",
        "Deployment",
        "Service",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
    }
    for kind, doc in objects.items():
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(
                f"{kind} is not valid Kubernetes {version}: {exc.message} at {list(exc.path)}"
            )


def test_operator_resources_match_their_schemas_and_the_rules() -> None:
    objects = k8s_objects(OPERATOR)
    schema_check(objects["ServiceMonitor"], "servicemonitor.schema.json")
    schema_check(objects["PrometheusRule"], "prometheusrule.schema.json")
    rule_files = [
        DEPLOY / "prometheus" / "rules" / name for name in ("recording.yml", "alerts.yml")
    ]
    groups = [group for path in rule_files for group in load_yaml(path)["groups"]]
    assert objects["PrometheusRule"]["spec"]["groups"] == groups, (
        "deploy/k8s/prometheus-operator/prometheusrule.yaml differs from "
        "deploy/prometheus/rules/*.yml; copy the groups over"
    )


@pytest.mark.parametrize("directory", [K8S, OPERATOR])
def test_kustomizations_list_every_manifest(directory: Path) -> None:
    listed = load_yaml(directory / "kustomization.yaml")["resources"]
    present = sorted(p.name for p in directory.glob("*.yaml") if p.name != "kustomization.yaml")
    assert sorted(listed) == present


def test_k8s_objects_fit_together_and_with_the_service() -> None:
    objects = k8s_objects(K8S) | k8s_objects(OPERATOR)
    deployment, service = objects["Deployment"], objects["Service"]
    pod = deployment["spec"]["template"]
    labels = pod["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert service["spec"]["selector"].items() <= labels.items()
    assert "replicas" not in deployment["spec"], "the HPA owns the replica count"

    hpa, pdb = objects["HorizontalPodAutoscaler"], objects["PodDisruptionBudget"]
    assert hpa["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    assert (
        hpa["spec"]["minReplicas"] >= 2 and pdb["spec"]["minAvailable"] < hpa["spec"]["minReplicas"]
    )
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()

    [container] = pod["spec"]["containers"]
    [port] = container["ports"]
    [service_port] = service["spec"]["ports"]
    assert service_port["targetPort"] == port["name"] == "http"
    paths = set(openapi_document()["paths"])
    # Not an HTTP request: one waits behind every batch queued on a worker (a load helper's
    # 100 batches of 10,000 records: probes timed out at 60 s), and gunicorn restarts a stuck
    # worker itself.
    assert container["livenessProbe"]["tcpSocket"]["port"] == "http"
    assert "httpGet" not in container["livenessProbe"]
    assert container["startupProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz" in paths
    for each in [*pod["spec"]["initContainers"], container]:
        assert {"cpu", "memory"} <= set(each["resources"]["requests"]), each["name"]
        assert each["securityContext"]["readOnlyRootFilesystem"] is True
    security = pod["spec"]["securityContext"]
    assert security["runAsNonRoot"] is True
    assert str(security["runAsUser"]) == dockerfile_user().split(":")[0]
    # A stopping pod pauses while its endpoints go, then drains: the grace period covers both.
    command = container["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep"
    grace = pod["spec"]["terminationGracePeriodSeconds"]
    assert grace > int(command[1]) + GRACEFUL_TIMEOUT_S
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert {"/models", "/tmp"} <= mounts  # a read-only root needs a writable /tmp

    monitor = objects["ServiceMonitor"]
    assert (
        monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    )
    [endpoint] = monitor["spec"]["endpoints"]
    assert endpoint["port"] == service_port["name"] and endpoint["path"] == "/metrics"
    # The operator names the job after the Service, which is what the alerts watch.
    assert service["metadata"]["name"] == alerts_job()


def test_configmap_settings_are_service_settings() -> None:
    data = k8s_objects(K8S)["ConfigMap"]["data"]
    config = load_config(env={k: v for k, v in data.items() if k.startswith("ANOMALY_")})
    assert config.alerts.group_by == ("host",)
    assert config.tf_threads == 1
    entrypoint_settings = {"WORKERS", "MODEL_NAME", "MODEL_DIR", "HOST", "PORT"}
    assert {k for k in data if not k.startswith("ANOMALY_")} <= entrypoint_settings
