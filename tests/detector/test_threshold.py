"""Calibration: thresholds from a target false-positive rate, p-values and the tail fit."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from detector.errors import ConfigError, DataError
from detector.scoring.threshold import Calibrator, calibration_warnings


@pytest.mark.parametrize("fpr", [0.1, 0.05, 0.01])
def test_empirical_fpr_on_fresh_normal_scores_is_close_to_target(fpr: float) -> None:
    rng = np.random.default_rng(1)
    calibrator = Calibrator.fit(rng.gamma(2.0, size=5_000), target_fpr=fpr)
    fresh = rng.gamma(2.0, size=200_000)
    observed = float(np.mean(fresh > calibrator.threshold))
    assert observed == pytest.approx(fpr, rel=0.25)


def test_tail_fit_serves_rates_below_what_the_sample_resolves() -> None:
    # 2,000 held-out scores cannot resolve 1e-4 empirically; the Pareto tail must.
    rng = np.random.default_rng(2)
    calibrator = Calibrator.fit(rng.exponential(size=2_000), target_fpr=1e-4)
    true_quantile = stats.expon.isf(1e-4)  # 9.21
    assert calibrator.threshold > calibrator.reference.max()
    assert calibrator.threshold == pytest.approx(true_quantile, rel=0.25)


def test_p_values_are_monotone_and_consistent_with_the_threshold() -> None:
    rng = np.random.default_rng(3)
    calibrator = Calibrator.fit(rng.normal(size=1_000), target_fpr=0.01)
    grid = np.linspace(-5, 10, 2_001)
    p = calibrator.p_values(grid)
    assert np.all(np.diff(p) <= 1e-12)
    assert p.min() >= 0 and p.max() <= 1
    flagged = grid > calibrator.threshold
    assert np.all(p[flagged] <= calibrator.target_fpr + 1e-9)
    assert np.all(p[~flagged] >= calibrator.target_fpr - 1e-3)


@pytest.mark.parametrize("n", [200, 1_000])
@pytest.mark.parametrize("fpr", [0.01, 0.05, 0.1, 0.2])
def test_the_threshold_is_where_the_p_values_cross_the_target_at_any_rate(
    n: int, fpr: float
) -> None:
    # At a target at or above the tail's share (5%), the threshold was the empirical quantile
    # while the p-values past the tail's start were the fitted tail's, below it: a helper's
    # 5% model left 31 rows with p-values of 4.7-4.9% unflagged.
    rng = np.random.default_rng(n)
    calibrator = Calibrator.fit(rng.normal(size=n), target_fpr=fpr)
    grid = np.linspace(-4, 8, 4_001)
    p = calibrator.p_values(grid)
    flagged = grid > calibrator.threshold
    assert np.all(p[flagged] <= fpr + 1e-9)
    assert np.all(p[~flagged] >= fpr - 1e-12)


def test_a_bundle_of_the_earlier_empirical_threshold_still_loads() -> None:
    calibrator = Calibrator.fit(np.random.default_rng(6).normal(size=1_000), target_fpr=0.2)
    state = calibrator.to_dict()
    n = len(calibrator.reference)
    state["threshold"] = float(calibrator.reference[n - int(0.2 * (n + 1) - 1) - 1])
    assert Calibrator.from_dict(state).threshold == calibrator.threshold
    state["threshold"] += 1.0  # neither: edited
    with pytest.raises(ValueError, match="is not the threshold its target and tail give"):
        Calibrator.from_dict(state)


def test_tied_scores_get_p_values_near_their_share_not_zero() -> None:
    # A table of a few categories scores in steps: excesses of 0 at the tail's start fitted a
    # scale of 1.8e-30, and a score held by 6% of the calibration rows got a p-value of 1e-58
    # (a helper's 4 fair yes/no columns: 6.5% of new rows flagged at 1%, all "critical").
    levels = [4.05, 4.07, 4.12, 4.16, 4.24, 4.32, 4.33, 4.34, 4.39, 4.41, 4.43, 4.54, 4.57]
    counts = [7, 7, 6, 8, 7, 5, 4, 7, 6, 3, 4, 9, 2]
    scores = np.repeat([*levels, 4.586, 4.673], [*counts, 10, 5])
    calibrator = Calibrator.fit(scores, target_fpr=0.01)
    share = np.array([(1 + (scores >= s).sum()) / (len(scores) + 1) for s in scores])
    p = calibrator.p_values(scores)
    assert np.all(p >= share / 3), (p / share).min()
    assert calibrator.threshold > scores.max()  # 1%: beyond every one of the 90 seen
    top = Calibrator.fit(np.r_[np.zeros(60), np.ones(40)], target_fpr=0.01)  # the top tied
    assert top.p_values(np.array([1.0]))[0] == pytest.approx(41 / 101)
    assert 0 < top.p_values(np.array([1.5]))[0] < 1 / 101


@pytest.mark.parametrize("draw", ["normal", "exponential"])
def test_a_score_alone_gets_the_p_value_it_gets_in_a_batch(draw: str) -> None:
    """One record (an HTTP request) took a plain-float path whose math.pow differs from
    numpy's in the last bit for ~5% of values: the same record, alone or in a file, had two
    p-values. Bit for bit now, in the tail and in the body."""
    rng = np.random.default_rng(5)
    calibrator = Calibrator.fit(getattr(rng, draw)(size=2_000), target_fpr=0.01)
    scores = np.linspace(calibrator.tail_start - 1, calibrator.tail_start + 20, 3_001)
    together = calibrator.p_values(scores)
    alone = np.array([calibrator.p_values(scores[i : i + 1])[0] for i in range(len(scores))])
    assert (scores > calibrator.tail_start).sum() > 2_000
    np.testing.assert_array_equal(alone, together)


def test_changing_the_target_needs_no_refit_and_round_trips() -> None:
    rng = np.random.default_rng(4)
    calibrator = Calibrator.fit(rng.normal(size=500), target_fpr=0.05)
    stricter = calibrator.with_target(0.001)
    assert stricter.threshold > calibrator.threshold
    restored = Calibrator.from_dict(stricter.to_dict())
    assert restored.threshold == stricter.threshold
    np.testing.assert_array_equal(restored.reference, stricter.reference)


def test_bad_targets_and_tiny_samples_are_refused() -> None:
    with pytest.raises(ConfigError, match=r"\[1e-06, 0.5\)"):
        Calibrator.fit(np.arange(100.0), target_fpr=0.7)
    with pytest.raises(DataError, match="at least 30"):
        Calibrator.fit(np.arange(10.0), target_fpr=0.01)


def test_tied_scores_do_not_break_the_tail_fit() -> None:
    calibrator = Calibrator.fit(np.r_[np.zeros(900), np.ones(100)], target_fpr=0.001)
    assert np.isfinite(calibrator.threshold)
    assert calibrator.threshold >= 1.0


@pytest.mark.parametrize("shape", [-0.4, -0.1, 0.0, 0.2, 0.5])
def test_closed_form_pareto_tail_matches_scipy(shape: float) -> None:
    from detector.scoring.threshold import _pareto_sf

    x = np.linspace(0, 50, 1_000)
    np.testing.assert_allclose(
        _pareto_sf(x, shape, 1.7), stats.genpareto.sf(x, shape, scale=1.7), rtol=1e-9, atol=1e-300
    )


def test_too_few_calibration_rows_for_the_target_warn_and_name_the_fix() -> None:
    (warning,) = calibration_warnings(30, 0.01)
    for needle in ("30 calibration rows", "1.00%", "expect 0.3 false alarms", "fitted"):
        assert needle in warning
    # The fix: ten expected false alarms, from more rows or a higher target.
    assert "1,000 calibration rows or more" in warning
    assert "raise the target to 33.33% or more" in warning
    # Past the rows training keeps, asking for more rows would not help.
    (capped,) = calibration_warnings(20_000, 1e-4, max_calibration_rows=20_000)
    assert "0.010%" in capped and "more rows cannot help" in capped
    assert "calibration rows or more" not in capped


def test_a_heldout_fpr_far_above_the_target_warns() -> None:
    (warning,) = calibration_warnings(1_152, 0.01, 114 / 1_152, 1_152)
    for needle in (
        "9.90%",
        "target of 1.00%",
        "114 of 1,152",
        "detector.set_target_fpr(path, fpr)",
    ):
        assert needle in warning


@pytest.mark.parametrize(
    ("n_calibration", "target_fpr", "heldout_fpr", "n_heldout"),
    [
        (1_152, 0.01, 0.01, 10_000),  # exactly on target
        (1_152, 0.01, 12 / 1_152, 1_152),  # one alarm over the expected 11.5
        (1_152, 0.01, 23 / 1_152, 1_152),  # just under 2x, p = 0.002
        (2_000, 0.01, 2 / 50, 50),  # 4x the target, but 2 alarms of 50 is noise (p = 0.09)
        (2_000, 0.01, 0.015, 10_000),  # significant (p < 1e-6) but only 1.5x
        (1_000, 0.01, 0.0, 1_000),  # below the target is not this rule's business
        (1_000, 0.01, None, 0),  # no held-out rows to measure on
    ],
)
def test_sound_calibrations_do_not_warn(
    n_calibration: int, target_fpr: float, heldout_fpr: float | None, n_heldout: int
) -> None:
    assert calibration_warnings(n_calibration, target_fpr, heldout_fpr, n_heldout) == ()


@pytest.mark.parametrize(("n", "fpr"), [(1_000, 0.01), (1_152, 0.05), (20_000, 0.001)])
def test_sampling_noise_never_warns(n: int, fpr: float) -> None:
    # Held-out false alarms of a threshold whose true FPR is the target: binomial counts.
    alarms = np.random.default_rng(5).binomial(n, fpr, size=500)
    assert all(calibration_warnings(n, fpr, k / n, n) == () for k in alarms)
