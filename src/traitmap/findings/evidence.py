"""What a claim is tested on: one study's results, read from its run folder or from a
published copy of it (`traitmap export`), and paired bootstrap estimates over them.

Every difference between models is paired: all models answered the same examples, and
each bootstrap replicate resamples those examples once for all of them (the matrix's
replicates from `analysis.uncertainty.resample_matrix`; a `Contrast` draws its own with the
same resampler and keeps the per-example outcomes, so a claim's rule can be rerun on
simulated ones), so an interval is as narrow as the pairing allows. An adapter trained with
several seeds has its seeds drawn with replacement in each replicate too, so its intervals
include training noise.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import pandas as pd
from scipy.stats import linregress

from traitmap import tasks
from traitmap.analysis.uncertainty import (MatrixDraws, percentile_interval, resample_counts, resample_matrix,
                                           resample_seeds)
from traitmap.metrics import balanced_accuracy
from traitmap.errors import TraitmapError
from traitmap.record import SCORE_FIELDS
from traitmap.results import ADAPTERS_FILE, TRAINING_FILE, Study
from traitmap.config import StudyConfig

N_BOOT = 2000
BOOT_SEED = 0
LEVEL = 0.95


@dataclass(frozen=True)
class Estimate:
    """A number with its 95% bootstrap interval (score units: 0.1 is 10 points)."""

    value: float
    low: float
    high: float

    @property
    def excludes_zero(self) -> bool:
        return self.low > 0 or self.high < 0


@dataclass(frozen=True)
class Outcomes:
    """Right (1) or wrong (0) per model and example on one target, examples aligned, with
    each example's gold label as a stratum (balanced accuracy averages recall over them)."""

    correct: np.ndarray  # models x examples (a mean over training seeds)
    strata: np.ndarray   # examples: index of the gold label
    by_seed: tuple[np.ndarray, ...] = ()  # per model, seeds x examples; empty: one seed each

    @property
    def n(self) -> int:
        return self.correct.shape[-1]

    def seed_resampled(self, rng: np.random.Generator, n_boot: int) -> np.ndarray | None:
        """(n_boot, models, examples): each model's outcomes averaged over its training seeds
        drawn with replacement, or None where no model has more than one seed."""
        if all(seeds.shape[0] == 1 for seeds in self.by_seed):
            return None
        return np.stack([resample_seeds(rng, n_boot, len(seeds)) @ seeds / len(seeds) for seeds in self.by_seed],
                        axis=1)


def metric_draws(correct: np.ndarray, weights: np.ndarray, strata: np.ndarray, metric: str,
                 per_replicate: bool = False) -> np.ndarray:
    """The metric of each model under example weights: correct (..., models, n) and weights
    (B, n) give (..., B, models); with `per_replicate`, correct is (B, models, n), one
    outcome table per replicate, and gives (B, models). Weights of ones give the point value."""
    product = "bn,bmn->bm" if per_replicate else "bn,...mn->...bm"
    if metric == "accuracy":
        return np.einsum(product, weights, correct) / weights.sum(axis=1)[:, None]
    if metric != "balanced_accuracy":
        raise TraitmapError(f"unknown metric {metric!r}")
    recalls = []
    for label in np.unique(strata):
        w = weights * (strata == label)
        with np.errstate(invalid="ignore", divide="ignore"):
            recalls.append(np.einsum(product, w, correct) / w.sum(axis=1)[:, None])
    with np.errstate(invalid="ignore"):
        return np.nanmean(np.stack(recalls), axis=0)


@dataclass(frozen=True)
class Contrast:
    """Mean metric of one group of models minus another's, averaged over targets: the
    per-example outcomes it came from, so the same rule can be rerun on simulated ones."""

    first: int                 # the first `first` rows of each Outcomes are the first group
    outcomes: list[Outcomes]   # one per target
    metric: str
    estimate: Estimate
    replicates: np.ndarray     # bootstrap replicates of the difference


