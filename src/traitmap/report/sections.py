"""The paper's core sections: the study, the transfer matrix, the traits, the examples.

Each function turns the study's saved DataFrames into a Section: figures, tables and
one or two sentences whose numbers come from this study.
"""

from __future__ import annotations

import json
import math
from numbers import Number
from pathlib import Path

import numpy as np
import pandas as pd

from traitmap.analysis.classes import answer_balance
from traitmap.analysis.traits import resolved_components
from traitmap.durations import duration

from . import figures
from .bias import metric_disagreement
from .blocks import Details, Figure, Note, Section, Table
from .common import listing, missing, percent, points, read_csv, read_json, signed, skipped

EXAMPLE_CAP = 3000
TEXT_CAP = 6000  # characters kept per prompt/output in the example browser
EXAMPLE_COLUMNS = ["model", "seed", "task", "example_id", "correct", "parsed", "gold", "prompt", "output"]


# --- (1) the study -------------------------------------------------------------------------


def _flat(d: dict, prefix: str = "") -> list[tuple[str, object]]:
    out = []
    for key, value in d.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.extend(_flat(value, name + "."))
        else:
            out.append((name, value))
    return out


def _show(key: str, value: object) -> str:
    if key == "data_dir" and isinstance(value, str):  # by name: a report is shared, a machine's path is not
        return Path(value).name or value
    if isinstance(value, Number) and not isinstance(value, bool) and key.endswith(("runtime", "seconds", "_s")):
        return duration(value, prose=True)
    if isinstance(value, (list, tuple)):
        return ", ".join(str(v) for v in value)
    return str(value)


def _first(meta: dict, *keys: str):
    flat = dict(_flat(meta))
    for key in keys:
        if flat.get(key) not in (None, ""):
            return flat[key]
    return None


def study_section(study, records: pd.DataFrame) -> Section:
    config, meta = study.config, dict(study.meta or {})
    sources = list(config.sources)
    adapters = [m for m in study.matrix.index if m != "base"]
    seeds = list(getattr(config, "seeds", []) or [])
    sentences = [
        f"{config.name}: {len(adapters)} LoRA adapters on {config.base_model}, each trained on one of "
        f"{len(sources)} sources, evaluated with the base model on {len(config.targets)} target tasks "
        f"({len(records):,} scored examples"
        + (f", training seed{'s' if len(seeds) > 1 else ''} {listing([str(s) for s in seeds])})." if seeds else ").")
    ]
    runtime = _first(meta, "runtime_s", "runtime_seconds", "runtime", "seconds", "elapsed_s")
    work, runs = meta.get("work_seconds"), meta.get("runs")
    started, finished = _first(meta, "started", "started_at"), _first(meta, "finished", "finished_at")
    machine = _first(meta, "machine", "host", "device", "gpu")
    when = []
    if work is not None:  # summed over every run, so a study finished by a resumed run counts all of its work
        when.append(f"The training and evaluation took {duration(work, prose=True)}"
                    + (f" over {runs} runs" if isinstance(runs, int) and runs > 1 else ""))
    elif runtime is not None:
        when.append(f"The run took {duration(runtime, prose=True)}")
    if started and finished:
        when.append(f"from {started} to {finished}")
    if machine:
        when.append(f"on {machine}")
    if when:
        sentences.append((" ".join(when) if when[0].startswith("The") else "It ran " + " ".join(when)) + ".")

    cfg = config.to_dict()
    overview = [["base model", str(config.base_model)],
                ["targets", ", ".join(map(str, config.targets))],
                ["seeds", ", ".join(map(str, seeds)) or "—"]]
    overview += [[k, _show(k, v)] for k, v in _flat(cfg)
                 if k not in ("name", "base_model", "targets", "seeds") and not k.startswith("sources")
                 and not isinstance(v, (list, tuple))]
    source_rows = [[str(s.name), str(s.task), str(getattr(s, "variant", None) or "—")] for s in sources]
    blocks = [
        Table(columns=["setting", "value"], rows=overview, caption="Resolved configuration", numeric=False),
        Table(columns=["source", "task", "variant"], rows=source_rows, caption="Sources (one adapter each)",
              numeric=False),
    ]
    if meta:
        blocks.append(Table(columns=["run", "value"], rows=[[k, _show(k, v)] for k, v in _flat(meta)],
                            caption="Run and versions", numeric=False))
    blocks.append(Details(summary="Exact resolved configuration (JSON)",
                          text=json.dumps(cfg, indent=2, default=str, ensure_ascii=False)))
    return Section(id="study", title="Configuration and versions", sentences=sentences, blocks=blocks,
                   folded="The resolved configuration, the sources, the run and the library versions")


