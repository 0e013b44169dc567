"""`Study.load(folder)`: a study's results as pandas DataFrames, from its run folder or from
an export of it (`traitmap export`) alike.

A run folder holds the SQLite store its runs wrote; an export holds plain tables instead
(the files named below) and no adapters. Analyses, the report, `traitmap status`,
`traitmap findings` and users' notebooks all read results through this one class. It reads;
the one thing it writes is the metrics a run folder's store lacks for cells evaluated before
cells stored them. Running a study is `traitmap.run`'s job.
"""

from __future__ import annotations

import gzip
import json
import os
from abc import ABC, abstractmethod
from functools import cached_property
from pathlib import Path

import pandas as pd

from traitmap import plan, tasks
from traitmap.errors import TraitmapError
from traitmap.matrix import gains, transfer_matrix
from traitmap.metrics import CELL_KEY, CHOICE_METRICS, DEFAULT_METRIC, with_gold_rates
from traitmap.record import SCORE_FIELDS
from traitmap.store import Store
from traitmap.config import HUB, StudyConfig

# An export's tables, as `traitmap.export` writes them
MATRIX_FILE = "matrix.csv"
SCORES_FILE = "scores.csv.gz"           # per example: the record's `SCORE_FIELDS`
CELLS_FILE = "cells.csv"                # per cell: n, score, seconds and the choice metrics
ANSWER_RATES_FILE = "answer_rates.csv"  # per choice cell and label: rate and gold_rate
TRAINING_FILE = "training.csv"          # per adapter and step: the training log
ADAPTERS_FILE = "adapters.csv"          # per adapter: how its training ended


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


def read_scores(path: Path) -> pd.DataFrame:
    """An export's per-example table; the answers and ids stay strings."""
    with gzip.open(path, "rt", encoding="utf-8") as f:
        frame = pd.read_csv(f, dtype={"example_id": str, "parsed": str, "gold": str, "model": str, "task": str})
    missing = [c for c in SCORE_FIELDS if c not in frame.columns]
    if missing:
        raise TraitmapError(f"lacks the column(s) {', '.join(missing)}", file=path)
    return frame


class Study(ABC):
    """One study's results. `Study.load` gives a `RunFolder` or an `Export`; both answer the
    same questions, except that an export keeps no adapters, run history or prompts and
    outputs (its records are the `SCORE_FIELDS`), and asking it for those is a TraitmapError."""

    def __init__(self, out_dir: Path, config: StudyConfig, saved: dict):
        self.out_dir = Path(out_dir)
        self.config = config
        self.meta = {k: v for k, v in saved.items() if k != "config"}
        self._target_examples: dict[str, list] = {}

    @classmethod
    def load(cls, folder: str | os.PathLike) -> "Study":
        """A run folder (it has the store) or an export (it has the scores); anything else is a
        TraitmapError naming the folder."""
        folder = Path(folder)
        saved = plan.read_saved(folder)
        if (folder / plan.DB_FILE).is_file():
            kind = RunFolder
        elif (folder / SCORES_FILE).is_file():
            kind = Export
        else:
            raise TraitmapError(f"not a traitmap output directory: no {plan.DB_FILE} (a run folder) "
                                f"nor {SCORES_FILE} (an export)", file=folder)
        return kind(folder, plan.saved_config(folder, saved), saved)

    def close(self) -> None:
        """Let go of what the study holds open (a run folder's database)."""

    def __enter__(self) -> "Study":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

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
    @abstractmethod
    def cells(self) -> pd.DataFrame:
        """One row per evaluated cell: its score and timing, and on choice targets every
        choice metric (NaN on generate targets)."""

    @abstractmethod
    def done_cells(self) -> set[tuple[str, int, str]]:
        """The evaluated cells as (model, seed, task)."""

    @abstractmethod
    def cell_metrics(self) -> pd.DataFrame:
        """Long table of every stored metric: model, seed, task, metric, value."""

    @abstractmethod
    def answer_rates(self) -> pd.DataFrame:
        """Per choice cell, the share of examples answered with each label (label "" is no
        answer) beside that label's share of the gold answers: model, seed, task, label,
        rate, gold_rate."""

    @abstractmethod
    def adapter_done(self, name: str, seed: int) -> bool:
        """Trained: the study has the adapter and its folder is complete."""

    @property
    @abstractmethod
    def adapters(self) -> pd.DataFrame:
        """One row per trained adapter and seed: name, seed, source, variant, path, train_log, finished."""

    @property
    @abstractmethod
    def runs(self) -> pd.DataFrame:
        """One row per command that worked on the study: started, finished, command, config, seconds, ..."""

    @abstractmethod
    def work_seconds(self) -> float:
        """Training and evaluation time of the finished work, summed over every run that did
        some (a killed run's finished adapters and cells count; its unfinished work does not)."""

    @property
    def pca(self) -> dict:
        path = self.out_dir / "pca.json"
        return json.loads(path.read_text()) if path.is_file() else {}

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
        return self._records(task, model)

    @abstractmethod
    def _records(self, task: str | None, model: str | None) -> pd.DataFrame:
        """The records of `task` and `model` (None: all), in the order they were stored."""

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


