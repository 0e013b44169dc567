"""`traitmap export` on a micro study run for real on the tiny model."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
from helpers import copy_of, make_config, run_study

from traitmap.errors import TraitmapError
from traitmap.export import export_study, rewrite_metric_files
from traitmap.findings import Evidence
from traitmap.metrics import CHOICE_METRICS
from traitmap.results import Study

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def exported(tmp_path_factory, micro_study, data_dir):
    """The session's micro study, copied and analysed, and its export."""
    config, trained = micro_study
    folder = tmp_path_factory.mktemp("exported")
    out = copy_of(trained, folder)
    run_study(config, out, data_dir, steps=("analyze",))
    return out, export_study(Study.load(out), folder / "published")


def test_export_keeps_results_and_drops_the_store_and_adapters(exported):
    out, published = exported
    names = {p.relative_to(published).as_posix() for p in published.rglob("*") if p.is_file()}
    assert {"config.json", "matrix.csv", "gains.csv", "scores.csv.gz", "cells.csv", "training.csv",
            "analysis/matrix_ci.csv", "analysis/source_features.csv"} <= names
    assert not any(n.endswith(".sqlite") or n.startswith("adapters/") for n in names)
    training = pd.read_csv(published / "training.csv")
    assert set(training["adapter"]) == {"flipkart", "gsm8k"} and training.groupby("adapter")["step"].max().eq(2).all()


def test_an_export_names_its_data_folder_without_a_machine_path(exported, data_dir):
    out, published = exported
    recorded = json.loads((out / "config.json").read_text("utf-8"))["data_dir"]
    text = (published / "config.json").read_text("utf-8")
    assert Path(recorded).is_absolute() and recorded not in text and str(Path(data_dir).resolve()) not in text
    assert json.loads(text)["data_dir"] == Path(recorded).name


def test_an_export_reads_as_the_study_it_came_from(exported):
    out, published = exported
    study, copy = Study.load(out), Evidence.of_folder(published)
    pd.testing.assert_frame_equal(copy.matrix, pd.read_csv(out / "matrix.csv", index_col="model").astype(float))
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
    run_study(config, tmp_path / "half", data_dir, steps=("train",))
    with pytest.raises(TraitmapError, match="not finished"):
        export_study(Study.load(tmp_path / "half"), tmp_path / "published")
    keep = tmp_path / "mine"
    keep.mkdir()
    (keep / "notes.txt").write_text("mine")
    with pytest.raises(TraitmapError, match="not an earlier export"):
        export_study(Study.load(out), keep)
    assert (keep / "notes.txt").read_text() == "mine"


AUTO_STUDY = '''name = "auto"
base_model = "{model}"
sources = ["flipkart", "gsm8k"]
targets = ["imdb", "goat"]

[train]
steps = "auto"
max_steps = 6
eval_every = 2
patience = 2
validation_examples = 4
examples = 8
batch_size = 2
max_length = "auto"
max_length_cap = 48

[eval]
examples = 4
batch_size = 4
max_new_tokens = {{goat = 6}}
'''


def test_steps_auto_runs_end_to_end_and_its_training_is_exported_and_reported(tmp_path, tiny_model_dir, data_dir):
    config = make_config(tmp_path, tiny_model_dir, AUTO_STUDY)
    run_study(config, tmp_path / "out", data_dir, steps=("train", "evaluate", "report"))
    published = export_study(Study.load(tmp_path / "out"), tmp_path / "published")
    adapters = pd.read_csv(published / "adapters.csv")
    assert list(adapters.columns) == ["adapter", "seed", "steps_trained", "best_val_loss", "converged", "stopped_by",
                                      "share_cut", "share_answer_end_lost", "max_length"]
    assert list(adapters["adapter"]) == ["flipkart", "gsm8k"]
    assert adapters["steps_trained"].between(1, 6).all() and adapters["best_val_loss"].gt(0).all()
    for _, row in adapters.iterrows():
        assert row["stopped_by"] == ("patience" if row["converged"] else "max_steps")
    # gsm8k's worked answers do not fit in 48 tokens: its log says how many lost their end
    gsm8k = adapters.set_index("adapter").loc["gsm8k"]
    assert gsm8k["max_length"] == 48 and gsm8k["share_answer_end_lost"] > 0
    training = pd.read_csv(published / "training.csv")
    measured = training.dropna(subset=["val_loss"])
    assert len(measured) and set(measured["step"]) <= {2, 4, 6}
    html = (tmp_path / "out" / "report" / "index.html").read_text()
    section = html[html.index('<section id="training"'):]
    section = section[:section.index("</section>")]
    assert "training-curves" in section and "converged" in section and "answer end lost" in section


def test_a_study_without_validation_exports_an_empty_val_loss(exported):
    _, published = exported
    training = pd.read_csv(published / "training.csv")
    assert "val_loss" in training.columns and training["val_loss"].isna().all()
    adapters = pd.read_csv(published / "adapters.csv")
    assert adapters["best_val_loss"].isna().all() and (adapters["stopped_by"] == "steps").all()


def test_the_export_holds_every_choice_cells_metrics_and_answer_rates(exported):
    out, published = exported
    study = Study.load(out)
    cells = pd.read_csv(published / "cells.csv")
    assert list(cells.columns) == ["model", "seed", "task", "n", "score", "seconds", *CHOICE_METRICS]
    stored = study.cells[["model", "seed", "task", *CHOICE_METRICS]]
    pd.testing.assert_frame_equal(cells[stored.columns], stored.reset_index(drop=True), check_exact=True)
    assert cells.loc[cells["task"] == "imdb", list(CHOICE_METRICS)].notna().all().all()
    rates = pd.read_csv(published / "answer_rates.csv", keep_default_na=False, dtype={"label": str})  # "": no answer
    pd.testing.assert_frame_equal(rates, study.answer_rates().reset_index(drop=True), check_dtype=False)


@pytest.mark.parametrize("name", ["standard", "controlled"])
def test_the_published_metric_files_are_what_their_scores_give(name, tmp_path):
    published = Path(__file__).resolve().parents[1] / "results" / name
    copy = tmp_path / name
    copy.mkdir()
    for file in ("config.json", "cells.csv", "scores.csv.gz"):
        shutil.copy2(published / file, copy / file)
    rewrite_metric_files(copy)
    for file in ("cells.csv", "answer_rates.csv"):
        assert (copy / file).read_bytes() == (published / file).read_bytes(), file
