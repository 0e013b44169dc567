"""How often a claim's rule says "reproduced" when the claim is false, and how often when
it holds at the paper's size: each rule is rerun on data simulated from the study's own.

A null keeps what the study measured and removes the claimed effect (per-example outcomes
with the model identity permuted, binomial noise at the base model's rates, a statistic
recentred on its null value); a planted effect adds the paper's size to that null. The
rule is the one the verdict uses, with fewer bootstrap replicates (SIM_BOOT), over
N_SIMULATIONS data sets drawn with a fixed seed, so the rates are deterministic.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
from scipy.stats import norm

from traitmap.analysis.uncertainty import percentile_interval, resample_counts

from .evidence import LEVEL, Contrast, contrast_draws

N_SIMULATIONS = 1000  # data sets per rate: a 3% rate is then known to about +-0.5 points
PIPELINE_SIMULATIONS = 200  # for rules that run a permutation test or a cluster bootstrap on each data set
SIM_BOOT = 200
SIM_SEED = 1
POWER_TARGET = 0.8

# rule(point, low, high) -> bool arrays: does the rule say "reproduced"?
Rule = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]


@dataclass(frozen=True)
class Calibration:
    """A rule's rate of "reproduced" under its null and at the paper's effect."""

    false_positive: float
    power: float | None
    null: str     # the null, in words
    effect: str   # the planted effect, in words


def rng() -> np.random.Generator:
    return np.random.default_rng(SIM_SEED)


def bootstrap_rate(rule: Rule, point: np.ndarray, replicates: np.ndarray) -> float:
    """Share of simulated data sets (rows) on which the rule says reproduced; replicates (S, B)."""
    low, high = percentile_interval(replicates.T, LEVEL)
    return float(np.mean(rule(point, low, high)))


def exchanged(c: Contrast, generator: np.random.Generator, n: int | None = None) -> list[np.ndarray]:
    """Per target, n copies of the outcomes with the models' identity permuted per example:
    every model is then as good as every other (the null of no difference)."""
    sims, n = [], n or N_SIMULATIONS
    for o in c.outcomes:
        order = generator.random((n,) + o.correct.shape).argsort(axis=1)
        sims.append(np.take_along_axis(np.broadcast_to(o.correct, order.shape), order, axis=1))
    return sims


def planted(c: Contrast, sims: list[np.ndarray], effect: float, generator: np.random.Generator) -> list[np.ndarray]:
    """The first group made better by `effect` (metric units): wrong answers turned right
    (or right ones wrong, for a negative effect) at the rate that moves its mean so far."""
    shifted = []
    for o, correct in zip(c.outcomes, sims):
        level = float(np.mean(correct))
        out = correct.copy()
        first = out[:, : c.first]
        flips = generator.random(first.shape)
        if effect > 0:
            rate = min(1.0, effect / max(1e-9, 1 - level))
            first += (1 - first) * (flips < rate)
        elif effect < 0:
            rate = min(1.0, -effect / max(1e-9, level))
            first *= flips >= rate
        shifted.append(out)
    return shifted


def contrast_rate(c: Contrast, sims: list[np.ndarray], rule: Rule, generator: np.random.Generator) -> float:
    weights = [resample_counts(generator, SIM_BOOT, o.n) for o in c.outcomes]
    replicates = contrast_draws(c.first, c.outcomes, c.metric, weights, sims)
    point = contrast_draws(c.first, c.outcomes, c.metric, [np.ones((1, o.n)) for o in c.outcomes], sims)[:, 0]
    return bootstrap_rate(rule, point, replicates)


def calibrate_contrast(c: Contrast, rule: Rule, nulls: list[float], effect: float, null: str,
                       effect_text: str) -> Calibration:
    """The worst false-"reproduced" rate over the null differences `nulls` and the power
    at `effect`, on exchanged outcomes with those differences planted."""
    generator = rng()
    base = exchanged(c, generator)
    false_positive = max(contrast_rate(c, planted(c, base, d, generator), rule, generator) for d in nulls)
    power = contrast_rate(c, planted(c, base, effect, generator), rule, generator)
    return Calibration(false_positive, power, null, effect_text)


def examples_for_power(c: Contrast, effect: float, power: float = POWER_TARGET, level: float = LEVEL) -> int | None:
    """Examples per target that would detect `effect` with `power` (normal approximation,
    the per-example spread of the paired differences seen here); None where it is zero."""
    spread = 0.0
    for o in c.outcomes:
        difference = o.correct[: c.first].mean(axis=0) - o.correct[c.first:].mean(axis=0)
        if c.metric == "balanced_accuracy":  # balanced accuracy weighs each example by 1 / its label's count
            labels, counts = np.unique(o.strata, return_counts=True)
            weight = o.n / (len(labels) * counts[np.searchsorted(labels, o.strata)])
            difference = difference * weight
        spread += difference.var()
    spread /= len(c.outcomes) ** 2
    if spread <= 0 or effect == 0:
        return None
    z = norm.ppf(1 - (1 - level) / 2) + norm.ppf(power)
    return int(np.ceil(z ** 2 * spread / effect ** 2))


def weighted_median(values: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Median of `values` (P,) under each row of `weights` (B, P)."""
    order = np.argsort(values)
    cumulative = np.cumsum(weights[:, order], axis=1)
    half = cumulative[:, -1:] / 2
    return values[order][np.argmax(cumulative >= half, axis=1)]


def two_way_weights(rows: np.ndarray, columns: np.ndarray, n_boot: int, generator: np.random.Generator) -> np.ndarray:
    """Weights of pairs (row i, column j) when rows and columns are each resampled with
    replacement: a pair counts as often as its row times its column is drawn. (B, P)."""
    row_ids, row_index = np.unique(rows, return_inverse=True)
    col_ids, col_index = np.unique(columns, return_inverse=True)
    row_counts = resample_counts(generator, n_boot, len(row_ids))
    col_counts = resample_counts(generator, n_boot, len(col_ids))
    return row_counts[:, row_index] * col_counts[:, col_index]


def holm(p_values: list[float | None]) -> list[float | None]:
    """Holm-adjusted p-values (step-down, monotone), None kept where a claim has no p."""
    present = [(p, i) for i, p in enumerate(p_values) if p is not None]
    adjusted: list[float | None] = [None] * len(p_values)
    running = 0.0
    m = len(present)
    for rank, (p, i) in enumerate(sorted(present)):
        running = max(running, min(1.0, (m - rank) * p))
        adjusted[i] = running
    return adjusted
