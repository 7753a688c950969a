"""The whole system out of open files (``ENFILE``), injected where the server meets it (a
gevent ``accept``, a request opening a file): the log names the kernel's file table
(fs.file-max) and its fix, not the worker's own limit (ulimit -n), which raising would not
help. The worker's own limit (``EMFILE``) is tested in test_api.py and test_slow_clients.py."""

from __future__ import annotations

import errno
import math
import socket
import time
from types import SimpleNamespace
from typing import Any

import pytest

from service import open_files
from tests.service.conftest import ADMIN

SYSTEM_FULL = OSError(errno.ENFILE, "Too many open files in system")


@pytest.fixture
def said(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> Any:
    """The out-of-files lines logged, the once-a-minute throttle reset (an earlier test may
    have said one)."""
    monkeypatch.setattr(open_files._said, "logged_at", -math.inf)
    return lambda: [r for r in caplog.records if "out of open files" in r.getMessage()]


def _names_the_system_table(message: str) -> None:
    assert message.startswith("the system is out of open files")
    assert "fs.file-max" in message and "sysctl" in message
    # The per-process fixes, given for ENFILE before, are said not to be the one.
    assert "LimitNOFILE" not in message and "--connections" not in message
    assert "ulimit -n, a per-process limit, does not help" in message


def test_an_accept_failing_for_the_systems_table_says_so_without_a_traceback(
    monkeypatch: pytest.MonkeyPatch, said: Any
) -> None:
    import gevent
    from gevent.server import StreamServer

    from service.server import _name_accept_errors

    hub = gevent.get_hub()
    monkeypatch.setattr(hub, "handle_error", hub.handle_error)  # put back after the test
    _name_accept_errors(SimpleNamespace(cfg=SimpleNamespace(worker_connections=1000)))
    server = StreamServer(("127.0.0.1", 0), lambda sock, address: None)

    def accept() -> None:
        raise SYSTEM_FULL

    monkeypatch.setattr(server, "do_read", accept)  # what gevent's loop calls to accept
    printed: list[Any] = []
    monkeypatch.setattr(hub, "print_exception", lambda *args: printed.append(args))
    server.start()
    try:
        with socket.create_connection(server.address, timeout=5):
            deadline = time.monotonic() + 10
            while not said() and time.monotonic() < deadline:
                gevent.sleep(0.01)  # the hub runs the accept loop while this greenlet waits
    finally:
        server.close()
    (record,) = said()
    _names_the_system_table(record.getMessage())
    assert not printed and not record.exc_info


def test_a_request_finding_the_systems_table_full_gets_503_naming_the_machine(
    client: Any, monkeypatch: pytest.MonkeyPatch, said: Any
) -> None:
    from service.metrics import ServiceMetrics

    def exposition(self: ServiceMetrics) -> bytes:  # GET /metrics opens the metric files
        raise SYSTEM_FULL

    monkeypatch.setattr(ServiceMetrics, "exposition", exposition)
    response = client.get("/metrics", headers={"Authorization": f"Bearer {ADMIN}"})
    assert response.status_code == 503 and response.headers["Retry-After"] == "1"
    assert response.json["error"] == "out_of_open_files"
    assert response.json["detail"].startswith("the server's machine is out of open files")
    (record,) = said()
    _names_the_system_table(record.getMessage())
    assert not record.exc_info
