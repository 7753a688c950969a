"""Schema learning, encoding, and what happens to bad input."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

from detector.errors import DataError, SchemaError
from detector.features.encode import Imputation, encode
from detector.features.encoded import NumberTally
from detector.features.schema import Schema, fit_schema


def _frame(n: int = 100) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    return pd.DataFrame(
        {
            "cpu": rng.normal(50, 10, n),
            "host": rng.choice(["a", "b", "c"], n),
            "flat": np.full(n, 3.0),
        }
    )


def test_fit_schema_infers_kinds_and_state() -> None:
    schema = fit_schema(_frame())
    assert [c.name for c in schema.numeric] == ["cpu", "flat"]
    assert [c.name for c in schema.categorical] == ["host"]
    assert schema.categorical[0].categories == ("a", "b", "c")
    assert schema.n_features == 2 + 4  # two numerics, three categories + "unseen"
    # A constant column keeps raw units instead of dividing by zero.
    assert schema.numeric[1].scale == 1.0


def test_range_floor_sets_the_scale_of_a_column_with_a_rare_value() -> None:
    # 99 zeros and one 8: std 0.80, range 8.
    frame = pd.DataFrame({"errors": np.r_[np.zeros(99), 8.0]})
    std = float(frame["errors"].std(ddof=0))
    assert fit_schema(frame, range_floor=0.0).numeric[0].scale == pytest.approx(std)
    assert fit_schema(frame).numeric[0].scale == pytest.approx(std)  # 0.05 * 8 < std
    assert fit_schema(frame, range_floor=0.25).numeric[0].scale == pytest.approx(2.0)


def test_a_column_near_the_float_limit_fits_a_finite_schema_that_round_trips() -> None:
    # Its squares, its sum and the mean of its two middle values overflowed (a bundle then
    # refused to load as "malformed"); pytest turns numpy's overflow warnings into failures.
    rng = np.random.default_rng(0)
    ordinary = rng.normal(3.0, 2.0, 300)
    frame = pd.DataFrame(
        {"huge": rng.normal(size=300) * 1e300,
         "edges": np.resize([-1.7e308, 1.7e308], 300),
         "ordinary": ordinary}
    )  # fmt: skip
    schema = fit_schema(frame, range_floor=0.05)
    for column in schema.numeric:
        values = [column.mean, column.scale, column.median, column.minimum, column.maximum]
        assert np.isfinite(values).all(), column
    huge, edges, plain = schema.numeric
    assert huge.scale == pytest.approx(float(np.std(frame["huge"] / 1e300)) * 1e300)
    assert (edges.mean, edges.median) == (0.0, 0.0)
    # An ordinary column's numbers are numpy's own, to the bit.
    assert (plain.mean, plain.scale) == (float(ordinary.mean()), float(ordinary.std()))
    assert Schema.from_dict(schema.to_dict()) == schema
    assert np.isfinite(encode(schema, frame).values).all()


def test_a_table_whose_every_column_is_constant_is_refused_before_training() -> None:
    frame = pd.DataFrame({"cpu": np.ones(60), "host": "a"})
    with pytest.raises(DataError, match=r"every column holds one value in all 60 rows "
                       r"\(cpu = 1, host = 'a'\): nothing tells"):  # fmt: skip
        fit_schema(frame)
    frame.loc[7, "cpu"] = 2.0  # one row that differs is something to learn
    assert fit_schema(frame).numeric[0].maximum == 2.0


def test_range_floor_outside_zero_to_one_is_refused() -> None:
    with pytest.raises(ValueError, match=r"range_floor 1.5 must be a fraction in \[0, 1\]"):
        fit_schema(_frame(), range_floor=1.5)


def test_schema_round_trips_through_json_dict() -> None:
    schema = fit_schema(_frame())
    assert Schema.from_dict(schema.to_dict()) == schema


def test_encode_standardises_and_one_hots() -> None:
    frame = _frame()
    schema = fit_schema(frame)
    batch = encode(schema, frame)
    assert batch.values.shape == (100, 6)
    assert abs(batch.values[:, 0].mean()) < 1e-5
    assert batch.values[:, 0].std() == pytest.approx(1.0, rel=1e-4)
    np.testing.assert_array_equal(batch.values[:, 2:].sum(axis=1), 1.0)


def test_missing_and_unknown_columns_are_named() -> None:
    schema = fit_schema(_frame())
    bad = _frame().drop(columns=["cpu"]).assign(extra=1)
    with pytest.raises(SchemaError) as err:
        encode(schema, bad)
    message = str(err.value)
    assert "missing column(s) ['cpu']" in message
    assert "unknown column(s) ['extra']" in message
    assert "passthrough=['extra']" in message
    assert "The model expects: cpu (number)" in message


def test_passthrough_columns_are_allowed() -> None:
    schema = fit_schema(_frame())
    batch = encode(schema, _frame().assign(id=1), passthrough=["id"])
    assert batch.accepted.all()


def test_bad_values_are_rejected_with_reasons_not_dropped() -> None:
    frame = _frame(5).astype({"cpu": object})
    schema = fit_schema(_frame())
    frame.loc[1, "cpu"] = "abc"
    frame.loc[2, "cpu"] = np.nan
    frame.loc[3, "cpu"] = np.inf
    frame.loc[4, "host"] = None
    batch = encode(schema, frame)
    assert batch.accepted.tolist() == [True, False, False, False, False]
    reasons = {r.row: r.reason for r in batch.rejections}
    assert "'abc' is not a number" in reasons[1]
    assert "empty" in reasons[2] and "impute='median'" in reasons[2]
    assert "infinite" in reasons[3]
    assert "'host' is empty" in reasons[4]
    mode = schema.categorical[0].mode
    assert reasons[4].endswith(f"impute='median', which fills {mode!r}, its most common label)")
    assert len(batch.values) + len(batch.rejections) == len(frame)


def test_numbers_written_as_spreadsheets_write_them_are_named_in_the_reason() -> None:
    # A European spreadsheet's '50,1': "not a number" alone left the user guessing why.
    # '12,500' reads either way: told as a decimal comma alone, a fraud helper's $12,500
    # payment became $12.50; '1,234.56' and '$12.00' were told nothing.
    # A formats helper's '12%', '12ms', '0x1A', a typographic minus and 'True' were told
    # "is not a number" alone.
    written = ["50,1", "1.234,5", "12,500", "1,234.56", "$1,200.50", "(€12.00)", "1\u202f234,5",
               "12%", "12 ms", "0x1A", "\u22125", "True"]  # fmt: skip
    frame = _frame(len(written)).astype({"cpu": object})
    frame["cpu"] = written
    reasons = [r.reason for r in encode(fit_schema(_frame()), frame).rejections]
    assert [r.split(" is not a number ")[1] for r in reasons] == [
        "(a decimal comma? write it as 50.1)",
        "(a decimal comma? write it as 1234.5)",
        "(thousands separators? write it as 12500; or a decimal comma? write it as 12.500)",
        "(thousands separators? write it as 1234.56)",
        "(an amount with its currency sign? write it as 1200.50)",
        "(an amount with its currency sign? write it as -12.00)",
        "(thousands separated by spaces? write it as 1234.5)",
        "(a percentage? write the number alone, 12, or 0.12 for a share)",
        "(a number with its unit? write the number alone: 12)",
        "(hexadecimal? write it in decimal: 26)",
        "(a typographic minus? write it as -5)",
        "(a truth value? write it as 1)",
    ]
    assert reasons[0] == "column 'cpu': '50,1' is not a number (a decimal comma? write it as 50.1)"


def test_impute_fills_missing_but_not_infinite() -> None:
    schema = fit_schema(_frame())
    frame = _frame(3)
    frame.loc[0, "cpu"] = np.nan
    frame.loc[1, "cpu"] = np.inf
    frame.loc[2, "host"] = None
    batch = encode(schema, frame, impute="median")
    assert batch.accepted.tolist() == [True, False, True]


@pytest.mark.parametrize("impute", [None, "median"])
def test_a_large_batch_encodes_as_its_rows_one_at_a_time(impute: Imputation) -> None:
    """A batch of many rows whose numbers are all plain (float or int) reads them at once, a
    record alone one column at a time: the same values, rejections, reasons and counts."""
    rng = np.random.default_rng(3)
    frame = _frame(200).assign(count=rng.integers(0, 9, 200))
    schema = fit_schema(frame)
    frame.loc[3, "cpu"] = np.nan
    frame.loc[7, "flat"] = np.inf
    frame.loc[9, "cpu"] = -np.inf
    frame.loc[9, "flat"] = np.nan
    batch = encode(schema, frame, impute=impute)
    rows = [encode(schema, frame.iloc[[i]], impute=impute) for i in range(len(frame))]
    np.testing.assert_array_equal(batch.values, np.vstack([r.values for r in rows]))
    assert batch.accepted.tolist() == [bool(r.accepted[0]) for r in rows]
    assert [(r.row, r.reasons) for r in batch.rejections] == [
        (i, one.rejections[0].reasons) for i, one in enumerate(rows) if one.rejections
    ]
    assert [c.numbers for c in batch.numbers] == [
        sum(r.numbers[j].numbers for r in rows) for j in range(len(batch.numbers))
    ]


def test_no_rows_encode_without_reading_any_column(monkeypatch: pytest.MonkeyPatch) -> None:
    # A service request whose records were all rejected encodes an empty table of text columns;
    # a series model's 231 window columns read one by one took 0.3 s a request for nothing.
    import detector.features.encode as encoding

    schema = fit_schema(_frame())

    def unread(series: pd.Series) -> None:
        raise AssertionError(f"column {series.name} read with no rows")

    monkeypatch.setattr(encoding, "_to_float", unread)
    empty = pd.DataFrame(columns=schema.column_order, dtype=object)
    batch = encode(schema, empty)
    assert batch.values.shape == (0, schema.n_features) and not batch.rejections
    assert [(c.name, c.numbers) for c in batch.numbers] == [("cpu", 0), ("flat", 0)]


def test_a_column_with_no_numbers_is_a_schema_error_of_the_whole_input() -> None:
    schema = fit_schema(_frame())
    frame = _frame(4).assign(cpu=["x", "y", "z", "w"])
    # A batch alone rejects each row, however many share the problem ...
    batch = encode(schema, frame)
    assert not batch.accepted.any()
    assert "'x' is not a number" in batch.rejections[0].reason
    # ... and whether the column holds no numbers is decided over the whole input.
    tally = NumberTally()
    tally.add(batch)
    tally.add(encode(schema, _frame(2).assign(cpu=["", "v"])))
    with pytest.raises(
        SchemaError, match=re.escape("in.csv: column 'cpu' holds no numbers (e.g. 'x'; 5")
    ):
        tally.check("in.csv")
    tally.add(encode(schema, _frame(1)))
    tally.check("in.csv")  # one number in the input: each bad row was rejected, no more


@pytest.mark.parametrize(
    ("labels", "given", "slot"),
    [
        (["True", "False"], ["yes", "N", 1, 0, "1", 0.0, True, "OFF"], [1, 0, 1, 0, 1, 0, 1, 0]),
        (["yes", "no"], ["TRUE", "f", 1, "Yes"], [1, 0, 1, 1]),
        (["1", "2", "3"], ["yes", "true"], [3, 3]),  # not a flag: no boolean words
        (["True", "False", "maybe"], ["yes"], [3]),
    ],
)
def test_a_flag_written_another_way_is_the_same_flag(labels, given, slot) -> None:
    # A fraud helper's is_3ds sent as 'yes' or 1 scored 35.8 (an unseen category) against
    # 0.39 for 'true'; a security helper's bool column scored from a CSV's 0/1 likewise.
    schema = fit_schema(pd.DataFrame({"flag": labels * 20, "v": np.arange(len(labels) * 20)}))
    (column,) = schema.categorical
    batch = encode(schema, pd.DataFrame({"flag": given, "v": 1.0}))
    found = batch.values[:, schema.n_numeric :].argmax(axis=1)
    known = [column.categories.index(labels[0]), column.categories.index(labels[1])]
    expected = [len(column.categories) if s == 3 else known[1 - s] for s in slot]
    assert found.tolist() == expected


def test_a_label_of_digits_read_as_a_float_is_its_label() -> None:
    # A platform helper's hour (--categorical) read from Parquet as 7.0: every row was the
    # unseen '7.0' and scored 22 (flagged); a label '7.0' that training saw stays itself.
    given = pd.DataFrame({"hour": [7.0, np.float32(8.0), 7.5, np.inf], "v": 1.0})
    for labels, expected in ((["7", "8"], ["7", "8"]), (["7.0", "8"], ["7.0", "8"])):
        frame = pd.DataFrame({"hour": labels * 30, "v": np.arange(60.0)})
        schema = fit_schema(frame, categorical=("hour",))
        (column,) = schema.categorical
        found = encode(schema, given).values[:, schema.n_numeric :].argmax(axis=1)
        unseen = len(column.categories)
        assert found.tolist() == [*map(column.categories.index, expected), unseen, unseen]


def test_unseen_category_takes_the_unseen_slot() -> None:
    schema = fit_schema(_frame())
    batch = encode(schema, _frame(1).assign(host="zzz"))
    assert batch.accepted.all()
    assert batch.values[0, -1] == 1.0  # the last slot of the host group


def test_respelled_values_are_those_training_spellings_names_once_each() -> None:
    # The service's per-record check, decided on a column's distinct values: the same labels
    # as asking of each value, none for labels as trained, numbers, lists or None.
    from detector.features.schema import respelled_values, training_spellings

    labels = ("a", "b", "Straße")
    given = ["A", "a", " B ", "A", "zzz", 3, None, ["a"], "STRASSE", "b"]
    asked = dict(zip(given[:5], training_spellings(labels, given[:5]), strict=True))
    expected = {value: trained for value, trained in asked.items() if trained}
    assert expected == {"A": "a", " B ": "b"}
    assert respelled_values(labels, given) == {**expected, "STRASSE": "Straße"}
    assert respelled_values(labels, ["a", "b", "a"]) == {}
    assert respelled_values(labels, []) == {}


def test_a_label_in_another_case_stays_unseen_and_is_counted_alike_by_both_encoders() -> None:
    # 'A' where training saw 'a' scored as a host never seen, silently. It stays unseen (a
    # changed label may be the anomaly), and the batch says so, from a table or records.
    from detector.features.encoded import SpellingTally
    from detector.features.record_encoder import RecordEncoder

    schema = fit_schema(_frame())
    given = _frame(5).assign(host=["A", " B ", "a", "zzz", "A"])
    batch = encode(schema, given)
    assert batch.values[:, -1].tolist() == [1.0, 1.0, 0.0, 1.0, 1.0]  # the unseen slot
    (found,) = batch.respelled
    # The values in sorted order (as given: ' B ' before 'A'), the same few whatever the batches.
    assert (found.name, found.rows, found.examples) == ("host", 3, ((" B ", "b"), ("A", "a")))
    fast = RecordEncoder(schema).encode(given.to_dict("records"))
    assert fast is not None and fast.respelled == batch.respelled
    assert encode(schema, _frame(5)).respelled == ()
    tally = SpellingTally()
    tally.add(batch)
    tally.add(batch)
    warning = tally.warning()
    assert warning is not None
    assert "column 'host': 6 values (' B ' for 'b', 'A' for 'a')" in warning
    assert "write it as training did" in warning


def test_training_labels_differing_only_in_case_are_named_at_training() -> None:
    # 'A' and 'a' in one training table were two categories, unsaid: rows written one way
    # scored as unusual against those written the other (one value exported two ways).
    from detector.estimator import VAEDetector
    from detector.features.schema import label_spelling_warning
    from tests.conftest import TINY

    assert label_spelling_warning(fit_schema(_frame())) is None
    frame = _frame(300)
    frame.loc[::3, "host"] = frame.loc[::3, "host"].str.upper()
    warning = label_spelling_warning(fit_schema(frame))
    assert warning is not None
    assert "column 'host' ('A' and 'a', 'B' and 'b', 'C' and 'c')" in warning
    assert "each was learned as a category of its own" in warning
    summary = VAEDetector(**TINY).fit(frame).summary_
    assert warning in summary.warnings


def test_a_boolean_column_matches_its_labels_however_a_scored_file_spells_them(
    tmp_path,
) -> None:
    # pandas reads a training CSV's true/false as booleans, labelled 'True'/'False'; a file
    # or request scored later gives 'true' as written: every row was an unseen category.
    from detector.features.record_encoder import RecordEncoder
    from detector.io.frames import read_table

    path = tmp_path / "flags.csv"
    path.write_text(
        "flag,v\n" + "".join(f"{f},{i % 7}\n" for i, f in enumerate(["true", "false"] * 40))
    )
    schema = fit_schema(read_table(path))
    assert schema.categorical[0].categories == ("False", "True")
    spelled = pd.DataFrame({"flag": ["true", "FALSE", " True ", "False", "maybe"], "v": 1.0})
    batch = encode(schema, spelled)
    group = batch.values[:, schema.n_numeric :]
    assert group.tolist()[:4] == [[0, 1, 0], [1, 0, 0], [0, 1, 0], [1, 0, 0]]
    assert group[4].tolist() == [0, 0, 1]  # not a boolean word: unseen, as before
    fast = RecordEncoder(schema).encode(spelled.to_dict("records"))
    assert fast is not None
    np.testing.assert_array_equal(fast.values, batch.values)


def test_training_data_problems_are_reported_with_the_fix() -> None:
    frame = _frame()
    frame.loc[3, "cpu"] = np.nan
    frame["id"] = [f"row-{i}" for i in range(len(frame))]
    frame["id"] = frame["id"].astype(str)
    with pytest.raises(DataError) as err:
        fit_schema(
            pd.concat([frame] * 3, ignore_index=True).assign(id=lambda f: f.index.astype(str))
        )
    message = str(err.value)
    assert "column 'cpu' has 3 empty/NaN/inf values (first at row 4)" in message  # 1-based
    assert "drop it from the data" in message


def test_a_timestamp_column_is_pointed_at_the_series_mode_not_called_an_identifier() -> None:
    frame = pd.concat([_frame()] * 3, ignore_index=True)
    frame["when"] = pd.date_range("2026-01-01", periods=len(frame), freq="min").astype(str)
    with pytest.raises(DataError) as err:
        fit_schema(frame)
    message = str(err.value)
    assert "column 'when' holds times ('2026-01-01 00:00:00', ...)" in message
    assert "time_column='when'" in message and "identifier" not in message
    frame["when"] = [f"row-{i}" for i in range(len(frame))]  # ids stay ids
    with pytest.raises(DataError, match="looks like an identifier"):
        fit_schema(frame)


def test_too_few_rows_is_a_data_error() -> None:
    with pytest.raises(DataError, match="at least 30"):
        fit_schema(_frame(10))


def test_context_columns_are_encoded_after_the_features_and_not_modelled() -> None:
    frame = _frame().assign(rack=lambda f: np.where(f.index % 2, 7, 9))
    schema = fit_schema(frame, context=["host", "rack"])
    assert [c.name for c in schema.categorical] == []
    assert schema.feature_columns == ("cpu", "flat")
    assert schema.scored_columns == ("cpu", "flat")
    assert schema.context_sizes == (3, 2)  # no "unseen" slot: an unseen value is all zeros
    assert schema.n_features == 2 + 3 + 2
    assert "host (context (3 known))" in schema.describe()
    batch = encode(schema, frame.head(2).assign(host=["b", "zzz"], rack=["9", 9]))
    np.testing.assert_array_equal(batch.values[:, 2:], [[0, 1, 0, 0, 1], [0, 0, 0, 0, 1]])
    assert batch.context_unseen is not None
    assert batch.context_unseen.tolist() == [False, True]
    assert encode(fit_schema(_frame()), _frame(2)).context_unseen is None


def test_context_round_trips_and_older_schemas_have_none() -> None:
    schema = fit_schema(_frame(), context=["host"])
    assert Schema.from_dict(schema.to_dict()) == schema
    state = fit_schema(_frame()).to_dict()
    del state["context"]
    assert Schema.from_dict(state).context == ()


def test_context_columns_must_exist_and_leave_something_to_model() -> None:
    with pytest.raises(SchemaError, match=r"context names columns not in the data: \['nope'\]"):
        fit_schema(_frame(), context=["nope"])
    with pytest.raises(SchemaError, match="at least one column to model"):
        fit_schema(_frame()[["host"]], context=["host"])


def test_a_value_of_the_wrong_type_is_named_as_written() -> None:
    # A JSON true in a number column arrives as a bool column: the reason says True, not
    # numpy's np.True_.
    schema = fit_schema(_frame())
    frame = _frame(2).assign(cpu=[True, False])
    reasons = [r.reason for r in encode(schema, frame).rejections]
    assert reasons == ["column 'cpu': True is not a number", "column 'cpu': False is not a number"]


def test_a_misspelled_column_is_named_with_its_likely_fix() -> None:
    # Named only as one missing and one unknown column, the fix offered was to keep the typo.
    from detector.errors import SchemaError
    from detector.features.encode import check_columns

    values = np.arange(40.0)
    schema = fit_schema(pd.DataFrame({"cpu_pct": values, "mem_pct": values % 7}))
    with pytest.raises(SchemaError, match=r"rename 'cpu_pc' to 'cpu_pct'"):
        check_columns(schema, ["cpu_pc", "mem_pct"])
    with pytest.raises(SchemaError) as err:
        check_columns(schema, ["load", "mem_pct"])  # nothing alike: no rename offered
    assert "rename" not in str(err.value)
    # A header in capitals was told to keep CPU_PCT unscored, which left cpu_pct missing.
    with pytest.raises(SchemaError) as err:
        check_columns(schema, ["CPU_PCT", "mem_pct"])
    assert "['CPU_PCT'] differ from the model's ['cpu_pct'] only in case: rename" in str(err.value)
    assert "keep-column" not in str(err.value) and "passthrough" not in str(err.value)


def test_accented_labels_and_names_match_in_either_unicode_form() -> None:
    # 2026-12-07: 'wéb-01' with its accent as a character of its own (NFD, as some macOS tools
    # write text) looked like the training label and took the unseen slot, flagged.
    import unicodedata

    from detector.features.encode import check_columns
    from detector.features.record_encoder import RecordEncoder

    def nfd(text: str) -> str:
        return unicodedata.normalize("NFD", text)

    values = np.arange(40.0)
    hosts = ["wéb-01", "db-02"] * 20
    for labels in (hosts, [nfd(h) for h in hosts]):  # trained in either form
        schema = fit_schema(pd.DataFrame({"host": labels, "rate ü": values}))
        scored = pd.DataFrame(
            {"host": ["wéb-01", nfd("wéb-01"), f" {nfd('wéb-01')} ", "web-01"], "rate ü": 1.0}
        )
        batch = encode(schema, scored)
        slot = schema.categorical[0].categories.index(labels[0])
        group = batch.values[:, schema.n_numeric :]
        assert group[:3, slot].tolist() == [1.0, 1.0, 1.0]
        assert group[3, -1] == 1.0  # another name: unseen, as before
        fast = RecordEncoder(schema).encode(scored.to_dict("records"))
        assert fast is not None
        np.testing.assert_array_equal(fast.values, batch.values)
    with pytest.raises(SchemaError) as err:
        check_columns(schema, ["host", nfd("rate ü")])
    assert "in another Unicode form" in str(err.value) and "rename '" not in str(err.value)


def test_a_heavy_tailed_column_is_fitted_as_its_logarithm_and_round_trips() -> None:
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(
        {
            "amount": rng.lognormal(3.0, 1.5, 400),  # largest ~100x the median, skewed ~15
            "refund": -rng.lognormal(3.0, 1.5, 400),  # negative: not taken as a logarithm
            "cpu": rng.normal(50, 5, 400),
        }
    )
    schema = fit_schema(frame)
    logs = {c.name: c.log for c in schema.numeric}
    assert logs == {"amount": True, "refund": False, "cpu": False}
    assert not any(c.log for c in fit_schema(frame, log_tails=False).numeric)
    state = schema.to_dict()
    # Written only where set: a column as it is reads as in bundles from before.
    assert [("log" in c) for c in state["numeric"]] == [True, False, False]
    assert Schema.from_dict(state) == schema
    # A negative amount (a refund) where training saw none: a number, far below the range.
    probe = frame.head(2).assign(amount=[-500.0, 0.0])
    values = encode(schema, probe).values[:, 0]
    assert values[0] < values[1] < encode(schema, frame).values[:, 0].min() + 1e-6
