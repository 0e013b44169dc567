"""Trait checks must separate planted structure from noise and name traits from tags."""

import json

import numpy as np
import pandas as pd
import pytest

from traitmap.analysis.traits import (
    ComponentCount,
    TraitStability,
    align_rotation,
    behaviours,
    explain_by_behaviour,
    impute_lowrank,
    name_traits,
    resolved_components,
    run,
)

TASKS = [f"t{j}" for j in range(8)]


def binomial_records(rates: pd.DataFrame, n_examples: int, rng) -> pd.DataFrame:
    rows = []
    for model, row in rates.iterrows():
        for task, rate in row.items():
            correct = (rng.random(n_examples) < rate).astype(float)
            rows += [(model, -1 if model == "base" else 0, task, f"{task}-{e}", c) for e, c in enumerate(correct)]
    return pd.DataFrame(rows, columns=["model", "seed", "task", "example_id", "correct"])


def rates_with_trait(strength: float, n_adapters: int = 10) -> pd.DataFrame:
    """Adapters spread along one direction (+ on half the tasks, - on the other half)."""
    direction = np.array([1, 1, 1, 1, -1, -1, -1, -1]) / np.sqrt(8)
    weights = np.linspace(-strength, strength, n_adapters)
    base = np.full(len(TASKS), 0.5)
    return pd.DataFrame(np.vstack([base, base + np.outer(weights, direction)]),
                        index=["base"] + [f"a{i}" for i in range(n_adapters)], columns=TASKS)


@pytest.fixture(scope="module")
def bp_strong_and_noise():
    rng = np.random.default_rng(0)
    fits = {}
    for name, strength in [("strong", 0.25), ("noise", 0.0)]:
        records = binomial_records(rates_with_trait(strength), 300, rng)
        fits[name] = TraitStability(n_components=2, n_boot=200, seed=1).fit(records)
    return fits


def test_stability_high_for_planted_trait_low_for_noise(bp_strong_and_noise):
    strong = bp_strong_and_noise["strong"].stability_
    noise = bp_strong_and_noise["noise"].stability_
    assert strong.loc["PC0", "bootstrap_stability"] > 0.95
    assert strong.loc["PC0", "loto_min"] > 0.95
    assert noise.loc["PC0", "bootstrap_stability"] < 0.85
    assert strong.loc["PC0", "bootstrap_stability"] - noise.loc["PC0", "bootstrap_stability"] > 0.2


def test_loading_intervals_exclude_zero_for_planted_trait(bp_strong_and_noise):
    ci = bp_strong_and_noise["strong"].loadings_ci_.query("component == 'PC0'")
    assert ((ci.low > 0) | (ci.high < 0)).all()
    assert set(ci.columns) >= {"component", "task", "loading", "low", "high", "boot_std"}
    profiles = bp_strong_and_noise["strong"].profiles_ci_
    assert len(profiles) == 10 * 2 and (profiles.low <= profiles.high).all()


def test_parallel_analysis_keeps_planted_component_count():
    rng = np.random.default_rng(2)
    n_adapters, n_tasks = 20, 10
    directions, _ = np.linalg.qr(rng.normal(size=(n_tasks, 2)))
    weights, _ = np.linalg.qr(rng.normal(size=(n_adapters, 2)))  # planted spreads, not left to chance
    weights = (weights - weights.mean(axis=0)) * np.sqrt(n_adapters) * [0.2, 0.15]
    gains = weights @ directions.T + rng.normal(0, 0.01, (n_adapters, n_tasks))
    matrix = pd.DataFrame(np.vstack([np.zeros(n_tasks), gains]), index=["base"] + list(range(n_adapters)))
    count = ComponentCount(n_permutations=500).fit(matrix)
    assert count.n_components_ == 2
    assert (count.p_values_.iloc[:2] < 0.01).all()
    pure_noise = pd.DataFrame(rng.normal(size=(n_adapters + 1, n_tasks)), index=["base"] + list(range(n_adapters)))
    assert ComponentCount(n_permutations=500).fit(pure_noise).n_components_ == 0


