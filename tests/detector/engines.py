"""A check shared by the model tests: a bundle's LiteRT scorer computes what TensorFlow does."""

from __future__ import annotations

from typing import Any

import numpy as np

from detector.nn.lite_graph import LiteScoreGraph
from detector.scoring.scores import ScoreGraph


def assert_scorer_matches_tensorflow(bundle: Any, x: np.ndarray) -> None:
    """Every output of ``bundle.graph`` (the LiteRT flatbuffer) equals the traced TensorFlow
    graph's on encoded records ``x``, to float32 rounding."""
    assert isinstance(bundle.graph, LiteScoreGraph)
    traced = ScoreGraph(bundle.model, n_samples=bundle.n_samples, seed=bundle.noise_seed)
    lite, reference = bundle.graph(x), traced(x)
    assert set(lite) == set(reference)
    for name, values in reference.items():
        np.testing.assert_allclose(lite[name], values, rtol=1e-5, atol=1e-4, err_msg=name)


def assert_trains_saves_and_scores(model: str, frame: Any, path: Any, **options: Any) -> Any:
    """Train ``model`` on ``frame`` with the tiny settings, save and load its bundle, check its
    LiteRT scorer against TensorFlow and that broken records score above normal ones; the
    loaded bundle is returned for the model's own checks."""
    import pandas as pd

    from detector.bundles.bundle import load_bundle, save_bundle
    from detector.estimator import VAEDetector
    from detector.features.encode import encode
    from tests.conftest import TINY, broken, normal_records

    detector = VAEDetector(model=model, **{**TINY, **options}).fit(frame)
    history = detector.summary_.history
    assert all(np.isfinite(values).all() for values in history.values())
    assert history["neg_elbo"][-1] < history["neg_elbo"][0]
    save_bundle(detector.bundle_, path)
    loaded = load_bundle(path)
    assert loaded.model_type == model
    records = pd.DataFrame(normal_records(60) + [broken(r) for r in normal_records(5)])
    assert_scorer_matches_tensorflow(loaded, encode(loaded.schema, records).values)
    scores = VAEDetector.load(path).anomaly_score(records)
    assert scores[-5:].min() > np.median(scores[:60])
    return loaded


def encoded_records(n: int, seed: int = 0) -> np.ndarray:
    """``n`` encoded records for a network of 3 numeric features and one 3-way categorical
    group, ``(n, 6)``: the small network the loss tests build."""
    rng = np.random.default_rng(seed)
    one_hot = np.eye(3, dtype=np.float32)[rng.integers(0, 3, n)]
    return np.concatenate([rng.normal(size=(n, 3)).astype(np.float32), one_hot], axis=1)
