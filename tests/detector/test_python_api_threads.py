"""The Python API from several threads and beside a caller's own random draws: fits one at a
time and as if alone, the caller's global generators untouched, stderr never left pointing at
a temporary file, and a child process as quiet as its parent."""

from __future__ import annotations

import os
import random
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from detector import native
from detector.estimator import VAEDetector

TINY = {"epochs": 2, "hidden_units": (8,), "latent_dim": 2, "score_kind": "elbo"}


def table(seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"a": rng.normal(size=200), "b": rng.normal(size=200)})


def test_a_fit_leaves_the_callers_global_random_state_as_it_was() -> None:
    # Keras seeds numpy's and Python's generators: after a fit every caller's draw was the
    # one after seed 0, whatever the caller had seeded.
    np.random.seed(1)
    random.seed(1)
    expected = (np.random.rand(), random.random())
    np.random.seed(1)
    random.seed(1)
    VAEDetector(**TINY, random_state=0).fit(table(0))
    assert (np.random.rand(), random.random()) == expected


def test_fits_in_threads_give_the_models_of_the_same_fits_one_after_the_other() -> None:
    # Two threads' fits drew from one process-wide seed: the same seed gave another model
    # (ELBO scores up to 3.6 apart) than the same fit alone.
    data = table(1)
    alone = [VAEDetector(**TINY, random_state=s).fit(data).anomaly_score(data) for s in (0, 1)]
    together: dict[int, np.ndarray] = {}

    def fit(seed: int) -> None:
        together[seed] = VAEDetector(**TINY, random_state=seed).fit(data).anomaly_score(data)

    threads = [threading.Thread(target=fit, args=(s,)) for s in (0, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    for seed in (0, 1):
        np.testing.assert_array_equal(together[seed], alone[seed])


FIRST_FITS_IN_THREADS = """
import threading
import numpy as np, pandas as pd
from detector import VAEDetector

df = pd.DataFrame(np.random.default_rng(0).normal(size=(200, 2)), columns=["a", "b"])
errors = []

def fit(seed):
    try:
        VAEDetector(epochs=1, hidden_units=(8,), latent_dim=2, random_state=seed).fit(df)
    except Exception as exc:
        errors.append(repr(exc))

threads = [threading.Thread(target=fit, args=(s,)) for s in range(3)]
for t in threads:
    t.start()
for t in threads:
    t.join(timeout=300)
assert not errors, errors
VAEDetector(epochs=1, hidden_units=(8,), latent_dim=2).fit(df)  # and the process still works
print("fitted")
"""


def test_the_first_fits_of_a_process_may_start_in_threads_at_once(tmp_path: Path) -> None:
    # Two threads importing TensorFlow at once: a deadlock error from Python's import locks,
    # or a half-imported module ("has no attribute 'DatasetV2'"), and every later fit of the
    # process failed ("Registering two gradient with name 'ReduceDataset'").
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(FIRST_FITS_IN_THREADS)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300,
    )
    assert done.returncode == 0 and done.stdout.strip() == "fitted", done.stderr


def _target(fd: int) -> tuple[int, int]:
    status = os.fstat(fd)
    return status.st_dev, status.st_ino


def test_silenced_blocks_of_two_threads_that_overlap_leave_stderr_where_it_was(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A entered, B entered (saving A's temporary file as "stderr"), A left, B left: B put
    # back A's deleted temporary file, and every later line on stderr was lost.
    monkeypatch.delenv("TF_CPP_MIN_LOG_LEVEL", raising=False)
    before = _target(2)
    a_in, b_in, a_out = threading.Event(), threading.Event(), threading.Event()

    def a() -> None:
        with native.native_output_silenced():
            a_in.set()
            b_in.wait(timeout=2)  # B cannot enter while A is in: the deadline passes
        a_out.set()

    def b() -> None:
        a_in.wait(timeout=30)
        with native.native_output_silenced():
            b_in.set()
            a_out.wait(timeout=30)

    threads = [threading.Thread(target=a), threading.Thread(target=b)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert _target(2) == before


def test_a_child_process_takes_the_packages_own_log_level_for_unset(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A grid search's worker inherited the level the package set (2) and took it for the
    # user's: CUDA's start-up errors ("failed call to cuInit") showed in every worker.
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", native.DEFAULT_TF_LOG_LEVEL)
    monkeypatch.setenv(native._DEFAULTED_MARK, native.DEFAULT_TF_LOG_LEVEL)
    assert native._level() == 3  # as if unset: start-up errors dropped too
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "1")  # the user's own, set since
    assert native._level() == 1
    monkeypatch.delenv(native._DEFAULTED_MARK)
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "2")
    assert native._level() == 2
