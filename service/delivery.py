"""Delivering alerts off the request path: ``AlertDispatcher`` and the ``Sink``s.

``AlertDispatcher`` hands alerts from ``service.alerts.AlertTracker`` to ``Sink``s
(Alertmanager's v2 API, a JSON webhook, the log) through a bounded queue and one worker thread
that retries with exponential backoff. Delivery outcomes go to a callback, so this module needs
no metrics library.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import urllib.error
import urllib.request
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from service.alerts import Alert, iso_utc

__all__ = [
    "AlertDeliveryError",
    "AlertDispatcher",
    "AlertmanagerSink",
    "LogSink",
    "Sink",
    "WebhookSink",
]

#: The log sink and the dispatcher log as ``service.alerts``, the name operators filter on.
log = logging.getLogger("service.alerts")


class AlertDeliveryError(RuntimeError):
    """A sink could not deliver a batch of alerts; the message names the endpoint and the cause."""


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
                "startsAt": iso_utc(alert.starts_at),
                "generatorURL": self.generator_url,
            }
            if alert.ends_at is not None:
                item["endsAt"] = iso_utc(alert.ends_at)
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
