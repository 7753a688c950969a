"""Sampling: records drawn from the model look like the training data, in its columns and units.

Tolerances, measured on the tiny test model (25 epochs; 2000 samples, seed 0) against
data/train.csv: the largest standardised mean difference 0.14, standard-deviation ratios
0.96-1.17, total variation of category shares 0.04 (host) and 0.01 (region), mean absolute
difference of the numeric correlation matrices 0.20. A sample with its numeric columns
shuffled independently (right marginals, no correlations) scores 0.53 on that last check, a
sample left in standardised units a mean difference of several standard deviations; the
bounds sit between. The default model (data/models/default) does better: 0.09, 0.78-1.03,
0.09/0.01 and 0.05.
"""

from __future__ import annotations

import io
import re

import numpy as np
import pandas as pd
import pytest

from detector.errors import ConfigError
from detector.features.encode import decode, encode
from detector.nn.sampling import sample_records

MAX_MEAN_DIFFERENCE = 0.5  # in training standard deviations
STD_RATIO = (0.5, 2.0)
MAX_TOTAL_VARIATION = 0.3
MAX_CORRELATION_DIFFERENCE = 0.3  # mean over the numeric column pairs


def _numeric(frame: pd.DataFrame) -> list[str]:
    return [c for c in frame.columns if pd.api.types.is_numeric_dtype(frame[c])]


def _mean_difference(train: pd.DataFrame, sample: pd.DataFrame) -> float:
    cols = _numeric(train)
    return float(((sample[cols].mean() - train[cols].mean()).abs() / train[cols].std()).max())


def _correlation_difference(train: pd.DataFrame, sample: pd.DataFrame) -> float:
    cols = _numeric(train)
    diff = (train[cols].corr() - sample[cols].astype(float).corr()).abs().to_numpy()
    return float(diff[np.triu_indices(len(cols), 1)].mean())


def _total_variation(train: pd.Series, sample: pd.Series) -> float:
    p = train.astype(str).value_counts(normalize=True)
    q = sample.astype(str).value_counts(normalize=True)
    return float(0.5 * p.sub(q, fill_value=0.0).abs().sum())


@pytest.fixture(scope="module")
def sample(fitted) -> pd.DataFrame:  # type: ignore[no-untyped-def]
    return sample_records(fitted.bundle_, 2000, seed=0)


def test_samples_come_in_the_training_columns_and_categories(fitted, train_frame, sample) -> None:
    assert list(sample.columns) == list(train_frame.columns)
    assert len(sample) == 2000
    for col in fitted.bundle_.schema.categorical:
        assert set(sample[col.name]) <= set(col.categories), col.name
    assert sample[_numeric(train_frame)].notna().all().all()


def test_samples_stay_within_the_training_range(fitted, train_frame, sample) -> None:
    # The decoder's Gaussian reached past it: 28% of disk_iops below 0, hour -12 to 35.
    for col in fitted.bundle_.schema.numeric:
        assert sample[col.name].between(col.minimum, col.maximum).all(), col.name
    assert (sample[_numeric(train_frame)] >= train_frame[_numeric(train_frame)].min()).all().all()


def test_whole_number_columns_come_back_as_whole_numbers(fitted, train_frame, sample) -> None:
    # hour is 0-23 in training; samples said 13.62.
    integer = {c.name for c in fitted.bundle_.schema.numeric if c.integer}
    assert "hour" in integer
    assert integer == {c for c in _numeric(train_frame) if (train_frame[c] % 1 == 0).all()}
    for name in integer:
        assert pd.api.types.is_integer_dtype(sample[name]), name
    fractional = [c for c in _numeric(train_frame) if c not in integer]
    assert fractional and all((sample[c] % 1 != 0).any() for c in fractional)


def test_samples_match_the_training_distribution(train_frame, sample) -> None:
    assert _mean_difference(train_frame, sample) < MAX_MEAN_DIFFERENCE
    cols = _numeric(train_frame)
    ratio = sample[cols].std() / train_frame[cols].std()
    assert ratio.between(*STD_RATIO).all(), ratio.to_dict()
    for col in train_frame.columns.difference(cols):
        assert _total_variation(train_frame[col], sample[col]) < MAX_TOTAL_VARIATION, col
    assert _correlation_difference(train_frame, sample) < MAX_CORRELATION_DIFFERENCE


