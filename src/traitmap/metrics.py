"""Cell metrics from per-example answers: what a cell's score can be built on.

Accuracy on an imbalanced target rewards answering the majority label, so a choice cell
also carries balanced accuracy (the mean of per-gold-label recall: always answering one
label scores 1 / number of labels) and macro-F1, and the share of each label answered.
An unparsed answer is wrong for every label.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

CHOICE_METRICS = ("accuracy", "balanced_accuracy", "macro_f1")


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
