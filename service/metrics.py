"""Prometheus metrics, all in one place and bound to an injected ``CollectorRegistry``.

Under gunicorn (``PROMETHEUS_MULTIPROC_DIR`` set) every worker writes its samples to files in
that directory and ``/metrics`` sums them with ``MultiProcessCollector``, so counters add up
across workers whichever worker answers the scrape. Gauges state how they combine
(``multiprocess_mode``); there are no Info/Enum metrics, which multiprocess mode lacks.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable, Sequence

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from detector.features.encoded import REJECTION_CODES
from service.metric_files import (
    back_metric_files,
    counted_label_values,
    open_metric_files,
    reading,
)

#: p-value buckets: dense around the usual thresholds (1e-4 .. 0.05) so alert levels are visible.
P_VALUE_BUCKETS = (1e-6, 1e-5, 1e-4, 1e-3, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0)
#: Request durations: single records take milliseconds, large batches up to seconds.
DURATION_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
#: Distinct alert keys per model given their own series in ``anomaly_key_anomalies_total``
#: (over the server's workers, live and exited); later keys are counted under ``OTHER_KEYS``.
MAX_KEY_SERIES = 100
#: The ``key`` label of anomalies whose key came after the first ``MAX_KEY_SERIES``. A real key
#: always holds '=', so this value never collides with one.
OTHER_KEYS = "__other__"
#: ``anomaly_model_reloads_total``'s outcomes (``service.registry``).
RELOAD_OUTCOMES = ("success", "failure")
#: ``anomaly_alerts_total``'s outcomes of a sink's sends (``service.delivery``).
DELIVERY_OUTCOMES = ("sent", "failed", "dropped")
#: The ``sink`` label of alerts dropped before any sink: the dispatcher's queue was full.
QUEUE_SINK = "queue"


def multiprocess_dir() -> str | None:
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


class ServiceMetrics:
    """Every metric the service exports. Label sets are small and fixed."""

    def __init__(self, registry: CollectorRegistry) -> None:
        back_metric_files()  # before the first value: a full disk must not kill the worker
        if (directory := multiprocess_dir()) is not None:
            open_metric_files(directory)
        self.registry = registry
        self.records_scored = Counter(
            "anomaly_records_scored_total", "Records scored.", ["model"], registry=registry
        )
        self.anomalies = Counter(
            "anomaly_anomalies_total",
            "Records flagged anomalous, by severity.",
            ["model", "severity"],
            registry=registry,
        )
        self.records_rejected = Counter(
            "anomaly_records_rejected_total",
            "Records not scored, by reason.",
            ["model", "reason"],
            registry=registry,
        )
        self.p_values = Histogram(
            "anomaly_p_value",
            "p-value of each scored record under held-out normal data (low = unusual).",
            ["model"],
            buckets=P_VALUE_BUCKETS,
            registry=registry,
        )
        self.request_duration = Histogram(
            "anomaly_request_duration_seconds",
            "HTTP request duration, by route and status.",
            ["route", "method", "status"],
            buckets=DURATION_BUCKETS,
            registry=registry,
        )
        self.in_flight = Gauge(
            "anomaly_requests_in_flight",
            "HTTP requests being served.",
            registry=registry,
            multiprocess_mode="livesum",
        )
        self.alerts = Counter(
            "anomaly_alerts_total",
            "Alerts by sink and outcome, one count per alert and send: sent (re-sends "
            "included), failed (the send failed after retries; the alert goes out again), "
            "dropped (given up: a full queue, sink 'queue', or a sink owed too many).",
            ["sink", "outcome"],
            registry=registry,
        )
        self.reloads = Counter(
            "anomaly_model_reloads_total",
            "Model reloads by outcome.",
            ["model", "outcome"],
            registry=registry,
        )
        self.model_info = Gauge(
            "anomaly_model_info",
            "1 for the model version a worker serves.",
            ["model", "version"],
            registry=registry,
            multiprocess_mode="livemax",
        )
        self.threshold = Gauge(
            "anomaly_threshold",
            "The anomaly-score threshold in force.",
            ["model"],
            registry=registry,
            multiprocess_mode="mostrecent",
        )
        self.expected_rate = Gauge(
            "anomaly_expected_anomaly_rate",
            "The calibrated false-positive rate: the anomaly rate expected on normal traffic.",
            ["model"],
            registry=registry,
            multiprocess_mode="mostrecent",
        )
        self.key_anomalies = Counter(
            "anomaly_key_anomalies_total",
            "Records flagged anomalous, by alert key (the alert policy's group_by fields, as "
            f"'field=value,...'); only when group_by is set; at most {MAX_KEY_SERIES} keys per "
            "model over the server's life (a few more where workers meet new keys at once), "
            f"the rest under key '{OTHER_KEYS}'.",
            ["model", "key"],
            registry=registry,
        )
        self.series_evicted = Counter(
            "anomaly_series_evicted_total",
            "Series forgotten (their last rows and level) to keep a series model within "
            "series_max_keys; one that comes back warms up again.",
            ["model"],
            registry=registry,
        )
        self.records_unalerted = Counter(
            "anomaly_records_unalerted_total",
            "Records scored but left out of alerting: the alert state (series_state) could not "
            "be read or written (a full or read-only disk); the service log says why.",
            ["model"],
            registry=registry,
        )
        self.model_loaded = Gauge(
            "anomaly_model_loaded",
            "1 when every live worker has the model loaded and can score with it, else 0.",
            ["model"],
            registry=registry,
            multiprocess_mode="livemin",
        )
        self._keys_seen: dict[str, set[str]] = {}
        self._keys_lock = threading.Lock()

    def count_key_anomalies(self, model: str, counts: dict[str, int]) -> None:
        """Add anomalies per alert key, keeping the number of series bounded."""
        with self._keys_lock:
            seen = self._keys_seen.setdefault(model, set())
            if len(seen) < MAX_KEY_SERIES and not counts.keys() <= seen:
                # The keys every worker counted, live or exited, before a new one: with a
                # cap of each worker's own, every worker added 100 series a model for good.
                seen |= self._counted_keys().get(model, set())
            labelled: dict[str, int] = {}
            for key, n in counts.items():
                if key not in seen and len(seen) < MAX_KEY_SERIES:
                    seen.add(key)
                label = key if key in seen else OTHER_KEYS
                labelled[label] = labelled.get(label, 0) + n
        for label, n in labelled.items():
            self.key_anomalies.labels(model, label).inc(n)

    def _counted_keys(self) -> dict[str, set[str]]:
        folder = multiprocess_dir()
        if folder is None:
            return {}
        return counted_label_values(folder, "anomaly_key_anomalies", "key")

    def declare(self, model: str, severities: Sequence[str]) -> None:
        """Export ``model``'s counters at 0 before anything happens to them. Prometheus's
        ``increase`` and ``rate`` take a series' first sample as their start, so a series born
        at 1 (the first failed reload, the first rejected record) never counted: the reload
        alert and the rejection panel missed every first event after a start."""
        for outcome in RELOAD_OUTCOMES:
            self.reloads.labels(model, outcome)
        for severity in severities:
            self.anomalies.labels(model, severity)
        for code in REJECTION_CODES:
            self.records_rejected.labels(model, code)
        self.series_evicted.labels(model)
        self.records_unalerted.labels(model)

    def declare_sinks(self, sinks: Iterable[str]) -> None:
        """Each alert sink's outcomes at 0 (and the queue's drops), for the reason above."""
        for sink in sinks:
            for outcome in DELIVERY_OUTCOMES:
                self.alerts.labels(sink, outcome)
        self.alerts.labels(QUEUE_SINK, "dropped")

    def set_model(
        self,
        model: str,
        version: str,
        threshold: float,
        target_fpr: float,
        previous_version: str | None = None,
    ) -> None:
        if previous_version and previous_version != version:
            self.model_info.labels(model, previous_version).set(0)
        self.model_info.labels(model, version).set(1)
        self.model_loaded.labels(model).set(1)
        self.threshold.labels(model).set(threshold)
        self.expected_rate.labels(model).set(target_fpr)

    def exposition(self) -> bytes:
        """The text exposition: summed over worker processes in multiprocess mode."""
        directory = multiprocess_dir()
        if directory is None:
            return generate_latest(self.registry)
        combined = CollectorRegistry()
        combined.register(_ServedVersions(multiprocess.MultiProcessCollector(None, path=directory)))
        with reading(directory):  # no dead worker's counts folded away mid-read
            return generate_latest(combined)


class _ServedVersions(Collector):
    """``collector``'s metrics, less the series of ``anomaly_model_info`` at 0: a version a
    worker served before. A series once written stays in the worker's file (multiprocess
    mode removes none), so every reload to a new version added one for the worker's life."""

    def __init__(self, collector: Collector) -> None:
        self.collector = collector

    def collect(self) -> Iterable[Metric]:
        for metric in self.collector.collect():
            if metric.name == "anomaly_model_info":
                metric.samples = [sample for sample in metric.samples if sample.value]
            yield metric
