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
