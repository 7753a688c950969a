"""Where the service keeps each series' last rows: one SQLite file shared by every worker.

A series model judges a record with the rows its key sent before, and gunicorn hands
consecutive records of one host to whichever worker is free: state kept in a worker would be
split between them, and each worker would see a different history. So the state lives in one
SQLite database (WAL mode) that every worker process opens. Each request reads its keys'
histories, windows its records and writes the histories back in one ``BEGIN IMMEDIATE``
transaction, so two workers never interleave the rows of a key; the scoring itself runs after
the commit. A few hundred microseconds per request, and no server to run: SQLite is a library,
and a file on the machine the workers share. (Several machines would need a shared store, or a
load balancer that routes by key; one machine's workers need neither.)

Beside its rows each series keeps its level (``detector.series.levels``: its scores' sums and
counts by clock hour), which a second, shorter transaction reads and adds to once the records
are scored (``judge``): the scoring itself holds no lock.

Bounded: at most ``max_keys`` series per model; past that, the least recently seen key is
forgotten (it warms up again when it comes back). Memory is SQLite's page cache, not the keys:
100,000 hosts live in the file (``make bench`` measures its size).

On restart the file is read again, so each series continues where it stopped (a gap longer than
the model's ``--max-gap-seconds`` restarts its window). ``anomaly serve`` without the
``series_state`` setting puts the file in the server's run directory, which a restart replaces:
every series warms up again.

A model trained again with a different window or columns starts every series afresh: its
histories are kept apart per layout (window, gap, columns), never misread as another's. While a
reload reaches the workers one by one, old and new layouts are both in use and each keeps its
own histories, rather than each clearing the other's on every request (until the workers agree,
a version's windows lack the rows the other version took); a layout no worker has used for
``STALE_SECONDS`` is dropped.
"""

from __future__ import annotations

import binascii
import json
import logging
import os
import shutil
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import TypeVar

import numpy as np

from detector.scoring.scores import Runner, here
from detector.series.levels import Level, judged
from detector.series.stream import History, StreamWindows, series_key, window_records
from detector.series.windows import SeriesSpec
from service.throttled_log import ThrottledLog

log = logging.getLogger(__name__)
T = TypeVar("T")

#: Series kept per model and layout before the least recently seen is forgotten.
DEFAULT_MAX_KEYS = 100_000
#: A layout (a model's window and columns) unused this long is dropped with its histories:
#: far longer than a reload takes to reach every worker.
STALE_SECONDS = 600
#: How long a request waits for another worker's transaction on the file before it gives
#: up (503): transactions take under a millisecond, so only a stuck holder gets this far.
BUSY_TIMEOUT_S = 10.0
#: SQLite's own wait for another process's lock, which blocks a gevent worker's every request:
#: short, since ``_begin`` does the waiting.
_SQLITE_WAIT_S = 0.05
#: How often a layout's last use is written down (and stale layouts looked for).
_TOUCH_SECONDS = 60

#: ``PRAGMA user_version`` of this layout of the file; a file of another is started afresh,
#: but for version 2's, which lacks only the levels.
_VERSION = 3
_SCHEMA = """
CREATE TABLE IF NOT EXISTS series_layouts (id INTEGER PRIMARY KEY, model TEXT NOT NULL,
    layout TEXT NOT NULL, n_keys INTEGER NOT NULL, touched INTEGER NOT NULL,
    UNIQUE (model, layout));
CREATE TABLE IF NOT EXISTS series_history (layout INTEGER NOT NULL, key TEXT NOT NULL,
    history TEXT NOT NULL, seen INTEGER NOT NULL, level TEXT, PRIMARY KEY (layout, key));
CREATE INDEX IF NOT EXISTS series_by_seen ON series_history (layout, seen);
"""
#: What a file written before ``_VERSION`` holds: only warm-up rows, so it is dropped.
_OLD_TABLES = ("series_models", "series_history")