def test_align_rotation_undoes_rotation_and_sign_flip():
    rng = np.random.default_rng(3)
    reference, _ = np.linalg.qr(rng.normal(size=(8, 3)))
    reference = reference.T
    rotation, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    rotated = rotation @ reference
    np.testing.assert_allclose(align_rotation(rotated, reference).T @ rotated, reference, atol=1e-10)
    flipped = reference * np.array([[-1], [1], [-1]])
    np.testing.assert_allclose(align_rotation(flipped, reference, "sign").T @ flipped, reference, atol=1e-12)


def test_impute_lowrank_recovers_held_out_cells():
    rng = np.random.default_rng(1)
    truth = pd.DataFrame(rng.normal(size=(15, 2)) @ rng.normal(size=(2, 9)) + rng.normal(size=9))
    holes = rng.random(truth.shape) < 0.12
    filled = impute_lowrank(truth.mask(holes), rank=2)
    assert np.abs(filled.to_numpy()[holes] - truth.to_numpy()[holes]).max() < 1e-3
    np.testing.assert_array_equal(filled.to_numpy()[~holes], truth.to_numpy()[~holes])


def test_names_from_signed_tags_ignore_shared_tags_and_take_overrides():
    loadings = pd.DataFrame(
        [[0.6, 0.5, -0.5, -0.4, 0.05], [0.7, -0.7, 0.0, 0.1, 0.0]],
        index=["PC0", "PC1"], columns=["goat", "gsm8k", "imdb", "flipkart", "mnli"],
    )
    tags = {"goat": ["math", "arithmetic", "english"], "gsm8k": ["math", "word-problems", "english"],
            "imdb": ["classification", "sentiment", "english"], "flipkart": ["classification", "english"],
            "mnli": ["classification", "nli", "english"]}
    names = name_traits(loadings, tags)
    assert names.loc["PC0", "name"] == "+math / -classification"
    assert names.loc["PC1", "name"] == "+arithmetic / -word-problems"
    assert names.loc["PC0", "positive_tasks"] == ["goat", "gsm8k"]
    overridden = name_traits(loadings, tags, overrides={"PC0": "general"})
    assert overridden.loc["PC0", "name"] == "general"
    assert overridden.loc["PC0", "suggested"] == "+math / -classification"


def test_run_writes_trait_files(tmp_path):
    rng = np.random.default_rng(4)
    records = binomial_records(rates_with_trait(0.25), 100, rng)

    class Task:
        tags = ["math"]
        choices = None

    class Config:
        analysis = {"n_components": 2, "trait_n_boot": 50, "trait_names": {"PC0": "general"}}

    class Study:
        config = Config()

        def records(self, task=None, model=None):
            return records.assign(parsed="", gold="")

        def task(self, name):
            return Task()

    paths = run(Study(), tmp_path)
    assert {p.name for p in paths} == {"traits.json", "trait_loadings_ci.csv", "trait_profiles.csv", "trait_loto.csv"}
    payload = json.loads((tmp_path / "traits.json").read_text())
    assert payload["components"][0]["name"] == "general"
    assert "p_value" in payload["components"][0]
    assert set(pd.read_csv(tmp_path / "trait_profiles.csv").columns) >= {"adapter", "component", "score", "low", "high", "name"}


def test_behaviour_names_a_component_by_the_answer_bias_it_follows():
    rng = np.random.default_rng(6)
    adapters = [f"a{i}" for i in range(10)]
    yes_rate = np.linspace(0.1, 0.9, 10)
    rows = []
    for a, rate in zip(adapters, yes_rate):
        said = np.where(rng.random(200) < rate, "yes", "no")
        rows += [dict(model=a, task="paraphrase", parsed=s, output=s) for s in said]
        rows += [dict(model=a, task="sentiment", parsed=s, output=s)
                 for s in rng.choice(["positive", "negative"], 200)]
    records = pd.DataFrame(rows)
    table = behaviours(records, {"paraphrase": ["yes", "no"], "sentiment": ["positive", "negative"]})
    assert table.loc["a9", "'yes' on paraphrase"] > 0.8
    scores = pd.DataFrame({"PC0": yes_rate + rng.normal(0, 0.02, 10), "PC1": rng.normal(size=10)}, index=adapters)
    explained = explain_by_behaviour(scores, table, n_permutations=500)
    assert explained["PC0"]["name"] == "answer bias: 'yes' on paraphrase"
    assert explained["PC0"]["behaviours"][0]["p"] < 0.01
    assert explained["PC1"]["name"] is None  # noise follows nothing once every behaviour tried is counted


