"""Run jobs one after another in this process (the default executor).

The evaluation backend is loaded once and kept across jobs: one base model in memory,
each adapter loaded on first use.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

from traitmap import models
from traitmap.jobs import CellResult, EvalJob, TrainedAdapter, TrainJob, backend_for, run_eval_job, run_train_job


class LocalExecutor:
    def __init__(self):
        self._backends: dict = {}

    def train(self, jobs: Sequence[TrainJob],
              progress: Callable[[TrainJob, int, int, float], None] | None = None) -> Iterator[tuple[TrainJob, TrainedAdapter]]:
        for job in jobs:
            report = (lambda step, steps, loss, job=job: progress(job, step, steps, loss)) if progress else None
            yield job, run_train_job(job, models.resolve(job.base_model), report)

    def evaluate(self, jobs: Sequence[EvalJob], progress: Callable[[EvalJob, int], None] | None = None) -> Iterator[CellResult]:
        for job in jobs:
            report = (lambda n, job=job: progress(job, n)) if progress else None
            yield from run_eval_job(job, backend_for(job, self._backends), report)

    def close(self) -> None:
        self._backends.clear()
