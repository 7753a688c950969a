"""Alerts: turn a stream of scored records into firing/resolved alerts and deliver them.

Three parts, each usable alone:

- ``AlertPolicy`` says when a run of anomalies is worth an alert (N anomalies among the last M
  records of a key), how severe it is (from the p-value) and when it is over.
- ``AlertTracker`` keeps one sliding window per key of one model and returns the alerts to emit
  *now*: a new firing alert, a repeat of a still-firing one (Alertmanager resolves an alert that
  is not re-sent within its ``resolve_timeout``), or a resolved one.
- ``AlertDispatcher`` delivers them off the request path to ``Sink``s (Alertmanager's v2 API, a
  JSON webhook, the log), through a bounded queue and one worker thread that retries with
  exponential backoff. Delivery outcomes go to a callback, so this module needs no metrics library.

Scores follow the house direction: ``anomaly_score`` is higher = more anomalous, and a smaller
p-value is stronger evidence of an anomaly.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
import threading
import time
import urllib.error
import urllib.request
from collections import OrderedDict, deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import pairwise
from typing import Any, Protocol

__all__ = [
    "Alert",
    "AlertDeliveryError",
    "AlertDispatcher",
    "AlertPolicy",
    "AlertTracker",
    "AlertmanagerSink",
    "LogSink",
    "Sink",
    "WebhookSink",
]

log = logging.getLogger(__name__)

#: Alertmanager label names (Prometheus data model); a key field becomes a label, so it must fit.
_LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
#: Labels this module sets itself; a key field of the same name would silently overwrite one.
_RESERVED_LABELS = frozenset({"alertname", "model", "severity"})
ALERT_NAME = "AnomalyDetected"
NO_SEVERITY = "none"


class AlertDeliveryError(RuntimeError):
    """A sink could not deliver a batch of alerts; the message names the endpoint and the cause."""


# --------------------------------------------------------------------------- policy


@dataclass(frozen=True)
class AlertPolicy:
    """When anomalies become an alert, how severe it is, and when it is over.

    ``severities`` are p-value bounds, most severe (smallest bound) first: an anomalous record
    with ``p_value <= bound`` gets that level; an anomaly whose p-value is above every bound gets
    the least severe level, so every anomaly has a severity.
    """

    severities: tuple[tuple[str, float], ...] = (("critical", 1e-4), ("warning", 1e-2))
    group_by: tuple[str, ...] = ()
    fire_after: int = 3
    window: int = 10
    resolve_after: int = 10
    cooldown_seconds: float = 300.0
    repeat_seconds: float = 60.0

    def __post_init__(self) -> None:
        # Validated here, not only in from_dict, so a policy built in code fails just as loudly.
        _check_severities(self.severities)
        _check_group_by(self.group_by)
        for name in ("fire_after", "window", "resolve_after"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(
                    f"alert policy {name!r} must be a positive integer, got {value!r}; "
                    f"set it to a count of records such as 3"
                )
        if self.fire_after > self.window:
            raise ValueError(
                f"alert policy 'fire_after' ({self.fire_after}) exceeds 'window' ({self.window}), "
                "so no key could ever fire; lower fire_after or widen window"
            )
        for name in ("cooldown_seconds", "repeat_seconds"):
            value = getattr(self, name)
            if (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or not math.isfinite(value)
                or value < 0
            ):
                raise ValueError(
                    f"alert policy {name!r} must be a finite number of seconds >= 0, "
                    f"got {value!r}; use e.g. 60"
                )

    def severity(self, p_value: float, is_anomaly: bool) -> str:
        """The level of one record: ``"none"`` when it is not anomalous."""
        if not is_anomaly:
            return NO_SEVERITY
        for name, bound in self.severities:
            if p_value <= bound:
                return name
        return self.severities[-1][0]

    def rank(self, severity: str) -> int:
        """0 for the most severe level; ``"none"`` ranks below every level."""
        for i, (name, _) in enumerate(self.severities):
            if name == severity:
                return i
        return len(self.severities)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> AlertPolicy:
        """Build from config, severities given as ``{"critical": 1e-4, "warning": 0.01}``.

        Raises ``ValueError`` naming the key and the fix for unknown keys or bad values.
        """
        known = {f.name for f in cls.__dataclass_fields__.values()}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(
                f"unknown alert policy key(s) {unknown}; expected some of: {sorted(known)}"
            )
        kwargs: dict[str, Any] = dict(d)
        if "severities" in d:
            raw = d["severities"]
            if not isinstance(raw, Mapping) or not raw:
                raise ValueError(
                    f"alert policy 'severities' must be a non-empty mapping of level to p-value "
                    f'bound, got {raw!r}; write e.g. {{"critical": 1e-4, "warning": 0.01}}'
                )
            # Config order carries no meaning: the smaller bound is the more severe level.
            levels = [(name, _as_bound(name, bound)) for name, bound in raw.items()]
            kwargs["severities"] = tuple(sorted(levels, key=lambda level: level[1]))
        if "group_by" in d:
            raw = d["group_by"]
            if isinstance(raw, str) or not isinstance(raw, Sequence):
                raise ValueError(
                    f"alert policy 'group_by' must be a list of record field names, got {raw!r}; "
                    'write e.g. ["host"]'
                )
            kwargs["group_by"] = tuple(raw)
        return cls(**kwargs)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready; ``from_dict(p.to_dict()) == p``."""
        return {
            "severities": dict(self.severities),
            "group_by": list(self.group_by),
            "fire_after": self.fire_after,
            "window": self.window,
            "resolve_after": self.resolve_after,
            "cooldown_seconds": self.cooldown_seconds,
            "repeat_seconds": self.repeat_seconds,
        }


