"""A series model (``anomaly train --time-column ts --series-column host``): each record judged
with the rows before it in its host's series, in Python, in files scored chunk by chunk, on
the command line; refused by Spark, which does not window yet. The service's streams:
``tests/service/test_series_streams.py``."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from detector.batch.files import score_file
from detector.cli.main import main
from detector.errors import ConfigError, DataError
from detector.estimator import VAEDetector
from detector.scoring.neighbours import DEFAULT_LOCAL_WEIGHT
from detector.scoring.scores import score_frame
from tests.conftest import HOSTS, TINY, fleet

SERIES = {"time_column": "ts", "series_columns": ("host",), "window": 4}


@pytest.fixture(scope="module")
def series_detector() -> VAEDetector:
    train = fleet(400).sample(frac=1.0, random_state=2)  # any order: each series is sorted
    return VAEDetector(**SERIES, **TINY).fit(train)


def jumped(frame: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """``frame`` with web-01 jumping to db-01's level for one minute: normal for a row alone
    (db-01 runs there), not after web-01's last minutes."""
    rows = frame.index[frame["host"] == "web-01"]
    row = int(rows[30])
    frame = frame.copy()
    frame.loc[row, "cpu"] = HOSTS["db-01"]
    return frame, row


def test_a_jump_to_another_hosts_level_is_seen_only_with_the_series(series_detector) -> None:
    test, row = jumped(fleet(60, start="2026-01-02", seed=1))
    result = series_detector.score_records(test)
    assert result.n_scored == len(test)
    position = int(np.flatnonzero(result.rows == row)[0])
    assert result.is_anomaly[position]
    assert result.top_features(1)[position] == ["cpu"]  # the metric, at the newest step
    # The highest scores: the jump and the 3 minutes of web-01 whose window still holds it.
    web = test.index[test["host"] == "web-01"]
    echo = set(web[web.get_loc(row) : web.get_loc(row) + 4])
    assert set(result.rows[np.argsort(-result.anomaly_score)[:4]]) == echo
    # A model of rows alone (the hosts' columns dropped as an id would be) misses it.
    alone = VAEDetector(**TINY).fit(fleet(400).drop(columns=["ts", "host"]))
    scores = alone.anomaly_score(test.drop(columns=["ts", "host"]))
    assert (scores > scores[row]).sum() > 10


def test_the_first_rows_of_each_series_warm_up_and_bad_rows_are_rejected(series_detector):
    test = fleet(10, start="2026-01-02", seed=3)
    test.loc[4, "ts"] = "not a time"
    test.loc[len(test)] = test.loc[9]  # the same host and minute again
    result = series_detector.score_records(test)
    codes = {r.row: r.code for r in result.rejections}
    assert codes == {4: "bad_timestamp", len(test) - 1: "duplicate_timestamp"}
    assert sorted([*result.rows, *codes]) == list(range(len(test)))
    # Each host's first 3 rows that were placed (one host lost its minute 1 to the bad time).
    scored = test.loc[result.rows].assign(warming=result.warming_up)
    for _, rows in scored.groupby("host"):
        assert list(rows.sort_values("ts")["warming"]) == [True] * 3 + [False] * (len(rows) - 3)
    assert result.to_frame()["warming_up"].sum() == len(HOSTS) * 3


def test_a_row_with_a_bad_value_is_rejected_and_kept_out_of_its_series(series_detector):
    test = fleet(10, start="2026-01-02", seed=4).astype({"cpu": object})
    web = test.index[test["host"] == "web-01"]
    test.loc[web[5], "cpu"] = "oops"
    test.loc[web[6], "mem"] = None
    result = series_detector.score_records(test)
    reasons = {r.row: r.reason for r in result.rejections}
    assert reasons == {
        web[5]: "column 'cpu': 'oops' is not a number",
        web[6]: "column 'mem' is empty (fill it, or score with impute='median')",
    }  # fmt: skip
    # web-01's next row is windowed with the rows before the bad ones, as if they never came.
    clean = fleet(10, start="2026-01-02", seed=4).drop(index=[web[5], web[6]])
    expected = series_detector.score_records(clean)
    position = {row: i for i, row in enumerate(result.rows)}
    np.testing.assert_allclose(
        [result.anomaly_score[position[row]] for row in clean.index], expected.anomaly_score
    )


def test_the_bundle_keeps_the_series_and_scores_alike_after_loading(series_detector, tmp_path):
    series_detector.save(tmp_path / "m")
    loaded = VAEDetector.load(tmp_path / "m")
    assert loaded.bundle_.series == series_detector.bundle_.series
    test = fleet(30, start="2026-01-02", seed=4)
    np.testing.assert_allclose(
        loaded.anomaly_score(test), series_detector.anomaly_score(test), rtol=1e-6
    )
    records = test.to_dict("records")
    np.testing.assert_allclose(
        loaded.score_records(records).anomaly_score,
        score_frame(loaded.bundle_, test).anomaly_score,
    )