def glance(study) -> list[tuple[str, str, str]]:
    """Headline numbers for the top of the page: (label, value, detail), each gain with its interval."""
    cells = _cells(study)
    cards = []
    if len(cells):
        flags = answer_flags(study)

        def detail(row) -> str:
            text = f"{row['model']} → {row['task']}"
            if pd.notna(row["gain_low"]):
                text += f", 95% interval {_interval(row['gain_low'], row['gain_high'])}"
            if pd.notna(row["n"]):
                text += f", {int(row['n'])} examples"
            return "; ".join([text, *flags.get((row["model"], row["task"]), [])])

        best, worst = cells.loc[cells["gain"].idxmax()], cells.loc[cells["gain"].idxmin()]
        if best["gain"] > 0:
            cards.append(("largest gain", points(best["gain"]), detail(best)))
        if worst["gain"] < 0:
            cards.append(("largest loss", points(worst["gain"]), detail(worst)))
        helped = f"{int((cells['gain'] > 0).sum())} / {len(cells)}"
        sure = (f"{int((cells['gain_low'] > 0).sum())} with an interval above zero"
                if cells["gain_low"].notna().any() else "no intervals computed")
        cards.append(("cells that help", helped, f"adapter–target pairs above base; {sure}"))
    pca = getattr(study, "pca", None)
    ratio = (pca or {}).get("explained_variance_ratio")
    if ratio:
        values = [v for v in (ratio.values() if isinstance(ratio, dict) else ratio) if v is not None]
        k = min(4, len(values))
        n_adapters = len(pca.get("adapters") or [])
        trivially = n_adapters and k >= n_adapters - 1
        cards.append((f"variance in {k} trait{'s' if k > 1 else ''}", f"{sum(values[:k]) * 100:.0f}%",
                      f"of the {pca.get('on', 'gains')}" + (f" (always, with {n_adapters} adapters)" if trivially else "")))
    return cards


# --- (0) what each source does to each target -----------------------------------------------

COLLAPSED_SHARE = 0.95  # an adapter that gives one answer this often has stopped reading the question
FAR_FROM_GOLD = 0.25    # an answer rate this many points from the gold label's share is a bias
FLOOR = 0.05            # when base and adapter both score at most this, a gain cannot show
STRONGEST = 3


def _cells(study) -> pd.DataFrame:
    """One row per (adapter, target): gain, its interval (NaN when not computed), n, scores."""
    gains, matrix = study.gains, study.matrix
    rows = [{"model": str(m), "task": str(t), "gain": float(gains.loc[m, t]), "score": float(matrix.loc[m, t]),
             "base": float(matrix.loc["base", t]) if "base" in matrix.index else np.nan}
            for m in gains.index for t in gains.columns
            if pd.notna(gains.loc[m, t]) and m in matrix.index and t in matrix.columns]
    cells = pd.DataFrame(rows, columns=["model", "task", "gain", "score", "base"])
    ci, _ = read_csv(study, "matrix_ci.csv", ["model", "task", "gain_low", "gain_high"])
    if ci is not None:
        ci = ci.astype({"model": str, "task": str})
        keep = ["model", "task", "gain_low", "gain_high"] + (["n"] if "n" in ci.columns else [])
        cells = cells.merge(ci[keep], on=["model", "task"], how="left")
    for column in ("gain_low", "gain_high", "n"):
        if column not in cells.columns:
            cells[column] = np.nan
    return cells


