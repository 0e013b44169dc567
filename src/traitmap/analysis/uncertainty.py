"""How sure is each number in the transfer matrix? The paper reports point scores only.

One resampler, `resample_matrix`, draws bootstrap replicates of the whole matrix by
resampling examples within each task. The same draw is used for every model on a task,
because all models are evaluated on the same examples: a gain (adapter minus base) is
then a paired difference and its interval is as narrow as the pairing allows.
`traits.py` refits PCA on the same replicates.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from traitmap.analysis.pca import BASE
from traitmap.analysis import analysis_settings
from traitmap.errors import TraitmapError
from traitmap.files import json_ready, write_csv
from traitmap.metrics import DEFAULT_METRIC

REQUIRED_COLUMNS = ("model", "seed", "task", "example_id", "correct")


@dataclass(frozen=True)
class MatrixDraws:
    """Bootstrap replicates of the matrix.

    point: models x tasks, seed-averaged score (the study's matrix).
    draws: array (n_boot, models, tasks), replicates of `point` (NaN where a cell has no data).
    n: models x tasks, distinct examples behind each cell.
    seed_scores: long (model, seed, task, score): one score per training seed.
    """

    point: pd.DataFrame
    draws: np.ndarray
    n: pd.DataFrame
    seed_scores: pd.DataFrame


def model_order(models, base: str = BASE) -> list[str]:
    """Base first, then adapters in order of appearance (the matrix's row order)."""
    unique = [str(m) for m in pd.unique(pd.Series(models))]
    return ([base] if base in unique else []) + [m for m in unique if m != base]


def resample_matrix(records: pd.DataFrame, n_boot: int = 1000, seed: int = 0, base: str = BASE,
                    metric: str = DEFAULT_METRIC, labels: dict[str, list[str]] | None = None) -> MatrixDraws:
    """Resample examples (with replacement) within each task, `n_boot` times.

    A cell's score is the mean of `correct` per training seed, averaged over seeds. Each
    replicate does the same on the resampled examples, over the model's seeds drawn with
    replacement (`resample_seeds`), so a cell with several training seeds has an interval
    that includes training noise as well as the examples'. Drawing multinomial counts
    per example (`resample_counts`) turns a whole task into one matrix product. With
    `metric` balanced accuracy or macro-F1, the choice tasks in `labels` (task -> its
    labels) are scored in it instead, as `Study.matrix` scores them (`choice_scores`).
    """
    missing = [c for c in REQUIRED_COLUMNS if c not in records.columns]
    if missing:
        raise TraitmapError(f"records lack columns {missing}")
    if records.empty:
        raise TraitmapError("no records to bootstrap")
    rng = np.random.default_rng(seed)
    per_example = records.groupby(["task", "model", "seed", "example_id"], sort=False)["correct"].mean()
    models = model_order(records["model"], base)
    tasks = list(pd.unique(records["task"]))
    point = pd.DataFrame(np.nan, index=models, columns=tasks)
    counts = pd.DataFrame(0, index=models, columns=tasks)
    draws = np.full((n_boot, len(models), len(tasks)), np.nan)
    seed_rows = []
    for j, task in enumerate(tasks):
        table = per_example.loc[task].unstack("example_id")  # rows (model, seed), columns examples
        values = table.to_numpy(dtype=float)
        present = ~np.isnan(values)
        n_examples = values.shape[1]
        weights = resample_counts(rng, n_boot, n_examples)
        if metric != DEFAULT_METRIC and task in (labels or {}):
            answers = records[records["task"] == task]
            parsed = answers.pivot_table(index=["model", "seed"], columns="example_id", values="parsed",
                                         aggfunc="first").reindex(index=table.index, columns=table.columns)
            gold = answers.groupby("example_id")["gold"].first().reindex(table.columns)
            seed_draws, seed_point = choice_scores(weights, values, present, parsed.to_numpy(dtype=object),
                                                   gold.to_numpy(dtype=object), metric, labels[task])
        else:
            with np.errstate(invalid="ignore", divide="ignore"):
                seed_draws = (weights @ np.where(present, values, 0.0).T) / (weights @ present.T)
                seed_point = np.where(present, values, 0.0).sum(axis=1) / present.sum(axis=1)
        row_models = table.index.get_level_values("model")
        for model in pd.unique(row_models):
            rows = np.flatnonzero(row_models == model)
            i = models.index(model)
            point.iat[i, j] = np.nanmean(seed_point[rows])
            draws[:, i, j] = _nanmean_rows(seed_draws[:, rows], resample_seeds(rng, n_boot, len(rows)))
            counts.iat[i, j] = int(present[rows].any(axis=0).sum())
            for r in rows:
                seed_rows.append((model, table.index[r][1], task, seed_point[r]))
    seed_scores = pd.DataFrame(seed_rows, columns=["model", "seed", "task", "score"])
    return MatrixDraws(point=point, draws=draws, n=counts, seed_scores=seed_scores)


def choice_scores(weights: np.ndarray, correct: np.ndarray, present: np.ndarray, parsed: np.ndarray,
                  gold: np.ndarray, metric: str, labels: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Balanced accuracy or macro-F1 of each row (model, seed) of a choice task: replicates
    (n_boot, rows) under `weights` and the point value (rows,).

    Both are means over labels of ratios of example counts (recall: right answers among a
    label's examples; F1: twice the right answers of a label over its answers plus its
    examples), so each count is a weighted sum and a replicate is one matrix product per label.
    """
    right = np.where(present, correct, 0.0)
    replicates, points = [], []
    for label in labels:
        real = present & (gold == label).astype(bool)[None, :]
        if metric == "balanced_accuracy":
            numerator, denominator = right * real, real.astype(float)
        else:
            numerator, denominator = 2 * right * real, (present & (parsed == label).astype(bool)) + real.astype(float)
        with np.errstate(invalid="ignore", divide="ignore"):
            replicates.append((weights @ numerator.T) / (weights @ denominator.T))
            points.append(numerator.sum(axis=1) / denominator.sum(axis=1))
    replicates, points = np.stack(replicates), np.stack(points)
    if metric == "balanced_accuracy":
        return _mean_over_labels(replicates), _mean_over_labels(points)
    return np.nan_to_num(replicates).mean(axis=0), np.nan_to_num(points).mean(axis=0)  # F1 of a label never seen: 0


def _mean_over_labels(values: np.ndarray) -> np.ndarray:
    """Mean along axis 0 over the labels that occur (balanced accuracy skips a label with no examples)."""
    valid = ~np.isnan(values)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(valid, values, 0.0).sum(axis=0) / valid.sum(axis=0)


def matrix_metric(study) -> dict:
    """The `resample_matrix` arguments that score a study's cells as its matrix does."""
    metric = analysis_settings(study).get("metric", DEFAULT_METRIC)
    if metric == DEFAULT_METRIC:
        return {"metric": metric, "labels": None}
    return {"metric": metric, "labels": {name: study.task(name).choices for name in study.config.targets
                                         if study.task(name).choices}}


def resample_counts(rng: np.random.Generator, n_boot: int, n_examples: int) -> np.ndarray:
    """How often each example is drawn in each replicate, (n_boot, n_examples)."""
    picks = rng.integers(0, n_examples, size=(n_boot, n_examples))
    offsets = (np.arange(n_boot) * n_examples)[:, None]
    return np.bincount((picks + offsets).ravel(), minlength=n_boot * n_examples).reshape(n_boot, n_examples).astype(float)


def resample_seeds(rng: np.random.Generator, n_boot: int, n_seeds: int) -> np.ndarray:
    """How often each training seed is drawn in each replicate, (n_boot, n_seeds): the
    seeds of one adapter are independent trainings, so they are resampled like examples.
    One seed is drawn once in every replicate (and the generator is left untouched)."""
    if n_seeds == 1:
        return np.ones((n_boot, 1))
    return rng.multinomial(n_seeds, np.full(n_seeds, 1.0 / n_seeds), size=n_boot).astype(float)


def _nanmean_rows(values: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Mean over seeds weighted by how often each was drawn (`counts`, like `values`),
    ignoring a seed whose replicate drew none of its examples."""
    counts = np.where(np.isnan(values), 0.0, counts)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (np.where(counts > 0, values, 0.0) * counts).sum(axis=1) / counts.sum(axis=1)


def percentile_interval(draws: np.ndarray, level: float) -> tuple[np.ndarray, np.ndarray]:
    """Percentile bootstrap interval along axis 0."""
    tail = (1.0 - level) / 2.0
    with np.errstate(invalid="ignore"):
        low, high = np.nanquantile(draws, [tail, 1.0 - tail], axis=0)
    return low, high


class CellBootstrap:
    """Percentile intervals for every matrix cell and every gain, plus the spread over
    training seeds. Attributes after fit: `matrix_`, `gains_` (wide, models x tasks),
    `table_` (long: one row per cell, the matrix_ci.csv columns), `draws_` (MatrixDraws)."""

    def __init__(self, n_boot: int = 1000, level: float = 0.95, seed: int = 0, base: str = BASE,
                 metric: str = DEFAULT_METRIC, labels: dict[str, list[str]] | None = None):
        self.n_boot = n_boot
        self.level = level
        self.seed = seed
        self.base = base
        self.metric, self.labels = metric, labels

    def fit(self, records: pd.DataFrame) -> "CellBootstrap":
        draws = resample_matrix(records, self.n_boot, self.seed, self.base, self.metric, self.labels)
        low, high = percentile_interval(draws.draws, self.level)
        models, tasks = list(draws.point.index), list(draws.point.columns)
        if self.base in models:
            b = models.index(self.base)
            gain_draws = draws.draws - draws.draws[:, b : b + 1, :]
            gains = draws.point - draws.point.loc[self.base]
            gain_low, gain_high = percentile_interval(gain_draws, self.level)
        else:
            gains = draws.point * np.nan
            gain_low = gain_high = np.full(draws.point.shape, np.nan)
        spread = draws.seed_scores.groupby(["model", "task"])["score"].agg(
            seed_std="std", seed_min="min", seed_max="max", n_seeds="count"
        )
        table = pd.DataFrame({
            "model": np.repeat(models, len(tasks)),
            "task": np.tile(tasks, len(models)),
            "score": draws.point.to_numpy().ravel(),
            "low": low.ravel(),
            "high": high.ravel(),
            "gain": gains.to_numpy().ravel(),
            "gain_low": gain_low.ravel(),
            "gain_high": gain_high.ravel(),
            "n": draws.n.to_numpy().ravel(),
        })
        table = table.join(spread, on=["model", "task"])
        table["n_seeds"] = table["n_seeds"].fillna(0).astype(int)
        self.draws_ = draws
        self.matrix_ = draws.point
        self.gains_ = gains.drop(index=self.base, errors="ignore")
        self.table_ = table[["model", "task", "score", "low", "high", "gain", "gain_low", "gain_high",
                             "n", "seed_std", "n_seeds", "seed_min", "seed_max"]]
        return self

    def to_dict(self) -> dict:
        return json_ready({
            "n_boot": self.n_boot,
            "level": self.level,
            "seed": self.seed,
            "cells": self.table_.to_dict(orient="records"),
        })


def run(study, out_dir: Path) -> list[Path]:
    """matrix_ci.csv: one row per (model, task) with its interval, gain interval and
    seed spread."""
    settings = analysis_settings(study)
    fitted = CellBootstrap(
        n_boot=int(settings.get("n_boot", 1000)),
        level=float(settings.get("ci_level", 0.95)),
        seed=int(settings.get("bootstrap_seed", 0)),
        **matrix_metric(study),
    ).fit(study.records())
    return [write_csv(Path(out_dir) / "matrix_ci.csv", fitted.table_)]