def test_a_file_scored_in_chunks_gets_the_scores_of_the_whole_table(series_detector, tmp_path):
    """Chunks of 7 rows cut across the hosts' series: the windows carry over between them."""
    test = fleet(40, start="2026-01-02", seed=5)
    test.to_csv(tmp_path / "in.csv", index=False)
    report = score_file(series_detector.bundle_, tmp_path / "in.csv", tmp_path / "out.csv",
                        chunk_rows=7)  # fmt: skip
    assert (report.rows_read, report.rows_scored) == (len(test), len(test))
    out = pd.read_csv(tmp_path / "out.csv")
    whole = score_frame(series_detector.bundle_, test)
    np.testing.assert_allclose(out["anomaly_score"], whole.anomaly_score, rtol=1e-6)
    assert list(out["warming_up"]) == list(whole.warming_up)


def test_past_max_series_the_least_recent_series_is_forgotten_whole(series_detector, tmp_path):
    """A batch's series state was unbounded: a key column that is an id (every row a series
    of its own) grew it by about 1 KB a row. Past ``max_series`` the least recently seen
    series is forgotten, its last rows and its level both, and warms up again."""
    test = fleet(150, start="2026-01-02", seed=5).sort_values("ts", kind="stable")
    test.to_csv(tmp_path / "in.csv", index=False)
    bundle = series_detector.bundle_
    # Three hosts in turn, a row a chunk, room for two: each row finds its series forgotten.
    report = score_file(bundle, tmp_path / "in.csv", tmp_path / "two.csv", chunk_rows=1,
                        max_series=2)  # fmt: skip
    assert report.rows_scored == len(test) and report.series_evicted == len(test) - 2
    # evaluate counts them too (its metrics changed without a word).
    from detector.cli.commands import _labelled_scores

    test.assign(label=0).to_csv(tmp_path / "labelled.csv", index=False)
    scored = _labelled_scores(bundle, str(tmp_path / "labelled.csv"), "label", chunk_rows=1,
                              max_series=2)  # fmt: skip
    assert scored.series_evicted == len(test) - 2
    out = pd.read_csv(tmp_path / "two.csv")
    assert out["warming_up"].all()
    alone = [score_frame(bundle, test.iloc[[i]]).anomaly_score[0] for i in range(len(test))]
    np.testing.assert_allclose(out["anomaly_score"], alone, rtol=1e-6)
    # With room for every series nothing is forgotten.
    report = score_file(bundle, tmp_path / "in.csv", tmp_path / "three.csv", chunk_rows=1,
                        max_series=3)  # fmt: skip
    assert report.series_evicted == 0
    whole = score_frame(bundle, test)
    np.testing.assert_allclose(pd.read_csv(tmp_path / "three.csv")["anomaly_score"],
                               whole.anomaly_score, rtol=1e-6)  # fmt: skip


def test_a_series_out_of_time_order_across_chunks_is_rejected_with_the_fix(
    series_detector, tmp_path
):
    test = fleet(20, start="2026-01-02", seed=6)
    late = test.iloc[[3]]  # a host's minute 1 again, after its later minutes were scored
    pd.concat([test, late], ignore_index=True).to_csv(tmp_path / "in.csv", index=False)
    report = score_file(series_detector.bundle_, tmp_path / "in.csv", tmp_path / "out.csv",
                        chunk_rows=10)  # fmt: skip
    assert report.rows_read == report.rows_scored + report.rows_rejected == len(test) + 1
    rejects = pd.read_csv(report.rejects)
    assert list(rejects["code"]) == ["out_of_order"]
    assert "send each series in time order" in rejects["reason"].iloc[0]


