"""Records as mappings score exactly as the same records in a table
(``detector.features.records``)."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd
import pytest

from detector.errors import SchemaError
from detector.features.encode import encode
from detector.features.records import score_records
from detector.scoring.scores import ScoreResult, score_frame
from tests.conftest import TINY, normal_records


def same_result(fast: ScoreResult, table: ScoreResult) -> None:
    np.testing.assert_array_equal(fast.anomaly_score, table.anomaly_score)
    np.testing.assert_array_equal(fast.p_value, table.p_value)
    np.testing.assert_array_equal(fast.is_anomaly, table.is_anomaly)
    np.testing.assert_array_equal(fast.contributions, table.contributions)
    np.testing.assert_array_equal(fast.rows, table.rows)
    assert fast.rejections == table.rejections
    assert fast.n_input == table.n_input
    if table.context_unseen is None:
        assert fast.context_unseen is None
    else:
        np.testing.assert_array_equal(fast.context_unseen, table.context_unseen)


def test_plain_records_take_the_fast_path_and_score_as_a_table(fitted) -> None:
    bundle = fitted.bundle_
    records = normal_records(40)
    records[3] = {**records[3], "cpu_pct": 99, "latency_p99_ms": 1e6}  # ints, and clipped
    records[5] = {**records[5], "host": "never-seen-host"}  # the unseen slot
    records[7] = {**records[7], "region": f"  {records[7]['region']} "}  # padded, known
    records[9] = {**records[9], "request_id": "r-9"}  # carried through, unscored
    kept = ["request_id"]
    batch = bundle.record_encoder.encode(records, passthrough=kept)
    assert batch is not None
    frame = pd.DataFrame.from_records(records)
    expected = encode(bundle.schema, frame, passthrough=kept)
    np.testing.assert_array_equal(batch.values, expected.values)
    assert batch.numbers == expected.numbers
    for chunk in (records[:1], records[3:4], records):
        same_result(
            score_records(bundle, chunk, passthrough=kept),
            score_frame(bundle, pd.DataFrame(chunk), passthrough=kept),
        )


def record_variants(record: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Records the fast path must leave to the table path, each with why."""
    without = dict(record)
    del without["cpu_pct"]
    return {
        "missing key": without,
        "None": {**record, "cpu_pct": None},
        "NaN": {**record, "cpu_pct": float("nan")},
        "infinite": {**record, "cpu_pct": float("inf")},
        "text number": {**record, "cpu_pct": "12.5"},
        "text": {**record, "cpu_pct": "high"},
        "bool": {**record, "cpu_pct": True},
        "huge int": {**record, "cpu_pct": 10**30},
        "numpy float": {**record, "cpu_pct": np.float32(12.5)},
        "int label": {**record, "host": 7},
        "empty label": {**record, "host": "   "},
        "None label": {**record, "region": None},
    }


@pytest.mark.parametrize("name", list(record_variants({"cpu_pct": 0, "host": "", "region": ""})))
def test_unusual_records_score_as_the_table_path_does(fitted, name: str) -> None:
    bundle = fitted.bundle_
    good = normal_records(3)
    odd = record_variants(good[1])[name]
    records = [good[0], odd, good[2]]
    assert bundle.record_encoder.encode(records, passthrough=["request_id"]) is None
    for impute in (None, "median"):
        fast = score_records(bundle, records, impute=impute, passthrough=["request_id"])
        table = score_frame(
            bundle,
            pd.DataFrame.from_records(records),
            impute=impute,
            passthrough=["request_id"],
        )
        same_result(fast, table)


def test_unknown_and_missing_columns_are_refused_as_for_a_table(fitted) -> None:
    records = normal_records(2)
    records[0] = {**records[0], "surprise": 1}
    with pytest.raises(SchemaError, match=r"unknown column.*surprise"):
        score_records(fitted.bundle_, records)
    only = [{"cpu_pct": 1.0}]
    with pytest.raises(SchemaError, match="missing column"):
        score_records(fitted.bundle_, only)


