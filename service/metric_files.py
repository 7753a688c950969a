"""The files of prometheus_client's multiprocess mode, over a server's life.

Every worker writes ``counter_<pid>.db``, ``histogram_<pid>.db`` and gauge files there, and
``/metrics`` reads them all. A worker that exits (killed, timed out, replaced by a SIGHUP)
leaves its counters and histograms behind: they must stay counted, or every counter would go
backwards, which Prometheus takes for a reset. Left as they were, they piled up, 3 files and
192 KB per dead worker, and each scrape read them all (0.65 ms more per dead worker: 688 ms
after 1,000). So the master folds a dead worker's counts into one ``<type>_archive.db`` per
type and deletes its files. A scrape and a fold take one lock (shared, exclusive), so a
scrape never sees a worker's counts twice or not at all. Every series keeps its own count: a
capped label (``anomaly_key_anomalies_total``'s keys) keeps each exited worker's own keys, as
its file did, and a worker counts those and the live workers' before any new one against the
cap.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import importlib.metadata
import json
import logging
import math
import os
import re
import shutil
import struct
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import prometheus_client.mmap_dict
import prometheus_client.values
from prometheus_client.mmap_dict import MmapedDict

from service.throttled_log import ThrottledLog

#: The files prometheus_client's multiprocess mode writes, ``<type>_<pid>.db`` and for gauges
#: ``<type>_<mode>_<pid>.db``, and the archives of dead workers' counts: only these are ours.
METRIC_FILE = re.compile(r"^(counter|gauge|histogram|summary)(_[a-z]+)?_(\d+|archive)\.db$")
#: Taken shared by a scrape and exclusively by a fold; not a ``.db`` file, so never read as one.
LOCK_FILE = ".fold.lock"
#: The types whose dead workers' samples still count (summed over processes). A dead worker's
#: ``live*`` gauges are deleted by prometheus_client's ``mark_process_dead``; its
#: ``mostrecent`` ones are set again by every live worker when it loads a model.
_SUMMED = ("counter", "histogram")


#: The free space the metrics directory must have for a worker to start: prometheus_client
#: writes its files through memory maps, and a page it cannot back on a full file system kills
#: the process with SIGBUS (workers died and were replaced in a loop, serving nothing).
MIN_FREE_BYTES = 8 * 2**20


def space_problem(directory: str | Path) -> str | None:
    """What keeps the metrics directory from taking a worker's files: not writable, or under
    ``MIN_FREE_BYTES`` free; ``None`` where it can."""
    folder = Path(directory)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        if not os.access(folder, os.W_OK | os.X_OK):
            return f"the metrics directory {folder} (PROMETHEUS_MULTIPROC_DIR) is not writable"
        free = shutil.disk_usage(folder).free
    except OSError as exc:
        return f"the metrics directory {folder} (PROMETHEUS_MULTIPROC_DIR): {exc.strerror or exc}"
    if free < MIN_FREE_BYTES:
        return (
            f"the metrics directory {folder} (PROMETHEUS_MULTIPROC_DIR) has {free / 2**20:.1f} "
            f"MiB free, under the {MIN_FREE_BYTES // 2**20} MiB its files need (free space there)"
        )
    return None


#: Samples of series first seen while the metrics directory was full: counted, not exported.
_unplaced_said = ThrottledLog(logging.getLogger("service.metrics"), "samples not exported")
_FULL = (errno.ENOSPC, errno.EDQUOT)
#: How often, while some series wait for room, a write tries to place them again.
PLACE_AGAIN_S = 1.0
#: The size prometheus_client gives a new metric file (a private name of its: 64 KiB in 0.26).
_FIRST_SIZE: int = getattr(prometheus_client.mmap_dict, "_INITIAL_MMAP_SIZE", 64 * 1024)


class BackedMmapedDict(MmapedDict):
    """prometheus_client's ``MmapedDict`` whose file is allocated on disk before its map is
    written. prometheus_client grows a metric file with ``truncate`` alone, which leaves it
    sparse; a page written through the map that the file system then cannot back kills the
    process with SIGBUS. On a disk filled while serving, a worker's first new series (the first
    503's status label) did that, its replacement refused to start, and gunicorn stopped the
    server. Here the pages are taken first (``posix_fallocate``), so a full disk is an
    ``OSError`` to handle: a new series is then counted in this process (``read_value``,
    ``write_value``) and written to the file once space is back, and the log says so."""

    def __init__(self, filename: str, read_mode: bool = False) -> None:
        #: Series that found no room in the file: key -> (value, timestamp), until there is.
        self._unplaced: dict[str, tuple[float, float]] = {}
        self._tried = -math.inf
        if not read_mode:
            with open(filename, "a+b") as handle:
                _allocate(handle.fileno(), _FIRST_SIZE, filename)
        super().__init__(filename, read_mode)

    def _init_value(self, key: str) -> None:
        encoded = key.encode("utf-8")
        padded = len(encoded) + (8 - (len(encoded) + 4) % 8)
        needed = self._used + struct.calcsize(f"i{padded}sdd")
        capacity = self._capacity
        while needed > capacity:  # as prometheus_client grows it, which then maps it
            capacity *= 2
        if capacity > self._capacity:
            _allocate(self._f.fileno(), capacity, self._fname)
        super()._init_value(key)

    def read_value(self, key: str) -> Any:
        if key not in self._positions and not self._placed(key):
            return self._unplaced[key]
        return super().read_value(key)

    def write_value(self, key: str, value: float, timestamp: float) -> None:
        if self._unplaced and time.monotonic() - self._tried >= PLACE_AGAIN_S:
            self._place_unplaced()  # space may be back: the counts kept meanwhile go out
        if key not in self._positions and not self._placed(key):
            self._unplaced[key] = (value, timestamp)
            return
        super().write_value(key, value, timestamp)

    def _placed(self, key: str) -> bool:
        """Give ``key`` its place in the file; ``False`` where the disk has no room for it."""
        self._tried = time.monotonic()
        try:
            self._init_value(key)
        except OSError as exc:
            if exc.errno not in _FULL:
                raise
            self._unplaced.setdefault(key, (0.0, 0.0))
            _unplaced_said.error(
                "the metrics directory %s (PROMETHEUS_MULTIPROC_DIR) is full: new metric "
                "series are counted in this worker and left out of /metrics until space is "
                "freed there",
                os.path.dirname(self._fname),
            )
            return False
        if key in self._unplaced:  # counted meanwhile: now in the file, from where it was
            super().write_value(key, *self._unplaced.pop(key))
        return True

    def _place_unplaced(self) -> None:
        for key in list(self._unplaced):
            if not self._placed(key):
                return


def _allocate(fd: int, size: int, filename: str) -> None:
    """Take the file's first ``size`` bytes on disk (growing it to that size where shorter)."""
    try:
        os.posix_fallocate(fd, 0, size)
    except OSError as exc:
        if exc.errno in _FULL:
            raise OSError(exc.errno, os.strerror(exc.errno), filename) from None
        if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL):
            raise
        # A file system without fallocate: written zeros take the blocks as well.
        have = os.fstat(fd).st_size
        if have < size:
            os.pwrite(fd, bytes(size - have), have)


