"""The real production server: `anomaly serve` under gunicorn with 2 workers on 127.0.0.1."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import normal_records
from tests.processes import free_port, stop
from tests.service.conftest import ADMIN

RECORDS = normal_records(20)


def call(
    url: str, body: Any = None, token: str | None = None, timeout: float = 30
) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method="POST" if data is not None else "GET")
    request.add_header("Content-Type", "application/json")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            raw = response.read()
            status = response.status
    except urllib.error.HTTPError as exc:
        raw, status = exc.read(), exc.code
        exc.close()
    text = raw.decode()
    try:
        return status, json.loads(text)
    except json.JSONDecodeError:
        return status, text


@pytest.fixture(scope="module")
def server(bundle_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = free_port()
    log_path = tmp_path_factory.mktemp("server") / "server.log"
    exe = Path(sys.executable).with_name("anomaly")
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    env.update(ANOMALY_ADMIN_TOKEN=ADMIN, ANOMALY_ALERT_LOG="false")
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [
                str(exe),
                "serve",
                "--model",
                f"tiny={bundle_dir}",
                "--port",
                str(port),
                "--workers",
                "2",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if process.poll() is not None:
                pytest.fail(f"server exited early:\n{log_path.read_text()}")
            try:
                if call(f"{base}/readyz", timeout=2)[0] == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"server not ready in 120 s:\n{log_path.read_text()}")
            time.sleep(0.2)
        yield base
    finally:
        stop(process)


def scored_total(base: str) -> float:
    status, text = call(f"{base}/metrics")
    assert status == 200
    for line in text.splitlines():
        if line.startswith('anomaly_records_scored_total{model="tiny"}'):
            return float(line.split()[-1])
    return 0.0


def test_scores_end_to_end(server: str) -> None:
    status, body = call(f"{server}/v1/models/tiny/score", {"records": RECORDS[:3]})
    assert status == 200
    assert body["counts"]["scored"] == 3
    assert all("anomaly_score" in r for r in body["results"])


def test_metrics_add_up_across_workers(server: str) -> None:
    before = scored_total(server)
    pids = set()
    for i in range(40):
        status, _ = call(f"{server}/v1/models/tiny/score", {"records": [RECORDS[i % 20]]})
        assert status == 200
    # Whichever worker answers the scrape, the total is the sum over both workers.
    totals = {scored_total(server) for _ in range(6)}
    assert totals == {before + 40}
    status, text = call(f"{server}/metrics")
    for line in text.splitlines():
        if line.startswith("anomaly_requests_in_flight"):
            pids.add(line)
    assert pids, "the in-flight gauge is exported"


def test_reload_under_traffic_fails_no_request(
    server: str, bundle_dir: Path, tmp_path: Path
) -> None:
    from detector.bundle import set_target_fpr

    stricter = tmp_path / "stricter"
    shutil.copytree(bundle_dir, stricter)
    new_threshold = set_target_fpr(stricter, 0.002).calibrator.threshold
    statuses: list[int] = []
    stop = threading.Event()

    def traffic() -> None:
        while not stop.is_set():
            statuses.append(call(f"{server}/v1/models/tiny/score", {"records": RECORDS[:5]})[0])

    thread = threading.Thread(target=traffic)
    thread.start()
    try:
        while len(statuses) < 5:
            time.sleep(0.01)
        status, body = call(f"{server}/v1/models/tiny/reload", {"path": str(stricter)}, ADMIN)
        assert status == 200, body
        # Every worker follows the reload: ten answers in a row show the new threshold.
        deadline = time.monotonic() + 60
        in_a_row = 0
        while in_a_row < 10 and time.monotonic() < deadline:
            _, info = call(f"{server}/v1/models/tiny")
            in_a_row = in_a_row + 1 if info["threshold"] == pytest.approx(new_threshold) else 0
        assert in_a_row == 10
        # Workers that followed the reload publish it too: the threshold gauge agrees.
        _, text = call(f"{server}/metrics")
        gauge = [line for line in text.splitlines() if line.startswith("anomaly_threshold{")]
        assert gauge and float(gauge[0].split()[-1]) == pytest.approx(new_threshold)
    finally:
        stop.set()
        thread.join(timeout=60)
        call(f"{server}/v1/models/tiny/reload", {"path": str(bundle_dir)}, ADMIN)
    assert len(statuses) >= 5
    assert set(statuses) == {200}
