"""The claims on exported study folders with planted per-example scores and analysis
tables: each planted effect must get its verdict, a planted null must not, and under
simulated nulls every rule says "reproduced" no more often than its stated rate."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from traitmap.config import parse
from traitmap.analysis.uncertainty import percentile_interval, resample_counts
from traitmap.export import write_scores
from traitmap.findings import INCONCLUSIVE, NOT_REPRODUCED, REPRODUCED, calibration, claims, evaluate, generate, render
from traitmap.findings.evidence import Evidence, Outcomes, contrast_draws, loss_still_falling
from traitmap.findings.render import README_END, README_START, short_cause
from traitmap.metrics import balanced_accuracy

N = 300  # examples per target: enough that a 20-point planted difference is unmistakable
CLASSIFICATION = ["flipkart", "amazon_polarity", "imdb", "msrp_paraphrase", "mnli", "tweeteval_offensive"]


@pytest.fixture(autouse=True)
def few_simulations(monkeypatch):
    """Calibration with fewer simulated data sets: the rates are coarser, the tests fast."""
    monkeypatch.setattr(calibration, "N_SIMULATIONS", 200)
    monkeypatch.setattr(calibration, "PIPELINE_SIMULATIONS", 20)
    monkeypatch.setattr(calibration, "SIM_BOOT", 100)
    monkeypatch.setattr(claims, "SIM_PERMUTATIONS", 50)
    monkeypatch.setattr(claims, "N_PERMUTATIONS", 2000)


def write_folder(folder: Path, sources: list, targets: list[str], rates: dict[str, dict[str, float]],
                 same_examples: dict[str, str] | None = None, n: int = N, noisy: bool = False) -> Path:
    """An exported study: config.json, matrix.csv and scores.csv.gz with planted success rates
    (exactly, or drawn binomially where `noisy`).

    same_examples: model -> model whose right/wrong pattern it copies exactly (a planted null)."""
    config = parse({"name": folder.name, "base_model": "smollm2-135m", "sources": sources,
                                 "targets": targets})
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"config": config.to_dict(), "machine": {"cpu": "test CPU"}}))
    rng = np.random.default_rng(1)
    patterns, rows = {}, []
    for model, per_task in rates.items():
        for task in targets:
            if same_examples and model in same_examples:
                correct = patterns[(same_examples[model], task)]
            else:
                right = rng.binomial(n, per_task[task]) if noisy else round(per_task[task] * n)
                correct = rng.permutation(np.arange(n) < right).astype(float)
            patterns[(model, task)] = correct
            rows += [dict(model=model, seed=-1 if model == "base" else 0, task=task, example_id=f"{task}-{i}",
                          correct=c, parsed="positive" if c else "negative", gold="positive")
                     for i, c in enumerate(correct)]
    return write_records(folder, pd.DataFrame(rows), targets, list(rates))


def write_records(folder: Path, records: pd.DataFrame, targets: list[str], models: list[str]) -> Path:
    write_scores(records, folder / "scores.csv.gz")
    matrix = records.groupby(["model", "task"])["correct"].mean().unstack()[targets].loc[models]
    matrix.rename_axis("model").to_csv(folder / "matrix.csv")
    return folder


def by_claim(found) -> dict[str, str]:
    return {f.claim: f.verdict for f in found}


def finding(found, start: str):
    return next(f for f in found if f.claim.startswith(start))


@pytest.fixture
def standard(tmp_path: Path) -> Path:
    targets = ["gsm8k", "imdb", "flipkart"]
    flat = {"gsm8k": 0.10, "imdb": 0.60, "flipkart": 0.40}
    rates = {
        "base": flat,
        "flipkart": {"gsm8k": 0.35, "imdb": 0.60, "flipkart": 0.70},   # classification helps math
        "imdb": {"gsm8k": 0.30, "imdb": 0.85, "flipkart": 0.50},
        "goat": {"gsm8k": 0.12, "imdb": 0.30, "flipkart": 0.15},       # math hurts classification
        "evol_instruct_code": {"gsm8k": 0.40, "imdb": 0.55, "flipkart": 0.40},
    }
    return write_folder(tmp_path / "standard", list(rates)[1:], targets, rates)


@pytest.fixture
def flat(tmp_path: Path) -> Path:
    """The same study with no effect at all: every model at the base model's rates."""
    targets = ["gsm8k", "imdb", "flipkart"]
    base = {"gsm8k": 0.30, "imdb": 0.60, "flipkart": 0.40}
    rates = {m: base for m in ["base", "flipkart", "imdb", "goat", "evol_instruct_code"]}
    return write_folder(tmp_path / "flat", list(rates)[1:], targets, rates)


