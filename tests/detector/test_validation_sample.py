"""The validation rows scored once the network is fitted: at most ``MAX_SCORED_VALIDATION_ROWS``,
the first of the (permuted) validation rows, a uniform sample of them, said and recorded; a
table with no more trains the very bundle it always did."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pandas as pd

import detector.nn.training
from detector.estimator import VAEDetector
from detector.nn.training import TrainingConfig, holdout_indices
from detector.scoring.neighbours import NeighbourBank
from tests.conftest import DATA
from tests.detector.test_cli import TINY_FLAGS, run

FLAGS = [*TINY_FLAGS[TINY_FLAGS.index("--hidden-units") :], "--epochs", "4"]
ROWS = 600


def trained(capsys: Any, tmp_path: Any, name: str) -> tuple[str, dict]:
    data = tmp_path / "t.csv"
    if not data.exists():
        pd.read_csv(DATA / "train.csv").head(ROWS).to_csv(data, index=False)
    out = tmp_path / name
    code, said, _ = run(capsys, "train", str(data), "--out", str(out), *FLAGS)
    assert code == 0
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["training"].pop("seconds")
    manifest.pop("created_at", None)
    return said, manifest


def validation_rows() -> np.ndarray:
    return holdout_indices(ROWS, TrainingConfig())[1]


def test_more_validation_rows_than_the_cap_are_scored_on_a_sample_and_said(
    capsys, tmp_path, monkeypatch
) -> None:
    # A 1,000,000-row table scored all its 150,000 validation rows after the fit, the distance
    # searching them twice to standardise its local part and once for the held-out FPR.
    held = len(validation_rows())
    cap = 40
    assert held > cap
    monkeypatch.setattr(detector.nn.training, "MAX_SCORED_VALIDATION_ROWS", cap)
    searched: list[int] = []
    fit = NeighbourBank.fit.__func__  # type: ignore[attr-defined]

    def spy(cls: Any, schema: Any, fit_rows: Any, val_rows: Any, *args: Any, **kw: Any) -> Any:
        searched.append(len(val_rows))
        return fit(cls, schema, fit_rows, val_rows, *args, **kw)

    monkeypatch.setattr(NeighbourBank, "fit", classmethod(spy))
    said, manifest = trained(capsys, tmp_path, "m")
    training = manifest["training"]
    assert searched == [cap]
    assert training["validation_rows"] == held  # early stopping still watched every one
    assert training["validation_scored"] == cap
    assert f"(a uniform sample of {cap} of the {held} validation rows)" in said
    # The held-out FPR is that of the first validation rows of the seeded split, as scored.
    frame = pd.read_csv(tmp_path / "t.csv")
    detector_ = VAEDetector.load(tmp_path / "m")
    scores = detector_.anomaly_score(frame.iloc[validation_rows()[:cap]])
    threshold = detector_.bundle_.calibrator.threshold
    assert training["validation_fpr"] == float(np.mean(scores > threshold))
    code, told, _ = run(capsys, "info", str(tmp_path / "m"))
    assert code == 0 and f"a uniform sample of {cap} of the {held} validation rows" in told


def test_a_table_within_the_cap_trains_the_very_same_bundle(capsys, tmp_path, monkeypatch) -> None:
    manifests = [trained(capsys, tmp_path, "default")[1]]
    monkeypatch.setattr(detector.nn.training, "MAX_SCORED_VALIDATION_ROWS", len(validation_rows()))
    said, exact = trained(capsys, tmp_path, "exact")
    manifests.append(exact)
    assert manifests[0]["version"] == manifests[1]["version"]
    assert manifests[0]["training"] == manifests[1]["training"]
    # The manifest a bundle had before the cap: no entry for it.
    assert "validation_scored" not in manifests[0]["training"]
    assert "uniform sample" not in said
