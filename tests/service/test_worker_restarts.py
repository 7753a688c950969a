"""Workers that exit cleanly (a graceful reload, a worker told to stop, as gunicorn does on a
timeout or when it runs fewer workers) leave the server whole. Each exiting worker used to
remove the run's folder that every worker shares (metrics, model copies, series state): after
a SIGHUP the new workers failed to boot and the master shut down; after one worker stopped the
others answered nothing. And a server started again serves its configured bundles, whatever
an earlier run left in a ``model_sync_dir`` kept across runs."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from detector.bundles.bundle import set_target_fpr
from tests.conftest import TINY, normal_records
from tests.processes import Server, serving
from tests.service.conftest import ADMIN

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(bundle_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with serving({"tiny": bundle_dir}, tmp_path_factory.mktemp("restarts")) as running:
        yield running


def scored_total(server: Server) -> float:
    """``anomaly_records_scored_total`` for the model, summed over every worker's file."""
    status, text = server.call("/metrics")
    assert status == 200, text
    lines = [line for line in text.splitlines() if line.startswith("anomaly_records_scored_total")]
    return sum(float(line.split()[-1]) for line in lines)


def score_a_few(server: Server, n: int = 6) -> None:
    for _ in range(n):
        status, body = server.call("/v1/models/tiny/score", {"records": normal_records(2)})
        assert status == 200, (body, server.log_text())


def new_workers(server: Server, before: set[int], metrics: Path | None = None) -> None:
    """Wait for 2 workers other than ``before``, the server ready; with the server's metrics
    folder, each of them booted (the mark it leaves there): a signal to a worker forked but
    not yet past gunicorn's post_fork went to the master's copied handlers and was lost, and
    the worker lived on (a test killing the next round at once waited 60 s for its end)."""

    def booted() -> bool:
        return metrics is None or all(
            (metrics / f".booted-{pid}").exists() for pid in server.workers()
        )

    server.wait_until(
        lambda: (
            len(server.workers()) == 2
            and not (server.workers() & before)
            and _ready(server)
            and booted()
        ),
        "2 new workers, ready",
    )


def _ready(server: Server) -> bool:
    try:  # a worker booting may reset a connection: asked again, not a failure
        return server.call("/readyz", timeout=5)[0] == 200
    except OSError:
        return False


def test_a_server_stopped_as_a_worker_restarts_stops_at_once(
    bundle_dir: Path, tmp_path: Path
) -> None:
    """A worker forked but not yet booted held the master's signal handlers: the master's
    SIGTERM to it was lost, and the master waited out its graceful timeout (30 s) before it
    killed the worker (found by a flaky-test hunt; the run folder leaked when the test's own
    stop killed the master first)."""
    import subprocess

    with serving({"tiny": bundle_dir}, tmp_path) as started:
        before = started.workers()
        os.kill(min(before), signal.SIGKILL)
        started.wait_until(lambda: bool(started.workers() - before), "a new worker", 30)
        started.process.terminate()  # while the new worker boots
        try:
            # Well under the 30 s the master gives a worker that ignores the signal.
            started.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the server did not stop when told:\n{started.log_text()}")
        assert "was sent SIGKILL" not in started.log_text().split("Handling signal: term")[-1]


def test_a_worker_that_stops_leaves_the_others_and_its_replacement_serving(server: Server):
    score_a_few(server)
    counted = scored_total(server)
    before = server.workers()
    for pid in before:
        os.kill(pid, signal.SIGTERM)  # a graceful exit: gunicorn starts a new worker
    new_workers(server, before)
    score_a_few(server)
    # The stopped workers' counts are still there: the metrics folder outlived them.
    assert scored_total(server) == counted + 12


def test_exited_workers_leave_their_counts_but_not_their_files(
    bundle_dir: Path, tmp_path: Path
) -> None:
    """Each exited worker left 3 metric files (192 KB) for good, and every scrape read them
    all: /metrics took 0.65 ms more per worker that ever exited (a helper's soak)."""
    metrics = tmp_path / "metrics"
    env = {"PROMETHEUS_MULTIPROC_DIR": str(metrics)}
    with serving({"tiny": bundle_dir}, tmp_path, env=env) as started:
        score_a_few(started)
        counted = scored_total(started)
        new_workers(started, set(), metrics)  # both booted before the first round
        for _ in range(2):
            before = started.workers()
            os.kill(min(before), signal.SIGKILL)
            os.kill(max(before), signal.SIGTERM)
            new_workers(started, before, metrics)
        score_a_few(started)
        assert scored_total(started) == counted + 12  # no count lost or counted twice
        live = {str(pid) for pid in started.workers()}
        owners = {path.stem.rsplit("_", 1)[1] for path in metrics.glob("*.db")}
        assert owners <= live | {"archive"}, sorted(p.name for p in metrics.glob("*.db"))


