"""Class distribution: adapters inherit their source's label balance.

The paper's Flipkart example: an IMDB adapter (binary) answers positive/negative with
confidence, a toxicity adapter says "neutral" more. `ClassAnalysis` puts numbers on it:
each source's label distribution, each model's predicted distribution and confusion
matrix on every choice target, and how far predictions sit from the gold distribution,
from the source's distribution and from the base model's predictions. The functions after
it turn the saved confusion table, the choice cells and their answer rates into the shares
and gains the report lays out, so the report computes none of them itself.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.spatial.distance import jensenshannon
from scipy.stats import entropy

from traitmap.analysis.lengths import adapter_names
from traitmap.files import json_ready, write_csv, write_json

BASE = "base"
# What an unparseable or empty prediction is counted as, so it stays visible.
NO_ANSWER = "(none)"


def shares(counts: pd.Series) -> pd.Series:
    total = counts.sum()
    return counts / total if total > 0 else counts.astype(float)


def js_distance(p: pd.Series, q: pd.Series) -> float:
    """Jensen-Shannon distance (base 2, in [0, 1]) over the union of labels; NaN when
    the two share no label (different label sets say nothing about balance)."""
    labels = p.index.union(q.index)
    if not p.index.intersection(q.index).size or p.sum() <= 0 or q.sum() <= 0:
        return float("nan")
    return float(jensenshannon(p.reindex(labels, fill_value=0).to_numpy(float), q.reindex(labels, fill_value=0).to_numpy(float), base=2))


class ClassAnalysis:
    """Label distributions and confusion matrices of base and adapters on choice targets."""

    def __init__(self, base: str = BASE):
        self.base = base

    def fit(
        self,
        records: pd.DataFrame,
        source_labels: Mapping[str, Sequence[str]],
        choices: Mapping[str, Sequence[str]] | None = None,
    ) -> "ClassAnalysis":
        """records: choice-target records (model, task, example_id, parsed, gold), all
        seeds pooled;
        source_labels: adapter name -> labels of the examples it trained on (classification
        sources only); choices: task -> verbalizers in label order (keeps zero-count
        labels and a stable order)."""
        choices = dict(choices or {})
        frame = records[["model", "task", "example_id", "parsed", "gold"]].copy()
        frame["parsed"] = frame["parsed"].fillna("").astype(str).str.strip().replace("", NO_ANSWER)
        frame["gold"] = frame["gold"].astype(str)

        self.source_distribution_ = self._source_distribution(source_labels)
        self.gold_distribution_ = self._gold_distribution(frame, choices)
        self.predicted_distribution_ = self._distribution(frame, choices)
        self.confusion_ = (
            frame.groupby(["task", "model", "gold", "parsed"]).size().rename("count").reset_index()
            .rename(columns={"parsed": "predicted"})
        )
        self.bias_ = self._bias()
        self.divergence_ = self._divergence()
        return self

    @staticmethod
    def _source_distribution(source_labels) -> pd.DataFrame:
        rows = []
        for source, labels in source_labels.items():
            counts = pd.Series(list(labels), dtype=str).value_counts().sort_index()
            rows += [{"source": source, "label": label, "count": int(c), "share": s} for label, c, s in zip(counts.index, counts, shares(counts))]
        return pd.DataFrame(rows, columns=["source", "label", "count", "share"])

    @staticmethod
    def _order(task: str, observed: Sequence[str], choices) -> list[str]:
        """The task's verbalizers first (in label order), then anything else seen."""
        known = list(choices.get(task) or [])
        return known + sorted(set(observed) - set(known))

    def _gold_distribution(self, frame: pd.DataFrame, choices) -> pd.DataFrame:
        """Gold labels counted once per evaluated example, however many models and seeds
        were evaluated on it."""
        rows = []
        for task, part in frame.drop_duplicates(["task", "example_id"]).groupby("task", sort=True):
            counts = part["gold"].value_counts().reindex(self._order(task, part["gold"], choices), fill_value=0)
            rows += [{"task": task, "label": label, "count": int(c), "share": s} for label, c, s in zip(counts.index, counts, shares(counts))]
        return pd.DataFrame(rows, columns=["task", "label", "count", "share"])

    def _distribution(self, frame: pd.DataFrame, choices) -> pd.DataFrame:
        rows = []
        for (task, model), part in frame.groupby(["task", "model"], sort=True):
            labels = self._order(task, frame.loc[frame["task"] == task, "parsed"], choices)
            counts = part["parsed"].value_counts().reindex(labels, fill_value=0)
            rows += [{"task": task, "model": model, "label": label, "count": int(c), "share": s} for label, c, s in zip(counts.index, counts, shares(counts))]
        return pd.DataFrame(rows, columns=["task", "model", "label", "count", "share"])

    def _bias(self) -> pd.DataFrame:
        """Per (task, model, label): predicted share minus gold share (positive: the model
        over-predicts this label)."""
        gold = self.gold_distribution_.set_index(["task", "label"])["share"]
        table = self.predicted_distribution_.rename(columns={"share": "predicted_share"})
        table["gold_share"] = [gold.get((t, label), 0.0) for t, label in zip(table["task"], table["label"])]
        table["excess"] = table["predicted_share"] - table["gold_share"]
        return table[["task", "model", "label", "predicted_share", "gold_share", "excess"]]

    def _divergence(self) -> pd.DataFrame:
        """Per (task, model): entropy of predictions vs gold, the most predicted label and
        its excess, and JS distances to gold, to the source's labels and to the base."""
        predicted = self.predicted_distribution_.set_index(["task", "model", "label"])["count"]
        gold = self.gold_distribution_.set_index(["task", "label"])["count"]
        source = self.source_distribution_.set_index(["source", "label"])["count"]
        sources = set(self.source_distribution_["source"])
        evaluated = set(predicted.droplevel("label").index)
        rows = []
        for (task, model), counts in predicted.groupby(level=["task", "model"], sort=True):
            counts = counts.droplevel(["task", "model"])
            answered = counts.drop(NO_ANSWER, errors="ignore")
            task_gold = gold.loc[task]
            top = answered.idxmax() if answered.sum() > 0 else NO_ANSWER
            base = predicted.loc[(task, self.base)] if (task, self.base) in evaluated else None
            n_labels = max(len(task_gold), 2)
            rows.append({
                "task": task,
                "model": model,
                "n": int(counts.sum()),
                "no_answer_share": float(counts.get(NO_ANSWER, 0) / counts.sum()) if counts.sum() else np.nan,
                "entropy": float(entropy(answered, base=2)) if answered.sum() else np.nan,
                "normalized_entropy": float(entropy(answered, base=2) / np.log2(n_labels)) if answered.sum() else np.nan,
                "gold_entropy": float(entropy(task_gold, base=2)),
                "top_label": top,
                "top_share": float(shares(answered).get(top, np.nan)),
                "top_gold_share": float(shares(task_gold).get(top, 0.0)),
                "js_to_gold": js_distance(answered, task_gold),
                "js_to_source": js_distance(answered, source.loc[model]) if model in sources else np.nan,
                "js_to_base": js_distance(answered, base.drop(NO_ANSWER, errors="ignore")) if base is not None and model != self.base else np.nan,
            })
        table = pd.DataFrame(rows)
        if len(table):
            table["top_excess"] = table["top_share"] - table["top_gold_share"]
        return table

    def confusion_matrix(self, task: str, model: str) -> pd.DataFrame:
        """gold (rows) x predicted (columns) counts for one model on one task."""
        confusion = self.confusion_
        return confusion_counts(confusion[(confusion["task"] == task) & (confusion["model"] == model)])

    def to_dict(self) -> dict:
        return json_ready({
            "source_distribution": self.source_distribution_.to_dict(orient="records"),
            "gold_distribution": self.gold_distribution_.to_dict(orient="records"),
            "predicted_distribution": self.predicted_distribution_.to_dict(orient="records"),
            "confusion": self.confusion_.to_dict(orient="records"),
            "divergence": self.divergence_.to_dict(orient="records"),
        })


