"""The claims on exported study folders with planted per-example scores: each planted
effect must get its verdict, and a planted null must not."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from traitmap import study as study_config
from traitmap.export import write_scores
from traitmap.findings import INCONCLUSIVE, NOT_REPRODUCED, REPRODUCED, claims, evaluate, generate
from traitmap.findings.evidence import Evidence
from traitmap.findings.render import README_END, README_START

N = 300  # examples per target: enough that a 20-point planted difference is unmistakable


def write_folder(folder: Path, sources: list, targets: list[str], rates: dict[str, dict[str, float]],
                 same_examples: dict[str, str] | None = None) -> Path:
    """An exported study: config.json, matrix.csv and scores.csv.gz with planted success rates.

    same_examples: model -> model whose right/wrong pattern it copies exactly (a planted null)."""
    config = study_config.parse({"name": folder.name, "base_model": "smollm2-135m", "sources": sources,
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
                correct = rng.permutation(np.arange(N) < round(per_task[task] * N)).astype(float)
            patterns[(model, task)] = correct
            rows += [dict(model=model, seed=-1 if model == "base" else 0, task=task, example_id=f"{task}-{i}",
                          correct=c, parsed="positive" if c else "negative", gold="positive")
                     for i, c in enumerate(correct)]
    records = pd.DataFrame(rows)
    write_scores(records, folder / "scores.csv.gz")
    matrix = records.groupby(["model", "task"])["correct"].mean().unstack()[targets].loc[list(rates)]
    matrix.rename_axis("model").to_csv(folder / "matrix.csv")
    return folder


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


def by_claim(found) -> dict[str, str]:
    return {f.claim: f.verdict for f in found}


def test_planted_directional_effects_are_reproduced(standard):
    found = by_claim(evaluate([Evidence.of_folder(standard)]))
    assert found["Classification training helps math (GSM8K)"] == REPRODUCED
    assert found["The transfer is asymmetric: math training hurts classification"] == REPRODUCED
    assert found["Long-answer (code) training helps GSM8K more than short-answer arithmetic (Goat)"] == REPRODUCED


def test_a_planted_effect_against_the_paper_is_not_reproduced(tmp_path):
    targets = ["gsm8k", "imdb"]
    rates = {"base": {"gsm8k": 0.40, "imdb": 0.6}, "flipkart": {"gsm8k": 0.10, "imdb": 0.6}}
    folder = write_folder(tmp_path / "hurts", ["flipkart"], targets, rates)
    found = by_claim(evaluate([Evidence.of_folder(folder)]))
    assert found["Classification training helps math (GSM8K)"] == NOT_REPRODUCED


def test_a_difference_within_noise_is_inconclusive(tmp_path):
    targets = ["gsm8k", "imdb"]
    rates = {"base": {"gsm8k": 0.10, "imdb": 0.6}, "flipkart": {"gsm8k": 0.11, "imdb": 0.6}}
    folder = write_folder(tmp_path / "noise", ["flipkart"], targets, rates)
    found = by_claim(evaluate([Evidence.of_folder(folder)]))
    assert found["Classification training helps math (GSM8K)"] == INCONCLUSIVE


def test_controlled_claims_come_from_the_study_with_variants(standard, controlled):
    found = evaluate([Evidence.of_folder(standard), Evidence.of_folder(controlled)])
    verdicts = by_claim(found)
    ood = "Wrong labels transfer out of distribution as well as right ones (Amazon)"
    assert verdicts[ood] == REPRODUCED  # identical answers off Amazon: a difference of exactly zero
    assert verdicts["…while on their own task the mislabeled adapter collapses"] == REPRODUCED
    assert {f.study for f in found if f.section == "controlled"} == {"controlled"}
    pile = next(f for f in found if f.claim.startswith("Balanced Flipkart"))
    assert pile.verdict == INCONCLUSIVE and pile.value == "+0.0 pts"


def test_equivalence_needs_the_whole_interval_inside_the_margin():
    assert claims.equivalent(claims.Estimate(0.0, -0.04, 0.04)) == REPRODUCED
    assert claims.equivalent(claims.Estimate(-0.1, -0.2, -0.06)) == NOT_REPRODUCED
    assert claims.equivalent(claims.Estimate(-0.03, -0.08, 0.02)) == INCONCLUSIVE


def test_paired_difference_matches_a_hand_computed_mean(standard):
    ev = Evidence.of_folder(standard)
    e = ev.difference(["flipkart", "imdb"], ["base"], ["gsm8k"])
    m = ev.matrix
    assert e.value == pytest.approx((m.loc["flipkart", "gsm8k"] + m.loc["imdb", "gsm8k"]) / 2 - m.loc["base", "gsm8k"])
    assert e.low < e.value < e.high


def test_generate_writes_findings_and_replaces_only_the_readme_block(standard, controlled, tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(f"# intro\n\n{README_START}\nold numbers\n{README_END}\n\n## after\n")
    markdown, text = generate([str(standard), str(controlled)], readme)
    assert "| **reproduced** |" in markdown and "test CPU" in markdown
    assert text.startswith("# intro\n\n" + README_START) and text.endswith(README_END + "\n\n## after\n")
    assert "old numbers" not in text and "| flipkart | 35.0 |" in text
    assert generate([str(standard), str(controlled)], readme)[0] == markdown  # deterministic


def test_a_trait_is_matched_by_its_loadings_and_must_beat_chance(tmp_path):
    targets = ["gsm8k", "goat", "imdb", "flipkart", "mnli", "amazon_polarity", "msrp_paraphrase", "mbpp", "humaneval"]
    rates = {m: {t: 0.5 for t in targets} for m in ["base", "flipkart", "goat", "imdb"]}
    folder = write_folder(tmp_path / "traits", ["flipkart", "goat", "imdb"], targets, rates)
    loadings = {  # PC1 is the paper's large-number arithmetic: +goat, -gsm8k
        "PC0": {"gsm8k": 0.1, "goat": 0.0, "imdb": 0.6, "flipkart": 0.6, "mnli": 0.1, "amazon_polarity": 0.5,
                "msrp_paraphrase": 0.1, "mbpp": 0.0, "humaneval": 0.0},
        "PC1": {"gsm8k": -0.7, "goat": 0.7, "imdb": 0.0, "flipkart": 0.1, "mnli": 0.0, "amazon_polarity": 0.0,
                "msrp_paraphrase": 0.0, "mbpp": 0.0, "humaneval": 0.0},
    }
    (folder / "pca.json").write_text(json.dumps({"on": "gains", "explained_variance_ratio": {"PC0": 0.6, "PC1": 0.3},
                                                 "loadings": loadings}))
    (folder / "analysis").mkdir()

    def verdict(p_values: dict[str, float]) -> str:
        traits = [{"component": c, "name": c, "p_value": p, "bootstrap_stability": 0.9} for c, p in p_values.items()]
        (folder / "analysis" / "traits.json").write_text(json.dumps({"components": traits}))
        return claims.trait("PC3 large-number arithmetic")(Evidence.of_folder(folder)).verdict

    assert verdict({"PC0": 0.01, "PC1": 0.01}) == REPRODUCED
    assert verdict({"PC0": 0.01, "PC1": 0.40}) == INCONCLUSIVE  # the matching component may be noise
    general = claims.trait("PC0 general performance")(Evidence.of_folder(folder))
    assert general.verdict == NOT_REPRODUCED  # one real component, and it is not this trait
    assert "absolute cosine" in general.measure
