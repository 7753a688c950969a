"""Alerts: turn a stream of scored records into firing/resolved alerts.

- ``AlertPolicy`` (``service.alert_policy``) says when a run of anomalies is worth an alert,
  how severe it is (from the p-value) and when it is over.
- ``AlertTracker`` keeps one sliding window per key of one model and returns the alerts to emit
  *now*: a new firing alert, a repeat of a still-firing one (Alertmanager resolves an alert that
  is not re-sent within its ``resolve_timeout``), or a resolved one.
- ``Alert`` is one of those, with its Alertmanager labels and annotations.
- Delivering them is ``service.delivery`` (``AlertDispatcher``) and ``service.sinks``.

Scores follow the house direction: ``anomaly_score`` is higher = more anomalous, and a smaller
p-value is stronger evidence of an anomaly.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import math
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from detector.features.schema import same_letters
from detector.series.windows import key_number
from service.alert_policy import NO_SEVERITY, AlertPolicy
from service.alert_state import DEFAULT_MAX_KEYS

if TYPE_CHECKING:
    from service.alert_state import SharedAlertStates

__all__ = ["Alert", "AlertTracker", "iso_utc"]

log = logging.getLogger(__name__)

ALERT_NAME = "AnomalyDetected"


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
    #: The policy's ``record_fields`` of the key's last anomalous record, as it held them.
    last_record: Mapping[str, str] = field(default_factory=dict)
    #: Resolved because the key sent no record for this many seconds, not because its records
    #: came back normal (then ``None``): on-call must tell a recovery from a host gone dark.
    silent_for: float | None = None

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
        silent = self.status == "resolved" and self.silent_for is not None
        if silent:
            summary = (
                f"Model {self.model!r}: no record for {where} in {self.silent_for:.0f} s; "
                "resolved as silent, not seen back to normal"
            )
        elif self.status == "resolved":
            summary = f"Model {self.model!r} back to normal for {where}"
        else:
            summary = f"Model {self.model!r}: {counts} anomalous for {where}"
        gone = (
            f"Resolved because {where} sent no record for {self.silent_for:.0f} s "
            "(4 x repeat_seconds): it may be down or gone; before it went silent, "
            if silent
            else ""
        )
        description = gone + (
            f"{counts} scored by model {self.model!r}"
            f"{f' (version {self.model_version})' if self.model_version else ''} for {where} "
            f"were anomalous. Last anomaly: anomaly_score {self.last_anomaly_score:.6g} "
            f"(higher = more anomalous), p-value {self.last_p_value:.3g}. "
            f"Top features: {features}."
        )
        if self.last_record:
            shown = ", ".join(f"{k}={v!r}" for k, v in self.last_record.items())
            description += f" Last anomalous record: {shown}."
        return {"summary": summary, "description": description}

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (non-finite numbers become null), times in ISO-8601 UTC."""
        return {
            "fingerprint": self.fingerprint,
            "model": self.model,
            "key": dict(self.key),
            "status": self.status,
            "severity": self.severity,
            "starts_at": iso_utc(self.starts_at),
            "ends_at": None if self.ends_at is None else iso_utc(self.ends_at),
            "anomalies_in_window": self.anomalies_in_window,
            "window": self.window,
            "last_anomaly_score": _finite_or_none(self.last_anomaly_score),
            "last_p_value": _finite_or_none(self.last_p_value),
            "top_features": list(self.top_features),
            "model_version": self.model_version,
            "last_record": dict(self.last_record),
            "resolved_by": None
            if self.status != "resolved"
            else ("silence" if self.silent_for is not None else "normal_records"),
            "labels": self.labels(),
            "annotations": self.annotations(),
        }


def iso_utc(moment: datetime) -> str:
    """``moment`` as ISO 8601 in UTC to the millisecond, ``Z``-suffixed (Alertmanager's form)."""
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
    seen: float = 0.0  # the time of its last record (the shared store keeps it beside)
    last_record: dict[str, str] = field(default_factory=dict)  # policy's record_fields


#: The longest alert key value kept as it is, in characters: the value becomes an Alertmanager
#: label and the ``key`` label of ``anomaly_key_anomalies_total``, and a client sends it.
MAX_LABEL_CHARS = 200


def label_value(value: object) -> str:
    """``value`` as an alert key's label: ``""`` for none; a longer text than
    ``MAX_LABEL_CHARS`` is its start and a hash of the whole, so that long values stay apart
    but no client can put megabytes into every alert and every scrape."""
    # One Unicode form (NFC), as a series model keys its series: a host spelled with its accent
    # as a character of its own is the same host.
    # A JSON 7.0 is host 7 and a JSON true 'true', as a series model keys them (key_number):
    # one host's alerts counted under '7' and '7.0', each short of fire_after.
    number = key_number(value)
    text = "" if value is None else same_letters(str(value) if number is None else number)
    if len(text) <= MAX_LABEL_CHARS:
        return text
    digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:16]
    return f"{text[: MAX_LABEL_CHARS - 20]}...#{digest}"


