"""First use (#20) over HTTP: a CSV body without a header row is named as such, and the
service keeps LiteRT's start-up notice off stderr. Each test failed before its fix."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pandas as pd
import pytest

from tests.conftest import normal_records

NORMAL = normal_records(3)


@pytest.mark.parametrize("rows", [1, 3])
def test_a_csv_body_without_a_header_row_is_named_as_such(client, rows) -> None:
    # Before: one row got "the CSV body has no data rows", several "missing column(s) ...".
    body = pd.DataFrame(NORMAL[:rows]).to_csv(index=False, header=False)
    response = client.post("/v1/models/tiny/score", data=body, content_type="text/csv")
    assert response.status_code == 422
    assert response.json["error"] == "invalid_input"
    assert "no header row? the first line must name the columns" in response.json["detail"]


def test_a_csv_file_sent_with_curl_d_names_the_lost_newlines(client) -> None:
    # `curl -d @file.csv` drops the newlines: header and records arrive as one line, which was
    # answered "no header row? the first line must name the columns" though it did.
    body = pd.DataFrame(NORMAL).to_csv(index=False).replace("\n", "")
    response = client.post("/v1/models/tiny/score", data=body, content_type="text/csv")
    assert response.status_code == 422
    assert "--data-binary" in response.json["detail"]


def test_a_csv_body_with_its_header_still_scores(client) -> None:
    body = pd.DataFrame(NORMAL).to_csv(index=False)
    response = client.post("/v1/models/tiny/score", data=body, content_type="text/csv")
    assert response.status_code == 200
    assert response.json["counts"]["scored"] == 3


def test_the_service_keeps_litert_start_up_notice_off_stderr(bundle_dir) -> None:
    # Before: "INFO: Created TensorFlow Lite XNNPACK delegate for CPU." as the model loaded.
    script = textwrap.dedent(
        f"""
        from prometheus_client import CollectorRegistry
        from service.app import create_app
        from service.config import ServiceConfig

        config = ServiceConfig(models={{"tiny": {str(bundle_dir)!r}}}, admin_token="x")
        app = create_app(config, metrics_registry=CollectorRegistry(), sinks=[])
        response = app.test_client().post("/v1/models/tiny/score", json={{"records": {NORMAL!r}}})
        assert response.status_code == 200, response.json
        app.extensions["anomaly"].dispatcher.stop()
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        env={**os.environ},
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "XNNPACK delegate" not in done.stderr
