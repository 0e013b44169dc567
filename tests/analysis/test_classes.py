"""A planted label bias must show in the predicted distribution, the confusion matrix
and a large divergence from gold; a faithful model must not."""

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from traitmap.analysis.classes import NO_ANSWER, ClassAnalysis, js_distance, run

LABELS = ["positive", "neutral", "negative"]


def planted_records(seed=0, n_per_label=40):
    """base is right 90% of the time; 'imdb' says positive 85% of the time and never
    neutral; 'pile' answers neutral a lot and sometimes nothing."""
    rng = np.random.default_rng(seed)
    gold = [label for label in LABELS for _ in range(n_per_label)]
    rows = []
    for i, g in enumerate(gold):
        base = g if rng.random() < 0.9 else rng.choice(LABELS)
        imdb = "positive" if rng.random() < 0.85 else "negative"
        pile = "neutral" if rng.random() < 0.6 else (g if rng.random() < 0.8 else "")
        for model, pred in (("base", base), ("imdb", imdb), ("pile", pile)):
            rows.append({"model": model, "seed": -1 if model == "base" else 0, "task": "flipkart", "example_id": f"f{i}", "parsed": pred, "gold": g, "correct": float(pred == g)})
    return pd.DataFrame(rows)


SOURCES = {"imdb": ["positive"] * 50 + ["negative"] * 50, "pile": ["toxic"] * 30 + ["non-toxic"] * 70}


def test_planted_positive_bias_is_visible():
    fit = ClassAnalysis().fit(planted_records(), SOURCES, {"flipkart": LABELS})
    predicted = fit.predicted_distribution_.set_index(["model", "label"])["share"]
    assert predicted[("imdb", "positive")] > 0.75
    assert predicted[("imdb", "neutral")] == 0
    assert list(fit.predicted_distribution_.query("model == 'base'")["label"])[:3] == LABELS

    div = fit.divergence_.set_index("model")
    assert div.loc["imdb", "js_to_gold"] > 0.4
    assert div.loc["base", "js_to_gold"] < 0.15
    assert div.loc["imdb", "top_label"] == "positive"
    assert div.loc["imdb", "top_excess"] > 0.4
    assert div.loc["imdb", "normalized_entropy"] < div.loc["base", "normalized_entropy"]
    # imdb teaches pos/neg 50/50 and predicts mostly positive: some divergence, shared labels
    assert 0 < div.loc["imdb", "js_to_source"] < div.loc["imdb", "js_to_gold"] + 0.3
    # toxic/non-toxic share no label with the target: no divergence to report
    assert np.isnan(div.loc["pile", "js_to_source"])
    assert div.loc["pile", "no_answer_share"] > 0
    assert np.isnan(div.loc["base", "js_to_base"]) and div.loc["imdb", "js_to_base"] > 0.3

    confusion = fit.confusion_matrix("flipkart", "imdb")
    assert confusion.loc["neutral", "positive"] > 25
    assert "neutral" not in confusion.columns
    assert NO_ANSWER in fit.confusion_matrix("flipkart", "pile").columns
    assert fit.confusion_matrix("flipkart", "base").to_numpy().sum() == 120


def test_gold_and_source_distributions():
    records = planted_records()
    doubled = pd.concat([records, records.query("model == 'imdb'").assign(seed=1)])
    fit = ClassAnalysis().fit(doubled, SOURCES, {"flipkart": LABELS})
    gold = fit.gold_distribution_.set_index("label")
    assert gold["count"].tolist() == [40, 40, 40]  # counted once per example, not per seed
    source = fit.source_distribution_.set_index(["source", "label"])["share"]
    assert source[("pile", "non-toxic")] == pytest.approx(0.7)
    bias = fit.bias_.set_index(["model", "label"])
    assert bias.loc[("imdb", "positive"), "excess"] > 0.4
    assert fit.to_dict()["divergence"]


def test_js_distance_bounds():
    p = pd.Series({"a": 1.0, "b": 0.0})
    assert js_distance(p, p) == pytest.approx(0.0)
    assert js_distance(p, pd.Series({"b": 1.0})) == pytest.approx(1.0)
    assert np.isnan(js_distance(p, pd.Series({"c": 1.0})))


def test_run_writes_files(tmp_path):
    records = planted_records()
    example = lambda i, label: SimpleNamespace(id=str(i), prompt="", target=label, gold=label, input_text="t", label=label, meta={})
    tasks = {"flipkart": SimpleNamespace(kind="choice", tags=[], choices=LABELS), "gsm8k": SimpleNamespace(kind="generate", tags=["math"], choices=None)}
    study = SimpleNamespace(
        config=SimpleNamespace(targets=["flipkart", "gsm8k"], analysis={}),
        adapters=pd.DataFrame({"name": ["imdb", "pile", "goat"], "source": ["imdb", "pile", "goat"], "variant": None, "seed": 0, "path": ""}),
        task=lambda name: tasks[name],
        records=lambda task=None, model=None: records[records["task"] == task],
        source_examples=lambda name: [example(i, lab) for i, lab in enumerate(SOURCES.get(name, []))] or [SimpleNamespace(label=None)],
    )
    paths = run(study, tmp_path)
    assert {p.name for p in paths} == {"classes.json", "classes_source.csv", "classes_gold.csv", "classes_predicted.csv", "classes_confusion.csv", "classes_bias.csv", "classes_divergence.csv"}
    assert set(pd.read_csv(tmp_path / "classes_source.csv")["source"]) == {"imdb", "pile"}
    assert pd.read_csv(tmp_path / "classes_divergence.csv").set_index("model").loc["imdb", "js_to_gold"] > 0.4
