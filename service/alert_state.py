"""Alert state that every worker of one server shares: ``SharedAlertStates``.

gunicorn hands a key's records to whichever worker is free. With a tracker per worker each one
counted its share of the records (``fire_after`` 3 of ``window`` 10 became 3 of a worker's 10),
both workers fired the same alert, and a resolve by one was undone by the other's next re-send:
Alertmanager showed firing, resolved, firing, resolved. So each key's state (its window of
severities, whether it fires and since when) lives in a table of the SQLite file the series
state already uses (``series_state``), read and written in one ``BEGIN IMMEDIATE`` transaction
per request: one worker makes each transition, and the others see it.

Bounded as the in-process tracker is: at most ``max_keys`` keys per model, the least recently
seen key that is not firing forgotten first; a firing one only when every key fires, logged (its
end is never sent).
"""

from __future__ import annotations

import json
import logging
import math
import sqlite3
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from service.series_store import SharedFile, immediate
from service.throttled_log import ThrottledLog

log = logging.getLogger(__name__)

#: Keys kept per model (``AlertTracker``'s bound too).
DEFAULT_MAX_KEYS = 10_000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS alert_keys (model TEXT NOT NULL, key TEXT NOT NULL,
    state TEXT NOT NULL, firing INTEGER NOT NULL, seen REAL NOT NULL, PRIMARY KEY (model, key));
CREATE INDEX IF NOT EXISTS alert_keys_by_seen ON alert_keys (model, firing, seen);
CREATE TABLE IF NOT EXISTS alert_log (id INTEGER PRIMARY KEY, alert TEXT NOT NULL)
"""

Key = tuple[tuple[str, str], ...]


#: An alert's model, read from its logged text (the log's one column, as files made before kept).
_MODEL = "json_extract(alert, '$.model')"


class SharedAlertStates:
    """Each key's alert state, in the table ``alert_keys`` of the SQLite file ``path``."""

    def __init__(self, path: str, *, max_keys: int = DEFAULT_MAX_KEYS, recent: int = 200) -> None:
        """``recent``: how many of the alerts made are kept for ``recent()``."""
        self.path = path
        self.max_keys = max_keys
        self.keep_recent = recent
        self._file = SharedFile(path, "series_state", _prepare, "the keys' windows start afresh")
        self._firing_forgotten = ThrottledLog(log, "firing alert keys forgotten")

    @contextmanager
    def transaction(
        self, model: str, now: float, codec: tuple[Callable[[Any], str], Callable[[str], Any]]
    ) -> Iterator[_Keys]:
        """The keys of ``model`` as one request reads and changes them, each state stored as
        the text ``codec`` (to text, from text) makes of it; written back, and the oldest keys
        past ``max_keys`` forgotten, when the block ends without an error."""
        with self._file.transaction() as db:
            keys = _Keys(db, model, codec)
            yield keys
            keys.write(now)
            if keys.added:  # only new keys can take the table past its bound
                self._bound(db, model, now)
            if keys.made:
                self._log(db, keys.made)

    def firing(self, model: str, key: Key) -> str | None:
        """The stored state of ``key`` of ``model`` if it fires, else None (a re-send checks
        it: the worker that resolved it may be another)."""
        with self._file.reading() as db:
            row = db.execute(
                "SELECT state FROM alert_keys WHERE model = ? AND key = ? AND firing = 1",
                (model, _key_text(key)),
            ).fetchone()
        return None if row is None else str(row[0])

    def recent(self, model: str | None = None) -> list[dict[str, Any]]:
        """The alerts the server's workers made last (at most ``keep_recent``), oldest first:
        all models', or ``model``'s alone."""
        with self._file.reading() as db:
            if model is None:
                query = "SELECT alert FROM alert_log ORDER BY id DESC LIMIT ?"
                rows = db.execute(query, (self.keep_recent,)).fetchall()
            else:
                query = f"SELECT alert FROM alert_log WHERE {_MODEL} = ? ORDER BY id DESC LIMIT ?"
                rows = db.execute(query, (model, self.keep_recent)).fetchall()
        return [json.loads(text) for (text,) in reversed(rows)]

    def close(self) -> None:
        self._file.close()

    def _log(self, db: sqlite3.Connection, alerts: list[dict[str, Any]]) -> None:
        db.executemany(
            "INSERT INTO alert_log (alert) VALUES (?)", [(json.dumps(a),) for a in alerts]
        )
        # The newest id is never deleted, so ids keep rising and order the log. An alert stays
        # while among the newest ``keep_recent`` of all or of its model's: a noisy model's
        # alerts pushed a quiet one's out of ``GET /v1/alerts?model=quiet``.
        db.execute(
            "DELETE FROM alert_log WHERE id <= (SELECT MAX(id) FROM alert_log) - ? AND id IN "
            f"(SELECT id FROM (SELECT id, ROW_NUMBER() OVER (PARTITION BY {_MODEL} "
            "ORDER BY id DESC) AS newer FROM alert_log) WHERE newer > ?)",
            (self.keep_recent, self.keep_recent),
        )

    def _bound(self, db: sqlite3.Connection, model: str, now: float) -> None:
        query = "SELECT COUNT(*) FROM alert_keys WHERE model = ?"
        (count,) = db.execute(query, (model,)).fetchone()
        excess = count - self.max_keys
        if excess > 0:
            # Keys not firing first, the least recently seen first among each, and this
            # request's own (seen ``now``) only past those: with every other key firing, a new
            # key was the one forgotten, at each of its records, and never fired.
            oldest = (
                "SELECT key, firing FROM alert_keys WHERE model = ? AND seen < ? "
                "ORDER BY firing, seen LIMIT ?"
            )
            firing = 0
            for before in (now, math.inf):  # then a request of more new keys than the bound
                victims = db.execute(oldest, (model, before, excess)).fetchall()
                db.executemany(
                    "DELETE FROM alert_keys WHERE model = ? AND key = ?",
                    [(model, key) for key, _ in victims],
                )
                firing += sum(on for _, on in victims)
                excess -= len(victims)
                if not excess:
                    break
            if firing:
                # Silent, a key churn that fired every new key (10,000 a model) left each
                # forgotten alert firing for good at a webhook and in the log.
                self._firing_forgotten.error(
                    "model %s: %d firing alert key(s) forgotten to keep %d keys, every one "
                    "firing: their resolved alerts are never sent (Alertmanager resolves them "
                    "on its own; a webhook or the log does not); group_by fewer fields, or look "
                    "for what makes so many keys fire",
                    model,
                    firing,
                    self.max_keys,
                    count=firing,
                )


