"""Encoding writes its float32 result a block of numeric columns at a time: the same bits as
one block, and no float64 copy of the whole table."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pandas as pd
import pytest

import detector.features.encode as encoding
from detector.features.encode import Imputation, encode
from detector.features.encoded import EncodedBatch
from detector.features.schema import Schema, fit_schema


def _training(n: int = 400) -> pd.DataFrame:
    rng = np.random.default_rng(7)
    return pd.DataFrame(
        {
            "cpu": rng.normal(50, 10, n),
            "bytes": rng.pareto(1.2, n) * 1e4,  # heavy-tailed: encoded as its logarithm
            "count": rng.integers(0, 9, n),
            "flat": np.full(n, 3.0),
            "proto": rng.choice(["tcp", "udp", "icmp"], n),
            "mem": rng.normal(1e6, 1e5, n),
            "host": rng.choice(["a", "b", "c", "d"], n),
            "lat": rng.gamma(2.0, 3.0, n),
        }
    )


def _scored(n: int) -> pd.DataFrame:
    """Rows that go every way: missing, infinite, out of range, past float32's range, unseen
    and empty labels, an unseen context value."""
    frame = _training(n).sample(frac=1.0, random_state=1).reset_index(drop=True)
    frame.loc[3, "cpu"] = np.nan
    frame.loc[5, "mem"] = np.inf
    frame.loc[6, "lat"] = -np.inf
    frame.loc[8, "cpu"] = 1e300  # past ±clip, and past float32's range before clipping
    frame.loc[9, "mem"] = -1.7e308
    frame.loc[10, "bytes"] = 1e9
    frame.loc[11, "lat"] = 400.0
    frame.loc[12, "flat"] = -5.0
    frame.loc[13, "proto"] = "sctp"
    frame.loc[14, "proto"] = None
    frame.loc[15, "host"] = "zzz"
    frame.loc[16, "host"] = None
    frame.loc[17, "proto"] = "TCP"  # another case: unseen, and counted as respelled
    return frame


def _same(blocked: EncodedBatch, whole: EncodedBatch) -> None:
    assert blocked.values.dtype == whole.values.dtype == np.float32
    assert blocked.values.flags.c_contiguous
    # Bit for bit, not within a tolerance (a -0.0 for a 0.0 would be another bundle).
    assert np.array_equal(blocked.values.view(np.uint32), whole.values.view(np.uint32))
    assert np.array_equal(blocked.accepted, whole.accepted)
    assert blocked.rejections == whole.rejections
    assert blocked.numbers == whole.numbers
    assert blocked.respelled == whole.respelled
    for mine, theirs in [
        (blocked.context_unseen, whole.context_unseen),
        (blocked.overflow, whole.overflow),
    ]:
        assert (mine is None) == (theirs is None)
        if mine is not None and theirs is not None:
            assert np.array_equal(mine, theirs) and mine.dtype == theirs.dtype
            assert mine.tobytes() == theirs.tobytes()


@pytest.mark.parametrize("impute", [None, "median"])
@pytest.mark.parametrize("rows", [200, 30])  # read at once, and one column at a time
@pytest.mark.parametrize("per_block", [1, 2, 3])
def test_blocks_of_columns_encode_the_bits_of_one_block(
    monkeypatch: pytest.MonkeyPatch, impute: Imputation, rows: int, per_block: int
) -> None:
    schema = fit_schema(_training(), context=["host"])
    assert schema.logged and schema.categorical and schema.context
    frame = _scored(rows)
    if rows < 64:  # the text path too: numbers as a CSV's strings, one of them not a number
        frame["count"] = frame["count"].astype(str)
        frame.loc[18, "count"] = "1,5"
    whole = encode(schema, frame, impute=impute)
    assert whole.overflow is not None and whole.rejections
    monkeypatch.setattr(encoding, "_BLOCK_VALUES", per_block * rows)
    monkeypatch.setattr(encoding, "_MOVE_ROWS", per_block)  # rejected rows' places taken
    _same(encode(schema, frame, impute=impute), whole)


def test_no_rows_and_no_numeric_columns_encode_as_before(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(encoding, "_BLOCK_VALUES", 1)
    schema = fit_schema(_training())
    empty = encode(schema, _scored(40).iloc[:0])
    assert empty.values.shape == (0, schema.n_features) and empty.values.dtype == np.float32
    assert [c.numbers for c in empty.numbers] == [0] * schema.n_numeric
    only = fit_schema(_training()[["proto", "host"]])
    batch = encode(only, _scored(40)[["proto", "host"]])
    assert batch.values.shape == (38, only.n_features) and batch.numbers == ()  # two empty


def test_a_large_table_is_encoded_without_a_float64_copy_of_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The float32 result and a block at a time: a float64 copy of the numeric columns (twice
    the result) was held beside it."""
    rows, columns = 20_000, 50
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(
        rng.normal(size=(rows, columns)), columns=[f"m{j}" for j in range(columns)]
    )
    schema = fit_schema(frame.head(500))
    monkeypatch.setattr(encoding, "_BLOCK_VALUES", 2 * rows)
    result = rows * columns * 4
    batch, peak = encoded_with_peak(schema, frame)
    assert batch.values.nbytes == result
    assert peak < 1.5 * result, f"peak {peak / result:.2f} times the float32 result"


def test_values_past_the_clip_and_rejected_rows_cost_no_copy_of_the_table(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A value past the clip in every block of columns, and a rejected row: the overflow's
    float64 blocks, their float64 table and its accepted rows' copy (each twice the float32
    result), and the result's accepted rows' copy were held at once. Now the result, a block,
    and the rows past the clip."""
    rows, columns = 20_000, 50
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(
        rng.normal(size=(rows, columns)), columns=[f"m{j}" for j in range(columns)]
    )
    schema = fit_schema(frame.head(500))
    for j in range(columns):
        frame.iat[j * 7, j] = 1e6
    frame.iat[3, 4] = np.nan
    monkeypatch.setattr(encoding, "_BLOCK_VALUES", 2 * rows)
    monkeypatch.setattr(encoding, "_MOVE_ROWS", rows // 20)  # as a million rows' 16,384
    result = rows * columns * 4
    batch, peak = encoded_with_peak(schema, frame)
    assert peak < 1.5 * result, f"peak {peak / result:.2f} times the float32 result"
    assert batch.values.shape == (rows - 1, columns) and batch.values.flags.owndata
    assert batch.overflow is not None and np.count_nonzero(batch.overflow) == columns


def encoded_with_peak(schema: Schema, frame: pd.DataFrame) -> tuple[EncodedBatch, int]:
    """``encode(schema, frame)`` and the most memory Python held at once while it ran."""
    tracemalloc.start()
    try:
        batch = encode(schema, frame)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return batch, peak
