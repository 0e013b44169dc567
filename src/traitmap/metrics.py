"""Cell metrics from per-example answers: what a cell's score can be built on.

Accuracy on an imbalanced target rewards answering the majority label, so a choice cell
also carries balanced accuracy (the mean of per-gold-label recall: always answering one
label scores 1 / number of labels) and macro-F1, and the share of each label answered.
An unparsed answer is wrong for every label.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

CHOICE_METRICS = ("accuracy", "balanced_accuracy", "macro_f1")
DEFAULT_METRIC = "accuracy"  # the paper's


def _pairs(parsed: Sequence, gold: Sequence) -> tuple[np.ndarray, np.ndarray]:
    if len(parsed) != len(gold):
        raise ValueError(f"{len(parsed)} answers for {len(gold)} gold labels")
    return np.asarray([str(p) if p is not None else "" for p in parsed], dtype=object), np.asarray([str(g) for g in gold], dtype=object)


def accuracy(parsed: Sequence, gold: Sequence) -> float:
    answered, truth = _pairs(parsed, gold)
    return float(np.mean(answered == truth)) if len(truth) else float("nan")


def balanced_accuracy(parsed: Sequence, gold: Sequence) -> float:
    """Mean over the gold labels present of the share of their examples answered right."""
    answered, truth = _pairs(parsed, gold)
    labels = sorted(set(truth))
    if not labels:
        return float("nan")
    return float(np.mean([np.mean(answered[truth == label] == label) for label in labels]))


def macro_f1(parsed: Sequence, gold: Sequence, labels: Sequence[str]) -> float:
    """Mean F1 over the task's labels (a label never answered nor gold scores 0)."""
    answered, truth = _pairs(parsed, gold)
    if not len(truth):
        return float("nan")
    scores = []
    for label in labels:
        hit = np.sum((answered == label) & (truth == label))
        said, real = np.sum(answered == label), np.sum(truth == label)
        scores.append(2 * hit / (said + real) if said + real else 0.0)
    return float(np.mean(scores))


def answer_rates(parsed: Sequence, labels: Sequence[str]) -> dict[str, float]:
    """Share of examples answered with each label, plus "" for unparsed answers."""
    answered = [str(p) if p is not None else "" for p in parsed]
    n = len(answered)
    rates = {label: (sum(a == label for a in answered) / n if n else float("nan")) for label in labels}
    rates[""] = (sum(a not in rates for a in answered) / n) if n else float("nan")
    return rates


def choice_metrics(parsed: Sequence, gold: Sequence, labels: Sequence[str]) -> dict[str, float]:
    return {
        "accuracy": accuracy(parsed, gold),
        "balanced_accuracy": balanced_accuracy(parsed, gold),
        "macro_f1": macro_f1(parsed, gold, labels),
    }


@dataclass(frozen=True)
class CellMetrics:
    """What one cell (model, seed, target) is scored by.

    score is the task's own metric (what the cell's `score` column holds); values holds
    every metric computed for the cell by name (a choice cell: `CHOICE_METRICS`; a generate
    cell: its one metric); answer_rates the share of each label answered (choice cells).
    """

    score: float
    values: dict[str, float] = field(default_factory=dict)
    answer_rates: dict[str, float] = field(default_factory=dict)


CELL_KEY = ["model", "seed", "task"]


def metric_tables(records: pd.DataFrame, task_of: Callable) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Every choice cell's metrics from its per-example records (model, seed, task, parsed,
    gold, correct), as its task computes them (`task_of(name)` gives the task): a table of
    model, seed, task and `CHOICE_METRICS`, and the answer rates as `with_gold_rates` gives them.
    """
    rows, rates = [], []
    for (model, seed, name), cell in records.groupby(CELL_KEY, sort=False):
        task = task_of(name)
        if task.kind != "choice":
            continue
        computed = task.cell_metrics(cell)
        rows.append({"model": model, "seed": seed, "task": name, **computed.values})
        rates += [{"model": model, "seed": seed, "task": name, "label": label, "rate": rate}
                  for label, rate in computed.answer_rates.items()]
    return (pd.DataFrame(rows, columns=[*CELL_KEY, *CHOICE_METRICS]),
            with_gold_rates(pd.DataFrame(rates, columns=[*CELL_KEY, "label", "rate"]), records))


def with_gold_rates(rates: pd.DataFrame, records: pd.DataFrame) -> pd.DataFrame:
    """Answer rates (model, seed, task, label, rate) beside each label's share of the cell's
    gold answers (`gold_rate`; 0 for "", no answer): an answer mix far from the gold mix is
    answer bias."""
    gold = (records.groupby(CELL_KEY, sort=False)["gold"].value_counts(normalize=True)
            .rename("gold_rate").reset_index().rename(columns={"gold": "label"}))
    gold["label"] = gold["label"].astype(str)
    merged = rates.merge(gold, how="left", on=[*CELL_KEY, "label"])
    merged["gold_rate"] = merged["gold_rate"].fillna(0.0)
    return merged