def _backing_works() -> bool:
    """Whether ``BackedMmapedDict`` works over the installed prometheus_client: it leans on
    that library's private names (``_init_value``, ``_positions``, ``_used``...), which a
    release may change; a value written and read back in a scratch file says."""
    try:
        with tempfile.TemporaryDirectory() as scratch:
            values = BackedMmapedDict(os.path.join(scratch, "check.db"))
            try:
                values.write_value("check", 2.5, 1.0)
                ok = tuple(values.read_value("check")) == (2.5, 1.0)
            finally:
                values.close()
    except Exception:  # any change of those internals, whatever it raises
        return False
    return ok and hasattr(prometheus_client.values, "MmapedDict")


def metric_file_class() -> type[MmapedDict]:
    """``BackedMmapedDict`` where it works over the installed prometheus_client, else its own
    ``MmapedDict`` (the files then sparse again, as before), said once in the log."""
    global _file_class
    if _file_class is None:
        _file_class = BackedMmapedDict if _backing_works() else MmapedDict
        if _file_class is MmapedDict:
            logging.getLogger("service.metrics").warning(
                "this prometheus_client (%s) is not one the service's metric files were "
                "written for: they are not taken on disk before use, so a disk that fills "
                "may kill a worker (SIGBUS); install the prometheus-client version "
                "pyproject.toml was tested with",
                _installed_version(),
            )
    return _file_class


_file_class: type[MmapedDict] | None = None


def _installed_version() -> str:
    try:
        return importlib.metadata.version("prometheus-client")
    except importlib.metadata.PackageNotFoundError:
        return "of unknown version"


