"""The production server: the Flask app under gunicorn, with Prometheus multiprocess metrics.

Each worker process builds its own app (no preloading: a model's native state must not be
initialised in the master and then forked). Workers are gevent workers: a client that sends its
request slowly, or never finishes it, holds one greenlet of a worker, not the worker (sync
workers assume a buffering proxy in front, which a user of ``anomaly serve`` may not have).

The master deletes the metric files an earlier run left in the metrics directory (they would
add up) and marks each exited worker dead so its live gauges drop out. Requests gunicorn
refuses before the app sees them (a URL or headers over its limits, a malformed request line)
are answered in the app's JSON error shape, not gunicorn's HTML page. A connection closed
before its request body was read lingers (``LingeringGeventWorker``), so that its answer
reaches a client still sending. A kept-alive connection waits ``KEEPALIVE_IDLE_S`` for its
next request, longer than load balancers keep theirs idle, its headers then timed as gunicorn
times them.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import shutil
import signal
import socket
import sqlite3
import sys
import time
from http import HTTPStatus
from pathlib import Path
from typing import Any

import gevent
from gevent import select as gevent_select
from gevent.event import Event
from gevent.server import StreamServer
from gunicorn import util
from gunicorn.app.base import BaseApplication
from gunicorn.arbiter import Arbiter
from gunicorn.errors import HaltServer
from gunicorn.workers import ggevent
from gunicorn.workers.ggevent import GeventWorker

from detector.features.encode import shortened
from service.config import ServiceConfig
from service.metric_files import (
    clear_metric_files,
    fold_dead_worker,
    keep_spares,
    space_problem,
    worker_files_problem,
)
from service.model_sync import SyncDir
from service.open_files import out_of_files, say_out_of_files
from service.series_store import forget_unserved


class GunicornServer(BaseApplication):  # type: ignore[misc]
    """gunicorn's documented embedding API, configured in code rather than a file."""

    def __init__(self, config: ServiceConfig, options: dict[str, Any]) -> None:
        self.service_config = config
        self.options = options
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.options.items():
            self.cfg.set(key, value)
        self.cfg.set("on_starting", _on_starting)
        self.cfg.set("on_reload", _on_reload)
        self.cfg.set("child_exit", _child_exit)
        self.cfg.set("worker_exit", _worker_exit)
        self.cfg.set("pre_fork", _keep_spares)
        self.cfg.set("post_fork", _default_signals)
        self.cfg.set("post_worker_init", _booted)

    def run(self) -> None:
        # BaseApplication.run, with the arbiter that stops old workers once the new serve.
        try:
            LoadedFirstArbiter(self).run()
        except RuntimeError as exc:
            print(f"\nError: {exc}\n", file=sys.stderr, flush=True)
            sys.exit(1)

    def load(self) -> Any:
        from service.app import create_app, needs_tensorflow

        directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
        # Checked at start (8 MiB free). A worker replaced since (killed, timed out, a SIGHUP)
        # on a disk that filled meanwhile refused to start for want of those 8 MiB, and
        # gunicorn stopped the server, the other workers serving until then; its files on
        # disk whole, it now needs only room for them. gunicorn stops the server on this code.
        problem = worker_files_problem(directory) if directory else None
        if problem:
            logging.getLogger("service").error("cannot start a worker: %s", problem)
            sys.exit(WORKER_BOOT_ERROR)

        # Bundles score with their LiteRT file; TensorFlow (~700 MB and seconds per worker)
        # is imported only where LiteRT is not installed, and then quietly.
        if needs_tensorflow():
            from detector.native import import_tensorflow_quietly

            import_tensorflow_quietly()
        # `anomaly serve` checked the state file before any worker started. A worker started
        # later (one killed, a reload) while the file is locked or unwritable serves, its
        # series requests answering 503 until the file is back: had it refused to boot,
        # gunicorn would have stopped the whole server.
        return create_app(self.service_config, check_state=False, freeze_heap=True)


