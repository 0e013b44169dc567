"""The two kinds of work a study is made of, as plain values any executor can ship.

A `TrainJob` trains one adapter and returns its files; an `EvalJob` evaluates every
pending cell of one target and returns each cell's records as soon as the cell is
whole. Jobs never touch the output directory: the driver alone writes the store and
the adapters, so the same job runs in this process, in a Ray worker, or on a GPU node.
"""

from __future__ import annotations

import importlib
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from traitmap.backends.base import AdapterRef, Backend
from traitmap.record import Record
from traitmap.config import TrainConfig
from traitmap.tasks import Example, Task
from traitmap.trainers import TRAINERS


@dataclass(frozen=True)
class TrainJob:
    name: str
    seed: int
    task: str
    variant: dict | None
    examples: list[Example]
    train: TrainConfig
    base_model: str
    validation: list[Example] = field(default_factory=list)  # held out of the same split, for validation loss


@dataclass(frozen=True)
class TrainedAdapter:
    """An adapter's files (PEFT format and training_log.json) and its training log."""

    files: dict[str, bytes]
    log: dict


@dataclass(frozen=True)
class EvalJob:
    task: Task
    examples: list[Example]
    cells: list[tuple[str, int, AdapterRef | None]]  # (model, seed, adapter); the base model has none
    base_model: str
    backend: str
    batch_size: int
    max_new_tokens: int | None = None
    code_execution: str = "sandboxed"  # model-written code: "sandboxed" or "unsandboxed" ([eval] code_execution)
    backend_args: dict = field(default_factory=dict)  # the backend's own settings ([eval] backend_args)

    @property
    def request_count(self) -> int:
        """How many requests the job asks: one per example and cell."""
        return len(self.cells) * len(self.examples)


@dataclass(frozen=True)
class CellResult:
    model: str
    seed: int
    task: str
    records: list[Record]
    seconds: float


TrainProgress = Callable[[int, int, float], None]  # (step, steps, loss)


def run_train_job(job: TrainJob, model_dir: Path, progress: TrainProgress | None = None) -> TrainedAdapter:
    module, function = TRAINERS[job.train.trainer].split(":")
    train = getattr(importlib.import_module(module), function)
    return train(model_dir, job.examples, job.train, job.seed, progress=progress, validation=job.validation)


def run_eval_job(job: EvalJob, backend: Backend, progress: Callable[[int], None] | None = None) -> Iterator[CellResult]:
    """Every cell's requests go to the backend in one call, so it can batch models together;
    a cell is yielded when its last answer arrives. A cell's seconds are its share of the
    time so far, since its requests shared batches with other cells'."""
    examples, n = job.examples, len(job.examples)
    if n == 0:
        yield from (CellResult(model, seed, job.task.name, [], 0.0) for model, seed, _ in job.cells)
        return
    requests = [job.task.request(ex, adapter, job.max_new_tokens) for _, _, adapter in job.cells for ex in examples]
    answers: list[dict] = [{} for _ in job.cells]
    start, answered = time.perf_counter(), 0
    for index, response in backend.answer(requests, progress):
        cell, row = divmod(index, n)
        answers[cell][row] = response
        answered += 1
        if len(answers[cell]) == n:
            model, seed, _ = job.cells[cell]
            records = [record(model, seed, job.task, ex, answers[cell][i], job.code_execution)
                       for i, ex in enumerate(examples)]
            yield CellResult(model, seed, job.task.name, records, (time.perf_counter() - start) * n / answered)


def backend_for(job: EvalJob, loaded: dict) -> Backend:
    """The backend an eval job needs, kept in `loaded` across jobs: one model in memory at a time."""
    from traitmap import backends, models

    key = (job.backend, job.base_model, job.batch_size, json.dumps(job.backend_args, sort_keys=True))
    if key not in loaded:
        loaded.clear()
        loaded[key] = backends.get(job.backend)(models.resolve(job.base_model), batch_size=job.batch_size,
                                                **job.backend_args)
    return loaded[key]


def record(model: str, seed: int, task: Task, example: Example, response, code_execution: str = "sandboxed") -> Record:
    """One example's row in the store."""
    scored = task.score(example, response, sandboxed=code_execution != "unsandboxed")
    return Record(
        model=model, seed=seed, task=task.name, example_id=example.id, prompt=example.prompt,
        output=scored.output, output_tokens=int(scored.output_tokens),
        parsed="" if scored.parsed is None else str(scored.parsed), gold=str(example.gold),
        correct=float(bool(scored.correct)), logprobs=scored.logprobs_json,
    )
