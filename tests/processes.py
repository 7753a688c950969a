"""Starting and stopping the real servers tests run (gunicorn, Prometheus, Alertmanager)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def stop(process: subprocess.Popen[bytes], *, timeout: float = 45) -> None:
    """Terminate, wait, and kill if it does not exit in ``timeout`` seconds: longer than
    gunicorn's graceful timeout (30 s), so that its master always gets to clean up."""
    process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)


@contextmanager
def running(
    argv: list[str], log: Path, *, env: dict[str, str] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``argv`` with output to ``log``, in its own session; stop it on exit."""
    with log.open("wb") as out:
        proc = subprocess.Popen(
            argv, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
    try:
        yield proc
    finally:
        stop(proc)


def call(
    url: str, body: Any = None, token: str | None = None, timeout: float = 30
) -> tuple[int, Any]:
    """One HTTP request: a JSON body makes it a POST. Returns the status and the answer, parsed
    as JSON when it is JSON."""
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


@dataclass(frozen=True)
class Server:
    """A running ``anomaly serve``."""

    base: str
    port: int
    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def pid(self) -> int:
        """gunicorn's master process."""
        return self.process.pid

    def call(
        self, path: str, body: Any = None, token: str | None = None, timeout: float = 30
    ) -> tuple[int, Any]:
        return call(self.base + path, body, token, timeout)

    def wait_until(self, condition: Callable[[], bool], what: str, deadline_s: float = 60) -> None:
        """Poll ``condition`` until it holds; fail, with the server's log, past the deadline or
        if the server exits."""
        import pytest

        deadline = time.monotonic() + deadline_s
        while not condition():
            if self.process.poll() is not None:
                pytest.fail(f"server exited while waiting for {what}:\n{self.log_text()}")
            if time.monotonic() > deadline:
                pytest.fail(f"no {what} within {deadline_s} s:\n{self.log_text()}")
            time.sleep(0.1)

    def workers(self) -> set[int]:
        """The pids of gunicorn's worker processes now (Linux /proc)."""
        children = Path(f"/proc/{self.pid}/task/{self.pid}/children")
        return {int(pid) for pid in children.read_text().split()}

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")[-6000:]


@contextmanager
def serving(
    models: dict[str, Path],
    workdir: Path,
    *,
    workers: int = 2,
    env: dict[str, str] | None = None,
    args: tuple[str, ...] = (),
    ready_path: str = "/readyz",
    open_files: int | None = None,
) -> Iterator[Server]:
    """``anomaly serve`` as a user starts it, on a free port of 127.0.0.1, once ``ready_path``
    answers 200 (``/healthz`` when a model is broken on purpose); stopped on exit. ``env`` adds
    variables (``ANOMALY_*`` settings); the test run's ``PROMETHEUS_MULTIPROC_DIR`` is not
    passed on, so each server has its own. ``open_files``: the server's limit of open files
    (``ulimit -n``), set before it starts."""
    port = free_port()
    exe = Path(sys.executable).with_name("anomaly")
    environment = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    environment.update({"ANOMALY_ALERT_LOG": "false", **(env or {})})
    argv = [str(exe), "serve", "--port", str(port), "--workers", str(workers), *args]
    if open_files is not None:  # as `ulimit -n N; exec anomaly serve ...`: the same process
        limit = f"resource.setrlimit(resource.RLIMIT_NOFILE, ({open_files}, {open_files}))"
        argv = [sys.executable, "-c", f"import os, resource, sys; {limit}; "
                "os.execv(sys.argv[1], sys.argv[1:])", *argv]  # fmt: skip
    for name, path in models.items():
        argv += ["--model", f"{name}={path}"]
    with running(argv, workdir / "server.log", env=environment) as process:
        server = Server(f"http://127.0.0.1:{port}", port, process, workdir / "server.log")
        server.wait_until(lambda: _answers(server, ready_path), f"200 on {ready_path}", 120)
        metrics = (env or {}).get("PROMETHEUS_MULTIPROC_DIR")
        if metrics and workers > 1:
            # /readyz answers once one worker has loaded; a test that needs every worker's
            # share of the traffic (a CI run saw one worker take 199 of 200 requests) waits
            # for each to set its gauges, which a worker does as it loads its models.
            server.wait_until(
                lambda: _all_loaded(server, Path(metrics), workers), f"{workers} workers", 120
            )
        yield server


def _all_loaded(server: Server, metrics: Path, workers: int) -> bool:
    pids = server.workers()
    return len(pids) == workers and all(any(metrics.glob(f"gauge_*_{pid}.db")) for pid in pids)


def _answers(server: Server, path: str) -> bool:
    try:
        return server.call(path, timeout=2)[0] == 200
    except OSError:
        return False


def alertmanager_config(webhook_url: str) -> str:
    """An Alertmanager configuration that sends every alert, resolved ones too, to one webhook
    at once (no grouping wait). JSON is YAML, so no YAML library is needed."""
    route = {
        "receiver": "hook",
        "group_by": ["alertname", "model"],
        "group_wait": "0s",
        "group_interval": "1s",
        "repeat_interval": "1h",
    }
    hook = {"url": webhook_url, "send_resolved": True}
    return json.dumps({"route": route, "receivers": [{"name": "hook", "webhook_configs": [hook]}]})