def answer_flags(study) -> dict[tuple[str, str], list[str]]:
    """(model, task) -> what is wrong with its answers, from the class-distribution analysis."""
    conf, _ = read_csv(study, "classes_confusion.csv", ["task", "model", "gold", "predicted", "count"])
    flags: dict[tuple[str, str], list[str]] = {}
    if conf is None:
        return flags
    balance = answer_balance(conf.astype({"task": str, "model": str, "gold": str, "predicted": str}))
    for row in balance.itertuples():
        if row.top_share >= COLLAPSED_SHARE and row.largest_gold_share < COLLAPSED_SHARE:
            flags.setdefault((row.model, row.task), []).append(
                f"collapsed: answers {row.top_label} {percent(row.top_share, 0)} of the time")
        elif abs(row.furthest_gap) >= FAR_FROM_GOLD:
            flags.setdefault((row.model, row.task), []).append(
                f"answers {row.furthest_label} {percent(row.furthest_share, 0)} of the time "
                f"(gold {percent(row.furthest_gold_share, 0)})")
    return flags


def _interval(low, high) -> str:
    return f"{points(low)} to {points(high)}" if pd.notna(low) and pd.notna(high) else "not computed"


def _with_interval(row) -> str:
    text = f"{row['model']} → {row['task']} {points(row['gain'])}"
    return text + (f" ({_interval(row['gain_low'], row['gain_high'])})" if pd.notna(row["gain_low"]) else "")


def answers_section(study) -> Section:
    """The user's question first: what training on each source did to each target, how sure, and what to distrust."""
    title = "What each source does to each target"
    cells = _cells(study)
    if cells.empty:
        return missing("answers", title, "No adapter has been evaluated yet: there is no gain to show.")
    flags = answer_flags(study)
    for (model, task), row in zip(zip(cells["model"], cells["task"]), cells.itertuples()):
        if max(row.score, row.base) <= FLOOR:
            flags.setdefault((model, task), []).append(
                f"at the floor: base and adapter both score at most {percent(FLOOR, 0)}")
    has_ci = cells["gain_low"].notna().any()
    sure_up = cells[cells["gain_low"] > 0].sort_values("gain", ascending=False)
    sure_down = cells[cells["gain_high"] < 0].sort_values("gain")
    sentences = []
    if has_ci:
        if len(sure_up):
            sentences.append(f"Helps, with a 95% interval above zero: "
                             f"{'; '.join(_with_interval(r) for _, r in sure_up.head(STRONGEST).iterrows())}"
                             + (f" (and {len(sure_up) - STRONGEST} more)." if len(sure_up) > STRONGEST else "."))
        if len(sure_down):
            sentences.append(f"Hurts, with a 95% interval below zero: "
                             f"{'; '.join(_with_interval(r) for _, r in sure_down.head(STRONGEST).iterrows())}"
                             + (f" (and {len(sure_down) - STRONGEST} more)." if len(sure_down) > STRONGEST else "."))
        half_width = (cells["gain_high"] - cells["gain_low"]).median() / 2
        if not len(sure_up) and not len(sure_down) and (cells["gain"] == 0).all():
            sentences.append("No adapter changed the score on any target: every gain is +0.0.")
        elif not len(sure_up) and not len(sure_down):
            sentences.append(f"No gain's 95% interval excludes zero: with these test examples, a change smaller "
                             f"than about ±{half_width * 100:.1f} points cannot be told from noise.")
        else:
            sentences.append(f"The other {len(cells) - len(sure_up) - len(sure_down)} of {len(cells)} "
                             "adapter–target cells cannot be told apart from the base model at this size.")
    else:
        best, worst = cells.loc[cells["gain"].idxmax()], cells.loc[cells["gain"].idxmin()]
        sentences.append(f"Largest gain {_with_interval(best)}" + (f"; largest loss {_with_interval(worst)}."
                                                                     if worst["gain"] < 0 else "; no adapter loses anywhere.")
                         + " No intervals yet (run `traitmap analyze`), so none of these is known to be more than noise.")
    collapsed = {(m, t) for (m, t), found in flags.items() if any(f.startswith("collapsed") for f in found)}
    adapters = [m for m in dict.fromkeys(cells["model"]) if any((m, t) in collapsed for t in cells["task"])]
    if adapters:
        base_too = [t for t in dict.fromkeys(cells["task"]) if ("base", t) in collapsed]
        sentences.append(f"{listing(adapters)} collapsed to one answer on some target: a gain there comes from the "
                         "label given every time, not from reading the question"
                         + (f"; the base model does the same on {listing(base_too)}." if base_too else "."))
    rows = []
    for row in cells.itertuples():
        rows.append([row.model, row.task, points(row.gain), _interval(row.gain_low, row.gain_high),
                     "" if pd.isna(row.n) else f"{int(row.n)}", "; ".join(flags.get((row.model, row.task), []))])
    blocks = [Table(columns=["source (adapter)", "target", "gain (points)", "95% interval", "examples", "flags"],
                    rows=rows, numeric=False,
                    caption="Each adapter's gain over the base model on each target, in percentage points, "
                            "with its bootstrap interval over the test examples.")]
    return Section(id="answers", title=title, sentences=sentences, blocks=blocks)


