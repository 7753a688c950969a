"""VAE-SVDD: the centre, the soft boundary, every score kind, bundles, and the collapse guard."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from detector.bundles.bundle import load_bundle, save_bundle
from detector.errors import ConfigError, TrainingError
from detector.estimator import VAEDetector
from detector.features.encode import encode
from detector.nn import losses
from detector.nn.models import MODELS
from detector.nn.models.svdd import CENTRE_EPS, VAESVDD
from detector.nn.training import TrainingConfig, train
from detector.scoring.scores import ScoreGraph, score_kinds
from tests.conftest import TINY, broken, normal_records
from tests.detector.engines import assert_scorer_matches_tensorflow

KINDS = ("recon_prob", "mean_log_lik", "elbo", "iwae", "svdd_distance", "combined", "either")


@pytest.fixture(scope="module")
def trained(train_frame):  # type: ignore[no-untyped-def]
    return train(train_frame, TrainingConfig(model="vae-svdd", target_fpr=0.05, **TINY))


@pytest.fixture(scope="module")
def held_out(trained, eval_frame) -> np.ndarray:
    bundle, _ = trained
    normal = eval_frame[eval_frame.label == 0].drop(columns=["label", "anomaly_kind"])
    return encode(bundle.schema, normal).values


def test_registered_with_its_own_score_kinds(trained) -> None:
    bundle, summary = trained
    assert MODELS["vae-svdd"] is VAESVDD
    assert type(bundle.model) is VAESVDD
    assert score_kinds(bundle.model) == KINDS
    assert bundle.score_kind == VAESVDD.default_score_kind
    for name in ("loss", "nll", "kl", "neg_elbo", "svdd"):
        assert name in summary.history and f"val_{name}" in summary.history
    assert np.isfinite(summary.val_neg_elbo)


def test_centre_is_set_after_warm_up_and_kept_off_zero(trained, held_out) -> None:
    bundle, summary = trained
    model = bundle.model
    centre = model.centre.numpy()
    assert float(model.svdd_active.numpy()) == 1.0
    assert centre.shape == (model.latent_dim,)
    assert (np.abs(centre) >= CENTRE_EPS - 1e-7).all()
    # The term is off (weight 0) during the warm-up, so the training loss is the warmed-up
    # negative ELBO; afterwards it includes the SVDD term.
    warmup = TINY["kl_warmup_epochs"]
    history = summary.history
    np.testing.assert_allclose(
        history["val_loss"][:warmup], history["val_neg_elbo"][:warmup], rtol=1e-5
    )
    extra = np.subtract(history["val_loss"], history["val_neg_elbo"])[warmup:]
    assert (extra > 0).all()
    weighted = model.svdd_weight * np.asarray(history["val_svdd"][warmup:])
    np.testing.assert_allclose(extra, weighted, rtol=1e-3)


def test_no_hypersphere_collapse(trained, held_out) -> None:
    bundle, _ = trained
    estimates = bundle.graph(held_out)
    for kind in KINDS:
        scores = estimates[kind]
        assert np.std(scores) > 1e-3 * (1.0 + abs(np.mean(scores))), kind
    distances = bundle.model.distances(held_out)
    np.testing.assert_allclose(-estimates["svdd_distance"], distances, rtol=1e-5, atol=1e-6)
    assert np.std(distances) > 0.1 * np.mean(distances)
    means = bundle.model.encoder_means(held_out)
    assert (np.std(means, axis=0) > 0.05).any()


def test_a_collapsed_encoder_is_refused(trained, held_out) -> None:
    model = trained[0].model
    collapsed = VAESVDD.from_config(model.get_config())
    collapsed.build((None, model.input_dim))
    collapsed.set_weights(model.get_weights())
    collapsed.z_mean.kernel.assign(np.zeros(collapsed.z_mean.kernel.shape, np.float32))
    graph = ScoreGraph(collapsed, n_samples=4, seed=0)
    with pytest.raises(TrainingError, match=r"hypersphere collapse.*svdd_weight \(now 0.1\)"):
        collapsed.finish_training(graph, held_out)


def test_too_strong_a_pull_collapses_the_sphere_and_fails_training(train_frame) -> None:
    # Measured: at weight 10 the decoder learns to ignore z and every mean sits at c.
    config = TrainingConfig(model="vae-svdd", svdd_weight=30.0, **{**TINY, "epochs": 6})
    with pytest.raises(TrainingError, match="hypersphere collapse"):
        train(train_frame, config)


def test_scores_rank_broken_records_above_normal_ones(trained) -> None:
    bundle, _ = trained
    normal = pd.DataFrame(normal_records(200))
    odd = pd.DataFrame([broken(r) for r in normal_records(200)])
    normal_est = bundle.graph(encode(bundle.schema, normal).values)
    odd_est = bundle.graph(encode(bundle.schema, odd).values)
    # The distance alone barely ranks these at the default weight (0.52 of pairs here; on the
    # adVAE benchmark it averages AUROC .64): the estimator test checks it at weight 2.
    for kind in set(KINDS) - {"svdd_distance"}:
        # anomaly score = -estimate; the share of (broken, normal) pairs ranked correctly.
        ranked = np.mean(-odd_est[kind][:, None] > -normal_est[kind][None, :])
        assert ranked > 0.99, kind


def test_combined_is_the_sum_of_robustly_standardised_scores(trained, held_out) -> None:
    bundle, _ = trained
    model = bundle.model
    estimates = bundle.graph(held_out)
    location, scale = model.combined_location.numpy(), model.combined_scale.numpy()
    assert (scale > 0).all()
    expected = -(
        (-estimates["elbo"] - location[0]) / scale[0]
        + (-estimates["svdd_distance"] - location[1]) / scale[1]
    )
    np.testing.assert_allclose(estimates["combined"], expected, rtol=1e-4, atol=1e-4)
    # either: the more alarmed of the two standardised parts, negated like every estimate.
    larger = np.maximum(
        (-estimates["elbo"] - location[0]) / scale[0],
        (-estimates["svdd_distance"] - location[1]) / scale[1],
    )
    np.testing.assert_allclose(estimates["either"], -larger, rtol=1e-4, atol=1e-4)
    # Fitted on validation rows, so on other normal rows each part is near median 0, IQR 1.
    parts = np.stack([-estimates["elbo"], -estimates["svdd_distance"]], axis=1)
    for standardised in ((parts - location) / scale).T:
        assert abs(np.median(standardised)) < 0.5
        assert 0.5 < np.subtract(*np.quantile(standardised, [0.75, 0.25])) < 2.0


def test_save_then_load_keeps_the_centre_and_every_score(trained, held_out, tmp_path) -> None:
    bundle, _ = trained
    save_bundle(bundle, tmp_path / "svdd")
    loaded = load_bundle(tmp_path / "svdd")
    assert type(loaded.model) is VAESVDD and loaded.model_type == "vae-svdd"
    assert loaded.version == bundle.version
    for name in ("centre", "svdd_active", "radius_sq", "combined_location", "combined_scale"):
        np.testing.assert_array_equal(
            getattr(loaded.model, name).numpy(), getattr(bundle.model, name).numpy()
        )
    assert loaded.model.get_config() == bundle.model.get_config()
    before, after = bundle.graph(held_out), loaded.graph(held_out)
    for kind in KINDS:
        np.testing.assert_array_equal(after[kind], before[kind], err_msg=kind)


def test_estimator_with_the_distance_score_and_soft_boundary(train_frame, tmp_path) -> None:
    settings = {**TINY, "epochs": 8, "patience": 3}
    det = VAEDetector(
        model="vae-svdd", score_kind="svdd_distance", svdd_weight=2.0, svdd_nu=0.2, **settings
    ).fit(train_frame)
    bundle = det.bundle_
    assert bundle.score_kind == "svdd_distance"
    assert bundle.model.svdd_weight == 2.0 and bundle.model.svdd_nu == 0.2
    rows = train_frame.head(300)
    scores = det.anomaly_score(rows)
    distances = bundle.model.distances(encode(bundle.schema, rows).values)
    np.testing.assert_allclose(scores, distances, rtol=1e-5, atol=1e-6)
    odd = det.anomaly_score(pd.DataFrame([broken(r) for r in rows.to_dict("records")]))
    assert np.mean(odd[:, None] > scores[None, :]) > 0.8
    # Soft boundary: R^2 is the (1 - nu) quantile of the fit rows' distances as of the best
    # epoch, so about nu of the training rows lie outside it.
    radius_sq = float(bundle.model.radius_sq.numpy())
    distances = bundle.model.distances(encode(bundle.schema, train_frame).values)
    assert radius_sq > 0
    assert 0.05 < np.mean(distances > radius_sq) < 0.5
    det.save(tmp_path / "est")
    again = VAEDetector.load(tmp_path / "est")
    assert again.get_params() == det.get_params()
    np.testing.assert_array_equal(again.anomaly_score(rows), scores)


def test_svdd_objective_closed_forms() -> None:
    points = np.array([[1.0, 2.0], [0.0, 0.0], [3.0, -1.0]], np.float32)
    centre = np.array([1.0, 1.0], np.float32)
    distance = np.asarray(losses.squared_distance(points, centre))
    np.testing.assert_allclose(distance, [1.0, 2.0, 8.0])
    assert float(losses.svdd_objective(distance, 0.0)) == pytest.approx(11.0 / 3.0)
    # R^2 = 2: only the 8 lies outside, by 6; 2 + (1/0.5) * 6/3 = 6.
    assert float(losses.svdd_objective(distance, 2.0, 0.5)) == pytest.approx(6.0)


def test_bad_svdd_settings_are_refused() -> None:
    for changes, message in [
        ({"model": "vae-svdd", "svdd_weight": -1.0}, "svdd_weight -1.0 must be"),
        ({"model": "vae-svdd", "svdd_nu": 0.0}, r"svdd_nu 0.0 must be in \(0, 1\]"),
        ({"model": "vae", "svdd_weight": 5.0}, "are for model 'vae-svdd'"),
        ({"model": "vae-svdd", "score_kind": "recon_error"}, "score_kind 'recon_error'"),
    ]:
        with pytest.raises(ConfigError, match=message):
            TrainingConfig(**changes).check()  # type: ignore[arg-type]


def test_cli_flags_reach_the_config() -> None:
    from detector.cli.main import build_parser

    args = build_parser().parse_args(
        ["train", "d.csv", "--out", "m", "--model", "vae-svdd", "--svdd-weight", "3",
         "--svdd-nu", "0.1", "--score", "svdd_distance"]
    )  # fmt: skip
    assert (args.model, args.svdd_weight, args.svdd_nu, args.score) == (
        "vae-svdd", 3.0, 0.1, "svdd_distance",
    )  # fmt: skip


def test_the_scorer_computes_every_svdd_score_as_tensorflow_does(trained, held_out) -> None:
    assert_scorer_matches_tensorflow(trained[0], held_out)
