"""TraitPCA must recover planted components; the base row is the origin, not a sample."""

import json

import numpy as np
import pandas as pd
import pytest

from traitmap.analysis.pca import TraitPCA, run
from traitmap.errors import TraitmapError


def planted_matrix(n_adapters=12, n_tasks=8, seed=0):
    """base + adapters whose gains are a rank-2 mix of two known orthonormal directions."""
    rng = np.random.default_rng(seed)
    directions, _ = np.linalg.qr(rng.normal(size=(n_tasks, 2)))
    weights = rng.normal(size=(n_adapters, 2)) * [3.0, 1.0]
    weights -= weights.mean(axis=0)
    tasks = [f"task{j}" for j in range(n_tasks)]
    base = rng.uniform(0.2, 0.6, n_tasks)
    gains = weights @ directions.T
    matrix = pd.DataFrame(np.vstack([base, base + gains]), index=["base"] + [f"a{i}" for i in range(n_adapters)], columns=tasks)
    return matrix, directions.T, gains


def test_recovers_planted_rank2_components():
    matrix, directions, _ = planted_matrix()
    pca = TraitPCA(n_components=4).fit(matrix)
    assert list(pca.explained_variance_ratio_.index) == ["PC0", "PC1", "PC2", "PC3"]
    assert pca.explained_variance_ratio_.iloc[:2].sum() == pytest.approx(1.0, abs=1e-9)
    # each loading lies in the planted plane, and PC0 is the strong direction (up to sign)
    loadings = pca.loadings_.to_numpy()
    for k in range(2):
        projection = directions @ loadings[k]
        assert np.linalg.norm(projection) == pytest.approx(1.0, abs=1e-6)
    assert abs(loadings[0] @ directions[0]) > 0.95
    assert "base" not in pca.scores_.index
    assert pca.scores_.shape == (12, 4)


def test_gains_and_scores_give_same_loadings_different_mean():
    matrix, _, gains = planted_matrix()
    on_gains = TraitPCA(2, on="gains").fit(matrix)
    on_scores = TraitPCA(2, on="scores").fit(matrix)
    np.testing.assert_allclose(on_gains.loadings_, on_scores.loadings_, atol=1e-9)
    np.testing.assert_allclose(on_gains.mean_, gains.mean(axis=0), atol=1e-12)
    assert (on_gains.loadings_.sum(axis=1) > 0).all()


def test_components_capped_and_missing_base_is_an_error():
    matrix, _, _ = planted_matrix(n_adapters=3, n_tasks=8)
    assert TraitPCA(n_components=10).fit(matrix).n_components_ == 3
    with pytest.raises(TraitmapError):
        TraitPCA(on="gains").fit(matrix.drop(index="base"))


def test_fit_imputes_nan_cells():
    matrix, _, _ = planted_matrix()
    matrix.iloc[3, 2] = np.nan
    pca = TraitPCA(2).fit(matrix)
    assert pca.imputed_.to_numpy().sum() == 1
    assert pca.explained_variance_ratio_.sum() == pytest.approx(1.0, abs=1e-4)


def test_run_writes_json_and_csvs(tmp_path):
    matrix, _, _ = planted_matrix()

    class Study:
        pass

    study = Study()
    study.matrix = matrix
    paths = run(study, tmp_path)
    assert {p.name for p in paths} == {"pca.json", "pca_loadings.csv", "pca_scores.csv"}
    payload = json.loads((tmp_path / "pca.json").read_text())
    assert payload["n_components"] == 4 and len(payload["scores"]) == 12
    assert pd.read_csv(tmp_path / "pca_scores.csv").columns[0] == "adapter"
    assert not list(tmp_path.glob(".*tmp"))
