"""Walk a study's plan: train the adapters that are missing, evaluate the cells that are
missing, then write the matrix, gains, PCA, analyses and report.

Everything finished is kept: an adapter is moved into place only when complete and a
cell's records are committed in one transaction, so rerunning a killed study recomputes
nothing that finished and ends with the same matrix.
"""

from __future__ import annotations

import contextlib
import os
import platform
import random
import time
from datetime import datetime, timezone
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from traitmap import tasks
from traitmap.console import log_lines
from traitmap.errors import TraitmapError
from traitmap.plan import CONFIG_FILE, DB_FILE, adapter_path, make_plan, source_examples, target_examples
from traitmap.study import HUB, StudyConfig
from traitmap.store import Store, StudyLock, remove_temporaries, write_atomic, write_error, write_json



def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def progress_bar(console: Console) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(), console=console, transient=False,
    )


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
    return {"platform": platform.platform(), "processor": platform.machine(), "cpus": os.cpu_count()}


def prepare_out_dir(config: StudyConfig, out_dir: Path, data_dir: Path | None) -> Store:
    """Create or reopen an output dir and lock it for this process; refuse one whose
    finished work used other settings. The store's close releases the lock."""
    from traitmap.validate import check_out_dir

    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise write_error(error, out_dir) from None
    lock = StudyLock(out_dir)
    try:
        check_out_dir(config, out_dir)  # again under the lock: another run may have written it meanwhile
        remove_temporaries(out_dir)  # left by a killed run
        write_json(out_dir / CONFIG_FILE, {"config": config.to_dict(), "data_dir": str(data_dir) if data_dir else HUB,
                                           "seeds": config.seeds, "versions": versions(), "machine": machine()})
        return Store(out_dir / DB_FILE, lock=lock)
    except BaseException:
        lock.release()
        raise


def train_missing(config: StudyConfig, store: Store, out_dir: Path, data_dir: Path | None, model_dir: Path, console: Console) -> None:
    from traitmap.train import train_adapter

    plan = make_plan(config, store)
    todo = plan.todo_adapters
    if not todo:
        return
    with progress_bar(console) as bar:
        for name, seed in log_lines(todo, console, "adapters", lambda job: f"{job[0]} (seed {job[1]})"):
            source = config.source(name)
            examples = source_examples(config, name, data_dir, seed)
            steps = config.train.total_steps(len(examples))
            job = bar.add_task(f"train {name} (seed {seed})", total=steps, info="")
            path = adapter_path(out_dir, name, seed)
            path.parent.mkdir(parents=True, exist_ok=True)
            log = train_adapter(
                model_dir, examples, config.train, seed, path,
                progress=lambda step, total, loss: bar.update(job, completed=step, info=f"loss {loss:.3f}"),
            )
            store.add_adapter(name, seed, source.task, source.variant, path, {k: v for k, v in log.items() if k != "log"}, now())


def evaluate_missing(config: StudyConfig, store: Store, out_dir: Path, data_dir: Path | None, model_dir: Path, console: Console) -> None:
    from traitmap.evaluate import evaluate_cell
    from traitmap.models import load_model, load_tokenizer

    plan = make_plan(config, store)
    todo = plan.todo_cells
    if not todo:
        return
    missing = [a for a in {(m, s) for m, s, _ in todo if m != "base"} if not store.adapter_done(*a)]
    if missing:
        raise TraitmapError(f"adapter '{missing[0][0]}' (seed {missing[0][1]}) is not trained yet: run `traitmap train` first")
    tokenizer = load_tokenizer(model_dir)
    model = load_model(model_dir)
    adapters = AdapterSwitch(model, out_dir)
    examples_by_task = {t: target_examples(config, t, data_dir) for t in config.targets}
    with progress_bar(console) as bar:
        overall = bar.add_task("evaluate (cells)", total=len(todo), info="")
        for model_name, seed, task_name in todo:
            task = tasks.get(task_name, extra_dirs=config.task_dirs)
            examples = examples_by_task[task_name]
            job = bar.add_task(f"  {model_name} on {task_name}", total=len(examples), info="")
            start = time.perf_counter()
            with adapters.use(model_name, seed) as active:
                records = evaluate_cell(
                    active, tokenizer, task, examples, model_name=model_name, seed=seed,
                    batch_size=config.eval.batch_size, max_new_tokens=config.eval.max_new_tokens.get(task_name),
                    progress=lambda n: bar.advance(job, n),
                )
            seconds = time.perf_counter() - start
            store.add_cell(model_name, seed, task_name, records, seconds, now())
            score = sum(r["correct"] for r in records) / max(1, len(records))
            bar.update(job, info=f"{task.metric} {score:.3f}", completed=len(examples))
            bar.remove_task(job)
            bar.advance(overall)
            console.print(f"  {model_name:<28} {task_name:<22} {task.metric} {score:.3f}  ({seconds:.0f} s)")