class SeriesStore:
    """Each model's series histories in the SQLite file at ``path`` (``":memory:"``: this
    process alone, for a single-process app)."""

    def __init__(
        self,
        path: str,
        *,
        max_keys: int = DEFAULT_MAX_KEYS,
        clock: Callable[[], float] = time.time,
        on_evict: Callable[[str, int], None] = lambda model, n: None,
    ) -> None:
        """``on_evict(model, n)`` hears of each request's ``n`` series forgotten for the cap
        (after its commit)."""
        self.path = path
        self.max_keys = max_keys
        self._clock = clock
        self._on_evict = on_evict
        self._file = SharedFile(path, "series_state", _prepare, "each series warms up again")

    def window(
        self,
        model: str,
        spec: SeriesSpec,
        value_columns: Sequence[str],
        records: Sequence[Mapping[str, object]],
        levels: dict[str, Level] | None = None,
        runner: Runner = here,
    ) -> StreamWindows:
        """Window ``records`` of ``model`` with their keys' stored rows, and store the new
        rows, atomically with respect to every other worker. ``levels``, when given, gets the
        keys' levels as this transaction read them (what ``StoredLevels`` falls back on).
        ``runner`` runs the windowing (pure, given the rows read: a server's thread); the file
        is read and written where this runs, its connection never leaving the thread that
        holds it."""
        layout = _layout(spec, value_columns)
        keys = sorted({k for r in records if (k := series_key(spec, r)) is not None})
        with self._file.transaction() as db:
            state = self._layout_id(db, model, layout, _layout_with_start(spec, value_columns))
            histories = self._read(db, state, keys, len(value_columns))
            windows = runner(window_records, spec, value_columns, records, histories)
            new = len(windows.histories.keys() - histories.keys())
            evicted = self._write(db, state, windows.histories, new=new)
            if levels is not None:
                levels.update(self._read_levels(db, state, keys))
        if evicted:
            self._on_evict(model, evicted)
        return windows

    def judge(
        self,
        model: str,
        spec: SeriesSpec,
        value_columns: Sequence[str],
        keys: np.ndarray,
        seconds: np.ndarray,
        scores: np.ndarray,
        *,
        normal: float,
    ) -> np.ndarray:
        """``scores`` of ``model``'s records (series ``keys``, epoch ``seconds``) against each
        series' level (``detector.series.levels``), adding them to it, atomically with respect
        to every other worker. This runs after the scoring, in a transaction of its own: a
        record judged while another worker scores the same series' record just before it, in
        an earlier hour, misses that one score in its level (the sums do not, whatever order
        they arrive in)."""
        layout = _layout(spec, value_columns)
        with self._file.transaction() as db:
            state = self._layout_id(db, model, layout, _layout_with_start(spec, value_columns))
            known = self._read_levels(db, state, sorted(set(keys.tolist())))
            out, new = judged(known, keys, seconds, scores, hours=spec.level_hours, normal=normal)
            # A series forgotten meanwhile (evicted) stays forgotten: no row to update.
            db.executemany(
                "UPDATE series_history SET level = ? WHERE layout = ? AND key = ?",
                [(level.to_json(), state, key) for key, level in new.items()],
            )
        return out

    def check(self) -> None:
        """Open the file (creating it and its folder), check it and try a write, then close
        it, so that a path the server cannot use fails where it is configured, naming itself
        and the fix, rather than in every series request once the server says it is ready."""
        self._file.check()

    def keys(self, model: str) -> int:
        """How many series of ``model`` are kept (under every layout still in use)."""
        with self._file.reading() as db:
            query = "SELECT SUM(n_keys) FROM series_layouts WHERE model = ?"
            row = db.execute(query, (model,)).fetchone()
        return int(row[0] or 0)

    def close(self) -> None:
        self._file.close()

    def _layout_id(self, db: sqlite3.Connection, model: str, layout: str, with_start: str) -> int:
        """The id ``model``'s histories under ``layout`` are stored by (new: none yet), those
        stored under ``with_start`` (``_layout_with_start``) taken over."""
        now = int(self._clock())
        query = "SELECT id, touched FROM series_layouts WHERE model = ? AND layout = ?"
        row = db.execute(query, (model, layout)).fetchone()
        if row is None:
            db.execute(
                "UPDATE series_layouts SET layout = ? WHERE model = ? AND layout = ?",
                (layout, model, with_start),
            )
            row = db.execute(query, (model, layout)).fetchone()
        if row is not None and now - row[1] < _TOUCH_SECONDS:
            return int(row[0])
        if row is None:
            state = db.execute(
                "INSERT INTO series_layouts (model, layout, n_keys, touched) VALUES (?, ?, 0, ?)",
                (model, layout, now),
            ).lastrowid
        else:
            state = row[0]
            db.execute("UPDATE series_layouts SET touched = ? WHERE id = ?", (now, state))
        stale = [
            r[0]
            for r in db.execute(
                "SELECT id FROM series_layouts WHERE model = ? AND touched < ?",
                (model, now - STALE_SECONDS),
            )
        ]
        for old in stale:
            db.execute("DELETE FROM series_history WHERE layout = ?", (old,))
            db.execute("DELETE FROM series_layouts WHERE id = ?", (old,))
        return int(state)  # type: ignore[arg-type]

    @staticmethod
    def _read(
        db: sqlite3.Connection, state: int, keys: list[str], width: int
    ) -> dict[str, History]:
        stored = _select(db, state, keys, "history")
        return _readable(stored, lambda text: History.from_json(text, width), "rows")

    @staticmethod
    def _read_levels(db: sqlite3.Connection, state: int, keys: list[str]) -> dict[str, Level]:
        return _readable(_select(db, state, keys, "level"), Level.from_json, "level")

    def _write(
        self, db: sqlite3.Connection, state: int, histories: Mapping[str, History], *, new: int
    ) -> int:
        """Store ``histories``; how many series were forgotten to stay within the cap."""
        seen = time.time_ns()
        # An upsert, not a replace: a replace would drop the series' level.
        db.executemany(
            "INSERT INTO series_history (layout, key, history, seen) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (layout, key) DO UPDATE SET history = excluded.history, "
            "seen = excluded.seen",
            [(state, key, h.to_json(), seen) for key, h in histories.items()],
        )
        if not new:
            return 0
        db.execute("UPDATE series_layouts SET n_keys = n_keys + ? WHERE id = ?", (new, state))
        (n_keys,) = db.execute(
            "SELECT n_keys FROM series_layouts WHERE id = ?", (state,)
        ).fetchone()
        over = n_keys - self.max_keys
        if over > 0:
            db.execute(
                "DELETE FROM series_history WHERE rowid IN (SELECT rowid FROM series_history "
                "WHERE layout = ? ORDER BY seen LIMIT ?)",
                (state, over),
            )
            db.execute("UPDATE series_layouts SET n_keys = ? WHERE id = ?", (self.max_keys, state))
        return max(over, 0)


