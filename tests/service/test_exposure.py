"""What the service shows, and to whom: no training values, paths or exception text in its
answers; per-model routes behind the scoring token; no open scoring on a reachable address
unless the deployer says so."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from detector.bundles.format import SCORER_FILE
from detector.errors import BundleError, ConfigError
from service.config import ServiceConfig, load_config
from tests.conftest import normal_records
from tests.service.conftest import make_app

TOKEN = "score-me"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def app_with(bundle_dir: Path) -> Iterator[Any]:
    """``app_with(path, **settings)`` builds an app serving ``path`` as model "tiny"."""
    apps = []

    def build(path: Path, **settings: Any):  # type: ignore[no-untyped-def]
        app, _ = make_app(path, **settings)
        apps.append(app)
        return app

    yield build
    for app in apps:
        app.extensions["anomaly"].dispatcher.stop()


def _text(response: Any) -> str:
    return json.dumps(response.json)


def test_model_description_shows_no_training_values_or_paths(client, bundle_dir) -> None:
    detail = client.get("/v1/models/tiny").json
    schema = detail["schema"]
    assert "cpu_pct" in schema["numeric"] and "host" in schema["categorical"]
    assert detail["score"] and detail["threshold"] > 0 and detail["target_fpr"] > 0
    body = _text(client.get("/v1/models/tiny")) + _text(client.get("/v1/models"))
    for leak in ('"min"', '"max"', '"median"', '"categories"', '"path"', "web-01"):
        assert leak not in body, leak
    assert str(bundle_dir) not in body


@pytest.fixture
def broken_dir(bundle_dir: Path, tmp_path: Path) -> Path:
    """A bundle whose scorer file no longer matches its checksum: it does not load, and the
    reason names its path."""
    copy = Path(shutil.copytree(bundle_dir, tmp_path / "secret-place" / "tiny"))
    with (copy / SCORER_FILE).open("ab") as handle:
        handle.write(b"\0")
    return copy


def test_a_model_that_failed_to_load_is_reported_without_paths_or_reasons(
    app_with, broken_dir, caplog
) -> None:
    client = app_with(broken_dir).test_client()
    ready = client.get("/readyz")
    assert ready.status_code == 503
    assert ready.json["errors"] == {"tiny": "not loaded; see the server log"}
    scoring = client.post("/v1/models/tiny/score", json={"records": normal_records(1)})
    assert scoring.status_code == 503
    assert scoring.json["detail"] == "model 'tiny' is not loaded; see the server log"
    listing = client.get("/v1/models")
    for body in (_text(ready), _text(scoring), _text(listing)):
        assert "secret-place" not in body and "checksum" not in body
    # The operator still gets the reason, in the log.
    assert "secret-place" in caplog.text and "checksum" in caplog.text


def test_a_model_failing_while_serving_says_where_to_look(app_with, bundle_dir, caplog) -> None:
    app = app_with(bundle_dir)

    def fail() -> Any:
        raise BundleError("cannot load /srv/secret-place/model.keras: Keras said something")

    app.add_url_rule("/test-model-failure", view_func=fail)
    failed = app.test_client().get("/test-model-failure")
    assert failed.status_code == 503
    assert "secret-place" not in _text(failed) and "Keras" not in _text(failed)
    assert "see the server log" in failed.json["detail"]
    assert "secret-place" in caplog.text


def test_per_model_kserve_routes_need_the_token_and_probes_stay_open(app_with, bundle_dir) -> None:
    client = app_with(bundle_dir, scoring_token=TOKEN).test_client()
    for route in ("/v2/models/tiny/ready", "/v2/models/tiny", "/v2/models/nope/ready"):
        assert client.get(route).status_code == 401, route
    assert client.get("/v2/models/tiny/ready", headers=AUTH).json == {"name": "tiny", "ready": True}
    assert client.get("/v2/models/tiny", headers=AUTH).status_code == 200
    for probe in ("/healthz", "/readyz", "/v2/health/live", "/v2/health/ready"):
        assert client.get(probe).status_code == 200, probe


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "[::]", "10.1.2.3", "scorer.example.com", ""])
def test_open_scoring_on_a_reachable_address_is_refused(host: str) -> None:
    from service.config import check_exposure

    with pytest.raises(ConfigError, match=r"without a scoring token.*ANOMALY_SCORING_TOKEN"):
        check_exposure(ServiceConfig(), host)


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "::1", "[::1]", "localhost"])
def test_open_scoring_on_loopback_is_allowed(host: str) -> None:
    from service.config import check_exposure

    check_exposure(ServiceConfig(), host)


def test_a_token_or_an_explicit_choice_allows_a_reachable_address() -> None:
    from service.config import check_exposure

    check_exposure(ServiceConfig(scoring_token=TOKEN), "0.0.0.0")
    explicit = load_config(env={"ANOMALY_ALLOW_OPEN_SCORING": "true"})
    check_exposure(explicit, "0.0.0.0")


def test_the_bundle_key_variable_is_not_a_service_setting() -> None:
    # Every process that loads bundles reads it (detector.bundles.integrity); the service must not
    # take it for an unknown setting.
    config = load_config(env={"ANOMALY_BUNDLE_KEY": "k", "ANOMALY_SCORING_TOKEN": TOKEN})
    assert config.scoring_token == TOKEN
