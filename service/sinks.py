"""Where alerts go: the ``Sink``s, each delivering one batch of alerts or raising.

``AlertmanagerSink`` posts to Alertmanager's v2 API, ``WebhookSink`` posts JSON to any receiver
and ``LogSink`` logs. A sink tries once and raises ``AlertDeliveryError`` naming the endpoint and
the cause; retrying, and sending again what a sink did not take, is ``service.delivery``'s job.
"""

from __future__ import annotations

import json
import logging
import urllib.error
import urllib.request
from collections import OrderedDict
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from service.alerts import Alert, iso_utc

__all__ = [
    "AlertDeliveryError",
    "AlertmanagerSink",
    "LogSink",
    "Sink",
    "WebhookSink",
]

#: The log sink logs as ``service.alerts``, the name operators filter on.
log = logging.getLogger("service.alerts")


class AlertDeliveryError(RuntimeError):
    """A sink could not deliver a batch of alerts; the message names the endpoint and the cause."""


class Sink(Protocol):
    """Somewhere alerts go. ``send`` raises on failure; the dispatcher retries.

    A sink that de-duplicates by label set, as Alertmanager does, sets ``resend_firing = True``
    to get every firing alert again on the dispatcher's resend interval.
    """

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

    With ``valid_for`` set, a firing alert says ``endsAt`` = now + ``valid_for`` (Prometheus
    sends 4 resend intervals), so Alertmanager resolves it on its own once the service stops
    re-sending it; without, Alertmanager keeps it for its ``resolve_timeout`` after each send.
    A resolved alert's ``endsAt`` is when it resolved.
    """

    resend_firing = True  # Alertmanager de-duplicates, and forgets an alert not re-sent

    def __init__(
        self,
        url: str,
        *,
        generator_url: str,
        timeout: float = 5.0,
        valid_for: float | None = None,
        name: str = "alertmanager",
    ) -> None:
        _check_url(url, "Alertmanager")
        self.name = name
        self.url = url.rstrip("/") + "/api/v2/alerts"
        self.generator_url = generator_url
        self.timeout = timeout
        self.valid_for = valid_for

    def payload(self, alerts: Sequence[Alert]) -> list[dict[str, Any]]:
        body = []
        valid_until = None
        if self.valid_for is not None:
            valid_until = datetime.now(UTC) + timedelta(seconds=self.valid_for)
        for alert in alerts:
            item: dict[str, Any] = {
                "labels": alert.labels(),
                "annotations": alert.annotations(),
                "startsAt": iso_utc(alert.starts_at),
                "generatorURL": self.generator_url,
            }
            ends_at = alert.ends_at if alert.status == "resolved" else valid_until
            if ends_at is not None:
                item["endsAt"] = iso_utc(ends_at)
            body.append(item)
        return body

    def send(self, alerts: Sequence[Alert]) -> None:
        _post_json(self.url, self.payload(alerts), self.timeout)


class WebhookSink:
    """Any JSON receiver: ``POST url`` with ``{"alerts": [alert.to_dict(), ...]}``."""

    resend_firing = False  # a receiver of our own format may not de-duplicate

    def __init__(self, url: str, *, timeout: float = 5.0, name: str = "webhook") -> None:
        _check_url(url, "webhook")
        self.name = name
        self.url = url
        self.timeout = timeout

    def send(self, alerts: Sequence[Alert]) -> None:
        _post_json(self.url, {"alerts": [alert.to_dict() for alert in alerts]}, self.timeout)


class LogSink:
    """Logs each alert on logger ``service.alerts``: WARNING when it starts firing, INFO when
    it is sent again while still firing (every ``repeat_seconds``) and when resolved."""

    resend_firing = False
    #: Firing alerts remembered to tell a re-send from a start (oldest forgotten first).
    REMEMBERED = 10_000

    def __init__(self, *, name: str = "log") -> None:
        self.name = name
        self._firing: OrderedDict[tuple[str, str, datetime], None] = OrderedDict()

    def send(self, alerts: Sequence[Alert]) -> None:
        for alert in alerts:
            episode = (alert.fingerprint, alert.severity, alert.starts_at)
            status, level = alert.status, logging.INFO
            if alert.status == "firing" and episode in self._firing:
                # An on-call helper read 11 WARNING lines for one host's one episode.
                status = "still firing"
            elif alert.status == "firing":
                level = logging.WARNING
                self._firing[episode] = None
                while len(self._firing) > self.REMEMBERED:
                    self._firing.popitem(last=False)
            else:
                self._firing.pop(episode, None)
            log.log(
                level,
                "alert %s %s [%s]: %s",
                status,
                alert.fingerprint,
                alert.severity,
                alert.annotations()["description"],
            )
