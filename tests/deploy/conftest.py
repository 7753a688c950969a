"""Shared by the deploy tests: paths, the rule for system binaries, and small process helpers."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml

from tests.conftest import REPO

DEPLOY = REPO / "deploy"
SCHEMAS = Path(__file__).with_name("schemas")
T = TypeVar("T")


def require(binary: str, package: str) -> str:
    """The binary's path; skip when it is missing, except in CI (CI=set), where that fails."""
    path = shutil.which(binary)
    if path is None:
        reason = f"{binary} not installed (apt-get install {package}; .ci/run installs it)"
        if os.environ.get("CI"):
            pytest.fail(f"{reason}: CI must run this test")
        pytest.skip(reason)
    return path


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def load_yaml_all(path: Path) -> list[Any]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def http_json(url: str, timeout: float = 5) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return json.loads(response.read())


def wait_for(what: str, probe: Callable[[], T | None], deadline_s: float, every: float = 0.2) -> T:
    """Poll ``probe`` until it returns something truthy; fail naming ``what`` at the deadline."""
    deadline = time.monotonic() + deadline_s
    last_error: Exception | None = None
    while True:
        try:
            value = probe()
            if value:
                return value
        except (OSError, urllib.error.URLError, ValueError) as exc:
            last_error = exc  # not up yet, or not answering yet
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not within {deadline_s} s (last error: {last_error})")
        time.sleep(every)  # a polling interval under a deadline


@contextmanager
def process(
    argv: list[str], log: Path, *, env: dict[str, str] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``argv`` with output to ``log``, in its own session; stop it (and its children)."""
    with log.open("wb") as out:
        proc = subprocess.Popen(
            argv, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
