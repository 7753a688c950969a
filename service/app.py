"""The Flask application factory.

``create_app`` builds everything an app needs from its arguments (no module-level state), so
tests pass their own configuration, models, metrics registry and alert sinks.
"""

from __future__ import annotations

import errno
import functools
import logging
import re
import sqlite3
import time
import uuid
from collections.abc import Sequence
from typing import Any

from flask import Flask, Response, current_app, g, has_request_context, jsonify, request
from prometheus_client import CollectorRegistry
from werkzeug.exceptions import ClientDisconnected, HTTPException, MethodNotAllowed, NotFound

from detector.bundles.bundle import Bundle
from detector.errors import BundleError, ConfigError, DetectorError, InputError
from detector.features.encode import shortened
from detector.wording import speaking_to
from service.alert_state import SharedAlertStates
from service.alerts import AlertTracker
from service.config import ServiceConfig, check_bundle_alert_keys, load_config
from service.delivery import AlertDispatcher
from service.heap import FrozenHeap
from service.metrics import ServiceMetrics
from service.open_files import opening_out_of_files, out_of_files, say_out_of_files
from service.registry import LoadedModel, ModelRegistry
from service.series_store import SeriesStore
from service.sinks import AlertmanagerSink, LogSink, Sink, WebhookSink
from service.state import ApiError, ServiceState, state
from service.throttled_log import ThrottledLog
from service.turns import give_turn_back

log = logging.getLogger(__name__)
#: A state file failing fails every series request: logged once a minute, counted.
_state_failing = ThrottledLog(log, "requests failed")
#: ``Retry-After`` of a series request refused for a full disk: room comes back when an
#: operator frees it, not in a second.
DISK_FULL_RETRY_S = 30


def create_app(
    config: ServiceConfig | None = None,
    *,
    models: ModelRegistry | None = None,
    metrics_registry: CollectorRegistry | None = None,
    sinks: Sequence[Sink] | None = None,
    check_state: bool = True,
    freeze_heap: bool = False,
) -> Flask:
    """Build the scoring service. Without arguments, settings come from ``ANOMALY_*``
    environment variables (and the file named by ``ANOMALY_CONFIG``, if set).
    ``check_state``: refuse a ``series_state`` file that cannot be used now (``ConfigError``);
    without, the app serves and its series requests answer 503 until the file is usable.
    ``freeze_heap``: the process is this app's (a server's worker): once built, leave what it
    holds out of the garbage collector's passes (``service.heap``)."""
    if config is None:
        config = load_config()
    if config.tf_threads and needs_tensorflow():
        _limit_tensorflow_threads(config.tf_threads)
    if config.tf_threads:
        from detector.scoring.neighbours import set_search_threads

        set_search_threads(config.tf_threads)
    check_bundle_alert_keys(config)
    metrics = ServiceMetrics(metrics_registry or CollectorRegistry())
    series = SeriesStore(
        config.series_state or ":memory:",
        max_keys=config.series_max_keys,
        on_evict=functools.partial(_count_evicted, metrics, config.series_max_keys, set()),
    )
    if check_state:
        series.check()
    heap = FrozenHeap() if freeze_heap else None
    if models is None:
        models = ModelRegistry(
            config.models,
            sync_dir=config.model_sync_dir,
            accept=functools.partial(_check_alert_keys, config),
            on_reload=lambda name, outcome: metrics.reloads.labels(name, outcome).inc(),
            on_install=functools.partial(_installed, metrics, heap),
        )
    for name in config.models:
        metrics.declare(name, [level for level, _ in config.policy_for(name).severities])
    models.load_all()
    for name, _error in models.errors().items():
        metrics.model_loaded.labels(name).set(0)
    # Beside the series' state: one file every worker shares (a server's workers then count a
    # key's records together); in-process (tests) each app keeps its own.
    shared = (
        None
        if config.series_state is None
        else SharedAlertStates(config.series_state, recent=config.recent_alerts)
    )
    resend = _resend_seconds(config)
    stale = _stale_seconds(config, resend)
    trackers = {
        name: AlertTracker(name, config.policy_for(name), shared=shared, stale_seconds=stale)
        for name in config.models
    }
    dispatcher = AlertDispatcher(
        list(sinks) if sinks is not None else _default_sinks(config, resend),
        queue_size=config.alert_queue_size,
        retries=config.alert_retries,
        resend_seconds=resend,
        stale_seconds=stale,
        recent_size=config.recent_alerts,
        on_outcome=lambda sink, outcome: metrics.alerts.labels(sink, outcome).inc(),
        still_firing=functools.partial(_still_firing, trackers),
        sweep=lambda: [alert for t in trackers.values() for alert in t.resolve_silent()],
    )
    metrics.declare_sinks(sink.name for sink in dispatcher.sinks)
    dispatcher.start()
    app_state = ServiceState(
        config=config,
        models=models,
        metrics=metrics,
        trackers=trackers,
        dispatcher=dispatcher,
        series=series,
        shared_alerts=shared,
        heap=heap,
    )

    app = Flask("service")
    # A path with '//' is a 404 in the JSON shape: Werkzeug's default answered a 308 HTML
    # page, to a merged path that could be another route (/v2/models//ready: model 'ready').
    app.url_map.merge_slashes = False
    app.config["MAX_CONTENT_LENGTH"] = config.max_body_bytes
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.extensions["anomaly"] = app_state
    app.wsgi_app = _speaking_to_clients(app.wsgi_app)  # type: ignore[method-assign]

    from service.api import api
    from service.kserve import kserve

    app.register_blueprint(api)
    app.register_blueprint(kserve)
    _install_hooks(app, app_state)
    _install_error_handlers(app)
    if heap is not None:
        heap.freeze()
    return app


