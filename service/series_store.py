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

import json
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from detector.series.levels import Level, judged
from detector.series.stream import History, StreamWindows, series_key, window_records
from detector.series.windows import SeriesSpec

log = logging.getLogger(__name__)

#: Series kept per model and layout before the least recently seen is forgotten.
DEFAULT_MAX_KEYS = 100_000
#: A layout (a model's window and columns) unused this long is dropped with its histories:
#: far longer than a reload takes to reach every worker.
STALE_SECONDS = 600
#: How long a request waits for another worker's transaction on the file before it gives
#: up (503): transactions take under a millisecond, so only a stuck holder gets this far.
BUSY_TIMEOUT_S = 10.0
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
        self._lock = threading.Lock()
        self._file = SharedFile(path, "series state", _prepare, "each series warms up again")

    def window(
        self,
        model: str,
        spec: SeriesSpec,
        value_columns: Sequence[str],
        records: Sequence[Mapping[str, object]],
    ) -> StreamWindows:
        """Window ``records`` of ``model`` with their keys' stored rows, and store the new
        rows, atomically with respect to every other worker."""
        layout = _layout(spec, value_columns)
        keys = sorted({k for r in records if (k := series_key(spec, r)) is not None})
        with self._lock:
            db = self._open()
            db.execute("BEGIN IMMEDIATE")
            try:
                state = self._layout_id(db, model, layout)
                histories = self._read(db, state, keys)
                windows = window_records(spec, value_columns, records, histories)
                new = len(windows.histories.keys() - histories.keys())
                evicted = self._write(db, state, windows.histories, new=new)
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
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
        with self._lock:
            db = self._open()
            db.execute("BEGIN IMMEDIATE")
            try:
                state = self._layout_id(db, model, layout)
                known = self._read_levels(db, state, sorted(set(keys.tolist())))
                out, new = judged(
                    known, keys, seconds, scores, hours=spec.level_hours, normal=normal
                )
                # A series forgotten meanwhile (evicted) stays forgotten: no row to update.
                db.executemany(
                    "UPDATE series_history SET level = ? WHERE layout = ? AND key = ?",
                    [(level.to_json(), state, key) for key, level in new.items()],
                )
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        return out

    def check(self) -> None:
        """Open the file (creating it) and close it again, so that a path the server cannot
        use fails where it is configured, naming itself, rather than in every series request
        once the server says it is ready."""
        from detector.errors import ConfigError

        try:
            self._open()
        except sqlite3.Error as exc:
            raise ConfigError(
                f"series_state {self.path}: cannot be opened as the series' SQLite state "
                f"({exc}); name a new or earlier state file in a folder the server can write to"
            ) from None
        finally:
            self.close()

    def keys(self, model: str) -> int:
        """How many series of ``model`` are kept (under every layout still in use)."""
        with self._lock:
            row = (
                self._open()
                .execute("SELECT SUM(n_keys) FROM series_layouts WHERE model = ?", (model,))
                .fetchone()
            )
        return int(row[0] or 0)

    def close(self) -> None:
        with self._lock:
            self._file.close()

    def _open(self) -> sqlite3.Connection:
        return self._file.connection()

    def _layout_id(self, db: sqlite3.Connection, model: str, layout: str) -> int:
        """The id ``model``'s histories under ``layout`` are stored by (new: none yet)."""
        now = int(self._clock())
        row = db.execute(
            "SELECT id, touched FROM series_layouts WHERE model = ? AND layout = ?",
            (model, layout),
        ).fetchone()
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
    def _read(db: sqlite3.Connection, state: int, keys: list[str]) -> dict[str, History]:
        return {k: History.from_json(t) for k, t in _select(db, state, keys, "history").items()}

    @staticmethod
    def _read_levels(db: sqlite3.Connection, state: int, keys: list[str]) -> dict[str, Level]:
        return {k: Level.from_json(t) for k, t in _select(db, state, keys, "level").items()}

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


def _prepare(db: sqlite3.Connection) -> None:
    """Create the tables, or bring a file of an earlier layout to this one."""
    db.execute("BEGIN IMMEDIATE")  # two workers may open an old file at once
    try:
        (version,) = db.execute("PRAGMA user_version").fetchone()
        if version == 2:  # the histories hold; each series' level starts afresh
            db.execute("ALTER TABLE series_history ADD COLUMN level TEXT")
            db.execute(f"PRAGMA user_version = {_VERSION}")
        elif version != _VERSION:
            for table in _OLD_TABLES:
                db.execute(f"DROP TABLE IF EXISTS {table}")
            db.execute(f"PRAGMA user_version = {_VERSION}")
        for statement in filter(str.strip, _SCHEMA.split(";")):  # executescript commits
            db.execute(statement)
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise


class SharedFile:
    """This process's connection to the SQLite file at ``path`` that the server's workers
    share, made ready by ``prepare`` (tables) each time it is opened.

    Opened again in a forked worker (a connection must not cross a fork), and when the file at
    the path was removed or replaced under the server (a cleaner, a hand): a worker started
    since opens a new file, so one still on the old one would keep its state apart from the
    others (a series' rows split, the same alert fired twice). Every worker moves to the file
    at the path, and logs that ``lost`` (what starting afresh means)."""

    def __init__(
        self, path: str, what: str, prepare: Callable[[sqlite3.Connection], None], lost: str
    ) -> None:
        self.path = path
        self._what, self._prepare, self._lost = what, prepare, lost
        self._connection: sqlite3.Connection | None = None
        self._pid = 0
        self._file_id: tuple[int, int] | None = None

    def connection(self) -> sqlite3.Connection:
        """The connection, opened if need be; the caller holds its owner's lock."""
        if self._connection is not None and self._replaced():
            log.warning(
                "%s file %s was removed or replaced; opening it again (%s)",
                self._what,
                self.path,
                self._lost,
            )
            self._connection.close()
            self._connection = None
        if self._connection is None or self._pid != os.getpid():
            db = connect(self.path)
            self._prepare(db)
            self._connection, self._pid = db, os.getpid()
            self._file_id = self._identity()
        return self._connection

    def close(self) -> None:
        if self._connection is not None and self._pid == os.getpid():
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


def connect(path: str) -> sqlite3.Connection:
    """A connection to the SQLite file the server's workers share (``":memory:"``: one of this
    process), in autocommit mode for explicit transactions, waiting ``BUSY_TIMEOUT_S`` for
    another worker's."""
    db = sqlite3.connect(
        path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False
    )
    if path != ":memory:":
        _to_wal(db)
    # Losing the last transactions in a power cut costs a few warm-up rows, not corruption:
    # WAL with NORMAL sync stays consistent, and is several times faster.
    db.execute("PRAGMA synchronous=NORMAL")
    return db


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
    """What a model's histories are kept apart by: its series rules and value columns."""
    return json.dumps([vars(spec), list(value_columns)], sort_keys=True)


@dataclass(frozen=True)
class StoredLevels:
    """``store``'s levels of ``model``'s series, as a scorer's ``Levels``
    (``detector.scoring.scores``)."""

    store: SeriesStore
    model: str
    spec: SeriesSpec
    value_columns: Sequence[str]

    def judge(
        self, keys: np.ndarray, seconds: np.ndarray, scores: np.ndarray, *, normal: float
    ) -> np.ndarray:
        return self.store.judge(
            self.model, self.spec, self.value_columns, keys, seconds, scores, normal=normal
        )