@pytest.fixture
def controlled(tmp_path: Path) -> Path:
    targets = ["amazon_polarity", "imdb", "tweeteval_offensive"]
    rates = {
        "base": {"amazon_polarity": 0.60, "imdb": 0.60, "tweeteval_offensive": 0.50},
        "amazon_polarity": {"amazon_polarity": 0.90, "imdb": 0.75, "tweeteval_offensive": 0.55},
        "amazon_polarity@mislabel": {"amazon_polarity": 0.05, "imdb": 0.75, "tweeteval_offensive": 0.55},
        "flipkart": {"amazon_polarity": 0.80, "imdb": 0.80, "tweeteval_offensive": 0.40},
        "flipkart@balance": {"amazon_polarity": 0.80, "imdb": 0.80, "tweeteval_offensive": 0.40},
    }
    sources = ["amazon_polarity", {"task": "amazon_polarity", "variant": {"kind": "mislabel", "fraction": 1.0}},
               "flipkart", {"task": "flipkart", "variant": {"kind": "balance"}}]
    # the mislabeled adapter answers the other targets exactly as the correct one; the two Flipkart ones too
    same = {"flipkart@balance": "flipkart"}
    folder = write_folder(tmp_path / "controlled", sources, targets, rates, same)
    records = pd.read_csv(folder / "scores.csv.gz", dtype={"example_id": str})
    ood = records["task"] != "amazon_polarity"
    mask_wrong, mask_right = records["model"] == "amazon_polarity@mislabel", records["model"] == "amazon_polarity"
    records.loc[mask_wrong & ood, "correct"] = records.loc[mask_right & ood, "correct"].to_numpy()
    write_scores(records, folder / "scores.csv.gz")
    return folder


# --- differences (claims 8, 13, 15) ---------------------------------------------------------


def test_planted_directional_effects_are_reproduced(standard):
    found = evaluate([Evidence.of_folder(standard)])
    verdicts = by_claim(found)
    assert verdicts["Classification training helps math (GSM8K)"] == REPRODUCED
    assert verdicts["The transfer is asymmetric: math training hurts classification"] == REPRODUCED
    assert verdicts["Long-answer (code) training helps GSM8K more than short-answer arithmetic (Goat)"] == REPRODUCED
    for f in found:
        assert f.calibration.false_positive <= 0.05 < f.calibration.power
        assert f.p_holm >= f.p


def test_a_planted_null_is_not_reproduced_and_says_why(flat):
    found = evaluate([Evidence.of_folder(flat)])
    assert [f.verdict for f in found] == [INCONCLUSIVE] * 3
    for f in found:
        assert f.calibration.false_positive <= 0.05
        assert "too few examples" in f.cause or "no sign of the effect" in f.cause


def test_a_planted_effect_against_the_paper_is_not_reproduced(tmp_path):
    targets = ["gsm8k", "imdb"]
    rates = {"base": {"gsm8k": 0.40, "imdb": 0.6}, "flipkart": {"gsm8k": 0.10, "imdb": 0.6}}
    folder = write_folder(tmp_path / "hurts", ["flipkart"], targets, rates)
    found = by_claim(evaluate([Evidence.of_folder(folder)]))
    assert found["Classification training helps math (GSM8K)"] == NOT_REPRODUCED


def test_a_target_at_the_floor_is_inconclusive_for_that_reason(tmp_path):
    targets = ["gsm8k", "imdb"]
    rates = {"base": {"gsm8k": 0.0, "imdb": 0.6}, "flipkart": {"gsm8k": 0.01, "imdb": 0.6}}
    folder = write_folder(tmp_path / "floor", ["flipkart"], targets, rates)
    f = finding(evaluate([Evidence.of_folder(folder)]), "Classification training helps math")
    assert f.verdict == INCONCLUSIVE and f.cause.startswith("floor")