def test_context_columns_encode_as_a_table_does(train_frame: pd.DataFrame) -> None:
    from detector.estimator import VAEDetector

    train = train_frame.head(600)
    detector = VAEDetector(model="cvae", context=("host",), **{**TINY, "epochs": 2}).fit(train)
    bundle = detector.bundle_
    records = train.head(6).to_dict("records")
    records[2] = {**records[2], "host": "new-host"}  # no context, flagged
    records[4] = {**records[4], "host": f" {records[4]['host']}"}  # padded, known
    batch = bundle.record_encoder.encode(records)
    assert batch is not None
    assert batch.context_unseen is not None and batch.context_unseen.tolist() == [
        False,
        False,
        True,
        False,
        False,
        False,
    ]
    same_result(score_records(bundle, records), score_frame(bundle, pd.DataFrame(records)))
    empty = [*records[:1], {**records[1], "host": ""}]
    assert bundle.record_encoder.encode(empty) is None
    same_result(score_records(bundle, empty), score_frame(bundle, pd.DataFrame(empty)))


def test_the_python_api_takes_one_record_or_a_list_of_them(fitted) -> None:
    records = normal_records(3)
    table = pd.DataFrame(records)
    same_result(fitted.score_records(records[0]), fitted.score_records(table.head(1)))
    # A row of a table, as iloc gives it, is one record too (it was "expected a 2-D table").
    same_result(fitted.score_records(table.iloc[0]), fitted.score_records(table.head(1)))
    same_result(fitted.score_records(records), fitted.score_records(table))
    np.testing.assert_array_equal(fitted.predict(records), fitted.predict(table))
    tagged = [{**r, "id": f"r-{i}"} for i, r in enumerate(records)]
    same_result(
        fitted.score_records(tagged, passthrough=["id"]),
        fitted.score_records(pd.DataFrame(tagged), passthrough=["id"]),
    )


def test_the_python_api_takes_an_unnamed_frame_and_names_a_wrong_shape() -> None:
    """``pd.DataFrame(array)`` names its columns 0, 1, 2: fitting it was a KeyError '0'. An
    array of the wrong width was pandas' 'Shape of passed values'; a MultiIndex a KeyError."""
    from detector.errors import DataError
    from detector.estimator import VAEDetector

    values = np.random.default_rng(0).normal(size=(120, 3))
    fitted = VAEDetector(**TINY).fit(pd.DataFrame(values))
    assert list(fitted.feature_names_in_) == ["0", "1", "2"]
    np.testing.assert_array_equal(
        fitted.anomaly_score(pd.DataFrame(values[:5])), fitted.anomaly_score(values[:5])
    )
    with pytest.raises(DataError, match=r"expected 3 columns \(0, 1, 2\) .* got 2"):
        fitted.anomaly_score(values[:5, :2])
    wide = pd.DataFrame(values, columns=pd.MultiIndex.from_product([["a"], ["x", "y", "z"]]))
    with pytest.raises(DataError, match=r"MultiIndex .* flatten them"):
        VAEDetector(**TINY).fit(wide)


def test_the_python_api_takes_a_sparse_matrix_and_says_how_to_shape_one_record() -> None:
    """A SciPy sparse matrix was "expected a 2-D table ..., got shape ()"; a 1-D array did
    not say what to do."""
    import scipy.sparse

    from detector.errors import DataError
    from detector.estimator import VAEDetector

    values = np.random.default_rng(0).normal(size=(120, 3))
    values[values < 0.5] = 0.0
    fitted = VAEDetector(**TINY).fit(scipy.sparse.csr_matrix(values))
    np.testing.assert_array_equal(
        fitted.anomaly_score(scipy.sparse.csr_matrix(values[:5])), fitted.anomaly_score(values[:5])
    )
    with pytest.raises(DataError, match=r"got shape \(3,\): one record is X.reshape\(1, -1\)"):
        fitted.anomaly_score(values[0])


def test_the_python_api_takes_records_from_a_generator_or_none_at_all(tmp_path) -> None:
    """A generator of records (as a stream yields them) was "expected a 2-D table ..., got
    shape ()"; no records, "got shape (0,)"; a path, "got shape ()"."""
    from detector.errors import DataError
    from detector.estimator import VAEDetector

    records = normal_records(200)
    frame = pd.DataFrame(records)
    fitted = VAEDetector(**TINY).fit(iter(records))
    assert fitted.anomaly_score(frame.head(0)).shape == (0,)
    np.testing.assert_array_equal(
        fitted.anomaly_score(r for r in records[:5]), fitted.anomaly_score(frame.head(5))
    )
    np.testing.assert_array_equal(
        fitted.anomaly_score(tuple(records[:5])), fitted.anomaly_score(frame.head(5))
    )
    assert fitted.predict([]).shape == (0,)
    assert fitted.score_records([]).n_input == 0
    with pytest.raises(DataError, match=r"got 'data.csv': read the file first, e.g. pd.read_csv"):
        fitted.predict("data.csv")
    with pytest.raises(DataError, match="expected a table of records, got None"):
        VAEDetector(**TINY).fit(None)


