"""Fixtures for the report tests: the planted study, with and without analysis files."""

from __future__ import annotations

from pathlib import Path

import pytest
from fake_study import FakeStudy, full_study, planted_records


@pytest.fixture
def study(tmp_path: Path) -> FakeStudy:
    return full_study(tmp_path)


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> str:
    """The full study's page, built once per module: building takes a few seconds."""
    from traitmap.report import build_report

    out = tmp_path_factory.mktemp("study")
    return build_report(full_study(out), out).read_text(encoding="utf-8")


@pytest.fixture
def bare_study(tmp_path: Path) -> FakeStudy:
    """No pca.json and no analysis files: every optional section must say so in one line."""
    return FakeStudy(tmp_path, planted_records(), None)