def _speaking_to_clients(wsgi_app: Any) -> Any:
    """Around every request: messages name the service's settings (``passthrough_fields``),
    never a command-line flag or Python parameter its client cannot use."""

    def wrapped(environ: dict[str, Any], start_response: Any) -> Any:
        with speaking_to("http"):
            return wsgi_app(environ, start_response)

    return wrapped


def _check_alert_keys(config: ServiceConfig, name: str, bundle: Bundle) -> None:
    """A bundle reloaded (or followed from another worker's reload) whose records cannot hold
    its model's alert key fields is refused, and the model in force keeps serving."""
    try:
        config.check_alert_keys({name: (*bundle.input_columns, *bundle.ignored_columns)})
    except ConfigError as exc:
        raise BundleError(f"{exc} (in the bundle at {bundle.path})") from None


def _installed(
    metrics: ServiceMetrics,
    heap: FrozenHeap | None,
    loaded: LoadedModel,
    previous: LoadedModel | None,
) -> None:
    _publish(metrics, loaded, previous)
    if heap is not None and previous is not None:
        heap.thaw()  # what the model replaced held was frozen: let the collector have it


def _publish(metrics: ServiceMetrics, loaded: LoadedModel, previous: LoadedModel | None) -> None:
    """Metrics about the model now in force: at start, on reload, and in every worker that
    follows another worker's reload."""
    calibrator = loaded.bundle.calibrator
    metrics.set_model(
        loaded.name,
        loaded.bundle.version,
        calibrator.threshold,
        calibrator.target_fpr,
        previous_version=previous.bundle.version if previous else None,
    )


#: A policy may repeat on every record (repeat_seconds 0); re-sending is never faster than this.
MIN_RESEND_SECONDS = 1.0
#: The methods a request's metric names; any other is 'other'. HTTP lets a client invent
#: methods ('ZZ12345'), and each would be a new time series of the latency histogram: a
#: client could grow every worker's metrics, and Prometheus, without bound.
HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def _resend_seconds(config: ServiceConfig) -> float:
    """How often Alertmanager gets every firing alert again: the shortest ``repeat_seconds``
    among the models' alert policies, so no model's alerts are re-sent less often than it asks."""
    repeats = [config.policy_for(name).repeat_seconds for name in config.models]
    return max(MIN_RESEND_SECONDS, min(repeats, default=config.alerts.repeat_seconds))


def _stale_seconds(config: ServiceConfig, resend: float) -> float:
    """A firing alert its tracker has not repeated for this long (4 of the longest repeat
    intervals: its key stopped sending records) is no longer re-sent, so Alertmanager resolves
    it at its endsAt, as it did before re-sending existed; the tracker then resolves it too
    (``AlertTracker.resolve_silent``), for every sink."""
    repeats = [config.policy_for(name).repeat_seconds for name in config.models]
    return 4 * max([resend, *repeats])