# --- (2) the transfer matrix ---------------------------------------------------------------


def _ci_hover(study, matrix: pd.DataFrame, value: str, low: str, high: str, as_gain: bool) -> list[list[str]] | None:
    ci, _ = read_csv(study, "matrix_ci.csv", ["model", "task", value, low, high])
    if ci is None:
        return None
    ci = ci.set_index(["model", "task"])
    fmt = points if as_gain else percent
    unit = " pts" if as_gain else ""
    rows = []
    for model in matrix.index:
        row = []
        for task in matrix.columns:
            v = matrix.loc[model, task]
            text = f"{figures.esc(model)} → {figures.esc(task)}<br>{fmt(v)}{unit}" if pd.notna(v) else "no score"
            if (model, task) in ci.index and pd.notna(ci.loc[(model, task)][[low, high]]).all():
                c = ci.loc[(model, task)]
                text += f"<br>interval {fmt(c[low])} to {fmt(c[high])}"
                if "n" in ci.columns and pd.notna(c["n"]):
                    text += f"<br>n = {int(c['n'])}"
            row.append(text)
        rows.append(row)
    return rows


def matrix_section(study) -> Section:
    matrix, gains = study.matrix, study.gains
    sentences = []
    g = gains.stack().dropna()
    if len(g):
        (best_model, best_task), best = g.idxmax(), g.max()
        (worst_model, worst_task), worst = g.idxmin(), g.min()
        if best > 0:
            first = f"The {best_model} adapter gains most on {best_task} ({points(best)} points)"
        else:
            first = f"No adapter beats the base model anywhere; the closest is {best_model} on {best_task} ({points(best)})"
        if worst < 0 and (worst_model, worst_task) != (best_model, best_task):
            first += f"; {worst_model} hurts {worst_task} most ({points(worst)})."
        else:
            first += "; no adapter falls below the base model on any target."
        sentences.append(first)
        mean = gains.mean(axis=1).dropna().sort_values()
        second = f"{int((g > 0).sum())} of {len(g)} adapter–target cells beat the base model"
        ci, _ = read_csv(study, "matrix_ci.csv", ["model", "task", "gain_low", "gain_high"])
        if ci is not None:
            ci = ci[ci["model"] != "base"]
            second += (f" ({int((ci['gain_low'] > 0).sum())} with an interval above zero, "
                       f"{int((ci['gain_high'] < 0).sum())} below)")
        if len(mean) > 1 and mean.iloc[-1] > mean.iloc[0]:
            second += (f"; averaged over targets, {mean.index[-1]} transfers best ({points(mean.iloc[-1])}) "
                       f"and {mean.index[0]} worst ({points(mean.iloc[0])}).")
        else:
            second += "."
        sentences.append(second)
    scores = matrix * 100
    blocks = [
        Figure.of("fig-matrix", figures.heatmap(
            scores, colorbar="score (%)", label=lambda v: f"{v:.1f}", zmin=0, zmax=100,
            hover=_ci_hover(study, matrix, "score", "low", "high", as_gain=False)),
            caption="Transfer matrix: score of each model (rows; base first) on each target task (columns), in %."),
        Figure.of("fig-gains", figures.heatmap(
            gains * 100, colorbar="gain (points)", label=lambda v: signed(v, 1), diverging=True,
            hover=_ci_hover(study, gains, "gain", "gain_low", "gain_high", as_gain=True)),
            caption="Gains over the base model in percentage points: blue helps, red hurts."),
    ]
    bias_sentences, bias_blocks = metric_disagreement(study)
    return Section(id="matrix", title="Transfer matrix", sentences=sentences + bias_sentences, blocks=blocks + bias_blocks)


