"""The published studies (results/) and the documents made from them agree, to the byte."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd
import pytest

from traitmap.analysis.pca import TraitPCA
from traitmap.analysis.traits import resolved_components
from traitmap.findings import CLAIMS, INCONCLUSIVE, Evidence, evaluate
from traitmap.findings.claims import ALPHA, resolved_of
from traitmap.findings.render import README_END, README_START, findings_markdown, readme_block, replace_block

REPO = Path(__file__).resolve().parents[2]
STUDIES = ["results/standard", "results/controlled"]


@pytest.fixture(scope="module")
def published():
    """The evidence and the findings of the published studies, computed once (about a
    minute on two cores: every rule is recalibrated on simulated data)."""
    previous = Path.cwd()
    os.chdir(REPO)
    try:
        studies = [(Evidence.of_folder(Path(s)), s) for s in STUDIES]
        yield studies, evaluate([ev for ev, _ in studies])
    finally:
        os.chdir(previous)


@pytest.mark.slow
def test_findings_and_readme_regenerate_without_a_difference(published):
    """The same path as `traitmap findings ... --out docs/findings.md --readme README.md`."""
    studies, found = published
    assert findings_markdown(studies, found) == (REPO / "docs" / "findings.md").read_text(encoding="utf-8")
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert replace_block(readme, readme_block(studies, found), REPO / "README.md") == readme
    assert README_START in readme and README_END in readme


@pytest.mark.slow
def test_every_claim_gets_a_verdict_and_every_rule_holds_its_rate(published):
    _, found = published
    assert len(found) == len(CLAIMS)
    assert all(f.verdict and f.value and f.interval for f in found)
    assert all(f.calibration is None or f.calibration.false_positive <= ALPHA for f in found)
    assert all(f.cause for f in found if f.verdict == INCONCLUSIVE)


@pytest.mark.slow
def test_the_findings_count_components_as_traits_json_does(published):
    studies, _ = published
    standard = studies[0][0]
    assert resolved_of(standard) == resolved_components(standard.document("traits.json"))


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
