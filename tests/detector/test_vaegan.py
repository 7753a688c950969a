"""VAE-GAN (``--model vae-gan``): its adversarial and feature-space terms in closed form, its
scores, the training recipe's failure checks, and the model through the same training, bundle
and scorer as every model."""

from __future__ import annotations

import numpy as np
import pytest

from detector.errors import ConfigError
from detector.estimator import VAEDetector
from detector.nn import losses
from detector.nn.models.vaegan import REAL_TARGET, VAEGAN
from tests.conftest import TINY
from tests.detector.engines import assert_trains_saves_and_scores


@pytest.fixture(scope="module")
def network() -> VAEGAN:
    model = VAEGAN(
        n_numeric=3, group_sizes=(3,), latent_dim=2, hidden_units=(8,), adversarial_weight=0.3,
        feature_weight=2.0,
    )  # fmt: skip
    model.build((None, 6))
    return model


def records(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    one_hot = np.eye(3, dtype=np.float32)[rng.integers(0, 3, n)]
    return np.concatenate([rng.normal(size=(n, 3)).astype(np.float32), one_hot], axis=1)


def cross_entropy(logit: np.ndarray, target: float) -> np.ndarray:
    """-[t log p + (1 - t) log(1 - p)], p = sigmoid(logit), with log p = -log(1 + e^-l) and
    log(1 - p) = -log(1 + e^l) (exact in float64 where 1 - p would round away)."""
    logit = logit.astype(np.float64)
    return target * np.logaddexp(0, -logit) + (1 - target) * np.logaddexp(0, logit)


def test_the_cross_entropy_is_exact_and_finite_at_any_logit() -> None:
    logit = np.array([-30.0, -2.0, 0.0, 0.5, 3.0, 30.0], dtype=np.float32)
    for target in (0.0, REAL_TARGET, 1.0):
        got = np.asarray(losses.sigmoid_cross_entropy(logit, target))
        np.testing.assert_allclose(got, cross_entropy(logit, target), rtol=1e-5, atol=1e-6)
    extreme = np.asarray(losses.sigmoid_cross_entropy(np.float32([-1e4, 1e4]), 1.0))
    assert np.isfinite(extreme).all()


def test_each_network_gets_the_loss_of_the_paper(network: VAEGAN) -> None:
    rng = np.random.default_rng(1)
    nll, kl = rng.uniform(1, 5, 6).astype(np.float32), rng.uniform(0, 2, 6).astype(np.float32)
    real = (rng.normal(size=(6, 8)).astype(np.float32), rng.normal(size=6).astype(np.float32))
    rec = (rng.normal(size=(6, 8)).astype(np.float32), rng.normal(size=6).astype(np.float32))
    prior_logit = rng.normal(size=6).astype(np.float32)
    terms = network.gan_terms(nll, kl, real, rec, prior_logit, 0.5)
    terms = {name: np.asarray(value) for name, value in terms.items()}
    feature = 0.5 * ((real[0] - rec[0]) ** 2).sum(axis=1)
    like = nll + 2.0 * feature
    fool = cross_entropy(rec[1], 1.0) + cross_entropy(prior_logit, 1.0)
    gan = cross_entropy(real[1], REAL_TARGET) + cross_entropy(rec[1], 0)
    gan += cross_entropy(prior_logit, 0)
    np.testing.assert_allclose(terms["feature"], feature, rtol=1e-5)
    np.testing.assert_allclose(terms["loss_e"], np.mean(like + 0.5 * kl), rtol=1e-5)
    np.testing.assert_allclose(terms["loss_g"], np.mean(like + 0.3 * fool), rtol=1e-5)
    np.testing.assert_allclose(terms["loss_d"], np.mean(gan), rtol=1e-5)
    np.testing.assert_allclose(terms["d_real"], np.mean(1 / (1 + np.exp(-real[1]))), rtol=1e-5)


def test_the_generator_gives_records_with_a_distribution_per_group(network: VAEGAN) -> None:
    z = np.random.default_rng(2).normal(size=(4, 3, 2)).astype(np.float32)
    rebuilt = np.asarray(network.reconstruct(z))
    assert rebuilt.shape == (4, 3, 6)
    # G's record: numeric means, then each group's probabilities, which sum to 1.
    np.testing.assert_allclose(rebuilt[..., 3:].sum(axis=-1), 1.0, rtol=1e-5)
    features, logit = (np.asarray(t) for t in network.discriminate(rebuilt))
    assert features.shape == (4, 3, 8) and logit.shape == (4, 3)


def test_a_vae_gan_trains_stably_saves_and_scores_like_every_model(train_frame, tmp_path) -> None:
    loaded = assert_trains_saves_and_scores("vae-gan", train_frame, tmp_path / "vaegan")
    assert isinstance(loaded.model, VAEGAN) and loaded.score_kind == "elbo"


def test_the_recipe_keeps_the_discriminator_from_winning_outright(train_frame) -> None:
    """The failure checks: neither D(x) nor D(G(z)) runs to 0 or 1 over training."""
    history = VAEDetector(model="vae-gan", **TINY).fit(train_frame).summary_.history
    for name in ("d_real", "d_fake", "val_d_real", "val_d_fake"):
        values = np.asarray(history[name])
        assert ((values > 0.05) & (values < 0.95)).all(), (name, values)
    assert np.mean(history["d_real"][-3:]) > np.mean(history["d_fake"][-3:])


def test_its_options_are_refused_for_other_models(train_frame) -> None:
    with pytest.raises(ConfigError, match=r"gan_weight.*for model 'vae-gan'"):
        VAEDetector(model="vae", gan_weight=1.0, **TINY).fit(train_frame)
    with pytest.raises(ConfigError, match=r"gan_noise -1.0 must be a number >= 0"):
        VAEDetector(model="vae-gan", gan_noise=-1.0, **TINY).fit(train_frame)
