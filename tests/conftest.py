"""Shared fixtures: the real data dir, the tiny random model (`traitmap.testing`), and
the micro study trained on it once per session: the whole pipeline runs on them in
seconds, so unit tests never need the real model."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import make_config, require_data_dir, run_study, torch_threads

from traitmap.testing import tiny_model


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch thread for the whole module (see helpers.torch_threads)."""
    with torch_threads(1):
        yield


@pytest.fixture(scope="session")
def data_dir() -> Path:
    return require_data_dir()


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    return tiny_model(tmp_path_factory.mktemp("tiny-model"))


@pytest.fixture
def install_package(tmp_path, monkeypatch):
    """Install a throw-away package as pip leaves one: `install_package(name, source, entry_points)`
    writes the module `name` and its dist-info (METADATA, entry_points.txt, with
    entry_points = {group: {plug-in name: "module:attribute"}}) into a folder on sys.path,
    where importlib.metadata finds it. The module is forgotten after the test."""
    import sys

    installed = []

    def install(name: str, source: str, entry_points: dict[str, dict[str, str]]) -> None:
        site = tmp_path / "site-packages"
        (site / name).mkdir(parents=True)
        (site / name / "__init__.py").write_text(source)
        info = site / f"{name}-0.1.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
        (info / "entry_points.txt").write_text("".join(
            f"[{group}]\n" + "".join(f"{key} = {value}\n" for key, value in points.items())
            for group, points in entry_points.items()))
        monkeypatch.syspath_prepend(str(site))
        installed.append(name)

    yield install
    for name in installed:
        sys.modules.pop(name, None)


@pytest.fixture(scope="session")
def micro_study(tmp_path_factory, tiny_model_dir, data_dir):
    """The micro study (traitmap.testing.MICRO_STUDY) trained and evaluated once for the whole session:
    (config, output folder). Read it as it is; change only a copy (helpers.copy_of)."""
    folder = tmp_path_factory.mktemp("micro")
    config = make_config(folder, tiny_model_dir)
    with torch_threads(1):
        run_study(config, folder / "out", data_dir)
    return config, folder / "out"