def key_text(key: Sequence[tuple[str, str]]) -> str:
    """An alert key as one text (the metric's ``key`` label): ``host=web-01,dc=eu``, each
    ``\\``, ``,`` and ``=`` in a name or value escaped with a backslash, so that two keys never
    read the same (``host='h1,id=x', id='y'`` and ``host='h1', id='x,id=y'`` did)."""

    def escaped(text: str) -> str:
        return text.replace("\\", "\\\\").replace(",", "\\,").replace("=", "\\=")

    return ",".join(f"{escaped(name)}={escaped(value)}" for name, value in key)


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

    A firing key that has sent no record for ``stale_seconds`` (a host gone, a pod replaced)
    resolves (``resolve_silent``): it fired for good before, held its slot (eviction keeps
    firing keys) until firing ghosts filled the table, and a webhook never heard the end.

    With ``shared`` (``service.alert_state``) the keys' states live in a file every worker of
    the server reads and writes, a request's records in one transaction (``batch``): one
    worker makes each transition and the others see it. Without, they live in this process.
    """

    def __init__(
        self,
        model: str,
        policy: AlertPolicy,
        *,
        clock: Callable[[], float] = time.time,
        max_keys: int = DEFAULT_MAX_KEYS,
        shared: SharedAlertStates | None = None,
        stale_seconds: float | None = None,
    ) -> None:
        self.model = model
        self.policy = policy
        self.max_keys = max_keys
        self.stale_seconds = stale_seconds
        self._next_sweep = -math.inf
        self._clock = clock
        self._lock = threading.RLock()
        self._states: OrderedDict[tuple[tuple[str, str], ...], _KeyState] = OrderedDict()
        self._shared = shared
        self._open: Any = None  # the shared keys of the batch under way

    @contextmanager
    def batch(self, records: Sequence[Mapping[str, object]] = ()) -> Iterator[None]:
        """Observe a request's ``records`` together: with shared state, in one transaction
        that reads their keys' states at once."""
        with self._lock:
            if self._shared is None or self._open is not None:
                yield
                return
            codec = (_state_text, functools.partial(_state_from, window=self.policy.window))
            with self._shared.transaction(self.model, self._clock(), codec) as keys:
                keys.prefetch(dict.fromkeys(self.key_of(record) for record in records))
                self._open = keys
                try:
                    yield
                finally:
                    self._open = None

    def _batch_of_one(self) -> AbstractContextManager[None]:
        """``batch()`` for one record, under the lock: nothing to open where no state is
        shared or this thread's request opened its batch (it holds the lock throughout). Not
        entering ``batch``'s generator then saves ~1-3 us a record, a 1,000-record request's
        alerts 1-3 ms."""
        if self._shared is None or self._open is not None:
            return _NOTHING_TO_OPEN
        return self.batch()

    def firing(self, key: tuple[tuple[str, str], ...], severity: str) -> bool:
        """Whether ``key`` still fires at ``severity`` (Alertmanager's re-sends ask)."""
        if self._shared is not None:
            stored = self._shared.firing(self.model, key)
            return stored is not None and json.loads(stored).get("severity") == severity
        with self._lock:
            state = self._states.get(key)
            return state is not None and state.firing and state.severity == severity

    def __len__(self) -> int:
        """The number of keys tracked now."""
        with self._lock:
            return len(self._states)

    def key_of(self, record: Mapping[str, object]) -> tuple[tuple[str, str], ...]:
        return tuple((name, label_value(record.get(name))) for name in self.policy.group_by)

    def observe(
        self,
        record: Mapping[str, object],
        *,
        is_anomaly: bool,
        p_value: float,
        anomaly_score: float,
        top_features: Sequence[str],
        model_version: str = "",
        shown: Sequence[str] = (),
    ) -> list[Alert]:
        """Account one scored record; return the alerts to emit now (usually none). ``shown``:
        fields an alert carries of its last anomalous record beside the policy's
        ``record_fields`` (a series model's time)."""
        key = self.key_of(record)
        severity = self.policy.severity(p_value, is_anomaly)
        with self._lock, self._batch_of_one():
            now = self._clock()
            state = self._state_for(key)
            state.window.append(severity)
            state.model_version = model_version
            state.seen = now
            if severity != NO_SEVERITY:
                state.consecutive_normal = 0
                state.last_score = float(anomaly_score)
                state.last_p = float(p_value)
                state.top_features = tuple(top_features)
                state.last_record = {
                    name: label_value(record[name])
                    for name in dict.fromkeys((*self.policy.record_fields, *shown))
                    if name in record
                }
            else:
                state.consecutive_normal += 1
            if state.firing:
                made = self._while_firing(key, state, now)
            else:
                made = self._while_quiet(key, state, now)
            if made and self._open is not None:  # the server's log, beside its transitions
                self._open.made.extend(alert.to_dict() for alert in made)
            return made

    def resolve_silent(self) -> list[Alert]:
        """Resolve the firing keys that have sent no record for ``stale_seconds`` and return
        their resolved alerts; looked for at most every quarter of that, by whichever worker
        gets there first (in its batch's transaction, with shared state)."""
        if self.stale_seconds is None:
            return []
        with self._lock:
            now = self._clock()
            if now < self._next_sweep:
                return []
            self._next_sweep = now + self.stale_seconds / 4
        with self._lock, self.batch():
            oldest = now - self.stale_seconds
            if self._open is not None:
                silent = self._open.silent(oldest)
            else:
                silent = [(k, s) for k, s in self._states.items() if s.firing and s.seen < oldest]
            made = []
            for key, state in silent:
                state.firing = False
                state.resolved_at = now
                made.append(self._alert(key, state, "resolved", now, silent_for=now - state.seen))
                state.window.clear()
                state.consecutive_normal = 0
                if self._open is not None:
                    self._open.put(key, state, seen=state.seen)
            if made:
                log.info(
                    "model %r: %d firing alert key(s) sent no record for %.0f s: resolved",
                    self.model,
                    len(made),
                    self.stale_seconds,
                )
                if self._open is not None:
                    self._open.made.extend(alert.to_dict() for alert in made)
            return made

    def _while_quiet(
        self, key: tuple[tuple[str, str], ...], state: _KeyState, now: float
    ) -> list[Alert]:
        if _count_anomalies(state.window) < self.policy.fire_after:
            return []
        if state.resolved_at is not None and now - state.resolved_at < self.policy.cooldown_seconds:
            # A cooldown after a warning does not hold back a critical: an SRE helper's eight
            # critical records went unpaged for the rest of a brief warning's 300 s.
            current = self._window_severity(state)
            if self.policy.rank(current) >= self.policy.rank(state.severity):
                return []
        state.firing = True
        state.started = now
        state.last_sent = now
        state.severity = self._window_severity(state)
        return [self._alert(key, state, "firing", now)]

    def _while_firing(
        self, key: tuple[tuple[str, str], ...], state: _KeyState, now: float
    ) -> list[Alert]:
        held = now - state.started < self.policy.min_firing_seconds
        if state.consecutive_normal >= self.policy.resolve_after and not held:
            state.firing = False
            state.resolved_at = now
            resolved = self._alert(key, state, "resolved", now)
            # The episode's anomalies end with it: left in the window (resolve_after below
            # window), they fired it again after the cooldown on a normal record.
            state.window.clear()
            return [resolved]
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
        return self.policy.most_severe(state.window)

    def _state_for(self, key: tuple[tuple[str, str], ...]) -> _KeyState:
        if self._open is not None:
            state = self._open.get(key)
            if state is None:
                state = _KeyState(window=deque(maxlen=self.policy.window))
            self._open.put(key, state)
            return state
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
                "Alertmanager will resolve on its own; group_by fewer fields, or look for what "
                "makes so many keys fire",
                self.model,
                self.max_keys,
                dict(victim),
            )
        del self._states[victim]

    def _alert(
        self,
        key: tuple[tuple[str, str], ...],
        state: _KeyState,
        status: str,
        now: float,
        *,
        silent_for: float | None = None,
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
            last_record=dict(state.last_record),
            silent_for=silent_for,
        )


