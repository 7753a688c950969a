"""The installed ``anomaly`` command: the library's commands plus ``serve``.

``detector.cli.main`` holds train/score/evaluate/info/threshold and never imports this package;
``serve`` is added here, where Flask and gunicorn may be imported.
"""

from __future__ import annotations

import argparse
import errno
import fcntl
import logging
import os
import shutil
import socket
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from detector.cli.main import build_parser, run
from detector.errors import ConfigError

if TYPE_CHECKING:
    from service.config import ServiceConfig


def add_serve_command(commands: Any) -> None:
    serve = commands.add_parser(
        "serve",
        help="serve models over HTTP (gunicorn)",
        description="Serve one or more model bundles over HTTP under gunicorn: scoring, "
        "model info, reload, alerts, health checks, Prometheus metrics and the KServe V2 "
        "protocol. Settings come from --config (TOML/JSON), then ANOMALY_* environment "
        "variables, then these flags (see the README's 'Scoring service' section).",
    )
    serve.add_argument(
        "--model",
        action="append",
        default=[],
        metavar="NAME=DIR",
        help="a model to serve under NAME ([a-z0-9_-]); repeatable",
    )
    serve.add_argument("--config", help="settings file, .toml or .json")
    serve.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    serve.add_argument(
        "--port", type=_whole(0, 65535), default=8000, help="default 8000 (0: any free port)"
    )
    serve.add_argument(
        "--workers", type=_whole(1, 1024), default=2, help="worker processes (default 2)"
    )
    serve.add_argument(
        "--connections",
        type=_whole(1, 1_000_000),
        default=1000,
        help="open connections per worker (default 1000); each waits in a greenlet, and "
        "requests are scored one at a time per worker",
    )
    serve.add_argument(
        "--timeout",
        type=_whole(1, 86_400),
        default=60,
        help="seconds a worker may stay busy on one request before gunicorn restarts it",
    )
    serve.add_argument("--threads", action=_ThreadsRemoved, help=argparse.SUPPRESS)
    serve.set_defaults(handler=cmd_serve, needs_tensorflow=False)


class _ThreadsRemoved(argparse.Action):
    """``--threads``, gone with the thread workers: a unit file kept from the releases before
    it got only "unrecognized arguments: --threads 4", which says not what replaced it."""

    def __call__(self, parser: Any, namespace: Any, values: Any, option: Any = None) -> None:
        parser.error(
            "--threads was removed: each worker now holds its open requests itself (up to "
            "--connections, default 1000) and scores them one at a time; drop --threads, and "
            "give --workers N for more scoring processes"
        )


def _whole(lowest: int, highest: int) -> Callable[[str], int]:
    """An argparse type: a whole number in ``[lowest, highest]`` (0 workers served nothing,
    and port 70000 failed inside gunicorn as an internal error)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if not lowest <= value <= highest:
            raise argparse.ArgumentTypeError(f"{value} is not in {lowest}-{highest}")
        return value

    return parse


def _models(pairs: Sequence[str]) -> dict[str, str]:
    models: dict[str, str] = {}
    for pair in pairs:
        name, sep, path = pair.partition("=")
        if not sep or not name or not path:
            raise ConfigError(f"--model {pair!r} must look like NAME=DIR, e.g. default=models/x")
        if name in models:  # the last one silently won
            raise ConfigError(
                f"--model names {name!r} twice ({models[name]} and {path}); give each model a "
                "name of its own"
            )
        models[name] = path
    return models


def service_logging() -> None:
    """The service's own log lines as gunicorn's read: a time and the process on each, and
    INFO kept (the command line keeps WARNING): the log sink writes a resolved alert at INFO,
    and a sink's retries and model reloads are INFO too; all were left out."""
    logging.getLogger("service").setLevel(logging.INFO)
    formatter = logging.Formatter(
        "[%(asctime)s] [%(process)d] [%(levelname)s] %(name)s: %(message)s",
        datefmt="%Y-%m-%d %H:%M:%S %z",
    )
    for handler in logging.getLogger().handlers:
        handler.setFormatter(formatter)