class LoadedFirstArbiter(Arbiter):  # type: ignore[misc]
    """gunicorn's master, whose graceful reload (SIGHUP) stops the old workers only once the
    new ones have loaded their models. gunicorn stopped them as soon as it had forked the new
    ones, which load every model before they accept a connection: with 20 models, 2 workers
    and 6 client threads on 2 cores no request was answered for 6.8 s after a SIGHUP (0.16 s
    with one model), the clients' connections waiting in the listen queue."""

    _reloading = False

    def reload(self) -> None:
        self._reloading = True
        try:
            super().reload()
        finally:
            self._reloading = False

    def manage_workers(self) -> None:
        marks = os.environ.get("PROMETHEUS_MULTIPROC_DIR")  # where the boot marks are
        if self._reloading and marks and len(self.WORKERS) > self.num_workers:
            self._reloading = False  # once: the reload's own call, after it forked the new
            self._wait_for_new_workers()
        super().manage_workers()

    def _wait_for_new_workers(self) -> None:
        """Until each of the newest ``num_workers`` workers has booted (its mark, left once
        its app is loaded) or exited, within the worker ``timeout``; the old ones serve on.
        Workers that exit are reaped meanwhile (too many that never booted stop the server,
        as before)."""
        newest = sorted(self.WORKERS.items(), key=lambda item: item[1].age)[-self.num_workers :]
        pids = [pid for pid, _ in newest]
        deadline = time.monotonic() + self.cfg.timeout
        while time.monotonic() < deadline:
            self.reap_workers()
            waiting = [pid for pid in pids if pid in self.WORKERS and not _boot_mark(pid).exists()]
            if not waiting:
                return
            time.sleep(0.05)
        self.log.warning(
            "SIGHUP: new workers %s not loaded in %d s; stopping the old ones anyway",
            ", ".join(map(str, waiting)),
            self.cfg.timeout,
        )


#: How long a connection closed with its request body unread goes on reading (and dropping)
#: what its client still sends, in all and between two reads, and how many bytes at most:
#: enough for the rest of a body of the default ``max_body_bytes`` (16 MiB) on a slow link.
LINGER_S = 10.0
LINGER_IDLE_S = 2.0
LINGER_MAX_BYTES = 64 * 1024 * 1024

#: How long a kept-alive connection waits, idle, for the first byte of its next request. A load
#: balancer reuses its idle connections to the service for longer than gunicorn's `keepalive`
#: (5 s), which closed them: a request sent on one as it closed was reset (a client idling 0-8 s
#: between requests: 30 of 120 `BrokenPipeError`), and the balancer answers its user 502. A
#: backend must keep them longer than the balancer does: AWS ALB 60 s, nginx and ingress-nginx
#: 60 s, Go's proxies (Traefik) 90 s, Google Cloud's load balancers 600 s (Google asks 620 s).
#: gunicorn's `keepalive` still bounds the headers, from their first byte (a slow client).
KEEPALIVE_IDLE_S = 620.0


