"""Bootstrap intervals must cover planted rates, pair gains, and report seed spread."""

import time

import numpy as np
import pandas as pd
import pytest

from traitmap import metrics
from traitmap.analysis.uncertainty import CellBootstrap, percentile_interval, resample_matrix, run


def binomial_records(rates: pd.DataFrame, n_examples: int, rng, seeds=None):
    """One record per (model, seed, task, example), correct ~ Bernoulli(rate), independent."""
    rows = []
    for model, row in rates.iterrows():
        for seed in (seeds or {}).get(model, [-1 if model == "base" else 0]):
            for task, rate in row.items():
                correct = (rng.random(n_examples) < rate).astype(float)
                rows += [(model, seed, task, f"{task}-{e}", c) for e, c in enumerate(correct)]
    return pd.DataFrame(rows, columns=["model", "seed", "task", "example_id", "correct"])


def test_intervals_cover_true_rate_near_nominal():
    rng = np.random.default_rng(0)
    rates = pd.DataFrame(rng.uniform(0.1, 0.9, (20, 10)), index=["base"] + [f"a{i}" for i in range(19)],
                         columns=[f"t{j}" for j in range(10)])
    table = CellBootstrap(n_boot=1000, seed=1).fit(binomial_records(rates, 200, rng)).table_
    truth = rates.stack().rename("truth")
    merged = table.join(truth, on=["model", "task"])
    coverage = ((merged.low <= merged.truth) & (merged.truth <= merged.high)).mean()
    assert 0.89 <= coverage <= 0.99
    assert (merged.n == 200).all()


def test_paired_gain_interval_excludes_zero_and_is_narrow():
    rng = np.random.default_rng(2)
    n = 300
    difficulty = rng.random(n)  # the same examples for both models: outcomes are correlated
    rows = [("base", -1, "gsm8k", f"e{e}", float(u < 0.4)) for e, u in enumerate(difficulty)]
    rows += [("flipkart", 0, "gsm8k", f"e{e}", float(u < 0.6)) for e, u in enumerate(difficulty)]
    records = pd.DataFrame(rows, columns=["model", "seed", "task", "example_id", "correct"])
    cell = CellBootstrap(seed=3).fit(records).table_.set_index("model").loc["flipkart"]
    assert cell.gain == pytest.approx(0.6 - 0.4, abs=0.06)
    assert cell.gain_low > 0
    # unpaired, the 95% width would be about 2*1.96*sqrt(2*.24/300) ~ 0.157
    assert cell.gain_high - cell.gain_low < 0.11


def test_seed_average_and_spread():
    rng = np.random.default_rng(4)
    rates = pd.DataFrame({"t": [0.5, 0.7]}, index=["base", "a"])
    records = binomial_records(rates, 400, rng, seeds={"base": [-1], "a": [0, 1, 2]})
    fitted = CellBootstrap(n_boot=200).fit(records)
    per_seed = records[records.model == "a"].groupby("seed").correct.mean()
    row = fitted.table_.set_index("model").loc["a"]
    assert row.score == pytest.approx(per_seed.mean())
    assert row.seed_std == pytest.approx(per_seed.std(ddof=1))
    assert (row.seed_min, row.seed_max, row.n_seeds) == (per_seed.min(), per_seed.max(), 3)
    assert np.isnan(fitted.table_.set_index("model").loc["base"].seed_std)
    assert list(fitted.gains_.index) == ["a"]


