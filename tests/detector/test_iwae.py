"""The importance-weighted autoencoder (``--model iwae``): its training bound in closed form,
and the model through the same training, bundle, LiteRT scorer and scores as every model."""

from __future__ import annotations

import math

import numpy as np
import pytest

from detector.errors import ConfigError
from detector.estimator import VAEDetector
from detector.nn.models.iwae import IWAE
from tests.conftest import TINY
from tests.detector.engines import assert_trains_saves_and_scores
from tests.detector.engines import encoded_records as records


@pytest.fixture(scope="module")
def network() -> IWAE:
    model = IWAE(n_numeric=3, group_sizes=(3,), latent_dim=2, hidden_units=(8,), iwae_samples=4)
    model.build((None, 6))
    return model


def log_normal(x: np.ndarray, mean: np.ndarray, log_var: np.ndarray) -> np.ndarray:
    return -0.5 * (math.log(2 * math.pi) + log_var + (x - mean) ** 2 / np.exp(log_var))


def test_the_bound_is_log_mean_exp_of_the_importance_weights(network: IWAE) -> None:
    """L_k = log (1/k) sum_i p(x|z_i) p(z_i) / q(z_i|x), with p(z) and q(z|x) written out here
    in numpy: the prior and posterior densities are the new terms of the loss."""
    x = records(5)
    eps = np.random.default_rng(1).normal(size=(5, 7, 2)).astype(np.float32)
    bound, nll, kl = (np.asarray(t) for t in network.importance_bound(x, eps))
    mean, log_var = (np.asarray(t) for t in network.encode(x))
    z = mean[:, None, :] + np.exp(0.5 * log_var)[:, None, :] * eps
    log_lik = np.asarray(network.feature_log_likelihood(x[:, None, :], z)).sum(axis=-1)
    log_prior = log_normal(z, 0.0, np.zeros_like(z)).sum(axis=-1)
    log_q = log_normal(z, mean[:, None, :], log_var[:, None, :]).sum(axis=-1)
    log_w = log_lik + log_prior - log_q
    top = log_w.max(axis=1, keepdims=True)
    expected = (top + np.log(np.exp(log_w - top).mean(axis=1, keepdims=True)))[:, 0]
    np.testing.assert_allclose(bound, expected, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(nll, -log_lik.mean(axis=1), rtol=1e-5, atol=1e-4)
    analytic_kl = 0.5 * (np.exp(log_var) + mean**2 - 1 - log_var).sum(axis=-1)
    np.testing.assert_allclose(kl, analytic_kl, rtol=1e-5, atol=1e-5)
    # Jensen: the bound is at least the mean of the log-weights it averages (the ELBO's
    # estimate from the same samples), and equals it for one sample.
    assert (bound >= log_w.mean(axis=1) - 1e-4).all()
    one, _, _ = network.importance_bound(x, eps[:, :1])
    np.testing.assert_allclose(np.asarray(one), log_w[:, 0], rtol=1e-5, atol=1e-4)


def test_more_samples_give_a_tighter_bound_on_average(network: IWAE) -> None:
    x = records(200, seed=2)
    rng = np.random.default_rng(3)
    means = {}
    for k in (1, 5, 50):
        eps = rng.normal(size=(200, k, 2)).astype(np.float32)
        means[k] = float(np.mean(network.importance_bound(x, eps)[0]))
    assert means[1] < means[5] < means[50]


def test_warm_up_scales_only_the_prior_ratio(network: IWAE) -> None:
    x = records(4, seed=4)
    eps = np.random.default_rng(5).normal(size=(4, 1, 2)).astype(np.float32)
    _, nll, _ = network.importance_bound(x, eps)
    # One sample and no prior term: the bound is the sampled log-likelihood alone.
    bound, _, _ = network.importance_bound(x, eps, 0.0)
    np.testing.assert_allclose(np.asarray(bound), -np.asarray(nll), rtol=1e-5, atol=1e-4)


def test_an_iwae_trains_saves_and_scores_like_every_model(train_frame, tmp_path) -> None:
    loaded = assert_trains_saves_and_scores("iwae", train_frame, tmp_path / "iwae", iwae_samples=3)
    assert loaded.score_kind == "iwae" and loaded.neighbours is None  # its own bound scores it
    assert isinstance(loaded.model, IWAE) and loaded.model.iwae_samples == 3


def test_the_sample_count_is_refused_for_other_models(train_frame) -> None:
    with pytest.raises(ConfigError, match=r"iwae_samples.*for model 'iwae'"):
        VAEDetector(model="vae", iwae_samples=3, **TINY).fit(train_frame)
    with pytest.raises(ConfigError, match=r"iwae_samples 0 must be in \[1, 1000\]"):
        VAEDetector(model="iwae", iwae_samples=0, **TINY).fit(train_frame)
