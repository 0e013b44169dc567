"""Are the traits real, and what do they mean? The paper names its components by hand
and never checks them; here each claim gets a test:

- `TraitStability`: refit PCA on bootstrap replicates of the matrix (examples resampled
  by `uncertainty.resample_matrix`, the one resampler) and on leave-one-task-out
  matrices, align each refit to the reference, and report loading intervals and a
  per-component stability score.
- `ComponentCount`: how many components beat chance (parallel analysis with a
  column-permutation null, with p-values).
- `name_traits`: a signed name per component from the tags of its top-loading tasks.
- `explain_by_behaviour`: what the adapters' scores on a component follow in their answers
  (label answer rates, answer length, unparsed answers), before any reading of loadings.
- `resolved_components`: the one count of components beyond chance (sequential).
- `impute_lowrank` (defined next to PCA, which uses it): fill missing cells.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.linalg import orthogonal_procrustes
from scipy.stats import rankdata

from traitmap.analysis.pca import (BASE, TraitPCA, adapter_draws, adapter_rows, component_names, has_variance,
                                   impute_lowrank)
from traitmap.analysis import analysis_settings
from traitmap.analysis.uncertainty import matrix_metric, percentile_interval, resample_matrix
from traitmap.errors import TraitmapError
from traitmap.files import write_csv, write_json
from traitmap.metrics import DEFAULT_METRIC

__all__ = ["TraitStability", "ComponentCount", "align_rotation", "leave_one_task_out", "name_traits",
           "impute_lowrank", "resolved_components", "behaviours", "explain_by_behaviour", "run"]

BEHAVIOUR_ALPHA = 0.05


def align_rotation(components: np.ndarray, reference: np.ndarray, method: str = "procrustes") -> np.ndarray:
    """The k x k matrix R that best maps `components` (rows over tasks) onto `reference`:
    aligned = R.T @ components, aligned scores = scores @ R.

    "sign" only flips signs (keeps each component's identity); "procrustes" also rotates
    within the retained subspace, which forgives components that swap order when their
    variances are close.
    """
    if method == "sign":
        signs = np.sign(np.sum(components * reference[: len(components)], axis=1))
        return np.diag(np.where(signs == 0, 1.0, signs))
    if method != "procrustes":
        raise TraitmapError(f"alignment must be 'procrustes' or 'sign', got {method!r}", field="align")
    rotation, _ = orthogonal_procrustes(components.T, reference.T)
    return rotation


def abs_cosines(aligned: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """|cos| between matching rows (one value per component)."""
    norms = np.linalg.norm(aligned, axis=-1) * np.linalg.norm(reference, axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.abs(np.sum(aligned * reference, axis=-1)) / norms


def leave_one_task_out(matrix: pd.DataFrame, reference: TraitPCA, align: str = "procrustes",
                       skipped: dict[str, str] | None = None) -> pd.DataFrame:
    """For each task: refit PCA without it, align to the reference restricted to the
    remaining tasks, and report |cos| per component. A component that collapses when
    one task leaves is that task, not a trait. A task without which no PCA can be fitted
    (the others do not vary) gets no row; why goes into `skipped` (task -> reason)."""
    k = reference.n_components_
    tasks = list(reference.loadings_.columns)
    rows = {}
    for task in tasks:
        kept = [t for t in tasks if t != task]
        refit = TraitPCA(k, on=reference.on, standardize=reference.standardize, base=reference.base)
        try:
            refit.fit(matrix[kept])
        except TraitmapError as error:
            if skipped is not None:
                skipped[task] = str(error)
            continue
        target = reference.loadings_[kept].to_numpy()
        fitted = np.zeros_like(target)
        fitted[: refit.n_components_] = refit.loadings_.to_numpy()
        aligned = align_rotation(fitted, target, align).T @ fitted
        rows[task] = abs_cosines(aligned, target)
    return pd.DataFrame.from_dict(rows, orient="index", columns=reference.loadings_.index).rename_axis("left_out")


class TraitStability:
    """Bootstrap (over examples) and leave-one-task-out stability of the PCA traits.

    fit(records) -> self with:
      reference_: TraitPCA on the point matrix (what the report shows)
      loadings_ci_: long (component, task, loading, low, high, boot_std)
      profiles_ci_: long (adapter, component, score, low, high): trait profiles with intervals
      stability_: per component (explained_variance_ratio, evr_low, evr_high,
        bootstrap_stability = mean |cos| of aligned refits to the reference, loto_min)
      loto_: left-out task x component |cos|
      draws_: the MatrixDraws the refits used
    """

    def __init__(self, n_components: int = 4, n_boot: int = 500, level: float = 0.95, seed: int = 0,
                 on: str = "gains", standardize: bool = False, align: str = "procrustes", base: str = BASE,
                 metric: str = DEFAULT_METRIC, labels: dict[str, list[str]] | None = None):
        self.n_components = n_components
        self.n_boot = n_boot
        self.level = level
        self.seed = seed
        self.on = on
        self.standardize = standardize
        self.align = align
        self.base = base
        self.metric, self.labels = metric, labels  # what the matrix is scored in (`resample_matrix`)

    def _pca(self) -> TraitPCA:
        return TraitPCA(self.n_components, on=self.on, standardize=self.standardize, base=self.base)

    def fit(self, records: pd.DataFrame) -> "TraitStability":
        draws = resample_matrix(records, self.n_boot, self.seed, self.base, self.metric, self.labels)
        reference = self._pca().fit(draws.point)
        ref_loadings = reference.loadings_.to_numpy()
        k, n_boot = reference.n_components_, self.n_boot
        loadings = np.empty((n_boot,) + ref_loadings.shape)
        profiles = np.empty((n_boot,) + reference.scores_.shape)
        evr = np.empty((n_boot, k))
        replicates = adapter_draws(draws.draws, list(draws.point.index), self.on, self.base)
        pca = self._pca()
        for b, x in enumerate(replicates):
            if np.isnan(x).any():
                x = impute_lowrank(pd.DataFrame(x), rank=pca.capped_components(x.shape)).to_numpy()
            if not has_variance(x):  # a replicate that drew no differences has no components
                loadings[b], profiles[b], evr[b] = np.nan, np.nan, np.nan
                continue
            replicate = pca.fit_array(x)
            rotation = align_rotation(replicate.components, ref_loadings, self.align)
            loadings[b] = rotation.T @ replicate.components
            profiles[b] = replicate.scores @ rotation
            evr[b] = replicate.explained_variance_ratio
        names = list(reference.loadings_.index)
        tasks = list(reference.loadings_.columns)
        adapters = list(reference.scores_.index)

        low, high = percentile_interval(loadings, self.level)
        self.loadings_ci_ = pd.DataFrame({
            "component": np.repeat(names, len(tasks)),
            "task": np.tile(tasks, k),
            "loading": ref_loadings.ravel(),
            "low": low.ravel(),
            "high": high.ravel(),
            "boot_std": np.nanstd(loadings, axis=0).ravel(),
        })
        low, high = percentile_interval(profiles, self.level)
        self.profiles_ci_ = pd.DataFrame({
            "adapter": np.repeat(adapters, k),
            "component": np.tile(names, len(adapters)),
            "score": reference.scores_.to_numpy().ravel(),
            "low": low.ravel(),
            "high": high.ravel(),
        })
        evr_low, evr_high = percentile_interval(evr, self.level)
        self.loto_skipped_ = {}
        self.loto_ = (leave_one_task_out(draws.point, reference, self.align, self.loto_skipped_) if len(tasks) > 2
                      else pd.DataFrame(columns=names, dtype=float))
        self.stability_ = pd.DataFrame({
            "explained_variance_ratio": reference.explained_variance_ratio_,
            "evr_low": evr_low,
            "evr_high": evr_high,
            "bootstrap_stability": np.nanmean(abs_cosines(loadings, ref_loadings[None]), axis=0),
            "loto_min": self.loto_.min(axis=0) if len(self.loto_) else np.nan,
        }, index=pd.Index(names, name="component"))
        self.reference_ = reference
        self.draws_ = draws
        return self

    def to_dict(self) -> dict:
        return {
            "n_boot": self.n_boot,
            "level": self.level,
            "align": self.align,
            "components": self.stability_.reset_index().to_dict(orient="records"),
            "leave_one_task_out": {t: row.to_dict() for t, row in self.loto_.iterrows()},
            "leave_one_task_out_skipped": self.loto_skipped_,
        }


class ComponentCount:
    """How many components are more than noise: parallel analysis with a permutation null.

    Permuting each task column independently keeps every task's spread but breaks the
    co-movement between tasks that a trait is. A component is kept while its eigenvalue
    beats the `quantile` of the null eigenvalue of the same rank (stopping at the first
    that does not). p-values: (1 + #null >= observed) / (1 + n_permutations).

    fit(matrix) -> self with eigenvalues_, null_mean_, null_quantile_, p_values_ (Series
    PC0..) and n_components_ (int).
    """

    def __init__(self, n_permutations: int = 1000, quantile: float = 0.95, seed: int = 0,
                 on: str = "gains", standardize: bool = False, impute_rank: int = 2, base: str = BASE):
        self.n_permutations = n_permutations
        self.quantile = quantile
        self.seed = seed
        self.on = on
        self.standardize = standardize
        self.impute_rank = impute_rank
        self.base = base

    def fit(self, matrix: pd.DataFrame) -> "ComponentCount":
        data = adapter_rows(matrix, self.on, self.base)
        if data.isna().to_numpy().any():
            data = impute_lowrank(data, self.impute_rank)
        x = data.to_numpy(dtype=float)
        x = x - x.mean(axis=0)
        if self.standardize:
            std = x.std(axis=0, ddof=1)
            x = x / np.where(std > 0, std, 1.0)
        n, n_tasks = x.shape
        if n < 3:
            raise TraitmapError(f"counting components needs at least 3 adapters, got {n}")
        rng = np.random.default_rng(self.seed)
        order = rng.random((self.n_permutations, n, n_tasks)).argsort(axis=1)
        permuted = np.take_along_axis(np.broadcast_to(x, order.shape), order, axis=1)
        k = min(n - 1, n_tasks)
        observed = (np.linalg.svd(x, compute_uv=False) ** 2 / (n - 1))[:k]
        null = (np.linalg.svd(permuted, compute_uv=False) ** 2 / (n - 1))[:, :k]
        names = component_names(k)
        self.eigenvalues_ = pd.Series(observed, index=names)
        self.null_mean_ = pd.Series(null.mean(axis=0), index=names)
        self.null_quantile_ = pd.Series(np.quantile(null, self.quantile, axis=0), index=names)
        self.p_values_ = pd.Series((1 + (null >= observed).sum(axis=0)) / (1 + self.n_permutations), index=names)
        beats = (self.eigenvalues_ > self.null_quantile_).to_numpy()
        self.n_components_ = int(k if beats.all() else beats.argmin())
        return self

    def to_dict(self) -> dict:
        return {
            "method": "parallel analysis, column-permutation null",
            "n_permutations": self.n_permutations,
            "quantile": self.quantile,
            "n_components": self.n_components_,
            "eigenvalues": self.eigenvalues_.to_dict(),
            "null_quantile": self.null_quantile_.to_dict(),
            "p_values": self.p_values_.to_dict(),
        }


def name_traits(loadings: pd.DataFrame, task_tags: dict[str, list[str]], overrides: dict[str, str] | None = None,
                share: float = 0.5) -> pd.DataFrame:
    """A signed name per component, e.g. "+math / -classification".

    The top tasks of a sign are those whose |loading| is at least `share` of the
    component's largest. Each side is named by its tag with the largest summed |loading|,
    ignoring tags that every task carries or that both sides carry (they explain nothing);
    a side with no such tag is named by its top task. `overrides` (the study's
    trait_names) replace the suggestion but the suggestion is kept alongside.
    """
    overrides = overrides or {}
    everywhere = set.intersection(*(set(task_tags.get(t, [])) for t in loadings.columns)) if len(loadings.columns) else set()
    rows = []
    for component, row in loadings.iterrows():
        cut = share * row.abs().max()
        positive = row[row >= cut].sort_values(ascending=False)
        negative = row[row <= -cut].sort_values()
        sides = {"+": positive, "-": negative}
        tags_of = {sign: {t for task in side.index for t in task_tags.get(task, [])} for sign, side in sides.items()}
        shared = (tags_of["+"] & tags_of["-"]) | everywhere
        parts = []
        for sign, side in sides.items():
            if side.empty:
                continue
            weight = Counter()
            for task, value in side.items():
                for tag in task_tags.get(task, []):
                    if tag not in shared:
                        weight[tag] += abs(value)
            label = max(sorted(weight), key=weight.get) if weight else side.index[0]
            parts.append(f"{sign}{label}")
        suggested = " / ".join(parts)
        rows.append({
            "component": component,
            "name": overrides.get(component, suggested),
            "suggested": suggested,
            "positive_tasks": list(positive.index),
            "negative_tasks": list(negative.index),
        })
    return pd.DataFrame(rows).set_index("component")


def resolved_components(traits: dict | None) -> list[str]:
    """The components beyond chance, read from traits.json: sequential (PC_k counts only
    where PC_0..PC_{k-1} do), as `ComponentCount.n_components_` decides. The report, the
    findings and traits.json all count with this."""
    count = (traits or {}).get("component_count") or {}
    n = int(count.get("n_components") or 0)
    return [c["component"] for c in (traits or {}).get("components") or []][:n]


def behaviours(records: pd.DataFrame, choice_labels: dict[str, list[str]],
               answer_length: pd.Series | None = None) -> pd.DataFrame:
    """Adapters x measured behaviours: the share of each label answered on each choice
    target ("'yes' on msrp_paraphrase"), the share of unparsed answers, and the median
    answer length (characters of `output` where records have it, else `answer_length`)."""
    columns = {}
    parsed = records["parsed"].fillna("").astype(str)
    for task, labels in choice_labels.items():
        part = records["task"] == task
        for label in labels:
            columns[f"'{label}' on {task}"] = (parsed[part] == label).groupby(records.loc[part, "model"]).mean()
    columns["unparsed answers"] = (parsed == "").groupby(records["model"]).mean()
    if "output" in records.columns:
        columns["median answer length"] = records["output"].fillna("").str.len().groupby(records["model"]).median()
    elif answer_length is not None:
        columns["median answer length"] = answer_length
    table = pd.DataFrame(columns)
    return table.loc[:, table.nunique(dropna=True) > 1]


def explain_by_behaviour(scores: pd.DataFrame, table: pd.DataFrame, n_permutations: int = 2000,
                         seed: int = 0) -> dict[str, dict]:
    """Per component: the behaviours its adapter scores follow (Spearman rho), with p-values
    corrected for trying every behaviour (max-|rho| over behaviours under permuted adapters).

    Returns {component: {"name", "behaviours": [{"behaviour", "rho", "p"}]}}: the behaviours with
    p < alpha, the one the name leads with first, then by |rho|; "name" is None where none passes."""
    adapters = [a for a in scores.index if a in table.index]
    table = table.loc[adapters].dropna(axis=1)
    if len(adapters) < 4 or table.empty:
        return {}
    table = table.loc[:, table.nunique() > 1]
    if table.empty:
        return {}
    behaviour_ranks = rankdata(table.to_numpy(dtype=float), axis=0)
    behaviour_ranks = (behaviour_ranks - behaviour_ranks.mean(axis=0)) / behaviour_ranks.std(axis=0)
    generator = np.random.default_rng(seed)
    order = generator.random((n_permutations, len(adapters))).argsort(axis=1)
    out = {}
    for component in scores.columns:
        ranks = rankdata(scores.loc[adapters, component].to_numpy(dtype=float))
        if ranks.std() == 0:
            continue
        ranks = (ranks - ranks.mean()) / ranks.std()
        rho = ranks @ behaviour_ranks / len(adapters)
        null = np.abs(ranks[order] @ behaviour_ranks / len(adapters)).max(axis=1)
        p = (1 + (null[:, None] >= np.abs(rho)[None, :] - 1e-12).sum(axis=0)) / (1 + n_permutations)
        found = sorted(({"behaviour": b, "rho": float(r), "p": float(q)} for b, r, q in zip(table.columns, rho, p)),
                       key=lambda e: -abs(e["rho"]))
        passing = [e for e in found if e["p"] < BEHAVIOUR_ALPHA]
        lead = behaviour_lead(passing)
        passing = [e for e in passing if e is lead] + [e for e in passing if e is not lead]
        out[component] = {"name": behaviour_name(passing), "behaviours": passing}
    return out


def behaviour_lead(passing: list[dict]) -> dict | None:
    """The behaviour a name starts with: among label answers, the strongest that rises with
    the score (a label answered more), else the strongest."""
    if not passing or not passing[0]["behaviour"].startswith("'"):
        return passing[0] if passing else None
    labels = [e for e in passing if e["behaviour"].startswith("'")]
    return next((e for e in labels if e["rho"] > 0), labels[0])


def behaviour_name(passing: list[dict]) -> str | None:
    """"answer bias: 'yes' on msrp_paraphrase and tweeteval_offensive" (the labels answered
    more as the score rises, two targets at most), else the strongest other behaviour."""
    if not passing:
        return None
    top = passing[0]
    if not top["behaviour"].startswith("'"):
        return f"{top['behaviour']} ({'rises' if top['rho'] > 0 else 'falls'} with the score)"
    labels = [e for e in passing if e["behaviour"].startswith("'")]
    rising = [e for e in labels if e["rho"] > 0] or labels
    chosen, tasks = [], set()
    for e in rising:
        label, task = e["behaviour"].split(" on ", 1)
        if task not in tasks and len(chosen) < 2:
            chosen.append((label, task))
            tasks.add(task)
    groups: dict[str, list[str]] = {}
    for label, task in chosen:
        groups.setdefault(label, []).append(task)
    words = " and ".join(f"{label} on {' and '.join(t)}" for label, t in groups.items())
    return "answer bias: " + ("" if rising[0]["rho"] > 0 else "fewer ") + words


def _choice_labels(study, tasks) -> dict[str, list[str]]:
    labels = {}
    for task in tasks:
        try:
            choices = study.task(task).choices
        except (TraitmapError, AttributeError):
            choices = None
        if choices:
            labels[task] = list(choices)
    return labels


def _task_tags(study, tasks) -> dict[str, list[str]]:
    tags = {}
    for task in tasks:
        try:
            tags[task] = list(study.task(task).tags)
        except TraitmapError:
            tags[task] = []
    return tags


MIN_VARYING_TARGETS = 3
MINIMUM = f"at least 2 adapters and {MIN_VARYING_TARGETS} targets on which their gains differ"


def shortfall(study) -> str | None:
    """Bootstrap and leave-one-task-out stability need more than one direction to be stable in."""
    gains = study.gains
    varying = [t for t in gains.columns if gains[t].dropna().nunique() > 1]
    if len(gains) < 2 or len(varying) < MIN_VARYING_TARGETS:
        return (f"needs {MINIMUM}; this study has {len(gains)} adapter{'s' if len(gains) != 1 else ''} and "
                f"{len(varying)} such target{'s' if len(varying) != 1 else ''}"
                + (f" ({', '.join(map(str, varying))})" if varying else ""))
    return None


def run(study, out_dir: Path) -> list[Path]:
    """traits.json (names, stability, component count), trait_loadings_ci.csv,
    trait_profiles.csv, trait_loto.csv."""
    settings = analysis_settings(study)
    records = study.records()
    common = dict(on=settings.get("pca_on", "gains"), standardize=bool(settings.get("standardize", False)))
    stability = TraitStability(
        n_components=int(settings.get("n_components", 4)),
        n_boot=int(settings.get("trait_n_boot", 500)),
        level=float(settings.get("ci_level", 0.95)),
        seed=int(settings.get("bootstrap_seed", 0)),
        align=settings.get("trait_align", "procrustes"),
        **common,
        **matrix_metric(study),
    ).fit(records)
    point = stability.draws_.point
    count = ComponentCount(seed=int(settings.get("bootstrap_seed", 0)), **common).fit(point) if len(point) > 3 else None
    loadings = stability.reference_.loadings_
    names = name_traits(loadings, _task_tags(study, loadings.columns), settings.get("trait_names"))
    explained = explain_by_behaviour(stability.reference_.scores_,
                                     behaviours(records, _choice_labels(study, loadings.columns)),
                                     seed=int(settings.get("bootstrap_seed", 0)))
    components = []
    for component, row in stability.stability_.iterrows():
        entry = {"component": component, **names.loc[component].to_dict(), **row.to_dict()}
        if component in explained:
            entry.update(behaviour=explained[component]["name"], behaviours=explained[component]["behaviours"])
        if count is not None and component in count.p_values_.index:
            entry.update(eigenvalue=count.eigenvalues_[component], null_quantile=count.null_quantile_[component],
                         p_value=count.p_values_[component],
                         beats_chance=bool(component in count.eigenvalues_.index[: count.n_components_]))
        components.append(entry)
    payload = {
        "components": components,
        "component_count": count.to_dict() if count is not None else None,
        "stability": stability.to_dict(),
        "notes": [
            "bootstrap_stability: mean |cos| between each bootstrap refit (examples resampled, "
            f"aligned by {stability.align}) and the reference loadings; near 1 = stable.",
            "loto_min: the lowest |cos| when one task is left out; low means one task makes the component.",
            "evr_low/evr_high: bootstrap spread of the explained variance; resampling adds noise, so strong "
            "components' shares drop and weak ones' rise: read as spread, not as an unbiased interval.",
            "Names are suggested from task tags; set analysis.trait_names to override.",
            "behaviour: what the adapters' scores on the component follow in their answers (Spearman rho, "
            "p corrected for trying every behaviour by a max-|rho| permutation over adapters); read it "
            "before the loadings.",
            "beats_chance is sequential: a component counts only where every earlier one does.",
        ],
    }
    profiles = stability.profiles_ci_.join(names["name"], on="component")
    loadings_ci = stability.loadings_ci_.join(names["name"], on="component")
    out_dir = Path(out_dir)
    return [
        write_json(out_dir / "traits.json", payload),
        write_csv(out_dir / "trait_loadings_ci.csv", loadings_ci),
        write_csv(out_dir / "trait_profiles.csv", profiles),
        write_csv(out_dir / "trait_loto.csv", stability.loto_, index=True),
    ]
