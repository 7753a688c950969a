"""Workers converge on the last good bundle (issue #18): after a failed reload, a restart, two
reloads at once, or a bundle fixed on disk; and a read error is answered, never a 500.

The registry-level tests run two ``ModelRegistry`` objects over one ``sync_dir``, as two worker
processes do; the server tests run the real ``anomaly serve`` with 2 workers.
"""

from __future__ import annotations

import os
import shutil
import signal
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from detector.bundles.bundle import Bundle, load_bundle, set_target_fpr
from service.config import ServiceConfig
from service.model_sync import SyncDir
from service.registry import ModelRegistry
from tests import processes
from tests.conftest import normal_records
from tests.processes import Server
from tests.service.conftest import ADMIN

RECORDS = normal_records(3)


def metric(exposition: str, sink: str, outcome: str) -> float:
    """``anomaly_alerts_total{sink, outcome}`` from a /metrics text (0 when absent)."""
    for line in exposition.splitlines():
        if line.startswith("anomaly_alerts_total{"):
            labels = dict(
                part.split("=", 1)
                for part in line[line.index("{") + 1 : line.index("}")].split(",")
            )
            if labels == {"sink": f'"{sink}"', "outcome": f'"{outcome}"'}:
                return float(line.split()[-1])
    return 0.0


def serving(
    models: dict[str, Path], workdir: Path, *, env: dict[str, str] | None = None, workers: int = 2
) -> Any:
    """The real server with an admin token, ready once it answers /healthz (a model may be
    broken on purpose, so not /readyz)."""
    env = {"ANOMALY_ADMIN_TOKEN": ADMIN, **(env or {})}
    return processes.serving(models, workdir, env=env, workers=workers, ready_path="/healthz")


def _healthy(server: Server) -> bool:
    try:
        return server.call("/healthz", timeout=2)[0] == 200
    except OSError:
        return False


def generations(server: Server, name: str, n: int) -> list[tuple[int, Any, Any]]:
    """(status, generation, target_fpr) of ``n`` requests for the model's description."""
    answers = []
    for _ in range(n):
        status, body = server.call(f"/v1/models/{name}")
        detail = body if isinstance(body, dict) else {}
        answers.append((status, detail.get("generation"), detail.get("target_fpr")))
    return answers


def break_in_place(bundle: Path) -> None:
    """What a half-finished copy over a bundle leaves: a manifest that is not JSON."""
    (bundle / "manifest.json").write_text("{ truncated")


def write_good(bundle: Path, good: Path) -> None:
    for item in good.iterdir():
        shutil.copyfile(item, bundle / item.name)


