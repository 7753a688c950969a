"""Model bundles: a directory with ``model.keras`` and a JSON ``manifest.json``.

The manifest holds everything besides the network: the schema and its fitted encoding, the
calibration, the scoring settings, training metrics and warnings, package versions, a
fingerprint of the training data and the creation time. Nothing is pickled, and the network is
loaded with Keras safe mode on, so loading a bundle never runs code from it. A SHA-256 of
``model.keras`` in the manifest catches a network swapped or edited after it was written.

Writes are atomic: a bundle is written to a temporary sibling directory and renamed into place,
so a reader sees the old bundle or the new one, never half of one.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from functools import cached_property
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from detector.errors import BundleError
from detector.features import Schema
from detector.models import VAE
from detector.scoring import ScoreGraph, score_kinds
from detector.threshold import Calibrator

FORMAT = "anomaly-detector-bundle"
FORMAT_VERSION = 1
MODEL_FILE = "model.keras"
MANIFEST_FILE = "manifest.json"
_PACKAGES = ("anomaly-detector", "tensorflow", "keras", "numpy", "pandas", "scikit-learn")


@dataclass(frozen=True, eq=False)
class Bundle:
    """A trained detector: network, schema, calibration and the metadata that explains them."""

    model: VAE
    schema: Schema
    calibrator: Calibrator
    score_kind: str
    n_samples: int
    noise_seed: int
    #: Typical held-out negative log-likelihood of each model term ``(n_terms,)``; subtracted so
    #: contributions say how much more a column costs than usual.
    term_baseline: np.ndarray
    model_type: str = "vae"
    params: dict[str, Any] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)
    data_fingerprint: dict[str, Any] = field(default_factory=dict)
    created_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))

    @cached_property
    def graph(self) -> ScoreGraph:
        return ScoreGraph(self.model, n_samples=self.n_samples, seed=self.noise_seed)

    @cached_property
    def version(self) -> str:
        """A content id of the network's weights: the same weights give the same version."""
        digest = hashlib.sha256()
        for weight in self.model.weights:
            digest.update(np.asarray(weight.numpy()).tobytes())
        return digest.hexdigest()[:12]

    def with_target_fpr(self, target_fpr: float) -> Bundle:
        return replace(self, calibrator=self.calibrator.with_target(target_fpr))

    def manifest(self, model_sha256: str) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "model_type": self.model_type,
            "version": self.version,
            "created_at": self.created_at,
            "packages": package_versions(),
            "params": self.params,
            "schema": self.schema.to_dict(),
            "scoring": {
                "score": self.score_kind,
                "n_samples": self.n_samples,
                "noise_seed": self.noise_seed,
                "term_baseline": [float(v) for v in self.term_baseline],
            },
            "calibration": self.calibrator.to_dict(),
            "training": self.training,
            "data_fingerprint": self.data_fingerprint,
            "files": {MODEL_FILE: {"sha256": model_sha256}},
        }


def package_versions() -> dict[str, str]:
    versions = {}
    for name in _PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def save_bundle(bundle: Bundle, path: str | os.PathLike[str]) -> Path:
    """Write ``bundle`` to the directory ``path`` atomically, replacing any bundle there."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.parent / f".{target.name}.tmp-{uuid.uuid4().hex[:8]}"
    staging.mkdir()
    try:
        bundle.model.save(staging / MODEL_FILE)
        manifest = bundle.manifest(_sha256(staging / MODEL_FILE))
        _write_json(staging / MANIFEST_FILE, manifest)
        _swap_into_place(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target


def _swap_into_place(staging: Path, target: Path) -> None:
    if target.exists() and not (target / MANIFEST_FILE).exists() and any(target.iterdir()):
        raise BundleError(
            f"{target} exists and is not a model bundle; choose another --out or remove it"
        )
    retired = target.parent / f".{target.name}.old-{uuid.uuid4().hex[:8]}"
    if target.exists():
        target.rename(retired)
    staging.rename(target)
    shutil.rmtree(retired, ignore_errors=True)


def set_target_fpr(path: str | os.PathLike[str], target_fpr: float) -> Bundle:
    """Change a saved bundle's target false-positive rate in place, without retraining."""
    bundle = load_bundle(path).with_target_fpr(target_fpr)
    manifest_path = Path(path) / MANIFEST_FILE
    manifest = json.loads(manifest_path.read_text())
    manifest["calibration"] = bundle.calibrator.to_dict()
    _write_json(manifest_path, manifest)
    return bundle


