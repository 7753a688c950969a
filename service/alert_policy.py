"""Alert policy: when a run of anomalies is worth an alert, how severe it is, and when it is over.

``AlertPolicy`` fires after N anomalies among the last M records of a key, takes the severity
from the p-value (a smaller p-value is stronger evidence of an anomaly) and resolves after a run
of normal records. It is validated when built, in code or from config, and names the fix.
``service.alerts.AlertTracker`` applies it to a stream of scored records.
"""

from __future__ import annotations

import math
import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import Any

__all__ = ["NO_SEVERITY", "AlertPolicy"]

#: Alertmanager label names (Prometheus data model); a key field becomes a label, so it must fit.
_LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
#: Labels ``service.alerts.Alert`` sets itself; a key field of the same name would silently
#: overwrite one.
_RESERVED_LABELS = frozenset({"alertname", "model", "severity"})
NO_SEVERITY = "none"


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
    #: The least time an alert fires before normal records resolve it: one firing and
    #: resolved within a second never reached a pager, as Alertmanager waits (group_wait,
    #: 10-30 s as shipped) before it tells anyone of a new alert, and tells nothing of one
    #: already resolved by then.
    min_firing_seconds: float = 60.0
    #: Fields of a key's last anomalous record that its alerts carry (an id, the record's
    #: time): which transaction or minute to look at, not only which host.
    record_fields: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        # Validated here, not only in from_dict, so a policy built in code fails just as loudly.
        _check_severities(self.severities)
        _check_group_by(self.group_by)
        _check_record_fields(self.record_fields)
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
        for name in ("cooldown_seconds", "repeat_seconds", "min_firing_seconds"):
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

    def most_severe(self, seen: Collection[str]) -> str:
        """``min(seen, key=self.rank)``: the most severe level in ``seen`` (a key's window of
        severities, not empty), or where it holds none, its first entry (``"none"``, or a
        level this policy does not name, read back from a shared state file: all rank
        alike, below every level).

        A firing key asks it on every record: with ``min`` that was ``window`` calls of
        ``rank`` a record (10,000 of the ~12,000 a 1,000-record request made, 4.8 ms of its
        ~52 ms); asking the window for each level, most severe first, is a scan in C per
        level."""
        for name, _ in self.severities:
            if name in seen:
                return name
        for first in seen:
            return first
        raise ValueError("most_severe() of no severities")

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
        if "record_fields" in d:
            raw = d["record_fields"]
            if isinstance(raw, str) or not isinstance(raw, Sequence):
                raise ValueError(
                    f"alert policy 'record_fields' must be a list of record field names, got "
                    f'{raw!r}; write e.g. ["transaction_id", "ts"]'
                )
            kwargs["record_fields"] = tuple(raw)
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
            "min_firing_seconds": self.min_firing_seconds,
            "record_fields": list(self.record_fields),
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


#: Record fields an alert carries at most: each is in every alert of its key.
MAX_RECORD_FIELDS = 10


def _check_record_fields(names: tuple[str, ...]) -> None:
    if any(not isinstance(name, str) or not name or len(name) > 200 for name in names):
        raise ValueError(
            f"alert policy 'record_fields' {list(names)!r} must be field names (text of 1 to "
            '200 characters); list the record fields to carry, e.g. ["transaction_id"]'
        )
    if len(set(names)) != len(names) or len(names) > MAX_RECORD_FIELDS:
        raise ValueError(
            f"alert policy 'record_fields' {list(names)} must list at most "
            f"{MAX_RECORD_FIELDS} fields, each once; keep the ones that identify a record"
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
