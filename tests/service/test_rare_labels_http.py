"""A text column of more than 200 labels over HTTP: a rare training label and one never seen
score as `anomaly score` scores them in a file (JSON records take the plain path,
``RecordEncoder``; a CSV body and a file the table path, ``encode``)."""

from __future__ import annotations

import pandas as pd

from detector.bundles.bundle import load_bundle
from detector.cli.main import main
from tests.detector.test_rare_labels import TINY_FLAGS, _zipf
from tests.service.conftest import make_app
from tests.service.test_api import post


def test_rare_and_unseen_labels_score_over_http_as_in_a_file(tmp_path) -> None:
    _zipf().to_csv(tmp_path / "t.csv", index=False)
    assert main(["train", str(tmp_path / "t.csv"), "--out", str(tmp_path / "m"), *TINY_FLAGS]) == 0
    merchant = load_bundle(tmp_path / "m").schema.categorical[0]
    records = [
        {"amount": 20.0, "x": 0.5, "merchant": label}
        for label in (merchant.categories[0], merchant.rare[0], merchant.rare[-1], "never-seen")
    ]
    pd.DataFrame(records).to_csv(tmp_path / "rows.csv", index=False)
    argv = ["score", str(tmp_path / "m"), str(tmp_path / "rows.csv")]
    assert main([*argv, "--output", str(tmp_path / "o.csv")]) == 0
    in_file = pd.read_csv(tmp_path / "o.csv")["anomaly_score"].tolist()
    app, _ = make_app(tmp_path / "m")
    try:
        client = app.test_client()
        as_json = post(client, {"records": records}).json["results"]
        csv = pd.DataFrame(records).to_csv(index=False)
        as_csv = client.post("/v1/models/tiny/score", data=csv, content_type="text/csv").json
    finally:
        app.extensions["anomaly"].dispatcher.stop()
    assert as_json == as_csv["results"]
    assert [r["anomaly_score"] for r in as_json] == in_file
    # Two rare labels share a slot, so a score; the kept label and the new one have their own.
    assert in_file[1] == in_file[2] and len({in_file[0], in_file[1], in_file[3]}) == 3
