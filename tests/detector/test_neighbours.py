"""The neighbour bank: exact distances, the column weights, its file, and the default score."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pandas as pd
import pytest

from detector.bundles.format import NEIGHBOURS_FILE
from detector.errors import BundleError, ConfigError
from detector.estimator import VAEDetector
from detector.features.encode import encode
from detector.features.schema import fit_schema
from detector.scoring.neighbours import (
    DEFAULT_FAR_WEIGHT,
    DEFAULT_LOCAL_FLOOR,
    DEFAULT_LOCAL_WEIGHT,
    TABLE_LOCAL_CEILING,
    TABLE_LOCAL_FLOOR,
    TABLE_LOCAL_WEIGHT,
    NeighbourBank,
    column_weights,
)
from tests.conftest import TINY


def _table(n: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "a": rng.normal(0.0, 1.0, n),
            # Nearly always 0: its standard deviation is tiny against its range.
            "rare": np.where(rng.random(n) < 0.02, 10.0, 0.0),
            "kind": rng.choice(["x", "y"], n),
        }
    )


def test_weights_raise_each_scale_to_a_quarter_of_the_range() -> None:
    frame = _table(500)
    frame["flat"] = 3.0
    schema = fit_schema(frame)
    weights = column_weights(schema, 0.25)
    by_name = {c.name: (j, c) for j, c in enumerate(schema.numeric)}
    j, rare = by_name["rare"]
    assert weights[j] == pytest.approx(rare.scale / (0.25 * (rare.maximum - rare.minimum)))
    assert weights[j] < 1.0
    j, normal = by_name["a"]
    assert weights[j] == pytest.approx(
        normal.scale / max(normal.scale, 0.25 * (normal.maximum - normal.minimum))
    )
    # A constant column keeps weight 1; one-hot slots are never reweighted.
    assert weights[by_name["flat"][0]] == 1.0
    assert (weights[schema.n_numeric :] == 1.0).all()


def _outside(bank: NeighbourBank, rows: np.ndarray) -> np.ndarray:
    """How far each of ``rows``' weighted values lies beyond the bank's bounds (0 within)."""
    weighted = rows.astype(np.float64) * bank.weights
    return np.maximum(weighted - bank.upper, 0) + np.maximum(bank.lower - weighted, 0)


def test_distances_are_the_mean_of_the_k_nearest_by_brute_force() -> None:
    frame = _table(400)
    schema = fit_schema(frame)
    x = encode(schema, frame).values
    bank = NeighbourBank.fit(schema, x[:300], x[300:350], np.zeros(50), k=3)
    # Held-out rows, and two of them with column "a" moved 3 standard deviations up.
    query = np.vstack([x[350:], x[350:352] + 3.0 * (np.arange(x.shape[1]) == 0)])
    weighted_bank = x[:300] * bank.weights
    weighted_query = np.clip(query * bank.weights, bank.lower, bank.upper)
    full = np.sqrt(((weighted_query[:, None, :] - weighted_bank[None]) ** 2).sum(-1))
    low, high = np.quantile(np.clip(weighted_bank, bank.lower, bank.upper), [0.005, 0.995], axis=0)
    beyond = np.maximum(weighted_query - high, 0) + np.maximum(low - weighted_query, 0)
    box = beyond.sum(axis=1)
    assert box.max() > 0  # some query rows lie outside the box, so the term is tested
    # Past the bounds the search and the box see a clipped value; the term beyond sees it all.
    outside = _outside(bank, query)
    assert outside.max() > 0
    expected = np.sort(full, axis=1)[:, :3].mean(axis=1) + 0.5 * box
    expected += DEFAULT_FAR_WEIGHT * np.log1p(outside).sum(axis=1)
    # Both search paths: one record at a time (numpy) and the whole batch (scikit-learn).
    # float32 tails: the box term is rounded at 1e-7 of its size
    np.testing.assert_allclose(bank.distances(query), expected, rtol=1e-5)
    alone = np.array([bank.distances(query[[i]])[0] for i in range(len(query))])
    np.testing.assert_array_equal(alone, bank.distances(query))


def test_leave_one_out_judges_each_row_against_the_box_of_the_others() -> None:
    """A small table calibrates on its own rows, each measured against the others: against
    the others' box too, since a row is never beyond a box drawn around itself, and a new row
    can be (scikit-learn's small tables flagged 3.6% of new normals at a 1% target)."""
    frame = _table(60, seed=2)
    schema = fit_schema(frame)
    x = encode(schema, frame).values
    bank = NeighbourBank.fit(schema, x, x, np.zeros(60), k=3, leave_one_out=True)
    weighted = np.clip(x * bank.weights, bank.lower, bank.upper).astype(np.float32)
    full = np.sqrt(((weighted[:, None, :] - weighted[None]) ** 2).sum(-1))
    np.fill_diagonal(full, np.inf)
    expected = []
    for i in range(len(x)):
        low, high = np.quantile(np.delete(weighted, i, axis=0), [0.005, 0.995], axis=0)
        beyond = np.maximum(weighted[i] - high, 0) + np.maximum(low - weighted[i], 0)
        expected.append(np.sort(full[i])[:3].mean() + 0.5 * beyond.sum())
    measured = bank.part_distances(x, leave_one_out=True)[0]
    np.testing.assert_allclose(measured, expected, rtol=1e-5, atol=1e-6)
    # Each column's extreme rows lie beyond the others' box: the term is tested.
    assert (measured > np.sort(full, axis=1)[:, :3].mean(axis=1) + 1e-3).sum() >= 2


def test_a_column_far_beyond_its_range_adds_only_the_margin_to_the_search_and_box() -> None:
    frame = _table(300)
    schema = fit_schema(frame)
    x = encode(schema, frame).values
    bank = NeighbourBank.fit(schema, x[:200], x[200:], np.zeros(100), margin=0.5, far_weight=0)
    top = frame["a"].max()
    row = frame.head(1)
    probes = encode(schema, pd.concat([row] * 3).assign(a=[top, top + 1e3, top + 1e6]))
    far = bank.distances(probes.values, overflow=probes.overflow)
    # Clipped at the widened range: a thousand or a million beyond it is the same distance.
    assert far[1] == far[2]
    j = schema.numeric.index(next(c for c in schema.numeric if c.name == "a"))
    assert bank.lower[j] < probes.values[0, j] * bank.weights[j] <= bank.upper[j] - 0.5 + 1e-6
    assert far[1] > far[0]


def test_a_column_beyond_its_bounds_counts_more_the_farther_it_lies_ever_less() -> None:
    frame = _table(300)
    schema = fit_schema(frame)
    x = encode(schema, frame).values
    bank = NeighbourBank.fit(schema, x[:200], x[200:], np.zeros(100), margin=0.5)
    clipped = dataclasses.replace(bank, far_weight=0.0)
    j, a = next((i, c) for i, c in enumerate(schema.numeric) if c.name == "a")
    values = np.array([a.maximum, a.maximum + 3.0, a.maximum + 1e3, a.maximum + 1e6])
    probes = encode(schema, pd.concat([frame.head(1)] * 4).assign(a=values))
    # The two largest lie beyond the encoding's +-10 too: it says how far they were.
    assert probes.overflow is not None
    np.testing.assert_array_equal(probes.overflow[:2, j], 0.0)
    assert (probes.overflow[2:, j] > 0).all()
    before = clipped.distances(probes.values, overflow=probes.overflow)
    after = bank.distances(probes.values, overflow=probes.overflow)
    # Within the bounds, nothing changes; beyond them each step adds, log-compressed.
    assert after[0] == before[0]
    beyond = (values - a.mean) / a.scale * bank.weights[j] - bank.upper[j]
    assert beyond[0] < 0 < beyond[1]
    np.testing.assert_allclose(
        after[1:] - before[1:], DEFAULT_FAR_WEIGHT * np.log1p(beyond[1:]), rtol=1e-5
    )
    assert after[1] < after[2] < after[3] < after[1] + 2
    # Without the overflow the encoding's clip would hide how far the last two were.
    hidden = bank.distances(probes.values)
    assert hidden[2] == hidden[3] < after[2]
    # It is the column blamed, and a record scores the same alone as in the batch.
    terms = bank.scores(probes.values, {}, overflow=probes.overflow)["knn_terms"]
    assert (terms[1:].argmax(axis=1) == j).all()
    alone = encode(schema, probes_frame := pd.concat([frame.head(1)]).assign(a=values[3]))
    assert len(probes_frame) == 1
    assert bank.distances(alone.values, overflow=alone.overflow)[0] == after[3]


def test_far_weight_is_a_training_option_kept_in_the_bundle(tmp_path) -> None:
    # A security helper's src_bytes of 1e15 (training's largest 7.7e6) scored 4.10 against a
    # threshold of 7.95: a team that wants such a value to alarm can say how much it counts.
    frame = _table(300)
    default = VAEDetector(**{**TINY, "epochs": 1}).fit(frame)
    strong = VAEDetector(**{**TINY, "epochs": 1}, far_weight=2.0).fit(frame)
    assert default.bundle_.neighbours.far_weight == DEFAULT_FAR_WEIGHT
    strong.save(tmp_path / "strong")
    loaded = VAEDetector.load(tmp_path / "strong")
    assert loaded.bundle_.neighbours.far_weight == 2.0
    a = next(c for c in default.bundle_.schema.numeric if c.name == "a")
    probe = frame.head(2).assign(a=[a.maximum, a.maximum + 1e6 * a.scale])
    lift = [d.anomaly_score(probe) for d in (default, loaded)]
    assert lift[1][0] == pytest.approx(lift[0][0], rel=0.2)  # within the range: alike
    assert lift[1][1] - lift[1][0] > 5 * (lift[0][1] - lift[0][0]) > 0
    with pytest.raises(ConfigError, match=r"far_weight -1\.0 must be 0 or more"):
        VAEDetector(**TINY, far_weight=-1.0).fit(frame)


def test_the_encoding_says_how_far_a_value_lay_beyond_its_clip() -> None:
    frame = _table(300)
    schema = fit_schema(frame)
    assert encode(schema, frame).overflow is None  # the usual batch: nothing to carry
    a = next(c for c in schema.numeric if c.name == "a")
    probe = frame.head(3).assign(a=[a.mean - 25 * a.scale, None, a.mean + 12 * a.scale])
    probe.loc[1, "a"] = a.mean + 1e9 * a.scale
    probe.loc[0, "rare"] = None  # rejected: its row is not in the overflow
    batch = encode(schema, probe)
    assert batch.overflow is not None and batch.overflow.shape == (2, schema.n_numeric)
    j = schema.numeric.index(a)
    np.testing.assert_allclose(batch.overflow[:, j], [1e9 - schema.clip, 2.0], rtol=1e-5)


def test_a_bank_row_is_at_distance_zero_from_itself() -> None:
    frame = _table(200)
    schema = fit_schema(frame)
    x = encode(schema, frame).values
    bank = NeighbourBank.fit(schema, x[:150], x[150:], np.zeros(50), k=1)
    np.testing.assert_allclose(bank.neighbours(x[:20])[0], 0.0, atol=1e-6)
    # Inside the normal rows' box the distance is the neighbours' alone.
    inside = (x[:150] * bank.weights >= bank.box_low) & (x[:150] * bank.weights <= bank.box_high)
    rows = x[:150][inside.all(axis=1)]
    assert len(rows) > 100
    np.testing.assert_allclose(bank.distances(rows), 0.0, atol=1e-6)


def test_the_bank_tells_its_own_rows_from_others_and_says_where_its_rows_repeat() -> None:
    # `anomaly evaluate` counts the scored rows that are training rows by these.
    frame = _table(200)
    schema = fit_schema(frame)
    x = encode(schema, frame).values
    bank = NeighbourBank.fit(schema, x[:150], x[150:], np.zeros(50), k=1)
    assert bank.kept(x[:150]).all() and not bank.kept(x[150:]).any()
    assert bank.repeated == 0.0
    few = encode(schema, frame.assign(a=0.0, rare=0.0)).values  # two distinct rows, repeated
    assert NeighbourBank.fit(schema, few[:150], few[150:], np.zeros(50), k=1).repeated > 0.9


def test_one_column_beyond_the_box_adds_its_weighted_excess() -> None:
    frame = _table(400)
    schema = fit_schema(frame)
    x = encode(schema, frame).values
    bank = NeighbourBank.fit(schema, x[:300], x[300:], np.zeros(100), k=1)
    j = next(i for i, c in enumerate(schema.numeric) if c.name == "a")
    # A bank row with "a" moved past the box's top: its own row is still its nearest.
    row = x[[int(np.argmax(x[:300, j]))]].copy()
    excess = float(row[0, j] * bank.weights[j] - bank.box_high[j])
    assert excess > 0
    alone = NeighbourBank.fit(schema, x[:300], x[300:], np.zeros(100), k=1, box_weight=0.0)
    assert bank.distances(row)[0] == pytest.approx(alone.distances(row)[0] + 0.5 * excess)
    # It is also the column blamed: its share of the attribution terms.
    terms = bank.scores(row, {})["knn_terms"][0]
    assert terms[j] == pytest.approx((0.5 * excess) ** 2, rel=1e-5)


def _saved_without(prefix: str, **fit: Any) -> tuple[np.ndarray, NeighbourBank, NeighbourBank]:
    """Encoded rows, a bank of them (``NeighbourBank.fit`` with ``fit``), and that bank saved
    without its arrays named ``prefix...`` (as a bank from before they existed) and loaded
    again."""
    import io

    frame = _table(200)
    schema = fit_schema(frame)
    x = encode(schema, frame).values
    bank = NeighbourBank.fit(schema, x[:150], x[150:], np.zeros(50), **fit)
    with np.load(io.BytesIO(bank.to_bytes()), allow_pickle=False) as arrays:
        old = {k: arrays[k] for k in arrays.files if not k.startswith(prefix)}
    buffer = io.BytesIO()
    np.savez(buffer, **old)
    return x, bank, NeighbourBank.from_bytes(buffer.getvalue(), schema.n_features)


def test_a_bank_saved_before_the_box_scores_as_it_did() -> None:
    x, bank, legacy = _saved_without("box_")
    np.testing.assert_array_equal(legacy.distances(x), bank.neighbours(x)[0].mean(axis=1))


def test_parts_are_each_part_s_distance_standardised_then_summed() -> None:
    frame = _table(400)
    schema = fit_schema(frame)
    x = encode(schema, frame).values
    parts = np.ones((2, schema.n_features), dtype=bool)
    parts[0, 1:] = False  # column "a" alone, then every column
    bank = NeighbourBank.fit(schema, x[:300], x[300:350], np.zeros(50), k=3, parts=parts)
    query = np.vstack([x[350:], x[350:352] + 3.0 * (np.arange(x.shape[1]) == 0)])

    def brute(columns: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """The plain distance on ``columns`` alone, by brute force."""
        weighted = np.clip(rows * bank.weights, bank.lower, bank.upper)[:, columns]
        reference = (x[:300] * bank.weights)[:, columns]
        full = np.sqrt(((weighted[:, None, :] - reference[None]) ** 2).sum(-1))
        low, high = bank.box_low[columns], bank.box_high[columns]
        box = (np.maximum(weighted - high, 0) + np.maximum(low - weighted, 0)).sum(axis=1)
        far = bank.far_weight * np.log1p(_outside(bank, rows)[:, columns]).sum(axis=1)
        return np.sort(full, axis=1)[:, :3].mean(axis=1) + 0.5 * box + far

    for p, columns in enumerate(parts):
        at_val = brute(columns, x[300:350])
        assert bank.part_location[p] == pytest.approx(np.median(at_val), rel=1e-5)
        iqr = np.subtract(*np.percentile(at_val, [75, 25]))
        assert bank.part_scale[p] == pytest.approx(iqr, rel=1e-4)
    expected = sum(
        (brute(columns, query) - bank.part_location[p]) / bank.part_scale[p]
        for p, columns in enumerate(parts)
    )
    np.testing.assert_allclose(bank.distances(query), expected, rtol=1e-4, atol=1e-5)
    alone = np.array([bank.distances(query[[i]])[0] for i in range(len(query))])
    np.testing.assert_array_equal(alone, bank.distances(query))
    # Column "a" is in both parts, so it takes both parts' share of the blame.
    terms = bank.scores(query[-1:], {})["knn_terms"][0]
    assert int(np.argmax(terms)) == 0
    again = NeighbourBank.from_bytes(bank.to_bytes(), schema.n_features)
    np.testing.assert_array_equal(again.distances(query), bank.distances(query))
    with pytest.raises(ValueError, match="a column in each"):
        NeighbourBank.fit(schema, x[:300], x[300:], np.zeros(100), parts=parts[:, :2])


def test_a_part_may_search_fewer_bank_rows_spread_over_the_bank() -> None:
    """``part_rows``: the second part searches every third of the 300 bank rows (at most 100),
    so its distance is the brute-force one to those rows alone; the first part every row.
    The cap survives the file, and a bank saved before it searches every row."""
    frame = _table(400)
    schema = fit_schema(frame)
    x = encode(schema, frame).values
    parts = np.ones((2, schema.n_features), dtype=bool)
    parts[1, 1:] = False  # column "a" alone
    bank = NeighbourBank.fit(
        schema, x[:300], x[300:350], np.zeros(50), k=3, parts=parts, part_rows=np.array([0, 100])
    )
    query = x[350:]
    weighted = np.clip(query * bank.weights, bank.lower, bank.upper)[:, :1]
    strided = (x[:300] * bank.weights)[::3, :1]
    full = np.sqrt(((weighted[:, None, :] - strided[None]) ** 2).sum(-1))
    box = np.maximum(weighted - bank.box_high[:1], 0) + np.maximum(bank.box_low[:1] - weighted, 0)
    expected = np.sort(full, axis=1)[:, :3].mean(axis=1) + 0.5 * box[:, 0]
    np.testing.assert_allclose(bank.part_distances(query)[1], expected, rtol=1e-4, atol=1e-6)
    again = NeighbourBank.from_bytes(bank.to_bytes(), schema.n_features)
    np.testing.assert_array_equal(again.part_rows, [0, 100])
    np.testing.assert_array_equal(again.distances(query), bank.distances(query))
    every = NeighbourBank.fit(schema, x[:300], x[300:350], np.zeros(50), k=3, parts=parts)
    assert every.part_rows is None
    assert not np.allclose(every.part_distances(query)[1], bank.part_distances(query)[1])
    # Leave-one-out measures each bank row against the others: it keeps every row.
    small = NeighbourBank.fit(
        schema, x[:40], x[:40], np.zeros(40), parts=parts, part_rows=[0, 10], leave_one_out=True
    )
    assert small.part_rows is None


def test_a_part_capped_below_k_rows_still_searches_k_of_them() -> None:
    """``--neighbours 20`` with parts capped at 10 bank rows: each part searches 20 rows
    (every 15th of 300), never fewer than k, whose search would find nothing (faiss: -1)."""
    rng = np.random.default_rng(5)
    frame = pd.DataFrame(rng.normal(size=(400, 4)), columns=list("abcd"))
    schema = fit_schema(frame)
    x = encode(schema, frame).values
    parts = np.zeros((3, 4), dtype=bool)
    parts[0], parts[1, :2], parts[2, 2:] = True, True, True
    bank = NeighbourBank.fit(
        schema, x[:300], x[300:350], np.zeros(50), k=20, parts=parts, part_rows=[0, 10, 10]
    )
    query = x[350:]
    weighted = np.clip(query * bank.weights, bank.lower, bank.upper)[:, :2]
    strided = (x[:300] * bank.weights)[::15, :2]
    full = np.sqrt(((weighted[:, None, :] - strided[None]) ** 2).sum(-1))
    box = np.maximum(weighted - bank.box_high[:2], 0) + np.maximum(bank.box_low[:2] - weighted, 0)
    expected = full.mean(axis=1) + 0.5 * box.sum(axis=1)
    np.testing.assert_allclose(bank.part_distances(query)[1], expected, rtol=1e-5, atol=1e-6)
    alone = np.array([bank.distances(query[[i]])[0] for i in range(len(query))])
    np.testing.assert_array_equal(alone, bank.distances(query))


def _alike_alone_and_in_a_batch(bank: NeighbourBank, query: np.ndarray) -> dict[str, np.ndarray]:
    """Check that each record of ``query`` scores and is blamed alone exactly as in the batch
    of all of them; the batch's scores."""
    batch = bank.scores(query, {})
    alone = [bank.scores(query[[i]], {}) for i in range(len(query))]
    np.testing.assert_array_equal([one["knn"][0] for one in alone], batch["knn"])
    np.testing.assert_array_equal([one["knn_terms"][0] for one in alone], batch["knn_terms"])
    return batch


def _whole_and_pairs(n_features: int) -> np.ndarray:
    """Parts of like width on columns of their own: every column, then columns 0-1, 2-3, 4-5."""
    parts = np.zeros((4, n_features), dtype=bool)
    parts[0] = True
    for p in range(3):
        parts[p + 1, 2 * p : 2 * p + 2] = True
    return parts


@pytest.mark.parametrize("local", [0.0, 0.25])
def test_like_parts_searched_together_for_a_record_score_as_in_a_batch(local: float) -> None:
    """Parts of one width on columns of their own (each metric's newest rows) are searched in
    one product for a record or a few, and one faiss search each for a batch: both find the
    nearest rows (brute force), and a record scores and is blamed the same either way, judged
    against the local spread or not."""
    rng = np.random.default_rng(3)
    frame = pd.DataFrame(rng.normal(size=(500, 6)), columns=[f"m{j}" for j in range(6)])
    frame["kind"] = rng.choice(["x", "y"], 500)
    schema = fit_schema(frame)
    x = encode(schema, frame).values
    parts = _whole_and_pairs(schema.n_features)
    bank = NeighbourBank.fit(
        schema,
        x[:300],
        x[300:350],
        np.zeros(50),
        k=4,
        parts=parts,
        part_rows=[0, 100, 100, 100],
        local_weight=local,
    )
    query = np.vstack([x[350:], x[350:360] + 8.0 * (np.arange(x.shape[1]) == 3)])
    weighted = np.clip(query * bank.weights, bank.lower, bank.upper)[:, 2:4]
    strided = (x[:300] * bank.weights)[::3, 2:4]
    full = np.sqrt(((weighted[:, None, :] - strided[None]) ** 2).sum(-1))
    box = np.maximum(weighted - bank.box_high[2:4], 0) + np.maximum(bank.box_low[2:4] - weighted, 0)
    expected = np.sort(full, axis=1)[:, :4].mean(axis=1) + 0.5 * box.sum(axis=1)
    far = bank.far_weight * np.log1p(_outside(bank, query)[:, 2:4]).sum(axis=1)
    assert far.max() > 0
    expected += far
    alone = [bank.part_distances(query[[i]])[2][0] for i in range(len(query))]
    np.testing.assert_allclose(alone, expected, rtol=1e-5, atol=1e-6)
    batch = _alike_alone_and_in_a_batch(bank, query)
    # The shifted records are blamed on the column moved, which two parts hold.
    assert (np.argmax(batch["knn_terms"][-10:], axis=1) == 3).all()


def test_judged_locally_a_record_scores_alike_whichever_search_breaks_its_ties() -> None:
    """Counts (small integers) put many bank rows at nearly one distance from a record, and a
    float32 search may rank them either way; the spreads a record is judged by depend on which
    are its k nearest, so both searches keep the k nearest of a few more by exact distance,
    ties to the lower position: a record alone (numpy) scores as in a batch (faiss)."""
    rng = np.random.default_rng(11)
    frame = pd.DataFrame(rng.poisson(2.0, size=(600, 6)).astype(float), columns=list("abcdef"))
    schema = fit_schema(frame)
    x = encode(schema, frame).values
    parts = _whole_and_pairs(schema.n_features)
    bank = NeighbourBank.fit(
        schema,
        x[:400],
        x[400:450],
        np.zeros(50),
        parts=parts,
        part_rows=[0, 100, 100, 100],
        local_weight=0.25,
    )
    _alike_alone_and_in_a_batch(bank, x[450:])


def test_judged_locally_a_bank_that_repeats_rows_scores_a_record_alone_as_in_a_batch() -> None:
    """A metric flat in training repeats one window in every bank row, and one with a few
    levels repeats a few: a batch searches each part's distinct rows, and a record alone
    (parts of like width searched together) every row; both keep the k nearest by exact
    distance, ties to the lower position, so both score alike, on the bank's rows and off."""
    rng = np.random.default_rng(5)
    n = 600
    frame = pd.DataFrame(
        {
            "flat": np.r_[np.full(450, 3.0), rng.choice([3.0, 3.5, 9.0], n - 450)],
            "flat_too": np.r_[np.full(450, 1.0), rng.normal(1.0, 0.2, n - 450)],
            "level": rng.choice([0.0, 1.0, 2.0], n),
            # Two levels, each a little noisy: many rows nearly as far from a record between
            # them, which a float32 search may rank either way.
            "level_too": rng.choice([5.0, 7.0], n) + rng.integers(0, 40, n) * 1e-6,
            "wave": rng.normal(0.0, 1.0, n),
            "noise": rng.normal(0.0, 1.0, n).round(1),
        }
    )
    schema = fit_schema(frame)
    x = encode(schema, frame).values
    parts = _whole_and_pairs(schema.n_features)[1:]  # like parts only: a record searches all
    bank = NeighbourBank.fit(
        schema,
        x[:400],
        x[400:450],
        np.zeros(50),
        parts=parts,
        part_rows=[100, 100, 100],
        local_weight=0.25,
    )
    between = frame.iloc[450:500].assign(level_too=6.0)  # as far from either level's rows
    # The bank's own rows (distance 0), new ones, and ones between the levels.
    _alike_alone_and_in_a_batch(bank, np.vstack([x[:30], x[450:], encode(schema, between).values]))


def _two_spreads(n: int, seed: int = 0) -> pd.DataFrame:
    """Normal rows in two clusters: a tight one at (0, 0) and a loose one at (6, 6)."""
    rng = np.random.default_rng(seed)
    tight = rng.normal(0.0, 0.05, (n // 2, 2))
    loose = rng.normal(6.0, 1.0, (n - n // 2, 2))
    return pd.DataFrame(np.vstack([tight, loose]), columns=["a", "b"])


@pytest.mark.parametrize(
    "weight, floor, ceiling",
    [
        (DEFAULT_LOCAL_WEIGHT, DEFAULT_LOCAL_FLOOR, np.inf),
        (TABLE_LOCAL_WEIGHT, TABLE_LOCAL_FLOOR, TABLE_LOCAL_CEILING),
    ],
    ids=["series", "table"],
)
def test_the_local_spread_is_each_bank_row_s_mean_distance_to_its_neighbours(
    weight: float, floor: float, ceiling: float
) -> None:
    """Judged locally, a part's distance also counts as the mean distance to the ``k`` nearest
    bank rows times the median bank row's spread over theirs (each bank row's spread: its mean
    distance to its ``k`` nearest other rows, held between the floor and the ceiling times the
    median), plus the box; each standardised on the validation rows, mixed at the weight
    (brute force). The file keeps it."""
    frame = _two_spreads(400)
    schema = fit_schema(frame)
    x = encode(schema, frame).values
    fit, val = np.arange(0, 400, 2), np.arange(1, 400, 2)
    bank = NeighbourBank.fit(
        schema,
        x[fit],
        x[val],
        np.zeros(200),
        k=3,
        local_weight=weight,
        local_floor=floor,
        local_ceiling=ceiling,
    )
    plain = NeighbourBank.fit(schema, x[fit], x[val], np.zeros(200), k=3)

    def brute(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        weighted_bank = x[fit] * bank.weights
        query = np.clip(rows * bank.weights, bank.lower, bank.upper)
        full = np.sqrt(((query[:, None, :] - weighted_bank[None]) ** 2).sum(-1))
        nearest = np.argsort(full, axis=1)[:, :3]
        near = np.take_along_axis(full, nearest, axis=1).mean(axis=1)
        own = np.sqrt(((weighted_bank[:, None, :] - weighted_bank[None]) ** 2).sum(-1))
        np.fill_diagonal(own, np.inf)
        spreads = np.sort(own, axis=1)[:, :3].mean(axis=1)
        typical = np.median(spreads)
        held = np.clip(spreads, floor * typical, ceiling * typical)
        local = near * typical / held[nearest].mean(axis=1)
        beyond = np.maximum(query - bank.box_high, 0) + np.maximum(bank.box_low - query, 0)
        box = 0.5 * beyond.sum(axis=1)
        return near + box, local + box

    # Off each cluster by 0.3 on both columns: 6 of the tight one's deviations, 0.3 of the other's.
    off = encode(schema, pd.DataFrame({"a": [0.3, 6.3], "b": [0.3, 6.3]})).values
    query = np.vstack([x[val], off])
    distance, local = brute(query)
    distance_val, local_val = brute(x[val])
    from detector.scoring.neighbours import spread

    expected = (1 - weight) * (distance - np.median(distance_val)) / spread(distance_val)
    expected += weight * (local - np.median(local_val)) / spread(local_val)
    np.testing.assert_allclose(bank.distances(query), expected, rtol=1e-4, atol=1e-5)
    again = NeighbourBank.from_bytes(bank.to_bytes(), schema.n_features)
    assert (again.local_weight, again.local_floor, again.local_ceiling) == (weight, floor, ceiling)
    np.testing.assert_array_equal(again.distances(query), bank.distances(query))

    # Off the tight cluster the record now ranks higher among the normal rows; off the loose
    # one, where such gaps are normal, it does not.
    def above(judge: NeighbourBank) -> np.ndarray:
        return (judge.distances(x[val])[:, None] < judge.distances(off)).mean(axis=0)

    assert above(bank)[0] > above(plain)[0] and above(bank)[1] <= above(plain)[1]


def test_a_bank_saved_before_the_local_spread_scores_as_it_did() -> None:
    x, bank, legacy = _saved_without("local_")
    assert legacy.local_weight == 0 and legacy.local_scale is None
    np.testing.assert_array_equal(legacy.distances(x), bank.distances(x))


def test_a_bank_saved_before_the_local_ceiling_scores_as_it_did() -> None:
    x, bank, legacy = _saved_without("local_ceiling", local_weight=0.25)
    assert bank.local_ceiling == legacy.local_ceiling == np.inf
    np.testing.assert_array_equal(legacy.distances(x), bank.distances(x))


def test_a_bank_saved_before_the_term_beyond_the_bounds_scores_as_it_did() -> None:
    x, bank, legacy = _saved_without("far_")
    assert (bank.far_weight, legacy.far_weight) == (DEFAULT_FAR_WEIGHT, 0.0)
    far = x[:3].copy()
    far[:, 0] = [5.0, 50.0, 5e6]  # "a", beyond its bounds
    before = dataclasses.replace(bank, far_weight=0.0).distances(far)
    np.testing.assert_array_equal(legacy.distances(far), before)
    assert (bank.distances(far) > before).all()
    again = NeighbourBank.from_bytes(bank.to_bytes(), x.shape[1])
    np.testing.assert_array_equal(again.distances(far), bank.distances(far))


@pytest.mark.parametrize("weight", [np.nan, -1.0, np.inf])
def test_a_bank_file_with_a_bad_weight_beyond_the_bounds_is_refused(weight: float) -> None:
    x, bank, _ = _saved_without("nothing")
    content = dataclasses.replace(bank, far_weight=weight).to_bytes()
    with pytest.raises(BundleError, match="retrain"):
        NeighbourBank.from_bytes(content, x.shape[1])


@pytest.mark.parametrize("ceiling", [np.nan, -1.0, 1.0])
def test_a_bank_file_whose_ceiling_is_under_its_floor_is_refused(ceiling: float) -> None:
    import io

    _, bank, _ = _saved_without("nothing", local_weight=0.5, local_floor=2.0)
    with np.load(io.BytesIO(bank.to_bytes()), allow_pickle=False) as arrays:
        altered = {k: arrays[k] for k in arrays.files} | {"local_ceiling": np.asarray(ceiling)}
    buffer = io.BytesIO()
    np.savez(buffer, **altered)
    with pytest.raises(BundleError, match="does not match the schema"):
        NeighbourBank.from_bytes(buffer.getvalue(), bank.bank.shape[1])


def test_the_ceiling_bounds_how_much_a_sparse_place_discounts_a_record() -> None:
    """A record's local factor (the median spread over its neighbours' mean spread) is at least
    one over the ceiling: next to the loose cluster, whose rows' spreads are many times the
    median, a ceiling of 3 keeps it at a third, where without one it falls further; next to
    the tight cluster (spreads at most the median, the floor) both judge it alike."""
    frame = _two_spreads(400)
    schema = fit_schema(frame)
    x = encode(schema, frame).values
    fit, val = np.arange(0, 400, 2), np.arange(1, 400, 2)
    near_each = encode(schema, pd.DataFrame({"a": [0.1, 7.5], "b": [0.1, 7.5]})).values

    def factors(ceiling: float) -> np.ndarray:
        bank = NeighbourBank.fit(
            schema,
            x[fit],
            x[val],
            np.zeros(200),
            k=3,
            box_weight=0.0,  # the factor alone: relative distance over plain distance
            local_weight=0.5,
            local_floor=1.0,
            local_ceiling=ceiling,
        )
        raw, relative, _ = bank._measure(near_each, False, terms=False)
        assert relative is not None
        return (relative / raw)[0]

    held, free = factors(3.0), factors(np.inf)
    assert held[1] == pytest.approx(1 / 3) and free[1] < 1 / 3
    assert held[0] == free[0] and held[0] >= 1 / 3
    with pytest.raises(ValueError, match="local_floor <= local_ceiling"):
        NeighbourBank.fit(
            schema,
            x[fit],
            x[val],
            np.zeros(200),
            local_weight=0.5,
            local_floor=2.0,
            local_ceiling=1.0,
        )


def test_a_bank_saved_before_parts_scores_as_it_did() -> None:
    x, bank, legacy = _saved_without("part")
    assert legacy.parts.shape == (1, x.shape[1])
    np.testing.assert_array_equal(legacy.distances(x), bank.distances(x))


def test_the_bank_file_round_trips_and_refuses_a_mismatch() -> None:
    frame = _table(200)
    schema = fit_schema(frame)
    x = encode(schema, frame).values
    bank = NeighbourBank.fit(schema, x[:150], x[150:], np.arange(50.0))
    again = NeighbourBank.from_bytes(bank.to_bytes(), schema.n_features)
    np.testing.assert_array_equal(again.distances(x), bank.distances(x))
    with pytest.raises(BundleError, match="does not match the schema"):
        NeighbourBank.from_bytes(bank.to_bytes(), schema.n_features + 1)
    with pytest.raises(BundleError, match="cannot be read"):
        NeighbourBank.from_bytes(b"not an npz", schema.n_features)


def test_a_pickled_bank_is_refused() -> None:
    import io

    buffer = io.BytesIO()
    np.savez(buffer, bank=np.array([{"code": 1}], dtype=object))
    with pytest.raises(BundleError):
        NeighbourBank.from_bytes(buffer.getvalue(), 1)


@pytest.fixture(scope="module")
def spiky() -> tuple[VAEDetector, pd.DataFrame]:
    frame = _table(600)
    return VAEDetector(**TINY).fit(frame), frame


def test_the_default_scores_by_distance_and_blames_the_far_column(spiky) -> None:
    detector, frame = spiky
    assert detector.bundle_.score_kind == "knn"
    # A table's row is also judged against the local spread, a sparse place's discount held.
    bank = detector.bundle_.neighbours
    assert bank is not None
    assert (bank.local_weight, bank.local_floor, bank.local_ceiling) == (
        TABLE_LOCAL_WEIGHT,
        TABLE_LOCAL_FLOOR,
        TABLE_LOCAL_CEILING,
    )
    record = frame.head(1).assign(a=9.0)
    result = detector.score_records(pd.concat([frame.head(1), record], ignore_index=True))
    assert result.anomaly_score[1] > result.anomaly_score[0]
    assert result.top_features(1)[1] == ["a"]
    assert result.is_anomaly[1]


def test_the_farther_a_value_lies_beyond_training_the_higher_it_scores_alone_or_not(spiky) -> None:
    """Past a column's bounds (and past the encoding's +-10) each step farther still adds: a
    value 10^8 of the range beyond scored as one 5 beyond it did, and over HTTP a record's
    own encoding (a mapping) must say so as a table's does."""
    detector, frame = spiky
    top, first = float(frame["a"].max()), frame.iloc[0]
    values = [top + 5.0, top + 50.0, top + 5e3, top + 5e8]
    table = detector.score_records(pd.concat([frame.head(1)] * 4).assign(a=values))
    assert (np.diff(table.anomaly_score) > 0).all()
    assert table.is_anomaly.all()
    assert all(top_three[0] == "a" for top_three in table.top_features(1))
    records = [{"a": v, "rare": float(first["rare"]), "kind": str(first["kind"])} for v in values]
    alone = [detector.score_records(record).anomaly_score[0] for record in records]
    np.testing.assert_array_equal(alone, table.anomaly_score)


def test_no_neighbours_keeps_no_training_rows(spiky, tmp_path) -> None:
    _, frame = spiky
    detector = VAEDetector(neighbours=0, **TINY).fit(frame)
    assert detector.bundle_.neighbours is None
    assert detector.bundle_.score_kind == "elbo"
    detector.save(tmp_path / "m")
    assert not (tmp_path / "m" / NEIGHBOURS_FILE).exists()
    loaded = VAEDetector.load(tmp_path / "m")
    np.testing.assert_allclose(
        loaded.anomaly_score(frame.head(20)), detector.anomaly_score(frame.head(20)), rtol=1e-6
    )


def test_a_distance_score_without_a_bank_is_refused(spiky) -> None:
    _, frame = spiky
    # Told "'knn' is not one of [...] for model 'vae'; ... needs neighbours >= 1": the model
    # blamed, no fix named.
    with pytest.raises(ConfigError) as refused:
        VAEDetector(neighbours=0, score_kind="knn", **TINY).fit(frame)
    said = str(refused.value)
    assert "keeps none of: drop neighbours=0, or choose another score" in said
    assert "for model" not in said


def test_a_40_row_table_is_scored_with_leave_one_out_calibration() -> None:
    frame = _table(40, seed=3)
    detector = VAEDetector(**TINY).fit(frame)
    summary, bundle = detector.summary_, detector.bundle_
    assert summary.calibration_rows == summary.fit_rows == 40
    assert any(w.startswith("small table: 40 rows") for w in summary.warnings)
    # Calibrated on each row's distance to the *other* rows, not on its zero distance to itself.
    x = encode(bundle.schema, frame).values
    own = bundle.neighbours.distances(x, leave_one_out=True)
    np.testing.assert_allclose(bundle.calibrator.reference, np.sort(own), rtol=1e-6)
    assert (bundle.neighbours.part_distances(x, leave_one_out=True)[0] > 0).all()
    far = detector.score_records(frame.head(1).assign(a=25.0))
    assert far.is_anomaly.tolist() == [True]


def test_fewer_rows_than_a_calibration_needs_are_refused() -> None:
    from detector.errors import DataError

    with pytest.raises(DataError, match="at least 30 normal rows"):
        VAEDetector(**TINY).fit(_table(29))


def test_a_table_of_few_categories_falls_back_to_the_model_score() -> None:
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"a": rng.choice(list("xyz"), 300), "b": rng.choice(list("pq"), 300)})
    # Every row has many exact copies: the distance is 0 for every held-out row.
    detector = VAEDetector(**TINY).fit(frame)
    assert detector.bundle_.score_kind == "elbo"
    assert detector.bundle_.neighbours is None
    assert "cannot rank records: scoring with elbo instead" in detector.summary_.warnings[0]
    # Asked for by name, the distance is not swapped silently: training refuses.
    from detector.errors import TrainingError

    with pytest.raises(TrainingError, match="nearly\\) constant"):
        VAEDetector(score_kind="knn", **TINY).fit(frame)


def test_a_batch_leaves_threads_to_the_reader_and_restores_the_count() -> None:
    import faiss

    from detector.scoring.neighbours import fewer_search_threads

    before = faiss.omp_get_max_threads()
    with fewer_search_threads(1):
        assert faiss.omp_get_max_threads() == max(1, before - 1)
    with pytest.raises(RuntimeError), fewer_search_threads(before + 5):
        assert faiss.omp_get_max_threads() == 1  # never none
        raise RuntimeError
    assert faiss.omp_get_max_threads() == before


def test_a_collapsed_latent_is_a_warning_only_where_the_score_reads_the_network(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import detector.nn.training as training

    # A real collapse takes a wide model many epochs (a 500-column table: 31); the check's
    # verdict is forced instead, so the test is about which scores it may warn for.
    monkeypatch.setattr(training, "active_units", lambda model, x: 0)
    frame = _table(300)
    by_distance = VAEDetector(**TINY).fit(frame).summary_
    assert by_distance.active_latent_units == 0  # still reported, as a number
    assert not any("posterior collapse" in w for w in by_distance.warnings)
    by_likelihood = VAEDetector(score_kind="elbo", **TINY).fit(frame).summary_
    assert any(w.startswith("posterior collapse") for w in by_likelihood.warnings)


def test_a_table_the_bank_can_hold_keeps_its_calibration_rows_and_calibrates_leave_one_out() -> (
    None
):
    from detector.nn.training import TrainingConfig, holdout_indices, train
    from detector.wording import leave_one_out_note

    frame = _table(400, seed=4)
    config = TrainingConfig(**TINY)
    bundle, summary = train(frame, config)
    fit, val, cal = holdout_indices(len(frame), config)
    x = encode(bundle.schema, frame).values
    bank = bundle.neighbours
    assert bank is not None
    kept = np.concatenate([x[fit], x[cal]])
    np.testing.assert_allclose(bank.bank, kept * bank.weights, rtol=1e-6)
    # Every kept row calibrates, measured against the others; the validation rows stay out
    # of the bank, so the held-out check still holds rows no part of the distance has seen.
    own = bank.distances(kept, leave_one_out=True)
    np.testing.assert_allclose(bundle.calibrator.reference, np.sort(own), rtol=1e-6)
    counts = (summary.fit_rows, summary.validation_rows, summary.calibration_rows)
    assert counts == (len(fit), len(val), len(fit) + len(cal))
    held_out = np.mean(bank.distances(x[val]) > bundle.calibrator.threshold)
    assert summary.validation_fpr == pytest.approx(held_out)
    assert leave_one_out_note(summary.rows, *counts) == ", leave-one-out"


def test_only_the_plain_distance_of_a_table_within_the_cap_keeps_every_row() -> None:
    from detector.nn.training import _whole_table_bank
    from detector.scoring.neighbours import bank_rows

    wide = fit_schema(pd.DataFrame(np.random.default_rng(0).normal(size=(50, 400))).add_prefix("c"))
    cap = bank_rows(wide.n_features)  # 1,000 rows at 400 columns
    assert _whole_table_bank("knn", wide, small=False, table=True, rows=cap)
    assert not _whole_table_bank("knn", wide, small=False, table=True, rows=cap + 1)
    assert not _whole_table_bank("elbo_knn", wide, small=False, table=True, rows=cap)
    assert not _whole_table_bank("knn", wide, small=False, table=False, rows=cap)  # a series
    assert not _whole_table_bank("knn", wide, small=True, table=True, rows=150)
