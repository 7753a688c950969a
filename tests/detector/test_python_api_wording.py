"""The Python API in its own terms (#20): its errors name parameters (``passthrough=['x']``),
not the command line's flags, which the CLI keeps; the service names its setting; and a library
fit or score leaves TensorFlow's and CUDA's start-up chatter off stderr. Each test failed
before its fix."""

from __future__ import annotations

import inspect
import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from detector.batch.files import score_file
from detector.bundles.bundle import save_bundle
from detector.cli.main import build_parser, main
from detector.errors import ConfigError, DataError, InputError, SchemaError
from detector.estimator import VAEDetector
from detector.native import native_output_silenced
from detector.nn.training import TrainingConfig
from detector.scoring.scores import score_frame
from tests.conftest import DATA

#: A command-line flag inside a message.
FLAG = re.compile(r"(^|\s|\()--[a-z]")


def _records(n: int = 6) -> pd.DataFrame:
    frame = pd.read_csv(DATA / "eval.csv").query("label == 0").head(n)
    return frame.drop(columns=["label", "anomaly_kind"]).reset_index(drop=True)


def _with_a_gap(frame: pd.DataFrame) -> pd.DataFrame:
    frame = frame.copy()
    frame.loc[1, "cpu_pct"] = np.nan
    return frame


def _small(n: int = 60) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    return pd.DataFrame({"a": rng.normal(size=n), "b": rng.normal(size=n)})


# ---- 1. the Python API names its parameters --------------------------------------------------


def test_scoring_errors_name_parameters(fitted: VAEDetector) -> None:
    with pytest.raises(SchemaError) as err:
        fitted.score_records(_records().assign(extra=1))
    assert "unscored with score_records(X, passthrough=['extra'])" in str(err.value)
    with pytest.raises(SchemaError, match=r"score_records\(X, passthrough="):
        fitted.predict(_records().assign(extra=1))  # predict() itself takes no passthrough
    assert not FLAG.search(str(err.value))
    with pytest.raises(SchemaError, match=r"passthrough=\['extra'\]"):
        score_frame(fitted.bundle_, _records().assign(extra=1))

    (rejected,) = fitted.score_records(_with_a_gap(_records())).rejections
    assert rejected.reason == "column 'cpu_pct' is empty (fill it, or score with impute='median')"
    with pytest.raises(DataError) as err:
        fitted.predict(_with_a_gap(_records()))
    assert "impute='median'" in str(err.value) and not FLAG.search(str(err.value))


def test_training_errors_name_parameters() -> None:
    with pytest.raises(ConfigError, match=r"name at least one, e\.g\. context=\['host'\]$"):
        TrainingConfig(model="cvae").check()
    with pytest.raises(ConfigError, match=r"context is for model='cvae' \(or drop context\)"):
        VAEDetector(context=("a",)).fit(_small())
    with pytest.raises(SchemaError) as err:
        VAEDetector(categorical=("nope",)).fit(_small())
    assert str(err.value) == "categorical names columns not in the data: ['nope']"
    ids = _small(250).assign(id=[f"r{i}" for i in range(250)])
    with pytest.raises(InputError) as err:
        VAEDetector().fit(ids)
    assert "looks like an identifier; drop it from the data" in str(err.value)
    assert not FLAG.search(str(err.value))


# ---- 2. the command line keeps its flags; the service names its setting ----------------------


