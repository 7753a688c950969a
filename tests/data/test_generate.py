"""Tests for the synthetic server-metrics dataset and its generator (data/)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[2]
DATA_DIR = ROOT / "data"
GENERATOR_PATH = DATA_DIR / "generate.py"

EXPECTED_HOSTS = {
    "web-01": "us-east",
    "web-02": "us-east",
    "web-03": "us-west",
    "web-04": "us-west",
    "web-05": "eu-west",
    "api-01": "us-east",
    "api-02": "eu-west",
    "db-01": "us-east",
}
LATENCIES = ["latency_p50_ms", "latency_p95_ms", "latency_p99_ms"]
# Documented in data/README.md.
LABEL_RATIO_RANGE = (0.04, 0.07)
MIN_ROWS_PER_KIND = 20


def _load_generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("data_generate", GENERATOR_PATH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    # dataclasses resolve their module through sys.modules while the class is built.
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _spearman(a: pd.Series, b: pd.Series) -> float:
    # Rank then Pearson: same as method="spearman" without pandas importing scipy (~1 s).
    return float(a.rank().corr(b.rank()))


@pytest.fixture(scope="module")
def generator() -> ModuleType:
    return _load_generator()


@pytest.fixture(scope="module")
def train() -> pd.DataFrame:
    return pd.read_csv(DATA_DIR / "train.csv")


@pytest.fixture(scope="module")
def evaluation() -> pd.DataFrame:
    return pd.read_csv(DATA_DIR / "eval.csv")


@pytest.fixture(scope="module")
def normal_eval(evaluation: pd.DataFrame) -> pd.DataFrame:
    return evaluation[evaluation["label"] == 0]


# (a) determinism ------------------------------------------------------------


def test_regeneration_is_byte_identical(generator: ModuleType, tmp_path: Path) -> None:
    generator.main(["--seed", str(generator.DEFAULT_SEED), "--out-dir", str(tmp_path)])
    for name in ("train.csv", "eval.csv", "fleet_train.csv", "fleet_eval.csv"):
        regenerated = (tmp_path / name).read_bytes()
        committed = (DATA_DIR / name).read_bytes()
        assert regenerated == committed, f"{name} differs from a fresh default-seed run"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--seed", "-1"], "--seed: -1 must be in [0, 2**32 - 1]"),
        (["--out-dir", "{tmp}/a-file"], "is a file, not a folder"),
        (["--out-dir", ""], "is empty"),
    ],
)
def test_bad_options_are_usage_errors_that_write_nothing(
    generator: ModuleType,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    argv,
    message,
) -> None:
    # Tracebacks before (numpy's ValueError, FileExistsError), an empty folder left behind,
    # and '' wrote into the working folder.
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a-file").write_text("x")
    with pytest.raises(SystemExit) as ended:
        generator.main([a.format(tmp=tmp_path) for a in argv])
    assert ended.value.code == 2 and message in capsys.readouterr().err
    assert [p.name for p in tmp_path.iterdir()] == ["a-file"]


def test_the_fleet_files_are_the_same_rows_with_their_times() -> None:
    train, fleet_train = (pd.read_csv(DATA_DIR / n) for n in ("train.csv", "fleet_train.csv"))
    evaluation, fleet_eval = (pd.read_csv(DATA_DIR / n) for n in ("eval.csv", "fleet_eval.csv"))
    pd.testing.assert_frame_equal(fleet_train.drop(columns="ts"), train)
    pd.testing.assert_frame_equal(fleet_eval.drop(columns="ts"), evaluation)
    times = pd.to_datetime(pd.concat([fleet_train["ts"], fleet_eval["ts"]]), utc=True)
    steps = times.diff().dropna().dt.total_seconds().unique()
    assert sorted(steps) == [0.0, 900.0]  # 8 hosts per 15-minute step, never backwards


def test_seed_changes_the_data(generator: ModuleType) -> None:
    train_a, _ = generator.build_datasets(1)
    train_b, _ = generator.build_datasets(2)
    assert not train_a.equals(train_b)


# (b) schema, sizes and labels --------------------------------------------------


def test_schema_and_sizes(
    generator: ModuleType, train: pd.DataFrame, evaluation: pd.DataFrame
) -> None:
    assert list(train.columns) == list(generator.COLUMNS)
    assert "label" not in train.columns and "anomaly_kind" not in train.columns
    assert list(evaluation.columns) == [*generator.COLUMNS, "label", "anomaly_kind"]
    assert len(train) == 8 * 10 * 96
    assert len(evaluation) == 8 * 4 * 96
    assert train.groupby("host").size().to_dict() == {host: 960 for host in EXPECTED_HOSTS}
    for frame in (train, evaluation):
        assert frame["hour"].between(0, 23).all()
        assert pd.api.types.is_integer_dtype(frame["hour"])


def test_train_has_fixed_host_regions(train: pd.DataFrame) -> None:
    pairs = train[["host", "region"]].drop_duplicates()
    assert dict(zip(pairs["host"], pairs["region"], strict=True)) == EXPECTED_HOSTS
    assert len(pairs) == len(EXPECTED_HOSTS)


def test_eval_label_ratio_and_consistency(evaluation: pd.DataFrame) -> None:
    low, high = LABEL_RATIO_RANGE
    assert low <= evaluation["label"].mean() <= high
    assert set(evaluation["label"].unique()) <= {0, 1}
    assert ((evaluation["label"] == 1) == (evaluation["anomaly_kind"] != "none")).all()


# (c) promised relations -----------------------------------------------------------


def test_metric_ranges(train: pd.DataFrame, evaluation: pd.DataFrame) -> None:
    for frame in (train, evaluation):
        assert frame["cpu_pct"].between(0, 100).all()
        assert frame["mem_pct"].between(0, 100).all()
        assert frame["error_rate"].between(0, 1).all()
        metrics = frame[["req_rate", *LATENCIES, "net_in_mbps", "net_out_mbps", "disk_iops"]]
        assert (metrics > 0).all().all()


def test_latency_percentiles_are_ordered(train: pd.DataFrame, evaluation: pd.DataFrame) -> None:
    for frame in (train, evaluation):
        assert (frame["latency_p50_ms"] <= frame["latency_p95_ms"]).all()
        assert (frame["latency_p95_ms"] <= frame["latency_p99_ms"]).all()


def test_daily_seasonality(train: pd.DataFrame) -> None:
    by_hour = train.groupby("hour")["req_rate"].mean()
    assert by_hour.idxmax() in range(12, 18)
    assert by_hour.idxmin() in range(1, 6)
    assert by_hour.max() > 3 * by_hour.min()


def test_load_correlations(train: pd.DataFrame) -> None:
    assert train["req_rate"].corr(train["cpu_pct"]) > 0.7
    assert _spearman(train["latency_p99_ms"], train["error_rate"]) > 0.5
    for host, rows in train.groupby("host"):
        req = rows["req_rate"]
        assert req.corr(rows["cpu_pct"]) > 0.95, host
        assert req.corr(rows["net_in_mbps"]) > 0.95, host
        assert req.corr(rows["net_out_mbps"]) > 0.95, host
        assert req.corr(rows["disk_iops"]) > 0.9, host
        assert _spearman(rows["cpu_pct"], rows["latency_p50_ms"]) > 0.95, host
        assert _spearman(rows["latency_p99_ms"], rows["error_rate"]) > 0.8, host
        # Memory is only weakly tied to load; it is dominated by slow drift.
        assert 0.1 < req.corr(rows["mem_pct"]) < 0.8, host


def test_latency_grows_faster_than_linearly(train: pd.DataFrame) -> None:
    # Queueing: p50 climbs more steeply per CPU point between the middle and
    # the top of the CPU range than between the bottom and the middle.
    for host, rows in train.groupby("host"):
        cpu = rows["cpu_pct"]
        bands = [
            cpu <= cpu.quantile(0.1),
            cpu.between(cpu.quantile(0.45), cpu.quantile(0.55)),
            cpu >= cpu.quantile(0.9),
        ]
        x = [cpu[band].median() for band in bands]
        y = [rows.loc[band, "latency_p50_ms"].median() for band in bands]
        slope_low = (y[1] - y[0]) / (x[1] - x[0])
        slope_high = (y[2] - y[1]) / (x[2] - x[1])
        assert slope_high > 1.5 * slope_low, host


def test_db_host_has_highest_disk_iops(train: pd.DataFrame) -> None:
    medians = train.groupby("host")["disk_iops"].median()
    others = medians.drop("db-01")
    assert medians["db-01"] > 3 * others.max()


def test_eval_normal_rows_continue_train(train: pd.DataFrame, normal_eval: pd.DataFrame) -> None:
    for column in ("req_rate", "cpu_pct", "mem_pct", "net_out_mbps"):
        before = train.groupby("host")[column].median()
        after = normal_eval.groupby("host")[column].median()
        relative = (after / before - 1).abs()
        assert (relative < 0.2).all(), (column, relative.to_dict())


# (d) anomalies -----------------------------------------------------------------------


def test_every_anomaly_kind_is_present(generator: ModuleType, evaluation: pd.DataFrame) -> None:
    counts = evaluation["anomaly_kind"].value_counts()
    assert set(counts.index) == {"none", *generator.ANOMALY_KINDS}
    for kind in generator.ANOMALY_KINDS:
        assert counts[kind] >= MIN_ROWS_PER_KIND, kind


def _rows(evaluation: pd.DataFrame, kind: str) -> pd.DataFrame:
    return evaluation[evaluation["anomaly_kind"] == kind]


def test_rare_categories_are_unseen(train: pd.DataFrame, evaluation: pd.DataFrame) -> None:
    seen = set(zip(train["host"], train["region"], strict=True))
    pairs = pd.Series(list(zip(evaluation["host"], evaluation["region"], strict=True)))
    unseen = ~pairs.isin(seen).to_numpy()
    is_rare = (evaluation["anomaly_kind"] == "rare_category").to_numpy()
    assert (unseen == is_rare).all()
    rare = _rows(evaluation, "rare_category")
    assert (~rare["host"].isin(EXPECTED_HOSTS)).any(), "no unseen host name"
    assert rare["host"].isin(EXPECTED_HOSTS).any(), "no known host in a new region"


def test_spikes_exceed_training_maxima(train: pd.DataFrame, evaluation: pd.DataFrame) -> None:
    metrics = [
        "req_rate",
        "cpu_pct",
        "mem_pct",
        *LATENCIES,
        "error_rate",
        "net_in_mbps",
        "net_out_mbps",
        "disk_iops",
    ]
    maxima = train.groupby("host")[metrics].max()
    spikes = _rows(evaluation, "spike")
    above = spikes[metrics].to_numpy() > maxima.loc[spikes["host"]].to_numpy()
    assert above.any(axis=1).all()


def test_level_shifts_are_contiguous_and_large(
    train: pd.DataFrame, evaluation: pd.DataFrame
) -> None:
    hourly = train.groupby(["host", "hour"])[["cpu_pct", "mem_pct"]].mean()
    shifted = _rows(evaluation, "level_shift")
    assert shifted["host"].nunique() >= 1
    for host, block in shifted.groupby("host"):
        host_positions = np.flatnonzero((evaluation["host"] == host).to_numpy())
        steps = np.diff(np.searchsorted(host_positions, block.index.to_numpy()))
        assert (steps == 1).all(), f"level shift on {host} is not one contiguous block"
        expected = hourly.loc[[(host, h) for h in block["hour"]]].to_numpy()
        excess = (block[["cpu_pct", "mem_pct"]].to_numpy() - expected).mean(axis=0)
        assert excess.max() > 15, host


def test_broken_correlations_stay_in_range_but_break_relations(
    train: pd.DataFrame, evaluation: pd.DataFrame
) -> None:
    broken = _rows(evaluation, "broken_correlation")
    metrics = ["cpu_pct", *LATENCIES, "net_out_mbps"]
    for host, rows in broken.groupby("host"):
        ref = train[train["host"] == host]
        for column in metrics:
            assert rows[column].between(ref[column].min(), ref[column].max()).all(), (
                host,
                column,
            )

        # Per-host fits of the relations a detector should learn, with
        # residuals expressed in training standard deviations.
        zscores = []
        for x_col, y_col in (("req_rate", "cpu_pct"), ("req_rate", "net_out_mbps")):
            coef = np.polyfit(ref[x_col], ref[y_col], 1)
            sd = (ref[y_col] - np.polyval(coef, ref[x_col])).std()
            zscores.append(np.abs(rows[y_col] - np.polyval(coef, rows[x_col])) / sd)
        queue_ref = -np.log1p(-ref["cpu_pct"] / 100)
        coef = np.polyfit(queue_ref, np.log(ref["latency_p50_ms"]), 1)
        sd = (np.log(ref["latency_p50_ms"]) - np.polyval(coef, queue_ref)).std()
        queue = -np.log1p(-rows["cpu_pct"] / 100)
        zscores.append(np.abs(np.log(rows["latency_p50_ms"]) - np.polyval(coef, queue)) / sd)
        assert (np.vstack(zscores).max(axis=0) > 5).all(), host
