"""The ray executor on a real local Ray cluster: the micro study gives the local executor's
matrix and records, also when a training worker and an evaluation worker are killed mid-job,
and `traitmap run --executor ray` works from the command line."""

import dataclasses
import os
import signal
import sqlite3

import pytest
from helpers import assert_same_records, make_config, run_study, traitmap

from traitmap import run, tasks
from traitmap.config import where_to_run
from traitmap.errors import TraitmapError
from traitmap.jobs import EvalJob
from traitmap.plan import DB_FILE
from traitmap.results import Study
from traitmap.testing import MICRO_STUDY

ray = pytest.importorskip("ray")

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_torch_thread")]
CELLS = 3 * 3  # (base + 2 adapters) x 3 targets


def run_on(executor, config, out, data_dir, address=None, **options):
    config = dataclasses.replace(config, run=where_to_run(config.run, executor, address))
    return run_study(config, out, data_dir, executor_options=options)


@pytest.fixture
def reference(micro_study):
    """The micro study through the local executor: the session's, trained once."""
    return micro_study[1]


@pytest.fixture
def cluster():
    """A fresh local cluster of 2 CPUs, so that its workers import torch when they start a job."""
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def assert_same_study(out, reference):
    assert (out / "matrix.csv").read_text() == (reference / "matrix.csv").read_text()
    assert_same_records(Study.load(out).records(), Study.load(reference).records())


def test_ray_gives_the_local_matrix_and_records(cluster, reference, tmp_path, tiny_model_dir, data_dir):
    config, out = make_config(tmp_path, tiny_model_dir), tmp_path / "out"
    run_on("ray", config, out, data_dir)
    assert_same_study(out, reference)
    assert not list(out.rglob("*.tmp"))

    # A job's own error (a TraitmapError, e.g. a broken adapter) reaches the driver as itself.
    from traitmap.executors.ray import _get

    def fail(message):  # defined here so that Ray ships it by value: workers cannot import this test file
        raise TraitmapError(message)

    with pytest.raises(TraitmapError, match="^broken$"):
        _get(ray.remote(fail).remote("broken"))


def test_a_dead_workers_chunk_is_resent_without_its_finished_cells():
    from traitmap.executors.ray import RayExecutor, _Chunk

    job = EvalJob(task=tasks.get("imdb"), examples=[], cells=[("base", -1, None), ("a", 0, None), ("b", 0, None)],
                  base_model="m", backend="hf", batch_size=4)
    executor = RayExecutor.__new__(RayExecutor)  # no cluster: only the bookkeeping
    executor.max_retries, executor.retried = 1, 0
    resent = executor._resend(_Chunk(0, job), done={("a", 0, "imdb")})
    assert [m for m, _, _ in resent.job.cells] == ["base", "b"] and resent.failures == 1 and executor.retried == 1
    with pytest.raises(TraitmapError, match="killed 2 Ray workers"):
        executor._resend(resent, done=set())
    finished = executor._resend(resent, done={("base", -1, "imdb"), ("b", 0, "imdb")})
    assert finished.job.cells == [] and executor.retried == 1  # nothing left: nothing to send again


def test_killed_workers_change_nothing(cluster, reference, tmp_path, tiny_model_dir, data_dir, monkeypatch):
    """SIGKILL the first training worker and the first evaluation worker as soon as they start
    a job: both jobs run again elsewhere, and every adapter and cell is written exactly once."""
    from traitmap.executors import ray as ray_executor
    from traitmap.jobs import TrainJob
    from traitmap.store import Store

    killed, starts, executors = {}, [], []

    def kill_first(job, pid):
        kind = "train" if isinstance(job, TrainJob) else "eval"
        starts.append((kind, job.name if kind == "train" else job.task.name, pid))
        if kind not in killed:
            killed[kind] = pid
            os.kill(pid, signal.SIGKILL)

    class Recorded(ray_executor.RayExecutor):
        def __init__(self, **options):
            super().__init__(**options)
            executors.append(self)

    writes = []
    add_cell, save_adapter = Store.add_cell, run.save_adapter
    monkeypatch.setattr(Store, "add_cell", lambda self, *a, **k: (writes.append(("cell", *a[:3])), add_cell(self, *a, **k))[1])
    monkeypatch.setattr(run, "save_adapter", lambda trained, path: (writes.append(("adapter", path)), save_adapter(trained, path))[1])
    monkeypatch.setattr(ray_executor, "RayExecutor", Recorded)
    run_on("ray", make_config(tmp_path, tiny_model_dir), tmp_path / "out", data_dir, on_start=kill_first)

    assert set(killed) == {"train", "eval"}
    trained_twice = [name for kind, name, pid in starts if kind == "train" and pid == killed["train"]]
    assert [s for s in starts if s[0] == "train" and s[1] == trained_twice[0] and s[2] != killed["train"]]  # retried
    assert executors[0].retried >= 1  # the dead evaluation worker's cells were sent again
    assert len(writes) == len(set(writes)) == 2 + CELLS  # each adapter and cell written once
    assert_same_study(tmp_path / "out", reference)
    with sqlite3.connect(tmp_path / "out" / DB_FILE) as db:
        assert db.execute("SELECT COUNT(*) FROM cells").fetchone()[0] == CELLS


def test_cli_run_with_executor_ray(reference, tmp_path, tiny_model_dir, data_dir, monkeypatch, capsys):
    """No cluster running: the executor starts a local one for the run and stops it at the end."""
    path = tmp_path / "micro.toml"
    path.write_text(MICRO_STUDY.format(model=tiny_model_dir))
    out = tmp_path / "out"
    code, stdout, _ = traitmap(monkeypatch, capsys, "run", path, "--out", out, "--data-dir", data_dir,
                               "--executor", "ray", "--no-analyze")
    assert code == 0
    assert "matrix:" in stdout
    assert not ray.is_initialized()
    assert_same_study(out, reference)


def test_an_unreachable_address_fails_at_once_and_writes_nothing(tmp_path, tiny_model_dir, data_dir):
    import time

    start = time.monotonic()
    with pytest.raises(TraitmapError, match="cannot reach the Ray cluster at 127.0.0.1:1"):
        run_on("ray", make_config(tmp_path, tiny_model_dir), tmp_path / "out", data_dir, address="127.0.0.1:1",
               connect_timeout=5)
    assert time.monotonic() - start < 60 and not (tmp_path / "out").exists() and not ray.is_initialized()


def test_a_running_clusters_address_is_reached(cluster):
    from traitmap.executors.ray import reach

    reach(ray.get_runtime_context().gcs_address, 60)  # joins it from a child process, which then leaves
    assert ray.cluster_resources()["CPU"] == 2
