"""Fixtures for the service: an app over the session's tiny model, with a sink that records."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from service.alerts import Alert, AlertPolicy
from service.config import ServiceConfig

ADMIN = "admin-secret"


class RecordingSink:
    """An alert sink that keeps what it was sent (a real sink's interface, no network)."""

    name = "recording"

    def __init__(self) -> None:
        self.alerts: list[Alert] = []
        self.lock = threading.Lock()

    def send(self, alerts: Sequence[Alert]) -> None:
        with self.lock:
            self.alerts.extend(alerts)


def make_app(bundle_dir: Path, **settings: Any):  # type: ignore[no-untyped-def]
    from service.app import create_app

    sink = RecordingSink()
    config = ServiceConfig(models={"tiny": str(bundle_dir)}, **{"admin_token": ADMIN, **settings})
    app = create_app(config, metrics_registry=CollectorRegistry(), sinks=[sink])
    return app, sink


@pytest.fixture(scope="module")
def service(bundle_dir: Path) -> Iterator[tuple[Any, RecordingSink]]:
    app, sink = make_app(
        bundle_dir,
        alerts=AlertPolicy(group_by=("host",), fire_after=2, window=3, resolve_after=3),
        passthrough_fields=("id",),
        max_batch_records=500,
    )
    yield app, sink
    app.extensions["anomaly"].dispatcher.stop()


@pytest.fixture
def client(service):  # type: ignore[no-untyped-def]
    return service[0].test_client()