# --- read back from classes_confusion.csv (task, model, gold, predicted, count) --------------

GOLD_ROW = "gold labels"  # the row of answer_shares that holds the gold labels' shares


def confusion_counts(confusion: pd.DataFrame, labels: Sequence[str] | None = None) -> pd.DataFrame:
    """gold (rows) x predicted (columns) counts of one model on one task, over `labels` when given."""
    counts = confusion.pivot_table(index="gold", columns="predicted", values="count", aggfunc="sum", fill_value=0)
    return counts if labels is None else counts.reindex(index=labels, columns=labels, fill_value=0)


def row_shares(table: pd.DataFrame) -> pd.DataFrame:
    """Each row divided by its total, so rows of counts read as shares; a row of zeros stays zero."""
    return table.div(table.sum(axis=1).replace(0, np.nan), axis=0).fillna(0)


def label_order(confusion: pd.DataFrame) -> list[str]:
    """One task's labels: the gold labels, most frequent first, then any other answer by name."""
    labels = list(confusion.groupby("gold")["count"].sum().sort_values(ascending=False).index)
    return labels + sorted(set(confusion["predicted"]) - set(labels))


def answer_shares(confusion: pd.DataFrame, models: Sequence[str], labels: Sequence[str]) -> pd.DataFrame:
    """One task's label mix: the gold labels' shares (row GOLD_ROW, counted on the first model's
    examples) and then each model's answer shares, over `labels`."""
    answered = confusion.pivot_table(index="model", columns="predicted", values="count", aggfunc="sum", fill_value=0)
    answered = answered.reindex(index=list(models), columns=list(labels), fill_value=0)
    gold = confusion[confusion["model"] == models[0]].groupby("gold")["count"].sum().reindex(labels, fill_value=0)
    return row_shares(pd.concat([pd.DataFrame([gold], index=[GOLD_ROW]), answered]))