def _as_bound(name: object, bound: object) -> float:
    if isinstance(bound, bool) or not isinstance(bound, int | float):
        raise ValueError(
            f"alert policy severity {name!r} has bound {bound!r}; give a p-value in (0, 1]"
        )
    return float(bound)


def _check_severities(severities: tuple[tuple[str, float], ...]) -> None:
    if not severities:
        raise ValueError("alert policy 'severities' is empty; give at least one level")
    names = [name for name, _ in severities]
    if len(set(names)) != len(names) or NO_SEVERITY in names:
        raise ValueError(
            f"alert policy 'severities' names {names} must be unique and not {NO_SEVERITY!r}; "
            "rename the repeated level"
        )
    bounds = []
    for name, bound in severities:
        if not isinstance(name, str) or not name:
            raise ValueError(f"alert policy severity name {name!r} must be a non-empty string")
        if isinstance(bound, bool) or not isinstance(bound, int | float) or not 0 < bound <= 1:
            raise ValueError(
                f"alert policy severity {name!r} has bound {bound!r}; give a p-value in (0, 1]"
            )
        bounds.append(bound)
    if any(a >= b for a, b in pairwise(bounds)):
        raise ValueError(
            f"alert policy 'severities' bounds {bounds} must strictly increase, most severe "
            "(smallest p-value) first; reorder the levels or make the bounds distinct"
        )


def _check_group_by(group_by: tuple[str, ...]) -> None:
    for name in group_by:
        if not isinstance(name, str) or not _LABEL_NAME.match(name):
            raise ValueError(
                f"alert policy 'group_by' field {name!r} cannot be an Alertmanager label name; "
                "use letters, digits and '_' (not starting with a digit)"
            )
        if name in _RESERVED_LABELS:
            raise ValueError(
                f"alert policy 'group_by' field {name!r} clashes with a label this service sets "
                f"({sorted(_RESERVED_LABELS)}); group by a differently named field"
            )
    if len(set(group_by)) != len(group_by):
        raise ValueError(
            f"alert policy 'group_by' {list(group_by)} repeats a field; list each field once"
        )


# --------------------------------------------------------------------------- alerts


