"""Predict transfer before training: the paper explains gains after the fact with hidden
statistics of the source data (answer length, label balance); here the same statistics
are the inputs of a small regularised model, validated leave-one-source-out.

With the handful of sources a study trains, such a model can only be weak evidence;
the outputs say so, and compare against the trivial "mean of the other sources"
prediction instead of tuning until the numbers look good.
"""

from __future__ import annotations

import math
import re
import string
import warnings
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
from scipy import stats
from sklearn.linear_model import Ridge, RidgeCV
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from traitmap.analysis import analysis_settings
from traitmap.analysis.pca import BASE
from traitmap.errors import TraitmapError
from traitmap.files import json_ready, write_csv, write_json

FEATURES_FILE = "source_features.csv"  # under analysis/: what predicting a new source needs of the trained ones
MIN_SOURCES = 5
MINIMUM = f"at least {MIN_SOURCES} sources with gains"
LENGTH_FEATURES = ("answer_chars_mean", "answer_chars_median", "answer_words_mean", "answer_words_median",
                   "input_chars_mean", "input_words_mean")
WORD = re.compile(r"\w+")
PUNCTUATION = set(string.punctuation)


@dataclass(frozen=True)
class SourceFeatures:
    """Statistics of a source dataset that a fine-tuned model may inherit: how long its
    answers are (the paper's generation-length effect), how balanced its labels are
    (the class-distribution effect), and a few style rates."""

    answer_chars_mean: float
    answer_chars_median: float
    answer_words_mean: float
    answer_words_median: float
    input_chars_mean: float
    input_words_mean: float
    label_entropy: float
    label_majority_share: float
    type_token_ratio: float
    punctuation_rate: float
    digit_rate: float
    embedding: tuple[float, ...] | None = None

    @classmethod
    def from_examples(cls, examples: Sequence, embedding: Sequence[float] | None = None) -> "SourceFeatures":
        """From Examples' `target`, `input_text` and `label`. `embedding` is an optional
        centroid of the source's text embeddings, computed by the caller."""
        if not examples:
            raise TraitmapError("cannot compute source features from no examples")
        answers = [e.target or "" for e in examples]
        inputs = [e.input_text or "" for e in examples]
        answer_chars = np.array([len(a) for a in answers], dtype=float)
        answer_words = np.array([len(WORD.findall(a)) for a in answers], dtype=float)
        labels = [e.label for e in examples if e.label is not None]
        entropy, majority = label_balance(labels)
        texts = [f"{i} {a}" for i, a in zip(inputs, answers)]
        corpus = "".join(texts)
        return cls(
            answer_chars_mean=float(answer_chars.mean()),
            answer_chars_median=float(np.median(answer_chars)),
            answer_words_mean=float(answer_words.mean()),
            answer_words_median=float(np.median(answer_words)),
            input_chars_mean=float(np.mean([len(i) for i in inputs])),
            input_words_mean=float(np.mean([len(WORD.findall(i)) for i in inputs])),
            label_entropy=entropy,
            label_majority_share=majority,
            type_token_ratio=float(np.mean([type_token_ratio(t) for t in texts])),
            punctuation_rate=sum(c in PUNCTUATION for c in corpus) / max(len(corpus), 1),
            digit_rate=sum(c.isdigit() for c in corpus) / max(len(corpus), 1),
            embedding=None if embedding is None else tuple(float(v) for v in embedding),
        )

    def to_series(self) -> pd.Series:
        values = asdict(self)
        embedding = values.pop("embedding")
        values.update({f"embedding_{i}": v for i, v in enumerate(embedding or ())})
        return pd.Series(values, dtype=float)


def label_balance(labels: list[str]) -> tuple[float, float]:
    """(entropy in bits, share of the most common label); a source without labels
    (generate) is (0, 1): it teaches no label prior."""
    if not labels:
        return 0.0, 1.0
    counts = np.array(list(Counter(labels).values()), dtype=float)
    shares = counts / counts.sum()
    return float(-(shares * np.log2(shares)).sum()), float(shares.max())


