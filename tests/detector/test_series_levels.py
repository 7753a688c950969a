"""Each series' score judged against its recent level (``detector.series.levels``): only the
clock hours before a record's own count, so scoring a series at once, in chunks or a record at
a time gives the same scores; a series that scores as in training keeps its scores."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from detector.series.levels import Level, ScoreLevels, judged


def hosts(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Two hosts' scores, a record each 10 minutes for ``n`` steps; web-02 runs high for a
    day in the middle, as a drifted or busy host does."""
    rng = np.random.default_rng(seed)
    steps = np.arange(n)
    keys = np.array(["web-01", "web-02"] * n, dtype=object)
    seconds = np.repeat(1.7e9 + 600.0 * steps, 2)
    scores = rng.gamma(2.0, size=2 * n)
    busy = (
        (keys == "web-02")
        & (seconds >= 1.7e9 + 600.0 * n / 3)
        & (seconds < 1.7e9 + 86400 + 600.0 * n / 3)
    )
    scores[busy] *= 4.0
    return keys, seconds, scores


def test_a_series_scored_at_once_in_chunks_or_a_record_at_a_time_gets_the_same_scores() -> None:
    keys, seconds, scores = hosts(600)
    whole = ScoreLevels(24).judge(keys, seconds, scores, normal=1.0)
    one = ScoreLevels(24)
    singly = np.concatenate(
        [
            one.judge(keys[i : i + 1], seconds[i : i + 1], scores[i : i + 1], normal=1.0)
            for i in range(len(keys))
        ]
    )
    chunked = ScoreLevels(24)
    cuts = [0, 7, 250, 251, 900, len(keys)]
    pieces = [
        chunked.judge(keys[a:b], seconds[a:b], scores[a:b], normal=1.0)
        for a, b in itertools.pairwise(cuts)
    ]
    np.testing.assert_allclose(singly, whole, rtol=1e-12)
    np.testing.assert_allclose(np.concatenate(pieces), whole, rtol=1e-12)
    # Within a call the rows may come in any order.
    order = np.random.default_rng(1).permutation(len(keys))
    shuffled = ScoreLevels(24).judge(keys[order], seconds[order], scores[order], normal=1.0)
    np.testing.assert_allclose(shuffled, whole[order], rtol=1e-12)


def test_hours_a_series_runs_high_count_less_and_a_training_like_one_keeps_its_scores() -> None:
    keys, seconds, scores = hosts(600)
    out = ScoreLevels(24).judge(keys, seconds, scores, normal=2.0)
    first_hour = seconds // 3600 == seconds[0] // 3600
    np.testing.assert_allclose(out[first_hour], scores[first_hour], rtol=1e-12)  # no level yet
    # web-01 runs as in training (gamma(2) has median about 1.7): its scores barely move.
    calm = (keys == "web-01") & ~first_hour
    assert np.median(np.abs(out[calm] - scores[calm])) < 0.3
    # web-02's busy day: once most of the 24 hours before ran high, its scores are shrunk.
    busy = (
        (keys == "web-02")
        & (seconds >= 1.7e9 + 600.0 * 200 + 13 * 3600)
        & (seconds < 1.7e9 + 86400 + 600.0 * 200)
    )
    assert np.median(out[busy]) < 0.5 * np.median(scores[busy])


def test_only_the_hours_before_a_records_own_count() -> None:
    # Hour 0: scores 1 and 3 (mean 2); hour 1: 10 and 10 (mean 10); hour 2: the record judged.
    seconds = np.array([0.0, 1800.0, 3600.0, 5400.0, 7200.0])
    keys = np.array(["a"] * 5, dtype=object)
    scores = np.array([1.0, 3.0, 10.0, 10.0, 4.0])
    out, levels = judged({}, keys, seconds, scores, hours=24, normal=1.0)
    # At hour 1 the level is 2: (s - 1) / (2 - 1 + 1); at hour 2 the median of 2 and 10 is 6.
    np.testing.assert_allclose(out, [1.0, 3.0, 1 + 9 / 2, 1 + 9 / 2, 1 + 3 / 6])
    assert levels["a"] == Level((0, 1, 2), (4.0, 20.0, 4.0), (2, 2, 1))
    # A level reaches back ``hours`` hours only; the state keeps hours + 1 of them.
    _, later = judged(
        levels,
        np.array(["a"], dtype=object),
        np.array([3600.0 * 30]),
        np.array([1.0]),
        hours=24,
        normal=1.0,
    )
    assert later["a"].hours == (30,)
    assert Level.from_json(levels["a"].to_json()) == levels["a"]


@pytest.mark.parametrize("hours", [0, 24])
def test_no_scores_no_state(hours: int) -> None:
    levels = ScoreLevels(hours)
    empty = np.array([], dtype=object)
    assert levels.judge(empty, np.array([]), np.array([]), normal=1.0).shape == (0,)
    assert len(levels) == 0


def test_a_files_levels_and_the_services_follow_one_rule() -> None:
    # ScoreLevels (files, chunk by chunk) keeps arrays; judged (the service) keeps Level
    # records: hosts with gaps of hours and days, cut into chunks anywhere, agree.
    rng = np.random.default_rng(2)
    keys = rng.choice(np.array(["a", "b", "c"], dtype=object), 3000)
    seconds = np.cumsum(rng.choice([60.0, 600.0, 7200.0, 90000.0], 3000, p=[0.6, 0.3, 0.08, 0.02]))
    scores = rng.gamma(2.0, size=3000)
    levels = ScoreLevels(24)
    stored: dict[str, Level] = {}
    for a, b in itertools.pairwise([0, 1, 2, 500, 1700, 1701, 3000]):
        mine = levels.judge(keys[a:b], seconds[a:b], scores[a:b], normal=1.5)
        theirs, new = judged(stored, keys[a:b], seconds[a:b], scores[a:b], hours=24, normal=1.5)
        stored |= new
        np.testing.assert_allclose(mine, theirs, rtol=1e-12)
    assert len(levels) == 3


def test_a_forgotten_series_starts_again_and_its_place_is_used_again() -> None:
    keys, seconds, scores = hosts(600)
    web01 = keys == "web-01"
    fresh = ScoreLevels(24).judge(keys[web01], seconds[web01], scores[web01], normal=1.0)
    levels = ScoreLevels(24, max_keys=1)
    levels.judge(keys[~web01], seconds[~web01], scores[~web01], normal=1.0)
    # web-02 is forgotten when web-01 comes: web-01 is judged as if alone.
    again = levels.judge(keys[web01], seconds[web01], scores[web01], normal=1.0)
    np.testing.assert_allclose(again, fresh, rtol=1e-12)
    assert len(levels) == 1 and len(levels._hour) == 16  # one place, used again
    levels.forget("web-01")
    assert len(levels) == 0