def _readable(stored: dict[str, str], read: Callable[[str], T], what: str) -> dict[str, T]:
    """Each key's ``stored`` text as ``read`` makes it, leaving out (logged) what it cannot
    read: a form no release of this one's wrote (a hand, a tool), which answered every request
    for the key with a 500 for as long as it stayed. Such a series starts its ``what`` afresh
    and writes it anew."""
    out: dict[str, T] = {}
    for key, text in stored.items():
        try:
            out[key] = read(text)
        except (ValueError, TypeError, KeyError, IndexError, RecursionError, binascii.Error) as exc:
            _unreadable.error(
                "series state: a series' stored %s could not be read (%s: %s); it starts afresh",
                what,
                type(exc).__name__,
                exc,
            )
    return out


def _prepare(db: sqlite3.Connection, deadline: float) -> None:
    """Create the tables, or bring a file of an earlier layout to this one."""
    with immediate(db, deadline):  # two workers may open an old file at once
        (version,) = db.execute("PRAGMA user_version").fetchone()
        if version > _VERSION:  # a newer release's, then a rollback: its state is not ours
            raise sqlite3.DatabaseError(
                f"written by a newer release of the service (layout {version}; this one reads "
                f"{_VERSION})"
            )
        if version == 2:  # the histories hold; each series' level starts afresh
            db.execute("ALTER TABLE series_history ADD COLUMN level TEXT")
            db.execute(f"PRAGMA user_version = {_VERSION}")
        elif version != _VERSION:
            earlier = (
                version
                or db.execute(
                    "SELECT count(*) FROM sqlite_master WHERE name IN (?, ?)", _OLD_TABLES
                ).fetchone()[0]
            )
            if earlier:  # the first release's file had no version
                log.warning("series state of layout %d dropped: every series warms up", version)
            for table in _OLD_TABLES:
                db.execute(f"DROP TABLE IF EXISTS {table}")
            db.execute(f"PRAGMA user_version = {_VERSION}")
        for statement in filter(str.strip, _SCHEMA.split(";")):  # executescript commits
            db.execute(statement)


class _Rollback(Exception):
    """Ends a transaction that was only a trial."""