def cmd_serve(args: argparse.Namespace) -> int:
    from detector.errors import ConfigError
    from service.config import check_bundle_alert_keys, check_exposure, load_config

    service_logging()

    overrides: dict[str, Any] = {}
    if args.model:
        overrides["models"] = _models(args.model)
    config = load_config(args.config, overrides=overrides)
    check_exposure(config, args.host)
    check_bindable(args.host, args.port)
    if not config.models:
        raise ConfigError("no model to serve: give --model NAME=DIR (or 'models' in --config)")
    # A relative path is the working directory's (under systemd: /), not the config file's;
    # "no model bundle at models/a" read as the folder beside the file. Said whole, it shows.
    absolute = {name: os.path.abspath(path) for name, path in config.models.items()}
    config = config.model_copy(update={"models": absolute})
    # Here, once: each worker checks again as it starts, but there a failure is a traceback
    # per worker and gunicorn's "Worker failed to boot".
    check_bundle_alert_keys(config)
    # The run's own files (metrics, model copies, series state unless configured elsewhere),
    # removed when the server stops: state kept here does not outlive a restart anyway.
    remove_stale_run_dirs(tempfile.gettempdir())
    run_dir = tempfile.mkdtemp(prefix=RUN_DIR_PREFIX)
    master = os.getpid()
    Path(run_dir, MASTER_PID_FILE).write_text(str(master))
    ours = "PROMETHEUS_MULTIPROC_DIR" not in os.environ  # _serve points it into run_dir
    try:
        return _serve(args, config, run_dir)
    finally:
        # gunicorn forks each worker inside _serve, so a worker that exits (a reload, a
        # timeout, fewer workers) unwinds through here too: only the master may remove what
        # every worker shares. A worker that did took the metrics, the model copies and the
        # series state from the others, and its replacement failed to boot.
        if os.getpid() == master:
            while _HELD:  # the sync dir, for the next server (in this process: a test's)
                os.close(_HELD.pop())
            _HELD_PATHS.clear()
            shutil.rmtree(run_dir, ignore_errors=True)
            if ours:  # it names the folder just removed: a caller in this process goes on
                os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)


log = logging.getLogger(__name__)

#: The run's folder in the temporary directory, and the file in it naming its master process.
RUN_DIR_PREFIX = "anomaly-serve-"
MASTER_PID_FILE = "master.pid"


def remove_stale_run_dirs(folder: str) -> None:
    """Remove the run folders in ``folder`` whose master process is gone: a server killed
    outright (SIGKILL, the OOM killer) left its metrics files and model copies behind, and
    a container's emptyDir /tmp filled with them restart after restart. A folder without its
    pid file (of another release), or whose master lives, is left alone; one naming this
    very process is another life's (a container's pids repeat)."""
    for path in Path(folder).glob(f"{RUN_DIR_PREFIX}*"):
        try:
            pid = int((path / MASTER_PID_FILE).read_text())
        except (OSError, ValueError):
            continue
        if pid != os.getpid() and _alive(pid):
            continue
        shutil.rmtree(path, ignore_errors=True)
        log.info("removed %s, left by a server (pid %d) that did not stop cleanly", path, pid)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's: alive, and not ours to remove
        return True
    return True


#: Why an address cannot be listened on, and what to do, by errno.
#: How long a stopping server's workers get to finish their requests (deploy/k8s's grace
#: period allows for it).
GRACEFUL_TIMEOUT_S = 30

_BIND_FIXES = {
    errno.EADDRINUSE: "another process listens there (another `anomaly serve`?): stop it, or "
    "choose another --port",
    errno.EACCES: "ports under 1024 need privileges: choose --port 1024 or above",
    errno.EADDRNOTAVAIL: "no interface of this machine has that address: give one of its own, "
    "such as 127.0.0.1, or 0.0.0.0 for all",
}


def check_bindable(host: str, port: int) -> None:
    """Before anything starts: ``host:port`` must be free and ours to listen on. gunicorn
    finds out only after the banner says it is serving, then retries for five seconds, then
    exits with "Can't connect"."""
    from detector.errors import ConfigError

    if host.startswith("unix:"):
        return
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host.strip("[]"), port, type=socket.SOCK_STREAM
        )[0]
    except (socket.gaierror, UnicodeError) as exc:
        raise ConfigError(
            f"--host {host}: {getattr(exc, 'strerror', None) or exc}; give a name or address "
            "of this machine, such as 127.0.0.1"
        ) from None
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as gunicorn binds
        try:
            probe.bind(address)
        except OSError as exc:
            fix = _BIND_FIXES.get(exc.errno or 0, "choose another --host or --port")
            raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror}; {fix}") from None


def bind_address(host: str, port: int | str) -> str:
    """``host:port`` as gunicorn binds it and a URL names it: an IPv6 address in brackets
    (gunicorn took ``::1:8000`` for host ``::1:8000`` and port ''), a socket file as it is."""
    if host.startswith("unix:"):
        return host
    ipv6 = ":" in host and not host.startswith("[")
    return f"[{host}]:{port}" if ipv6 else f"{host}:{port}"