def test_the_cli_names_flags_and_python_callers_still_get_parameters(
    fitted: VAEDetector, bundle_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    extra = tmp_path / "extra.csv"
    _records().assign(extra=1).to_csv(extra, index=False)
    code = main(["score", str(bundle_dir), str(extra), "--output", str(tmp_path / "o.csv")])
    assert code == 2
    assert "unscored with --keep-column extra)" in capsys.readouterr().err

    gap = tmp_path / "gap.csv"
    _with_a_gap(_records()).to_csv(gap, index=False)
    out = tmp_path / "out.csv"
    code = main(["score", str(bundle_dir), str(gap), "--output", str(out), "--json"])
    assert code == 0, capsys.readouterr().err
    # Encoded in the batch scorer's reader thread, which runs in the command's context.
    (reason,) = pd.read_csv(json.loads(capsys.readouterr().out)["rejects"])["reason"]
    assert reason == "column 'cpu_pct' is empty (fill it, or score with --impute median)"

    with pytest.raises(SchemaError, match=r"passthrough=\['extra'\]"):
        score_frame(fitted.bundle_, _records().assign(extra=1))

    # Every option a message names exists where it is named: flag, parameter, setting.
    from detector.wording import OPTIONS

    parser = build_parser()
    (commands,) = (a for a in parser._actions if a.choices and "train" in a.choices)
    flags = {f for sub in commands.choices.values() for a in sub._actions for f in a.option_strings}
    parameters = {
        *VAEDetector().get_params(),
        *inspect.signature(score_frame).parameters,
        *inspect.signature(score_file).parameters,
        *inspect.signature(save_bundle).parameters,
    }
    for name, spec in OPTIONS.items():
        assert spec.cli in flags, name
        assert spec.python is None or spec.python in parameters, name
    assert OPTIONS["passthrough"].http == "passthrough_fields"


def test_the_service_names_its_setting_and_offers_no_flag(bundle_dir: Path) -> None:
    from tests.service.conftest import make_app

    app, _ = make_app(bundle_dir)
    try:
        client = app.test_client()
        records = _records(2).to_dict("records")
        answer = client.post(
            "/v1/models/tiny/score", json={"records": [{**records[0], "extra": 1}]}
        )
        assert answer.status_code == 422
        detail = answer.json["detail"]
        assert "unscored with the service setting passthrough_fields = ['extra'])" in detail
        assert not FLAG.search(detail)

        gap = {**records[1], "cpu_pct": None}
        body = client.post("/v1/models/tiny/score", json={"records": [records[0], gap]}).json
        assert body["rejected"] == [
            {
                "index": 1,
                "code": "missing_value",
                "reasons": ["column 'cpu_pct' is empty (fill it)"],
            }
        ]
    finally:
        app.extensions["anomaly"].dispatcher.stop()


# ---- 3. TensorFlow's start-up chatter stays off stderr --------------------------------------

CHATTER = [
    b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n",
    b"I0000 00:00:1796408797.463039   27164 port.cc:153] oneDNN custom operations are on.\n",
    b"To enable the following instructions: AVX2 FMA, in other operations, rebuild TensorFlow\n",
    b"2024-01-31 12:00:00.123456: W tensorflow/compiler/tf2tensorrt/utils/py_utils.cc:38] "
    b"TF-TRT Warning: Could not find TensorRT\n",
    b"E0000 00:00:1796408801.529056   27164 cuda_platform.cc:52] failed call to cuInit\n",
    b"2024-01-31 12:00:00.123456: E external/local_xla/xla/stream_executor/cuda/cuda_dnn.cc:9261] "
    b"Unable to register cuDNN factory\n",
    b"INFO: Created TensorFlow Lite XNNPACK delegate for CPU.\n",
]
MINE = b"UserWarning: a warning of the user's own\n"


def _written_in_a_silenced_block(capfd: pytest.CaptureFixture[str]) -> str:
    capfd.readouterr()
    with native_output_silenced():
        for line in [*CHATTER[:3], MINE, *CHATTER[3:]]:
            os.write(2, line)
    return capfd.readouterr().err


def test_only_the_chatter_is_dropped_and_the_users_level_is_kept(
    capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TF_CPP_MIN_LOG_LEVEL", raising=False)
    assert _written_in_a_silenced_block(capfd) == MINE.decode()
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "2")  # errors still show, as TensorFlow does
    errors = [CHATTER[4], CHATTER[5]]
    assert _written_in_a_silenced_block(capfd) == b"".join([MINE, *errors]).decode()
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "0")  # the user opted back in to everything
    assert (
        _written_in_a_silenced_block(capfd) == b"".join([*CHATTER[:3], MINE, *CHATTER[3:]]).decode()
    )


