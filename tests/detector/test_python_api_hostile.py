"""The Python API used as a careless data scientist would: each test is a finding of a probe,
and failed before its fix."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from detector.cli.main import main
from detector.errors import ConfigError, DataError, DetectorError, SchemaError
from detector.estimator import VAEDetector
from tests.conftest import DATA, fleet

pytestmark = pytest.mark.slow

SMALL = {"hidden_units": (8,), "latent_dim": 2, "epochs": 3, "batch_size": 256}
TRAIN = pd.read_csv(DATA / "train.csv").head(400)


def test_a_bundle_trained_without_a_column_scores_frames_that_hold_it(tmp_path: Path) -> None:
    # `anomaly score` carried the ignored id through; the Python API refused the same frame
    # ("unknown column(s) ['id']").
    frame = TRAIN.assign(id=range(len(TRAIN)))
    frame.to_csv(tmp_path / "t.csv", index=False)
    argv = ["train", str(tmp_path / "t.csv"), "--out", str(tmp_path / "m"), "--quiet"]
    assert main([*argv, "--epochs", "2", "--hidden-units", "8", "--ignore-column", "id"]) == 0

    detector = VAEDetector.load(tmp_path / "m")
    scores = detector.anomaly_score(frame.head(20))

    np.testing.assert_array_equal(scores, detector.anomaly_score(TRAIN.head(20)))


def test_an_object_array_fits_its_numbers_as_numbers() -> None:
    # A mixed frame's .to_numpy() holds numbers as objects: each float column was text
    # ("396 distinct text values, which looks like an identifier").
    array = TRAIN.to_numpy()
    assert array.dtype == object
    detector = VAEDetector(**SMALL, neighbours=0).fit(array)
    kinds = {c.name: "number" for c in detector.bundle_.schema.numeric}
    assert kinds.get(f"x{list(TRAIN.columns).index('cpu_pct')}") == "number"
    assert len(detector.bundle_.schema.numeric) == TRAIN.select_dtypes("number").shape[1]


def test_a_summary_within_the_kl_warm_up_reports_the_epoch_kept() -> None:
    # Training shorter than the KL warm-up kept the last epoch's weights and reported the
    # first epoch's losses (early stopping had watched no epoch).
    detector = VAEDetector(**SMALL, neighbours=0, random_state=0).fit(TRAIN)
    summary = detector.summary_
    assert summary.epochs_run == summary.best_epoch == 3
    assert summary.val_neg_elbo == summary.history["val_neg_elbo"][-1]


@pytest.mark.parametrize("seed", [None, np.random.RandomState(1), np.random.default_rng(2)])
def test_random_state_takes_what_scikit_learn_takes(seed: object) -> None:
    # None crashed inside Keras ("Expected 'seed' argument to be an integer").
    detector = VAEDetector(**SMALL, neighbours=0, random_state=seed).fit(TRAIN)
    assert detector.get_params()["random_state"] is seed
    assert np.isfinite(detector.anomaly_score(TRAIN.head(5))).all()


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"epochs": "2"}, "epochs='2' must be an integer"),
        ({"epochs": 2.5}, "epochs=2.5 must be an integer"),
        ({"hidden_units": "8,4"}, r"hidden_units=\('8,4',\) must be a tuple of integers or None"),
        ({"calendar": 1}, "calendar=1 must be True or False"),
        ({"activation": "bogus"}, "activation 'bogus' is not a Keras activation"),
    ],
)
def test_parameters_of_the_wrong_type_are_named(params: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        VAEDetector(**{**SMALL, **params}).fit(TRAIN)


def test_numpy_numbers_from_a_parameter_grid_are_taken() -> None:
    detector = VAEDetector(**{**SMALL, "epochs": np.int64(2)}, target_fpr=np.float64(0.02))
    detector.fit(TRAIN)
    assert detector.summary_.epochs_run == 2


@pytest.mark.parametrize("name", ["afile", "afile/sub", "."])
def test_saving_where_no_bundle_can_go_is_refused_before_writing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    # NotADirectoryError, FileExistsError, "PosixPath('.') has an empty name".
    detector = VAEDetector(**SMALL, neighbours=0).fit(TRAIN)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "afile").write_text("x")
    with pytest.raises(DetectorError, match=r"is a file|is not a model bundle"):
        detector.save(name)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"]


def test_a_series_models_feature_names_are_the_columns_it_is_given() -> None:
    # They were its window's internal columns ('cpu[-19]'), without the time and key.
    frame = fleet(200)
    detector = VAEDetector(**SMALL, time_column="ts", series_columns="host").fit(frame)
    assert set(detector.feature_names_in_) == set(frame.columns)
    assert detector.n_features_in_ == frame.shape[1]
    assert np.isfinite(detector.anomaly_score(frame[list(detector.feature_names_in_)])).all()


def test_a_structured_array_is_read_by_its_column_names() -> None:
    # It was told "got shape (50,): one record is X.reshape(1, -1)".
    detector = VAEDetector(**SMALL, neighbours=0).fit(TRAIN)
    records = TRAIN.head(50).to_records(index=False)
    np.testing.assert_array_equal(
        detector.anomaly_score(records), detector.anomaly_score(TRAIN.head(50))
    )


@pytest.mark.parametrize("names", [["hour", "hour"], ["1", 1]], ids=["same", "same as text"])
def test_repeated_column_names_are_refused_when_fitting(names: list[object]) -> None:
    # An internal AttributeError ('DataFrame' object has no attribute 'dtype'): the column
    # read by its name was two columns.
    frame = TRAIN.drop(columns=["host", "region"])
    frame.columns = [*frame.columns[: -len(names)], *names]
    with pytest.raises(SchemaError, match=r"duplicate column names \['(hour|1)'\]"):
        VAEDetector(**SMALL).fit(frame)


def test_a_model_of_numbered_columns_scores_records_keyed_by_number() -> None:
    # pd.DataFrame(array) names columns 0, 1, ...: scoring its rows as records (a row, a dict,
    # a list of dicts) failed with KeyError: '0', while the frame scored.
    frame = TRAIN.drop(columns=["host", "region"]).head(300)
    frame.columns = range(frame.shape[1])
    detector = VAEDetector(**SMALL).fit(frame)
    expected = detector.anomaly_score(frame.head(3))
    for records in (frame.iloc[0], frame.iloc[0].to_dict(), frame.head(3).to_dict("records")):
        scored = detector.score_records(records).anomaly_score
        np.testing.assert_allclose(scored, expected[: len(scored)], rtol=1e-6)


def test_a_complex_number_is_rejected_not_scored_as_its_real_part() -> None:
    # A complex column read as float64 was its real part: 1+2j scored exactly as 1.0.
    frame = TRAIN.drop(columns=["host", "region"]).head(300)
    detector = VAEDetector(**SMALL).fit(frame)
    batch = frame.head(3).astype({"cpu_pct": complex})
    batch.loc[batch.index[0], "cpu_pct"] = 1 + 2j
    result = detector.score_records(batch)
    assert len(result.rows) == 0 and "(1+2j) is not a number" in result.rejections[0].reason


def test_a_measurement_given_as_context_is_named_so() -> None:
    # "column 'cpu_pct' has 376 distinct text values, which looks like an identifier; ...
    # (or make it numeric)", of a column that was numeric.
    with pytest.raises(DetectorError, match="context column 'cpu_pct' is a measurement"):
        VAEDetector(**SMALL, model="cvae", context=["cpu_pct"]).fit(TRAIN)


def test_a_table_given_by_columns_is_scored_as_its_rows() -> None:
    # frame.to_dict("list") was taken for one record whose values were lists: one rejection
    # ("[0, 0, 0, 0, 0] is not a number"), or "1 row(s) cannot be scored" from predict.
    frame = TRAIN.drop(columns=["host", "region"]).head(300)
    detector = VAEDetector(**SMALL).fit(frame)
    batch = frame.head(5)
    expected = detector.anomaly_score(batch)
    for columns in (batch.to_dict("list"), {k: np.asarray(v) for k, v in batch.items()}):
        np.testing.assert_allclose(detector.score_records(columns).anomaly_score, expected)
        np.testing.assert_allclose(detector.anomaly_score(columns), expected)


def test_a_model_fitted_on_an_array_takes_the_frame_of_that_array() -> None:
    # Refused: "missing column(s) ['x0', ...]; unknown column(s) ['0', ...] (... keep them
    # with passthrough=['0', ...])", a fix that did not fit.
    array = TRAIN.drop(columns=["host", "region"]).head(300).to_numpy()
    detector = VAEDetector(**SMALL).fit(array)
    np.testing.assert_allclose(
        detector.anomaly_score(pd.DataFrame(array[:5])), detector.anomaly_score(array[:5])
    )


def test_a_column_given_as_a_series_is_told_to_be_a_dataframe(fitted, train_frame) -> None:
    # det.anomaly_score(df["cpu_pct"]) was read as one record of columns '0', '1', ... and
    # refused as missing and unknown columns; fit's hint was X.reshape, which a Series lacks.
    column = train_frame["cpu_pct"].head(50)
    with pytest.raises(DataError, match=r"Series 'cpu_pct' of 50 values .* X\[\['cpu_pct'\]\]"):
        fitted.anomaly_score(column)
    with pytest.raises(DataError, match=r"one column is X\[\['cpu_pct'\]\] of its table"):
        VAEDetector(epochs=1).fit(column)
    assert fitted.score_records(train_frame.iloc[0]).n_scored == 1  # a row: one record


def test_a_passthrough_column_the_table_lacks_is_named(fitted, train_frame) -> None:
    # A misspelt passthrough name was ignored: the column meant to be kept was not there.
    frame = train_frame.head(5).assign(request_id=range(5))
    with pytest.raises(SchemaError, match=r"passthrough \['requestid'\] not in the table"):
        fitted.score_records(frame, passthrough=["requestid"])
    assert fitted.score_records(frame, passthrough="request_id").n_scored == 5