class RunFolder(Study):
    """A study's output folder: everything its runs wrote to the SQLite store."""

    def __init__(self, out_dir: Path, config: StudyConfig, saved: dict):
        super().__init__(out_dir, config, saved)
        self._store = Store(self.out_dir / plan.DB_FILE, create=False)
        self._add_missing_metrics()
        runs = self._store.runs()
        if not runs.empty:  # every command that worked on the study, added up
            self.meta.update(started=runs["started"].iloc[0], runs=len(runs), work_seconds=self.work_seconds())
            finished = [t for t in (*runs["finished"].dropna(), *self.cells["finished"].dropna()) if isinstance(t, str)]
            if finished:
                self.meta["finished"] = max(finished)

    def close(self) -> None:
        self._store.close()

    @property
    def cells(self) -> pd.DataFrame:
        cells = self._store.cells()
        values = self._store.cell_metrics()
        wide = (values[values["metric"].isin(CHOICE_METRICS)]
                .pivot(index=CELL_KEY, columns="metric", values="value")
                .reindex(columns=list(CHOICE_METRICS)))
        return cells.merge(wide, how="left", left_on=CELL_KEY, right_index=True)

    def done_cells(self) -> set[tuple[str, int, str]]:
        return self._store.done_cells()

    def adapter_done(self, name: str, seed: int) -> bool:
        return self._store.adapter_done(name, seed)

    def cell_metrics(self) -> pd.DataFrame:
        return self._store.cell_metrics()

    def answer_rates(self) -> pd.DataFrame:
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
    def runs(self) -> pd.DataFrame:
        return self._store.runs()

    def work_seconds(self) -> float:
        seconds = float(self.cells["seconds"].fillna(0).sum()) if not self.cells.empty else 0.0
        for raw in self._store.adapters()["train_log"]:
            try:
                seconds += float(json.loads(raw or "{}").get("seconds") or 0)
            except (ValueError, AttributeError):
                pass
        return seconds

    def _records(self, task: str | None, model: str | None) -> pd.DataFrame:
        return self._store.records(task=task, model=model)


class Export(Study):
    """A folder written by `traitmap export`: the matrix as it was published, the cells,
    answer rates and per-example scores from their tables. It keeps no store, adapters or
    run history; asking for those is a TraitmapError that says so."""

    def _table(self, name: str, **read_options) -> pd.DataFrame:
        path = self.out_dir / name
        if not path.is_file():
            raise TraitmapError(f"the export has no {name}", file=self.out_dir)
        return pd.read_csv(path, **read_options)

    def _not_kept(self, what: str) -> TraitmapError:
        return TraitmapError(f"an export keeps no {what}: read it from the study's run folder", file=self.out_dir)

    @property
    def matrix(self) -> pd.DataFrame:
        """The published matrix.csv, as the run wrote it (scores as floats: a column of zeros
        reads as integers otherwise)."""
        path = self.out_dir / MATRIX_FILE
        if not path.is_file():
            raise TraitmapError(f"no {MATRIX_FILE}: the study has not been evaluated yet", file=self.out_dir)
        return pd.read_csv(path, index_col="model").astype(float)

    @property
    def cells(self) -> pd.DataFrame:
        cells = self._table(CELLS_FILE)
        return cells.reindex(columns=[*cells.columns, *(m for m in CHOICE_METRICS if m not in cells.columns)])

    def done_cells(self) -> set[tuple[str, int, str]]:
        cells = self._table(CELLS_FILE)
        return {(str(m), int(s), str(t)) for m, s, t in cells[CELL_KEY].itertuples(index=False)}

    def answer_rates(self) -> pd.DataFrame:
        # label "" (no answer) stays a label; only an empty rate is missing
        return self._table(ANSWER_RATES_FILE, keep_default_na=False, na_values={"rate": [""], "gold_rate": [""]})

    def adapter_done(self, name: str, seed: int) -> bool:
        raise self._not_kept("adapters")

    def cell_metrics(self) -> pd.DataFrame:
        raise self._not_kept(f"long table of cell metrics (its {CELLS_FILE} has the choice metrics)")

    @property
    def adapters(self) -> pd.DataFrame:
        raise self._not_kept(f"adapters (how each one trained is in {ADAPTERS_FILE} and {TRAINING_FILE})")

    @property
    def runs(self) -> pd.DataFrame:
        raise self._not_kept("run history")

    def work_seconds(self) -> float:
        raise self._not_kept("run history")

    @cached_property
    def _scores(self) -> pd.DataFrame:
        return read_scores(self.out_dir / SCORES_FILE)

    def _records(self, task: str | None, model: str | None) -> pd.DataFrame:
        scores = self._scores
        keep = pd.Series(True, index=scores.index)
        if task is not None:
            keep &= scores["task"] == task
        if model is not None:
            keep &= scores["model"] == model
        return scores[keep].reset_index(drop=True)
