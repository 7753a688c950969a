"""A value that is not a number costs its record over HTTP, however many records share it: one
bad record and every record of a request bad are answered the same way, record by record."""

from __future__ import annotations

import pandas as pd
import pytest

from tests.conftest import normal_records

NORMAL = normal_records(6)


def score(client, body: object, **kwargs):  # type: ignore[no-untyped-def]
    return client.post("/v1/models/tiny/score", json=body, **kwargs)


@pytest.mark.parametrize("n_bad", [1, 2, 5])
def test_every_bad_record_is_rejected_alone(client, n_bad: int) -> None:
    records = [{**NORMAL[i], "cpu_pct": "oops"} for i in range(n_bad)]
    response = score(client, {"records": records})
    assert response.status_code == 200, response.json
    body = response.json
    assert body["counts"] == {"received": n_bad, "scored": 0, "rejected": n_bad}
    assert [r["index"] for r in body["rejected"]] == list(range(n_bad))
    for rejected in body["rejected"]:
        assert rejected["reasons"] == ["column 'cpu_pct': 'oops' is not a number"]


def test_bad_records_beside_good_ones_are_rejected_the_same_way(client) -> None:
    records = [{**r, "cpu_pct": "oops"} if i in (1, 4) else r for i, r in enumerate(NORMAL)]
    body = score(client, {"records": records}).json
    assert body["counts"] == {"received": 6, "scored": 4, "rejected": 2}
    assert [r["index"] for r in body["results"]] == [0, 2, 3, 5]
    assert [r["index"] for r in body["rejected"]] == [1, 4]


@pytest.mark.parametrize("n_bad", [1, 2])
def test_a_csv_body_rejects_bad_rows_one_by_one(client, n_bad: int) -> None:
    frame = pd.DataFrame(NORMAL[:n_bad]).assign(cpu_pct="oops")
    response = client.post(
        "/v1/models/tiny/score", data=frame.to_csv(index=False), content_type="text/csv"
    )
    assert response.status_code == 200, response.json
    body = response.json
    assert body["counts"] == {"received": n_bad, "scored": 0, "rejected": n_bad}
    assert all("'oops' is not a number" in r["reasons"][0] for r in body["rejected"])


def test_a_csv_body_with_a_ragged_row_and_a_broken_quote_loses_only_those(client) -> None:
    """Read as the batch scorer reads a file: each broken record is rejected with its reason
    and the others are scored; before, one ragged row made the whole body a 400."""
    lines = pd.DataFrame(NORMAL).to_csv(index=False).splitlines()
    lines[2] += ",surplus"  # record 1: a field too many
    lines[4] = '"' + lines[4]  # record 3: a quote never closed
    body = "\n".join(lines) + "\n"
    response = client.post("/v1/models/tiny/score", data=body, content_type="text/csv")
    assert response.status_code == 200, response.json
    answer = response.json
    assert answer["counts"] == {"received": 6, "scored": 4, "rejected": 2}
    assert [r["index"] for r in answer["results"]] == [0, 2, 4, 5]
    reasons = {r["index"]: r["reasons"][0] for r in answer["rejected"]}
    assert reasons[1] == f"{len(lines[0].split(',')) + 1} fields where the header has " + str(
        len(lines[0].split(","))
    )
    assert "unbalanced quote" in reasons[3]
    alone = client.post(
        "/v1/models/tiny/score", json={"records": [NORMAL[i] for i in (0, 2, 4, 5)]}
    )
    assert [r["anomaly_score"] for r in answer["results"]] == [
        r["anomaly_score"] for r in alone.json["results"]
    ]
