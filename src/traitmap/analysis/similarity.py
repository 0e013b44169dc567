"""Surface similarity between datasets, and whether it explains the gains.

The paper's negative result: style and semantic similarity between a source and a
target do not line up with transfer (MNLI is the closest in style to the math data, yet
its adapter barely helps math). `StyleSimilarity` and `SemanticSimilarity` build the two
matrices from a bounded, seeded sample of texts per dataset; `SimilarityGainTest`
correlates pair similarity with gain and gives a Mantel-style permutation p-value, so
"does not explain" becomes a number rather than a reading of two heatmaps.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from traitmap.analysis import nlp
from traitmap.analysis.lengths import adapter_names
from traitmap.analysis import analysis_settings
from traitmap.files import json_ready, write_csv, write_json

# Universal POS tags (spaCy's pos_), so every dataset has the same feature columns.
UPOS = ("ADJ", "ADP", "ADV", "AUX", "CCONJ", "DET", "INTJ", "NOUN", "NUM", "PART", "PRON", "PROPN", "PUNCT", "SCONJ", "SYM", "VERB", "X")
SURFACE_FEATURES = ("sentence_length", "word_length", "type_token_ratio", "punctuation_rate", "function_word_rate", "digit_rate")
# Type-token ratio grows shorter with text length; counting only the first window keeps
# long reviews and one-line questions comparable.
TTR_WINDOW = 100


def sample_texts(texts: Sequence[str], max_texts: int, seed: int) -> list[str]:
    """At most `max_texts` texts, the same ones for the same input and seed."""
    texts = [t for t in texts if t and t.strip()]
    if len(texts) <= max_texts:
        return texts
    return random.Random(seed).sample(texts, max_texts)


def function_words() -> frozenset[str]:
    from spacy.lang.en.stop_words import STOP_WORDS

    return frozenset(STOP_WORDS)


def style_features(text: str, parse: nlp.Parse, stop_words: frozenset[str]) -> dict[str, float]:
    """Surface and part-of-speech features of one text."""
    words = [w for w, p in zip(parse.words, parse.pos) if p not in ("PUNCT", "SPACE") and not w.isspace()]
    tokens = [p for p in parse.pos if p != "SPACE"]
    n_tokens = max(len(tokens), 1)
    window = [w.lower() for w in words[:TTR_WINDOW]]
    features = {
        "sentence_length": len(words) / max(parse.n_sentences, 1),
        "word_length": float(np.mean([len(w) for w in words])) if words else 0.0,
        "type_token_ratio": len(set(window)) / len(window) if window else 0.0,
        "punctuation_rate": sum(p == "PUNCT" for p in tokens) / n_tokens,
        "function_word_rate": sum(w.lower() in stop_words for w in words) / max(len(words), 1),
        "digit_rate": sum(c.isdigit() for c in text) / max(len(text), 1),
    }
    features.update({f"pos_{tag}": sum(p == tag for p in tokens) / n_tokens for tag in UPOS})
    return features


def cosine_matrix(vectors: pd.DataFrame) -> pd.DataFrame:
    """Cosine similarity between rows; a zero row is similar to nothing (0) but itself (1)."""
    x = vectors.to_numpy(dtype=float)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    unit = np.divide(x, norms, out=np.zeros_like(x), where=norms > 0)
    sim = unit @ unit.T
    np.fill_diagonal(sim, 1.0)
    return pd.DataFrame(sim, index=vectors.index, columns=vectors.index)


class StyleSimilarity:
    """Cosine similarity of standardised stylometric profiles.

    Each feature is z-scored across datasets (so "long sentences" means longer than the
    other datasets here). The 17 POS shares and the six surface features are weighted
    as two equal blocks, so the POS tags do not drown the surface features.
    """

    def __init__(self, max_texts: int = 200, seed: int = 0, cache_dir: Path | None = None, parse: Callable | None = None):
        self.max_texts = max_texts
        self.seed = seed
        self.cache_dir = cache_dir
        self.parse = parse

    def fit(self, texts: Mapping[str, Sequence[str]]) -> "StyleSimilarity":
        """texts: dataset name -> its texts."""
        parse = self.parse or (lambda batch: nlp.parse(batch, cache_dir=self.cache_dir))
        stop_words = function_words()
        samples = {name: sample_texts(list(t), self.max_texts, self.seed) for name, t in texts.items()}
        flat = [t for sample in samples.values() for t in sample]
        parses = iter(parse(flat))
        profiles = {}
        for name, sample in samples.items():
            rows = [style_features(text, next(parses), stop_words) for text in sample]
            profiles[name] = pd.DataFrame(rows).mean() if rows else pd.Series(np.nan, index=list(SURFACE_FEATURES) + [f"pos_{t}" for t in UPOS])
        self.n_texts_ = pd.Series({name: len(s) for name, s in samples.items()}, name="n_texts")
        self.features_ = pd.DataFrame(profiles).T.rename_axis("dataset")
        self.standardized_ = self._standardize(self.features_)
        self.similarity_ = cosine_matrix(self.standardized_.fillna(0.0))
        return self

    @staticmethod
    def _standardize(features: pd.DataFrame) -> pd.DataFrame:
        spread = features.std(axis=0, ddof=0)
        z = (features - features.mean(axis=0)) / spread.where(spread > 0, 1.0)
        surface = [c for c in z.columns if not c.startswith("pos_")]
        pos = [c for c in z.columns if c.startswith("pos_")]
        weights = pd.Series(1.0, index=z.columns)
        weights[pos] = np.sqrt(len(surface) / max(len(pos), 1))
        return z * weights

    def to_dict(self) -> dict:
        return json_ready({
            "features": self.features_.to_dict(orient="index"),
            "similarity": self.similarity_.to_dict(orient="index"),
            "n_texts": self.n_texts_.to_dict(),
        })


class SemanticSimilarity:
    """Cosine similarity of each dataset's mean sentence embedding (all-MiniLM-L6-v2)."""

    def __init__(self, max_texts: int = 200, seed: int = 0, cache_dir: Path | None = None, embed: Callable | None = None):
        self.max_texts = max_texts
        self.seed = seed
        self.cache_dir = cache_dir
        self.embed = embed

    def fit(self, texts: Mapping[str, Sequence[str]]) -> "SemanticSimilarity":
        embed = self.embed or (lambda batch: nlp.embed(batch, cache_dir=self.cache_dir))
        samples = {name: sample_texts(list(t), self.max_texts, self.seed) for name, t in texts.items()}
        flat = [t for sample in samples.values() for t in sample]
        vectors = np.asarray(embed(flat), dtype=float)
        means, start = {}, 0
        for name, sample in samples.items():
            block = vectors[start:start + len(sample)]
            start += len(sample)
            means[name] = block.mean(axis=0) if len(block) else np.zeros(vectors.shape[1])
        self.n_texts_ = pd.Series({name: len(s) for name, s in samples.items()}, name="n_texts")
        self.mean_embeddings_ = pd.DataFrame(means).T.rename_axis("dataset")
        self.similarity_ = cosine_matrix(self.mean_embeddings_)
        return self

    def to_dict(self) -> dict:
        return json_ready({"similarity": self.similarity_.to_dict(orient="index"), "n_texts": self.n_texts_.to_dict()})


