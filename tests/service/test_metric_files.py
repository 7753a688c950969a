"""Dead workers' metric files (``service.metric_files``): folded into one archive per type,
so a scrape reads the same totals before and after, from a folder that does not grow with
every worker that ever exited."""

from __future__ import annotations

import json
import threading
from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest, multiprocess
from prometheus_client.mmap_dict import MmapedDict

from service.metric_files import CappedLabel, fold_dead_worker, reading

CAP = CappedLabel("hits", "key", "model", 2, "__other__")


def write(folder: Path, kind: str, pid: int | str, samples: dict[tuple[str, str], float]) -> None:
    """A worker's file as prometheus_client writes it: counter ``hits`` by model and key."""
    values = MmapedDict(str(folder / f"{kind}_{pid}.db"))
    for (model, key), value in samples.items():
        labels = {"model": model, "key": key}
        name = json.dumps(["hits", "hits_total", labels, "Hits."], sort_keys=True)
        values.write_value(name, value, 0.0)
    values.close()


def scrape(folder: Path) -> dict[str, float]:
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=str(folder))
    lines = generate_latest(registry).decode().splitlines()
    return {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1]) for line in lines if line[0] != "#"
    }


def test_a_dead_workers_counts_join_the_archive_and_its_file_goes(tmp_path: Path) -> None:
    write(tmp_path, "counter", 101, {("m", "host=a"): 3.0, ("m", "host=b"): 1.0})
    write(tmp_path, "counter", 102, {("m", "host=a"): 5.0})  # a live worker
    write(tmp_path, "counter", "archive", {("m", "host=a"): 10.0})  # earlier dead ones
    MmapedDict(str(tmp_path / "gauge_mostrecent_101.db")).close()  # its gauges, set again
    before = scrape(tmp_path)
    fold_dead_worker(tmp_path, 101)
    assert scrape(tmp_path) == before  # the same totals: no counter went backwards
    assert sorted(p.name for p in tmp_path.glob("*.db")) == ["counter_102.db", "counter_archive.db"]
    assert before['hits_total{key="host=a",model="m"}'] == 18.0
    fold_dead_worker(tmp_path, 101)  # a second call for the same worker: nothing to do
    assert scrape(tmp_path) == before


def test_a_capped_labels_new_values_past_the_cap_go_to_its_other(tmp_path: Path) -> None:
    # Each replaced worker could add its own 100 keys to anomaly_key_anomalies_total.
    write(tmp_path, "counter", "archive", {("m", "host=a"): 1.0, ("m", "host=b"): 1.0})
    write(tmp_path, "counter", 7, {("m", "host=a"): 2.0, ("m", "host=c"): 4.0, ("n", "x=1"): 1.0})
    fold_dead_worker(tmp_path, 7, capped=(CAP,))
    assert scrape(tmp_path) == {
        'hits_total{key="host=a",model="m"}': 3.0,
        'hits_total{key="host=b",model="m"}': 1.0,
        'hits_total{key="__other__",model="m"}': 4.0,  # host=c, a third key of model m
        'hits_total{key="x=1",model="n"}': 1.0,  # another model has its own cap
    }


def test_a_fold_waits_for_a_scrape_reading_the_files(tmp_path: Path) -> None:
    # Deleting a dead worker's file mid-scrape failed the scrape (FileNotFoundError), and a
    # fold between reading the archive and the worker's file counted it twice.
    write(tmp_path, "counter", 5, {("m", "host=a"): 1.0})
    folded = threading.Thread(target=fold_dead_worker, args=(tmp_path, 5))
    with reading(tmp_path):
        folded.start()
        folded.join(timeout=1)  # the deadline passes: the fold waits for the scrape
        assert folded.is_alive() and (tmp_path / "counter_5.db").exists()
    folded.join(timeout=30)
    assert not folded.is_alive() and not (tmp_path / "counter_5.db").exists()
