"""`Study.load(out_dir)`: a finished (or partly finished) study as pandas DataFrames.

This is what analyses, the report and users' notebooks read. It only reads; running a
study is `traitmap.run`'s job.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd

from traitmap import plan, tasks
from traitmap.errors import TraitmapError
from traitmap.matrix import gains, transfer_matrix
from traitmap.metrics import CHOICE_METRICS, DEFAULT_METRIC, with_gold_rates
from traitmap.store import Store
from traitmap.study import HUB, StudyConfig


def recorded_data_dir(saved: dict) -> Path | None:
    """The data dir a study's run was given (None: the hub); TRAITMAP_DATA_DIR only when that
    folder is gone (a study moved to another machine, or an export)."""
    recorded = saved.get("data_dir")
    if recorded == HUB:
        return None
    if recorded and Path(recorded).is_dir():
        return Path(recorded)
    chosen = os.environ.get("TRAITMAP_DATA_DIR") or recorded
    return None if chosen == HUB or not chosen else Path(chosen)


class Study:
    def __init__(self, out_dir: Path, config: StudyConfig, saved: dict):
        self.out_dir = Path(out_dir)
        self.config = config
        self.meta = {k: v for k, v in saved.items() if k != "config"}
        self._store = Store(self.out_dir / plan.DB_FILE, create=False)
        self._target_examples: dict[str, list] = {}
        self._add_missing_metrics()
        runs = self._store.runs()
        if not runs.empty:  # every command that worked on the study, added up
            self.meta.update(started=runs["started"].iloc[0], runs=len(runs), work_seconds=self.work_seconds())
            finished = [t for t in (*runs["finished"].dropna(), *self.cells["finished"].dropna()) if isinstance(t, str)]
            if finished:
                self.meta["finished"] = max(finished)

    @classmethod
    def load(cls, out_dir: str | os.PathLike) -> "Study":
        out_dir = Path(out_dir)
        saved = plan.read_saved(out_dir)
        return cls(out_dir, plan.saved_config(out_dir, saved), saved)

    # where things live -----------------------------------------------------------------
    @property
    def analysis_dir(self) -> Path:
        return self.out_dir / "analysis"

    @property
    def cache_dir(self) -> Path:
        return self.out_dir / "cache"

    @property
    def data_dir(self) -> Path | None:
        """The data dir the run was given (None: the hub), so that analyses describe the data
        that was trained and evaluated on; TRAITMAP_DATA_DIR only when that folder is gone
        (a study moved to another machine)."""
        return recorded_data_dir(self.meta)

    # results ---------------------------------------------------------------------------
    @property
    def models(self) -> list[str]:
        return plan.model_names(self.config)

    @property
    def matrix(self) -> pd.DataFrame:
        """Choice targets in the study's metric (`[analysis] metric`), generate targets in their own."""
        return self.matrix_in(self.config.metric)

    def matrix_in(self, metric: str) -> pd.DataFrame:
        """The transfer matrix with choice targets in `metric` (one of `CHOICE_METRICS`).

        A cell's `score` is its task's own metric, accuracy on every choice target, so the
        accuracy matrix is the scores as they are (no task file needed to read it).
        """
        if metric not in CHOICE_METRICS:
            raise TraitmapError(f"unknown metric '{metric}' (choose from {', '.join(CHOICE_METRICS)})", field="metric")
        cells = self.cells
        if metric != DEFAULT_METRIC:
            choice = [name for name in self.config.targets if self.task(name).kind == "choice"]
            cells = cells.assign(score=cells["score"].mask(cells["task"].isin(choice), cells[metric]))
        return transfer_matrix(cells, self.models, self.config.targets)

    @property
    def gains(self) -> pd.DataFrame:
        return gains(self.matrix)

    @property
    def cells(self) -> pd.DataFrame:
        """One row per evaluated cell: its score and timing, and on choice targets every
        choice metric (NaN on generate targets)."""
        cells = self._store.cells()
        values = self._store.cell_metrics()
        wide = (values[values["metric"].isin(CHOICE_METRICS)]
                .pivot(index=["model", "seed", "task"], columns="metric", values="value")
                .reindex(columns=list(CHOICE_METRICS)))
        return cells.merge(wide, how="left", left_on=["model", "seed", "task"], right_index=True)

    def cell_metrics(self) -> pd.DataFrame:
        """Long table of every stored metric: model, seed, task, metric, value."""
        return self._store.cell_metrics()

    def answer_rates(self) -> pd.DataFrame:
        """Per choice cell, the share of examples answered with each label (label "" is no
        answer) beside that label's share of the gold answers: model, seed, task, label,
        rate, gold_rate."""
        return with_gold_rates(self._store.answer_rates(), self.records())

    def _add_missing_metrics(self) -> None:
        """Store the metrics of cells evaluated before cells stored them, computed from their
        records by their task; the records and scores are kept as they are."""
        for model, seed, name in self._store.cells_without_metrics():
            try:
                task = self.task(name)
            except TraitmapError:
                continue  # a task file that is gone: the cell keeps its score only
            self._store.add_metrics(model, seed, name, task.cell_metrics(self._store.records(task=name, model=model)
                                                                         .loc[lambda r: r["seed"] == seed]))

    @property
    def adapters(self) -> pd.DataFrame:
        frame = self._store.adapters()
        variants = {s.name: s.variant for s in self.config.sources}
        frame["variant"] = frame["name"].map(lambda n: json.dumps(variants.get(n)) if variants.get(n) else "")
        return frame

    @property
    def pca(self) -> dict:
        path = self.out_dir / "pca.json"
        return json.loads(path.read_text()) if path.is_file() else {}

    @property
    def runs(self) -> pd.DataFrame:
        return self._store.runs()

    def work_seconds(self) -> float:
        """Training and evaluation time of the finished work, summed over every run that did
        some (a killed run's finished adapters and cells count; its unfinished work does not)."""
        seconds = float(self.cells["seconds"].fillna(0).sum()) if not self.cells.empty else 0.0
        for raw in self._store.adapters()["train_log"]:
            try:
                seconds += float(json.loads(raw or "{}").get("seconds") or 0)
            except (ValueError, AttributeError):
                pass
        return seconds

    def records(self, task: str | None = None, model: str | None = None, adapter: str | None = None) -> pd.DataFrame:
        """Per-example records; `adapter` is an alias of `model`. A task or model the study does
        not have raises, rather than returning no rows as if it had none."""
        model = model or adapter
        if task is not None and task not in self.config.targets:
            raise TraitmapError(f"no target '{task}' in study '{self.config.name}' "
                                f"(its targets: {', '.join(self.config.targets)})", field="task")
        if model is not None and model not in self.models:
            raise TraitmapError(f"no model '{model}' in study '{self.config.name}' "
                                f"(its models: {', '.join(self.models)})", field="model")
        return self._store.records(task=task, model=model)

    # the data behind the results -------------------------------------------------------
    def task(self, name: str):
        return tasks.get(name, extra_dirs=self.config.task_dirs)

    def source_examples(self, adapter_name: str, seed: int | None = None) -> list:
        return plan.source_examples(self.config, adapter_name, self.data_dir, self.config.seed if seed is None else seed)

    def target_examples(self, task_name: str) -> list:
        if task_name not in self._target_examples:
            self._target_examples[task_name] = plan.target_examples(self.config, task_name, self.data_dir)
        return self._target_examples[task_name]

    def __repr__(self) -> str:
        return f"Study({self.config.name!r}, {len(self.config.sources)} sources x {len(self.config.targets)} targets, out={self.out_dir})"