def test_too_few_examples_names_the_examples_that_would_give_power(tmp_path):
    targets = ["gsm8k", "imdb"]
    rates = {"base": {"gsm8k": 0.30, "imdb": 0.6}, "flipkart": {"gsm8k": 0.33, "imdb": 0.6}}
    folder = write_folder(tmp_path / "small", ["flipkart"], targets, rates, n=40)
    f = finding(evaluate([Evidence.of_folder(folder)]), "Classification training helps math")
    assert f.verdict == INCONCLUSIVE
    needed = int(f.cause.split("about ")[1].split(" per target")[0])
    assert needed > 40 and "this study has 40" in f.cause
    assert f.calibration.power < calibration.POWER_TARGET


def test_unconverged_adapters_are_named(tmp_path):
    targets = ["gsm8k", "imdb"]
    rates = {"base": {"gsm8k": 0.30, "imdb": 0.6}, "flipkart": {"gsm8k": 0.33, "imdb": 0.6}}
    folder = write_folder(tmp_path / "young", ["flipkart"], targets, rates, n=40)
    pd.DataFrame({"adapter": ["flipkart"], "seed": [0], "steps_trained": [32], "best_val_loss": [0.4],
                  "converged": [False], "stopped_by": ["steps"]}).to_csv(folder / "adapters.csv", index=False)
    f = finding(evaluate([Evidence.of_folder(folder)]), "Classification training helps math")
    assert "unconverged adapters (flipkart" in f.cause and "held-out loss" in f.cause
    assert "unconverged adapters" in short_cause(f.cause)


def test_a_training_loss_still_falling_in_its_last_quarter_is_flagged(tmp_path):
    steps = np.arange(1, 41)
    log = pd.concat([pd.DataFrame({"adapter": "falling", "seed": 0, "step": steps, "loss": 2.0 - 0.04 * steps}),
                     pd.DataFrame({"adapter": "flat", "seed": 0, "step": steps,
                                   "loss": 0.5 + 0.01 * np.sin(steps)})])
    log.to_csv(tmp_path / "training.csv", index=False)
    assert loss_still_falling(tmp_path / "training.csv") == {"falling": True, "flat": False}


def test_paired_difference_matches_a_hand_computed_mean(standard):
    ev = Evidence.of_folder(standard)
    e = ev.contrast(["flipkart", "imdb"], ["base"], ["gsm8k"]).estimate
    m = ev.matrix
    assert e.value == pytest.approx((m.loc["flipkart", "gsm8k"] + m.loc["imdb", "gsm8k"]) / 2 - m.loc["base", "gsm8k"])
    assert e.low < e.value < e.high


def test_the_directional_rule_under_a_simulated_null_stays_within_its_rate():
    """An independent Monte Carlo: two models with the same true rate, the paired
    percentile interval on each of 400 data sets; "reproduced" (interval above zero) must
    come at most 5% of the time (nominally 2.5%)."""
    rng = np.random.default_rng(7)
    hits = 0
    for _ in range(400):
        outcomes = [Outcomes((rng.random((2, 150)) < 0.4).astype(float), np.zeros(150, dtype=int))]
        weights = [resample_counts(rng, 200, 150)]
        low, _ = percentile_interval(contrast_draws(1, outcomes, "accuracy", weights), 0.95)
        hits += low > 0
    assert hits / 400 <= 0.05


def test_training_noise_enters_the_interval_of_a_difference():
    """Null: two adapters whose training seeds score 0.5 on average but each seed's rate
    differs by training noise (sd 5 points, 3 seeds each). Resampling examples alone calls
    a difference "reproduced" far above 5% of the time; drawing each adapter's seeds with
    replacement too (`Outcomes.seed_resampled`) keeps it within 5%."""
    rng = np.random.default_rng(11)
    hits = {False: 0, True: 0}
    for _ in range(300):
        by_seed = tuple((rng.random((3, 200)) < np.clip(rng.normal(0.5, 0.05, 3), 0, 1)[:, None]).astype(float)
                        for _ in range(2))
        outcomes = [Outcomes(np.stack([b.mean(axis=0) for b in by_seed]), np.zeros(200, dtype=int), by_seed)]
        weights = [resample_counts(rng, 400, 200)]
        for with_seeds in hits:
            resampled = [outcomes[0].seed_resampled(rng, 400)] if with_seeds else None
            low, _ = percentile_interval(contrast_draws(1, outcomes, "accuracy", weights, seed_resampled=resampled),
                                         0.95)
            hits[with_seeds] += low > 0
    assert hits[False] / 300 > 0.08
    assert hits[True] / 300 <= 0.05