@dataclass(frozen=True)
class Alert:
    """One alert to deliver: a key of one model firing, or resolved (then ``ends_at`` is set)."""

    model: str
    key: tuple[tuple[str, str], ...]
    status: str  # "firing" | "resolved"
    severity: str
    starts_at: datetime
    ends_at: datetime | None
    anomalies_in_window: int
    window: int  # records in the window so far, at most the policy's window
    last_anomaly_score: float  # higher = more anomalous
    last_p_value: float
    top_features: tuple[str, ...]
    model_version: str

    @property
    def fingerprint(self) -> str:
        """Stable across processes and restarts: a hash of the model and the key only."""
        payload = json.dumps([self.model, [list(pair) for pair in self.key]])
        return hashlib.sha256(payload.encode()).hexdigest()[:16]

    def labels(self) -> dict[str, str]:
        """Alertmanager identity: it groups, silences and dedupes alerts by these."""
        return {"alertname": ALERT_NAME, "model": self.model, "severity": self.severity} | dict(
            self.key
        )

    def annotations(self) -> dict[str, str]:
        where = ", ".join(f"{k}={v!r}" for k, v in self.key) or "all records"
        features = ", ".join(self.top_features) or "none reported"
        counts = f"{self.anomalies_in_window} of the last {self.window} records"
        if self.status == "resolved":
            summary = f"Model {self.model!r} back to normal for {where}"
        else:
            summary = f"Model {self.model!r}: {counts} anomalous for {where}"
        description = (
            f"{counts} scored by model {self.model!r}"
            f"{f' (version {self.model_version})' if self.model_version else ''} for {where} "
            f"were anomalous. Last anomaly: anomaly_score {self.last_anomaly_score:.6g} "
            f"(higher = more anomalous), p-value {self.last_p_value:.3g}. "
            f"Top features: {features}."
        )
        return {"summary": summary, "description": description}

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (non-finite numbers become null), times in ISO-8601 UTC."""
        return {
            "fingerprint": self.fingerprint,
            "model": self.model,
            "key": dict(self.key),
            "status": self.status,
            "severity": self.severity,
            "starts_at": _iso(self.starts_at),
            "ends_at": None if self.ends_at is None else _iso(self.ends_at),
            "anomalies_in_window": self.anomalies_in_window,
            "window": self.window,
            "last_anomaly_score": _finite_or_none(self.last_anomaly_score),
            "last_p_value": _finite_or_none(self.last_p_value),
            "top_features": list(self.top_features),
            "model_version": self.model_version,
            "labels": self.labels(),
            "annotations": self.annotations(),
        }


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _finite_or_none(value: float) -> float | None:
    return value if math.isfinite(value) else None


# --------------------------------------------------------------------------- tracker


@dataclass(slots=True)
class _KeyState:
    window: deque[str]  # one severity per record, "none" for normal records
    firing: bool = False
    severity: str = NO_SEVERITY  # the severity last sent while firing
    started: float = 0.0
    last_sent: float = 0.0
    resolved_at: float | None = None
    consecutive_normal: int = 0
    last_score: float = math.nan
    last_p: float = math.nan
    top_features: tuple[str, ...] = ()
    model_version: str = ""


class AlertTracker:
    """Per-model state machine over sliding windows, one per key; thread-safe (one lock).

    A record missing a ``group_by`` field (or holding ``None`` there) counts under the value
    ``""`` for it, so such records still alert, together, rather than being dropped.

    The severity of an episode is the most severe level in the window when it fires; it is raised
    (never lowered) while firing as more severe records arrive. Alertmanager identifies an alert
    by its labels, severity included, so a raise sends the old severity resolved and the new one
    firing. Lowering is left out on purpose: it would page "resolved" while still anomalous.

    At most ``max_keys`` keys are tracked; a new key beyond that evicts the least recently seen
    key that is not firing (a firing one only if every key is firing, with a warning logged).
    """

    def __init__(
        self,
        model: str,
        policy: AlertPolicy,
        *,
        clock: Callable[[], float] = time.time,
        max_keys: int = 10_000,
    ) -> None:
        self.model = model
        self.policy = policy
        self.max_keys = max_keys
        self._clock = clock
        self._lock = threading.Lock()
        self._states: OrderedDict[tuple[tuple[str, str], ...], _KeyState] = OrderedDict()

    def __len__(self) -> int:
        """The number of keys tracked now."""
        with self._lock:
            return len(self._states)

    def key_of(self, record: Mapping[str, object]) -> tuple[tuple[str, str], ...]:
        return tuple(
            (name, "" if record.get(name) is None else str(record.get(name)))
            for name in self.policy.group_by
        )

    def observe(
        self,
        record: Mapping[str, object],
        *,
        is_anomaly: bool,
        p_value: float,
        anomaly_score: float,
        top_features: Sequence[str],
        model_version: str = "",
    ) -> list[Alert]:
        """Account one scored record; return the alerts to emit now (usually none)."""
        key = self.key_of(record)
        severity = self.policy.severity(p_value, is_anomaly)
        with self._lock:
            now = self._clock()
            state = self._state_for(key)
            state.window.append(severity)
            state.model_version = model_version
            if severity != NO_SEVERITY:
                state.consecutive_normal = 0
                state.last_score = float(anomaly_score)
                state.last_p = float(p_value)
                state.top_features = tuple(top_features)
            else:
                state.consecutive_normal += 1
            if state.firing:
                return self._while_firing(key, state, now)
            return self._while_quiet(key, state, now)

    def _while_quiet(
        self, key: tuple[tuple[str, str], ...], state: _KeyState, now: float
    ) -> list[Alert]:
        if _count_anomalies(state.window) < self.policy.fire_after:
            return []
        if state.resolved_at is not None and now - state.resolved_at < self.policy.cooldown_seconds:
            return []
        state.firing = True
        state.started = now
        state.last_sent = now
        state.severity = self._window_severity(state)
        return [self._alert(key, state, "firing", now)]

    def _while_firing(
        self, key: tuple[tuple[str, str], ...], state: _KeyState, now: float
    ) -> list[Alert]:
        if state.consecutive_normal >= self.policy.resolve_after:
            state.firing = False
            state.resolved_at = now
            return [self._alert(key, state, "resolved", now)]
        current = self._window_severity(state)
        if self.policy.rank(current) < self.policy.rank(state.severity):
            old = self._alert(key, state, "resolved", now)
            state.severity = current
            state.last_sent = now
            return [old, self._alert(key, state, "firing", now)]
        if now - state.last_sent >= self.policy.repeat_seconds:
            state.last_sent = now
            return [self._alert(key, state, "firing", now)]
        return []

    def _window_severity(self, state: _KeyState) -> str:
        return min(state.window, key=self.policy.rank)

    def _state_for(self, key: tuple[tuple[str, str], ...]) -> _KeyState:
        state = self._states.get(key)
        if state is not None:
            self._states.move_to_end(key)
            return state
        if len(self._states) >= self.max_keys:
            self._evict_one()
        state = _KeyState(window=deque(maxlen=self.policy.window))
        self._states[key] = state
        return state

    def _evict_one(self) -> None:
        # Oldest first: OrderedDict keeps keys in least-recently-seen order.
        victim = next((k for k, s in self._states.items() if not s.firing), None)
        if victim is None:
            victim = next(iter(self._states))
            log.warning(
                "model %r: all %d tracked alert keys are firing; forgetting %r, whose alert "
                "Alertmanager will resolve on its own. Raise max_keys or group by fewer fields",
                self.model,
                self.max_keys,
                dict(victim),
            )
        del self._states[victim]

    def _alert(
        self, key: tuple[tuple[str, str], ...], state: _KeyState, status: str, now: float
    ) -> Alert:
        return Alert(
            model=self.model,
            key=key,
            status=status,
            severity=state.severity,
            starts_at=datetime.fromtimestamp(state.started, UTC),
            ends_at=datetime.fromtimestamp(now, UTC) if status == "resolved" else None,
            anomalies_in_window=_count_anomalies(state.window),
            window=len(state.window),
            last_anomaly_score=state.last_score,
            last_p_value=state.last_p,
            top_features=state.top_features,
            model_version=state.model_version,
        )


def _count_anomalies(window: deque[str]) -> int:
    return sum(1 for severity in window if severity != NO_SEVERITY)


# --------------------------------------------------------------------------- sinks


class Sink(Protocol):
    """Somewhere alerts go. ``send`` raises on failure; the dispatcher retries."""

    name: str

    def send(self, alerts: Sequence[Alert]) -> None: ...


def _check_url(url: str, what: str) -> None:
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"{what} URL {url!r} must start with http:// or https://")


def _post_json(url: str, body: object, timeout: float) -> None:
    data = json.dumps(body, allow_nan=False).encode()
    request = urllib.request.Request(
        url, data=data, method="POST", headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            response.read()
    except urllib.error.HTTPError as exc:
        # Read and close the error body here: an unclosed one leaks its socket.
        with exc:
            detail = exc.read(500).decode(errors="replace").strip()
        raise AlertDeliveryError(
            f"POST {url} answered HTTP {exc.code}: {detail or exc.reason}; "
            "check the URL and the receiver's logs"
        ) from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise AlertDeliveryError(
            f"POST {url} failed: {reason}; check that the receiver is up and reachable"
        ) from exc


class AlertmanagerSink:
    """Alertmanager's v2 API: ``POST {url}/api/v2/alerts`` with a JSON list of alerts.

    A firing alert is sent without ``endsAt``, so Alertmanager keeps it until its
    ``resolve_timeout`` unless re-sent; the tracker re-sends every ``repeat_seconds``.
    """

    def __init__(
        self, url: str, *, generator_url: str, timeout: float = 5.0, name: str = "alertmanager"
    ) -> None:
        _check_url(url, "Alertmanager")
        self.name = name
        self.url = url.rstrip("/") + "/api/v2/alerts"
        self.generator_url = generator_url
        self.timeout = timeout

    def payload(self, alerts: Sequence[Alert]) -> list[dict[str, Any]]:
        body = []
        for alert in alerts:
            item: dict[str, Any] = {
                "labels": alert.labels(),
                "annotations": alert.annotations(),
                "startsAt": _iso(alert.starts_at),
                "generatorURL": self.generator_url,
            }
            if alert.ends_at is not None:
                item["endsAt"] = _iso(alert.ends_at)
            body.append(item)
        return body

    def send(self, alerts: Sequence[Alert]) -> None:
        _post_json(self.url, self.payload(alerts), self.timeout)


class WebhookSink:
    """Any JSON receiver: ``POST url`` with ``{"alerts": [alert.to_dict(), ...]}``."""

    def __init__(self, url: str, *, timeout: float = 5.0, name: str = "webhook") -> None:
        _check_url(url, "webhook")
        self.name = name
        self.url = url
        self.timeout = timeout

    def send(self, alerts: Sequence[Alert]) -> None:
        _post_json(self.url, {"alerts": [alert.to_dict() for alert in alerts]}, self.timeout)


class LogSink:
    """Logs each alert on logger ``service.alerts``: WARNING when firing, INFO when resolved."""

    def __init__(self, *, name: str = "log") -> None:
        self.name = name

    def send(self, alerts: Sequence[Alert]) -> None:
        for alert in alerts:
            level = logging.WARNING if alert.status == "firing" else logging.INFO
            log.log(
                level,
                "alert %s %s [%s]: %s",
                alert.status,
                alert.fingerprint,
                alert.severity,
                alert.annotations()["description"],
            )


# --------------------------------------------------------------------------- dispatcher


@dataclass
class _Queue:
    """The dispatcher's shared state, guarded by ``cond``."""

    cond: threading.Condition = field(default_factory=threading.Condition)
    alerts: deque[Alert] = field(default_factory=deque)
    in_flight: bool = False
    stopping: bool = False
    give_up_at: float | None = None  # time.monotonic() after which stop() abandons delivery


