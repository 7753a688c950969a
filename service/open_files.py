"""A worker out of file descriptors (``EMFILE``; ``ENFILE``: the whole system's): what it
says, once a minute, instead of a traceback per failed accept or request.

A flood of connections under a low ``ulimit -n`` made gevent print a traceback for each
``accept`` it retried, and a request that opened a file then (``GET /metrics`` opens the
metric files) fail with a 500 and another traceback; neither named the limit or the fix."""

from __future__ import annotations

import errno
import logging
import os
import resource

from service.throttled_log import ThrottledLog

#: Accepts and requests that failed for want of file descriptors: said at most once a minute
#: per worker.
_said = ThrottledLog(logging.getLogger("service.server"), "accepts or requests failed")


def out_of_files(exc: BaseException) -> bool:
    """Whether ``exc`` is a process (or the system) out of file descriptors."""
    return isinstance(exc, OSError) and exc.errno in (errno.EMFILE, errno.ENFILE)


def opening_out_of_files(exc: BaseException) -> OSError | None:
    """The ``OSError`` behind a SQLite file that failed to open (the series' state) where this
    process is out of file descriptors, else ``None``. SQLite names no cause, only 'unable to
    open database file' (``SQLITE_CANTOPEN``): the cause is told by opening a file now."""
    if getattr(exc, "sqlite_errorname", None) != "SQLITE_CANTOPEN":
        return None
    try:
        _spare_descriptor()
    except OSError as probe:
        return probe if out_of_files(probe) else None
    return None


def _spare_descriptor() -> None:
    """Open and close a file: ``EMFILE``/``ENFILE`` where no descriptor is free."""
    os.close(os.open(os.devnull, os.O_RDONLY))


def say_out_of_files(exc: OSError, connections: int | None = None) -> None:
    """Log, at most once a minute, that this worker is out of open files, its limit, and what
    to change; ``connections``: the worker's ``--connections``, where known. Where the whole
    system is (``ENFILE``), its file table is the limit, and the worker's own is not."""
    if exc.errno == errno.ENFILE:
        # The per-process advice (ulimit -n) was given here too before: raising it changes
        # nothing while the kernel's table is full.
        _said.error(
            "the system is out of open files (the kernel's file table is full, not this "
            "worker's own limit): new connections wait in the listen queue until files close "
            "anywhere on the machine, and a request that opens a file gets 503; raise "
            "fs.file-max (sysctl -w fs.file-max=N, kept in /etc/sysctl.d/; a container shares "
            "its host's), or find the process holding the files (/proc/sys/fs/file-nr counts "
            "them); ulimit -n, a per-process limit, does not help"
        )
        return
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    limit = "unlimited" if soft == resource.RLIM_INFINITY else str(soft)
    each = "" if connections is None else f" ({connections} a worker)"
    _said.error(
        "a worker is out of open files (open files limit %s, ulimit -n): new connections wait "
        "in the listen queue until others close, and a request that opens a file gets 503; "
        "raise the limit (ulimit -n, LimitNOFILE= in a systemd unit, the container's nofile "
        "ulimit) above --connections%s plus ~100, or lower --connections",
        limit,
        each,
    )
