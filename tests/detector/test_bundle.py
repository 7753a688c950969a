"""Model bundles: a faithful round trip, and refusal of anything incompatible or tampered."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

from detector.bundles.bundle import load_bundle, save_bundle, set_target_fpr, write_manifest
from detector.bundles.format import MANIFEST_FILE, MODEL_FILE, NEIGHBOURS_FILE, SCORER_FILE
from detector.errors import BundleError
from detector.estimator import VAEDetector
from detector.features.encode import encode
from tests.detector.engines import assert_scorer_matches_tensorflow


def _copy(bundle_dir: Path, tmp_path: Path) -> Path:
    target = tmp_path / "copy"
    shutil.copytree(bundle_dir, target)
    return target


def _edit_manifest(path: Path, **changes: object) -> None:
    # Re-sealed, as a tool writing a consistent manifest would: these tests are about what the
    # content says (tests/detector/test_bundle_integrity.py refuses unsealed edits).
    manifest = json.loads((path / MANIFEST_FILE).read_text())
    manifest.update(changes)
    write_manifest(path, manifest)


def test_save_then_load_gives_identical_scores(fitted, bundle_dir, eval_frame) -> None:
    frame = eval_frame.drop(columns=["label", "anomaly_kind"])
    loaded = VAEDetector.load(bundle_dir)
    np.testing.assert_array_equal(loaded.anomaly_score(frame), fitted.anomaly_score(frame))
    assert loaded.bundle_.version == fitted.bundle_.version
    assert loaded.get_params() == fitted.get_params()


def test_manifest_holds_what_an_operator_needs(bundle_dir) -> None:
    manifest = json.loads((bundle_dir / MANIFEST_FILE).read_text())
    for key in (
        "schema",
        "calibration",
        "training",
        "packages",
        "data_fingerprint",
        "created_at",
        "scoring",
        "version",
    ):
        assert key in manifest, key
    assert manifest["packages"]["keras"].startswith("3.")
    assert len(manifest["data_fingerprint"]["sha256"]) == 64
    assert "history" in manifest["training"]


def test_no_pickle_anywhere_in_a_bundle(bundle_dir) -> None:
    import zipfile

    names = zipfile.ZipFile(bundle_dir / MODEL_FILE).namelist()
    assert not [n for n in names if n.endswith((".pkl", ".pickle", ".joblib"))]
    assert sorted(p.name for p in bundle_dir.iterdir()) == [
        MANIFEST_FILE,
        MODEL_FILE,
        NEIGHBOURS_FILE,
        SCORER_FILE,
    ]
    # The bank is plain arrays: it loads with pickles refused.
    with np.load(bundle_dir / NEIGHBOURS_FILE, allow_pickle=False) as arrays:
        assert {"bank", "weights", "k", "location", "scale"} <= set(arrays.files)


@pytest.mark.parametrize("name", [MODEL_FILE, SCORER_FILE, NEIGHBOURS_FILE])
def test_a_modified_file_is_refused(bundle_dir, tmp_path, name) -> None:
    copy = _copy(bundle_dir, tmp_path)
    with (copy / name).open("ab") as handle:
        handle.write(b"\0")
    with pytest.raises(BundleError, match="does not match the checksum"):
        load_bundle(copy)


def test_a_missing_scorer_is_refused(bundle_dir, tmp_path) -> None:
    copy = _copy(bundle_dir, tmp_path)
    (copy / SCORER_FILE).unlink()
    with pytest.raises(BundleError, match=f"has no {SCORER_FILE}"):
        load_bundle(copy)


def test_the_scorer_agrees_with_tensorflow(bundle_dir, eval_frame) -> None:
    bundle = load_bundle(bundle_dir)
    x = encode(bundle.schema, eval_frame.drop(columns=["label", "anomaly_kind"])).values
    assert_scorer_matches_tensorflow(bundle, x)


def test_scoring_a_loaded_bundle_never_imports_tensorflow(bundle_dir, eval_frame) -> None:
    # The point of the LiteRT scorer: `anomaly score` and the service start in a fraction of a
    # second and without TensorFlow's memory. Run in a fresh interpreter, since this one has
    # TensorFlow loaded already.
    records = eval_frame.drop(columns=["label", "anomaly_kind"]).head(50).to_json(orient="records")
    program = (
        "import sys, pandas as pd\n"
        "from detector.bundles.bundle import load_bundle\n"
        "from detector.scoring.scores import score_frame\n"
        f"bundle = load_bundle({str(bundle_dir)!r})\n"
        "result = score_frame(bundle, pd.read_json(sys.stdin))\n"
        "assert result.n_scored == 50, result.n_scored\n"
        "loaded = sorted(m for m in ('tensorflow', 'keras') if m in sys.modules)\n"
        "print('imported:', loaded)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", program], input=records, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert "imported: []" in done.stdout


def test_a_bundle_from_before_the_scorer_is_refused_with_retrain(bundle_dir, tmp_path) -> None:
    copy = _copy(bundle_dir, tmp_path)
    (copy / SCORER_FILE).unlink()
    manifest = json.loads((copy / MANIFEST_FILE).read_text())
    del manifest["files"][SCORER_FILE], manifest["scoring"]["kinds"]
    write_manifest(copy, manifest)
    with pytest.raises(BundleError, match=r"older version.*retrain it: `VAEDetector"):
        load_bundle(copy)


def test_code_in_a_model_file_is_never_run(bundle_dir, tmp_path) -> None:
    # A bundle whose network holds a Lambda (arbitrary Python) with a matching checksum:
    # Keras safe mode must refuse it before anything runs.
    copy = _copy(bundle_dir, tmp_path)
    evil = keras.Sequential([keras.Input((3,)), keras.layers.Lambda(lambda x: x * 2)])
    evil.save(copy / MODEL_FILE)
    from detector.bundles.format import sha256_of

    manifest = json.loads((copy / MANIFEST_FILE).read_text())
    manifest["files"][MODEL_FILE]["sha256"] = sha256_of(copy / MODEL_FILE)
    write_manifest(copy, manifest)
    # Refused by load_bundle's check of the archive's config (scoring uses the scorer file and
    # never loads the network), and by Keras safe mode had it got that far.
    with pytest.raises(BundleError, match="cannot load"):
        load_bundle(copy).model  # noqa: B018


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"format_version": 99}, "format 99"),
        ({"format": "something-else"}, "not an anomaly-detector model bundle"),
        ({"packages": {"keras": "2.15.0"}}, "Keras 2.15.0"),
        ({"schema": {"numeric": []}}, "malformed"),
    ],
)
def test_incompatible_manifests_are_refused(bundle_dir, tmp_path, changes, message) -> None:
    copy = _copy(bundle_dir, tmp_path)
    _edit_manifest(copy, **changes)
    with pytest.raises(BundleError, match=message):
        load_bundle(copy)


def test_missing_bundle_names_the_fix(tmp_path) -> None:
    with pytest.raises(BundleError, match=r"train one with `VAEDetector\(\)\.fit\(data\)\.save\("):
        load_bundle(tmp_path / "nope")


def test_saving_replaces_atomically_and_leaves_no_temporaries(fitted, tmp_path) -> None:
    target = tmp_path / "model"
    save_bundle(fitted.bundle_, target)
    save_bundle(fitted.bundle_, target)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]
    assert load_bundle(target).version == fitted.bundle_.version


def test_refuses_to_overwrite_a_directory_that_is_not_a_bundle(fitted, tmp_path) -> None:
    (tmp_path / "precious.txt").write_text("keep me")
    with pytest.raises(BundleError, match="not a model bundle"):
        save_bundle(fitted.bundle_, tmp_path)
    assert (tmp_path / "precious.txt").read_text() == "keep me"


def test_threshold_changes_without_retraining(bundle_dir, tmp_path) -> None:
    copy = _copy(bundle_dir, tmp_path)
    before = load_bundle(copy)
    after = set_target_fpr(copy, 0.001)
    assert after.calibrator.threshold > before.calibrator.threshold
    reloaded = load_bundle(copy)
    assert reloaded.calibrator.target_fpr == 0.001
    # The network is the same; what flags a record is not, and the version says so (it was
    # the weights' id alone: a reloaded service reported the old version with the new threshold).
    assert reloaded.weights_id == before.weights_id
    assert reloaded.version != before.version
    assert after.version == reloaded.version


def test_the_version_tells_apart_bundles_that_score_differently(bundle_dir) -> None:
    # Of the weights alone, `--neighbours 0` (the model's elbo) and the default knn bundle of
    # one network had one version.
    from dataclasses import replace

    bundle = load_bundle(bundle_dir)
    other = replace(bundle, score_kind="elbo", neighbours=None)
    assert other.weights_id == bundle.weights_id and other.version != bundle.version


def test_a_bundle_says_what_its_reader_must_know_and_a_release_refuses_what_it_does_not(
    bundle_dir, tmp_path
) -> None:
    # 2026-12-07 (a helper, rolling back): format 1 grew arrays and fields that change scores,
    # which releases before them ignored: a newer bundle scored up to 47.7 apart, no word.
    from detector.bundles.format import FORMAT_VERSION, KNOWN_FEATURES

    manifest = json.loads((bundle_dir / MANIFEST_FILE).read_text())
    assert manifest["format_version"] == FORMAT_VERSION == 2
    assert "neighbours" in manifest["requires"]
    assert set(manifest["requires"]) <= KNOWN_FEATURES
    expected = load_bundle(bundle_dir)
    older = _copy(bundle_dir, tmp_path / "older")  # every bundle before format 2 still reads
    _edit_manifest(older, format_version=1)
    assert load_bundle(older).version == expected.version
    newer = _copy(bundle_dir, tmp_path / "newer")
    _edit_manifest(newer, requires=[*manifest["requires"], "warp-drive"])
    with pytest.raises(BundleError, match=r"needs \['warp-drive'\], which this release"):
        load_bundle(newer)
    _edit_manifest(newer, format_version=3)
    with pytest.raises(BundleError, match=r"format 3; .* a newer release wrote it"):
        load_bundle(newer)


def test_the_version_tells_apart_bundles_that_read_other_columns(bundle_dir) -> None:
    # Trained on the same values under other column names, two bundles had one version, yet
    # each takes records the other refuses.
    from dataclasses import replace

    from detector.features.schema import Schema

    bundle = load_bundle(bundle_dir)
    state = bundle.schema.to_dict()
    first = state["numeric"][0]["name"]
    state["numeric"][0]["name"] = first + "_renamed"
    state["column_order"] = [c + "_renamed" if c == first else c for c in state["column_order"]]
    renamed = replace(bundle, schema=Schema.from_dict(state))
    assert renamed.version != bundle.version
    assert replace(bundle, schema=Schema.from_dict(bundle.schema.to_dict())).version == (
        bundle.version
    )


def test_training_never_writes_a_manifest_its_loader_refuses(fitted, tmp_path, monkeypatch):
    # A 100 MB label made a 100 MB manifest, saved, then refused by every load as "not one
    # this tool wrote".
    from detector.bundles import bundle

    fitted.save(tmp_path / "m")
    size = (tmp_path / "m" / MANIFEST_FILE).stat().st_size
    monkeypatch.setattr(bundle, "MAX_MANIFEST_BYTES", size // 2)
    with pytest.raises(BundleError, match=r"manifest would be over \d+ MB, what a loader reads"):
        fitted.save(tmp_path / "big")
    assert not (tmp_path / "big").exists()


def test_a_threshold_change_waits_for_a_bundle_being_swapped_in(fitted, tmp_path) -> None:
    # `threshold` read bundle A and wrote its manifest over bundle B's files, trained
    # meanwhile: both exited 0, and every later load refused the bundle (found by a helper).
    import threading

    from detector.bundles.bundle import changing

    fitted.save(tmp_path / "m")
    changed = threading.Thread(target=set_target_fpr, args=(tmp_path / "m", 0.05))
    with changing(tmp_path / "m"):  # as training holds it while it swaps its bundle in
        changed.start()
        changed.join(timeout=1)  # the deadline passes: the change waits for the swap
        assert changed.is_alive()
    changed.join(timeout=60)
    assert not changed.is_alive() and load_bundle(tmp_path / "m").calibrator.target_fpr == 0.05


def test_a_bundle_another_run_saved_meanwhile_is_refused_not_replaced(fitted, tmp_path) -> None:
    # Two `anomaly train --out m` at once both exited 0 and said "saved bundle <id>": the last
    # to finish won, and the other's id named no bundle on disk (found by a helper).
    from detector.bundles.bundle import Found

    target = tmp_path / "m"
    found = Found.at(target)  # as a training starts: no bundle there
    save_bundle(fitted.bundle_, target)  # another run, finished first
    mine = fitted.bundle_.with_target_fpr(0.01)
    with pytest.raises(
        BundleError,
        match=rf"written by another run while this one trained \(bundle "
        rf"{fitted.bundle_.version} is there now\); this run's bundle was not written: give "
        r"another path, or train again to replace it",
    ):
        save_bundle(mine, target, replacing=found)
    assert load_bundle(target).version == fitted.bundle_.version
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]
    # What a run found still there is replaced, as is anything without an expectation.
    save_bundle(mine, target, replacing=Found.at(target))
    assert load_bundle(target).version == mine.version
    save_bundle(fitted.bundle_, target)
    assert load_bundle(target).version == fitted.bundle_.version


def test_a_symbolic_link_is_never_replaced_by_the_bundle_saved_to_it(
    fitted, bundle_dir, tmp_path, monkeypatch
) -> None:
    # A blue/green setup's `current`, a link to a bundle folder, became a folder of the new
    # bundle, and a hidden copy of the link was left beside it (found by a helper).
    from detector.bundles import bundle

    shutil.copytree(bundle_dir, tmp_path / "blue")
    link = tmp_path / "current"
    link.symlink_to("blue")
    refused = rf"current is a symbolic link to {tmp_path / 'blue'}: .* give the folder it "
    with pytest.raises(BundleError, match=refused + r"points to \(path='.*blue'\), or write to"):
        save_bundle(fitted.bundle_, link)
    # A link made while the bundle was written is refused at the swap too.
    link.unlink()
    real_write = bundle.write_manifest

    def linked_meanwhile(root: Path, manifest: dict[str, object]) -> None:
        real_write(root, manifest)
        link.symlink_to("blue")

    monkeypatch.setattr(bundle, "write_manifest", linked_meanwhile)
    with pytest.raises(BundleError, match=refused):
        save_bundle(fitted.bundle_, link)
    assert link.is_symlink() and sorted(p.name for p in tmp_path.iterdir()) == ["blue", "current"]