class AdapterSwitch:
    """One base model in memory, each adapter loaded once and switched in by name.

    A failed adapter load is an error, never a silent fall-back to the base model (the
    authors' code had that bug), and the active adapter is checked before every cell.
    """

    def __init__(self, model, out_dir: Path):
        self.base, self.peft, self.out_dir = model, None, out_dir
        self.keys: dict[tuple[str, int], str] = {}

    def _load(self, name: str, seed: int) -> str:
        from peft import PeftModel

        path = adapter_path(self.out_dir, name, seed)
        key = f"a{len(self.keys)}"
        try:
            if self.peft is None:
                self.peft = PeftModel.from_pretrained(self.base, path, adapter_name=key, is_trainable=False)
            else:
                self.peft.load_adapter(path, adapter_name=key, is_trainable=False)
        except Exception as e:
            raise TraitmapError(f"adapter '{name}' (seed {seed}) failed to load: {e}", file=path) from None
        # PEFT only warns when the file lacks the adapter's weights, leaving them at their
        # initial values (LoRA B = 0: the base model); that must be an error too.
        from peft.utils import get_peft_model_state_dict
        from safetensors import safe_open

        with safe_open(path / "adapter_model.safetensors", framework="pt") as saved:
            missing = sorted(set(get_peft_model_state_dict(self.peft, adapter_name=key)) - set(saved.keys()))
        if missing:
            raise TraitmapError(f"adapter '{name}' (seed {seed}) is incomplete: {len(missing)} weights missing, "
                                f"e.g. {missing[0]}", file=path)
        self.peft.eval()
        self.keys[(name, seed)] = key
        return key

    @contextlib.contextmanager
    def use(self, name: str, seed: int):
        """The model to evaluate as `name`: the base model, or the base with that adapter active."""
        if name == "base":
            if self.peft is None:
                yield self.base
            else:
                with self.peft.disable_adapter():
                    yield self.peft
            return
        key = self.keys.get((name, seed)) or self._load(name, seed)
        self.peft.set_adapter(key)
        if self.peft.active_adapter != key:
            raise TraitmapError(f"adapter '{name}' could not be activated")
        yield self.peft


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


def write_pca(study, *, on: str = "gains", standardize: bool = False, n_components: int = 4):
    """pca.json for the study's matrix; returns the fitted TraitPCA."""
    from traitmap.analysis.pca import TraitPCA

    result = TraitPCA(n_components=n_components, on=on, standardize=standardize).fit(study.matrix)
    write_json(study.out_dir / "pca.json", result.to_dict())
    return result


def run_study(config: StudyConfig, out_dir: Path, data_dir: Path | None, *, console: Console,
              steps: tuple[str, ...] = ("train", "evaluate", "analyze", "report")) -> Path | None:
    """Do the given steps of a study, skipping finished work; returns the report's path if built."""
    from traitmap import models
    from traitmap.api import Study
    from traitmap.validate import validate_study

    seed_everything(config.seed)
    out_dir = Path(out_dir)
    validate_study(config, data_dir, out_dir)  # reads only: nothing is written unless the whole plan is valid
    store = prepare_out_dir(config, out_dir, data_dir)
    started, clock = now(), time.perf_counter()
    run_id = store.start_run(started, " ".join(steps), config.to_dict(), versions(), machine())
    try:
        model_dir = models.resolve(config.base_model) if {"train", "evaluate"} & set(steps) else None
        if "train" in steps:
            train_missing(config, store, out_dir, data_dir, model_dir, console)
        if "evaluate" in steps:
            evaluate_missing(config, store, out_dir, data_dir, model_dir, console)
        study = Study.load(out_dir)
        write_matrix_files(out_dir, study.matrix)
        complete = not make_plan(config, store).todo_cells
        if complete and len(config.sources) >= 2 and len(config.targets) >= 2:
            from traitmap.analysis import pca

            try:
                pca.run(study, out_dir)  # pca.json + loadings and profiles as CSV, from [analysis] settings
            except TraitmapError as e:
                (out_dir / "pca.json").unlink(missing_ok=True)
                console.print(f"[yellow]PCA skipped: {e}[/yellow]")
        if "analyze" in steps and complete:
            from traitmap import analysis

            analysis.run_all(study, console=console)
        report = None
        if "report" in steps:
            from traitmap.report import build_report

            report = build_report(study, out_dir)
        store.finish_run(run_id, now(), time.perf_counter() - clock)  # left open when interrupted or failed
    finally:
        store.close()
    return report
