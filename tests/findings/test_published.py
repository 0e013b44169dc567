"""The published studies (results/) and the documents made from them agree, to the byte."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from traitmap.analysis.pca import TraitPCA
from traitmap.findings import CLAIMS, Evidence, evaluate, generate

REPO = Path(__file__).resolve().parents[2]
STUDIES = ["results/standard", "results/controlled"]


@pytest.fixture
def in_repo(monkeypatch):
    monkeypatch.chdir(REPO)


def test_findings_and_readme_regenerate_without_a_difference(in_repo):
    markdown, readme = generate(STUDIES, Path("README.md"))
    assert markdown == Path("docs/findings.md").read_text(encoding="utf-8")
    assert readme == Path("README.md").read_text(encoding="utf-8")


def test_every_claim_gets_a_verdict(in_repo):
    found = evaluate([Evidence.of_folder(Path(s)) for s in STUDIES])
    assert len(found) == len(CLAIMS)
    assert all(f.verdict and f.value and f.interval for f in found)


def test_the_committed_pca_reproduces_from_the_committed_matrix():
    folder = REPO / "results" / "standard"
    saved = json.loads((folder / "pca.json").read_text())
    matrix = pd.read_csv(folder / "matrix.csv", index_col="model")
    refit = TraitPCA(saved["n_components"], on=saved["on"], standardize=saved["standardize"]).fit(matrix).to_dict()
    assert refit["adapters"] == saved["adapters"] and refit["tasks"] == saved["tasks"]
    for key in ("explained_variance_ratio", "loadings", "scores"):
        assert numbers(refit[key]) == pytest.approx(numbers(saved[key]), abs=1e-6), key


def numbers(saved: dict):
    """A saved {name: value} or {name: {name: value}} as an array."""
    nested = isinstance(next(iter(saved.values())), dict)
    return (pd.DataFrame(saved) if nested else pd.Series(saved)).to_numpy(dtype=float)