def test_a_file_out_of_time_order_is_told_to_sort_it(series_detector, tmp_path, capsys):
    """Rows reordered beyond a chunk are rejected each with its reason, and the command says
    what happened to so many of them, and the fix."""
    series_detector.save(tmp_path / "m")
    test = fleet(20, start="2026-01-02", seed=10)
    test.iloc[::-1].to_csv(tmp_path / "in.csv", index=False)  # newest first
    out = ["--output", str(tmp_path / "out.csv"), "--chunk-rows", "10"]
    assert main(["score", str(tmp_path / "m"), str(tmp_path / "in.csv"), *out]) == 0
    said = capsys.readouterr().out
    late = len(test) - 10  # the first chunk (the newest rows) placed, every later row late
    assert f"out.csv.rejects.csv (out_of_order {late})" in said
    assert f"hint: {late} rows came after later rows of their series" in said
    assert "only within a chunk (10 rows for this model); sort the input by ts" in said
    assert main(["score", str(tmp_path / "m"), str(tmp_path / "in.csv"), *out, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["rejected_by_code"] == {"out_of_order": late}
    # evaluate too: its metrics left the late rows out without a word on why.
    labelled = test.iloc[::-1].assign(label=(test.index % 7 == 0).astype(int)[::-1])
    labelled.to_csv(tmp_path / "labelled.csv", index=False)
    argv = ["evaluate", str(tmp_path / "m"), str(tmp_path / "labelled.csv"), "--label-column"]
    assert main([*argv, "label", "--chunk-rows", "10"]) == 0
    assert "only within a chunk (10 rows for this model); sort the input by ts" in (
        capsys.readouterr().err
    )


def test_evaluate_takes_an_empty_time_and_counts_rejected_rows_by_reason(
    series_detector, tmp_path, capsys
) -> None:
    """An empty time cell, read by pandas as NA, was an internal error in ``evaluate``."""
    series_detector.save(tmp_path / "m")
    test = fleet(20, start="2026-01-02", seed=11).astype({"ts": object})
    test["label"] = (np.arange(len(test)) % 10 == 9).astype(int)
    test.loc[5, "ts"] = None
    test.loc[7, "cpu"] = np.nan
    test.to_csv(tmp_path / "in.csv", index=False)
    argv = ["evaluate", str(tmp_path / "m"), str(tmp_path / "in.csv"), "--label-column", "label"]
    assert main(argv) == 0
    said = capsys.readouterr().out
    assert f"records {len(test) - 2} scored" in said
    assert "2 rejected (bad_timestamp 1, missing_value 1)" in said
    assert main([*argv, "--json"]) == 0
    answer = json.loads(capsys.readouterr().out)
    assert answer["rejected_by_code"] == {"bad_timestamp": 1, "missing_value": 1}
    window = series_detector.bundle_.series.window
    assert answer["warming_up"] == 3 * (window - 1)  # the rejected rows are not among them
    assert answer["warnings"] == []


def test_evaluate_says_when_most_rows_were_judged_while_warming_up(
    series_detector, tmp_path, capsys
) -> None:
    # A fraud helper's card model: every test row warming up, and evaluate spoke of drift.
    series_detector.save(tmp_path / "m")
    test = fleet(2, start="2026-01-02", seed=12)
    test["label"] = [0, 0, 0, 0, 0, 1]
    test.to_csv(tmp_path / "in.csv", index=False)
    argv = ["evaluate", str(tmp_path / "m"), str(tmp_path / "in.csv"), "--label-column", "label"]
    assert main(argv) == 0
    said = capsys.readouterr().out
    assert "warming up 6 (100.0% of scored" in said
    assert "WARNING: 100% of the scored rows are warming up" in said
    assert "most rows were rejected" not in said


def test_evaluate_says_when_most_rows_were_rejected_and_why_rows_warm_up_after_gaps(
    tmp_path, capsys
) -> None:
    # A time helper: 88% of rows rejected, and evaluate printed its metrics as any other run;
    # rows warming up after gaps were put down to "each series' first rows".
    spec = ["--time-column", "ts", "--series-column", "host", "--window", "4"]
    fleet(120).to_csv(tmp_path / "train.csv", index=False)
    model = str(tmp_path / "m")
    assert main(["train", str(tmp_path / "train.csv"), "--out", model, "--epochs", "2",
                 "--max-gap-seconds", "600", *spec]) == 0  # fmt: skip
    capsys.readouterr()
    test = fleet(20, start="2026-01-02", seed=13).astype({"cpu": object})
    test["label"] = (np.arange(len(test)) % 10 == 9).astype(int)
    test.loc[test.index[: int(len(test) * 0.6)], "cpu"] = "n/a"
    test.to_csv(tmp_path / "in.csv", index=False)
    argv = ["evaluate", model, str(tmp_path / "in.csv"), "--label-column", "label"]
    assert main(argv) == 0
    said = capsys.readouterr().out
    assert "WARNING: most rows were rejected (60%)" in said
    assert "each series' first 3 rows, and the first after each gap over 600 s" in said


def test_a_chunk_whose_every_row_is_rejected_is_reported_and_the_series_go_on(
    series_detector, tmp_path
) -> None:
    test = fleet(20, start="2026-01-02", seed=8).astype({"ts": object})
    test.loc[10:19, "ts"] = "unknown"  # the second chunk of 10 holds no time at all
    test.to_csv(tmp_path / "in.csv", index=False)
    report = score_file(series_detector.bundle_, tmp_path / "in.csv", tmp_path / "out.csv",
                        chunk_rows=10)  # fmt: skip
    assert (report.rows_read, report.rows_scored, report.rows_rejected) == (len(test), 50, 10)
    assert set(pd.read_csv(report.rejects)["code"]) == {"bad_timestamp"}
    kept = test.drop(index=range(10, 20))
    whole = score_frame(series_detector.bundle_, kept)
    out = pd.read_csv(tmp_path / "out.csv")
    np.testing.assert_allclose(out["anomaly_score"], whole.anomaly_score, rtol=1e-6)


def test_a_file_row_from_a_wrong_clock_is_rejected_and_its_host_scores_on(
    series_detector, tmp_path
) -> None:
    """One row stamped in 2100 in the middle of a file: rejected, and every other row scores
    as in the file without it. With the check off (``max_ahead_seconds=None``), the rest of
    its host comes after it and is rejected, each reason naming the time that made it late."""
    test = fleet(20, start="2026-01-02", seed=9).astype({"ts": object})
    wrong = test.iloc[[30]].assign(ts="2100-01-01T00:00:00")
    hostile = pd.concat([test.iloc[:31], wrong, test.iloc[31:]], ignore_index=True)
    hostile.to_csv(tmp_path / "in.csv", index=False)
    report = score_file(series_detector.bundle_, tmp_path / "in.csv", tmp_path / "out.csv",
                        chunk_rows=16)  # fmt: skip
    rejects = pd.read_csv(report.rejects)
    # The rejects file counts data rows from 1, as an editor's lines after the header.
    assert list(rejects["row"]) == [32] and list(rejects["code"]) == ["future_timestamp"]
    out = pd.read_csv(tmp_path / "out.csv")
    whole = score_frame(series_detector.bundle_, test)
    np.testing.assert_allclose(out["anomaly_score"], whole.anomaly_score, rtol=1e-6)
    report = score_file(series_detector.bundle_, tmp_path / "in.csv", tmp_path / "off.csv",
                        chunk_rows=16, max_ahead_seconds=None)  # fmt: skip
    late = pd.read_csv(report.rejects)
    after = hostile.iloc[32:]
    assert len(late) == (after["host"] == wrong["host"].iloc[0]).sum() > 0
    assert set(late["code"]) == {"out_of_order"}
    assert late["reason"].str.contains("(2100-01-01T00:00:00Z)", regex=False).all()


def test_a_key_that_looks_like_a_number_is_one_series_in_every_chunk_scored(
    tmp_path, capsys
) -> None:
    # Pins the rule training now reads keys by: a key is its text as written, in every chunk,
    # whether the chunk's other keys look like numbers or not ('007' is neither 7 nor '7').
    names = {"web-01": "007", "web-02": "8", "db-01": "web"}
    fleet(300).replace({"host": names}).to_csv(tmp_path / "train.csv", index=False)
    new = fleet(20, start="2026-01-02", seed=7).replace({"host": names})
    new = new.sort_values("host", kind="stable", key=lambda h: h != "8")  # 8s, then the rest
    new.to_csv(tmp_path / "new.csv", index=False)
    model, out = str(tmp_path / "m"), tmp_path / "scored.csv"
    assert main(["train", str(tmp_path / "train.csv"), "--out", model, "--time-column", "ts",
                 "--series-column", "host", "--epochs=2", "--window=4"]) == 0  # fmt: skip
    for rows in ("25", "65536"):  # chunks of 8s and a 007 alone, then 007 beside web; one
        argv = ["score", model, str(tmp_path / "new.csv"), "--output", str(out)]
        assert main([*argv, "--chunk-rows", rows]) == 0
        scored = pd.read_csv(out, dtype={"host": str})
        assert scored.groupby("host")["warming_up"].sum().to_dict() == {"007": 3, "8": 3, "web": 3}
    assert "series keys differ" not in capsys.readouterr().out


def test_a_json_lines_files_number_key_is_the_series_an_http_body_names(tmp_path, capsys) -> None:
    # A JSON Lines file's values became text as a CSV would hold them, so its host 7.0 was the
    # series '7.0' (1e3 '1000.0'), where over HTTP the same record is host 7: training on hosts
    # 7.0 and "7.0" refused 300 rows as repeated times of one series.
    names = {"web-01": 7.0, "web-02": 1e3, "db-01": "7.0"}

    def write(frame: pd.DataFrame, path: str) -> None:
        frame = frame.assign(mem=frame["mem"].round())  # whole floats outside the key
        with open(path, "w") as out:
            for row in frame.to_dict("records"):
                out.write(json.dumps({**row, "host": names[row["host"]]}) + "\n")

    write(fleet(300), str(tmp_path / "train.jsonl"))
    new = fleet(20, start="2026-01-02", seed=7)
    write(new, str(tmp_path / "new.jsonl"))
    write(new.assign(label=np.arange(len(new)) % 17 == 0), str(tmp_path / "labelled.jsonl"))
    model, out = str(tmp_path / "m"), tmp_path / "scored.csv"
    assert main(["train", str(tmp_path / "train.jsonl"), "--out", model, "--time-column", "ts",
                 "--series-column", "host", "--epochs=2", "--window=4"]) == 0  # fmt: skip
    assert main(["score", model, str(tmp_path / "new.jsonl"), "--output", str(out)]) == 0
    scored = pd.read_csv(out, dtype=str)
    warming = scored.groupby("host")["warming_up"].apply(lambda w: int((w == "True").sum()))
    assert warming.to_dict() == {"7": 3, "1000": 3, "7.0": 3}
    assert scored["mem"].str.endswith(".0").all()  # other columns as before: 40.0, not 40
    # anomaly evaluate reads the file as anomaly score does: at main, 20 rows of 7.0 and "7.0"
    # were rejected as one series' repeated times.
    capsys.readouterr()
    argv = ["evaluate", model, str(tmp_path / "labelled.jsonl"), "--label-column", "label"]
    assert main([*argv, "--json"]) == 0
    evaluated = json.loads(capsys.readouterr().out)
    assert (evaluated["n_rejected"], evaluated["warming_up"]) == (0, 9)


def test_the_command_line_trains_describes_and_scores_a_series_model(tmp_path, capsys) -> None:
    fleet(300).to_csv(tmp_path / "train.csv", index=False)
    fleet(20, start="2026-01-02", seed=7).to_csv(tmp_path / "new.csv", index=False)
    flags = [f"--{k}={v}" for k, v in {"epochs": 5, "window": 4}.items()]
    model = str(tmp_path / "m")
    assert main(["train", str(tmp_path / "train.csv"), "--out", model, "--time-column", "ts",
                 "--series-column", "host", *flags]) == 0  # fmt: skip
    said = capsys.readouterr().out
    assert "series by host, in time order of ts; each record with the 3 rows before it" in said
    assert main(["info", model]) == 0
    said = capsys.readouterr().out
    # The columns a record holds: the window's own (cpu[-3], ...) listed 4 times as many.
    assert "series by host" in said and "columns: ts, host, cpu (number), mem (number)\n" in said
    assert main(["info", model, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["columns"] == ["ts", "host", "cpu", "mem"]
    out = tmp_path / "scored.csv"
    assert main(["score", model, str(tmp_path / "new.csv"), "--output", str(out)]) == 0
    scored = pd.read_csv(out)
    assert list(scored.columns[:4]) == ["ts", "host", "cpu", "mem"]
    assert "warming_up" in scored and scored["warming_up"].sum() == len(HOSTS) * 3
    assert "differ from another only in case" not in capsys.readouterr().out
    # A host written two ways split its rows into two series, each warming up, silently.
    respelled = fleet(20, start="2026-01-02", seed=7)
    respelled.loc[respelled.index[1::2], "host"] = respelled["host"].str.upper()
    respelled.to_csv(tmp_path / "respelled.csv", index=False)
    assert main(["score", model, str(tmp_path / "respelled.csv"), "--output", str(out)]) == 0
    said = capsys.readouterr().out
    assert f"warning: {2 * len(HOSTS)} series keys differ from another only in case" in said
    off = ["--output", str(tmp_path / "off.csv"), "--max-ahead-seconds", "none"]
    assert main(["score", model, str(tmp_path / "new.csv"), *off]) == 0
    with pytest.raises(SystemExit) as refused:
        main(["score", model, str(tmp_path / "new.csv"), *off[:-1], "-60"])
    assert refused.value.code == 2
    assert "-60 is not a positive number of seconds" in capsys.readouterr().err


def found_blamed_and_reloaded(detector: VAEDetector, tmp_path) -> None:
    """A jump in cpu is flagged and blamed on cpu, and the saved bundle scores alike."""
    test, row = jumped(fleet(60, start="2026-01-02", seed=1))
    result = detector.score_records(test)
    position = int(np.flatnonzero(result.rows == row)[0])
    assert result.is_anomaly[position]
    assert result.top_features(1)[position] == ["cpu"]
    detector.save(tmp_path / "m")
    loaded = VAEDetector.load(tmp_path / "m")
    assert loaded.bundle_.series == detector.bundle_.series
    np.testing.assert_allclose(loaded.anomaly_score(test), result.anomaly_score, rtol=1e-6)


def test_the_distance_judges_the_newest_rows_with_their_deviation_and_the_whole_window(
    tmp_path,
) -> None:
    """``--short-window 3`` with ``--window 8``: two parts, the newest 3 rows' columns with
    each metric's deviation from the mean of the 7 rows before the newest (``--deviation-window``
    is 10, more than the window, so it takes the whole window), and all 8 rows' columns; a
    jump is still found, blamed on its metric, and the bundle scores alike after loading.
    Without a short window the deviations are a part of their own, the newest row's, at half
    weight; ``--deviation-window 0`` drops them. (``--column-window 0``: the whole window at
    once, as before the metrics' own parts.)"""
    from detector.series.windows import lag_of

    train = fleet(400)
    whole_window = {**SERIES, "window": 8, "column_window": 0}
    detector = VAEDetector(**whole_window, short_window=3, **TINY).fit(train)
    bank, schema = detector.bundle_.neighbours, detector.bundle_.schema
    assert bank is not None and bank.parts.shape == (2, schema.n_features)
    names = [c.name for c in schema.numeric]
    deviation = np.array([name.endswith("[-mean]") for name in names])
    assert sorted(names[i] for i in np.flatnonzero(deviation)) == ["cpu[-mean]", "mem[-mean]"]
    lags = np.array([lag_of(name) for name in names])
    assert sorted(lags[~deviation]) == sorted(list(range(8)) * 2)  # cpu and mem, 8 steps each
    newest, whole = bank.parts[:, : schema.n_numeric]
    np.testing.assert_array_equal(newest, ((lags < 3) & ~deviation) | deviation)
    np.testing.assert_array_equal(whole, ~deviation)
    assert bank.parts[:, schema.n_numeric :].all()  # the categorical zone is the newest row's
    assert (bank.part_scale > 0).all() and not np.all(bank.part_location == 0)
    said = detector.bundle_.describe_score()
    assert (
        "on the newest 3 rows with each metric's difference from the mean of the 7 rows before "
        "the newest and on all 8 rows of the window, each standardised, summed"
    ) in said
    assert (
        "then against its series' level, the median of its hourly mean scores over the 24" in said
    )
    assert detector.bundle_.series is not None and detector.bundle_.series.deviation_window == 8

    found_blamed_and_reloaded(detector, tmp_path)

    two = VAEDetector(**whole_window, short_window=3, deviation_window=0, **TINY)
    parts = two.fit(train).bundle_.neighbours.parts
    assert parts.shape[0] == 2 and not any("[-mean]" in c for c in two.bundle_.schema.column_order)
    own = VAEDetector(**whole_window, short_window=0, **TINY).fit(train).bundle_
    assert own.neighbours is not None and own.neighbours.parts.shape[0] == 2
    np.testing.assert_array_equal(own.neighbours.parts[1, : own.schema.n_numeric], lags == 0)
    assert (
        "and on the newest row with each metric's difference from the mean of the 7 rows "
        "before it (weight 0.5)" in own.describe_score()
    )
    whole = VAEDetector(**whole_window, short_window=0, deviation_window=0, **TINY).fit(train)
    assert whole.bundle_.neighbours is not None and whole.bundle_.neighbours.parts.shape[0] == 1
    with pytest.raises(ConfigError, match="short_window -1 must be 0"):
        VAEDetector(**SERIES, short_window=-1, **TINY).fit(train)
    with pytest.raises(ConfigError, match="deviation_window -2 must be 0"):
        VAEDetector(**SERIES, deviation_window=-2, **TINY).fit(train)


def test_each_metric_is_judged_alone_in_the_whole_windows_place(tmp_path) -> None:
    """The default: the newest rows' part, then one part per metric over its newest
    ``--column-window`` rows (capped at the window), each searching at most 250 bank rows and
    counting 0.75/metrics, in place of the whole window's part; a jump is found and blamed on its
    metric, the bundle scores alike after loading, and the score says what it is made of."""
    from detector.series.windows import lag_of

    train = fleet(400)
    detector = VAEDetector(**{**SERIES, "window": 8}, short_window=3, **TINY).fit(train)
    bundle = detector.bundle_
    bank, schema = bundle.neighbours, bundle.schema
    assert bank is not None and bank.parts.shape == (3, schema.n_features)
    names = [c.name for c in schema.numeric]
    lags = np.array([lag_of(name) for name in names])
    deviation = np.array([name.endswith("[-mean]") for name in names])
    for part, metric in zip(bank.parts[1:], ("cpu", "mem"), strict=True):
        mine = np.array([name == metric or name.startswith(f"{metric}[-") for name in names])
        np.testing.assert_array_equal(part[: schema.n_numeric], mine & ~deviation & (lags < 8))
        assert not part[schema.n_numeric :].any()  # the host's one-hot is in no metric's part
    assert bank.part_rows is not None and list(bank.part_rows) == [0, 250, 250]
    assert "and each of 2 metrics alone on its newest 8 rows (0.75 x their mean)" in (
        bundle.describe_score()
    )
    # Each part is also judged against the normal rows' spread around its neighbours.
    assert bank.local_weight == DEFAULT_LOCAL_WEIGHT > 0 and bank.local_scale is not None
    said = f"each part {DEFAULT_LOCAL_WEIGHT:g} x relative to the normal rows' spread around"
    assert said in bundle.describe_score()
    found_blamed_and_reloaded(detector, tmp_path)
    shorter = VAEDetector(**{**SERIES, "window": 8}, column_window=4, **TINY).fit(train)
    part = shorter.bundle_.neighbours.parts[1, : schema.n_numeric]
    assert sorted(lags[part]) == [0, 1, 2, 3]
    with pytest.raises(ConfigError, match="column_window -1 must be 0"):
        VAEDetector(**SERIES, column_window=-1, **TINY).fit(train)


def test_only_the_default_models_distance_gets_the_deviation() -> None:
    """The deviation part was measured for the default model's distance: a model scored by
    its own likelihood (here the ELBO) sees the window's lags alone, so a sequence encoder
    (conv-vae) still finds its steps."""
    plain = VAEDetector(**{**SERIES, "window": 4}, score_kind="elbo", **TINY).fit(fleet(300))
    assert plain.bundle_.series is not None and plain.bundle_.series.deviation_window == 0
    assert not any("[-mean]" in c for c in plain.bundle_.schema.column_order)


def test_only_the_default_distance_is_judged_against_its_series_level() -> None:
    """The level is in the distance's units (``detector.series.levels``): the ELBO and the
    ELBO-distance sum keep their scores as they are, as does ``--level-hours 0``."""
    train = fleet(300)
    levels = {}
    for name, options in {
        "default": {},
        "elbo_knn": {"score_kind": "elbo_knn"},
        "elbo": {"score_kind": "elbo"},
        "off": {"level_hours": 0},
    }.items():
        series = VAEDetector(**SERIES, **options, **TINY).fit(train).bundle_.series
        assert series is not None
        levels[name] = series.level_hours
    assert levels == {"default": 24, "elbo_knn": 0, "elbo": 0, "off": 0}


def test_series_options_need_a_time_column() -> None:
    with pytest.raises(
        ConfigError,
        match=r"^invalid .*window judges rows within a series: set time_column",
    ):
        VAEDetector(window=3, **TINY).fit(fleet(100))


def test_a_fleet_trained_as_one_series_is_told_to_name_its_series_column() -> None:
    from detector.errors import SchemaError

    with pytest.raises(SchemaError, match=r"same ts.*add series_columns=\['COL'\]"):
        VAEDetector(time_column="ts", **TINY).fit(fleet(50))


def test_training_on_series_mostly_warming_up_says_so_with_a_window_that_fits() -> None:
    """Series of 12 rows under a window of 8: 7 of each 12 rows warm up (their windows repeat
    the series' first row); the warning names the share and the longest window that keeps
    the warming-up rows under a fifth (3: 2 of 12). Series of 60 rows: no warning."""
    short = VAEDetector(**{**SERIES, "window": 8}, **TINY).fit(fleet(12))
    (said,) = [w for w in short.summary_.warnings if "warming up" in w]
    assert said.startswith("21 of 36 training rows (58%) are warming up")
    assert "(a median of 12 rows per host here) or a shorter window=3" in said  # the API's words
    assert said in short.bundle_.training["warnings"]  # saved: `anomaly info` shows it
    long = VAEDetector(**{**SERIES, "window": 8}, **TINY).fit(fleet(60))
    assert not [w for w in long.summary_.warnings if "warming up" in w]


def test_a_stray_word_in_a_metric_is_named_in_the_users_column_not_a_window_column() -> None:
    """One 'oops' made cpu text; training then blamed 'cpu[-3]' as an identifier and offered to
    ignore a column the user never made."""
    from detector.errors import DataError

    train = fleet(300).astype({"cpu": object})
    train.loc[250, "cpu"] = "oops"
    with pytest.raises(DataError) as refused:
        VAEDetector(**SERIES, **TINY).fit(train)
    message = str(refused.value)
    assert (
        "column 'cpu' holds numbers but for 1 value(s) that are not (first 'oops', at row 251)"
        in message
    )
    assert "[-" not in message and "identifier" not in message
    ids = fleet(300).assign(request=[f"r{i}" for i in range(len(fleet(300)))])
    with pytest.raises(DataError, match=r"'request' has .* distinct text values .*looks like"):
        VAEDetector(**SERIES, **TINY).fit(ids)


def test_a_time_column_of_timestamps_trains_and_scores_as_its_iso_text(tmp_path) -> None:
    """Found by trying: a Parquet file's timestamp column (pandas datetime64) was refused in
    training, every row "not a time"; scoring read the same file's times as text. Now the
    timestamps, tz-aware, zone-less (UTC) or at milliseconds, are the texts' times."""
    text = fleet(60)
    stamps = text.assign(ts=pd.to_datetime(text["ts"]))
    naive_ms = stamps.assign(ts=stamps["ts"].dt.tz_localize(None).astype("datetime64[ms]"))
    expected = VAEDetector(**SERIES, **TINY).fit(text).score_records(fleet(20, seed=3))
    for frame in (stamps, naive_ms):
        path = tmp_path / "train.parquet"
        frame.to_parquet(path)
        trained = VAEDetector(**SERIES, **TINY).fit(pd.read_parquet(path))
        later = fleet(20, seed=3).assign(ts=lambda f: pd.to_datetime(f["ts"]))
        for records in (later, later.to_dict("records")):  # a table, and one by one
            result = trained.score_records(records)
            np.testing.assert_array_equal(result.anomaly_score, expected.anomaly_score)


def test_a_series_indexed_by_its_time_and_keys_fits_and_scores_as_columns() -> None:
    """Found by trying: ``fit(frame.set_index("ts"))``, as pandas users hold a series, raised
    a bare KeyError; the time and key columns may be index levels, in any order."""
    train, later = fleet(60), fleet(20, seed=3)
    expected = VAEDetector(**SERIES, **TINY).fit(train).anomaly_score(later)
    indexed = VAEDetector(**SERIES, **TINY).fit(train.set_index("ts"))
    np.testing.assert_array_equal(indexed.anomaly_score(later.set_index(["host", "ts"])), expected)


def test_a_series_model_samples_series_that_score_back(series_detector) -> None:
    """Sampled windows come back as the rows they hold, a series each, in the user's columns
    (not the window's ``cpu[-3]``); scored back, they are series like any other."""
    from detector.nn.sampling import sample_records

    bundle = series_detector.bundle_
    drawn = sample_records(bundle, 10, seed=0)
    assert list(drawn.columns) == ["ts", "host", "cpu", "mem"] and len(drawn) == 10
    assert drawn["host"].tolist() == ["sample-1"] * 4 + ["sample-2"] * 4 + ["sample-3"] * 2
    assert drawn["ts"].is_monotonic_increasing and drawn["ts"].is_unique
    pd.testing.assert_frame_equal(sample_records(bundle, 10, seed=0), drawn)
    # A window's oldest row is its deepest lag: the first 4 rows are one sampled window.
    result = series_detector.score_records(sample_records(bundle, 400, seed=1))
    assert result.n_scored == 400 and not result.rejections
    assert result.warming_up.sum() == 100 * 3  # each sampled series warms up like a host


@pytest.mark.parametrize("gap", [20.0, 0.5])
def test_sampled_series_keep_within_the_models_gap_limit(series_detector, gap) -> None:
    """A row a minute restarted every sampled window of a model whose gap limit is shorter
    (15 s rows, ``--max-gap-seconds 30``): each row warmed up as if its series began there."""
    import dataclasses

    from detector.nn.sampling import sample_records
    from detector.series.windows import make_windows

    bundle = series_detector.bundle_
    spec = dataclasses.replace(bundle.series, max_gap_seconds=gap)
    drawn = sample_records(dataclasses.replace(bundle, series=spec), 40, seed=0)
    windows = make_windows(drawn, spec)
    assert windows.restarts == 0 and not windows.rejections
    assert windows.warming_up.sum() == 10 * 3  # only each window's oldest rows warm up


def test_a_series_model_asks_for_named_columns_not_an_array(series_detector) -> None:
    """An array was checked against the 16 window columns ('expected 16 columns'), which the
    user never made; its time and key columns have no fixed place, so names are required."""
    test = fleet(5, start="2026-01-02")
    with pytest.raises(DataError, match=r"reads its records by column name .* pass a DataFrame"):
        series_detector.score_records(test.to_numpy())
    assert series_detector.score_records(test).n_scored == len(test)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--ignore-column", "ts"], "['ts'] would be left out"),
        (["--ignore-column", "host"], "['host'] would be left out"),
        (["--categorical", "host"], "--categorical names ['host'], the series' time or key"),
        (["--model", "cvae", "--context", "host"], "--context names ['host'], the series'"),
    ],
)
def test_a_series_column_given_another_role_is_named(capsys, tmp_path, extra, message) -> None:
    """An ignored time column was an internal KeyError; a key also named categorical or
    context was 'not in the data'."""
    fleet(30).to_csv(tmp_path / "train.csv", index=False)
    argv = ["train", str(tmp_path / "train.csv"), "--out", str(tmp_path / "m"), "--epochs", "1"]
    series = ["--time-column", "ts", "--series-column", "host"]
    assert main([*argv, *series, *extra]) == 2
    assert message in capsys.readouterr().err and not (tmp_path / "m").exists()


def test_a_series_column_not_in_the_data_is_named() -> None:
    # An internal error: KeyError "['nope'] not found in axis".
    from detector.errors import SchemaError

    for options in ({"time_column": "nope"}, {"time_column": "ts", "series_columns": ("x",)}):
        with pytest.raises(SchemaError, match="not a column of the training data"):
            VAEDetector(**{**SERIES, **options, **TINY}).fit(fleet(100))


def test_a_window_longer_than_the_score_reads_is_warned_of() -> None:
    # --window 40 scored exactly as 20 did (the distance's parts read the last 20 rows at
    # most), and nothing said so.
    options = {**SERIES, "window": 12, "column_window": 6, "short_window": 3, **TINY}
    options["deviation_window"] = 4
    told = VAEDetector(**options).fit(fleet(60)).summary_.warnings
    (said,) = [w for w in told if "the older rows change nothing" in w]
    assert said.startswith("window=12 keeps 11 rows before each record")
    assert "reads the last 6 (column_window=6)" in said
    fits = VAEDetector(**{**options, "window": 6}).fit(fleet(60)).summary_.warnings
    assert not [w for w in fits if "the older rows change nothing" in w]


def test_a_series_result_tells_of_a_label_in_another_case_by_its_own_column() -> None:
    # Each row's windows hold copies of its text column ('proto[-1]' ...): told by them too,
    # one row's 'TCP' would count four times, under column names the user never wrote.
    train = fleet(200)
    train["proto"] = np.where(np.arange(len(train)) % 2, "tcp", "udp")
    detector = VAEDetector(**SERIES, **TINY).fit(train)
    test = fleet(10, start="2026-01-02", seed=3).assign(proto="TCP")
    for given in (test, test.to_dict("records")):
        result = detector.score_records(given)
        (found,) = result.respelled
        assert (found.name, found.rows, found.examples) == ("proto", len(test), (("TCP", "tcp"),))
