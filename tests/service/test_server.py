"""The real production server: `anomaly serve` under gunicorn with 2 workers on 127.0.0.1."""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import normal_records
from tests.processes import Server, call, serving
from tests.service.conftest import ADMIN

RECORDS = normal_records(20)


@pytest.fixture(scope="module")
def served(bundle_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    env = {"ANOMALY_ADMIN_TOKEN": ADMIN, "ANOMALY_ACCESS_LOG": "true"}
    with serving({"tiny": bundle_dir}, tmp_path_factory.mktemp("server"), env=env) as running:
        yield running


@pytest.fixture(scope="module")
def server(served: Server) -> str:
    return served.base


def test_each_answer_names_its_request_in_its_header_and_the_access_log(served: Server) -> None:
    # An on-call helper could not tie a 422 to anything: no id, no access log.
    import urllib.error
    import urllib.request

    def ask(request_id: str | None) -> str:
        headers = {"Content-Type": "application/json"}
        if request_id is not None:
            headers["X-Request-Id"] = request_id
        data = b'{"records": [{"host": "web-01"}]}'  # every other column missing: a 422
        url = f"{served.base}/v1/models/tiny/score"
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(urllib.request.Request(url, data, headers), timeout=30)
        with refused.value:  # the answer holds its socket until closed
            assert refused.value.code == 422
            return str(refused.value.headers["X-Request-Id"])

    assert ask("abc-123") == "abc-123"
    made = ask(None)
    assert len(made) == 32 and made != ask(None)
    assert len(ask("x" * 500)) == 32  # too long to echo into a log line: a new one
    served.wait_until(
        lambda: (
            '/v1/models/tiny/score HTTP/1.1" 422' in (log := served.log_path.read_text())
            and "id=abc-123" in log
        ),
        "the access log's line",
        30,
    )


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
    from detector.bundles.bundle import set_target_fpr

    stricter = tmp_path / "stricter"
    shutil.copytree(bundle_dir, stricter)
    new_threshold = set_target_fpr(stricter, 0.002).calibrator.threshold
    statuses: list[int] = []
    stop = threading.Event()

    def traffic() -> None:
        while not stop.is_set():
            try:
                status = call(f"{server}/v1/models/tiny/score", {"records": RECORDS[:5]})[0]
            except OSError as exc:  # a reset is a failed request, not a thread that ends
                status = -1
                failures.append(exc)
            statuses.append(status)

    failures: list[OSError] = []
    thread = threading.Thread(target=traffic)
    thread.start()
    try:
        deadline = time.monotonic() + 60
        while len(statuses) < 5:
            assert time.monotonic() < deadline, f"5 requests took over 60 s: {statuses}"
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
    assert set(statuses) == {200}, failures


def test_a_stopped_server_leaves_nothing_in_the_temporary_folder(
    bundle_dir: Path, tmp_path: Path
) -> None:
    temporary = tmp_path / "tmp"
    temporary.mkdir()
    with serving({"tiny": bundle_dir}, tmp_path, env={"TMPDIR": str(temporary)}) as running:
        assert running.call("/v1/models/tiny/score", {"records": RECORDS[:1]})[0] == 200
        # The run's folder holds the workers' metric files and model copies while it serves.
        assert [p.name[: len("anomaly-serve-")] for p in temporary.iterdir()] == ["anomaly-serve-"]
        assert any(temporary.glob("anomaly-serve-*/metrics/*.db"))
    assert list(temporary.iterdir()) == []


def test_serve_keeps_the_services_info_lines_with_a_time(caplog) -> None:
    # The command line logs at WARNING: the log sink's resolved alerts (INFO) never showed, and
    # the service's lines had no time beside gunicorn's.
    import logging

    from service.cli import service_logging

    root = logging.getLogger()
    handler = logging.StreamHandler()
    root.addHandler(handler)
    service = logging.getLogger("service")
    try:
        service_logging()
        assert logging.getLogger("service.alerts").isEnabledFor(logging.INFO)
        record = logging.LogRecord("service.alerts", logging.INFO, "", 0, "resolved", (), None)
        line = handler.format(record)
        assert line.startswith("[") and f"[{record.process}] [INFO] service.alerts" in line
    finally:
        root.removeHandler(handler)
        service.setLevel(logging.NOTSET)


def test_a_run_folder_left_by_a_server_killed_outright_is_removed_at_the_next_start(
    tmp_path: Path,
) -> None:
    # SIGKILL left anomaly-serve-* (metrics files, model copies) behind, and a container's
    # emptyDir /tmp filled with them restart after restart (an on-call helper).
    import os
    import subprocess

    from service.cli import MASTER_PID_FILE, remove_stale_run_dirs

    gone = subprocess.Popen(["true"])
    gone.wait()
    folders = {name: tmp_path / f"anomaly-serve-{name}" for name in ("dead", "alive", "old")}
    for folder in folders.values():
        folder.mkdir()
        (folder / "metrics").mkdir()
    (folders["dead"] / MASTER_PID_FILE).write_text(str(gone.pid))
    (folders["alive"] / MASTER_PID_FILE).write_text(str(os.getppid()))
    remove_stale_run_dirs(str(tmp_path))  # "old": no pid file, another release's: left
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "anomaly-serve-alive",
        "anomaly-serve-old",
    ]
