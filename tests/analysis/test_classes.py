"""A planted label bias must show in the predicted distribution, the confusion matrix
and a large divergence from gold; a faithful model must not."""

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from traitmap.analysis.classes import (GOLD_ROW, NO_ANSWER, ClassAnalysis, answer_balance, answer_mix, answer_shares,
                                       balanced_gains, confusion_counts, js_distance, label_order, row_shares, run)

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


def planted_confusion():
    fit = ClassAnalysis().fit(planted_records(), SOURCES, {"flipkart": LABELS})
    return fit.confusion_


def test_answer_shares_hold_the_gold_row_and_each_models_answer_mix():
    confusion = planted_confusion()
    labels = label_order(confusion)
    assert set(labels[:3]) == set(LABELS) and labels[3:] == [NO_ANSWER]
    shares = answer_shares(confusion, ["base", "imdb", "pile"], labels)
    assert list(shares.index) == [GOLD_ROW, "base", "imdb", "pile"]
    assert shares.loc[GOLD_ROW, LABELS].tolist() == pytest.approx([1 / 3] * 3)
    assert shares.loc[GOLD_ROW, NO_ANSWER] == 0
    assert shares.sum(axis=1).tolist() == pytest.approx([1.0] * 4)
    assert shares.loc["imdb", "positive"] > 0.75 and shares.loc["imdb", "neutral"] == 0


def test_label_order_puts_frequent_gold_labels_first_then_other_answers_by_name():
    confusion = pd.DataFrame({"task": "t", "model": "m", "gold": ["a", "b", "b", "b"], "predicted": ["z", "b", "y", "a"],
                              "count": [1, 2, 3, 4]})
    assert label_order(confusion) == ["b", "a", "y", "z"]


def test_confusion_rows_read_as_shares_of_each_gold_label():
    confusion = planted_confusion()
    counts = confusion_counts(confusion[confusion["model"] == "imdb"], LABELS + ["unseen"])
    assert counts.loc["unseen"].sum() == 0 and counts.loc["positive"].sum() == 40
    shares = row_shares(counts)
    assert shares.loc["unseen"].tolist() == [0.0] * 4  # a label never gold stays zero, not NaN
    assert shares.loc[LABELS].sum(axis=1).tolist() == pytest.approx([1.0] * 3)


def test_answer_balance_finds_the_label_furthest_from_gold():
    balance = answer_balance(planted_confusion()).set_index("model")
    imdb = balance.loc["imdb"]
    assert imdb["top_label"] == "positive" and imdb["top_share"] > 0.75
    assert imdb["largest_gold_share"] == pytest.approx(1 / 3)
    assert imdb["furthest_label"] == "positive"
    assert imdb["furthest_gap"] == pytest.approx(imdb["furthest_share"] - 1 / 3)
    collapsed = pd.DataFrame({"task": "t", "model": "m", "gold": ["a", "b"], "predicted": "a", "count": [5, 5]})
    row = answer_balance(collapsed).iloc[0]
    assert (row["top_label"], row["top_share"], row["largest_gold_share"]) == ("a", 1.0, 0.5)


def test_balanced_gains_average_seeds_and_compare_with_base():
    cells = pd.DataFrame({"model": ["base", "a", "a", "b"], "seed": [-1, 0, 1, 0], "task": ["t", "t", "t", "u"],
                          "accuracy": [0.5, 0.6, 0.7, 0.9], "balanced_accuracy": [0.5, 0.4, 0.5, 0.9]})
    gains = balanced_gains(cells).set_index("model")
    assert list(gains.index) == ["base", "a", "b"]
    assert gains.loc["a", "accuracy_gain"] == pytest.approx(0.15)
    assert gains.loc["a", "balanced_gain"] == pytest.approx(-0.05)
    assert gains.loc[["base", "b"], "balanced_gain"].isna().all()  # the base itself, and a task without base


def test_answer_mix_is_the_top_label_and_the_distance_to_the_gold_mix():
    rates = pd.DataFrame({"model": "a", "task": "t", "label": ["x", "y", "x", "y"], "seed": [0, 0, 1, 1],
                          "rate": [0.8, 0.2, 0.9, 0.1], "gold_rate": [0.5, 0.5, 0.5, 0.5]})
    mix = answer_mix(rates).iloc[0]
    assert (mix["label"], mix["rate"], mix["gold_rate"]) == ("x", pytest.approx(0.85), 0.5)
    assert mix["distance"] == pytest.approx(0.35)