def test_one_seed_per_model_is_not_resampled():
    outcomes = Outcomes(np.ones((2, 5)), np.zeros(5, dtype=int), (np.ones((1, 5)), np.ones((1, 5))))
    assert outcomes.seed_resampled(np.random.default_rng(0), 10) is None


# --- controlled experiments (claims 10, 11, 16, 17) ----------------------------------------


def test_controlled_claims_come_from_the_study_with_variants(standard, controlled):
    found = evaluate([Evidence.of_folder(standard), Evidence.of_folder(controlled)])
    verdicts = by_claim(found)
    ood = "Wrong labels transfer out of distribution as well as right ones (Amazon)"
    assert verdicts[ood] == REPRODUCED  # identical answers off Amazon: a difference of exactly zero
    collapse = finding(found, "…while on their own task")
    assert collapse.verdict == REPRODUCED and "collapsed" in collapse.value
    assert {f.study for f in found if f.section == "controlled"} == {"controlled"}
    pile = finding(found, "Balanced Flipkart")
    assert pile.verdict == INCONCLUSIVE and pile.value == "+0.0 pts"



def test_a_verdict_on_adapters_that_had_not_finished_learning_says_so(controlled):
    collapse = "…while on their own task the mislabeled adapter collapses"
    assert "had not finished learning" not in finding(evaluate([Evidence.of_folder(controlled)]), collapse).reading
    pd.DataFrame([dict(adapter=name, seed=0, steps_trained=100, best_val_loss=0.1, converged=name != "amazon_polarity@mislabel",
                       stopped_by="max_steps" if name == "amazon_polarity@mislabel" else "patience", share_cut=0.0,
                       share_answer_end_lost=0.0, max_length=128)
                  for name in ["amazon_polarity", "amazon_polarity@mislabel", "flipkart", "flipkart@balance"]]
                 ).to_csv(controlled / "adapters.csv", index=False)
    found = evaluate([Evidence.of_folder(controlled)])
    for claim in (collapse, "Wrong labels transfer out of distribution as well as right ones (Amazon)"):
        reading = finding(found, claim).reading
        assert "had not finished learning (amazon_polarity@mislabel: held-out loss (adapters.csv))" in reading
    evidence = Evidence.of_folder(controlled)
    evidence.config = dataclasses.replace(evidence.config, train=dataclasses.replace(
        evidence.config.train, steps="auto", max_steps=100, validation_examples=64))
    assert ("3 of 4 adapters converged (amazon_polarity@mislabel (seed 0) reached max_steps = 100 while the held-out "
            "loss had improved within the last") in render.training_budget(evidence)

def test_a_degraded_adapter_near_chance_is_not_a_collapse(tmp_path):
    targets = ["amazon_polarity", "imdb"]
    rates = {"base": {"amazon_polarity": 0.6, "imdb": 0.6}, "amazon_polarity": {"amazon_polarity": 0.9, "imdb": 0.7},
             "amazon_polarity@mislabel": {"amazon_polarity": 0.42, "imdb": 0.4}}
    sources = ["amazon_polarity", {"task": "amazon_polarity", "variant": {"kind": "mislabel", "fraction": 1.0}}]
    found = evaluate([Evidence.of_folder(write_folder(tmp_path / "near", sources, targets, rates))])
    collapse = finding(found, "…while on their own task")
    assert collapse.verdict == NOT_REPRODUCED and "degraded, not collapsed" in collapse.value
    assert collapse.calibration.false_positive <= 0.05 and collapse.calibration.power > 0.9
    ood = finding(found, "Wrong labels transfer")
    assert ood.verdict == NOT_REPRODUCED  # 30 points worse off Amazon


