"""Alerts are not lost while Alertmanager is down, nor when a worker is stopped (issue #18).

The dispatcher keeps what a sink did not take and sends it again, re-sends firing alerts to
Alertmanager the way Prometheus does, and counts outcomes per alert. The end-to-end tests stop
and restart a real Alertmanager, and SIGTERM a real ``anomaly serve``.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from service.alert_policy import AlertPolicy
from service.alerts import Alert
from service.config import ServiceConfig
from service.delivery import AlertDispatcher
from service.sinks import AlertmanagerSink
from tests.conftest import broken, normal_records
from tests.deploy.conftest import require
from tests.processes import alertmanager_config, free_port, stop
from tests.service.conftest import Outcomes, Receiver
from tests.service.test_alerts import make_alert, parse_iso, wait_ready
from tests.service.test_reload_convergence import metric, serving

NORMAL = normal_records(40)


def of_host(host: str) -> list[dict[str, Any]]:
    """Normal records of one host (the alert key): an unknown host would itself be unusual."""
    return [record for record in NORMAL if record["host"] == host]


#: One anomalous record fires a key and one normal record resolves it (and it stays resolved
#: for the cooldown): few requests per test.
QUICK = AlertPolicy(
    group_by=("host",), fire_after=1, window=1, resolve_after=1, min_firing_seconds=0
)


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    # urllib would send even 127.0.0.1 through a proxy named in the environment.
    for name in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)


def keyed(host: str, status: str = "firing") -> Alert:
    return replace(make_alert(status), key=(("host", host),))


class SwitchableSink:
    """A sink that is down until switched up; it records what it took."""

    name = "switchable"

    def __init__(self, *, resend_firing: bool = False) -> None:
        self.resend_firing = resend_firing
        self.up = False
        self.taken: list[Alert] = []
        self.cond = threading.Condition()

    def send(self, alerts: Sequence[Alert]) -> None:
        with self.cond:
            if not self.up:
                raise ConnectionError("switchable sink is down")
            self.taken.extend(alerts)
            self.cond.notify_all()

    def wait_for(self, found: Any, deadline_s: float = 10) -> None:
        with self.cond:
            if not self.cond.wait_for(lambda: found(self.taken), timeout=deadline_s):
                pytest.fail(f"not delivered within {deadline_s} s; took {self.taken}")


# --------------------------------------------------------------------------- the dispatcher


def test_outcomes_count_alerts_not_batches() -> None:
    sink, outcomes = SwitchableSink(), Outcomes()
    dispatcher = AlertDispatcher([sink], retries=0, on_outcome=outcomes)
    dispatcher.start()
    try:
        dispatcher.submit([keyed("a"), keyed("b"), keyed("c", "resolved")])
        assert dispatcher.flush(5)
        assert outcomes.count("switchable", "failed") == 3
    finally:
        dispatcher.stop(timeout=5)


def test_alerts_owed_to_a_sink_that_was_down_go_out_once_it_is_back() -> None:
    sink, outcomes = SwitchableSink(), Outcomes()
    dispatcher = AlertDispatcher([sink], retries=0, resend_seconds=0.05, on_outcome=outcomes)
    dispatcher.start()
    try:
        # While it is down: one key fires, another fires and resolves.
        dispatcher.submit([keyed("fired"), keyed("came-and-went")])
        dispatcher.submit([keyed("came-and-went", "resolved")])
        assert dispatcher.flush(5)
        assert dispatcher.undelivered() == {"switchable": 2}
        sink.up = True
        sink.wait_for(
            lambda taken: (
                {(dict(a.key)["host"], a.status) for a in taken}
                == {("fired", "firing"), ("came-and-went", "resolved")}
            )
        )
        assert dispatcher.flush(5)
        assert dispatcher.undelivered() == {"switchable": 0}
        assert outcomes.count("switchable", "dropped") == 0
    finally:
        dispatcher.stop(timeout=5)


def test_firing_alerts_are_resent_to_alertmanager_until_resolved() -> None:
    sink = SwitchableSink(resend_firing=True)
    sink.up = True
    dispatcher = AlertDispatcher([sink], resend_seconds=0.05)
    dispatcher.start()
    try:
        dispatcher.submit([keyed("web-1")])
        sink.wait_for(lambda taken: len(taken) >= 3)  # sent, then re-sent on the interval
        dispatcher.submit([keyed("web-1", "resolved")])
        sink.wait_for(lambda taken: taken[-1].status == "resolved")
        assert dispatcher.flush(5)
        with sink.cond:
            after_resolved = len(sink.taken)
        # Resend rounds go on, but the resolved alert left the firing set: nothing more.
        dispatcher.submit([keyed("web-2")])
        sink.wait_for(lambda taken: sum(dict(a.key)["host"] == "web-2" for a in taken) >= 3)
        with sink.cond:
            assert {dict(a.key)["host"] for a in sink.taken[after_resolved:]} == {"web-2"}
    finally:
        dispatcher.stop(timeout=5)


def test_what_a_sink_is_owed_is_bounded_and_each_drop_is_counted() -> None:
    sink, outcomes = SwitchableSink(), Outcomes()
    dispatcher = AlertDispatcher([sink], retries=0, undelivered_size=2, on_outcome=outcomes)
    dispatcher.start()
    try:
        dispatcher.submit([keyed(f"web-{i}") for i in range(5)])
        assert dispatcher.flush(5)
        assert dispatcher.undelivered() == {"switchable": 2}
        assert outcomes.count("switchable", "dropped") == 3
    finally:
        dispatcher.stop(timeout=5)
    # stop() tried the two it still owed once more, and dropped them.
    assert outcomes.count("switchable", "dropped") == 5


def test_alertmanager_gets_an_end_time_a_few_resends_ahead() -> None:
    sink = AlertmanagerSink("http://127.0.0.1:9", generator_url="x", valid_for=240)
    before = datetime.now(UTC)
    firing, resolved = sink.payload([make_alert("firing"), make_alert("resolved")])
    after = datetime.now(UTC)
    ends = parse_iso(firing["endsAt"])
    assert before + timedelta(seconds=239) <= ends <= after + timedelta(seconds=241)
    assert parse_iso(resolved["endsAt"]) == make_alert("resolved").ends_at


# --------------------------------------------------------------------------- real Alertmanager


class Alertmanager:
    """A real Alertmanager on a fixed port, which can be stopped and started again there."""

    def __init__(self, workdir: Path, webhook_url: str) -> None:
        self.binary = require("prometheus-alertmanager", "prometheus-alertmanager")
        self.workdir = workdir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None
        self.config = workdir / "alertmanager.yml"
        self.config.write_text(alertmanager_config(webhook_url))

    def start(self) -> None:
        log_path = self.workdir / "alertmanager.log"
        with log_path.open("ab") as log_file:
            self.process = subprocess.Popen(
                [
                    self.binary,
                    f"--config.file={self.config}",
                    f"--storage.path={self.workdir / 'data'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                    "--cluster.listen-address=",
                ],
                stdout=log_file,
                stderr=subprocess.STDOUT,
            )
        wait_ready(self.url, self.process, log_path, deadline_s=15)

    def stop(self) -> None:
        if self.process is not None:
            stop(self.process, timeout=10)
            self.process = None

    def alert(self, host: str) -> dict[str, Any] | None:
        """The active alert for ``host`` in Alertmanager now (GET /api/v2/alerts), if any."""
        with urllib.request.urlopen(self.url + "/api/v2/alerts", timeout=5) as response:
            alerts = json.loads(response.read())
        return next((a for a in alerts if a["labels"].get("host") == host), None)

    def wait_for_alert(self, host: str, deadline_s: float) -> dict[str, Any]:
        deadline = time.monotonic() + deadline_s
        while (found := self.alert(host)) is None:
            if time.monotonic() > deadline:
                pytest.fail(f"no alert for host {host!r} in Alertmanager within {deadline_s} s")
            time.sleep(0.1)  # polling interval under a deadline
        return found


@pytest.fixture
def alertmanager(tmp_path: Path, receiver: Receiver) -> Iterator[Alertmanager]:
    am = Alertmanager(tmp_path, receiver.url + "/hook")
    try:
        yield am
    finally:
        am.stop()


def resolved_for(host: str) -> Any:
    """A webhook body from Alertmanager that holds the resolved alert for ``host``."""

    def found(body: Any) -> bool:
        return any(
            a["status"] == "resolved"
            and a["labels"].get("host") == host
            and "back to normal" in a["annotations"]["summary"]  # our resolution, not expiry
            for a in body.get("alerts", [])
        )

    return found


@pytest.mark.slow
def test_alerts_fired_and_resolved_during_an_alertmanager_outage_arrive_after_it(
    bundle_dir: Path, alertmanager: Alertmanager, receiver: Receiver
) -> None:
    from service.app import create_app

    alertmanager.start()
    config = ServiceConfig(
        models={"tiny": str(bundle_dir)},
        alertmanager_url=alertmanager.url,
        alert_log=False,
        alert_retries=0,
        alerts=replace(QUICK, repeat_seconds=1),
    )
    app = create_app(config, metrics_registry=CollectorRegistry())
    dispatcher = app.extensions["anomaly"].dispatcher
    client = app.test_client()

    def score(records: list[dict[str, Any]]) -> None:
        body = {"records": records}
        assert client.post("/v1/models/tiny/score", json=body).status_code == 200

    try:
        score([broken(of_host("web-01")[0])])
        alertmanager.wait_for_alert("web-01", deadline_s=20)

        alertmanager.stop()
        score([broken(of_host("web-02")[0])])  # fires while Alertmanager is down
        # Resolves while it is down, at the first record the model finds normal (at the
        # calibrated false-positive rate, a normal record is now and then flagged).
        score(of_host("web-01"))
        assert dispatcher.flush(10)
        failed = metric(client.get("/metrics").get_data(as_text=True), "alertmanager", "failed")
        assert failed >= 2, dispatcher.recent()  # both alerts were tried, each counted

        alertmanager.start()  # the same port, as after a restart
        alertmanager.wait_for_alert("web-02", deadline_s=30)
        receiver.wait_until(resolved_for("web-01"), deadline_s=30)
    finally:
        dispatcher.stop()


@pytest.mark.slow
def test_a_worker_stopped_by_sigterm_delivers_the_alerts_it_still_holds(
    bundle_dir: Path, alertmanager: Alertmanager, tmp_path: Path
) -> None:
    env = {
        "ANOMALY_ALERTMANAGER_URL": alertmanager.url,  # not started yet: down
        "ANOMALY_ALERT_LOG": "false",
        "ANOMALY_ALERT_RETRIES": "0",
        "ANOMALY_ALERTS__GROUP_BY": '["host"]',
        "ANOMALY_ALERTS__FIRE_AFTER": "1",
        "ANOMALY_ALERTS__WINDOW": "1",
        # No re-send before the end of the test: only stopping the worker can deliver it.
        "ANOMALY_ALERTS__REPEAT_SECONDS": "3600",
    }
    with serving({"tiny": bundle_dir}, tmp_path, env=env, workers=1) as server:
        record = broken(of_host("web-03")[0])
        status, _ = server.call("/v1/models/tiny/score", {"records": [record]})
        assert status == 200
        server.wait_until(
            lambda: metric(server.call("/metrics")[1], "alertmanager", "failed") >= 1,
            "the alert's send to the Alertmanager that is down",
        )
        alertmanager.start()
        server.process.terminate()  # SIGTERM to gunicorn's master, which stops its workers
        server.process.wait(timeout=60)
    alertmanager.wait_for_alert("web-03", deadline_s=10)


def test_two_workers_send_one_alert_for_a_key_whose_records_they_share(
    bundle_dir: Path, receiver: Receiver, tmp_path: Path
) -> None:
    # Each worker kept its own window: both fired the same alert (and a resolve by one was
    # undone by the other's re-send). The state is now in the file the workers share.
    from tests.service.test_series_server import scored_by_worker

    env = {
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics"),
        "ANOMALY_WEBHOOK_URL": receiver.url,
        "ANOMALY_ALERT_LOG": "false",
        "ANOMALY_ALERTS__GROUP_BY": '["host"]',
        "ANOMALY_ALERTS__FIRE_AFTER": "3",
        "ANOMALY_ALERTS__WINDOW": "10",
        "ANOMALY_ALERTS__REPEAT_SECONDS": "3600",
    }
    record = broken(of_host("web-03")[0])
    with serving({"tiny": bundle_dir}, tmp_path, env=env, workers=2) as server:
        deadline = time.monotonic() + 120
        scored = scored_by_worker(tmp_path / "metrics", "tiny")
        # A connection each: both workers get some of them (each at least a window's worth).
        while len([n for n in scored.values() if n >= 3]) < 2 and time.monotonic() < deadline:
            for _ in range(50):
                status, _ = server.call("/v1/models/tiny/score", {"records": [record]})
                assert status == 200
            scored = scored_by_worker(tmp_path / "metrics", "tiny")
        assert len([n for n in scored.values() if n >= 3]) == 2, f"one worker took most: {scored}"
        server.wait_until(
            lambda: metric(server.call("/metrics")[1], "webhook", "sent") >= 1,
            "the alert's delivery",
        )
        firing = [
            alert
            for _, _, body in receiver.requests
            for alert in body["alerts"]
            if alert["status"] == "firing"
        ]
    assert len(firing) == 1, firing
