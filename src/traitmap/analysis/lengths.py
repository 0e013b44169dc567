"""Generation length: does an adapter inherit its source's answer length, and does a
length that matches the target's reference answers go with a larger gain?

The paper explains why the code adapter helps GSM8K more than the arithmetic one: code
answers are long, like GSM8K's step-by-step solutions, and a fine-tuned model's output
length sits between the base model's and its source's. `LengthAnalysis` measures that
position (the interpolation coefficient) and relates the length gap to the gain.
`LabelLengthAnalysis` shows label-length coupling in classification data (the paper's
IMDB/Flipkart per-label length KDEs).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from traitmap.analysis import analysis_settings
from traitmap.files import json_ready, write_csv, write_json

BASE = "base"
MEASURES = ("chars", "words", "tokens")


def text_lengths(texts: Sequence[str]) -> pd.DataFrame:
    """Character and whitespace-word counts of each text."""
    texts = ["" if t is None else str(t) for t in texts]
    return pd.DataFrame({"chars": [len(t) for t in texts], "words": [len(t.split()) for t in texts]})


def kde_on_grid(values: Sequence[float], grid: np.ndarray) -> np.ndarray:
    """Gaussian KDE (Scott's bandwidth) evaluated on `grid`; NaN when the values cannot
    carry a density (fewer than two, or all equal)."""
    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values)]
    if len(values) < 2 or np.ptp(values) == 0:
        return np.full(len(grid), np.nan)
    return stats.gaussian_kde(values)(grid)


def shared_grid(samples: Sequence[Sequence[float]], size: int, upper_quantile: float = 0.99) -> np.ndarray:
    """One grid for curves drawn together: from 0 to a high quantile of all values pooled
    (long tails would otherwise squeeze every curve into the left edge)."""
    pooled = np.concatenate([np.asarray(s, dtype=float) for s in samples if len(s)] or [np.zeros(1)])
    pooled = pooled[np.isfinite(pooled)]
    top = float(np.quantile(pooled, upper_quantile)) if len(pooled) else 1.0
    return np.linspace(0.0, max(top * 1.1, 1.0), size)


def interpolation_coefficient(base_median: float, adapter_median: float, source_median: float) -> float:
    """Where the adapter's median sits on the line from the base model (0) to its source
    (1); NaN when base and source have the same median (no line to sit on)."""
    span = source_median - base_median
    if not np.isfinite(span) or span == 0 or not np.isfinite(adapter_median):
        return float("nan")
    return float((adapter_median - base_median) / span)


def spearman(x: Sequence[float], y: Sequence[float]) -> tuple[float, float, int]:
    """Spearman rho and p over pairs where both are finite; NaN below three pairs."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    keep = np.isfinite(x) & np.isfinite(y)
    n = int(keep.sum())
    if n < 3 or np.ptp(x[keep]) == 0 or np.ptp(y[keep]) == 0:
        return float("nan"), float("nan"), n
    result = stats.spearmanr(x[keep], y[keep])
    return float(result.statistic), float(result.pvalue), n


class LengthAnalysis:
    """Length distributions of base outputs, adapter outputs, source training answers and
    the target's reference answers, per generate target.

    `measure` ("chars" or "words") is the one used for the interpolation coefficient and
    the gain relation: token counts exist only for model outputs (records), not for
    training or reference answers, so they appear in the distributions only.
    """

    def __init__(self, measure: str = "chars", grid_size: int = 200, base: str = BASE):
        if measure not in ("chars", "words"):
            raise ValueError(f"measure must be 'chars' or 'words', got {measure!r}")
        self.measure = measure
        self.grid_size = grid_size
        self.base = base

    def fit(
        self,
        records: pd.DataFrame,
        source_answers: Mapping[str, Sequence[str]],
        reference_answers: Mapping[str, Sequence[str]],
        gains: pd.DataFrame | None = None,
    ) -> "LengthAnalysis":
        """records: generate-target records (model, task, output, output_tokens);
        source_answers: adapter name -> the answers (Example.target) it trained on;
        reference_answers: task -> the target's reference answers;
        gains: adapters x tasks (Study.gains), for the length-match relation."""
        self.lengths_ = self._lengths(records, source_answers, reference_answers)
        self.summary_ = self._summary(self.lengths_)
        self.density_ = self._density(self.lengths_)
        self.interpolation_ = self._interpolation(self.summary_)
        self.length_match_ = self._length_match(self.interpolation_, gains)
        self.gain_relation_ = self._gain_relation(self.length_match_)
        return self

    def _lengths(self, records, source_answers, reference_answers) -> pd.DataFrame:
        """One row per text: task, kind, group, chars, words, tokens."""
        frames = []
        sources = [(name, text_lengths(answers)) for name, answers in source_answers.items()]
        for task in sorted(set(records["task"]) | set(reference_answers)):
            rows = records[records["task"] == task]
            for model, outputs in rows.groupby("model", sort=True):
                frame = text_lengths(outputs["output"].tolist())
                frame["tokens"] = pd.to_numeric(outputs["output_tokens"], errors="coerce").to_numpy()
                frames.append(frame.assign(task=task, kind=BASE if model == self.base else "adapter", group=model))
            for name, frame in sources:
                frames.append(frame.assign(task=task, kind="source", group=name, tokens=np.nan))
            if task in reference_answers:
                frame = text_lengths(reference_answers[task])
                frames.append(frame.assign(task=task, kind="target_reference", group=task, tokens=np.nan))
        columns = ["task", "kind", "group", *MEASURES]
        if not frames:
            return pd.DataFrame(columns=columns)
        return pd.concat(frames, ignore_index=True)[columns]

    @staticmethod
    def _summary(lengths: pd.DataFrame) -> pd.DataFrame:
        """n, mean, median, 10th and 90th percentile of each measure per (task, kind, group)."""
        grouped = lengths.groupby(["task", "kind", "group"], sort=False)[list(MEASURES)]
        summary = pd.concat({
            "mean": grouped.mean(),
            "median": grouped.median(),
            "p10": grouped.quantile(0.1),
            "p90": grouped.quantile(0.9),
        }, axis=1)
        summary.columns = [f"{measure}_{stat}" for stat, measure in summary.columns]
        summary.insert(0, "n", grouped.size())
        return summary.sort_index()

    def _density(self, lengths: pd.DataFrame) -> pd.DataFrame:
        """KDE of each group's lengths on one grid per (task, measure), long format."""
        rows = []
        for task, per_task in lengths.groupby("task", sort=True):
            for measure in MEASURES:
                groups = [(key, part[measure].dropna().to_numpy()) for key, part in per_task.groupby(["kind", "group"], sort=True)]
                groups = [(key, values) for key, values in groups if len(values)]
                if not groups:
                    continue
                grid = shared_grid([values for _, values in groups], self.grid_size)
                for (kind, group), values in groups:
                    rows.append(pd.DataFrame({"task": task, "measure": measure, "group": group, "kind": kind, "x": grid, "density": kde_on_grid(values, grid)}))
        columns = ["task", "measure", "group", "kind", "x", "density"]
        return pd.concat(rows, ignore_index=True)[columns] if rows else pd.DataFrame(columns=columns)

    def _interpolation(self, summary: pd.DataFrame) -> pd.DataFrame:
        """Per (task, adapter): base, adapter, source and reference medians and the
        coefficient."""
        median = summary[f"{self.measure}_median"]
        rows = []
        for task, kind, adapter in summary.index:
            if kind != "adapter":
                continue
            base = median.get((task, BASE, self.base), np.nan)
            own = median[(task, kind, adapter)]
            source = median.get((task, "source", adapter), np.nan)
            rows.append({
                "task": task, "adapter": adapter, "measure": self.measure,
                "base_median": base, "adapter_median": own, "source_median": source,
                "reference_median": median.get((task, "target_reference", task), np.nan),
                "coefficient": interpolation_coefficient(base, own, source),
            })
        columns = ["task", "adapter", "measure", "base_median", "adapter_median", "source_median", "reference_median", "coefficient"]
        return pd.DataFrame(rows, columns=columns)

    @staticmethod
    def _length_match(interpolation: pd.DataFrame, gains: pd.DataFrame | None) -> pd.DataFrame:
        """How far each adapter's (and its source's) median length is from the target's
        reference answers, next to its gain. The source gap is known before training."""
        table = interpolation[["task", "adapter", "adapter_median", "source_median", "reference_median"]].copy()
        table["adapter_gap"] = (table["adapter_median"] - table["reference_median"]).abs()
        table["source_gap"] = (table["source_median"] - table["reference_median"]).abs()
        if gains is not None:
            table["gain"] = [
                float(gains.at[a, t]) if a in gains.index and t in gains.columns else np.nan
                for a, t in zip(table["adapter"], table["task"])
            ]
        else:
            table["gain"] = np.nan
        return table

    @staticmethod
    def _gain_relation(length_match: pd.DataFrame) -> pd.DataFrame:
        """Spearman rho of gap vs gain across adapters, per task (negative: closer length,
        larger gain)."""
        rows = []
        for task, part in length_match.groupby("task", sort=True):
            row = {"task": task}
            for gap in ("adapter_gap", "source_gap"):
                rho, p, n = spearman(part[gap], part["gain"])
                row.update({f"{gap}_rho": rho, f"{gap}_p": p, f"{gap}_n": n})
            rows.append(row)
        columns = ["task"] + [f"{g}_{s}" for g in ("adapter_gap", "source_gap") for s in ("rho", "p", "n")]
        return pd.DataFrame(rows, columns=columns).set_index("task")

    def to_dict(self) -> dict:
        return json_ready({
            "measure": self.measure,
            "summary": self.summary_.reset_index().to_dict(orient="records"),
            "interpolation": self.interpolation_.to_dict(orient="records"),
            "length_match": self.length_match_.to_dict(orient="records"),
            "gain_relation": self.gain_relation_.reset_index().to_dict(orient="records"),
        })


class LabelLengthAnalysis:
    """Text length per label in classification data: if one label's texts are much
    longer, a model can learn length as a shortcut (label-length coupling)."""

    def __init__(self, measure: str = "chars", grid_size: int = 200):
        self.measure = measure
        self.grid_size = grid_size

    def fit(self, texts: pd.DataFrame) -> "LabelLengthAnalysis":
        """texts: columns dataset, role ("source"/"target"), label, text."""
        frame = texts.assign(length=text_lengths(texts["text"].tolist())[self.measure].to_numpy())
        keys = ["dataset", "role"]
        grouped = frame.groupby([*keys, "label"], sort=True)["length"]
        self.summary_ = pd.DataFrame({"n": grouped.size(), "mean": grouped.mean(), "median": grouped.median()})
        rows, tests = [], []
        for (dataset, role), part in frame.groupby(keys, sort=True):
            per_label = [(label, g["length"].to_numpy()) for label, g in part.groupby("label", sort=True)]
            grid = shared_grid([values for _, values in per_label], self.grid_size)
            for label, values in per_label:
                rows.append(pd.DataFrame({"dataset": dataset, "role": role, "label": label, "x": grid, "density": kde_on_grid(values, grid)}))
            usable = [values for _, values in per_label if len(values)]
            statistic, p = stats.kruskal(*usable) if len(usable) >= 2 and np.ptp(np.concatenate(usable)) > 0 else (np.nan, np.nan)
            tests.append({"dataset": dataset, "role": role, "labels": len(usable), "kruskal_h": float(statistic), "kruskal_p": float(p)})
        self.density_ = pd.concat(rows, ignore_index=True) if rows else pd.DataFrame(columns=["dataset", "role", "label", "x", "density"])
        self.coupling_ = pd.DataFrame(tests, columns=["dataset", "role", "labels", "kruskal_h", "kruskal_p"])
        return self

    def to_dict(self) -> dict:
        return json_ready({
            "measure": self.measure,
            "summary": self.summary_.reset_index().to_dict(orient="records"),
            "coupling": self.coupling_.to_dict(orient="records"),
        })


def adapter_names(study) -> list[str]:
    """Distinct adapter names (several seeds share one name and one training set)."""
    adapters = study.adapters
    return list(dict.fromkeys(adapters["name"])) if len(adapters) else []


MINIMUM = "a generate target (answer lengths are measured on generated answers)"
PARTIAL = True  # the label lengths of choice tasks need no generate target


def shortfall(study) -> str | None:
    if any(study.task(t).kind == "generate" for t in study.config.targets):
        return None
    return f"needs {MINIMUM}; this study's targets are all choice tasks"


def run(study, out_dir: Path) -> list[Path]:
    """lengths.json, lengths_summary.csv, lengths_density.csv, lengths_interpolation.csv,
    lengths_gain.csv, lengths_gain_relation.csv; label_lengths_summary.csv,
    label_lengths_density.csv, label_lengths_coupling.csv."""
    settings = analysis_settings(study)
    out_dir = Path(out_dir)
    paths: list[Path] = []
    names = adapter_names(study)
    source_examples = {name: study.source_examples(name) for name in names}
    generate = [t for t in study.config.targets if study.task(t).kind == "generate"]
    if generate:
        records = pd.concat([study.records(task=t) for t in generate], ignore_index=True)
        analysis = LengthAnalysis(measure=settings.get("length_measure", "chars")).fit(
            records,
            {name: [e.target for e in examples] for name, examples in source_examples.items()},
            {t: [e.target for e in study.target_examples(t)] for t in generate},
            gains=study.gains,
        )
        paths += [
            write_json(out_dir / "lengths.json", analysis.to_dict()),
            write_csv(out_dir / "lengths_summary.csv", analysis.summary_, index=True),
            write_csv(out_dir / "lengths_density.csv", analysis.density_),
            write_csv(out_dir / "lengths_interpolation.csv", analysis.interpolation_),
            write_csv(out_dir / "lengths_gain.csv", analysis.length_match_),
            write_csv(out_dir / "lengths_gain_relation.csv", analysis.gain_relation_, index=True),
        ]
    labelled = [
        {"dataset": name, "role": role, "label": e.label, "text": e.input_text}
        for role, datasets in (
            ("source", source_examples.items()),
            ("target", ((t, study.target_examples(t)) for t in study.config.targets if study.task(t).kind == "choice")),
        )
        for name, examples in datasets
        for e in examples
        if e.label is not None
    ]
    if labelled:
        labels = LabelLengthAnalysis().fit(pd.DataFrame(labelled))
        paths += [
            write_csv(out_dir / "label_lengths_summary.csv", labels.summary_, index=True),
            write_csv(out_dir / "label_lengths_density.csv", labels.density_),
            write_csv(out_dir / "label_lengths_coupling.csv", labels.coupling_),
        ]
    return paths