def type_token_ratio(text: str) -> float:
    words = [w.lower() for w in WORD.findall(text)]
    return len(set(words)) / len(words) if words else 0.0


def critical_r(n: int, p: float = 0.05) -> float:
    """|r| a Pearson correlation over n points must exceed to be significant (two-sided)."""
    if n < 3:
        return float("nan")
    t = stats.t.ppf(1 - p / 2, n - 2)
    return float(t / math.sqrt(n - 2 + t * t))


def _correlations(predicted: np.ndarray, actual: np.ndarray) -> dict:
    keep = ~(np.isnan(predicted) | np.isnan(actual))
    predicted, actual = predicted[keep], actual[keep]
    result = {"pearson": np.nan, "pearson_p": np.nan, "spearman": np.nan, "spearman_p": np.nan, "n": int(keep.sum())}
    if keep.sum() >= 3 and np.ptp(predicted) > 0 and np.ptp(actual) > 0:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result["pearson"], result["pearson_p"] = stats.pearsonr(predicted, actual)
            result["spearman"], result["spearman_p"] = stats.spearmanr(predicted, actual)
    return {k: float(v) if k != "n" else v for k, v in result.items()}


def held_out_errors(loso: pd.DataFrame) -> dict:
    """How far the held-out predictions (rows of source, target, predicted, actual and, when
    known, baseline) missed, over the cells with a measured gain: n, mae, baseline_mae (the
    other sources' mean gain as the prediction; nan unless every cell has one), sign_right
    (cells whose predicted gain has the measured gain's sign) and worst (the row missed most)."""
    cells = loso.dropna(subset=["predicted", "actual"])
    error = (cells["predicted"] - cells["actual"]).abs()
    has_baseline = "baseline" in cells.columns and cells["baseline"].notna().all()
    return {
        "n": len(cells),
        "mae": float(error.mean()),
        "baseline_mae": float((cells["baseline"] - cells["actual"]).abs().mean()) if has_baseline else float("nan"),
        "sign_right": int((np.sign(cells["predicted"]) == np.sign(cells["actual"])).sum()),
        "worst": cells.loc[error.idxmax()].to_dict() if len(cells) else None,
    }


@dataclass(frozen=True)
class TargetModel:
    """A fitted pipeline and which of its outputs is this target."""

    pipeline: object
    output: int

    @property
    def coef(self) -> np.ndarray:
        return np.atleast_2d(self.pipeline[-1].coef_)[self.output]


def _predict_all(models: dict[str, TargetModel], x: np.ndarray) -> dict[str, np.ndarray]:
    """Each target's predictions, calling every shared pipeline once."""
    outputs = {}
    for model in models.values():
        if id(model.pipeline) not in outputs:
            outputs[id(model.pipeline)] = model.pipeline.predict(x).reshape(len(x), -1)
    return {t: outputs[id(m.pipeline)][:, m.output] for t, m in models.items()}


