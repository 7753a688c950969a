"""The benchmarks' shared choice of models: with no --models, every model chosen can be built
from the run's options, so a long run does not stop at a model that needs what the data lacks."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

from common import choose_models  # noqa: E402

from detector.nn.models import MODELS  # noqa: E402
from detector.nn.training import TrainingConfig  # noqa: E402


@pytest.mark.parametrize("params", [{}, {"time_column": "t"}], ids=["plain", "series"])
def test_every_default_model_takes_the_runs_options(params: dict[str, str]) -> None:
    models, skipped = choose_models(None, params)
    assert set(models) | set(skipped) == set(MODELS)
    config = TrainingConfig(**params)
    for name in models:
        MODELS[name].options(config)  # a ConfigError names what the model needs


def test_a_series_model_runs_only_where_the_rows_have_a_time_column() -> None:
    assert "conv-vae" in choose_models(None)[1]
    assert "conv-vae" in choose_models(None, {"time_column": "t"})[0]
