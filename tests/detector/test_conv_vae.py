"""The temporal encoder (``--model conv-vae``): the window read as a sequence in time, through
the same training, bundle and LiteRT scorer as every model."""

from __future__ import annotations

import numpy as np
import pytest

from detector.bundles.bundle import load_bundle
from detector.errors import ConfigError
from detector.estimator import VAEDetector
from detector.features.encode import encode
from detector.nn.models.conv import ConvVAE
from detector.series.windows import SeriesSpec, lag_name, make_windows
from tests.conftest import HOSTS, TINY, fleet
from tests.detector.engines import assert_scorer_matches_tensorflow

SERIES = {"time_column": "ts", "series_columns": ("host",), "window": 4}


def test_the_encoder_reads_the_steps_in_time_order() -> None:
    model = ConvVAE(n_numeric=6, latent_dim=2, hidden_units=(8, 4), steps=3)
    model.build((None, 6))
    # Records laid out newest step first (a, b, a[-1], b[-1], a[-2], b[-2]).
    x = np.random.default_rng(0).normal(size=(4, 6)).astype(np.float32)
    mean, _ = (np.asarray(t) for t in model.encode(x))
    # The same steps, swapped: a different sequence, a different code.
    swapped = x[:, [2, 3, 0, 1, 4, 5]]
    assert not np.allclose(np.asarray(model.encode(swapped)[0]), mean)
    # The causal convolution over the oldest-first sequence: the layer on x reshaped.
    sequence = x.reshape(4, 3, 2)[:, ::-1]
    convolved = np.asarray(model.convolution(sequence)).reshape(4, -1)
    expected = np.asarray(model.z_mean(model.encoder_body(convolved)))
    np.testing.assert_allclose(mean, expected, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="7 numeric features do not make 3 window steps"):
        ConvVAE(n_numeric=7, latent_dim=2, hidden_units=(8,), steps=3)


def test_a_conv_vae_trains_saves_and_scores_a_series(tmp_path) -> None:
    train = fleet(300)
    detector = VAEDetector(model="conv-vae", **SERIES, **TINY).fit(train)
    history = detector.summary_.history
    assert history["neg_elbo"][-1] < history["neg_elbo"][0]
    # The layout the encoder relies on: the numeric features step by step, newest first.
    own = ["cpu", "mem"]
    expected = [c if lag == 0 else lag_name(c, lag) for lag in range(4) for c in own]
    assert [c.name for c in detector.bundle_.schema.numeric] == expected
    detector.save(tmp_path / "m")
    loaded = load_bundle(tmp_path / "m")
    assert isinstance(loaded.model, ConvVAE) and loaded.model_type == "conv-vae"
    test = fleet(40, start="2026-01-02", seed=1)
    row = int(test.index[test["host"] == "web-01"][20])
    test.loc[row, "cpu"] = 10 * HOSTS["db-01"]  # a spike far above every host
    windows = make_windows(test, SeriesSpec("ts", ("host",), window=4))
    assert_scorer_matches_tensorflow(loaded, encode(loaded.schema, windows.frame).values)
    scores = VAEDetector.load(tmp_path / "m").anomaly_score(test)
    assert scores[row] == scores.max()


def test_a_conv_vae_without_a_series_is_told_to_name_one(train_frame) -> None:
    with pytest.raises(ConfigError, match=r"conv-vae.*time_column='COL'"):
        VAEDetector(model="conv-vae", **TINY).fit(train_frame)