class TransferPredictor:
    """One ridge regression per target: standardised source features -> gain.

    alpha: a number (fixed penalty) or a sequence (RidgeCV picks among them on the
    training sources). log_lengths: lengths span orders of magnitude between a label
    word and a code solution, so they enter as log1p.

    fit(features, gains) -> self with:
      models_: target -> TargetModel
      coef_: targets x features, in standard deviations of each feature
      loso_: long (source, target, predicted, actual, baseline): held-out predictions,
        baseline = mean gain of the other sources
      correlation_: per target plus "overall" (all held-out pairs pooled) and
        "mean_over_targets": pearson, pearson_p, spearman, spearman_p, n, mae, baseline_mae
      note_: how much to trust these numbers
    """

    def __init__(self, alpha: float | Sequence[float] = 1.0, log_lengths: bool = True):
        self.alpha = alpha
        self.log_lengths = log_lengths

    def _prepare(self, features: pd.DataFrame) -> pd.DataFrame:
        x = features.astype(float).copy()
        if self.log_lengths:
            lengths = [c for c in x.columns if c in LENGTH_FEATURES]
            x[lengths] = np.log1p(x[lengths])
        return x

    def _model(self):
        if np.ndim(self.alpha):
            return make_pipeline(StandardScaler(), RidgeCV(alphas=list(self.alpha), alpha_per_target=True))
        return make_pipeline(StandardScaler(), Ridge(alpha=float(self.alpha)))

    def _fit_targets(self, x: pd.DataFrame, gains: pd.DataFrame) -> dict[str, TargetModel]:
        """Targets with a gain for every source share one multi-output fit (the same as
        separate fits, much faster in the leave-one-out loop); the others are fitted
        on the sources where they are known."""
        complete = [t for t in gains.columns if gains[t].notna().all()]
        models = {}
        if complete:
            shared = self._model().fit(x.to_numpy(), gains[complete].to_numpy())
            models.update({t: TargetModel(shared, i) for i, t in enumerate(complete)})
        for target in gains.columns.difference(complete, sort=False):
            known = gains[target].notna()
            if known.sum() >= 2:
                single = self._model().fit(x[known].to_numpy(), gains.loc[known, [target]].to_numpy())
                models[target] = TargetModel(single, 0)
        return models

    def fit(self, features: pd.DataFrame, gains: pd.DataFrame, base: pd.Series | None = None) -> "TransferPredictor":
        """`base`: the base model's score per target, when known; a gain then lies within
        [-base, 1 - base] and every prediction is clipped to it."""
        self.limits_ = gain_limits(base, gains.columns)
        sources = [s for s in gains.index if s in features.index]
        if len(sources) < MIN_SOURCES:
            raise TraitmapError(too_few_sources(len(sources)))
        self.feature_names_ = list(features.columns)
        x = self._prepare(features.loc[sources, self.feature_names_])
        y = gains.loc[sources].astype(float)
        self.models_ = self._fit_targets(x, y)
        self.coef_ = pd.DataFrame({t: m.coef for t, m in self.models_.items()}, index=self.feature_names_).T
        rows = []
        actual = y.to_numpy()
        for k, held_out in enumerate(sources):
            rest = np.arange(len(sources)) != k
            predicted = self._clip(_predict_all(self._fit_targets(x[rest], y[rest]), x.to_numpy()[[k]]))
            baseline = np.nanmean(actual[rest], axis=0)
            for j, target in enumerate(y.columns):
                if target in predicted:
                    rows.append({"source": held_out, "target": target, "predicted": float(predicted[target][0]),
                                 "actual": actual[k, j], "baseline": float(baseline[j])})
        self.loso_ = pd.DataFrame(rows, columns=["source", "target", "predicted", "actual", "baseline"])
        self.correlation_ = self._score(self.loso_)
        self.note_ = self._note(len(sources))
        return self

    @staticmethod
    def _score(loso: pd.DataFrame) -> pd.DataFrame:
        def summary(part: pd.DataFrame) -> dict:
            errors = held_out_errors(part)
            return {**_correlations(part.predicted.to_numpy(), part.actual.to_numpy()),
                    "mae": errors["mae"], "baseline_mae": errors["baseline_mae"]}

        table = pd.DataFrame({t: summary(part) for t, part in loso.groupby("target", sort=False)}).T.astype(float)
        averaged = ["pearson", "spearman", "mae", "baseline_mae"]  # a mean of p-values means nothing
        table.loc["mean_over_targets"] = table[averaged].mean().reindex(table.columns)
        table.loc["overall"] = pd.Series(summary(loso))
        return table.rename_axis("target")

    @staticmethod
    def _note(n_sources: int) -> str:
        return (
            f"Leave-one-source-out over {n_sources} sources. Each per-target correlation rests on "
            f"{n_sources} points; |r| must exceed {critical_r(n_sources):.2f} to be significant at p<0.05, "
            "so with few sources treat them as descriptive, not as evidence. The 'overall' row pools all "
            "held-out pairs and also credits differences between targets' mean gains. The model helps only "
            "where mae is below baseline_mae (predicting the held-out source by the other sources' mean)."
        )

    def predict(self, features: pd.DataFrame) -> pd.DataFrame:
        """Predicted gain per target for each row of `features` (same columns as fit)."""
        missing = [c for c in self.feature_names_ if c not in features.columns]
        if missing:
            raise TraitmapError(f"features lack columns the predictor was fitted on: {missing}")
        x = self._prepare(features[self.feature_names_]).to_numpy()
        return pd.DataFrame(self._clip(_predict_all(self.models_, x)), index=features.index)

    def _clip(self, predicted: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {t: np.clip(v, *self.limits_.get(t, (-1.0, 1.0))) for t, v in predicted.items()}

    def beats_mean(self) -> pd.Series:
        """Per target: did the held-out predictions miss by less than the other sources' mean gain?"""
        table = self.correlation_.drop(index=["mean_over_targets", "overall"], errors="ignore")
        return table["mae"] < table["baseline_mae"]

    def to_dict(self) -> dict:
        return json_ready({
            "alpha": self.alpha if not np.ndim(self.alpha) else list(self.alpha),
            "features": self.feature_names_,
            "note": self.note_,
            "correlation": self.correlation_.reset_index().to_dict(orient="records"),
            "coefficients": {t: row.to_dict() for t, row in self.coef_.iterrows()},
            "loso": self.loso_.to_dict(orient="records"),
            "beats_mean": self.beats_mean().to_dict(),
        })


def gain_limits(base: pd.Series | None, targets) -> dict[str, tuple[float, float]]:
    """The gains a score in [0, 1] allows on each target: from -base to 1 - base (else +-1)."""
    limits = {}
    for target in targets:
        b = None if base is None else base.get(target)
        limits[target] = (-1.0, 1.0) if b is None or pd.isna(b) else (-float(b), 1.0 - float(b))
    return limits


def source_feature_table(study, embeddings: dict[str, Sequence[float]] | None = None) -> pd.DataFrame:
    """Features of every trained adapter's source, rows in the gains' order."""
    embeddings = embeddings or {}
    rows = {name: SourceFeatures.from_examples(study.source_examples(name), embeddings.get(name)).to_series()
            for name in study.gains.index}
    return pd.DataFrame(rows).T.rename_axis("source")


def too_few_sources(n: int) -> str:
    return (f"needs {MINIMUM}, this study has {n}: leave-one-source-out would fit on {max(n - 1, 0)}, "
            "too few to predict anything")


def shortfall(study) -> str | None:
    n = int(study.gains.notna().any(axis=1).sum())
    return too_few_sources(n) if n < MIN_SOURCES else None


def _predictor(study) -> TransferPredictor:
    alpha = analysis_settings(study).get("predict_alpha", 1.0)
    return TransferPredictor(alpha=alpha)


def predict_gains(features: pd.DataFrame, gains: pd.DataFrame, new: pd.DataFrame, *, base: pd.Series | None = None,
                  alpha: float | Sequence[float] = 1.0) -> tuple[pd.DataFrame, TransferPredictor]:
    """Targets ranked by the gain predicted for the source whose features are `new` (one row).

    Columns: predicted_gain (within what the metric allows), mean_gain (the trained sources'
    mean: the baseline), beats_mean (whether this target's model beat that baseline on
    held-out trained sources; where it did not, read the prediction as no better than the
    mean), loso_mae, baseline_mae, loso_pearson, loso_spearman."""
    predictor = TransferPredictor(alpha=alpha).fit(features, gains, base)
    predicted = predictor.predict(new).iloc[0]
    quality = predictor.correlation_.reindex(predicted.index)
    ranking = pd.DataFrame({
        "predicted_gain": predicted,
        "mean_gain": gains.reindex(columns=predicted.index).mean(),
        "beats_mean": predictor.beats_mean().reindex(predicted.index).fillna(False).astype(bool),
        "loso_mae": quality["mae"].astype(float),
        "baseline_mae": quality["baseline_mae"].astype(float),
        "loso_pearson": quality["pearson"].astype(float),
        "loso_spearman": quality["spearman"].astype(float),
    }).rename_axis("target").sort_values("predicted_gain", ascending=False)
    return ranking, predictor


def predict_new_source(study, examples: Sequence, *, embeddings: dict[str, Sequence[float]] | None = None,
                       new_embedding: Sequence[float] | None = None) -> pd.DataFrame:
    """`predict_gains` for a source that was never trained on, from the study's own sources."""
    new = SourceFeatures.from_examples(examples, new_embedding).to_series().to_frame("new_source").T
    matrix = getattr(study, "matrix", None)
    base = matrix.loc[BASE] if isinstance(matrix, pd.DataFrame) and BASE in matrix.index else None
    ranking, _ = predict_gains(source_feature_table(study, embeddings), study.gains, new, base=base,
                               alpha=analysis_settings(study).get("predict_alpha", 1.0))
    return ranking


@dataclass
class TrainedSources:
    """What predicting a new source needs of a finished study, read from its run folder or
    from an export of it (`traitmap export`): the matrix, and each trained source's
    features (the export's analysis/source_features.csv, else recomputed from the data)."""

    config: object
    matrix: pd.DataFrame
    features: pd.DataFrame
    data_dir: Path | None

    @property
    def gains(self) -> pd.DataFrame:
        return self.matrix.drop(index=BASE) - self.matrix.loc[BASE]

    @classmethod
    def of_folder(cls, folder: Path, data_dir: Path | None = None) -> "TrainedSources":
        from traitmap import plan
        from traitmap.results import Study

        folder = Path(folder)
        with Study.load(folder) as study:
            config, matrix, recorded = study.config, study.matrix, study.data_dir
        if matrix.isna().all(axis=None):
            raise TraitmapError("no cell evaluated: the study has not been evaluated yet", file=folder)
        matrix.index, matrix.columns = matrix.index.astype(str), matrix.columns.astype(str)
        data = data_dir if data_dir is not None else recorded
        adapters = [m for m in matrix.index if m != BASE]
        features_file = folder / "analysis" / FEATURES_FILE
        features = pd.read_csv(features_file, index_col="source") if features_file.is_file() else None
        if features is None or not set(adapters) <= set(features.index.astype(str)):
            if data is not None and not Path(data).is_dir():
                raise TraitmapError(f"has no analysis/source_features.csv, and the sources' data folder {data} is not "
                                    "there to recompute it: pass --data-dir", file=folder)
            features = pd.DataFrame({name: SourceFeatures.from_examples(
                plan.source_examples(config, name, data, config.seed)).to_series() for name in adapters}).T
        features.index = features.index.astype(str)
        return cls(config, matrix, features.loc[adapters], data)

    def measured(self, task: str) -> str | None:
        """The adapter trained on `task` as it is (no variant), if the study has one."""
        return next((s.name for s in self.config.sources if s.task == task and not s.variant
                     and s.name in self.matrix.index), None)

    def predict(self, examples: Sequence) -> pd.DataFrame:
        """`predict_gains` for a new source's training examples."""
        if len(self.features) < MIN_SOURCES:
            raise TraitmapError(too_few_sources(len(self.features)))
        new = SourceFeatures.from_examples(examples).to_series().to_frame("new_source").T
        ranking, _ = predict_gains(self.features, self.gains, new, base=self.matrix.loc[BASE],
                                   alpha=dict(getattr(self.config, "analysis", None) or {}).get("predict_alpha", 1.0))
        return ranking


def run(study, out_dir: Path) -> list[Path]:
    """source_features.csv (source x feature), transfer_prediction.csv (held-out
    predictions), transfer_prediction.json (correlations, coefficients, note)."""
    features = source_feature_table(study)
    matrix = getattr(study, "matrix", None)
    base = matrix.loc[BASE] if isinstance(matrix, pd.DataFrame) and BASE in matrix.index else None
    predictor = _predictor(study).fit(features, study.gains, base)
    out_dir = Path(out_dir)
    return [
        write_csv(out_dir / FEATURES_FILE, features, index=True),
        write_csv(out_dir / "transfer_prediction.csv", predictor.loso_),
        write_json(out_dir / "transfer_prediction.json", predictor.to_dict()),
    ]