def test_the_count_beyond_chance_is_one_number_in_traits_json_the_report_and_the_findings(tmp_path):
    """Sequential: PC1 counts only where PC0 does, and all three readers say the same."""
    from traitmap.findings.claims import resolved_of
    from traitmap.findings.evidence import Evidence
    from traitmap.report.sections import traits_section

    rng = np.random.default_rng(4)
    records = binomial_records(rates_with_trait(0.25), 100, rng)

    class Task:
        tags = ["math"]
        choices = None

    class Config:
        analysis = {"n_components": 2, "trait_n_boot": 50}

    class Study:
        config = Config()
        analysis_dir = tmp_path

        def records(self, task=None, model=None):
            return records.assign(parsed="", gold="")

        def task(self, name):
            return Task()

    run(Study(), tmp_path)
    payload = json.loads((tmp_path / "traits.json").read_text())
    in_json = payload["component_count"]["n_components"]
    assert in_json == sum(c.get("beats_chance", False) for c in payload["components"]) == len(resolved_components(payload))
    assert in_json >= 1

    matrix = records.groupby(["model", "task"])["correct"].mean().unstack()
    pca = TraitStability(n_components=2, n_boot=10).fit(records).reference_
    study = Study()
    study.pca = {"explained_variance_ratio": pca.explained_variance_ratio_.to_dict(),
                 "loadings": {c: r.to_dict() for c, r in pca.loadings_.iterrows()},
                 "scores": {a: r.to_dict() for a, r in pca.scores_.iterrows()}}
    study.gains = matrix.drop(index="base") - matrix.loc["base"]
    sentence = next(s for s in traits_section(study).sentences if "components beat" in s)
    assert sentence.startswith(f"{in_json} of ")

    evidence = Evidence(tmp_path, None, matrix, lambda: records)
    assert len(resolved_of(evidence)) == in_json


def test_resolved_components_are_sequential():
    payload = {"components": [{"component": "PC0", "p_value": 0.06}, {"component": "PC1", "p_value": 0.001}],
               "component_count": {"n_components": 0}}
    assert resolved_components(payload) == []
    payload["component_count"]["n_components"] = 1
    assert resolved_components(payload) == ["PC0"]


def test_a_task_without_which_nothing_varies_drops_only_its_own_leave_one_out_row():
    """A user's study: the adapters differ on one target only. Leaving that target out
    leaves no variance; that refit is skipped with its reason, the others still run, and
    degenerate bootstrap replicates warn nowhere."""
    import warnings

    from traitmap.analysis.pca import TraitPCA
    from traitmap.analysis.traits import leave_one_task_out

    matrix = pd.DataFrame({"urgency": [0.5, 0.9, 0.1, 0.6], "reviews": [0.5, 0.5, 0.5, 0.5],
                           "sums": [0.0, 0.0, 0.0, 0.0], "mnli": [0.3, 0.3, 0.3, 0.3]},
                          index=["base", "a", "b", "c"])
    reference = TraitPCA(2).fit(matrix)
    skipped = {}
    loto = leave_one_task_out(matrix, reference, skipped=skipped)
    assert list(skipped) == ["urgency"] and "no variance" in skipped["urgency"]
    assert set(loto.index) == {"reviews", "sums", "mnli"}

    rng = np.random.default_rng(0)
    records = binomial_records(matrix, 6, rng)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fitted = TraitStability(n_components=2, n_boot=30).fit(records)
    assert fitted.stability_["bootstrap_stability"].notna().any()