def test_the_checks_catch_a_wrong_sample(fitted, train_frame, sample) -> None:
    # Right marginals, no joint structure: the correlation check must fail.
    rng = np.random.default_rng(0)
    shuffled = sample.copy()
    for col in _numeric(train_frame):
        shuffled[col] = rng.permutation(shuffled[col].to_numpy())
    assert _correlation_difference(train_frame, shuffled) > MAX_CORRELATION_DIFFERENCE
    # Left in standardised units (the inverse of the encoding skipped): the mean check fails.
    standardised = sample.copy()
    for col in fitted.bundle_.schema.numeric:
        standardised[col.name] = (sample[col.name] - col.mean) / col.scale
    assert _mean_difference(train_frame, standardised) > MAX_MEAN_DIFFERENCE


def test_sampling_is_deterministic_for_a_seed(fitted, sample) -> None:
    pd.testing.assert_frame_equal(sample_records(fitted.bundle_, 2000, seed=0), sample)
    assert not sample_records(fitted.bundle_, 2000, seed=1).equals(sample)


def test_decode_inverts_encode(fitted, train_frame) -> None:
    schema = fitted.bundle_.schema
    back = decode(schema, encode(schema, train_frame).values)
    assert list(back.columns) == list(train_frame.columns)
    for col in schema.numeric:
        # Exact up to the encoding's clipping at ±clip and its float32 rounding.
        clipped = np.clip((train_frame[col.name] - col.mean) / col.scale, -schema.clip, schema.clip)
        expected = col.mean + col.scale * clipped
        np.testing.assert_allclose(back[col.name], expected, rtol=1e-6, atol=1e-6 * col.scale)
    for cat in schema.categorical:
        assert back[cat.name].tolist() == train_frame[cat.name].astype(str).tolist()


@pytest.mark.parametrize("n", [0, -3])
def test_a_count_below_one_is_refused(fitted, n) -> None:
    with pytest.raises(ConfigError, match="at least 1"):
        sample_records(fitted.bundle_, n, seed=0)


@pytest.fixture(scope="module")
def cvae():  # type: ignore[no-untyped-def]
    from detector.estimator import VAEDetector
    from tests.conftest import TINY

    # Normal CPU depends on the host: about 20% on a, 80% on b.
    rng = np.random.default_rng(0)
    host = rng.choice(["a", "b"], 1500)
    cpu = np.where(host == "a", 20.0, 80.0) + rng.normal(0, 3, 1500)
    table = pd.DataFrame({"host": host, "cpu": cpu, "mem": 0.5 * cpu + rng.normal(0, 2, 1500)})
    return VAEDetector(model="cvae", context=("host",), **TINY).fit(table)


def test_a_conditional_model_samples_the_context_it_is_given(cvae) -> None:
    for host, level in (("a", 20.0), ("b", 80.0)):
        drawn = sample_records(cvae.bundle_, 1000, seed=0, context={"host": host})
        assert list(drawn.columns) == ["host", "cpu", "mem"]
        assert (drawn["host"] == host).all()
        # The median: samples are clipped to the training range (10-90 here), which moves the
        # mean of a tiny model's wide spread toward the middle, not the median.
        assert abs(drawn["cpu"].median() - level) < 10, (host, drawn["cpu"].median())
    # No context: the fleet, two modes; the context column comes back empty.
    fleet = sample_records(cvae.bundle_, 1000, seed=0)
    assert fleet["host"].isna().all()
    assert (fleet["cpu"] < 50).mean() > 0.2 and (fleet["cpu"] > 50).mean() > 0.2


@pytest.mark.parametrize(
    ("context", "message"),
    [({"host": "zz"}, "was not seen in training"), ({"rack": "1"}, "context columns are")],
)
def test_a_context_the_model_does_not_know_is_refused(cvae, context, message) -> None:
    with pytest.raises(ConfigError, match=message):
        sample_records(cvae.bundle_, 10, seed=0, context=context)


def test_the_cli_says_a_conditional_models_draws_without_a_context_cannot_be_scored(
    cvae, capsys, tmp_path
) -> None:
    # Their host comes back empty, which scoring rejects: "flags 0.0%" read as all normal.
    from detector.cli.main import main

    cvae.save(tmp_path / "m")
    argv = ["sample", str(tmp_path / "m"), "-n", "20", "--output", str(tmp_path / "s.csv")]
    assert main(argv) == 0
    said = capsys.readouterr().out
    assert "note: ['host'] left empty (no context given), so these draws cannot be scored" in said
    assert main([*argv, "--context", "host=a"]) == 0
    assert "note: this model flags" in capsys.readouterr().out


def test_a_context_on_an_unconditional_model_names_the_fix(fitted) -> None:
    with pytest.raises(ConfigError, match="--model cvae --context"):
        sample_records(fitted.bundle_, 10, seed=0, context={"host": "web-01"})


