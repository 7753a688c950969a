"""What a bundle's checksums and signature protect: every field that changes scoring, a
``model.keras`` that names code, and, with ``ANOMALY_BUNDLE_KEY``, a bundle re-checksummed by
someone without the key.

Tampering is done as an attacker would: edit the JSON, then recompute the documented checksum
(SHA-256 of the manifest without ``integrity``, as canonical JSON) with nothing but hashlib.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from detector.bundles.bundle import load_bundle, save_bundle, set_target_fpr
from detector.bundles.format import MANIFEST_FILE, MODEL_FILE, NEIGHBOURS_FILE
from detector.errors import BundleError, ConfigError
from detector.scoring.threshold import Calibrator

KEY = "ANOMALY_BUNDLE_KEY"


def _copy(bundle_dir: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(bundle_dir, tmp_path / "copy"))


def _manifest(path: Path) -> dict[str, Any]:
    return json.loads((path / MANIFEST_FILE).read_text())  # type: ignore[no-any-return]


def _write(path: Path, manifest: dict[str, Any], *, reseal: bool) -> None:
    if reseal:
        body = {k: v for k, v in manifest.items() if k != "integrity"}
        canonical = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
        manifest = {**body, "integrity": {"sha256": hashlib.sha256(canonical).hexdigest()}}
    (path / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2))


def _set(*keys: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def edit(manifest: dict[str, Any]) -> None:
        node = manifest
        for key in keys[:-1]:
            node = node[key]
        node[keys[-1]] = value(node[keys[-1]]) if callable(value) else value

    return edit


SCORING_EDITS = {
    "target_fpr": _set("calibration", "target_fpr", value=1e-300),
    "threshold": _set("calibration", "threshold", value=lambda t: t * 10),
    "reference": _set("calibration", "reference", value=lambda r: [v - 100 for v in r]),
    "score kind": _set("scoring", "score", value="elbo"),
    "samples": _set("scoring", "n_samples", value=1),
    "schema median": _set("schema", "numeric", value=lambda c: [{**c[0], "median": 1e9}, *c[1:]]),
    "file checksum": _set("files", MODEL_FILE, value={"sha256": "0" * 64}),
}


@pytest.mark.parametrize("edit", SCORING_EDITS.values(), ids=SCORING_EDITS.keys())
def test_an_edit_to_anything_that_changes_scoring_is_refused(bundle_dir, tmp_path, edit) -> None:
    copy = _copy(bundle_dir, tmp_path)
    manifest = _manifest(copy)
    edit(manifest)
    _write(copy, manifest, reseal=False)
    with pytest.raises(BundleError, match=r"manifest\.json does not match its own checksum"):
        load_bundle(copy)


CALIBRATION_EDITS = {
    "target_fpr far too small": ({"target_fpr": 1e-300}, "target_fpr"),
    "target_fpr over one half": ({"target_fpr": 0.7}, "target_fpr"),
    "threshold that lies": ({"threshold": -1e9}, "threshold"),
    "negative tail scale": ({"tail_scale": -1.0}, "tail_shape/tail_scale"),
    "infinite tail start": ({"tail_start": float("inf")}, "tail_start"),
}


@pytest.mark.parametrize(
    ("change", "needle"), CALIBRATION_EDITS.values(), ids=CALIBRATION_EDITS.keys()
)
def test_calibration_values_are_checked_even_when_the_checksum_matches(
    bundle_dir, tmp_path, change, needle
) -> None:
    # The checksum holds no secret, so it is recomputed after the edit: values must be sane too.
    copy = _copy(bundle_dir, tmp_path)
    manifest = _manifest(copy)
    manifest["calibration"].update(change)
    _write(copy, manifest, reseal=True)
    with pytest.raises(BundleError, match=f"calibration in .*manifest.json is invalid.*{needle}"):
        load_bundle(copy)


def test_training_refuses_a_target_the_loader_would_refuse() -> None:
    scores = np.random.default_rng(0).normal(size=200)
    with pytest.raises(ConfigError, match=r"\[1e-06, 0.5\)"):
        Calibrator.fit(scores, target_fpr=1e-7)


def test_a_lambda_model_with_matching_checksums_is_refused_when_loading_for_scoring(
    bundle_dir, tmp_path
) -> None:
    import keras

    copy = _copy(bundle_dir, tmp_path)
    evil = keras.Sequential([keras.Input((3,)), keras.layers.Lambda(lambda x: x * 2)])
    evil.save(copy / MODEL_FILE)
    _reseal_model_checksum(copy)
    # load_bundle is all scoring needs (it scores through the LiteRT file); it must refuse.
    with pytest.raises(BundleError, match=r"cannot load .*model.keras.*keras.layers.Lambda"):
        load_bundle(copy)


def test_code_hidden_inside_a_detector_network_config_is_refused(bundle_dir, tmp_path) -> None:
    # The published safe-mode bypasses hide a function object deep in an otherwise normal config.
    copy = _copy(bundle_dir, tmp_path)
    with zipfile.ZipFile(bundle_dir / MODEL_FILE) as original:
        members = {name: original.read(name) for name in original.namelist()}
    config = json.loads(members["config.json"])
    config["config"]["activation"] = {
        "module": "builtins",
        "class_name": "function",
        "config": "exec",
        "registered_name": "function",
    }
    members["config.json"] = json.dumps(config).encode()
    with zipfile.ZipFile(copy / MODEL_FILE, "w") as rewritten:
        for name, content in members.items():
            rewritten.writestr(name, content)
    _reseal_model_checksum(copy)
    with pytest.raises(BundleError, match=r"cannot load .*builtins.function"):
        load_bundle(copy)


def _reseal_model_checksum(copy: Path) -> None:
    manifest = _manifest(copy)
    digest = hashlib.sha256((copy / MODEL_FILE).read_bytes()).hexdigest()
    manifest["files"][MODEL_FILE]["sha256"] = digest
    _write(copy, manifest, reseal=True)


@pytest.fixture
def signed_dir(fitted, tmp_path, monkeypatch) -> Path:  # type: ignore[no-untyped-def]
    monkeypatch.setenv(KEY, "the-bundle-key")
    return save_bundle(fitted.bundle_, tmp_path / "signed")


def test_with_a_key_a_bundle_resealed_without_it_is_refused(signed_dir, fitted) -> None:
    assert load_bundle(signed_dir).version == fitted.bundle_.version
    manifest = _manifest(signed_dir)
    manifest["scoring"]["n_samples"] = 1
    _write(signed_dir, manifest, reseal=True)
    with pytest.raises(BundleError, match="not signed, and ANOMALY_BUNDLE_KEY is set"):
        load_bundle(signed_dir)


def test_with_a_key_a_signature_copied_onto_an_edit_is_refused(signed_dir) -> None:
    manifest = _manifest(signed_dir)
    signature = manifest["integrity"]["hmac_sha256"]
    manifest["scoring"]["n_samples"] = 1
    _write(signed_dir, manifest, reseal=True)
    resealed = _manifest(signed_dir)
    resealed["integrity"]["hmac_sha256"] = signature
    _write(signed_dir, resealed, reseal=False)
    with pytest.raises(BundleError, match="valid signature for the key in ANOMALY_BUNDLE_KEY"):
        load_bundle(signed_dir)


def test_with_a_key_unsigned_bundles_and_other_keys_are_refused(
    bundle_dir, signed_dir, monkeypatch
) -> None:
    with pytest.raises(BundleError, match="not signed, and ANOMALY_BUNDLE_KEY is set"):
        load_bundle(bundle_dir)
    monkeypatch.setenv(KEY, "another-key")
    with pytest.raises(BundleError, match="valid signature"):
        load_bundle(signed_dir)
    monkeypatch.setenv(KEY, "")
    with pytest.raises(BundleError, match="set but empty"):
        load_bundle(signed_dir)


def test_a_signed_bundle_changes_threshold_only_with_its_key(signed_dir, monkeypatch) -> None:
    assert set_target_fpr(signed_dir, 0.01).calibrator.target_fpr == 0.01
    assert load_bundle(signed_dir).calibrator.target_fpr == 0.01  # still signed
    monkeypatch.delenv(KEY)
    assert load_bundle(signed_dir).calibrator.target_fpr == 0.01  # the checksum still checks
    with pytest.raises(BundleError, match="is signed; set ANOMALY_BUNDLE_KEY"):
        set_target_fpr(signed_dir, 0.02)


def test_a_bundle_from_before_manifest_checksums_still_loads_without_a_key(
    bundle_dir, tmp_path
) -> None:
    copy = _copy(bundle_dir, tmp_path)
    manifest = _manifest(copy)
    manifest.pop("integrity", None)
    _write(copy, manifest, reseal=False)
    # A bundle of this format is always written with its checksum: one without it had it
    # removed (a security helper's edit then loaded with a warning that the bundle was old).
    with pytest.raises(BundleError, match=r"has no checksum, though every bundle of format 2"):
        load_bundle(copy)
    _write(copy, {**manifest, "format_version": 1}, reseal=False)  # as bundles were before
    assert load_bundle(copy).calibrator.target_fpr == pytest.approx(0.05)


def test_a_bank_declaring_arrays_larger_than_it_holds_is_refused_before_allocating() -> None:
    # A re-sealed bank declaring 4e9 rows asked numpy for 358 GiB: an internal MemoryError.
    from detector.scoring.neighbours import NeighbourBank

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive, archive.open("bank.npy", "w") as member:
        header = {"descr": "<f4", "fortran_order": False, "shape": (4_000_000_000, 24)}
        np.lib.format.write_array_header_1_0(member, header)
        member.write(b"\0" * 96)
    with pytest.raises(BundleError, match=r"bank declares shape \(4000000000, 24\) \(357\.6 GiB\)"):
        NeighbourBank.from_bytes(buffer.getvalue(), 24)


MALFORMED = {
    "files not a table": _set("files", value=[]),
    "a file's entry not a table": _set("files", MODEL_FILE, value="x"),
    "packages not a table": _set("packages", value=7),
    "a numeric column not a table": _set("schema", "numeric", value=lambda c: [None, *c[1:]]),
    "no term baseline": _set("scoring", "term_baseline", value=None),
    # int() took these: true was one latent sample, 8.7 eight (a helper, 2026-12-07).
    "samples as text": _set("scoring", "n_samples", value="8"),
    "samples true": _set("scoring", "n_samples", value=True),
    "samples 8.7": _set("scoring", "n_samples", value=8.7),
    "noise seed as text": _set("scoring", "noise_seed", value="0"),
}


@pytest.mark.parametrize("edit", MALFORMED.values(), ids=MALFORMED.keys())
def test_a_resealed_manifest_of_the_wrong_shape_is_refused_not_a_crash(
    bundle_dir, tmp_path, edit
) -> None:
    """A manifest rewritten with a recomputed checksum (by another tool, or by hand) whose
    entries have other types: an internal AttributeError before."""
    copy = _copy(bundle_dir, tmp_path)
    manifest = _manifest(copy)
    edit(manifest)
    _write(copy, manifest, reseal=True)
    with pytest.raises(BundleError, match=r"manifest\.json (has a malformed|is malformed)|incons"):
        load_bundle(copy)


def _drop_bank(manifest: dict[str, Any]) -> None:
    del manifest["files"][NEIGHBOURS_FILE]


RESEALED_MISREADS = {
    # The format's version as text: "has bundle format 1; ... reads format 1".
    "format version as text": (_set("format_version", value="1"), "bundle format '1'"),
    "format version true": (_set("format_version", value=True), "bundle format True"),
    "format version 1.0": (_set("format_version", value=1.0), "bundle format 1.0"),
    # Every value clipped past its bound: every record flagged.
    "negative clip": (_set("schema", "clip", value=-1), "clip -1.0 is not a positive number"),
    # "unknown score kind 'knn'", blaming the score for the file left out.
    "bank left out": (_drop_bank, "'knn' needs the normal rows of neighbours.npz"),
}


@pytest.mark.parametrize(("edit", "needle"), RESEALED_MISREADS.values(), ids=RESEALED_MISREADS)
def test_a_resealed_manifest_is_refused_naming_what_is_wrong(
    bundle_dir, tmp_path, edit, needle
) -> None:
    copy = _copy(bundle_dir, tmp_path)
    manifest = _manifest(copy)
    edit(manifest)
    _write(copy, manifest, reseal=True)
    with pytest.raises(BundleError) as refused:
        load_bundle(copy)
    assert needle in str(refused.value)


def test_a_manifest_nested_too_deeply_to_read_is_refused(bundle_dir, tmp_path) -> None:
    copy = _copy(bundle_dir, tmp_path)
    (copy / MANIFEST_FILE).write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(BundleError, match="nested too deeply"):
        load_bundle(copy)


def test_a_series_entry_of_loose_types_is_refused() -> None:
    # tuple("host") made the key columns h, o, s, t, named later as missing columns.
    from detector.series.windows import read_series

    good = {"time_column": "ts", "key_columns": ["host"], "window": 5, "level_hours": 24}
    assert read_series(good) is not None
    for field, value in [("key_columns", "host"), ("window", "5"), ("level_hours", 24.5)]:
        with pytest.raises(TypeError, match=field):
            read_series({**good, field: value})


def test_an_oversized_manifest_is_refused_before_it_is_read(
    bundle_dir, tmp_path, monkeypatch
) -> None:
    # A 150 MB manifest with a valid checksum loaded, taking each server worker to 470 MB.
    from detector.bundles import bundle

    copy = _copy(bundle_dir, tmp_path)
    monkeypatch.setattr(bundle, "MAX_MANIFEST_BYTES", (copy / MANIFEST_FILE).stat().st_size - 1)
    with pytest.raises(BundleError, match="a manifest may be"):
        load_bundle(copy)
