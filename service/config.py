"""Service settings: a pydantic-settings model filled from defaults, then a TOML or JSON file,
then ``ANOMALY_*`` variables, then command-line flags (``load_config``).

``ANOMALY_ADMIN_TOKEN=s3cret`` sets ``admin_token``; a value that parses as JSON is taken as
JSON (``ANOMALY_MAX_BATCH_RECORDS=500`` is a number, ``ANOMALY_MODELS='{"default": "m/"}'`` a
table); a double underscore reaches into a table (``ANOMALY_ALERTS__FIRE_AFTER=5``). Unknown
keys are errors, so a typo in a setting never silently falls back to a default. A file's types
are strict (``alert_log = 1`` is refused, not taken for true), and every error names the
setting.

A ``ServiceConfig(...)`` built in code (tests, an embedding app) holds what it is given and the
defaults; only ``load_config`` reads the file and the environment.
"""

from __future__ import annotations

import contextlib
import functools
import ipaddress
import json
import os
import re
import tomllib
import urllib.parse
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, ValidationError, field_validator, model_validator
from pydantic_core import ErrorDetails
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    InitSettingsSource,
    JsonConfigSettingsSource,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from detector.bundles.integrity import BUNDLE_KEY_ENV
from detector.errors import ConfigError
from detector.scoring.output_columns import ANSWER_FIELDS
from detector.wording import printable
from service.alert_policy import AlertPolicy

ENV_PREFIX = "ANOMALY_"
#: Names the settings file; read by ``load_config`` when no path is given.
CONFIG_FILE_VARIABLE = "ANOMALY_CONFIG"
#: ``ANOMALY_*`` variables that are not settings of the service.
NOT_SETTINGS = frozenset({"ANOMALY_DEBUG", CONFIG_FILE_VARIABLE, BUNDLE_KEY_ENV})
MODEL_NAME = re.compile(r"^[a-z0-9_-]{1,64}$")


def _policy(value: Any) -> Any:
    # A file or variable gives the policy as a table (severities as {level: bound}), which
    # AlertPolicy.from_dict checks with messages naming the key; code passes a policy.
    return AlertPolicy.from_dict(value) if isinstance(value, Mapping) else value


def _field_list(value: Any) -> Any:
    # ANOMALY_PASSTHROUGH_FIELDS=id,ts: a comma-separated list is what a shell user writes
    # (a JSON list is taken too, as in every other variable).
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            value = [v for v in value.split(",") if v]
    return tuple(value) if isinstance(value, list) else value


def _unset(value: Any) -> Any:
    # An empty variable (compose's ${ANOMALY_ADMIN_TOKEN:-}) means unset, not an empty token.
    return None if value == "" else value


OptionalText = Annotated[str | None, BeforeValidator(_unset)]