def answer_balance(confusion: pd.DataFrame) -> pd.DataFrame:
    """Per (model, task), seeds pooled, against the gold labels of the same examples: the most
    answered label and its share, the largest gold share, and the label whose answer share sits
    furthest from its gold share (gap = answer share - gold share), with both shares."""
    rows = []
    for (model, task), part in confusion.groupby(["model", "task"], sort=False):
        total = part["count"].sum()
        if total <= 0:
            continue
        answered = part.groupby("predicted")["count"].sum() / total
        gold = part.groupby("gold")["count"].sum() / total
        labels = gold.index.union(answered.index)
        gap = answered.reindex(labels, fill_value=0) - gold.reindex(labels, fill_value=0)
        furthest = gap.abs().idxmax()
        rows.append({"model": model, "task": task, "top_label": answered.idxmax(), "top_share": answered.max(),
                     "largest_gold_share": gold.max(), "furthest_label": furthest, "furthest_gap": gap[furthest],
                     "furthest_share": answered.get(furthest, 0.0), "furthest_gold_share": gold.get(furthest, 0.0)})
    return pd.DataFrame(rows, columns=["model", "task", "top_label", "top_share", "largest_gold_share", "furthest_label",
                                       "furthest_gap", "furthest_share", "furthest_gold_share"])


# --- read back from the results' choice cells and answer rates --------------------------------


def balanced_gains(cells: pd.DataFrame, base: str = BASE) -> pd.DataFrame:
    """Per choice cell (model, task), seeds averaged: an adapter's gain over the base model in
    accuracy and in balanced accuracy (NaN for the base model and where the task has no base
    cell). Accuracy rewards answering the majority label; balanced accuracy does not."""
    means = cells.dropna(subset=["balanced_accuracy"]).groupby(["model", "task"], sort=False)[
        ["accuracy", "balanced_accuracy"]].mean().reset_index()
    base_means = means[means["model"] == base].drop(columns="model")
    gains = means[means["model"] != base].merge(base_means, on="task", suffixes=("", "_base"))
    gains["accuracy_gain"] = gains["accuracy"] - gains["accuracy_base"]
    gains["balanced_gain"] = gains["balanced_accuracy"] - gains["balanced_accuracy_base"]
    return means[["model", "task"]].merge(gains[["model", "task", "accuracy_gain", "balanced_gain"]], how="left",
                                          on=["model", "task"])


def answer_mix(rates: pd.DataFrame) -> pd.DataFrame:
    """Per (model, task), seeds averaged: the most answered label, its answer and gold rates,
    and the total variation distance between the answer mix and the gold mix."""
    mean = rates.groupby(["model", "task", "label"], sort=False)[["rate", "gold_rate"]].mean().reset_index()
    mean["gap"] = (mean["rate"] - mean["gold_rate"]).abs()
    top = mean.loc[mean.groupby(["model", "task"], sort=False)["rate"].idxmax(), ["model", "task", "label", "rate",
                                                                                   "gold_rate"]]
    distance = (mean.groupby(["model", "task"], sort=False)["gap"].sum() / 2).rename("distance").reset_index()
    return top.merge(distance, on=["model", "task"])


MINIMUM = "a choice target (answer rates are counted over its labels)"


def shortfall(study) -> str | None:
    if any(study.task(t).kind == "choice" for t in study.config.targets):
        return None
    return f"needs {MINIMUM}; this study's targets are all generate tasks"


def run(study, out_dir: Path) -> list[Path]:
    """classes.json, classes_source.csv, classes_gold.csv, classes_predicted.csv,
    classes_confusion.csv, classes_bias.csv, classes_divergence.csv."""
    out_dir = Path(out_dir)
    targets = [t for t in study.config.targets if study.task(t).kind == "choice"]
    if not targets:
        return []
    records = pd.concat([study.records(task=t) for t in targets], ignore_index=True)
    source_labels = {}
    for name in adapter_names(study):
        labels = [e.label for e in study.source_examples(name) if e.label is not None]
        if labels:
            source_labels[name] = labels
    analysis = ClassAnalysis().fit(records, source_labels, {t: study.task(t).choices for t in targets})
    return [
        write_json(out_dir / "classes.json", analysis.to_dict()),
        write_csv(out_dir / "classes_source.csv", analysis.source_distribution_),
        write_csv(out_dir / "classes_gold.csv", analysis.gold_distribution_),
        write_csv(out_dir / "classes_predicted.csv", analysis.predicted_distribution_),
        write_csv(out_dir / "classes_confusion.csv", analysis.confusion_),
        write_csv(out_dir / "classes_bias.csv", analysis.bias_),
        write_csv(out_dir / "classes_divergence.csv", analysis.divergence_),
    ]
