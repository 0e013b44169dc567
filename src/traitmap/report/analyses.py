"""Sections that explain the matrix, each drawn from one analysis file (or the matrix itself).

Each analysis writes its result under `analysis/`; the file names and the columns read
here are all in FILES, so a change of format is a change in one place. A missing file
gives a one-line note instead of a section body.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from traitmap.analysis.classes import GOLD_ROW, answer_shares, confusion_counts, label_order, row_shares
from traitmap.analysis.dependency import ALL
from traitmap.analysis.predict import held_out_errors

from . import figures
from .blocks import Figure, Note, Section, Table
from .common import (listing, missing, number, percent, points, read_csv, read_json, read_matrix, signed, skipped,
                     source_tasks)

# name -> (file under analysis/, columns read); formats as traitmap.analysis writes them
FILES = {
    "lengths_density": ("lengths_density.csv", ["task", "measure", "group", "kind", "x", "density"]),
    "lengths_interpolation": ("lengths_interpolation.csv",
                              ["task", "adapter", "measure", "adapter_median", "reference_median", "coefficient"]),
    "label_lengths_density": ("label_lengths_density.csv", ["dataset", "label", "x", "density"]),
    "label_lengths_summary": ("label_lengths_summary.csv", ["dataset", "label", "median"]),
    "confusion": ("classes_confusion.csv", ["task", "model", "gold", "predicted", "count"]),
    "similarity_pairs": ("similarity_pairs.csv", ["adapter", "target", "gain"]),  # + "<kind>_similarity"
    "similarity_tests": ("similarity_tests.csv", ["kind", "rho"]),  # p_mantel optional
    "dependency": ("dependency.csv", ["target", "adapter", "relation", "n", "ratio"]),
    "prediction": ("transfer_prediction.csv", ["source", "target", "predicted", "actual"]),
}
SIMILARITY_MATRICES = {"style": "similarity_style.csv", "semantic": "similarity_semantic.csv"}  # dataset x dataset
LENGTHS_META = "lengths.json"  # {"measure": "chars"}: the measure the medians use


def _read(study, key: str):
    name, columns = FILES[key]
    return read_csv(study, name, columns)


def _gain(study, model: str, task: str) -> float | None:
    gains = study.gains
    if model in gains.index and task in gains.columns and pd.notna(gains.loc[model, task]):
        return float(gains.loc[model, task])
    return None


# --- generation length ---------------------------------------------------------------------


def lengths_section(study) -> Section:
    title = "Generation length"
    density, why = _read(study, "lengths_density")
    medians, why_medians = _read(study, "lengths_interpolation")
    if density is None and medians is None:
        return missing("lengths", title, skipped(study, "lengths") or why)
    measure = (read_json(study, LENGTHS_META) or {}).get("measure", "chars")
    sentences, blocks = [], []
    if medians is None:
        blocks.append(Note(why_medians))
    else:
        medians = medians.astype({"task": str, "adapter": str})
        best = None
        for task, rows in medians.dropna(subset=["adapter_median", "reference_median"]).groupby("task"):
            rows = rows[rows["adapter_median"] > 0].set_index("adapter")
            if len(rows) >= 2 and rows["reference_median"].iloc[0] > 0:
                spread = rows["adapter_median"].max() / rows["adapter_median"].min()
                if best is None or spread > best[0]:
                    best = (spread, task, rows)
        if best:
            _, task, rows = best
            off = np.abs(np.log(rows["adapter_median"] / rows["reference_median"])).sort_values()
            near, far = off.index[0], off.index[-1]

            def who(a: str) -> str:
                g = _gain(study, a, task)
                return number(rows.loc[a, "adapter_median"]) + (f", gain {points(g)}" if g is not None else "")

            sentences.append(f"On {task}, reference answers have a median length of "
                             f"{number(rows['reference_median'].iloc[0])} {measure}; {near}'s answers come closest "
                             f"({who(near)}) and {far}'s are furthest ({who(far)}).")
        c = medians["coefficient"].replace([np.inf, -np.inf], np.nan).dropna()
        if len(c):
            sentences.append(f"An adapter's median answer length sits {c.median():.2f} of the way from the base "
                             f"model's to its source's (0: base, 1: source; median over {len(c)} adapter–target pairs).")
    if density is None:
        blocks.append(Note(why))
    else:
        density = density.astype({"task": str, "group": str, "kind": str, "measure": str})
        shown = measure if measure in set(density["measure"]) else density["measure"].iloc[0]
        order = [str(m) for m in study.matrix.index if m != "base"]
        blocks.insert(0, Figure.of("fig-lengths", figures.length_curves(density[density["measure"] == shown], order,
                                                                          shown),
                                   caption="Answer lengths on each target: reference answers, the base model, "
                                           "each adapter's outputs and (dashed) its source's training answers."))
    return Section(id="lengths", title=title, sentences=sentences, blocks=blocks)


# --- class distribution --------------------------------------------------------------------


def classes_section(study) -> Section:
    title = "Class distribution"
    conf, why = _read(study, "confusion")
    label_density, why_labels = _read(study, "label_lengths_density")
    label_summary, _ = _read(study, "label_lengths_summary")
    measure = (read_json(study, LENGTHS_META) or {}).get("measure", "chars")
    if conf is None and label_density is None:
        return missing("classes", title, skipped(study, "classes") or why)
    sentences, blocks = [], []
    if conf is None:
        blocks.append(Note(skipped(study, "classes") or why))
    else:
        conf = conf.astype({"model": str, "task": str, "gold": str, "predicted": str})
        models = [str(m) for m in study.matrix.index]
        models += sorted(set(conf["model"]) - set(models))
        shares, widest = {}, None
        for task, rows in conf.groupby("task", sort=True):
            labels = label_order(rows)
            present = [m for m in models if m in set(rows["model"])]
            table = answer_shares(rows, present, labels)
            shares[task] = table
            adapters_only = table.drop(index=[GOLD_ROW, "base"], errors="ignore")
            if len(adapters_only) >= 2:
                for label in labels:
                    col = adapters_only[label]
                    if widest is None or col.max() - col.min() > widest[0]:
                        widest = (col.max() - col.min(), task, label, table.loc[GOLD_ROW, label],
                                  col.idxmax(), col.max(), col.idxmin(), col.min())
            counts = {m: confusion_counts(rows[rows["model"] == m], labels) for m in present}
            mats = {m: row_shares(c) for m, c in counts.items()}
            blocks.append(Figure.of(f"fig-confusion-{len(blocks)}", figures.confusion_grid(mats, counts),
                                    caption=f"Confusion matrices on {task}: gold label (rows) against answer "
                                            f"(columns), % of each gold label."))
        if widest and widest[0] > 0:
            _, task, label, gold_share, hi, hi_share, lo, lo_share = widest
            sentences.append(f"On {task}, {percent(gold_share, 0)} of gold labels are {label}; {hi} answers "
                             f"{label} {percent(hi_share, 0)} of the time, {lo} only {percent(lo_share, 0)}.")
        blocks.insert(0, Figure.of("fig-class-shares", figures.class_shares(shares),
                                   caption="Which labels each model answers, against the gold distribution."))
    if label_density is None:
        blocks.append(Note(why_labels))
    else:
        blocks.append(Figure.of("fig-label-lengths", figures.label_length_curves(label_density, measure),
                                caption="Text length per label: where they differ, length alone hints at the label."))
    if label_summary is not None:
        med = label_summary.astype({"dataset": str, "label": str}).groupby(["dataset", "label"])["median"].median()
        med = med[med > 0]
        ratios = med.groupby(level=0).agg(lambda v: v.max() / v.min() if len(v) > 1 else 1.0)
        if len(ratios) and ratios.max() > 1:
            dataset = ratios.idxmax()
            per = med[dataset].sort_values()
            sentences.append(f"In {dataset}, {per.index[-1]} texts have a median length of {number(per.iloc[-1])} "
                             f"{measure} against "
                             f"{number(per.iloc[0])} for {per.index[0]}.")
    return Section(id="classes", title=title, sentences=sentences, blocks=blocks)


# --- surface similarity --------------------------------------------------------------------


def similarity_section(study) -> Section:
    title = "Similarity is not transfer"
    pairs, why = _read(study, "similarity_pairs")
    matrices = {k: m for k, name in SIMILARITY_MATRICES.items() if (m := read_matrix(study, name)) is not None}
    if pairs is None and not matrices:
        return missing("similarity", title, skipped(study, "similarity") or why)
    sentences, blocks = [], []
    pts = pd.DataFrame(columns=["kind", "model", "task", "similarity", "gain"])
    if pairs is not None:
        kinds = [c[: -len("_similarity")] for c in pairs.columns if c.endswith("_similarity")]
        pts = pd.concat([pd.DataFrame({"kind": k, "model": pairs["adapter"].astype(str),
                                       "task": pairs["target"].astype(str), "similarity": pairs[f"{k}_similarity"],
                                       "gain": pairs["gain"] * 100}) for k in kinds] or [pts], ignore_index=True)
        pts = pts.dropna(subset=["similarity", "gain"])
    if not pts.empty:
        kind = "style" if "style" in set(pts["kind"]) else pts["kind"].iloc[0]
        mismatch = None
        for task, rows in pts[pts["kind"] == kind].groupby("task"):
            near, top = rows.loc[rows["similarity"].idxmax()], rows.loc[rows["gain"].idxmax()]
            if top["gain"] > near["gain"] and (mismatch is None or top["gain"] - near["gain"] > mismatch[0]):
                mismatch = (top["gain"] - near["gain"], task, near, top)
        if pts["gain"].nunique() <= 1:
            sentences.append("Every adapter gains the same on every target here: there is no transfer for "
                             "similarity to explain.")
        elif mismatch:
            _, task, near, top = mismatch
            sentences.append(f"{near['model']} is the source most similar in {kind} to {task} "
                             f"({near['similarity']:.2f}), yet its adapter gains {points(near['gain'] / 100)} points "
                             f"there, while {top['model']} gains {points(top['gain'] / 100)} "
                             f"(similarity {top['similarity']:.2f}).")
        else:
            sentences.append(f"On every target, the source most similar in {kind} is also the adapter that gains most.")
    tests, _ = _read(study, "similarity_tests")
    if tests is not None:
        parts = [f"{signed(r)} for {k}" + (f" (Mantel p = {p:.2f})" if pd.notna(p) else "")
                 for k, r, p in zip(tests["kind"], tests["rho"], tests.get("p_mantel", pd.Series(np.nan, tests.index)))
                 if pd.notna(r)]
        if parts:
            sentences.append(f"Across adapter–target pairs, the rank correlation between gain and similarity is "
                             f"{listing(parts)}.")
    for j, (kind, matrix) in enumerate(matrices.items()):
        blocks.append(Figure.of(f"fig-similarity-{j}", figures.heatmap(matrix, colorbar="similarity",
                                                                        label=lambda v: f"{v:.2f}"),
                                caption=f"{kind.capitalize()} similarity between datasets."))
    if not pts.empty:
        blocks.append(Figure.of("fig-similarity-gain", figures.similarity_vs_gain(pts),
                                caption="Each point is one adapter on one target: how similar its source is "
                                        "to the target, against the gain it brings."))
    return Section(id="similarity", title=title, sentences=sentences, blocks=blocks)


# --- dependency relations ------------------------------------------------------------------


def dependency_section(study) -> Section:
    title = "Syntax: dependency relations"
    dep, why = _read(study, "dependency")
    if dep is None:
        return missing("dependency", title, skipped(study, "dependency") or why)
    dep = dep.rename(columns={"adapter": "model", "target": "task"}).astype({"model": str, "task": str, "relation": str})
    dep = dep[(dep["relation"] != ALL) & np.isfinite(dep["ratio"])]  # the row for every example is not a relation
    pairs = list(dep.groupby(["model", "task"]).groups)
    pairs.sort(key=lambda p: -(_gain(study, *p) or 0.0))
    groups = {f"{m} → {t}": dep[(dep["model"] == m) & (dep["task"] == t)] for m, t in pairs}
    sentences = []
    if pairs:
        model, task = pairs[0]
        rows = dep[(dep["model"] == model) & (dep["task"] == task)].sort_values("ratio")
        hi, lo = rows.iloc[-1], rows.iloc[0]
        g = _gain(study, model, task)
        sentences.append(
            f"On {task}, the {model} adapter" + (f" ({points(g)} points overall)" if g is not None else "")
            + f" solves questions containing {hi['relation']} {hi['ratio']:.2f}× as often as the base model "
            f"(n = {int(hi['n'])}); {lo['relation']} is helped least (×{lo['ratio']:.2f}, n = {int(lo['n'])})."
        )
    if not groups:
        return missing("dependency", title, "No ratio to show: on the parsed targets either the base model solves "
                                            "no question (a ratio to it is undefined) or no relation occurs in "
                                            "enough questions (dependency_min_support).")
    blocks = [Figure.of("fig-dependency", figures.ratio_bars(groups),
                        caption="Success-rate ratio (adapter ÷ base) on questions grouped by the dependency "
                                "relations they contain; above 1, the adapter does better.")]
    return Section(id="dependency", title=title, sentences=sentences, blocks=blocks)


# --- controlled experiments ----------------------------------------------------------------


def controlled_section(study) -> Section:
    """Variants of one source (balanced / imbalanced, mislabeled) are adapters in the matrix."""
    title = "Controlled experiments"
    matrix = study.matrix
    tasks_of = source_tasks(study)
    variants = {s.name: getattr(s, "variant", None) for s in study.config.sources}
    by_task: dict[str, list[str]] = {}
    for model in matrix.index:
        if model != "base":
            by_task.setdefault(tasks_of.get(str(model), str(model)), []).append(str(model))
    groups = {t: ms for t, ms in by_task.items() if len(ms) > 1}
    if not groups:
        return missing("controlled", title, "Not run for this study: no source was trained in more than one "
                                            "variant (balanced / imbalanced, mislabeled).")
    sentences, blocks = [], []
    targets = [str(c) for c in matrix.columns]
    for task, models in groups.items():
        ref = next((m for m in models if not variants.get(m)), models[0])
        for v in [m for m in models if m != ref][:2]:
            others = [t for t in targets if t != task]
            text = (f"On its own task {task}, {v} scores {percent(matrix.loc[v, task])} against "
                    f"{percent(matrix.loc[ref, task])} for {ref}" if task in targets else f"{v} vs {ref}")
            if others:
                text += (f"; on the other targets it averages {percent(matrix.loc[v, others].mean())} against "
                         f"{percent(matrix.loc[ref, others].mean())}.")
            sentences.append(text if text.endswith(".") else text + ".")
        rows = [[m] + [percent(matrix.loc[m, t], 2) if pd.notna(matrix.loc[m, t]) else "—" for t in targets]
                for m in ["base", ref, *[m for m in models if m != ref]] if m in matrix.index]
        blocks.append(Table(columns=["adapter", *targets], rows=rows,
                            caption=f"Adapters trained on variants of {task} (scores)"))
    return Section(id="controlled", title=title, sentences=sentences[:3], blocks=blocks)


# --- transfer prediction -------------------------------------------------------------------


def prediction_section(study) -> Section:
    title = "Predicting transfer"
    pred, why = _read(study, "prediction")
    if pred is None:
        return missing("prediction", title, skipped(study, "predict") or why)
    pred = pred.astype({"source": str, "target": str})
    errors = held_out_errors(pred)
    if not errors["n"]:
        return missing("prediction", title, "analysis/prediction.csv has no cell with a measured gain.")
    mae, baseline_mae, miss = errors["mae"] * 100, errors["baseline_mae"] * 100, errors["worst"]
    sentences = [
        f"Predicted for each source before training on it (from the other sources), the gains are off by {mae:.1f} points on average over "
        f"{errors['n']} adapter–target cells, with the sign right for {errors['sign_right']} of {errors['n']}.",
    ]
    if not np.isnan(baseline_mae):
        if mae >= baseline_mae:
            sentences.append(f"That is no better than the mean: predicting each held-out source by the other sources' "
                             f"mean gain is off by {baseline_mae:.1f} points. Read no prediction of this model as more "
                             "than that mean.")
        else:
            sentences.append(f"The mean of the other sources' gains would be off by {baseline_mae:.1f} points, so the "
                             "source statistics carry some information about transfer.")
    sentences.append(f"The largest miss is {miss['source']} on {miss['target']} (predicted {points(miss['predicted'])}, "
                     f"measured {points(miss['actual'])}).")
    cells = pred.dropna(subset=["predicted", "actual"]).rename(columns={"source": "model", "target": "task"})
    rows = cells.assign(predicted=cells["predicted"] * 100, actual=cells["actual"] * 100)
    blocks = [Figure.of("fig-prediction", figures.predicted_vs_actual(rows),
                        caption="Predicted against measured gain for each held-out adapter and target.")]
    return Section(id="prediction", title=title, sentences=sentences, blocks=blocks)
