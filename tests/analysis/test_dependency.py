"""A planted structural skill: the adapter solves every question with an object
predicate (`oprd`, "The heater keeps the house warm."), the base rarely does; elsewhere
they are equal. `oprd` must come out with the highest ratio."""

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from traitmap.analysis import nlp
from traitmap.analysis.dependency import ALL, COLUMNS, DependencyAnalysis, default_targets, relations_table, run

OPRD = ["The heater keeps the house warm.", "The fan kept the office cool.", "She left the door open.",
        "They elected him president.", "The cooler keeps the drinks cold.", "The coat kept him warm."]
PLAIN = ["Janet sells eggs at the market.", "The farmer buys a new tractor.", "Tom reads the long book.",
         "The baker makes fresh bread.", "Mia walks her dog.", "The class visits the museum."]
QUESTIONS = ["How many eggs does she sell in {n} days?", "What is the total cost of {n} apples?",
             "How many hours does the trip take if it is {n} miles long?"]


def planted_questions(n_oprd=24, n_plain=48, seed=0):
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n_oprd + n_plain):
        lead = (OPRD if i < n_oprd else PLAIN)[i % 6]
        rows.append({"id": f"q{i}", "text": f"{lead} {QUESTIONS[i % 3].format(n=int(rng.integers(2, 50)))}", "oprd": i < n_oprd})
    return pd.DataFrame(rows)


def planted_records(questions, seed=0):
    """adapter right on every oprd question, base on a fifth of them; elsewhere both
    right on the same half. Two adapter seeds, identical."""
    rng = np.random.default_rng(seed)
    rows = []
    for q in questions.itertuples():
        if q.oprd:
            base, adapter = float(rng.random() < 0.2), 1.0
        else:
            base = adapter = float(rng.random() < 0.5)
        rows.append({"model": "base", "seed": -1, "task": "gsm8k", "example_id": q.id, "correct": base})
        rows += [{"model": "flipkart", "seed": s, "task": "gsm8k", "example_id": q.id, "correct": adapter} for s in (0, 1)]
        rows.append({"model": "goat", "seed": 0, "task": "gsm8k", "example_id": q.id, "correct": base})
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def parsed(tmp_path_factory):
    questions = planted_questions()
    parses = nlp.parse(questions["text"].tolist(), cache_dir=tmp_path_factory.mktemp("cache"))
    return questions, relations_table({i: p.relations for i, p in zip(questions["id"], parses)}, "gsm8k")


def test_planted_oprd_has_highest_ratio(parsed):
    questions, relations = parsed
    oprd_ids = set(relations.query("relation == 'oprd'")["example_id"])
    assert oprd_ids == set(questions.query("oprd")["id"])  # the parser sees what was planted
    fit = DependencyAnalysis(min_support=10, n_boot=500).fit(planted_records(questions), relations)
    assert list(fit.table_.columns) == COLUMNS
    top = fit.top("gsm8k", "flipkart", k=3)
    assert top.loc[0, "relation"] == "oprd"
    row = top.loc[0]
    assert row["n"] == 24 and row["adapter_rate"] == 1.0 and row["base_rate"] < 0.4
    assert row["ratio_low"] > 1.5 and row["ratio_low"] <= row["ratio"] <= row["ratio_high"]
    overall = fit.table_.query("adapter == 'flipkart' and relation == @ALL").iloc[0]
    assert overall["n"] == 72 and 1 < overall["ratio"] < row["ratio"]
    # an adapter no better than base has ratio 1 everywhere
    assert np.allclose(fit.table_.query("adapter == 'goat'")["ratio"], 1.0)


def test_min_support_filters_rare_relations():
    relations = pd.DataFrame({"target": "t", "example_id": ["a", "b", "c"] + [f"x{i}" for i in range(12)],
                              "relation": ["rare"] * 3 + ["common"] * 12})
    ids = ["a", "b", "c"] + [f"x{i}" for i in range(12)]
    records = pd.DataFrame([{"model": m, "task": "t", "example_id": i, "correct": 1.0 if m == "ad" else 0.0} for m in ("base", "ad") for i in ids])
    table = DependencyAnalysis(min_support=10, n_boot=100).fit(records, relations).table_
    assert set(table["relation"]) == {ALL, "common"}
    common = table.set_index("relation").loc["common"]
    # base never right: large but finite ratio (pseudocount 0.5)
    assert common["ratio"] == pytest.approx(12.5 / 0.5) and np.isfinite(common["ratio_high"])


def test_run_parses_the_default_math_target(tmp_path, parsed):
    questions, _ = parsed
    records = planted_records(questions)
    examples = [SimpleNamespace(id=q.id, prompt=q.text, target="", gold="1", input_text=q.text, label=None, meta={}) for q in questions.itertuples()]
    tasks = {"gsm8k": SimpleNamespace(kind="generate", tags=["math"], choices=None), "imdb": SimpleNamespace(kind="choice", tags=[], choices=["a", "b"])}
    study = SimpleNamespace(
        config=SimpleNamespace(targets=["imdb", "gsm8k"], analysis={"dependency_bootstrap": 200}),
        task=lambda name: tasks[name], cache_dir=tmp_path / "cache",
        records=lambda task=None, model=None: records[records["task"] == task],
        target_examples=lambda name: examples,
    )
    assert default_targets(study) == ["gsm8k"]
    paths = run(study, tmp_path / "out")
    assert [p.name for p in paths] == ["dependency.json", "dependency.csv"]
    table = pd.read_csv(paths[1], keep_default_na=False)
    assert table.query("adapter == 'flipkart' and relation != @ALL").sort_values("ratio").iloc[-1]["relation"] == "oprd"
    assert list((tmp_path / "cache" / "nlp").glob("*.sqlite"))
