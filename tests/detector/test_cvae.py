"""The conditional VAE: normal given a context (the host), an unseen context scored and flagged."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from detector.bundles.bundle import load_bundle, save_bundle
from detector.bundles.format import MANIFEST_FILE
from detector.errors import ConfigError
from detector.estimator import VAEDetector
from detector.features.encode import encode
from detector.nn.training import TrainingConfig
from tests.conftest import TINY
from tests.detector.engines import assert_scorer_matches_tensorflow

#: Normal CPU depends on the host: about 20% on a, 80% on b, 50% on c (memory follows CPU).
LEVELS = {"a": 20.0, "b": 80.0, "c": 50.0}


def hosts_table(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    host = rng.choice(sorted(LEVELS), n)
    cpu = np.array([LEVELS[h] for h in host]) + rng.normal(0, 3, n)
    return pd.DataFrame(
        {
            "host": host,
            "cpu": cpu,
            "mem": 0.5 * cpu + rng.normal(0, 2, n),
            "disk": rng.normal(40, 5, n),
        }
    )


#: Normal for its host, then CPU (and memory) normal for the fleet but not for the host, then
#: a host never seen in training.
PROBE = pd.DataFrame(
    {
        "host": ["a", "b", "a", "b", "new", "new"],
        "cpu": [20.0, 80.0, 80.0, 20.0, 20.0, 80.0],
        "mem": [10.0, 40.0, 40.0, 10.0, 10.0, 40.0],
        "disk": [40.0] * 6,
    }
)


@pytest.fixture(scope="module")
def train_table() -> pd.DataFrame:
    return hosts_table(1500, seed=0)


@pytest.fixture(scope="module")
def cvae(train_table: pd.DataFrame) -> VAEDetector:
    return VAEDetector(model="cvae", context=("host",), target_fpr=0.01, **TINY).fit(train_table)


@pytest.fixture(scope="module")
def cvae_dir(cvae: VAEDetector, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("cvae") / "model"
    cvae.save(path)
    return path


def test_context_decides_what_is_normal_where_a_plain_vae_barely_can(
    cvae: VAEDetector, train_table: pd.DataFrame
) -> None:
    conditional = cvae.score_records(PROBE)
    # Likelihood against likelihood: the default's distance also sees the host's column.
    vae = VAEDetector(model="vae", neighbours=0, target_fpr=0.01, **TINY)
    plain = vae.fit(train_table).score_records(PROBE)
    assert conditional.is_anomaly[:4].tolist() == [False, False, True, True]
    # How much worse a fleet-normal value scores on the wrong host than on its own host.
    cvae_gap = conditional.anomaly_score[2:4] - conditional.anomaly_score[:2][::-1]
    plain_gap = plain.anomaly_score[2:4] - plain.anomaly_score[:2][::-1]
    assert (cvae_gap > 3.0).all()
    assert (plain_gap < cvae_gap / 3).all()
    # The host is conditioned on, never blamed.
    assert conditional.columns == ("cpu", "mem", "disk")
    assert {"cpu", "mem"} & set(conditional.top_features(1)[2])


def test_an_unseen_context_is_scored_without_it_and_flagged(cvae: VAEDetector) -> None:
    result = cvae.score_records(PROBE)
    assert result.context_unseen is not None
    assert result.context_unseen.tolist() == [False] * 4 + [True] * 2
    assert np.isfinite(result.anomaly_score).all()
    # "Without its context" means exactly the zero context block the model was trained on.
    bundle = cvae.bundle_
    values = encode(bundle.schema, PROBE).values
    width = sum(bundle.schema.context_sizes)
    np.testing.assert_array_equal(values[4:, -width:], 0.0)
    hidden = values[:2].copy()
    hidden[:, -width:] = 0.0
    np.testing.assert_allclose(
        bundle.graph(hidden)["elbo"], bundle.graph(values[4:])["elbo"], rtol=1e-6
    )
    frame = result.to_frame()
    assert frame["context_unseen"].tolist() == result.context_unseen.tolist()
    assert result.to_dict()["context_unseen"] == result.context_unseen.tolist()


def test_unseen_context_flags_normal_records_from_a_new_host_rarely(cvae: VAEDetector) -> None:
    fresh = hosts_table(400, seed=1)
    seen = cvae.score_records(fresh)
    unseen = cvae.score_records(fresh.assign(host="new"))
    assert unseen.context_unseen is not None and unseen.context_unseen.all()
    assert seen.is_anomaly.mean() < 0.03
    assert unseen.is_anomaly.mean() < 0.15


def test_a_missing_context_is_rejected_with_its_reason(cvae: VAEDetector) -> None:
    records = PROBE.astype({"host": object}).copy()
    records.loc[1, "host"] = None
    records.loc[3, "host"] = "  "
    result = cvae.score_records(records)
    assert result.rows.tolist() == [0, 2, 4, 5]
    assert [r.row for r in result.rejections] == [1, 3]
    assert all(r.code == "missing_value" for r in result.rejections)
    assert "context column 'host' is empty" in result.rejections[0].reason
    imputed = cvae.score_records(records, impute="median")
    assert imputed.n_scored == 6
    assert imputed.context_unseen is not None
    assert imputed.context_unseen.tolist() == [False, True, False, True, True, True]


def test_save_and_load_score_identically(cvae: VAEDetector, cvae_dir: Path) -> None:
    manifest = json.loads((cvae_dir / MANIFEST_FILE).read_text())
    assert manifest["model_type"] == "cvae"
    assert manifest["schema"]["context"] == [{"name": "host", "categories": ["a", "b", "c"]}]
    assert manifest["params"]["context"] == ["host"]
    loaded = VAEDetector.load(cvae_dir)
    assert loaded.context == ("host",)
    before, after = cvae.score_records(PROBE), loaded.score_records(PROBE)
    np.testing.assert_array_equal(before.anomaly_score, after.anomaly_score)
    # The baseline is float32 in memory and float64 once read back from JSON.
    np.testing.assert_allclose(before.contributions, after.contributions, atol=1e-6)
    assert after.context_unseen is not None and after.context_unseen.tolist()[4:] == [True, True]


def test_a_bundle_whose_network_and_schema_disagree_on_context_does_not_load(
    cvae: VAEDetector, cvae_dir: Path, tmp_path: Path
) -> None:
    from dataclasses import replace

    from detector.errors import BundleError
    from detector.features.schema import ContextColumn

    bundle = cvae.bundle_
    schema = bundle.schema
    # A schema that knows one host fewer than the network was trained with.
    wrong = replace(schema, context=(ContextColumn("host", ("a", "b")),))
    save_bundle(replace(bundle, schema=wrong), tmp_path / "bad")
    # The scorer's input width disagrees with the schema's at once; the network's context
    # widths when the network is loaded.
    with pytest.raises(BundleError, match=r"inconsistent.*takes \d+ features"):
        load_bundle(tmp_path / "bad")
    # The network's own check, when it is loaded for a bundle whose schema was swapped.
    with pytest.raises(BundleError, match="context widths"):
        replace(load_bundle(cvae_dir), schema=wrong).model  # noqa: B018


def test_batch_output_has_the_flag_column(cvae_dir: Path, tmp_path: Path) -> None:
    from detector.batch.files import score_file

    source = tmp_path / "in.csv"
    PROBE.to_csv(source, index=False)
    score_file(load_bundle(cvae_dir), source, tmp_path / "out.csv")
    out = pd.read_csv(tmp_path / "out.csv")
    assert list(out.columns[4:]) == [
        "anomaly_score",
        "p_value",
        "is_anomaly",
        "context_unseen",
        "top_feature_1",
        "top_feature_2",
        "top_feature_3",
    ]
    assert out["context_unseen"].tolist() == [False] * 4 + [True] * 2
    assert "host" not in set(out.filter(like="top_feature").to_numpy().ravel())


def test_http_results_carry_the_flag(cvae: VAEDetector, cvae_dir: Path) -> None:
    from tests.service.conftest import make_app

    app, _ = make_app(cvae_dir)
    try:
        client = app.test_client()
        body = client.post("/v1/models/tiny/score", json={"records": PROBE.to_dict("records")}).json
        results = body["results"]
        assert [r["context_unseen"] for r in results] == [False] * 4 + [True] * 2
        np.testing.assert_allclose(
            [r["anomaly_score"] for r in results],
            cvae.score_records(PROBE).anomaly_score,
            rtol=1e-6,
        )
        assert all(t["column"] != "host" for r in results for t in r["top_features"])
        schema = client.get("/v1/models/tiny").json["schema"]
        # Context columns by name; their values are training data and are not served.
        assert schema["context"] == ["host"]
        assert '"a"' not in json.dumps(schema)
        spec = client.get("/openapi.json").json
        assert "context_unseen" in json.dumps(spec)
        inputs = [
            {"name": c, "shape": [2], "datatype": "BYTES" if c == "host" else "FP64", "data": v}
            for c, v in PROBE.iloc[[0, 4]].to_dict("list").items()
        ]
        infer = client.post("/v2/models/tiny/infer", json={"inputs": inputs}).json
        outputs = {o["name"]: o["data"] for o in infer["outputs"]}
        assert outputs["context_unseen"] == [False, True]
    finally:
        app.extensions["anomaly"].dispatcher.stop()


@pytest.mark.parametrize(
    ("settings", "needle"),
    [
        ({"model": "cvae"}, r"e\.g\. context=\['host'\]"),
        ({"model": "vae", "context": ("host",)}, "takes no context"),
        ({"model": "cvae", "context": ("host",), "context_dropout": 1.0}, "context_dropout"),
    ],
)
def test_context_settings_are_checked(settings: dict, needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        TrainingConfig(**settings).check()


def test_context_dropout_hides_whole_context_columns() -> None:
    from detector.nn.models.cvae import ConditionalVAE

    model = ConditionalVAE(
        n_numeric=2,
        latent_dim=2,
        hidden_units=(4,),
        context_sizes=(2, 3),
        context_dropout=0.3,
    )
    x = np.ones((4000, 7), dtype=np.float32)
    dropped = np.asarray(model.drop_context(x))
    np.testing.assert_array_equal(dropped[:, :2], 1.0)
    for block in (dropped[:, 2:4], dropped[:, 4:]):
        # Each block is kept or hidden as a whole.
        assert set(np.unique(block.sum(axis=1)).tolist()) == {0.0, float(block.shape[1])}
        assert 0.25 < (block.sum(axis=1) == 0).mean() < 0.35
    assert model.input_dim == 7 and model.context_dim == 5


def test_train_cli_takes_context_columns(capsys, train_table: pd.DataFrame, tmp_path) -> None:
    from detector.cli.main import main

    source = tmp_path / "train.csv"
    train_table.to_csv(source, index=False)
    base = ["train", str(source), "--out", str(tmp_path / "m"), "--epochs", "2", "--quiet"]
    assert main([*base, "--context", "host"]) == 2
    assert "--context is for --model cvae" in capsys.readouterr().err
    assert main([*base, "--model", "cvae", "--context", "host", "--context-dropout", "0.2"]) == 0
    bundle = load_bundle(tmp_path / "m")
    assert bundle.model_type == "cvae" and bundle.params["context_dropout"] == 0.2
    assert [c.name for c in bundle.schema.context] == ["host"]


def test_the_spark_engine_batches_carry_the_flag(cvae: VAEDetector) -> None:
    from detector.batch.spark_scoring import score_pandas

    out = score_pandas(cvae.bundle_, PROBE.astype(str))
    assert list(out.columns[4:8]) == ["anomaly_score", "p_value", "is_anomaly", "context_unseen"]
    assert out["context_unseen"].tolist() == [False] * 4 + [True] * 2


def test_the_scorer_computes_the_conditional_score_as_tensorflow_does(cvae_dir: Path) -> None:
    # Seen contexts and an unseen one (scored without its context) both go through the graph.
    bundle = load_bundle(cvae_dir)
    table = hosts_table(200, seed=3)
    table.loc[:20, "host"] = "never-seen"
    assert_scorer_matches_tensorflow(bundle, encode(bundle.schema, table).values)
