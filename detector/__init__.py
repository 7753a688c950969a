"""anomaly-detector: VAE anomaly detection for tables of records.

Public names are loaded on first use, so that ``import detector`` (and the ``anomaly --help``
it serves) does not pay TensorFlow's import time until a model is needed.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "VAEDetector": "detector.estimator",
    "Bundle": "detector.bundles.bundle",
    "load_bundle": "detector.bundles.bundle",
    "save_bundle": "detector.bundles.bundle",
    "set_target_fpr": "detector.bundles.bundle",
    "Schema": "detector.features.schema",
    "Rejection": "detector.features.encoded",
    "Respelling": "detector.features.encoded",
    "fit_schema": "detector.features.schema",
    "encode": "detector.features.encode",
    "ScoreResult": "detector.scoring.results",
    "score_frame": "detector.scoring.scores",
    "Calibrator": "detector.scoring.threshold",
    "TrainingConfig": "detector.nn.training",
    "TrainingSummary": "detector.nn.training",
    "train": "detector.nn.training",
    "BatchReport": "detector.batch.ledger",
    "score_file": "detector.batch.files",
    "Evaluation": "detector.scoring.evaluation",
    "evaluate_scores": "detector.scoring.evaluation",
    "DetectorError": "detector.errors",
    "InputError": "detector.errors",
    "SchemaError": "detector.errors",
    "DataError": "detector.errors",
    "ConfigError": "detector.errors",
    "BundleError": "detector.errors",
    "TrainingError": "detector.errors",
}

__all__ = sorted(_EXPORTS)


#: Exporting modules that import TensorFlow when imported: it is started quietly first.
_NEEDS_TENSORFLOW = {"detector.nn.training"}


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'detector' has no attribute {name!r}")
    if _EXPORTS[name] in _NEEDS_TENSORFLOW:
        from detector.native import import_tensorflow_quietly

        import_tensorflow_quietly()
    return getattr(import_module(_EXPORTS[name]), name)
