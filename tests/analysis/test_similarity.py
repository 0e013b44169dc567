"""Style: same-style sets are closer than math vs reviews. Semantics: paraphrases are
closer than unrelated sets. Mantel: a planted relation gives a small p, noise a large one."""

import numpy as np
import pandas as pd
import pytest

from traitmap.analysis.similarity import (
    SemanticSimilarity,
    SimilarityGainTest,
    StyleSimilarity,
    cosine_matrix,
    mantel_test,
    pair_similarity,
    sample_texts,
    self_pairs,
)


def math_problems(seed, n=25):
    rng = np.random.default_rng(seed)
    names = ["Janet", "Tom", "Ali", "Mei", "Sara", "Luis"]
    items = ["apples", "eggs", "pencils", "books", "marbles"]
    out = []
    for _ in range(n):
        a, b, c = rng.integers(2, 90, 3)
        name, item = rng.choice(names), rng.choice(items)
        out.append(f"{name} has {a} {item}. She buys {b} more and gives {c} away. How many {item} does {name} have now?\n"
                   f"{name} has {a} + {b} = {a + b} {item}. Then {a + b} - {c} = {a + b - c}.\n#### {a + b - c}")
    return out


def reviews(seed, n=25):
    rng = np.random.default_rng(seed)
    openers = ["Honestly, this", "I must say this", "Wow, this", "Well... this", "Sadly, this"]
    things = ["movie", "phone", "blender", "novel", "jacket"]
    verdicts = ["absolutely wonderful, truly delightful and charming", "really disappointing, frankly awful and boring",
                "pretty decent, though somewhat overpriced", "beautifully crafted, elegant and memorable"]
    out = []
    for _ in range(n):
        out.append(f"{rng.choice(openers)} {rng.choice(things)} was {rng.choice(verdicts)}! Would I recommend it? "
                   f"Perhaps, if you're patient; otherwise, skip it.\npositive")
    return out


@pytest.fixture(scope="module")
def style(tmp_path_factory):
    texts = {"math_a": math_problems(0), "math_b": math_problems(1), "reviews_a": reviews(0), "reviews_b": reviews(1)}
    return StyleSimilarity(max_texts=20, cache_dir=tmp_path_factory.mktemp("cache")).fit(texts)


def test_style_same_style_closer_than_math_vs_reviews(style):
    sim = style.similarity_
    assert sim.loc["math_a", "math_b"] > sim.loc["math_a", "reviews_a"] + 0.5
    assert sim.loc["reviews_a", "reviews_b"] > sim.loc["reviews_b", "math_b"] + 0.5
    np.testing.assert_allclose(sim.to_numpy(), sim.to_numpy().T)
    features = style.features_
    assert features.loc["math_a", "digit_rate"] > features.loc["reviews_a", "digit_rate"]
    assert features.loc["reviews_a", "pos_ADJ"] > features.loc["math_a", "pos_ADJ"]
    assert features.loc["math_a", "pos_NUM"] > 0.1
    assert style.n_texts_["math_a"] == 20
    assert style.to_dict()["similarity"]["math_a"]["math_a"] == pytest.approx(1.0)


def test_semantic_paraphrases_closer_than_unrelated():
    cooking = ["Boil the pasta in salted water for ten minutes.", "Chop the onions and fry them in butter.",
               "Bake the bread at two hundred degrees for half an hour.", "Stir the soup slowly while it simmers."]
    cooking_paraphrased = ["Cook the noodles in salty boiling water for 10 minutes.", "Dice the onion and saute it in butter.",
                           "Put the loaf in a 200 degree oven for thirty minutes.", "Gently stir the simmering soup."]
    astronomy = ["The telescope observed a distant galaxy cluster.", "Jupiter has dozens of moons orbiting it.",
                 "A supernova released an enormous burst of energy.", "The comet's tail points away from the sun."]
    fit = SemanticSimilarity().fit({"cooking": cooking, "paraphrased": cooking_paraphrased, "astronomy": astronomy})
    sim = fit.similarity_
    assert sim.loc["cooking", "paraphrased"] > sim.loc["cooking", "astronomy"] + 0.2
    assert fit.mean_embeddings_.shape == (3, 384)