class SharedFile:
    """This process's connection to the SQLite file at ``path`` that the server's workers
    share (the ``setting`` that names it), made ready by ``prepare`` (tables) each time it is
    opened, and its transactions.

    Opened again in a forked worker (a connection must not cross a fork), when the file at the
    path was removed or replaced under the server (a cleaner, a hand: a worker started since
    opens a new file, so one still on the old one would keep its state apart from the others,
    a series' rows split, the same alert fired twice; every worker moves to the file at the
    path, and logs that ``lost``), and after an error (SQLite opens a file it may not write
    read-only, and stays so once the file is fixed).

    Waiting, for this process's other requests or another worker's transaction, takes at most
    ``BUSY_TIMEOUT_S`` in all, and waits as ``time.sleep`` does: under gevent, a switch, so
    the worker's other requests (``/healthz`` too) go on. SQLite's own busy wait would block
    every one of them."""

    def __init__(
        self,
        path: str,
        setting: str,
        prepare: Callable[[sqlite3.Connection, float], None],
        lost: str,
    ) -> None:
        self.path = path
        self._setting, self._prepare, self._lost = setting, prepare, lost
        self._lock = threading.Lock()
        self._connection: sqlite3.Connection | None = None
        self._pid = 0
        self._file_id: tuple[int, int] | None = None

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """A write transaction (``BEGIN IMMEDIATE``): committed when the block ends, rolled
        back when it raises."""
        deadline = time.monotonic() + BUSY_TIMEOUT_S
        with self._held(deadline) as db, immediate(db, deadline):
            yield db

    @contextmanager
    def reading(self) -> Iterator[sqlite3.Connection]:
        """The connection, for reads outside a transaction (WAL: they wait for no writer)."""
        with self._held(time.monotonic() + BUSY_TIMEOUT_S) as db:
            yield db

    def check(self) -> None:
        """Open the file (creating it and its folder), check its pages and try a write, then
        close it; a ``ConfigError`` naming the file and the fix if any of that fails."""
        from detector.errors import ConfigError

        where = f"{self._setting} {self.path}"
        if self.path != ":memory:":
            if os.path.isdir(self.path):
                raise ConfigError(
                    f"{where}: is a folder; name a file in it, such as "
                    f"{os.path.join(self.path, 'series.sqlite')}"
                )
            if os.path.exists(self.path) and not os.path.isfile(self.path):
                raise ConfigError(f"{where}: is not a regular file (a device, a pipe); name a file")
            folder = os.path.dirname(os.path.abspath(self.path))
            try:
                os.makedirs(folder, exist_ok=True)
            except OSError as exc:
                raise ConfigError(
                    f"{where}: cannot be created ({exc.strerror}: {folder}); name a file in "
                    "a folder the server can write to"
                ) from None
        try:
            with self.transaction() as db:
                (verdict,) = db.execute("PRAGMA quick_check").fetchone()
                if verdict != "ok":
                    raise sqlite3.DatabaseError(f"database disk image is malformed: {verdict}")
                # SQLite opens a file it may not write read-only, and says so at the first write.
                db.execute("CREATE TABLE write_check (x INTEGER)")
                raise _Rollback
        except _Rollback:
            pass
        except sqlite3.Error as exc:
            raise ConfigError(f"{where}: {_fix(str(exc))}") from None
        finally:
            self.close()

    def close(self) -> None:
        with self._lock:
            self._drop()

    @contextmanager
    def _held(self, deadline: float) -> Iterator[sqlite3.Connection]:
        if not self._lock.acquire(timeout=max(deadline - time.monotonic(), 0.0)):
            raise sqlite3.OperationalError(
                f"database is locked: this worker's other requests held it {BUSY_TIMEOUT_S:g} s"
            )
        try:
            db = self._connected(deadline)
            try:
                yield db
            except sqlite3.Error as exc:
                if "locked" not in str(exc):  # the connection itself may be what is wrong
                    self._drop()
                raise
        finally:
            self._lock.release()

    def _connected(self, deadline: float) -> sqlite3.Connection:
        if self._connection is not None and self._replaced():
            log.warning(
                "%s file %s was removed or replaced; opening it again (%s)",
                self._setting,
                self.path,
                self._lost,
            )
            self._drop()
        if self._connection is None or self._pid != os.getpid():
            db = connect(self.path)
            try:
                self._prepare(db, deadline)
            except BaseException:
                db.close()
                raise
            self._connection, self._pid = db, os.getpid()
            self._file_id = self._identity()
        return self._connection

    def _drop(self) -> None:
        if self._connection is not None and self._pid == os.getpid():
            with suppress(sqlite3.Error):
                self._connection.close()
        self._connection = None

    def _identity(self) -> tuple[int, int] | None:
        if self.path == ":memory:":
            return None
        try:
            stat = os.stat(self.path)
        except OSError:
            return None
        return (stat.st_dev, stat.st_ino)

    def _replaced(self) -> bool:
        return (
            self._pid == os.getpid()
            and self.path != ":memory:"
            and self._identity() != self._file_id
        )


