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
