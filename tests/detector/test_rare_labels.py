"""A text column of more than ``MAX_CATEGORIES`` labels (a merchant, a country, a city): its
most frequent labels keep a slot each, the rest share one "rare" slot; an identifier is still
refused. Before, any such column stopped training as "looks like an identifier"."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from detector.bundles.bundle import load_bundle
from detector.cli.main import main
from detector.errors import DataError
from detector.features.encode import encode
from detector.features.record_encoder import RecordEncoder
from detector.features.schema import (
    MAX_CATEGORIES,
    Schema,
    fit_schema,
    label_spelling_warning,
)

TINY_FLAGS = ["--epochs", "3", "--hidden-units", "16", "--latent-dim", "2", "--quiet"]


def _zipf(n: int = 3_000, labels: int = 1_000, seed: int = 0) -> pd.DataFrame:
    """``n`` rows of two numbers and a merchant of ``labels`` labels drawn Zipf-like (the
    k-th most frequent with weight 1/k)."""
    rng = np.random.default_rng(seed)
    weights = 1.0 / np.arange(1, labels + 1)
    drawn = rng.choice(labels, size=n, p=weights / weights.sum())
    return pd.DataFrame(
        {
            "amount": rng.lognormal(3.0, 0.5, n),
            "x": rng.normal(size=n),
            "merchant": [f"m{i:04d}" for i in drawn],
        }
    )


def test_a_column_of_many_labels_keeps_its_most_frequent_and_shares_a_slot_for_the_rest() -> None:
    frame = _zipf()
    schema = fit_schema(frame)
    (merchant,) = schema.categorical
    counts = frame["merchant"].value_counts()
    assert len(merchant.categories) == MAX_CATEGORIES
    assert len(merchant.labels) == len(counts) > MAX_CATEGORIES
    assert merchant.width == MAX_CATEGORIES + 2  # the slotted labels, the rare one, unseen
    # The slotted labels are the most frequent: none rare is more frequent than one kept.
    assert counts[list(merchant.rare)].max() <= counts[list(merchant.categories)].min()
    assert merchant.mode == counts.index[0]
    rare_rows = counts[list(merchant.rare)].sum()
    assert merchant.rare_share == pytest.approx(rare_rows / len(frame))
    assert schema.describe_rare() == (
        f"column 'merchant': {len(counts):,} labels; the 200 most frequent have a slot each, "
        f"the other {len(counts) - 200:,} ({rare_rows / len(frame):.1%} of rows) share one",
    )


def test_labels_tied_at_the_cut_are_chosen_by_their_text() -> None:
    # 150 labels held by 3 rows, then 100 held by 2: 50 of the 2-row ones get a slot, the
    # first 50 by text whatever the rows' order.
    labels = [f"a{i:03d}" for i in range(150) for _ in range(3)]
    labels += [f"b{i:03d}" for i in range(100) for _ in range(2)]
    frame = pd.DataFrame({"v": np.arange(len(labels), dtype=float), "c": labels})
    shuffled = frame.sample(frac=1.0, random_state=1).reset_index(drop=True)
    ours, theirs = fit_schema(frame).categorical[0], fit_schema(shuffled).categorical[0]
    assert ours == theirs
    assert ours.rare == tuple(f"b{i:03d}" for i in range(50, 100))


def test_a_rare_training_label_takes_the_rare_slot_and_a_new_one_the_unseen_slot() -> None:
    schema = fit_schema(_zipf())
    (merchant,) = schema.categorical
    kept, rare = merchant.categories[0], merchant.rare[0]
    records = pd.DataFrame(
        {"amount": [20.0] * 3, "x": [0.0] * 3, "merchant": [kept, rare, "never-seen"]}
    )
    batch = encode(schema, records)
    group = batch.values[:, schema.n_numeric :]
    assert group.shape[1] == merchant.width
    assert np.flatnonzero(group[0]).tolist() == [0]
    assert np.flatnonzero(group[1]).tolist() == [MAX_CATEGORIES]  # the rare slot
    assert np.flatnonzero(group[2]).tolist() == [MAX_CATEGORIES + 1]  # the unseen slot
    plain = RecordEncoder(schema).encode(records.to_dict("records"))
    assert plain is not None
    np.testing.assert_array_equal(plain.values, batch.values)


def test_a_rare_label_in_another_case_is_named_by_both_encoders_and_at_training() -> None:
    schema = fit_schema(_zipf())
    rare = schema.categorical[0].rare[0]
    records = pd.DataFrame({"amount": [20.0], "x": [0.0], "merchant": [rare.upper()]})
    batch = encode(schema, records)
    assert [(f.name, f.examples) for f in batch.respelled] == [
        ("merchant", ((rare.upper(), rare),))
    ]
    plain = RecordEncoder(schema).encode(records.to_dict("records"))
    assert plain is not None and plain.respelled == batch.respelled
    assert np.flatnonzero(batch.values[0, schema.n_numeric :]).tolist() == [MAX_CATEGORIES + 1]
    frame = _zipf()
    frame.loc[:4, "merchant"] = rare.upper()  # a rare label written two ways in training
    warning = label_spelling_warning(fit_schema(frame))
    assert warning is not None and "'merchant' (" in warning
    assert repr(rare) in warning and repr(rare.upper()) in warning


def test_the_rare_labels_round_trip_as_json_and_a_table_without_them_is_written_as_before() -> None:
    schema = fit_schema(_zipf())
    state = json.loads(json.dumps(schema.to_dict()))
    assert Schema.from_dict(state) == schema
    assert set(state["categorical"][0]) == {"name", "categories", "mode", "rare", "rare_share"}
    few = fit_schema(_zipf(labels=50))
    assert set(few.to_dict()["categorical"][0]) == {"name", "categories", "mode"}
    assert few.categorical[0].rare == () and few.describe_rare() == ()


def test_an_identifier_is_still_refused_saying_why() -> None:
    frame = _zipf(n=600)
    frame["request_id"] = [f"req-{i}" for i in range(len(frame))]
    with pytest.raises(DataError) as err:
        fit_schema(frame)
    message = str(err.value)
    assert (
        "column 'request_id' has 600 distinct text values in 600 rows (over 200, and over 50% of "
        "the rows: most labels held by a row or two), which looks like an identifier; drop it"
    ) in message
    # Labels held by two rows each: half the rows, learned; by fewer, an identifier.
    frame["request_id"] = [f"req-{i // 2}" for i in range(len(frame))]
    assert fit_schema(frame).categorical[-1].name == "request_id"
    frame["request_id"] = [f"req-{i * 2 // 3}" for i in range(len(frame))]
    with pytest.raises(DataError, match="looks like an identifier"):
        fit_schema(frame)


def test_a_column_whose_rows_mostly_hold_rare_labels_is_refused_as_an_identifier() -> None:
    """Labels of two or three rows each pass the share of labels to rows above, yet leave
    nearly every row to the rare slot: a user id, as useless to the model as a row id."""
    frame = _zipf(n=1_500)
    frame["user"] = [f"u-{i * 2 // 5}" for i in range(len(frame))]  # 600 labels, 2-3 rows each
    with pytest.raises(DataError) as err:
        fit_schema(frame)
    assert (
        "column 'user' has 600 distinct text values whose 200 most frequent hold 40.0% of its "
        "1,500 rows (under 50%: most rows would share the rare labels' one slot), which looks "
        "like an identifier; drop it"
    ) in str(err.value)
    frame["user"] = [f"u-{i // 5}" if i < 1_000 else f"v-{i}" for i in range(len(frame))]
    (user,) = [c for c in fit_schema(frame).categorical if c.name == "user"]
    assert len(user.categories) == 200 and len(user.rare) == 500  # 1,000 of 1,500 rows slotted


def test_a_context_column_of_many_labels_is_refused_as_before() -> None:
    frame = _zipf()
    with pytest.raises(DataError, match=r"'merchant' has [0-9]+ distinct text values, which looks"):
        fit_schema(frame, context=["merchant"])


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("rare")
    _zipf().to_csv(folder / "train.csv", index=False)
    code = main(["train", str(folder / "train.csv"), "--out", str(folder / "m"), *TINY_FLAGS])
    assert code == 0
    return folder, folder / "m"


def test_training_info_and_manifest_say_which_labels_share_a_slot(
    trained: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    folder, model = trained
    frame = pd.read_csv(folder / "train.csv")
    counts = frame["merchant"].value_counts()
    said = (
        f"column 'merchant': {len(counts):,} labels; the 200 most frequent have a slot each, "
        f"the other {len(counts) - 200:,} ("
    )
    assert main(["train", str(folder / "train.csv"), "--out", str(folder / "m2"), *TINY_FLAGS]) == 0
    out = capsys.readouterr().out
    assert out.count(said) == 1
    assert main(["info", str(model)]) == 0
    assert capsys.readouterr().out.count(said) == 1
    manifest = json.loads((model / "manifest.json").read_text())
    (sentence,) = manifest["training"]["rare_labels"]
    assert sentence.startswith(said)
    (merchant,) = manifest["schema"]["categorical"]
    assert len(merchant["categories"]) == 200 and len(merchant["rare"]) == len(counts) - 200
    assert load_bundle(model).schema == fit_schema(frame)


def test_training_warns_that_the_rare_labels_may_cost_anomalies_found(
    trained: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """bench_rare_labels.py measured a long-tailed column kept costing AUPRC against leaving it
    out: the summary, info and the manifest say so, with the comparison to make."""
    folder, model = trained
    rare = len(pd.read_csv(folder / "train.csv")["merchant"].value_counts()) - 200
    warning = f"WARNING: column 'merchant': its {rare:,} rarest labels ("
    assert main(["info", str(model)]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if "rarest labels" in line]
    assert len(lines) == 1 and "--ignore-column" in lines[0] and "anomaly evaluate" in lines[0]
    (said,) = [w for w in load_bundle(model).training["warnings"] if "rarest labels" in w]
    assert warning.removeprefix("WARNING: ") in said
    assert main(["train", str(folder / "train.csv"), "--out", str(folder / "m3"), *TINY_FLAGS]) == 0
    assert capsys.readouterr().out.count(warning) == 1


def test_a_bundle_with_rare_labels_scores_them_after_a_save_and_load(
    trained: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    from detector.estimator import VAEDetector

    folder, model = trained
    schema = load_bundle(model).schema
    merchant = schema.categorical[0]
    rows = pd.DataFrame(
        {
            "amount": [20.0] * 3,
            "x": [0.0] * 3,
            "merchant": [merchant.categories[0], merchant.rare[0], "never-seen"],
        }
    )
    rows.to_csv(folder / "rows.csv", index=False)
    code = main(["score", str(model), str(folder / "rows.csv"), "--output", str(folder / "o.csv")])
    assert code == 0, capsys.readouterr().err
    scored = pd.read_csv(folder / "o.csv")
    api = VAEDetector.load(model).anomaly_score(rows)
    np.testing.assert_allclose(scored["anomaly_score"], api, rtol=1e-6)
    # Each slot scores as its own: a rare label is neither the kept one nor a label never seen.
    assert len(set(np.round(api, 6))) == 3


def test_a_sampled_row_holds_a_training_label_where_the_rare_slot_is_drawn(
    trained: tuple[Path, Path],
) -> None:
    """The rare labels' slot has no label of its own: drawn, it came back empty, a value no
    training row held. Now one of the rare labels; a label never seen is never drawn."""
    from detector.nn.sampling import sample_records

    _, model = trained
    bundle = load_bundle(model)
    (merchant,) = bundle.schema.categorical
    drawn = sample_records(bundle, 3_000, seed=0)["merchant"]
    assert drawn.notna().all()
    assert set(drawn) <= set(merchant.labels)
    assert set(drawn) & set(merchant.rare)  # the rare slot was drawn
    assert sample_records(bundle, 3_000, seed=0)["merchant"].equals(drawn)


def test_numbers_given_to_categorical_past_the_slots_are_told_to_be_modelled_as_numbers(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A count or a price given to --categorical with more values than slots trained with its
    rarest values in one slot, or was refused as an identifier, told only to leave it out."""
    frame = _zipf()
    frame["code"] = frame.pop("merchant").str[1:].astype(int)  # 608 whole numbers, Zipf-like
    frame.to_csv(tmp_path / "code.csv", index=False)
    args = ["--out", str(tmp_path / "m"), "--categorical", "code", *TINY_FLAGS]
    assert main(["train", str(tmp_path / "code.csv"), *args]) == 0
    (warning,) = [w for w in load_bundle(tmp_path / "m").training["warnings"] if "rarest" in w]
    assert "drop --categorical code to model it as a number" in warning
    capsys.readouterr()
    rng = np.random.default_rng(0)
    frame["price"] = rng.normal(100.0, 10.0, len(frame)).round(2)  # most values a row or two
    frame.drop(columns="code").to_csv(tmp_path / "price.csv", index=False)
    args = ["--out", str(tmp_path / "p"), "--categorical", "price", *TINY_FLAGS]
    assert main(["train", str(tmp_path / "price.csv"), *args]) == 2
    err = capsys.readouterr().err
    assert "distinct numbers (given to --categorical: each value a label)" in err
    assert "drop --categorical price to model it as a number, or leave it out" in err
    # A text column of as many labels is still an identifier to leave out.
    frame["price"] = "p" + frame["price"].astype(str)
    frame.drop(columns="code").to_csv(tmp_path / "text.csv", index=False)
    args = ["--out", str(tmp_path / "t"), "--categorical", "price", *TINY_FLAGS]
    assert main(["train", str(tmp_path / "text.csv"), *args]) == 2
    err = capsys.readouterr().err
    assert "which looks like an identifier; leave it out with --ignore-column price" in err
