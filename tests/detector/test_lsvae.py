"""The least-squares VAE (``--model lsvae``): its loss in closed form, a decoder variance that
stays at 1, and the model through the same training, bundle and scorer as every model."""

from __future__ import annotations

import math

import numpy as np
import pytest

from detector.errors import ConfigError
from detector.estimator import VAEDetector
from detector.nn.models.lsvae import LSVAE
from tests.conftest import TINY
from tests.detector.engines import assert_trains_saves_and_scores
from tests.detector.engines import encoded_records as records


@pytest.fixture(scope="module")
def network() -> LSVAE:
    model = LSVAE(n_numeric=3, group_sizes=(3,), latent_dim=2, hidden_units=(8,), weight_decay=0.01)
    model.build((None, 6))
    return model


def test_the_numeric_terms_are_half_the_squared_error(network: LSVAE) -> None:
    """-log p(x_j|z) = 1/2 (x_j - f_j(z))^2 + 1/2 log 2 pi: least squares, whatever the
    decoder's bounds."""
    x = records(5)
    z = np.random.default_rng(1).normal(size=(5, 2)).astype(np.float32)
    mean, _, _ = (np.asarray(t) for t in network.decode_distribution(z))
    terms = -np.asarray(network.feature_log_likelihood(x, z))[:, :3]
    expected = 0.5 * (x[:, :3] - mean) ** 2 + 0.5 * math.log(2 * math.pi)
    np.testing.assert_allclose(terms, expected, rtol=1e-5, atol=1e-5)


def test_the_penalty_is_the_squared_kernels_times_the_decay(network: LSVAE) -> None:
    kernels = [w for w in network.trainable_weights if w.path.endswith("kernel")]
    assert kernels and all(len(w.shape) == 2 for w in kernels)
    expected = sum(float(np.sum(np.asarray(w) ** 2)) for w in kernels)
    np.testing.assert_allclose(float(network.weight_penalty()), expected, rtol=1e-5)
    loss, nll, kl = network.loss_terms(records(7), 0.5)
    mean_elbo_part = float(np.mean(np.asarray(nll) + 0.5 * np.asarray(kl)))
    np.testing.assert_allclose(float(loss), mean_elbo_part + 0.01 * expected, rtol=1e-5)


def test_an_lsvae_trains_saves_and_scores_like_every_model(train_frame, tmp_path) -> None:
    loaded = assert_trains_saves_and_scores("lsvae", train_frame, tmp_path / "lsvae")
    assert isinstance(loaded.model, LSVAE)
    # Training leaves the least-squares variance where it is: log-variance 0.
    log_var = np.asarray(loaded.model.x_log_var.log_variance())
    np.testing.assert_allclose(log_var, 0.0, atol=1e-5)


def test_the_decay_is_refused_for_other_models(train_frame) -> None:
    with pytest.raises(ConfigError, match=r"lsvae_weight_decay.*for model 'lsvae'"):
        VAEDetector(model="vae", lsvae_weight_decay=0.1, **TINY).fit(train_frame)
    with pytest.raises(ConfigError, match=r"lsvae_weight_decay -1.0 must be a number >= 0"):
        VAEDetector(model="lsvae", lsvae_weight_decay=-1.0, **TINY).fit(train_frame)