def check_sync_dir(path: str) -> None:
    """``model_sync_dir`` is, or can be made, a directory this process writes files in, and
    no other server uses it: this one holds it (a lock on the folder) until it exits."""
    try:
        os.makedirs(path, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as exc:
        raise ConfigError(
            f"model_sync_dir {path} cannot be used ({exc.strerror or exc}); name a directory "
            "the server can write to, or leave it unset (a new one per run)"
        ) from None
    # Two servers on one folder served each other's models, each reload and restart taking
    # the other's copy (found by a helper).
    hold_folder(path, f"model_sync_dir {path}", "leave it unset (a new one per run)")


#: The file in a folder a server holds (``hold_folder``): locked, and naming its master.
HOLDER_FILE = ".anomaly-serve.pid"


def hold_folder(path: str, what: str, otherwise: str) -> None:
    """Hold ``path`` (a folder that exists) for this server's life: a lock on a file in it
    that names this process, so that a second server given the same folder is refused,
    naming the first (``what`` names the setting; ``otherwise`` is the other fix)."""
    folder = os.path.realpath(path)
    if folder in _HELD_PATHS:
        # Both settings naming one folder: a second lock on it, from this process, was
        # refused as if another server held it (naming this one).
        return
    try:
        holder = os.open(os.path.join(path, HOLDER_FILE), os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise ConfigError(
            f"{what} cannot be used ({exc.strerror or exc}); name a directory the server can "
            f"write to, or {otherwise}"
        ) from None
    try:
        fcntl.flock(holder, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        other = os.read(holder, 32).decode(errors="replace").strip()
        os.close(holder)
        raise ConfigError(
            f"{what} is used by another `anomaly serve` running now"
            + (f" (pid {other})" if other.isdigit() else "")
            + f"; give each server its own, or {otherwise}"
        ) from None
    os.ftruncate(holder, 0)
    os.write(holder, str(os.getpid()).encode())
    _HELD.append(holder)  # for the server's life: its workers inherit it, and the lock
    _HELD_PATHS.add(folder)


#: Folders this server holds for its life (their descriptors, open until it exits).
_HELD: list[int] = []
#: The folders held, as real paths.
_HELD_PATHS: set[str] = set()


def _serve(args: argparse.Namespace, config: ServiceConfig, run_dir: str) -> int:
    # Must be set before prometheus_client is first imported: it picks its value class then.
    os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", os.path.join(run_dir, "metrics"))
    from service.metric_files import space_problem

    if problem := space_problem(os.environ["PROMETHEUS_MULTIPROC_DIR"]):
        # Here, once: in the workers a full disk was SIGBUS, and a read-only one a traceback
        # per worker before gunicorn gave up.
        raise ConfigError(
            f"{problem}; point PROMETHEUS_MULTIPROC_DIR at a folder the server can write to "
            "(unset: one in the server's own run folder)"
        )
    # A second server on the same folder deleted the first's live metric files as it started
    # and folded its own into the first's archives: the first's /metrics lost its own counts
    # and showed the second's (found by a helper).
    hold_folder(
        os.environ["PROMETHEUS_MULTIPROC_DIR"],
        f"PROMETHEUS_MULTIPROC_DIR {os.environ['PROMETHEUS_MULTIPROC_DIR']}",
        "unset it (one in the server's own run folder)",
    )
    if config.model_sync_dir is None:
        config = config.model_copy(update={"model_sync_dir": os.path.join(run_dir, "models")})
    else:  # here, where it fails alone, rather than as each worker finds it cannot reload
        check_sync_dir(config.model_sync_dir)
    if config.series_state is None:
        path = os.path.join(run_dir, "series.sqlite")
        config = config.model_copy(update={"series_state": path})
    elif config.series_state == ":memory:" and args.workers > 1:
        raise ConfigError(
            "series_state ':memory:' keeps each worker's own state (a series' rows and a key's "
            "alerts split between the workers); name a file, or leave it unset (one per run)"
        )
    else:  # here, where it fails alone, rather than in each worker as it boots
        from service.series_store import SeriesStore

        SeriesStore(config.series_state).check()
    if config.tf_threads is None:
        share = max(1, (os.cpu_count() or 1) // max(args.workers, 1))
        config = config.model_copy(update={"tf_threads": share})

    from service.server import GunicornServer

    options = {
        "bind": bind_address(args.host, args.port),
        "workers": args.workers,
        # Slow or stalled clients wait in greenlets instead of holding a worker each; a
        # request's headers must arrive within `keepalive` seconds (gevent workers time the
        # header read with it; a kept-alive connection's, from their first byte, after its
        # idle wait, service.server.KEEPALIVE_IDLE_S) and its body by request_read_timeout.
        # gunicorn's gevent worker, with a lingering close (service.server).
        "worker_class": "service.server.LingeringGeventWorker",
        "worker_connections": args.connections,
        "timeout": args.timeout,
        "graceful_timeout": GRACEFUL_TIMEOUT_S,
        "keepalive": 5,
        # Who asked, what, the answer, its size and time, and the request's id (the answer's
        # header: the client's, or the one the service made).
        "accesslog": "-" if config.access_log else None,
        "access_log_format": '%(h)s "%(r)s" %(s)s %(B)s %(M)sms id=%({x-request-id}o)s',
        "errorlog": "-",
        "loglevel": "info",
        "preload_app": False,
        # gunicorn's runtime control socket lives at one path per user (~/.gunicorn), which
        # two servers on one machine would share; nothing here uses it.
        "control_socket_disable": True,
    }
    print(
        f"serving {', '.join(f'{k}={v}' for k, v in config.models.items())} on "
        # Port 0 is any free one: gunicorn's "Listening at" line below says which.
        f"http://{bind_address(args.host, args.port or '<a free port>')} with {args.workers} "
        "workers",
        flush=True,
    )
    GunicornServer(config, options).run()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run(build_parser(add_serve_command), argv)


if __name__ == "__main__":
    sys.exit(main())