def _default_sinks(config: ServiceConfig, resend_seconds: float) -> list[Sink]:
    sinks: list[Sink] = []
    if config.alertmanager_url:
        sinks.append(
            AlertmanagerSink(
                config.alertmanager_url,
                generator_url=config.external_url,
                # Prometheus's rule: valid for 4 resends, so one or two lost ones do not
                # resolve the alert, and it resolves soon after the service stops sending.
                valid_for=4 * resend_seconds,
            )
        )
    if config.webhook_url:
        sinks.append(WebhookSink(config.webhook_url))
    if config.alert_log:
        sinks.append(LogSink())
    return sinks


def needs_tensorflow() -> bool:
    # Bundles score with their LiteRT scorer file; only where LiteRT is not installed does the
    # graph run on TensorFlow, which otherwise costs each worker seconds and ~700 MB.
    from detector.nn.lite_graph import litert_available

    return not litert_available()


def _limit_tensorflow_threads(threads: int) -> None:
    # Several workers on a few cores: one thread pool per worker sized to its share, so the
    # workers do not oversubscribe the cores. Must run before TensorFlow executes any op.
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    except RuntimeError:
        log.warning("TensorFlow was already initialised; tf_threads=%s not applied", threads)


def _install_hooks(app: Flask, app_state: ServiceState) -> None:
    metrics = app_state.metrics

    @app.before_request
    def _start() -> None:
        g.started = time.perf_counter()
        _limit_body_reads(app_state.config.request_read_timeout)
        metrics.in_flight.inc()
        app_state.models.refresh()

    @app.teardown_request
    def _finish(exc: BaseException | None) -> None:
        give_turn_back(app_state)
        if app_state.heap is not None:
            app_state.heap.settle()
        if "started" not in g:
            return
        _limit_body_reads(None)
        metrics.in_flight.dec()
        rule = request.url_rule.rule if request.url_rule is not None else "unmatched"
        status = str(getattr(g, "status", 500 if exc else 200))
        method = request.method if request.method in HTTP_METHODS else "other"
        metrics.request_duration.labels(rule, method, status).observe(
            time.perf_counter() - g.started
        )

    @app.after_request
    def _record_status(response: Response) -> Response:
        g.status = response.status_code
        # Every answer names its request, the client's id where it sent a usable one: an
        # on-call helper could not tie a 422 to anything (and the access log prints it).
        response.headers[REQUEST_ID_HEADER] = request_id(request.headers.get(REQUEST_ID_HEADER))
        return response


#: The header naming a request, echoed back (or made) on every answer.
REQUEST_ID_HEADER = "X-Request-Id"
#: A client's request id is echoed only as such text: it lands in log lines.
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


def request_id(given: str | None) -> str:
    """``given`` where it is a plain id (letters, digits, ``._:-``, at most 128), else a new
    one: a header of newlines or megabytes must not reach the log."""
    if given is not None and _REQUEST_ID.fullmatch(given):
        return given
    return uuid.uuid4().hex


#: How slowly a request body may arrive past its first ``request_read_timeout`` seconds: each
#: this many bytes received buys one more second. A client sending a byte every few seconds kept
#: each read under a per-read timeout, and held its connection forever; a few thousand such
#: sockets took every worker's connections.
MIN_BODY_BYTES_PER_S = 10_000


def _still_firing(trackers: dict[str, AlertTracker], alert: Any) -> bool:
    """Whether an alert Alertmanager is re-sent still fires (another worker may have resolved
    it since this one sent it)."""
    tracker = trackers.get(alert.model)
    return tracker is None or tracker.firing(alert.key, alert.severity)