@pytest.fixture(scope="module")
def bundles(bundle_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("convergence")
    live, spare = root / "live", root / "spare"
    shutil.copytree(bundle_dir, live)
    spare.mkdir()  # starts with no bundle at all
    return {"tiny": live, "spare": spare}


@pytest.fixture(scope="module")
def server(bundles: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with serving(bundles, tmp_path_factory.mktemp("server")) as running:
        yield running


@pytest.mark.slow
def test_workers_restarted_after_a_failed_reload_serve_the_last_good_bundle(
    server: Server, bundles: dict[str, Path], bundle_dir: Path
) -> None:
    live = bundles["tiny"]
    break_in_place(live)
    try:
        status, body = server.call("/v1/models/tiny/reload", {}, ADMIN)
        assert status == 422, body
        before = server.workers()
        for pid in before:
            os.kill(pid, signal.SIGKILL)  # gunicorn starts a new worker for each
        server.wait_until(
            lambda: len(server.workers() - before) == 2 and _healthy(server),
            "2 restarted workers",
        )
        answers = generations(server, "tiny", 20)
        assert {status for status, _, _ in answers} == {200}, server.log_text()
        assert len(set(answers)) == 1  # one bundle, in every worker
    finally:
        write_good(live, bundle_dir)
    # The bundle fixed on disk: a reload takes it, and every worker follows.
    set_target_fpr(live, 0.01)
    status, body = server.call("/v1/models/tiny/reload", {}, ADMIN)
    assert status == 200, body
    expected = {(200, body["generation"], 0.01)}
    server.wait_until(
        lambda: set(generations(server, "tiny", 10)) == expected,
        "every worker on the reloaded bundle",
    )


@pytest.mark.slow
def test_a_model_that_could_not_load_recovers_once_its_bundle_is_fixed(
    server: Server, bundles: dict[str, Path], bundle_dir: Path
) -> None:
    status, body = server.call("/v1/models/spare")
    assert status == 503 and body["error"] == "model_not_loaded", body
    write_good(bundles["spare"], bundle_dir)
    server.wait_until(
        lambda: {status for status, _, _ in generations(server, "spare", 10)} == {200},
        "10 answers in a row with the fixed bundle",
        deadline_s=30,
    )
    # Each failed try was logged; the recovery was not, so the log read as if still broken.
    server.wait_until(
        lambda: "model spare: loaded" in server.log_path.read_text(errors="replace"),
        "the recovery in the log",
        deadline_s=30,
    )


@pytest.mark.slow
def test_two_reloads_at_once_end_with_every_worker_on_one_generation(
    server: Server, bundle_dir: Path, tmp_path: Path
) -> None:
    paths = [tmp_path / "a", tmp_path / "b"]
    for path, target_fpr in zip(paths, (0.02, 0.03), strict=True):
        shutil.copytree(bundle_dir, path)
        set_target_fpr(path, target_fpr)  # tells the two bundles apart
    answers: list[tuple[int, Any]] = []
    threads = [
        threading.Thread(
            target=lambda p=path: answers.append(
                server.call("/v1/models/tiny/reload", {"path": str(p)}, ADMIN)
            )
        )
        for path in paths
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert [status for status, _ in answers] == [200, 200], answers
    assert answers[0][1]["generation"] != answers[1][1]["generation"]
    last = max(answers, key=lambda answer: answer[1]["generation"])[1]
    expected = {(200, last["generation"], last["target_fpr"])}
    server.wait_until(
        lambda: set(generations(server, "tiny", 10)) == expected,
        "every worker on the later reload",
    )


# --------------------------------------------------------------------------- two registries


def two_workers(
    bundle_dir: Path, sync_dir: Path, loader: Callable[[str], Bundle] = load_bundle, **kw: Any
) -> tuple[ModelRegistry, ModelRegistry]:
    workers = (
        ModelRegistry({"tiny": str(bundle_dir)}, sync_dir=sync_dir, loader=loader, **kw),
        ModelRegistry({"tiny": str(bundle_dir)}, sync_dir=sync_dir, loader=loader, **kw),
    )
    for worker in workers:
        assert worker.load_all() == {}
    return workers


def test_two_reloads_at_once_get_different_generations_and_both_workers_follow_the_later(
    bundle_dir: Path, tmp_path: Path
) -> None:
    paths = [tmp_path / "a", tmp_path / "b"]
    for path in paths:
        shutil.copytree(bundle_dir, path)
    both_installing = threading.Barrier(2, timeout=60)

    def on_install(new: Any, previous: Any) -> None:
        if threading.current_thread().name.startswith("reload-"):
            both_installing.wait()  # the two reloads swap their bundles in at the same moment

    workers = two_workers(bundle_dir, tmp_path / "sync", on_install=on_install)
    threads = [
        threading.Thread(target=worker.reload, args=("tiny", str(path)), name=f"reload-{i}")
        for i, (worker, path) in enumerate(zip(workers, paths, strict=True))
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert workers[0].get("tiny").generation != workers[1].get("tiny").generation
    for worker in workers:
        worker.refresh()  # what the next request does
    served = [(w.get("tiny").generation, w.get("tiny").path) for w in workers]
    assert served[0] == served[1], served
    assert served[0][1] in {str(path) for path in paths}


def test_only_the_bundles_own_files_are_copied(bundle_dir: Path, tmp_path: Path) -> None:
    # A 300 MB training file kept beside a bundle was read into the worker (200 to 509 MB)
    # and copied into the sync dir at every load (found by a helper).
    beside = tmp_path / "beside"
    shutil.copytree(bundle_dir, beside)
    (beside / "train.csv").write_text("cpu\n1\n")
    (beside / "report.html").write_text("<html></html>")
    first, _ = two_workers(beside, tmp_path / "sync")
    copy = Path(first.get("tiny").bundle.path)
    assert sorted(p.name for p in copy.iterdir()) == sorted(p.name for p in bundle_dir.iterdir())


def test_a_worker_that_failed_to_follow_tries_again(bundle_dir: Path, tmp_path: Path) -> None:
    fail_next = threading.Event()

    def loader(path: str) -> Bundle:
        if fail_next.is_set():
            fail_next.clear()
            raise OSError(5, "Input/output error", path)  # a read that failed once
        return load_bundle(path)

    first, second = two_workers(bundle_dir, tmp_path / "sync", loader)
    second.retry_seconds = 0  # try again at the next request, not 30 s later
    stricter = tmp_path / "stricter"
    shutil.copytree(bundle_dir, stricter)
    set_target_fpr(stricter, 0.01)
    reloaded = first.reload("tiny", str(stricter))
    fail_next.set()
    second.refresh()  # must not raise: a request is answered with the model in force
    assert second.get("tiny").generation < reloaded.generation
    second.refresh()  # a later request tries again
    assert second.get("tiny").generation == reloaded.generation


def test_a_worker_follows_the_good_bundle_even_if_its_directory_broke_since(
    bundle_dir: Path, tmp_path: Path
) -> None:
    first, second = two_workers(bundle_dir, tmp_path / "sync")
    stricter = tmp_path / "stricter"
    shutil.copytree(bundle_dir, stricter)
    set_target_fpr(stricter, 0.01)
    reloaded = first.reload("tiny", str(stricter))
    break_in_place(stricter)  # changed on disk after the reload succeeded
    second.refresh()
    assert second.get("tiny").generation == reloaded.generation
    assert second.get("tiny").bundle.calibrator.target_fpr == pytest.approx(0.01)


# --------------------------------------------------------------------------- errors answered


@pytest.fixture
def app_with_sync_dir(bundle_dir: Path, tmp_path: Path) -> Iterator[Any]:
    from service.app import create_app

    config = ServiceConfig(
        models={"tiny": str(bundle_dir)},
        admin_token=ADMIN,
        alert_log=False,
        model_sync_dir=str(tmp_path / "sync"),
    )
    app = create_app(config, metrics_registry=CollectorRegistry(), sinks=[])
    yield app
    app.extensions["anomaly"].dispatcher.stop()


AUTH = {"Authorization": f"Bearer {ADMIN}"}


@pytest.mark.skipif(not Path("/proc/self/mem").exists(), reason="needs Linux /proc")
def test_a_read_error_while_reloading_is_answered_naming_the_file(
    app_with_sync_dir: Any, bundle_dir: Path, tmp_path: Path
) -> None:
    unreadable = tmp_path / "unreadable"
    shutil.copytree(bundle_dir, unreadable)
    (unreadable / "scorer.tflite").unlink()
    (unreadable / "scorer.tflite").symlink_to("/proc/self/mem")  # reading it fails: EIO
    client = app_with_sync_dir.test_client()
    before = client.get("/v1/models/tiny").json["generation"]
    response = client.post("/v1/models/tiny/reload", json={"path": str(unreadable)}, headers=AUTH)
    assert response.status_code == 422, response.get_data(as_text=True)
    assert str(unreadable / "scorer.tflite") in response.json["detail"]
    assert client.get("/v1/models/tiny").json["generation"] == before


def test_a_path_that_is_no_bundle_is_named_as_anomaly_info_names_it(
    app_with_sync_dir: Any, bundle_dir: Path, tmp_path: Path
) -> None:
    # Said of the empty copy in the sync dir, a bundle's manifest file and a fleet's folder
    # of bundles were each told "train one with `anomaly train DATA --out` <that path>".
    fleet = tmp_path / "fleet"
    shutil.copytree(bundle_dir, fleet / "payments")
    client = app_with_sync_dir.test_client()
    for path, said in [
        (bundle_dir / "manifest.json", "is a file, not a model bundle"),
        (fleet, f"its subfolders payments are bundles: name one of them, such as {fleet}/payments"),
    ]:
        response = client.post("/v1/models/tiny/reload", json={"path": str(path)}, headers=AUTH)
        assert response.status_code == 422 and said in response.json["detail"], response.json
        assert f"--out {path}" not in response.json["detail"]
    registry = ModelRegistry({"fleet": str(fleet)}, sync_dir=tmp_path / "sync2")
    assert "its subfolders payments are bundles" in registry.load_all()["fleet"]


def test_a_sync_dir_that_cannot_be_written_is_answered_and_nothing_changes(
    app_with_sync_dir: Any, bundle_dir: Path, tmp_path: Path
) -> None:
    client = app_with_sync_dir.test_client()
    before = client.get("/v1/models/tiny").json
    marker = tmp_path / "sync" / "tiny.json"
    marker.unlink(missing_ok=True)
    marker.mkdir(parents=True)  # the marker cannot be replaced now
    response = client.post("/v1/models/tiny/reload", json={}, headers=AUTH)
    assert 400 <= response.status_code < 500 or response.status_code == 503
    assert "model_sync_dir" in response.json["detail"], response.json
    assert client.get("/v1/models/tiny").json["generation"] == before["generation"]
    assert client.post("/v1/models/tiny/score", json={"records": RECORDS}).status_code == 200


def test_a_reload_onto_a_full_disk_says_so_and_leaves_no_copy(
    app_with_sync_dir: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Told "cannot use model_sync_dir ... ([Errno 28] No space left on device); make it a
    # writable directory", of a directory that was writable and full.
    import errno

    write_bytes = Path.write_bytes
    sync = tmp_path / "sync"

    def full(self: Path, data: Any) -> int:
        if sync in self.parents:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return write_bytes(self, data)

    client = app_with_sync_dir.test_client()
    before = client.get("/v1/models/tiny").json
    copies = sorted(p.name for p in sync.rglob("*"))
    monkeypatch.setattr(Path, "write_bytes", full)
    response = client.post("/v1/models/tiny/reload", json={}, headers=AUTH)
    monkeypatch.undo()
    assert response.status_code == 422, response.json
    detail = response.json["detail"]
    assert f"model_sync_dir {sync} is on a full disk (No space left on device)" in detail, detail
    assert "free space there" in detail and "writable" not in detail
    assert sorted(p.name for p in sync.rglob("*")) == copies  # the half copy removed
    assert client.get("/v1/models/tiny").json["generation"] == before["generation"]
    assert client.post("/v1/models/tiny/score", json={"records": RECORDS}).status_code == 200


@pytest.mark.slow
def test_sighup_reloads_each_bundle_from_its_directory(
    server: Server, bundles: dict[str, Path], bundle_dir: Path
) -> None:
    # The new workers gunicorn starts on SIGHUP loaded the copies in force: a bundle written
    # again was not taken, and nothing said so.
    # The tests before served other directories through reload requests: SIGHUP reloads the
    # configured one, as a restart does.
    live = bundles["tiny"]
    write_good(live, bundle_dir)
    set_target_fpr(live, 0.03)
    os.kill(server.pid, signal.SIGHUP)
    server.wait_until(
        lambda: {(s, fpr) for s, _, fpr in generations(server, "tiny", 10)} == {(200, 0.03)},
        "every worker on the bundle written again",
    )
    # A bundle broken on disk: the reload fails and the last good one serves on.
    break_in_place(live)
    try:
        before = server.workers()
        os.kill(server.pid, signal.SIGHUP)
        server.wait_until(
            lambda: not server.workers() & before and len(server.workers()) == 2,
            "2 new workers",
        )
        server.wait_until(
            lambda: "reload on SIGHUP failed" in server.log_text(), "the failure logged"
        )
        answers = generations(server, "tiny", 10)
        assert {(s, fpr) for s, _, fpr in answers} == {(200, 0.03)}, server.log_text()
    finally:
        write_good(live, bundle_dir)


def test_a_sighup_reload_of_a_model_never_loaded_does_not_say_it_serves_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # A bundle broken since the start, and still at SIGHUP, was logged "reload on SIGHUP
    # failed; serving on: ...", where nothing of that name served (found probing a 20-model
    # server). The new worker that claims the reload says it is still not loaded.
    (tmp_path / "broken").mkdir()
    break_in_place(tmp_path / "broken")
    sync = tmp_path / "sync"
    sync.mkdir()
    SyncDir(sync).request_reload("other")  # as the master does on SIGHUP
    registry = ModelRegistry({"other": str(tmp_path / "broken")}, sync_dir=sync)
    with caplog.at_level("ERROR"):
        registry.load_all()
    assert "model other: reload on SIGHUP failed; still not loaded" in caplog.text
    assert "serving on" not in caplog.text