# --- (3) traits ----------------------------------------------------------------------------


def _is_component(key: object, components: list[str]) -> bool:
    return str(key) in components or str(key).upper().startswith("PC")


def _frame(value, components: list[str], names: list[str], components_first: bool) -> pd.DataFrame:
    """Loadings or scores as (tasks or adapters) x components, whichever way round they were saved.

    Nested lists follow scikit-learn unless their shape says otherwise: `components_` is
    components x tasks (components_first), `transform()` output is adapters x components.
    """
    if isinstance(value, dict):
        df = pd.DataFrame({k: pd.Series(v) for k, v in value.items()})
        return df if all(_is_component(k, components) for k in value) else df.T
    arr = np.asarray(value, dtype=float).reshape(len(value), -1)
    flipped = (len(components), len(names))
    if arr.shape == flipped and (components_first or arr.shape != (len(names), len(components))):
        arr = arr.T
    return pd.DataFrame(arr, index=names[: arr.shape[0]], columns=components[: arr.shape[1]])


def pca_frames(pca: dict, gains: pd.DataFrame) -> tuple[pd.Series, pd.DataFrame, pd.DataFrame]:
    """(explained variance ratio, loadings tasks x PCs, scores adapters x PCs) from pca.json.

    Accepts {PC: {task: v}} or {task: {PC: v}} or nested lists (then names come from
    "tasks"/"adapters" keys, else from the gains matrix).
    """
    ratio = pca.get("explained_variance_ratio", [])
    components = [str(c) for c in pca.get("components") or
                  (list(ratio) if isinstance(ratio, dict) else [f"PC{i}" for i in range(len(ratio))])]
    ratio = pd.Series(ratio if not isinstance(ratio, dict) else [ratio[c] for c in components],
                      index=components[: len(ratio)], dtype=float)
    tasks = [str(t) for t in pca.get("tasks") or gains.columns]
    adapters = [str(a) for a in pca.get("adapters") or pca.get("models") or gains.index]
    loadings = _frame(pca.get("loadings", {}), components, tasks, components_first=True)
    scores = _frame(pca.get("scores", {}), components, adapters, components_first=False)
    order = [c for c in components if c in loadings.columns]
    return ratio, loadings[order], scores[[c for c in order if c in scores.columns]]


def _no_pca(study) -> str:
    """Why a study has no pca.json, in its own terms."""
    gains = study.gains
    if len(gains) < 2 or len(gains.columns) < 2:
        return (f"Not computed for this study: PCA needs at least 2 adapters and 2 targets, this study has "
                f"{len(gains)} and {len(gains.columns)}.")
    if all(gains[t].dropna().nunique() <= 1 for t in gains.columns):
        return "Not computed for this study: the adapters' gains are the same on every target, so there is no trait to find."
    return "Not computed for this study: the PCA has not run (`traitmap pca` on its folder runs it)."


