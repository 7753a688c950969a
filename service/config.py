"""Service settings: defaults, then a TOML or JSON file, then ``ANOMALY_*`` variables.

Environment variables follow Flask's ``from_prefixed_env`` convention:
``ANOMALY_ADMIN_TOKEN=s3cret`` sets ``admin_token``; a value that parses as JSON is taken as
JSON (``ANOMALY_MAX_BATCH_RECORDS=500`` is a number, ``ANOMALY_MODELS='{"default": "m/"}'`` a
table); a double underscore reaches into a table (``ANOMALY_ALERTS__FIRE_AFTER=5``). Unknown
keys are errors, so a typo in a setting never silently falls back to a default.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from detector.errors import ConfigError
from detector.integrity import BUNDLE_KEY_ENV
from service.alerts import AlertPolicy

ENV_PREFIX = "ANOMALY_"
#: Names the settings file; read by ``load_config`` when no path is given.
CONFIG_FILE_VARIABLE = "ANOMALY_CONFIG"
#: ``ANOMALY_*`` variables that are not settings of the service.
NOT_SETTINGS = frozenset({"ANOMALY_DEBUG", CONFIG_FILE_VARIABLE, BUNDLE_KEY_ENV})
MODEL_NAME = re.compile(r"^[a-z0-9_-]{1,64}$")


@dataclass(frozen=True)
class ServiceConfig:
    """Everything the service reads at start-up. ``models`` maps a name to a bundle directory."""

    models: dict[str, str] = field(default_factory=dict)
    #: Records per scoring request; larger batches get 413 with the limit in the message.
    max_batch_records: int = 10_000
    #: Request bodies larger than this get 413 before they are parsed.
    max_body_bytes: int = 16 * 1024 * 1024
    #: Seconds the server waits for each read of a request body: a client that stops sending
    #: (or sends a Content-Length larger than its body) gets 408 instead of holding a worker.
    request_read_timeout: float = 10.0
    #: Bearer token for admin routes (reload). Unset = admin routes are refused (403).
    admin_token: str | None = None
    #: Bearer token for scoring and model routes; unset = open, which ``check_exposure``
    #: allows only on a loopback address or with ``allow_open_scoring``.
    scoring_token: str | None = None
    #: Serve scoring and model routes without a token on an address other machines can reach;
    #: only behind a network that already decides who may score.
    allow_open_scoring: bool = False
    #: Record fields echoed back per record (e.g. an id) without being scored.
    passthrough_fields: tuple[str, ...] = ()
    #: The default alert policy, and per-model overrides of any of its fields.
    alerts: AlertPolicy = field(default_factory=AlertPolicy)
    model_alerts: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: Alert sinks: Alertmanager's base URL, a generic JSON webhook, and the log.
    alertmanager_url: str | None = None
    webhook_url: str | None = None
    alert_log: bool = True
    alert_queue_size: int = 1_000
    alert_retries: int = 3
    recent_alerts: int = 200
    #: The service's own URL as users reach it, for alerts' generatorURL.
    external_url: str = "http://127.0.0.1:8000"
    #: A directory shared by the server's worker processes, through which a reload done by one
    #: worker reaches the others. Unset = this process only.
    model_sync_dir: str | None = None
    #: Threads per worker process for TensorFlow (old bundles) and the neighbour search; None
    #: leaves their defaults (``anomaly serve`` gives each worker its share of the cores).
    tf_threads: int | None = None

    def policy_for(self, model: str) -> AlertPolicy:
        override = self.model_alerts.get(model)
        if not override:
            return self.alerts
        return AlertPolicy.from_dict({**self.alerts.to_dict(), **override})

    def check(self) -> None:
        problems = [
            f"model name {name!r} must match [a-z0-9_-] (1-64 characters)"
            for name in self.models
            if not MODEL_NAME.match(name)
        ]
        problems += [
            f"model_alerts names {name!r}, which is not a configured model"
            for name in self.model_alerts
            if name not in self.models
        ]
        for name in ("max_batch_records", "max_body_bytes", "alert_queue_size", "recent_alerts"):
            if getattr(self, name) < 1:
                problems.append(f"{name} must be at least 1")
        if not 0 < self.request_read_timeout <= 3600:
            problems.append("request_read_timeout must be between 0 and 3600 seconds")
        if self.alert_retries < 0:
            problems.append("alert_retries must be 0 or more")
        if problems:
            raise ConfigError("invalid service configuration: " + "; ".join(problems))


def check_exposure(config: ServiceConfig, host: str) -> None:
    """Refuse to serve on the bind address ``host`` (no port) without a scoring token when other
    machines can reach it, unless ``allow_open_scoring`` says so. Call before binding."""
    if config.scoring_token is not None or config.allow_open_scoring or _is_local(host):
        return
    raise ConfigError(
        f"refusing to serve on {host} without a scoring token: anyone who can reach it could "
        "score records and read model details; set scoring_token (ANOMALY_SCORING_TOKEN) and "
        "have clients send 'Authorization: Bearer <token>', or bind --host 127.0.0.1, or, "
        "behind a network that already decides who may score, set allow_open_scoring = true "
        "(ANOMALY_ALLOW_OPEN_SCORING=true)"
    )


def _is_local(host: str) -> bool:
    if host.startswith("unix:") or host == "localhost":
        return True  # a socket file is reached through the filesystem, not the network
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to any interface


def load_config(
    path: str | os.PathLike[str] | None = None,
    *,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> ServiceConfig:
    """Defaults, then the file at ``path`` (.toml or .json; default: the file ``ANOMALY_CONFIG``
    names, if set), then ``ANOMALY_*`` variables from ``env`` (default ``os.environ``), then
    ``overrides`` (command-line flags)."""
    env = os.environ if env is None else env
    values: dict[str, Any] = {}
    if path is None:
        path = env.get(CONFIG_FILE_VARIABLE) or None
    if path is not None:
        _merge(values, _read_file(Path(path)))
    _merge(values, _from_env(env))
    if overrides:
        _merge(values, dict(overrides))
    return _build(values)


def _read_file(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"configuration file {path} does not exist")
    try:
        if path.suffix == ".toml":
            return tomllib.loads(path.read_text())
        if path.suffix == ".json":
            loaded = json.loads(path.read_text())
            if not isinstance(loaded, dict):
                raise ConfigError(f"{path} must hold a JSON object")
            return loaded
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{path} is not valid {path.suffix[1:].upper()}: {exc}") from None
    raise ConfigError(f"configuration file {path} must end in .toml or .json")


def _from_env(env: Mapping[str, str]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for name in sorted(env):
        if not name.startswith(ENV_PREFIX) or name in NOT_SETTINGS:
            continue
        try:
            value: Any = json.loads(env[name])
        except json.JSONDecodeError:
            value = env[name]
        *parents, leaf = name[len(ENV_PREFIX) :].lower().split("__")
        target = values
        for parent in parents:
            target = target.setdefault(parent, {})
        target[leaf] = value
    return values


def _merge(into: dict[str, Any], more: Mapping[str, Any]) -> None:
    for key, value in more.items():
        if isinstance(value, Mapping) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = value


def _build(values: dict[str, Any]) -> ServiceConfig:
    known = {f.name for f in fields(ServiceConfig)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(
            f"unknown setting(s) {unknown}; the settings are: {', '.join(sorted(known))}"
        )
    try:
        alerts = AlertPolicy.from_dict(values.pop("alerts", {}) or {})
    except ValueError as exc:
        raise ConfigError(f"invalid alerts settings: {exc}") from None
    config = ServiceConfig(alerts=alerts)
    try:
        changes = {k: _coerce(k, v, getattr(config, k)) for k, v in values.items()}
        config = replace(config, **changes)
        for name in config.model_alerts:
            try:
                config.policy_for(name)
            except ValueError as exc:
                raise ConfigError(f"invalid model_alerts for {name!r}: {exc}") from None
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"invalid setting: {exc}") from None
    config.check()
    return config


def _coerce(key: str, value: Any, default: Any) -> Any:
    """Values from TOML/JSON/env into the field's type, with an error naming the key."""
    if key in ("models", "model_alerts"):
        if not isinstance(value, dict):
            raise ValueError(f"{key} must be a table of name -> value, got {value!r}")
        return {str(k): (str(v) if key == "models" else dict(v)) for k, v in value.items()}
    if key == "passthrough_fields":
        if isinstance(value, str):
            value = [v for v in value.split(",") if v]
        return tuple(str(v) for v in value)
    if key in ("admin_token", "scoring_token", "alertmanager_url", "webhook_url", "model_sync_dir"):
        return None if value in (None, "") else str(value)
    if key == "tf_threads":
        return None if value in (None, "") else int(value)
    if isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            raise ValueError(f"{key} must be a number, got {value!r}")
        return float(value)
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ValueError(f"{key} must be true or false, got {value!r}")
        return value
    if isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            raise ValueError(f"{key} must be a whole number, got {value!r}")
        return int(value)
    return str(value)