def back_metric_files() -> None:
    """Make prometheus_client's multiprocess values write through ``BackedMmapedDict``. Its
    value class names ``MmapedDict`` when a process first counts a metric type; it has no other
    way in. Called before any metric is made (``ServiceMetrics``); again does nothing. Where
    the installed prometheus_client's internals differ, its own class stays (and the log says
    so): the service runs as before rather than not at all."""
    prometheus_client.values.MmapedDict = metric_file_class()  # type: ignore[misc]


#: The files a worker of this service writes (its gauges' modes: ``service.metrics``).
WORKER_FILES = (
    "counter", "histogram", "gauge_livesum", "gauge_livemax", "gauge_livemin", "gauge_mostrecent"
)  # fmt: skip


def open_metric_files(directory: str | Path) -> None:
    """Make this process's metric files now, their first pages on disk: prometheus_client
    makes each when a metric of its type is first counted (a worker's histogram at its first
    request), and one that finds the disk full then cannot be made at all."""
    for prefix in WORKER_FILES:
        metric_file_class()(str(Path(directory) / f"{prefix}_{os.getpid()}.db")).close()


def worker_files_problem(directory: str | Path) -> str | None:
    """What keeps a worker starting now from making its metric files: not writable, or no room
    for them nor a spare set to take (``keep_spares``); ``None`` where it can. Once made
    (``open_metric_files``) they are on disk whole, and a full disk can no longer kill the
    worker: where ``space_problem`` asks for ``MIN_FREE_BYTES`` before the server starts, a
    worker replaced later asks only this."""
    folder = Path(directory)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        if not os.access(folder, os.W_OK | os.X_OK):
            return f"the metrics directory {folder} (PROMETHEUS_MULTIPROC_DIR) is not writable"
        open_metric_files(folder)
    except OSError as exc:
        if exc.errno in _FULL:
            for prefix in WORKER_FILES:  # those made before the disk refused: room for others
                with contextlib.suppress(OSError):
                    (folder / f"{prefix}_{os.getpid()}.db").unlink(missing_ok=True)
            left = take_spare(folder, os.getpid())
            if left is not None:
                logging.getLogger("service").warning(
                    "the metrics directory %s (PROMETHEUS_MULTIPROC_DIR) is full: this worker "
                    "took a set of metric files the server keeps for replaced workers (%d "
                    "left); free space there, or a worker replaced once they are spent stops "
                    "the server",
                    folder,
                    left,
                )
                return None
            return (
                f"the metrics directory {folder} (PROMETHEUS_MULTIPROC_DIR) cannot hold a "
                f"worker's files ({exc.strerror or exc}), and the sets kept for replaced "
                "workers are spent; free space there"
            )
        return (
            f"the metrics directory {folder} (PROMETHEUS_MULTIPROC_DIR) cannot hold a worker's "
            f"files ({exc.strerror or exc}); free space there"
        )
    return None


#: A set of a worker's metric files (``WORKER_FILES``, zeros on disk: an empty file to
#: prometheus_client) that the master keeps for a worker replaced on a full disk. Such a worker
#: could not make its files, and gunicorn stopped the whole server for it (measured under
#: ``anomaly serve``, 2 workers, a 20 MiB tmpfs filled to 0 bytes free, a worker sent SIGTERM).
#: A folder, renamed whole by the worker that takes it: two workers never share one. Its files
#: are not ``*.db`` of the metrics directory itself, so no scrape reads them.
SPARE = ".spare-"
_MAKING, _TAKING = ".making-", ".taking-"
_spares_said = ThrottledLog(logging.getLogger("service.metrics"), "spare sets not made")


def keep_spares(directory: str | Path, sets: int) -> int:
    """Make spare sets of a worker's files until ``sets`` are there (run by the master before
    each worker starts: one per worker, 384 KiB each), as far as the disk has room; how many
    are there."""
    folder = Path(directory)
    have = sum(1 for _ in folder.glob(f"{SPARE}*"))
    while have < sets:
        making = folder / f"{_MAKING}{os.getpid()}"
        try:
            making.mkdir(exist_ok=True)
            for prefix in WORKER_FILES:
                with open(making / f"{prefix}.db", "wb") as handle:
                    _allocate(handle.fileno(), _FIRST_SIZE, handle.name)
            making.rename(folder / f"{SPARE}{time.time_ns()}")
        except OSError as exc:
            shutil.rmtree(making, ignore_errors=True)
            _spares_said.error(
                "the metrics directory %s (PROMETHEUS_MULTIPROC_DIR) holds %d of the %d sets of "
                "metric files kept for replaced workers (%s); free space there",
                folder,
                have,
                sets,
                exc.strerror or exc,
            )
            break
        have += 1
    return have