class AlertDispatcher:
    """Delivery off the request path: a bounded queue, one daemon worker, retries with backoff.

    The worker takes everything queued as one batch and sends it to each sink in turn, trying
    ``1 + retries`` times with sleeps of ``backoff_seconds * 2**i`` between tries. After that,
    ``on_outcome(sink.name, "sent" | "failed")`` is called once per batch per sink; when the
    queue is full, ``on_outcome("queue", "dropped")`` once per alert dropped. The callback runs
    on the worker thread (or the submitting thread for drops) and must be quick and thread-safe;
    an exception it raises is logged, not propagated.
    """

    def __init__(
        self,
        sinks: Sequence[Sink],
        *,
        queue_size: int = 1000,
        retries: int = 3,
        backoff_seconds: float = 0.2,
        recent_size: int = 200,
        on_outcome: Callable[[str, str], None] = lambda sink, outcome: None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.sinks = tuple(sinks)
        self.queue_size = queue_size
        self.retries = retries
        self.backoff_seconds = backoff_seconds
        self._on_outcome = on_outcome
        self._sleep = sleep
        self._q = _Queue()
        self._recent: deque[dict[str, Any]] = deque(maxlen=recent_size)
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        with self._q.cond:
            if self._thread is not None:
                raise RuntimeError("AlertDispatcher already started; create a new one to restart")
            self._thread = threading.Thread(target=self._run, name="alert-dispatcher", daemon=True)
            self._thread.start()

    def submit(self, alerts: Sequence[Alert]) -> None:
        """Queue alerts for delivery; never blocks. A full queue drops its oldest alert."""
        if not alerts:
            return
        dropped = 0
        with self._q.cond:
            stopped = self._q.stopping
            if stopped:
                dropped = len(alerts)
            else:
                for alert in alerts:
                    if len(self._q.alerts) >= self.queue_size:
                        self._q.alerts.popleft()
                        dropped += 1
                    self._q.alerts.append(alert)
                    self._recent.append(alert.to_dict())
                self._q.cond.notify_all()
        if stopped:
            log.warning("alert dispatcher is stopped; dropped %d new alert(s)", dropped)
        elif dropped:
            log.warning(
                "alert queue full (%d); dropped the %d oldest alert(s)", self.queue_size, dropped
            )
        # Outside the lock: the callback is the caller's code (a metrics counter, typically).
        for _ in range(dropped):
            self._report("queue", "dropped")

    def recent(self) -> list[dict[str, Any]]:
        """The most recent alerts submitted, newest last, as dicts."""
        with self._q.cond:
            return list(self._recent)

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until nothing is queued or being sent; False if that did not happen in time."""
        with self._q.cond:
            return self._q.cond.wait_for(
                lambda: not self._q.alerts and not self._q.in_flight, timeout=timeout
            )

    def stop(self, timeout: float = 5.0) -> None:
        """Deliver what is queued (best effort within ``timeout``), then end the worker."""
        with self._q.cond:
            self._q.stopping = True
            self._q.give_up_at = time.monotonic() + timeout
            self._q.cond.notify_all()
            thread = self._thread
        if thread is not None:
            thread.join(timeout)
            if thread.is_alive():
                log.warning("alert dispatcher did not stop within %.1f s", timeout)

    def _run(self) -> None:
        while True:
            with self._q.cond:
                self._q.cond.wait_for(lambda: bool(self._q.alerts) or self._q.stopping)
                batch = list(self._q.alerts)
                self._q.alerts.clear()
                self._q.in_flight = bool(batch)
                abandon = self._past_deadline()
                if abandon or not batch:
                    self._q.in_flight = False
                    self._q.cond.notify_all()
            if not batch:
                return  # stopping, and nothing left to deliver
            if abandon:
                log.warning("alert dispatcher stopping: %d alert(s) not delivered", len(batch))
                for _ in batch:
                    self._report("queue", "dropped")
                return
            try:
                for sink in self.sinks:
                    self._report(sink.name, self._deliver(sink, batch))
            finally:
                with self._q.cond:
                    self._q.in_flight = False
                    self._q.cond.notify_all()

    def _deliver(self, sink: Sink, batch: list[Alert]) -> str:
        for attempt in range(self.retries + 1):
            try:
                sink.send(batch)
                return "sent"
            except Exception as exc:
                if attempt == self.retries or self._past_deadline():
                    log.warning(
                        "alert sink %r failed %d time(s), giving up on %d alert(s): %s",
                        sink.name,
                        attempt + 1,
                        len(batch),
                        exc,
                    )
                    return "failed"
                delay = self.backoff_seconds * 2**attempt
                log.info("alert sink %r failed (%s); retrying in %.2f s", sink.name, exc, delay)
                self._sleep(delay)
        return "failed"  # only reached with retries < 0, which tries nothing

    def _past_deadline(self) -> bool:
        give_up_at = self._q.give_up_at
        return give_up_at is not None and time.monotonic() >= give_up_at

    def _report(self, sink: str, outcome: str) -> None:
        try:
            self._on_outcome(sink, outcome)
        except Exception:
            log.exception("on_outcome callback failed for (%r, %r)", sink, outcome)
