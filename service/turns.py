"""Large requests take turns: one at a time per worker process, its scoring in a thread.

Under gunicorn's gevent worker a request's parsing and scoring waited for nothing: a
10,000-record batch held the worker's event loop for about a second, and each connection that
was ready at one poll ran to its end before the next poll accepted another. 20 batches at once
held ``/healthz`` on a new connection for 16 s, past the Kubernetes liveness probe's timeout,
and single records with it. Now a large body, once read, waits for its turn (still counted
against the bodies a worker reads at once, which bounds what waits), and its model call runs
in a thread of its own (metrics, alerts and series state stay on the loop): the loop answers
probes and small requests meanwhile. Only the model call: validating the records and building
the answer there too cost batches of 1,000 records over HTTP a fifth of their throughput
(three hand-overs a request), the model call alone under a tenth.

A series model's batch held the loop for its whole scoring (10,000 records: 6 s, most of it
reading times and windowing, which the model call alone left there; 20 such batches held
``/healthz`` 94 s, and gunicorn killed the worker): its records' checks, their windowing (in
the state file's transaction, which the loop's greenlet holds, its SQLite connection never
leaving it), their encoding and the model call each go to the thread, and its levels are judged
back on the loop. The model's series requests take turns of their own (``ServiceState.
series_turn``): a series' next records, judged while a batch's model call let the loop serve
them, missed its scores in their levels.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any, TypeVar

from flask import g

from service.state import ServiceState

T = TypeVar("T")


def take_turn(state: ServiceState) -> None:
    """Wait until no other large request of this process is being parsed or scored; the turn
    is given back when the request ends (``give_turn_back``)."""
    state.large_turn.acquire()
    g.large_turn = True


def give_turn_back(state: ServiceState) -> None:
    if g.pop("large_turn", False):
        state.large_turn.release()


#: A body at least this large (once uncompressed) is parsed, and its answer built, in the
#: scoring thread too: 10,000 records (3 MB of JSON) held the loop 0.1-0.3 s parsing and
#: 0.6-1.0 s answering; 1,000 records under a tenth of that, which the hand-overs cost more
#: than (see ``off_the_loop``'s ``at_least``).
HEAVY_BODY_BYTES = 1 << 20


def off_the_loop(run: Callable[..., T], *args: Any, at_least: int = 0) -> T:
    """``run(*args)``, in this process's scoring thread when this request holds the turn under
    a gevent worker (the loop then serves other connections) and its body is at least
    ``at_least`` bytes; else here. ``run`` must not touch what the loop's greenlets share
    without a lock: the request's data and the model, not the metrics, the alert state or the
    series store; nor Flask's ``request`` or ``g``, which are the loop's greenlet's."""
    if not g.get("large_turn") or g.get("body_bytes", 0) < at_least or not _gevent_patched():
        return run(*args)
    value, error = _scoring_thread().apply(_caught, (run, args))
    if error is not None:
        raise error
    return value  # type: ignore[no-any-return]


def _caught(run: Callable[..., Any], args: tuple[Any, ...]) -> tuple[Any, Exception | None]:
    # Raised again in the request's greenlet: gevent's pool logs a task's exception with its
    # traceback, and a 4xx (an empty batch, unknown fields) filled the server log with them.
    try:
        return run(*args), None
    except Exception as exc:
        return None, exc


def _gevent_patched() -> bool:
    monkey = sys.modules.get("gevent.monkey")
    return monkey is not None and bool(monkey.is_module_patched("threading"))


_pool: Any = None


def _scoring_thread() -> Any:
    # Made in the worker at its first large request: never in a master that then forks.
    global _pool
    if _pool is None:
        from gevent.threadpool import ThreadPool

        from detector.scoring.neighbours import search_threads, set_search_threads

        _pool = ThreadPool(1)
        # OpenMP keeps its thread count per thread: the scoring thread began with every core
        # for the neighbour search, not the worker's share (tf_threads), and two workers'
        # searches oversubscribed 2 cores (batches of 1,000 records over HTTP: 18,000 records/s
        # against 23,000 scored on the loop).
        _pool.apply(set_search_threads, (search_threads(),))
    return _pool