def imbalanced_records(answers: dict[str, np.ndarray], gold: np.ndarray, task: str) -> pd.DataFrame:
    rows = [dict(model=m, seed=-1 if m == "base" else 0, task=task, example_id=f"{task}-{i}", correct=float(a == g),
                 parsed=a, gold=g) for m, said in answers.items() for i, (a, g) in enumerate(zip(said, gold))]
    return pd.DataFrame(rows)


@pytest.mark.parametrize("target, labels, better, fair_one", [
    ("tweeteval_offensive", ("no", "yes"), "Balanced Flipkart", "flipkart@balance"),
    ("tweeteval_offensive", ("no", "yes"), "Balanced Flipkart", "flipkart"),
    ("imdb", ("negative", "positive"), "Imbalanced Flipkart", "flipkart"),
])
def test_class_balance_claims_are_judged_in_balanced_accuracy(tmp_path, target, labels, better, fair_one):
    """On a 70% majority target an adapter that always answers the majority label has the
    better accuracy but chance balanced accuracy; the claim must follow balanced accuracy."""
    rng = np.random.default_rng(3)
    majority_label, minority_label = labels
    gold = np.where(np.arange(400) < 280, majority_label, minority_label)
    majority = np.full(400, majority_label)
    fair = np.where(rng.random(400) < 0.75, gold, np.where(gold == majority_label, minority_label, majority_label))
    answers = {"base": majority, "flipkart": majority, "flipkart@balance": majority}
    answers[fair_one] = fair
    sources = ["flipkart", {"task": "flipkart", "variant": {"kind": "balance"}}]
    folder = tmp_path / "balance"
    config = parse({"name": "c", "base_model": "smollm2-135m", "sources": sources, "targets": [target]})
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"config": config.to_dict()}))
    write_records(folder, imbalanced_records(answers, gold, target), [target], list(answers))
    ev = Evidence.of_folder(folder)
    assert ev.balanced_accuracy(fair_one, target) == pytest.approx(balanced_accuracy(fair.tolist(), gold.tolist()))
    f = finding(evaluate([ev]), better)
    assert "balanced accuracy" in f.measure
    claimed_better = "flipkart@balance" if better.startswith("Balanced") else "flipkart"
    if fair_one == claimed_better:
        assert f.verdict == REPRODUCED  # in plain accuracy the two are about even (75% vs 70%)
    else:
        assert f.verdict == NOT_REPRODUCED and f"answers \"{majority_label}\" on 100.0%" in f.reading
    assert f.calibration.false_positive <= 0.05


def test_equivalence_needs_the_whole_interval_inside_the_margin():
    assert claims.equivalent(claims.Estimate(0.0, -0.04, 0.04)) == REPRODUCED
    assert claims.equivalent(claims.Estimate(-0.1, -0.2, -0.06)) == NOT_REPRODUCED
    assert claims.equivalent(claims.Estimate(-0.03, -0.08, 0.02)) == INCONCLUSIVE
    assert claims.equivalent(claims.Estimate(0.1, -0.2, 0.25), claims.RHO_EQUIVALENCE) == REPRODUCED


def test_holm_adjusts_step_down_and_keeps_missing_p_values():
    assert calibration.holm([0.01, None, 0.04, 0.03]) == pytest.approx([0.03, None, 0.06, 0.06])


# --- traits (claims 1-5) --------------------------------------------------------------------

TRAIT_TASKS = ["gsm8k", "goat", "imdb", "flipkart", "mnli", "amazon_polarity", "msrp_paraphrase", "mbpp"]


