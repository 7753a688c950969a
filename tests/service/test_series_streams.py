"""A series model in the service: records arrive one or a few at a time, each is judged with
the rows its host sent before, whichever app (worker) received them, and gets the score batch
scoring gives it in the whole file. Late and broken records are rejected with the reason."""

from __future__ import annotations

import contextlib
import multiprocessing
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd
import pytest
from prometheus_client import CollectorRegistry

from detector.bundles.bundle import load_bundle
from detector.errors import ConfigError
from detector.estimator import VAEDetector
from detector.scoring.scores import score_frame
from service import series_store
from service.app import create_app
from service.cli import main as serve_main
from service.config import ServiceConfig
from service.series_store import STALE_SECONDS, SeriesStore
from service.server import GunicornServer
from tests.conftest import TINY, fleet
from tests.service.conftest import ScoringThread

SCORE = "/v1/models/fleet/score"
SERIES = {"time_column": "ts", "series_columns": ("host",), "window": 4}


@pytest.fixture(scope="module")
def series_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("series") / "fleet"
    VAEDetector(**SERIES, **TINY).fit(fleet(300)).save(path)
    return path


def apps(series_dir: Path, state_file: str, n: int = 1, **settings: Any) -> list[Any]:
    """``n`` apps serving the fleet model over one state file, as gunicorn's workers do."""
    config = ServiceConfig(models={"fleet": str(series_dir)}, series_state=state_file, **settings)
    return [create_app(config, metrics_registry=CollectorRegistry(), sinks=[]) for _ in range(n)]


@pytest.fixture
def two_workers(series_dir: Path, tmp_path: Path) -> Iterator[list[Any]]:
    made = apps(series_dir, str(tmp_path / "series.sqlite"), 2)
    yield [app.test_client() for app in made]
    for app in made:
        app.extensions["anomaly"].dispatcher.stop()


def post(client: Any, records: list[dict[str, Any]]) -> dict[str, Any]:
    response = client.post("/v1/models/fleet/score", json={"records": records})
    assert response.status_code == 200, response.get_json()
    return response.get_json()  # type: ignore[no-any-return]


def test_records_streamed_through_two_workers_score_as_the_whole_file(
    two_workers: list[Any], series_dir: Path
) -> None:
    stream = fleet(40, start="2026-01-02", seed=1)
    stream.loc[50, "cpu"] = 90.0  # a spike, which also sits in the next rows' windows
    records = stream.to_dict("records")
    results = []
    for i, record in enumerate(records):  # alternate workers, one record per request
        (result,) = post(two_workers[i % 2], [record])["results"]
        results.append(result)
    batch = score_frame(load_bundle(series_dir), stream)
    np.testing.assert_allclose(
        [r["anomaly_score"] for r in results], batch.anomaly_score, rtol=1e-5
    )
    assert [r["warming_up"] for r in results] == batch.warming_up.tolist()
    assert sum(r["warming_up"] for r in results) == 3 * 3  # the first 3 rows of each host
    assert results[50]["is_anomaly"] and results[50]["top_features"][0]["column"] == "cpu"


def test_a_few_records_at_a_time_in_any_order_within_a_request(
    two_workers: list[Any], series_dir: Path
) -> None:
    stream = fleet(20, start="2026-01-03", seed=2)
    scores = np.empty(len(stream))
    for n, start in enumerate(range(0, len(stream), 6)):
        chunk = stream.iloc[start : start + 6].sample(frac=1.0, random_state=n)
        body = post(two_workers[n % 2], chunk.to_dict("records"))
        assert body["counts"] == {"received": len(chunk), "scored": len(chunk), "rejected": 0}
        for result in body["results"]:
            scores[chunk.index[result["index"]]] = result["anomaly_score"]
    expected = score_frame(load_bundle(series_dir), stream).anomaly_score
    np.testing.assert_allclose(scores, expected, rtol=1e-5)


def test_late_repeated_and_unplaceable_records_are_rejected_with_the_reason(
    two_workers: list[Any],
) -> None:
    first, second = two_workers
    post(first, [{"ts": "2026-01-04T00:05:00Z", "host": "web-01", "cpu": 20.0, "mem": 40.0}])
    body = post(
        second,
        [
            {"ts": "2026-01-04T00:01:00Z", "host": "web-01", "cpu": 20.0, "mem": 40.0},
            {"ts": "2026-01-04T00:05:00Z", "host": "web-01", "cpu": 20.0, "mem": 40.0},
            {"ts": "at five", "host": "web-01", "cpu": None, "mem": 40.0},
            {"ts": "2026-01-04T00:06:00Z", "host": None, "cpu": 20.0, "mem": 40.0},
            {"ts": "2026-01-04T00:06:00Z", "host": "web-01", "cpu": 20.0, "mem": 40.0},
        ],
    )
    reasons = {r["index"]: r["reasons"][0] for r in body["rejected"]}
    assert list(reasons) == [0, 1, 2, 3]
    assert "before the last row already seen" in reasons[0]
    assert "send each series in time order" in reasons[0]
    assert "an earlier row of its series has the same ts" in reasons[1]
    assert "'at five' is not a time" in reasons[2]
    assert "no value for key ['host']" in reasons[3]
    assert [r["index"] for r in body["results"]] == [4]
    assert body["results"][0]["warming_up"] is True  # the second row web-01 sent this day


def test_a_request_whose_every_record_is_malformed_gets_each_reason_not_an_error(
    two_workers: list[Any],
) -> None:
    body = post(two_workers[0], [{"ts": {"at": [1]}, "host": ["web-01"]}, 5])
    assert body["counts"] == {"received": 2, "scored": 0, "rejected": 2}
    assert body["results"] == []
    assert "field(s) ['ts', 'host'] hold objects or lists" in body["rejected"][0]["reasons"][0]
    assert body["rejected"][1]["reasons"] == ["record is not a JSON object"]