def take_spare(directory: str | Path, pid: int) -> int | None:
    """Make a spare set the metric files of worker ``pid`` (renamed: no room needed); how many
    sets are left, or ``None`` where there was none."""
    folder = Path(directory)
    taking = folder / f"{_TAKING}{pid}"
    for spare in sorted(folder.glob(f"{SPARE}*")):
        try:
            spare.rename(taking)
        except OSError:  # another worker took it first
            continue
        for prefix in WORKER_FILES:
            (taking / f"{prefix}.db").rename(folder / f"{prefix}_{pid}.db")
        taking.rmdir()
        return sum(1 for _ in folder.glob(f"{SPARE}*"))
    return None


def clear_metric_files(directory: Path) -> None:
    """Delete an earlier run's metric files, and nothing else: the variable may name a
    directory that holds other things (never ``rmtree`` a path taken from the environment)."""
    directory.mkdir(parents=True, exist_ok=True)
    for path in directory.iterdir():
        if METRIC_FILE.match(path.name) and path.is_file():
            path.unlink(missing_ok=True)
        elif path.name.startswith((SPARE, _MAKING, _TAKING)) and path.is_dir():
            for prefix in WORKER_FILES:  # its files alone, then the folder if that empties it
                (path / f"{prefix}.db").unlink(missing_ok=True)
            with contextlib.suppress(OSError):
                path.rmdir()


@contextlib.contextmanager
def reading(directory: str | Path) -> Iterator[None]:
    """Hold while reading the directory's files for a scrape: no fold moves counts meanwhile."""
    with _locked(Path(directory), fcntl.LOCK_SH):
        yield


def fold_dead_worker(directory: str | Path, pid: int) -> None:
    """Add worker ``pid``'s counters and histograms to the archives and delete its files (its
    ``mostrecent`` gauges too). Run by the master when a worker has exited."""
    folder = Path(directory)
    with _locked(folder, fcntl.LOCK_EX):
        for kind in _SUMMED:
            dead = folder / f"{kind}_{pid}.db"
            if not dead.is_file():
                continue
            if space_problem(folder) is not None:
                # The archive grows through a memory map, as the workers' files do: on a full
                # file system that kills this process, the master. Left as they are, the dead
                # worker's counts are still read by every scrape.
                return
            archive = metric_file_class()(str(folder / f"{kind}_archive.db"))
            try:
                # Each series as it is: moving a count to another series (a capped label's
                # '__other__') made the first go down, which Prometheus takes for a reset.
                for key, value, timestamp, *_ in MmapedDict.read_all_values_from_file(str(dead)):
                    total, _ = archive.read_value(key)
                    archive.write_value(key, total + value, timestamp)
            finally:
                archive.close()
            dead.unlink()
        (folder / f"gauge_mostrecent_{pid}.db").unlink(missing_ok=True)


def counted_label_values(directory: str | Path, metric: str, label: str) -> dict[str, set[str]]:
    """The values of counter ``metric``'s ``label`` in every counter file, the archive of
    exited workers' counts and each live worker's, by model: the series the server exports
    now. A worker counts these, and new ones only while the model has fewer than its cap, so
    that a cap holds for the server rather than for each worker (each replaced worker's 100
    keys stayed: 400 more series a model after 4 reloads; each live worker's own 100: 200 a
    model under 2 workers)."""
    found: dict[str, set[str]] = {}
    with _locked(Path(directory), fcntl.LOCK_SH):  # no fold deletes a file mid-read
        for path in Path(directory).glob("counter_*.db"):
            if not METRIC_FILE.match(path.name):
                continue
            try:
                values = MmapedDict.read_all_values_from_file(str(path))
            except FileNotFoundError:  # a worker's file, deleted by a restart's clearing
                continue
            for key, *_ in values:
                name, _sample, labels, _help = json.loads(key)
                if name == metric and label in labels and "model" in labels:
                    found.setdefault(labels["model"], set()).add(labels[label])
    return found


@contextlib.contextmanager
def _locked(folder: Path, how: int) -> Iterator[None]:
    with open(folder / LOCK_FILE, "a") as handle:
        fcntl.flock(handle, how)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
