"""Dead workers' metric files (``service.metric_files``): folded into one archive per type,
so a scrape reads the same totals before and after, from a folder that does not grow with
every worker that ever exited."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest, multiprocess
from prometheus_client.mmap_dict import MmapedDict

from service.metric_files import fold_dead_worker, reading
from service.metrics import MAX_KEY_SERIES, OTHER_KEYS


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


def test_every_series_keeps_its_own_count_through_a_fold(tmp_path: Path) -> None:
    # Folding a key past a cap into '__other__' made its series go down (1,204 times in a
    # helper's run), which Prometheus takes for a reset, counting those anomalies twice.
    write(tmp_path, "counter", "archive", {("m", f"host={i}"): 1.0 for i in range(3)})
    write(tmp_path, "counter", 7, {("m", "host=0"): 2.0, ("m", "host=9"): 4.0})
    before = scrape(tmp_path)
    fold_dead_worker(tmp_path, 7)
    assert scrape(tmp_path) == before
    assert before['hits_total{key="host=9",model="m"}'] == 4.0


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


#: A worker of its own: counts one anomaly for each of the keys given, then exits.
_WORKER = """
import sys
from prometheus_client import CollectorRegistry
from service.metrics import ServiceMetrics
ServiceMetrics(CollectorRegistry()).count_key_anomalies("m", dict.fromkeys(sys.argv[1:], 1))
"""


def test_the_key_cap_holds_across_replaced_workers(tmp_path: Path) -> None:
    # The cap was each worker's own: every replaced worker's keys stayed in the archive, 100
    # more series a model at every SIGHUP or crash (a helper saw 402, 802, 1,202, 1,602).
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    for worker in range(3):
        keys = [f"host={worker}-{i}" for i in range(MAX_KEY_SERIES + 50)]
        run = subprocess.run([sys.executable, "-c", _WORKER, *keys], env=env, check=False)
        assert run.returncode == 0
        (pid,) = {int(p.stem.split("_")[1]) for p in tmp_path.glob("counter_[0-9]*.db")}
        fold_dead_worker(tmp_path, pid)
    counts = {k: v for k, v in scrape(tmp_path).items() if k.startswith("anomaly_key_")}
    assert len(counts) == MAX_KEY_SERIES + 1  # the first worker's 100, and the rest
    assert counts[f'anomaly_key_anomalies_total{{key="{OTHER_KEYS}",model="m"}}'] == 350.0
    assert sum(counts.values()) == 3 * (MAX_KEY_SERIES + 50)  # every anomaly still counted


def test_the_key_cap_holds_across_live_workers(tmp_path: Path) -> None:
    # Each live worker kept a cap of its own: under 2 workers a soak's key churn held 200
    # key series a model (402 lines for 2 models), 100 more for each worker, where the help
    # text says 100 a model over the server's life.
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    for worker in range(3):  # each file stays, as a live worker's does
        keys = [f"host={worker}-{i}" for i in range(MAX_KEY_SERIES + 50)]
        run = subprocess.run([sys.executable, "-c", _WORKER, *keys], env=env, check=False)
        assert run.returncode == 0
    counts = {k: v for k, v in scrape(tmp_path).items() if k.startswith("anomaly_key_")}
    assert len(counts) == MAX_KEY_SERIES + 1  # the first worker's 100, and the rest
    assert sum(counts.values()) == 3 * (MAX_KEY_SERIES + 50)  # every anomaly still counted


def test_workers_that_die_before_serving_stop_the_server_once(tmp_path: Path, monkeypatch) -> None:
    # Workers killed while loading (SIGSEGV under `ulimit -v`, SIGBUS on a full disk) were
    # replaced for good: 1,270 in 10 minutes, and the server never answered.
    from types import SimpleNamespace

    from gunicorn.errors import HaltServer

    from service import server

    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    monkeypatch.setattr(server, "_unbooted_deaths", 0)
    served = SimpleNamespace(pid=10)  # gunicorn's worker: the hook reads its pid
    server._boot_mark(served.pid).touch()  # as the worker's post_worker_init leaves it
    server._child_exit(None, served)
    for pid in range(11, 11 + server.MAX_UNBOOTED_DEATHS - 1):
        server._child_exit(None, SimpleNamespace(pid=pid))  # no mark: died loading
    with pytest.raises(HaltServer, match="5 workers in a row died before they could serve"):
        server._child_exit(None, SimpleNamespace(pid=99))
    server._child_exit(None, SimpleNamespace(pid=100))  # once: not again as the master stops
    assert not list(tmp_path.glob(".booted-*"))