def _loading_phrase(column: pd.Series) -> str:
    top = column.sort_values()
    hi, lo = top.index[-1], top.index[0]
    text = f"{column.name} loads most on {hi} ({signed(top.iloc[-1])})"
    if len(top) > 1:
        if top.iloc[0] < 0:
            text += f" and against {lo} ({signed(top.iloc[0])})"
        else:
            second = top.index[-2]
            text += f" and {second} ({signed(top.iloc[-2])})"
    return text


def traits_section(study) -> Section:
    title = "Latent traits"
    pca = getattr(study, "pca", None)
    if not pca:
        return missing("traits", title, _no_pca(study))
    ratio, loadings, scores = pca_frames(pca, study.gains)
    if ratio.empty or loadings.empty:
        return missing("traits", title, "pca.json has no explained variance or loadings; nothing drawn.")
    on = pca.get("on", "gains")
    k = min(4, len(ratio))
    sentences = [
        f"The first {k} component{'s' if k > 1 else ''} explain{'' if k > 1 else 's'} "
        f"{ratio.iloc[:k].sum() * 100:.0f}% of the variance of the {on} ({ratio.index[0]} alone "
        f"{ratio.iloc[0] * 100:.0f}%; the paper's first four explain about 75%).",
        "; ".join(_loading_phrase(loadings[c]) for c in loadings.columns[:2]) + ".",
    ]
    n_adapters = len(scores) if not scores.empty else len(pca.get("adapters") or [])
    if n_adapters and k >= n_adapters - 1:
        sentences.insert(1, f"With {n_adapters} adapters that share is 100% by construction ({n_adapters} centered "
                            f"points span at most {n_adapters - 1} dimension{'s' if n_adapters > 2 else ''}), so it "
                            "says nothing about how few traits explain the transfer; more sources would.")
    if not scores.empty:
        carriers = [f"{scores[c].idxmax()} the most {c} ({signed(scores[c].max())})" for c in scores.columns[:2]]
        sentences.append("Among the adapters, " + carriers[0].replace(" the most", " carries the most", 1)
                         + (f" and {carriers[1]}." if len(carriers) > 1 else "."))
    blocks = [
        Figure.of("fig-scree", figures.scree(ratio),
                  caption=f"Variance of the {on} explained by each principal component."),
        Figure.of("fig-loadings", figures.heatmap(loadings, colorbar="loading", label=signed,
                                                  diverging=True),
                  caption="Loadings: which target tasks move together along each component."),
    ]
    if not scores.empty and len(scores.columns) >= 2:
        x, y = scores.columns[:2]
        blocks.append(Figure.of("fig-biplot", figures.biplot(scores, loadings, x, y),
                                caption=f"Biplot: adapters' weights on {x} and {y}; arrows are task loadings "
                                        f"(rescaled to the points' spread)."))
    if not scores.empty:
        blocks.append(Figure.of("fig-profiles", figures.profiles(scores[scores.columns[:4]]),
                                caption="Trait profiles: each adapter's weight on the leading components."))
    traits = read_json(study, "traits.json") or {}
    components = traits.get("components") or []
    if not components and skipped(study, "traits"):
        blocks.append(Note(skipped(study, "traits").replace(
            "Skipped", "The traits' stability and their test against chance are skipped", 1)))
    if components:
        real = resolved_components(traits)
        explained = [f"{c['component']} follows {c['behaviour']}" for c in components if c.get("behaviour")]
        if explained:
            sentences.insert(0, "What the components follow in the adapters' answers, before any reading of their "
                                "loadings: " + "; ".join(explained) + ".")
        sentences.append(
            f"{len(real)} of {len(components)} components beat a column-permutation null "
            f"({listing(real) if real else 'none'}; a component counts only where every earlier one does); with few "
            f"adapters a trait can be stable yet not distinguishable from chance, so read the names as hypotheses."
        )
        blocks.append(Table(
            columns=["trait", "behaviour it follows", "name (from task tags)", "variance (95% CI)", "stability",
                     "p (vs chance)"],
            rows=[[c["component"], c.get("behaviour") or "—", c.get("name") or "",
                   _ci(c.get("explained_variance_ratio"), c.get("evr_low"), c.get("evr_high")),
                   _fixed(c.get("bootstrap_stability")), _fixed(c.get("p_value"))] for c in components],
            caption="Each trait's behaviour (the measured answer habit its adapter scores follow: Spearman ρ with "
                    "label answer rates, answer length and unparsed answers, corrected for trying them all), its "
                    "suggested name (override with trait_names in the study's [analysis]), its share of variance "
                    "with a bootstrap interval over examples, its stability (mean |cosine| of bootstrap loadings to "
                    "these ones; 1 = identical) and a parallel-analysis p-value.",
        ))
    return Section(id="traits", title=title, sentences=sentences, blocks=blocks)