def _write_json(path: Path, payload: dict[str, Any]) -> None:
    # Write beside, then rename: a reader never sees a half-written manifest.
    partial = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}")
    partial.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")
    os.replace(partial, path)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_bundle(path: str | os.PathLike[str]) -> Bundle:
    """Load and check a bundle; raise ``BundleError`` saying what is wrong and what to do."""
    root = Path(path)
    manifest_path = root / MANIFEST_FILE
    if not manifest_path.is_file():
        raise BundleError(
            f"no model bundle at {root} (no {MANIFEST_FILE}); train one with "
            f"`anomaly train DATA --out {root}`"
        )
    try:
        manifest = json.loads(manifest_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BundleError(f"{manifest_path} is not valid JSON ({exc}); retrain the model") from None
    _check_manifest(root, manifest)
    model = _load_network(root / MODEL_FILE)
    try:
        schema = Schema.from_dict(manifest["schema"])
        calibrator = Calibrator.from_dict(manifest["calibration"])
        scoring = manifest["scoring"]
        bundle = Bundle(
            model=model,
            schema=schema,
            calibrator=calibrator,
            score_kind=str(scoring["score"]),
            n_samples=int(scoring["n_samples"]),
            noise_seed=int(scoring["noise_seed"]),
            term_baseline=np.asarray(scoring["term_baseline"], dtype=np.float64),
            model_type=str(manifest["model_type"]),
            params=dict(manifest.get("params", {})),
            training=dict(manifest.get("training", {})),
            data_fingerprint=dict(manifest.get("data_fingerprint", {})),
            created_at=str(manifest["created_at"]),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise BundleError(
            f"{manifest_path} is malformed ({type(exc).__name__}: {exc}); it was edited or "
            "written by another tool: retrain the model"
        ) from None
    _check_consistent(root, bundle)
    return bundle


def _check_manifest(root: Path, manifest: Any) -> None:
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise BundleError(f"{root} is not an anomaly-detector model bundle")
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        raise BundleError(
            f"{root} has bundle format {version}; this version of anomaly-detector reads format "
            f"{FORMAT_VERSION}: retrain the model with this version"
        )
    saved_keras = str(manifest.get("packages", {}).get("keras", "0"))
    current_keras = package_versions()["keras"]
    if saved_keras.split(".")[0] != current_keras.split(".")[0]:
        raise BundleError(
            f"{root} was written with Keras {saved_keras}, this is Keras {current_keras}; "
            "retrain the model or install a matching Keras"
        )
    expected = manifest.get("files", {}).get(MODEL_FILE, {}).get("sha256")
    model_path = root / MODEL_FILE
    if not model_path.is_file():
        raise BundleError(f"{root} has no {MODEL_FILE}; the bundle is incomplete: retrain it")
    if expected != _sha256(model_path):
        raise BundleError(
            f"{model_path} does not match the checksum in {MANIFEST_FILE}: the bundle was "
            "modified after it was written; restore it from its source or retrain"
        )


def _load_network(model_path: Path) -> VAE:
    import keras

    try:
        # safe_mode refuses lambdas and other code embedded in the file.
        model = keras.saving.load_model(model_path, compile=False, safe_mode=True)
    except Exception as exc:  # Keras raises many types for a bad file; all mean the same here.
        raise BundleError(f"cannot load {model_path}: {exc}; retrain the model") from None
    if not isinstance(model, VAE):
        raise BundleError(f"{model_path} holds a {type(model).__name__}, not a detector model")
    return model


def _check_consistent(root: Path, bundle: Bundle) -> None:
    problems = []
    if bundle.model.input_dim != bundle.schema.n_features:
        problems.append(
            f"network input width {bundle.model.input_dim} != schema width "
            f"{bundle.schema.n_features}"
        )
    if len(bundle.term_baseline) != len(bundle.schema.feature_columns):
        problems.append("term baseline length does not match the schema")
    context_sizes = tuple(getattr(bundle.model, "context_sizes", ()))
    if context_sizes != bundle.schema.context_sizes:
        problems.append(
            f"network context widths {list(context_sizes)} != schema context widths "
            f"{list(bundle.schema.context_sizes)}"
        )
    from detector.models import MODELS

    if MODELS.get(bundle.model_type) is not type(bundle.model):
        problems.append(
            f"manifest says model {bundle.model_type!r}, the network is a "
            f"{type(bundle.model).__name__}"
        )
    if bundle.score_kind not in score_kinds(bundle.model):
        problems.append(f"unknown score kind {bundle.score_kind!r}")
    if not 1 <= bundle.n_samples <= 10_000:
        problems.append(f"sample count {bundle.n_samples} out of range")
    if problems:
        raise BundleError(f"{root} is inconsistent ({'; '.join(problems)}); retrain the model")
