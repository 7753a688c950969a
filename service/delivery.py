"""Delivering alerts off the request path: ``AlertDispatcher``.

``AlertDispatcher`` hands alerts from ``service.alerts.AlertTracker`` to ``Sink``s
(``service.sinks``: Alertmanager's v2 API, a JSON webhook, the log) through a bounded queue and
one worker thread that retries with exponential backoff. What a sink did not take while it was
down stays owed to it and goes out again, and Alertmanager gets every firing alert again on an
interval, the way Prometheus re-sends its alerts. Delivery outcomes go to a callback, so this
module needs no metrics library.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict, defaultdict, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from service.alerts import Alert
from service.sinks import Sink

__all__ = ["AlertDispatcher"]

#: The dispatcher logs as ``service.alerts``, the name operators filter on.
log = logging.getLogger("service.alerts")


#: An alert's identity at a receiver: its label set (Alertmanager's dedup key), in a fixed order.
_Identity = tuple[tuple[str, str], ...]


def _identity(alert: Alert) -> _Identity:
    return tuple(sorted(alert.labels().items()))


def _resends_firing(sink: Sink) -> bool:
    return bool(getattr(sink, "resend_firing", False))


@dataclass
class _Firing:
    alert: Alert
    refreshed: float  # time.monotonic() when the tracker last submitted it


@dataclass
class _Outbox:
    """One sink's side of the dispatcher, with a worker thread of its own: the alerts queued
    for it (``pending``), and what it is still owed (``undelivered``: alerts whose delivery
    failed, the newest per identity, oldest first), which go out again with its next send."""

    sink: Sink
    pending: deque[Alert] = field(default_factory=deque)
    undelivered: OrderedDict[_Identity, Alert] = field(default_factory=OrderedDict)
    in_flight: int = 0  # alerts in the send under way
    abandoned: bool = False  # stop() gave up on its hanging send, and counted what it held
    thread: threading.Thread | None = None


@dataclass
class _Queue:
    """The dispatcher's shared state, guarded by ``cond``."""

    cond: threading.Condition = field(default_factory=threading.Condition)
    stopping: bool = False
    give_up_at: float | None = None  # time.monotonic() after which stop() abandons delivery


