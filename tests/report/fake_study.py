"""A fake study with planted numbers, shaped like traitmap.results.Study, for the report tests."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd

TASKS = ["gsm8k", "imdb", "flipkart", "mbpp"]
MODELS = ["base", "flipkart", "goat", "flipkart@mislabel"]
# planted scores; gains are exact multiples of a point so sentences can be checked literally
SCORES = {
    "base": [0.10, 0.50, 0.40, 0.30],
    "flipkart": [0.14, 0.62, 0.80, 0.28],        # gains +4 +12 +40 -2
    "goat": [0.13, 0.48, 0.38, 0.27],            # gains +3 -2  -2  -3
    "flipkart@mislabel": [0.15, 0.55, 0.05, 0.31],  # gains +5 +5 -35 +1
}
XSS = "</script><img src=x onerror=alert(1)>"
PER_CELL = 50


class FakeStudy:
    def __init__(self, out_dir: Path, records: pd.DataFrame, pca: dict | None):
        sources = [
            SimpleNamespace(name="flipkart", task="flipkart", variant=None),
            SimpleNamespace(name="goat", task="goat", variant=None),
            SimpleNamespace(name="flipkart@mislabel", task="flipkart", variant={"kind": "mislabel"}),
        ]
        resolved = {"name": "planted", "base_model": "tiny-llama", "targets": TASKS, "seeds": [0],
                    "train": {"max_examples": 200, "epochs": 1}, "eval": {"limit": PER_CELL},
                    "sources": [vars(s) for s in sources]}
        self.config = SimpleNamespace(name="planted", base_model="tiny-llama", sources=sources, targets=TASKS,
                                      seeds=[0], task_dirs=[], metric="accuracy", to_dict=lambda: resolved)
        self.meta = {"versions": {"traitmap": "0.1.0", "torch": "2.5"}, "runtime_s": 3725.0,
                     "started": "2025-11-26T09:00:00", "finished": "2025-11-26T10:02:05", "machine": "test box"}
        self.matrix = pd.DataFrame(SCORES, index=TASKS).T.loc[MODELS]
        self.gains = self.matrix.drop(index="base") - self.matrix.loc["base"]
        self.pca = pca
        self.adapters = pd.DataFrame({"name": MODELS[1:], "source": ["flipkart", "goat", "flipkart"],
                                      "variant": [None, None, "mislabel"], "seed": [0, 0, 0],
                                      "path": [f"adapters/{m}" for m in MODELS[1:]]})
        self.out_dir = out_dir
        self.analysis_dir = out_dir / "analysis"
        self._records = records
        self.cells = planted_cells()

    def records(self, task=None, model=None) -> pd.DataFrame:
        r = self._records
        if task is not None:
            r = r[r["task"] == task]
        if model is not None:
            r = r[r["model"] == model]
        return r.reset_index(drop=True)


    def answer_rates(self) -> pd.DataFrame:
        """imdb's answer mix: balanced, but flipkart@mislabel answers "positive" 90% of the time."""
        rows = [(m, "imdb", label, 0.9 if m == "flipkart@mislabel" and label == "positive" else
                 0.1 if m == "flipkart@mislabel" else 0.5, 0.5) for m in MODELS for label in ("negative", "positive")]
        return pd.DataFrame(rows, columns=["model", "task", "label", "rate", "gold_rate"]).assign(seed=0)


# balanced accuracy on imdb: flipkart@mislabel gains 5 points of accuracy and loses 5 of balanced accuracy
BALANCED_IMDB = {"base": 0.50, "flipkart": 0.60, "goat": 0.47, "flipkart@mislabel": 0.45}


def planted_cells() -> pd.DataFrame:
    rows = []
    for model in MODELS:
        for j, task in enumerate(TASKS):
            choice = task == "imdb"
            score = SCORES[model][j]
            rows.append(dict(model=model, seed=-1 if model == "base" else 0, task=task, n=PER_CELL, score=score,
                             seconds=1.0, accuracy=score if choice else np.nan,
                             balanced_accuracy=BALANCED_IMDB[model] if choice else np.nan,
                             macro_f1=BALANCED_IMDB[model] if choice else np.nan))
    return pd.DataFrame(rows)


