"""Shared by the deploy tests: paths, the rule for system binaries, and small process helpers."""

from __future__ import annotations

import json
import os
import re
import shutil
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import jsonschema
import pytest
import yaml

from tests.conftest import REPO

DEPLOY = REPO / "deploy"
SCHEMAS = Path(__file__).with_name("schemas")
T = TypeVar("T")
#: Everything here talks to 127.0.0.1: never through a proxy named in the environment.
OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))
PROXY_VARIABLES = (
    "http_proxy",
    "https_proxy",
    "all_proxy",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "ALL_PROXY",
)


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


def http(url: str, body: Any = None, *, token: str | None = None, timeout: float = 10) -> Any:
    """GET (or POST ``body`` as JSON) and return the decoded JSON answer; raises on HTTP errors."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method="GET" if data is None else "POST")
    request.add_header("Content-Type", "application/json")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    with _opened(request, timeout) as response:
        raw = response.read()
    return json.loads(raw) if raw.strip() else None


def http_text(url: str, timeout: float = 10) -> str:
    with _opened(url, timeout) as response:
        return str(response.read().decode())


def _opened(request: urllib.request.Request | str, timeout: float) -> Any:
    try:
        return OPENER.open(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        # An HTTPError holds its response's socket open until closed; callers (wait_for)
        # keep the exception, and the socket would otherwise be reported as leaked later.
        exc.close()
        raise


def clean_env(**settings: str) -> dict[str, str]:
    """This process's environment without proxies or a multiprocess-metrics directory."""
    env = {k: v for k, v in os.environ.items() if k not in PROXY_VARIABLES}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    env.update(settings)
    return env


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


def schema_check(document: Any, schema_file: str) -> None:
    """Validate against one of tests/deploy/schemas/, listing every error."""
    schema = json.loads((SCHEMAS / schema_file).read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(document), key=lambda e: list(e.absolute_path))
    assert not errors, "\n".join(f"{list(e.absolute_path)}: {e.message}" for e in errors)


def alerts_job() -> str:
    """The scrape job the alerts watch (AnomalyServiceDown's up{job=...})."""
    alerts = (DEPLOY / "prometheus" / "rules" / "alerts.yml").read_text()
    [job] = set(re.findall(r'up\{job="([^"]+)"\}', alerts))
    return job


def dockerfile_instructions() -> list[tuple[str, str]]:
    """deploy/Dockerfile as (INSTRUCTION, arguments), comments dropped, continuations joined."""
    lines = (DEPLOY / "Dockerfile").read_text().splitlines()
    code = "\n".join(line for line in lines if not line.lstrip().startswith("#"))
    instructions = []
    for line in re.sub(r"\\\n", " ", code).splitlines():
        if line.strip():
            op, _, arg = line.strip().partition(" ")
            instructions.append((op.upper(), arg.strip()))
    return instructions


def final_stage() -> list[tuple[str, str]]:
    instructions = dockerfile_instructions()
    last_from = max(i for i, (op, _) in enumerate(instructions) if op == "FROM")
    return instructions[last_from:]


def dockerfile_user() -> str:
    [user] = [arg for op, arg in final_stage() if op == "USER"]
    return user
