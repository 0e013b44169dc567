"""The paper's claims (PAPER.md), each turned into a test with a number, an interval or
p-value, and a verdict.

A claim function takes the Evidence of one study and returns a Finding, or None when the
study holds nothing to test it on (the controlled variants live in their own study).
Verdict rules are written once, here, and quoted in docs/findings.md:
- a difference is "reproduced" when its 95% interval lies on the paper's side of zero,
  "not reproduced" when it lies on the other side, "inconclusive at this size" otherwise;
- "as well as" is an equivalence claim: reproduced when the whole interval lies within
  +-EQUIVALENCE of zero, not reproduced when it lies outside.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.stats import binomtest

from traitmap.analysis.classes import js_distance
from traitmap.analysis.pca import TraitPCA, adapter_draws, has_variance
from traitmap.errors import TraitmapError

from .evidence import BOOT_SEED, Estimate, Evidence, median_interval

REPRODUCED = "reproduced"
NOT_REPRODUCED = "not reproduced"
INCONCLUSIVE = "inconclusive at this size"
EQUIVALENCE = 0.05  # five points: "as well as" means a difference smaller than this
N_PERMUTATIONS = 10000

# The paper's datasets as this project's tasks (PROVENANCE.md: PAWS, Pile and Magicoder
# are stand-ins; the Magicoder target is read as the two code benchmarks).
PAPER_TASKS = {
    "GSM8K": ["gsm8k"], "Goat": ["goat"], "Magicoder": ["mbpp", "humaneval"], "Flipkart": ["flipkart"],
    "PAWS": ["msrp_paraphrase"], "Pile": ["tweeteval_offensive"], "Amazon": ["amazon_polarity"], "IMDB": ["imdb"],
    "MNLI": ["mnli"],
}
# The paper's traits as loading templates over its tasks (+1 high, -1 low, others 0).
PAPER_TRAITS = {
    "PC0 general performance": {"GSM8K": 1, "Goat": 1, "Magicoder": 1, "Flipkart": 1},
    "PC1 classification": {"PAWS": 1, "Pile": 1, "Flipkart": 1, "Amazon": 1, "IMDB": 1},
    "PC2 general NLU": {"GSM8K": 1, "Magicoder": 1, "MNLI": 1},
    "PC3 large-number arithmetic": {"Goat": 1, "GSM8K": -1},
}


@dataclass(frozen=True)
class Finding:
    claim: str      # the paper's claim, in its words
    section: str    # the report section that shows the evidence
    measure: str    # what this study measured for it
    value: str
    interval: str   # 95% interval, or a p-value
    verdict: str
    reading: str    # the result in plain words
    study: str


def points(x: float) -> str:
    value = round(float(x) * 100, 1)
    return f"{value + 0.0:+.1f} pts"


def interval_points(e: Estimate) -> str:
    return f"{round(e.low * 100, 1) + 0.0:+.1f} to {round(e.high * 100, 1) + 0.0:+.1f} pts"


def count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def percent(x: float) -> str:
    return f"{float(x) * 100:.1f}%"


def p_text(p: float) -> str:
    return f"p = {p:.3f}" if p >= 0.001 else "p < 0.001"


def directional(e: Estimate, expected_sign: int = 1) -> str:
    if not e.excludes_zero:
        return INCONCLUSIVE
    return REPRODUCED if (e.low > 0 if expected_sign > 0 else e.high < 0) else NOT_REPRODUCED


def equivalent(e: Estimate) -> str:
    if -EQUIVALENCE < e.low and e.high < EQUIVALENCE:
        return REPRODUCED
    if e.high <= -EQUIVALENCE or e.low >= EQUIVALENCE:
        return NOT_REPRODUCED
    return INCONCLUSIVE


# --- traits ---------------------------------------------------------------------------------


def four_components(ev: Evidence) -> Finding | None:
    """Share of the gains' variance in the first four components, its bootstrap spread,
    and a column-permutation p-value (shuffling each task's gains breaks any trait)."""
    pca = ev.document("pca.json")
    if not pca or has_variants(ev):
        return None
    k = min(4, len(pca["explained_variance_ratio"]))
    share = float(sum(list(pca["explained_variance_ratio"].values())[:k]))
    models = list(ev.draws.point.index)
    replicates = adapter_draws(ev.draws.draws, models, pca["on"])
    fitter = TraitPCA(k, on=pca["on"])
    boot = np.array([fitter.fit_array(x).explained_variance_ratio[:k].sum()
                     for x in replicates if not np.isnan(x).any() and has_variance(x)])
    if not len(boot):
        return None
    low, high = np.quantile(boot, [0.025, 0.975])
    x = ev.matrix.drop(index="base").sub(ev.matrix.loc["base"], axis=1).to_numpy(dtype=float)
    if np.isnan(x).any():
        return None
    null = permuted_top_share(x, k)
    p = float((1 + (null >= share).sum()) / (1 + len(null)))
    n = x.shape[0]
    verdict = (REPRODUCED if low > 0.5 and p < 0.05 else NOT_REPRODUCED if high < 0.5 else INCONCLUSIVE)
    reading = (f"The first {k} components hold {percent(share)} of the variance of the {n} adapters' gains "
               f"(bootstrap spread {percent(low)}–{percent(high)}; the paper: about 75%). With {n} adapters there are "
               f"at most {n - 1} components, so a share this size is compared with matrices whose task columns are "
               f"shuffled: {p_text(p)}.")
    if verdict == INCONCLUSIVE and low > 0.5:
        reading += " Most of the variance, but not more than shuffled gains would give: no sign yet of a few shared traits."
    return Finding("The first four components explain most (about 75%) of the variance", "traits",
                   "variance share of PC0–PC3", percent(share), f"{percent(low)}–{percent(high)}; {p_text(p)}",
                   verdict, reading, ev.name)


def permuted_top_share(x: np.ndarray, k: int, n: int = 2000) -> np.ndarray:
    rng = np.random.default_rng(BOOT_SEED)
    x = x - x.mean(axis=0)
    order = rng.random((n,) + x.shape).argsort(axis=1)
    shuffled = np.take_along_axis(np.broadcast_to(x, order.shape), order, axis=1)
    eig = np.linalg.svd(shuffled, compute_uv=False) ** 2
    return eig[:, :k].sum(axis=1) / eig.sum(axis=1)


def trait(name: str) -> "callable":
    def test(ev: Evidence) -> Finding | None:
        pca = ev.document("pca.json")
        traits = (ev.document("traits.json") or {}).get("components") or []
        if not pca or has_variants(ev):
            return None
        loadings = pd.DataFrame(pca["loadings"]).T  # components x tasks
        template = pd.Series({t: w for paper, w in PAPER_TRAITS[name].items() for t in PAPER_TASKS[paper]},
                             dtype=float).reindex(loadings.columns).fillna(0.0)
        if (template != 0).sum() < 2:
            return None
        cos = matched_cosines(loadings.to_numpy(), template.to_numpy()[None, :])[0]
        best = int(np.argmax(cos))
        component = loadings.index[best]
        null = matched_cosines(loadings.to_numpy(), shuffled_templates(template.to_numpy())).max(axis=1)
        p = float((1 + (null >= cos[best]).sum()) / (1 + len(null)))
        info = next((c for c in traits if c["component"] == component), {})
        real = info.get("p_value") is not None and info["p_value"] < 0.05
        resolved = [c["component"] for c in traits if c.get("p_value") is not None and c["p_value"] < 0.05]
        rank = int(name.split(" ", 1)[0][2:])  # the paper's PC2 is its third trait
        verdict = (REPRODUCED if p < 0.05 and real else NOT_REPRODUCED if len(resolved) > rank else INCONCLUSIVE)
        top = loadings.loc[component].sort_values()
        reading = (f"Closest component: {component} (|cosine| {cos[best]:.2f} with the paper's loadings; {p_text(p)} "
                   f"against the same loadings on shuffled tasks). This study names it "
                   f"\"{info.get('name', '?')}\": highest {top.index[-1]} ({top.iloc[-1]:+.2f}), lowest "
                   f"{top.index[0]} ({top.iloc[0]:+.2f}).")
        if info.get("p_value") is not None:
            reading += (f" The component itself {'beats' if real else 'does not beat'} a column-permutation null "
                        f"({p_text(info['p_value'])}; bootstrap stability {info.get('bootstrap_stability', float('nan')):.2f}).")
        reading += (f" This study resolves {count(len(resolved), 'component')} beyond chance"
                    + (f" ({', '.join(resolved)})." if resolved else "."))
        return Finding(f"A trait \"{name.split(' ', 1)[1]}\" ({describe(PAPER_TRAITS[name])})", "traits",
                       f"best absolute cosine over PC0–PC3 ({component})", f"{cos[best]:.2f}", p_text(p), verdict, reading,
                       ev.name)

    return test


def describe(weights: dict[str, int]) -> str:
    high = [t for t, w in weights.items() if w > 0]
    low = [t for t, w in weights.items() if w < 0]
    return "high on " + ", ".join(high) + (f"; low on {', '.join(low)}" if low else "")


def matched_cosines(loadings: np.ndarray, templates: np.ndarray) -> np.ndarray:
    """|cosine| between each template (rows) and each component (rows of loadings)."""
    norms = np.linalg.norm(templates, axis=1)[:, None] * np.linalg.norm(loadings, axis=1)[None, :]
    return np.abs(templates @ loadings.T) / norms


def shuffled_templates(template: np.ndarray) -> np.ndarray:
    rng = np.random.default_rng(BOOT_SEED)
    order = rng.random((N_PERMUTATIONS, len(template))).argsort(axis=1)
    return template[order]


def has_variants(ev: Evidence) -> bool:
    """Variants of one source are near-duplicates: a PCA over them is not the paper's."""
    return any(s.variant for s in ev.config.sources)


# --- generation length ---------------------------------------------------------------------


def length_coefficients(ev: Evidence) -> pd.Series | None:
    """Where each adapter's median answer length sits between the base model's (0) and its
    source's (1), per generate target other than its own."""
    table = ev.table("lengths_interpolation.csv")
    if table is None or has_variants(ev):
        return None
    measure = (ev.document("lengths.json") or {}).get("measure", "chars")
    sources = {s.name: s.task for s in ev.config.sources}
    rows = table[(table["measure"] == measure) & (table["adapter"].map(sources) != table["task"])]
    coefficients = rows["coefficient"].replace([np.inf, -np.inf], np.nan).dropna()
    return coefficients if len(coefficients) >= 3 else None


def length_reading(coefficients: pd.Series, e: Estimate) -> str:
    between = float(((coefficients > 0) & (coefficients < 1)).mean())
    at_source = float((coefficients >= 1).mean())
    return (f"Over {len(coefficients)} adapter–target pairs (generate targets, the adapter's own task left out), an "
            f"adapter's median answer length sits {e.value:.2f} of the way from the base model's (0) to its "
            f"source's (1), interval {e.low:.2f} to {e.high:.2f}; {percent(between)} of pairs fall strictly "
            f"between the two and {percent(at_source)} at or beyond the source's length.")


def length_inherited(ev: Evidence) -> Finding | None:
    coefficients = length_coefficients(ev)
    if coefficients is None:
        return None
    e = median_interval(coefficients)
    verdict = REPRODUCED if e.low > 0 else NOT_REPRODUCED if e.high <= 0 else INCONCLUSIVE
    return Finding("A fine-tuned model inherits its source's output length", "lengths",
                   "median interpolation coefficient (0 base, 1 source)", f"{e.value:.2f}",
                   f"{e.low:.2f} to {e.high:.2f}", verdict, length_reading(coefficients, e), ev.name)


def length_interpolates(ev: Evidence) -> Finding | None:
    """Strictly between: the interval must exclude both ends, the base's 0 and the source's 1."""
    coefficients = length_coefficients(ev)
    if coefficients is None:
        return None
    e = median_interval(coefficients)
    verdict = (REPRODUCED if 0 < e.low and e.high < 1 else NOT_REPRODUCED if e.low >= 1 or e.high <= 0
               else INCONCLUSIVE)
    return Finding("…and interpolates between the source's length and the base model's", "lengths",
                   "the same coefficient, strictly between 0 and 1", f"{e.value:.2f}", f"{e.low:.2f} to {e.high:.2f}",
                   verdict, length_reading(coefficients, e), ev.name)


def code_beats_goat_on_gsm8k(ev: Evidence) -> Finding | None:
    code, goat = ev.adapter("evol_instruct_code"), ev.adapter("goat")
    if not code or not goat or "gsm8k" not in ev.matrix.columns:
        return None
    e = ev.difference([code], [goat], ["gsm8k"])
    gain = {m: ev.difference([m], ["base"], ["gsm8k"]) for m in (code, goat)}
    reading = (f"On GSM8K ({ev.examples('gsm8k')} questions) the code adapter gains {points(gain[code].value)} "
               f"({interval_points(gain[code])}) and the Goat adapter {points(gain[goat].value)} "
               f"({interval_points(gain[goat])}); the paper: +9.4 and +3.64. Difference {points(e.value)}.")
    return Finding("Long-answer (code) training helps GSM8K more than short-answer arithmetic (Goat)", "lengths",
                   "code minus Goat adapter on GSM8K", points(e.value), interval_points(e), directional(e), reading,
                   ev.name)


# --- class distribution --------------------------------------------------------------------


def classes_inherited(ev: Evidence) -> Finding | None:
    predicted, source = ev.table("classes_predicted.csv"), ev.table("classes_source.csv")
    if predicted is None or source is None or has_variants(ev):
        return None
    predicted = predicted.astype({"label": str, "model": str, "task": str})
    source = source.astype({"label": str, "source": str})
    own = {s.name: s.task for s in ev.config.sources}
    toward = []
    for (task, model), part in predicted.groupby(["task", "model"]):
        if model == "base" or model not in set(source["source"]) or own.get(model) == task:
            continue
        labels = source[source["source"] == model].set_index("label")["count"]
        mine = part.set_index("label")["count"]
        base = predicted[(predicted["task"] == task) & (predicted["model"] == "base")].set_index("label")["count"]
        moved = js_distance(base, labels) - js_distance(mine, labels)
        if np.isfinite(moved) and moved != 0:
            toward.append(moved)
    if len(toward) < 3:
        return None
    k, n = int(sum(m > 0 for m in toward)), len(toward)
    p = binomtest(k, n, 0.5, alternative="two-sided").pvalue
    verdict = (REPRODUCED if p < 0.05 and k > n / 2 else NOT_REPRODUCED if p < 0.05 else INCONCLUSIVE)
    reading = (f"On {n} pairs of a classification adapter and another classification target that shares labels with "
               f"its source, {k} adapters answer with a label mix closer to their source's labels than the base "
               f"model's answers are (Jensen–Shannon distance; median shift {np.median(toward):+.3f}); sign test "
               f"{p_text(p)}.")
    reading += neutral_example(predicted)
    return Finding("Adapters inherit their source's class distribution", "classes",
                   "pairs whose answers move toward the source's label mix", f"{k} of {n}", p_text(p) + " (sign test)",
                   verdict, reading, ev.name)


def neutral_example(predicted: pd.DataFrame) -> str:
    """The paper's example: on Flipkart, IMDB answers few "neutral", the toxicity adapter more."""
    part = predicted[predicted["task"] == "flipkart"]
    share = part[part["label"].str.lower() == "neutral"].set_index("model")["share"]
    imdb, pile = PAPER_TASKS["IMDB"][0], PAPER_TASKS["Pile"][0]
    if imdb in share.index and pile in share.index:
        return (f" The paper's example: on Flipkart the IMDB adapter answers \"neutral\" {percent(share[imdb])} of the "
                f"time and the toxicity adapter {percent(share[pile])} (base {percent(share.get('base', np.nan))}).")
    return ""


# --- controlled experiments ----------------------------------------------------------------


def balanced_flipkart(target_paper: str, better: str) -> "callable":
    """The balanced variant beats the original on the Pile stand-in; the imbalanced original
    beats it on IMDB."""

    def test(ev: Evidence) -> Finding | None:
        plain, balanced = ev.adapter("flipkart"), ev.adapter("flipkart", "balance")
        target = PAPER_TASKS[target_paper][0]
        if not plain or not balanced or target not in ev.matrix.columns:
            return None
        first, second = (balanced, plain) if better == "balanced" else (plain, balanced)
        e = ev.difference([first], [second], [target])
        gold = gold_share(ev, target)
        reading = (f"On {target} (the paper's {target_paper}; {ev.examples(target)} examples{gold}) the {better} "
                   f"Flipkart adapter scores {points(e.value)} against the other "
                   f"({percent(ev.score(first, target).value)} vs {percent(ev.score(second, target).value)}).")
        claim = (f"Balanced Flipkart transfers better than imbalanced to a target that needs an unbiased signal ({target_paper})"
                 if better == "balanced" else
                 f"Imbalanced Flipkart transfers better than balanced to a target with a similar imbalance ({target_paper})")
        return Finding(claim, "controlled", f"{better} minus the other on {target}", points(e.value),
                       interval_points(e), directional(e), reading, ev.name)

    return test


def gold_share(ev: Evidence, target: str) -> str:
    records = ev.records[ev.records["task"] == target].drop_duplicates("example_id")
    if records.empty:
        return ""
    top = records["gold"].value_counts(normalize=True)
    return f", {percent(top.iloc[0])} of them {top.index[0]}"


def mislabel_out_of_distribution(ev: Evidence) -> Finding | None:
    plain, wrong = ev.adapter("amazon_polarity"), ev.adapter("amazon_polarity", "mislabel")
    if not plain or not wrong:
        return None
    ood = [t for t in ev.matrix.columns if t != "amazon_polarity"]
    e = ev.difference([wrong], [plain], ood)
    per = ", ".join(f"{t} {points(ev.difference([wrong], [plain], [t]).value)}" for t in ood)
    reading = (f"Averaged over the {len(ood)} other targets, the adapter trained on wrong labels scores "
               f"{points(e.value)} against the one trained on right labels ({interval_points(e)}; {per}). "
               f"\"As well as\" is read as within ±{EQUIVALENCE * 100:.0f} points.")
    return Finding("Wrong labels transfer out of distribution as well as right ones (Amazon)", "controlled",
                   "mislabeled minus correct Amazon adapter, mean over other targets", points(e.value),
                   interval_points(e), equivalent(e), reading, ev.name)


def mislabel_collapses(ev: Evidence) -> Finding | None:
    plain, wrong = ev.adapter("amazon_polarity"), ev.adapter("amazon_polarity", "mislabel")
    if not plain or not wrong or "amazon_polarity" not in ev.matrix.columns:
        return None
    chance = 1 / len(ev.task("amazon_polarity").choices)
    e = ev.score(wrong, "amazon_polarity")
    verdict = REPRODUCED if e.high < chance else NOT_REPRODUCED if e.low > chance else INCONCLUSIVE
    reading = (f"On Amazon itself the mislabeled adapter scores {percent(e.value)} ({percent(e.low)}–{percent(e.high)}), "
               f"the correct one {percent(ev.score(plain, 'amazon_polarity').value)}, the base model "
               f"{percent(ev.matrix.loc['base', 'amazon_polarity'])}, chance {percent(chance)} (the paper: 4.02% vs "
               f"79.50%). Collapse is read as an interval below chance.")
    return Finding("…while on their own task the mislabeled adapter collapses", "controlled",
                   "mislabeled adapter's score on Amazon", percent(e.value), f"{percent(e.low)}–{percent(e.high)}",
                   verdict, reading, ev.name)


# --- classification and math ---------------------------------------------------------------


def classification_helps_math(ev: Evidence) -> Finding | None:
    adapters = ev.plain_adapters("classification")
    if not adapters or "gsm8k" not in ev.matrix.columns or has_variants(ev):
        return None
    e = ev.difference(adapters, ["base"], ["gsm8k"])
    reading = (f"Averaged over {count(len(adapters), 'classification adapter')}, the gain on GSM8K "
               f"({ev.examples('gsm8k')} questions, base {percent(ev.matrix.loc['base', 'gsm8k'])}) is {points(e.value)}.")
    flipkart = ev.adapter("flipkart")
    if flipkart:
        own = ev.difference([flipkart], ["base"], ["gsm8k"])
        reading += (f" The Flipkart adapter alone: {percent(ev.matrix.loc[flipkart, 'gsm8k'])}, "
                    f"{points(own.value)} ({interval_points(own)}); the paper: 14.59% vs 9.78%.")
    return Finding("Classification training helps math (GSM8K)", "matrix", "mean gain of classification adapters on GSM8K",
                   points(e.value), interval_points(e), directional(e), reading, ev.name)


def oprd_leads(ev: Evidence) -> Finding | None:
    table, flipkart = ev.table("dependency.csv"), ev.adapter("flipkart")
    if table is None or not flipkart or has_variants(ev):
        return None
    rows = table[(table["adapter"] == flipkart) & (table["relation"] != "(all)")].sort_values("ratio", ascending=False)
    if rows.empty:
        return None
    target = rows["target"].iloc[0]
    oprd = rows[rows["relation"] == "oprd"]
    if oprd.empty:
        reading = (f"Too few {target} questions contain oprd to compare ({len(rows)} relations had enough support); "
                   f"the highest ratio is {rows['relation'].iloc[0]} (×{rows['ratio'].iloc[0]:.2f}).")
        return Finding("The gain comes from syntax: relations such as oprd lead the adapter/base success ratio",
                       "dependency", "oprd's rank among relations", "absent", "—", INCONCLUSIVE, reading, ev.name)
    row = oprd.iloc[0]
    rank = int(list(rows["relation"]).index("oprd")) + 1
    leads = rank <= max(3, len(rows) // 10)
    verdict = (REPRODUCED if leads and row["ratio_low"] > 1 else NOT_REPRODUCED if row["ratio_high"] < 1
               else INCONCLUSIVE)
    reading = (f"On {target}, the Flipkart adapter solves questions containing oprd ×{row['ratio']:.2f} as often as "
               f"the base model (interval ×{row['ratio_low']:.2f} to ×{row['ratio_high']:.2f}, n = {int(row['n'])}), "
               f"rank {rank} of {len(rows)} relations; the top one is {rows['relation'].iloc[0]} "
               f"(×{rows['ratio'].iloc[0]:.2f}, n = {int(rows['n'].iloc[0])}).")
    return Finding("The gain comes from syntax: relations such as oprd lead the adapter/base success ratio", "dependency",
                   "oprd's success ratio (Flipkart adapter ÷ base)", f"×{row['ratio']:.2f} (rank {rank} of {len(rows)})",
                   f"×{row['ratio_low']:.2f} to ×{row['ratio_high']:.2f}", verdict, reading, ev.name)


def math_hurts_classification(ev: Evidence) -> Finding | None:
    adapters = ev.plain_adapters("math")
    targets = ev.targets("classification")
    if not adapters or not targets or has_variants(ev):
        return None
    e = ev.difference(adapters, ["base"], targets)
    reading = (f"Averaged over the math adapters ({', '.join(adapters)}) and {count(len(targets), 'classification target')}, "
               f"the gain is {points(e.value)}.")
    return Finding("The transfer is asymmetric: math training hurts classification", "matrix",
                   "mean gain of math adapters on classification targets", points(e.value), interval_points(e),
                   directional(e, -1), reading, ev.name)


# --- surface similarity --------------------------------------------------------------------


def similarity_does_not_explain(ev: Evidence) -> Finding | None:
    tests = ev.table("similarity_tests.csv")
    if tests is None or has_variants(ev):
        return None
    tests = tests.dropna(subset=["rho"])
    if tests.empty:
        return None
    p_column = "p_mantel" if "p_mantel" in tests.columns and tests["p_mantel"].notna().all() else "p_spearman"
    aligned = tests[(tests[p_column] < 0.05) & (tests["rho"] > 0)]
    weak = tests[(tests[p_column] >= 0.05) & (tests["rho"].abs() < 0.3)]
    verdict = NOT_REPRODUCED if len(aligned) else REPRODUCED if len(weak) == len(tests) else INCONCLUSIVE
    parts = [f"{kind} ρ = {rho:+.2f} ({p_text(p)})" for kind, rho, p in zip(tests["kind"], tests["rho"], tests[p_column])]
    reading = (f"Rank correlation between a source's similarity to a target and its adapter's gain there, over "
               f"{int(tests['n_pairs'].iloc[0])} adapter–target pairs: {'; '.join(parts)}"
               f" ({'Mantel permutation' if p_column == 'p_mantel' else 'Spearman'} p-values). No correlation is read "
               f"as |ρ| < 0.3 with p ≥ 0.05.")
    reading += mnli_example(ev)
    return Finding("Surface similarity (style, semantics) does not explain transfer", "similarity",
                   "Spearman ρ of similarity vs gain", ", ".join(f"{r:+.2f}" for r in tests["rho"]),
                   ", ".join(p_text(p) for p in tests[p_column]), verdict, reading, ev.name)


def mnli_example(ev: Evidence) -> str:
    """The paper's example: MNLI is the most math-like in style, yet barely helps math."""
    path = ev.folder / "analysis" / "similarity_style.csv"
    mnli = ev.adapter("mnli")
    if not path.is_file() or not mnli or "gsm8k" not in ev.matrix.columns:
        return ""
    style = pd.read_csv(path, index_col=0)
    if "gsm8k" not in style.index:
        return ""
    others = style.loc["gsm8k"].drop(index=["gsm8k"], errors="ignore")
    others = others[[c for c in others.index if c in {s.task for s in ev.config.sources}]].sort_values(ascending=False)
    if "mnli" not in others.index:
        return ""
    rank = list(others.index).index("mnli") + 1
    gain = ev.difference([mnli], ["base"], ["gsm8k"])
    return (f" The paper's example: MNLI is the {ordinal(rank)} of {len(others)} sources in style similarity to GSM8K "
            f"({others['mnli']:.2f}), and its adapter's GSM8K gain is {points(gain.value)} ({interval_points(gain)}).")


def ordinal(n: int) -> str:
    return {1: "closest", 2: "2nd closest", 3: "3rd closest"}.get(n, f"{n}th closest")


CLAIMS = [
    four_components,
    trait("PC0 general performance"),
    trait("PC1 classification"),
    trait("PC2 general NLU"),
    trait("PC3 large-number arithmetic"),
    length_inherited,
    length_interpolates,
    code_beats_goat_on_gsm8k,
    classes_inherited,
    balanced_flipkart("Pile", "balanced"),
    balanced_flipkart("IMDB", "imbalanced"),
    similarity_does_not_explain,
    classification_helps_math,
    oprd_leads,
    math_hurts_classification,
    mislabel_out_of_distribution,
    mislabel_collapses,
]


def evaluate(studies: list[Evidence]) -> list[Finding]:
    """Each claim tested on the first study that can test it, in the paper's order."""
    found = []
    for claim in CLAIMS:
        for ev in studies:
            try:
                result = claim(ev)
            except TraitmapError:
                result = None
            if result is not None:
                found.append(result)
                break
    return found