def test_a_time_far_ahead_of_the_clock_is_rejected_and_does_not_make_its_series_late(
    series_dir: Path, tmp_path: Path
) -> None:
    """A skewed sender's record two years ahead would, once placed, make every correct record of
    its host late; it is rejected instead (``future_timestamp``), the host's next record is
    scored. Within the limit (or with none) a future time is placed as any other."""
    from datetime import UTC, datetime, timedelta

    def at(delta: timedelta) -> str:
        return (datetime.now(UTC) + delta).isoformat()

    row = {"host": "web-01", "cpu": 20.0, "mem": 40.0}
    (app,) = apps(series_dir, str(tmp_path / "s.sqlite"), series_max_ahead_seconds=3600)
    client = app.test_client()
    body = post(client, [{**row, "ts": at(timedelta(days=731))}, {**row, "ts": "soon"}])
    assert body["counts"] == {"received": 2, "scored": 0, "rejected": 2}
    reason = body["rejected"][0]["reasons"][0]
    assert "is 2.0 years ahead of the clock (the limit: 1.0 h, series_max_ahead_seconds)" in reason
    assert "fix the clock that stamped it" in reason
    assert [r["index"] for r in post(client, [{**row, "ts": at(timedelta(0))}])["results"]] == [0]
    assert post(client, [{**row, "ts": at(timedelta(minutes=30))}])["results"]  # within it
    (unlimited,) = apps(series_dir, str(tmp_path / "u.sqlite"), series_max_ahead_seconds="")
    assert post(unlimited.test_client(), [{**row, "ts": at(timedelta(days=365))}])["results"]
    for made in (app, unlimited):
        made.extensions["anomaly"].dispatcher.stop()


def test_a_record_missing_the_time_column_is_told_what_the_model_expects(
    two_workers: list[Any],
) -> None:
    response = two_workers[0].post(
        "/v1/models/fleet/score", json={"records": [{"host": "web-01", "cpu": 1.0, "mem": 1.0}]}
    )
    assert response.status_code == 422
    detail = response.get_json()["detail"]
    assert "missing column(s) ['ts']" in detail
    assert detail.endswith("The model expects: ts, host, cpu (number), mem (number)")


