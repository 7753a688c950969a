"""Alerts: policy, the per-key state machine, delivery with retries, and real HTTP receivers.

Time never passes by sleeping: the tracker takes a fake clock, the dispatcher a recording sleep,
and waits on threads use flush() or a condition with a deadline.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import shutil
import socket
import sqlite3
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections import deque
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from detector.errors import ConfigError
from detector.estimator import VAEDetector
from service.alert_policy import AlertPolicy
from service.alerts import Alert, AlertTracker
from service.delivery import AlertDispatcher
from service.sinks import AlertDeliveryError, AlertmanagerSink, LogSink, WebhookSink
from tests.conftest import DATA, TINY
from tests.processes import alertmanager_config, free_port, stop
from tests.service.conftest import ADMIN, Outcomes, Receiver, make_app

T0 = 1_700_000_000.0


class FakeClock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


def feed(
    tracker: AlertTracker, pattern: str, *, p_value: float = 1e-3, **record: object
) -> list[Alert]:
    """Observe one record per character: 'A' anomalous, '.' normal; return every alert."""
    alerts: list[Alert] = []
    for char in pattern:
        alerts += tracker.observe(
            record,
            is_anomaly=char == "A",
            p_value=p_value if char == "A" else 0.5,
            anomaly_score=12.5 if char == "A" else 1.0,
            top_features=("cpu", "mem"),
            model_version="v7",
        )
    return alerts


def make_alert(status: str = "firing", *, model_version: str = "v1") -> Alert:
    start = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)
    return Alert(
        model="payments",
        key=(("host", "web-1"),),
        status=status,
        severity="critical",
        starts_at=start,
        ends_at=datetime(2024, 5, 1, 12, 5, 0, tzinfo=UTC) if status == "resolved" else None,
        anomalies_in_window=4,
        window=10,
        last_anomaly_score=42.0,
        last_p_value=2e-5,
        top_features=("cpu", "latency_ms"),
        model_version=model_version,
    )


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    # urllib would send even 127.0.0.1 through a proxy named in the environment.
    for name in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)


# --------------------------------------------------------------------------- policy


def test_severity_levels_most_severe_first() -> None:
    policy = AlertPolicy()
    assert policy.severity(1e-6, True) == "critical"
    assert policy.severity(1e-4, True) == "critical"  # the bound itself is included
    assert policy.severity(5e-3, True) == "warning"
    assert policy.severity(0.3, True) == "warning"  # above every bound: least severe level
    assert policy.severity(1e-9, False) == "none"


def test_a_windows_most_severe_level_is_the_one_of_lowest_rank() -> None:
    # Every window of up to 4 records over three levels, "none", and a level the policy does
    # not name (a shared state file written under another policy): the same answer, the very
    # same entry, as ranking each record.
    policy = AlertPolicy.from_dict({"severities": {"page": 1e-6, "critical": 1e-4, "w": 0.01}})
    seen = ["page", "critical", "w", "none", "retired"]
    for size in range(1, 5):
        for window in itertools.product(seen, repeat=size):
            ranked = min(window, key=policy.rank)
            assert policy.most_severe(deque(window)) == ranked, window
    with pytest.raises(ValueError):  # as min() of nothing
        policy.most_severe(deque())


def test_policy_round_trips_through_a_dict_and_json() -> None:
    config = {
        "severities": {"warning": 0.01, "page": 1e-6, "critical": 1e-4},  # order is irrelevant
        "group_by": ["host", "region"],
        "fire_after": 2,
        "window": 4,
        "resolve_after": 6,
        "cooldown_seconds": 30,
        "repeat_seconds": 15.5,
        "min_firing_seconds": 0,
        "record_fields": ["transaction_id", "ts"],
    }
    policy = AlertPolicy.from_dict(config)
    assert policy.record_fields == ("transaction_id", "ts")
    assert [name for name, _ in policy.severities] == ["page", "critical", "warning"]
    assert policy.group_by == ("host", "region")
    assert AlertPolicy.from_dict(json.loads(json.dumps(policy.to_dict()))) == policy
    assert AlertPolicy.from_dict({}) == AlertPolicy()


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"windw": 5}, "'windw'"),
        ({"fire_after": 0}, "'fire_after' must be a positive integer"),
        ({"fire_after": True}, "'fire_after' must be a positive integer"),
        ({"fire_after": 11, "window": 10}, "lower fire_after or widen window"),
        ({"severities": {"critical": 2.0}}, "p-value in (0, 1]"),
        ({"severities": {"critical": "low"}}, "'critical'"),
        ({"severities": {}}, "'severities' must be a non-empty mapping"),
        ({"group_by": "host"}, "'group_by' must be a list"),
        ({"group_by": ["severity"]}, "clashes with a label"),
        ({"group_by": ["host-name"]}, "Alertmanager label name"),
        ({"cooldown_seconds": -1}, "'cooldown_seconds'"),
        ({"repeat_seconds": float("inf")}, "'repeat_seconds'"),
        ({"record_fields": "id"}, "'record_fields' must be a list"),
        ({"record_fields": ["id", "id"]}, "each once"),
        ({"record_fields": [f"f{i}" for i in range(11)]}, "at most 10 fields"),
        ({"record_fields": [""]}, "must be field names"),
    ],
)
def test_policy_rejects_bad_config_naming_the_key(config: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError) as info:
        AlertPolicy.from_dict(config)
    assert message in str(info.value)


# --------------------------------------------------------------------------- tracker


def small_policy(**overrides: Any) -> AlertPolicy:
    settings: dict[str, Any] = {
        "fire_after": 3,
        "window": 5,
        "resolve_after": 4,
        "cooldown_seconds": 100.0,
        "repeat_seconds": 60.0,
        "min_firing_seconds": 0.0,
    }
    return AlertPolicy(**(settings | overrides))


def test_tracker_fires_exactly_once_after_n_of_m_then_dedupes() -> None:
    clock = FakeClock()
    tracker = AlertTracker("payments", small_policy(), clock=clock)
    assert feed(tracker, "A.A..") == []  # 2 of 5: not yet
    assert feed(tracker, "A") == []  # the first anomaly slid out: still 2 of the last 5
    clock.now += 1
    [alert] = feed(tracker, "A")  # 3 of the last 5 -> fires
    assert (alert.status, alert.severity, alert.ends_at) == ("firing", "warning", None)
    assert (alert.anomalies_in_window, alert.window) == (3, 5)
    assert alert.starts_at == datetime.fromtimestamp(T0 + 1, UTC)
    assert (alert.model, alert.key, alert.model_version) == ("payments", (), "v7")
    assert alert.top_features == ("cpu", "mem")
    clock.now += 59
    assert feed(tracker, "AAA.A") == []  # still firing, repeat not due: deduped


def test_tracker_repeats_a_firing_alert_every_repeat_seconds() -> None:
    clock = FakeClock()
    tracker = AlertTracker("m", small_policy(), clock=clock)
    [first] = feed(tracker, "AAA")
    clock.now += 59.9
    assert feed(tracker, "A") == []
    clock.now += 0.1
    [again] = feed(tracker, "A")
    assert again.status == "firing"
    assert again.starts_at == first.starts_at  # the same episode, re-sent
    assert again.fingerprint == first.fingerprint
    assert feed(tracker, "A") == []  # the clock restarts at each send
    clock.now += 60
    assert [a.status for a in feed(tracker, ".")] == ["firing"]  # a normal record re-sends too


def test_an_alert_fires_at_least_min_firing_seconds_before_normal_records_resolve_it() -> None:
    # An on-call helper's alerts fired and resolved within a second under steady traffic:
    # Alertmanager, waiting its group_wait (10-30 s) before a first notice, told no one.
    clock = FakeClock()
    tracker = AlertTracker("m", small_policy(min_firing_seconds=60.0), clock=clock)
    [fired] = feed(tracker, "AAA")
    assert feed(tracker, "........") == []  # resolve_after 4 normals, 0 s into the episode
    clock.now += 59
    assert feed(tracker, "..") == []
    clock.now += 1
    [resolved] = feed(tracker, ".")
    assert resolved.status == "resolved" and resolved.starts_at == fired.starts_at
    assert AlertPolicy().min_firing_seconds == 60.0


def test_tracker_resolves_after_k_consecutive_normals() -> None:
    clock = FakeClock()
    tracker = AlertTracker("m", small_policy(), clock=clock)
    [fired] = feed(tracker, "AAA")
    assert feed(tracker, "...A...") == []  # the anomaly restarts the count
    clock.now += 5
    [resolved] = feed(tracker, ".")
    assert resolved.status == "resolved"
    assert resolved.ends_at == datetime.fromtimestamp(T0 + 5, UTC)
    assert resolved.starts_at == fired.starts_at
    assert resolved.severity == fired.severity  # Alertmanager matches the alert by its labels
    assert feed(tracker, "....") == []


def test_cooldown_blocks_refiring_until_it_passes() -> None:
    clock = FakeClock()
    tracker = AlertTracker("m", small_policy(), clock=clock)
    feed(tracker, "AAA")
    [resolved] = feed(tracker, "....")
    assert resolved.status == "resolved"
    clock.now += 99.9
    assert feed(tracker, "AAAAA") == []  # would fire, but the key is cooling down
    clock.now += 0.1
    [again] = feed(tracker, "A")
    assert again.status == "firing"
    assert again.starts_at == datetime.fromtimestamp(T0 + 100, UTC)


def test_a_worse_severity_fires_through_the_cooldown_a_milder_episode_left() -> None:
    clock = FakeClock()
    tracker = AlertTracker("m", small_policy(), clock=clock)
    [fired] = feed(tracker, "AAA")  # p 1e-3: a warning
    assert fired.severity == "warning"
    feed(tracker, "....")
    clock.now += 10.0
    assert feed(tracker, "AAA") == []  # another warning: cooling down
    feed(tracker, "....")
    [critical] = feed(tracker, "AAA", p_value=1e-5)
    assert (critical.status, critical.severity) == ("firing", "critical")
    feed(tracker, "....")
    assert feed(tracker, "AAA", p_value=1e-5) == []  # after a critical, a critical cools down


def test_a_normal_record_after_the_cooldown_does_not_fire_a_resolved_episode_again() -> None:
    # The resolved episode's anomalies stayed in the window: 7 normal records in a row, then
    # "3 of the last 10 records anomalous" fired again on the first normal one after cooldown.
    clock = FakeClock()
    policy = small_policy(fire_after=3, window=10, resolve_after=5, cooldown_seconds=10)
    tracker = AlertTracker("m", policy, clock=clock)
    [fired] = feed(tracker, "AAA")
    [resolved] = feed(tracker, ".....")
    assert (fired.status, resolved.status) == ("firing", "resolved")
    clock.now += 11
    assert feed(tracker, ".") == []
    assert [a.status for a in feed(tracker, "AAA")] == ["firing"]  # a new episode still fires


def test_workers_sharing_alert_state_count_a_key_together(tmp_path: Path) -> None:
    # With a tracker per gunicorn worker each counted its share of a key's records, both fired
    # the same alert, and a resolve by one was undone by the other's re-send.
    from service.alert_state import SharedAlertStates

    path, clock = str(tmp_path / "state.sqlite"), FakeClock()
    one, two = (
        AlertTracker("m", small_policy(), clock=clock, shared=SharedAlertStates(path))
        for _ in range(2)
    )
    assert feed(one, "A") + feed(two, "A") == []
    [fired] = feed(one, "A")  # the third anomaly of the key, whichever worker saw it
    assert fired.status == "firing" and fired.anomalies_in_window == 3
    assert feed(two, "A") == []  # already firing: no second alert from the other worker
    assert two.firing(fired.key, fired.severity)
    resolved = feed(one, "..") + feed(two, ".") + feed(one, ".")  # resolve_after 4, across both
    assert [a.status for a in resolved] == ["resolved"]
    assert not one.firing(fired.key, fired.severity) and not two.firing(fired.key, "critical")


@pytest.mark.parametrize("shared", [False, True])
def test_an_alert_carries_its_key_s_last_anomalous_record_s_fields(
    tmp_path: Path, shared: bool
) -> None:
    """An alert said which host, never which transaction or minute: a fraud team had to search
    the scored file for the record behind it. Kept per key, across workers too."""
    from service.alert_state import SharedAlertStates

    clock = FakeClock()
    store = SharedAlertStates(str(tmp_path / "state.sqlite")) if shared else None
    policy = small_policy(group_by=("card",), record_fields=("id", "ts", "absent"))
    one, two = (AlertTracker("fraud", policy, clock=clock, shared=store) for _ in range(2))
    other = two if shared else one  # a second worker where they share the state
    feed(one, "A", card="c1", id="t1", ts="2026-12-07T09:00:00Z")
    feed(other, "A", card="c1", id="t2", ts="2026-12-07T09:01:00Z")
    feed(other, "A", card="c2", id="other")  # another key's record is not this key's
    [fired] = feed(one, "A.", card="c1", id="t3" * 200, ts="2026-12-07T09:02:00Z")
    # The last anomalous record's fields (a normal one after does not replace them), long
    # values shortened as keys are; a field the record lacks is left out.
    assert set(fired.last_record) == {"id", "ts"}
    assert fired.last_record["id"].startswith("t3t3") and len(fired.last_record["id"]) == 200
    assert fired.last_record["ts"] == "2026-12-07T09:02:00Z"
    assert fired.to_dict()["last_record"] == fired.last_record
    assert "Last anomalous record: id='t3t3" in fired.annotations()["description"]
    clock.now += 61
    [again] = feed(other, "A", card="c1", id="t4")  # the repeat
    assert again.last_record == {"id": "t4"}
    assert "last_record" not in make_alert().annotations()["description"]


@pytest.mark.parametrize("shared", [False, True])
def test_a_firing_key_that_goes_silent_resolves(tmp_path: Path, shared: bool) -> None:
    # A host gone while firing fired for good: a webhook never got its end, and eviction kept
    # firing keys, so after host churn firing ghosts filled the table (2,038 in a 27-minute
    # soak) and left new keys too few slots to count towards fire_after.
    from service.alert_state import SharedAlertStates

    clock, path = FakeClock(), str(tmp_path / "state.sqlite")

    def worker() -> AlertTracker:
        states = SharedAlertStates(path) if shared else None
        policy = small_policy(group_by=("host",))
        return AlertTracker("m", policy, clock=clock, shared=states, stale_seconds=300.0)

    one = worker()
    two = worker() if shared else one
    [fired] = feed(one, "AAA", host="gone")
    assert fired.status == "firing"
    feed(one, "A", host="busy")
    clock.now += 200.0
    feed(two, "A", host="busy")
    assert two.resolve_silent() == []  # 200 s silent: not yet
    clock.now += 150.0
    feed(two, "A", host="busy")  # busy was seen 150 s ago, gone 350 s ago
    [resolved] = two.resolve_silent()
    assert resolved.status == "resolved" and resolved.key == (("host", "gone"),)
    # Said as silence: it read "3 of the last 3 records ... were anomalous", as if recovered.
    assert resolved.to_dict()["resolved_by"] == "silence"
    notes = resolved.annotations()
    assert "no record for host='gone' in 350 s; resolved as silent" in notes["summary"]
    assert notes["description"].startswith("Resolved because host='gone' sent no record")
    assert not one.firing(fired.key, fired.severity)
    clock.now += 100.0  # the next look, a quarter of 300 s on: nothing more to resolve
    assert one.resolve_silent() == [] and two.resolve_silent() == []
    clock.now += 1_000.0  # back after the cooldown, anomalous again: a new episode fires
    assert [a.status for a in feed(one, "AAA", host="gone")] == ["firing"]


def test_shared_alert_state_keeps_at_most_max_keys_firing_ones_last(tmp_path: Path) -> None:
    import sqlite3

    from service.alert_state import SharedAlertStates

    path, clock = str(tmp_path / "state.sqlite"), FakeClock()
    shared = SharedAlertStates(path, max_keys=3)
    tracker = AlertTracker("m", small_policy(group_by=("host",)), clock=clock, shared=shared)
    [fired] = feed(tracker, "AAA", host="web-01")
    for host in ("web-02", "web-03", "web-04", "web-05"):
        clock.now += 1
        feed(tracker, ".", host=host)
    with sqlite3.connect(path) as db:
        kept = [json.loads(k) for (k,) in db.execute("SELECT key FROM alert_keys ORDER BY key")]
    assert kept == [[["host", "web-01"]], [["host", "web-04"]], [["host", "web-05"]]]
    assert tracker.firing(fired.key, fired.severity)


def test_a_shared_alert_state_full_of_firing_keys_lets_a_new_key_fire_and_says_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # A soak's key churn, every new host firing, filled the server's 10,000 keys a model with
    # firing ones. A new key was then the one forgotten, at each of its records (the only one
    # not firing): a new host's incident never fired. And a firing key forgotten went without
    # a word, its end never sent. The tracker in a single process forgets the oldest firing
    # key, and warns.
    from service.alert_state import SharedAlertStates

    clock = FakeClock()
    shared = SharedAlertStates(str(tmp_path / "state.sqlite"), max_keys=2)
    tracker = AlertTracker("m", small_policy(group_by=("host",)), clock=clock, shared=shared)
    for host in ("a", "b"):
        assert [alert.status for alert in feed(tracker, "AAA", host=host)] == ["firing"]
        clock.now += 1
    with caplog.at_level(logging.WARNING, logger="service.alert_state"):
        fired = feed(tracker, "AAA", host="c")
    assert [(alert.status, alert.key) for alert in fired] == [("firing", (("host", "c"),))]
    [warned] = [r.getMessage() for r in caplog.records if r.name == "service.alert_state"]
    assert "model m: 1 firing alert key(s) forgotten" in warned
    assert "group_by" in warned  # the fix
    assert not tracker.firing((("host", "a"),), fired[0].severity)  # the oldest went
    assert tracker.firing((("host", "b"),), fired[0].severity)


def test_workers_move_to_a_state_file_made_again_under_them(tmp_path: Path) -> None:
    # Removed while serving: a worker started since made a new file, the others kept the old
    # one through their open handle, and the same alert fired twice (two episodes at once).
    import os

    from service.alert_state import SharedAlertStates

    path, clock = tmp_path / "state.sqlite", FakeClock()
    old = AlertTracker("m", small_policy(), clock=clock, shared=SharedAlertStates(str(path)))
    assert feed(old, "AA") == []
    for leftover in tmp_path.glob("state.sqlite*"):
        os.remove(leftover)
    new = AlertTracker("m", small_policy(), clock=clock, shared=SharedAlertStates(str(path)))
    assert feed(new, "A") == []
    assert feed(old, "A") == []  # the new file's second anomaly, not the old file's third
    [fired] = feed(new, "A")
    assert fired.status == "firing" and fired.anomalies_in_window == 3


def test_a_failing_still_firing_check_re_sends_rather_than_ending_delivery() -> None:
    # An unreadable state file raised in the check, on the sink's thread, which ended: that
    # worker sent nothing to Alertmanager again.
    def unreadable(alert: Alert) -> bool:
        raise sqlite3.DatabaseError("file is not a database")

    sink = RecordingSink()
    sink.resend_firing = True  # type: ignore[attr-defined]
    dispatcher = AlertDispatcher([sink], still_firing=unreadable)
    dispatcher.submit([make_alert()])
    (box,) = dispatcher._outboxes
    box.pending.clear()
    assert [a.status for a in dispatcher._plan(box, [], resend=True)] == ["firing"]


def test_a_re_send_of_an_alert_another_worker_resolved_is_left_out() -> None:
    # Alertmanager showed firing, resolved, firing again: the worker that fired it re-sent it.
    sink = RecordingSink()
    sink.resend_firing = True  # type: ignore[attr-defined]
    resolved_elsewhere: set[str] = set()
    dispatcher = AlertDispatcher(
        [sink], still_firing=lambda alert: alert.model not in resolved_elsewhere
    )
    dispatcher.submit([make_alert()])  # not started: the re-send rounds are planned by hand
    (box,) = dispatcher._outboxes
    box.pending.clear()
    assert [a.status for a in dispatcher._plan(box, [], resend=True)] == ["firing"]
    resolved_elsewhere.add("payments")
    assert dispatcher._plan(box, [], resend=True) == []


def test_firing_severity_is_the_most_severe_in_the_window_and_only_rises() -> None:
    clock = FakeClock()
    tracker = AlertTracker("m", small_policy(), clock=clock)
    feed(tracker, "A", p_value=1e-5)  # one critical record ...
    [fired] = feed(tracker, "AA", p_value=1e-3)  # ... then warnings: the window holds a critical
    assert fired.severity == "critical"

    tracker = AlertTracker("m", small_policy(), clock=clock)
    [fired] = feed(tracker, "AAA", p_value=1e-3)
    assert fired.severity == "warning"
    old, new = feed(tracker, "A", p_value=1e-6)
    assert (old.status, old.severity) == ("resolved", "warning")  # retire the old label set
    assert (new.status, new.severity) == ("firing", "critical")
    assert feed(tracker, "AAAAA", p_value=1e-3) == []  # never lowered while firing


def test_separate_keys_are_independent_and_a_missing_field_is_empty() -> None:
    tracker = AlertTracker("m", small_policy(group_by=("host",)), clock=FakeClock())
    assert feed(tracker, "AA", host="a") == []
    assert feed(tracker, "AAAAA", host="b")[0].key == (("host", "b"),)
    [alert] = feed(tracker, "A", host="a")  # a's own third anomaly, unaffected by b
    assert alert.key == (("host", "a"),)
    assert alert.labels()["host"] == "a"
    [missing] = feed(tracker, "AAA")  # no 'host' in the record
    assert missing.key == (("host", ""),)
    assert feed(tracker, "A", host=None) == []  # None counts as "" too: same, firing key
    assert len(tracker) == 3


def test_a_key_in_another_unicode_form_counts_as_the_same_key() -> None:
    # 'wéb-01' with its accent as a character of its own (NFD) is the host the series model
    # scores as one series; its alerts counted apart, each short of fire_after.
    import unicodedata

    tracker = AlertTracker("m", small_policy(group_by=("host",)), clock=FakeClock())
    assert feed(tracker, "AA", host="wéb-01") == []
    [alert] = feed(tracker, "A", host=unicodedata.normalize("NFD", "wéb-01"))
    assert alert.key == (("host", "wéb-01"),)
    assert len(tracker) == 1


def test_a_key_sent_as_a_whole_float_or_a_boolean_counts_as_its_series_key() -> None:
    # A JSON emitter's 7.0 is the series 7 (one window), but its alerts counted under '7.0'
    # apart from 7's, each short of fire_after; a JSON true was 'True', a CSV body's 'true'.
    tracker = AlertTracker("m", small_policy(group_by=("host",)), clock=FakeClock())
    assert feed(tracker, "AA", host=7) == []
    [alert] = feed(tracker, "A", host=7.0)
    assert alert.key == (("host", "7"),)
    assert feed(tracker, "AA", host=True) == []
    [alert] = feed(tracker, "A", host="true")
    assert alert.key == (("host", "true"),)
    assert feed(tracker, "AAA", host=7.5)[0].key == (("host", "7.5"),)
    assert len(tracker) == 3


def test_tracked_keys_are_bounded_and_firing_keys_survive_eviction() -> None:
    clock = FakeClock()
    tracker = AlertTracker("m", small_policy(group_by=("host",)), clock=clock, max_keys=3)
    [fired] = feed(tracker, "AAA", host="hot")
    for i in range(50):
        feed(tracker, "AA", host=f"cold-{i}")
    assert len(tracker) == 3
    # 'hot' was the least recently seen key but is firing, so it was kept: still deduped ...
    assert feed(tracker, "A", host="hot") == []
    # ... while cold-0 was forgotten: two more anomalies no longer reach 3 of 5.
    assert feed(tracker, "AA", host="cold-0") == []
    clock.now += 60
    assert [a.starts_at for a in feed(tracker, "A", host="hot")] == [fired.starts_at]


def test_when_every_key_fires_the_oldest_is_evicted_with_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    tracker = AlertTracker("m", small_policy(group_by=("host",)), clock=FakeClock(), max_keys=2)
    feed(tracker, "AAA", host="a")
    feed(tracker, "AAA", host="b")
    with caplog.at_level(logging.WARNING, logger="service.alerts"):
        feed(tracker, "AAA", host="c")
    assert len(tracker) == 2
    assert "group_by fewer fields" in caplog.text  # a setting there is: max_keys is none
    assert [a.status for a in feed(tracker, "AAA", host="a")] == ["firing"]  # a starts afresh


# --------------------------------------------------------------------------- alert


def test_alert_labels_annotations_and_dict() -> None:
    alert = make_alert("resolved")
    assert alert.labels() == {
        "alertname": "AnomalyDetected",
        "model": "payments",
        "severity": "critical",
        "host": "web-1",
    }
    notes = alert.annotations()
    assert "back to normal" in notes["summary"]
    for part in ("4 of the last 10 records", "anomaly_score 42", "p-value 2e-05", "latency_ms"):
        assert part in notes["description"]
    d = json.loads(json.dumps(alert.to_dict(), allow_nan=False))
    assert d["starts_at"] == "2024-05-01T12:00:00.000Z"
    assert d["ends_at"] == "2024-05-01T12:05:00.000Z"
    assert d["key"] == {"host": "web-1"}
    assert "4 of the last 10 records anomalous" in make_alert("firing").annotations()["summary"]


def test_fingerprint_is_stable_and_depends_on_model_and_key() -> None:
    alert = make_alert()
    # A content hash, not Python's per-process salted hash(): the same in every process.
    assert alert.fingerprint == "7470cbf4d181f26c"
    assert make_alert("resolved").fingerprint == alert.fingerprint
    other_key = Alert(**{**alert.__dict__, "key": (("host", "web-2"),)})
    other_model = Alert(**{**alert.__dict__, "model": "orders"})
    assert len({alert.fingerprint, other_key.fingerprint, other_model.fingerprint}) == 3


def test_non_finite_numbers_become_null_in_json() -> None:
    alert = Alert(**{**make_alert().__dict__, "last_anomaly_score": float("inf")})
    assert alert.to_dict()["last_anomaly_score"] is None


# --------------------------------------------------------------------------- dispatcher


class RecordingSink:
    def __init__(self, name: str = "rec", failures: int = 0) -> None:
        self.name = name
        self.failures = failures
        self.calls = 0
        self.batches: list[list[Alert]] = []

    def send(self, alerts: Sequence[Alert]) -> None:
        self.calls += 1
        if self.calls <= self.failures:
            raise ConnectionError(f"{self.name} down (call {self.calls})")
        self.batches.append(list(alerts))


@contextmanager
def running(dispatcher: AlertDispatcher) -> Iterator[AlertDispatcher]:
    dispatcher.start()
    try:
        yield dispatcher
    finally:
        dispatcher.stop()


def test_dispatcher_retries_with_backoff_then_sends() -> None:
    sink, outcomes = RecordingSink("flaky", failures=2), Outcomes()
    sleeps: list[float] = []
    dispatcher = AlertDispatcher([sink], on_outcome=outcomes, sleep=sleeps.append)
    with running(dispatcher) as d:
        d.submit([make_alert()])
        assert d.flush(5)
    assert sleeps == pytest.approx([0.2, 0.4])
    assert outcomes.seen == [("flaky", "sent")]  # retries are not outcomes
    assert [len(b) for b in sink.batches] == [1]


def test_dispatcher_gives_up_after_retries_and_other_sinks_still_get_the_batch() -> None:
    bad, good, outcomes = RecordingSink("bad", failures=99), RecordingSink(), Outcomes()
    sleeps: list[float] = []
    dispatcher = AlertDispatcher([bad, good], retries=3, on_outcome=outcomes, sleep=sleeps.append)
    with running(dispatcher) as d:
        d.submit([make_alert(), make_alert("resolved")])
        assert d.flush(5)
        assert sleeps == pytest.approx([0.2, 0.4, 0.8])
        assert bad.calls == 4
        # Per alert; each sink's worker reports as it goes, so in either order.
        assert sorted(outcomes.seen) == [("bad", "failed")] * 2 + [("rec", "sent")] * 2
        assert d.undelivered() == {"bad": 1, "rec": 0}  # the newest of the label set is owed
    assert [len(b) for b in good.batches] == [2]
    assert outcomes.seen[4:] == [("bad", "failed"), ("bad", "dropped")]  # stop() tried again


class HangingSink:
    """A receiver that takes a connection and does not answer until released."""

    name = "hung"

    def __init__(self) -> None:
        self.entered, self.release = threading.Event(), threading.Event()

    def send(self, alerts: Sequence[Alert]) -> None:
        self.entered.set()
        self.release.wait(30)
        raise ConnectionError("hung: timed out")


def test_a_hanging_sink_delays_no_other_sink() -> None:
    # One worker sent to each sink in turn: a webhook answering in 30 s held Alertmanager's
    # alerts for ~20 s (its timeout times its tries).
    hung, good = HangingSink(), RecordingSink()
    dispatcher = AlertDispatcher([hung, good], retries=0)
    with running(dispatcher) as d:
        d.submit([make_alert()])
        try:
            assert hung.entered.wait(10)
            assert d.flush(0.01) is False  # the hanging send is still in flight
            deadline = time.monotonic() + 10
            while not good.batches and time.monotonic() < deadline:
                time.sleep(0.01)  # polls for the delivery, which comes at once or never
            assert [len(b) for b in good.batches] == [1], "the healthy sink waited for the hung one"
        finally:
            hung.release.set()


def test_stopping_delivers_to_the_healthy_sinks_while_one_hangs() -> None:
    # With one worker, stop() found it stuck in the hanging send: what was queued never
    # reached the healthy sink, and nothing was counted.
    hung, good, outcomes = HangingSink(), RecordingSink(), Outcomes()
    dispatcher = AlertDispatcher([hung, good], retries=0, on_outcome=outcomes)
    dispatcher.start()
    try:
        dispatcher.submit([make_alert()])
        assert hung.entered.wait(10)
        dispatcher.submit([make_alert("resolved")])
        dispatcher.stop(timeout=1)
        assert [a.status for b in good.batches for a in b] == ["firing", "resolved"]
        assert outcomes.seen.count(("rec", "sent")) == 2
        # The hanging send's alert, and the one queued behind it, given up and counted.
        assert outcomes.seen.count(("hung", "dropped")) == 2
    finally:
        hung.release.set()


def test_full_queue_drops_the_oldest_and_reports_it() -> None:
    sink, outcomes = RecordingSink(), Outcomes()
    dispatcher = AlertDispatcher([sink], queue_size=3, on_outcome=outcomes)
    # Not started yet, so nothing drains: the queue must fill.
    dispatcher.submit([make_alert(model_version=str(i)) for i in range(5)])
    assert outcomes.seen == [("queue", "dropped")] * 2
    with running(dispatcher) as d:
        assert d.flush(5)
    assert [a.model_version for a in sink.batches[0]] == ["2", "3", "4"]
    assert outcomes.seen[-1] == ("rec", "sent")


def test_recent_is_bounded_newest_last() -> None:
    dispatcher = AlertDispatcher([RecordingSink()], recent_size=3)
    dispatcher.submit([make_alert(model_version=str(i)) for i in range(5)])
    recent = dispatcher.recent()
    assert [d["model_version"] for d in recent] == ["2", "3", "4"]
    json.dumps(recent)


def test_stop_drains_the_queue_and_joins_the_thread() -> None:
    before = set(threading.enumerate())
    sink = RecordingSink()
    dispatcher = AlertDispatcher([sink])
    dispatcher.submit([make_alert()])
    dispatcher.start()
    dispatcher.submit([make_alert("resolved")])
    dispatcher.stop(timeout=5)
    assert set(threading.enumerate()) == before
    assert sum(len(b) for b in sink.batches) == 2
    outcomes = Outcomes()
    stopped = AlertDispatcher([sink], on_outcome=outcomes)
    stopped.stop()  # never started: a no-op
    stopped.submit([make_alert()])
    assert outcomes.seen == [("queue", "dropped")]


def test_a_failing_outcome_callback_does_not_kill_the_worker() -> None:
    def explode(sink: str, outcome: str) -> None:
        raise RuntimeError("metrics broke")

    sink = RecordingSink()
    with running(AlertDispatcher([sink], on_outcome=explode)) as d:
        d.submit([make_alert()])
        assert d.flush(5)
        d.submit([make_alert()])
        assert d.flush(5)
    assert len(sink.batches) == 2


def test_log_sink_levels(caplog: pytest.LogCaptureFixture) -> None:
    # A re-send of a firing alert (every repeat_seconds) is not a new warning: an on-call
    # helper read 11 WARNING lines for one host's one episode.
    with caplog.at_level(logging.INFO, logger="service.alerts"):
        sink = LogSink()
        sink.send([make_alert("firing"), make_alert("firing"), make_alert("resolved")])
        sink.send([make_alert("firing")])  # a new episode after the resolution
    levels = [r.levelno for r in caplog.records]
    assert levels == [logging.WARNING, logging.INFO, logging.INFO, logging.WARNING]
    assert [r.getMessage().split()[1] for r in caplog.records] == [
        "firing", "still", "resolved", "firing",
    ]  # fmt: skip
    assert all(r.name == "service.alerts" for r in caplog.records)


# --------------------------------------------------------------------------- HTTP receivers


def parse_iso(text: str) -> datetime:
    moment = datetime.fromisoformat(text)
    offset = moment.utcoffset()
    assert offset is not None and offset.total_seconds() == 0, f"{text} is not UTC"
    return moment


def test_alertmanager_sink_posts_the_v2_shape(receiver: Receiver) -> None:
    sink = AlertmanagerSink(receiver.url + "/", generator_url="http://scorer:8000/alerts")
    sink.send([make_alert("firing"), make_alert("resolved")])
    [(path, content_type, body)] = receiver.requests
    assert (path, content_type) == ("/api/v2/alerts", "application/json")
    firing, resolved = body
    assert firing["labels"] == make_alert().labels()
    assert set(firing["annotations"]) == {"summary", "description"}
    assert parse_iso(firing["startsAt"]) == make_alert().starts_at
    assert "endsAt" not in firing  # Alertmanager keeps it firing until re-sent or resolved
    assert parse_iso(resolved["endsAt"]) == datetime(2024, 5, 1, 12, 5, tzinfo=UTC)
    assert firing["generatorURL"] == resolved["generatorURL"] == "http://scorer:8000/alerts"


def test_webhook_sink_posts_alert_dicts(receiver: Receiver) -> None:
    WebhookSink(receiver.url + "/hook").send([make_alert("resolved")])
    [(path, _, body)] = receiver.requests
    assert path == "/hook"
    assert body == {"alerts": [json.loads(json.dumps(make_alert("resolved").to_dict()))]}
    parse_iso(body["alerts"][0]["starts_at"])


def test_sinks_raise_naming_the_endpoint_and_status(receiver: Receiver) -> None:
    receiver.status = 500
    with pytest.raises(AlertDeliveryError, match=r"HTTP 500: boom"):
        WebhookSink(receiver.url + "/hook").send([make_alert()])
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed_port = s.getsockname()[1]  # bound but not listening: connections are refused
        with pytest.raises(AlertDeliveryError, match="check that the receiver is up"):
            AlertmanagerSink(f"http://127.0.0.1:{closed_port}", generator_url="x", timeout=2).send(
                [make_alert()]
            )
    with pytest.raises(ValueError, match="must start with http"):
        WebhookSink("127.0.0.1:9093")


# --------------------------------------------------------------------------- real Alertmanager


def wait_ready(
    url: str, process: subprocess.Popen[bytes], log_path: Path, deadline_s: float
) -> None:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"Alertmanager exited with {process.returncode}:\n{log_path.read_text()}")
        try:
            with urllib.request.urlopen(url + "/-/ready", timeout=1) as response:
                if response.status == 200:
                    return
        except urllib.error.HTTPError as exc:
            exc.close()  # 503 while starting; closing it releases the socket
        except (urllib.error.URLError, OSError):
            pass  # not listening yet
        time.sleep(0.05)  # polling interval under a deadline, not a wait for luck
    pytest.fail(f"Alertmanager not ready within {deadline_s} s:\n{log_path.read_text()}")


@pytest.fixture
def alertmanager(tmp_path: Path, receiver: Receiver) -> Iterator[str]:
    binary = shutil.which("prometheus-alertmanager")
    if binary is None:
        reason = "prometheus-alertmanager not installed (apt-get install prometheus-alertmanager)"
        if os.environ.get("CI"):
            pytest.fail(f"{reason}; CI must run the real-Alertmanager test")
        pytest.skip(reason)
    config_path = tmp_path / "alertmanager.yml"
    config_path.write_text(alertmanager_config(receiver.url + "/hook"))
    port = free_port()
    log_path = tmp_path / "alertmanager.log"
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            [
                binary,
                f"--config.file={config_path}",
                f"--storage.path={tmp_path / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--cluster.listen-address=",
            ],
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, process, log_path, deadline_s=15)
        yield url
    finally:
        stop(process, timeout=10)


def am_alert(body: Any, status: str) -> dict[str, Any] | None:
    for alert in body.get("alerts", []) if isinstance(body, dict) else []:
        if alert.get("status") == status and alert["labels"].get("model") == "payments":
            return dict(alert)
    return None


@pytest.mark.slow
def test_real_alertmanager_delivers_firing_then_resolved(
    alertmanager: str, receiver: Receiver
) -> None:
    clock = FakeClock()
    clock.now = time.time()  # Alertmanager compares endsAt with its own clock
    tracker = AlertTracker("payments", small_policy(group_by=("host",)), clock=clock)
    [firing] = feed(tracker, "AAA", host="web-1", p_value=1e-6)
    sink = AlertmanagerSink(alertmanager, generator_url="http://scorer.test/alerts")
    sink.send([firing])

    body = receiver.wait_until(lambda b: am_alert(b, "firing"), deadline_s=20)
    got = am_alert(body, "firing")
    assert got is not None
    assert got["labels"] == {
        "alertname": "AnomalyDetected",
        "model": "payments",
        "severity": "critical",
        "host": "web-1",
    }
    assert got["annotations"]["summary"] == firing.annotations()["summary"]
    assert got["generatorURL"] == "http://scorer.test/alerts"

    clock.now = time.time()
    [resolved] = feed(tracker, "....", host="web-1")
    assert resolved.status == "resolved"
    sink.send([resolved])
    body = receiver.wait_until(lambda b: am_alert(b, "resolved"), deadline_s=20)
    assert am_alert(body, "resolved")["labels"]["host"] == "web-1"  # type: ignore[index]


def test_an_alert_key_no_record_can_hold_is_refused_before_serving(
    bundle_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Found by trying: group_by = ["hots"] served, and every record alerted under one key,
    hots=''. A column the model reads, or a passthrough field, is a key records can hold."""
    with pytest.raises(ConfigError, match=r"groups by \['hots'\], which its records cannot"):
        make_app(bundle_dir, alerts=AlertPolicy(group_by=("hots",)))
    for settings in (
        {"alerts": AlertPolicy(group_by=("host",))},
        {"alerts": AlertPolicy(group_by=("hots",)), "passthrough_fields": ("hots",)},
    ):
        app, _ = make_app(bundle_dir, **settings)
        app.extensions["anomaly"].dispatcher.stop()
    # A reload to a bundle whose records lack the field is refused; the model in force serves.
    app, _ = make_app(bundle_dir, alerts=AlertPolicy(group_by=("host",)))
    hostless = tmp_path / "hostless"
    VAEDetector(**TINY).fit(pd.read_csv(DATA / "train.csv").drop(columns="host")).save(hostless)
    answer = app.test_client().post(
        "/v1/models/tiny/reload",
        json={"path": str(hostless)},
        headers={"Authorization": f"Bearer {ADMIN}"},
    )
    app.extensions["anomaly"].dispatcher.stop()
    assert answer.status_code == 422, answer.json
    assert "groups by ['host'], which its records cannot hold" in answer.json["detail"]
    assert app.extensions["anomaly"].models.get("tiny").path == str(bundle_dir)
    # `anomaly serve` refuses it once, from the manifest, before gunicorn starts a worker.
    from service.cli import main
    from service.server import GunicornServer

    monkeypatch.setattr(GunicornServer, "run", lambda self: pytest.fail("a server started"))
    monkeypatch.setenv("ANOMALY_MODEL_ALERTS", '{"m": {"group_by": ["hots"]}}')
    assert main(["serve", "--model", f"m={bundle_dir}"]) == 2
    assert "model 'm' groups by ['hots']" in capsys.readouterr().err