def planted_records() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    rows = []
    for model in MODELS:
        for j, task in enumerate(TASKS):
            hits = round(SCORES[model][j] * PER_CELL)
            for i in range(PER_CELL):
                gold = ["positive", "negative", "neutral"][i % 3] if task in ("imdb", "flipkart") else str(i)
                ok = i < hits
                rows.append(dict(model=model, seed=-1 if model == "base" else 0, task=task, example_id=f"{task}-{i}",
                                 prompt=f"Question {i} about {task}?\nAnswer:\n", output=gold if ok else "nope",
                                 output_tokens=int(rng.integers(1, 300)), parsed=gold if ok else "", gold=gold,
                                 correct=1.0 if ok else 0.0, logprobs=""))
    rows[0]["prompt"] = XSS + " & more\u2028line"
    rows[0]["output"] = "<b>bold?</b>"
    return pd.DataFrame(rows)


PCA = {
    "on": "gains",
    "explained_variance_ratio": [0.6, 0.25, 0.1],
    "components": ["PC0", "PC1", "PC2"],
    "loadings": {
        "PC0": {"gsm8k": 0.1, "imdb": 0.3, "flipkart": 0.9, "mbpp": -0.05},
        "PC1": {"gsm8k": 0.7, "imdb": -0.4, "flipkart": 0.1, "mbpp": 0.2},
        "PC2": {"gsm8k": 0.0, "imdb": 0.5, "flipkart": 0.0, "mbpp": 0.8},
    },
    "scores": {
        "flipkart": {"PC0": 0.42, "PC1": 0.05, "PC2": 0.01},
        "goat": {"PC0": -0.03, "PC1": 0.21, "PC2": -0.02},
        "flipkart@mislabel": {"PC0": -0.39, "PC1": -0.1, "PC2": 0.01},
    },
}