def trait_folder(tmp_path: Path, name: str, strength: float, n_adapters: int = 12) -> Path:
    """Adapters spread along the paper's classification trait (plus small noise), or not."""
    rng = np.random.default_rng(5)
    direction = np.array([0.0, 0.0, 1, 1, 0, 1, 1, 0]) / 2
    spread = rng.normal(size=n_adapters)
    spread = (spread - spread.mean()) / spread.std()
    base = {t: 0.5 for t in TRAIT_TASKS}
    rates = {"base": base}
    adapters = [f"a{i}" for i in range(n_adapters)]
    for a, s in zip(adapters, spread):
        rates[a] = {t: float(np.clip(0.5 + strength * s * d, 0.02, 0.98)) for t, d in zip(TRAIT_TASKS, direction)}
    folder = write_folder(tmp_path / name, [{"name": a, "task": "imdb"} for a in adapters], TRAIT_TASKS, rates,
                          noisy=True)
    from traitmap.analysis.pca import TraitPCA
    from traitmap.analysis.traits import ComponentCount

    matrix = pd.read_csv(folder / "matrix.csv", index_col="model")
    pca = TraitPCA(4).fit(matrix)
    (folder / "pca.json").write_text(json.dumps(pca_document(pca)))
    count = ComponentCount(n_permutations=200).fit(matrix)
    (folder / "analysis").mkdir()
    (folder / "analysis" / "traits.json").write_text(json.dumps({
        "components": [{"component": c, "p_value": float(count.p_values_[c]),
                        "beats_chance": bool(i < count.n_components_)} for i, c in enumerate(pca.loadings_.index)],
        "component_count": count.to_dict()}))
    return folder


def pca_document(pca) -> dict:
    return {"on": "gains", "explained_variance_ratio": pca.explained_variance_ratio_.to_dict(),
            "loadings": {c: row.to_dict() for c, row in pca.loadings_.iterrows()},
            "scores": {a: row.to_dict() for a, row in pca.scores_.iterrows()}}


def test_a_planted_trait_is_matched_and_a_null_is_not(tmp_path):
    strong = evaluate([Evidence.of_folder(trait_folder(tmp_path, "strong", 0.2))])
    classification = finding(strong, "A trait \"classification\"")
    assert classification.verdict == REPRODUCED and "(corrected)" in classification.interval
    assert classification.calibration.false_positive <= 0.05
    assert finding(strong, "The first four components").verdict == REPRODUCED
    noise = evaluate([Evidence.of_folder(trait_folder(tmp_path, "noise", 0.0))])
    for f in noise:
        if f.section == "traits":
            assert f.verdict != REPRODUCED
            assert f.calibration.false_positive <= 0.05
    assert "no component beyond chance" in finding(noise, "A trait \"classification\"").cause


def test_a_trait_on_tasks_at_the_floor_is_inconclusive(tmp_path):
    folder = trait_folder(tmp_path, "floor", 0.2)
    matrix = pd.read_csv(folder / "matrix.csv", index_col="model")
    matrix[["gsm8k", "goat", "mbpp"]] = 0.0  # the general-performance tasks, solved by no model
    matrix.to_csv(folder / "matrix.csv")
    general = finding(evaluate([Evidence.of_folder(folder)]), "A trait \"general performance\"")
    assert general.verdict == INCONCLUSIVE and general.cause.startswith("floor")


def test_max_statistic_p_corrects_for_choosing_among_components_and_traits():
    rng = np.random.default_rng(0)
    loadings = np.linalg.qr(rng.normal(size=(10, 4)))[0].T
    rows = np.eye(10)[:4] + np.eye(10)[4:8]
    rows = rows / np.linalg.norm(rows, axis=1, keepdims=True)
    corrected = claims.max_statistic_p(loadings, rows, 2000, np.random.default_rng(1))
    alone = [claims.max_statistic_p(loadings, rows[i:i + 1], 2000, np.random.default_rng(1))[0] for i in range(4)]
    assert (corrected >= np.array(alone)).all() and (corrected > np.array(alone)).any()
    assert (corrected > 0.05).all()  # random loadings match no template


# --- lengths (claims 6, 7) ------------------------------------------------------------------

LENGTH_SOURCES = ["gsm8k", "goat", "evol_instruct_code", "mbpp", "imdb", "flipkart"]
LENGTH_TARGETS = ["gsm8k", "goat", "mbpp", "humaneval", "metamath_gsm8k_backward"]


def length_folder(tmp_path: Path, name: str, long_coefficient: float) -> Path:
    rates = {m: {t: 0.2 for t in LENGTH_TARGETS} for m in ["base"] + LENGTH_SOURCES}
    folder = write_folder(tmp_path / name, LENGTH_SOURCES, LENGTH_TARGETS, rates, n=20)
    rng = np.random.default_rng(2)
    rows = []
    for adapter in LENGTH_SOURCES:
        for task in LENGTH_TARGETS:
            label = adapter in ("imdb", "flipkart")
            value = 1.0 if label else long_coefficient + rng.normal(0, 0.05)
            rows.append(dict(task=task, adapter=adapter, measure="chars", coefficient=value))
    (folder / "analysis").mkdir()
    pd.DataFrame(rows).to_csv(folder / "analysis" / "lengths_interpolation.csv", index=False)
    return folder