def test_an_alert_resolved_elsewhere_while_its_re_send_was_on_the_way_is_resolved_again() -> None:
    """The check before a re-send and the send are not one step: another worker's "resolved"
    could reach Alertmanager first, and the re-sent "firing" then fired it again."""
    resolved_elsewhere: set[str] = set()

    class ResolvedDuringTheSend(RecordingSink):
        resend_firing = True

        def send(self, alerts: Sequence[Alert]) -> None:
            super().send(alerts)
            resolved_elsewhere.add("payments")  # the other worker, meanwhile

    sink = ResolvedDuringTheSend()
    dispatcher = AlertDispatcher(
        [sink], still_firing=lambda alert: alert.model not in resolved_elsewhere
    )
    dispatcher.start()
    try:
        dispatcher.submit([make_alert()])
        assert dispatcher.flush(timeout=10)
    finally:
        dispatcher.stop()
    sent = [alert for batch in sink.batches for alert in batch]
    assert [a.status for a in sent] == ["firing", "resolved"]
    assert sent[1].ends_at is not None


def _first_alert_request(path: str, start: Any, said: Any) -> None:
    from service.alert_state import SharedAlertStates

    start.wait()
    try:
        with SharedAlertStates(path).transaction("m", 0.0, (str, str)) as keys:
            keys.prefetch([(("host", "web-01"),)])
    except sqlite3.Error as exc:
        said.put(str(exc))
    else:
        said.put("")


def test_workers_first_alert_requests_at_once_all_find_the_tables() -> None:
    """The alert tables are made by a worker's first request, outside any transaction: with
    the file busy (another worker's long request) past SQLite's short wait (50 ms), it failed
    with "database is locked" and that request's alerts were left out."""
    import multiprocessing
    import tempfile
    import time

    from service.series_store import SeriesStore

    context = multiprocessing.get_context("fork")
    with tempfile.TemporaryDirectory() as folder:
        path = f"{folder}/state.sqlite"
        SeriesStore(path).check()  # as `anomaly serve` does before the workers start
        start, said = context.Barrier(5), context.SimpleQueue()
        workers = [
            context.Process(target=_first_alert_request, args=(path, start, said)) for _ in range(4)
        ]
        for worker in workers:
            worker.start()
        # Opened after the fork: a child inherits SQLite's record of its parent's locks.
        busy = sqlite3.connect(path, isolation_level=None)
        busy.execute("BEGIN IMMEDIATE")
        start.wait()
        time.sleep(0.3)  # the file held past SQLite's own wait, well within the service's
        busy.execute("ROLLBACK")
        busy.close()
        errors = [said.get() for _ in workers]
        for worker in workers:
            worker.join()
    assert errors == [""] * 4