def test_many_fits_in_one_process_raise_no_retracing_warning(caplog) -> None:
    """After a few fits in one process (a grid search), TensorFlow warned that its functions
    were "retracing", as if the caller had made a mistake."""
    from detector.estimator import VAEDetector

    values = np.random.default_rng(0).normal(size=(60, 2))
    with caplog.at_level(logging.WARNING):
        for seed in range(4):
            VAEDetector(**{**TINY, "epochs": 1, "kl_warmup_epochs": 0, "random_state": seed}).fit(
                values
            )
    assert not [r for r in caplog.records if "retracing" in r.getMessage()]


def test_the_retracing_warning_is_filtered_whoever_imported_tensorflow_first() -> None:
    # A caller (or a test module) that ran `import keras` before the detector's first import
    # left TensorFlow's retracing warning on: the filter was added only on that first import.
    import logging

    import keras  # noqa: F401 - imported first, as a caller's notebook does

    from detector.native import _not_retracing, import_tensorflow_quietly

    import_tensorflow_quietly()
    assert _not_retracing in logging.getLogger("tensorflow").filters


def test_the_python_api_names_a_bad_impute_and_takes_one_passthrough_name(fitted) -> None:
    """impute='mean' was taken as no imputation; passthrough='id' as the columns 'i' and 'd'."""
    from detector.errors import ConfigError

    records = [{**r, "id": f"r-{i}"} for i, r in enumerate(normal_records(3))]
    with pytest.raises(ConfigError, match=r"impute='mean': give None .* or 'median'"):
        fitted.score_records(pd.DataFrame(records), impute="mean")  # type: ignore[arg-type]
    one = fitted.score_records(pd.DataFrame(records), passthrough="id")  # type: ignore[arg-type]
    listed = fitted.score_records(pd.DataFrame(records), passthrough=["id"])
    same_result(one, listed)  # before: 'id' unknown, as 'i' and 'd' were the passthrough


def test_one_value_given_bare_to_an_option_of_several_is_one() -> None:
    """categorical='host' named the columns 'h', 'o', 's', 't'; hidden_units=8 was a
    TypeError. Both mean a tuple of one."""
    from detector.estimator import VAEDetector

    frame = pd.DataFrame(normal_records(200))
    options = {k: v for k, v in TINY.items() if k != "hidden_units"}
    bare = VAEDetector(**options, categorical="hour", hidden_units=8).fit(frame)  # type: ignore[arg-type]
    assert "hour" in [c.name for c in bare.bundle_.schema.categorical]
    assert bare.summary_.hidden_units == (8,)


def test_the_python_result_names_labels_in_another_case_with_trainings_spelling(fitted) -> None:
    # 'US-EAST' where training saw 'us-east' scored as a region never seen: `anomaly score`
    # warned of it and the HTTP answer named training's spelling, while score_records' typed
    # result said nothing (only the encoder's batch held it). Table and records alike.
    records = normal_records(4)
    trained = records[1]["region"]
    records[1] = {**records[1], "region": trained.upper()}
    records[3] = {**records[3], "region": " " + records[3]["region"] + " "}  # spaces: matched
    for given in (records, pd.DataFrame(records)):
        result = fitted.score_records(given)
        (found,) = result.respelled
        assert (found.name, found.rows) == ("region", 1)
        assert found.examples == ((trained.upper(), trained),)
        assert result.category_spelling is not None
        assert f"column 'region': 1 value ({trained.upper()!r} for {trained!r})" in (
            result.category_spelling
        )
        assert result.to_dict()["category_spelling"] == result.category_spelling
    plain = fitted.score_records(normal_records(4))
    assert plain.respelled == () and plain.category_spelling is None
    assert "category_spelling" not in plain.to_dict()
