"""Dead workers' metric files (``service.metric_files``): folded into one archive per type,
so a scrape reads the same totals before and after, from a folder that does not grow with
every worker that ever exited."""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest, multiprocess
from prometheus_client.mmap_dict import MmapedDict

from service import metric_files
from service.metric_files import WORKER_FILES, BackedMmapedDict, fold_dead_worker, reading
from service.metrics import MAX_KEY_SERIES, OTHER_KEYS
from tests.conftest import normal_records
from tests.processes import serving
from tests.service.conftest import fill


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


def test_a_workers_metric_files_are_on_disk_before_their_maps_are_written(tmp_path: Path) -> None:
    # prometheus_client grows its files with truncate alone: sparse, each page taken from the
    # disk when first written through the map. A disk filled while serving killed a worker
    # with SIGBUS at its first new series (a 503's status label), its replacement refused to
    # start, and gunicorn stopped the server. Each file must be on disk whole, the histogram's
    # too (made at a worker's first request, where the disk may be full by then).
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    keys = [f"host={i}" for i in range(MAX_KEY_SERIES)]
    run = subprocess.run([sys.executable, "-c", _WORKER, *keys], env=env, check=False)
    assert run.returncode == 0
    (pid,) = {p.stem.rsplit("_", 1)[1] for p in tmp_path.glob("counter_[0-9]*.db")}
    for prefix in WORKER_FILES:
        size = (tmp_path / f"{prefix}_{pid}.db").stat()
        assert size.st_blocks * 512 >= size.st_size, prefix


def test_a_new_series_on_a_full_disk_is_counted_and_written_once_space_is_back(
    tmp_path: Path, monkeypatch, caplog
) -> None:
    # The file must grow for the new series, and the disk refuses: the count is kept in the
    # process, not lost, and the worker lives on.
    path = str(tmp_path / "counter_1.db")
    values = BackedMmapedDict(path)
    first = [f"series {i} " + "x" * 100 for i in range(1000)]  # past the file's first 64 KiB

    def full(fd: int, offset: int, size: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "posix_fallocate", full)
    for i, key in enumerate(first):
        values.write_value(key, float(i), 0.0)
    values.write_value(first[-1], 2000.0, 0.0)
    assert values.read_value(first[-1]) == (2000.0, 0.0)
    assert "is full: new metric series are counted in this worker" in caplog.text
    on_disk = {k for k, *_ in MmapedDict.read_all_values_from_file(path)}
    assert first[-1] not in on_disk  # nowhere to put it yet
    monkeypatch.undo()  # space freed
    monkeypatch.setattr(metric_files, "PLACE_AGAIN_S", 0.0)  # not waiting for the clock
    values.write_value(first[0], 0.0, 0.0)  # a series in the file: the others go out too
    values.write_value(first[-1], 2001.0, 0.0)
    values.close()
    written = {k: v for k, v, *_ in MmapedDict.read_all_values_from_file(path)}
    assert written[first[-1]] == 2001.0
    assert [written[k] for k in first[:-1]] == [float(i) for i in range(999)]