def write_analyses(analysis: Path) -> None:
    """One planted file per analysis section, in the format report/analyses.py documents."""
    analysis.mkdir(parents=True, exist_ok=True)
    ci = []
    for model in MODELS:
        for j, task in enumerate(TASKS):
            s = SCORES[model][j]
            g = s - SCORES["base"][j]
            ci.append(dict(model=model, task=task, score=s, low=s - 0.05, high=s + 0.05, gain=g,
                           gain_low=g - 0.03, gain_high=g + 0.03, n=PER_CELL))
    pd.DataFrame(ci).to_csv(analysis / "matrix_ci.csv", index=False)

    # lengths: KDE curves and the medians the analysis derives from them
    grid = np.linspace(0, 200, 50)
    curves = {("target_reference", "gsm8k"): 100, ("base", "base"): 60, ("adapter", "flipkart"): 90,
              ("adapter", "goat"): 8, ("adapter", "flipkart@mislabel"): 50, ("source", "flipkart"): 30,
              ("source", "goat"): 6}
    pd.concat([pd.DataFrame({"task": task, "measure": "chars", "group": group, "kind": kind, "x": grid,
                             "density": np.exp(-((grid - centre) / 15) ** 2)})
               for task in ("gsm8k", "mbpp") for (kind, group), centre in curves.items()]).to_csv(
        analysis / "lengths_density.csv", index=False)
    pd.DataFrame([dict(task="gsm8k", adapter=a, measure="chars", base_median=60, adapter_median=m, source_median=s,
                       reference_median=100, coefficient=c)
                  for a, m, s, c in [("flipkart", 90, 30, 0.4), ("goat", 8, 6, 0.5), ("flipkart@mislabel", 50, 30, 0.6)]]
                 + [dict(task="mbpp", adapter=a, measure="chars", base_median=40, adapter_median=40, source_median=30,
                         reference_median=40, coefficient=float("nan")) for a in MODELS[1:]]).to_csv(
        analysis / "lengths_interpolation.csv", index=False)
    (analysis / "lengths.json").write_text(json.dumps({"measure": "chars"}))
    pd.concat([pd.DataFrame({"dataset": "imdb", "role": "source", "label": label, "x": grid,
                             "density": np.exp(-((grid - centre) / 30) ** 2)})
               for label, centre in (("positive", 250), ("negative", 200))]).to_csv(
        analysis / "label_lengths_density.csv", index=False)
    pd.DataFrame([dict(dataset="imdb", role="source", label="negative", n=10, mean=201, median=200),
                  dict(dataset="imdb", role="source", label="positive", n=10, mean=251, median=250)]).to_csv(
        analysis / "label_lengths_summary.csv", index=False)

    conf = []
    labels = ["positive", "negative", "neutral"]
    predicted = {"base": [10, 10, 10], "flipkart": [12, 12, 6], "goat": [2, 2, 26], "flipkart@mislabel": [14, 15, 1]}
    for model, pred in predicted.items():
        for g in labels:
            for p, c in zip(labels, pred):
                conf.append(dict(task="flipkart", model=model, gold=g, predicted=p, count=c))
    pd.DataFrame(conf).to_csv(analysis / "classes_confusion.csv", index=False)

    style = {("flipkart", "gsm8k"): 0.2, ("goat", "gsm8k"): 0.9, ("flipkart", "imdb"): 0.8,
             ("goat", "imdb"): 0.1, ("flipkart", "mbpp"): 0.3, ("goat", "mbpp"): 0.4}
    semantic = {("flipkart", "gsm8k"): 0.1, ("goat", "gsm8k"): 0.7, ("flipkart", "imdb"): 0.9,
                ("goat", "imdb"): 0.2, ("flipkart", "mbpp"): 0.2, ("goat", "mbpp"): 0.3}
    for kind, sim in (("style", style), ("semantic", semantic)):
        pd.Series(sim).unstack().rename_axis("dataset").to_csv(analysis / f"similarity_{kind}.csv")
    source = {"flipkart": "flipkart", "goat": "goat", "flipkart@mislabel": "flipkart"}
    pd.DataFrame([dict(adapter=a, target=t, gain=SCORES[a][TASKS.index(t)] - SCORES["base"][TASKS.index(t)],
                       style_similarity=style[(source[a], t)], semantic_similarity=semantic[(source[a], t)])
                  for a in MODELS[1:] for t in ("gsm8k", "imdb", "mbpp")]).to_csv(
        analysis / "similarity_pairs.csv", index=False)
    pd.DataFrame([dict(kind="style", n_pairs=9, rho=0.33, p_spearman=0.38, p_mantel=0.41),
                  dict(kind="semantic", n_pairs=9, rho=0.27, p_spearman=0.48, p_mantel=0.52)]).to_csv(
        analysis / "similarity_tests.csv", index=False)

    pd.DataFrame([
        dict(target="gsm8k", adapter="flipkart", relation="(all)", n=200, base_rate=0.1, adapter_rate=0.14, ratio=1.4),
        dict(target="gsm8k", adapter="flipkart", relation="oprd", n=34, base_rate=0.1, adapter_rate=0.24, ratio=2.4),
        dict(target="gsm8k", adapter="flipkart", relation="nsubj", n=120, base_rate=0.1, adapter_rate=0.11, ratio=1.1),
        dict(target="gsm8k", adapter="flipkart", relation="amod", n=80, base_rate=0.1, adapter_rate=0.08, ratio=0.8),
        dict(target="gsm8k", adapter="goat", relation="oprd", n=34, base_rate=0.1, adapter_rate=0.1, ratio=1.0),
    ]).to_csv(analysis / "dependency.csv", index=False)

    pd.DataFrame([dict(source="flipkart", target="imdb", predicted=0.10, actual=0.12, baseline=0.0),
                  dict(source="goat", target="mbpp", predicted=0.01, actual=-0.03, baseline=0.0),
                  dict(source="flipkart", target="gsm8k", predicted=0.02, actual=0.04, baseline=0.0)]).to_csv(
        analysis / "transfer_prediction.csv", index=False)


SECTIONS = ["answers", "matrix", "traits", "lengths", "classes", "similarity", "dependency", "controlled",
            "prediction", "claims", "examples", "study"]


def full_study(out_dir: Path) -> FakeStudy:
    s = FakeStudy(out_dir, planted_records(), PCA)
    write_analyses(s.analysis_dir)
    return s