def test_past_the_key_cap_the_least_recently_seen_host_warms_up_again(
    series_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (app,) = apps(series_dir, str(tmp_path / "s.sqlite"), series_max_keys=2)
    client = app.test_client()
    stream = fleet(8, start="2026-01-05")
    early, late = stream.iloc[:18], stream.iloc[18:]
    for record in early[early["host"] != "db-01"].to_dict("records"):
        post(client, [record])  # web-01, then web-02, each minute
    post(client, [early[early["host"] == "db-01"].iloc[-1].to_dict()])  # web-01 goes
    assert app.extensions["anomaly"].series.keys("fleet") == 2
    warming = {}
    for host in ("web-02", "web-01"):  # web-02 was kept; web-01 comes back with no history
        record = late[late["host"] == host].iloc[0].to_dict()
        (result,) = post(client, [record])["results"]
        warming[record["host"]] = result["warming_up"]
    assert warming == {"web-01": True, "web-02": False}
    # Each forgotten series is counted (web-01, then db-01 for it), and the log says once
    # what to do: with more live series than the cap, none would finish warming up.
    metrics = client.get("/metrics").get_data(as_text=True)
    assert 'anomaly_series_evicted_total{model="fleet"} 2.0' in metrics
    warned = [r.getMessage() for r in caplog.records if "series_max_keys" in r.getMessage()]
    assert len(warned) == 1 and "raise series_max_keys" in warned[0]
    app.extensions["anomaly"].dispatcher.stop()


def test_a_model_trained_with_another_window_starts_its_series_afresh(tmp_path: Path) -> None:
    from detector.series.windows import SeriesSpec

    store = SeriesStore(str(tmp_path / "s.sqlite"))
    rows = [{"ts": 60 * m, "host": "a", "cpu": float(m)} for m in range(5)]
    spec = SeriesSpec("ts", ("host",), window=3)
    assert not store.window("m", spec, ["cpu"], rows).warming_up[-1]
    wider = SeriesSpec("ts", ("host",), window=4)
    later = [{"ts": 600, "host": "a", "cpu": 9.0}]
    assert store.window("m", wider, ["cpu"], later).warming_up.tolist() == [True]
    # A second handle on the file (another worker) sees what the first stored.
    other = SeriesStore(str(tmp_path / "s.sqlite"))
    assert other.window("m", wider, ["cpu"], [{"ts": 500, "host": "a", "cpu": 1.0}]).rejections


def test_a_model_trained_again_with_the_same_window_keeps_its_series(tmp_path: Path) -> None:
    # 2026-12-07 (a helper, upgrading): the training rows' first time joined the layout, so a
    # server upgraded over its state file, or a model trained again on later rows, warmed up
    # every series afresh without a word.
    import json
    from dataclasses import replace

    from detector.series.windows import SeriesSpec

    spec = SeriesSpec("ts", ("host",), window=3, trained_from=0.0)
    without_start = {k: v for k, v in vars(spec).items() if k != "trained_from"}
    # As the releases before trained_from wrote the layout, and those since it until now.
    for n, written in enumerate((without_start, vars(spec))):
        path = tmp_path / f"s{n}.sqlite"
        store = SeriesStore(str(path))
        rows = [{"ts": 60 * m, "host": "a", "cpu": 1.0} for m in range(3)]
        store.window("m", spec, ["cpu"], rows)
        store.close()
        with sqlite3.connect(path) as db:
            layout = json.dumps([written, ["cpu"]], sort_keys=True)
            db.execute("UPDATE series_layouts SET layout = ?", (layout,))
        again = SeriesStore(str(path))
        for minute, trained in ((3, spec.trained_from), (4, 3600.0)):  # then trained again
            record = [{"ts": 60 * minute, "host": "a", "cpu": 1.0}]
            windows = again.window("m", replace(spec, trained_from=trained), ["cpu"], record)
            assert windows.warming_up.tolist() == [False], (written, trained)
        assert again.keys("m") == 1
        again.close()


def test_workers_move_to_a_state_file_made_again_under_them(tmp_path: Path) -> None:
    # Removed while serving: a worker started since made a new file, the others kept the old
    # one through their open handle, and a host's rows were split between the two files.
    import os

    from detector.series.windows import SeriesSpec

    spec, path = SeriesSpec("ts", ("host",), window=3), str(tmp_path / "s.sqlite")
    old = SeriesStore(path)
    rows = [{"ts": 60 * m, "host": "a", "cpu": float(m)} for m in range(3)]
    assert not old.window("m", spec, ["cpu"], rows).warming_up[-1]
    for leftover in tmp_path.glob("s.sqlite*"):
        os.remove(leftover)
    new = SeriesStore(path)
    assert new.window("m", spec, ["cpu"], [{"ts": 600, "host": "a", "cpu": 1.0}]).warming_up[0]
    # The new file's second row of "a" (still warming up), not the old file's fifth.
    later = old.window("m", spec, ["cpu"], [{"ts": 660, "host": "a", "cpu": 2.0}])
    assert later.warming_up.tolist() == [True]
    # Both rows in the new file: its third row of "a" has a full window.
    assert not new.window("m", spec, ["cpu"], [{"ts": 720, "host": "a", "cpu": 3.0}]).warming_up[0]


def test_during_a_reload_old_and_new_workers_each_keep_their_series(tmp_path: Path) -> None:
    from detector.series.windows import SeriesSpec

    now = [1_000_000.0]
    old_worker, new_worker = (
        SeriesStore(str(tmp_path / "s.sqlite"), clock=lambda: now[0]) for _ in range(2)
    )
    old, new = SeriesSpec("ts", ("host",), window=3), SeriesSpec("ts", ("host",), window=4)
    warming = {"old": [], "new": []}
    for minute in range(12):  # a reload half done: requests alternate between the versions
        record = [{"ts": 60 * minute, "host": "a", "cpu": float(minute)}]
        store, spec, name = (old_worker, old, "old") if minute % 2 else (new_worker, new, "new")
        warming[name] += store.window("m", spec, ["cpu"], record).warming_up.tolist()
        now[0] += 60
    # Each version warms up once (window - 1 rows of its own), then never again.
    assert warming["old"] == [True, True, False, False, False, False]
    assert warming["new"] == [True, True, True, False, False, False]
    assert new_worker.keys("m") == 2  # host "a" under each layout
    # The old version is gone: after STALE_SECONDS unused, its histories are dropped.
    now[0] += STALE_SECONDS + 60
    new_worker.window("m", new, ["cpu"], [{"ts": 60 * 12, "host": "a", "cpu": 1.0}])
    assert new_worker.keys("m") == 1


def test_a_state_file_of_the_earlier_layout_is_started_afresh(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import sqlite3

    from detector.series.windows import SeriesSpec

    path = tmp_path / "s.sqlite"
    with sqlite3.connect(path) as db:  # what the store wrote before layouts were kept apart
        db.execute("CREATE TABLE series_models (model TEXT PRIMARY KEY, layout TEXT, n_keys INT)")
        db.execute("CREATE TABLE series_history (model TEXT, key TEXT, history TEXT, seen INT)")
        db.execute("INSERT INTO series_models VALUES ('m', '[]', 1)")
    store = SeriesStore(str(path))
    spec = SeriesSpec("ts", ("host",), window=2)
    windows = store.window("m", spec, ["cpu"], [{"ts": 0, "host": "a", "cpu": 1.0}])
    assert windows.warming_up.tolist() == [True]
    assert store.keys("m") == 1
    # The first release's file had no layout number: it was dropped without a word.
    assert "series state of layout 0 dropped: every series warms up" in caplog.text


def test_a_series_state_another_release_wrote_is_read_or_started_afresh(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # 2026-12-07 (a helper, upgrading): a level stored by the releases before the compact form
    # made every request for its host a 500 (a TypeError), for as long as it stayed stored.
    from detector.series.levels import Level
    from detector.series.windows import SeriesSpec

    level = Level((490_000, 490_002), (3.5, 1.25), (2, 1))
    assert Level.from_json(level.to_json()) == level
    assert Level.from_json("[[490000, 490002], [3.5, 1.25], [2, 1]]") == level  # the old form
    path = str(tmp_path / "s.sqlite")
    store, spec = SeriesStore(path), SeriesSpec("ts", ("host",), window=2)
    rows = [{"ts": 60 * m, "host": h, "cpu": 1.0} for m in range(3) for h in "abc"]
    store.window("m", spec, ["cpu"], rows)
    # What no release wrote (a hand, a tool); each failed every request of its series after
    # the first fix for some (lists of other lengths, Infinity, JSON nested 100,000 deep).
    deep = "[" * 100_000 + "]" * 100_000
    infinite = '[Infinity, [1], "AAAAAAAAAAA="]'
    broken_levels = ['[[1], ["x"], []]', "[[1, 2], [1.0], [1, 1]]", infinite, deep]
    broken_histories = ["{}", "[[1.0, 2.0], [[1.0]]]", "[[1.0], [[1.0, 2.0]]]", deep]
    for n, broken in enumerate(zip(broken_levels, broken_histories, strict=True)):
        with sqlite3.connect(path) as db:
            db.execute("UPDATE series_history SET level = ? WHERE key = 'a'", (level.to_json(),))
            db.execute("UPDATE series_history SET level = ? WHERE key = 'b'", (broken[0],))
            db.execute("UPDATE series_history SET history = ? WHERE key = 'c'", (broken[1],))
        levels: dict[str, Level] = {}
        later = [{"ts": 600 + 60 * n, "host": h, "cpu": 1.0} for h in "abc"]
        windows = store.window("m", spec, ["cpu"], later, levels=levels)
        assert levels == {"a": level}, broken  # b's could not be read: it starts afresh
        assert windows.warming_up.tolist() == [False, False, True], broken  # so does c's
    assert "could not be read" in caplog.text


def test_the_kserve_route_streams_too_and_names_the_series_columns(
    two_workers: list[Any], series_dir: Path
) -> None:
    stream = fleet(5, start="2026-01-06", seed=3)
    inputs = [
        {"name": c, "shape": [len(stream)], "datatype": "FP64" if c in ("cpu", "mem") else "BYTES",
         "data": stream[c].tolist()}
        for c in stream.columns
    ]  # fmt: skip
    response = two_workers[1].post("/v2/models/fleet/infer", json={"inputs": inputs})
    assert response.status_code == 200, response.json
    outputs = {o["name"]: o["data"] for o in response.json["outputs"]}
    expected = score_frame(load_bundle(series_dir), stream)
    np.testing.assert_allclose(outputs["anomaly_score"], expected.anomaly_score, rtol=1e-5)
    assert outputs["warming_up"] == expected.warming_up.tolist()
    metadata = two_workers[0].get("/v2/models/fleet").json
    assert [i["name"] for i in metadata["inputs"]] == ["ts", "host", "cpu", "mem"]
    assert "warming_up" in [o["name"] for o in metadata["outputs"]]


def test_a_record_with_a_bad_value_is_rejected_and_its_hosts_next_record_is_not(
    two_workers: list[Any], series_dir: Path
) -> None:
    stream = fleet(8, start="2026-01-07", seed=5)
    records = stream.to_dict("records")
    records[12] = {**records[12], "cpu": None}  # web-01's fifth minute
    bodies = [post(two_workers[i % 2], [record]) for i, record in enumerate(records)]
    assert bodies[12]["rejected"][0]["reasons"] == ["column 'cpu' is empty (fill it)"]
    assert all(not body["rejected"] for i, body in enumerate(bodies) if i != 12)
    clean = stream.drop(index=12)
    expected = score_frame(load_bundle(series_dir), clean).anomaly_score
    scores = [body["results"][0]["anomaly_score"] for i, body in enumerate(bodies) if i != 12]
    np.testing.assert_allclose(scores, expected, rtol=1e-5)


def test_the_model_route_says_what_a_record_must_hold_and_how_it_is_windowed(
    two_workers: list[Any],
) -> None:
    detail = two_workers[0].get("/v1/models/fleet").get_json()
    assert detail["schema"]["inputs"] == ["ts", "host", "cpu", "mem"]
    assert "cpu[-3]" in detail["schema"]["columns"]
    series = detail["series"]
    assert (series["time_column"], series["key_columns"], series["window"]) == ("ts", ["host"], 4)
    assert series["description"].startswith("series by host, in time order of ts")


def test_each_series_level_is_shared_by_the_workers_and_kept_as_its_rows_move_on(
    tmp_path: Path,
) -> None:
    from detector.series.levels import ScoreLevels
    from detector.series.windows import SeriesSpec

    spec = SeriesSpec("ts", ("host",), window=3, level_hours=24)
    workers = [SeriesStore(str(tmp_path / "s.sqlite")) for _ in range(2)]
    alone = ScoreLevels(24)
    rng = np.random.default_rng(0)
    got, expected, raw = [], [], []
    for step in range(120):  # 30 hours, a record each 15 minutes, alternating workers
        store = workers[step % 2]
        record = {"ts": 900 * step, "host": "a", "cpu": float(step)}
        windows = store.window("m", spec, ["cpu"], [record])  # the rows move on: the level stays
        score = np.array([rng.gamma(2.0) * (3.0 if 60 <= step < 80 else 1.0)])
        judged = store.judge("m", spec, ["cpu"], windows.keys, windows.seconds, score, normal=1.0)
        got += judged.tolist()
        expected += alone.judge(windows.keys, windows.seconds, score, normal=1.0).tolist()
        raw += score.tolist()
    np.testing.assert_allclose(got, expected, rtol=1e-12)
    assert got[:4] == raw[:4]  # the first hour has no level before it
    assert np.abs(np.array(got) - raw).max() > 0.5  # and later ones are judged against one


def test_a_state_file_of_the_layout_before_levels_keeps_its_histories(tmp_path: Path) -> None:
    import sqlite3

    from detector.series.windows import SeriesSpec

    path = tmp_path / "s.sqlite"
    spec = SeriesSpec("ts", ("host",), window=2, level_hours=24)
    store = SeriesStore(str(path))
    store.window("m", spec, ["cpu"], [{"ts": 0, "host": "a", "cpu": 1.0}])
    store.close()
    with sqlite3.connect(path) as db:  # as the store wrote it before levels
        db.execute("ALTER TABLE series_history DROP COLUMN level")
        db.execute("PRAGMA user_version = 2")
    again = SeriesStore(str(path))
    windows = again.window("m", spec, ["cpu"], [{"ts": 60, "host": "a", "cpu": 2.0}])
    assert windows.warming_up.tolist() == [False]  # its row from before is still there
    judged = again.judge(
        "m", spec, ["cpu"], windows.keys, windows.seconds, np.array([5.0]), normal=1.0
    )
    assert judged.tolist() == [5.0]  # no level yet: the score as it is


def test_a_state_file_the_server_cannot_open_is_refused_at_start(
    series_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    """Found by trying: the server said it was ready, then answered every series request
    with a 500 ("unable to open database file")."""
    blocking = tmp_path / "state.csv"
    blocking.write_text("not a folder\n")
    with pytest.raises(ConfigError, match=r"series_state .*state\.csv/series\.sqlite: cannot be"):
        apps(series_dir, str(blocking / "series.sqlite"))
    monkeypatch.setenv("ANOMALY_SERIES_STATE", str(blocking / "series.sqlite"))
    # Were the path let through, the command would serve until stopped: fail instead.
    monkeypatch.setattr(GunicornServer, "run", lambda self: pytest.fail("a server started"))
    assert serve_main(["serve", "--model", f"fleet={series_dir}", "--port", "0"]) == 2
    assert "error: series_state " in capsys.readouterr().err


def _open_at_once(path: str, start: Any, said: Any) -> None:
    start.wait()
    try:
        SeriesStore(path).check()
    except ConfigError as exc:
        said.put(str(exc))
    else:
        said.put("")


def test_workers_booting_together_all_open_a_new_state_file(tmp_path: Path) -> None:
    """Found by CI: gunicorn's two workers opened a new state file at the same moment, and
    one failed to boot with "database is locked" (SQLite answers that at once, without
    waiting, to a second process switching a new file to WAL)."""
    context = multiprocessing.get_context("fork")
    for attempt in range(15):  # before the fix about one start in three failed
        start, said = context.Barrier(4), context.SimpleQueue()
        path = str(tmp_path / f"series{attempt}.sqlite")
        workers = [
            context.Process(target=_open_at_once, args=(path, start, said)) for _ in range(4)
        ]
        for worker in workers:
            worker.start()
        errors = [said.get() for _ in workers]
        for worker in workers:
            worker.join()
        assert errors == [""] * 4


def test_a_state_file_locked_past_the_timeout_answers_503_with_the_reason(
    series_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    state = tmp_path / "series.sqlite"
    (app,) = apps(series_dir, str(state))
    monkeypatch.setattr(series_store, "BUSY_TIMEOUT_S", 0.2)
    holder = sqlite3.connect(state, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")  # a stuck process holding the file
    try:
        response = app.test_client().post(
            "/v1/models/fleet/score", json={"records": fleet(1).to_dict("records")}
        )
    finally:
        holder.execute("ROLLBACK")
        holder.close()
        app.extensions["anomaly"].dispatcher.stop()
    assert response.status_code == 503
    body = response.get_json()
    assert body["error"] == "series_state_unavailable" and "locked" in body["detail"]


def test_a_state_file_on_a_full_disk_answers_503_naming_the_disk_and_recovers(
    series_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # SQLite's own 'database or disk is full' (SQLITE_FULL) once the file cannot grow: it was
    # answered 503 "the series' state file cannot be used (database or disk is full)" with
    # no Retry-After, and logged naming no file.
    import math

    from service import app as service_app

    path = tmp_path / "series.sqlite"
    (app,) = apps(series_dir, str(path))
    connect = series_store.connect
    made: list[sqlite3.Connection] = []
    monkeypatch.setattr(series_store, "connect", lambda at: made.append(connect(at)) or made[-1])
    monkeypatch.setattr(service_app._state_failing, "logged_at", -math.inf)
    records = fleet(200).to_dict("records")
    new_hosts = [dict(r, host=f"host-{i}") for i, r in enumerate(records[3:400])]
    client = app.test_client()
    try:
        assert (
            client.post("/v1/models/fleet/score", json={"records": records[:3]}).status_code == 200
        )

        def room(pages: int | None) -> None:
            for db in made:
                with contextlib.suppress(sqlite3.ProgrammingError):  # one dropped meanwhile
                    size = db.execute("PRAGMA page_count").fetchone()[0]
                    db.execute(f"PRAGMA max_page_count = {pages or size}")

        room(None)  # the disk fills: not a page more
        refused = client.post("/v1/models/fleet/score", json={"records": new_hosts})
        room(2**30)  # space freed
        scored = client.post("/v1/models/fleet/score", json={"records": new_hosts})
    finally:
        app.extensions["anomaly"].dispatcher.stop()
    assert refused.status_code == 503
    assert refused.get_json()["error"] == "series_state_unavailable"
    assert "disk for its series state is full" in refused.get_json()["detail"]
    assert refused.headers["Retry-After"] == str(service_app.DISK_FULL_RETRY_S)
    said = [r.getMessage() for r in caplog.records if "full disk" in r.getMessage()]
    assert said and f"series state file {path} is on a full disk" in said[0], said
    assert scored.status_code == 200, scored.get_json()
    assert scored.get_json()["counts"]["scored"] == len(new_hosts)
    assert not [r for r in caplog.records if r.exc_info]


@pytest.mark.parametrize("out_of_files", [True, False])
def test_a_state_file_failing_to_open_at_the_open_files_limit_says_so(
    series_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    out_of_files: bool,
) -> None:
    # Under ulimit -n 64 and a flood, SQLite's 'unable to open database file' was answered 503
    # series_state_unavailable, not naming the open files limit the other requests name.
    import errno
    import math

    from service import open_files

    (app,) = apps(series_dir, str(tmp_path / "series.sqlite"))
    try:  # SQLite's own error for a file it cannot open (SQLITE_CANTOPEN)
        sqlite3.connect(tmp_path / "absent" / "series.sqlite")
    except sqlite3.OperationalError as exc:
        cannot_open = exc

    def fails(*args: Any) -> None:
        raise cannot_open

    def no_descriptor() -> None:
        if out_of_files:
            raise OSError(errno.EMFILE, "Too many open files", "/dev/null")

    monkeypatch.setattr(series_store.SharedFile, "_connected", fails)
    monkeypatch.setattr(open_files, "_spare_descriptor", no_descriptor)
    monkeypatch.setattr(open_files._said, "logged_at", -math.inf)  # said by an earlier test
    try:
        response = app.test_client().post(
            "/v1/models/fleet/score", json={"records": fleet(1).to_dict("records")}
        )
    finally:
        app.extensions["anomaly"].dispatcher.stop()
    assert response.status_code == 503
    said = [r.getMessage() for r in caplog.records if "out of open files" in r.getMessage()]
    if out_of_files:
        assert response.get_json()["error"] == "out_of_open_files"
        assert response.headers["Retry-After"] == "1"
        assert len(said) == 1 and "open files limit" in said[0] and "LimitNOFILE=" in said[0]
    else:  # another cause (a directory removed): the state file is named, as before
        assert response.get_json()["error"] == "series_state_unavailable" and not said
    assert not [r for r in caplog.records if r.exc_info]


def test_csv_keys_that_read_as_numbers_stay_the_series_they_name(
    two_workers: list[Any],
) -> None:
    # Over CSV, hosts '007' and '7' were one series (the key column was read as numbers
    # wherever every value of the batch was one): the second row was "a duplicate".
    rows = fleet(2, start="2026-01-05", seed=4).head(1).to_dict("records")
    columns = list(rows[0])
    body = (
        ",".join(columns)
        + "\n"
        + "".join(
            ",".join(str({**rows[0], "host": host}[c]) for c in columns) + "\n"
            for host in ("007", "7")
        )
    )
    client = two_workers[0]
    response = client.post("/v1/models/fleet/score", data=body, content_type="text/csv")
    assert response.status_code == 200, response.get_json()
    answer = response.get_json()
    assert answer["counts"]["scored"] == 2, answer


def test_a_key_is_one_series_whether_sent_as_json_or_csv(two_workers: list[Any]) -> None:
    # A JSON true was the series 'True', a CSV body's true the series 'true' (as a file's
    # reader writes it): one host's rows kept two windows in the one state. Each key is its
    # text as written; a JSON whole number its digits (7.0 from an emitter is 7).
    row = fleet(2, start="2026-01-05", seed=4).head(1).to_dict("records")[0]
    first, second = two_workers
    sent = [True, 7, "007", "7.0"]
    assert post(first, [{**row, "host": h} for h in sent])["counts"]["scored"] == 4
    columns = list(row)
    body = ",".join(columns) + "\n"
    for host in ("true", "7", "007", "7.0", "7.00"):
        body += ",".join(str({**row, "host": host}[c]) for c in columns) + "\n"
    response = second.post(SCORE, data=body, content_type="text/csv")
    assert response.status_code == 200, response.get_json()
    answer = response.get_json()
    repeated = "an earlier row of its series has the same ts"
    assert {r["index"]: repeated in r["reasons"][0] for r in answer["rejected"]} == {
        0: True, 1: True, 2: True, 3: True
    }  # fmt: skip
    assert [r["index"] for r in answer["results"]] == [4]  # '7.00' is written otherwise
    again = post(first, [{**row, "host": h} for h in (7.0, "true", 8)])
    assert [r["index"] for r in again["rejected"]] == [0, 1]  # 7.0 is 7; 'true' is true
    assert [r["index"] for r in again["results"]] == [2]


def test_keys_of_two_columns_that_join_alike_are_refused_with_the_column(
    tmp_path: Path,
) -> None:
    # ('a\x1fb', 'c') and ('a', 'b\x1fc') were one series: the second's record was "a
    # repeated time" of the first's, or windowed with its rows.
    path = tmp_path / "two"
    spec = {**SERIES, "series_columns": ("host", "region")}
    VAEDetector(**spec, **TINY | {"epochs": 2}).fit(fleet(200).assign(region="eu")).save(path)
    config = ServiceConfig(models={"fleet": str(path)}, series_state=str(tmp_path / "s.sqlite"))
    app = create_app(config, metrics_registry=CollectorRegistry(), sinks=[])
    record = {"ts": "2026-01-02T00:00:00Z", "cpu": 20.0, "mem": 40.0}
    keys = [("a\x1fb", "c"), ("a", "b\x1fc"), ("a", "b")]
    body = post(app.test_client(), [{**record, "host": h, "region": r} for h, r in keys])
    app.extensions["anomaly"].dispatcher.stop()
    reasons = {r["index"]: r["reasons"][0] for r in body["rejected"]}
    assert list(reasons) == [0, 1]
    assert reasons[0].startswith("its 'host' value holds the control character U+001F")
    assert reasons[1].startswith("its 'region' value holds the control character U+001F")
    assert [r["index"] for r in body["results"]] == [2]


def test_json_booleans_and_numbered_labels_score_as_the_files_values(tmp_path: Path) -> None:
    # Found by a fraud helper: a JSON true reached the windows as 1.0, a category never seen
    # ('True' in training), so 76% of ordinary payments were flagged; a label '3' sent as 3
    # became '3.0'. The row model and batch scoring took both.
    def table(minutes: int, start: str, seed: int) -> pd.DataFrame:
        frame = fleet(minutes, start=start, seed=seed)
        rng = np.random.default_rng(seed)
        frame["paged"] = rng.random(len(frame)) < 0.5
        frame["rack"] = rng.choice(["1", "2", "3"], len(frame))
        return frame

    path = tmp_path / "flags"
    VAEDetector(**SERIES, **TINY).fit(table(300, "2026-01-01", 0)).save(path)
    stream = table(30, "2026-01-02", 1)
    records = [{**r, "rack": int(r["rack"])} for r in stream.to_dict("records")]
    assert isinstance(records[0]["paged"], bool)
    config = ServiceConfig(models={"fleet": str(path)}, series_state=str(tmp_path / "s.sqlite"))
    app = create_app(config, metrics_registry=CollectorRegistry(), sinks=[])
    try:
        answer = post(app.test_client(), records)
    finally:
        app.extensions["anomaly"].dispatcher.stop()
    assert answer["counts"]["scored"] == len(records), answer["rejected"]
    expected = score_frame(load_bundle(path), stream).anomaly_score
    np.testing.assert_allclose(_scores_of(answer), expected, rtol=1e-5)


def test_a_series_models_alert_carries_its_last_anomalys_own_time(
    series_dir: Path, tmp_path: Path
) -> None:
    # An SRE helper's alerts for data of 2026-11-15 said only the server's clock (startsAt
    # 2026-12-07): a late or replayed anomaly could not be placed in time.
    from service.alert_policy import AlertPolicy

    policy = AlertPolicy(group_by=("host",), fire_after=1, window=1)
    (app,) = apps(series_dir, str(tmp_path / "s.sqlite"), alerts=policy)
    stream = fleet(8, start="2026-01-09", seed=5)
    spike = stream.index[stream["host"] == "web-01"][6]
    stream.loc[spike, "cpu"] = 90.0
    try:
        post(app.test_client(), stream.to_dict("records"))
        listed = app.test_client().get("/v1/alerts").json["alerts"]
    finally:
        app.extensions["anomaly"].dispatcher.stop()
    fired = [a for a in listed if a["key"] == {"host": "web-01"} and a["status"] == "firing"]
    assert fired and fired[-1]["last_record"]["ts"] == stream.loc[spike, "ts"], listed


def _scores_of(answer: dict[str, Any]) -> list[float]:
    return [r["anomaly_score"] for r in sorted(answer["results"], key=lambda r: r["index"])]


def _scores(answer: Any) -> list[float]:
    assert answer.status_code == 200, answer.get_json()
    return [r["anomaly_score"] for r in answer.get_json()["results"]]


def test_records_stored_before_their_levels_failed_are_answered_not_lost(
    series_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: Any
) -> None:
    """Found by a helper: the rows were stored, the level's own transaction then failed (the
    file locked past the timeout), the request got a 503, and the client's retry had every row
    rejected as a duplicate: none was ever scored."""
    records = fleet(6).to_dict("records")
    (plain,) = apps(series_dir, str(tmp_path / "plain.sqlite"))
    (failing,) = apps(series_dir, str(tmp_path / "failing.sqlite"))
    try:
        expected = _scores(plain.test_client().post(SCORE, json={"records": records}))

        def locked(*args: Any, **kwargs: Any) -> Any:
            raise sqlite3.OperationalError("database is locked")

        monkeypatch.setattr(SeriesStore, "judge", locked)
        answer = failing.test_client().post(SCORE, json={"records": records})
        again = failing.test_client().post(SCORE, json={"records": records})
    finally:
        for app in (plain, failing):
            app.extensions["anomaly"].dispatcher.stop()
    np.testing.assert_allclose(_scores(answer), expected, rtol=1e-6)
    assert "series levels not updated" in caplog.text
    assert caplog.text.count("series levels not updated") == 1  # once a minute, counted
    # Stored by the first request: the retry is each record's second coming.
    assert len(again.get_json()["rejected"]) == len(records) and not again.get_json()["results"]


def test_a_connection_opened_read_only_is_opened_again_once_the_file_is_fixed(
    series_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SQLite opens a file it may not write read-only, and stays so: a worker that opened it
    so answered 503 on every request until restarted, though the file was writable again."""
    state = tmp_path / "series.sqlite"
    (app,) = apps(series_dir, str(state))
    real = series_store.connect
    opened: list[str] = []

    def read_only_once(path: str) -> sqlite3.Connection:
        opened.append(path)
        if len(opened) > 1:
            return real(path)
        return sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None)

    app.extensions["anomaly"].series.close()
    monkeypatch.setattr(series_store, "connect", read_only_once)
    client = app.test_client()
    try:
        records = fleet(2).to_dict("records")
        first = client.post(SCORE, json={"records": records[:1]})
        second = client.post(SCORE, json={"records": records[1:]})
    finally:
        app.extensions["anomaly"].dispatcher.stop()
    assert first.status_code == 503 and "readonly" in first.get_json()["detail"]
    assert second.status_code == 200, second.get_json()


def test_a_state_file_that_cannot_be_written_is_refused_at_start(
    series_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Opening alone succeeded on a read-only file: the server said it was ready, then failed
    # every series request.
    state = tmp_path / "series.sqlite"
    SeriesStore(str(state)).check()
    monkeypatch.setattr(
        series_store,
        "connect",
        lambda path: sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None),
    )
    with pytest.raises(ConfigError, match=r"series_state .*: cannot be opened .*readonly"):
        SeriesStore(str(state)).check()


def test_a_damaged_state_file_is_refused_at_start_naming_the_fix(tmp_path: Path) -> None:
    """Pages overwritten inside the file: the server started and said it was ready, then
    answered every series request with 503 'database disk image is malformed'."""
    from detector.series.windows import SeriesSpec

    state = tmp_path / "series.sqlite"
    store = SeriesStore(str(state))
    spec = SeriesSpec("ts", ("host",), window=3)
    rows = [{"ts": 60, "host": f"host-{i:05d}", "cpu": float(i)} for i in range(3000)]
    store.window("m", spec, ["cpu"], rows)
    store.close()
    with sqlite3.connect(state) as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    data = bytearray(state.read_bytes())
    assert len(data) > 40 * 4096
    data[8 * 4096 : 30 * 4096] = np.random.default_rng(0).bytes(22 * 4096)
    state.write_bytes(bytes(data))
    with pytest.raises(ConfigError, match=r"series_state .*: is damaged .*; move it away"):
        SeriesStore(str(state)).check()


def test_a_damaged_state_files_check_is_told_on_one_line() -> None:
    # SQLite's integrity check lists a line per damaged page: the start-up error printed them
    # all, one under the other (and a pattern over the message missed its advice).
    from service.series_store import _fix

    pages = "\n".join(f"Tree 4 page {p}: btreeInitPage() returns error code 11" for p in range(9))
    said = _fix(f"database disk image is malformed: *** in database main ***\n{pages}")
    assert "\n" not in said
    assert said.startswith("is damaged (database disk image is malformed: *** in database main")
    assert "and 8 more lines" in said and said.endswith("or name another file")


def test_a_state_file_of_a_newer_release_is_refused_not_wiped(tmp_path: Path) -> None:
    # A newer release's file, then a rollback: its every series was dropped without a word.
    state = tmp_path / "series.sqlite"
    SeriesStore(str(state)).check()
    with sqlite3.connect(state) as db:
        db.execute(
            "INSERT INTO series_layouts (model, layout, n_keys, touched) VALUES ('m', '', 1, 0)"
        )
        db.execute("PRAGMA user_version = 99")
    with pytest.raises(ConfigError, match=r"written by a newer release .*; serve it with that"):
        SeriesStore(str(state)).check()
    with sqlite3.connect(state) as db:
        assert db.execute("SELECT COUNT(*) FROM series_layouts").fetchone() == (1,)


def test_a_state_file_path_is_made_or_refused_by_what_it_names(tmp_path: Path) -> None:
    deep = tmp_path / "not" / "yet" / "series.sqlite"
    SeriesStore(str(deep)).check()  # its folders made, as model_sync_dir's are
    assert deep.is_file()
    with pytest.raises(ConfigError, match=r"series_state .*: is a folder; name a file in it"):
        SeriesStore(str(tmp_path)).check()
    with pytest.raises(ConfigError, match=r"series_state /dev/null: is not a regular file"):
        SeriesStore("/dev/null").check()


def test_an_in_memory_state_for_several_workers_is_refused(
    series_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    """Each worker kept its own: no host ever finished warming up, an alert fired twice."""
    monkeypatch.setenv("ANOMALY_SERIES_STATE", ":memory:")
    monkeypatch.setattr(GunicornServer, "run", lambda self: pytest.fail("a server started"))
    argv = ["serve", "--model", f"fleet={series_dir}", "--port", "0", "--workers", "2"]
    assert serve_main(argv) == 2
    assert "series_state ':memory:' keeps each worker's own state" in capsys.readouterr().err


def test_a_worker_started_while_the_state_file_is_locked_serves_rather_than_halting(
    series_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found by a helper: a worker killed while a backup held the file for over 10 s was
    started again, failed its check, and gunicorn stopped the whole server (a worker that
    fails to boot halts the master)."""
    state = tmp_path / "series.sqlite"
    config = ServiceConfig(models={"fleet": str(series_dir)}, series_state=str(state))
    SeriesStore(str(state)).check()  # as `anomaly serve` does before the workers start
    monkeypatch.setattr(series_store, "BUSY_TIMEOUT_S", 0.2)
    holder = sqlite3.connect(state, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        app = GunicornServer(config, {"bind": "127.0.0.1:0"}).load()  # a worker booting
        try:
            locked = app.test_client().post(SCORE, json={"records": fleet(1).to_dict("records")})
        finally:
            app.extensions["anomaly"].dispatcher.stop()
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert locked.status_code == 503
    assert locked.get_json()["error"] == "series_state_unavailable"


def test_a_model_no_longer_served_leaves_the_state_file_at_the_next_start(tmp_path: Path) -> None:
    # Each layout was dropped only by a request of its own model: a model renamed or taken
    # out of a server kept its hosts' histories and alert keys in a kept state file for good
    # (a fleet helper: 300 hosts of 'old' still there after restarts without it).
    from detector.series.windows import SeriesSpec
    from service.alert_state import SharedAlertStates
    from service.series_store import forget_unserved

    path, now = str(tmp_path / "state.sqlite"), [1_000_000.0]
    store = SeriesStore(path, clock=lambda: now[0])
    alerts = SharedAlertStates(path)
    codec = (lambda state: "{}", lambda text: SimpleNamespace(firing=False))
    spec = SeriesSpec("ts", ("host",), window=3)

    def used(model: str, hosts: int) -> None:
        records = [{"ts": 60, "host": f"h{i}", "cpu": 1.0} for i in range(hosts)]
        store.window(model, spec, ["cpu"], records)
        with alerts.transaction(model, now[0], codec) as keys:
            keys.put((("host", "h0"),), SimpleNamespace(firing=False))

    used("old", 3)
    used("kept", 2)
    now[0] += STALE_SECONDS + 60
    used("shared", 4)  # another server's, using the file now
    assert forget_unserved(path, ["kept"], now=now[0]) == {"old": 3}
    assert (store.keys("old"), store.keys("kept"), store.keys("shared")) == (0, 2, 4)
    with sqlite3.connect(path) as db:
        models = {m for (m,) in db.execute("SELECT DISTINCT model FROM alert_keys")}
    assert models == {"kept", "shared"}
    assert forget_unserved(str(tmp_path / "none.sqlite"), ["kept"]) == {}  # no file: none made
    assert not (tmp_path / "none.sqlite").exists()


def test_a_large_series_batch_is_checked_windowed_and_scored_off_the_loop(
    monkeypatch: pytest.MonkeyPatch,
    scoring_thread: ScoringThread,
    series_dir: Path,
    tmp_path: Path,
) -> None:
    # Under gunicorn's gevent worker a series batch held the worker's loop for its whole
    # scoring (10,000 records: 6 s, /healthz unanswered); what is pure goes to the scoring
    # thread, and the state file is read and written in the request's own thread (a SQLite
    # connection is its thread's), in the same transactions.
    import threading

    used: set[int] = set()
    connected = series_store.SharedFile._connected

    def recorded(self: Any, deadline: float) -> Any:
        used.add(threading.get_ident())
        return connected(self, deadline)

    monkeypatch.setattr(series_store.SharedFile, "_connected", recorded)
    stream = fleet(400, start="2026-01-04", seed=3)  # 1,200 records: over 64 KiB, a turn
    (app,) = apps(series_dir, str(tmp_path / "series.sqlite"))
    body = post(app.test_client(), stream.to_dict("records"))
    app.extensions["anomaly"].dispatcher.stop()
    pure = {"_unplaceable", "window_records", "_encoded_windows", "measure"}
    assert pure <= set(scoring_thread.ran)
    assert used == {threading.get_ident()}
    expected = score_frame(load_bundle(series_dir), stream).anomaly_score
    np.testing.assert_allclose([r["anomaly_score"] for r in body["results"]], expected, rtol=1e-5)


def test_a_series_next_records_wait_for_a_large_batch_scored_off_the_loop(
    scoring_thread: ScoringThread, series_dir: Path, tmp_path: Path
) -> None:
    # While a large batch's model call runs in the scoring thread the loop serves the worker's
    # other requests: the hosts' next records, judged then, would miss the batch's scores in
    # their levels, and score otherwise than in the whole file.
    import threading

    stream = fleet(401, start="2026-01-05", seed=4)
    stream["cpu"] += 8.0  # every host above its training level: its level says so
    batch, following = stream.iloc[:-3], stream.iloc[-3:]
    (app,) = apps(series_dir, str(tmp_path / "series.sqlite"))
    answered: list[dict[str, Any]] = []
    sent = threading.Thread(
        target=lambda: answered.append(post(app.test_client(), following.to_dict("records")))
    )

    def following_meanwhile(name: str) -> None:
        if name == "measure" and not sent.is_alive() and not answered:
            sent.start()
            sent.join(timeout=3)  # waits for its turn (the batch's): not answered yet

    scoring_thread.before = following_meanwhile
    body = post(app.test_client(), batch.to_dict("records"))
    if sent.ident is not None:
        sent.join(timeout=60)
    app.extensions["anomaly"].dispatcher.stop()
    assert answered, "the following records were not sent during the batch's model call"
    scores = [r["anomaly_score"] for r in body["results"] + answered[0]["results"]]
    expected = score_frame(load_bundle(series_dir), stream).anomaly_score
    np.testing.assert_allclose(scores, expected, rtol=1e-5)