def _limit_body_reads(seconds: float | None) -> None:
    """Bound the reading of the request body under gunicorn: a client that stops sending (or
    declares more bytes than it sends, or sends them a few a second) gets 408 after ``seconds``,
    plus one second per ``MIN_BODY_BYTES_PER_S`` bytes received (never more than ``seconds``
    ahead of the last read), instead of holding the connection. ``None`` lifts the bound when
    the request is done: gunicorn then waits for the connection's next request under its own
    keep-alive timeout, which a shorter socket timeout would turn into a logged socket error."""
    sock = request.environ.get("gunicorn.socket")
    if sock is None:
        return
    sock.settimeout(seconds)
    if seconds is not None:
        request.environ["wsgi.input"] = _PacedBody(request.environ["wsgi.input"], seconds)


class _PacedBody:
    """gunicorn's request body, each read bounded by what is left of a deadline that grows
    with the bytes received (a gevent timeout: gunicorn reads a body in loops of socket reads,
    each of which the socket's own timeout bounds alone). Past it: ``ClientDisconnected``
    caused by ``TimeoutError``, answered 408."""

    def __init__(self, body: Any, seconds: float) -> None:
        self._body = body
        self._seconds = seconds
        self._deadline = time.monotonic() + seconds

    def _paced(self, read: Any, size: int | None) -> bytes:
        import gevent

        late = TimeoutError("the request body arrived too slowly")
        left = self._deadline - time.monotonic()
        try:
            if left <= 0:
                raise late
            with gevent.Timeout(left, late):
                data: bytes = read(size)
        except TimeoutError as exc:
            raise ClientDisconnected() from exc
        # Never more than ``seconds`` ahead: a body of 16 MiB sent at once but its last byte
        # banked 28 minutes, which a byte every few seconds then held (and the worker's share of
        # bodies being read with it) long after the rest had come.
        now = time.monotonic()
        self._deadline = min(self._deadline + len(data) / MIN_BODY_BYTES_PER_S, now + self._seconds)
        return data

    def read(self, size: int | None = None) -> bytes:
        return self._paced(self._body.read, size)

    def readline(self, size: int | None = None) -> bytes:
        return self._paced(self._body.readline, size)

    def readlines(self, size: int | None = None) -> list[bytes]:
        return list(iter(self.readline, b""))

    def __iter__(self) -> Any:
        return iter(self.readline, b"")


#: The longest error detail answered. Details name what the caller sent (columns, paths), a few
#: names each (``detector.features.encode.listed``); this bounds whatever else a message echoes.
MAX_DETAIL_CHARS = 4000


def error_response(status: int, error: str, detail: str) -> tuple[Response, int]:
    detail = shortened(detail, MAX_DETAIL_CHARS)
    if has_request_context() and request.path.startswith("/v2"):
        # The Open Inference Protocol's error is its message, which KServe's and Triton's
        # clients show alone: they said "bad_request". The code and detail as /v1 has them.
        return jsonify({"error": detail, "code": error, "detail": detail}), status
    return jsonify({"error": error, "detail": detail}), status


def _of_model(detail: str) -> str:
    """``detail`` said of the model the request named, and its version: a client of many
    models (or of one reloaded with other columns) read "The model expects: ..." of no model
    in particular."""
    name = (request.view_args or {}).get("name")
    if not isinstance(name, str):
        return detail
    try:
        version = f" (version {state().models.get(name).bundle.version})"
    except (KeyError, BundleError):
        version = ""
    return f"model '{name}'{version}: {detail}"