def _fix(error: str) -> str:
    """What to do about a state file that failed its check with ``error``, on one line: SQLite's
    integrity check of a damaged file lists a line per damaged page (dozens), which a start-up
    error printed whole."""
    lines = [line.strip() for line in error.splitlines() if line.strip()]
    error = "; ".join(lines[:2]) + (f"; and {len(lines) - 2} more lines" if len(lines) > 2 else "")
    if "locked" in error:
        return (
            f"another process holds it ({error}); stop that process or wait for it, or name "
            "another file"
        )
    if "newer release" in error:
        return f"{error}; serve it with that release, or name another file"
    if "malformed" in error or "not a database" in error:
        return (
            f"is damaged ({error}); move it away (each series warms up again, open alerts "
            "start afresh), or name another file"
        )
    return (
        f"cannot be opened as the service's SQLite state ({error}); name a new or earlier "
        "state file in a folder the server can write to"
    )


def forget_unserved(
    path: str, served: Sequence[str], *, now: float | None = None
) -> dict[str, int]:
    """Drop from the state file at ``path`` what models not in ``served`` left: their series
    histories, and their alert keys, where none was used for ``STALE_SECONDS`` (a server that
    shares the file and serves such a model uses them every minute). Each layout was only ever
    dropped by a request of its own model, so a model renamed or no longer served kept its
    histories (up to 1.1 KB a series, ``series_max_keys`` of them) in the file for good.
    Returns the series forgotten by model; a file of another version is left to ``_prepare``."""
    if not os.path.isfile(path):
        return {}
    before = (time.time() if now is None else now) - STALE_SECONDS
    forgotten: dict[str, int] = {}
    db = connect(path)
    try:
        with immediate(db, time.monotonic() + BUSY_TIMEOUT_S):
            if db.execute("PRAGMA user_version").fetchone()[0] != _VERSION:
                return {}
            tables = {name for (name,) in db.execute("SELECT name FROM sqlite_master")}
            others = f"model NOT IN ({', '.join('?' * len(served))})"
            if "series_layouts" in tables:
                query = (
                    f"SELECT id, model, n_keys FROM series_layouts WHERE touched < ? AND {others}"
                )
                for state, model, n_keys in db.execute(query, (before, *served)).fetchall():
                    db.execute("DELETE FROM series_history WHERE layout = ?", (state,))
                    db.execute("DELETE FROM series_layouts WHERE id = ?", (state,))
                    forgotten[model] = forgotten.get(model, 0) + int(n_keys)
            if "alert_keys" in tables:
                db.execute(
                    f"DELETE FROM alert_keys WHERE {others} AND model IN (SELECT model FROM "
                    "alert_keys GROUP BY model HAVING MAX(seen) < ?)",
                    (*served, before),
                )
    finally:
        db.close()
    return forgotten


#: Free space on the state file's disk under which ``/readyz`` says series requests may fail:
#: SQLite grows the file and its write-ahead log a few pages at a time.
LOW_DISK_BYTES = 2**20


def state_disk_low(path: str | None) -> bool:
    """Whether the disk of the state file ``path`` (``None``, ``":memory:"``: none) has under
    ``LOW_DISK_BYTES`` free, where its transactions fail (``SQLITE_FULL``) once the file or its
    log must grow. Asked of the disk itself: any worker answers alike."""
    if not path or path == ":memory:":
        return False
    try:
        folder = os.path.dirname(os.path.abspath(path))
        return shutil.disk_usage(folder).free < LOW_DISK_BYTES
    except OSError:  # a folder gone: the state's own errors say so
        return False


def connect(path: str) -> sqlite3.Connection:
    """A connection to the SQLite file the server's workers share (``":memory:"``: one of this
    process), in autocommit mode for explicit transactions. SQLite's own wait for another
    process's lock is kept short (it blocks every request of a gevent worker): ``_begin``
    waits instead."""
    db = sqlite3.connect(
        path, timeout=_SQLITE_WAIT_S, isolation_level=None, check_same_thread=False
    )
    if path != ":memory:":
        _to_wal(db)
    # Losing the last transactions in a power cut costs a few warm-up rows, not corruption:
    # WAL with NORMAL sync stays consistent, and is several times faster.
    db.execute("PRAGMA synchronous=NORMAL")
    return db


