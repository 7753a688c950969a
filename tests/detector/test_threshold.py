"""Calibration: thresholds from a target false-positive rate, p-values and the tail fit."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from detector.errors import ConfigError, DataError
from detector.threshold import Calibrator


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


def test_changing_the_target_needs_no_refit_and_round_trips() -> None:
    rng = np.random.default_rng(4)
    calibrator = Calibrator.fit(rng.normal(size=500), target_fpr=0.05)
    stricter = calibrator.with_target(0.001)
    assert stricter.threshold > calibrator.threshold
    restored = Calibrator.from_dict(stricter.to_dict())
    assert restored.threshold == stricter.threshold
    np.testing.assert_array_equal(restored.reference, stricter.reference)


def test_bad_targets_and_tiny_samples_are_refused() -> None:
    with pytest.raises(ConfigError, match=r"\(0, 0.5\)"):
        Calibrator.fit(np.arange(100.0), target_fpr=0.7)
    with pytest.raises(DataError, match="at least 30"):
        Calibrator.fit(np.arange(10.0), target_fpr=0.01)


def test_tied_scores_do_not_break_the_tail_fit() -> None:
    calibrator = Calibrator.fit(np.r_[np.zeros(900), np.ones(100)], target_fpr=0.001)
    assert np.isfinite(calibrator.threshold)
    assert calibrator.threshold >= 1.0


@pytest.mark.parametrize("shape", [-0.4, -0.1, 0.0, 0.2, 0.5])
def test_closed_form_pareto_tail_matches_scipy(shape: float) -> None:
    from detector.threshold import _pareto_sf

    x = np.linspace(0, 50, 1_000)
    np.testing.assert_allclose(
        _pareto_sf(x, shape, 1.7), stats.genpareto.sf(x, shape, scale=1.7), rtol=1e-9, atol=1e-300
    )