_NOTHING_TO_OPEN = nullcontext()


def _count_anomalies(window: deque[str]) -> int:
    return sum(1 for severity in window if severity != NO_SEVERITY)


_STATE_FIELDS = fields(_KeyState)


def _state_text(state: _KeyState) -> str:
    """A key's state as the shared store keeps it (JSON; NaN as null)."""
    # Field by field: dataclasses.asdict deep-copies, 1.4 s of a request of 10,000 keys.
    out = {f.name: getattr(state, f.name) for f in _STATE_FIELDS}
    out["window"] = list(state.window)
    out["top_features"] = list(state.top_features)
    for name in ("last_score", "last_p"):
        if not math.isfinite(out[name]):
            out[name] = None
    return json.dumps(out)


def _state_from(text: str, *, window: int) -> _KeyState:
    data = json.loads(text)
    values = {f.name: data[f.name] for f in _STATE_FIELDS if f.name in data}
    values["window"] = deque(values.get("window", ()), maxlen=window)
    values["top_features"] = tuple(values.get("top_features", ()))
    if not isinstance(values.get("last_record", {}), dict):  # a state stored by no version
        values["last_record"] = {}
    for name in ("last_score", "last_p"):
        if values.get(name) is None:
            values[name] = math.nan
    return _KeyState(**values)
