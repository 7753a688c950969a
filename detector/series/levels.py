"""Each series' recent level of scores: a record judged against what its series scored lately.

A series' normal rows do not always score as the training rows did: for hours a host runs
busier, noisier or drifted, and every one of its records then scores high (SMD's and the Donut
KPIs' test halves do, ``tests/benchmarks/README.md``, "The score against its series' recent
level"). As NAB's anomaly likelihood does with a window of recent scores, the default series
model judges each record's distance ``s`` against its series' *level*, the median of the mean
scores of the clock hours (UTC) in the ``hours`` before the record's own hour:

    relative = n + (s - n) / max(level - n + 1, 0.5)

where ``n`` is the validation rows' median distance (the bank's). A series that scores as the
training rows did (level near ``n``) keeps its score, so the threshold and p-values calibrated
on training rows still hold; one whose scores run high for hours has them shrunk by how far
above normal they run (the 1 is about one part's interquartile range, the distance's unit); a
series with no score yet in the hours before (a new one, or back after a day away) keeps its
score as it is. Only scores before the record's own hour count, so a series' records scored
one at a time or all at once, in batches cut anywhere, get the same levels.

A series' state is a few numbers an hour (the sum and count of its scores in each of the last
``hours + 1`` clock hours): ``Level``, kept by ``ScoreLevels`` for a batch and by
``service.series_store`` for the service.
"""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

#: Hours of a series' scores a record is judged against: of 6, 12, 24 and 48, the best mean
#: rank over SMD, ASD and the Donut KPIs at once (``bench_series.py --study baselines``).
DEFAULT_LEVEL_HOURS = 24
#: A level reaches back at most a week: the state is a few numbers for each hour of it.
MAX_LEVEL_HOURS = 168
#: The divisor's floor: a series scoring below normal lifts its scores at most twofold.
FLOOR = 0.5
_HOUR = 3600.0