class ServiceConfig(BaseSettings):
    """Everything the service reads at start-up. ``models`` maps a name to a bundle directory."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
        strict=True,
        use_attribute_docstrings=True,
    )

    models: dict[str, str] = Field(default_factory=dict)
    max_batch_records: int = Field(10_000, ge=1)
    """Records per scoring request; larger batches get 413 with the limit in the message."""
    max_body_bytes: int = Field(16 * 1024 * 1024, ge=1)
    """Request bodies larger than this get 413 before they are parsed."""
    request_read_timeout: float = Field(10.0, gt=0, le=3600)
    """Seconds the server waits for each read of a request body: a client that stops sending
    (or sends a Content-Length larger than its body) gets 408 instead of holding a worker."""
    admin_token: OptionalText = None
    """Bearer token for admin routes (reload). Unset = admin routes are refused (403)."""
    scoring_token: OptionalText = None
    """Bearer token for scoring and model routes; unset = open, which ``check_exposure``
    allows only on a loopback address or with ``allow_open_scoring``."""
    allow_open_scoring: bool = False
    """Serve scoring and model routes without a token on an address other machines can reach;
    only behind a network that already decides who may score."""
    passthrough_fields: Annotated[tuple[str, ...], NoDecode, BeforeValidator(_field_list)] = ()
    """Record fields echoed back per record (e.g. an id) without being scored."""
    alerts: Annotated[AlertPolicy, BeforeValidator(_policy)] = Field(default_factory=AlertPolicy)
    """The default alert policy; ``model_alerts`` overrides any of its fields per model."""
    model_alerts: dict[str, dict[str, Any]] = Field(default_factory=dict)
    alertmanager_url: OptionalText = None
    """Alert sinks: Alertmanager's base URL, a generic JSON webhook, and the log."""
    webhook_url: OptionalText = None
    alert_log: bool = True
    alert_queue_size: int = Field(1_000, ge=1)
    alert_retries: int = Field(3, ge=0)
    recent_alerts: int = Field(200, ge=1)
    """How many alerts ``GET /v1/alerts`` lists: the newest of all models, and as many of each
    model's for ``?model=NAME``."""
    access_log: bool = False
    """A line per request on stdout (gunicorn's access log), with its X-Request-Id."""
    key_metrics: bool = True
    """Count anomalies per alert key on ``/metrics`` (``anomaly_key_anomalies_total``), which
    takes no token: false where the keys are not to be published (card or account numbers)."""
    ready_needs: Literal["all", "any"] = "all"
    """What ``/readyz`` needs to answer 200: ``all`` configured models loaded (a rollout with a
    broken bundle never takes traffic), or ``any`` (one team's broken bundle does not take a
    server of many teams' models out of rotation; ``anomaly_model_loaded`` tells which)."""
    external_url: str = "http://127.0.0.1:8000"
    """The service's own URL as users reach it, for alerts' generatorURL."""
    model_sync_dir: OptionalText = None
    """A directory shared by the server's worker processes, through which a reload done by one
    worker reaches the others. Unset = this process only."""
    series_state: OptionalText = None
    """The SQLite file where series models keep each key's last rows, shared by the worker
    processes and read again on restart. Unset: in memory, this process only (``anomaly serve``
    puts it in its run directory, which a restart replaces)."""
    series_max_keys: int = Field(100_000, ge=1)
    """Series kept per model; past it the least recently seen key is forgotten (it warms up
    again when it comes back)."""
    series_max_ahead_seconds: Annotated[float | None, BeforeValidator(_unset)] = Field(3600.0, gt=0)
    """How far ahead of this server's clock a series record's time may be (unset: no limit).
    One record from a skewed clock, or a local time sent without its zone, would otherwise
    make every later, correct record of its series late."""
    tf_threads: Annotated[int | None, BeforeValidator(_unset)] = Field(None, ge=1)
    """Threads per worker process for TensorFlow (old bundles) and the neighbour search; None
    leaves their defaults (``anomaly serve`` gives each worker its share of the cores)."""

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Built in code, a config is its arguments: a test's config must not change with the
        # environment it runs in. load_config passes the file and environment sources.
        return (init_settings,)

    @field_validator("models")
    @classmethod
    def _model_names(cls, models: dict[str, str]) -> dict[str, str]:
        bad = [name for name in models if not MODEL_NAME.match(name)]
        if bad:
            raise ValueError(
                "; ".join(f"model name {n!r} must match [a-z0-9_-] (1-64 characters)" for n in bad)
            )
        # An empty path is the working directory: served as "no model bundle at ." (--model
        # a= is refused as not NAME=DIR).
        empty = [name for name, path in models.items() if not path.strip()]
        if empty:
            raise ValueError(
                "; ".join(
                    f"model {n!r} has an empty path; give its bundle's directory" for n in empty
                )
            )
        return models

    @field_validator("passthrough_fields")
    @classmethod
    def _passthrough_names(cls, fields: tuple[str, ...]) -> tuple[str, ...]:
        # A field echoed beside the answer's own of its name: where the model set it, the
        # record's value was dropped; where not (a conditional model's context_unseen, a
        # series model's warming_up, a rejected record's anomaly_score), the record's value
        # went out as the answer's. Refused here, where the name is given, as training
        # refuses a column named like one the batch scorer adds (check_names_free).
        taken = [f for f in fields if f in ANSWER_FIELDS]
        if taken:
            raise ValueError(
                f"{taken}: the score answer has field(s) of that name itself "
                f"({', '.join(ANSWER_FIELDS)}), and an echoed value would be lost behind it or "
                f"taken for it; rename the field in the records (e.g. 'record_{taken[0]}') and "
                "list that name"
            )
        return fields

    @field_validator("alertmanager_url", "webhook_url", "external_url")
    @classmethod
    def _http_url(cls, url: str | None) -> str | None:
        # Checked here, not where the sinks are built: that runs in each gunicorn worker as it
        # boots, where a bad URL was a traceback per worker instead of one line at start.
        if url is not None:
            parts = urllib.parse.urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.netloc:
                raise ValueError(
                    f"{url!r} is not an http:// or https:// URL with a host, e.g. "
                    "http://127.0.0.1:9093"
                )
        return url

    @model_validator(mode="after")
    def _model_alerts(self) -> ServiceConfig:
        problems = [
            f"model_alerts names {name!r}, which is not a configured model"
            for name in self.model_alerts
            if name not in self.models
        ]
        for name in self.model_alerts:
            try:
                self.policy_for(name)
            except ValueError as exc:
                problems.append(f"invalid model_alerts for {name!r}: {exc}")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def check_alert_keys(self, fields: Mapping[str, Sequence[str]]) -> None:
        """Each model's alert key fields are fields its records can hold: ``fields[model]``
        (the columns it reads or carries) or a passthrough field. A misspelt field was not an
        error: every record lacked it, so all of them alerted under one key, ''. Models not in
        ``fields`` (not loaded) are not checked."""
        problems = []
        for name, known in fields.items():
            unknown = [
                f
                for f in self.policy_for(name).group_by
                if f not in known and f not in self.passthrough_fields
            ]
            if unknown:
                columns = ", ".join(map(printable, known))
                problems.append(
                    f"the alert policy of model '{name}' groups by {unknown}, which its records "
                    f"cannot hold (its columns: {columns}); name one of them, or a "
                    "field the records carry that passthrough_fields lists"
                )
        if problems:
            raise ConfigError("; ".join(problems))

    def policy_for(self, model: str) -> AlertPolicy:
        override = self.model_alerts.get(model)
        if not override:
            return self.alerts
        return AlertPolicy.from_dict({**self.alerts.to_dict(), **override})