class LingeringGeventWorker(GeventWorker):  # type: ignore[misc]
    """gunicorn's gevent worker, with nginx's "lingering close". An answer given before its
    request body was read (413 from the Content-Length, 503 when the worker holds too many
    bodies, 408) closes the connection, and gunicorn's gevent worker closed it at once: the
    kernel answers the unread bytes, and any the client still sends, with a reset, and the
    client's kernel drops the answer it has not read yet. The client (curl, requests) saw
    "connection reset by peer" and not the status nor its Retry-After. Here the server stops
    writing (the client reads the answer, then end of stream) and reads and drops what the
    client sends, within the bounds above, before it closes. gunicorn's sync and gthread
    workers do the same (``util.close_graceful``), but drain at most 64 KiB, which a 16 MiB
    body outruns. A greenlet lingers: other connections are not delayed."""

    def run(self) -> None:
        # gunicorn's gevent worker builds its servers from its module's StreamServer; in this
        # worker process, the one that answers its queued connections as it stops.
        ggevent.StreamServer = DrainingStreamServer
        self._named = {id(listener): NamedListener(listener) for listener in self.sockets}
        # Set to end a connection's idle wait (its next request begins, the worker stops, or
        # needs its slot); oldest first.
        self._idle: dict[Event, None] = {}
        self._closer: Any = None
        self._connections = 0
        super().run()

    def handle(self, listener: Any, client: Any, addr: Any) -> None:
        # gunicorn asks the listener its address before it reads a connection's request: a
        # connection accepted, its greenlet not yet run, when the worker closed the listener
        # to stop failed there ('OSError: [Errno 9] Bad file descriptor', logged with a
        # traceback) and was closed unanswered. Under load (12 clients, 2 workers) a SIGTERM
        # reset 12 requests so.
        self._connections += 1
        try:
            if self._connections >= self.worker_connections and self._idle:
                # This connection took the worker's last slot: the one idle longest gives its
                # own up (nginx does the same), else a new client waited behind idle ones.
                self._wake(next(iter(self._idle)))
            super().handle(self._named.get(id(listener), listener), client, addr)
        finally:
            self._connections -= 1

    def handle_request(self, listener_name: Any, req: Any, sock: Any, addr: Any) -> None:
        try:
            super().handle_request(listener_name, req, sock, addr)
        except StopIteration:  # answered, and the connection is to close
            if _body_unread(req):
                _linger(sock)
            raise
        if not self._next_request_begins(req, sock):
            raise StopIteration()  # gunicorn closes the connection

    def _next_request_begins(self, req: Any, sock: Any) -> bool:
        """Wait for the first byte of the connection's next request, up to
        ``KEEPALIVE_IDLE_S``; ``False`` where none came, or the worker stops (then also at
        once), or a new connection needs its slot. gunicorn's keep-alive timer (``timeout_ctx``)
        then starts: it bounds the wait for the whole of the headers, which alone had closed an
        idle connection after 5 s. A request already begun (its bytes read with the previous
        one's, a body not read to its end) is left to that timer."""
        if not self.alive:
            return False
        if _body_unread(req) or _buffered(req) or _ssl_pending(sock):
            return True
        if self._closer is None:
            self._closer = gevent.spawn(self._close_idle_at_stop)
        woken = Event()
        readable = gevent.get_hub().loop.io(sock.fileno(), 1)
        readable.start(woken.set)
        self._idle[woken] = None
        try:
            woken.wait(KEEPALIVE_IDLE_S)
        finally:
            readable.stop()
            readable.close()
            self._idle.pop(woken, None)
        # A byte (or the client's close) now: a request that arrived as the wait was ended
        # for the worker's sake is still answered. Waking by an event, not by an exception
        # thrown into the greenlet, cannot land in a request that began meanwhile.
        return bool(gevent_select.select([sock], [], [], 0)[0])

    def _wake(self, woken: Event) -> None:
        self._idle.pop(woken, None)
        woken.set()

    def _close_idle_at_stop(self) -> None:
        """Once the worker stops, closes its idle connections, which it would otherwise wait
        for until its graceful timeout."""
        while self.alive:
            gevent.sleep(1.0)
        while self._idle:
            self._wake(next(iter(self._idle)))


class NamedListener:
    """A listening socket that gives its address after it is closed (the one it had)."""

    def __init__(self, listener: Any) -> None:
        self.listener = listener
        self.name = listener.getsockname()

    def getsockname(self) -> Any:
        return self.name

    def __getattr__(self, attribute: str) -> Any:
        return getattr(self.listener, attribute)


class DrainingStreamServer(StreamServer):  # type: ignore[misc]
    """gevent's server, which, as it stops (a worker told to exit: SIGTERM, a SIGHUP's old
    workers), first takes the connections waiting in the listen queue and answers them. They
    were connected, their requests sent, and closing the listener reset them: under load
    (12 clients, one request a connection, 2 workers) a SIGTERM reset 11 such requests, which
    the clients saw as 'connection reset by peer', not knowing whether they were scored. The
    last worker to close the listening socket takes the last of them; a client connecting
    after it is refused, and knows its request was not taken."""

    def close(self) -> None:
        if not self.closed:
            with contextlib.suppress(OSError):  # out of files: what is queued stays queued
                self.stop_accepting()
                while (accepted := self.do_read()) is not None:
                    self.do_handle(*accepted)
        super().close()


def _body_unread(req: Any) -> bool:
    """Whether gunicorn has not read all of the request's body (sized or chunked)."""
    reader = getattr(getattr(req, "body", None), "reader", None)
    return bool(getattr(reader, "length", 0)) or getattr(reader, "parser", None) is not None


def _buffered(req: Any) -> bool:
    """Whether gunicorn holds bytes read past the request (the next one begun), or cannot say."""
    buffer = getattr(getattr(req, "unreader", None), "buf", None)
    if not isinstance(buffer, io.BytesIO):
        return True
    with buffer.getbuffer() as held:
        return held.nbytes > 0


def _ssl_pending(sock: Any) -> bool:
    """Whether a TLS socket holds decrypted bytes not read yet (its file shows none)."""
    pending = getattr(sock, "pending", None)
    return bool(pending()) if callable(pending) else False


