"""Where accuracy and balanced accuracy disagree, for the matrix section.

On an imbalanced target, accuracy rewards answering the majority label: an adapter can
gain accuracy by answering one label more often without telling the labels apart any
better. Balanced accuracy (always one label scores 1 / number of labels) does not
reward that, so a cell whose accuracy gain is positive and whose balanced-accuracy gain
is not, or whose answers are mixed far from the gold labels, is shown here.
"""

from __future__ import annotations

import pandas as pd

from traitmap.analysis.classes import answer_mix, balanced_gains
from traitmap.metrics import DEFAULT_METRIC

from .blocks import Table
from .common import percent, points

# Total variation distance between the answer mix and the gold mix: at 0.25, a quarter of
# the answers would have to change label for the mixes to match.
BIAS_DISTANCE = 0.25
MAX_ROWS = 20
METRIC_NAMES = {"accuracy": "accuracy", "balanced_accuracy": "balanced accuracy", "macro_f1": "macro-F1"}


def metric_disagreement(study) -> tuple[list[str], list]:
    """Sentences and a table: the matrix's metric, and the cells where accuracy and balanced
    accuracy tell different stories (nothing more for a study without choice targets)."""
    metric = getattr(study.config, "metric", DEFAULT_METRIC)
    sentences = [f"Choice targets are scored in {METRIC_NAMES[metric]} (the study's [analysis] metric); "
                 "generate targets keep their own metric."]
    cells = getattr(study, "cells", None)
    if cells is None or cells.empty or cells["balanced_accuracy"].isna().all():
        return sentences, []
    table = balanced_gains(cells).merge(answer_mix(study.answer_rates()), how="left", on=["model", "task"])
    compared = int(table["balanced_gain"].notna().sum())
    table["disagree"] = (table["accuracy_gain"] > 0) & (table["balanced_gain"] <= 0)
    table["biased"] = table["distance"] >= BIAS_DISTANCE
    shown = table[table["disagree"] | table["biased"]].sort_values(["disagree", "distance"], ascending=False)

    disagree = shown[shown["disagree"]]
    if len(disagree):
        worst = disagree.loc[(disagree["accuracy_gain"] - disagree["balanced_gain"]).idxmax()]
        sentences.append(
            f"On {len(disagree)} of {compared} adapter–target cells on choice targets the accuracy gain is positive "
            f"but the balanced-accuracy gain is not: the adapter gains by favouring the more frequent labels, not by "
            f"telling the labels apart better. The largest is {worst['model']} on {worst['task']} ({points(worst['accuracy_gain'])} "
            f"points in accuracy, {points(worst['balanced_gain'])} in balanced accuracy; it answers "
            f"'{worst['label']}' on {percent(worst['rate'])} of the examples, against {percent(worst['gold_rate'])} "
            "in the gold labels).")
    elif compared:
        sentences.append("No adapter gains accuracy on a choice target without gaining balanced accuracy too.")
    far = int(table["biased"].sum())
    if far:
        sentences.append(f"{far} of {len(table)} cells on choice targets answer with a label mix more than "
                         f"{BIAS_DISTANCE:.0%} away from the gold mix (total variation).")
    if shown.empty:
        return sentences, []
    rows = [[r.model, r.task, _gain(r.accuracy_gain), _gain(r.balanced_gain),
             f"{r.label}: {percent(r.rate)} (gold {percent(r.gold_rate)})", percent(r.distance)]
            for r in shown.head(MAX_ROWS).itertuples()]
    first = f"the first {MAX_ROWS} of {len(shown)}: " if len(shown) > MAX_ROWS else ""
    return sentences, [Table(
        columns=["model", "target", "accuracy gain", "balanced-accuracy gain", "most answered label",
                 "answer mix off gold"],
        rows=rows,
        caption=(f"Choice cells where accuracy gains and balanced-accuracy gains disagree, or whose answers are mixed "
                 f"more than {BIAS_DISTANCE:.0%} away from the gold labels ({first}disagreements first, then the "
                 "furthest from the gold mix; gains in points, seeds averaged)."))]


def _gain(value: float) -> str:
    return "—" if pd.isna(value) else points(value)
