"""Walk a study's plan: train the adapters that are missing, evaluate the cells that are
missing, then write the matrix, gains, PCA, analyses and report.

Everything finished is kept: an adapter is moved into place only when complete and a
cell's records are committed in one transaction, so rerunning a killed study recomputes
nothing that finished and ends with the same matrix.
"""

from __future__ import annotations

import platform
import random
import shutil
import time
from datetime import datetime, timezone
from pathlib import Path

from traitmap import tasks
from traitmap.backends.base import AdapterRef
from traitmap.errors import TraitmapError
from traitmap.events import RunEvents
from traitmap.files import remove_temporaries, write_atomic, write_error, write_folder, write_json
from traitmap.jobs import EvalJob, TrainedAdapter, TrainJob
from traitmap.plan import CONFIG_FILE, DB_FILE, adapter_path, evaluated_texts, make_plan, source_slices, target_examples
from traitmap.config import HUB, StudyConfig
from traitmap.store import Store, StudyLock


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def versions() -> dict:
    import importlib.metadata as md

    found = {"python": platform.python_version()}
    for pkg in ("traitmap", "torch", "transformers", "peft", "datasets", "scikit-learn", "pandas", "spacy", "sentence-transformers"):
        try:
            found[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    return found


def machine() -> dict:
    """Where a run ran: the platform, and the CPU named as `traitmap calibrate` names it."""
    from traitmap.speeds import cpu_description

    return {"platform": platform.platform(), **cpu_description()}


def prepare_out_dir(config: StudyConfig, out_dir: Path, data_dir: Path | None, retrain: tuple[str, ...] = ()) -> Store:
    """Create or reopen an output dir and lock it for this process; refuse one whose
    finished work used other settings. The adapters in `retrain` are forgotten, with
    their cells, for the run to train and evaluate again. The store's close releases the lock."""
    from traitmap.validate import check_out_dir

    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise write_error(error, out_dir) from None
    lock = StudyLock(out_dir)
    try:
        check_out_dir(config, out_dir, retrain)  # again under the lock: another run may have written it meanwhile
        remove_temporaries(out_dir)  # left by a killed run
        write_json(out_dir / CONFIG_FILE, {"config": config.to_dict(), "data_dir": str(data_dir) if data_dir else HUB,
                                           "seeds": config.seeds, "versions": versions(), "machine": machine(),
                                           "matrix_metric": config.metric})
        store = Store(out_dir / DB_FILE, lock=lock)
        for name in retrain:
            for folder in store.forget_adapter(name):
                shutil.rmtree(folder, ignore_errors=True)
        return store
    except BaseException:
        lock.release()
        raise


def train_missing(config: StudyConfig, store: Store, out_dir: Path, data_dir: Path | None, executor,
                  events: RunEvents) -> None:
    """Train every adapter the store lacks; each one is saved and recorded as soon as it is back."""
    todo = make_plan(config, store).todo_adapters
    if not todo:
        return
    jobs = []
    evaluated = evaluated_texts(config, data_dir) if config.train.validation_examples else set()
    for name, seed in todo:
        source = config.source(name)
        examples, validation = source_slices(config, name, data_dir, seed, evaluated)
        jobs.append(TrainJob(name, seed, source.task, source.variant, examples, config.train, config.base_model,
                             validation))
    events.training(jobs)
    try:
        for job, trained in executor.train(jobs, events.step):
            path = adapter_path(out_dir, job.name, job.seed)
            save_adapter(trained, path)
            store.add_adapter(job.name, job.seed, job.task, job.variant, path,
                              {k: v for k, v in trained.log.items() if k != "log"}, now())
            events.trained(job, trained.log)
    finally:
        events.done()


def save_adapter(trained: TrainedAdapter, path: Path) -> None:
    """Write an adapter's files into a temporary folder, then move it into place whole."""
    write_folder(path, trained.files)


def evaluate_missing(config: StudyConfig, store: Store, out_dir: Path, data_dir: Path | None, executor,
                     events: RunEvents) -> None:
    """Evaluate every cell the store lacks: one job per target holding all its pending
    models, so the backend can batch adapters together; each cell is committed whole as
    soon as it is back."""
    todo = make_plan(config, store).todo_cells
    if not todo:
        return
    missing = sorted({(m, s) for m, s, _ in todo if m != "base" and not store.adapter_done(m, s)})
    if missing:
        raise TraitmapError(f"adapter '{missing[0][0]}' (seed {missing[0][1]}) is not trained yet: run `traitmap train` first")
    jobs = []
    for target in config.targets:
        cells = [(m, s, None if m == "base" else AdapterRef(m, s, adapter_path(out_dir, m, s)))
                 for m, s, t in todo if t == target]
        if cells:
            jobs.append(EvalJob(tasks.get(target, extra_dirs=config.task_dirs), target_examples(config, target, data_dir),
                                cells, config.base_model, config.eval.backend, config.eval.batch_size,
                                config.eval.max_new_tokens.get(target), config.eval.code_execution,
                                config.eval.backend_args))
    events.evaluating(jobs, len(todo))
    try:
        for result in executor.evaluate(jobs, events.answered):
            task = tasks.get(result.task, extra_dirs=config.task_dirs)
            score = store.add_cell(result.model, result.seed, result.task, result.records, result.seconds, now(),
                                   task.cell_metrics(result.records))
            events.scored(result, task.metric, score)
    finally:
        events.done()


def write_matrix_files(out_dir: Path, matrix) -> None:
    """matrix.csv (base and adapters x targets) and gains.csv (adapters minus base)."""
    from traitmap.matrix import gains

    write_atomic(out_dir / "matrix.csv", matrix.to_csv(float_format="%.6g"))
    if len(matrix) > 1:
        write_atomic(out_dir / "gains.csv", gains(matrix).to_csv(float_format="%.6g"))


def seed_everything(seed: int) -> None:
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def run_study(config: StudyConfig, out_dir: Path, data_dir: Path | None, *, events: RunEvents | None = None,
              steps: tuple[str, ...] = ("train", "evaluate", "analyze", "report"),
              executor_options: dict | None = None, retrain: tuple[str, ...] = ()) -> Path | None:
    """Do the given steps of a study, skipping finished work; returns the report's path if built.
    The adapters named in `retrain` are trained and evaluated again (e.g. damaged files).

    Jobs run on the executor of the study's [run] table (`config.where_to_run` lays
    --executor and --address over it); `executor_options` add to its constructor's arguments.
    Progress goes to `events` (none shown by default)."""
    from traitmap import executors
    from traitmap.results import Study
    from traitmap.validate import validate_study

    seed_everything(config.seed)
    events = events or RunEvents()
    out_dir = Path(out_dir)
    validate_study(config, data_dir, out_dir, retrain)  # reads only: nothing is written unless the whole plan is valid
    executor = None
    if {"train", "evaluate"} & set(steps):  # a cluster is reached before the output folder is touched
        executor = executors.get(config.run.executor, **{**config.run.executor_options, **(executor_options or {})})
    try:
        store = prepare_out_dir(config, out_dir, data_dir, retrain)
        started, clock = now(), time.perf_counter()
        run_id = store.start_run(started, " ".join(steps), config.to_dict(), versions(), machine())
    except BaseException:
        if executor is not None:
            executor.close()
        raise
    try:
        if executor is not None:
            try:
                if "train" in steps:
                    train_missing(config, store, out_dir, data_dir, executor, events)
                if "evaluate" in steps:
                    evaluate_missing(config, store, out_dir, data_dir, executor, events)
            finally:
                executor.close()
        study = Study.load(out_dir)
        write_matrix_files(out_dir, study.matrix)
        complete = not make_plan(config, store).todo_cells
        if complete and len(config.sources) >= 2 and len(config.targets) >= 2:
            from traitmap.analysis import pca

            try:
                pca.run(study, out_dir)  # pca.json + loadings and profiles as CSV, from [analysis] settings
            except TraitmapError as e:
                (out_dir / "pca.json").unlink(missing_ok=True)
                events.note(f"PCA skipped: {e}", warning=True)
        if "analyze" in steps and complete:
            from traitmap import analysis

            analysis.run_all(study, note=events.note)
        report = None
        if "report" in steps:
            from traitmap.report import build_report

            report = build_report(study, out_dir)
        store.finish_run(run_id, now(), time.perf_counter() - clock)  # left open when interrupted or failed
    finally:
        store.close()
    return report