LIBRARY_USE = """
import sys, tempfile, warnings
import numpy as np, pandas as pd
from detector import VAEDetector
from detector.native import native_output_silenced

rng = np.random.default_rng(0)
df = pd.DataFrame({"a": rng.normal(size=300), "b": rng.normal(size=300),
                   "c": rng.choice(["x", "y"], 300)})
det = VAEDetector(epochs=2, hidden_units=(8,), latent_dim=2, categorical=("c",)).fit(df)
det.score_records(df.head(20))
with tempfile.TemporaryDirectory() as d:
    det.save(d + "/m")
    VAEDetector.load(d + "/m").predict(df.head(5))
with native_output_silenced():
    warnings.warn("a warning of the user's own")
print("finished", file=sys.stderr)
"""


def run_as_a_user(code: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """``code`` in a new interpreter, as a user who set no TF_CPP_MIN_LOG_LEVEL runs it (the
    test session sets one), from ``cwd``: not the checkout, so PYTHONPATH decides which code
    runs."""
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=cwd, timeout=300
    )
    assert done.returncode == 0, done.stderr
    return done


def test_a_library_fit_and_score_keep_native_chatter_off_stderr(tmp_path: Path) -> None:
    done = run_as_a_user(textwrap.dedent(LIBRARY_USE), tmp_path)
    lines = done.stderr.splitlines()
    noise = ("oneDNN", "cuda", "CUDA", "absl", "TF-TRT", "XNNPACK", "TensorFlow", ".cc:")
    assert not [line for line in lines if any(n in line for n in noise)], done.stderr
    # Warnings still show: the package's own (a logged one) and the user's.
    assert any("calibration:" in line for line in lines), done.stderr
    assert any("UserWarning: a warning of the user's own" in line for line in lines), done.stderr
    assert lines[-1] == "finished"


def test_a_fit_after_the_users_own_keras_import_is_quiet_too(tmp_path: Path) -> None:
    # `import keras` first imports TensorFlow before the package sets its log level: every
    # fit's LiteRT conversion then wrote "Ignored output_format" and "Ignored
    # drop_control_dependency" to stderr.
    done = run_as_a_user("import keras\n" + textwrap.dedent(LIBRARY_USE), tmp_path)
    assert "tf_tfl_flatbuffer_helpers" not in done.stderr, done.stderr
    assert done.stderr.splitlines()[-1] == "finished"


def test_importing_the_training_function_first_is_quiet_too(tmp_path: Path) -> None:
    # `from detector import train` imports Keras before any fit could quiet it.
    done = run_as_a_user("from detector import train, TrainingConfig", tmp_path)
    noise = ("oneDNN", "cuda", "CUDA", "absl", "TF-TRT", "TensorFlow", ".cc:")
    assert not [line for line in done.stderr.splitlines() if any(n in line for n in noise)], (
        done.stderr
    )


@pytest.mark.parametrize("home", ["absent", "a file"])
def test_a_home_it_cannot_write_keeps_keras_and_matplotlib_in_the_temporary_folder(
    tmp_path: Path, home: str
) -> None:
    # A container's user, or a service with its home read-only: Keras fell back to the shared
    # /tmp/.keras, outside TMPDIR, and read the keras.json any local user could put there
    # first; Matplotlib (which Keras imports) warned twice on every command to set MPLCONFIGDIR.
    homes = {"absent": tmp_path / "absent", "a file": tmp_path / "file"}
    homes["a file"].write_text("")
    (tmp_path / "tmp").mkdir()
    code = (
        "import sys; from detector.native import import_tensorflow_quietly\n"
        "import_tensorflow_quietly()\n"
        "import keras, matplotlib\n"
        "print(keras.src.backend.config.keras_home(), matplotlib.get_configdir())\n"
    )
    env = {**os.environ, "HOME": str(homes[home]), "TMPDIR": str(tmp_path / "tmp")}
    for name in ("KERAS_HOME", "MPLCONFIGDIR"):
        env.pop(name, None)
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300
    )
    assert done.returncode == 0, done.stderr
    used = done.stdout.split()
    assert len(used) == 2 and all(p.startswith(str(tmp_path / "tmp")) for p in used), used
    assert "matplotlib" not in done.stderr.lower(), done.stderr
    assert not list((tmp_path / "tmp").iterdir())  # removed at exit
    assert home == "a file" or not homes["absent"].exists()
