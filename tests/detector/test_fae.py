"""The Fisher auto-encoder (``--model fae``): its Fisher-information terms in closed form
against the paper's sampled estimate, the loss that holds them near their targets, and the
model through the same training, bundle and scorer as every model."""

from __future__ import annotations

import numpy as np
import pytest

from detector.errors import ConfigError
from detector.estimator import VAEDetector
from detector.nn.models.fae import FAE
from tests.conftest import TINY
from tests.detector.engines import assert_trains_saves_and_scores
from tests.detector.engines import encoded_records as records


@pytest.fixture(scope="module")
def network() -> FAE:
    model = FAE(
        n_numeric=3, group_sizes=(3,), latent_dim=2, hidden_units=(8,), fisher_weight=0.5,
        target_z=7.0, target_x=2.0,
    )  # fmt: skip
    model.build((None, 6))
    return model


def test_the_closed_form_is_the_expected_squared_score(network: FAE) -> None:
    """E[(d/dz log N(z; mu, sigma^2))^2] = E[((z - mu) / sigma^2)^2] = 1 / sigma^2: the paper's
    code estimates the left side from samples; the model uses the right."""
    log_var = np.random.default_rng(2).uniform(-3, 1, size=(4, 2)).astype(np.float32)
    fisher_z, _ = network.fisher_information(log_var)
    eps = np.random.default_rng(3).normal(size=(200_000, 4, 2))
    sigma = np.exp(0.5 * log_var)
    sampled = np.mean((sigma * eps / sigma**2) ** 2)  # z - mu = sigma * eps
    np.testing.assert_allclose(float(fisher_z), np.mean(np.exp(-log_var)), rtol=1e-5)
    np.testing.assert_allclose(float(fisher_z), sampled, rtol=0.02)


def test_the_loss_adds_the_distances_to_both_targets(network: FAE) -> None:
    x = records(9)
    loss, nll, kl, fisher_z, fisher_x = (np.asarray(t) for t in network.loss_terms(x, 0.3))
    _, log_var = (np.asarray(t) for t in network.encode(x))
    decoder_log_var = np.asarray(network.x_log_var.log_variance())
    np.testing.assert_allclose(fisher_z, np.mean(np.exp(-log_var)), rtol=1e-5)
    np.testing.assert_allclose(fisher_x, np.mean(np.exp(-decoder_log_var)), rtol=1e-5)
    penalty = abs(fisher_z - 7.0) + abs(fisher_x - 2.0)
    np.testing.assert_allclose(loss, np.mean(nll + 0.3 * kl) + 0.5 * penalty, rtol=1e-5)


def test_an_fae_trains_saves_and_scores_like_every_model(train_frame, tmp_path) -> None:
    options = {"fae_weight": 1.0, "fae_target_x": 2.0}
    loaded = assert_trains_saves_and_scores("fae", train_frame, tmp_path / "fae", **options)
    assert isinstance(loaded.model, FAE) and loaded.model.target_x == 2.0
    # The decoder term pulls the mean 1/sigma_x^2 from its start (1) toward its target.
    fisher_x = np.mean(np.exp(-np.asarray(loaded.model.x_log_var.log_variance())))
    assert 1.3 < fisher_x < 2.7


def test_its_options_are_refused_for_other_models(train_frame) -> None:
    with pytest.raises(ConfigError, match=r"fae_target_z.*for model 'fae'"):
        VAEDetector(model="vae", fae_target_z=1.0, **TINY).fit(train_frame)
    with pytest.raises(ConfigError, match=r"fae_weight -1.0 must be a number >= 0"):
        VAEDetector(model="fae", fae_weight=-1.0, **TINY).fit(train_frame)
