"""The variational fair autoencoder (``--model vfae``): its MMD term in closed form, codes that
no longer tell the nuisance column's values apart, and detection that holds."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import cross_val_score

from detector.bundles.bundle import load_bundle, save_bundle
from detector.errors import ConfigError
from detector.estimator import VAEDetector
from detector.features.encode import encode
from detector.nn import losses
from detector.nn.models.vfae import VFAE
from tests.conftest import TINY
from tests.detector.engines import assert_scorer_matches_tensorflow

BANDWIDTHS = (0.5, 1.0, 2.0)


def test_the_mmd_of_two_single_points_in_closed_form() -> None:
    """Groups {0} and {c} in one dimension, each weighted 1/2 overall: every group's MMD^2 is
    (K(0,0) + K(c,c)) / 4 - K(0,c) / 2 = 3/2 - k/2 with K(0,0) = 3 (three bandwidths) and
    k = sum_s exp(-c^2 / 2 s^2); the two groups together 3 - k."""
    for c in (0.3, 1.0, 4.0):
        z = np.array([[0.0], [c]], dtype=np.float32)
        groups = np.eye(2, dtype=np.float32)
        k = sum(math.exp(-(c**2) / (2 * s * s)) for s in BANDWIDTHS)
        got = float(losses.group_mmd(z, groups, BANDWIDTHS))
        assert got == pytest.approx(3 - k, rel=1e-5, abs=1e-6)


def test_alike_groups_have_no_discrepancy_and_rows_without_a_group_count_for_none() -> None:
    rng = np.random.default_rng(0)
    points = rng.normal(size=(6, 3)).astype(np.float32)
    z = np.concatenate([points, points])  # group a and group b hold the same codes
    groups = np.repeat(np.eye(2, dtype=np.float32), 6, axis=0)
    assert float(losses.group_mmd(z, groups)) == pytest.approx(0.0, abs=1e-5)
    apart = np.concatenate([points, points + 3.0])
    spread = float(losses.group_mmd(apart, groups))
    assert spread > 0.5
    # A row whose value was hidden (all zeros) belongs to no group and changes nothing.
    hidden = np.concatenate([apart, rng.normal(size=(1, 3)).astype(np.float32) + 9.0])
    with_hidden = np.concatenate([groups, np.zeros((1, 2), dtype=np.float32)])
    assert float(losses.group_mmd(hidden, with_hidden)) == pytest.approx(spread, rel=1e-5)


def fleet(n: int, seed: int) -> pd.DataFrame:
    """Three datacenters whose normal levels differ; within each, one load drives the rest."""
    rng = np.random.default_rng(seed)
    dc = rng.choice(["dc-a", "dc-b", "dc-c"], n)
    level = pd.Series(dc).map({"dc-a": 0.0, "dc-b": 3.0, "dc-c": -2.0}).to_numpy()
    load = rng.normal(size=n)
    noise = 0.2 * rng.normal(size=(n, 3))
    return pd.DataFrame(
        {
            "dc": dc,
            "cpu": level + load + noise[:, 0],
            "mem": 0.5 * level + 0.8 * load + noise[:, 1],
            "net": 0.3 * level + 1.2 * load + noise[:, 2],
        }
    )


def machine_accuracy(detector: VAEDetector, frame: pd.DataFrame) -> float:
    bundle = detector.bundle_
    codes = np.asarray(bundle.model.encode(encode(bundle.schema, frame).values)[0])
    return float(cross_val_score(LogisticRegression(max_iter=500), codes, frame["dc"], cv=3).mean())


def test_the_codes_forget_the_nuisance_and_detection_holds(tmp_path) -> None:
    train = fleet(2000, seed=0)
    probe = fleet(600, seed=1)
    labels = np.zeros(len(probe))
    probe.loc[:59, "cpu"] += 4.0  # load on the CPU alone: the other columns do not follow
    labels[:60] = 1
    settings = {**TINY, "epochs": 30}
    plain = VAEDetector(categorical=("dc",), neighbours=0, **settings).fit(train)
    conditional = VAEDetector(model="cvae", context=("dc",), **settings).fit(train)
    # A weight above the default (10, chosen on pooled SMD machines where conditioning alone
    # already hides the machine): this table's codes need the pull to show it.
    fair = VAEDetector(model="vfae", nuisance_column="dc", mmd_weight=50.0, **settings).fit(train)
    assert fair.bundle_.model_type == "vfae" and fair.bundle_.schema.context[0].name == "dc"
    plain_accuracy, fair_accuracy = machine_accuracy(plain, train), machine_accuracy(fair, train)
    # Measured .94 (a plain VAE's codes say which datacenter a row came from), .70 for the
    # conditional VAE (conditioning alone leaves some), .57 with the MMD; chance is .34.
    assert plain_accuracy > 0.9
    assert fair_accuracy < plain_accuracy - 0.25
    assert fair_accuracy < machine_accuracy(conditional, train) - 0.05
    assert roc_auc_score(labels, fair.anomaly_score(probe)) > 0.85
    # Through the bundle as every model: LiteRT agrees with TensorFlow; a datacenter never
    # seen is scored without it and flagged.
    save_bundle(fair.bundle_, tmp_path / "vfae")
    loaded = load_bundle(tmp_path / "vfae")
    assert isinstance(loaded.model, VFAE)
    assert_scorer_matches_tensorflow(loaded, encode(loaded.schema, probe).values)
    unseen = VAEDetector.load(tmp_path / "vfae").score_records(probe.head(3).assign(dc="dc-z"))
    assert unseen.context_unseen is not None and unseen.context_unseen.all()


def test_the_nuisance_column_is_required_and_only_for_vfae() -> None:
    frame = fleet(200, seed=2)
    with pytest.raises(ConfigError, match=r"needs the column to be invariant to"):
        VAEDetector(model="vfae", **TINY).fit(frame)
    with pytest.raises(ConfigError, match=r"nuisance_column and mmd_weight are for model 'vfae'"):
        VAEDetector(nuisance_column="dc", **TINY).fit(frame)
