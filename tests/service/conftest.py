"""Fixtures for the service: an app over the session's tiny model, with a sink that records."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from service.alert_policy import AlertPolicy
from service.alerts import Alert
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
        alerts=AlertPolicy(
            group_by=("host",), fire_after=2, window=3, resolve_after=3, min_firing_seconds=0
        ),
        passthrough_fields=("id",),
        max_batch_records=500,
    )
    yield app, sink
    app.extensions["anomaly"].dispatcher.stop()


@pytest.fixture
def client(service):  # type: ignore[no-untyped-def]
    return service[0].test_client()


class ScoringThread:
    """A gevent worker's scoring thread (``service.turns``) as a real thread of its own, which
    records what each request gave it and runs ``before(name)`` there before each."""

    def __init__(self) -> None:
        self.ran: list[str] = []
        self.before: Callable[[str], None] = lambda name: None

    def apply(self, caught: Callable[..., Any], args: tuple[Any, Any]) -> Any:
        run, _ = args
        self.ran.append(run.__name__)
        out: list[Any] = []

        def work() -> None:
            self.before(run.__name__)
            out.append(caught(*args))

        thread = threading.Thread(target=work)
        thread.start()
        thread.join()
        return out[0]


@pytest.fixture
def scoring_thread(monkeypatch: pytest.MonkeyPatch) -> ScoringThread:
    """The app's large requests take turns as under gunicorn's gevent worker, in a
    ``ScoringThread``."""
    from service import turns

    thread = ScoringThread()
    monkeypatch.setattr(turns, "_gevent_patched", lambda: True)
    monkeypatch.setattr(turns, "_scoring_thread", lambda: thread)
    return thread


class Receiver:
    """A local HTTP endpoint that records every JSON POST it gets."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str, Any]] = []
        self.status = 200
        self.cond = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with receiver.cond:
                    receiver.requests.append(
                        (self.path, self.headers.get("Content-Type", ""), json.loads(body))
                    )
                    receiver.cond.notify_all()
                reply = b"boom" if receiver.status >= 400 else b""
                self.send_response(receiver.status)
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # keep test output quiet; the test asserts on what arrived

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        # A short poll interval keeps shutdown() (which waits for one poll) quick in teardown.
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def bodies(self) -> list[Any]:
        with self.cond:
            return [body for _, _, body in self.requests]

    def wait_until(self, found: Any, deadline_s: float) -> Any:
        """Wait for a request body for which ``found(body)`` is truthy; return that body."""
        deadline = time.monotonic() + deadline_s
        with self.cond:
            while True:
                for _, _, body in self.requests:
                    if found(body):
                        return body
                left = deadline - time.monotonic()
                if left <= 0:
                    pytest.fail(f"no matching request within {deadline_s} s; got {self.requests}")
                self.cond.wait(left)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    r.thread.start()
    try:
        yield r
    finally:
        r.server.shutdown()
        r.server.server_close()
        r.thread.join(5)


class Outcomes:
    """An ``on_outcome`` callback for the alert dispatcher: records (sink, outcome) pairs."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []
        self.lock = threading.Lock()

    def __call__(self, sink: str, outcome: str) -> None:
        with self.lock:
            self.seen.append((sink, outcome))

    def count(self, sink: str, outcome: str) -> int:
        with self.lock:
            return self.seen.count((sink, outcome))


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 20 MiB file system (tmpfs) at ``tmp_path / "disk"``, so that a full disk is the
    kernel's (ENOSPC, fallocate, a process's maps) rather than a mock's. Mounting needs root
    (or CAP_SYS_ADMIN): without it the test is skipped, saying so."""
    import subprocess

    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=20m", "tmpfs", str(disk)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode != 0:
        # Skipped under CI too: a missing binary is installed by .ci/run, but the privilege to
        # mount is the machine's to give; .ci/run says up front whether it has it.
        pytest.skip(
            f"cannot mount a tmpfs here ({mounted.stderr.strip()}): a real full disk needs "
            "root or CAP_SYS_ADMIN"
        )
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


def fill(disk: Path) -> None:
    """Write ``disk`` full: 0 bytes left to any file on it (tmpfs takes 4 KiB pages)."""
    import errno
    import os

    fd = os.open(disk / "filler", os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    try:
        for chunk in (bytes(2**20), bytes(4096)):
            try:
                while True:
                    os.write(fd, chunk)
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
    finally:
        os.close(fd)
