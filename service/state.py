"""What the routes of one app share, and the error they answer with.

The blueprints (``service.api``, ``service.kserve``) and the request pipeline import this
module, never ``service.app``, which imports them: the app is built from its parts, and no part
needs the app.
"""

from __future__ import annotations

import difflib
import threading
from dataclasses import dataclass, field

from flask import current_app

from detector.errors import BundleError
from service.alert_state import SharedAlertStates
from service.alerts import AlertTracker
from service.config import ServiceConfig
from service.delivery import AlertDispatcher
from service.heap import FrozenHeap
from service.metrics import ServiceMetrics
from service.registry import LoadedModel, ModelRegistry, UnknownModel
from service.series_store import SeriesStore


class ApiError(Exception):
    """An error answered as JSON ``{error, detail}`` with an HTTP status."""

    def __init__(
        self, status: int, error: str, detail: str, *, retry_after: int | None = None
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.error = error
        self.detail = detail
        #: Seconds after which the same request may succeed (a Retry-After header), if any.
        self.retry_after = retry_after


@dataclass
class ServiceState:
    """What the routes of one app share: settings, models, metrics and alerting."""

    config: ServiceConfig
    models: ModelRegistry
    metrics: ServiceMetrics
    trackers: dict[str, AlertTracker]
    dispatcher: AlertDispatcher
    series: SeriesStore
    #: The alert state every worker shares (``anomaly serve``), or None: this app's alone.
    shared_alerts: SharedAlertStates | None = None
    #: Bytes of request bodies this process is reading now (``service.bodies.read_body``),
    #: under its lock: an app embedded in a threaded server counts from several threads.
    body_bytes_reading: int = 0
    body_bytes_lock: threading.Lock = field(default_factory=threading.Lock)
    #: Held by the large request being parsed and scored (``service.turns``).
    large_turn: threading.Lock = field(default_factory=threading.Lock)
    #: Each series model's requests in this process, one at a time (``series_turn``).
    series_turns: dict[str, threading.Lock] = field(default_factory=dict)
    #: A server worker's heap, frozen once the app was built (``service.heap``), or None.
    heap: FrozenHeap | None = None

    def series_turn(self, model: str) -> threading.Lock:
        """Held by the request of ``model``'s series being windowed, scored and judged against
        its series' levels: in order, as the rows were stored (greenlets under gevent, where
        monkey-patching made the lock a greenlet's; threads in a threaded server)."""
        return self.series_turns.setdefault(model, threading.Lock())

    def model(self, name: str) -> LoadedModel:
        try:
            return self.models.get(name)
        except UnknownModel:
            raise ApiError(
                404,
                "unknown_model",
                unknown_model_detail(name, self.models.names()),
            ) from None
        except BundleError:
            # The reason names files and quotes Keras: the registry logged it when the load
            # failed, and clients get no more than where to look.
            raise ApiError(
                503, "model_not_loaded", f"model '{name}' is not loaded; see the server log"
            ) from None


#: Up to this many served models, an unknown name's answer lists them all.
LISTED_MODELS = 10


def unknown_model_detail(name: str, served: list[str]) -> str:
    """Why ``name`` is not served, and the name it most resembles: a server of 100 models
    listed them all (2.5 kB, cut at 4,000 characters), the right one to be found by eye."""
    detail = f"no model named '{name}'"
    close = difflib.get_close_matches(name, served, n=1, cutoff=0.8)
    if close:
        detail += f"; did you mean '{close[0]}'?"
    if len(served) <= LISTED_MODELS:
        return f"{detail}; served models: {', '.join(served)}"
    return f"{detail}; {len(served)} models are served, GET /v1/models lists them"


def state() -> ServiceState:
    """The current app's state (inside a request)."""
    return current_app.extensions["anomaly"]  # type: ignore[no-any-return]