def check_bundle_alert_keys(config: ServiceConfig) -> None:
    """``check_alert_keys`` with each model's fields read from its bundle's manifest, before
    any model is loaded (a bundle that cannot be read is left to loading to explain)."""
    from detector.bundles.bundle import bundle_record_fields

    fields = {name: bundle_record_fields(path) for name, path in config.models.items()}
    config.check_alert_keys({name: f for name, f in fields.items() if f is not None})


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
    ``overrides`` (command-line flags). Raises ``ConfigError`` naming every bad setting."""
    env = os.environ if env is None else env
    if path is None:
        path = env.get(CONFIG_FILE_VARIABLE) or None
    sources = (
        InitSettingsSource(ServiceConfig, dict(overrides or {})),
        Environment(ServiceConfig, env),
        *([] if path is None else [_file_source(Path(path))]),
    )
    try:
        # pydantic-settings' own argument, which mypy's view of the model's fields lacks.
        return ServiceConfig(_build_sources=(sources, {}))  # type: ignore[call-arg]
    except ValidationError as exc:
        raise ConfigError(_explained(exc)) from None


def _file_source(path: Path) -> PydanticBaseSettingsSource:
    if path.is_dir():
        raise ConfigError(
            f"configuration file {path} is a directory; name the .toml or .json file in it"
        )
    if path.exists() and not path.is_file():  # /dev/null, a pipe such as bash's <(...)
        raise ConfigError(
            f"configuration file {path} is not a regular file (a device or a pipe); write the "
            "settings to a .toml or .json file and name it"
        )
    if not path.is_file():
        raise ConfigError(f"configuration file {path} does not exist")
    if path.suffix not in (".toml", ".json"):
        raise ConfigError(f"configuration file {path} must end in .toml or .json")
    try:
        if path.suffix == ".toml":
            return TomlConfigSettingsSource(ServiceConfig, toml_file=path)
        _refuse_repeated_keys(path)
        return JsonConfigSettingsSource(ServiceConfig, json_file=path)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{path} is not valid {path.suffix[1:].upper()}: {exc}") from None
    except ConfigError:  # a ValueError too: _refuse_repeated_keys' own words
        raise
    except (TypeError, ValueError):
        raise ConfigError(f"{path} must hold a JSON object") from None


def _refuse_repeated_keys(path: Path) -> None:
    """A JSON file that names a key twice (two models under one name) is refused, as TOML
    refuses it: ``json`` keeps the last value without a word, and the other bundle was served
    under the name."""
    from detector.io.json_lines import RepeatedKeys, json_object

    found: list[RepeatedKeys] = []
    with contextlib.suppress(ValueError, OSError):  # unreadable: the settings source says so
        json.loads(path.read_bytes(), object_pairs_hook=functools.partial(json_object, found))
    if found:
        keys = sorted({key for value in found for key in value.repeated})
        raise ConfigError(f"{path} names {keys} more than once; give each key once")


class Environment(EnvSettingsSource):
    """``ANOMALY_*`` variables from a mapping (``os.environ`` in production), with the names
    that are no setting kept, so that validation refuses them by name."""

    def __init__(self, settings_cls: type[BaseSettings], environ: Mapping[str, str]) -> None:
        super().__init__(settings_cls)
        self.environ = {
            name: value
            for name, value in environ.items()
            if name.startswith(ENV_PREFIX) and name not in NOT_SETTINGS
        }
        # Names match settings in any case (ANOMALY_Admin_Token), as pydantic-settings reads
        # os.environ when case_sensitive is off, which is its default.
        self.env_vars = {name.lower(): value for name, value in self.environ.items()}

    def decode_complex_value(self, field_name: str, field: Any, value: Any) -> Any:
        try:
            return super().decode_complex_value(field_name, field, value)
        except ValueError:
            return value  # not JSON: validation names the setting and what it must be

    def explode_env_vars(self, field_name: str, field: Any, env_vars: Mapping[str, Any]) -> Any:
        # Inside a table the value's type is not known here (alerts is a dataclass, a
        # model_alerts entry any policy key): JSON where it parses, as at the top level.
        return _json_values(super().explode_env_vars(field_name, field, env_vars))

    def __call__(self) -> dict[str, Any]:
        known = set(self.settings_cls.model_fields)
        unknown = {
            setting: value
            for name, value in self.environ.items()
            if (setting := name[len(ENV_PREFIX) :].lower().split("__")[0]) not in known
        }
        return {**super().__call__(), **unknown}


def _json_values(table: dict[str, Any]) -> dict[str, Any]:
    for key, value in table.items():
        if isinstance(value, dict):
            _json_values(value)
        elif isinstance(value, str):
            with contextlib.suppress(json.JSONDecodeError):  # else text, such as a path
                table[key] = json.loads(value)
    return table


def _explained(exc: ValidationError) -> str:
    """One message for every problem pydantic found, each naming its setting and the fix."""
    errors = exc.errors()
    unknown = sorted(
        str(e["loc"][0]) for e in errors if e["type"] == "extra_forbidden" and len(e["loc"]) == 1
    )
    if unknown:
        known = ", ".join(sorted(ServiceConfig.model_fields))
        return f"unknown setting(s) {unknown}; the settings are: {known}"
    return "invalid service configuration: " + "; ".join(_problem(e) for e in errors)


#: pydantic's error types, in the words of a settings file.
_KINDS = {
    "bool": "true or false",
    "int": "a whole number",
    "float": "a number",
    "string": "text",
    "dict": "a table",
    "tuple": "a list",
    "list": "a list",
}
_BOUNDS = {
    "greater_than_equal": "at least {ge}",
    "greater_than": "more than {gt}",
    "less_than_equal": "at most {le}",
}


def _problem(error: ErrorDetails) -> str:
    name = ".".join(map(str, error["loc"])) or "settings"
    kind, _, _ = error["type"].partition("_")
    ctx = error.get("ctx", {})
    if error["type"] == "value_error":
        message = str(ctx.get("error", error["msg"]))
        return f"{name}: {message}" if error["loc"] else message
    if error["type"] in _BOUNDS:
        return f"{name} must be {_BOUNDS[error['type']].format(**ctx)}"
    if kind in _KINDS:
        return f"{name} must be {_KINDS[kind]}, got {error['input']!r}"
    return f"{name}: {error['msg']}"
