"""adVAE: its math, its two-step update, training, scoring and bundles."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from detector.errors import ConfigError
from detector.estimator import VAEDetector
from detector.features.encode import encode
from detector.nn import losses
from detector.nn.training import TrainingConfig
from tests.conftest import TINY, broken, normal_records
from tests.detector.engines import assert_scorer_matches_tensorflow


def test_kl_between_gaussians_closed_forms() -> None:
    rng = np.random.default_rng(0)
    mean_p, mean_q = rng.normal(size=(2, 20))
    log_var_p, log_var_q = rng.uniform(-3, 2, size=(2, 20))
    ours = np.asarray(losses.kl_between_gaussians(mean_p, log_var_p, mean_q, log_var_q))
    sd_p, sd_q = np.exp(0.5 * log_var_p), np.exp(0.5 * log_var_q)
    expected = np.log(sd_q / sd_p) + (sd_p**2 + (mean_p - mean_q) ** 2) / (2 * sd_q**2) - 0.5
    np.testing.assert_allclose(ours, expected, rtol=1e-10)
    assert (ours >= 0).all()
    same = losses.kl_between_gaussians(mean_p, log_var_p, mean_p, log_var_p)
    np.testing.assert_allclose(np.asarray(same), 0.0, atol=1e-12)
    to_prior = losses.kl_between_gaussians(mean_p, log_var_p, 0.0 * mean_p, 0.0 * log_var_p)
    np.testing.assert_allclose(
        np.asarray(to_prior), np.asarray(losses.kl_to_standard_normal(mean_p, log_var_p))
    )


def test_group_softmax_gives_each_group_probabilities() -> None:
    logits = np.random.default_rng(1).normal(size=(4, 5))
    probs = np.asarray(losses.group_softmax(logits, (2, 3)))
    np.testing.assert_allclose(probs[:, :2].sum(axis=1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(probs[:, 2:].sum(axis=1), 1.0, rtol=1e-6)
    assert (probs > 0).all()


# ---- the two-step update --------------------------------------------------------------------


def _tiny_model():  # type: ignore[no-untyped-def]
    from detector.nn.models.advae import AdVAE

    model = AdVAE(n_numeric=3, group_sizes=(3,), latent_dim=2, hidden_units=(8, 4), seed=0)
    model.build((None, 6))
    return model


def _batch() -> np.ndarray:
    rng = np.random.default_rng(0)
    one_hot = np.eye(3)[rng.integers(0, 3, size=32)]
    return np.concatenate([rng.normal(size=(32, 3)), one_hot], axis=1).astype(np.float32)


def test_encoder_and_generator_variables_split_every_trainable_weight() -> None:
    model = _tiny_model()
    encoder = {id(w) for w in model.encoder_weights}
    generator = {id(w) for w in model.generator_weights}
    assert encoder and generator and not encoder & generator
    assert encoder | generator == {id(w) for w in model.trainable_weights}


@pytest.mark.parametrize("frozen", ["encoder", "generator"])
def test_each_step_updates_only_its_own_networks(frozen: str) -> None:
    import keras

    model = _tiny_model()
    rates = {"encoder": (0.05, 0.0), "generator": (0.0, 0.05)}[frozen]
    model.compile(
        optimizer=keras.optimizers.Adam(rates[0]),
        encoder_optimizer=keras.optimizers.Adam(rates[1]),
    )
    before = {
        "encoder": [w.numpy().copy() for w in model.encoder_weights],
        "generator": [w.numpy().copy() for w in model.generator_weights],
    }
    logs = model.train_step(_batch())
    after = {
        "encoder": [w.numpy() for w in model.encoder_weights],
        "generator": [w.numpy() for w in model.generator_weights],
    }
    moving = "generator" if frozen == "encoder" else "encoder"
    for old, new in zip(before[frozen], after[frozen], strict=True):
        np.testing.assert_array_equal(old, new)
    assert any(not np.array_equal(o, n) for o, n in zip(before[moving], after[moving], strict=True))
    assert {"loss", "nll", "kl", "neg_elbo", "loss_g", "loss_t", "loss_e"} <= set(logs)
    assert all(np.isfinite(float(v)) for v in logs.values())


def test_encoder_optimizer_defaults_to_a_copy_of_the_optimizer() -> None:
    import keras

    model = _tiny_model()
    model.compile(optimizer=keras.optimizers.Adam(0.003))
    assert model.encoder_optimizer is not model.optimizer
    assert float(model.encoder_optimizer.learning_rate) == pytest.approx(0.003)


# ---- settings ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"model": "advae", "advae_margin_z": -1.0}, "advae_margin_z"),
        ({"model": "advae", "advae_lambda": float("nan")}, "advae_lambda"),
        ({"model": "vae", "advae_gamma": 0.1}, "are for model 'advae'"),
    ],
)
def test_config_refuses_bad_advae_settings(settings: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        TrainingConfig(**settings).check()


def test_cli_flags_reach_the_training_config() -> None:
    from detector.cli.main import build_parser

    args = build_parser().parse_args(
        ["train", "x.csv", "--out", "m", "--model", "advae", "--advae-lambda", "0.1",
         "--advae-margin-z", "20"]
    )  # fmt: skip
    # An unset flag holds the option's default (detector.nn.options), as TrainingConfig does.
    assert (args.advae_lambda, args.advae_margin_z, args.advae_gamma) == (0.1, 20.0, 0.001)


# ---- trained end to end -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def detector(train_frame: pd.DataFrame) -> VAEDetector:
    settings = {**TINY, "epochs": 10}
    return VAEDetector(model="advae", target_fpr=0.05, **settings).fit(train_frame.head(3000))


def test_trained_advae_scores_broken_records_higher(detector: VAEDetector) -> None:
    assert detector.bundle_.model_type == "advae"
    assert detector.summary_ is not None
    assert {"loss_g", "loss_t", "loss_e", "val_neg_elbo"} <= set(detector.summary_.history)
    normal = pd.DataFrame(normal_records(200))
    bad = pd.DataFrame([broken(r) for r in normal_records(200)])
    normal_scores = detector.anomaly_score(normal)
    assert np.median(detector.anomaly_score(bad)) > np.quantile(normal_scores, 0.99)
    bundle = detector.bundle_
    est_normal = bundle.graph(encode(bundle.schema, normal).values)
    est_bad = bundle.graph(encode(bundle.schema, bad).values)
    # Estimates are higher = more normal, the paper's recon_error included.
    assert np.median(est_bad["recon_error"]) < np.quantile(est_normal["recon_error"], 0.01)
    assert (est_normal["recon_error"] <= 0).all()


def test_saved_advae_loads_in_safe_mode_and_scores_the_same(
    detector: VAEDetector, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    from detector.nn.models.advae import AdVAE

    detector.save(tmp_path / "advae")
    loaded = VAEDetector.load(tmp_path / "advae")
    assert type(loaded.bundle_.model) is AdVAE
    assert loaded.bundle_.model.get_config() == detector.bundle_.model.get_config()
    assert loaded.advae_margin_z == detector.advae_margin_z
    rows = pd.DataFrame(normal_records(50) + [broken(r) for r in normal_records(5)])
    np.testing.assert_allclose(loaded.anomaly_score(rows), detector.anomaly_score(rows), rtol=1e-6)
    x = encode(loaded.bundle_.schema, rows).values
    np.testing.assert_allclose(
        loaded.bundle_.graph(x)["recon_error"],
        detector.bundle_.graph(x)["recon_error"],
        rtol=1e-6,
    )


def test_the_scorer_computes_every_advae_score_as_tensorflow_does(detector, eval_frame) -> None:
    bundle = detector.bundle_
    frame = eval_frame.drop(columns=["label", "anomaly_kind"])
    assert_scorer_matches_tensorflow(bundle, encode(bundle.schema, frame).values)