def test_a_cell_interval_includes_training_noise():
    """Three seeds of one adapter at 0.3, 0.5 and 0.7 on 2000 examples each: the examples
    alone would give an interval about 3 points wide; the seeds, drawn with replacement in
    each replicate, widen it to the spread between trainings. Seeds that agree stay narrow."""
    rng = np.random.default_rng(8)
    rows = []
    for model, rates in {"base": [0.5], "noisy": [0.3, 0.5, 0.7], "steady": [0.5, 0.5, 0.5]}.items():
        for seed, rate in enumerate(rates):
            correct = (rng.random(2000) < rate).astype(float)
            rows += [(model, seed if model != "base" else -1, "t", f"e{e}", c) for e, c in enumerate(correct)]
    records = pd.DataFrame(rows, columns=["model", "seed", "task", "example_id", "correct"])
    table = CellBootstrap(n_boot=1000).fit(records).table_.set_index("model")
    assert table.loc["noisy", "high"] - table.loc["noisy", "low"] > 0.2
    assert table.loc["steady", "high"] - table.loc["steady", "low"] < 0.05


def test_resample_is_deterministic_and_fast():
    rng = np.random.default_rng(5)
    rates = pd.DataFrame(rng.uniform(0.2, 0.8, (10, 10)), index=["base"] + [f"a{i}" for i in range(9)],
                         columns=[f"t{j}" for j in range(10)])
    records = binomial_records(rates, 500, rng)
    start = time.perf_counter()
    first = resample_matrix(records, n_boot=1000, seed=7)
    assert time.perf_counter() - start < 5.0
    second = resample_matrix(records, n_boot=1000, seed=7)
    np.testing.assert_array_equal(first.draws, second.draws)
    assert first.draws.shape == (1000, 10, 10)
    assert list(first.point.index)[0] == "base"


def test_run_writes_matrix_ci(tmp_path):
    rng = np.random.default_rng(6)
    records = binomial_records(pd.DataFrame({"t": [0.5, 0.6]}, index=["base", "a"]), 50, rng)

    class Study:
        def records(self, task=None, model=None):
            return records

    study = Study()
    [path] = run(study, tmp_path)
    table = pd.read_csv(path)
    assert path.name == "matrix_ci.csv"
    assert list(table.columns[:11]) == ["model", "task", "score", "low", "high", "gain", "gain_low",
                                        "gain_high", "n", "seed_std", "n_seeds"]


def choice_records(rng, n_examples=120):
    """A 70/30 "no"/"yes" task: base answers at random, "biased" always "no", "good" right 80% of the time."""
    gold = np.where(rng.random(n_examples) < 0.7, "no", "yes")
    answers = {"base": rng.choice(["no", "yes"], n_examples), "biased": np.full(n_examples, "no"),
               "good": np.where(rng.random(n_examples) < 0.8, gold, np.where(gold == "no", "yes", "no"))}
    rows = [(model, -1 if model == "base" else 0, "t", f"t-{e}", float(a == g), a, g)
            for model, said in answers.items() for e, (a, g) in enumerate(zip(said, gold))]
    return pd.DataFrame(rows, columns=["model", "seed", "task", "example_id", "correct", "parsed", "gold"])


@pytest.mark.parametrize("metric, score", [("balanced_accuracy", lambda p, g: metrics.balanced_accuracy(p, g)),
                                           ("macro_f1", lambda p, g: metrics.macro_f1(p, g, ["no", "yes"]))])
def test_a_choice_matrix_resamples_in_its_metric(metric, score):
    records = choice_records(np.random.default_rng(8))
    draws = resample_matrix(records, n_boot=300, seed=1, metric=metric, labels={"t": ["no", "yes"]})
    for model, cell in records.groupby("model"):
        assert draws.point.loc[model, "t"] == score(cell["parsed"], cell["gold"])
    low, high = percentile_interval(draws.draws, 0.95)
    i = list(draws.point.index).index("good")
    assert low[i, 0] < draws.point.loc["good", "t"] < high[i, 0]
    if metric == "balanced_accuracy":  # always "no" scores 1/2 in every replicate that draws both labels
        assert np.all(draws.draws[:, list(draws.point.index).index("biased"), 0] == 0.5)
        accuracy = resample_matrix(records, n_boot=300, seed=1).draws[:, list(draws.point.index).index("biased"), 0]
        assert accuracy.std() > 0.01 and accuracy.mean() > 0.6
