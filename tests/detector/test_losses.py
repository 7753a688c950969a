"""Closed-form checks of the likelihood math."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from detector.nn import losses


def test_gaussian_log_density_matches_scipy() -> None:
    rng = np.random.default_rng(0)
    x, mean = rng.normal(size=(2, 50))
    log_var = rng.uniform(-4, 3, size=50)
    ours = np.asarray(losses.gaussian_log_density(x, mean, log_var))
    expected = stats.norm.logpdf(x, loc=mean, scale=np.exp(0.5 * log_var))
    np.testing.assert_allclose(ours, expected, rtol=1e-10, atol=1e-10)


def test_standard_normal_log_density_matches_scipy() -> None:
    z = np.linspace(-6, 6, 25)
    np.testing.assert_allclose(
        np.asarray(losses.standard_normal_log_density(z)), stats.norm.logpdf(z), rtol=1e-12
    )


def test_kl_of_standard_normal_to_itself_is_zero() -> None:
    kl = np.asarray(losses.kl_to_standard_normal(np.zeros(4), np.zeros(4)))
    np.testing.assert_allclose(kl, 0.0, atol=1e-12)


@pytest.mark.parametrize(("mean", "var"), [(1.5, 1.0), (0.0, 0.25), (-2.0, 3.0)])
def test_kl_matches_numeric_integration(mean: float, var: float) -> None:
    z = np.linspace(-20, 20, 200_001)
    q = stats.norm.pdf(z, mean, np.sqrt(var))
    integrand = q * (stats.norm.logpdf(z, mean, np.sqrt(var)) - stats.norm.logpdf(z))
    numeric = np.trapezoid(integrand, z)
    ours = float(np.asarray(losses.kl_to_standard_normal(np.float64(mean), np.log(var))))
    assert ours == pytest.approx(numeric, rel=1e-6)
    assert ours >= 0


def test_log_mean_exp_is_stable_for_extreme_values() -> None:
    values = np.array([[-1000.0, -1000.0], [1000.0, 1000.0], [-1e4, 0.0]])
    out = np.asarray(losses.log_mean_exp(values, axis=1))
    np.testing.assert_allclose(out, [-1000.0, 1000.0, np.log(0.5)], rtol=1e-12)
    assert np.isfinite(out).all()


def test_categorical_log_prob_per_group() -> None:
    logits = np.array([[1.0, 2.0, 0.5, 3.0, -1.0]])
    one_hot = np.array([[0.0, 1.0, 0.0, 0.0, 1.0]])  # group sizes 3 and 2
    out = np.asarray(losses.categorical_log_prob(one_hot, logits, (3, 2)))
    first = 2.0 - np.log(np.exp([1.0, 2.0, 0.5]).sum())
    second = -1.0 - np.log(np.exp([3.0, -1.0]).sum())
    np.testing.assert_allclose(out, [[first, second]], rtol=1e-12)
