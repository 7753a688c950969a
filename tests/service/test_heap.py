"""A server worker's heap is frozen once its app is built, out of the collector's passes, and
given back to the collector when a model is replaced (``service.heap``). Each test unfreezes
the test process's heap as it ends."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from service.config import ServiceConfig
from service.heap import FrozenHeap
from tests.conftest import normal_records
from tests.service.conftest import ADMIN


class _Cycle:
    """Garbage only the collector frees: it refers to itself."""

    def __init__(self) -> None:
        self.me = self


@pytest.fixture(autouse=True)
def _thawed() -> Iterator[None]:
    yield
    gc.unfreeze()


def test_what_was_frozen_is_collected_once_thawed_and_frozen_again_when_settled() -> None:
    now = [0.0]
    heap = FrozenHeap(settle_seconds=60.0, clock=lambda: now[0])
    held = _Cycle()
    heap.freeze()
    assert gc.get_freeze_count() > 0
    gone = weakref.ref(held)
    del held
    gc.collect()
    assert gone() is not None  # frozen: no pass sees it

    heap.thaw()  # a model replaced
    assert gc.get_freeze_count() == 0
    gc.collect()
    assert gone() is None
    now[0] = 59.0
    heap.settle()
    assert gc.get_freeze_count() == 0  # requests that hold the old model may still run
    now[0] = 60.0
    heap.settle()
    assert gc.get_freeze_count() > 0
    frozen = gc.get_freeze_count()
    heap.settle()  # once
    assert gc.get_freeze_count() == frozen


def test_a_worker_app_freezes_its_heap_and_a_reload_thaws_it(bundle_dir: Path) -> None:
    from service.app import create_app

    config = ServiceConfig(models={"tiny": str(bundle_dir)}, admin_token=ADMIN)
    app = create_app(config, metrics_registry=CollectorRegistry(), sinks=[], freeze_heap=True)
    try:
        assert gc.get_freeze_count() > 0
        client = app.test_client()
        answer = client.post("/v1/models/tiny/score", json={"records": normal_records(2)})
        assert answer.status_code == 200 and gc.get_freeze_count() > 0
        auth = {"Authorization": f"Bearer {ADMIN}"}
        assert client.post("/v1/models/tiny/reload", json={}, headers=auth).status_code == 200
        assert gc.get_freeze_count() == 0  # until the old model's requests have ended
    finally:
        app.extensions["anomaly"].dispatcher.stop()
