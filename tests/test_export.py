"""`traitmap export` on a micro study run for real on the tiny model."""

from __future__ import annotations

import io

import pandas as pd
import pytest
from rich.console import Console
from test_run import make_config

from traitmap import run
from traitmap.api import Study
from traitmap.errors import TraitmapError
from traitmap.export import export_study
from traitmap.findings import Evidence

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def exported(tmp_path_factory, tiny_model_dir, data_dir):
    folder = tmp_path_factory.mktemp("exported")
    config = make_config(folder, tiny_model_dir)
    run.run_study(config, folder / "out", data_dir, console=Console(file=io.StringIO()),
                  steps=("train", "evaluate", "analyze"))
    return folder / "out", export_study(Study.load(folder / "out"), folder / "published")


def test_export_keeps_results_and_drops_the_store_and_adapters(exported):
    out, published = exported
    names = {p.relative_to(published).as_posix() for p in published.rglob("*") if p.is_file()}
    assert {"config.json", "matrix.csv", "gains.csv", "scores.csv.gz", "cells.csv", "training.csv",
            "analysis/matrix_ci.csv", "analysis/source_features.csv"} <= names
    assert not any(n.endswith(".sqlite") or n.startswith("adapters/") for n in names)
    training = pd.read_csv(published / "training.csv")
    assert set(training["adapter"]) == {"flipkart", "gsm8k"} and training.groupby("adapter")["step"].max().eq(2).all()


def test_an_export_reads_as_the_study_it_came_from(exported):
    out, published = exported
    study, copy = Study.load(out), Evidence.of_folder(published)
    pd.testing.assert_frame_equal(copy.matrix, pd.read_csv(out / "matrix.csv", index_col="model"))
    want = study.records()[["model", "seed", "task", "example_id", "correct"]].reset_index(drop=True)
    got = copy.records[["model", "seed", "task", "example_id", "correct"]].reset_index(drop=True)
    pd.testing.assert_frame_equal(got, want, check_dtype=False)


def test_exporting_again_gives_the_same_bytes(exported, tmp_path):
    out, published = exported
    before = (published / "scores.csv.gz").read_bytes()
    export_study(Study.load(out), published)
    assert (published / "scores.csv.gz").read_bytes() == before


def test_an_unfinished_study_or_a_foreign_folder_is_refused(tmp_path, tiny_model_dir, data_dir, exported):
    out, _ = exported
    config = make_config(tmp_path, tiny_model_dir)
    run.run_study(config, tmp_path / "half", data_dir, console=Console(file=io.StringIO()), steps=("train",))
    with pytest.raises(TraitmapError, match="not finished"):
        export_study(Study.load(tmp_path / "half"), tmp_path / "published")
    keep = tmp_path / "mine"
    keep.mkdir()
    (keep / "notes.txt").write_text("mine")
    with pytest.raises(TraitmapError, match="not an earlier export"):
        export_study(Study.load(out), keep)
    assert (keep / "notes.txt").read_text() == "mine"