class AlertDispatcher:
    """Delivery off the request path: a bounded queue and a daemon worker per sink, retries
    with backoff, and nothing lost while a receiver is down. Each sink is served by its own
    thread, so a receiver that hangs delays no other: with one worker for all, a webhook that
    answered in 30 s held Alertmanager's alerts ~20 s, and at shutdown kept them from it.

    A sink's worker takes everything queued for it as one batch and sends it, trying
    ``1 + retries`` times with sleeps of ``backoff_seconds * 2**i`` between tries. Alerts a sink
    did not take stay owed to it (the newest per label set, at most ``undelivered_size``, the
    oldest dropped beyond) and go out again with its next send; a send happens at least every
    ``resend_seconds``. A sink with ``resend_firing = True`` (Alertmanager) also gets every
    firing alert again each ``resend_seconds``, as Prometheus re-sends them: Alertmanager then
    keeps it firing, and gets it back after a restart. A firing alert the tracker has not
    submitted for ``stale_seconds`` (its key stopped sending records) is no longer re-sent.

    ``still_firing(alert)`` is asked before a firing alert is re-sent: one that no longer fires
    (another worker resolved it) is dropped from the re-sends. It is asked again once a firing
    alert reached such a sink: one resolved while the send was on its way gets its end again.

    ``on_outcome(sink.name, outcome)`` is called once per alert and send: ``"sent"``,
    ``"failed"`` (the send failed after its retries; the alert is sent again later) or
    ``"dropped"`` (given up: the queue or a sink's undelivered alerts overflowed, which is
    sink ``"queue"`` for the queue, or ``stop`` could not deliver it). The callback runs on
    the worker thread (or the submitting thread for queue drops) and must be quick and
    thread-safe; an exception it raises is logged, not propagated.
    """

    def __init__(
        self,
        sinks: Sequence[Sink],
        *,
        queue_size: int = 1000,
        retries: int = 3,
        backoff_seconds: float = 0.2,
        resend_seconds: float = 60.0,
        stale_seconds: float | None = None,
        undelivered_size: int | None = None,
        recent_size: int = 200,
        on_outcome: Callable[[str, str], None] = lambda sink, outcome: None,
        sleep: Callable[[float], None] = time.sleep,
        still_firing: Callable[[Alert], bool] = lambda alert: True,
        sweep: Callable[[], Sequence[Alert]] = lambda: (),
    ) -> None:
        """``stale_seconds`` defaults to 4 x ``resend_seconds``, ``undelivered_size`` to
        ``queue_size``."""
        self.sinks = tuple(sinks)
        self.queue_size = queue_size
        self.retries = retries
        self.backoff_seconds = backoff_seconds
        self.resend_seconds = resend_seconds
        self.stale_seconds = 4 * resend_seconds if stale_seconds is None else stale_seconds
        self.undelivered_size = queue_size if undelivered_size is None else undelivered_size
        self._on_outcome = on_outcome
        self._sleep = sleep
        self._still_firing = still_firing
        self._sweep = sweep
        self._q = _Queue()
        self._outboxes = tuple(_Outbox(sink) for sink in self.sinks)
        self._keeps_firing = any(_resends_firing(sink) for sink in self.sinks)
        self._firing: dict[_Identity, _Firing] = {}
        self._recent: deque[dict[str, Any]] = deque(maxlen=recent_size)
        # Each model's too: a noisy model's alerts pushed a quiet one's out of the list.
        self._recent_by_model: dict[str, deque[dict[str, Any]]] = defaultdict(
            lambda: deque(maxlen=recent_size)
        )
        self._started = False
        self._sweeper: threading.Thread | None = None

    def start(self) -> None:
        with self._q.cond:
            if self._started:
                raise RuntimeError("AlertDispatcher already started; create a new one to restart")
            self._started = True
            for box in self._outboxes:
                name = f"alert-dispatcher-{box.sink.name}"
                box.thread = threading.Thread(target=self._run, args=(box,), name=name, daemon=True)
                box.thread.start()
            self._sweeper = threading.Thread(target=self._sweeping, name="alert-sweep", daemon=True)
            self._sweeper.start()

    def _sweeping(self) -> None:
        """Ask ``sweep`` for alerts to send every quarter of ``stale_seconds`` until stopped:
        the trackers' silent keys, resolved only as a request came otherwise, so a model whose
        every key went quiet (its one host gone) fired for good."""
        while True:
            with self._q.cond:
                self._q.cond.wait_for(lambda: self._q.stopping, timeout=self.stale_seconds / 4)
                if self._q.stopping:
                    return
            try:
                alerts = list(self._sweep())
            except Exception as exc:  # the shared state's file unreadable: the next round
                log.warning("could not look for alert keys gone silent (%s); tried again", exc)
                continue
            self.submit(alerts)

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
                now = time.monotonic()
                for alert in alerts:
                    made = alert.to_dict()
                    self._recent.append(made)
                    self._recent_by_model[alert.model].append(made)
                    if self._keeps_firing:
                        self._track_firing(alert, now)
                # Each sink's queue is bounded alone; an alert dropped by any of them counts once.
                for box in self._outboxes:
                    box.pending.extend(alerts)
                    over = len(box.pending) - self.queue_size
                    for _ in range(max(over, 0)):
                        box.pending.popleft()
                    dropped = max(dropped, over)
                self._q.cond.notify_all()
        if stopped:
            log.warning("alert dispatcher is stopped; dropped %d new alert(s)", dropped)
        elif dropped:
            log.warning(
                "alert queue full (%d); dropped the %d oldest alert(s)", self.queue_size, dropped
            )
        # Outside the lock: the callback is the caller's code (a metrics counter, typically).
        self._report("queue", "dropped", dropped)

    def recent(self, model: str | None = None) -> list[dict[str, Any]]:
        """The most recent alerts submitted (all models', or ``model``'s), newest last, as
        dicts."""
        with self._q.cond:
            if model is None:
                return list(self._recent)
            return list(self._recent_by_model.get(model, ()))

    def undelivered(self) -> dict[str, int]:
        """How many alerts each sink is owed now (their sends failed; they go out again)."""
        with self._q.cond:
            return {box.sink.name: len(box.undelivered) for box in self._outboxes}

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until every queued alert has had its send (delivered or now owed); False if that
        did not happen in time."""
        with self._q.cond:
            return self._q.cond.wait_for(
                lambda: not any(box.pending or box.in_flight for box in self._outboxes),
                timeout=timeout,
            )

    def stop(self, timeout: float = 5.0) -> None:
        """Send what is queued and owed once more (best effort within ``timeout``), then end
        the worker; what still fails is dropped, counted and logged."""
        with self._q.cond:
            self._q.stopping = True
            give_up_at = self._q.give_up_at = time.monotonic() + timeout
            self._q.cond.notify_all()
        for box in self._outboxes:
            if box.thread is None:
                continue
            box.thread.join(max(give_up_at - time.monotonic(), 0.0))
            if not box.thread.is_alive():
                continue
            with self._q.cond:
                box.abandoned = True
                held = box.in_flight + len(box.pending) + len(box.undelivered)
            log.warning(
                "alert sink %r did not stop within %.1f s (a send still hangs): %d alert(s) "
                "for it dropped",
                box.sink.name,
                timeout,
                held,
            )
            self._report(box.sink.name, "dropped", held)
        if self._sweeper is not None:
            # It wakes at once to stop; unjoined, it outlived stop() now and then (a test
            # counting the threads before and after saw it).
            self._sweeper.join(max(give_up_at - time.monotonic(), 0.0))

    def _track_firing(self, alert: Alert, now: float) -> None:
        identity = _identity(alert)
        if alert.status == "firing":
            self._firing[identity] = _Firing(alert, now)
        else:
            self._firing.pop(identity, None)

    def _run(self, box: _Outbox) -> None:
        next_resend = time.monotonic() + self.resend_seconds
        while True:
            with self._q.cond:
                while not box.pending and not self._q.stopping:
                    left = next_resend - time.monotonic()
                    if left <= 0:
                        break
                    self._q.cond.wait(left)
                batch = list(box.pending)
                box.pending.clear()
                final = self._q.stopping
                resend = not final and time.monotonic() >= next_resend
                if resend:
                    next_resend = time.monotonic() + self.resend_seconds
                    self._forget_stale()
                alerts = self._plan(box, batch, resend=resend)
                box.in_flight = len(alerts)
            try:
                if alerts:
                    self._settle(box, alerts, final=final)
            finally:
                with self._q.cond:
                    box.in_flight = 0
                    self._q.cond.notify_all()
            if final:
                return

    def _forget_stale(self) -> None:
        oldest = time.monotonic() - self.stale_seconds
        for identity in [i for i, f in self._firing.items() if f.refreshed < oldest]:
            del self._firing[identity]

    def _plan(self, box: _Outbox, batch: list[Alert], *, resend: bool) -> list[Alert]:
        """The alerts ``box``'s sink gets this round: the new batch, what it is owed (unless
        the batch has a newer version), and on a resend round the firing set."""
        alerts = list(batch)
        taken = {_identity(alert) for alert in batch}
        for identity, alert in box.undelivered.items():
            if identity not in taken:
                alerts.append(alert)
                taken.add(identity)
        box.undelivered.clear()
        if resend and _resends_firing(box.sink):
            # Another worker may have resolved one since (the tracker's state is shared): a
            # re-send of it then fired it again at Alertmanager.
            for identity in [i for i, f in self._firing.items() if not self._fires(f.alert)]:
                del self._firing[identity]
            alerts += [f.alert for i, f in self._firing.items() if i not in taken]
        return alerts

    def _fires(self, alert: Alert) -> bool:
        """``still_firing``, taken as yes when it fails: an error there (the shared state's
        file unreadable) ended the sink's thread, and with it every later delivery."""
        try:
            return self._still_firing(alert)
        except Exception as exc:
            log.warning("could not tell whether %s still fires (%s); re-sent", alert.model, exc)
            return True

    def _settle(self, box: _Outbox, alerts: list[Alert], *, final: bool) -> None:
        name = box.sink.name
        if final and self._past_deadline():
            log.warning("alert dispatcher stopping: %d alert(s) for %r not sent", len(alerts), name)
            self._report(name, "dropped", len(alerts))
            return
        outcome = self._deliver(box.sink, alerts)
        if box.abandoned:
            return  # stop() counted these when it gave up on the send
        self._report(name, outcome, len(alerts))
        if outcome == "sent":
            if _resends_firing(box.sink) and not final:
                self._resolve_what_ended_meanwhile(box, alerts)
            return
        if final:
            log.warning(
                "alert dispatcher stopping: %d alert(s) for %r not delivered", len(alerts), name
            )
            self._report(name, "dropped", len(alerts))
            return
        dropped = 0
        with self._q.cond:
            for alert in alerts:
                identity = _identity(alert)
                box.undelivered[identity] = alert  # a later alert of a label set replaces it
                box.undelivered.move_to_end(identity)
            while len(box.undelivered) > self.undelivered_size:
                box.undelivered.popitem(last=False)
                dropped += 1
        if dropped:
            log.warning(
                "alert sink %r is owed more than %d alerts; dropped the %d oldest",
                name,
                self.undelivered_size,
                dropped,
            )
        self._report(name, "dropped", dropped)

    def _resolve_what_ended_meanwhile(self, box: _Outbox, sent: list[Alert]) -> None:
        """Firing alerts just sent that no longer fire: another worker resolved them while
        this send was on its way, and its "resolved" may have reached Alertmanager first,
        which then showed them firing again until they expired. Their end goes out again."""
        ended = [a for a in sent if a.status == "firing" and not self._fires(a)]
        if not ended:
            return
        now = datetime.now(UTC)
        with self._q.cond:
            for alert in ended:
                self._firing.pop(_identity(alert), None)
                box.pending.append(replace(alert, status="resolved", ends_at=now))
            self._q.cond.notify_all()

    def _deliver(self, sink: Sink, batch: list[Alert]) -> str:
        for attempt in range(self.retries + 1):
            try:
                sink.send(batch)
                return "sent"
            except Exception as exc:
                if attempt == self.retries or self._past_deadline():
                    log.warning(
                        "alert sink %r failed %d time(s) with %d alert(s); they go out again "
                        "with its next send: %s",
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

    def _report(self, sink: str, outcome: str, count: int = 1) -> None:
        for _ in range(count):
            try:
                self._on_outcome(sink, outcome)
            except Exception:
                log.exception("on_outcome callback failed for (%r, %r)", sink, outcome)