def test_mantel_planted_relation_small_p_noise_large_p():
    rng = np.random.default_rng(0)
    adapters, targets = [f"a{i}" for i in range(8)], [f"t{j}" for j in range(6)]
    sim = pd.DataFrame(rng.random((8, 6)), index=adapters, columns=targets)
    planted = sim * 0.2 + rng.normal(0, 0.01, sim.shape)
    noise = pd.DataFrame(rng.normal(size=sim.shape), index=adapters, columns=targets)
    rho, p = mantel_test(sim, planted, permutations=1000, seed=0)
    assert rho > 0.8 and p < 0.01
    # under noise p is about uniform: most draws are far from significant
    noise_p = [mantel_test(sim, pd.DataFrame(np.random.default_rng(k).normal(size=sim.shape), index=adapters, columns=targets), permutations=100, seed=k)[1]
               for k in range(10)]
    assert np.median(noise_p) > 0.2 and sum(p < 0.05 for p in noise_p) <= 2
    assert mantel_test(sim, noise, permutations=200, seed=3) == mantel_test(sim, noise, permutations=200, seed=3)

    test = SimilarityGainTest(permutations=500).fit({"style": sim, "semantic": noise.abs()}, planted)
    assert test.tests_.loc["style", "p_mantel"] < 0.01
    assert test.tests_.loc["semantic", "p_mantel"] > 0.05
    assert len(test.pairs_) == 48 and {"style_similarity", "semantic_similarity", "gain"} <= set(test.pairs_.columns)
    assert (test.per_target_.query("kind == 'style'")["rho"] > 0.5).all()


def test_helpers():
    texts = [f"text {i}" for i in range(50)]
    assert sample_texts(texts, 10, 0) == sample_texts(texts, 10, 0) and len(set(sample_texts(texts, 10, 0))) == 10
    assert sample_texts(["a", "  ", ""], 10, 0) == ["a"]
    sim = cosine_matrix(pd.DataFrame([[1.0, 0.0], [0.0, 0.0]], index=["x", "zero"]))
    assert sim.loc["x", "zero"] == 0 and sim.loc["zero", "zero"] == 1
    full = pd.DataFrame(np.eye(3), index=["source:a", "target:t", "source:b"], columns=["source:a", "target:t", "source:b"])
    block = pair_similarity(full, ["a", "b"], ["t"])
    assert block.shape == (2, 1) and block.index.name == "adapter"


def test_self_pairs_are_reported_but_not_tested():
    """In-distribution pairs are the most similar and the most helped; with them noise
    looks like a relation, without them it does not."""
    names = ["gsm8k", "imdb", "flipkart", "mnli", "code", "goat"]
    adapters = pd.DataFrame({"name": names[:-1] + ["goat@mislabel"], "source": names})
    own = self_pairs(adapters, names)
    assert ("goat@mislabel", "goat") in own and len(own) == 6
    p_with, p_without = [], []
    for seed in range(10):
        rng = np.random.default_rng(seed)
        sim = pd.DataFrame(rng.random((6, 6)) * 0.3, index=names, columns=names)
        gains = pd.DataFrame(rng.normal(0, 0.01, (6, 6)), index=names, columns=names)
        for n in names:
            sim.loc[n, n], gains.loc[n, n] = 0.95, 0.3
        p_with.append(SimilarityGainTest(permutations=100).fit({"style": sim}, gains).tests_.loc["style", "p_mantel"])
        without = SimilarityGainTest(permutations=100).fit({"style": sim}, gains, exclude=[(n, n) for n in names])
        p_without.append(without.tests_.loc["style", "p_mantel"])
    assert np.median(p_with) < 0.05 and np.median(p_without) > 0.2
    assert without.tests_.loc["style", "n_pairs"] == 30
    assert without.pairs_["excluded"].sum() == 6 and len(without.pairs_) == 36


def test_run_writes_matrices_and_tests(tmp_path):
    from types import SimpleNamespace

    from traitmap.analysis.similarity import run

    example = lambda text: SimpleNamespace(id=text[:10], prompt=text, target="", gold="", input_text=text, label=None, meta={})
    data = {"gsm8k": math_problems(2, 8), "imdb": reviews(2, 8), "mnli": reviews(3, 8)}
    adapters = ["gsm8k", "imdb", "mnli"]
    gains = pd.DataFrame([[0.3, 0.0], [0.01, 0.2], [0.02, 0.05]], index=adapters, columns=["gsm8k", "imdb"])
    study = SimpleNamespace(
        config=SimpleNamespace(targets=["gsm8k", "imdb"], analysis={"similarity_max_texts": 5, "similarity_permutations": 50}),
        adapters=pd.DataFrame({"name": adapters, "source": adapters, "variant": None, "seed": 0, "path": ""}),
        gains=gains, cache_dir=tmp_path / "cache",
        source_examples=lambda name: [example(t) for t in data[name]],
        target_examples=lambda name: [example(t) for t in data[name][::-1]],
    )
    paths = run(study, tmp_path / "out")
    assert {p.name for p in paths} >= {"similarity.json", "similarity_style.csv", "similarity_semantic.csv", "similarity_tests.csv", "similarity_pairs.csv"}
    style = pd.read_csv(tmp_path / "out" / "similarity_style.csv", index_col=0)
    assert list(style.index) == ["source:gsm8k", "source:imdb", "source:mnli", "target:gsm8k", "target:imdb"]
    pairs = pd.read_csv(tmp_path / "out" / "similarity_pairs.csv")
    assert pairs["excluded"].sum() == 2 and len(pairs) == 6
