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

import json
import math
import statistics
from collections.abc import Mapping
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
        return json.dumps([self.hours, self.sums, self.counts], separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> Level:
        hours, sums, counts = json.loads(text)
        return cls(tuple(map(int, hours)), tuple(map(float, sums)), tuple(map(int, counts)))


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
    scores = np.asarray(scores, dtype=np.float64)
    if not len(scores):
        return scores.copy(), {}
    hour = np.floor(np.asarray(seconds, dtype=np.float64) / _HOUR).astype(np.int64)
    codes, names = pd.factorize(np.asarray(keys, dtype=object), sort=False)
    first = int(hour.min())
    span = int(hour.max()) - first + 1
    # One group per (series, hour), ordered by series then hour.
    groups, group_of = np.unique(
        codes.astype(np.int64) * span + (hour - first), return_inverse=True
    )
    sums = np.bincount(group_of, weights=scores)
    counts = np.bincount(group_of)
    bounds = np.searchsorted(groups // span, np.arange(len(names) + 1))
    at = np.empty(len(groups))
    new: dict[str, Level] = {}
    for code, key in enumerate(map(str, names)):
        known = levels.get(key, Level())
        buckets = dict(zip(known.hours, zip(known.sums, known.counts, strict=True), strict=True))
        for g in range(bounds[code], bounds[code + 1]):
            h = int(groups[g] % span) + first
            for old in [k for k in buckets if k < h - hours]:  # out of reach from here on
                del buckets[old]
            means = [s / c for k, (s, c) in buckets.items() if k < h and c]
            at[g] = statistics.median(means) if means else math.nan
            s, c = buckets.get(h, (0.0, 0))
            buckets[h] = (s + float(sums[g]), c + int(counts[g]))
        newest = max(buckets)
        kept = sorted(k for k in buckets if k >= newest - hours)
        new[key] = Level(
            tuple(kept), tuple(buckets[k][0] for k in kept), tuple(buckets[k][1] for k in kept)
        )
    return relative(scores, at[group_of], normal), new


def relative(scores: np.ndarray, level: np.ndarray, normal: float) -> np.ndarray:
    """``scores`` against their series' ``level`` (NaN: none yet, the score as it is)."""
    divisor = np.where(np.isnan(level), 1.0, np.maximum(level - normal + 1.0, FLOOR))
    return normal + (scores - normal) / divisor  # type: ignore[no-any-return]


class ScoreLevels:
    """The levels of the series one scorer has seen (a file, across its chunks), kept between
    calls; ``hours`` 0 judges every score as it is."""

    def __init__(self, hours: int) -> None:
        self.hours = hours
        self._levels: dict[str, Level] = {}

    def __len__(self) -> int:
        return len(self._levels)

    def judge(
        self, keys: np.ndarray, seconds: np.ndarray, scores: np.ndarray, *, normal: float
    ) -> np.ndarray:
        """``judged``, keeping the new levels for the next call."""
        out, new = judged(self._levels, keys, seconds, scores, hours=self.hours, normal=normal)
        self._levels.update(new)
        return out