def mantel_test(similarity: pd.DataFrame, gains: pd.DataFrame, permutations: int = 1000, seed: int = 0, permute: str = "targets") -> tuple[float, float]:
    """Spearman rho between two aligned adapters x targets matrices over the cells where
    the gain is known, and its two-sided permutation p-value. Permuting whole target
    columns (or adapter rows) of the similarity keeps each row's (or column's) structure,
    which plain pair-wise Spearman p-values ignore: the pairs are not independent.
    Adapters or targets without a similarity are left out."""
    if permute not in ("targets", "sources", "both"):
        raise ValueError(f"permute must be 'targets', 'sources' or 'both', got {permute!r}")
    known = similarity.notna()
    cols = known.any(axis=0)
    rows = known.loc[:, cols].all(axis=1)
    s = similarity.loc[rows, cols].to_numpy(dtype=float)
    g = gains.reindex(index=similarity.index[rows], columns=similarity.columns[cols]).to_numpy(dtype=float)
    cells = np.isfinite(g)
    if cells.sum() < 3:
        return float("nan"), float("nan")
    g_ranks = stats.rankdata(g[cells])
    observed = _spearman_ranked(stats.rankdata(s[cells]), g_ranks)
    if not np.isfinite(observed):
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    hits = 0
    for _ in range(permutations):
        shuffled = s
        if permute in ("targets", "both"):
            shuffled = shuffled[:, rng.permutation(s.shape[1])]
        if permute in ("sources", "both"):
            shuffled = shuffled[rng.permutation(s.shape[0])]
        hits += abs(_spearman_ranked(stats.rankdata(shuffled[cells]), g_ranks)) >= abs(observed) - 1e-12
    return float(observed), float((hits + 1) / (permutations + 1))