def test_a_worker_replaced_on_a_nearly_full_disk_starts_where_its_files_fit(
    bundle_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog
) -> None:
    # A worker killed while the disk held under 8 MiB free was replaced by one that refused to
    # start ('has 0.2 MiB free, under the 8 MiB its files need'), and gunicorn stopped the
    # server, whose other worker was serving (measured on a filled 20 MiB tmpfs).
    import shutil

    from service.config import ServiceConfig
    from service.server import GunicornServer

    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    usage = shutil.disk_usage(tmp_path)
    nearly_full = usage._replace(free=2**20)  # as the system reports a disk with 1 MiB free
    monkeypatch.setattr(shutil, "disk_usage", lambda path: nearly_full)
    config = ServiceConfig(models={"tiny": str(bundle_dir)}, alert_log=False)
    app = GunicornServer(config, {"bind": "127.0.0.1:0"}).load()  # a worker booting
    app.extensions["anomaly"].dispatcher.stop()
    for prefix in WORKER_FILES:  # made whole, before any request
        size = (tmp_path / f"{prefix}_{os.getpid()}.db").stat()
        assert size.st_blocks * 512 >= size.st_size > 0, prefix

    def full(fd: int, offset: int, size: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    for path in tmp_path.glob("*.db"):
        path.unlink()
    monkeypatch.setattr(os, "posix_fallocate", full)  # no room for them at all
    with pytest.raises(SystemExit) as refused:
        GunicornServer(config, {"bind": "127.0.0.1:0"}).load()
    assert refused.value.code == 3  # gunicorn's WORKER_BOOT_ERROR
    assert f"the metrics directory {tmp_path} (PROMETHEUS_MULTIPROC_DIR) cannot hold" in caplog.text


def test_a_worker_started_on_a_full_disk_takes_a_spare_set_of_its_files(
    small_disk: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # A worker replaced on a disk with 0 bytes free could not make its files ('cannot hold a
    # worker's files (No space left on device)'), and gunicorn stopped the whole server.
    folder = small_disk / "metrics"
    assert metric_files.keep_spares(folder.parent, 0) == 0  # nothing asked, nothing made
    folder.mkdir()
    assert metric_files.keep_spares(folder, 2) == 2  # the master, while there is room
    fill(small_disk)
    assert shutil.disk_usage(small_disk).free == 0
    assert metric_files.worker_files_problem(folder) is None  # this process as the worker
    assert "took a set of metric files the server keeps for replaced workers (1 left)" in (
        caplog.text
    )
    counter = folder / f"counter_{os.getpid()}.db"
    for prefix in WORKER_FILES:  # its own, on disk whole: written through the map, no SIGBUS
        size = (folder / f"{prefix}_{os.getpid()}.db").stat()
        assert size.st_blocks * 512 >= size.st_size == 64 * 1024, prefix
    values = BackedMmapedDict(str(counter))
    values.write_value("hits", 3.0, 0.0)
    values.close()
    assert [(k, v) for k, v, *_ in MmapedDict.read_all_values_from_file(str(counter))] == [
        ("hits", 3.0)
    ]
    assert metric_files.keep_spares(folder, 2) == 1  # no room for another
    assert metric_files.take_spare(folder, 123_456) == 0  # a second worker takes the last
    for prefix in WORKER_FILES:
        (folder / f"{prefix}_{os.getpid()}.db").unlink()
    fill(small_disk)  # what they held, taken by another file
    problem = metric_files.worker_files_problem(folder)  # a third finds none
    assert problem is not None and "the sets kept for replaced workers are spent" in problem
    assert not list(folder.glob(f"*_{os.getpid()}.db"))  # what it made before is gone
    metric_files.keep_spares(folder, 1)
    metric_files.clear_metric_files(folder)  # a new run: spare sets go with the metric files
    assert not list(folder.iterdir())


@pytest.mark.slow
def test_a_worker_replaced_on_a_full_disk_leaves_the_server_serving(
    bundle_dir: Path, small_disk: Path, tmp_path: Path
) -> None:
    # anomaly serve, 2 workers, the metrics directory on a disk filled to 0 bytes free, a
    # worker sent SIGTERM: its replacement refused to boot and gunicorn stopped the server.
    metrics = small_disk / "metrics"
    env = {"PROMETHEUS_MULTIPROC_DIR": str(metrics)}
    with serving({"tiny": bundle_dir}, tmp_path, env=env) as server:
        assert server.call("/v1/models/tiny/score", {"records": normal_records(2)})[0] == 200
        fill(small_disk)
        before = server.workers()
        os.kill(min(before), signal.SIGTERM)
        server.wait_until(
            lambda: (
                len(now := server.workers()) == 2
                and min(before) not in now
                and all((metrics / f".booted-{pid}").exists() for pid in now)
            ),
            "a new worker, booted",
        )
        for _ in range(6):  # either worker
            status, body = server.call("/v1/models/tiny/score", {"records": normal_records(2)})
            assert status == 200, body
        status, text = server.call("/metrics")
        assert status == 200 and "anomaly_records_scored_total" in text
        assert "took a set of metric files the server keeps" in server.log_text()


def test_a_prometheus_client_whose_internals_changed_keeps_its_own_files_and_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The backed files lean on prometheus_client's private names; a release that renames
    them must leave the service counting as before (sparse files), not failing to start."""
    import prometheus_client.values

    monkeypatch.setattr(metric_files, "_file_class", None)
    monkeypatch.setattr(prometheus_client.values, "MmapedDict", MmapedDict)

    def renamed(self: BackedMmapedDict, key: str) -> None:
        raise AttributeError("'MmapedDict' object has no attribute '_used'")

    monkeypatch.setattr(BackedMmapedDict, "_init_value", renamed)
    metric_files.back_metric_files()
    assert prometheus_client.values.MmapedDict is MmapedDict
    (warning,) = [r for r in caplog.records if "prometheus_client" in r.getMessage()]
    assert "SIGBUS" in warning.getMessage() and "pyproject.toml" in warning.getMessage()
    metric_files.open_metric_files(tmp_path)  # the library's own files, made as before
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        f"{prefix}_{os.getpid()}.db" for prefix in WORKER_FILES
    )


def test_the_installed_prometheus_client_gets_files_taken_on_disk(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The check above passes for the version pyproject.toml installs (else its warning would
    be said at every start, and the full-disk fix silently off)."""
    import prometheus_client.values

    monkeypatch.setattr(metric_files, "_file_class", None)
    monkeypatch.setattr(prometheus_client.values, "MmapedDict", MmapedDict)
    metric_files.back_metric_files()
    assert prometheus_client.values.MmapedDict is BackedMmapedDict