@dataclass(frozen=True)
class Level:
    """A series' scores by clock hour: ``hours`` (hours since 1970, ascending), and the
    ``sums`` and ``counts`` of its scores in each."""

    hours: tuple[int, ...] = ()
    sums: tuple[float, ...] = ()
    counts: tuple[int, ...] = ()

    def to_json(self) -> str:
        """Compact: the first hour, then each hour's count and sum from it on (an hour with
        no score: 0 and 0.0), the sums as base64 float64, so a stored level reads back exact
        in about 400 bytes for 25 hours."""
        if not self.hours:
            return "[]"
        first = self.hours[0]
        counts = [0] * (self.hours[-1] - first + 1)
        sums = np.zeros(len(counts))
        for hour, total, count in zip(self.hours, self.sums, self.counts, strict=True):
            counts[hour - first], sums[hour - first] = count, total
        packed = base64.b64encode(sums.astype("<f8").tobytes()).decode()
        return json.dumps([first, counts, packed], separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> Level:
        """A level ``to_json`` wrote, or the form before it (lists of the hours, sums and
        counts, in state files of 2026-11: read, and stored compactly when next written)."""
        stored = json.loads(text)
        if not stored:
            return cls()
        if isinstance(stored[0], list):
            hours, totals, numbers = stored
            level = cls(tuple(map(int, hours)), tuple(map(float, totals)), tuple(map(int, numbers)))
        else:
            first, counts, packed = stored
            sums = np.frombuffer(base64.b64decode(packed), dtype="<f8")
            if type(first) is not int or len(sums) != len(counts):
                raise ValueError("not a level")
            kept = [i for i, count in enumerate(counts) if count]
            level = cls(
                tuple(first + i for i in kept),
                tuple(float(sums[i]) for i in kept),
                tuple(int(counts[i]) for i in kept),
            )
        level.check()
        return level

    def check(self) -> None:
        """``ValueError`` unless this is a level ``judged`` can read: as many sums and counts
        as hours, the hours rising, the sums finite and the counts positive (a stored one
        that is not failed every request of its series)."""
        hours = np.asarray(self.hours, dtype=np.int64)
        if (
            not len(self.sums) == len(self.counts) == len(hours)
            or (np.diff(hours) <= 0).any()
            or not np.isfinite(np.asarray(self.sums, dtype=np.float64)).all()
            or any(count < 1 for count in self.counts)
        ):
            raise ValueError("not a level of rising hours, finite sums and positive counts")


def judged(
    levels: Mapping[str, Level],
    keys: np.ndarray,
    seconds: np.ndarray,
    scores: np.ndarray,
    *,
    hours: int,
    normal: float,
) -> tuple[np.ndarray, dict[str, Level]]:
    """Each score ``(n,)`` of series ``keys`` at epoch ``seconds`` relative to its series'
    level (see the module), from ``levels`` (what earlier scores left), and the new level of
    every series the scores belong to. The rows may come in any order."""
    running: dict[str, _Running] = {}
    out = _judge(
        running, lambda key: _Running(levels.get(key)), keys, seconds, scores, hours, normal
    )
    return out, {key: series.frozen(hours) for key, series in running.items()}


class _Running:
    """One series' level as it is being judged: its buckets ``{hour: [sum, count]}`` and the
    level at ``hour`` (only hours before it count, so more scores in that hour change nothing
    and a series' many rows of one hour cost one median)."""

    __slots__ = ("buckets", "hour", "level")

    def __init__(self, level: Level | None) -> None:
        self.buckets: dict[int, list[float]] = {}
        if level is not None:
            for hour, total, count in zip(level.hours, level.sums, level.counts, strict=True):
                self.buckets[hour] = [total, count]
        self.hour: int | None = None
        self.level = math.nan

    def level_at(self, hour: int, hours: int) -> float:
        if hour != self.hour:
            for old in [k for k in self.buckets if k < hour - hours]:  # out of reach from here on
                del self.buckets[old]
            self.level = _median([t / c for k, (t, c) in self.buckets.items() if k < hour and c])
            self.hour = hour
        return self.level

    def add(self, hour: int, total: float, count: int) -> None:
        bucket = self.buckets.setdefault(hour, [0.0, 0])
        bucket[0] += total
        bucket[1] += count

    def frozen(self, hours: int) -> Level:
        newest = max(self.buckets)
        kept = sorted(k for k in self.buckets if k >= newest - hours)
        return Level(
            tuple(kept),
            tuple(float(self.buckets[k][0]) for k in kept),
            tuple(int(self.buckets[k][1]) for k in kept),
        )


def _judge(
    running: dict[str, _Running],
    start: Callable[[str], _Running],
    keys: np.ndarray,
    seconds: np.ndarray,
    scores: np.ndarray,
    hours: int,
    normal: float,
) -> np.ndarray:
    """``judged``'s work on the series in ``running`` (a series not in it yet: ``start``)."""
    scores = _checked(keys, seconds, scores)
    if not len(scores):
        return scores.copy()
    codes, names = pd.factorize(np.asarray(keys, dtype=object), sort=False)
    groups = _Groups.of(codes, seconds, scores)
    at = np.empty(len(groups.owner))
    names = [str(n) for n in names]
    for g, (code, h) in enumerate(zip(groups.owner.tolist(), groups.hour.tolist(), strict=True)):
        key = names[code]
        series = running.get(key)
        if series is None:
            series = running[key] = start(key)
        at[g] = series.level_at(h, hours)
        series.add(h, float(groups.sums[g]), int(groups.counts[g]))
    return relative(scores, at[groups.of_row], normal)


def _checked(keys: np.ndarray, seconds: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """``scores`` as floats, once ``keys``, ``seconds`` and ``scores`` are known to line up."""
    if not len(keys) == len(seconds) == len(scores):
        raise ValueError(f"{len(keys)} keys, {len(seconds)} times and {len(scores)} scores")
    return np.asarray(scores, dtype=np.float64)


@dataclass(frozen=True)
class _Groups:
    """Scores grouped by series and clock hour, ordered by series then hour: each group's
    ``owner`` (series code) and ``hour``, its scores' ``sums`` and ``counts``, and each row's
    group (``of_row``)."""

    owner: np.ndarray
    hour: np.ndarray
    sums: np.ndarray
    counts: np.ndarray
    of_row: np.ndarray

    @classmethod
    def of(cls, codes: np.ndarray, seconds: np.ndarray, scores: np.ndarray) -> _Groups:
        hour = np.floor(np.asarray(seconds, dtype=np.float64) / _HOUR).astype(np.int64)
        first = int(hour.min())
        span = int(hour.max()) - first + 1
        groups, of_row = np.unique(
            np.asarray(codes, dtype=np.int64) * span + (hour - first), return_inverse=True
        )
        return cls(
            groups // span,
            groups % span + first,
            np.bincount(of_row, weights=scores),
            np.bincount(of_row),
            of_row,
        )


def relative(scores: np.ndarray, level: np.ndarray, normal: float) -> np.ndarray:
    """``scores`` against their series' ``level`` (NaN: none yet, the score as it is)."""
    divisor = np.where(np.isnan(level), 1.0, np.maximum(level - normal + 1.0, FLOOR))
    return normal + (scores - normal) / divisor  # type: ignore[no-any-return]


class ScoreLevels:
    """The levels of the series one scorer has seen (a file, across its chunks), kept between
    calls; ``hours`` 0 judges every score as it is. ``judged``'s rule, kept in arrays: a file
    chunk holds a few rows of each of many series, mostly in the hour each series is in
    already, whose level is known; only a series' new hour takes a median (in Python)."""

    def __init__(self, hours: int, max_keys: int | None = None) -> None:
        self.hours = hours
        #: At most this many series (``None``: no limit); past it, the least recently seen is
        #: forgotten. Their windows' owner (``SeriesState``) forgets each series it evicts, so
        #: this bound acts only where one call brings more series than it.
        self.max_keys = max_keys
        self._index: dict[str, int] = {}  # least recently seen first
        self._hour = np.zeros(0, dtype=np.int64)  # each series' current hour (_NO_HOUR: none)
        self._level = np.zeros(0)  # its level there
        self._sum = np.zeros(0)  # and its scores' sum and count there so far
        self._count = np.zeros(0, dtype=np.int64)
        self._past: list[list[tuple[int, float]]] = []  # (hour, mean) of its hours before
        self._free: list[int] = []  # the places of series forgotten, to be used again

    def __len__(self) -> int:
        return len(self._index)

    def forget(self, key: str) -> None:
        """Drop ``key``'s level (its windows were evicted): it starts again, as a new series
        does, if it comes back; its place is used by the next new series."""
        i = self._index.pop(key, None)
        if i is None:
            return
        self._hour[i], self._level[i], self._sum[i], self._count[i] = _NO_HOUR, math.nan, 0.0, 0
        self._past[i] = []
        self._free.append(i)

    def judge(
        self, keys: np.ndarray, seconds: np.ndarray, scores: np.ndarray, *, normal: float
    ) -> np.ndarray:
        """``judged``, keeping each series' level for the next call."""
        scores = _checked(keys, seconds, scores)
        if not len(scores):
            return scores.copy()
        codes, names = pd.factorize(np.asarray(keys, dtype=object), sort=False)
        series = np.array([self._series(str(n)) for n in names], dtype=np.int64)[codes]
        groups = _Groups.of(series, seconds, scores)
        owner, at_hour, sums, counts = groups.owner, groups.hour, groups.sums, groups.counts
        level = np.empty(len(owner))
        # A series' rows in the hour it is in: its level is known, its sums grow.
        known = at_hour == self._hour[owner]
        level[known] = self._level[owner[known]]
        np.add.at(self._sum, owner[known], sums[known])
        np.add.at(self._count, owner[known], counts[known])
        # A new hour (after the known one of its series, in order): one median each.
        for g in np.flatnonzero(~known).tolist():
            level[g] = self._new_hour(int(owner[g]), int(at_hour[g]), sums[g], counts[g])
        while self.max_keys is not None and len(self._index) > self.max_keys:
            self.forget(next(iter(self._index)))
        return relative(scores, level[groups.of_row], normal)

    def _series(self, key: str) -> int:
        i = self._index.pop(key, None)  # put back last: the most recently seen
        if i is not None:
            self._index[key] = i
        elif self._free:
            i = self._index[key] = self._free.pop()
        else:
            i = self._index[key] = len(self._index)
            if i == len(self._hour):  # grow by half, as a list does
                more = max(16, i // 2)
                self._hour = np.concatenate([self._hour, np.full(more, _NO_HOUR)])
                self._level = np.concatenate([self._level, np.full(more, math.nan)])
                self._sum = np.concatenate([self._sum, np.zeros(more)])
                self._count = np.concatenate([self._count, np.zeros(more, dtype=np.int64)])
            self._past.append([])
        return i

    def _new_hour(self, i: int, hour: int, total: float, count: int) -> float:
        past = self._past[i]
        current = int(self._hour[i])
        if hour < current:  # not from a file (its windows reject late rows); kept, not lost
            level = _median([m for k, m in past if hour - self.hours <= k < hour])
            past.append((hour, total / count))
            return level
        if current != _NO_HOUR and self._count[i]:
            past.append((current, float(self._sum[i] / self._count[i])))
        past[:] = [(k, m) for k, m in past if k >= hour - self.hours]
        level = _median([m for _, m in past])
        self._hour[i], self._level[i] = hour, level
        self._sum[i], self._count[i] = total, count
        return level


#: A series with no hour yet.
_NO_HOUR = np.iinfo(np.int64).min


def _median(values: list[float]) -> float:
    """The median of a few values (NaN for none), without ``statistics``' overhead."""
    if not values:
        return math.nan
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2
