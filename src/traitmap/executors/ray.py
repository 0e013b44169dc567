"""Run jobs on a Ray cluster: training as tasks, evaluation on actors that keep the model loaded.

Everything travels through Ray's object store, so the nodes need no shared file system:
a training task returns the adapter's files as bytes, and the driver ships each adapter
to the evaluation actors once, as bytes, which they write to a local temporary folder.
The driver alone writes the output directory (adapters and the SQLite store), exactly as
with the local executor, so resuming a study works the same way.

Resources: each training task and each evaluation actor asks for one GPU when the
cluster has GPUs, else `num_cpus` CPUs; Ray queues what does not fit. Evaluation runs on
`workers` actors (default: as many as the cluster's GPUs, or CPUs / num_cpus); a target's
cells are split into chunks so that the actors share the work, and a chunk yields each
cell as soon as it is whole (a streaming generator).

Failures: a training task whose worker dies is retried by Ray (`max_retries`) and returns
one result. An evaluation actor that dies is replaced; the cells of its chunk that had not
come back go to the next free actor, the ones that had are never sent again. A chunk that
has killed `max_retries` + 1 workers is an error. An error raised by the job itself (a
TraitmapError such as a broken adapter) is not retried: it stops the run as it would locally.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import math
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import ray
from ray.exceptions import RayActorError, RayTaskError

from traitmap.backends.base import AdapterRef
from traitmap.errors import TraitmapError
from traitmap.files import write_folder
from traitmap.jobs import CellResult, EvalJob, TrainedAdapter, TrainJob

POLL_SECONDS = 0.2  # how often the driver collects progress reports while it waits


@ray.remote(num_cpus=0)
class _Inbox:
    """Where workers drop progress reports (fire and forget); the driver takes them in batches."""

    def __init__(self):
        self.items: list[tuple] = []

    def put(self, item: tuple) -> None:
        self.items.append(item)

    def take(self) -> list[tuple]:
        items, self.items = self.items, []
        return items


def _train(job: TrainJob, inbox, key: int) -> TrainedAdapter:
    """One training job on a worker: the model is resolved (and cached) on that node."""
    inbox.put.remote(("start", key, os.getpid()))
    from traitmap import models
    from traitmap.jobs import run_train_job

    def report(step: int, steps: int, loss: float) -> None:
        inbox.put.remote(("train", key, step, steps, loss))

    return run_train_job(job, models.resolve(job.base_model), report)


class _Evaluator:
    """An evaluation worker: one backend (base model) kept loaded across chunks and targets,
    and every adapter it was sent written once into its own temporary folder."""

    def __init__(self):
        self.folder = Path(tempfile.mkdtemp(prefix="traitmap-adapters-"))
        self.backends: dict[tuple, object] = {}

    def pid(self) -> int:
        return os.getpid()

    def run(self, job: EvalJob, adapters: dict, inbox, key: int) -> Iterator[CellResult]:
        inbox.put.remote(("start", key, os.getpid()))
        from traitmap.jobs import backend_for, run_eval_job

        job = dataclasses.replace(job, cells=[(m, s, self._local(ref, adapters)) for m, s, ref in job.cells])
        yield from run_eval_job(job, backend_for(job, self.backends), lambda n: inbox.put.remote(("eval", key, n)))

    def _local(self, ref: AdapterRef | None, adapters: dict) -> AdapterRef | None:
        """The adapter's folder on this worker, written from the bytes the driver sent."""
        if ref is None:
            return None
        digest, files = adapters[(ref.name, ref.seed)]
        path = self.folder / digest
        if not path.is_dir():
            write_folder(path, ray.get(files))
        return AdapterRef(ref.name, ref.seed, path)

    def close(self) -> None:
        self.backends.clear()
        shutil.rmtree(self.folder, ignore_errors=True)


_train_task = ray.remote(_train)
_EvaluatorActor = ray.remote(_Evaluator)


@dataclass
class _Chunk:
    """Some cells of one target's job, sent to one actor at a time."""

    job_index: int
    job: EvalJob
    failures: int = 0


