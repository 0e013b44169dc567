"""Trait checks must separate planted structure from noise and name traits from tags."""

import json

import numpy as np
import pandas as pd
import pytest

from traitmap.analysis.traits import (
    ComponentCount,
    TraitStability,
    align_rotation,
    impute_lowrank,
    name_traits,
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

    class Config:
        analysis = {"n_components": 2, "trait_n_boot": 50, "trait_names": {"PC0": "general"}}

    class Study:
        config = Config()

        def records(self, task=None, model=None):
            return records

        def task(self, name):
            return Task()

    paths = run(Study(), tmp_path)
    assert {p.name for p in paths} == {"traits.json", "trait_loadings_ci.csv", "trait_profiles.csv", "trait_loto.csv"}
    payload = json.loads((tmp_path / "traits.json").read_text())
    assert payload["components"][0]["name"] == "general"
    assert "p_value" in payload["components"][0]
    assert set(pd.read_csv(tmp_path / "trait_profiles.csv").columns) >= {"adapter", "component", "score", "low", "high", "name"}


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