def contrast_draws(first: int, outcomes: list[Outcomes], metric: str, weights: list[np.ndarray],
                   correct: list[np.ndarray] | None = None,
                   seed_resampled: list[np.ndarray | None] | None = None) -> np.ndarray:
    """Difference (first group minus the rest) under example weights, averaged over targets;
    `correct` may replace each target's outcomes with simulated ones (..., models, n), and
    `seed_resampled` with one table per replicate (`Outcomes.seed_resampled`)."""
    total = 0.0
    for j, (o, w) in enumerate(zip(outcomes, weights)):
        if correct is not None:
            values = metric_draws(correct[j], w, o.strata, metric)
        elif seed_resampled is not None and seed_resampled[j] is not None:
            values = metric_draws(seed_resampled[j], w, o.strata, metric, per_replicate=True)
        else:
            values = metric_draws(o.correct, w, o.strata, metric)
        total = total + values[..., :first].mean(axis=-1) - values[..., first:].mean(axis=-1)
    return total / len(outcomes)


class Evidence:
    """One study's matrix, per-example scores and analysis files."""

    def __init__(self, folder: Path, config: StudyConfig, matrix: pd.DataFrame,
                 load_records: Callable[[], pd.DataFrame]):
        self.folder = Path(folder)
        self.config = config
        self.matrix = matrix
        self._load_records = load_records
        self.cache: dict = {}  # results that several claims share (the trait tests)

    @classmethod
    def of_folder(cls, folder: str | Path) -> "Evidence":
        """A run folder or an export of one, as `Study.load` reads it."""
        study = Study.load(folder)
        matrix = study.matrix
        if matrix.isna().all(axis=None):
            raise TraitmapError("no cell evaluated: the study has not been evaluated yet", file=study.out_dir)
        return cls(study.out_dir, study.config, matrix, lambda: study.records()[list(SCORE_FIELDS)])

    @classmethod
    def of_study(cls, study: Study) -> "Evidence":
        return cls(study.out_dir, study.config, study.matrix, study.records)

    @property
    def name(self) -> str:
        return self.config.name

    @cached_property
    def records(self) -> pd.DataFrame:
        return self._load_records()

    @cached_property
    def draws(self) -> MatrixDraws:
        return resample_matrix(self.records, N_BOOT, BOOT_SEED)

    def table(self, name: str) -> pd.DataFrame | None:
        path = self.folder / "analysis" / name
        return pd.read_csv(path) if path.is_file() else None

    def document(self, name: str) -> dict | None:
        """A JSON file of the study: pca.json sits beside matrix.csv, the rest under analysis/."""
        for path in (self.folder / name, self.folder / "analysis" / name):
            if path.is_file():
                return json.loads(path.read_text(encoding="utf-8"))
        return None

    # which adapters are which ------------------------------------------------------------
    def adapter(self, task: str, variant_kind: str | None = None) -> str | None:
        """The adapter trained on `task` (in that variant, or plain), if the study has one."""
        for source in self.config.sources:
            kind = (source.variant or {}).get("kind")
            if source.task == task and kind == variant_kind and source.name in self.matrix.index:
                return source.name
        return None

    def plain_adapters(self, tag: str) -> list[str]:
        """Adapters trained, without a variant, on a task carrying `tag`."""
        return [s.name for s in self.config.sources
                if not s.variant and tag in self.task(s.task).tags and s.name in self.matrix.index]

    def targets(self, tag: str | None = None) -> list[str]:
        return [t for t in self.matrix.columns if tag is None or tag in self.task(t).tags]

    def task(self, name: str):
        return tasks.get(name, extra_dirs=self.config.task_dirs)

    # estimates ---------------------------------------------------------------------------
    def difference(self, first: Iterable[str], second: Iterable[str], targets: Iterable[str]) -> Estimate:
        """Mean score of the `first` models minus that of the `second`, averaged over `targets`
        (the same paired bootstrap as the claims' verdicts)."""
        return self.contrast(list(first), list(second), list(targets)).estimate

    def score(self, model: str, target: str) -> Estimate:
        models, columns = list(self.draws.point.index), list(self.draws.point.columns)
        i, j = models.index(model), columns.index(target)
        low, high = percentile_interval(self.draws.draws[:, i, j], LEVEL)
        return Estimate(float(self.draws.point.iat[i, j]), float(low), float(high))

    def examples(self, target: str) -> int:
        return int(self.draws.n[target].max())

    def outcomes(self, target: str, models: list[str]) -> Outcomes:
        """Per-example outcomes of `models` on `target`, over the examples all of them answered."""
        part = self.records[(self.records["task"] == target) & self.records["model"].isin(models)]
        per_seed = part.groupby(["model", "seed", "example_id"])["correct"].mean().unstack("example_id")
        answered = per_seed.notna().groupby(level="model").all().reindex(models, fill_value=False)
        examples = answered.columns[answered.all(axis=0).to_numpy(dtype=bool)]
        if len(examples) == 0:
            raise TraitmapError(f"no example of {target} answered by all of {', '.join(models)}")
        per_seed = per_seed[examples]
        by_seed = tuple(per_seed.xs(model, level="model").to_numpy(dtype=float) for model in models)
        gold = part.drop_duplicates("example_id").set_index("example_id")["gold"].astype(str).reindex(examples)
        return Outcomes(np.stack([seeds.mean(axis=0) for seeds in by_seed]), pd.factorize(gold)[0], by_seed)

    def contrast(self, first: list[str], second: list[str], targets: list[str], metric: str = "accuracy",
                 n_boot: int = N_BOOT) -> Contrast:
        """Paired bootstrap of a difference between two groups of models: each replicate
        resamples every target's examples once for all models, and each model's training seeds."""
        if not first or not second or not targets:
            raise TraitmapError("a difference needs models on both sides and at least one target")
        outcomes = [self.outcomes(t, list(first) + list(second)) for t in targets]
        rng = np.random.default_rng(BOOT_SEED)
        weights = [resample_counts(rng, n_boot, o.n) for o in outcomes]
        replicates = contrast_draws(len(first), outcomes, metric, weights,
                                    seed_resampled=[o.seed_resampled(rng, n_boot) for o in outcomes])
        point = float(contrast_draws(len(first), outcomes, metric, [np.ones((1, o.n)) for o in outcomes])[0])
        low, high = percentile_interval(replicates, LEVEL)
        return Contrast(len(first), outcomes, metric, Estimate(point, float(low), float(high)), replicates)

    def balanced_accuracy(self, model: str, target: str) -> float:
        part = self.records[(self.records["task"] == target) & (self.records["model"] == model)]
        return balanced_accuracy(part["parsed"].fillna("").astype(str).tolist(), part["gold"].astype(str).tolist())

    # training ----------------------------------------------------------------------------
    def unconverged(self, adapters: Iterable[str]) -> list[str]:
        """Adapters that had not finished learning: adapters.csv's `converged` where the study
        has it, else those whose training loss still fell over the last quarter of steps."""
        adapters = [a for a in adapters if a != "base"]
        table = self.folder / ADAPTERS_FILE
        if table.is_file():
            frame = pd.read_csv(table)
            flags = frame.groupby("adapter")["converged"].apply(lambda c: bool(c.astype(bool).all()))
            return [a for a in adapters if a in flags.index and not flags[a]]
        status = loss_still_falling(self.folder / TRAINING_FILE)
        return [a for a in adapters if status.get(a, False)]

    @property
    def convergence_source(self) -> str:
        if (self.folder / ADAPTERS_FILE).is_file():
            return "held-out loss (adapters.csv)"
        return "no held-out loss was recorded; read from the training loss of the last quarter of steps"


def loss_still_falling(path: Path, alpha: float = 0.05) -> dict[str, bool]:
    """Per adapter: did its training loss still fall over the last quarter of its steps
    (least-squares slope below zero, p < alpha)? Empty when there is no training log."""
    if not path.is_file():
        return {}
    log = pd.read_csv(path)
    falling = {}
    for adapter, part in log.groupby("adapter"):
        last = part[part["step"] > part["step"].max() * 0.75]
        if len(last) < 4 or last["step"].nunique() < 2:
            continue
        fit = linregress(last["step"], last["loss"])
        falling[str(adapter)] = bool(fit.slope < 0 and fit.pvalue < alpha)
    return falling