def _linger(sock: socket.socket) -> None:
    """Half-close ``sock`` and read what its peer sends, into one small buffer, until it
    closes, stops sending for ``LINGER_IDLE_S`` or the bounds are reached; the caller
    closes it."""
    deadline = time.monotonic() + LINGER_S
    buffer = bytearray(65536)
    dropped = 0
    with contextlib.suppress(OSError):  # a reset, a timeout: the connection is done
        sock.shutdown(socket.SHUT_WR)
        while dropped < LINGER_MAX_BYTES:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            sock.settimeout(min(left, LINGER_IDLE_S))
            received = sock.recv_into(buffer)
            if not received:
                break
            dropped += received


def _on_starting(server: Any) -> None:
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if directory:
        clear_metric_files(Path(directory))
    config = getattr(getattr(server, "app", None), "service_config", None)  # GunicornServer's
    if config is not None and config.model_sync_dir:
        forget_published(Path(config.model_sync_dir), list(config.models))
    if config is not None and config.series_state is not None:
        try:
            forgotten = forget_unserved(config.series_state, list(config.models))
        except sqlite3.Error as exc:  # the workers' own check says what to do about the file
            server.log.warning(
                "could not look for models no longer served in %s: %s", config.series_state, exc
            )
        else:
            if forgotten:
                server.log.info(
                    "series state of models no longer served dropped from %s: %s",
                    config.series_state,
                    ", ".join(f"{name} ({n:,} series)" for name, n in sorted(forgotten.items())),
                )


def _keep_spares(server: Any, worker: Any) -> None:
    """Before a worker starts, the master makes the spare sets of metric files it keeps, one
    per worker, where the disk has room (``service.metric_files.keep_spares``): a worker
    replaced on a disk filled since takes one, where gunicorn stopped the server for it."""
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if directory:
        keep_spares(directory, max(1, getattr(server, "num_workers", 1)))


def _on_reload(server: Any) -> None:
    """SIGHUP: gunicorn starts new workers and stops the old ones. Each model is then reloaded
    by one new worker from its configured directory, as a restart loads it (on failure the last
    good bundle serves on); without this the new workers loaded the copies in force, and a
    bundle written again was not taken. The settings are those the server started with."""
    config = getattr(getattr(server, "app", None), "service_config", None)
    if config is not None and config.model_sync_dir:
        sync = SyncDir(config.model_sync_dir)
        for name in config.models:
            sync.request_reload(name)
        server.log.info(
            "SIGHUP: the new workers reload %s (the configuration file is not read again)",
            ", ".join(f"{name} from {path}" for name, path in config.models.items()),
        )


def forget_published(sync_dir: Path, names: list[str]) -> None:
    """A new run serves each model from its configured directory, as with the default
    ``model_sync_dir`` (new per run): what an earlier run left in a ``model_sync_dir`` kept
    across runs (its markers and bundle copies) is removed, else the workers took the earlier
    run's bundle and ignored the directory, retrained or not."""
    for name in names:
        (sync_dir / f"{name}.json").unlink(missing_ok=True)
        (sync_dir / f"{name}.hup").unlink(missing_ok=True)
        shutil.rmtree(sync_dir / name, ignore_errors=True)


def _default_signals(server: Any, worker: Any) -> None:
    """A new worker holds the master's signal handlers until it installs its own, after
    gevent's patching: a SIGTERM then (the master stopping as a worker restarts) went to the
    master's copied queue and was lost, and the master waited out its graceful timeout (30 s)
    before it killed the worker. Until its own handlers, the signals that stop a worker end
    it: it has served nothing."""
    for number in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT):
        signal.signal(number, signal.SIG_DFL)


#: gunicorn's exit code for a worker that could not boot: the master stops on it.
WORKER_BOOT_ERROR = 3
#: Workers in a row that die before they serve (a signal while loading: a memory limit, a full
#: disk) after which the master stops: gunicorn replaced them forever, 1,270 in 10 minutes,
#: each logging only its signal, and the server never answered.
MAX_UNBOOTED_DEATHS = 5
_unbooted_deaths = 0


def _booted(worker: Any) -> None:
    """In a worker that has loaded its app: leaves a mark the master reads when it exits."""
    _answer_errors_in_json(worker)
    _name_accept_errors(worker)
    with contextlib.suppress(OSError, TypeError):
        _boot_mark(worker.pid).touch()


def _boot_mark(pid: int) -> Path:
    # In the metrics directory (always set under `anomaly serve`), never read as a metric file.
    return Path(os.environ.get("PROMETHEUS_MULTIPROC_DIR", ""), f".booted-{pid}")


