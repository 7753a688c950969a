"""``--max-updates``: a table long enough that its epochs would run more mini-batch updates than
the budget trains for fewer epochs, its KL warm-up and patience cut in proportion, and says so
and records it; a table under the budget trains the very bundle it always did."""

from __future__ import annotations

import json
import math
from typing import Any

import pandas as pd
import pytest

from detector.nn.training import TrainingConfig, fit_row_count, within_budget
from detector.nn.training_options import DEFAULT_MAX_UPDATES
from tests.conftest import DATA
from tests.detector.test_cli import TINY_FLAGS, run

FLAGS = [*TINY_FLAGS[TINY_FLAGS.index("--hidden-units") :], "--epochs", "4"]
ROWS = 600


def batches_an_epoch() -> int:
    """The mini-batches of an epoch of ``ROWS`` rows under ``FLAGS``, as training counts them."""
    batch = int(FLAGS[FLAGS.index("--batch-size") + 1])
    return math.ceil(fit_row_count(ROWS, TrainingConfig(batch_size=batch)) / batch)


def manifest_of(capsys: Any, tmp_path: Any, name: str, *flags: str) -> tuple[str, dict]:
    data = tmp_path / "t.csv"
    if not data.exists():
        pd.read_csv(DATA / "train.csv").head(ROWS).to_csv(data, index=False)
    out = tmp_path / name
    code, said, _ = run(capsys, "train", str(data), "--out", str(out), *FLAGS, *flags)
    assert code == 0
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["training"].pop("seconds")
    manifest.pop("created_at", None)
    return said, manifest


def test_a_budget_that_binds_cuts_the_epochs_and_says_so(capsys, tmp_path) -> None:
    batches = batches_an_epoch()
    assert batches > 1  # else the cap below would not cut between epochs
    cap = 2 * batches + 1  # 4 epochs would run 4 x batches; the budget holds 2 whole ones
    said, manifest = manifest_of(capsys, tmp_path, "m", "--max-updates", str(cap))
    training = manifest["training"]
    assert training["epochs_run"] == 2
    assert training["budget"] == {
        "max_updates": cap,
        "batches_per_epoch": batches,
        "updates": 2 * batches,
        "epochs": 2,
        "kl_warmup_epochs": 2,  # 3 of 4 epochs -> ceil(3 x 2 / 4)
        "patience": 10,  # 20 -> ceil(20 x 2 / 4)
    }
    assert not training["stopped_early"]
    # The options as given, and the budget among them.
    assert manifest["params"]["epochs"] == 4 and manifest["params"]["max_updates"] == cap
    stop = (
        f"2 epochs (stopped at the budget of {cap} updates ({2 * batches} run, {batches} an "
        "epoch); --max-updates 0 for no cap)"
    )
    assert stop in said
    code, said, _ = run(capsys, "info", str(tmp_path / "m"))
    assert code == 0 and f"stopped at the budget of {cap} updates" in said


def test_a_table_under_the_budget_trains_the_very_same_bundle(capsys, tmp_path) -> None:
    exact = 4 * batches_an_epoch()  # all 4 epochs' updates, not one more
    manifests = [
        manifest_of(capsys, tmp_path, f"m{cap}", *flags)[1]
        for cap, flags in (
            ("none", ("--max-updates", "0")),
            ("exact", ("--max-updates", str(exact))),
            ("default", ()),
        )
    ]
    assert manifests[0]["version"] == manifests[1]["version"] == manifests[2]["version"]
    assert manifests[0]["training"] == manifests[1]["training"] == manifests[2]["training"]
    # The manifest a bundle had before the option: no entry for it, in params or training.
    assert "max_updates" not in manifests[0]["params"]
    assert "budget" not in manifests[0]["training"]
    assert manifests[0]["training"]["epochs_run"] == 4


def test_a_million_rows_train_fifteen_epochs_by_default() -> None:
    config = TrainingConfig()
    batches = math.ceil(fit_row_count(1_000_000, config) / config.batch_size)
    assert batches == 6_485
    cut = within_budget(config, batches)
    assert (cut.epochs, cut.kl_warmup_epochs, cut.patience) == (15, 1, 1)
    assert cut.epochs * batches <= DEFAULT_MAX_UPDATES < (cut.epochs + 1) * batches
    # Under the budget (the largest quality benchmark set: 130 batches, 300 epochs), untouched.
    assert within_budget(config, 130) is config
    assert within_budget(TrainingConfig(max_updates=0), batches).epochs == 300


def test_one_epoch_at_least_and_warm_up_and_patience_kept_where_zero() -> None:
    cut = within_budget(TrainingConfig(max_updates=10, kl_warmup_epochs=0, patience=0), 50)
    assert (cut.epochs, cut.kl_warmup_epochs, cut.patience) == (1, 0, 0)


@pytest.mark.parametrize("value", ["-1"])
def test_max_updates_must_be_zero_or_a_count(capsys, tmp_path, value) -> None:
    code, said, err = run(
        capsys,
        "train",
        str(DATA / "train.csv"),
        "--out",
        str(tmp_path / "m"),
        "--max-updates",
        value,
    )
    assert code != 0
    assert "--max-updates -1 must be 0 (no cap) or a number of mini-batch updates" in said + err