def test_length_is_read_on_long_answer_sources_with_both_kinds_reported(tmp_path):
    found = evaluate([Evidence.of_folder(length_folder(tmp_path, "half", 0.5))])
    inherited, between = finding(found, "A fine-tuned model inherits"), finding(found, "…and interpolates")
    assert inherited.verdict == REPRODUCED and between.verdict == REPRODUCED
    assert "sources with label answers: median 1.00" in inherited.reading
    assert inherited.calibration.false_positive <= 0.05 and between.calibration.false_positive <= 0.05
    found = evaluate([Evidence.of_folder(length_folder(tmp_path, "none", 0.0))])
    assert finding(found, "A fine-tuned model inherits").verdict != REPRODUCED  # labels alone do not carry it



def test_a_study_with_two_generate_targets_does_not_test_length(tmp_path):
    """The quickstart's shape: 3 long-answer adapters on 2 generate targets, 4 pairs once each
    adapter's own task is left out. A cluster draw can then hold no pair at all, and two
    targets cannot be resampled as clusters: the claims are not tested rather than guessed."""
    sources, targets = ["gsm8k", "goat", "evol_instruct_code", "imdb", "flipkart"], ["gsm8k", "goat"]
    rates = {m: {t: 0.2 for t in targets} for m in ["base"] + sources}
    folder = write_folder(tmp_path / "quick", sources, targets, rates, n=20)
    rows = [dict(task=t, adapter=a, measure="chars", coefficient=0.5) for a in sources for t in targets]
    (folder / "analysis").mkdir()
    pd.DataFrame(rows).to_csv(folder / "analysis" / "lengths_interpolation.csv", index=False)
    found = evaluate([Evidence.of_folder(folder)])
    assert not [f for f in found if f.claim.startswith(("A fine-tuned model inherits", "…and interpolates"))]
    sparse = pd.DataFrame([dict(adapter=a, task=t, coefficient=0.5) for a, t in
                           [("gsm8k", "goat"), ("goat", "gsm8k"), ("evol_instruct_code", "gsm8k"),
                            ("evol_instruct_code", "goat")]])
    false_positive, power = claims.length_calibration(sparse, claims.directional_rule(1), [0.0], 0.5)
    assert 0.0 <= false_positive <= 1.0 and 0.0 <= power <= 1.0

# --- class distribution (claim 9) -----------------------------------------------------------


def classes_folder(tmp_path: Path, name: str, toward: bool) -> Path:
    rates = {m: {t: 0.5 for t in CLASSIFICATION} for m in ["base"] + CLASSIFICATION}
    folder = write_folder(tmp_path / name, CLASSIFICATION, CLASSIFICATION, rates, n=20)
    rows, sources = [], []
    for adapter in ["base"] + CLASSIFICATION:
        for task in CLASSIFICATION:
            own_mix = {"positive": 90, "negative": 10}
            mix = {"positive": 50, "negative": 50} if adapter == "base" or not toward else own_mix
            if not toward and adapter != "base" and CLASSIFICATION.index(adapter) % 2:
                mix = {"positive": 10, "negative": 90}
            rows += [dict(task=task, model=adapter, label=k, count=v, share=v / 100) for k, v in mix.items()]
    for adapter in CLASSIFICATION:
        sources += [dict(source=adapter, label="positive", count=90, share=0.9),
                    dict(source=adapter, label="negative", count=10, share=0.1)]
    (folder / "analysis").mkdir()
    pd.DataFrame(rows).to_csv(folder / "analysis" / "classes_predicted.csv", index=False)
    pd.DataFrame(sources).to_csv(folder / "analysis" / "classes_source.csv", index=False)
    return folder


def test_class_inheritance_is_tested_over_adapters(tmp_path):
    toward = finding(evaluate([Evidence.of_folder(classes_folder(tmp_path, "toward", True))]), "Adapters inherit")
    assert toward.verdict == REPRODUCED and "6 adapters" in toward.interval
    mixed = finding(evaluate([Evidence.of_folder(classes_folder(tmp_path, "mixed", False))]), "Adapters inherit")
    assert mixed.verdict == INCONCLUSIVE and mixed.cause
    assert toward.calibration.false_positive <= 0.05