def test_a_graceful_reload_keeps_the_server(server: Server) -> None:
    before = server.workers()
    os.kill(server.pid, signal.SIGHUP)  # gunicorn starts new workers, then stops the old
    new_workers(server, before)
    score_a_few(server)
    assert server.process.poll() is None, server.log_text()


def test_a_restart_serves_the_bundle_retrained_since_not_the_last_runs_copy(
    bundle_dir: Path, tmp_path: Path
) -> None:
    model = tmp_path / "model"
    shutil.copytree(bundle_dir, model)
    env = {"ANOMALY_MODEL_SYNC_DIR": str(tmp_path / "sync")}  # kept across runs
    with serving({"tiny": model}, tmp_path, env=env) as first:
        before = first.call("/v1/models/tiny")[1]["target_fpr"]
    set_target_fpr(model, 0.2)  # as a retrained bundle written to the same directory
    assert before != 0.2
    with serving({"tiny": model}, tmp_path, env=env) as second:
        for _ in range(6):  # each worker
            status, body = second.call("/v1/models/tiny")
            assert status == 200 and body["target_fpr"] == 0.2, body
        # A second server on the folder while this one runs: each served the other's models
        # after a reload or a restart (found by a helper). It is refused.
        other = subprocess.run(
            [str(Path(sys.executable).with_name("anomaly")), "serve", "--port", "0", "--model",
             f"tiny={model}"],
            env={**os.environ, **env}, capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        assert other.returncode == 2 and "is used by another `anomaly serve`" in other.stderr


def versions_served(server: Server) -> set[str]:
    """The versions ``anomaly_model_info`` says are served (value 1)."""
    text = server.call("/metrics")[1]
    return {
        line.split('version="')[1].split('"')[0]
        for line in text.splitlines()
        if line.startswith("anomaly_model_info{") and float(line.split()[-1]) == 1.0
    }


def test_a_killed_workers_model_version_leaves_the_metrics(
    bundle_dir: Path, train_frame, tmp_path: Path
) -> None:
    """A worker killed outright kept saying its version was served, for good (a gauge of mode
    'max' keeps a dead process's file): the dashboard showed two versions after a reload."""
    from detector.estimator import VAEDetector

    other = tmp_path / "other"
    VAEDetector(**{**TINY, "random_state": 7}).fit(train_frame).save(other)
    env = {"ANOMALY_ADMIN_TOKEN": ADMIN}
    with serving({"tiny": bundle_dir}, tmp_path, env=env) as server:
        first = server.call("/v1/models/tiny")[1]["version"]
        assert versions_served(server) == {first}
        before = server.workers()
        os.kill(min(before), signal.SIGKILL)
        server.wait_until(lambda: len(server.workers() - before) == 1, "a new worker")
        status, body = server.call("/v1/models/tiny/reload", {"path": str(other)}, ADMIN)
        assert status == 200 and body["version"] != first, body
        # Each request (the scrape's too) has its worker catch up with the reload; six in a
        # row could all reach one worker on a loaded machine, so the scrapes are what is
        # waited on: the dead worker's version must leave them once the live ones moved on.
        server.wait_until(
            lambda: versions_served(server) == {body["version"]},
            "every live worker on the new version, the dead one's gone",
        )


def test_the_versions_a_server_served_before_leave_the_metrics(
    bundle_dir: Path, tmp_path: Path
) -> None:
    """Each reload to a new version left the old one's series at 0 in the worker's file for
    the worker's life: a soak's 5 reloads (anomaly threshold, then reload) exported 6 series
    of anomaly_model_info, one more for each retraining a server ever took."""
    model = tmp_path / "model"
    shutil.copytree(bundle_dir, model)
    env = {"ANOMALY_ADMIN_TOKEN": ADMIN}
    with serving({"tiny": model}, tmp_path, env=env) as server:
        for fpr in (0.02, 0.03, 0.04, 0.05):
            set_target_fpr(model, fpr)  # a new version, as `anomaly threshold` writes
            status, body = server.call("/v1/models/tiny/reload", {}, ADMIN)
            assert status == 200 and body["target_fpr"] == fpr, body
        text = server.call("/metrics")[1]
        info = [line for line in text.splitlines() if line.startswith("anomaly_model_info{")]
        # At most one version a live worker (one may not have caught up with the last reload).
        assert 1 <= len(info) <= 2, info
        assert all(float(line.split()[-1]) == 1.0 for line in info), info


def test_a_second_server_on_the_metrics_folder_is_refused_naming_the_first(
    bundle_dir: Path, tmp_path: Path
) -> None:
    """A second server given the first's PROMETHEUS_MULTIPROC_DIR started: it deleted the
    first's live metric files and folded its own into the first's archives, so the first's
    /metrics lost its own counts and showed the second's (found by a helper, probing
    restarts). It is refused, naming the first, and the first counts on."""
    env = {"PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics")}
    with serving({"tiny": bundle_dir}, tmp_path, env=env) as first:
        score_a_few(first)
        counted = scored_total(first)
        other = subprocess.run(
            [str(Path(sys.executable).with_name("anomaly")), "serve", "--port", "0", "--model",
             f"tiny={bundle_dir}"],
            env={**os.environ, **env}, capture_output=True, text=True, timeout=90, check=False,
        )  # fmt: skip
        assert other.returncode == 2, other.stderr
        assert "PROMETHEUS_MULTIPROC_DIR" in other.stderr, other.stderr
        assert f"used by another `anomaly serve` running now (pid {first.pid})" in other.stderr
        score_a_few(first)
        assert scored_total(first) == counted + 12