def _spearman_ranked(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a - a.mean(), b - b.mean()
    denominator = np.sqrt((a * a).sum() * (b * b).sum())
    return float((a * b).sum() / denominator) if denominator > 0 else float("nan")


class SimilarityGainTest:
    """Does source-target similarity explain the gain? One row per similarity kind:
    pair-wise Spearman rho and p, and the Mantel permutation p-value.

    Pairs in `exclude` (typically an adapter evaluated on its own source task) are kept
    in `pairs_` but left out of the tests: in-distribution pairs are both the most
    similar and the most helped, which would make similarity look predictive of
    transfer when it only detects "same dataset".
    """

    def __init__(self, permutations: int = 1000, seed: int = 0, permute: str = "targets"):
        self.permutations = permutations
        self.seed = seed
        self.permute = permute

    def fit(self, similarities: Mapping[str, pd.DataFrame], gains: pd.DataFrame, exclude: Iterable[tuple[str, str]] = ()) -> "SimilarityGainTest":
        """similarities: kind -> adapters x targets similarity (rows: each adapter's
        source); gains: adapters x targets (Study.gains); exclude: (adapter, target)
        pairs left out of the tests."""
        excluded = pd.DataFrame(False, index=gains.index, columns=gains.columns)
        for adapter, target in exclude:
            if adapter in excluded.index and target in excluded.columns:
                excluded.at[adapter, target] = True
        tested_gains = gains.mask(excluded)
        pairs = gains.stack(future_stack=True).rename("gain").rename_axis(["adapter", "target"]).to_frame()
        pairs["excluded"] = excluded.stack(future_stack=True).reindex(pairs.index)
        rows = []
        for kind, sim in similarities.items():
            sim = sim.reindex(index=gains.index, columns=gains.columns)
            column = f"{kind}_similarity"
            pairs[column] = sim.stack(future_stack=True).reindex(pairs.index)
            tested = pairs.loc[~pairs["excluded"], [column, "gain"]].dropna()
            rho, p = _pairwise_spearman(tested[column], tested["gain"])
            _, mantel_p = mantel_test(sim, tested_gains, self.permutations, self.seed, self.permute)
            rows.append({"kind": kind, "n_pairs": len(tested), "rho": rho, "p_spearman": p,
                         "p_mantel": mantel_p, "permutations": self.permutations, "permute": self.permute})
        self.pairs_ = pairs.reset_index()
        self.tests_ = pd.DataFrame(rows).set_index("kind")
        self.per_target_ = self._per_target(similarities, tested_gains)
        return self

    @staticmethod
    def _per_target(similarities, gains: pd.DataFrame) -> pd.DataFrame:
        """Within one target: do the more similar sources give the larger gains?"""
        rows = []
        for kind, sim in similarities.items():
            sim = sim.reindex(index=gains.index, columns=gains.columns)
            for target in gains.columns:
                rho, p = _pairwise_spearman(sim[target], gains[target])
                rows.append({"kind": kind, "target": target, "rho": rho, "p": p})
        return pd.DataFrame(rows, columns=["kind", "target", "rho", "p"])

    def to_dict(self) -> dict:
        return json_ready({
            "tests": self.tests_.reset_index().to_dict(orient="records"),
            "per_target": self.per_target_.to_dict(orient="records"),
        })


def _pairwise_spearman(x: pd.Series, y: pd.Series) -> tuple[float, float]:
    both = pd.concat([x, y], axis=1).dropna()
    if len(both) < 3 or both.iloc[:, 0].nunique() < 2 or both.iloc[:, 1].nunique() < 2:
        return float("nan"), float("nan")
    result = stats.spearmanr(both.iloc[:, 0], both.iloc[:, 1])
    return float(result.statistic), float(result.pvalue)


def example_text(example) -> str:
    """What a dataset looks like: its input and its answer."""
    return "\n".join(part for part in (example.input_text, example.target) if part)


def source_key(adapter: str) -> str:
    return f"source:{adapter}"


def target_key(task: str) -> str:
    return f"target:{task}"


def pair_similarity(similarity: pd.DataFrame, adapters: Sequence[str], targets: Sequence[str]) -> pd.DataFrame:
    """adapters x targets block of a dataset similarity matrix."""
    block = similarity.loc[[source_key(a) for a in adapters], [target_key(t) for t in targets]]
    return pd.DataFrame(block.to_numpy(), index=pd.Index(adapters, name="adapter"), columns=pd.Index(targets, name="target"))


def self_pairs(adapters: pd.DataFrame, targets: Sequence[str]) -> list[tuple[str, str]]:
    """(adapter, target) pairs where the adapter was trained on the target's own task."""
    pairs = set()
    for name, source in zip(adapters["name"], adapters["source"]):
        for task in {str(source), str(name).split("@")[0]} & set(targets):
            pairs.add((name, task))
    return sorted(pairs)


def run(study, out_dir: Path) -> list[Path]:
    """similarity.json, similarity_style.csv, similarity_semantic.csv (dataset x dataset),
    similarity_style_features.csv, similarity_pairs.csv, similarity_tests.csv,
    similarity_per_target.csv."""
    settings = analysis_settings(study)
    out_dir = Path(out_dir)
    max_texts = int(settings.get("similarity_max_texts", 200))
    seed = int(settings.get("seed", 0))
    cache_dir = Path(study.cache_dir) / "nlp"
    adapters = adapter_names(study)
    targets = list(study.config.targets)
    texts = {source_key(a): [example_text(e) for e in study.source_examples(a)] for a in adapters}
    texts.update({target_key(t): [example_text(e) for e in study.target_examples(t)] for t in targets})
    style = StyleSimilarity(max_texts, seed, cache_dir).fit(texts)
    semantic = SemanticSimilarity(max_texts, seed, cache_dir).fit(texts)
    gains = study.gains.reindex(index=adapters, columns=targets)
    own_source = [] if settings.get("similarity_include_self", False) else self_pairs(study.adapters, targets)
    test = SimilarityGainTest(
        permutations=int(settings.get("similarity_permutations", 1000)), seed=seed, permute=settings.get("similarity_permute", "targets"),
    ).fit({"style": pair_similarity(style.similarity_, adapters, targets), "semantic": pair_similarity(semantic.similarity_, adapters, targets)}, gains, exclude=own_source)
    payload = {"style": style.to_dict(), "semantic": semantic.to_dict(), "gain_relation": test.to_dict()}
    return [
        write_json(out_dir / "similarity.json", payload),
        write_csv(out_dir / "similarity_style.csv", style.similarity_, index=True),
        write_csv(out_dir / "similarity_semantic.csv", semantic.similarity_, index=True),
        write_csv(out_dir / "similarity_style_features.csv", style.features_, index=True),
        write_csv(out_dir / "similarity_pairs.csv", test.pairs_),
        write_csv(out_dir / "similarity_tests.csv", test.tests_, index=True),
        write_csv(out_dir / "similarity_per_target.csv", test.per_target_),
    ]