@contextmanager
def immediate(db: sqlite3.Connection, deadline: float) -> Iterator[sqlite3.Connection]:
    """A write transaction on ``db``, begun by ``deadline`` (``_begin``): committed when the
    block ends, rolled back when it raises."""
    _begin(db, deadline)
    try:
        yield db
        db.execute("COMMIT")
    except BaseException:
        _roll_back(db)
        raise


def _begin(db: sqlite3.Connection, deadline: float) -> None:
    """``BEGIN IMMEDIATE``, tried again until ``deadline`` while another process holds the
    file."""
    pause = 0.002
    while True:
        try:
            db.execute("BEGIN IMMEDIATE")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc):
                raise
            left = deadline - time.monotonic()
            if left <= 0:
                raise sqlite3.OperationalError(
                    f"database is locked: another process held it {BUSY_TIMEOUT_S:g} s"
                ) from None
            time.sleep(min(pause, left))
            pause = min(2 * pause, 0.05)


def _roll_back(db: sqlite3.Connection) -> None:
    # A failed statement may have ended the transaction already; an error here would hide
    # the one that matters.
    if db.in_transaction:
        with suppress(sqlite3.Error):
            db.execute("ROLLBACK")


def _to_wal(db: sqlite3.Connection) -> None:
    """Put the file in WAL mode (kept in the file: once is enough). SQLite answers "database
    is locked" at once, without waiting its busy timeout, when another process is switching
    a new file at the same moment (two workers booting), so the switch is tried again."""
    deadline = time.monotonic() + BUSY_TIMEOUT_S
    while True:
        try:
            db.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.01)


def _select(db: sqlite3.Connection, state: int, keys: list[str], column: str) -> dict[str, str]:
    """``column`` (``history`` or ``level``) of each of ``keys`` that has one, under layout
    ``state``."""
    found = {}
    for start in range(0, len(keys), 500):  # SQLite's limit on bound parameters
        chunk = keys[start : start + 500]
        marks = ",".join("?" * len(chunk))
        rows = db.execute(
            f"SELECT key, {column} FROM series_history WHERE layout = ? AND key IN ({marks}) "
            f"AND {column} IS NOT NULL",
            (state, *chunk),
        )
        found.update(dict(rows))
    return found


def _layout(spec: SeriesSpec, value_columns: Sequence[str]) -> str:
    """What a model's histories are kept apart by: its series rules and value columns. Not the
    training rows' first time, which windows nothing: with it, a model trained again on later
    rows, or a server upgraded over its file (the layouts written before it lack it), warmed
    up every series afresh."""
    rules = {k: v for k, v in vars(spec).items() if k != "trained_from"}
    return json.dumps([rules, list(value_columns)], sort_keys=True)


def _layout_with_start(spec: SeriesSpec, value_columns: Sequence[str]) -> str:
    """The layout as the releases of 2026-12-07 wrote it, with the training rows' first time."""
    return json.dumps([vars(spec), list(value_columns)], sort_keys=True)


@dataclass(frozen=True)
class StoredLevels:
    """``store``'s levels of ``model``'s series, as a scorer's ``Levels``
    (``detector.scoring.scores``)."""

    store: SeriesStore
    model: str
    spec: SeriesSpec
    value_columns: Sequence[str]
    #: The levels as the records' windows were read (``SeriesStore.window``'s ``levels``).
    known: Mapping[str, Level]

    def judge(
        self, keys: np.ndarray, seconds: np.ndarray, scores: np.ndarray, *, normal: float
    ) -> np.ndarray:
        try:
            return self.store.judge(
                self.model, self.spec, self.value_columns, keys, seconds, scores, normal=normal
            )
        except sqlite3.Error as exc:
            # The rows are stored already: failing now would lose them (the client's retry
            # is a duplicate). They are judged against the levels read with their windows,
            # and the levels miss this request's scores.
            _levels_unsaved.error(
                "model %s: series levels not updated (the records are scored): %s",
                self.model,
                exc,
                count=len(scores),
            )
            return judged(
                self.known, keys, seconds, scores, hours=self.spec.level_hours, normal=normal
            )[0]


_levels_unsaved = ThrottledLog(log, "scores left out of their series' levels")
_unreadable = ThrottledLog(log, "series started afresh")