def _child_exit(server: Any, worker: Any) -> None:
    """A worker has exited: its live gauges go, and its counts join the archives
    (``service.metric_files``), so dead workers' files do not pile up and slow every scrape.
    Too many in a row that never booted stop the server, naming the likely causes."""
    from prometheus_client import multiprocess

    global _unbooted_deaths
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if directory:
        multiprocess.mark_process_dead(worker.pid)
        fold_dead_worker(directory, worker.pid)
        mark = _boot_mark(worker.pid)
        booted = mark.exists()
        mark.unlink(missing_ok=True)
        _unbooted_deaths = 0 if booted else _unbooted_deaths + 1
        if _unbooted_deaths == MAX_UNBOOTED_DEATHS:  # once: not again as the master stops
            problem = space_problem(directory)
            raise HaltServer(
                f"{_unbooted_deaths} workers in a row died before they could serve (the log "
                "above names each one's signal): "
                + (
                    problem
                    if problem
                    else "SIGSEGV or SIGBUS is most often a memory limit (ulimit -v, a "
                    "container's), SIGKILL the out-of-memory killer; give the server more memory"
                ),
                WORKER_BOOT_ERROR,
            )


def _worker_exit(server: Any, worker: Any) -> None:
    """A worker is exiting (SIGTERM, SIGINT, a restart): its alert dispatcher sends what is
    queued or still owed once more, within half the graceful timeout, so those alerts are not
    lost with the process. In the master (a worker that vanished) there is no app: nothing."""
    app = getattr(worker, "wsgi", None)
    state = getattr(app, "extensions", {}).get("anomaly")
    if state is not None:
        state.dispatcher.stop(timeout=worker.cfg.graceful_timeout / 2)


# What a client can do about each answer gunicorn gives before the app runs. The limits are
# gunicorn's defaults (limit_request_line, limit_request_fields, limit_request_field_size).
_FIXES = {
    400: "send a well-formed HTTP/1.1 request",
    403: "send a well-formed HTTP/1.1 request",
    414: "shorten the URL to under 4094 bytes: records go in the request body",
    417: "leave out the Expect header, or send 'Expect: 100-continue'",
    431: "send at most 100 headers of at most 8190 bytes each",
    500: "see the server's log",
    501: "send the body with a Content-Length, or 'Transfer-Encoding: chunked'",
}


def _answer_errors_in_json(worker: Any) -> None:
    """gunicorn writes the answers it makes itself with ``util.write_error`` (an HTML page
    with ``Content-Type: text/html``); in this worker process, that function writes the
    JSON the README documents instead."""
    util.write_error = write_json_error


def write_json_error(sock: Any, status_int: int, reason: str, mesg: str) -> None:
    """The same answer as gunicorn's ``util.write_error``, as ``{"error", "detail"}``."""
    from service.app import MAX_DETAIL_CHARS

    # The status's own phrase: gunicorn calls its 501 for a transfer coding it does not
    # implement "Bad Request".
    with contextlib.suppress(ValueError):
        reason = HTTPStatus(status_int).phrase
    fix = _FIXES.get(status_int, "")
    detail = "; ".join(part for part in (mesg, fix) if part)
    body = json.dumps(
        {
            "error": reason.lower().replace(" ", "_"),
            "detail": shortened(detail, MAX_DETAIL_CHARS),
        }
    ).encode()
    head = (
        f"HTTP/1.1 {status_int} {reason}\r\nConnection: close\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    util.write_nonblock(sock, head.encode("latin-1") + body)


def _name_accept_errors(worker: Any) -> None:
    """gevent's server hands an error of ``accept`` to the hub, which printed its traceback
    each time it retried (from every 10 ms to every second): a worker out of file descriptors
    under a flood of connections filled the log with 'OSError: [Errno 24] Too many open
    files'. That one is said instead (``service.open_files``); the server retries as before,
    and the connections wait in the listen queue until others close. Every other error goes
    to the hub as it did."""
    from gevent.baseserver import BaseServer

    hub = gevent.get_hub()
    handle = hub.handle_error
    connections = worker.cfg.worker_connections

    def handle_error(context: Any, kind: Any, value: Any, tb: Any) -> None:
        if isinstance(context, BaseServer) and out_of_files(value):
            say_out_of_files(value, connections)
            return
        handle(context, kind, value, tb)

    hub.handle_error = handle_error