# --- surface similarity (claim 12) ----------------------------------------------------------


def similarity_folder(tmp_path: Path, name: str, rho: float) -> Path:
    adapters = [f"s{i}" for i in range(20)]
    targets = [f"t{j}" for j in range(20)]
    rates = {"base": {"gsm8k": 0.3}, **{a: {"gsm8k": 0.3} for a in adapters}}
    folder = write_folder(tmp_path / name, [{"name": a, "task": "gsm8k"} for a in adapters], ["gsm8k"], rates, n=20)
    rng = np.random.default_rng(4)
    rows = []
    for a in adapters:
        for t in targets:
            style, semantic = rng.normal(), rng.normal()
            gain = rho * style + np.sqrt(1 - rho ** 2) * rng.normal()
            rows.append(dict(adapter=a, target=t, gain=gain, excluded=False, style_similarity=style,
                             semantic_similarity=semantic))
    (folder / "analysis").mkdir()
    pd.DataFrame(rows).to_csv(folder / "analysis" / "similarity_pairs.csv", index=False)
    return folder


def test_no_similarity_effect_needs_an_interval_inside_the_margin(tmp_path):
    none = finding(evaluate([Evidence.of_folder(similarity_folder(tmp_path, "none", 0.0))]), "Surface similarity")
    assert none.verdict == REPRODUCED and none.calibration.false_positive <= 0.05
    strong = finding(evaluate([Evidence.of_folder(similarity_folder(tmp_path, "strong", 0.8))]), "Surface similarity")
    assert strong.verdict == NOT_REPRODUCED


# --- syntax (claim 14) ----------------------------------------------------------------------


def dependency_folder(tmp_path: Path, name: str, oprd_rate: float | None) -> Path:
    rates = {"base": {"gsm8k": 0.3}, "flipkart": {"gsm8k": 0.3}}
    folder = write_folder(tmp_path / name, ["flipkart"], ["gsm8k"], rates, n=20)
    rows = [dict(target="gsm8k", adapter="flipkart", relation=r, n=100, base_rate=0.3, adapter_rate=0.3, ratio=1.0,
                 ratio_low=0.8, ratio_high=1.25) for r in ["nsubj", "dobj", "amod", "ROOT"]]
    if oprd_rate is not None:
        ratio = oprd_rate / 0.3
        rows.append(dict(target="gsm8k", adapter="flipkart", relation="oprd", n=100, base_rate=0.3,
                         adapter_rate=oprd_rate, ratio=ratio, ratio_low=ratio * 0.75, ratio_high=ratio * 1.3))
    (folder / "analysis").mkdir()
    pd.DataFrame(rows).to_csv(folder / "analysis" / "dependency.csv", index=False)
    return folder


def test_oprd_leading_is_reproduced_and_absent_oprd_is_inconclusive(tmp_path):
    leads = finding(evaluate([Evidence.of_folder(dependency_folder(tmp_path, "leads", 0.6))]), "The gain comes from")
    assert leads.verdict == REPRODUCED and leads.calibration.false_positive <= 0.05
    absent = finding(evaluate([Evidence.of_folder(dependency_folder(tmp_path, "absent", None))]), "The gain comes from")
    assert absent.verdict == INCONCLUSIVE and "too few examples" in absent.cause


# --- documents ------------------------------------------------------------------------------


def test_generate_writes_findings_and_replaces_only_the_readme_block(standard, controlled, tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(f"# intro\n\n{README_START}\nold numbers\n{README_END}\n\n## after\n")
    markdown, text = generate([str(standard), str(controlled)], readme)
    assert "| **reproduced** |" in markdown and "test CPU" in markdown
    assert "Holm" in markdown and "false \"reproduced\" under its null" in markdown
    assert text.startswith("# intro\n\n" + README_START) and text.endswith(README_END + "\n\n## after\n")
    assert "old numbers" not in text and "| flipkart | 35.0 |" in text
    assert generate([str(standard), str(controlled)], readme)[0] == markdown  # deterministic
