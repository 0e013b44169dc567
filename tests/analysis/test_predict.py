"""The transfer predictor must find a planted feature->gain relation held-out, and
nothing in noise; source features must be the plain statistics they claim to be."""

import json
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pytest

from traitmap.analysis.predict import (SourceFeatures, TransferPredictor, critical_r, held_out_errors,
                                      predict_new_source, run)

FEATURES = [f for f in SourceFeatures.__dataclass_fields__ if f != "embedding"]


@dataclass(frozen=True)
class Example:
    id: str
    target: str
    input_text: str
    label: str | None = None
    prompt: str = ""
    gold: str = ""
    meta: dict = field(default_factory=dict)


def random_features(n_sources: int, rng) -> pd.DataFrame:
    features = pd.DataFrame(rng.random((n_sources, len(FEATURES))), columns=FEATURES,
                            index=[f"s{i}" for i in range(n_sources)])
    features["answer_chars_mean"] = np.exp(rng.uniform(1, 7, n_sources))  # a label word .. a code solution
    return features


def test_source_features_are_the_plain_statistics():
    choice = [Example("1", "positive", "good film, 10/10!", "positive"),
              Example("2", "negative", "bad", "negative"),
              Example("3", "positive", "fine fine", "positive"),
              Example("4", "negative", "meh.", "negative")]
    features = SourceFeatures.from_examples(choice)
    assert features.answer_chars_mean == pytest.approx(8.0)
    assert features.answer_words_median == 1.0
    assert features.label_entropy == pytest.approx(1.0)
    assert features.label_majority_share == 0.5
    generate = SourceFeatures.from_examples([Example("1", "The answer is 42", "What is 6*7?")], embedding=[0.5, -1])
    assert (generate.label_entropy, generate.label_majority_share) == (0.0, 1.0)
    assert generate.digit_rate > 0
    series = generate.to_series()
    assert list(series.index[-2:]) == ["embedding_0", "embedding_1"]


def test_recovers_planted_length_relation_out_of_sample():
    rng = np.random.default_rng(0)
    features = random_features(20, rng)
    log_length = np.log1p(features["answer_chars_mean"])
    gains = pd.DataFrame({"gsm8k": 0.03 * log_length + rng.normal(0, 0.01, 20),
                          "imdb": -0.02 * log_length + rng.normal(0, 0.01, 20)})
    predictor = TransferPredictor(alpha=1.0).fit(features, gains)
    assert len(predictor.loso_) == 40
    assert (predictor.correlation_.loc[["gsm8k", "imdb"], "pearson"] > 0.8).all()
    assert predictor.correlation_.loc["overall", "mae"] < predictor.correlation_.loc["overall", "baseline_mae"]
    assert predictor.coef_.loc["gsm8k"].abs().idxmax() == "answer_chars_mean"
    new = features.iloc[[0]]
    assert predictor.predict(new).shape == (1, 2)


def test_noise_gives_no_correlation_and_no_gain_over_baseline():
    rng = np.random.default_rng(1)
    features = random_features(20, rng)
    gains = pd.DataFrame(rng.normal(size=(20, 20)), index=features.index)
    table = TransferPredictor().fit(features, gains).correlation_
    assert abs(table.loc["mean_over_targets", "pearson"]) < 0.3
    assert table.loc["overall", "mae"] > table.loc["overall", "baseline_mae"]


def test_alpha_grid_and_too_few_sources():
    rng = np.random.default_rng(2)
    features = random_features(5, rng)
    gains = pd.DataFrame({"t": rng.normal(size=5)}, index=features.index)
    predictor = TransferPredictor(alpha=[0.1, 1.0, 10.0]).fit(features, gains)
    assert "5 sources" in predictor.note_ and f"{critical_r(5):.2f}" in predictor.note_
    from traitmap.errors import TraitmapError
    with pytest.raises(TraitmapError):
        TransferPredictor().fit(features.iloc[:2], gains)


class FakeStudy:
    """Sources whose answers grow longer, gains on 'gsm8k' that grow with them."""

    def __init__(self):
        lengths = {"goat": 3, "imdb": 8, "mnli": 15, "flipkart": 30, "magicoder": 200, "metamath": 120}
        self.examples = {name: [Example(f"{name}{i}", "x " * (n + i), "some input text") for i in range(5)]
                         for name, n in lengths.items()}
        log_length = np.log1p(2 * np.array(list(lengths.values())))
        self.gains = pd.DataFrame({"gsm8k": 0.02 * log_length, "pile": -0.01 * log_length}, index=list(lengths))

    def source_examples(self, name):
        return self.examples[name]


def test_predict_new_source_ranks_targets():
    ranking = predict_new_source(FakeStudy(), [Example("n", "y " * 150, "text")])
    assert list(ranking.index) == ["gsm8k", "pile"]
    assert ranking.loc["gsm8k", "predicted_gain"] > 0 > ranking.loc["pile", "predicted_gain"]
    assert {"loso_pearson", "loso_spearman"} <= set(ranking.columns)


def test_run_writes_prediction_files(tmp_path):
    paths = run(FakeStudy(), tmp_path)
    assert {p.name for p in paths} == {"source_features.csv", "transfer_prediction.csv", "transfer_prediction.json"}
    payload = json.loads((tmp_path / "transfer_prediction.json").read_text())
    assert "6 sources" in payload["note"]
    assert list(pd.read_csv(tmp_path / "transfer_prediction.csv").columns) == ["source", "target", "predicted", "actual", "baseline"]


def test_held_out_errors_count_only_cells_with_a_measured_gain():
    loso = pd.DataFrame({"source": ["a", "a", "b", "b"], "target": ["x", "y", "x", "y"],
                         "predicted": [0.02, -0.01, 0.05, 0.03], "actual": [0.01, 0.02, -0.03, np.nan],
                         "baseline": [0.0, 0.0, 0.01, 0.0]})
    errors = held_out_errors(loso)
    assert errors["n"] == 3 and errors["sign_right"] == 1
    assert errors["mae"] == pytest.approx((0.01 + 0.03 + 0.08) / 3)
    assert errors["baseline_mae"] == pytest.approx((0.01 + 0.02 + 0.04) / 3)
    assert (errors["worst"]["source"], errors["worst"]["target"]) == ("b", "x")
    assert np.isnan(held_out_errors(loso.assign(baseline=[0.0, np.nan, 0.0, 0.0]))["baseline_mae"])
    assert np.isnan(held_out_errors(loso.drop(columns="baseline"))["baseline_mae"])