@dataclass
class _Worker:
    actor: object
    ready: object | None  # the pid call while the actor starts; None once it answered
    chunk: _Chunk | None = None
    stream: object | None = None  # the chunk's ObjectRefGenerator while it runs
    pid: int | None = None


class RayExecutor:
    """Jobs on a Ray cluster. `address`: the cluster to join (as for `ray start --address`,
    e.g. "10.0.0.5:6379" or "auto"); none: $RAY_ADDRESS, else a local cluster started for
    this run and stopped at close(). `workers`: evaluation actors (default: fill the cluster).
    `num_cpus`: CPUs per job on a CPU cluster. `num_gpus`: GPUs per job (default: 1 where
    the cluster has GPUs, else 0). `max_retries`: times a job is retried after its worker dies.
    `on_start(job, pid)` is called on the driver when a worker process starts a job.
    `connect_timeout`: seconds to reach a cluster's address before giving up (Ray itself
    would retry for minutes). If this process is already connected to Ray, that cluster is
    used and left running."""

    def __init__(self, address: str | None = None, *, workers: int | None = None, num_cpus: float = 1,
                 num_gpus: float | None = None, max_retries: int = 3,
                 on_start: Callable[[object, int], None] | None = None, connect_timeout: float = 30.0):
        self.started = False
        if not ray.is_initialized():
            address = address or os.environ.get("RAY_ADDRESS") or "local"
            reach(address, connect_timeout)
            ray.init(address=address, include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
            self.started = True
        if workers is not None and workers < 1:
            raise TraitmapError("the number of Ray workers must be at least 1", field="workers")
        resources = ray.cluster_resources()
        self.num_gpus = (1 if resources.get("GPU", 0) >= 1 else 0) if num_gpus is None else num_gpus
        self.num_cpus = 1 if self.num_gpus else num_cpus
        if workers is None:
            workers = int(resources.get("GPU", 0) // self.num_gpus) if self.num_gpus else int(resources.get("CPU", 1) // self.num_cpus)
        self.workers = max(1, workers)
        self.max_retries = max_retries
        self.on_start = on_start
        self.inbox = _Inbox.remote()
        self.pool: list[_Worker] = []
        self.shipped: dict[tuple, tuple[str, object]] = {}  # (name, seed, path) -> (digest, ref to the files)
        self.retried = 0  # evaluation chunks sent again after their worker died
        self.start_failures = 0  # evaluation actors that died before they could take work
        self.keys = 0

    def _key(self) -> int:
        """A fresh number naming one job or chunk in the workers' progress reports."""
        self.keys += 1
        return self.keys

    # training ------------------------------------------------------------------------------
    def train(self, jobs: Sequence[TrainJob],
              progress: Callable[[TrainJob, int, int, float], None] | None = None) -> Iterator[tuple[TrainJob, TrainedAdapter]]:
        task = _train_task.options(num_cpus=self.num_cpus, num_gpus=self.num_gpus, max_retries=self.max_retries,
                                   retry_exceptions=False)
        keys = {self._key(): job for job in jobs}  # what each report's key refers to
        pending = {task.remote(job, self.inbox, key): key for key, job in keys.items()}

        def report(item: tuple) -> None:
            if item[0] == "train" and progress and item[1] in keys:
                progress(keys[item[1]], *item[2:])

        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=POLL_SECONDS)
            self._drain(keys, report)
            for ref in ready:
                key = pending.pop(ref)
                yield keys[key], _get(ref)
        self._drain(keys, report)

    # evaluation ----------------------------------------------------------------------------
    def evaluate(self, jobs: Sequence[EvalJob], progress: Callable[[EvalJob, int], None] | None = None) -> Iterator[CellResult]:
        queue = deque(self._chunks(jobs))
        if not queue:
            return
        adapters = self._ship(jobs)
        answered = [0] * len(jobs)
        chunks: dict[int, _Chunk] = {}  # what each start report's key refers to
        done: set[tuple[str, int, str]] = set()
        while len(self.pool) < min(self.workers, len(queue)):
            self.pool.append(self._new_worker())

        def report(item: tuple) -> None:
            if item[0] == "eval" and progress and item[1] in chunks:
                i = chunks[item[1]].job_index
                n = min(item[2], jobs[i].request_count - answered[i])  # a resent chunk answers some requests twice
                answered[i] += n
                if n:
                    progress(jobs[i], n)

        while queue or any(w.chunk for w in self.pool):
            for w in self.pool:  # every idle, started worker takes the next chunk
                if w.ready is None and w.chunk is None and queue:
                    w.chunk, key = queue.popleft(), self._key()
                    chunks[key] = w.chunk
                    w.stream = w.actor.run.remote(w.chunk.job, {k: adapters[k] for k in _adapter_keys(w.chunk.job)},
                                                  self.inbox, key)
            waiting = {(w.ready if w.ready is not None else w.stream): w for w in self.pool
                       if w.ready is not None or w.stream is not None}
            ready, _ = ray.wait(list(waiting), num_returns=1, timeout=POLL_SECONDS)
            self._drain(chunks, report)
            for ref in ready:
                w = waiting[ref]
                if w.ready is not None:
                    try:
                        w.pid, w.ready = ray.get(w.ready), None
                    except RayActorError as e:  # died while starting: start another, a few times
                        self.start_failures += 1
                        if self.start_failures > self.max_retries:
                            raise TraitmapError(f"Ray evaluation workers fail to start (is traitmap installed on every "
                                                f"node?): {e}") from None
                        self._replace(w)
                    continue
                try:
                    result = _get(next(w.stream))
                except StopIteration:
                    left = _left(w.chunk, done)
                    if left:  # cannot happen with run_eval_job, which yields every cell
                        raise RuntimeError(f"an evaluation worker finished without {len(left)} cells") from None
                    w.chunk = w.stream = None
                    continue
                except RayActorError:
                    left = self._resend(w.chunk, done)
                    if left.job.cells:
                        queue.appendleft(left)
                    self._replace(w)
                    continue
                key = (result.model, result.seed, result.task)
                if key not in done:
                    done.add(key)
                    yield result
        self._drain(chunks, report)

    def _chunks(self, jobs: Sequence[EvalJob]) -> list[_Chunk]:
        """Each target's cells in `workers` parts at most, so that the actors share every target."""
        chunks = []
        for i, job in enumerate(jobs):
            size = max(1, math.ceil(len(job.cells) / self.workers))
            chunks += [_Chunk(i, dataclasses.replace(job, cells=job.cells[k:k + size]))
                       for k in range(0, len(job.cells), size)]
        return chunks

    def _ship(self, jobs: Sequence[EvalJob]) -> dict[tuple[str, int], tuple[str, object]]:
        """Every adapter the jobs need, read from the driver's folders and put in the object store once."""
        for job in jobs:
            for _, _, ref in job.cells:
                if ref is None or (ref.name, ref.seed, str(ref.path)) in self.shipped:
                    continue
                folder = Path(ref.path)
                if not folder.is_dir():
                    raise TraitmapError(f"adapter '{ref.name}' (seed {ref.seed}) has no folder", file=folder)
                files = {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}
                digest = hashlib.sha256()
                for name, content in files.items():
                    digest.update(name.encode() + b"\0" + hashlib.sha256(content).digest())
                self.shipped[(ref.name, ref.seed, str(ref.path))] = (digest.hexdigest()[:16], ray.put(files))
        return {(ref.name, ref.seed): self.shipped[(ref.name, ref.seed, str(ref.path))]
                for job in jobs for _, _, ref in job.cells if ref is not None}

    def _new_worker(self) -> _Worker:
        actor = _EvaluatorActor.options(num_cpus=self.num_cpus, num_gpus=self.num_gpus, max_restarts=0,
                                               max_task_retries=0).remote()
        return _Worker(actor, actor.pid.remote())

    def _replace(self, w: _Worker) -> None:
        ray.kill(w.actor, no_restart=True)
        fresh = self._new_worker()
        w.actor, w.ready, w.chunk, w.stream, w.pid = fresh.actor, fresh.ready, None, None, None

    def _resend(self, chunk: _Chunk, done: set) -> _Chunk:
        """The cells of a dead worker's chunk that had not come back, as a new chunk (maybe of none)."""
        left = _left(chunk, done)
        if left and chunk.failures >= self.max_retries:
            raise TraitmapError(f"evaluating '{chunk.job.task.name}' killed {chunk.failures + 1} Ray workers; "
                                "see the Ray logs of the dead workers (out of memory?)")
        self.retried += bool(left)
        return _Chunk(chunk.job_index, dataclasses.replace(chunk.job, cells=left), chunk.failures + 1)

    # shared --------------------------------------------------------------------------------
    def _drain(self, jobs_by_key: dict, report: Callable[[tuple], None]) -> None:
        """Hand the workers' progress reports to `report`; tell `on_start` which process took a job."""
        for item in ray.get(self.inbox.take.remote()):
            if item[0] == "start":
                if self.on_start and item[1] in jobs_by_key:
                    found = jobs_by_key[item[1]]
                    self.on_start(found.job if isinstance(found, _Chunk) else found, item[2])
            else:
                report(item)

    def close(self) -> None:
        """Stop the actors (an idle one first removes its adapter folder; a busy one, after an
        error or Ctrl-C, is killed at once) and the cluster this executor started, if any."""
        pool, inbox, self.pool, self.inbox = self.pool, self.inbox, [], None
        self.shipped.clear()
        if not ray.is_initialized():
            return
        idle = [w.actor.close.remote() for w in pool if w.ready is None and w.chunk is None]
        if idle:
            ray.wait(idle, num_returns=len(idle), timeout=10)  # a dead actor's error counts as done
        for handle in [w.actor for w in pool] + ([inbox] if inbox is not None else []):
            ray.kill(handle, no_restart=True)
        if self.started:
            ray.shutdown()
            self.started = False


_JOIN = """import logging, sys, ray
ray.init(address=sys.argv[1], include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR)
ray.shutdown()
"""


def reach(address: str, timeout: float) -> None:
    """Join the cluster at `address` ("host:port", or "ray://host:port" for Ray Client)
    once, in a child process, within `timeout` seconds, since Ray itself retries a silent
    or wrong address for minutes; "local" and "auto" need no network."""
    if address in ("local", "auto"):
        return
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise TraitmapError(f"'{address}' is not a Ray cluster address (host:port, e.g. 10.0.0.5:6379, or 'auto')",
                            field="address")
    start = time.monotonic()
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
        joined = subprocess.run([sys.executable, "-c", _JOIN, address], capture_output=True, text=True,
                                timeout=max(0.1, timeout - (time.monotonic() - start)))
    except OSError as error:
        why = "no answer" if isinstance(error, TimeoutError) else (error.strerror or str(error) or type(error).__name__)
    except subprocess.TimeoutExpired:
        why = "it accepts a connection but does not answer as a Ray cluster"
    else:
        if joined.returncode == 0:
            return
        last = (joined.stderr.strip().splitlines() or [f"exit status {joined.returncode}"])[-1]
        why = f"Ray cannot join it: {last.strip()[:200]}"
    raise TraitmapError(f"cannot reach the Ray cluster at {address} within {timeout:g} s ({why}): is the cluster "
                        "running (`ray start --head`), the address its head node's, with the same Ray version?",
                        field="address")


def _adapter_keys(job: EvalJob) -> set[tuple[str, int]]:
    return {(ref.name, ref.seed) for _, _, ref in job.cells if ref is not None}


def _left(chunk: _Chunk, done: set) -> list:
    return [(m, s, ref) for m, s, ref in chunk.job.cells if (m, s, chunk.job.task.name) not in done]


def _get(ref):
    """ray.get, with the job's own error raised as itself (a TraitmapError stays one line)."""
    try:
        return ray.get(ref)
    except RayTaskError as e:
        cause = e.cause if isinstance(getattr(e, "cause", None), BaseException) else None
        if isinstance(cause, TraitmapError):
            raise cause from None
        raise
