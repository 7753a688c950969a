"""The trained detector: score direction, reproducibility, batching, calibration, sklearn API."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone

from detector.errors import ConfigError, DataError, TrainingError
from detector.estimator import VAEDetector
from detector.features.encode import encode
from detector.nn.training_checks import check_spread
from detector.scoring.scores import SCORE_KINDS, ScoreGraph, score_frame
from tests.conftest import TINY


def test_obvious_anomalies_score_higher_than_normal_records(fitted, eval_frame) -> None:
    normal = eval_frame[eval_frame.label == 0].drop(columns=["label", "anomaly_kind"]).head(200)
    broken = normal.copy()
    broken["latency_p99_ms"] *= 20
    broken["cpu_pct"] = 99.0
    normal_scores = fitted.anomaly_score(normal)
    broken_scores = fitted.anomaly_score(broken)
    assert np.median(broken_scores) > np.quantile(normal_scores, 0.99)
    assert (broken_scores > fitted.bundle_.calibrator.threshold).mean() > 0.95
    # scikit-learn's direction is the opposite, as for IsolationForest.
    np.testing.assert_allclose(fitted.score_samples(broken), -broken_scores)
    assert (fitted.predict(broken) == -1).mean() > 0.95


def test_every_score_estimate_ranks_anomalies_above_normal_rows(fitted, eval_frame) -> None:
    from sklearn.metrics import roc_auc_score

    labels = eval_frame["label"]
    frame = eval_frame.drop(columns=["label", "anomaly_kind"])
    estimates = fitted.bundle_.graph(encode(fitted.bundle_.schema, frame).values)
    for kind in SCORE_KINDS:
        assert roc_auc_score(labels, -estimates[kind]) > 0.85, kind
    # The IWAE bound is tighter than the ELBO (Burda et al.). Both are Monte Carlo estimates
    # drawn with one fixed noise matrix per graph, so average over several noise seeds.

    x = encode(fitted.bundle_.schema, frame).values[:500]
    graphs = [ScoreGraph(fitted.bundle_.model, n_samples=16, seed=s) for s in range(8)]
    iwae = np.mean([g(x)["iwae"].mean() for g in graphs])
    elbo = np.mean([g(x)["elbo"].mean() for g in graphs])
    assert iwae > elbo


def test_calibrated_fpr_holds_on_fresh_normal_records(fitted, eval_frame) -> None:
    normal = eval_frame[eval_frame.label == 0].drop(columns=["label", "anomaly_kind"])
    observed = float(np.mean(fitted.predict(normal) == -1))
    assert fitted.target_fpr == 0.05
    # The eval normals come from later days than the training ones, so allow some drift: the
    # default distance score flags 12.6% of them with this tiny model (the full-size default
    # 12.6% at this 5% target and 2.0% at 1%, tests/benchmarks/README.md); the plain distance
    # flagged 9.0%, the likelihood score about 6%.
    assert 0.02 <= observed <= 0.15


def test_scores_do_not_depend_on_batching(fitted, train_frame) -> None:
    rows = train_frame.head(64)
    together = fitted.anomaly_score(rows)
    one_by_one = np.concatenate([fitted.anomaly_score(rows.iloc[[i]]) for i in range(64)])
    np.testing.assert_allclose(one_by_one, together, rtol=1e-5, atol=1e-5)


def test_training_is_reproducible_under_a_seed(fitted, train_frame) -> None:
    again = VAEDetector(target_fpr=0.05, **TINY).fit(train_frame)
    rows = train_frame.sample(300, random_state=1)
    np.testing.assert_allclose(
        again.anomaly_score(rows), fitted.anomaly_score(rows), rtol=1e-4, atol=1e-4
    )


def test_result_is_typed_and_accounts_for_every_row(fitted, eval_frame) -> None:
    frame = eval_frame.drop(columns=["label", "anomaly_kind"]).head(10).copy()
    frame["cpu_pct"] = frame["cpu_pct"].astype(object)
    frame.loc[3, "cpu_pct"] = "n/a"
    result = score_frame(fitted.bundle_, frame)
    assert result.n_scored + len(result.rejections) == 10
    assert result.rejections[0].row == 3
    assert 3 not in result.rows
    out = result.to_frame()
    assert list(out.columns[:3]) == ["anomaly_score", "p_value", "is_anomaly"]
    assert set(out["top_feature_1"]) <= set(frame.columns)
    with pytest.raises(AttributeError):
        result.threshold = 0.0  # type: ignore[misc]


def test_a_result_of_a_filtered_frame_joins_back_onto_its_rows(fitted, eval_frame) -> None:
    # to_frame() was indexed by position: `sub.join(result.to_frame())` of a filtered frame
    # gave 48 of 149 rows a score, 19 their own, with no error.
    frame = eval_frame.drop(columns=["label", "anomaly_kind"])
    sub = frame[frame["cpu_pct"] > frame["cpu_pct"].median()].head(40).copy()
    sub["cpu_pct"] = sub["cpu_pct"].astype(object)
    sub.loc[sub.index[5], "cpu_pct"] = "n/a"  # rejected: no score, and the others still line up
    result = fitted.score_records(sub)
    joined = sub.join(result.to_frame())
    assert joined["anomaly_score"].isna().sum() == 1
    assert np.isnan(joined.loc[sub.index[5], "anomaly_score"])
    alone = fitted.score_records(sub.drop(index=sub.index[5]).reset_index(drop=True))
    scored = joined["anomaly_score"].dropna().to_numpy()
    np.testing.assert_array_equal(scored, alone.anomaly_score)
    # A table with the plain 0..n-1 index, records or an array: positions, as before.
    assert list(fitted.score_records(frame.head(5)).to_frame().index) == [0, 1, 2, 3, 4]


def test_contributions_point_at_the_broken_column(fitted, eval_frame) -> None:
    normal = eval_frame[eval_frame.label == 0].drop(columns=["label", "anomaly_kind"]).head(50)
    broken = normal.assign(disk_iops=normal["disk_iops"] * 50)
    result = score_frame(fitted.bundle_, broken)
    top = [row[0] for row in result.top_features(1)]
    assert top.count("disk_iops") >= 45


def test_sklearn_api(fitted, train_frame) -> None:
    params = fitted.get_params()
    assert params["latent_dim"] == 4 and params["score_kind"] is None and params["model"] == "vae"
    copy = clone(fitted).set_params(epochs=2)
    assert copy.epochs == 2 and not hasattr(copy, "bundle_")
    rows = train_frame.head(20)
    decision = fitted.decision_function(rows)
    np.testing.assert_array_equal(fitted.predict(rows) == -1, decision < 0)
    assert fitted.n_features_in_ == train_frame.shape[1]


def test_a_mistyped_or_foreign_parameter_is_named_with_this_estimators_name() -> None:
    # A data-science helper's epoch=5 and contamination=0.1 got "unexpected keyword argument".
    with pytest.raises(TypeError, match=r"no parameter 'epoch' \(did you mean epochs\?\)"):
        VAEDetector(epoch=5)
    with pytest.raises(TypeError, match=r"'contamination' \(here: target_fpr"):
        VAEDetector(contamination=0.1)
    with pytest.raises(TypeError, match=r"'seed' \(here: random_state\).*latent_dim"):
        VAEDetector(seed=3)


def test_fit_predict_is_absent_with_what_to_do_instead(train_frame) -> None:
    # The rows fitted on are in the distance's bank: 0.3% flagged at a 1% target. Absent as
    # LocalOutlierFactor(novelty=True) makes it: code asking hasattr() first then called a
    # method that raised (a scikit-learn helper).
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    from detector.errors import ConfigError

    detector = VAEDetector(epochs=1)
    assert not hasattr(detector, "fit_predict")
    assert not hasattr(Pipeline([("scale", StandardScaler()), ("detect", detector)]), "fit_predict")
    with pytest.raises(AttributeError) as absent:
        detector.fit_predict(train_frame)
    assert isinstance(absent.value.__cause__, ConfigError)
    assert "fit(X_normal).predict(X_new)" in str(absent.value.__cause__)


def test_bad_input_is_a_value_error_as_scikit_learn_raises_it() -> None:
    # Code wrapping estimators in `except ValueError` missed an empty table, NaN, a 1-D X.
    with pytest.raises(ValueError, match="row"):
        VAEDetector(epochs=1).fit(np.empty((0, 3)))


def test_numpy_input_works(train_frame) -> None:
    x = np.random.default_rng(0).normal(size=(400, 5))
    det = VAEDetector(epochs=2, hidden_units=(16, 8), latent_dim=2).fit(x)
    assert det.anomaly_score(x[:7]).shape == (7,)
    assert list(det.feature_names_in_) == ["x0", "x1", "x2", "x3", "x4"]


def test_a_fitted_detector_copies_but_is_not_pickled() -> None:
    """copy.deepcopy of a fitted detector failed with "cannot pickle '_thread._local' object",
    and so did pickle.dumps (joblib.dump of a pipeline), naming nothing a user could act on."""
    import copy
    import pickle

    x = np.random.default_rng(0).normal(size=(300, 4))
    det = VAEDetector(epochs=2, hidden_units=(16, 8), latent_dim=2).fit(x)
    for copied in (copy.deepcopy(det), copy.copy(det)):  # copy.copy was refused as a pickle
        assert copied.get_params() == det.get_params()
        np.testing.assert_array_equal(copied.anomaly_score(x[:5]), det.anomaly_score(x[:5]))
    with pytest.raises(TypeError, match=r"not pickled .*det.save\(path\) .*VAEDetector.load"):
        pickle.dumps(det)
    unfitted = pickle.loads(pickle.dumps(VAEDetector(epochs=3)))  # as a parallel search sends it
    assert unfitted.get_params() == VAEDetector(epochs=3).get_params()


def test_bad_settings_fail_before_training() -> None:
    frame = pd.DataFrame({"a": np.arange(100.0)})
    with pytest.raises(ConfigError, match="score_kind 'nope'"):
        VAEDetector(score_kind="nope").fit(frame)
    with pytest.raises(ConfigError, match=r"range_floor -0\.1 must be a fraction in"):
        VAEDetector(range_floor=-0.1).fit(frame)
    # More samples than a bundle may load with: trained (slowly), then never loaded.
    with pytest.raises(ConfigError, match=r"n_samples 20000 must be at most 10,000"):
        VAEDetector(n_samples=20_000).fit(frame)
    with pytest.raises(ConfigError, match=r"patience -1 must be 0 or more epochs"):
        VAEDetector(patience=-1).fit(frame)
    # A warm-up of -1 epochs was taken; a min_scale past its range named a setting with no flag.
    with pytest.raises(ConfigError, match=r"kl_warmup_epochs -1 must be 0 or more epochs"):
        VAEDetector(kl_warmup_epochs=-1).fit(frame)
    with pytest.raises(ConfigError, match=r"min_scale 100 must be in \(0, 2\)"):
        VAEDetector(min_scale=100).fit(frame)
    # Seeds numpy refuses were an internal error from inside training.
    for seed in (-1, 2**64):
        with pytest.raises(
            ConfigError, match=rf"random_state {seed} must be in \[0, 2\*\*32 - 1\]"
        ):
            VAEDetector(random_state=seed).fit(frame)
    # A NaN or infinite rate trained, saved a bundle, and the bundle did not load.
    for rate in (float("nan"), float("inf")):
        with pytest.raises(ConfigError, match=rf"learning_rate {rate} must be a positive number"):
            VAEDetector(learning_rate=rate).fit(frame)


def test_range_floor_reaches_the_schema() -> None:
    x = np.random.default_rng(0).normal(size=(400, 3))
    det = VAEDetector(epochs=1, hidden_units=(8,), latent_dim=2, range_floor=0.25).fit(x)
    ranges = x.max(axis=0) - x.min(axis=0)
    expected = np.maximum(x.std(axis=0), 0.25 * ranges)
    scales = [c.scale for c in det.bundle_.schema.numeric]
    np.testing.assert_allclose(scales, expected, rtol=1e-9)
    assert (expected > x.std(axis=0)).all()  # the floor, not the std, set every scale


def test_a_model_that_cannot_tell_rows_apart_is_refused() -> None:
    # Every row identical: refused before training, which would only find the held-out
    # scores constant (no threshold can mean anything then) and blame the epochs.
    frame = pd.DataFrame({"a": np.ones(200), "b": np.full(200, 2.0)})
    with pytest.raises(DataError, match=r"every column holds one value in all 200 rows"):
        VAEDetector(epochs=2, hidden_units=(8,), latent_dim=2).fit(frame)
    # Rows that differ yet score alike after training are still caught there.
    with pytest.raises(TrainingError, match="nearly\\) constant"):
        check_spread(np.full(45, 3.25))
    check_spread(np.linspace(0.0, 1.0, 45))


def test_divergence_is_an_error_not_a_broken_model(train_frame) -> None:
    with pytest.raises(TrainingError, match="NaN"):
        VAEDetector(epochs=3, hidden_units=(16,), latent_dim=2, learning_rate=1e9).fit(
            train_frame.head(500)
        )


def test_posterior_collapse_is_detected(fitted, train_frame) -> None:
    from detector.nn.models.vae import VAE
    from detector.nn.training_checks import ACTIVE_UNIT_KL, active_units

    x = encode(fitted.bundle_.schema, train_frame.head(200)).values
    assert active_units(fitted.bundle_.model, x) >= 1
    # An encoder whose posterior is the prior for every record carries no information.
    collapsed = VAE.from_config(fitted.bundle_.model.get_config())
    collapsed.build((None, x.shape[1]))
    for layer in (collapsed.z_mean, collapsed.z_log_var):
        layer.set_weights([np.zeros_like(w) for w in layer.get_weights()])
    assert active_units(collapsed, x) == 0
    assert ACTIVE_UNIT_KL > 0


def test_fit_row_count_is_the_number_of_rows_training_fits_on(fitted, train_frame) -> None:
    # Benchmarks turn an iteration budget into epochs with it, so it must match the split.
    from detector.nn.training import TrainingConfig, fit_row_count

    config = TrainingConfig(
        validation_fraction=fitted.validation_fraction,
        calibration_fraction=fitted.calibration_fraction,
    )
    assert fitted.summary_.fit_rows == fit_row_count(len(train_frame), config)
    assert fit_row_count(len(train_frame), config) < len(train_frame)


def test_a_column_of_one_value_in_training_is_warned_of() -> None:
    # It jumped from 5 to 1,000,000 in a scored record, which was not flagged, without a word.
    rng = np.random.default_rng(0)
    # A text column of one category was not warned of either.
    frame = pd.DataFrame(
        {"a": rng.normal(size=300), "b": rng.normal(size=300), "c": 5.0, "dc": "eu-1"}
    )
    det = VAEDetector(epochs=1, hidden_units=(8,), latent_dim=2).fit(frame)
    (warning,) = [w for w in det.summary_.warnings if "one value" in w]
    assert warning.startswith("column(s) ['c', 'dc'] hold one value in every training row")


def test_columns_that_look_like_labels_or_row_numbers_are_warned_of() -> None:
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(
        {"a": rng.normal(size=300), "label": rng.integers(0, 2, 300), "id": np.arange(300)}
    )
    warnings = VAEDetector(epochs=1, hidden_units=(8,), latent_dim=2).fit(frame).summary_.warnings
    assert any(w.startswith("column 'label' looks like labels") for w in warnings)
    assert any(w.startswith("column 'id' counts up by one") for w in warnings)
    assert not any("'a'" in w for w in warnings)


def test_save_and_load_raise_no_warning_under_warnings_as_errors(tmp_path) -> None:
    # A user's test suite runs with warnings as errors: Keras' deprecated numpy call in
    # save failed it (this suite's own filters hid it).
    import warnings

    x = np.random.default_rng(0).normal(size=(300, 4))
    det = VAEDetector(epochs=1, hidden_units=(8,), latent_dim=2).fit(x)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        det.save(tmp_path / "m")
        again = VAEDetector.load(tmp_path / "m")
    np.testing.assert_array_equal(again.anomaly_score(x[:5]), det.anomaly_score(x[:5]))


def test_training_says_when_a_score_does_not_come_from_the_model_or_its_network_barely_trained(
    train_frame,
) -> None:
    # A models helper: six models scored alike to the digit with --score knn, and at 2 epochs
    # (within the KL warm-up) vae-svdd was a plain VAE and unseen categories ranked as normal.
    table = train_frame.head(400)
    small = {"hidden_units": (8,), "latent_dim": 2}
    advae = VAEDetector(model="advae", score_kind="knn", epochs=1, **small).fit(table)
    assert any(
        "which the advae network does not change" in w and "score_kind='elbo'" in w
        for w in advae.summary_.warnings
    )
    early = VAEDetector(score_kind="elbo", epochs=2, kl_warmup_epochs=5, **small).fit(table)
    assert any(
        "training ended within the KL warm-up (2 epochs" in w for w in early.summary_.warnings
    )
    later = VAEDetector(score_kind="elbo", epochs=2, kl_warmup_epochs=1, **small).fit(table)
    assert not any("KL warm-up" in w or "network does not" in w for w in later.summary_.warnings)
