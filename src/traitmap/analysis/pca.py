"""PCA of the transfer matrix: which tasks move together (loadings) and how much of
each such "trait" every adapter carries (scores), as in the paper's step 2.

The heavy lifting is `TraitPCA.fit` over a plain matrix DataFrame; `run` only pulls
the matrix from a study and writes pca.json / pca_loadings.csv / pca_scores.csv.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.decomposition import PCA

from traitmap.analysis import analysis_settings
from traitmap.errors import TraitmapError
from traitmap.files import json_ready, write_csv, write_json
from traitmap.matrix import gains

BASE = "base"


def component_names(n: int) -> list[str]:
    """PC0, PC1, ... (zero-based, as the paper numbers its traits)."""
    return [f"PC{i}" for i in range(n)]


def impute_lowrank(matrix: pd.DataFrame, rank: int, n_iter: int = 200, tol: float = 1e-7) -> pd.DataFrame:
    """Fill NaN cells by iterative low-rank SVD reconstruction (as in Observational
    Scaling Laws): start from column means, then repeatedly replace the missing cells
    with their rank-`rank` reconstruction until they stop moving. Observed cells are
    never changed."""
    values = matrix.to_numpy(dtype=float)
    missing = np.isnan(values)
    if not missing.any():
        return matrix.copy()
    if missing.all(axis=0).any():
        empty = list(matrix.columns[missing.all(axis=0)])
        raise TraitmapError(f"cannot impute columns with no observed value: {empty}")
    rank = max(1, min(rank, min(values.shape) - 1 if min(values.shape) > 1 else 1))
    filled = np.where(missing, np.nanmean(values, axis=0, keepdims=True), values)
    for _ in range(n_iter):
        center = filled.mean(axis=0, keepdims=True)
        u, s, vt = np.linalg.svd(filled - center, full_matrices=False)
        reconstruction = center + (u[:, :rank] * s[:rank]) @ vt[:rank]
        change = np.abs(reconstruction[missing] - filled[missing]).max()
        filled[missing] = reconstruction[missing]
        if change < tol:
            break
    return pd.DataFrame(filled, index=matrix.index, columns=matrix.columns)


def adapter_rows(matrix: pd.DataFrame, on: str, base: str = BASE) -> pd.DataFrame:
    """The rows PCA decomposes: adapters only (the base is the origin of gains, not a
    sample), as gains (minus base) or raw scores."""
    if on not in ("gains", "scores"):
        raise TraitmapError(f"'on' must be 'gains' or 'scores', got {on!r}", field="on")
    if on == "gains":
        if base not in matrix.index:
            raise TraitmapError(f"on='gains' needs a '{base}' row in the matrix to subtract")
        data = gains(matrix, base)
    else:
        data = matrix.drop(index=base, errors="ignore")
    return data.astype(float)


def adapter_draws(draws: np.ndarray, models: list[str], on: str, base: str = BASE) -> np.ndarray:
    """`adapter_rows` for a stack of replicates (n_boot, models, tasks), as arrays."""
    adapters = [i for i, m in enumerate(models) if m != base]
    if on == "gains":
        return draws[:, adapters, :] - draws[:, [models.index(base)], :]
    return draws[:, adapters, :]


def has_variance(x: np.ndarray, tol: float = 1e-12) -> bool:
    """Whether some column of `x` varies: without that, PCA has no component to find."""
    return bool((np.ptp(x, axis=0) > tol).any())


@dataclass(frozen=True)
class PCAArrays:
    """One PCA fit as plain arrays (components: k x tasks, scores: adapters x k)."""

    components: np.ndarray
    explained_variance: np.ndarray
    explained_variance_ratio: np.ndarray
    mean: np.ndarray
    scale: np.ndarray
    scores: np.ndarray


class TraitPCA:
    """PCA over adapters x tasks.

    Centering removes any per-task constant, so on="gains" and on="scores" give the same
    loadings and scores; they differ only in `mean_` (mean gain vs mean score).
    Signs are fixed so that each component's loadings sum to a positive number: a high
    score on PC0 then reads as "better on these tasks", whatever sklearn returned.

    fit(matrix) -> self with: loadings_ (components x tasks), scores_ (adapters x
    components: trait profiles), explained_variance_ratio_ and explained_variance_
    (Series PC0..), mean_ and scale_ (Series over tasks), n_components_, imputed_
    (adapters x tasks, True where a NaN cell was filled by `impute_lowrank`), data_ (the
    adapter rows decomposed).
    """

    def __init__(self, n_components: int = 4, on: str = "gains", standardize: bool = False, base: str = BASE):
        self.n_components = n_components
        self.on = on
        self.standardize = standardize
        self.base = base

    def fit(self, matrix: pd.DataFrame) -> "TraitPCA":
        data = adapter_rows(matrix, self.on, self.base)
        if data.shape[0] < 2 or data.shape[1] < 2:
            raise TraitmapError(f"PCA needs at least 2 adapters and 2 tasks, got {data.shape[0]} x {data.shape[1]}")
        self.imputed_ = data.isna()
        if self.imputed_.to_numpy().any():
            data = impute_lowrank(data, rank=self.capped_components(data.shape))
        if not has_variance(data.to_numpy(dtype=float)):
            raise TraitmapError("the adapters do not differ on any task (the matrix has no variance): no traits to find")
        fitted = self.fit_array(data.to_numpy())
        names = component_names(len(fitted.components))
        self.n_components_ = len(names)
        self.data_ = data
        self.mean_ = pd.Series(fitted.mean, index=data.columns)
        self.scale_ = pd.Series(fitted.scale, index=data.columns)
        self.loadings_ = pd.DataFrame(fitted.components, index=names, columns=data.columns)
        self.explained_variance_ = pd.Series(fitted.explained_variance, index=names)
        self.explained_variance_ratio_ = pd.Series(fitted.explained_variance_ratio, index=names)
        self.scores_ = pd.DataFrame(fitted.scores, index=data.index, columns=names)
        return self

    def capped_components(self, shape: tuple[int, int]) -> int:
        return max(1, min(self.n_components, *shape))

    def fit_array(self, x: np.ndarray) -> PCAArrays:
        """The same fit on a complete adapters x tasks array, without pandas and without
        touching self: bootstrap loops call it thousands of times."""
        n = self.capped_components(x.shape)
        scale = x.std(axis=0, ddof=1) if self.standardize else np.ones(x.shape[1])
        scale = np.where(scale > 0, scale, 1.0)
        pca = PCA(n_components=n, svd_solver="full").fit(x / scale)
        components = pca.components_
        sums = components.sum(axis=1)
        largest = components[np.arange(n), np.abs(components).argmax(axis=1)]
        signs = np.sign(np.where(np.abs(sums) > 1e-12, sums, largest))
        components = components * signs[:, None]
        mean = x.mean(axis=0)
        return PCAArrays(
            components=components,
            explained_variance=pca.explained_variance_,
            explained_variance_ratio=pca.explained_variance_ratio_,
            mean=mean,
            scale=scale,
            scores=((x - mean) / scale) @ components.T,
        )

    def transform(self, rows: pd.DataFrame) -> pd.DataFrame:
        """Project rows (same task columns, same units as fitted: gains or scores) onto
        the components: their trait profiles."""
        x = ((rows[self.loadings_.columns] - self.mean_) / self.scale_).to_numpy(dtype=float)
        return pd.DataFrame(x @ self.loadings_.to_numpy().T, index=rows.index, columns=self.loadings_.index)

    def to_dict(self) -> dict:
        return json_ready({
            "on": self.on,
            "standardize": self.standardize,
            "n_components": self.n_components_,
            "tasks": list(self.loadings_.columns),
            "adapters": list(self.scores_.index),
            "explained_variance_ratio": self.explained_variance_ratio_.to_dict(),
            "explained_variance": self.explained_variance_.to_dict(),
            "mean": self.mean_.to_dict(),
            "scale": self.scale_.to_dict(),
            "loadings": {c: row.to_dict() for c, row in self.loadings_.iterrows()},
            "scores": {a: row.to_dict() for a, row in self.scores_.iterrows()},
            "imputed_cells": [[a, t] for a, t in self.imputed_.stack().loc[lambda s: s].index],
        })


def fit_study(study, *, n_components: int | None = None, on: str | None = None,
              standardize: bool | None = None) -> TraitPCA:
    """The study's PCA with its [analysis] settings, each overridable (`traitmap pca` options)."""
    settings = analysis_settings(study)
    return TraitPCA(
        n_components=int(settings.get("n_components", 4)) if n_components is None else n_components,
        on=settings.get("pca_on", "gains") if on is None else on,
        standardize=bool(settings.get("standardize", False)) if standardize is None else standardize,
    ).fit(study.matrix)


def write(pca: TraitPCA, out_dir: Path) -> list[Path]:
    """pca.json (everything), pca_loadings.csv (component x task), pca_scores.csv
    (adapter x component: trait profiles)."""
    out_dir = Path(out_dir)
    return [
        write_json(out_dir / "pca.json", pca.to_dict()),
        write_csv(out_dir / "pca_loadings.csv", pca.loadings_.rename_axis("component"), index=True),
        write_csv(out_dir / "pca_scores.csv", pca.scores_.rename_axis("adapter"), index=True),
    ]


def run(study, out_dir: Path) -> list[Path]:
    return write(fit_study(study), out_dir)