def _install_error_handlers(app: Flask) -> None:
    @app.errorhandler(ApiError)
    def _api_error(exc: ApiError) -> Any:
        response, status = error_response(exc.status, exc.error, exc.detail)
        if exc.status == 401:
            response.headers["WWW-Authenticate"] = 'Bearer realm="anomaly"'
        if exc.retry_after is not None:
            response.headers["Retry-After"] = str(exc.retry_after)
        return response, status

    @app.errorhandler(InputError)
    def _input_error(exc: InputError) -> Any:
        return error_response(422, "invalid_input", _of_model(str(exc)))

    @app.errorhandler(DetectorError)
    def _detector_error(exc: DetectorError) -> Any:
        # Not the client's input (that is InputError, answered above): a model that failed,
        # whose message names files. It goes to the log; the client learns where to look.
        log.error("model error serving %s %s: %s", request.method, request.path, exc)
        return error_response(503, "model_error", "the model failed; see the server log")

    @app.errorhandler(ClientDisconnected)
    def _body_incomplete(exc: ClientDisconnected) -> Any:
        # werkzeug raises it while handling the socket's error, which is thus its context.
        if isinstance(exc.__cause__ or exc.__context__, TimeoutError):
            seconds = current_app.extensions["anomaly"].config.request_read_timeout
            return error_response(
                408,
                "request_timeout",
                f"the request body did not arrive within {seconds:g} s (and 1 s more per "
                f"{MIN_BODY_BYTES_PER_S // 1000} kB received); send the whole body at once, "
                "with a Content-Length that matches it",
            )
        return error_response(
            400,
            "incomplete_body",
            "the request body ended before its declared length; send a Content-Length that "
            "matches the body",
        )

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException) -> Any:
        name = (exc.name or "error").lower().replace(" ", "_")
        detail = exc.description or ""
        if exc.code == 413:
            detail = (
                f"request body over {app.config['MAX_CONTENT_LENGTH']} bytes; split the "
                "batch or raise max_body_bytes"
            )
        elif isinstance(exc, NotFound):  # routing's own: unknown models are ApiErrors
            detail = f"no route {shortened(request.path)!r}; GET /openapi.json lists the routes"
        elif isinstance(exc, MethodNotAllowed) and exc.valid_methods:
            allowed = ", ".join(m for m in exc.valid_methods if m not in ("HEAD", "OPTIONS"))
            detail = (
                f"{request.method} is not allowed on {shortened(request.path)!r}; use {allowed}"
            )
        return error_response(exc.code or 500, name, detail)

    @app.errorhandler(sqlite3.Error)
    def _series_state_error(exc: sqlite3.Error) -> Any:
        if (cause := opening_out_of_files(exc)) is not None:
            # SQLite's 'unable to open database file', at the open files limit: said as any
            # other request out of open files is, with the limit and the fix.
            return _os_error(cause)
        if getattr(exc, "sqlite_errorname", None) == "SQLITE_FULL":
            return _state_disk_full()
        # Checked at start, the state file can still fail later: a file replaced or
        # corrupted under the server, a lock held past its timeout.
        _state_failing.error(
            "series state file failed serving %s %s: %s", request.method, request.path, exc
        )
        return error_response(
            503,
            "series_state_unavailable",
            f"the series' state file cannot be used ({exc}); see the server log",
        )

    def _state_disk_full() -> Any:
        # SQLite said only 'database or disk is full', and the log naming no file: where an
        # on-call helper's disk filled, series requests got 503s naming neither the disk nor
        # what to do. Nothing to fix in the request: it scores once there is room again.
        _state_failing.error(
            "series state file %s is on a full disk: series requests get 503 until space is "
            "freed there (or series_state names a file on a larger disk)",
            state().config.series_state,
        )
        response, status = error_response(
            503,
            "series_state_unavailable",
            "the server's disk for its series state is full; the records were not scored: "
            "send them again in a while (its log names the file)",
        )
        response.headers["Retry-After"] = str(DISK_FULL_RETRY_S)
        return response, status

    @app.errorhandler(OSError)
    def _os_error(exc: OSError) -> Any:
        if not out_of_files(exc):
            return _internal(exc)
        # At its open files limit (a flood of connections): the next file may open.
        say_out_of_files(exc)
        whose = "the server's machine is" if exc.errno == errno.ENFILE else "the server is"
        response, status = error_response(
            503,
            "out_of_open_files",
            f"{whose} out of open files for now; retry in a second (its log says what to change)",
        )
        response.headers["Retry-After"] = "1"
        return response, status

    @app.errorhandler(Exception)
    def _internal(exc: Exception) -> Any:
        log.exception("internal error serving %s %s", request.method, request.path)
        return error_response(500, "internal_error", "the server failed; see its log")


def _count_evicted(
    metrics: ServiceMetrics, cap: int, warned: set[str], model: str, evicted: int
) -> None:
    metrics.series_evicted.labels(model).inc(evicted)
    if model not in warned:  # once per model and worker: the counter says how often since
        warned.add(model)
        log.warning(
            "model %s holds series_max_keys (%d) series: the least recently seen are forgotten "
            "and warm up again if they come back; if more series than that are live, none "
            "finishes warming up: raise series_max_keys",
            model,
            cap,
        )