def test_one_folder_for_both_held_settings_is_not_refused_as_another_servers(
    tmp_path: Path,
) -> None:
    """PROMETHEUS_MULTIPROC_DIR and model_sync_dir may name one folder: the server's second
    lock on it was refused as another server's, naming the server itself. Another process is
    still refused, naming this one."""
    from service import cli

    folder = tmp_path / "shared"
    folder.mkdir()
    (tmp_path / "link").symlink_to(folder)
    try:
        cli.hold_folder(str(folder), "PROMETHEUS_MULTIPROC_DIR", "unset it")
        cli.hold_folder(str(tmp_path / "link"), "model_sync_dir", "leave it unset")
        other = subprocess.run(
            [sys.executable, "-c",
             "import sys; from service import cli; "
             "cli.hold_folder(sys.argv[1], 'model_sync_dir', 'leave it unset')", str(folder)],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert f"used by another `anomaly serve` running now (pid {os.getpid()})" in other.stderr
    finally:
        while cli._HELD:
            os.close(cli._HELD.pop())
        cli._HELD_PATHS.clear()


def test_a_graceful_reload_stops_the_old_workers_once_the_new_have_loaded(
    bundle_dir: Path, tmp_path: Path
) -> None:
    # gunicorn stopped the old workers as soon as it had forked the new ones, which then
    # loaded every model before they answered: with 20 models and 6 client threads on 2 cores
    # no request was answered for 6.8 s after a SIGHUP (0.16 s with one model). Now the old
    # ones serve until each new worker has loaded its models (the mark it leaves then).
    metrics = tmp_path / "metrics"
    metrics.mkdir()
    models = {f"m{i}": bundle_dir for i in range(8)}  # a load long enough to see a gap
    env = {"PROMETHEUS_MULTIPROC_DIR": str(metrics)}
    with serving(models, tmp_path, env=env) as server:
        new_workers(server, set(), metrics)
        old = server.workers()
        os.kill(server.pid, signal.SIGHUP)
        gaps = 0
        for _ in range(20_000):  # polled until the old are gone and a new one booted
            now = server.workers()
            old_alive = bool(now & old)
            new_booted = any((metrics / f".booted-{pid}").exists() for pid in now - old)
            if not old_alive and not new_booted:
                gaps += 1
            if not old_alive and new_booted:
                break
            time.sleep(0.005)
        assert gaps == 0, f"polled {gaps} times with no worker that had loaded its models"
        new_workers(server, old, metrics)
        status, body = server.call("/v1/models/m7/score", {"records": normal_records(2)})
        assert status == 200, (body, server.log_text())