def _fixed(value) -> str:
    return "" if value is None or pd.isna(value) else f"{value:.2f}"


def _ci(value, low, high) -> str:
    if value is None or pd.isna(value):
        return ""
    return f"{value * 100:.0f}%" + (f" ({low * 100:.0f}–{high * 100:.0f}%)" if _known(low) and _known(high) else "")


def _known(value) -> bool:
    return value is not None and not pd.isna(value)


# --- (last) the example browser -------------------------------------------------------------


def _clip(value: object) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    text = str(value)
    if len(text) > TEXT_CAP:
        return text[:TEXT_CAP] + f"\n… [{len(text) - TEXT_CAP:,} more characters not shown]"
    return text


def _training_seed(seed) -> int | None:
    """The adapter's training seed; the base model was not trained (its records carry -1)."""
    return int(seed) if seed is not None and pd.notna(seed) and int(seed) >= 0 else None


def example_rows(records: pd.DataFrame, cap: int = EXAMPLE_CAP) -> tuple[dict, int]:
    """Records for the browser as {columns, rows}, at most `cap`, spread evenly over (model, task)."""
    total = len(records)
    if total > cap:
        groups = records.groupby(["model", "task"], sort=False)
        per = max(1, cap // groups.ngroups)
        records = groups.head(per).head(cap)
    rows = []
    for rec in records.itertuples(index=False):
        r = rec._asdict()
        correct = r.get("correct")
        rows.append([
            str(r.get("model", "")), _training_seed(r.get("seed")), str(r.get("task", "")),
            str(r.get("example_id", "")), None if correct is None or pd.isna(correct) else bool(correct >= 0.5),
            _clip(r.get("parsed")), _clip(r.get("gold")), _clip(r.get("prompt")), _clip(r.get("output")),
        ])
    return {"columns": EXAMPLE_COLUMNS, "rows": rows}, total


def examples_section(records: pd.DataFrame) -> tuple[Section, dict]:
    data, total = example_rows(records)
    shown = len(data["rows"])
    sentences = []
    if total:
        acc = records.groupby("model")["correct"].mean().sort_values()
        sentences.append(f"{total:,} scored examples; {shown:,} are embedded below"
                         + (f" (capped at {EXAMPLE_CAP:,}, spread evenly over models and tasks)." if shown < total else ".")
                         )
        if len(acc) > 1 and acc.iloc[-1] > acc.iloc[0]:
            sentences.append(f"Over all its examples, {acc.index[-1]} is right most often ({percent(acc.iloc[-1])}) "
                             f"and {acc.index[0]} least ({percent(acc.iloc[0])}).")
    section = Section(id="examples", title="Examples", sentences=sentences,
                      note=None if total else "No scored examples in this study.")
    return section, data


# --- training ------------------------------------------------------------------------------


def _adapter_logs(study) -> list[tuple[str, int, dict, list[dict]]]:
    """(adapter, seed, its stored training summary, its per-step log) of every trained adapter."""
    from traitmap.plan import adapter_path

    found = []
    for _, adapter in study.adapters.iterrows():
        name, seed = adapter["name"], int(adapter.get("seed", 0))
        summary = json.loads(adapter.get("train_log") or "{}")
        path = adapter_path(study.out_dir, name, seed) / "training_log.json"
        steps = json.loads(path.read_text(encoding="utf-8")).get("log", []) if path.is_file() else []
        found.append((str(name), seed, summary, steps))
    return found


def training_section(study) -> Section:
    """Whether each adapter finished learning: its training and validation curves, what ended
    its training, and what `max_length` cut from its examples."""
    title = "Training"
    if study.adapters.empty:
        return missing("training", title, "No adapter is trained yet.")
    logs = _adapter_logs(study)
    several_seeds = len({seed for _, seed, _, _ in logs}) > 1
    label = (lambda name, seed: f"{name} (seed {seed})") if several_seeds else (lambda name, seed: name)
    train = getattr(study.config, "train", None)
    limit = train.max_steps if train is not None and train.auto_steps else None
    rows, curves = [], []
    for name, seed, summary, steps in logs:
        shown = label(name, seed)
        kept = summary.get("kept_step")
        curves += [{"adapter": shown, "kind": "training", "step": s["step"], "loss": s["loss"], "kept": False}
                   for s in steps]
        curves += [{"adapter": shown, "kind": "validation", "step": v["step"], "loss": v["loss"], "kept": v["step"] == kept}
                   for v in summary.get("validation", [])]
        converged = summary.get("converged")
        rows.append([
            shown, str(summary.get("steps", "—")) + (f" of {limit}" if limit else ""), str(summary.get("stopped_by", "—")),
            "—" if converged is None else ("yes" if converged else "no"),
            "—" if summary.get("best_val_loss") is None else f"{summary['best_val_loss']:.3f} (step {summary['best_step']})",
            "—" if summary.get("final_loss") is None else f"{summary['first_loss']:.3f} → {summary['final_loss']:.3f}",
            str(summary.get("max_length", "—")),
            "—" if summary.get("share_cut") is None else percent(summary["share_cut"]),
            "—" if summary.get("share_answer_end_lost") is None else percent(summary["share_answer_end_lost"]),
        ])
    measured = [(name, seed, s) for name, seed, s, _ in logs if s.get("converged") is not None]
    sentences = []
    if measured:
        unconverged = [label(name, seed) for name, seed, s in measured if not s["converged"]]
        sentences.append(
            f"{len(measured) - len(unconverged)} of {len(logs)} adapters converged: their validation loss "
            f"({train.validation_examples} held-out examples of their source) had stopped improving by "
            f"{train.min_delta:g} for {train.patience} validations in a row."
            + (f" Not converged: {listing(unconverged)}; read their results as those of adapters still learning."
               if unconverged else ""))
    else:
        sentences.append("No validation loss was measured (no validation slice): nothing here says whether the "
                         "adapters had finished learning. Set validation_examples, or steps = \"auto\".")
    cut = [(label(name, seed), s) for name, seed, s, _ in logs if s.get("share_answer_end_lost")]
    if cut:
        sentences.append("Cut at max_length, the end of the answer (end-of-text included) was lost in "
                         + listing([f"{percent(s['share_answer_end_lost'], 0)} of {name}'s examples" for name, s in cut])
                         + ": these adapters never saw where their answers end.")
    blocks = [Table(columns=["adapter", "steps", "stopped by", "converged", "best validation loss",
                             "training loss first → last", "max_length", "examples cut", "answer end lost"],
                    rows=rows, caption="How each adapter's training ended", numeric=False)]
    if curves:
        blocks.insert(0, Figure.of("training-curves", figures.training_curves(pd.DataFrame(curves)),
                                   caption="Training loss per step (solid) and validation loss (dashed); the ring "
                                           "marks the adapter kept."))
    return Section(id="training", title=title, sentences=sentences, blocks=blocks)