def test_cli_writes_samples_to_a_file_and_to_stdout(capsys, bundle_dir, train_frame, tmp_path):
    from detector.cli.main import main
    from service.cli import main as service_main

    output = tmp_path / "synthetic.parquet"
    code = service_main(["sample", str(bundle_dir), "-n", "50", "--output", str(output)])
    assert code == 0
    said = capsys.readouterr().out
    assert "wrote 50 records" in said
    # Samples were taken for test traffic, and the model flagged nearly all of them: the
    # command says how many, with what the draws are for.
    assert re.search(r"note: this model flags \d+\.\d% of the first 50 draws", said)
    written = pd.read_parquet(output)
    assert list(written.columns) == list(train_frame.columns) and len(written) == 50

    assert main(["sample", str(bundle_dir), "-n", "20", "--seed", "7"]) == 0
    said = capsys.readouterr()
    assert "note: this model flags" in said.err  # stdout holds the records alone
    printed = pd.read_csv(io.StringIO(said.out))
    assert list(printed.columns) == list(train_frame.columns) and len(printed) == 20

    assert main(["sample", str(bundle_dir), "-n", "20", "--output", str(tmp_path / "s.csv")]) == 0
    assert len(pd.read_csv(tmp_path / "s.csv")) == 20


def test_cli_writes_samples_a_batch_at_a_time(capsys, bundle_dir, monkeypatch, tmp_path):
    """A hundred million records were held at once (2 GB within 25 s): now each batch is
    written as it is drawn, the same records as drawn at once, one header on stdout."""
    from detector.bundles.bundle import load_bundle
    from detector.cli.main import main
    from detector.nn import sampling

    monkeypatch.setattr(sampling, "SAMPLE_BATCH", 7)
    expected = sampling.sample_records(load_bundle(str(bundle_dir)), 50, seed=3)
    assert len(list(sampling.sample_batches(load_bundle(str(bundle_dir)), 50, seed=3))) == 8
    for suffix in ("csv", "parquet"):
        output = tmp_path / f"s.{suffix}"
        assert (
            main(["sample", str(bundle_dir), "-n", "50", "--seed", "3", "--output", str(output)])
            == 0
        )
        written = pd.read_csv(output) if suffix == "csv" else pd.read_parquet(output)
        pd.testing.assert_frame_equal(written, expected, check_dtype=False)
    capsys.readouterr()
    assert main(["sample", str(bundle_dir), "-n", "50", "--seed", "3"]) == 0
    printed = pd.read_csv(io.StringIO(capsys.readouterr().out))
    pd.testing.assert_frame_equal(printed, expected, check_dtype=False)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["-n", "0"], "must be at least 1"),
        (["-n", "-5"], "must be at least 1"),
        (["-n", "5", "--context", "host=web-01"], "does not condition on a context"),
        (["-n", "5", "--output", "{tmp}/s.xlsx"], "cannot tell the format"),
    ],
)
def test_cli_bad_requests_exit_2(capsys, bundle_dir, tmp_path, argv, message) -> None:
    from detector.cli.main import main

    code = main(["sample", str(bundle_dir), *[a.format(tmp=tmp_path) for a in argv]])
    out, err = capsys.readouterr()
    assert code == 2
    assert message in err
    assert out == ""
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("seed", "message"), [("-1", "is negative"), ("4294967296", "is over 2**32 - 1")]
)
def test_a_seed_numpy_cannot_take_is_a_usage_error(capsys, bundle_dir, seed, message) -> None:
    # "internal error: ValueError: expected non-negative integer", exit 1.
    from detector.cli.main import main

    with pytest.raises(SystemExit) as ended:
        main(["sample", str(bundle_dir), "-n", "5", "--seed", seed])
    assert ended.value.code == 2 and f"argument --seed: {seed} {message}" in capsys.readouterr().err


def test_a_reader_that_leaves_early_ends_the_cli_quietly(bundle_dir) -> None:
    """``anomaly sample ... | head`` printed a BrokenPipeError traceback: now it stops as a
    shell tool stopped by SIGPIPE does (exit 141), saying nothing."""
    import subprocess
    import sys

    command = [sys.executable, "-m", "detector.cli.main", "sample", str(bundle_dir), "-n"]
    with subprocess.Popen(
        [*command, "200000"], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    ) as process:
        assert process.stdout is not None and process.stderr is not None
        assert process.stdout.readline().startswith(b"host,")
        process.stdout.close()
        err = process.stderr.read().decode()
        assert process.wait(timeout=120) == 141
    assert "Traceback" not in err and "Error" not in err
