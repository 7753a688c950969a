"""A labelled metric stream through the real server: `anomaly serve` with 2 gunicorn workers,
one record per request, gets the scores batch scoring gives the whole file, though consecutive
records of a host reach different workers; with ``series_state`` set, a restarted server
continues each series where it stopped."""

from __future__ import annotations

import shutil
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from detector.bundles.bundle import load_bundle
from detector.estimator import VAEDetector
from detector.scoring.scores import score_frame
from tests.conftest import DATA, TINY
from tests.processes import serving

LABELS = ["label", "anomaly_kind"]


@pytest.fixture(scope="module")
def fleet_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    train = pd.read_csv(DATA / "fleet_train.csv")
    path = tmp_path_factory.mktemp("fleet") / "model"
    VAEDetector(time_column="ts", series_columns=("host",), **TINY).fit(train).save(path)
    return path


@pytest.fixture(scope="module")
def stream() -> pd.DataFrame:
    """The first 100 time steps of two hosts of the bundled labelled file, as they arrive: a
    level shift on web-05 and unseen labels on web-04 among them."""
    frame = pd.read_csv(DATA / "fleet_eval.csv")
    return frame[frame["host"].isin(["web-04", "web-05"])].head(200).reset_index(drop=True)


def scored_by_worker(metrics_dir: Path, model: str = "fleet") -> Counter[int]:
    """Records each live worker process scored, from its own multiprocess metric file (an
    exited worker's counts are in ``counter_archive.db``, not counted here: read it while the
    server runs)."""
    from prometheus_client import CollectorRegistry
    from prometheus_client.multiprocess import MultiProcessCollector

    scored: Counter[int] = Counter()
    for path in metrics_dir.glob("counter_[0-9]*.db"):
        alone = metrics_dir.parent / f"alone-{path.stem}"
        alone.mkdir(exist_ok=True)
        shutil.copy(path, alone / path.name)
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=str(alone))
        value = registry.get_sample_value("anomaly_records_scored_total", {"model": model})
        scored[int(path.stem.split("_")[-1])] = int(value or 0)
    return scored


def test_a_labelled_stream_through_two_workers_scores_as_the_whole_file(
    fleet_model: Path, stream: pd.DataFrame, tmp_path: Path
) -> None:
    env = {
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics"),
        "ANOMALY_PASSTHROUGH_FIELDS": ",".join(LABELS),
    }
    results = []
    with serving({"fleet": fleet_model}, tmp_path, env=env) as server:
        for record in stream.to_dict("records"):
            status, body = server.call("/v1/models/fleet/score", {"records": [record]})
            assert status == 200, body
            results += body["results"]
        # While it runs: a worker that stops folds its counts into the archive.
        scored = scored_by_worker(tmp_path / "metrics")
    assert sum(scored.values()) == len(stream)
    assert len([n for n in scored.values() if n]) == 2, f"one worker took every record: {scored}"
    batch = score_frame(load_bundle(fleet_model), stream, passthrough=LABELS)
    np.testing.assert_allclose(
        [r["anomaly_score"] for r in results], batch.anomaly_score, rtol=1e-5
    )
    assert [r["warming_up"] for r in results] == batch.warming_up.tolist()
    assert [r["label"] for r in results] == stream["label"].tolist()  # echoed, not scored


def test_with_a_state_file_a_restarted_server_continues_each_series(
    fleet_model: Path, stream: pd.DataFrame, tmp_path: Path
) -> None:
    env = {"ANOMALY_SERIES_STATE": str(tmp_path / "series.sqlite")}
    records = stream.drop(columns=LABELS).to_dict("records")
    for run in ("first", "second"):
        (tmp_path / run).mkdir()
    bundle = load_bundle(fleet_model)
    assert bundle.series is not None
    # The two hosts alternate: a full window of each, in requests of a few records.
    seen = 2 * bundle.series.window
    with serving({"fleet": fleet_model}, tmp_path / "first", env=env) as server:
        for start in range(0, seen, 4):
            sent = {"records": records[start : min(start + 4, seen)]}
            assert server.call("/v1/models/fleet/score", sent)[0] == 200
    with serving({"fleet": fleet_model}, tmp_path / "second", env=env) as server:
        status, body = server.call("/v1/models/fleet/score", {"records": records[seen : seen + 2]})
    assert status == 200
    assert [r["warming_up"] for r in body["results"]] == [False, False]
    expected = score_frame(bundle, stream.drop(columns=LABELS).head(seen + 2))
    np.testing.assert_allclose(
        [r["anomaly_score"] for r in body["results"]], expected.anomaly_score[seen:], rtol=1e-5
    )


def test_a_worker_waiting_for_a_locked_state_file_still_answers_its_other_requests(
    fleet_model: Path, stream: pd.DataFrame, tmp_path: Path
) -> None:
    """SQLite's own wait for a lock blocked the gevent worker: with the file held by another
    process, /healthz took as long as the series request did (18.5 s), and requests queued
    behind one another's waits (15 at once: 10, 20, 30, 40 s)."""
    import sqlite3
    import threading

    state = tmp_path / "series.sqlite"
    env = {"ANOMALY_SERIES_STATE": str(state)}
    record = stream.drop(columns=LABELS).head(1).to_dict("records")
    with serving({"fleet": fleet_model}, tmp_path, env=env, workers=1) as server:
        holder = sqlite3.connect(state, isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")  # another process holding the file
        answered: list[tuple[int, Any]] = []
        series = threading.Thread(
            target=lambda: answered.append(
                server.call("/v1/models/fleet/score", {"records": record})
            )
        )
        try:
            series.start()
            # In flight: the series request and the scrape asking. It cannot end while the
            # file is held, so from here on it waits for the lock.
            server.wait_until(lambda: _in_flight(server) >= 2, "the series request in flight", 30)
            assert server.call("/healthz", timeout=5)[0] == 200
            assert not answered  # the series request still waits
        finally:
            holder.execute("ROLLBACK")
            holder.close()
            series.join(timeout=60)
    assert answered and answered[0][0] == 200, answered


def _in_flight(server: Any) -> float:
    status, text = server.call("/metrics", timeout=30)
    assert status == 200
    return sum(
        float(line.split()[-1])
        for line in text.splitlines()
        if line.startswith("anomaly_requests_in_flight")
    )
