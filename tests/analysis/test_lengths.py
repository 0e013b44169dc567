"""Planted output lengths: adapters that copy their source's length get coefficient ~1,
base-like ones ~0, and the length gap to the reference answers tracks the gain."""

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from traitmap.analysis.lengths import LabelLengthAnalysis, LengthAnalysis, interpolation_coefficient, kde_on_grid, run


def texts_around(n_words, count, rng, spread=0.1):
    """`count` texts of about `n_words` words of 4 letters each."""
    sizes = np.maximum(1, rng.normal(n_words, spread * n_words, count).round().astype(int))
    return [" ".join(["abcd"] * int(k)) for k in sizes]


def planted(seed=0):
    """base answers ~10 words; 'code' outputs ~ its source (60); 'goat' stays base-like;
    a, b, c sit ever further from the 40-word reference and gain ever less."""
    rng = np.random.default_rng(seed)
    outputs = {"base": 10, "code": 60, "goat": 10, "a": 40, "b": 30, "c": 20}
    sources = {"code": 60, "goat": 3, "a": 40, "b": 40, "c": 40}
    records = pd.DataFrame([
        {"model": model, "task": "gsm8k", "output": text, "output_tokens": len(text.split()) * 2}
        for model, n in outputs.items()
        for text in texts_around(n, 80, rng)
    ])
    source_answers = {name: texts_around(n, 80, rng) for name, n in sources.items()}
    reference = {"gsm8k": texts_around(40, 80, rng)}
    gains = pd.DataFrame({"gsm8k": {"code": 0.05, "goat": 0.0, "a": 0.09, "b": 0.07, "c": 0.02}})
    return records, source_answers, reference, gains


def test_interpolation_coefficient_planted_shift():
    records, sources, reference, gains = planted()
    fit = LengthAnalysis().fit(records, sources, reference, gains)
    coef = fit.interpolation_.set_index("adapter")["coefficient"]
    assert coef["code"] == pytest.approx(1.0, abs=0.1)
    assert coef["goat"] == pytest.approx(0.0, abs=0.1)
    assert set(fit.interpolation_["task"]) == {"gsm8k"}


def test_length_gap_relates_to_gain():
    records, sources, reference, gains = planted()
    fit = LengthAnalysis(measure="words").fit(records, sources, reference, gains)
    relation = fit.gain_relation_.loc["gsm8k"]
    assert relation["adapter_gap_rho"] < -0.8
    assert relation["adapter_gap_n"] == 5
    match = fit.length_match_.set_index("adapter")
    assert match.loc["a", "adapter_gap"] < match.loc["c", "adapter_gap"]


def test_density_is_long_on_a_shared_grid_and_integrates_to_about_one():
    records, sources, reference, gains = planted()
    fit = LengthAnalysis(grid_size=300).fit(records, sources, reference, gains)
    density = fit.density_
    assert list(density.columns) == ["task", "measure", "group", "kind", "x", "density"]
    assert set(density["kind"]) == {"base", "adapter", "source", "target_reference"}
    chars = density[density["measure"] == "chars"]
    grids = chars.groupby(["kind", "group"])["x"].apply(tuple)
    assert grids.nunique() == 1
    code = chars[(chars["group"] == "code") & (chars["kind"] == "adapter")]
    assert np.trapezoid(code["density"], code["x"]) == pytest.approx(1.0, abs=0.05)
    # tokens exist only for model outputs
    assert set(density[density["measure"] == "tokens"]["kind"]) == {"base", "adapter"}
    assert fit.summary_.loc[("gsm8k", "adapter", "code"), "tokens_median"] > 100
    assert fit.to_dict()["interpolation"]


def test_degenerate_inputs_give_nan_not_errors():
    assert np.isnan(interpolation_coefficient(10, 20, 10))
    assert np.isnan(kde_on_grid([5, 5, 5], np.linspace(0, 10, 5))).all()


def test_label_length_coupling():
    rng = np.random.default_rng(1)
    rows = [{"dataset": "imdb", "role": "source", "label": "positive", "text": t} for t in texts_around(80, 60, rng)]
    rows += [{"dataset": "imdb", "role": "source", "label": "negative", "text": t} for t in texts_around(20, 60, rng)]
    rows += [{"dataset": "flat", "role": "source", "label": lab, "text": t} for lab in ("x", "y") for t in texts_around(30, 60, rng)]
    fit = LabelLengthAnalysis().fit(pd.DataFrame(rows))
    coupling = fit.coupling_.set_index("dataset")
    assert coupling.loc["imdb", "kruskal_p"] < 1e-6
    assert coupling.loc["flat", "kruskal_p"] > 0.01
    assert fit.summary_.loc[("imdb", "source", "positive"), "median"] > fit.summary_.loc[("imdb", "source", "negative"), "median"]
    assert set(fit.density_["label"]) == {"positive", "negative", "x", "y"}


def example(id, target, label=None, input_text="some input"):
    return SimpleNamespace(id=id, prompt=input_text, target=target, gold=label or target, input_text=input_text, label=label, meta={})


def test_run_writes_files(tmp_path):
    records, sources, reference, gains = planted()
    rng = np.random.default_rng(2)
    tasks = {"gsm8k": SimpleNamespace(kind="generate", tags=["math"], choices=None),
             "imdb": SimpleNamespace(kind="choice", tags=["sentiment"], choices=["negative", "positive"])}
    imdb = [example(f"i{i}", lab, lab, t) for i, (lab, t) in enumerate(
        [("positive", t) for t in texts_around(50, 20, rng)] + [("negative", t) for t in texts_around(20, 20, rng)])]
    study = SimpleNamespace(
        config=SimpleNamespace(targets=["gsm8k", "imdb"], analysis={}),
        adapters=pd.DataFrame({"name": list(sources), "source": list(sources), "variant": None, "seed": 0, "path": ""}),
        records=lambda task=None, model=None: records[records["task"] == task],
        gains=gains,
        task=lambda name: tasks[name],
        source_examples=lambda name: [example(f"{name}{i}", t) for i, t in enumerate(sources[name])],
        target_examples=lambda name: [example(f"g{i}", t) for i, t in enumerate(reference["gsm8k"])] if name == "gsm8k" else imdb,
    )
    paths = run(study, tmp_path)
    names = {p.name for p in paths}
    assert {"lengths.json", "lengths_density.csv", "lengths_interpolation.csv", "lengths_gain_relation.csv", "label_lengths_density.csv"} <= names
    assert all(p.exists() for p in paths)
    assert not list(tmp_path.glob(".*.tmp"))
    table = pd.read_csv(tmp_path / "lengths_interpolation.csv")
    assert table.set_index("adapter").loc["code", "coefficient"] == pytest.approx(1.0, abs=0.1)
    assert set(pd.read_csv(tmp_path / "label_lengths_coupling.csv")["dataset"]) == {"imdb"}