def _prepare(db: sqlite3.Connection, deadline: float) -> None:
    # In a transaction that waits its turn: two workers' first requests may create the tables
    # at once, and SQLite's own wait is short.
    with immediate(db, deadline):
        for statement in filter(str.strip, _SCHEMA.split(";")):
            db.execute(statement)


class _Keys:
    """The states one transaction read, by key, and those it changed; the alerts it ``made``
    (as dicts), for the log."""

    def __init__(
        self,
        db: sqlite3.Connection,
        model: str,
        codec: tuple[Callable[[Any], str], Callable[[str], Any]],
    ) -> None:
        self._db, self._model = db, model
        self._encode, self._decode = codec
        self._read: dict[Key, Any] = {}
        self._new: set[Key] = set()  # keys with no stored state
        self._seen: dict[Key, float] = {}  # keys written as seen at another time than now
        self.made: list[dict[str, Any]] = []

    def get(self, key: Key) -> Any:
        """The key's state (``service.alerts._KeyState``), or None for a key not seen yet."""
        if key in self._read:
            return self._read[key]
        row = self._db.execute(
            "SELECT state FROM alert_keys WHERE model = ? AND key = ?",
            (self._model, _key_text(key)),
        ).fetchone()
        state = None if row is None else self._decode(row[0])
        self._read[key] = state
        if state is None:
            self._new.add(key)
        return state

    def prefetch(self, keys: Iterable[Key]) -> None:
        """Read the states of ``keys`` at once (a query per 500): one query a key cost a
        request of 10,000 hosts 0.7 s."""
        wanted = {_key_text(key): key for key in keys if key not in self._read}
        texts = list(wanted)
        for start in range(0, len(texts), 500):
            part = texts[start : start + 500]
            marks = ",".join("?" * len(part))
            rows = self._db.execute(
                f"SELECT key, state FROM alert_keys WHERE model = ? AND key IN ({marks})",
                (self._model, *part),
            )
            for text, state in rows:
                self._read[wanted.pop(text)] = self._decode(state)
        for key in wanted.values():
            self._read[key] = None
            self._new.add(key)

    def put(self, key: Key, state: Any, *, seen: float | None = None) -> None:
        """Keep ``state`` for ``key``, written as seen now, or at ``seen`` (a silent key
        resolved: not seen by that)."""
        self._read[key] = state
        if seen is not None:
            self._seen[key] = seen

    def silent(self, before: float) -> list[tuple[Key, Any]]:
        """The firing keys last seen before ``before`` (at most 1,000 a call), with their
        states."""
        rows = self._db.execute(
            "SELECT key, state, seen FROM alert_keys "
            "WHERE model = ? AND firing = 1 AND seen < ? ORDER BY seen LIMIT 1000",
            (self._model, before),
        ).fetchall()
        found = []
        for text, stored, seen in rows:
            key = tuple((str(name), str(value)) for name, value in json.loads(text))
            if key in self._read:  # read for this request's own records: seen now
                continue
            state = self._read[key] = self._decode(stored)
            state.seen = seen
            found.append((key, state))
        return found

    @property
    def added(self) -> bool:
        """Whether a key not stored before was written."""
        return any(key in self._new for key in self._read)

    def write(self, now: float) -> None:
        self._db.executemany(
            "INSERT OR REPLACE INTO alert_keys (model, key, state, firing, seen) "
            "VALUES (?, ?, ?, ?, ?)",
            [
                (
                    self._model,
                    _key_text(key),
                    self._encode(state),
                    int(state.firing),
                    self._seen.get(key, now),
                )
                for key, state in self._read.items()
                if state is not None
            ],
        )


def _key_text(key: Key) -> str:
    return json.dumps(key)
