"""Shared fixtures: the bundled data and one tiny model trained once per test session."""

from __future__ import annotations

import gc
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "data"

#: Tiny, fast settings: the suite must stay quick on 2 cores. Quality is measured by benchmarks.
TINY = {
    "hidden_units": (32, 16),
    "latent_dim": 4,
    "epochs": 25,
    "kl_warmup_epochs": 3,
    "patience": 5,
    "batch_size": 256,
    "random_state": 0,
}


#: A small fleet of metric streams: each host's cpu level (see ``fleet``).
HOSTS = {"web-01": 20.0, "web-02": 35.0, "db-01": 50.0}


def fleet(minutes: int, *, start: str = "2026-01-01", seed: int = 0) -> pd.DataFrame:
    """Three hosts a minute apart (ISO-8601 ``ts``), each at its own cpu level; mem alike on
    every host, so a row alone does not say which host it is. In time order."""
    rng = np.random.default_rng(seed)
    times = pd.date_range(start, periods=minutes, freq="min", tz="UTC")
    frames = [
        pd.DataFrame(
            {
                "ts": times.strftime("%Y-%m-%dT%H:%M:%SZ"),
                "host": host,
                "cpu": level + rng.normal(0, 1.0, minutes),
                "mem": 40 + rng.normal(0, 1.0, minutes),
            }
        )
        for host, level in HOSTS.items()
    ]
    return pd.concat(frames, ignore_index=True).sort_values("ts", kind="stable", ignore_index=True)


def normal_records(n: int) -> list[dict[str, Any]]:
    """The first ``n`` normal records of data/eval.csv, as an API client sends them."""
    frame = pd.read_csv(DATA / "eval.csv").query("label == 0")
    return frame.drop(columns=["label", "anomaly_kind"]).head(n).to_dict("records")  # type: ignore[no-any-return]


def broken(record: dict[str, Any]) -> dict[str, Any]:
    """A record no normal server produces: p99 latency x30 at 99% CPU."""
    return {**record, "latency_p99_ms": record["latency_p99_ms"] * 30, "cpu_pct": 99.0}


@pytest.fixture(autouse=True)
def _collect_garbage_after_each_test() -> Iterator[None]:
    """Collect garbage as each test ends, so a leaked socket or file fails the test that
    leaked it, rather than whichever test the collector happens to run in later."""
    yield
    gc.collect()


@pytest.fixture(scope="session")
def train_frame() -> pd.DataFrame:
    return pd.read_csv(DATA / "train.csv")


@pytest.fixture(scope="session")
def eval_frame() -> pd.DataFrame:
    return pd.read_csv(DATA / "eval.csv")


@pytest.fixture(scope="session")
def fitted(train_frame: pd.DataFrame):  # type: ignore[no-untyped-def]
    from detector.estimator import VAEDetector

    return VAEDetector(target_fpr=0.05, **TINY).fit(train_frame)


@pytest.fixture(scope="session")
def bundle_dir(fitted, tmp_path_factory: pytest.TempPathFactory) -> Path:  # type: ignore[no-untyped-def]
    path = tmp_path_factory.mktemp("bundles") / "tiny"
    fitted.save(path)
    return path
